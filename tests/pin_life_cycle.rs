//! The pin's life cycle as an operator lives it: verifying a certificate out
//! of band (`fingerprint --expect`, `--expect-from`), re-pinning in one command
//! (`pins add`, `pins remove`, `--from-server`), pins from a certificate file,
//! and the active checks that notice a renewed certificate before a request
//! fails.

mod common;

use std::process::Output;

use common::*;

fn pinproxy(args: &[&str]) -> Output {
    pinproxy_command()
        .args(args)
        .output()
        .expect("run pinproxy")
}

async fn pinproxy_async(args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        pinproxy(&args)
    })
    .await
    .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test]
async fn fingerprint_expect_says_match_or_mismatch_in_its_exit_code() {
    let (up, c) = TestServer::start_self_signed().await;
    let addr = up.addr.to_string();
    let right = c.fingerprints().sha1_line();
    let wrong = cert().fingerprints().sha256_line();

    let out = pinproxy_async(&["fingerprint", &addr, "--expect", &right]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("MATCH"),
        "{}",
        text(&out)
    );

    let out = pinproxy_async(&["fingerprint", &addr, "--expect", &wrong]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("MISMATCH"), "{stdout}");
    // Both sides are named: what was expected and what the server showed.
    assert!(stdout.contains(&right), "{stdout}");
    assert!(stdout.contains(&wrong), "{stdout}");

    // Gaia's output read from a command (here: echo standing in for ssh).
    let command = format!(
        "echo 'Last login: today'; echo Fingerprint:; echo '{right}'; echo '{}'",
        c.fingerprints().words_line()
    );
    let out = pinproxy_async(&["fingerprint", &addr, "--expect-from", &command]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = pinproxy_async(&["fingerprint", &addr, "--expect-from", "echo SHA1: 00:11"]).await;
    assert_eq!(
        out.status.code(),
        Some(2),
        "a bad expectation is no verdict: {}",
        text(&out)
    );
    assert!(text(&out).contains("4 hex digits"), "{}", text(&out));
    // A command that fails: exit 2, and no connection was needed to say so.
    let out = pinproxy_async(&["fingerprint", "192.0.2.1:9", "--expect-from", "exit 5"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    // A server that cannot be reached is no verdict either.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let nobody = closed.local_addr().unwrap().to_string();
    drop(closed);
    let out = pinproxy_async(&[
        "fingerprint",
        &nobody,
        "--expect",
        &right,
        "--timeout",
        "2s",
    ])
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}

#[cfg(unix)]
#[tokio::test]
async fn a_pin_by_certificate_file_trusts_that_certificate_only() {
    let (up, c) = TestServer::start_self_signed().await;
    let dir = tempfile::tempdir().unwrap();
    // Relative to the config file's directory, as client_certificate is.
    std::fs::write(dir.path().join("gaia.pem"), &c.pem).unwrap();
    std::fs::write(dir.path().join("other.pem"), cert().pem).unwrap();
    std::fs::write(dir.path().join("empty.pem"), "not a certificate\n").unwrap();
    let config_path = dir.path().join("proxy.toml");
    let write = |pin: &str| {
        std::fs::write(
            &config_path,
            config_text(up.addr, &c.sha1_pin(), "").replace(&c.sha1_pin().to_string(), pin),
        )
        .unwrap()
    };

    write("file:gaia.pem");
    let config = pinproxy::config::Config::load(&config_path).unwrap();
    assert_eq!(
        config.upstreams[0].pins,
        vec![pinproxy::tls::pin::CertPin::Sha256(c.fingerprints().sha256)]
    );
    let proxy = pinproxy::server::Proxy::bind(&config).await.unwrap();
    let addr = proxy.local_addrs()[0].1;
    assert_eq!(get(&format!("http://{addr}/x")).await.status, 200);
    proxy.drain().await;

    write("file:other.pem");
    let config = pinproxy::config::Config::load(&config_path).unwrap();
    let proxy = pinproxy::server::Proxy::bind(&config).await.unwrap();
    let addr = proxy.local_addrs()[0].1;
    let refused = get(&format!("http://{addr}/x")).await;
    assert_eq!(refused.error_tag(), Some("fingerprint-mismatch"));
    proxy.drain().await;

    // A file with no certificate is a config error at the pin, with the fix.
    write("file:empty.pem");
    let err = pinproxy::config::Config::load(&config_path).unwrap_err();
    assert!(err.location.ends_with("proxy.toml:7:17"), "{err}");
    assert!(err.message.contains("holds no certificate"), "{err}");
    // The file decides what is trusted: anyone who may write it is refused, as for the config.
    write("file:gaia.pem");
    use std::os::unix::fs::PermissionsExt;
    let pem = dir.path().join("gaia.pem");
    std::fs::set_permissions(&pem, std::fs::Permissions::from_mode(0o666)).unwrap();
    let err = pinproxy::config::Config::load(&config_path).unwrap_err();
    assert!(err.message.contains("writable"), "{err}");
    write("file:missing.pem");
    let err = pinproxy::config::Config::load(&config_path).unwrap_err();
    assert!(
        err.message.contains("cannot read") && err.message.contains("missing.pem"),
        "{err}"
    );
}

/// A config as an operator writes it: comments, blank lines, a multi-line array.
fn commented_config(target: std::net::SocketAddr, pin: &str) -> String {
    format!(
        "# pinproxy in front of the management server\nshutdown_timeout = \"1s\"\n\n[[upstream]]\nname = \"gaia\"      # the SmartCenter\nlisten = \"127.0.0.1:0\"\naddress = \"{target}\"\nserver_name = \"localhost\"\nfingerprints = [\n    # from `api fingerprint`, checked on the console\n    \"{pin}\",\n]\n"
    )
}

#[tokio::test]
async fn pins_add_keeps_the_file_as_written_and_a_reload_then_serves() {
    let (up, renewed) = TestServer::start_self_signed().await;
    let old = cert().fingerprints().sha1_line();
    let new = renewed.fingerprints().sha1_line();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("proxy.toml");
    std::fs::write(&path, commented_config(up.addr, &old)).unwrap();
    let config = path.to_str().unwrap().to_string();
    let mut bin = Binary::spawn(&["run", "--config", &config], &[]);
    let url = format!("http://{}/x", bin.listening());
    let refused = get(&url).await;
    assert_eq!(refused.error_tag(), Some("fingerprint-mismatch"));
    // The refusal names the commands that re-pin, with the presented SHA1 in them.
    let body = refused.text();
    assert!(
        body.contains(&format!("pinproxy pins add gaia '{new}'")),
        "{body}"
    );
    assert!(
        body.contains("pinproxy pins add gaia --from-server --expect-from 'ssh admin@127.0.0.1 api fingerprint'"),
        "{body}"
    );

    // The renewed certificate's SHA1 line, as `api fingerprint` prints it.
    let out = pinproxy_async(&["pins", "add", "gaia", &new, "--config", &config]).await;
    assert!(out.status.success(), "{}", text(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("2 pins now") && said.contains("systemctl reload pinproxy"),
        "{said}"
    );
    let file = std::fs::read_to_string(&path).unwrap();
    assert_eq!(
        file,
        commented_config(up.addr, &old).replace(
            &format!("    \"{old}\",\n"),
            &format!("    \"{old}\",\n    \"{new}\",\n")
        ),
        "only the new line is new"
    );
    // Adding it again, as the English words, changes nothing.
    let out = pinproxy_async(&[
        "pins",
        "add",
        "gaia",
        &renewed.fingerprints().words_line(),
        "--config",
        &config,
    ])
    .await;
    assert!(
        out.status.success() && text(&out).contains("already has this pin"),
        "{}",
        text(&out)
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap(), file);

    bin.signal("HUP");
    let (bin, _) = on(bin, |b| b.wait_for(|v| v["message"] == "config reloaded")).await;
    assert_eq!(get(&url).await.status, 200);

    // The old pin goes after the renewal; the list shows what is left.
    let out = pinproxy_async(&["pins", "remove", "gaia", &old, "--config", &config]).await;
    assert!(out.status.success(), "{}", text(&out));
    let out = pinproxy_async(&["pins", "list", "--config", &config]).await;
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        listed.contains(&format!("1  {new}")) && !listed.contains(&old),
        "{listed}"
    );
    // The last pin stays: an upstream with none would trust nothing.
    let out = pinproxy_async(&["pins", "remove", "gaia", &new, "--config", &config]).await;
    assert!(
        !out.status.success() && text(&out).contains("only pin"),
        "{}",
        text(&out)
    );
    // A change that would make the file invalid is refused and writes nothing.
    let before = std::fs::read_to_string(&path).unwrap();
    let out = pinproxy_async(&["pins", "add", "nosuch", &old, "--config", &config]).await;
    assert!(
        !out.status.success() && text(&out).contains("no [[upstream]] named \"nosuch\""),
        "{}",
        text(&out)
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap(), before);
    bin.signal("TERM");
    let _ = bin.finish();
}

#[tokio::test]
async fn pins_add_from_server_adds_only_what_the_console_says() {
    let (up, renewed) = TestServer::start_self_signed().await;
    let old = cert().fingerprints().sha1_line();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("proxy.toml");
    std::fs::write(&path, commented_config(up.addr, &old)).unwrap();
    let config = path.to_str().unwrap().to_string();
    let before = std::fs::read_to_string(&path).unwrap();

    // The console says another certificate: someone is in between. Refused.
    let elsewhere = cert().fingerprints();
    let console = |fp: &pinproxy::tls::pin::Fingerprints| {
        format!(
            "echo 'Fingerprint:'; echo '{}'; echo '{}'",
            fp.sha1_line(),
            fp.words_line()
        )
    };
    let out = pinproxy_async(&[
        "pins",
        "add",
        "gaia",
        "--from-server",
        "--expect-from",
        &console(&elsewhere),
        "--config",
        &config,
    ])
    .await;
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("MISMATCH") && text(&out).contains(&renewed.fingerprints().sha1_line()),
        "{}",
        text(&out)
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap(), before);

    // No expectation and no --trust-first-use: refused, and says why.
    let out = pinproxy_async(&["pins", "add", "gaia", "--from-server", "--config", &config]).await;
    assert!(
        !out.status.success() && text(&out).contains("--expect-from"),
        "{}",
        text(&out)
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap(), before);

    // The console agrees with what the server presents: added.
    let out = pinproxy_async(&[
        "pins",
        "add",
        "gaia",
        "--from-server",
        "--expect-from",
        &console(&renewed.fingerprints()),
        "--config",
        &config,
    ])
    .await;
    assert!(out.status.success(), "{}", text(&out));
    let file = std::fs::read_to_string(&path).unwrap();
    assert!(file.contains(&renewed.fingerprints().sha1_line()), "{file}");
    assert!(
        file.contains("# from `api fingerprint`, checked on the console"),
        "{file}"
    );
    assert!(pinproxy_async(&["check", "--connect", "--config", &config])
        .await
        .status
        .success());
}

/// The value of one series in a `/metrics` answer.
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

fn is_check(v: &serde_json::Value, result: &str) -> bool {
    v["message"] == "active check" && v["result"] == result
}

#[tokio::test]
async fn a_certificate_replaced_while_no_request_flows_is_reported_and_never_pinned() {
    let (genuine, genuine_cert) = TestServer::start_self_signed().await;
    let (impostor, impostor_cert) = TestServer::start_self_signed().await;
    let (front, to_impostor) = redirector(genuine.addr, impostor.addr).await;
    let text = config_text(
        front,
        &genuine_cert.sha1_pin(),
        "check_interval = \"1s\"\n[admin]\nlisten = \"127.0.0.1:0\"\n",
    );
    let file = temp_file(&text);
    let config = file.path().to_str().unwrap().to_string();
    let bin = Binary::spawn(
        &["run", "--config", &config],
        &[("RUST_LOG", "pinproxy=debug")],
    );
    // The first check runs at start: the genuine certificate matches pin 1.
    let (bin, admin) = on(bin, |b| {
        let admin = b.admin();
        b.wait_for(|v| is_check(v, "matches"));
        admin
    })
    .await;
    let address = front.to_string();
    let series = |name: &str| format!("{name}{{upstream=\"gaia\",address=\"{address}\"}}");
    let metrics = get(&format!("http://{admin}/metrics")).await.text();
    assert_eq!(
        metric(
            &metrics,
            &series("pinproxy_upstream_certificate_matches_pin")
        ),
        Some(1.0),
        "{metrics}"
    );
    assert!(
        metric(
            &metrics,
            &series("pinproxy_upstream_check_timestamp_seconds")
        )
        .unwrap()
            > 1.7e9
    );
    // The expiry series is fed by the check, with no request made.
    assert!(
        metrics.contains(
            "pinproxy_upstream_certificate_not_after_timestamp_seconds{upstream=\"gaia\"}"
        ),
        "{metrics}"
    );
    let status = get(&format!("http://{admin}/status")).await.json();
    let check = &status["upstreams"][0]["targets"][0]["check"];
    assert_eq!(
        (check["result"].as_str(), check["pin"].as_u64()),
        (Some("matches"), Some(1)),
        "{check}"
    );

    // The certificate changes; no client sends anything.
    to_impostor.store(true, std::sync::atomic::Ordering::SeqCst);
    let (bin, warned) = on(bin, |b| {
        b.wait_for(|v| {
            v["level"] == "WARN"
                && v["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("matches no pin"))
        })
    })
    .await;
    let impostor_fp = impostor_cert.fingerprints();
    assert_eq!(
        warned["presented_sha1"],
        impostor_fp.sha1_line(),
        "{warned}"
    );
    assert_eq!(
        warned["presented_sha256"],
        impostor_fp.sha256_line(),
        "{warned}"
    );
    assert_eq!(warned["address"], address);
    assert!(
        warned["replaced"]
            .as_str()
            .unwrap()
            .contains(&genuine_cert.sha1_pin().to_string()),
        "{warned}"
    );
    assert!(
        warned["repin"].as_str().unwrap().contains(&format!(
            "pinproxy pins add gaia '{}'",
            impostor_fp.sha1_line()
        )),
        "{warned}"
    );
    let metrics = get(&format!("http://{admin}/metrics")).await.text();
    assert_eq!(
        metric(
            &metrics,
            &series("pinproxy_upstream_certificate_matches_pin")
        ),
        Some(0.0),
        "{metrics}"
    );
    let status = get(&format!("http://{admin}/status")).await.json();
    let target = &status["upstreams"][0]["targets"][0];
    assert_eq!(target["check"]["result"], "changed", "{target}");
    // Its expiry is recorded too, though it matched no pin.
    assert!(
        target["check"]["not_after"]["unix"].as_i64().is_some(),
        "{target}"
    );
    assert_eq!(
        target["check"]["sha1"],
        impostor_fp.sha1_line().trim_start_matches("SHA1: "),
        "{target}"
    );
    let page = get(&format!("http://{admin}/")).await.text();
    assert!(page.contains("matches no pin"), "{page}");

    // A second check of the impostor: still one WARN, and it is no pin.
    let (mut bin, _) = on(bin, |b| b.wait_for(|v| is_check(v, "changed"))).await;
    assert_eq!(
        target["pins"],
        serde_json::json!([genuine_cert.sha1_pin().to_string()])
    );
    assert_eq!(
        std::fs::read_to_string(file.path()).unwrap(),
        text,
        "the config is not touched"
    );
    assert_eq!(impostor.app_bytes(), 0, "checks send nothing");
    let listen = bin.seen_or_wait(|v| v["message"] == "listening")["listen"].clone();
    let url = format!("http://{}/x", listen.as_str().unwrap());
    assert_eq!(get(&url).await.error_tag(), Some("fingerprint-mismatch"));

    // The genuine server is back: one INFO, and the verdict flips back.
    to_impostor.store(false, std::sync::atomic::Ordering::SeqCst);
    let (bin, back) = on(bin, |b| {
        b.wait_for(|v| {
            v["message"]
                .as_str()
                .is_some_and(|m| m.contains("matches a pin again"))
        })
    })
    .await;
    assert_eq!(back["pin"], 1);
    let warnings = bin
        .seen
        .iter()
        .filter(|l| {
            l.contains("\"WARN\"") && l.contains("matches no pin: requests will be refused")
        })
        .count();
    assert_eq!(warnings, 1, "one WARN per change, not one per check");
    bin.signal("TERM");
    let _ = bin.finish();
}

#[tokio::test]
async fn a_pinned_certificate_close_to_expiry_is_warned_about_once() {
    let c = cert_valid_for(5);
    let up = TestServer::start(server_config(vec![c.der.clone()], c.key(), false)).await;
    let file = temp_file(&config_text(
        up.addr,
        &c.sha1_pin(),
        "check_interval = \"1s\"\n",
    ));
    let config = file.path().to_str().unwrap().to_string();
    let bin = Binary::spawn(
        &["run", "--config", &config],
        &[("RUST_LOG", "pinproxy=debug")],
    );
    let (bin, warned) = on(bin, |b| {
        b.wait_for(|v| {
            v["level"] == "WARN"
                && v["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("expires within"))
        })
    })
    .await;
    let message = warned["message"].as_str().unwrap();
    assert!(
        message.contains("within 7 days") && message.contains("pins add gaia"),
        "{warned}"
    );
    assert_eq!(warned["days_left"], 5);
    // Two more checks: no second warning for the same threshold.
    let (bin, _) = on(bin, |b| {
        b.wait_for(|v| is_check(v, "matches"));
        b.wait_for(|v| is_check(v, "matches"));
    })
    .await;
    let count = bin
        .seen
        .iter()
        .filter(|l| l.contains("expires within"))
        .count();
    assert_eq!(count, 1, "{:?}", bin.seen);
    bin.signal("TERM");
    let _ = bin.finish();
}
