//! A client certificate and its key, for upstreams that ask for one (mutual
//! TLS). Loaded and checked when the config is read (at start and on every
//! reload), so a bad file is a config error, never a failed request.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
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

impl ClientIdentity {
    /// Reads both files, checks the key file's path like the config file's, and
    /// checks that the key belongs to the (first) certificate.
    pub fn load(certificate: &Path, key: &Path) -> Result<ClientIdentity, IdentityError> {
        let in_key = |message: String| IdentityError {
            in_key: true,
            message,
        };
        crate::permissions::check(key).map_err(|e| in_key(format!("client_key: {e}")))?;
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
        let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| {
            in_key(format!(
                "client_key {}: {e} (expected a PEM private key: PKCS#8 \"BEGIN PRIVATE KEY\", PKCS#1 \"BEGIN RSA \
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
                other => in_key(format!(
                    "client_key {}: {other} (pinproxy signs with RSA, ECDSA P-256/P-384 or Ed25519 keys)",
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
