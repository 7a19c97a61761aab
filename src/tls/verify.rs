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
use std::sync::{Arc, Mutex};

use crate::telemetry::metrics::Certificates;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, OtherError, SignatureScheme};

use crate::tls::identity::ClientIdentity;
use crate::tls::known_pins::{KnownPins, Learned};
use crate::tls::pin::{CertPin, Fingerprints};
use crate::tls::signature::{provider, Signatures};

/// The presented leaf certificate matched none of the pins.
#[derive(Debug, Clone)]
pub struct PinMismatch {
    /// Digests of the certificate the server presented.
    pub presented: Fingerprints,
    /// The configured pins, in their canonical written form.
    pub expected: Vec<String>,
    /// The pin was learned on first use (then `expected` is that one pin).
    pub learned: Option<Box<Learned>>,
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

/// The commands that re-pin `upstream` to the certificate it presents now,
/// for the operator who has compared it with `api fingerprint` on the server's
/// console, or who lets SSH to that console do the comparing.
pub fn repin_commands(upstream: &str, address: &str, presented: &Fingerprints) -> String {
    let host = address
        .rsplit_once(':')
        .map_or(address, |(host, _)| host)
        .trim_matches(['[', ']']);
    format!(
        "pinproxy pins add {upstream} '{}'   (once `api fingerprint` on the server's console prints that SHA1), \
         or in one step over SSH: pinproxy pins add {upstream} --from-server --expect-from 'ssh admin@{host} api fingerprint'",
        presented.sha1_line()
    )
}

/// What a [`PinVerifier`] accepts. A closed choice: there is no other way to
/// decide whether an upstream is trusted.
#[derive(Debug, Clone)]
pub enum Trust {
    /// A leaf certificate that matches one of these pins (every upstream).
    Pins(Vec<CertPin>),
    /// Any leaf certificate, for `pinproxy fingerprint`, which shows it to a
    /// person to compare with the server console before it becomes a pin. The
    /// handshake signature is still checked, so it is a certificate the server
    /// holds the key of.
    FirstUse,
    /// The pin learned on first use for this upstream (`trust_on_first_use`):
    /// the one `known_pins` holds, checked here like a configured one. With
    /// none learned yet, any certificate (signature checked); the connector
    /// records it once the handshake has completed, before a request byte.
    Learned(Arc<KnownPins>),
}

/// What the server presented in the last full handshake of a recording verifier.
#[derive(Debug, Clone)]
pub struct Seen {
    /// The certificates in the order the server sent them; the first is the leaf.
    pub chain: Vec<CertificateDer<'static>>,
    /// Which pin (index into [`Trust::Pins`]) the leaf matched, if any.
    pub matched: Option<usize>,
}

/// The one trust decision: accepts a server only as its [`Trust`] says, and
/// checks the handshake signature (modern, or legacy with `legacy_crypto`).
#[derive(Debug)]
pub struct PinVerifier {
    upstream: String,
    trust: Trust,
    signatures: Signatures,
    certificates: Certificates,
    warned_expired: AtomicBool,
    /// Set by [`PinVerifier::recording`] (for `fingerprint` and `check --connect`).
    seen: Option<Mutex<Option<Seen>>>,
}

impl PinVerifier {
    /// A verifier for the upstream called `upstream` (used in log lines) that
    /// records each presented leaf certificate in `certificates`.
    pub fn new(upstream: &str, trust: Trust, certificates: Certificates) -> PinVerifier {
        PinVerifier {
            upstream: upstream.to_string(),
            trust,
            signatures: Signatures::modern(),
            certificates,
            warned_expired: AtomicBool::new(false),
            seen: None,
        }
    }

    /// Also keeps what each full handshake presented, for [`PinVerifier::seen`].
    pub fn recording(mut self) -> PinVerifier {
        self.seen = Some(Mutex::new(None));
        self
    }

    /// What the last full handshake presented (a recording verifier only).
    pub fn seen(&self) -> Option<Seen> {
        let seen = self.seen.as_ref()?;
        seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Also accepts legacy handshake signatures (see [`crate::tls::signature::legacy_signature_valid`]):
    /// for old appliances, with `legacy_crypto = true`.
    pub fn with_legacy_crypto(mut self, legacy: bool) -> PinVerifier {
        if legacy {
            self.signatures = Signatures::legacy();
        }
        self
    }

    /// Records the presented leaf (for `/metrics` and the status page); warns
    /// (once) if a pinned one has expired.
    fn note(&self, der: &[u8], sha1: [u8; 20], pin: Option<usize>, now: UnixTime) {
        let not_after = x509_parser::parse_x509_certificate(der)
            .ok()
            .map(|(_, cert)| cert.validity().not_after);
        self.certificates
            .presented(sha1, not_after.map(|t| t.timestamp()), pin);
        let Some(not_after) = not_after.filter(|_| pin.is_some()) else {
            return;
        };
        if not_after.timestamp() < now.as_secs() as i64
            && !self.warned_expired.swap(true, Ordering::Relaxed)
        {
            tracing::warn!(
                upstream = %self.upstream,
                not_after = %not_after,
                "the pinned certificate has expired; pinproxy still accepts it (expiry is not checked), but renew it on the server and update the pin"
            );
        }
    }
}

/// Records a leaf whose fate was decided outside the verifier (a pin learned
/// on first use, or refused then): `matched` only once it was accepted.
pub(crate) fn record_presented(certificates: &Certificates, der: &[u8], matched: bool) {
    let not_after = x509_parser::parse_x509_certificate(der)
        .ok()
        .map(|(_, cert)| cert.validity().not_after.timestamp());
    certificates.presented(Fingerprints::of(der).sha1, not_after, matched.then_some(0));
}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // Only the end-entity certificate counts: a pinned certificate sent as an
        // "intermediate" by a server holding another leaf proves nothing.
        let presented = Fingerprints::of(end_entity.as_ref());
        let learned = match &self.trust {
            Trust::Learned(known) => known.get(&self.upstream),
            _ => None,
        };
        let matched = match &self.trust {
            Trust::Pins(pins) => pins.iter().position(|pin| pin.matches(&presented)),
            Trust::FirstUse => None,
            Trust::Learned(_) => learned
                .as_ref()
                .and_then(Learned::cert_pin)
                .filter(|pin| pin.matches(&presented))
                .map(|_| 0),
        };
        if let Some(seen) = &self.seen {
            *seen.lock().unwrap_or_else(|p| p.into_inner()) = Some(Seen {
                chain: std::iter::once(end_entity)
                    .chain(intermediates)
                    .map(|c| c.clone().into_owned())
                    .collect(),
                matched,
            });
        }
        let der = end_entity.as_ref();
        match (&self.trust, matched) {
            (Trust::FirstUse, _) => Ok(ServerCertVerified::assertion()),
            // Nothing learned yet: this may become the pin (see Trust::Learned).
            // Not recorded here: whether it is accepted is decided when the
            // connector records the pin, which then records the verdict (see
            // [`record_presented`]), so a certificate refused then is never
            // shown as matching.
            (Trust::Learned(_), None) if learned.is_none() => Ok(ServerCertVerified::assertion()),
            (Trust::Pins(_) | Trust::Learned(_), Some(_)) => {
                self.note(der, presented.sha1, matched, now);
                Ok(ServerCertVerified::assertion())
            }
            (Trust::Pins(_) | Trust::Learned(_), None) => {
                self.note(der, presented.sha1, None, now);
                let expected = match (&self.trust, &learned) {
                    (Trust::Pins(pins), _) => pins.iter().map(CertPin::to_string).collect(),
                    (_, Some(learned)) => vec![learned.pin.clone()],
                    _ => Vec::new(),
                };
                let mismatch = PinMismatch {
                    presented,
                    expected,
                    learned: learned.map(Box::new),
                };
                Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                    OtherError(Arc::new(mismatch)),
                )))
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.signatures.tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.signatures.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.signatures.schemes()
    }
}

/// A client config whose only trust decision is `verifier`, offering `alpn`.
///
/// With `resumption`, reconnects may resume a TLS session instead of running a
/// full handshake. A resumed session does not show the certificate again: it
/// carries the pin decision of the full handshake that created it. That is why
/// each config (and so each session cache) belongs to exactly one verifier, one
/// pin set: build a new config when the pins change, never reuse one.
///
/// With `legacy`, only TLS 1.2 is offered: the legacy signature algorithms exist
/// only there (TLS 1.3 signs with RSA-PSS, which ring checks for 2048-bit keys only).
pub fn client_config(
    verifier: Arc<PinVerifier>,
    alpn: Vec<Vec<u8>>,
    resumption: bool,
    legacy: bool,
    identity: Option<&ClientIdentity>,
) -> ClientConfig {
    let versions: &[&rustls::SupportedProtocolVersion] = if legacy {
        &[&rustls::version::TLS12]
    } else {
        rustls::DEFAULT_VERSIONS
    };
    let config = ClientConfig::builder_with_provider(Arc::new(provider()))
        .with_protocol_versions(versions)
        .expect("the ring provider supports TLS 1.2 and 1.3")
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match identity {
        Some(identity) => config.with_client_cert_resolver(identity.resolver()),
        None => config.with_no_client_auth(),
    };
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
