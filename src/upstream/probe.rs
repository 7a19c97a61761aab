//! One handshake with an upstream address through the same connector and
//! verifier the proxy uses, sending nothing after it: what `fingerprint`,
//! `check --connect`, `pins add --from-server` and the active checks see.

use std::sync::Arc;

use rustls::pki_types::CertificateDer;

use crate::config::UpstreamConfig;
use crate::telemetry::metrics::{Certificates, UpstreamMetrics};
use crate::tls::verify::{PinVerifier, Trust};

use super::{Alpn, Connector, UpstreamError};

/// What one handshake showed.
#[derive(Debug, Clone)]
pub struct Presented {
    /// The certificates in the order the server sent them; the first is the leaf.
    pub chain: Vec<CertificateDer<'static>>,
    /// Which configured pin the leaf matched (with `Trust::Pins`).
    pub matched: Option<usize>,
    /// Negotiated protocol, e.g. `TLSv1_3`.
    pub protocol: String,
    /// Negotiated cipher suite.
    pub cipher: String,
}

/// One handshake with `cfg`'s address through the same connector and verifier
/// the proxy uses, trusting what `trust` says; what the server presented, and
/// which pin matched. A pin mismatch is `UpstreamError::FingerprintMismatch`.
pub(crate) async fn handshake(
    cfg: &UpstreamConfig,
    trust: Trust,
) -> Result<Presented, UpstreamError> {
    handshake_recording(cfg, trust, UpstreamMetrics::detached().certificates())
        .await
        .0
}

/// [`handshake`], with the presented certificate recorded where the proxy's
/// own handshakes record it (the expiry series takes a matching one only);
/// also the leaf the server presented when it matched no pin.
pub(crate) async fn handshake_recording(
    cfg: &UpstreamConfig,
    trust: Trust,
    certificates: Certificates,
) -> (
    Result<Presented, UpstreamError>,
    Option<CertificateDer<'static>>,
) {
    let address = cfg.address();
    let verifier = Arc::new(
        PinVerifier::new(&cfg.name, trust, certificates)
            .with_legacy_crypto(cfg.legacy_crypto)
            .recording(),
    );
    let connector = Connector::with_verifier(cfg, verifier.clone(), UpstreamMetrics::detached());
    let tls = match connector.connect(Alpn::Configured).await {
        Ok(tls) => tls,
        Err(e) => {
            let leaf = matches!(e, UpstreamError::FingerprintMismatch(_))
                .then(|| verifier.seen().and_then(|s| s.chain.into_iter().next()))
                .flatten();
            return (Err(e), leaf);
        }
    };
    let session = tls.session();
    let protocol = session
        .protocol_version()
        .map(|v| format!("{v:?}"))
        .unwrap_or_default();
    let cipher = session
        .negotiated_cipher_suite()
        .map(|s| format!("{:?}", s.suite()))
        .unwrap_or_default();
    let result = match verifier.seen() {
        Some(seen) if !seen.chain.is_empty() => Ok(Presented {
            chain: seen.chain,
            matched: seen.matched,
            protocol,
            cipher,
        }),
        _ => Err(UpstreamError::Handshake {
            address,
            reason: "the handshake completed without a certificate".into(),
        }),
    };
    (result, None)
}
