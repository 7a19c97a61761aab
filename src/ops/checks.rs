//! Active checks: every `check_interval`, a pinned handshake with each address
//! of each upstream (through its egress proxy, with its client certificate,
//! never a resumed session, no request byte), so that a renewed certificate is
//! noticed before a request fails. What a check sees goes to the metrics and
//! the status page; a change of verdict, and an expiry coming close, to one
//! log line each, not one per interval.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::config::{Config, UpstreamConfig};
use crate::telemetry::metrics::{CheckOutcome, CheckRecord, Metrics, UpstreamMetrics};
use crate::tls::known_pins::KnownPins;
use crate::tls::pin::Fingerprints;
use crate::tls::verify::{repin_commands, Trust};
use crate::upstream::probe;
use crate::upstream::UpstreamError;

/// Days before a matching certificate's notAfter at which one WARN is logged.
const EXPIRY_WARNINGS: [i64; 3] = [30, 7, 1];

/// One certificate at one address of one upstream: name, address, SHA-1.
type Seen = (String, String, [u8; 20]);

/// What the checks remember across intervals and reloads: the expiry warnings
/// already given, per upstream, address and certificate.
#[derive(Default)]
pub(crate) struct Memory {
    warned: Mutex<HashMap<Seen, i64>>,
}

/// The running checks of one config; dropping it stops them.
pub(crate) struct Checks {
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Checks {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Starts the checks `config` asks for, the first of each at once, and
/// forgets the records of addresses no longer checked.
pub(crate) fn start(config: &Config, metrics: &Metrics, memory: &Arc<Memory>) -> Checks {
    let mut tasks = Vec::new();
    for up in &config.upstreams {
        let handles = metrics.upstream(&up.name);
        let addresses: Vec<String> = if up.check_interval.is_zero() {
            Vec::new()
        } else {
            up.targets().iter().map(|t| t.address()).collect()
        };
        handles.keep_checks_of(&addresses);
        if up.check_interval.is_zero() {
            continue;
        }
        for (index, target) in up.targets().into_iter().enumerate() {
            // One address as if it were the whole upstream: its own pins,
            // client certificate and egress proxy, no failover, no resumption.
            let mut one = up.clone();
            (one.host, one.port, one.pins) = (target.host, target.port, target.pins);
            (one.client_identity, one.egress_proxy) = (target.client_identity, target.egress_proxy);
            one.fallbacks.clear();
            one.tls_resumption = false;
            let (handles, memory) = (handles.clone(), memory.clone());
            tasks.push(tokio::spawn(async move {
                let mut every = tokio::time::interval(one.check_interval);
                every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    every.tick().await;
                    check(&one, index, &handles, &memory).await;
                }
            }));
        }
    }
    Checks { tasks }
}

/// One check of one address, recorded and, where the verdict changed, logged.
async fn check(up: &UpstreamConfig, index: usize, metrics: &UpstreamMetrics, memory: &Memory) {
    let address = up.address();
    let trust = match up.known_pins.as_deref() {
        Some(path) => match KnownPins::shared(path) {
            // Nothing learned yet: the next client connection learns, not a check.
            Ok(known) if known.get(&up.name).is_none() => return,
            Ok(known) => Trust::Learned(known),
            Err(e) => {
                let _ = metrics.checked(
                    &address,
                    CheckOutcome::Failed {
                        reason: "pin-store-failed",
                        error: e,
                    },
                );
                return;
            }
        },
        None => Trust::Pins(up.pins.clone()),
    };
    let pin_text = |i: usize| match &trust {
        Trust::Learned(known) => known.get(&up.name).map(|l| l.pin).unwrap_or_default(),
        _ => up.pins.get(i).map(ToString::to_string).unwrap_or_default(),
    };
    // Bounded like any handshake of the proxy: connect, then handshake timeout.
    let limit = up.connect_timeout + up.handshake_timeout;
    let (result, refused_leaf) = tokio::time::timeout(
        limit,
        probe::handshake_recording(up, trust.clone(), metrics.certificates()),
    )
    .await
    .unwrap_or_else(|_| {
        let timeout = UpstreamError::Timeout {
            address: address.clone(),
            stage: "check",
            after: limit,
        };
        (Err(timeout), None)
    });
    let outcome = match result {
        Ok(presented) => {
            let leaf = presented.chain[0].as_ref();
            let fp = Fingerprints::of(leaf);
            CheckOutcome::Presented {
                sha1: fp.sha1,
                sha256: fp.sha256,
                not_after: not_after(leaf),
                pin: presented.matched.map(|i| (i + 1, pin_text(i))),
            }
        }
        Err(UpstreamError::FingerprintMismatch(m)) => CheckOutcome::Presented {
            sha1: m.presented.sha1,
            sha256: m.presented.sha256,
            not_after: refused_leaf
                .as_ref()
                .and_then(|der| not_after(der.as_ref())),
            pin: None,
        },
        Err(other) => CheckOutcome::Failed {
            reason: other.status_and_tag().1,
            error: other.to_string(),
        },
    };
    let previous = metrics.checked(&address, outcome);
    let Some(now) = metrics.check_record(&address) else {
        return;
    };
    tracing::debug!(
        upstream = %up.name,
        address = %address,
        result = match (&now.error, now.certificate.as_ref().map(|c| c.pin.is_some())) {
            (Some(_), _) | (None, None) => "failed",
            (None, Some(true)) => "matches",
            (None, Some(false)) => "changed",
        },
        error = now.error.as_deref().unwrap_or(""),
        "active check"
    );
    log_change(up, index, previous.as_ref(), &now);
    warn_expiry(up, &address, &now, memory);
}

fn not_after(der: &[u8]) -> Option<i64> {
    x509_parser::parse_x509_certificate(der)
        .ok()
        .map(|(_, cert)| cert.validity().not_after.timestamp())
}

/// One WARN when an address starts presenting a certificate no pin matches
/// (or another such certificate), one INFO when it matches again.
fn log_change(
    up: &UpstreamConfig,
    index: usize,
    previous: Option<&CheckRecord>,
    now: &CheckRecord,
) {
    let Some(cert) = &now.certificate else {
        return; // a failed check changes no verdict
    };
    let before = previous.and_then(|p| p.certificate.as_ref());
    let address = up.address();
    match (&cert.pin, before) {
        (None, Some(b)) if b.pin.is_none() && b.sha1 == cert.sha1 => {}
        (None, _) => {
            let fp = Fingerprints {
                sha1: cert.sha1,
                sha256: cert.sha256,
                spki_sha256: None,
            };
            let replaced = match before.and_then(|b| b.pin.as_ref()) {
                Some((n, text)) => format!("pin {n} ({text})"),
                None => "no pin seen matching here yet".into(),
            };
            tracing::warn!(
                upstream = %up.name,
                address = %address,
                target = index,
                presented_sha1 = %fp.sha1_line(),
                presented_sha256 = %fp.sha256_line(),
                replaced = %replaced,
                repin = %repin_commands(&up.name, &address, &fp),
                "the upstream presents a certificate that matches no pin: requests will be refused (502 fingerprint-mismatch). \
                 If it was renewed on purpose, compare the SHA1 with `api fingerprint` on the server's console and re-pin; \
                 otherwise someone may be in between"
            );
        }
        (Some((n, text)), Some(b)) if b.pin.is_none() => {
            tracing::info!(
                upstream = %up.name,
                address = %address,
                pin = n,
                matched = %text,
                "the upstream presents a certificate that matches a pin again"
            );
        }
        (Some(_), _) => {}
    }
}

/// One WARN at 30, 7 and 1 days before a matching certificate expires.
fn warn_expiry(up: &UpstreamConfig, address: &str, now: &CheckRecord, memory: &Memory) {
    let Some(cert) = &now.certificate else {
        return;
    };
    let (Some((n, _)), Some(not_after)) = (&cert.pin, cert.not_after) else {
        return;
    };
    // Whole days left, rounded up: a certificate valid for 4 days and 23 hours has 5.
    let days_left = (not_after - now.at + 86_399).div_euclid(86_400);
    let Some(&threshold) = EXPIRY_WARNINGS.iter().filter(|&&t| days_left <= t).min() else {
        return;
    };
    let key = (up.name.clone(), address.to_string(), cert.sha1);
    let mut warned = memory.warned.lock().unwrap_or_else(|p| p.into_inner());
    if warned.get(&key).is_some_and(|&w| w <= threshold) {
        return;
    }
    warned.insert(key, threshold);
    let at = u64::try_from(not_after)
        .map(|s| {
            humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_secs(s))
                .to_string()
        })
        .unwrap_or_else(|_| not_after.to_string());
    tracing::warn!(
        upstream = %up.name,
        address = %address,
        pin = n,
        not_after = %at,
        days_left,
        "the upstream's pinned certificate {}: when the server gets a new one its \
         fingerprint changes and requests will be refused. Add the new pin as soon as the server has it \
         (pinproxy pins add {} --from-server --expect-from 'ssh admin@HOST api fingerprint'), keep the old one until \
         the switch, then remove it. pinproxy itself still accepts the pinned certificate after it expires",
        match threshold {
            _ if not_after < now.at => "has expired".to_string(),
            1 => "expires within 1 day".to_string(),
            t => format!("expires within {t} days"),
        },
        up.name,
    );
}
