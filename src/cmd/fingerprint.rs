//! `pinproxy fingerprint`: connect once without a pin, show what the server
//! presents (in Gaia's `api fingerprint` form and every other pin form), and print
//! a ready-to-paste config snippet. This is trust on first use, and says so.

use std::fmt::Write as _;
use std::time::Duration;

use crate::cmd::expect::Expectation;
use crate::config::{self, EgressProxy, UpstreamConfig};
use crate::tls::identity::ClientIdentity;
use crate::tls::pin::Fingerprints;
use crate::tls::verify::Trust;
use crate::upstream::probe::handshake;
pub use crate::upstream::probe::Presented;

/// The `host:port` to probe, from what a user types: `HOST`, `HOST:PORT`, or
/// a URL such as `https://mgmt.example/web_api/` (its host and port; 443 by
/// default).
pub fn address_of(text: &str) -> Result<String, String> {
    let text = text.trim();
    let rest = if let Some(rest) = strip_scheme(text, "https://") {
        rest
    } else if strip_scheme(text, "http://").is_some() {
        // Not quoted: a URL may carry user:password@.
        return Err(
            "an http:// URL: pinproxy fingerprints TLS servers; write https://… or HOST[:PORT]"
                .into(),
        );
    } else {
        text
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    let authority = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    if authority.is_empty() {
        return Err("no host in the address; write HOST[:PORT] or https://HOST[:PORT]/".into());
    }
    Ok(config::with_default_port(authority, 443))
}

fn strip_scheme<'a>(text: &'a str, scheme: &str) -> Option<&'a str> {
    text.get(..scheme.len())
        .filter(|s| s.eq_ignore_ascii_case(scheme))
        .map(|_| &text[scheme.len()..])
}

/// Connects to `address` (`host:port`, the port 443 if left out) once and
/// returns what the server presented.
pub async fn probe(
    address: &str,
    server_name: Option<&str>,
    timeout: Duration,
    legacy_crypto: bool,
    client_identity: Option<ClientIdentity>,
    egress_proxy: Option<EgressProxy>,
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
    cfg.client_identity = client_identity;
    cfg.egress_proxy = egress_proxy;
    probe_upstream(&cfg).await
}

/// Connects once to a configured upstream (its address, server name and
/// timeouts) without checking its pins, and returns what it presented.
pub async fn probe_upstream(cfg: &UpstreamConfig) -> Result<Presented, String> {
    handshake(cfg, Trust::FirstUse)
        .await
        .map_err(|e| e.to_string())
}

/// `fingerprint --expect`: whether the server presented the expected
/// certificate, and the verdict to print (`MATCH …` or `MISMATCH …` with both
/// fingerprints, so the operator sees which side changed).
pub fn compare(address: &str, presented: &Presented, expected: &Expectation) -> (bool, String) {
    let fp = Fingerprints::of(presented.chain[0].as_ref());
    if expected.matches(&fp) {
        let text = format!(
            "MATCH: {address} presents the expected certificate (expected by {})\n{}\n{}\n",
            expected.source,
            fp.sha1_line(),
            fp.sha256_line()
        );
        return (true, text);
    }
    let text = format!(
        "MISMATCH: {address} presents another certificate than the one expected by {}\n\
         expected:  {}\n\
         presented: {}\n\
         presented: {}\n\
         Someone may be between you and the server, or its certificate changed; do not pin it\n\
         until `api fingerprint` on the server's console prints the presented SHA1.\n",
        expected.source,
        expected.pin,
        fp.sha1_line(),
        fp.sha256_line()
    );
    (false, text)
}

/// What `pinproxy fingerprint --json` prints: the same facts as [`report`], as
/// one JSON object for automation.
pub fn report_json(address: &str, server_name: Option<&str>, presented: &Presented) -> String {
    let leaf = &presented.chain[0];
    let fp = Fingerprints::of(leaf.as_ref());
    let mut value = serde_json::json!({
        "address": address,
        "server_name": server_name,
        "protocol": presented.protocol,
        "cipher": presented.cipher,
        "sha1": fp.sha1_line(),
        "words": fp.words_line(),
        "sha256": fp.sha256_line(),
        "spki_pin": fp.spki_pin(),
        "chain_length": presented.chain.len(),
        "verified": false,
    });
    if let Ok((_, cert)) = x509_parser::parse_x509_certificate(leaf.as_ref()) {
        let validity = cert.validity();
        value["subject"] = cert.subject().to_string().into();
        value["issuer"] = cert.issuer().to_string().into();
        value["not_before"] = validity.not_before.timestamp().into();
        value["not_after"] = validity.not_after.timestamp().into();
        value["expired"] = validity.time_to_expiration().is_none().into();
    }
    value.to_string() + "\n"
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
    // The certificate's own name when it has one (its first DNS SAN, else its
    // CN), else the host connected to: "mgmt-example-com", not "127-0-0-1".
    let certificate_name = x509_parser::parse_x509_certificate(leaf.as_ref())
        .ok()
        .and_then(|(_, cert)| {
            let san = cert
                .subject_alternative_name()
                .ok()
                .flatten()
                .and_then(|san| {
                    san.value.general_names.iter().find_map(|n| match n {
                        x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_string()),
                        _ => None,
                    })
                });
            san.or_else(|| {
                cert.subject()
                    .iter_common_name()
                    .find_map(|cn| cn.as_str().ok().map(String::from))
            })
        })
        .filter(|n| !n.is_empty() && n.parse::<std::net::IpAddr>().is_err());
    let host = address
        .rsplit_once(':')
        .map_or(address, |(h, _)| h)
        .trim_matches(|c| c == '[' || c == ']')
        .to_string();
    let name = certificate_name
        .unwrap_or(host)
        .trim_start_matches("*.")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect::<String>()
        .trim_matches('-')
        .to_string();
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
