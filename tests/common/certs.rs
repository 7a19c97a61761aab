//! Certificates made at test time, and a rustls server config that presents any chain with any key.

use std::sync::Arc;

use pinproxy::tls::pin::{CertPin, Fingerprints};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// A certificate with its key, in every form the tests need.
pub struct TestCert {
    pub der: CertificateDer<'static>,
    pub key_der: Vec<u8>,
    pub pem: String,
}

impl TestCert {
    pub fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(self.key_der.clone().into())
    }
    pub fn fingerprints(&self) -> Fingerprints {
        Fingerprints::of(self.der.as_ref())
    }
    pub fn sha1_pin(&self) -> CertPin {
        CertPin::Sha1(self.fingerprints().sha1)
    }
}

pub fn cert() -> TestCert {
    make_cert(false)
}

/// A certificate valid from yesterday for `days` more days.
pub fn cert_valid_for(days: i64) -> TestCert {
    let now = time::OffsetDateTime::now_utc();
    make_cert_with(|params| {
        params.not_before = now - time::Duration::days(1);
        params.not_after = now + time::Duration::days(days);
    })
}

/// A certificate whose validity ended in 2001.
pub fn expired_cert() -> TestCert {
    make_cert(true)
}

fn make_cert(expired: bool) -> TestCert {
    make_cert_with(|params| {
        if expired {
            params.not_before = rcgen::date_time_ymd(2000, 1, 1);
            params.not_after = rcgen::date_time_ymd(2001, 1, 1);
        }
    })
}

fn make_cert_with(validity: impl FnOnce(&mut rcgen::CertificateParams)) -> TestCert {
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "pinproxy test upstream");
    validity(&mut params);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    TestCert {
        der: cert.der().clone(),
        key_der: key.serialize_der(),
        pem: cert.pem(),
    }
}

/// Presents `chain` and signs with `key`, whether or not they belong together:
/// rustls' own builder refuses a mismatched pair, an attacker's server would not.
#[derive(Debug)]
struct Fixed(Arc<CertifiedKey>);

impl ResolvesServerCert for Fixed {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// TLS 1.2 only (an old appliance), or what rustls offers by default.
pub fn protocol_versions(tls12_only: bool) -> &'static [&'static rustls::SupportedProtocolVersion] {
    static TLS12_ONLY: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS12];
    if tls12_only {
        &TLS12_ONLY
    } else {
        rustls::DEFAULT_VERSIONS
    }
}

pub fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    tls12_only: bool,
) -> Arc<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let signing_key = provider.key_provider.load_private_key(key).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(protocol_versions(tls12_only))
        .unwrap()
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(Fixed(Arc::new(CertifiedKey::new(
            chain,
            signing_key,
        )))));
    Arc::new(config)
}
