//! The status page on the admin endpoint, through the built binary: `/status`
//! (JSON) and `/` (HTML) with each upstream, the certificate it last
//! presented, its last handshake, counts and the running config; the page as
//! headless Chromium renders it (DOM checked, phone-sized screenshot kept in
//! `target/status-page.png`).

mod common;

use common::*;
use pinproxy::tls::pin::colon_hex;

/// A running binary with two upstreams: `gaia`, pinned right and valid for
/// 90 more days, and `rogue`, whose server presents another certificate than
/// the pinned one. One request went through each.
struct TwoUpstreams {
    bin: Binary,
    admin: std::net::SocketAddr,
    gaia: TestCert,
    rogue: TestCert,
    config: tempfile::NamedTempFile,
    _servers: (TestServer, TestServer),
}

async fn two_upstreams() -> TwoUpstreams {
    let gaia = cert_valid_for(90);
    let gaia_up = TestServer::start(server_config(vec![gaia.der.clone()], gaia.key(), false)).await;
    let (rogue_up, rogue) = TestServer::start_self_signed().await;
    let pinned_elsewhere = cert();
    // Two pins for gaia, the matching one second (as while rotating).
    let text = config_text(
        gaia_up.addr,
        &gaia.sha1_pin(),
        &format!(
            "[[upstream]]\nname = \"rogue\"\nlisten = \"127.0.0.1:0\"\naddress = \"{}\"\nfingerprints = [\"{}\"]\n\
             [admin]\nlisten = \"127.0.0.1:0\"\n",
            rogue_up.addr,
            pinned_elsewhere.sha1_pin()
        ),
    )
    .replacen(
        &format!("fingerprints = [\"{}\"]", gaia.sha1_pin()),
        &format!("fingerprints = [\"{}\", \"{}\"]", cert().sha1_pin(), gaia.sha1_pin()),
        1,
    );
    // Relative, as an operator in /etc/pinproxy would type it: the page shows it absolute.
    let config = tempfile::Builder::new()
        .suffix(".toml")
        .tempfile_in(".")
        .unwrap();
    std::fs::write(config.path(), text).unwrap();
    let relative = config
        .path()
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let mut bin = Binary::spawn(&["run", "--config", &relative], &[]);
    let listen_of = |line: serde_json::Value| -> std::net::SocketAddr {
        line["listen"].as_str().unwrap().parse().unwrap()
    };
    let gaia_listen =
        listen_of(bin.seen_or_wait(|v| v["message"] == "listening" && v["upstream"] == "gaia"));
    let rogue_listen =
        listen_of(bin.seen_or_wait(|v| v["message"] == "listening" && v["upstream"] == "rogue"));
    let admin = bin.admin();
    assert_eq!(get(&format!("http://{gaia_listen}/x")).await.status, 200);
    let refused = get(&format!("http://{rogue_listen}/x")).await;
    assert_eq!(refused.error_tag(), Some("fingerprint-mismatch"));
    TwoUpstreams {
        bin,
        admin,
        gaia,
        rogue,
        config,
        _servers: (gaia_up, rogue_up),
    }
}

fn upstream<'a>(status: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    status["upstreams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == name)
        .unwrap_or_else(|| panic!("no upstream {name} in {status:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_json_shows_each_upstream_its_certificate_and_last_handshake() {
    let mut t = two_upstreams().await;
    t.bin.discard_output();
    // The upstream's own 502 counts as a 5xx, not as one of pinproxy's errors.
    let gaia_listen = t
        .bin
        .seen_or_wait(|v| v["message"] == "listening" && v["upstream"] == "gaia");
    let spoofed = get(&format!(
        "http://{}/spoofed-error",
        gaia_listen["listen"].as_str().unwrap()
    ))
    .await;
    assert_eq!(spoofed.status, 502);
    let answer = get(&format!("http://{}/status", t.admin)).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.headers["content-type"], "application/json");
    let status = answer.json();

    let gaia = upstream(&status, "gaia");
    assert_eq!(
        gaia["certificate"]["sha1"],
        colon_hex(&t.gaia.fingerprints().sha1)
    );
    assert_eq!(gaia["certificate"]["matched_pin"], true);
    let left = gaia["certificate"]["expires_in_seconds"].as_i64().unwrap();
    assert!((89 * 86_400..=90 * 86_400).contains(&left), "{left}");
    assert_eq!(gaia["last_handshake"]["ok"], true);
    assert_eq!(gaia["last_handshake"]["error"], serde_json::Value::Null);
    assert_eq!(gaia["requests"]["2xx"], 1);
    assert_eq!(gaia["requests"]["5xx"], 1);
    assert_eq!(gaia["errors"], serde_json::json!({}), "{gaia:#}");
    // Each worker pools its own connections: one or two for two requests,
    // every one still open (idle in the pool).
    let handshakes = gaia["handshakes"]["ok"].as_i64().unwrap();
    assert!((1..=2).contains(&handshakes), "{gaia:#}");
    assert_eq!(gaia["open_connections"]["upstream"], handshakes, "{gaia:#}");
    assert_eq!(gaia["trust"], "pins");
    assert_eq!(gaia["targets"][0]["active"], true);
    assert_eq!(gaia["active_target"], gaia["targets"][0]["address"]);
    assert_eq!(
        gaia["targets"][0]["pins"][1],
        t.gaia.sha1_pin().to_string(),
        "{gaia:#}"
    );
    // Which pin matched, as check --connect says it.
    assert_eq!(gaia["targets"][0]["matched_pin"], 2, "{gaia:#}");
    assert_eq!(gaia["certificate"]["pin"], 2, "{gaia:#}");

    // The refused one: what it presented, and why it was refused.
    let rogue = upstream(&status, "rogue");
    assert_eq!(
        rogue["certificate"]["sha1"],
        colon_hex(&t.rogue.fingerprints().sha1)
    );
    assert_eq!(rogue["certificate"]["matched_pin"], false);
    assert_eq!(rogue["last_handshake"]["ok"], false);
    let error = rogue["last_handshake"]["error"].as_str().unwrap();
    assert!(error.contains("matches no configured pin"), "{error}");
    assert_eq!(rogue["requests"]["5xx"], 1);
    assert_eq!(rogue["errors"]["fingerprint-mismatch"], 1);
    assert_eq!(rogue["handshakes"]["fingerprint_mismatch"], 1);

    let file = status["config"]["file"].as_str().unwrap();
    assert!(std::path::Path::new(file).is_absolute(), "{file}");
    assert_eq!(
        std::path::Path::new(file),
        t.config.path().canonicalize().unwrap()
    );
    assert_eq!(status["config"]["stale"], false);
    assert_eq!(status["readiness"], "ready");
    let names: Vec<&str> = status["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["gaia", "rogue", "[admin]"]);

    // The same counts in /metrics.
    let metrics = get(&format!("http://{}/metrics", t.admin)).await.text();
    assert!(
        metrics.contains(
            "pinproxy_errors_total{upstream=\"rogue\",reason=\"fingerprint-mismatch\"} 1"
        ),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_renders_in_a_browser_with_each_upstream_and_its_sha1() {
    let mut t = two_upstreams().await;
    t.bin.discard_output();
    let url = format!("http://{}/", t.admin);
    let page = get(&url).await;
    assert_eq!(page.status, 200);
    assert_eq!(page.headers["content-type"], "text/html; charset=utf-8");
    let csp = page.headers["content-security-policy"].to_str().unwrap();
    assert!(csp.starts_with("default-src 'none'"), "{csp}");
    assert!(!page.text().contains("<script"), "no script on the page");

    let Some(browser) = chromium() else { return };
    let dom = headless(browser, &["--dump-dom"], &url).await;
    for (name, c) in [("gaia", &t.gaia), ("rogue", &t.rogue)] {
        let sha1 = colon_hex(&c.fingerprints().sha1);
        let section = dom
            .split("<section")
            .find(|s| s.contains(&format!("id=\"upstream-{name}\"")))
            .unwrap_or_else(|| panic!("no section for {name} in {dom}"));
        assert!(section.contains(&format!("<h2>{name} ")), "{section}");
        assert!(
            section.contains(&sha1),
            "{name}: {sha1} missing from {section}"
        );
    }
    assert!(dom.contains("matches no pin: refused"), "{dom}");
    // The refused upstream's badge says why; the matching pin is marked, each pin on its own line.
    assert!(
        dom.contains("badge bad\">fingerprint mismatch</span>"),
        "{dom}"
    );
    assert!(
        dom.contains("&larr; presented now") || dom.contains("← presented now"),
        "{dom}"
    );
    assert_eq!(dom.matches("<span class=\"pin\">").count(), 3, "{dom}");

    // A phone-sized screenshot, kept for people to look at (CI keeps target/).
    let shot = concat!(env!("CARGO_MANIFEST_DIR"), "/target/status-page.png");
    let _ = std::fs::remove_file(shot);
    headless(
        browser,
        &[&format!("--screenshot={shot}"), "--window-size=390,1600"],
        &url,
    )
    .await;
    let png = std::fs::read(shot).expect("chromium wrote the screenshot");
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000,
        "{}",
        png.len()
    );
    println!("status page screenshot: {shot}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_reload_shows_as_stale_until_a_good_one() {
    let (up, c) = TestServer::start_self_signed().await;
    let good = config_text(
        up.addr,
        &c.sha1_pin(),
        "[admin]\nlisten = \"127.0.0.1:0\"\n",
    );
    let config = temp_file(&good);
    let mut bin = Binary::spawn(&["run", "--config", config.path().to_str().unwrap()], &[]);
    let admin = bin.admin();
    let status = || async { get(&format!("http://{admin}/status")).await.json() };
    let first = status().await;
    assert_eq!(first["config"]["stale"], false);
    assert_eq!(
        first["config"]["last_reload"],
        serde_json::Value::Null,
        "no reload yet"
    );

    std::fs::write(
        config.path(),
        good.replace("fingerprints = [", "fingerprints = [1, "),
    )
    .unwrap();
    bin.signal("HUP");
    bin.wait_for(|v| v["message"] == "config reload failed; still serving the previous config");
    let stale = status().await;
    assert_eq!(stale["config"]["stale"], true);
    assert_eq!(stale["config"]["last_reload"]["ok"], false);
    let error = stale["config"]["last_reload"]["error"].as_str().unwrap();
    assert!(error.contains(config.path().to_str().unwrap()), "{error}");
    assert_eq!(stale["config"]["loaded_at"], first["config"]["loaded_at"]);
    let page = get(&format!("http://{admin}/")).await.text();
    assert!(
        page.contains("failed; still serving the config loaded above"),
        "{page}"
    );

    std::fs::write(config.path(), good.replace("\"10s\"", "\"11s\"")).unwrap();
    bin.signal("HUP");
    bin.wait_for(|v| v["message"] == "config reloaded");
    let fresh = status().await;
    assert_eq!(fresh["config"]["stale"], false);
    assert_eq!(fresh["config"]["last_reload"]["ok"], true);
    assert_eq!(
        fresh["config"]["last_reload"]["error"],
        serde_json::Value::Null
    );
    assert!(
        fresh["config"]["loaded_at"]["unix"].as_i64()
            >= first["config"]["loaded_at"]["unix"].as_i64()
    );
}
