//! The Prometheus metrics served on the admin endpoint's `/metrics`.
//!
//! Every series is created once per upstream name and handed out as cheap
//! handles ([`UpstreamMetrics`]), so the request path only bumps atomics and never
//! looks a label set up. An upstream whose settings change on reload keeps its
//! series (same name, same handles); one that disappears loses its gauges.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabel {
    upstream: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    upstream: String,
    class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HandshakeLabels {
    upstream: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    upstream: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabel {
    version: &'static str,
}

type HistogramFamily = Family<UpstreamLabel, Histogram, fn() -> Histogram>;

/// Upper bounds of the request-duration buckets, in seconds: from a pooled
/// round trip on loopback up to `publish` taking minutes.
const DURATION_BUCKETS: [f64; 15] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

/// All of pinproxy's metrics and the registry that encodes them.
pub struct Metrics {
    registry: Registry,
    /// The standard `process_*` series, read from /proc at each scrape.
    process: Process,
    requests: Family<RequestLabels, Counter>,
    duration: HistogramFamily,
    handshakes: Family<HandshakeLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    connect_failures: Family<UpstreamLabel, Counter>,
    client_connections: Family<UpstreamLabel, Gauge>,
    upstream_connections: Family<UpstreamLabel, Gauge>,
    certificate_not_after: Family<UpstreamLabel, Gauge>,
    pin_learned: Family<UpstreamLabel, Gauge>,
    last_handshake_time: Family<UpstreamLabel, Gauge>,
    last_handshake_ok: Family<UpstreamLabel, Gauge>,
    active_target: Family<UpstreamLabel, Gauge>,
    config_stale: Gauge,
    reloads: Family<ReloadLabels, Counter>,
    /// What the status page shows beyond the series, one record per upstream name.
    observed: Mutex<HashMap<String, Arc<Mutex<Observed>>>>,
}

impl Metrics {
    /// A fresh registry with every metric family registered under `pinproxy_`.
    pub fn new() -> Arc<Metrics> {
        let mut root = Registry::default();
        let registry = root.sub_registry_with_prefix("pinproxy");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Client requests answered, by upstream and status class (pinproxy's own 502/504 included)",
            requests.clone(),
        );
        let duration: HistogramFamily = Family::new_with_constructor(duration_histogram);
        registry.register(
            "request_duration_seconds",
            "Time from receiving a request to the end of its response body, by upstream",
            duration.clone(),
        );
        let handshakes = Family::<HandshakeLabels, Counter>::default();
        registry.register(
            "upstream_handshakes",
            "TLS handshakes with the upstream, by result: ok, fingerprint_mismatch, error",
            handshakes.clone(),
        );
        let errors = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "errors",
            "pinproxy's own error answers (502, 504, 403, …) by upstream and reason, the X-Pinproxy-Error value",
            errors.clone(),
        );
        let connect_failures = Family::<UpstreamLabel, Counter>::default();
        registry.register(
            "upstream_connect_failures",
            "TCP connects to the upstream that failed or timed out (DNS included), before any handshake",
            connect_failures.clone(),
        );
        let client_connections = Family::<UpstreamLabel, Gauge>::default();
        registry.register(
            "client_connections",
            "Open client connections on the upstream's listener",
            client_connections.clone(),
        );
        let upstream_connections = Family::<UpstreamLabel, Gauge>::default();
        registry.register(
            "upstream_connections",
            "Open pinned TLS connections to the upstream, idle in the pool or carrying a request",
            upstream_connections.clone(),
        );
        let certificate_not_after = Family::<UpstreamLabel, Gauge>::default();
        registry.register(
            "upstream_certificate_not_after_timestamp_seconds",
            "notAfter (unix seconds) of the certificate the upstream last presented; alert well before it, the pin changes when it is renewed",
            certificate_not_after.clone(),
        );
        let pin_learned = Family::<UpstreamLabel, Gauge>::default();
        registry.register(
            "upstream_pin_learned",
            "Upstreams with trust_on_first_use: 1 while it runs on a pin learned on first use (known_pins), 0 until it has learned one",
            pin_learned.clone(),
        );
        let last_handshake_time = Family::<UpstreamLabel, Gauge>::default();
        registry.register(
            "upstream_last_handshake_timestamp_seconds",
            "When the last TLS handshake with the upstream ended (unix seconds), whatever its result",
            last_handshake_time.clone(),
        );
        let last_handshake_ok = Family::<UpstreamLabel, Gauge>::default();
        registry.register(
            "upstream_last_handshake_ok",
            "1 if the last TLS handshake with the upstream succeeded (pin matched), 0 if it failed",
            last_handshake_ok.clone(),
        );
        let active_target = Family::<UpstreamLabel, Gauge>::default();
        registry.register(
            "upstream_active_target",
            "Which address of the upstream new connections go to: 0 for the first, 1 for the first fallback, …",
            active_target.clone(),
        );
        let config_stale = Gauge::default();
        registry.register(
            "config_stale",
            "1 while the last config reload failed, so the running config is older than the file; 0 otherwise",
            config_stale.clone(),
        );
        let reloads = Family::<ReloadLabels, Counter>::default();
        registry.register(
            "config_reloads",
            "Config reloads (SIGHUP or --watch-config), by result: ok, error",
            reloads.clone(),
        );
        let build_info = Family::<VersionLabel, Gauge>::default();
        build_info
            .get_or_create(&VersionLabel {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        registry.register("build_info", "pinproxy's version", build_info);
        for result in ["ok", "error"] {
            // Present from the start, so `increase()` sees the first failure.
            reloads.get_or_create_owned(&ReloadLabels { result });
        }
        let process = Process::register(&mut root);
        Arc::new(Metrics {
            registry: root,
            process,
            requests,
            duration,
            handshakes,
            errors,
            connect_failures,
            client_connections,
            upstream_connections,
            certificate_not_after,
            pin_learned,
            last_handshake_time,
            last_handshake_ok,
            active_target,
            config_stale,
            reloads,
            observed: Mutex::default(),
        })
    }

    /// The handles for one upstream; every series but the certificate's notAfter
    /// exists (at zero) from here on.
    pub fn upstream(&self, name: &str) -> UpstreamMetrics {
        let label = UpstreamLabel {
            upstream: name.to_string(),
        };
        let handshake = |result| {
            self.handshakes.get_or_create_owned(&HandshakeLabels {
                upstream: name.to_string(),
                result,
            })
        };
        let observed = self
            .observed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(name.to_string())
            .or_default()
            .clone();
        UpstreamMetrics {
            name: name.into(),
            errors: Some(self.errors.clone()),
            observed,
            requests: STATUS_CLASSES.map(|class| {
                self.requests.get_or_create_owned(&RequestLabels {
                    upstream: name.to_string(),
                    class,
                })
            }),
            duration: self.duration.get_or_create_owned(&label),
            handshake_ok: handshake("ok"),
            handshake_mismatch: handshake("fingerprint_mismatch"),
            handshake_error: handshake("error"),
            connect_failures: self.connect_failures.get_or_create_owned(&label),
            client_connections: self.client_connections.get_or_create_owned(&label),
            upstream_connections: self.upstream_connections.get_or_create_owned(&label),
            certificate_not_after: NotAfter {
                family: Some(self.certificate_not_after.clone()),
                label: label.clone(),
            },
            pin_learned: LearnedPin(NotAfter {
                family: Some(self.pin_learned.clone()),
                label: label.clone(),
            }),
            last_handshake_time: self.last_handshake_time.get_or_create_owned(&label),
            last_handshake_ok: self.last_handshake_ok.get_or_create_owned(&label),
            active_target: self.active_target.get_or_create_owned(&label),
        }
    }

    /// Drops the gauges of an upstream that a reload removed (its counters stay,
    /// as Prometheus expects of counters).
    pub fn forget_upstream(&self, name: &str) {
        let label = UpstreamLabel {
            upstream: name.to_string(),
        };
        self.client_connections.remove(&label);
        self.upstream_connections.remove(&label);
        self.certificate_not_after.remove(&label);
        self.pin_learned.remove(&label);
        self.last_handshake_time.remove(&label);
        self.last_handshake_ok.remove(&label);
        self.active_target.remove(&label);
        self.observed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
    }

    /// Counts one config reload.
    pub fn reloaded(&self, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.reloads.get_or_create(&ReloadLabels { result }).inc();
        self.config_stale.set(i64::from(!ok));
    }

    /// Everything in the OpenMetrics text format (which Prometheus scrapes).
    pub fn encode(&self) -> String {
        self.process.refresh();
        let mut out = String::with_capacity(8 * 1024);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// The same series in Prometheus' classic text format (0.0.4), for
    /// scrapers that do not ask for OpenMetrics.
    pub fn encode_classic(&self) -> String {
        openmetrics_to_classic(&self.encode())
    }
}

/// The content type of [`Metrics::encode`].
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The content type of [`Metrics::encode_classic`].
pub const CLASSIC: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Rewrites OpenMetrics text as Prometheus' 0.0.4 text format. They differ
/// where a counter is named: OpenMetrics describes the family (`# TYPE
/// x counter`) of the `x_total` series, the classic format describes the
/// series itself (`# TYPE x_total counter`), and a classic parser sees
/// `x_total` without HELP or TYPE otherwise. `# UNIT` and `# EOF` exist only
/// in OpenMetrics.
fn openmetrics_to_classic(text: &str) -> String {
    let counters: Vec<&str> = text
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(&name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        match renamed {
            Some(line) => out.push_str(&line),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// The metric handles of one upstream, shared by its listener, pool and verifier.
#[derive(Clone, Debug)]
pub struct UpstreamMetrics {
    name: Arc<str>,
    /// `None` for detached handles.
    errors: Option<Family<ErrorLabels, Counter>>,
    observed: Arc<Mutex<Observed>>,
    requests: [Counter; 5],
    duration: Histogram,
    handshake_ok: Counter,
    handshake_mismatch: Counter,
    handshake_error: Counter,
    connect_failures: Counter,
    /// Open client connections on this upstream's listener.
    pub client_connections: Gauge,
    /// Open pinned TLS connections to the upstream.
    pub upstream_connections: Gauge,
    /// notAfter of the last certificate the upstream presented that matched a pin.
    certificate_not_after: NotAfter,
    /// Whether a `trust_on_first_use` upstream has learned its pin.
    pub pin_learned: LearnedPin,
    last_handshake_time: Gauge,
    last_handshake_ok: Gauge,
    /// Which address new connections go to (0: the first).
    pub active_target: Gauge,
}

/// The `pinproxy_upstream_pin_learned` series of one upstream: only for
/// upstreams that learn their pin.
#[derive(Clone, Debug)]
pub struct LearnedPin(NotAfter);

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
    family: Option<Family<UpstreamLabel, Gauge>>,
    label: UpstreamLabel,
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

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// What the status page shows of an upstream beyond its series; shared by
/// every handle of the upstream.
#[derive(Debug, Default)]
struct Observed {
    presented: Option<Presented>,
    last_handshake: Option<LastHandshake>,
    errors: BTreeMap<String, u64>,
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
}

/// Where a verifier records what an upstream presents: every leaf for the
/// status page, and the notAfter of a pinned one for `/metrics`.
#[derive(Clone, Debug)]
pub struct Certificates {
    not_after: NotAfter,
    observed: Arc<Mutex<Observed>>,
}

impl Certificates {
    /// Records the leaf of a full handshake. Only a matched one sets the expiry
    /// series: one that matched no pin could say anything, such as a far-future
    /// date that silences the renewal alert.
    pub fn presented(&self, sha1: [u8; 20], not_after: Option<i64>, matched: bool) {
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
        }
    }

    /// Counts one failed TCP connect.
    pub fn connect_failed(&self) {
        self.connect_failures.inc();
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_classic_format_names_counters_by_their_series() {
        let open = "# HELP x Things.\n# TYPE x counter\nx_total{a=\"b\"} 1\n# HELP g A gauge.\n# TYPE g gauge\n# UNIT g seconds\ng 2\n# EOF\n";
        assert_eq!(
            openmetrics_to_classic(open),
            "# HELP x_total Things.\n# TYPE x_total counter\nx_total{a=\"b\"} 1\n# HELP g A gauge.\n# TYPE g gauge\ng 2\n"
        );
    }

    use super::*;

    #[test]
    fn series_are_named_and_labelled_for_prometheus() {
        let metrics = Metrics::new();
        let gaia = metrics.upstream("gaia");
        gaia.request(200, 0.003, None);
        gaia.request(502, 0.2, Some("connect-failed"));
        gaia.request(599, 0.2, None);
        gaia.handshake(
            Handshake::FingerprintMismatch,
            "gaia:443",
            Some("no".into()),
        );
        gaia.certificate_not_after.set(1_900_000_000);
        metrics.reloaded(false);
        let text = metrics.encode();
        for line in [
            "pinproxy_requests_total{upstream=\"gaia\",class=\"2xx\"} 1",
            "pinproxy_requests_total{upstream=\"gaia\",class=\"5xx\"} 2",
            "pinproxy_request_duration_seconds_bucket{le=\"0.005\",upstream=\"gaia\"} 1",
            "pinproxy_request_duration_seconds_count{upstream=\"gaia\"} 3",
            "pinproxy_upstream_handshakes_total{upstream=\"gaia\",result=\"fingerprint_mismatch\"} 1",
            "pinproxy_upstream_handshakes_total{upstream=\"gaia\",result=\"ok\"} 0",
            "pinproxy_errors_total{upstream=\"gaia\",reason=\"connect-failed\"} 1",
            "pinproxy_upstream_certificate_not_after_timestamp_seconds{upstream=\"gaia\"} 1900000000",
            "pinproxy_config_reloads_total{result=\"error\"} 1",
            "pinproxy_config_reloads_total{result=\"ok\"} 0",
            "pinproxy_client_connections{upstream=\"gaia\"} 0",
            "pinproxy_upstream_connections{upstream=\"gaia\"} 0",
        ] {
            assert!(text.contains(line), "{line:?} missing from\n{text}");
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn the_certificate_expiry_series_exists_only_once_it_has_a_value() {
        let metrics = Metrics::new();
        let gaia = metrics.upstream("gaia");
        let series = "pinproxy_upstream_certificate_not_after_timestamp_seconds{";
        assert!(!metrics.encode().contains(series));
        gaia.certificate_not_after.set(1_900_000_000);
        assert!(metrics.encode().contains(series));
        gaia.certificate_not_after.clear();
        assert!(!metrics.encode().contains(series));
    }

    #[test]
    fn a_removed_upstream_loses_its_gauges_but_keeps_its_counters() {
        let metrics = Metrics::new();
        metrics.upstream("old").request(200, 0.1, None);
        metrics.forget_upstream("old");
        let text = metrics.encode();
        assert!(!text.contains("pinproxy_client_connections{upstream=\"old\"}"));
        assert!(text.contains("pinproxy_requests_total{upstream=\"old\",class=\"2xx\"} 1"));
    }
}

/// The standard process metrics (as the Prometheus client libraries name
/// them), so dashboards and alerts written for any exporter work here.
#[derive(Debug)]
struct Process {
    resident_memory: Gauge,
    open_fds: Gauge,
    max_fds: Gauge,
    cpu_seconds: Counter<f64, std::sync::atomic::AtomicU64>,
    /// CPU seconds already counted, to add only what is new.
    cpu_counted: std::sync::Mutex<f64>,
}

impl Process {
    fn register(root: &mut Registry) -> Process {
        let process = Process {
            resident_memory: Gauge::default(),
            open_fds: Gauge::default(),
            max_fds: Gauge::default(),
            cpu_seconds: Counter::default(),
            cpu_counted: std::sync::Mutex::new(0.0),
        };
        let start = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        start.set(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
        );
        root.register(
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
            process.resident_memory.clone(),
        );
        root.register(
            "process_open_fds",
            "Number of open file descriptors",
            process.open_fds.clone(),
        );
        root.register(
            "process_max_fds",
            "Maximum number of open file descriptors (soft limit)",
            process.max_fds.clone(),
        );
        root.register(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            process.cpu_seconds.clone(),
        );
        root.register(
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds",
            start,
        );
        process
    }

    /// Reads /proc/self; a value that cannot be read keeps its last one.
    fn refresh(&self) {
        if let Some(kib) = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<i64>().ok())
            })
        {
            self.resident_memory.set(kib * 1024);
        }
        if let Ok(entries) = std::fs::read_dir("/proc/self/fd") {
            self.open_fds
                .set(i64::try_from(entries.count()).unwrap_or(i64::MAX));
        }
        if let Ok((soft, _)) = rlimit::getrlimit(rlimit::Resource::NOFILE) {
            self.max_fds.set(i64::try_from(soft).unwrap_or(i64::MAX));
        }
        // utime and stime, the 14th and 15th fields, in clock ticks (USER_HZ,
        // 100 on Linux); the command name before them may hold spaces.
        let ticks = std::fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|s| {
                let fields: Vec<&str> = s.rsplit_once(')')?.1.split_whitespace().collect();
                Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
            });
        if let Some(ticks) = ticks {
            let seconds = ticks as f64 / 100.0;
            let mut counted = self.cpu_counted.lock().unwrap_or_else(|p| p.into_inner());
            if seconds > *counted {
                self.cpu_seconds.inc_by(seconds - *counted);
                *counted = seconds;
            }
        }
    }
}
