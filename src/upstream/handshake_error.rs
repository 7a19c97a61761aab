//! Why a pinned TLS handshake failed, in words an operator can act on: a pin
//! mismatch, the server's alert about the client certificate, or a hint chosen
//! by rustls' error variant.

use std::io;

use super::error::{chain, UpstreamError};
use crate::tls::verify;

pub(super) fn handshake_error(
    address: &str,
    err: io::Error,
    client_certificate: bool,
) -> UpstreamError {
    if let Some(mismatch) = verify::find_mismatch(&err) {
        return UpstreamError::FingerprintMismatch(mismatch.clone());
    }
    if let Some(reason) = client_certificate_refusal(&err, client_certificate) {
        return UpstreamError::Handshake {
            address: address.to_string(),
            reason,
        };
    }
    let mut reason = chain(&err);
    let rustls_error = err
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    if let Some(hint) = rustls_error.and_then(hint) {
        reason.push_str(hint);
    }
    UpstreamError::Handshake {
        address: address.to_string(),
        reason,
    }
}

/// The server's TLS alert somewhere in `err`'s chain.
fn alert_in(err: &(dyn std::error::Error + 'static)) -> Option<rustls::AlertDescription> {
    let mut current = Some(err);
    while let Some(e) = current {
        if let Some(rustls::Error::AlertReceived(alert)) = e.downcast_ref::<rustls::Error>() {
            return Some(*alert);
        }
        if let Some(inner) = e.downcast_ref::<io::Error>().and_then(|io| io.get_ref()) {
            if let Some(alert) = alert_in(inner) {
                return Some(alert);
            }
        }
        current = e.source();
    }
    None
}

/// What to say when the server's alert is about the client certificate: it
/// wants one and none is configured, or it refused the one configured. Over
/// TLS 1.3 the server checks it after the client finished its handshake, so
/// this alert may arrive with the response instead.
pub(super) fn client_certificate_refusal(
    err: &(dyn std::error::Error + 'static),
    configured: bool,
) -> Option<String> {
    use rustls::AlertDescription as Alert;
    let alert = alert_in(err)?;
    match (alert, configured) {
        (Alert::CertificateRequired, false) => Some(
            "the server requires a client certificate (TLS alert certificate_required) and this upstream has none: \
             set client_certificate and client_key"
                .into(),
        ),
        (
            Alert::CertificateRequired
            | Alert::BadCertificate
            | Alert::UnsupportedCertificate
            | Alert::CertificateRevoked
            | Alert::CertificateExpired
            | Alert::CertificateUnknown
            | Alert::UnknownCA
            | Alert::AccessDenied,
            true,
        ) => Some(format!(
            "the server refused pinproxy's client certificate (TLS alert {alert:?}): check that client_certificate \
             is issued by a CA the server trusts, is valid today and is meant for client authentication"
        )),
        _ => None,
    }
}

/// What to tell the operator about a handshake that failed with `err`, told by
/// rustls' error variant.
// rustls still maps webpki's unsupported-algorithm errors to the deprecated variant.
#[allow(deprecated)]
fn hint(err: &rustls::Error) -> Option<&'static str> {
    use rustls::{AlertDescription as Alert, CertificateError as Cert, Error, PeerMisbehaved};
    match err {
        Error::AlertReceived(Alert::HandshakeFailure | Alert::ProtocolVersion | Alert::InsufficientSecurity)
        | Error::PeerIncompatible(_) => Some(
            " (the server may offer only TLS 1.0/1.1 or CBC/static-RSA cipher suites, which pinproxy does not \
             support; it needs TLS 1.3, or TLS 1.2 with ECDHE and AES-GCM or ChaCha20-Poly1305. Or, over TLS 1.2, \
             it requires a client certificate: see client_certificate)",
        ),
        // The verifier checks the pin before the signature, so a certificate
        // error here is about checking the handshake signature with its key.
        Error::InvalidCertificate(
            Cert::BadSignature
            | Cert::UnsupportedSignatureAlgorithm
            | Cert::UnsupportedSignatureAlgorithmContext { .. }
            | Cert::UnsupportedSignatureAlgorithmForPublicKeyContext { .. }
            | Cert::BadEncoding
            | Cert::Other(_),
        )
        | Error::PeerMisbehaved(PeerMisbehaved::SignedHandshakeWithUnadvertisedSigScheme) => Some(
            " (the pin matched, but the handshake signature could not be checked with modern algorithms: an old \
             appliance with an RSA key under 2048 bits, SHA-1 signatures or an X.509 v1 certificate fails this way. If \
             that is this server, set legacy_crypto = true for this upstream; the signature is then checked with \
             ring's legacy RSA algorithms over TLS 1.2. A server that shows the certificate without its private key \
             fails either way)",
        ),
        Error::NoApplicationProtocol | Error::AlertReceived(Alert::NoApplicationProtocol) => Some(
            " (the server does not speak HTTP/2, which http2 = \"always\" requires; set http2 = \"auto\")",
        ),
        Error::InvalidMessage(_) | Error::InappropriateMessage { .. } => {
            Some(" (is this port serving TLS? plain HTTP or another protocol answered)")
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::{AlertDescription, CertificateError, Error, InvalidMessage, PeerIncompatible};

    #[test]
    fn handshake_hints_follow_rustls_error_variants() {
        let says = |e: Error, needle: &str| {
            let hint = hint(&e).unwrap_or_default();
            assert!(hint.contains(needle), "{e:?}: {hint:?}");
        };
        says(
            Error::AlertReceived(AlertDescription::HandshakeFailure),
            "TLS 1.0/1.1",
        );
        says(
            Error::AlertReceived(AlertDescription::ProtocolVersion),
            "TLS 1.0/1.1",
        );
        says(
            Error::PeerIncompatible(PeerIncompatible::ServerDoesNotSupportTls12Or13),
            "TLS 1.0/1.1",
        );
        says(
            Error::InvalidCertificate(CertificateError::BadSignature),
            "legacy_crypto = true",
        );
        says(
            Error::InvalidCertificate(CertificateError::BadEncoding),
            "legacy_crypto = true",
        );
        says(Error::NoApplicationProtocol, "http2 = \"auto\"");
        says(
            Error::InvalidMessage(InvalidMessage::InvalidContentType),
            "serving TLS?",
        );
        assert_eq!(
            hint(&Error::AlertReceived(AlertDescription::DecryptError)),
            None
        );
        // Through the io::Error tokio-rustls wraps it in, as the connector sees it.
        let wrapped = io::Error::new(
            io::ErrorKind::InvalidData,
            Error::AlertReceived(AlertDescription::HandshakeFailure),
        );
        match handshake_error("192.0.2.10:443", wrapped, false) {
            UpstreamError::Handshake { reason, .. } => {
                assert!(reason.contains("TLS 1.0/1.1"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
    }
}
