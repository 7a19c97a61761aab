//! `pinproxy check`: validate a config file without serving it and, with
//! `--connect`, handshake once with every upstream and say whether the
//! certificate it presents matches a configured pin — what an operator runs
//! before a reload, or after a Gaia certificate renewal.

use std::fmt::Write as _;
use std::path::Path;

use crate::config::{Config, ConfigError};
use crate::tls::known_pins::KnownPins;
use crate::tls::pin::Fingerprints;
use crate::tls::verify::Trust;
use crate::upstream::probe;
use crate::upstream::UpstreamError;

/// The printed report, and whether everything checked out.
pub struct Report {
    /// What `pinproxy check` prints.
    pub text: String,
    /// False if any upstream failed or mismatched (exit code 1).
    pub ok: bool,
    /// One object per address handshaken with (`--connect`), for `--json`.
    pub results: Vec<serde_json::Value>,
}

impl Report {
    /// The report as one JSON object, for `check --json`.
    pub fn json(&self, path: &Path) -> String {
        serde_json::json!({
            "config": path.display().to_string(),
            "valid": true,
            "ok": self.ok,
            "connect": self.results,
        })
        .to_string()
            + "\n"
    }
}

/// `check --json` for a file that is not a valid config: every mistake with
/// its location.
pub fn invalid_json(path: &Path, error: &ConfigError) -> String {
    let errors: Vec<serde_json::Value> = error
        .all()
        .map(|e| serde_json::json!({ "location": e.location, "message": e.message }))
        .collect();
    serde_json::json!({
        "config": path.display().to_string(),
        "valid": false,
        "ok": false,
        "errors": errors,
    })
    .to_string()
        + "\n"
}

/// Validates `config` (already parsed from `path`) and optionally connects.
pub async fn check(path: &Path, config: &Config, connect: bool) -> Report {
    let mut text = String::new();
    let count = config.upstreams.len();
    let _ = write!(
        text,
        "{}: valid, {count} upstream{}",
        path.display(),
        if count == 1 { "" } else { "s" }
    );
    if let Some(p) = &config.proxy {
        let _ = write!(text, ", HTTP proxy on {}", p.listen);
    }
    match &config.admin {
        Some(a) => {
            let _ = writeln!(text, ", admin endpoint on {}", a.listen);
        }
        None => text.push('\n'),
    }
    let width = config
        .upstreams
        .iter()
        .map(|u| u.name.len())
        .max()
        .unwrap_or(0);
    for up in &config.upstreams {
        let _ = writeln!(
            text,
            "  {:width$}  {} -> https://{} (server name {}, {} pin{})",
            up.name,
            match &up.listen {
                crate::config::Listen::Tcp(addr) => format!("http://{addr}"),
                unix => unix.to_string(),
            },
            up.address(),
            up.effective_server_name(),
            up.pins.len(),
            match (&up.known_pins, up.pins.len()) {
                (Some(_), _) => "s: learned on first use",
                (None, 1) => "",
                (None, _) => "s",
            },
        );
        if let Some(policy) = &up.requests {
            let _ = writeln!(
                text,
                "  {:width$}  command policy: {} rule{} for every client, {} per-user table{}",
                "",
                policy.default.as_ref().map_or(0, |d| d.rules.len()),
                if policy.default.as_ref().map_or(0, |d| d.rules.len()) == 1 {
                    ""
                } else {
                    "s"
                },
                policy.per_user.len(),
                if policy.per_user.len() == 1 { "" } else { "s" },
            );
            for set in policy
                .default
                .iter()
                .chain(policy.per_user.iter().map(|t| &t.rules))
            {
                if set.rules.is_empty() {
                    let _ = writeln!(
                        text,
                        "  {:width$}  warning: {} allows nothing: its clients get 403 request-not-allowed for \
                         every request (add rules such as \"POST /web_api/show-*\")",
                        "", set.name
                    );
                }
            }
            if policy.default.is_none() {
                let _ = writeln!(
                    text,
                    "  {:width$}  note: no allowed_requests, so clients no [[upstream.policy]] table names may send nothing",
                    ""
                );
            }
        }
        if !up.hosts.is_empty() {
            let hosts: Vec<String> = up.hosts.iter().map(|h| h.to_string()).collect();
            let _ = writeln!(
                text,
                "  {:width$}  proxy-mode hosts: {}",
                "",
                hosts.join(", ")
            );
        }
    }
    if !connect {
        return Report {
            text,
            ok: true,
            results: Vec::new(),
        };
    }
    let mut results = Vec::new();
    text.push_str("\nConnecting to every upstream (nothing is sent after the handshake):\n");
    // One at a time, so the report reads in config order and a slow server is easy to spot.
    let mut ok = true;
    let targets = config.upstreams.iter().flat_map(|up| {
        up.targets().into_iter().map(move |t| {
            let mut one = up.clone();
            (one.host, one.port, one.pins) = (t.host, t.port, t.pins);
            (one.client_identity, one.egress_proxy) = (t.client_identity, t.egress_proxy);
            one.fallbacks.clear();
            one
        })
    });
    for up in targets {
        let up = &up;
        let _ = write!(text, "  {:width$}  {}  ", up.name, up.address());
        let mut result = serde_json::json!({"upstream": up.name, "address": up.address()});
        // The same verifier the proxy runs decides MATCH or MISMATCH; a learned
        // pin is read fresh from known_pins (and nothing is learned here).
        let learned = up
            .known_pins
            .as_deref()
            .map(|path| KnownPins::open(path).map(std::sync::Arc::new));
        let trust = match &learned {
            Some(Ok(known)) => Trust::Learned(known.clone()),
            Some(Err(e)) => {
                ok = false;
                let _ = writeln!(text, "FAILED: {e}");
                result["result"] = "failed".into();
                result["error"] = e.to_string().into();
                results.push(result);
                continue;
            }
            None => Trust::Pins(up.pins.clone()),
        };
        let learned_yet = matches!(&learned, Some(Ok(known)) if known.get(&up.name).is_some());
        match probe::handshake(up, trust).await {
            Ok(presented) if up.known_pins.is_some() && !learned_yet => {
                let fp = Fingerprints::of(presented.chain[0].as_ref());
                let _ = writeln!(
                    text,
                    "NOT LEARNED YET: the next connection of `pinproxy run` learns {} ({}); compare with `api \
                     fingerprint` on the server console",
                    fp.sha1_line(),
                    presented.protocol
                );
                result["result"] = "not_learned".into();
                result["sha1"] = fp.sha1_line().into();
            }
            Ok(presented) => {
                let fp = Fingerprints::of(presented.chain[0].as_ref());
                let pin = presented.matched.map_or(0, |i| i + 1);
                let _ = writeln!(
                    text,
                    "MATCH (pin {pin}), {}, {}",
                    fp.sha1_line(),
                    presented.protocol
                );
                result["result"] = "match".into();
                result["pin"] = pin.into();
                result["sha1"] = fp.sha1_line().into();
                result["protocol"] = presented.protocol.clone().into();
            }
            Err(UpstreamError::FingerprintMismatch(m)) => {
                ok = false;
                let _ = writeln!(
                    text,
                    "MISMATCH: presented {} / {}; pinproxy would refuse this server. If its certificate \
                     was renewed, compare with `api fingerprint` on its console and update the pin",
                    m.presented.sha1_line(),
                    m.presented.sha256_line()
                );
                result["result"] = "mismatch".into();
                result["sha1"] = m.presented.sha1_line().into();
                result["sha256"] = m.presented.sha256_line().into();
            }
            Err(e) => {
                ok = false;
                let _ = writeln!(text, "FAILED: {e}");
                result["result"] = "failed".into();
                result["error"] = e.to_string().into();
            }
        }
        results.push(result);
    }
    Report { text, ok, results }
}
