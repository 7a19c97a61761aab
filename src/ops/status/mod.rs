//! The status page on the admin endpoint: `GET /status` answers JSON and
//! `GET /` the same data as one plain HTML page (no script, no external asset,
//! readable on a phone). It answers the operator's first questions without a
//! Prometheus: is each upstream's certificate the pinned one, when does it
//! expire, did the last handshake work, which address is in use, and which
//! config is running.
//!
//! Every value comes from what the service already keeps: the running config
//! (handed over at start and on every reload, see [`Board`]) and the metric
//! handles of each upstream ([`crate::telemetry::metrics::Snapshot`]).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use serde::Serialize;

use crate::config::{Config, Listen, UpstreamConfig};
use crate::http::proxy_mode::PROXY_LABEL;
use crate::telemetry::metrics::{CheckRecord, Metrics, Snapshot};
use crate::tls::known_pins::KnownPins;
use crate::tls::pin::colon_hex;

mod html;

/// What the running service tells the status page: the config it serves and
/// where its listeners are bound. Updated by `service` on every reload.
pub(crate) struct Board {
    running: ArcSwap<Running>,
    /// When the last reload was, and its error if it failed (then the running
    /// config is older than the file); `None` before the first.
    last_reload: Mutex<Option<(SystemTime, Option<String>)>>,
    metrics: Arc<Metrics>,
}

/// One loaded config and the sockets it is served on.
pub(crate) struct Running {
    /// The config being served.
    pub config: Config,
    /// Where it was read from (`None`: `run` flags, or the demo).
    pub file: Option<PathBuf>,
    /// When it was loaded.
    pub loaded_at: SystemTime,
    /// Where each upstream's listener is bound (ports resolved).
    pub listeners: Vec<(Arc<str>, Listen)>,
    /// Where the `[proxy]` listener is bound.
    pub proxy: Option<Listen>,
    /// Where the admin endpoint is bound.
    pub admin: Option<Listen>,
}

impl Board {
    pub(crate) fn new(metrics: Arc<Metrics>, running: Running) -> Arc<Board> {
        Arc::new(Board {
            running: ArcSwap::from_pointee(running),
            last_reload: Mutex::new(None),
            metrics,
        })
    }

    /// Starting up: `running` is complete now (the admin endpoint is bound).
    pub(crate) fn started(&self, running: Running) {
        self.running.store(Arc::new(running));
    }

    /// A reload applied `running`.
    pub(crate) fn reloaded(&self, running: Running) {
        self.running.store(Arc::new(running));
        *self.last_reload.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((SystemTime::now(), None));
    }

    /// A reload failed; the running config stays.
    pub(crate) fn reload_failed(&self, error: &str) {
        *self.last_reload.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((SystemTime::now(), Some(error.to_string())));
    }

    /// Everything the page shows, now; `readiness` is what `/readyz` says.
    pub(crate) fn status(&self, readiness: &'static str) -> Status {
        let running = self.running.load();
        let now = SystemTime::now();
        let last_reload = self
            .last_reload
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .map(|(at, error)| ReloadStatus {
                at: Time::of(unix(at)),
                ok: error.is_none(),
                error,
            });
        let config = &running.config;
        let mut listeners: Vec<ListenerStatus> = running
            .listeners
            .iter()
            .map(|(name, listen)| ListenerStatus {
                name: name.to_string(),
                listen: listen.to_string(),
                serves: format!("upstream {name}"),
                open_connections: Some(self.metrics.upstream(name).snapshot().client_connections),
            })
            .collect();
        if let (Some(listen), Some(_)) = (&running.proxy, &config.proxy) {
            let names: Vec<&str> = config.upstreams.iter().map(|u| u.name.as_str()).collect();
            listeners.push(ListenerStatus {
                name: "[proxy]".into(),
                listen: listen.to_string(),
                serves: format!("HTTP-proxy clients, by host: {}", names.join(", ")),
                open_connections: Some(
                    self.metrics
                        .upstream(PROXY_LABEL)
                        .snapshot()
                        .client_connections,
                ),
            });
        }
        if let Some(listen) = &running.admin {
            listeners.push(ListenerStatus {
                name: "[admin]".into(),
                listen: listen.to_string(),
                serves: "/ /status /healthz /readyz /metrics".into(),
                open_connections: None,
            });
        }
        let upstreams = config
            .upstreams
            .iter()
            .map(|up| {
                let listen = running
                    .listeners
                    .iter()
                    .find(|(name, _)| **name == *up.name)
                    .map_or_else(|| up.listen.to_string(), |(_, l)| l.to_string());
                upstream_status(up, listen, &self.metrics.upstream(&up.name).snapshot(), now)
            })
            .collect();
        Status {
            version: env!("CARGO_PKG_VERSION"),
            generated_at: Time::of(unix(now)),
            readiness,
            config: ConfigStatus {
                file: running.file.as_ref().map(|p| p.display().to_string()),
                loaded_at: Time::of(unix(running.loaded_at)),
                stale: last_reload.as_ref().is_some_and(|r| !r.ok),
                last_reload,
            },
            listeners,
            upstreams,
        }
    }
}

/// The page's data; `/status` is this as JSON.
#[derive(Debug, Serialize)]
pub(crate) struct Status {
    version: &'static str,
    generated_at: Time,
    /// What `/readyz` says: `ready`, `starting` or `draining`.
    readiness: &'static str,
    config: ConfigStatus,
    listeners: Vec<ListenerStatus>,
    upstreams: Vec<UpstreamStatus>,
}

#[derive(Debug, Serialize)]
struct ConfigStatus {
    file: Option<String>,
    loaded_at: Time,
    /// The last reload failed: the file says something else than what runs.
    stale: bool,
    /// `None` before the first reload.
    last_reload: Option<ReloadStatus>,
}

#[derive(Debug, Serialize)]
struct ReloadStatus {
    at: Time,
    ok: bool,
    error: Option<String>,
}

#[derive(Debug, Serialize)]
struct ListenerStatus {
    name: String,
    listen: String,
    serves: String,
    open_connections: Option<i64>,
}

#[derive(Debug, Serialize)]
struct UpstreamStatus {
    name: String,
    listen: String,
    /// `pins`, or `trust_on_first_use`.
    trust: &'static str,
    /// The addresses in failover order, each with its pins.
    targets: Vec<TargetStatus>,
    /// The address new connections go to.
    active_target: String,
    /// The leaf certificate of the last full handshake, matched or not.
    certificate: Option<CertificateStatus>,
    last_handshake: Option<HandshakeStatus>,
    /// Requests answered, by status class (`1xx` … `5xx`).
    requests: BTreeMap<&'static str, u64>,
    /// pinproxy's own error answers, by `X-Pinproxy-Error` reason.
    errors: BTreeMap<String, u64>,
    handshakes: HandshakeCounts,
    connect_failures: u64,
    open_connections: OpenConnections,
    /// Brokered management API sessions (`[upstream.session]`), by user.
    sessions: Vec<SessionStatus>,
}

#[derive(Debug, Serialize)]
struct SessionStatus {
    /// `uid N`, or `listener` for one session shared by the listener.
    user: String,
    uid: Option<u32>,
    held: bool,
    since: Option<Time>,
    /// A short hash of the session id (never the id).
    session: Option<String>,
    last_login_error: Option<String>,
}

#[derive(Debug, Serialize)]
struct TargetStatus {
    address: String,
    pins: Vec<String>,
    active: bool,
    client_certificate: bool,
    /// `host:port` of the HTTP proxy it is reached through (never credentials).
    egress_proxy: Option<String>,
    /// Which of `pins` the certificate this address presents matches, from 1
    /// (its last check, else the last handshake when it is the address in use).
    matched_pin: Option<usize>,
    /// What the last active check of this address saw (`check_interval`).
    check: Option<CheckStatus>,
}

#[derive(Debug, Serialize)]
struct CheckStatus {
    /// When the last check ran.
    at: Time,
    /// `matches`: the certificate presented now matches a pin; `changed`: it
    /// matches none; `failed`: the last check saw no certificate (`error`
    /// says why; the certificate fields are from the check before).
    result: &'static str,
    sha1: Option<String>,
    sha256: Option<String>,
    /// The pin matched, numbered from 1 as in the config, and its text.
    pin: Option<usize>,
    pin_text: Option<String>,
    /// Since when this address presents this certificate.
    since: Option<Time>,
    not_after: Option<Time>,
    error: Option<String>,
}

fn check_status(record: &CheckRecord) -> CheckStatus {
    let cert = record.certificate.as_ref();
    CheckStatus {
        at: Time::of(record.at),
        result: match (&record.error, cert.map(|c| c.pin.is_some())) {
            (Some(_), _) | (None, None) => "failed",
            (None, Some(true)) => "matches",
            (None, Some(false)) => "changed",
        },
        sha1: cert.map(|c| colon_hex(&c.sha1)),
        sha256: cert.map(|c| colon_hex(&c.sha256)),
        pin: cert.and_then(|c| c.pin.as_ref().map(|p| p.0)),
        pin_text: cert.and_then(|c| c.pin.as_ref().map(|p| p.1.clone())),
        since: cert.map(|c| Time::of(c.since)),
        not_after: cert.and_then(|c| c.not_after.map(Time::of)),
        error: record.error.clone(),
    }
}

#[derive(Debug, Serialize)]
struct CertificateStatus {
    /// `7D:FE:…`, as `api fingerprint` prints it on the server.
    sha1: String,
    /// Whether it matched a pin; `false`: it was refused.
    matched_pin: bool,
    /// Which pin it matched, from 1.
    pin: Option<usize>,
    not_after: Option<Time>,
    /// Negative once expired.
    expires_in_seconds: Option<i64>,
}

#[derive(Debug, Serialize)]
struct HandshakeStatus {
    at: Time,
    ok: bool,
    address: String,
    error: Option<String>,
}

#[derive(Debug, Serialize)]
struct HandshakeCounts {
    ok: u64,
    fingerprint_mismatch: u64,
    error: u64,
}

#[derive(Debug, Serialize)]
struct OpenConnections {
    /// Client connections on the upstream's listener.
    client: i64,
    /// Pinned connections to the upstream, idle or busy.
    upstream: i64,
}

/// A moment as unix seconds and as RFC 3339 (UTC).
#[derive(Debug, Serialize)]
struct Time {
    unix: i64,
    utc: String,
}

impl Time {
    fn of(unix: i64) -> Time {
        let at = u64::try_from(unix).map_or(UNIX_EPOCH, |s| UNIX_EPOCH + Duration::from_secs(s));
        Time {
            unix,
            utc: humantime::format_rfc3339_seconds(at).to_string(),
        }
    }
}

fn unix(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn upstream_status(
    up: &UpstreamConfig,
    listen: String,
    seen: &Snapshot,
    now: SystemTime,
) -> UpstreamStatus {
    let targets = up.targets();
    // A learning upstream's one pin is the one in known_pins, if any yet.
    let learned = up
        .known_pins
        .as_deref()
        .map(|path| KnownPins::shared(path).ok().and_then(|k| k.get(&up.name)));
    let target_status = targets
        .iter()
        .enumerate()
        .map(|(i, t)| TargetStatus {
            address: t.address(),
            pins: match &learned {
                Some(learned) => learned.iter().map(|l| l.pin.clone()).collect(),
                None => t.pins.iter().map(ToString::to_string).collect(),
            },
            active: i == seen.active_target,
            client_certificate: t.client_identity.is_some(),
            egress_proxy: t.egress_proxy.as_ref().map(|p| p.address.clone()),
            check: seen.checks.get(&t.address()).map(check_status),
            matched_pin: seen
                .checks
                .get(&t.address())
                .and_then(|r| r.certificate.as_ref())
                .map(|c| c.pin.as_ref().map(|p| p.0))
                .unwrap_or_else(|| {
                    seen.presented
                        .as_ref()
                        .filter(|_| i == seen.active_target)
                        .and_then(|p| p.pin)
                        .map(|p| p + 1)
                }),
        })
        .collect();
    let certificate = seen.presented.as_ref().map(|c| CertificateStatus {
        sha1: colon_hex(&c.sha1),
        matched_pin: c.matched,
        pin: c.pin.map(|p| p + 1),
        not_after: c.not_after.map(Time::of),
        expires_in_seconds: c.not_after.map(|at| at.saturating_sub(unix(now))),
    });
    let last_handshake = seen.last_handshake.as_ref().map(|h| HandshakeStatus {
        at: Time::of(h.at),
        ok: h.error.is_none(),
        address: h.address.clone(),
        error: h.error.clone(),
    });
    UpstreamStatus {
        name: up.name.clone(),
        listen,
        trust: if learned.is_some() {
            "trust_on_first_use"
        } else {
            "pins"
        },
        active_target: targets
            .get(seen.active_target)
            .or(targets.first())
            .map(|t| t.address())
            .unwrap_or_default(),
        targets: target_status,
        certificate,
        last_handshake,
        requests: ["1xx", "2xx", "3xx", "4xx", "5xx"]
            .into_iter()
            .zip(seen.requests)
            .collect(),
        errors: seen.errors.clone(),
        handshakes: HandshakeCounts {
            ok: seen.handshakes_ok,
            fingerprint_mismatch: seen.handshakes_mismatch,
            error: seen.handshakes_error,
        },
        connect_failures: seen.connect_failures,
        open_connections: OpenConnections {
            client: seen.client_connections,
            upstream: seen.upstream_connections,
        },
        sessions: seen
            .sessions
            .iter()
            .map(|(user, s)| SessionStatus {
                user: user.clone(),
                uid: s.uid,
                held: s.held,
                since: s.since.map(Time::of),
                session: s.tag.clone(),
                last_login_error: s.last_error.clone(),
            })
            .collect(),
    }
}

impl Status {
    /// `/status`.
    pub(crate) fn json(&self) -> String {
        // Plain data: serializing it cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default() + "\n"
    }
}
