//! Upstreams behind an HTTP CONNECT egress proxy, through the binary: the
//! tunnel carries pinproxy's own pinned handshake, so a proxy that answers
//! with its own certificate gets nothing; a refusal or an unreachable proxy is a
//! 502 that says which; credentials reach the proxy and never the logs;
//! `HTTPS_PROXY` counts only with `egress_proxy = "env"`.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the test proxy does with a CONNECT.
#[derive(Clone)]
enum Behaviour {
    /// Opens the tunnel; with `Some(value)`, only for that Proxy-Authorization.
    Forward(Option<String>),
    /// Answers this status line.
    Refuse(&'static str),
    /// Answers 200, then plays TLS server itself with its own certificate.
    Intercept(Arc<rustls::ServerConfig>),
}

/// A CONNECT proxy on loopback that records each request head.
struct TestProxy {
    addr: SocketAddr,
    heads: Arc<Mutex<Vec<String>>>,
    /// Application bytes an intercepting proxy decrypted.
    intercepted: Arc<AtomicU64>,
}

impl TestProxy {
    async fn start(behaviour: Behaviour) -> TestProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let heads = Arc::new(Mutex::new(Vec::new()));
        let intercepted = Arc::new(AtomicU64::new(0));
        let (seen, decrypted) = (heads.clone(), intercepted.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let (behaviour, seen, decrypted) =
                    (behaviour.clone(), seen.clone(), decrypted.clone());
                tokio::spawn(async move {
                    let Some(head) = read_head(&mut client).await else {
                        return;
                    };
                    let head = String::from_utf8_lossy(&head).to_string();
                    seen.lock().unwrap().push(head.clone());
                    let target = head.split_whitespace().nth(1).unwrap_or("").to_string();
                    match behaviour {
                        Behaviour::Forward(auth) => {
                            let allowed = auth.is_none_or(|value| {
                                head.lines().any(|l| {
                                    l.to_ascii_lowercase().starts_with("proxy-authorization:")
                                        && l.split_once(':').is_some_and(|(_, v)| v.trim() == value)
                                })
                            });
                            if !allowed {
                                let _ = client
                                    .write_all(b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"test\"\r\nContent-Length: 0\r\n\r\n")
                                    .await;
                                return;
                            }
                            let Ok(mut server) = TcpStream::connect(&target).await else {
                                let _ = client
                                    .write_all(
                                        b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n",
                                    )
                                    .await;
                                return;
                            };
                            let _ = client
                                .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                                .await;
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                        }
                        Behaviour::Refuse(status) => {
                            let _ = client
                                .write_all(
                                    format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n")
                                        .as_bytes(),
                                )
                                .await;
                        }
                        Behaviour::Intercept(config) => {
                            let _ = client
                                .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                                .await;
                            let acceptor = tokio_rustls::TlsAcceptor::from(config);
                            if let Ok(mut tls) = acceptor.accept(client).await {
                                let mut buf = [0u8; 4096];
                                while let Ok(n) = tls.read(&mut buf).await {
                                    if n == 0 {
                                        break;
                                    }
                                    decrypted.fetch_add(n as u64, Ordering::SeqCst);
                                }
                            }
                        }
                    }
                });
            }
        });
        TestProxy {
            addr,
            heads,
            intercepted,
        }
    }

    fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }
}

/// Runs the binary with `config` (and `env`), sends one GET and returns the
/// answer with every log line the binary wrote.
async fn through_binary(config: &str, env: &[(&str, &str)]) -> (Answer, String) {
    let file = temp_file(config);
    let path = file.path().to_str().unwrap().to_string();
    let mut bin = Binary::spawn(&["run", "--config", &path], env);
    let addr = bin.listening();
    let answer = get(&format!("http://{addr}/x")).await;
    bin.signal("TERM");
    let (_, lines) = bin.finish();
    (answer, lines.join("\n"))
}

fn egress(url: &str) -> String {
    format!("egress_proxy = \"{url}\"\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_behind_a_connect_proxy_is_reached_through_a_pinned_tunnel() {
    let (up, c) = TestServer::start_self_signed().await;
    let proxy = TestProxy::start(Behaviour::Forward(None)).await;
    let config = config_text(
        up.addr,
        &c.sha1_pin(),
        &egress(&format!("http://{}", proxy.addr)),
    );
    let (answer, _) = through_binary(&config, &[]).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let heads = proxy.heads();
    assert_eq!(heads.len(), 1, "{heads:?}");
    assert!(
        heads[0].starts_with(&format!("CONNECT {} HTTP/1.1\r\n", up.addr)),
        "{heads:?}"
    );
    assert_eq!(up.requests(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_credentials_reach_the_proxy_and_never_the_logs() {
    let (up, c) = TestServer::start_self_signed().await;
    // "alice:s@cret", as the proxy expects it.
    let proxy = TestProxy::start(Behaviour::Forward(Some("Basic YWxpY2U6c0BjcmV0".into()))).await;
    let url = format!("http://alice:s%40cret@{}", proxy.addr);
    let config = config_text(up.addr, &c.sha1_pin(), &egress(&url));
    let (answer, logs) = through_binary(&config, &[("RUST_LOG", "debug")]).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    for secret in ["s@cret", "s%40cret", "YWxpY2U6c0BjcmV0"] {
        assert!(!logs.contains(secret), "{secret} logged:\n{logs}");
    }

    // The wrong password: the proxy's 407, with the fix, and still no secret shown.
    let url = format!("http://alice:wrong@{}", proxy.addr);
    let config = config_text(up.addr, &c.sha1_pin(), &egress(&url));
    let (answer, logs) = through_binary(&config, &[("RUST_LOG", "debug")]).await;
    assert_eq!(
        (answer.status.as_u16(), answer.error_tag()),
        (502, Some("connect-failed"))
    );
    let text = answer.text();
    assert!(text.contains("407 Proxy Authentication Required"), "{text}");
    assert!(text.contains("wants credentials"), "{text}");
    assert!(
        !text.contains("wrong") && !logs.contains("wrong"),
        "{text}\n{logs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusing_or_unreachable_proxy_is_a_502_that_says_which() {
    let (up, c) = TestServer::start_self_signed().await;
    let proxy = TestProxy::start(Behaviour::Refuse("403 Forbidden")).await;
    let config = config_text(
        up.addr,
        &c.sha1_pin(),
        &egress(&format!("http://{}", proxy.addr)),
    );
    let (answer, _) = through_binary(&config, &[]).await;
    assert_eq!(
        (answer.status.as_u16(), answer.error_tag()),
        (502, Some("connect-failed"))
    );
    assert!(
        answer.text().contains("refused CONNECT")
            && answer.text().contains("\"HTTP/1.1 403 Forbidden\""),
        "{}",
        answer.text()
    );

    let vacant = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    let config = config_text(up.addr, &c.sha1_pin(), &egress(&format!("http://{vacant}")));
    let (answer, _) = through_binary(&config, &[]).await;
    assert_eq!(
        (answer.status.as_u16(), answer.error_tag()),
        (502, Some("connect-failed"))
    );
    assert!(
        answer.text().contains(&format!("egress proxy {vacant}")),
        "{}",
        answer.text()
    );
    assert_eq!(up.requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_that_intercepts_tls_gets_a_pin_mismatch_and_not_a_byte() {
    let (up, c) = TestServer::start_self_signed().await;
    let own = cert();
    let proxy = TestProxy::start(Behaviour::Intercept(server_config(
        vec![own.der.clone()],
        own.key(),
        false,
    )))
    .await;
    let config = config_text(
        up.addr,
        &c.sha1_pin(),
        &egress(&format!("http://{}", proxy.addr)),
    );
    let (answer, _) = through_binary(&config, &[]).await;
    assert_eq!(
        (answer.status.as_u16(), answer.error_tag()),
        (502, Some("fingerprint-mismatch")),
        "{}",
        answer.text()
    );
    assert_eq!(
        proxy.intercepted.load(Ordering::SeqCst),
        0,
        "not a request byte"
    );
    assert_eq!(up.requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_proxy_counts_only_when_the_config_says_env() {
    let (up, c) = TestServer::start_self_signed().await;
    let proxy = TestProxy::start(Behaviour::Refuse("403 Forbidden")).await;
    let env = format!("http://{}", proxy.addr);
    let env = [("HTTPS_PROXY", env.as_str())];
    let (answer, _) = through_binary(&config_text(up.addr, &c.sha1_pin(), ""), &env).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert!(proxy.heads().is_empty(), "the environment was not asked");

    let (answer, _) =
        through_binary(&config_text(up.addr, &c.sha1_pin(), &egress("env")), &env).await;
    assert_eq!(
        answer.error_tag(),
        Some("connect-failed"),
        "{}",
        answer.text()
    );
    assert_eq!(proxy.heads().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fingerprint_and_check_connect_go_through_the_proxy() {
    let (up, c) = TestServer::start_self_signed().await;
    let proxy = TestProxy::start(Behaviour::Forward(None)).await;
    let url = format!("http://{}", proxy.addr);
    let out = pinproxy_command()
        .args(["fingerprint", &up.addr.to_string(), "--egress-proxy", &url])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(&c.fingerprints().sha1_line()), "{stdout}");
    assert_eq!(proxy.heads().len(), 1);
    // Kept off the command line (where `ps` shows a password): from the
    // environment, or from a file.
    let url_file = temp_file(&format!("{url}\n"));
    let from_file = format!("file:{}", url_file.path().display());
    for (args, env) in [
        (vec![], vec![("PINPROXY_EGRESS_PROXY", url.as_str())]),
        (vec!["--egress-proxy", from_file.as_str()], vec![]),
    ] {
        let out = pinproxy_command()
            .args(["fingerprint", &up.addr.to_string()])
            .args(&args)
            .envs(env)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains(&c.fingerprints().sha1_line()), "{stdout}");
    }
    assert_eq!(proxy.heads().len(), 3, "both went through the proxy");

    let file = temp_file(&config_text(up.addr, &c.sha1_pin(), &egress(&url)));
    let out = check_connect(file.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(proxy.heads().len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_checks_go_through_the_proxy_and_send_nothing() {
    let (up, c) = TestServer::start_self_signed().await;
    let proxy = TestProxy::start(Behaviour::Forward(None)).await;
    let extra = format!(
        "{}check_interval = \"1s\"\n",
        egress(&format!("http://{}", proxy.addr))
    );
    let file = temp_file(&config_text(up.addr, &c.sha1_pin(), &extra));
    let path = file.path().to_str().unwrap().to_string();
    let bin = Binary::spawn(
        &["run", "--config", &path],
        &[("RUST_LOG", "pinproxy=debug")],
    );
    let (bin, line) = on(bin, |b| b.wait_for(|v| v["message"] == "active check")).await;
    assert_eq!(line["result"], "matches", "{line}");
    let heads = proxy.heads();
    assert_eq!(heads.len(), 1, "{heads:?}");
    assert!(
        heads[0].starts_with(&format!("CONNECT {} ", up.addr)),
        "{heads:?}"
    );
    assert_eq!(up.app_bytes(), 0, "a check sends no request byte");
    bin.signal("TERM");
    let _ = bin.finish();
}

#[test]
fn egress_proxy_values_that_cannot_work_are_config_errors() {
    let target = "192.0.2.10:443".parse().unwrap();
    let pin = cert().sha1_pin();
    for (value, says) in [
        (
            "https://proxy.internal:3128",
            "https:// proxies are not supported",
        ),
        ("proxy.internal:3128", "is not a URL"),
        ("http://proxy.internal", "needs HOST:PORT"),
        ("http://u:secret@proxy.internal", "needs HOST:PORT"),
        // No scheme: still a password, never quoted.
        ("alice:secret@proxy.internal:3128", "is not a URL"),
        ("alice:secret@proxy.internal", "is not a URL"),
        ("http://proxy.internal:3128/path", "has a path"),
    ] {
        let file = temp_file(&config_text(target, &pin, &egress(value)));
        let out = pinproxy_command()
            .args(["check", "--config", file.path().to_str().unwrap()])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{value}");
        assert!(
            text.contains(says) && text.contains(":9:"),
            "{value}: {text}"
        );
        assert!(!text.contains("secret"), "{value}: {text}");
    }
    // egress_proxy = "env" quotes HTTPS_PROXY's problems, never its password.
    let file = temp_file(&config_text(target, &pin, &egress("env")));
    let out = pinproxy_command()
        .args(["check", "--config", file.path().to_str().unwrap()])
        .env("HTTPS_PROXY", "bob:pw-secret@proxy:8080")
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && text.contains("HTTPS_PROXY"),
        "{text}"
    );
    assert!(!text.contains("secret") && !text.contains("bob"), "{text}");
}
