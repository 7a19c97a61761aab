#![cfg(unix)] // Unix users, modes, sockets and setpriv throughout; see deploy/windows-check.sh
//! Who may use a listener, tried through the built binary as an attacker and as
//! the operator's own tools would: DNS-rebinding Hosts (HTTP/1.1 and h2),
//! cross-site requests and preflights from web pages, Unix-socket listeners and
//! their file permissions, and `allowed_users` with a client run as another uid.

mod common;

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends raw bytes and reads until the proxy closes the connection.
async fn raw(addr: std::net::SocketAddr, bytes: &[u8]) -> String {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut out))
        .await
        .expect("the proxy answered and closed")
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

fn refusal_logged(bin: &mut Binary, reason: &str) -> serde_json::Value {
    bin.wait_for(|v| {
        v["message"] == "request refused; nothing was sent upstream" && v["reason"] == reason
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebinding_host_is_refused_and_the_listeners_own_names_pass() {
    let (up, c) = TestServer::start_self_signed().await;
    let config = temp_file(&config_text(
        up.addr,
        &c.sha1_pin(),
        "allowed_hosts = [\"gaia-proxy.internal\"]\n[admin]\nlisten = \"127.0.0.1:0\"\n",
    ));
    let mut bin = Binary::spawn(&["run", "--config", config.path().to_str().unwrap()], &[]);
    let addr = bin.listening();
    let port = addr.port();

    // The browser of a page at http://evil.example:PORT whose name now
    // resolves to 127.0.0.1 sends its own name as Host.
    let evil = format!("evil.example:{port}");
    let answer = raw(
        addr,
        format!("POST /web_api/login HTTP/1.1\r\nHost: {evil}\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}")
            .as_bytes(),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    assert!(
        answer.contains("x-pinproxy-error: host-not-allowed"),
        "{answer}"
    );
    assert!(
        answer.contains(&evil) && answer.contains("allowed_hosts"),
        "{answer}"
    );
    let line = refusal_logged(&mut bin, "host-not-allowed");
    assert_eq!(line["seen"], evil.as_str());
    assert_eq!(line["level"], "WARN");

    // The same over h2 with prior knowledge: the name is in :authority.
    let resolve = format!("evil.example:{port}:127.0.0.1");
    let h2 = curl(&[
        "--http2-prior-knowledge",
        "--resolve",
        &resolve,
        &format!("http://{evil}/x"),
    ])
    .await;
    assert_eq!(
        (h2.status, h2.header("x-pinproxy-error")),
        (403, Some("host-not-allowed")),
        "{}",
        h2.head
    );
    assert!(h2.head.starts_with("HTTP/2"), "{}", h2.head);
    assert_eq!(up.requests(), 0, "nothing reached the upstream");

    let url = format!("http://{addr}/x");
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("[::1]:{port}"),
        "app.localhost".to_string(),
        format!("gaia-proxy.internal:{port}"),
    ] {
        let got = curl(&["-H", &format!("Host: {host}"), &url]).await;
        assert_eq!(got.status, 200, "Host {host}: {}{}", got.head, got.body);
    }
    let h2 = curl(&["--http2-prior-knowledge", &url]).await;
    assert_eq!(h2.status, 200, "{}", h2.head);
    // HTTP/1.0 without Host names nothing that could have been rebound.
    let old = raw(addr, b"GET /x HTTP/1.0\r\n\r\n").await;
    assert!(old.starts_with("HTTP/1.0 200"), "{old}");
    assert_eq!(up.requests(), 7);

    // The admin endpoint is held to the same rule.
    let admin = bin.admin();
    let got = curl(&[
        "-H",
        "Host: evil.example",
        &format!("http://{admin}/metrics"),
    ])
    .await;
    assert_eq!(
        (got.status, got.header("x-pinproxy-error")),
        (403, Some("host-not-allowed"))
    );
    assert_eq!(
        curl(&[&format!("http://{admin}/metrics")]).await.status,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_site_requests_and_preflights_never_reach_the_upstream() {
    let (up, c) = TestServer::start_self_signed().await;
    let config = temp_file(&config_text(
        up.addr,
        &c.sha1_pin(),
        "allowed_origins = [\"https://dash.example.com\"]\n",
    ));
    let mut bin = Binary::spawn(&["run", "--config", config.path().to_str().unwrap()], &[]);
    let addr = bin.listening();
    let url = format!("http://{addr}/web_api/show-hosts");

    for (what, headers) in [
        (
            "a page on another site",
            vec!["Origin: http://evil.example:8443"],
        ),
        ("a sandboxed frame", vec!["Origin: null"]),
        (
            "a cross-site navigation",
            vec!["Sec-Fetch-Site: cross-site"],
        ),
        ("a same-site page", vec!["Sec-Fetch-Site: same-site"]),
    ] {
        let mut args = vec!["-X", "POST", "-d", "{}"];
        for h in &headers {
            args.extend(["-H", h]);
        }
        args.push(&url);
        let got = curl(&args).await;
        assert_eq!(got.status, 403, "{what}: {}", got.head);
        assert_eq!(
            got.header("x-pinproxy-error"),
            Some("cross-site-refused"),
            "{what}"
        );
        assert!(got.body.contains("allowed_origins"), "{what}: {}", got.body);
    }
    refusal_logged(&mut bin, "cross-site-refused");

    let preflight = |origin: &'static str| {
        let url = url.clone();
        async move {
            curl(&[
                "-X",
                "OPTIONS",
                "-H",
                &format!("Origin: {origin}"),
                "-H",
                "Access-Control-Request-Method: POST",
                "-H",
                "Access-Control-Request-Headers: content-type, x-chkp-sid",
                "-H",
                "Access-Control-Request-Private-Network: true",
                &url,
            ])
            .await
        }
    };
    let allowed = preflight("https://dash.example.com").await;
    assert_eq!(allowed.status, 204, "{}", allowed.head);
    assert_eq!(
        allowed.header("access-control-allow-origin"),
        Some("https://dash.example.com")
    );
    assert_eq!(allowed.header("access-control-allow-methods"), Some("POST"));
    assert_eq!(
        allowed.header("access-control-allow-headers"),
        Some("content-type, x-chkp-sid")
    );
    assert_eq!(
        allowed.header("access-control-allow-private-network"),
        Some("true")
    );
    let refused = preflight("https://evil.example").await;
    assert_eq!(
        (refused.status, refused.header("x-pinproxy-error")),
        (403, Some("cross-site-refused"))
    );
    assert!(refused.header("access-control-allow-origin").is_none());
    assert_eq!(
        up.requests(),
        0,
        "no refused request and no preflight was forwarded"
    );

    // The upstream's "Access-Control-Allow-Origin: *" reaches no page but an allowed one.
    let cors = format!("http://{addr}/cors");
    let plain = curl(&[&cors]).await;
    assert_eq!(plain.status, 200);
    assert_eq!(
        plain.header("access-control-allow-origin"),
        None,
        "{}",
        plain.head
    );
    assert_eq!(
        plain.header("access-control-allow-credentials"),
        None,
        "{}",
        plain.head
    );
    let dash = curl(&[
        "-H",
        "Origin: https://dash.example.com",
        "-H",
        "Sec-Fetch-Site: cross-site",
        &cors,
    ])
    .await;
    assert_eq!(dash.status, 200);
    assert_eq!(dash.header("access-control-allow-origin"), Some("*"));
    let same = curl(&[
        "-H",
        &format!("Origin: http://{addr}"),
        "-H",
        "Sec-Fetch-Site: same-origin",
        &url,
    ])
    .await;
    assert_eq!(same.status, 200, "the listener's own origin: {}", same.head);
    assert_eq!(up.requests(), 3);
}

/// A fresh directory others may enter (the tests may run the client as
/// another user), with a socket path inside.
fn socket_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

fn mode_of(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap()
        .permissions()
        .mode()
        & 0o7777
}

fn unix_config(
    target: std::net::SocketAddr,
    pin: &pinproxy::tls::pin::CertPin,
    path: &Path,
    extra: &str,
) -> String {
    format!(
        "shutdown_timeout = \"5s\"\n[[upstream]]\nname = \"gaia\"\nlisten = \"unix:{}\"\naddress = \"{target}\"\n\
         server_name = \"localhost\"\nfingerprints = [\"{pin}\"]\n{extra}",
        path.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unix_socket_listener_has_its_mode_replaces_a_stale_file_and_goes_on_sigterm() {
    let (up, c) = TestServer::start_self_signed().await;
    let dir = socket_dir();
    let path = dir.path().join("gaia.sock");
    // Left behind by a pinproxy that was killed: a socket file nobody listens on.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    let admin = dir.path().join("admin.sock");
    // A group this process may give files to: any, as root; else its own.
    let group = if nix::unistd::geteuid().is_root() {
        65534
    } else {
        nix::unistd::getegid().as_raw()
    };
    let config = temp_file(&unix_config(
        up.addr,
        &c.sha1_pin(),
        &path,
        &format!(
            "socket_mode = \"0660\"\nsocket_group = {group}\n[admin]\nlisten = \"unix:{}\"\n",
            admin.display()
        ),
    ));
    // umask 000 would make a plainly bound socket 0777.
    let mut bin = Binary::spawn_with_umask(
        "000",
        &["run", "--config", config.path().to_str().unwrap()],
        &[],
    );
    bin.wait_for(|v| v["message"] == "replacing a stale socket file (its process is gone)");
    let line = bin.wait_for(|v| v["message"] == "listening");
    assert_eq!(line["listen"], format!("unix:{}", path.display()));
    let line = bin.wait_for(|v| {
        v["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("admin endpoint"))
    });
    assert_eq!(line["listen"], format!("unix:{}", admin.display()));
    assert!(std::fs::symlink_metadata(&path)
        .unwrap()
        .file_type()
        .is_socket());
    assert_eq!(mode_of(&path), 0o660);
    assert_eq!(std::fs::symlink_metadata(&path).unwrap().gid(), group);
    assert_eq!(mode_of(&admin), 0o600, "the default socket_mode");

    let sock = path.to_str().unwrap();
    let got = curl(&["--unix-socket", sock, "http://localhost/echo"]).await;
    assert_eq!(got.status, 200, "{}{}", got.head, got.body);
    let health = curl(&[
        "--unix-socket",
        admin.to_str().unwrap(),
        "http://localhost/healthz",
    ])
    .await;
    assert_eq!(health.status, 200);
    // A name that is not the listener's is refused on a socket too.
    let evil = curl(&["--unix-socket", sock, "http://evil.example/echo"]).await;
    assert_eq!(evil.header("x-pinproxy-error"), Some("host-not-allowed"));

    // Python requests through requests-unixsocket: it sends the socket's path,
    // percent-encoded, as the Host.
    let script = format!(
        "import requests_unixsocket, urllib.parse\n\
         s = requests_unixsocket.Session()\n\
         r = s.get('http+unix://' + urllib.parse.quote('{sock}', safe='') + '/echo')\n\
         print(r.status_code, r.json()['path'])\n"
    );
    let out = python_with(&["requests", "requests-unixsocket"])
        .args(["-c", &script])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "200 /echo",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // socat, as a shell script would use it.
    let out = tokio::process::Command::new("socat")
        .args(["-t", "10", "-", &format!("UNIX-CONNECT:{sock}")])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map(|mut child| {
            let mut stdin = child.stdin.take().unwrap();
            async move {
                stdin
                    .write_all(b"GET /x HTTP/1.0\r\nHost: localhost\r\n\r\n")
                    .await
                    .unwrap();
                drop(stdin);
                child.wait_with_output().await.unwrap()
            }
        })
        .expect("socat is installed (.ci/run installs it)")
        .await;
    let answer = String::from_utf8_lossy(&out.stdout);
    assert!(answer.starts_with("HTTP/1.0 200"), "{answer}");
    assert_eq!(up.requests(), 3);

    bin.signal("TERM");
    let (status, _) = tokio::task::spawn_blocking(move || bin.finish())
        .await
        .unwrap();
    assert!(status.success());
    assert!(!path.exists(), "socket file removed on shutdown");
    assert!(!admin.exists(), "admin socket file removed on shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anything_but_a_stale_socket_at_the_path_is_a_startup_error() {
    let dir = socket_dir();
    let path = dir.path().join("gaia.sock");
    std::fs::write(&path, "precious").unwrap();
    let pin = "7DFEDEEEC7B9D06735E4C416EC7A031348CDCA8D";
    let listen = format!("unix:{}", path.display());
    let run = |listen: String| async move {
        let run = tokio::process::Command::from(pinproxy_command())
            .args([
                "run",
                "--listen",
                &listen,
                "--upstream",
                "127.0.0.1:9",
                "--fingerprint",
                pin,
            ])
            .kill_on_drop(true)
            .output();
        tokio::time::timeout(Duration::from_secs(10), run)
            .await
            .expect("pinproxy refused to start instead of serving")
            .unwrap()
    };
    let out = run(listen.clone()).await;
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("is not a socket") && err.contains(&listen),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "precious");

    // A live socket: another process is serving there.
    let live = dir.path().join("live.sock");
    let _other = std::os::unix::net::UnixListener::bind(&live).unwrap();
    let out = run(format!("unix:{}", live.display())).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already listens"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_adds_removes_and_re_permissions_unix_listeners() {
    let (up, c) = TestServer::start_self_signed().await;
    let dir = socket_dir();
    let (a, b) = (dir.path().join("a.sock"), dir.path().join("b.sock"));
    let second = |path: &Path| {
        format!(
            "[[upstream]]\nname = \"second\"\nlisten = \"unix:{}\"\naddress = \"{}\"\nfingerprints = [\"{}\"]\n",
            path.display(),
            up.addr,
            c.sha1_pin()
        )
    };
    let file = temp_file(&unix_config(up.addr, &c.sha1_pin(), &a, ""));
    let mut bin = Binary::spawn(&["run", "--config", file.path().to_str().unwrap()], &[]);
    bin.listening_line();
    assert_eq!(mode_of(&a), 0o600);

    let reload = |bin: &mut Binary, text: String| {
        std::fs::write(file.path(), text).unwrap();
        bin.signal("HUP");
        bin.wait_for(|v| v["message"] == "config reloaded")
    };
    let line = reload(
        &mut bin,
        unix_config(
            up.addr,
            &c.sha1_pin(),
            &a,
            &format!("socket_mode = \"0666\"\n{}", second(&b)),
        ),
    );
    assert_eq!(
        line["summary"],
        "added second; removed -; changed gaia; unchanged -"
    );
    assert_eq!(
        mode_of(&a),
        0o666,
        "the kept socket's mode changed in place"
    );
    assert_eq!(mode_of(&b), 0o600);
    assert_eq!(
        curl(&["--unix-socket", b.to_str().unwrap(), "http://localhost/x"])
            .await
            .status,
        200
    );

    reload(&mut bin, unix_config(up.addr, &c.sha1_pin(), &a, ""));
    assert!(!b.exists(), "a removed listener's socket file is gone");
    assert_eq!(mode_of(&a), 0o600);
    assert_eq!(
        curl(&["--unix-socket", a.to_str().unwrap(), "http://localhost/x"])
            .await
            .status,
        200
    );
}

/// Someone who can write the socket's directory swaps the socket for a
/// symlink to a file of their choosing; a reload that changes socket_mode
/// must not chmod that file through the link.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_never_changes_permissions_through_a_planted_symlink() {
    let (up, c) = TestServer::start_self_signed().await;
    let dir = socket_dir();
    let sock = dir.path().join("gaia.sock");
    let file = temp_file(&unix_config(up.addr, &c.sha1_pin(), &sock, ""));
    let mut bin = Binary::spawn(&["run", "--config", file.path().to_str().unwrap()], &[]);
    bin.listening_line();
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "secret\n").unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::remove_file(&sock).unwrap();
    std::os::unix::fs::symlink(&victim, &sock).unwrap();

    std::fs::write(
        file.path(),
        unix_config(up.addr, &c.sha1_pin(), &sock, "socket_mode = \"0666\"\n"),
    )
    .unwrap();
    bin.signal("HUP");
    // The refusal comes before the reload's summary line, if at all.
    let refused = bin.wait_for(|v| {
        v["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("cannot apply socket_mode") || m == "config reloaded")
    });
    assert!(
        refused["error"]
            .as_str()
            .is_some_and(|e| e.contains("no longer the socket pinproxy created")),
        "{refused}"
    );
    assert_eq!(mode_of(&victim), 0o600, "the link's target was not touched");
}

#[test]
fn a_socket_in_a_directory_anyone_can_write_is_refused() {
    let dir = socket_dir();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let sock = dir.path().join("gaia.sock");
    let file = temp_file(&unix_config(
        "192.0.2.10:443".parse().unwrap(),
        &cert().sha1_pin(),
        &sock,
        "",
    ));
    let out = pinproxy_command()
        .args(["run", "--config", file.path().to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        text.contains(&format!("chmod o-w {}", dir.path().display())),
        "{text}"
    );
    assert!(!sock.exists());
}

/// A path and a Host carrying a terminal's CSI (U+009B), a line separator
/// and a right-to-left override: in the log, in both formats, each is an
/// escape, never the raw character.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_and_bidi_characters_never_reach_the_log_raw() {
    use std::io::BufRead;
    let (up, c) = TestServer::start_self_signed().await;
    for format in ["json", "text"] {
        let dir = socket_dir();
        let sock = dir.path().join("gaia.sock");
        let config = temp_file(&unix_config(up.addr, &c.sha1_pin(), &sock, ""));
        let mut child = pinproxy_command()
            .args(["--log-format", format, "run", "--config"])
            .arg(config.path())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let (lines, rx) = std::sync::mpsc::channel::<String>();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                let _ = lines.send(line);
            }
        });
        let mut log = Vec::new();
        let mut next = || {
            let line = rx
                .recv_timeout(Duration::from_secs(10))
                .expect("a log line");
            log.push(line.clone());
            line
        };
        while !next().contains("listening") {}
        let evil = "\u{9b}31mX\u{2028}Y\u{202e}Z";
        for request in [
            format!("GET /marker{evil} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"),
            format!("GET /x HTTP/1.1\r\nHost: evil{evil}.example\r\nConnection: close\r\n\r\n"),
        ] {
            let mut unix = tokio::net::UnixStream::connect(&sock).await.unwrap();
            unix.write_all(request.as_bytes()).await.unwrap();
            let mut answer = Vec::new();
            let _ = unix.read_to_end(&mut answer).await;
        }
        let mut access = false;
        let mut refusal = false;
        while !(access && refusal) {
            let line = next();
            access |= line.contains("marker");
            refusal |= line.contains("request refused");
        }
        let _ = child.kill();
        let _ = child.wait();
        let log = log.join("\n");
        for raw in ['\u{9b}', '\u{2028}', '\u{202e}'] {
            assert!(
                !log.contains(raw),
                "{format}: {raw:?} raw in the log:\n{log}"
            );
        }
        assert!(
            log.contains("u{9b}31mX") && log.contains("u{202e}Z"),
            "{format}: escaped, still readable:\n{log}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_users_refuse_another_uid_on_unix_and_tcp_listeners() {
    let Some(nobody) = as_nobody() else { return };
    let (up, c) = TestServer::start_self_signed().await;
    let dir = socket_dir();
    let sock = dir.path().join("gaia.sock");
    let me = nix::unistd::getuid().as_raw();
    let text = format!(
        "{}\n[[upstream]]\nname = \"tcp\"\nlisten = \"127.0.0.1:0\"\naddress = \"{}\"\nfingerprints = [\"{}\"]\n\
         allowed_users = [\"root\"]\n",
        // 0666: the file lets anyone connect; allowed_users decides.
        unix_config(up.addr, &c.sha1_pin(), &sock, &format!("socket_mode = \"0666\"\nallowed_users = [{me}]\n")),
        up.addr,
        c.sha1_pin()
    );
    let config = temp_file(&text);
    let mut bin = Binary::spawn(&["run", "--config", config.path().to_str().unwrap()], &[]);
    bin.listening_line();
    let tcp: std::net::SocketAddr = bin.listening_line()["listen"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let unix = [
        "--unix-socket",
        sock.to_str().unwrap(),
        "http://localhost/x",
    ];
    let tcp_url = format!("http://{tcp}/x");

    for (what, args) in [("unix", unix.to_vec()), ("tcp", vec![tcp_url.as_str()])] {
        let mine = curl(&args).await;
        assert_eq!(
            mine.status, 200,
            "{what}: own uid {me}: {}{}",
            mine.head, mine.body
        );
        let theirs = curl_as(&nobody, &args).await;
        assert_eq!(theirs.status, 403, "{what}: {}{}", theirs.head, theirs.body);
        assert_eq!(
            theirs.header("x-pinproxy-error"),
            Some("user-not-allowed"),
            "{what}"
        );
        assert_eq!(theirs.header("connection"), Some("close"), "{what}");
        assert!(theirs.body.contains("uid 65534"), "{what}: {}", theirs.body);
        let line = refusal_logged(&mut bin, "user-not-allowed");
        assert_eq!(line["client_uid"], 65534, "{what}");
    }
    assert_eq!(
        up.requests(),
        2,
        "only the allowed user's requests were forwarded"
    );
    let access = bin.seen_or_wait(|v| v["message"] == "request" && v["status"] == 200);
    assert_eq!(access["client_uid"], me, "the access log names the user");
}

/// The TIME_WAIT race: a client queues a request behind a full listener and
/// closes at once, so that when pinproxy accepts, the kernel keeps no owner
/// for the client's socket (it reads uid 0). With `allowed_users = ["root"]`
/// that must be "owner unknown", refused, never root.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_gone_before_accept_is_refused_not_taken_for_root() {
    if !nix::unistd::geteuid().is_root() {
        println!("skipped: allowed_users = [\"root\"] must admit this test's own client");
        return;
    }
    let (up, c) = TestServer::start_self_signed().await;
    let text = format!(
        "[limits]\nmax_client_connections = 1\n[[upstream]]\nname = \"tcp\"\nlisten = \"127.0.0.1:0\"\n\
         address = \"{}\"\nfingerprints = [\"{}\"]\nallowed_users = [\"root\"]\n",
        up.addr,
        c.sha1_pin()
    );
    let config = temp_file(&text);
    let mut bin = Binary::spawn(&["run", "--config", config.path().to_str().unwrap()], &[]);
    let addr = bin.listening();
    // Root's own kept-alive connection takes the one slot.
    let mut held = KeptConnection::open(addr).await;
    let first = held.get("/first").await.await.unwrap();
    assert_eq!(first.status(), 200);
    drop(first);
    // Queued behind it: the request is written, the socket closed.
    let mut queued = TcpStream::connect(addr).await.unwrap();
    queued
        .write_all(b"GET /queued HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    drop(queued);
    drop(held);
    // Either way the queued request leaves one line: a refusal, or its access line.
    let line = bin.wait_for(|v| {
        v["reason"] == "user-not-allowed" || (v["message"] == "request" && v["path"] == "/queued")
    });
    assert_eq!(line["reason"], "user-not-allowed", "{line}");
    assert_eq!(line["seen"], "unknown", "{line}");
    assert_eq!(
        up.requests(),
        1,
        "the queued request never reached the upstream"
    );
}

#[tokio::test]
async fn the_demo_listens_on_loopback_only() {
    let demo = tokio::process::Command::from(pinproxy_command())
        .args(["demo", "--listen", "0.0.0.0:0"])
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(10), demo)
        .await
        .expect("the demo refused 0.0.0.0 instead of serving on it")
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("loopback only") && err.contains("127.0.0.1:0"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_listener_refuses_web_pages_too() {
    let (up, c) = TestServer::start_self_signed().await;
    let text = config_text(up.addr, &c.sha1_pin(), "").replacen(
        "[[upstream]]",
        "[proxy]\nlisten = \"127.0.0.1:0\"\n[[upstream]]",
        1,
    );
    let config = temp_file(&text);
    let mut bin = Binary::spawn(&["run", "--config", config.path().to_str().unwrap()], &[]);
    let line = bin.wait_for(|v| {
        v["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("HTTP-proxy listener"))
    });
    let proxy = format!("http://{}", line["listen"].as_str().unwrap());
    let via = ["-x", proxy.as_str()];
    let page = curl(
        &[
            &via[..],
            &["-H", "Origin: http://evil.example", "http://gaia/x"],
        ]
        .concat(),
    )
    .await;
    assert_eq!(page.status, 403, "{}", page.head);
    assert_eq!(page.header("x-pinproxy-error"), Some("cross-site-refused"));
    let nav = curl(
        &[
            &via[..],
            &["-H", "Sec-Fetch-Site: cross-site", "http://gaia/x"],
        ]
        .concat(),
    )
    .await;
    assert_eq!(nav.header("x-pinproxy-error"), Some("cross-site-refused"));
    assert_eq!(up.requests(), 0);
    let tool = curl(&[&via[..], &["http://gaia/x"]].concat()).await;
    assert_eq!(tool.status, 200, "{}{}", tool.head, tool.body);
    assert_eq!(up.requests(), 1);
}

/// What Chromium shows for `url` once its scripts ran, with `evil.example`
/// resolving to 127.0.0.1 (what a rebinding attacker's DNS answers).
async fn browser_dom(browser: &str, url: &str) -> String {
    let rules = "--host-resolver-rules=MAP evil.example 127.0.0.1";
    headless(browser, &[rules, "--dump-dom"], url).await
}

/// Serves `html` to every request on a loopback port (the attacker's site).
async fn serve_page(html: String) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let html = html.clone();
            tokio::spawn(async move {
                let _ = read_head(&mut tcp).await;
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{html}",
                    html.len()
                );
                let _ = tcp.write_all(answer.as_bytes()).await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_browser_page_cannot_use_the_listener() {
    let Some(browser) = chromium() else { return };
    let (up, c) = TestServer::start_self_signed().await;
    let config = temp_file(&config_text(up.addr, &c.sha1_pin(), ""));
    let mut bin = Binary::spawn(&["run", "--config", config.path().to_str().unwrap()], &[]);
    let port = bin.listening().port();

    // The attacker's page: a cross-site fetch to the listener by IP, and one
    // by the page's own (rebound) name.
    let page = format!(
        "<pre id=out>start</pre><script>\
         const out = document.getElementById('out');\
         (async () => {{\
           for (const url of ['http://127.0.0.1:{port}/echo', 'http://evil.example:{port}/echo']) {{\
             try {{ const r = await fetch(url, {{method: 'POST', body: '{{}}', headers: {{'Content-Type': 'text/plain'}}}});\
                   out.textContent += ' read:' + r.status; }}\
             catch (e) {{ out.textContent += ' blocked'; }}\
           }}\
           out.textContent += ' done';\
         }})();</script>"
    );
    let site = serve_page(page).await;
    let dom = browser_dom(browser, &format!("http://evil.example:{}/", site.port())).await;
    assert!(dom.contains("start blocked blocked done"), "{dom}");

    // After rebinding, the page's own origin is the listener's port: the
    // browser sends its name as Host.
    let dom = browser_dom(browser, &format!("http://evil.example:{port}/echo")).await;
    assert!(dom.contains("does not name this listener"), "{dom}");
    assert_eq!(up.requests(), 0, "no browser request reached the upstream");

    // Opening the listener by its own name works as ever.
    let dom = browser_dom(browser, &format!("http://localhost:{port}/echo")).await;
    assert!(dom.contains("\"path\":\"/echo\""), "{dom}");
    // The page, and perhaps the browser's own /favicon.ico.
    assert!(up.requests() >= 1);

    bin.signal("TERM");
    let (_, lines) = tokio::task::spawn_blocking(move || bin.finish())
        .await
        .unwrap();
    for reason in ["cross-site-refused", "host-not-allowed"] {
        let tag = format!("\"reason\":\"{reason}\"");
        assert!(
            lines.iter().any(|l| l.contains(&tag)),
            "no {reason} line: {lines:?}"
        );
    }
}
