//! The shipped alert rules (deploy/prometheus/alerts.yml, shown in the README)
//! against what a running pinproxy exports, with `promtool test rules`: the
//! renewal alert stays quiet before the first handshake, is not silenced by an
//! impostor's far-future certificate, and fires for the pinned certificate that
//! expires within 14 days.

mod common;

use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use common::*;

const RULES: &str = include_str!("../deploy/prometheus/alerts.yml");
const NOT_AFTER: &str = "pinproxy_upstream_certificate_not_after_timestamp_seconds";

async fn scrape(admin: std::net::SocketAddr) -> String {
    let a = get(&format!("http://{admin}/metrics")).await;
    assert_eq!(a.status, 200);
    a.text()
}

/// `(labels, value)` of each sample of `name` in a scrape.
fn samples(text: &str, name: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter_map(|l| l.strip_prefix(name)?.strip_prefix('{'))
        .filter_map(|l| {
            let (labels, value) = l.split_once("} ")?;
            Some((format!("{{{labels}}}"), value.parse().ok()?))
        })
        .collect()
}

/// `promtool test rules` with `test` (a test file over `alerts.yml`) beside
/// the shipped rules; fails the test with promtool's words if it does not pass.
fn promtool_test_rules(test: &str) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("alerts.yml"), RULES).unwrap();
    std::fs::write(dir.path().join("test.yml"), test).unwrap();
    let out = std::process::Command::new("promtool")
        .args(["test", "rules", "test.yml"])
        .current_dir(dir.path())
        .output()
        .expect("promtool (Debian package prometheus) runs");
    assert!(
        out.status.success(),
        "promtool test rules failed:\n{}{}\n{test}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `promtool test rules` on the shipped rules with one test case: the
/// not-after samples as scraped, moved onto promtool's clock (which starts at
/// 0), evaluated five minutes in; `firing` lists the upstreams expected to alert.
fn promtool_expects(scraped: &[(String, f64)], firing: &[&str]) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let eval = 300.0;
    let series: String = scraped
        .iter()
        .map(|(labels, value)| {
            format!(
                "      - series: '{NOT_AFTER}{labels}'\n        values: '{}x10'\n",
                (value - now + eval).round()
            )
        })
        .collect();
    let alerts: String = firing
        .iter()
        .map(|up| {
            format!(
                "          - exp_labels: {{severity: warning, upstream: {up}}}\n            exp_annotations:\n              \
                 summary: \"the pinned certificate of {up} expires within 14 days: prepare the new pin\"\n"
            )
        })
        .collect();
    let test = format!(
        "rule_files: [alerts.yml]\nevaluation_interval: 1m\ntests:\n  - interval: 1m\n    input_series:{}\n{series}    \
         alert_rule_test:\n      - eval_time: 5m\n        alertname: PinproxyCertificateExpiresSoon\n        exp_alerts:{}\n{alerts}",
        if series.is_empty() { " []" } else { "" },
        if alerts.is_empty() { " []" } else { "" },
    );
    promtool_test_rules(&test);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_renewal_alert_follows_only_pinned_certificates() {
    let soon_cert = cert_valid_for(10);
    let soon = TestServer::start(server_config(
        vec![soon_cert.der.clone()],
        soon_cert.key(),
        false,
    ))
    .await;
    let far_cert = cert_valid_for(20 * 365);
    let impostor = TestServer::start(server_config(
        vec![far_cert.der.clone()],
        far_cert.key(),
        false,
    ))
    .await;
    let (front, to_impostor) = redirector(soon.addr, impostor.addr).await;
    let later_cert = cert_valid_for(100);
    let later = TestServer::start(server_config(
        vec![later_cert.der.clone()],
        later_cert.key(),
        false,
    ))
    .await;
    let text = format!(
        "{}\n[[upstream]]\nname = \"later\"\nlisten = \"127.0.0.1:0\"\naddress = \"{}\"\nfingerprints = [\"{}\"]\ncheck_interval = \"0s\"\n[admin]\nlisten = \"127.0.0.1:0\"\n",
        config_text(front, &soon_cert.sha1_pin(), "").replace("name = \"gaia\"", "name = \"soon\""),
        later.addr,
        later_cert.sha1_pin(),
    );
    let config = temp_file(&text);
    let mut bin = Binary::spawn(&["run", "--config", config.path().to_str().unwrap()], &[]);
    let soon_url = format!("http://{}/x", bin.listening());
    let later_url = format!("http://{}/x", bin.listening());
    let admin = bin.admin();
    bin.discard_output();

    // Before any handshake: no series, no alert; and no (proxy) series without [proxy].
    let first = scrape(admin).await;
    assert!(samples(&first, NOT_AFTER).is_empty(), "{first}");
    assert!(!first.contains("(proxy)"), "{first}");
    promtool_expects(&samples(&first, NOT_AFTER), &[]);

    // An impostor with a certificate valid for 20 years: refused, and recorded nowhere.
    to_impostor.store(true, Ordering::SeqCst);
    assert_eq!(
        get(&soon_url).await.error_tag(),
        Some("fingerprint-mismatch")
    );
    assert!(samples(&scrape(admin).await, NOT_AFTER).is_empty());

    // The genuine servers: their pinned certificates' notAfter, to the second.
    to_impostor.store(false, Ordering::SeqCst);
    assert_eq!(get(&soon_url).await.status, 200);
    assert_eq!(get(&later_url).await.status, 200);
    // A second impostor handshake after the genuine one changes nothing either.
    soon.close_idle_connections().await;
    to_impostor.store(true, Ordering::SeqCst);
    assert_eq!(
        get(&soon_url).await.error_tag(),
        Some("fingerprint-mismatch")
    );
    let mut scraped = samples(&scrape(admin).await, NOT_AFTER);
    scraped.sort_by(|a, b| a.0.cmp(&b.0));
    let not_after = |c: &TestCert| {
        let (_, parsed) = x509_parser::parse_x509_certificate(c.der.as_ref()).unwrap();
        parsed.validity().not_after.timestamp() as f64
    };
    assert_eq!(
        scraped,
        vec![
            ("{upstream=\"later\"}".to_string(), not_after(&later_cert)),
            ("{upstream=\"soon\"}".to_string(), not_after(&soon_cert)),
        ]
    );
    promtool_expects(&scraped, &["soon"]);
}

/// The certificate-changed alert against a live scrape: an upstream whose
/// active check sees a certificate matching no pin fires it, with the upstream
/// and address as labels; one whose certificate matches does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_certificate_changed_alert_fires_from_the_checks_alone() {
    let (renewed, _) = TestServer::start_self_signed().await;
    let (fine, fine_cert) = TestServer::start_self_signed().await;
    let text = format!(
        "{}\n[[upstream]]\nname = \"fine\"\nlisten = \"127.0.0.1:0\"\naddress = \"{}\"\nfingerprints = [\"{}\"]\n[admin]\nlisten = \"127.0.0.1:0\"\n",
        config_text(renewed.addr, &cert().sha1_pin(), "check_interval = \"10m\"\n"),
        fine.addr,
        fine_cert.sha1_pin(),
    );
    let config = temp_file(&text);
    let bin = Binary::spawn(
        &["run", "--config", config.path().to_str().unwrap()],
        &[("RUST_LOG", "pinproxy=debug")],
    );
    let (mut bin, admin) = on(bin, |b| {
        let admin = b.admin();
        // Both first checks, in either order.
        b.seen_or_wait(|v| v["message"] == "active check" && v["upstream"] == "gaia");
        b.seen_or_wait(|v| v["message"] == "active check" && v["upstream"] == "fine");
        admin
    })
    .await;
    bin.discard_output();
    let scraped = scrape(admin).await;
    let name = "pinproxy_upstream_certificate_matches_pin";
    let series: String = samples(&scraped, name)
        .iter()
        .map(|(labels, value)| {
            format!("      - series: '{name}{labels}'\n        values: '{value}x10'\n")
        })
        .collect();
    assert_eq!(samples(&scraped, name).len(), 2, "{scraped}");
    let address = renewed.addr;
    let test = format!(
        "rule_files: [alerts.yml]\nevaluation_interval: 1m\ntests:\n  - interval: 1m\n    input_series:\n{series}    \
         alert_rule_test:\n      - eval_time: 5m\n        alertname: PinproxyUpstreamCertificateChanged\n        exp_alerts:\n          \
         - exp_labels: {{severity: critical, upstream: gaia, address: \"{address}\"}}\n            exp_annotations:\n              \
         summary: \"gaia at {address} presents a certificate that matches no pin: compare it with `api fingerprint` on the server's console and re-pin (pinproxy pins add), or find who is in between\"\n"
    );
    promtool_test_rules(&test);
}

/// `promtool check metrics` on a live scrape: a scraper that does not ask for
/// OpenMetrics gets the classic format with HELP and TYPE for every series (it
/// exited 3 on "no help text" for each counter when OpenMetrics was all there
/// was); one that asks gets OpenMetrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_pass_promtool_check_and_openmetrics_is_negotiated() {
    let (up, c) = TestServer::start_self_signed().await;
    let config = temp_file(&config_text(
        up.addr,
        &c.sha1_pin(),
        "[admin]\nlisten = \"127.0.0.1:0\"\n",
    ));
    let mut bin = Binary::spawn(&["run", "--config", config.path().to_str().unwrap()], &[]);
    let url = format!("http://{}/x", bin.listening());
    let admin = bin.admin();
    bin.discard_output();
    assert_eq!(get(&url).await.status, 200);

    let classic = get(&format!("http://{admin}/metrics")).await;
    assert_eq!(
        classic.headers["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = classic.text();
    assert!(
        text.contains("# TYPE pinproxy_requests_total counter"),
        "{text}"
    );
    // The standard process metrics, about this very process.
    let value = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("{name} missing:\n{text}"))
            .parse()
            .unwrap()
    };
    let rss = value("process_resident_memory_bytes");
    assert!((1e6..1e9).contains(&rss), "{rss}");
    let (open, max) = (value("process_open_fds"), value("process_max_fds"));
    assert!(open >= 5.0 && max >= open, "{open} {max}");
    assert!(value("process_cpu_seconds_total") >= 0.0);
    assert!(text.contains("# TYPE process_cpu_seconds_total counter"));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let started = value("process_start_time_seconds");
    assert!(started <= now && now - started < 600.0, "{started} {now}");
    let mut promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus)");
    std::io::Write::write_all(&mut promtool.stdin.take().unwrap(), text.as_bytes()).unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let client = client();
    let req = http::Request::get(format!("http://{admin}/metrics"))
        .header(
            "accept",
            "application/openmetrics-text;version=1.0.0;q=0.9,text/plain;version=0.0.4;q=0.5",
        )
        .body(empty())
        .unwrap();
    let open = send(&client, req).await;
    assert!(open.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/openmetrics-text"));
    assert!(open.text().ends_with("# EOF\n"), "{}", open.text());
    assert!(open.text().contains("# TYPE pinproxy_requests counter"));
}
