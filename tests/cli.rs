//! The built `pinproxy` binary as users run it: config errors, the fingerprint
//! command against OpenSSL, the demo, graceful shutdown, streaming memory, logs.

mod common;

use std::process::Command;
use std::sync::atomic::Ordering;

use common::*;
use http::Request;
use http_body_util::BodyExt;

fn pinproxy(args: &[&str]) -> std::process::Output {
    pinproxy_command()
        .args(args)
        .output()
        .expect("run pinproxy")
}

/// Every manual page renders with `man -l` without a warning, and every page
/// one of them refers to (`pinproxy-run(1)`, `pinproxy.toml(5)`) is among them.
#[test]
fn every_manual_page_renders_and_every_page_referred_to_exists() {
    let dir = tempfile::tempdir().unwrap();
    let out = pinproxy(&["man", "--dir", dir.path().to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    let mut written: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    written.sort();
    for needed in [
        "pinproxy.1",
        "pinproxy-run.1",
        "pinproxy-pins-add.1",
        "pinproxy.toml.5",
    ] {
        assert!(
            written.iter().any(|w| w == needed),
            "{needed} missing: {written:?}"
        );
    }
    let mut referred = std::collections::BTreeSet::new();
    for page in &written {
        let rendered = Command::new("man")
            .args(["-E", "ascii", "-l"])
            .arg(dir.path().join(page))
            .env("MANWIDTH", "250")
            .output()
            .expect("man (Debian package man-db) runs");
        let text = String::from_utf8_lossy(&rendered.stdout).into_owned();
        assert!(rendered.status.success(), "{page}");
        assert!(
            rendered.stderr.is_empty(),
            "{page}: {}",
            String::from_utf8_lossy(&rendered.stderr)
        );
        for (at, _) in text.match_indices("pinproxy") {
            let rest = &text[at..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '.')
                .collect();
            if let Some(section) = rest[name.len()..]
                .strip_prefix('(')
                .and_then(|r| r.chars().next())
            {
                if section == '1' || section == '5' {
                    referred.insert(format!("{}.{section}", name.trim_end_matches('.')));
                }
            }
        }
        if page == "pinproxy.1" {
            for section in ["FILES", "ENVIRONMENT", "SIGNALS", "EXIT STATUS", "EXAMPLES"] {
                assert!(
                    text.contains(&format!("\n{section}\n")),
                    "no {section} in pinproxy(1)"
                );
            }
        }
        if page == "pinproxy.toml.5" {
            assert!(
                text.contains("check_interval = \"10m\""),
                "the example config is in pinproxy.toml(5)"
            );
        }
    }
    assert!(referred.len() >= 8, "{referred:?}");
    for page in &referred {
        assert!(
            written.contains(page),
            "{page} is referred to but not written: {written:?}"
        );
    }
}

#[test]
fn completions_and_the_manual_page_come_from_the_same_definitions_as_help() {
    let bash = pinproxy(&["completions", "bash"]);
    assert!(bash.status.success());
    let script = String::from_utf8_lossy(&bash.stdout).to_string();
    for word in [
        "run",
        "check",
        "fingerprint",
        "health",
        "pins",
        "forget",
        "--egress-proxy",
    ] {
        assert!(
            script.contains(word),
            "{word} missing from the bash completion"
        );
    }
    // bash accepts it as a script.
    let mut check = Command::new("bash")
        .arg("-n")
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut check.stdin.take().unwrap(), script.as_bytes()).unwrap();
    assert!(
        check.wait().unwrap().success(),
        "bash -n refused the completion script"
    );

    for (shell, marker) in [
        ("zsh", "#compdef pinproxy"),
        ("fish", "complete -c pinproxy"),
    ] {
        let out = pinproxy(&["completions", shell]);
        assert!(out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stdout).contains(marker),
            "{shell}"
        );
    }
    let bad = pinproxy(&["completions", "tcsh"]);
    assert!(!bad.status.success());

    let man = pinproxy(&["man"]);
    assert!(man.status.success());
    let page = String::from_utf8_lossy(&man.stdout);
    assert!(page.contains(".TH pinproxy 1"), "{page}");
    for cmd in ["run", "fingerprint", "pins", "completions"] {
        assert!(page.contains(cmd), "{cmd} missing from the manual page");
    }
}

#[test]
fn a_fatal_error_in_json_mode_is_a_json_line_and_a_rust_log_that_silences_everything_is_named() {
    let out = pinproxy(&[
        "--log-format",
        "json",
        "check",
        "--config",
        "/nonexistent/proxy.toml",
    ]);
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line: serde_json::Value = stdout
        .lines()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no JSON line in {stdout:?}"));
    assert_eq!(
        (line["level"].as_str(), line["fatal"].as_bool()),
        (Some("ERROR"), Some(true)),
        "{line}"
    );
    assert!(
        line["message"]
            .as_str()
            .unwrap_or("")
            .contains("/nonexistent/proxy.toml"),
        "{line}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("pinproxy: error: "));

    for (value, warned) in [
        ("verbose", true),
        ("debug", false),
        ("pinproxy=trace", false),
        ("info,pinproxy::access=off", false),
    ] {
        let out = pinproxy_command()
            .args([
                "--log-format",
                "json",
                "check",
                "--config",
                "/nonexistent/proxy.toml",
            ])
            .env("RUST_LOG", value)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            stdout.contains("RUST_LOG names no level"),
            warned,
            "{value}: {stdout}"
        );
        // Either way the fatal error is logged: `verbose` no longer silences it.
        assert!(stdout.contains("\"fatal\":true"), "{value}: {stdout}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fingerprint_and_check_connect_speak_json_for_automation() {
    let (up, c) = TestServer::start_self_signed().await;
    let out = pinproxy(&["fingerprint", &up.addr.to_string(), "--json"]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["sha1"], c.fingerprints().sha1_line());
    assert_eq!(v["sha256"], c.fingerprints().sha256_line());
    assert_eq!(v["verified"], false);
    assert!(v["not_after"].as_i64().unwrap() > v["not_before"].as_i64().unwrap());

    let (other, _) = TestServer::start_self_signed().await;
    let text = format!(
        "{}\n[[upstream]]\nname = \"other\"\nlisten = \"127.0.0.1:0\"\naddress = \"{}\"\nfingerprints = [\"{}\"]\n",
        config_text(up.addr, &c.sha1_pin(), ""),
        other.addr,
        c.sha1_pin()
    );
    let file = temp_file(&text);
    let out = pinproxy(&[
        "check",
        "--connect",
        "--json",
        "--config",
        file.path().to_str().unwrap(),
    ]);
    assert!(!out.status.success(), "one upstream mismatches");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (v["valid"].as_bool(), v["ok"].as_bool()),
        (Some(true), Some(false)),
        "{v}"
    );
    let results = v["connect"].as_array().unwrap();
    assert_eq!(results.len(), 2, "{v}");
    assert_eq!(
        (
            results[0]["upstream"].as_str(),
            results[0]["result"].as_str()
        ),
        (Some("gaia"), Some("match"))
    );
    assert_eq!(
        (
            results[1]["upstream"].as_str(),
            results[1]["result"].as_str()
        ),
        (Some("other"), Some("mismatch"))
    );
}

#[cfg(unix)]
#[test]
fn under_systemd_each_line_carries_its_journald_priority() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let run = |journal: bool, format: &str| {
        let path = dir.path().join(format!("{format}-{journal}.out"));
        let file = std::fs::File::create(&path).unwrap();
        let meta = file.metadata().unwrap();
        let mut cmd = pinproxy_command();
        cmd.args([
            "--log-format",
            format,
            "check",
            "--config",
            "/nonexistent/proxy.toml",
        ])
        .env("RUST_LOG", "verbose")
        .stdout(file);
        if journal {
            cmd.env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()));
        }
        assert!(!cmd.status().unwrap().success());
        std::fs::read_to_string(&path).unwrap()
    };
    // The WARN about RUST_LOG is <4>; in JSON mode the fatal error is <3>.
    let text = run(true, "text");
    assert!(
        text.lines()
            .any(|l| l.starts_with("<4>") && l.contains("RUST_LOG")),
        "{text}"
    );
    let json = run(true, "json");
    let fatal = json
        .lines()
        .find(|l| l.contains("\"fatal\":true"))
        .unwrap_or_default();
    assert!(fatal.starts_with("<3>{"), "{json}");
    assert!(
        serde_json::from_str::<serde_json::Value>(&fatal[3..]).is_ok(),
        "{fatal}"
    );
    // Not the journal (the variable inherited, stdout elsewhere): no prefixes.
    let plain = run(false, "text");
    assert!(
        !plain.contains("<4>") && plain.contains("RUST_LOG"),
        "{plain}"
    );
}

#[test]
fn help_and_version() {
    let out = pinproxy(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for cmd in ["run", "fingerprint", "demo"] {
        assert!(help.contains(cmd), "{help}");
    }
    let out = pinproxy(&["--version"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("pinproxy {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn a_bad_config_names_file_line_column_and_fix() {
    let text = "[[upstream]]\nname = \"gaia\"\nlisten = \"127.0.0.1:0\"\naddress = \"192.0.2.10:443\"\nfingerprints = [\"SHA1: 7D:FE:DE\"]\n";
    let file = temp_file(text);
    let path = file.path().to_str().unwrap();
    let out = pinproxy(&["run", "--config", path]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{path}:5:17")), "{err}");
    assert!(err.contains("6 hex digits"), "{err}");

    let file = temp_file(&text.replace("name", "nmae"));
    let out = pinproxy(&["run", "--config", file.path().to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(":2:1: unknown key `nmae`: did you mean `name`?"),
        "{err}"
    );

    let out = pinproxy(&["run", "--config", "/nonexistent/proxy.toml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read the config file"));

    // Without --config, PINPROXY_CONFIG names the file.
    let out = pinproxy_command()
        .arg("run")
        .env("PINPROXY_CONFIG", "/nonexistent/from-env.toml")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/from-env.toml"));
}

/// `pinproxy check` reports every mistake in the file at once (one line each,
/// in file order), and `check --json` lists them for automation.
#[test]
fn check_reports_every_mistake_in_the_file_at_once() {
    let text = "[[upstream]]\nname = \"gaia\"\nlisten = \"127.0.0.1:0\"\naddress = \"192.0.2.10:443\"\n\
                fingerprints = [\"SHA1: 7D:FE:DE\"]\nconnect_timeout = 5\n\
                [[upstream]]\nnmae = \"backup\"\nname = \"backup\"\nlisten = \"127.0.0.1:0\"\n\
                address = \"192.0.2.11\"\nfingerprints = [\"SHA1: 7D:FE:DE:EE:C7:B9:D0:67:35:E4:C4:16:EC:7A:03:13:48:CD:CA:8D\"]\n";
    let file = temp_file(text);
    let path = file.path().to_str().unwrap();
    let out = pinproxy(&["check", "--config", path]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let mut at = 0;
    for want in [
        format!("{path}:5:17: bad pin"),
        format!("{path}:6:19: connect_timeout is a duration"),
        format!("{path}:8:1: unknown key `nmae`"),
        format!("{path}:11:11: "),
    ] {
        let found = err[at..]
            .find(&want)
            .unwrap_or_else(|| panic!("{want:?} missing (or out of order) in {err}"));
        at += found + want.len();
    }
    assert!(err.contains("has no port"), "{err}");

    let out = pinproxy(&["check", "--json", "--config", path]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["valid"], false);
    let locations: Vec<&str> = v["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["location"].as_str().unwrap())
        .collect();
    assert_eq!(
        locations,
        ["5:17", "6:19", "8:1", "11:11"].map(|at| format!("{path}:{at}"))
    );
}

#[test]
fn run_flags_refuse_a_non_loopback_listener_and_bad_pins() {
    let pin = "7DFEDEEEC7B9D06735E4C416EC7A031348CDCA8D";
    let out = pinproxy(&[
        "run",
        "--listen",
        "0.0.0.0:8443",
        "--upstream",
        "mgmt:443",
        "--fingerprint",
        pin,
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--listen") && err.contains("not a loopback address"),
        "{err}"
    );
    let out = pinproxy(&[
        "run",
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        "mgmt:443",
        "--fingerprint",
        "7D:FE:ZZ",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad character 'Z' at position 7"), "{err}");
}

fn openssl_fingerprint(pem: &str, digest: &str) -> String {
    let file = temp_file(pem);
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", digest, "-in"])
        .arg(file.path())
        .output()
        .expect("openssl is installed (the CI script installs it)");
    assert!(out.status.success());
    // "SHA1 Fingerprint=7D:FE:..." / "sha256 Fingerprint=..."
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim().split_once('=').unwrap().1.to_string()
}

#[tokio::test]
async fn fingerprint_prints_what_openssl_computes() {
    let (up, c) = TestServer::start_self_signed().await;
    let addr = up.addr.to_string();
    let out = tokio::task::spawn_blocking(move || pinproxy(&["fingerprint", &addr]))
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = String::from_utf8_lossy(&out.stdout);
    let sha1 = openssl_fingerprint(&c.pem, "-sha1");
    let sha256 = openssl_fingerprint(&c.pem, "-sha256");
    assert!(report.contains(&format!("\nSHA1: {sha1}\n")), "{report}");
    assert!(
        report.contains(&format!("\nSHA256: {sha256}\n")),
        "{report}"
    );
    // The words encode the first 128 bits of that same SHA-1.
    let words_line = report
        .lines()
        .find(|l| l.starts_with("Using English words: "))
        .unwrap();
    let words =
        pinproxy::tls::rfc1751::decode(&words_line["Using English words: ".len()..]).unwrap();
    let hex: String = words.iter().map(|b| format!("{b:02X}")).collect();
    assert_eq!(hex, sha1.replace(':', "")[..32]);
    assert!(report.contains("trust on first use"), "{report}");
    assert!(report.contains("api fingerprint"), "{report}");
    assert!(
        report.contains("Subject:    CN=pinproxy test upstream"),
        "{report}"
    );
    // The snippet is a config pinproxy accepts as it is.
    let snippet = &report[report.find("[[upstream]]").unwrap()..];
    let config = pinproxy::config::Config::parse(snippet, std::path::Path::new("snippet.toml"))
        .expect("the printed snippet is valid config");
    assert!(config.upstreams[0].pins[0].matches(&c.fingerprints()));
}

#[tokio::test]
async fn fingerprint_fails_clearly_when_unreachable_or_not_tls() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let plain = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let plain_addr = plain.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = plain.accept().await {
            use tokio::io::AsyncWriteExt;
            let _ = s.write_all(b"SSH-2.0-OpenSSH_9.2\r\n").await;
        }
    });
    let out = tokio::task::spawn_blocking(move || {
        (
            pinproxy(&["fingerprint", &closed.to_string()]),
            pinproxy(&["fingerprint", &plain_addr.to_string()]),
        )
    })
    .await
    .unwrap();
    assert_eq!(out.0.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.0.stderr).contains("cannot connect"));
    assert_eq!(out.1.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.1.stderr);
    assert!(
        err.contains("TLS handshake") && err.contains("serving TLS?"),
        "{err}"
    );
}

#[tokio::test]
async fn sigterm_lets_an_in_flight_request_finish_then_exits_zero() {
    let (up, c) = TestServer::start_self_signed().await;
    let config = temp_file(&config_text(up.addr, &c.sha1_pin(), ""));
    let mut bin = Binary::spawn(&["run", "--config", config.path().to_str().unwrap()], &[]);
    let addr = bin.listening();

    let slow = tokio::spawn(async move { get(&format!("http://{addr}/slow")).await });
    up.slow_arrived.notified().await;
    bin.signal("TERM");
    let bin = tokio::task::spawn_blocking(move || {
        bin.wait_for(|v| v["message"] == "listeners closed; waiting for in-flight requests");
        bin
    })
    .await
    .unwrap();
    // The listener is closed now: new clients are refused while the old request runs.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    up.release.notify_one();
    let a = slow.await.unwrap();
    assert_eq!(a.status, 200);
    assert_eq!(a.text(), "finally");
    let (status, _) = tokio::task::spawn_blocking(move || bin.finish())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn secrets_never_reach_the_logs_even_at_trace_level() {
    let (up, c) = TestServer::start_self_signed().await;
    let config = temp_file(&config_text(up.addr, &c.sha1_pin(), ""));
    let mut bin = Binary::spawn(
        &["run", "--config", config.path().to_str().unwrap()],
        &[("RUST_LOG", "trace")],
    );
    let addr = bin.listening();
    let secrets = [
        "S3cr3tPassw0rd",
        "SidValue9f8e7d",
        "QmVhcmVyVG9rZW4",
        "cookieval123",
        "querytoken77",
    ];
    let req = Request::post(format!("http://{addr}/web_api/login?token={}", secrets[4]))
        .header("authorization", format!("Bearer {}", secrets[2]))
        .header("x-chkp-sid", secrets[1])
        .header("cookie", format!("session={}", secrets[3]))
        .body(full(format!(
            r#"{{"user":"admin","password":"{}"}}"#,
            secrets[0]
        )))
        .unwrap();
    let a = send(&client(), req).await;
    assert_eq!(a.status, 200);
    // The upstream did receive them: the proxy forwarded, it just must not log them.
    assert!(a.text().contains(secrets[1]));
    bin.wait_for(|v| v["target"] == "pinproxy::access");
    bin.signal("TERM");
    let (status, lines) = tokio::task::spawn_blocking(move || bin.finish())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0));
    let log = lines.join("\n");
    assert!(
        log.contains("/web_api/login"),
        "the access line is there: {log}"
    );
    for s in secrets {
        assert!(!log.contains(s), "secret {s} appeared in the log:\n{log}");
    }
}

#[tokio::test]
async fn bodies_of_128_mib_stream_both_ways_in_bounded_memory() {
    const SIZE: u64 = 128 << 20;
    let (up, c) = TestServer::start_self_signed().await;
    let config = temp_file(&config_text(up.addr, &c.sha1_pin(), ""));
    let mut bin = Binary::spawn(&["run", "--config", config.path().to_str().unwrap()], &[]);
    let addr = bin.listening();
    let client = client();

    let req = Request::post(format!("http://{addr}/upload"))
        .body(Zeros::new(SIZE, true).boxed())
        .unwrap();
    let a = send(&client, req).await;
    assert_eq!(a.status, 200);
    assert_eq!(up.stats.uploaded.load(Ordering::SeqCst), SIZE);

    let resp = client
        .request(
            Request::get(format!("http://{addr}/bytes/{SIZE}"))
                .body(empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let mut body = resp.into_body();
    let mut got = 0u64;
    while let Some(frame) = body.frame().await {
        if let Some(d) = frame.unwrap().data_ref() {
            got += d.len() as u64;
        }
    }
    assert_eq!(got, SIZE);
    let peak_mib = bin.peak_rss_kib() / 1024;
    eprintln!(
        "pinproxy peak RSS after 2 x {} MiB streamed: {peak_mib} MiB",
        SIZE >> 20
    );
    // Buffering either body would need 128 MiB; streaming needs a few buffers.
    assert!(peak_mib < 48, "pinproxy peaked at {peak_mib} MiB");
}

#[tokio::test]
async fn the_demo_serves_a_login_and_refuses_the_impostor() {
    let mut child = tokio::process::Command::from(pinproxy_command())
        .args(["demo", "--listen", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut good, mut bad, mut fingerprint, mut status) = (None, None, None, None);
    while let Some(line) = lines.next_line().await.unwrap() {
        if let Some(rest) = line.trim().strip_prefix("open http://") {
            status = rest.split_whitespace().next().map(str::to_string);
        }
        if line.contains(" fingerprint ") && line.contains("trust-on-first-use") {
            fingerprint = line.split('#').next().map(|c| c.trim().to_string());
        }
        if let Some(rest) = line.strip_prefix("pinproxy listens on ") {
            good = rest.split_whitespace().next().map(str::to_string);
        }
        if line.contains(" forwards there with the") {
            bad = line
                .split_whitespace()
                .find(|w| w.starts_with("http://"))
                .map(str::to_string);
        }
        if line.starts_with("Ctrl-C stops the demo") {
            break;
        }
    }
    let (good, bad) = (
        good.expect("listen URL printed"),
        bad.expect("impostor URL printed"),
    );
    // The fingerprint command runs as printed, from where the demo was started
    // (`cargo run` puts no pinproxy on the PATH).
    let fingerprint = fingerprint.expect("a fingerprint command printed");
    let out = tokio::process::Command::new("sh")
        .args(["-c", &fingerprint])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("SHA1: "),
        "{fingerprint}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let curl = |args: Vec<String>| async move {
        let out = tokio::process::Command::new("curl")
            .args(args)
            .output()
            .await
            .unwrap();
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let login = curl(vec![
        "-s".into(),
        "-X".into(),
        "POST".into(),
        format!("{good}/web_api/login"),
        "-H".into(),
        "Content-Type: application/json".into(),
        "-d".into(),
        r#"{"user":"admin","password":"demo"}"#.into(),
    ])
    .await;
    let sid = serde_json::from_str::<serde_json::Value>(&login).unwrap()["sid"]
        .as_str()
        .expect("login answers a sid")
        .to_string();
    let hosts = curl(vec![
        "-s".into(),
        "-X".into(),
        "POST".into(),
        format!("{good}/web_api/show-hosts"),
        "-H".into(),
        format!("X-chkp-sid: {sid}"),
        "-d".into(),
        "{}".into(),
    ])
    .await;
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&hosts).unwrap()["total"],
        5
    );
    let no_sid = curl(vec![
        "-s".into(),
        "-X".into(),
        "POST".into(),
        format!("{good}/web_api/show-hosts"),
        "-d".into(),
        "{}".into(),
    ])
    .await;
    assert!(
        no_sid.contains("generic_err_missing_session_id"),
        "{no_sid}"
    );
    let refused = curl(vec![
        "-si".into(),
        "-X".into(),
        "POST".into(),
        format!("{bad}/web_api/login"),
        "-d".into(),
        "{}".into(),
    ])
    .await;
    assert!(refused.starts_with("HTTP/1.1 502"), "{refused}");
    assert!(refused
        .to_ascii_lowercase()
        .contains("x-pinproxy-error: fingerprint-mismatch"));

    // The printed status page shows both: the genuine certificate matched, the
    // impostor's refused.
    let page = status.expect("a status page printed");
    let json = curl(vec!["-s".into(), format!("http://{}status", page)]).await;
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let matched: Vec<(&str, bool)> = v["upstreams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            (
                u["name"].as_str().unwrap(),
                u["certificate"]["matched_pin"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(matched, [("gaia", true), ("impostor", false)], "{v:#}");
}

#[tokio::test]
async fn an_expired_pinned_certificate_warns_once_and_keeps_working() {
    let c = expired_cert();
    let up = TestServer::start(server_config(vec![c.der.clone()], c.key(), false)).await;
    let config = temp_file(&config_text(up.addr, &c.sha1_pin(), ""));
    let mut bin = Binary::spawn(&["run", "--config", config.path().to_str().unwrap()], &[]);
    let addr = bin.listening();
    for _ in 0..3 {
        let a = get(&format!("http://{addr}/")).await;
        assert_eq!(a.status, 200);
        // Force a new upstream connection, and so a new certificate check, next time.
        up.close_idle_connections().await;
    }
    bin.signal("TERM");
    let (status, lines) = tokio::task::spawn_blocking(move || bin.finish())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(
        up.tls_accepted() >= 3,
        "each request was checked on a new connection"
    );
    let warnings = lines.iter().filter(|l| l.contains("has expired")).count();
    assert_eq!(warnings, 1, "{lines:#?}");
}

/// Bad input at every entry point (flags, file, `fingerprint`, `check`) gets a
/// clear one-line error naming what to write instead; never a panic.
#[test]
fn bad_server_names_urls_and_word_counts_are_explained_everywhere() {
    let stderr = |out: &std::process::Output| String::from_utf8_lossy(&out.stderr).into_owned();
    let refused = |out: &std::process::Output, needle: &str| {
        let err = stderr(out);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains(needle), "{needle:?} not in {err}");
        assert!(!err.contains("panicked"), "{err}");
    };
    let pin = "SHA1: 7D:FE:DE:EE:C7:B9:D0:67:35:E4:C4:16:EC:7A:03:13:48:CD:CA:8D";

    let out = pinproxy(&["fingerprint", "127.0.0.1:9", "--server-name", "bad name!"]);
    refused(
        &out,
        "--server-name: server_name \"bad name!\" is not a valid DNS name",
    );
    let out = pinproxy(&[
        "run",
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        "127.0.0.1:9",
        "--fingerprint",
        pin,
        "--server-name",
        "bad name!",
    ]);
    refused(&out, "--server-name");
    let text = format!(
        "[[upstream]]\nname = \"gaia\"\nlisten = \"127.0.0.1:0\"\naddress = \"192.0.2.10:443\"\nserver_name = \"bad name!\"\nfingerprints = [\"{pin}\"]\n"
    );
    let file = temp_file(&text);
    let path = file.path().to_str().unwrap();
    refused(
        &pinproxy(&["check", "--config", path]),
        &format!("{path}:5:15"),
    );

    // A URL where HOST:PORT belongs in the config: say so, and what to write
    // (fingerprint takes a URL: see fingerprint_takes_a_url_and_names_…).
    let file = temp_file(&text.replace("192.0.2.10:443", "https://mgmt.example.com:8443/"));
    let out = pinproxy(&["check", "--config", file.path().to_str().unwrap()]);
    refused(&out, "write \"mgmt.example.com:8443\"");

    // A bare host means port 443 (nothing listens there on loopback in CI).
    let out = pinproxy(&["fingerprint", "127.0.0.1", "--timeout", "2s"]);
    refused(&out, "127.0.0.1:443");

    // Eleven of the twelve English words.
    let words = "Using English words: FARM WAND MIMI GOWN HURD PHI QUO LOY BAH SEES JADE";
    let file = temp_file(
        &text
            .replace("server_name = \"bad name!\"\n", "")
            .replace(pin, words),
    );
    let out = pinproxy(&["check", "--config", file.path().to_str().unwrap()]);
    refused(&out, "11 words, 12 needed");
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_systemd_access_lines_are_info_priority() {
    use std::io::BufRead;
    use std::os::unix::fs::MetadataExt;
    let (up, c) = TestServer::start_self_signed().await;
    // stdout is a pipe that JOURNAL_STREAM names, as systemd's journal socket would be.
    let (reader, writer) = std::io::pipe().unwrap();
    let id = std::fs::File::from(std::os::fd::OwnedFd::from(writer.try_clone().unwrap()))
        .metadata()
        .unwrap();
    let mut child = pinproxy_command()
        .args([
            "run",
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            &up.addr.to_string(),
        ])
        .args([
            "--server-name",
            "localhost",
            "--fingerprint",
            &c.sha1_pin().to_string(),
        ])
        .env("JOURNAL_STREAM", format!("{}:{}", id.dev(), id.ino()))
        .stdout(writer)
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(reader).lines();
    let mut next = move || lines.next().unwrap().unwrap();
    let listening = loop {
        let line = next();
        assert!(line.starts_with('<'), "every line has a priority: {line}");
        if line.contains("listening") {
            break line;
        }
    };
    assert!(listening.starts_with("<6>"), "{listening}");
    let addr = listening
        .split_whitespace()
        .find_map(|w| w.strip_prefix("listen="))
        .unwrap()
        .to_string();
    assert_eq!(get(&format!("http://{addr}/x")).await.status, 200);
    let access = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        tokio::task::spawn_blocking(move || loop {
            let line = next();
            if line.contains("pinproxy::access") {
                break line;
            }
        }),
    )
    .await;
    let _ = child.kill();
    let _ = child.wait();
    let access = access.expect("an access line within 20 s").unwrap();
    assert!(access.starts_with("<6>"), "{access}");
}

#[tokio::test]
async fn fingerprint_takes_a_url_and_names_the_snippet_after_the_certificate() {
    let (up, c) = TestServer::start_self_signed().await;
    let url = format!("https://{}/web_api/login?x=1", up.addr);
    let out = tokio::task::spawn_blocking(move || pinproxy(&["fingerprint", &url]))
        .await
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(report.contains(&c.fingerprints().sha1_line()), "{report}");
    // The test certificate's SAN is localhost: the upstream is named after it,
    // not after the IP connected to.
    assert!(report.contains("name = \"localhost\""), "{report}");
    assert!(
        report.contains(&format!("address = \"{}\"", up.addr)),
        "{report}"
    );
    // A URL may carry credentials: the refusal does not quote it.
    let out = pinproxy(&["fingerprint", "http://admin:s3cret@mgmt.example/"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("https://") && !err.contains("s3cret"), "{err}");
}

/// With nothing in flight, SIGTERM ends the process at once: it waits neither
/// for shutdown_timeout nor for a kept-alive client that sits idle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_shutdown_does_not_wait() {
    let (up, c) = TestServer::start_self_signed().await;
    let text = config_text(
        up.addr,
        &c.sha1_pin(),
        "[admin]\nlisten = \"127.0.0.1:0\"\n",
    )
    .replace("shutdown_timeout = \"10s\"", "shutdown_timeout = \"60s\"");
    let file = temp_file(&text);
    let mut bin = Binary::spawn(&["run", "--config", file.path().to_str().unwrap()], &[]);
    let addr = bin.listening();
    bin.discard_output();
    // A client that made a request and keeps its connection open, idle.
    let mut kept = KeptConnection::open(addr).await;
    let answer = kept.get("/x").await.await.unwrap();
    assert_eq!(answer.status(), 200);
    bin.signal("TERM");
    let started = std::time::Instant::now();
    let (status, _) = tokio::task::spawn_blocking(move || bin.finish())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0));
    // Far below shutdown_timeout (60 s): nothing was waited for.
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

/// Reads `path` until a JSON line satisfies `pred` (the process writes it
/// there, not to stdout), for at most ten seconds.
#[cfg(unix)]
fn line_in_file(
    path: &std::path::Path,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if let Some(line) = text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| pred(v))
        {
            return line;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not in {}: {text}",
            path.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// `--log-file`: a Windows service has no stdout, so the log and the access log
/// go to the file, appended, and nothing to stdout.
#[cfg(unix)]
#[tokio::test]
async fn log_file_takes_the_log_and_the_access_log() {
    let (up, c) = TestServer::start_self_signed().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("pinproxy.log");
    std::fs::write(&log, "an earlier line\n").unwrap();
    let target = up.addr.to_string();
    let pin = c.sha1_pin().to_string();
    let bin = Binary::spawn(
        &[
            "--log-file",
            log.to_str().unwrap(),
            "run",
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            &target,
            "--fingerprint",
            &pin,
        ],
        &[],
    );
    let (bin, listening) = on(bin, {
        let log = log.clone();
        move |_| line_in_file(&log, |v| v["message"] == "listening")
    })
    .await;
    let addr = listening["listen"].as_str().unwrap().to_string();
    assert_eq!(get(&format!("http://{addr}/x")).await.status, 200);
    let (bin, access) = on(bin, {
        let log = log.clone();
        move |_| line_in_file(&log, |v| v["target"] == "pinproxy::access")
    })
    .await;
    assert_eq!(access["status"], 200, "{access}");
    assert!(std::fs::read_to_string(&log)
        .unwrap()
        .starts_with("an earlier line\n"));
    bin.signal("TERM");
    let (status, stdout) = tokio::task::spawn_blocking(move || bin.finish())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(stdout.is_empty(), "stdout: {stdout:?}");
}

/// `pinproxy service` is Windows'; elsewhere it says what to use instead.
#[cfg(unix)]
#[test]
fn service_commands_on_linux_point_to_systemd() {
    let out = pinproxy(&["service", "install"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("manages a Windows service") && err.contains("systemd"),
        "{err}"
    );
}
