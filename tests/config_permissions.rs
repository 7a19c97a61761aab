#![cfg(unix)] // Unix users, modes, sockets and setpriv throughout; see deploy/windows-check.sh
//! The config file is the trust decision, so pinproxy refuses one that someone
//! else could have changed — at start, on every reload, and in `check` — while
//! the layouts operators really use (systemd's /etc/pinproxy, a Kubernetes
//! ConfigMap volume: mode 0777 but read-only) pass.
//!
//! Needs root (to mount a read-only filesystem in a private mount namespace and
//! to run a check as `nobody`), as CI has.

mod common;

use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use common::*;

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

async fn run(program: &str, args: &[&str]) -> Output {
    let out = tokio::process::Command::new(program)
        .args(args)
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(Duration::from_secs(30), out)
        .await
        .expect("ends on its own")
        .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The attack from the issue: the config reached through a symlink in a
/// directory anyone can write. Refused at start; and when a directory on the
/// way becomes world-writable later, the swapped-in config is not loaded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_anyone_could_swap_is_refused_at_start_and_on_reload() {
    let (genuine, c) = TestServer::start_self_signed().await;
    let (attacker, a) = TestServer::start_self_signed().await;
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("real.toml");
    std::fs::write(&real, config_text(genuine.addr, &c.sha1_pin(), "")).unwrap();
    let links = dir.path().join("links");
    std::fs::create_dir(&links).unwrap();
    chmod(&links, 0o777);
    let link = links.join("proxy.toml");
    symlink(&real, &link).unwrap();
    let link_str = link.to_str().unwrap();

    let bin = env!("CARGO_BIN_EXE_pinproxy");
    let out = run(bin, &["run", "--config", link_str]).await;
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("chmod o-w {}", links.display())),
        "{err}"
    );
    assert!(err.contains("writable by every user"), "{err}");
    let out = run(bin, &["check", "--config", link_str]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains(&format!("chmod o-w {}", links.display())));

    // Safe at start; then the directory is opened and the link swapped.
    chmod(&links, 0o755);
    let mut proxy = Binary::spawn(&["run", "--watch-config", "--config", link_str], &[]);
    let addr = proxy.listening();
    let url = format!("http://{addr}/x");
    assert_eq!(get(&url).await.status, 200);
    chmod(&links, 0o777);
    let evil = dir.path().join("evil.toml");
    std::fs::write(&evil, config_text(attacker.addr, &a.sha1_pin(), "")).unwrap();
    let swap = links.join("swap");
    symlink(&evil, &swap).unwrap();
    std::fs::rename(&swap, &link).unwrap();
    let line = tokio::task::spawn_blocking(move || {
        let line = proxy.wait_for(|v| {
            v["message"] == "config reload failed; still serving the previous config"
        });
        (proxy, line)
    })
    .await
    .unwrap();
    let (_proxy, line) = line;
    let error = line["error"].as_str().unwrap();
    assert!(
        error.contains(&format!("chmod o-w {}", links.display())),
        "{error}"
    );
    assert_eq!(get(&url).await.status, 200, "still the genuine upstream");
    assert_eq!(attacker.requests(), 0);
    assert_eq!(
        attacker.tls_accepted(),
        0,
        "the attacker's server was never contacted"
    );
}

/// A ConfigMap volume as kubelet lays it out, on a tmpfs of mode 0777 in a
/// private mount namespace: refused while writable, accepted once read-only.
#[tokio::test]
async fn a_read_only_configmap_volume_of_mode_0777_passes_and_a_writable_one_does_not() {
    let (up, c) = TestServer::start_self_signed().await;
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source.toml");
    std::fs::write(&source, config_text(up.addr, &c.sha1_pin(), "")).unwrap();
    let volume = dir.path().join("volume");
    std::fs::create_dir(&volume).unwrap();
    let script = r#"set -e
volume=$1
mount -t tmpfs -o size=1m,mode=0777 tmpfs "$volume"
mkdir "$volume/..2026_11_23_v1"
cp "$2" "$volume/..2026_11_23_v1/proxy.toml"
chmod 0644 "$volume/..2026_11_23_v1/proxy.toml"
ln -s ..2026_11_23_v1 "$volume/..data"
ln -s ..data/proxy.toml "$volume/proxy.toml"
if [ "$4" = ro ]; then mount -o remount,ro "$volume"; fi
exec "$3" check --config "$volume/proxy.toml""#;
    let bin = env!("CARGO_BIN_EXE_pinproxy");
    let args = |mode: &'static str| {
        vec![
            "-m".to_string(),
            "sh".into(),
            "-c".into(),
            script.into(),
            "sh".into(),
            volume.display().to_string(),
            source.display().to_string(),
            bin.into(),
            mode.into(),
        ]
    };
    let ro: Vec<String> = args("ro");
    let ro: Vec<&str> = ro.iter().map(String::as_str).collect();
    let out = run("unshare", &ro).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let rw: Vec<String> = args("rw");
    let rw: Vec<&str> = rw.iter().map(String::as_str).collect();
    let out = run("unshare", &rw).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(&format!("chmod o-w {}", volume.display())),
        "{}",
        stderr(&out)
    );
}

/// systemd's layout: /etc/pinproxy owned by root, the file root:pinproxy 0640,
/// the service running as its own unprivileged user.
#[tokio::test]
async fn the_systemd_layout_passes_for_the_service_user() {
    let (up, c) = TestServer::start_self_signed().await;
    let dir = tempfile::tempdir().unwrap();
    chmod(dir.path(), 0o755);
    let etc = dir.path().join("etc/pinproxy");
    std::fs::create_dir_all(&etc).unwrap();
    chmod(&dir.path().join("etc"), 0o755);
    let file = etc.join("proxy.toml");
    std::fs::write(&file, config_text(up.addr, &c.sha1_pin(), "")).unwrap();
    std::os::unix::fs::chown(&etc, Some(0), Some(65534)).unwrap();
    chmod(&etc, 0o750);
    std::os::unix::fs::chown(&file, Some(0), Some(65534)).unwrap();
    chmod(&file, 0o640);
    let out = run(
        "setpriv",
        &[
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            env!("CARGO_BIN_EXE_pinproxy"),
            "check",
            "--config",
            file.to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

/// A sticky world-writable directory protects what it holds only when root owns
/// it (as /tmp): owned by anyone else, its owner's files could be replaced by
/// that owner's other processes and it is refused.
#[tokio::test]
async fn a_sticky_world_writable_directory_not_owned_by_root_is_refused() {
    let (up, c) = TestServer::start_self_signed().await;
    let dir = tempfile::tempdir().unwrap();
    chmod(dir.path(), 0o755);
    let shared = dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    let file = shared.join("proxy.toml");
    std::fs::write(&file, config_text(up.addr, &c.sha1_pin(), "")).unwrap();
    chmod(&file, 0o644);
    std::os::unix::fs::chown(&shared, Some(65534), Some(65534)).unwrap();
    chmod(&shared, 0o1777);
    let as_nobody = |path: String| async move {
        let args = ["--reuid=65534", "--regid=65534", "--clear-groups"];
        let bin = env!("CARGO_BIN_EXE_pinproxy");
        let mut all: Vec<&str> = args.to_vec();
        all.extend([bin, "check", "--config", &path]);
        run("setpriv", &all).await
    };
    let out = as_nobody(file.display().to_string()).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(&format!("chmod o-w {}", shared.display())),
        "{}",
        stderr(&out)
    );
    // The same directory owned by root: fine.
    std::os::unix::fs::chown(&shared, Some(0), Some(0)).unwrap();
    let out = as_nobody(file.display().to_string()).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}
