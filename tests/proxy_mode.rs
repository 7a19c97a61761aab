//! HTTP-proxy mode through the built binary, with the clients people point at
//! it: curl -x, Python requests (proxies= and HTTP_PROXY) and urllib. Unknown
//! hosts are refused, CONNECT and origin-form requests are explained.

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::process::{Command, Output};

use common::*;

/// Two upstreams; `gaia` is also reachable as mgmt.example and 10.1.1.1:443.
fn config(gaia: SocketAddr, gaia_pin: &str, lab: SocketAddr, lab_pin: &str) -> String {
    format!(
        r#"[proxy]
listen = "127.0.0.1:0"

[[upstream]]
name = "gaia"
listen = "127.0.0.1:0"
address = "{gaia}"
server_name = "localhost"
fingerprints = ["{gaia_pin}"]
check_interval = "0s"
hosts = ["mgmt.example", "10.1.1.1:443"]

[[upstream]]
name = "lab"
listen = "127.0.0.1:0"
address = "{lab}"
server_name = "localhost"
fingerprints = ["{lab_pin}"]
check_interval = "0s"
"#
    )
}

struct Setup {
    gaia: TestServer,
    lab: TestServer,
    proxy: SocketAddr,
    _bin: Binary,
    _file: tempfile::NamedTempFile,
}

async fn setup() -> Setup {
    let (gaia, gaia_cert) = TestServer::start_self_signed().await;
    let (lab, lab_cert) = TestServer::start_self_signed().await;
    let file = temp_file(&config(
        gaia.addr,
        &gaia_cert.sha1_pin().to_string(),
        lab.addr,
        &lab_cert.sha1_pin().to_string(),
    ));
    let mut bin = Binary::spawn(&["run", "--config", file.path().to_str().unwrap()], &[]);
    let line = bin.wait_for(|v| {
        v["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("HTTP-proxy listener"))
    });
    let proxy = line["listen"].as_str().unwrap().parse().unwrap();
    Setup {
        gaia,
        lab,
        proxy,
        _bin: bin,
        _file: file,
    }
}

async fn run(mut cmd: Command) -> Output {
    tokio::task::spawn_blocking(move || cmd.output().expect("run the client"))
        .await
        .unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A Python that can `import requests`, with no proxy from the environment.
fn python() -> Command {
    let mut cmd = python_with(&["requests"]);
    // The tests choose the proxy explicitly; nothing from the environment.
    for var in [
        "http_proxy",
        "HTTP_PROXY",
        "https_proxy",
        "HTTPS_PROXY",
        "no_proxy",
        "NO_PROXY",
        "all_proxy",
        "ALL_PROXY",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

#[tokio::test]
async fn curl_x_reaches_the_upstream_selected_by_host_or_alias() {
    let s = setup().await;
    let proxy = format!("http://{}", s.proxy);
    for (url, upstream) in [
        ("http://mgmt.example/web_api/show-hosts?limit=2", "gaia"),
        ("http://gaia/web_api/show-hosts?limit=2", "gaia"),
        ("http://10.1.1.1:443/web_api/show-hosts?limit=2", "gaia"),
        ("http://LAB/web_api/show-hosts?limit=2", "lab"),
    ] {
        let mut cmd = Command::new("curl");
        cmd.args([
            "-sS",
            "--noproxy",
            "",
            "-x",
            &proxy,
            "-X",
            "POST",
            "-d",
            "{}",
            url,
        ]);
        let out = run(cmd).await;
        assert!(
            out.status.success(),
            "{url}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let echo: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
        assert_eq!(echo["path"], "/web_api/show-hosts", "{url}");
        assert_eq!(echo["query"], "limit=2", "{url}");
        assert_eq!(
            echo["headers"]["host"][0],
            format!(
                "localhost:{}",
                if upstream == "gaia" {
                    s.gaia.addr.port()
                } else {
                    s.lab.addr.port()
                }
            )
        );
        assert!(echo["headers"].get("proxy-connection").is_none(), "{echo}");
    }
    assert_eq!(s.gaia.requests(), 3);
    assert_eq!(s.lab.requests(), 1);
}

#[tokio::test]
async fn python_requests_and_urllib_work_through_the_proxy() {
    let s = setup().await;
    let proxy = format!("http://{}", s.proxy);
    let script = r#"
import json, os, sys, urllib.request
import requests
proxy = sys.argv[1]
url = "http://mgmt.example/web_api/login"
results = {}
r = requests.post(url, json={"user": "u"}, proxies={"http": proxy}, timeout=10)
results["requests_proxies"] = [r.status_code, r.json()["body"]]
os.environ["HTTP_PROXY"] = proxy
r = requests.post(url, json={"user": "env"}, timeout=10)
results["requests_env"] = [r.status_code, r.json()["body"]]
opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": proxy}))
with opener.open(urllib.request.Request(url, data=b'{"user": "urllib"}', method="POST"), timeout=10) as resp:
    results["urllib"] = [resp.status, json.loads(resp.read())["body"]]
print(json.dumps(results))
"#;
    let mut cmd = python();
    cmd.args(["-c", script, &proxy]);
    let out = run(cmd).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let results: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(
        results["requests_proxies"],
        serde_json::json!([200, "{\"user\": \"u\"}"])
    );
    assert_eq!(
        results["requests_env"],
        serde_json::json!([200, "{\"user\": \"env\"}"])
    );
    assert_eq!(
        results["urllib"],
        serde_json::json!([200, "{\"user\": \"urllib\"}"])
    );
    assert_eq!(s.gaia.requests(), 3);
}

#[tokio::test]
async fn unknown_hosts_connect_and_origin_form_are_refused_with_an_explanation() {
    let s = setup().await;
    let proxy = format!("http://{}", s.proxy);

    // Not configured, or configured only with another port: never forwarded anywhere.
    for url in [
        "http://example.org/",
        "http://10.1.1.1/",
        "http://mgmt.example.evil/",
    ] {
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "--noproxy", "", "-x", &proxy, "-D", "-", url]);
        let out = run(cmd).await;
        let text = stdout(&out);
        assert!(text.starts_with("HTTP/1.1 403"), "{url}: {text}");
        assert!(text.contains("x-pinproxy-error: unknown-host"), "{text}");
        assert!(text.contains("not an open proxy"), "{text}");
        assert!(
            text.contains("http://mgmt.example/") && text.contains("http://lab/"),
            "{text}"
        );
    }

    // https:// through a proxy means CONNECT; curl reports the 405.
    let mut cmd = Command::new("curl");
    cmd.args([
        "-sS",
        "--noproxy",
        "",
        "-x",
        &proxy,
        "https://mgmt.example/",
    ]);
    let out = run(cmd).await;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("405"),
        "{out:?}"
    );
    // The body says what to do instead.
    let mut tcp = std::net::TcpStream::connect(s.proxy).unwrap();
    tcp.write_all(b"CONNECT mgmt.example:443 HTTP/1.1\r\nHost: mgmt.example:443\r\n\r\n")
        .unwrap();
    let mut buf = vec![0; 4096];
    let n = tcp.read(&mut buf).unwrap();
    let answer = String::from_utf8_lossy(&buf[..n]);
    assert!(answer.starts_with("HTTP/1.1 405"), "{answer}");
    assert!(answer.contains("http:// URLs"), "{answer}");

    // A request meant for a dedicated listener.
    let a = get(&format!("http://{}/web_api/login", s.proxy)).await;
    assert_eq!(a.status, 400);
    assert_eq!(a.error_tag(), Some("not-a-proxy-request"));
    assert!(a.text().contains("http_proxy="), "{}", a.text());

    assert_eq!(s.gaia.requests() + s.lab.requests(), 0);
    assert_eq!(s.gaia.tls_accepted() + s.lab.tls_accepted(), 0);
}

/// A tool given an https:// URL and HTTPS_PROXY asks for a tunnel; all it
/// shows of the refusal is the status line, so the reason phrase says what to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_tunnel_says_what_to_do_in_its_status_line() {
    let s = setup().await;
    let mut cmd = python();
    cmd.env("HTTPS_PROXY", format!("http://{}", s.proxy)).args([
        "-c",
        "import requests\ntry:\n    requests.get('https://mgmt.example/web_api/show-hosts', timeout=10)\nexcept Exception as e:\n    print(e)\n",
    ]);
    let out = run(cmd).await;
    let said = stdout(&out);
    assert!(said.contains("405"), "{said}");
    assert!(said.contains("use http:// URLs with http_proxy"), "{said}");
    assert_eq!(s.gaia.tls_accepted() + s.lab.tls_accepted(), 0);
}
