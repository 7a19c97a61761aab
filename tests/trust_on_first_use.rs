//! Trust on first use, through the binary: the first completed handshake
//! records the upstream's pin in `known_pins`; after a restart another
//! certificate is refused with not a byte sent; `pins forget` and a reload let
//! it learn again; concurrent first connections cannot record two pins.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::*;
use tokio::net::{TcpListener, TcpStream};

fn learning_config(address: SocketAddr, known_pins: &Path) -> String {
    format!(
        "shutdown_timeout = \"10s\"\nknown_pins = '{}'\n[[upstream]]\nname = \"gaia\"\nlisten = \"127.0.0.1:0\"\n\
         address = \"{address}\"\nserver_name = \"localhost\"\ntrust_on_first_use = true\n[admin]\nlisten = \"127.0.0.1:0\"\n",
        known_pins.display()
    )
}

fn pinproxy(args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let out = pinproxy_command()
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// `pinproxy pins forget gaia`, then SIGHUP; the reload's summary line.
fn forget_and_reload(bin: &mut Binary, config: &str) -> serde_json::Value {
    let (ok, said) = pinproxy(&["pins", "forget", "gaia", "--config", config], &[]);
    assert!(ok && said.contains("forgot gaia's pin"), "{said}");
    bin.signal("HUP");
    bin.wait_for(|v| {
        v["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("config reloaded"))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn learn_then_refuse_another_certificate_then_forget_and_learn_again() {
    let (genuine, genuine_cert) = TestServer::start_self_signed().await;
    let (impostor, impostor_cert) = TestServer::start_self_signed().await;
    let (front, to_impostor) = redirector(genuine.addr, impostor.addr).await;
    let dir = tempfile::tempdir().unwrap();
    let known = dir.path().join("known_pins.toml");
    let config = dir.path().join("proxy.toml");
    std::fs::write(&config, learning_config(front, &known)).unwrap();
    let config_arg = config.to_str().unwrap();

    // First use: learned, logged with the SHA-1 and words to compare, counted.
    let mut bin = Binary::spawn(&["run", "--config", config_arg], &[]);
    let url = format!("http://{}/x", bin.listening());
    let admin = bin.admin();
    assert_eq!(get(&url).await.status, 200);
    let line = bin.seen_or_wait(|v| {
        v["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("learned this upstream's pin on first use"))
    });
    assert_eq!(line["level"], "WARN");
    assert_eq!(line["sha1"], genuine_cert.fingerprints().sha1_line());
    assert!(
        line["words"]
            .as_str()
            .unwrap_or("")
            .starts_with("Using English words:"),
        "{line}"
    );
    let metrics = get(&format!("http://{admin}/metrics")).await.text();
    assert!(
        metrics.contains("pinproxy_upstream_pin_learned{upstream=\"gaia\"} 1"),
        "{metrics}"
    );
    let file = std::fs::read_to_string(&known).unwrap();
    let sha256 =
        pinproxy::tls::pin::CertPin::Sha256(genuine_cert.fingerprints().sha256).to_string();
    assert!(file.contains(&sha256), "{file}");
    let (ok, listed) = pinproxy(&["pins", "list", "--config", config_arg], &[]);
    assert!(
        ok && listed.contains("gaia") && listed.contains(&genuine_cert.fingerprints().sha1_line()),
        "{listed}"
    );
    bin.signal("TERM");
    let _ = bin.finish();

    // After a restart the learned pin holds: another certificate is refused,
    // the body says when it was learned and how to forget it, nothing is sent.
    let mut bin = Binary::spawn(&["run", "--config", config_arg], &[]);
    let url = format!("http://{}/x", bin.listening());
    assert_eq!(
        get(&url).await.status,
        200,
        "the genuine server, after the restart"
    );
    to_impostor.store(true, Ordering::SeqCst);
    genuine.close_idle_connections().await;
    let refused = get(&url).await;
    assert_eq!(
        (refused.status.as_u16(), refused.error_tag()),
        (502, Some("fingerprint-mismatch")),
        "{}",
        refused.text()
    );
    let text = refused.text();
    assert!(
        text.contains("learned on first use on") && text.contains("pinproxy pins forget gaia"),
        "{text}"
    );
    assert_eq!((impostor.requests(), impostor.app_bytes()), (0, 0));
    // Refused inside the handshake, like a configured pin: the impostor never
    // completed one.
    assert_eq!(impostor.tls_accepted(), 0);

    // Forgotten, then a reload: the next connection learns again (here: the
    // other certificate, which the operator decided to accept).
    forget_and_reload(&mut bin, config_arg);
    let answer = get(&url).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let file = std::fs::read_to_string(&known).unwrap();
    let other =
        pinproxy::tls::pin::CertPin::Sha256(impostor_cert.fingerprints().sha256).to_string();
    assert!(file.contains(&other) && !file.contains(&sha256), "{file}");
    bin.signal("TERM");
    let _ = bin.finish();
}

/// Sends each new connection to `a` and `b` in turn.
async fn alternating(a: SocketAddr, b: SocketAddr) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let turn = Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let target = if turn.fetch_add(1, Ordering::SeqCst).is_multiple_of(2) {
                a
            } else {
                b
            };
            tokio::spawn(async move {
                if let Ok(mut server) = TcpStream::connect(target).await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_connections_cannot_learn_two_pins() {
    let (a, a_cert) = TestServer::start_self_signed().await;
    let (b, b_cert) = TestServer::start_self_signed().await;
    let front = alternating(a.addr, b.addr).await;
    let dir = tempfile::tempdir().unwrap();
    let known = dir.path().join("known_pins.toml");
    let config = temp_file(&learning_config(front, &known));
    let mut bin = Binary::spawn(&["run", "--config", config.path().to_str().unwrap()], &[]);
    let url = format!("http://{}/x", bin.listening());
    let answers: Vec<_> = (0..16)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { get(&url).await })
        })
        .collect();
    let mut ok = 0;
    for answer in answers {
        let answer = answer.await.unwrap();
        match answer.status.as_u16() {
            200 => ok += 1,
            _ => assert_eq!(
                answer.error_tag(),
                Some("fingerprint-mismatch"),
                "{}",
                answer.text()
            ),
        }
    }
    bin.signal("TERM");
    let _ = bin.finish();
    let file = std::fs::read_to_string(&known).unwrap();
    let pin_of =
        |c: &TestCert| pinproxy::tls::pin::CertPin::Sha256(c.fingerprints().sha256).to_string();
    let (learned, other) = if file.contains(&pin_of(&a_cert)) {
        (&a, &b)
    } else {
        (&b, &a)
    };
    assert!(
        !(file.contains(&pin_of(&a_cert)) && file.contains(&pin_of(&b_cert))),
        "{file}"
    );
    assert_eq!(
        learned.requests(),
        ok,
        "every answer came from the learned server"
    );
    assert_eq!(
        (other.requests(), other.app_bytes()),
        (0, 0),
        "the other never got a byte"
    );
}

#[test]
fn trust_on_first_use_config_errors_say_how_to_fix_them() {
    let dir = tempfile::tempdir().unwrap();
    let base =
        "[[upstream]]\nname = \"gaia\"\nlisten = \"127.0.0.1:0\"\ntrust_on_first_use = true\n";
    let check = |text: &str, env: &[(&str, &str)]| {
        let file = temp_file(text);
        pinproxy(&["check", "--config", file.path().to_str().unwrap()], env)
    };
    let with_pins = format!(
        "{base}address = \"192.0.2.10:443\"\nfingerprints = [\"SHA1: {}\"]\n",
        cert()
            .fingerprints()
            .sha1_line()
            .trim_start_matches("SHA1: ")
    );
    let (ok, text) = check(
        &format!(
            "known_pins = \"{}/k.toml\"\n{with_pins}",
            dir.path().display()
        ),
        &[],
    );
    assert!(!ok && text.contains("remove fingerprints"), "{text}");

    let (ok, text) = check(&format!("{base}address = \"192.0.2.10:443\"\n"), &[]);
    assert!(!ok && text.contains("add known_pins ="), "{text}");
    let state = dir.path().to_str().unwrap();
    let (ok, text) = check(
        &format!("{base}address = \"192.0.2.10:443\"\n"),
        &[("STATE_DIRECTORY", state)],
    );
    assert!(
        ok,
        "under systemd the state directory is the default: {text}"
    );

    let (ok, text) = check(
        &format!("known_pins = \"{}/k.toml\"\n{base}address = [\"192.0.2.10:443\", \"192.0.2.11:443\"]\n", dir.path().display()),
        &[],
    );
    assert!(!ok && text.contains("single address"), "{text}");
}

/// An impostor won the first use; the operator forgets its pin and reloads.
/// From then on no request may reach the impostor: its pooled connection was
/// verified by the forgotten pin, so the reload must close it (and say so).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forgetting_a_learned_pin_closes_the_connections_it_verified() {
    let (genuine, _) = TestServer::start_self_signed().await;
    let (impostor, _) = TestServer::start_self_signed().await;
    let (front, to_impostor) = redirector(genuine.addr, impostor.addr).await;
    to_impostor.store(true, Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();
    let known = dir.path().join("known_pins.toml");
    let config = dir.path().join("proxy.toml");
    std::fs::write(&config, learning_config(front, &known)).unwrap();
    let config_arg = config.to_str().unwrap();

    let mut bin = Binary::spawn(&["run", "--config", config_arg], &[]);
    let url = format!("http://{}/x", bin.listening());
    assert_eq!(get(&url).await.status, 200);
    assert_eq!(impostor.requests(), 1, "the impostor won the first use");

    // The operator notices, sends the name back to the genuine server and
    // forgets the impostor's pin.
    to_impostor.store(false, Ordering::SeqCst);
    let reloaded = forget_and_reload(&mut bin, config_arg);
    assert!(
        reloaded["summary"]
            .as_str()
            .is_some_and(|s| s.contains("learned pin revoked gaia")),
        "the reload must say what it revoked: {reloaded}"
    );
    for _ in 0..3 {
        let answer = get(&url).await;
        assert_eq!(answer.status, 200, "{}", answer.text());
    }
    assert_eq!(
        (impostor.requests(), genuine.requests()),
        (1, 3),
        "after the reload every request goes to the server that was learned anew"
    );
    bin.signal("TERM");
    let _ = bin.finish();
}

#[cfg(unix)]
fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[cfg(unix)]
/// The pin store decides which server is trusted, so it gets the config
/// file's rules (and no group write): checked at startup, in `check`, and
/// before every read and write at run time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pin_store_others_can_write_is_refused_at_start_and_at_run_time() {
    let (server, _) = TestServer::start_self_signed().await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    let known = state.join("known_pins.toml");
    let config = dir.path().join("proxy.toml");
    std::fs::write(&config, learning_config(server.addr, &known)).unwrap();
    let config_arg = config.to_str().unwrap();

    for (mode, fix) in [(0o777, "chmod o-w"), (0o775, "chmod g-w")] {
        chmod(&state, mode);
        let (ok, text) = pinproxy(&["check", "--config", config_arg], &[]);
        assert!(
            !ok && text.contains(&format!("{fix} {}", state.display())),
            "{text}"
        );
        let (ok, text) = pinproxy(&["run", "--config", config_arg], &[]);
        assert!(!ok && text.contains(fix), "{text}");
    }
    // A symlink to a store in an open directory is judged by its target.
    let open = dir.path().join("open");
    std::fs::create_dir(&open).unwrap();
    chmod(&open, 0o777);
    chmod(&state, 0o755);
    std::fs::write(open.join("planted.toml"), "").unwrap();
    std::os::unix::fs::symlink(open.join("planted.toml"), &known).unwrap();
    let (ok, text) = pinproxy(&["check", "--config", config_arg], &[]);
    assert!(
        !ok && text.contains(&format!("chmod o-w {}", open.display())),
        "{text}"
    );
    std::fs::remove_file(&known).unwrap();

    // Safe at startup, opened up later: the first use cannot record its pin,
    // and says so with its own tag, not as a failed handshake.
    let mut bin = Binary::spawn(&["run", "--config", config_arg], &[]);
    let url = format!("http://{}/x", bin.listening());
    chmod(&state, 0o777);
    let refused = get(&url).await;
    assert_eq!(
        (refused.status.as_u16(), refused.error_tag()),
        (500, Some("pin-store-failed")),
        "{}",
        refused.text()
    );
    assert!(refused.text().contains("chmod o-w"), "{}", refused.text());
    assert_eq!(server.requests(), 0);
    assert!(!known.exists(), "nothing was learned");
    // A certificate refused at first use is never shown as matching a pin,
    // nor feeds the expiry alert.
    let admin = bin.admin();
    let status = get(&format!("http://{admin}/status")).await.json();
    let gaia = &status["upstreams"][0];
    assert_eq!(gaia["certificate"]["matched_pin"], false, "{gaia}");
    let metrics = get(&format!("http://{admin}/metrics")).await.text();
    assert!(
        !metrics.contains("pinproxy_upstream_certificate_not_after_timestamp_seconds{"),
        "{metrics}"
    );
    // And a reload reads the store under the same rules.
    bin.signal("HUP");
    let failed = bin.wait_for(|v| {
        v["message"]
            .as_str()
            .is_some_and(|m| m.contains("reload failed"))
    });
    assert!(
        failed.to_string().contains("chmod o-w"),
        "the reload names the fix: {failed}"
    );
    bin.signal("TERM");
    let _ = bin.finish();
}

/// A missing state directory used to pass `check --connect` and start, then
/// fail the first request as `502 handshake-failed`.
#[test]
fn a_missing_state_directory_is_refused_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let known = dir.path().join("missing/known_pins.toml");
    let config = temp_file(&learning_config("192.0.2.10:443".parse().unwrap(), &known));
    let config_arg = config.path().to_str().unwrap();
    for args in [
        &["check", "--config", config_arg][..],
        &["run", "--config", config_arg],
    ] {
        let (ok, text) = pinproxy(args, &[]);
        assert!(!ok, "{args:?}: {text}");
        assert!(
            text.contains("does not exist") && text.contains("mkdir -p"),
            "{args:?}: {text}"
        );
    }
}

/// A damaged store is one mistake, reported once: blanking the line it is
/// reported at must not also bring a false "no fingerprints".
#[test]
fn a_damaged_pin_store_is_reported_alone() {
    let dir = tempfile::tempdir().unwrap();
    let known = dir.path().join("known_pins.toml");
    std::fs::write(&known, "[gaia]\npin = 3\n").unwrap();
    let config = temp_file(&learning_config("192.0.2.10:443".parse().unwrap(), &known));
    let (ok, text) = pinproxy(&["check", "--config", config.path().to_str().unwrap()], &[]);
    assert!(!ok && text.contains("known_pins"), "{text}");
    assert!(!text.contains("no fingerprints"), "{text}");
    assert_eq!(text.trim().lines().count(), 1, "{text}");
}
