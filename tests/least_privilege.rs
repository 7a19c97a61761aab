//! Least privilege through the channel: which requests a listener forwards
//! (`allowed_requests`, `[[upstream.policy]]` per local user), tried with curl
//! and Python requests through the built binary, including the encodings,
//! dot segments and doubled slashes a tool (or an attacker) may use to slip a
//! command past the rules.

mod common;

use common::*;

const READ_ONLY: &str =
    "allowed_requests = [\"POST /web_api/show-*\", \"POST /web_api/*/show-*\", \
                         \"POST /web_api/login\", \"POST /web_api/logout\"]\n";

/// A listener whose clients may only read, except `nobody`, who may run anything.
fn policy_config(up: &TestServer, c: &TestCert) -> String {
    config_text(
        up.addr,
        &c.sha1_pin(),
        &format!("{READ_ONLY}[[upstream.policy]]\nusers = [\"nobody\"]\nallow = [\"POST /web_api/**\"]\n"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_allowed_commands_reach_the_server_however_they_are_spelled() {
    let (up, c) = TestServer::start_self_signed().await;
    let file = temp_file(&policy_config(&up, &c));
    let mut bin = Binary::spawn(&["run", "--config", file.path().to_str().unwrap()], &[]);
    let base = format!("http://{}", bin.listening());
    bin.discard_output();
    let post = |path: &str| {
        let url = format!("{base}{path}");
        async move { curl(&["--path-as-is", "-X", "POST", "-d", "{}", &url]).await }
    };

    let shown = post("/web_api/show-hosts").await;
    assert_eq!(shown.status, 200, "{}", shown.body);
    let versioned = post("/web_api/v1.9/show-hosts").await;
    assert_eq!(versioned.status, 200);
    // Doubled slashes and an encoded unreserved letter are normalised, and the
    // server gets the path the rule saw.
    let doubled = post("//web_api//%73how-hosts?details-level=full").await;
    assert_eq!(doubled.status, 200, "{}", doubled.body);
    let echo: serde_json::Value = serde_json::from_str(&doubled.body).unwrap();
    assert_eq!(
        (echo["path"].as_str(), echo["query"].as_str()),
        (Some("/web_api/show-hosts"), Some("details-level=full"))
    );
    let before = up.requests();

    for path in [
        "/web_api/publish",
        "/web_api/%70ublish",
        "/web_api/PUBLISH",
        "/web_api/show-hosts/",
        "/web_api/v1.9/x/show-hosts",
    ] {
        let refused = post(path).await;
        assert_eq!(refused.status, 403, "{path}: {}", refused.body);
        assert_eq!(
            refused.header("x-pinproxy-error"),
            Some("request-not-allowed"),
            "{path}"
        );
        assert!(
            refused
                .body
                .contains("allowed_requests allows POST /web_api/show-*"),
            "{}",
            refused.body
        );
    }
    for path in [
        "/web_api/show-hosts/../publish",
        "/web_api/show-hosts%2F..%2Fpublish",
        "/web_api/show-hosts/%2e%2e/publish",
        "/web_api/show-hosts;/../publish",
        "/web_api/show-hosts\\..\\publish",
    ] {
        let refused = post(path).await;
        assert_eq!(refused.status, 400, "{path}: {}", refused.body);
        assert_eq!(
            refused.header("x-pinproxy-error"),
            Some("ambiguous-path"),
            "{path}"
        );
    }
    let get = curl(&[&format!("{base}/web_api/show-hosts")]).await;
    assert_eq!(get.status, 403, "GET is not in the rules");
    assert_eq!(up.requests(), before, "nothing refused reached the server");

    // Python requests, as automation uses it.
    let script = format!(
        "import requests\nfor c in ['show-hosts', 'publish']:\n    r = requests.post('{base}/web_api/' + c, json={{}})\n    print(c, r.status_code, r.headers.get('X-Pinproxy-Error'))\n"
    );
    let out = tokio::task::spawn_blocking(move || {
        python_with(&["requests"])
            .args(["-c", &script])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        said,
        "show-hosts 200 None\npublish 403 request-not-allowed\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The user a [[upstream.policy]] table names gets its rules instead.
    if let Some(nobody) = as_nobody() {
        let url = format!("{base}/web_api/publish");
        let published = curl_as(&nobody, &["-X", "POST", "-d", "{}", &url]).await;
        assert_eq!(published.status, 200, "{}", published.body);
    }
    bin.signal("TERM");
    let _ = bin.finish();
}

#[test]
fn policy_mistakes_are_config_errors_and_check_warns_about_an_empty_one() {
    let config = |extra: &str| {
        temp_file(&config_text(
            "192.0.2.10:443".parse().unwrap(),
            &cert().sha1_pin(),
            extra,
        ))
    };
    let check = |file: &tempfile::NamedTempFile| {
        std::process::Command::new(env!("CARGO_BIN_EXE_pinproxy"))
            .args(["check", "--config", file.path().to_str().unwrap()])
            .output()
            .unwrap()
    };
    let bad = config("allowed_requests = [\"POST /web_api/%70ublish\"]\n");
    let out = check(&bad);
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && text.contains(":9:") && text.contains("%-escapes"),
        "{text}"
    );
    let no_user =
        config("[[upstream.policy]]\nusers = [\"no-such-user-here\"]\nallow = [\"* /**\"]\n");
    let out = check(&no_user);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such user"));
    let empty = config("allowed_requests = []\n");
    let out = check(&empty);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("warning") && text.contains("allows nothing"),
        "{text}"
    );
}
