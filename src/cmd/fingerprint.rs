//! `pinproxy fingerprint`: connect once without a pin, show what the server
//! presents (in Gaia's `api fingerprint` form and every other pin form), and print
//! a ready-to-paste config snippet. This is trust on first use, and says so.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use crate::config::{self, UpstreamConfig};
use crate::metrics::UpstreamMetrics;
use crate::tls::pin::Fingerprints;
use crate::tls::verify;
use crate::upstream::Connector;

/// What one handshake showed.
#[derive(Debug, Clone)]
pub struct Presented {
    /// The certificates in the order the server sent them; the first is the leaf.
    pub chain: Vec<CertificateDer<'static>>,
    /// Negotiated protocol, e.g. `TLSv1_3`.
    pub protocol: String,
    /// Negotiated cipher suite.
    pub cipher: String,
}

/// Accepts any certificate and remembers it; still checks the handshake signature,
/// so what is recorded is a certificate the server holds the key of.
#[derive(Debug)]
struct Recorder {
    seen: Mutex<Vec<CertificateDer<'static>>>,
    algorithms: WebPkiSupportedAlgorithms,
    /// Check signatures as a `legacy_crypto` upstream would.
    legacy: bool,
}

impl ServerCertVerifier for Recorder {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        *seen = std::iter::once(end_entity)
            .chain(intermediates)
            .map(|c| c.clone().into_owned())
            .collect();
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        if self.legacy {
            return verify::legacy_signature(message, cert, dss);
        }
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
        if self.legacy {
            return verify::LEGACY_SCHEMES.to_vec();
        }
        self.algorithms.supported_schemes()
    }
}

/// Connects to `address` (`host:port`, the port 443 if left out) once and
/// returns what the server presented.
pub async fn probe(
    address: &str,
    server_name: Option<&str>,
    timeout: Duration,
    legacy_crypto: bool,
) -> Result<Presented, String> {
    let (host, port) = config::parse_address(&config::with_default_port(address, 443))?;
    let server_name = match server_name {
        Some(name) => {
            Some(config::parse_server_name(name).map_err(|e| format!("--server-name: {e}"))?)
        }
        None => None,
    };
    let mut cfg = UpstreamConfig::new(
        "probe",
        std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        &host,
        port,
        Vec::new(),
    );
    cfg.server_name = server_name;
    cfg.connect_timeout = timeout;
    cfg.handshake_timeout = timeout;
    cfg.response_timeout = timeout;
    cfg.idle_timeout = timeout;
    cfg.legacy_crypto = legacy_crypto;
    probe_upstream(&cfg).await
}

/// Connects once to a configured upstream (its address, server name and
/// timeouts) without checking its pins, and returns what it presented.
pub async fn probe_upstream(cfg: &UpstreamConfig) -> Result<Presented, String> {
    let address = cfg.address();
    let recorder = Arc::new(Recorder {
        seen: Mutex::new(Vec::new()),
        algorithms: verify::provider().signature_verification_algorithms,
        legacy: cfg.legacy_crypto,
    });
    let connector = Connector::with_verifier(cfg, recorder.clone(), UpstreamMetrics::detached());
    let tls = connector.connect().await.map_err(|e| e.to_string())?.tls;
    let (_, session) = tls.get_ref();
    let protocol = session
        .protocol_version()
        .map(|v| format!("{v:?}"))
        .unwrap_or_default();
    let cipher = session
        .negotiated_cipher_suite()
        .map(|s| format!("{:?}", s.suite()))
        .unwrap_or_default();
    let chain = recorder
        .seen
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    if chain.is_empty() {
        return Err(format!(
            "{address} completed a handshake without presenting a certificate"
        ));
    }
    Ok(Presented {
        chain,
        protocol,
        cipher,
    })
}

/// The human-readable report `pinproxy fingerprint` prints.
pub fn report(address: &str, server_name: Option<&str>, presented: &Presented) -> String {
    let leaf = &presented.chain[0];
    let fp = Fingerprints::of(leaf.as_ref());
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Connected to {address} ({}, {}). No pin was checked: this is trust on first use.\n",
        presented.protocol, presented.cipher
    );
    let _ = writeln!(out, "Fingerprint:");
    let _ = writeln!(out, "{}", fp.sha1_line());
    let _ = writeln!(out, "{}", fp.words_line());
    let _ = writeln!(out, "{}", fp.sha256_line());
    if let Some(spki) = fp.spki_pin() {
        let _ = writeln!(out, "SPKI pin (curl --pinnedpubkey): {spki}");
    }
    out.push('\n');
    match x509_parser::parse_x509_certificate(leaf.as_ref()) {
        Ok((_, cert)) => {
            let validity = cert.validity();
            let _ = writeln!(out, "Subject:    {}", cert.subject());
            let _ = writeln!(out, "Issuer:     {}", cert.issuer());
            let _ = writeln!(out, "Not before: {}", validity.not_before);
            let expired = if validity.time_to_expiration().is_none() {
                "  (EXPIRED: pinproxy still accepts a pinned expired certificate)"
            } else {
                ""
            };
            let _ = writeln!(out, "Not after:  {}{expired}", validity.not_after);
        }
        Err(e) => {
            let _ = writeln!(out, "(the certificate does not parse as X.509: {e})");
        }
    }
    let _ = writeln!(
        out,
        "Chain:      {} certificate(s) presented; only the first (the server's own) is pinned.\n",
        presented.chain.len()
    );
    let _ = writeln!(
        out,
        "Anyone between you and {address} could have answered this connection. Before trusting this pin,\n\
         compare the SHA1 line above with the output of `api fingerprint` on the management server's console.\n"
    );
    let name = address
        .rsplit_once(':')
        .map_or(address, |(h, _)| h)
        .trim_matches(|c| c == '[' || c == ']')
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect::<String>();
    let _ = writeln!(out, "Config snippet (proxy.toml):\n");
    let _ = writeln!(out, "[[upstream]]");
    let _ = writeln!(out, "name = \"{name}\"");
    let _ = writeln!(out, "listen = \"127.0.0.1:8443\"");
    let _ = writeln!(out, "address = \"{address}\"");
    if let Some(sn) = server_name {
        let _ = writeln!(out, "server_name = \"{sn}\"");
    }
    let _ = writeln!(out, "fingerprints = [\"{}\"]", fp.sha1_line());
    out
}
