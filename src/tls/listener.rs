//! The TLS a listener serves when its clients prove who they are
//! (`tls_certificate`, `tls_key`, `client_ca`): its own certificate, and a
//! client certificate required of every client and verified against the CA.
//! Unlike the upstream side, this is ordinary chain verification: the
//! operator runs the CA that issues the clients' certificates. A client's
//! identity is its certificate's subject common name and subject alternative
//! names.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::ServerConfig;
use sha2::Digest;

/// A listener's TLS settings, loaded and checked.
#[derive(Clone)]
pub struct ListenerTls {
    /// What the accept loop hands each connection to.
    pub config: Arc<ServerConfig>,
    /// Of the three files' contents: a reload that changes none keeps it equal.
    digest: [u8; 32],
}

impl PartialEq for ListenerTls {
    fn eq(&self, other: &ListenerTls) -> bool {
        self.digest == other.digest
    }
}

impl Eq for ListenerTls {}

impl std::fmt::Debug for ListenerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ListenerTls")
    }
}

fn certificates(key: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|_| {
            format!(
                "{key} {}: cannot read PEM certificates from it",
                path.display()
            )
        })?;
    if certs.is_empty() {
        return Err(format!(
            "{key} {}: no -----BEGIN CERTIFICATE----- block in it",
            path.display()
        ));
    }
    Ok(certs)
}

/// Loads the listener's certificate chain and key, and the CA its clients'
/// certificates must chain to. Errors name the file and never quote a key.
pub fn load(certificate: &Path, key: &Path, client_ca: &Path) -> Result<ListenerTls, String> {
    crate::platform::permissions::check(key).map_err(|e| format!("tls_key: {e}"))?;
    crate::platform::permissions::check(client_ca).map_err(|e| format!("client_ca: {e}"))?;
    let chain = certificates("tls_certificate", certificate)?;
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|_| {
        format!(
            "tls_key {}: not a readable PEM private key (PKCS#8, PKCS#1 or SEC1, not encrypted)",
            key.display()
        )
    })?;
    let cas = certificates("client_ca", client_ca)?;
    let mut roots = rustls::RootCertStore::empty();
    for ca in &cas {
        roots.add(ca.clone()).map_err(|e| {
            format!(
                "client_ca {}: not a usable CA certificate: {e}",
                client_ca.display()
            )
        })?;
    }
    let provider = Arc::new(crate::tls::signature::provider());
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| format!("client_ca {}: {e}", client_ca.display()))?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain.clone(), key_der.clone_key())
        .map_err(|e| {
            format!(
                "tls_key {} does not belong to tls_certificate {} ({e})",
                key.display(),
                certificate.display()
            )
        })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let mut digest = sha2::Sha256::new();
    for der in chain.iter().chain(cas.iter()) {
        digest.update(der.as_ref());
    }
    digest.update(key_der.secret_der());
    Ok(ListenerTls {
        config: Arc::new(config),
        digest: digest.finalize().into(),
    })
}

/// The names a verified client certificate gives its holder: the subject's
/// common name, then its DNS, e-mail and URI alternative names.
pub fn client_names(der: &[u8]) -> Vec<String> {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return Vec::new();
    };
    let mut names: Vec<String> = cert
        .subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok().map(String::from))
        .collect();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            use x509_parser::extensions::GeneralName;
            if let GeneralName::DNSName(n) | GeneralName::RFC822Name(n) | GeneralName::URI(n) = name
            {
                if !names.iter().any(|x| x == n) {
                    names.push((*n).to_string());
                }
            }
        }
    }
    names
}
