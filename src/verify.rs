//! The TLS certificate check: a rustls `ServerCertVerifier` that accepts exactly
//! the end-entity certificates matching a configured pin.
//!
//! What it checks: the leaf's digests against the pins, and (always) the TLS 1.2/1.3
//! handshake signature with the ring provider's algorithms, so a server that shows
//! the pinned certificate without holding its private key fails.
//! What it does not check, on purpose: chain, hostname and expiry. A self-signed
//! Gaia certificate has no chain to check, its name rarely matches the address
//! used, and the pin already names the one certificate we trust.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use prometheus_client::metrics::gauge::Gauge;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, OtherError, SignatureScheme};

use crate::pin::{Fingerprints, Pin};

/// The presented leaf certificate matched none of the pins.
#[derive(Debug, Clone)]
pub struct PinMismatch {
    /// Digests of the certificate the server presented.
    pub presented: Fingerprints,
    /// The configured pins, in their canonical written form.
    pub expected: Vec<String>,
}

impl fmt::Display for PinMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the server's certificate matches no configured pin; presented {} and {}; configured: {}",
            self.presented.sha1_line(),
            self.presented.sha256_line(),
            self.expected.join(" | ")
        )
    }
}

impl std::error::Error for PinMismatch {}

/// Accepts a server only if its leaf certificate matches one of `pins`.
#[derive(Debug)]
pub struct PinVerifier {
    upstream: String,
    pins: Vec<Pin>,
    not_after: Gauge,
    algorithms: WebPkiSupportedAlgorithms,
    warned_expired: AtomicBool,
}

impl PinVerifier {
    /// A verifier for the upstream called `upstream` (used in log lines) that
    /// records the notAfter of every presented certificate in `not_after`.
    pub fn new(upstream: &str, pins: Vec<Pin>, not_after: Gauge) -> PinVerifier {
        PinVerifier {
            upstream: upstream.to_string(),
            pins,
            not_after,
            algorithms: provider().signature_verification_algorithms,
            warned_expired: AtomicBool::new(false),
        }
    }

    /// Records the certificate's notAfter for `/metrics`; warns (once) if a pinned
    /// certificate has expired.
    fn note_validity(&self, der: &[u8], pinned: bool, now: UnixTime) {
        let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
            return;
        };
        let not_after = cert.validity().not_after.timestamp();
        self.not_after.set(not_after);
        if pinned
            && not_after < now.as_secs() as i64
            && !self.warned_expired.swap(true, Ordering::Relaxed)
        {
            tracing::warn!(
                upstream = %self.upstream,
                not_after = %cert.validity().not_after,
                "the pinned certificate has expired; pinproxy still accepts it (expiry is not checked), but renew it on the server and update the pin"
            );
        }
    }
}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // Only the end-entity certificate counts: a pinned certificate sent as an
        // "intermediate" by a server holding another leaf proves nothing.
        let presented = Fingerprints::of(end_entity.as_ref());
        let pinned = self.pins.iter().any(|pin| pin.matches(&presented));
        self.note_validity(end_entity.as_ref(), pinned, now);
        if pinned {
            return Ok(ServerCertVerified::assertion());
        }
        let mismatch = PinMismatch {
            presented,
            expected: self.pins.iter().map(Pin::to_string).collect(),
        };
        Err(rustls::Error::InvalidCertificate(CertificateError::Other(
            OtherError(Arc::new(mismatch)),
        )))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The crypto provider for every upstream connection: ring, default suites
/// (TLS 1.3, and TLS 1.2 with ECDHE and AES-GCM or ChaCha20-Poly1305).
pub fn provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// A client config whose only trust decision is `verifier`, offering `alpn`.
///
/// With `resumption`, reconnects may resume a TLS session instead of running a
/// full handshake. A resumed session does not show the certificate again: it
/// carries the pin decision of the full handshake that created it. That is why
/// each config (and so each session cache) belongs to exactly one verifier, one
/// pin set: build a new config when the pins change, never reuse one.
pub fn client_config(
    verifier: Arc<dyn ServerCertVerifier>,
    alpn: Vec<Vec<u8>>,
    resumption: bool,
) -> ClientConfig {
    let mut config = ClientConfig::builder_with_provider(Arc::new(provider()))
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports the default TLS versions")
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = alpn;
    config.resumption = if resumption {
        rustls::client::Resumption::in_memory_sessions(256)
    } else {
        rustls::client::Resumption::disabled()
    };
    // 0-RTT data could be replayed by an attacker; requests are never sent early.
    config.enable_early_data = false;
    config
}

/// Finds a pin mismatch inside the error a TLS handshake returned, if that was the cause.
pub fn find_mismatch<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a PinMismatch> {
    let mut current = Some(err);
    while let Some(e) = current {
        if let Some(rustls::Error::InvalidCertificate(CertificateError::Other(other))) =
            e.downcast_ref::<rustls::Error>()
        {
            return other.0.downcast_ref::<PinMismatch>();
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if let Some(inner) = io.get_ref() {
                if let Some(found) = find_mismatch(inner) {
                    return Some(found);
                }
            }
        }
        current = e.source();
    }
    None
}
