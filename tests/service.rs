//! pinproxy as a service, through the built binary: the admin endpoint, live
//! reload by SIGHUP and by watching the file (symlink swap included), systemd
//! notifications, and `pinproxy check`.

mod common;

#[cfg(unix)]
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::time::Duration;

use common::*;

const ADMIN: &str = "[admin]\nlisten = \"127.0.0.1:0\"\n";

/// The value of one series in a `/metrics` answer, e.g. `pinproxy_requests_total{upstream="gaia",class="5xx"}`.
fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("{series} not in\n{text}"))
        .parse()
        .unwrap()
}

async fn metrics(admin: std::net::SocketAddr) -> String {
    let a = get(&format!("http://{admin}/metrics")).await;
    assert_eq!(a.status, 200);
    // A scraper that does not ask for OpenMetrics gets the classic format.
    assert!(a.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    a.text()
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[tokio::test]
async fn admin_endpoint_reports_health_and_metrics_move_after_a_mismatch() {
    let (up, _) = TestServer::start_self_signed().await;
    let wrong = cert().sha1_pin();
    let config = temp_file(&config_text(up.addr, &wrong, ADMIN));
    let mut bin = Binary::spawn(&["run", "--config", path_str(config.path())], &[]);
    let addr = bin.listening();
    let admin = bin.admin();

    assert_eq!(get(&format!("http://{admin}/healthz")).await.status, 200);
    let ready = get(&format!("http://{admin}/readyz")).await;
    assert_eq!(
        (ready.status.as_u16(), ready.text()),
        (200, "ready\n".into())
    );
    let before = metrics(admin).await;
    let mismatch =
        "pinproxy_upstream_handshakes_total{upstream=\"gaia\",result=\"fingerprint_mismatch\"}";
    let errors = "pinproxy_requests_total{upstream=\"gaia\",class=\"5xx\"}";
    assert_eq!(metric(&before, mismatch), 0.0);
    assert_eq!(metric(&before, errors), 0.0);

    assert_eq!(get(&format!("http://{addr}/x")).await.status, 502);
    // Counted just before the access-log line is written, when the response ends.
    let (_bin, _) = on(bin, |b| b.wait_for(|v| v["message"] == "request")).await;
    let after = metrics(admin).await;
    assert_eq!(metric(&after, mismatch), 1.0);
    assert_eq!(metric(&after, errors), 1.0);
    // The last handshake: when, and that it failed.
    assert_eq!(
        metric(
            &after,
            "pinproxy_upstream_last_handshake_ok{upstream=\"gaia\"}"
        ),
        0.0
    );
    let when = metric(
        &after,
        "pinproxy_upstream_last_handshake_timestamp_seconds{upstream=\"gaia\"}",
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(now - when < 600.0 && when <= now + 1.0, "{when} {now}");
    assert_eq!(
        metric(
            &after,
            "pinproxy_request_duration_seconds_count{upstream=\"gaia\"}"
        ),
        1.0
    );
    // The server's certificate matched no pin: it tells nothing about expiry,
    // so there is still no notAfter series (see tests/alerts.rs).
    assert!(
        !after.contains("pinproxy_upstream_certificate_not_after_timestamp_seconds{"),
        "{after}"
    );
    assert_eq!(
        metric(&after, "pinproxy_upstream_connections{upstream=\"gaia\"}"),
        0.0
    );

    // Only GET/HEAD, only the three paths.
    let post = send(
        &client(),
        http::Request::post(format!("http://{admin}/metrics"))
            .body(empty())
            .unwrap(),
    )
    .await;
    assert_eq!(post.status, 405);
    assert_eq!(get(&format!("http://{admin}/x")).await.status, 404);
}

/// `pinproxy health` as an exec probe runs it: exit status and one line.
async fn health(args: &[&str]) -> (Option<i32>, String, String) {
    let out = tokio::process::Command::from(pinproxy_command())
        .arg("health")
        .args(args)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(10), out)
        .await
        .expect("pinproxy health ends on its own")
        .unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).trim_end().to_string();
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_admin_connections_cannot_fail_probes_and_are_closed() {
    let (up, c) = TestServer::start_self_signed().await;
    let config = temp_file(&config_text(up.addr, &c.sha1_pin(), ADMIN));
    let mut bin = Binary::spawn(&["run", "--config", path_str(config.path())], &[]);
    bin.listening();
    let admin = bin.admin();
    let mut held = Vec::new();
    for _ in 0..70 {
        held.push(tokio::net::TcpStream::connect(admin).await.unwrap());
    }
    // As a kubelet exec probe would run it, with a 1 s timeout.
    let admin_arg = admin.to_string();
    for _ in 0..14 {
        let answer = health(&["--admin", &admin_arg, "--timeout", "1s"]).await;
        assert_eq!(answer, (Some(0), "ready".into(), String::new()));
    }
    // The address comes from the config file just as well (here a Unix socket);
    // --live asks /healthz.
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("admin.sock");
    let unix_config = temp_file(&config_text(
        up.addr,
        &c.sha1_pin(),
        &format!("[admin]\nlisten = \"unix:{}\"\n", sock.display()),
    ));
    let file = path_str(unix_config.path());
    let mut unix_bin = Binary::spawn(&["run", "--config", file], &[]);
    unix_bin.listening();
    unix_bin.admin_line();
    assert_eq!(
        health(&["--config", file]).await,
        (Some(0), "ready".into(), String::new())
    );
    assert_eq!(
        health(&["--config", file, "--live"]).await,
        (Some(0), "ok".into(), String::new())
    );
    // Connections that never send a request are closed (first-byte timeout).
    let closed = futures_util::future::join_all(held.into_iter().map(|mut tcp| async move {
        use tokio::io::AsyncReadExt;
        let mut buf = [0u8; 16];
        tcp.read(&mut buf).await.map_or(0, |n| n)
    }));
    let reads = tokio::time::timeout(Duration::from_secs(20), closed)
        .await
        .expect("held admin connections are closed");
    assert!(reads.iter().all(|&n| n == 0), "{reads:?}");
    drop(bin);
    let (code, out, err) = health(&["--admin", &admin_arg]).await;
    assert_eq!((code, out.as_str()), (Some(1), ""));
    assert!(
        err.starts_with(&format!(
            "pinproxy: error: cannot reach the admin endpoint at {admin}"
        )),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[tokio::test]
async fn readiness_turns_503_while_draining_and_health_stays_200() {
    let (up, c) = TestServer::start_self_signed().await;
    let config = temp_file(&config_text(up.addr, &c.sha1_pin(), ADMIN));
    let mut bin = Binary::spawn(&["run", "--config", path_str(config.path())], &[]);
    let addr = bin.listening();
    let admin = bin.admin();
    let slow = tokio::spawn(async move { get(&format!("http://{addr}/slow")).await });
    up.slow_arrived.notified().await;
    let m = metrics(admin).await;
    assert_eq!(
        metric(&m, "pinproxy_client_connections{upstream=\"gaia\"}"),
        1.0
    );
    assert_eq!(
        metric(&m, "pinproxy_upstream_connections{upstream=\"gaia\"}"),
        1.0
    );

    bin.signal("TERM");
    let (bin, _) = on(bin, |b| {
        b.wait_for(|v| v["message"] == "listeners closed; waiting for in-flight requests")
    })
    .await;
    let ready = get(&format!("http://{admin}/readyz")).await;
    assert_eq!(ready.status, 503);
    assert!(ready.text().starts_with("draining"), "{}", ready.text());
    assert_eq!(get(&format!("http://{admin}/healthz")).await.status, 200);
    let admin_arg = admin.to_string();
    let (code, _, err) = health(&["--admin", &admin_arg]).await;
    assert_eq!(code, Some(1));
    assert_eq!(
        err,
        "pinproxy: error: /readyz answered 503: draining: shutting down, finishing in-flight requests"
    );
    assert_eq!(health(&["--admin", &admin_arg, "--live"]).await.0, Some(0));

    up.release.notify_one();
    assert_eq!(slow.await.unwrap().status, 200);
    let (status, _) = tokio::task::spawn_blocking(move || bin.finish())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

/// The access line says who the client was, which failover address answered
/// and the client's X-Request-Id, which also goes on to the upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_lines_name_the_client_the_address_used_and_the_request_id() {
    let (up, c) = TestServer::start_self_signed().await;
    let vacant = {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    let text = format!(
        "[[upstream]]\nname = \"gaia\"\nlisten = \"127.0.0.1:0\"\naddress = [\"{vacant}\", \"{}\"]\n\
         server_name = \"localhost\"\nfingerprints = [\"{}\"]\n",
        up.addr,
        c.sha1_pin()
    );
    let config = temp_file(&text);
    let mut bin = Binary::spawn(&["run", "--config", path_str(config.path())], &[]);
    let addr = bin.listening();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let client_addr = tcp.local_addr().unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get("/echo")
        .header("host", "localhost")
        .header("x-request-id", "job-7")
        .body(empty())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap()
        .to_bytes();
    let echo: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(echo["headers"]["x-request-id"][0], "job-7", "passed on");
    let (bin, line) = on(bin, |b| b.wait_for(|v| v["message"] == "request")).await;
    assert_eq!(line["client"], client_addr.to_string(), "{line}");
    assert_eq!(line["upstream_address"], up.addr.to_string(), "{line}");
    assert_eq!(line["request_id"], "job-7", "{line}");
    drop(bin);
}

/// `shutdown_drain_delay`: after SIGTERM the listeners keep accepting (a
/// sidecar's job may still log out) while `/readyz` says 503; a second signal
/// ends the wait and the process exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drain_delay_keeps_accepting_with_readyz_503_until_it_ends() {
    let (up, c) = TestServer::start_self_signed().await;
    let text = config_text(up.addr, &c.sha1_pin(), ADMIN).replace(
        "shutdown_timeout = \"10s\"\n",
        "shutdown_timeout = \"10s\"\nshutdown_drain_delay = \"10m\"\n",
    );
    assert!(text.contains("shutdown_drain_delay"));
    let config = temp_file(&text);
    let mut bin = Binary::spawn(&["run", "--config", path_str(config.path())], &[]);
    let addr = bin.listening();
    let admin = bin.admin();
    bin.signal("TERM");
    let (bin, _) = on(bin, |b| {
        b.wait_for(|v| {
            v["message"].as_str().is_some_and(|m| {
                m.starts_with("shutting down: still accepting for shutdown_drain_delay")
            })
        })
    })
    .await;
    assert_eq!(get(&format!("http://{admin}/readyz")).await.status, 503);
    // A new client connection after the signal is still served.
    assert_eq!(get(&format!("http://{addr}/x")).await.status, 200);
    bin.signal("TERM");
    let (status, _) = tokio::task::spawn_blocking(move || bin.finish())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

#[cfg(unix)]
#[tokio::test]
async fn sighup_applies_a_corrected_pin_and_a_broken_file_keeps_the_old_config() {
    let (up, c) = TestServer::start_self_signed().await;
    let wrong = cert().sha1_pin();
    let config = temp_file(&config_text(up.addr, &wrong, ADMIN));
    let mut bin = Binary::spawn(&["run", "--config", path_str(config.path())], &[]);
    let pid = bin.child.id();
    let addr = bin.listening();
    let admin = bin.admin();
    let url = format!("http://{addr}/x");
    assert_eq!(get(&url).await.status, 502);

    std::fs::write(config.path(), config_text(up.addr, &c.sha1_pin(), ADMIN)).unwrap();
    bin.signal("HUP");
    let (bin, line) = on(bin, |b| b.wait_for(|v| v["message"] == "config reloaded")).await;
    assert_eq!(line["trigger"], "SIGHUP");
    assert!(
        line["summary"].as_str().unwrap().contains("changed gaia"),
        "{line}"
    );
    assert_eq!(
        get(&url).await.status,
        200,
        "same port, same process, new pin"
    );
    assert_eq!(bin.child.id(), pid);

    let broken = config_text(up.addr, &c.sha1_pin(), ADMIN).replace("address =", "adress =");
    std::fs::write(config.path(), broken).unwrap();
    bin.signal("HUP");
    let (bin, line) = on(bin, |b| {
        b.wait_for(|v| v["message"] == "config reload failed; still serving the previous config")
    })
    .await;
    assert_eq!(line["level"], "ERROR");
    let error = line["error"].as_str().unwrap();
    assert!(
        error.contains(&format!("{}:5:1", config.path().display())) && error.contains("adress"),
        "{error}"
    );
    assert_eq!(get(&url).await.status, 200);
    let m = metrics(admin).await;
    assert_eq!(
        metric(&m, "pinproxy_config_reloads_total{result=\"ok\"}"),
        1.0
    );
    assert_eq!(
        metric(&m, "pinproxy_config_reloads_total{result=\"error\"}"),
        1.0
    );
    // The last reload failed: the running config is older than the file.
    assert_eq!(metric(&m, "pinproxy_config_stale"), 1.0);
    drop(bin);
}

/// The layout kubelet gives a mounted ConfigMap: `proxy.toml -> ..data/proxy.toml`,
/// `..data -> ..<timestamp>`; an update writes a new directory and renames a new
/// `..data` symlink over the old one.
#[cfg(unix)]
struct ConfigMapDir {
    dir: tempfile::TempDir,
    version: usize,
}

#[cfg(unix)]
impl ConfigMapDir {
    fn new(text: &str) -> ConfigMapDir {
        let dir = tempfile::tempdir().unwrap();
        let mut cm = ConfigMapDir { dir, version: 0 };
        cm.update(text);
        std::os::unix::fs::symlink("..data/proxy.toml", cm.path()).unwrap();
        cm
    }

    fn path(&self) -> std::path::PathBuf {
        self.dir.path().join("proxy.toml")
    }

    fn update(&mut self, text: &str) {
        self.version += 1;
        let version = format!("..2026_11_23_v{}", self.version);
        let root = self.dir.path();
        std::fs::create_dir(root.join(&version)).unwrap();
        std::fs::write(root.join(&version).join("proxy.toml"), text).unwrap();
        std::os::unix::fs::symlink(&version, root.join("..data_tmp")).unwrap();
        std::fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
        if self.version > 1 {
            let old = format!("..2026_11_23_v{}", self.version - 1);
            std::fs::remove_dir_all(root.join(old)).unwrap();
        }
    }
}

#[cfg(unix)]
#[tokio::test]
async fn watch_config_follows_a_configmap_symlink_swap() {
    let (up, c) = TestServer::start_self_signed().await;
    let wrong = cert().sha1_pin();
    let mut cm = ConfigMapDir::new(&config_text(up.addr, &wrong, ""));
    let path = cm.path();
    let mut bin = Binary::spawn(&["run", "--watch-config", "--config", path_str(&path)], &[]);
    let addr = bin.listening();
    let url = format!("http://{addr}/x");
    assert_eq!(get(&url).await.status, 502);

    cm.update(&config_text(up.addr, &c.sha1_pin(), ""));
    let (bin, line) = on(bin, |b| b.wait_for(|v| v["message"] == "config reloaded")).await;
    assert_eq!(line["trigger"], "file change");
    assert_eq!(get(&url).await.status, 200);
    drop(bin);
}

#[cfg(unix)]
/// Reads notifications until one contains `want`, skipping watchdog pings.
fn expect_notification(sock: &UnixDatagram, want: &str) -> String {
    let mut buf = [0u8; 4096];
    loop {
        let n = sock
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("no notification with {want:?}: {e}"));
        let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
        if msg.lines().any(|l| l == want) {
            return msg;
        }
    }
}

#[cfg(unix)]
#[test]
fn systemd_hears_ready_reloading_stopping_and_watchdog_pings() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&socket_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // Nothing connects upstream until a request arrives, so any address will do.
    let config = temp_file(&config_text(
        "127.0.0.1:9".parse().unwrap(),
        &cert().sha1_pin(),
        "",
    ));
    let mut bin = Binary::spawn(
        &["run", "--config", path_str(config.path())],
        &[
            ("NOTIFY_SOCKET", path_str(&socket_path)),
            ("WATCHDOG_USEC", "200000"),
        ],
    );
    bin.listening();
    let ready = expect_notification(&sock, "READY=1");
    assert!(
        ready.contains("STATUS=serving 1 upstream: gaia"),
        "{ready:?}"
    );
    expect_notification(&sock, "WATCHDOG=1");

    bin.signal("HUP");
    let reloading = expect_notification(&sock, "RELOADING=1");
    let usec: u64 = reloading
        .lines()
        .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
        .expect("MONOTONIC_USEC with RELOADING=1")
        .parse()
        .unwrap();
    assert!(usec > 0);
    expect_notification(&sock, "READY=1");

    bin.signal("TERM");
    let stopping = expect_notification(&sock, "STOPPING=1");
    assert!(stopping.contains("STATUS=draining"), "{stopping:?}");
    let (status, _) = bin.finish();
    assert_eq!(status.code(), Some(0));
}

async fn check(args: &[&str]) -> std::process::Output {
    tokio::process::Command::from(pinproxy_command())
        .arg("check")
        .args(args)
        .output()
        .await
        .unwrap()
}

#[tokio::test]
async fn check_validates_and_connect_reports_match_or_mismatch() {
    let (up, c) = TestServer::start_self_signed().await;
    let good = temp_file(&config_text(up.addr, &c.sha1_pin(), ADMIN));
    let out = check(&["--config", path_str(good.path())]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("valid, 1 upstream, admin endpoint on 127.0.0.1:0"),
        "{stdout}"
    );
    assert_eq!(up.tls_accepted(), 0, "no connection without --connect");

    let out = check(&["--config", path_str(good.path()), "--connect"]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    let sha1 = c.fingerprints().sha1_line();
    assert!(
        stdout.contains(&format!("MATCH (pin 1), {sha1}")),
        "{stdout}"
    );
    assert_eq!(up.requests(), 0, "a check sends no request");

    let wrong = temp_file(&config_text(up.addr, &cert().sha1_pin(), ""));
    let out = check(&["--config", path_str(wrong.path()), "--connect"]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains(&format!("MISMATCH: presented {sha1}")),
        "{stdout}"
    );

    let broken = temp_file(
        &config_text(up.addr, &c.sha1_pin(), "")
            .replace("fingerprints = [\"", "fingerprints = [\"zz"),
    );
    let out = check(&["--config", path_str(broken.path())]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.contains(&format!("{}:7:17: bad pin", broken.path().display())),
        "{stderr}"
    );
}

#[cfg(unix)]
#[test]
fn a_world_writable_config_file_is_refused_at_start() {
    use std::os::unix::fs::PermissionsExt;
    let pin = cert().sha1_pin();
    let open = temp_file(&config_text("127.0.0.1:9".parse().unwrap(), &pin, ""));
    std::fs::set_permissions(open.path(), std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = pinproxy_command()
        .args(["run", "--config", path_str(open.path())])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("chmod o-w {}", open.path().display())),
        "{err}"
    );
}

/// The shipped probes run `health --config FILE`. After a bad edit the running
/// pinproxy keeps serving its last good config, so the probes must keep
/// passing: a typo must not become a liveness failure, a restart, and a
/// restart that fails on the same file (CrashLoopBackOff).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_keep_passing_while_a_bad_edit_waits_in_the_file() {
    let (up, c) = TestServer::start_self_signed().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("proxy.toml");
    let good = config_text(
        up.addr,
        &c.sha1_pin(),
        "[admin]\nlisten = \"127.0.0.1:0\"\n",
    );
    std::fs::write(&path, &good).unwrap();
    let mut bin = Binary::spawn(&["run", "--config", path.to_str().unwrap()], &[]);
    let url = format!("http://{}/x", bin.listening());
    let admin = bin.admin();
    // The probes read the admin address from the file, as the manifests do.
    let pinned = good.replace("127.0.0.1:0\"", &format!("{admin}\""));
    std::fs::write(&path, &pinned).unwrap();
    let config = path.to_str().unwrap();
    for (what, edit) in [
        ("a misspelt key", pinned.replace("address =", "adress =")),
        (
            "broken TOML",
            pinned.replace("name = \"gaia\"", "name = \"gaia"),
        ),
    ] {
        std::fs::write(&path, &edit).unwrap();
        bin.signal("HUP");
        bin.wait_for(|v| {
            v["message"]
                .as_str()
                .is_some_and(|m| m.contains("reload failed"))
        });
        assert_eq!(get(&url).await.status, 200, "{what}: still serving");
        for args in [&["--config", config][..], &["--config", config, "--live"]] {
            let (code, out, err) = health(args).await;
            assert_eq!(code, Some(0), "{what}: health {args:?}: {out} {err}");
        }
    }
    bin.signal("TERM");
    let _ = bin.finish();
}

/// The scheduling policy (`/proc/PID/task/TID/stat` field 41; 3 is
/// SCHED_BATCH) of each thread of `pid` whose name starts with `name`.
#[cfg(target_os = "linux")]
fn thread_policies(pid: u32, name: &str) -> Vec<u32> {
    let mut policies = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let Ok(stat) = std::fs::read_to_string(task.unwrap().path().join("stat")) else {
            continue; // the thread ended meanwhile
        };
        // "TID (comm) state ...": the name may hold spaces, the fields after it do not.
        let (head, fields) = stat.rsplit_once(") ").unwrap();
        if head.split_once(" (").unwrap().1.starts_with(name) {
            policies.push(fields.split(' ').nth(38).unwrap().parse().unwrap());
        }
    }
    policies
}

/// `pinproxy run` serves with its connection workers under SCHED_BATCH, so
/// that on a loaded machine they take ready connections in batches instead of
/// preempting another task for each one (docs/benchmark.md, eighth round).
#[cfg(target_os = "linux")]
#[tokio::test]
async fn run_serves_from_workers_scheduled_as_batch() {
    let (up, c) = TestServer::start_self_signed().await;
    let text = format!(
        "[[upstream]]\nname = \"gaia\"\nlisten = \"127.0.0.1:0\"\naddress = \"{}\"\n\
         server_name = \"localhost\"\nfingerprints = [\"{}\"]\n",
        up.addr,
        c.sha1_pin()
    );
    let config = temp_file(&text);
    let mut bin = Binary::spawn(&["run", "--config", path_str(config.path())], &[]);
    let url = format!("http://{}/echo", bin.listening());
    assert_eq!(get(&url).await.status, 200, "served");
    // Threads are named pinproxy-worker-N; the kernel keeps 15 bytes of a name.
    let workers = thread_policies(bin.child.id(), "pinproxy-worke");
    assert!(!workers.is_empty(), "no worker thread found");
    assert!(workers.iter().all(|&p| p == 3), "policies {workers:?}");
    bin.signal("TERM");
    let _ = bin.finish();
}
