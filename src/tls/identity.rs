//! A client certificate and its key, for upstreams that ask for one (mutual
//! TLS). Loaded and checked when the config is read (at start and on every
//! reload), so a bad file is a config error, never a failed request.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

use crate::tls::signature::provider;

/// A client certificate chain and the private key that belongs to it.
#[derive(Clone)]
pub struct ClientIdentity {
    /// The certificate file (PEM: the client's certificate first, then any
    /// intermediates).
    pub certificate: PathBuf,
    /// The key file (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    chain: Vec<CertificateDer<'static>>,
    /// The key's DER, kept to tell a changed key file on reload.
    key_der: Arc<PrivateKeyDer<'static>>,
    certified: Arc<CertifiedKey>,
}

/// An I/O error's kind in words, without the path (the message names it).
fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".into(),
        std::io::ErrorKind::PermissionDenied => {
            "pinproxy may not read it (permission denied)".into()
        }
        _ => e.to_string(),
    }
}

/// A private key that every user on the machine can read is no longer
/// private: refused, as SSH refuses such a key. Group read is how a root-owned
/// key is given to the service's user (`root:pinproxy 0640`), so it passes.
fn readable_by_owner_and_group_only(key: &Path) -> Result<(), String> {
    match crate::platform::permissions::readable_by_everyone(key) {
        Some(mode) => Err(format!(
            "client_key {}: readable by every user on this machine (mode {mode:04o}), so the key is not private. \
             Fix: chmod o-r {} (and consider a new key: this one may have been copied)",
            key.display(),
            key.display()
        )),
        None => Ok(()),
    }
}

impl ClientIdentity {
    /// Reads both files, checks the key file's path like the config file's, and
    /// checks that the key belongs to the (first) certificate.
    pub fn load(certificate: &Path, key: &Path) -> Result<ClientIdentity, IdentityError> {
        let in_key = |message: String| IdentityError {
            in_key: true,
            message,
        };
        // Both names checked first, so one round names every missing file.
        let relative = "(a relative path is taken from the config file's directory)";
        match (certificate.exists(), key.exists()) {
            (false, false) => {
                return Err(IdentityError {
                    in_key: false,
                    message: format!(
                        "client_certificate {} and client_key {} do not exist: give the paths of the PEM certificate \
                         chain and of its private key {relative}",
                        certificate.display(),
                        key.display()
                    ),
                })
            }
            (false, true) => {
                return Err(IdentityError {
                    in_key: false,
                    message: format!(
                        "client_certificate {} does not exist: give the path of the PEM certificate chain {relative}",
                        certificate.display()
                    ),
                })
            }
            (true, false) => {
                return Err(in_key(format!(
                    "client_key {} does not exist: give the path of the PEM private key {relative}",
                    key.display()
                )))
            }
            (true, true) => {}
        }
        crate::platform::permissions::check(key).map_err(|e| in_key(format!("client_key: {e}")))?;
        readable_by_owner_and_group_only(key).map_err(in_key)?;
        let chain = CertificateDer::pem_file_iter(certificate)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| IdentityError {
                in_key: false,
                message: format!(
                    "client_certificate {}: {e} (expected PEM: -----BEGIN CERTIFICATE-----)",
                    certificate.display()
                ),
            })?;
        if chain.is_empty() {
            return Err(IdentityError {
                in_key: false,
                message: format!(
                    "client_certificate {}: no -----BEGIN CERTIFICATE----- block in it",
                    certificate.display()
                ),
            });
        }
        // The PEM parser's errors quote the offending line, which here is key
        // material: none of its text may reach a log, a reload error or the
        // status page. Our own words say what is wrong.
        let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| {
            let what = match e {
                pem::Error::Io(io) => io_reason(&io),
                pem::Error::NoItemsFound => "no private key block in it".into(),
                _ => "not a well-formed PEM private key (each -----BEGIN and -----END line on a line of its own, \
                      the base64 between them in lines)"
                    .into(),
            };
            in_key(format!(
                "client_key {}: {what} (expected a PEM private key: PKCS#8 \"BEGIN PRIVATE KEY\", PKCS#1 \"BEGIN RSA \
                 PRIVATE KEY\" or SEC1 \"BEGIN EC PRIVATE KEY\"; an encrypted key must be decrypted first)",
                key.display()
            ))
        })?;
        let certified = CertifiedKey::from_der(chain.clone(), key_der.clone_key(), &provider())
            .map_err(|e| match e {
                rustls::Error::InconsistentKeys(_) => in_key(format!(
                    "client_key {} does not belong to client_certificate {} (their public keys differ): give the \
                     key the certificate was issued for",
                    key.display(),
                    certificate.display()
                )),
                _ => in_key(format!(
                    "client_key {}: a key pinproxy cannot sign with (it signs with RSA, ECDSA P-256/P-384 or \
                     Ed25519 keys)",
                    key.display()
                )),
            })?;
        Ok(ClientIdentity {
            certificate: certificate.to_path_buf(),
            key: key.to_path_buf(),
            chain,
            key_der: Arc::new(key_der),
            certified: Arc::new(certified),
        })
    }

    /// What rustls presents when the server asks for a client certificate.
    pub(crate) fn resolver(&self) -> Arc<rustls::sign::SingleCertAndKey> {
        Arc::new(rustls::sign::SingleCertAndKey::from(
            self.certified.as_ref().clone(),
        ))
    }
}

/// Why a client certificate or key could not be used.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct IdentityError {
    /// The key file is at fault (else the certificate file).
    pub in_key: bool,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl PartialEq for ClientIdentity {
    /// The same files with the same contents: a reload after the files were
    /// renewed counts as a change and builds a new TLS config.
    fn eq(&self, other: &ClientIdentity) -> bool {
        self.certificate == other.certificate
            && self.key == other.key
            && self.chain == other.chain
            && self.key_der.secret_der() == other.key_der.secret_der()
    }
}

impl fmt::Debug for ClientIdentity {
    // Never the key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientIdentity")
            .field("certificate", &self.certificate)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}
