#![cfg(unix)] // Unix users, modes, sockets and setpriv throughout; see deploy/windows-check.sh
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
        pinproxy_command()
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_is_audited_without_a_secret_and_the_file_survives_logrotate() {
    let (up, c) = TestServer::start_self_signed().await;
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let text = format!(
        "audit_log = \"{}\"\n{}",
        audit.display(),
        policy_config(&up, &c)
    );
    let config = dir.path().join("proxy.toml");
    std::fs::write(&config, text).unwrap();
    let mut bin = Binary::spawn(&["run", "--config", config.to_str().unwrap()], &[]);
    let base = format!("http://{}", bin.listening());
    let secrets = [
        "-H",
        "Authorization: Bearer SECRET-TOKEN-1",
        "-H",
        "X-chkp-sid: SECRET-SID-2",
        "-d",
        "{\"password\":\"SECRET-PASSWORD-3\"}",
    ];
    let shown = curl(
        &[
            &["-X", "POST"][..],
            &secrets,
            &[&format!("{base}/web_api/show-hosts?key=SECRET-QUERY-4")],
        ]
        .concat(),
    )
    .await;
    assert_eq!(shown.status, 200);
    let refused = curl(
        &[
            &["-X", "POST"][..],
            &secrets,
            &[&format!("{base}/web_api/publish")],
        ]
        .concat(),
    )
    .await;
    assert_eq!(refused.status, 403);

    let records: Vec<serde_json::Value> = std::fs::read_to_string(&audit)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 2, "{records:?}");
    let me = nix::unistd::getuid().as_raw();
    let name = nix::unistd::User::from_uid(nix::unistd::getuid())
        .unwrap()
        .unwrap()
        .name;
    let (first, second) = (&records[0], &records[1]);
    assert_eq!(
        (
            first["listener"].as_str(),
            first["uid"].as_u64(),
            first["user"].as_str()
        ),
        (Some("gaia"), Some(u64::from(me)), Some(name.as_str()))
    );
    assert_eq!(
        (
            first["method"].as_str(),
            first["path"].as_str(),
            first["command"].as_str()
        ),
        (
            Some("POST"),
            Some("/web_api/show-hosts"),
            Some("show-hosts")
        )
    );
    assert_eq!(
        (first["decision"].as_str(), first["status"].as_u64()),
        (Some("forwarded"), Some(200))
    );
    assert!(first["bytes"].as_u64().unwrap() > 0 && first["duration_ms"].as_f64().is_some());
    assert_eq!(
        (second["command"].as_str(), second["decision"].as_str()),
        (Some("publish"), Some("refused"))
    );
    assert_eq!(
        (second["reason"].as_str(), second["status"].as_u64()),
        (Some("request-not-allowed"), Some(403))
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&audit).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // logrotate moves the file away and sends SIGHUP: a new file is begun.
    let rotated = dir.path().join("audit.jsonl.1");
    std::fs::rename(&audit, &rotated).unwrap();
    bin.signal("HUP");
    let (bin, _) = on(bin, |b| {
        b.wait_for(|v| {
            v["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("config reloaded"))
        })
    })
    .await;
    assert_eq!(
        curl(&["-X", "POST", &format!("{base}/web_api/show-hosts")])
            .await
            .status,
        200
    );
    assert_eq!(std::fs::read_to_string(&audit).unwrap().lines().count(), 1);
    assert_eq!(
        std::fs::read_to_string(&rotated).unwrap().lines().count(),
        2
    );

    bin.signal("TERM");
    let (_, lines) = bin.finish();
    let log = lines.join("\n");
    assert!(log.contains("\"target\":\"pinproxy::audit\""), "{log}");
    let files =
        std::fs::read_to_string(&audit).unwrap() + &std::fs::read_to_string(&rotated).unwrap();
    for secret in [
        "SECRET-TOKEN-1",
        "SECRET-SID-2",
        "SECRET-PASSWORD-3",
        "SECRET-QUERY-4",
    ] {
        assert!(
            !files.contains(secret) && !log.contains(secret),
            "{secret} leaked"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_audit_record_is_an_error_and_a_metric() {
    let (up, c) = TestServer::start_self_signed().await;
    let text = format!(
        "audit_log = \"/dev/full\"\n{}[admin]\nlisten = \"127.0.0.1:0\"\n",
        policy_config(&up, &c)
    );
    let file = temp_file(&text);
    let bin = Binary::spawn(&["run", "--config", file.path().to_str().unwrap()], &[]);
    let (bin, (base, admin)) = on(bin, |b| (format!("http://{}", b.listening()), b.admin())).await;
    for _ in 0..2 {
        assert_eq!(
            curl(&["-X", "POST", &format!("{base}/web_api/show-hosts")])
                .await
                .status,
            200
        );
    }
    let (bin, error) = on(bin, |b| b.wait_for(|v| v["level"] == "ERROR")).await;
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("cannot write the audit record"),
        "{error}"
    );
    let metrics = get(&format!("http://{admin}/metrics")).await.text();
    assert!(
        metrics.contains("pinproxy_audit_write_failures_total 2"),
        "{metrics}"
    );
    bin.signal("TERM");
    let (_, lines) = bin.finish();
    let errors = lines
        .iter()
        .filter(|l| l.contains("cannot write the audit record"))
        .count();
    assert_eq!(errors, 1, "one ERROR per outage, not per record");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_credentials_reach_the_server_and_nothing_else() {
    let (up, c) = TestServer::start_self_signed().await;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "Bearer INJECTED-SECRET-ONE\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    let me = nix::unistd::getuid().as_raw();
    let text = config_text(
        up.addr,
        &c.sha1_pin(),
        &format!(
            "allowed_users = [{me}]\ninject_headers = {{ Authorization = \"file:token\", X-PAN-KEY = \"env:PINPROXY_TEST_KEY\" }}\n[admin]\nlisten = \"127.0.0.1:0\"\n"
        ),
    );
    let config = dir.path().join("proxy.toml");
    std::fs::write(&config, &text).unwrap();
    let env = [
        ("PINPROXY_TEST_KEY", "INJECTED-SECRET-TWO"),
        ("RUST_LOG", "trace"),
    ];
    let bin = Binary::spawn(&["run", "--config", config.to_str().unwrap()], &env);
    let (bin, (base, admin)) = on(bin, |b| (format!("http://{}", b.listening()), b.admin())).await;
    let got = curl(&[
        "-H",
        "Authorization: Basic the-tool-s-own",
        &format!("{base}/web_api/show-hosts"),
    ])
    .await;
    assert_eq!(got.status, 200, "{}", got.body);
    let echo: serde_json::Value = serde_json::from_str(&got.body).unwrap();
    assert_eq!(
        echo["headers"]["authorization"],
        serde_json::json!(["Bearer INJECTED-SECRET-ONE"])
    );
    assert_eq!(
        echo["headers"]["x-pan-key"],
        serde_json::json!(["INJECTED-SECRET-TWO"])
    );

    // A new secret in the file: read again on reload.
    std::fs::write(&token, "Bearer INJECTED-SECRET-THREE\n").unwrap();
    bin.signal("HUP");
    let (bin, _) = on(bin, |b| {
        b.wait_for(|v| {
            v["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("config reloaded"))
        })
    })
    .await;
    let got = curl(&[&format!("{base}/web_api/show-hosts")]).await;
    let echo: serde_json::Value = serde_json::from_str(&got.body).unwrap();
    assert_eq!(
        echo["headers"]["authorization"],
        serde_json::json!(["Bearer INJECTED-SECRET-THREE"])
    );

    let status = get(&format!("http://{admin}/status")).await.text();
    let page = get(&format!("http://{admin}/")).await.text();
    let metrics = get(&format!("http://{admin}/metrics")).await.text();
    let checked = pinproxy_command()
        .args(["check", "--json", "--config", config.to_str().unwrap()])
        .envs(env)
        .output()
        .unwrap();
    bin.signal("TERM");
    let (_, lines) = bin.finish();
    let everything = [
        lines.join("\n"),
        status,
        page,
        metrics,
        String::from_utf8_lossy(&checked.stdout).into(),
    ]
    .join("\n");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("\"level\":\"DEBUG\"") || l.contains("\"level\":\"TRACE\"")),
        "trace logging is on: {lines:?}"
    );
    for secret in [
        "INJECTED-SECRET-ONE",
        "INJECTED-SECRET-TWO",
        "INJECTED-SECRET-THREE",
    ] {
        assert!(!everything.contains(secret), "{secret} leaked");
    }
}

#[test]
fn credentials_on_a_listener_any_local_process_can_reach_are_refused() {
    let file = temp_file(&config_text(
        "192.0.2.10:443".parse().unwrap(),
        &cert().sha1_pin(),
        "inject_headers = { X-PAN-KEY = \"env:HOME\" }\n",
    ));
    let out = pinproxy_command()
        .args(["check", "--config", file.path().to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains(":9:") && text.contains("allowed_users") && text.contains("unix:/path"),
        "{text}"
    );
    let home = std::env::var("HOME").unwrap_or_default();
    assert!(
        home.is_empty() || !text.contains(&home),
        "the value is not quoted: {text}"
    );
}

/// A CA and the client certificates it issues, written as PEM files in `dir`.
struct Pki {
    ca: rcgen::Certificate,
    ca_key: rcgen::KeyPair,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let ca = params.self_signed(&ca_key).unwrap();
        Pki { ca, ca_key }
    }

    /// A client certificate with CN `cn` and DNS SAN `san`: (cert path, key path).
    fn client(&self, dir: &std::path::Path, cn: &str, san: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec![san.to_string()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &self.ca, &self.ca_key).unwrap();
        let (c, k) = (dir.join(format!("{cn}.pem")), dir.join(format!("{cn}.key")));
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c.display().to_string(), k.display().to_string())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_clients_prove_who_they_are_with_a_certificate() {
    let (up, c) = TestServer::start_self_signed().await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pki = Pki::new("team CA");
    std::fs::write(d.join("ca.pem"), pki.ca.pem()).unwrap();
    // The listener's own certificate, which the clients trust directly.
    let server = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    std::fs::write(d.join("server.pem"), server.cert.pem()).unwrap();
    std::fs::write(d.join("server.key"), server.key_pair.serialize_pem()).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(d.join("server.key"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let alice = pki.client(d, "alice", "alice.example");
    let bob = pki.client(d, "bob", "bob.example");
    let carol = pki.client(d, "carol", "carol.example");
    let mallory = Pki::new("another CA").client(d, "mallory", "alice.example");
    let text = config_text(up.addr, &c.sha1_pin(), "")
        .replace("listen = \"127.0.0.1:0\"", "listen = \"0.0.0.0:0\"")
        + "tls_certificate = \"server.pem\"\ntls_key = \"server.key\"\nclient_ca = \"ca.pem\"\n\
           allowed_clients = [\"alice\", \"bob.example\"]\nallowed_requests = [\"GET /read/**\"]\n\
           [[upstream.policy]]\nclients = [\"bob.example\"]\nallow = [\"* /**\"]\n";
    let text = format!("audit_log = \"audit.jsonl\"\n{text}");
    let config = d.join("proxy.toml");
    std::fs::write(&config, text).unwrap();
    let mut bin = Binary::spawn(&["run", "--config", config.to_str().unwrap()], &[]);
    let port = bin.listening().port();
    bin.discard_output();
    let base = format!("https://localhost:{port}");
    let ca = d.join("server.pem").display().to_string();
    let with = |who: &(String, String), method: &str, path: &str| {
        let (cert, key, ca, url) = (
            who.0.clone(),
            who.1.clone(),
            ca.clone(),
            format!("{base}{path}"),
        );
        let method = method.to_string();
        async move {
            curl(&[
                "--cacert", &ca, "--cert", &cert, "--key", &key, "-X", &method, &url,
            ])
            .await
        }
    };

    assert_eq!(with(&alice, "GET", "/read/hosts").await.status, 200);
    let refused = with(&alice, "POST", "/write").await;
    assert_eq!(
        (refused.status, refused.header("x-pinproxy-error")),
        (403, Some("request-not-allowed"))
    );
    // bob's certificate is named by its SAN in allowed_clients and in a policy table.
    assert_eq!(with(&bob, "POST", "/write").await.status, 200);
    let carol_got = with(&carol, "GET", "/read/hosts").await;
    assert_eq!(
        (carol_got.status, carol_got.header("x-pinproxy-error")),
        (403, Some("client-not-allowed"))
    );
    assert!(carol_got.body.contains("carol"), "{}", carol_got.body);

    // No certificate, or one from another CA (with alice's name in it): no TLS session at all.
    for args in [
        vec![],
        vec!["--cert", mallory.0.as_str(), "--key", mallory.1.as_str()],
    ] {
        let out = tokio::process::Command::new("curl")
            .args(["-s", "--max-time", "10", "--cacert", &ca])
            .args(&args)
            .arg(format!("{base}/read/hosts"))
            .output()
            .await
            .unwrap();
        assert!(
            !out.status.success() && out.stdout.is_empty(),
            "{args:?}: {out:?}"
        );
    }
    // Python requests with a client certificate, as automation would.
    let script = format!(
        "import requests\nr = requests.get('{base}/read/x', cert=('{}', '{}'), verify='{ca}')\nprint(r.status_code)\n",
        alice.0, alice.1
    );
    let out = tokio::task::spawn_blocking(move || {
        python_with(&["requests"])
            .args(["-c", &script])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "200\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let audit = std::fs::read_to_string(d.join("audit.jsonl")).unwrap();
    assert!(
        audit.contains("\"client_certificate\":[\"alice\",\"alice.example\"]"),
        "{audit}"
    );
    assert!(
        audit.contains("\"client_certificate\":[\"bob\",\"bob.example\"]"),
        "{audit}"
    );
    bin.signal("TERM");
    let _ = bin.finish();
}
