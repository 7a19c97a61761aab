//! The pin's life cycle as an operator lives it: verifying a certificate out
//! of band (`fingerprint --expect`, `--expect-from`), re-pinning in one command
//! (`pins add`, `pins remove`, `--from-server`), pins from a certificate file,
//! and the active checks that notice a renewed certificate before a request
//! fails.

mod common;

use std::process::{Command, Output};

use common::*;

fn pinproxy(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pinproxy"))
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
