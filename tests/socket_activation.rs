#![cfg(unix)] // Unix users, modes, sockets and setpriv throughout; see deploy/windows-check.sh
//! `listen = "systemd:NAME"`: listeners on sockets systemd passed, started the
//! way systemd does it (`systemd-socket-activate`, Debian package `systemd`):
//! upstream listener, `[proxy]` and `[admin]`, TCP and Unix; a name systemd did
//! not pass is a startup error listing the ones it did; a reload keeps them.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;

use common::*;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;

/// A loopback port nothing listens on now (systemd-socket-activate binds it).
fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn config(up: &TestServer, c: &TestCert, listen: &str, extra: &str) -> String {
    format!(
        "shutdown_timeout = \"10s\"\n[[upstream]]\nname = \"gaia\"\nlisten = \"{listen}\"\naddress = \"{}\"\n\
         server_name = \"localhost\"\nfingerprints = [\"{}\"]\n{extra}",
        up.addr,
        c.sha1_pin()
    )
}

fn launcher(sockets: &[(&str, &str)]) -> Vec<String> {
    let mut args = vec!["systemd-socket-activate".to_string()];
    for (listen, _) in sockets {
        args.push("-l".into());
        args.push(listen.to_string());
    }
    let names: Vec<&str> = sockets.iter().map(|(_, name)| *name).collect();
    args.push(format!("--fdname={}", names.join(":")));
    args
}

/// pinproxy under systemd-socket-activate, once the sockets listen (it says
/// so on stderr), with the rest of that stderr.
fn activated(
    sockets: &[(&str, &str)],
    config: &tempfile::NamedTempFile,
) -> (Binary, BufReader<std::process::ChildStderr>) {
    let launcher = launcher(sockets);
    let launcher: Vec<&str> = launcher.iter().map(String::as_str).collect();
    let mut bin = Binary::spawn_by(
        &launcher,
        &["run", "--config", config.path().to_str().unwrap()],
        &[],
    );
    let mut stderr = BufReader::new(bin.child.stderr.take().unwrap());
    let mut listening = 0;
    while listening < sockets.len() {
        let mut line = String::new();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "systemd-socket-activate ended"
        );
        listening += usize::from(line.contains("Listening on"));
    }
    (bin, stderr)
}

/// What a pinproxy that must fail to start printed (stdout and stderr). One
/// that serves instead is killed after 20 s and fails the test.
async fn startup_error(bin: Binary, mut stderr: BufReader<std::process::ChildStderr>) -> String {
    let pid = bin.child.id();
    let exited = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        tokio::task::spawn_blocking(move || bin.finish()),
    )
    .await;
    let Ok(exited) = exited else {
        let _ = std::process::Command::new("kill")
            .arg(pid.to_string())
            .status();
        panic!("pinproxy did not exit with a startup error");
    };
    let (status, lines) = exited.unwrap();
    assert!(!status.success());
    let mut text = lines.join("\n");
    stderr.read_to_string(&mut text).unwrap();
    text
}

/// GET over a Unix socket.
async fn unix_get(path: &std::path::Path, uri: &str) -> (u16, String) {
    let stream = tokio::net::UnixStream::connect(path).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get(uri)
        .header("host", "localhost")
        .body(empty())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listener_admin_and_proxy_on_sockets_systemd_passed_and_a_reload_keeps_them() {
    let (up, c) = TestServer::start_self_signed().await;
    let (listener, admin) = (free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    let proxy_socket = dir.path().join("proxy.sock");
    let extra = "[admin]\nlisten = \"systemd:admin\"\n[proxy]\nlisten = \"systemd:proxy\"\n";
    let file = temp_file(&config(&up, &c, "systemd:gaia", extra));
    let sockets = [
        (listener.to_string(), "gaia"),
        (admin.to_string(), "admin"),
        (proxy_socket.display().to_string(), "proxy"),
    ];
    let sockets: Vec<(&str, &str)> = sockets.iter().map(|(l, n)| (l.as_str(), *n)).collect();
    let (mut bin, _stderr) = activated(&sockets, &file);
    // systemd-socket-activate starts pinproxy on the first connection; that
    // connection waits in the passed socket's queue and is served.
    let answer = get(&format!("http://{listener}/x")).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(bin.listening(), listener, "it serves where systemd listens");
    let ready = get(&format!("http://{admin}/readyz")).await;
    assert_eq!(ready.status, 200);
    let (status, _) = unix_get(&proxy_socket, "http://gaia/x").await;
    assert_eq!(status, 200, "the [proxy] listener on a passed Unix socket");

    // A reload that changes the upstream keeps the passed sockets.
    std::fs::write(
        file.path(),
        config(
            &up,
            &c,
            "systemd:gaia",
            &format!("response_timeout = \"20s\"\n{extra}"),
        ),
    )
    .unwrap();
    bin.signal("HUP");
    bin.wait_for(|v| v["message"] == "config reloaded");
    assert_eq!(get(&format!("http://{listener}/x")).await.status, 200);
    assert_eq!(get(&format!("http://{admin}/readyz")).await.status, 200);
    bin.signal("TERM");
    let (status, _) = bin.finish();
    assert!(status.success());
    assert!(
        proxy_socket.exists(),
        "the socket file is systemd's, not removed by pinproxy"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_systemd_did_not_pass_is_a_startup_error_listing_the_ones_it_did() {
    let (up, c) = TestServer::start_self_signed().await;
    let port = free_port();
    let file = temp_file(&config(&up, &c, "systemd:nope", ""));
    let (bin, stderr) = activated(&[(&port.to_string(), "gaia")], &file);
    // Starts it; the connection is dropped when pinproxy exits.
    let _ = tokio::net::TcpStream::connect(port).await;
    let text = startup_error(bin, stderr).await;
    assert!(
        text.contains("systemd passed no socket named \\\"nope\\\"; it passed: gaia")
            || text.contains("systemd passed no socket named \"nope\"; it passed: gaia"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passed_socket_on_a_public_address_needs_allow_non_loopback() {
    let (up, c) = TestServer::start_self_signed().await;
    let port = free_port().port();
    let file = temp_file(&config(&up, &c, "systemd:gaia", ""));
    let (bin, stderr) = activated(&[(&format!("0.0.0.0:{port}"), "gaia")], &file);
    let _ = tokio::net::TcpStream::connect(("127.0.0.1", port)).await;
    let text = startup_error(bin, stderr).await;
    assert!(text.contains("not a loopback address"), "{text}");
}

#[test]
fn without_socket_activation_the_error_says_how_to_get_it() {
    let file = temp_file(
        "[[upstream]]\nname = \"gaia\"\nlisten = \"systemd:gaia\"\naddress = \"192.0.2.10:443\"\nfingerprints = [\"SHA1: 7D:FE:DE:52:F4:AA:E0:8D:3C:51:1A:1E:3F:73:1C:69:B9:E8:0E:CB\"]\n",
    );
    let out = pinproxy_command()
        .args(["run", "--config", file.path().to_str().unwrap()])
        .env_remove("LISTEN_FDS")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("systemd passed no sockets") && text.contains("systemd-socket-activate"),
        "{text}"
    );
}

/// Runs pinproxy with one socket on descriptor 3 the way a launcher would:
/// `socket` is Python that makes `s`; `pid` whether LISTEN_PID names pinproxy.
fn with_passed_socket(socket: &str, pid: bool) -> std::process::Output {
    let file = temp_file(
        "[[upstream]]\nname = \"gaia\"\nlisten = \"systemd:gaia\"\naddress = \"192.0.2.10:443\"\nfingerprints = [\"SHA1: 7D:FE:DE:52:F4:AA:E0:8D:3C:51:1A:1E:3F:73:1C:69:B9:E8:0E:CB\"]\n",
    );
    let script = format!(
        "import os, socket, sys\n{socket}\nos.dup2(s.fileno(), 3)\nos.set_inheritable(3, True)\n\
         os.environ['LISTEN_FDS'] = '1'\nos.environ['LISTEN_FDNAMES'] = 'gaia'\n\
         {}\nos.execv(sys.argv[1], sys.argv[1:])\n",
        if pid {
            "os.environ['LISTEN_PID'] = str(os.getpid())"
        } else {
            "os.environ.pop('LISTEN_PID', None)"
        }
    );
    // A pinproxy that serves instead of refusing is stopped after 20 s.
    std::process::Command::new("timeout")
        .args([
            "20",
            "python3",
            "-c",
            &script,
            env!("CARGO_BIN_EXE_pinproxy"),
            "run",
            "--config",
        ])
        .arg(file.path())
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn a_passed_socket_that_cannot_accept_or_is_not_ours_is_a_startup_error() {
    let listening = "s = socket.socket()\ns.bind(('127.0.0.1', 0))\ns.listen()";
    let bound_only = "s = socket.socket()\ns.bind(('127.0.0.1', 0))";
    let connected = "l = socket.socket()\nl.bind(('127.0.0.1', 0))\nl.listen()\ns = socket.create_connection(l.getsockname())";
    for (what, socket) in [
        ("bound, not listening", bound_only),
        ("connected", connected),
    ] {
        let out = with_passed_socket(socket, true);
        let text = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{what}: {text}");
        assert!(
            text.contains("not a listening stream socket"),
            "{what}: {text}"
        );
    }
    let out = with_passed_socket(listening, false);
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("LISTEN_PID is not set"), "{text}");
}
