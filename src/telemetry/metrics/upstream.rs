//! The metric handles of one upstream, and what the status page keeps
//! beside the series (the certificate last presented, the last handshake).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;

use super::checks::{CheckFamilies, CheckRecord};
use super::families::{duration_histogram, ErrorLabels, UpstreamLabel};

/// The metric handles of one upstream, shared by its listener, pool and verifier.
#[derive(Clone, Debug)]
pub struct UpstreamMetrics {
    pub(super) name: Arc<str>,
    /// `None` for detached handles.
    pub(super) errors: Option<Family<ErrorLabels, Counter>>,
    /// `None` for detached handles.
    pub(super) checks: Option<CheckFamilies>,
    pub(super) observed: Arc<Mutex<Observed>>,
    pub(super) requests: [Counter; 5],
    pub(super) duration: Histogram,
    pub(super) handshake_ok: Counter,
    pub(super) handshake_mismatch: Counter,
    pub(super) handshake_error: Counter,
    pub(super) connect_failures: Counter,
    /// Open client connections on this upstream's listener.
    pub client_connections: Gauge,
    /// Open pinned TLS connections to the upstream.
    pub upstream_connections: Gauge,
    /// notAfter of the last certificate the upstream presented that matched a pin.
    pub(super) certificate_not_after: NotAfter,
    /// Whether a `trust_on_first_use` upstream has learned its pin.
    pub pin_learned: LearnedPin,
    pub(super) last_handshake_time: Gauge,
    pub(super) last_handshake_ok: Gauge,
    /// Which address new connections go to (0: the first).
    pub active_target: Gauge,
}

/// The `pinproxy_upstream_pin_learned` series of one upstream: only for
/// upstreams that learn their pin.
#[derive(Clone, Debug)]
pub struct LearnedPin(pub(super) NotAfter);

impl LearnedPin {
    /// Says whether the upstream runs on a learned pin now.
    pub fn set(&self, learned: bool) {
        self.0.set(i64::from(learned));
    }

    /// Removes the series (the upstream no longer learns its pin).
    pub fn clear(&self) {
        self.0.clear();
    }
}

/// The `..._certificate_not_after_timestamp_seconds` series of one upstream:
/// absent until a certificate that matched a pin sets it, so an alert on it
/// never fires from a made-up 0.
#[derive(Clone, Debug)]
pub struct NotAfter {
    pub(super) family: Option<Family<UpstreamLabel, Gauge>>,
    pub(super) label: UpstreamLabel,
}

impl NotAfter {
    /// Records the notAfter (unix seconds) of a pinned certificate.
    pub fn set(&self, unix_seconds: i64) {
        if let Some(family) = &self.family {
            family.get_or_create(&self.label).set(unix_seconds);
        }
    }

    /// Removes the series: the pins it was learned under are gone.
    pub fn clear(&self) {
        if let Some(family) = &self.family {
            family.remove(&self.label);
        }
    }
}

pub(super) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// What the status page shows of an upstream beyond its series; shared by
/// every handle of the upstream.
#[derive(Debug, Default)]
pub(super) struct Observed {
    pub(super) presented: Option<Presented>,
    pub(super) last_handshake: Option<LastHandshake>,
    pub(super) errors: BTreeMap<String, u64>,
    /// The last active check of each address.
    pub(super) checks: BTreeMap<String, CheckRecord>,
    /// Brokered sessions, by user (`uid N`, or `listener`).
    pub(super) sessions: BTreeMap<String, SessionRecord>,
}

/// A brokered management API session, as the status page shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// The local user it is for; `None`: one session for the listener.
    pub uid: Option<u32>,
    /// A session is held now.
    pub held: bool,
    /// Since when (unix seconds).
    pub since: Option<i64>,
    /// A short hash of the sid (never the sid).
    pub tag: Option<String>,
    /// Why the last login failed.
    pub last_error: Option<String>,
}

/// The leaf certificate of an upstream's last full handshake, matched or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presented {
    /// SHA-1 of the DER certificate (what `api fingerprint` prints).
    pub sha1: [u8; 20],
    /// Its notAfter (unix seconds), if it parses.
    pub not_after: Option<i64>,
    /// Whether it matched a pin (else the handshake was refused).
    pub matched: bool,
    /// Which pin it matched, counted from 0 (a learned pin is 0).
    pub pin: Option<usize>,
}

/// How an upstream's last TLS handshake ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastHandshake {
    /// When it ended (unix seconds).
    pub at: i64,
    /// The address it was with (with failover, not always the first).
    pub address: String,
    /// Why it failed; `None` if it succeeded.
    pub error: Option<String>,
}

/// One upstream's counters and last observations at one moment.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Requests answered by status class, 1xx to 5xx.
    pub requests: [u64; 5],
    /// pinproxy's own error answers by reason.
    pub errors: BTreeMap<String, u64>,
    /// Handshakes that matched a pin.
    pub handshakes_ok: u64,
    /// Handshakes refused for a certificate that matched no pin.
    pub handshakes_mismatch: u64,
    /// Handshakes that failed otherwise (timeouts included).
    pub handshakes_error: u64,
    /// TCP connects (or egress tunnels) that failed.
    pub connect_failures: u64,
    /// Open client connections on the upstream's listener.
    pub client_connections: i64,
    /// Open pinned connections to the upstream.
    pub upstream_connections: i64,
    /// Which address new connections go to (0: the first).
    pub active_target: usize,
    /// The certificate last presented.
    pub presented: Option<Presented>,
    /// The last handshake.
    pub last_handshake: Option<LastHandshake>,
    /// The last active check of each address.
    pub checks: BTreeMap<String, CheckRecord>,
    /// Brokered sessions, by user.
    pub sessions: BTreeMap<String, SessionRecord>,
}

/// Where a verifier records what an upstream presents: every leaf for the
/// status page, and the notAfter of a pinned one for `/metrics`.
#[derive(Clone, Debug)]
pub struct Certificates {
    pub(super) not_after: NotAfter,
    pub(super) observed: Arc<Mutex<Observed>>,
}

impl Certificates {
    /// Records the leaf of a full handshake. Only a matched one sets the expiry
    /// series: one that matched no pin could say anything, such as a far-future
    /// date that silences the renewal alert.
    pub fn presented(&self, sha1: [u8; 20], not_after: Option<i64>, pin: Option<usize>) {
        let matched = pin.is_some();
        if let (true, Some(at)) = (matched, not_after) {
            self.not_after.set(at);
        }
        self.observed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .presented = Some(Presented {
            sha1,
            not_after,
            matched,
            pin,
        });
    }

    /// Forgets what was presented: the pins it was judged under are gone.
    pub fn clear(&self) {
        self.not_after.clear();
        self.observed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .presented = None;
    }
}

/// How one upstream TLS handshake ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handshake {
    /// The pin matched and the handshake completed.
    Ok,
    /// The certificate matched no pin.
    FingerprintMismatch,
    /// Any other TLS failure or a handshake timeout.
    Error,
}

impl UpstreamMetrics {
    /// Handles that count into nothing, for code paths without a registry (`fingerprint`, `check`).
    pub fn detached() -> UpstreamMetrics {
        UpstreamMetrics {
            name: "".into(),
            errors: None,
            checks: None,
            observed: Arc::default(),
            requests: Default::default(),
            duration: duration_histogram(),
            handshake_ok: Counter::default(),
            handshake_mismatch: Counter::default(),
            handshake_error: Counter::default(),
            connect_failures: Counter::default(),
            client_connections: Gauge::default(),
            upstream_connections: Gauge::default(),
            certificate_not_after: NotAfter {
                family: None,
                label: UpstreamLabel {
                    upstream: String::new(),
                },
            },
            pin_learned: LearnedPin(NotAfter {
                family: None,
                label: UpstreamLabel {
                    upstream: String::new(),
                },
            }),
            last_handshake_time: Gauge::default(),
            last_handshake_ok: Gauge::default(),
            active_target: Gauge::default(),
        }
    }

    /// Counts one answered request by its status class and records its
    /// duration; `error` is the `X-Pinproxy-Error` reason of pinproxy's own answers.
    pub fn request(&self, status: u16, seconds: f64, error: Option<&str>) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.requests[class].inc();
        self.duration.observe(seconds);
        if let Some(reason) = error {
            self.error(reason);
        }
    }

    /// Counts one of pinproxy's own error answers (the rare path: it takes a lock).
    fn error(&self, reason: &str) {
        if let Some(family) = &self.errors {
            family
                .get_or_create(&ErrorLabels {
                    upstream: self.name.to_string(),
                    reason: reason.to_string(),
                })
                .inc();
        }
        let mut observed = self.observed.lock().unwrap_or_else(|p| p.into_inner());
        *observed.errors.entry(reason.to_string()).or_default() += 1;
    }

    /// Counts one handshake with the server at `address`; `error` says why one
    /// that failed did.
    pub fn handshake(&self, result: Handshake, address: &str, error: Option<String>) {
        match result {
            Handshake::Ok => &self.handshake_ok,
            Handshake::FingerprintMismatch => &self.handshake_mismatch,
            Handshake::Error => &self.handshake_error,
        }
        .inc();
        let now = unix_now();
        self.last_handshake_time.set(now);
        self.last_handshake_ok
            .set(i64::from(result == Handshake::Ok));
        self.observed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .last_handshake = Some(LastHandshake {
            at: now,
            address: address.to_string(),
            error,
        });
    }

    /// Where a verifier records the certificates this upstream presents.
    pub fn certificates(&self) -> Certificates {
        Certificates {
            not_after: self.certificate_not_after.clone(),
            observed: self.observed.clone(),
        }
    }

    /// The upstream's counters and last observations now, for the status page.
    pub fn snapshot(&self) -> Snapshot {
        let observed = self.observed.lock().unwrap_or_else(|p| p.into_inner());
        Snapshot {
            requests: self.requests.each_ref().map(Counter::get),
            errors: observed.errors.clone(),
            handshakes_ok: self.handshake_ok.get(),
            handshakes_mismatch: self.handshake_mismatch.get(),
            handshakes_error: self.handshake_error.get(),
            connect_failures: self.connect_failures.get(),
            client_connections: self.client_connections.get(),
            upstream_connections: self.upstream_connections.get(),
            active_target: usize::try_from(self.active_target.get()).unwrap_or(0),
            presented: observed.presented.clone(),
            last_handshake: observed.last_handshake.clone(),
            checks: observed.checks.clone(),
            sessions: observed.sessions.clone(),
        }
    }

    /// Records the state of the brokered session of `user`; a failed login
    /// keeps the error until the next success.
    pub fn session(&self, user: &str, record: SessionRecord) {
        let mut observed = self.observed.lock().unwrap_or_else(|p| p.into_inner());
        let previous_error = observed
            .sessions
            .get(user)
            .and_then(|r| r.last_error.clone());
        let record = SessionRecord {
            last_error: record
                .last_error
                .or(if record.held { None } else { previous_error }),
            ..record
        };
        observed.sessions.insert(user.to_string(), record);
    }

    /// Counts one failed TCP connect.
    pub fn connect_failed(&self) {
        self.connect_failures.inc();
    }
}
