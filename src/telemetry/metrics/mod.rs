//! The Prometheus metrics served on the admin endpoint's `/metrics`.
//!
//! Every series is created once per upstream name and handed out as cheap
//! handles ([`UpstreamMetrics`]), so the request path only bumps atomics and never
//! looks a label set up. An upstream whose settings change on reload keeps its
//! series (same name, same handles); one that disappears loses its gauges.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use self::families::{
    duration_histogram, ErrorLabels, HandshakeLabels, HistogramFamily, ReloadLabels, RequestLabels,
    UpstreamLabel, VersionLabel, STATUS_CLASSES,
};
use self::format::openmetrics_to_classic;
use self::process::Process;
use self::upstream::Observed;

mod checks;
mod families;
mod format;
mod process;
mod upstream;

pub use checks::{CheckOutcome, CheckRecord};
pub use format::{CLASSIC, OPENMETRICS};
pub use upstream::{
    Certificates, Handshake, LearnedPin, NotAfter, SessionRecord, Snapshot, UpstreamMetrics,
};

/// All of pinproxy's metrics and the registry that encodes them.
pub struct Metrics {
    registry: Registry,
    /// The standard `process_*` series, read at each scrape.
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
    checks: checks::CheckFamilies,
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
        let checks = checks::CheckFamilies::register(registry);
        registry.register(
            "audit_write_failures",
            "Audit records that could not be written to audit_log (each is still in the log, target pinproxy::audit)",
            crate::telemetry::audit::failures().clone(),
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
            checks,
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
            checks: Some(self.checks.clone()),
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
        let observed = self
            .observed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
        if let Some(observed) = observed {
            let observed = observed.lock().unwrap_or_else(|p| p.into_inner());
            for address in observed.checks.keys() {
                self.checks.forget(name, address);
            }
        }
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

#[cfg(test)]
mod tests {
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
