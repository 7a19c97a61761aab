#![cfg(unix)] // sessions are held per local user (uid), on Unix-socket listeners
//! Brokered Check Point sessions (`[upstream.session]`): pinproxy logs in
//! with a key the tool never sees, hands the session to requests that bring
//! none, logs in again when the server has dropped it, gives each local user
//! a session of their own, lets a tool's own login pass, logs out at
//! shutdown, and never shows the key or a sid anywhere. Against the mock
//! management API, with curl as the tool.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use common::*;
use pinproxy::cmd::mock_api::{self, Sessions};
use pinproxy::tls::pin::Fingerprints;

struct Setup {
    _dir: tempfile::TempDir,
    config: std::path::PathBuf,
    sessions: Arc<Sessions>,
}

async fn setup(key: &str, users: &str) -> Setup {
    let api = mock_api::self_signed(&["localhost"]).unwrap();
    let (addr, sessions) =
        mock_api::spawn_with_sessions("127.0.0.1:0".parse().unwrap(), api.server_config.clone())
            .await
            .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("api-key");
    std::fs::write(&key_file, format!("{key}\n")).unwrap();
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let pin = Fingerprints::of(api.cert.as_ref()).sha1_line();
    let audit = dir.path().join("audit.jsonl");
    let text = format!(
        "audit_log = \"{}\"\n[[upstream]]\nname = \"gaia\"\nlisten = \"127.0.0.1:0\"\naddress = \"{addr}\"\n\
         server_name = \"localhost\"\nfingerprints = [\"{pin}\"]\ncheck_interval = \"0s\"\nallowed_users = [{users}]\naudit = true\n\
         [upstream.session]\nkind = \"check-point\"\napi_key_file = \"api-key\"\nread_only = true\nsession_timeout = \"5m\"\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n",
        audit.display()
    );
    let config = dir.path().join("proxy.toml");
    std::fs::write(&config, text).unwrap();
    Setup {
        _dir: dir,
        config,
        sessions,
    }
}

fn me() -> u32 {
    nix::unistd::getuid().as_raw()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tool_works_in_a_session_it_never_holds() {
    let s = setup(mock_api::API_KEY, &format!("{}, \"nobody\"", me())).await;
    let bin = Binary::spawn(
        &["run", "--config", s.config.to_str().unwrap()],
        &[("RUST_LOG", "trace")],
    );
    let (bin, (base, admin)) = on(bin, |b| (format!("http://{}", b.listening()), b.admin())).await;
    let show = |base: String| async move {
        curl(&[
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "-d",
            "{}",
            &format!("{base}/web_api/show-hosts"),
        ])
        .await
    };

    // No login by the tool: pinproxy logged in, read-only, and the call ran.
    let first = show(base.clone()).await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert!(first.body.contains("host-1"), "{}", first.body);
    let logins = s.sessions.logins();
    assert_eq!(logins.len(), 1);
    assert_eq!(
        (
            logins[0]["read-only"].as_bool(),
            logins[0]["session-timeout"].as_u64()
        ),
        (Some(true), Some(300))
    );
    assert_eq!(show(base.clone()).await.status, 200);
    assert_eq!(s.sessions.logins().len(), 1, "the session is reused");

    // The server drops every session: the next call logs in again and is
    // sent once more, and the tool sees only its answer.
    s.sessions.expire_all();
    assert_eq!(show(base.clone()).await.status, 200);
    assert_eq!(s.sessions.logins().len(), 2);

    // A tool that logs in itself keeps working: its login and its sid pass unchanged.
    let own = curl(&[
        "-X",
        "POST",
        "-d",
        "{\"user\":\"admin\",\"password\":\"demo\"}",
        &format!("{base}/web_api/login"),
    ])
    .await;
    assert_eq!(own.status, 200, "{}", own.body);
    let own_sid = serde_json::from_str::<serde_json::Value>(&own.body).unwrap()["sid"]
        .as_str()
        .unwrap()
        .to_string();
    let with_own = curl(&[
        "-X",
        "POST",
        "-H",
        &format!("X-chkp-sid: {own_sid}"),
        "-d",
        "{}",
        &format!("{base}/web_api/show-session"),
    ])
    .await;
    assert_eq!(with_own.status, 200);
    assert_eq!(s.sessions.calls().last().unwrap().0, own_sid);

    // Another local user gets a session of their own.
    if let Some(nobody) = as_nobody() {
        let url = format!("{base}/web_api/show-hosts");
        assert_eq!(
            curl_as(&nobody, &["-X", "POST", "-d", "{}", &url])
                .await
                .status,
            200
        );
        let calls = s.sessions.calls();
        let shows: std::collections::HashSet<&String> = calls
            .iter()
            .filter(|(_, c)| c == "show-hosts")
            .map(|(sid, _)| sid)
            .collect();
        assert_eq!(
            shows.len(),
            3,
            "root's first, root's after expiry, nobody's: {calls:?}"
        );
    }

    let status = get(&format!("http://{admin}/status")).await.json();
    let sessions = &status["upstreams"][0]["sessions"];
    let mine = sessions
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["uid"] == me())
        .unwrap();
    assert_eq!(mine["held"], true, "{sessions}");
    let tag = mine["session"].as_str().unwrap().to_string();
    assert_eq!(tag.len(), 8);
    let page = get(&format!("http://{admin}/")).await.text();
    let status_text = status.to_string();

    // At shutdown pinproxy logs out of what it holds; the tool's own session is the tool's.
    bin.signal("TERM");
    let (_, lines) = bin.finish();
    assert_eq!(s.sessions.live(), 1, "only the tool's own session is left");
    let audit = std::fs::read_to_string(s.config.with_file_name("audit.jsonl")).unwrap();
    assert!(audit.contains(&format!("\"session\":\"{tag}\"")), "{audit}");
    let everything = [lines.join("\n"), status_text, page, audit].join("\n");
    let brokered: Vec<String> = s
        .sessions
        .calls()
        .into_iter()
        .map(|(sid, _)| sid)
        .filter(|sid| *sid != own_sid)
        .collect();
    assert!(!brokered.is_empty());
    for secret in brokered
        .iter()
        .map(String::as_str)
        .chain([mock_api::API_KEY])
    {
        assert!(!everything.contains(secret), "{secret} leaked");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_login_is_a_502_that_says_so_and_the_status_page_shows_it() {
    let s = setup("not-the-key", &me().to_string()).await;
    let bin = Binary::spawn(&["run", "--config", s.config.to_str().unwrap()], &[]);
    let (bin, (base, admin)) = on(bin, |b| (format!("http://{}", b.listening()), b.admin())).await;
    let got = curl(&[
        "-X",
        "POST",
        "-d",
        "{}",
        &format!("{base}/web_api/show-hosts"),
    ])
    .await;
    assert_eq!(got.status, 502, "{}", got.body);
    assert_eq!(got.header("x-pinproxy-error"), Some("session-login-failed"));
    assert!(
        got.body.contains("Authentication to server failed"),
        "{}",
        got.body
    );
    assert!(!got.body.contains("not-the-key"));
    let status = get(&format!("http://{admin}/status")).await.json();
    let session = &status["upstreams"][0]["sessions"][0];
    assert_eq!(session["held"], false);
    assert!(
        session["last_login_error"]
            .as_str()
            .unwrap()
            .contains("Authentication to server failed"),
        "{session}"
    );
    bin.signal("TERM");
    let _ = bin.finish();
}

#[test]
fn a_session_on_a_listener_anyone_may_use_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let password = dir.path().join("password");
    std::fs::write(&password, "demo\n").unwrap();
    std::fs::set_permissions(&password, std::fs::Permissions::from_mode(0o600)).unwrap();
    let file = temp_file(&format!(
        "[[upstream]]\nname = \"gaia\"\nlisten = \"127.0.0.1:0\"\naddress = \"192.0.2.1:443\"\nfingerprints = [\"SHA1: 7D:FE:DE:EE:C7:B9:D0:67:35:E4:C4:16:EC:7A:03:13:48:CD:CA:8D\"]\n\
         [upstream.session]\nkind = \"check-point\"\nuser = \"admin\"\npassword_file = \"{}\"\n",
        password.display()
    ));
    let out = pinproxy_command()
        .args(["check", "--config", file.path().to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("/nonexistent") || text.contains("allowed_users"),
        "{text}"
    );
}
