//! The proxy in-process against real TLS upstreams: what is trusted, what is
//! forwarded, and how failures are answered.

mod common;

use std::time::Duration;

use common::*;
use http::Request;
use pinproxy::tls::pin::CertPin;

fn words_line(c: &TestCert) -> String {
    c.fingerprints().words_line()
}

#[tokio::test]
async fn every_pin_format_accepts_the_right_certificate() {
    let (up, c) = TestServer::start_self_signed().await;
    let fp = c.fingerprints();
    let sha1_hex: String = fp.sha1.iter().map(|b| format!("{b:02x}")).collect();
    let sha256_hex: String = fp.sha256.iter().map(|b| format!("{b:02X}")).collect();
    let forms = [
        fp.sha1_line(),             // Gaia's SHA1 line
        sha1_hex.clone(),           // bare, lower case
        format!("sha1:{sha1_hex}"), // prefixed
        words_line(&c),             // Gaia's words line
        words_line(&c)
            .replace("Using English words: ", "")
            .to_lowercase(), // bare words
        format!("Fingerprint:\n{}\n{}\n", fp.sha1_line(), words_line(&c)), // whole paste
        sha256_hex.clone(),         // SHA-256
        format!("sha256:{sha256_hex}"),
        fp.spki_pin().unwrap(), // curl's SPKI pin
    ];
    for form in forms {
        let pin = CertPin::parse(&form).unwrap_or_else(|e| panic!("{form}: {e}"));
        let proxy = RunningProxy::start(upstream_config(up.addr, vec![pin])).await;
        let a = get(&proxy.url("/hello")).await;
        assert_eq!(a.status, 200, "{form}: {}", a.text());
        assert_eq!(a.json()["path"], "/hello");
        proxy.stop().await;
    }
}

#[tokio::test]
async fn a_wrong_pin_is_refused_before_any_request_byte_is_sent() {
    let (up, c) = TestServer::start_self_signed().await;
    let other = cert();
    let proxy = RunningProxy::start(upstream_config(up.addr, vec![other.sha1_pin()])).await;
    let req = Request::post(proxy.url("/web_api/login"))
        .body(full(r#"{"user":"admin","password":"secret"}"#))
        .unwrap();
    let a = send(&client(), req).await;
    assert_eq!(a.status, 502);
    assert_eq!(a.error_tag(), Some("fingerprint-mismatch"));
    // The body lets the operator compare what was presented with what is configured.
    let body = a.text();
    assert!(body.contains(&c.fingerprints().sha1_line()), "{body}");
    assert!(body.contains(&c.fingerprints().sha256_line()), "{body}");
    assert!(body.contains(&other.fingerprints().sha1_line()), "{body}");
    assert!(up.tls_accepted() <= 1);
    assert_eq!(
        up.app_bytes(),
        0,
        "request bytes reached a server that failed the pin"
    );
    assert_eq!(up.requests(), 0);
}

#[tokio::test]
async fn the_pinned_certificate_without_its_private_key_is_refused() {
    // The server shows the genuine, pinned certificate but signs the handshake with
    // another key, as anyone who copied the (public) certificate could.
    let genuine = cert();
    let attacker = cert();
    // TLS 1.3 signs the transcript (CertificateVerify); TLS 1.2 signs the key exchange.
    for tls12_only in [false, true] {
        let up = TestServer::start(server_config(
            vec![genuine.der.clone()],
            attacker.key(),
            tls12_only,
        ))
        .await;
        let proxy = RunningProxy::start(upstream_config(up.addr, vec![genuine.sha1_pin()])).await;
        let a = get(&proxy.url("/")).await;
        assert_eq!(a.status, 502, "tls12_only={tls12_only}: {}", a.text());
        assert_eq!(a.error_tag(), Some("handshake-failed"));
        assert_eq!(up.app_bytes(), 0);
    }
}

#[tokio::test]
async fn the_pinned_certificate_sent_as_an_intermediate_is_refused() {
    let pinned = cert();
    let own = cert();
    let up = TestServer::start(server_config(
        vec![own.der.clone(), pinned.der.clone()],
        own.key(),
        false,
    ))
    .await;
    let proxy = RunningProxy::start(upstream_config(up.addr, vec![pinned.sha1_pin()])).await;
    let a = get(&proxy.url("/")).await;
    assert_eq!(a.status, 502);
    assert_eq!(a.error_tag(), Some("fingerprint-mismatch"));
    assert_eq!(up.app_bytes(), 0);
}

#[tokio::test]
async fn an_expired_pinned_certificate_is_accepted() {
    let c = expired_cert();
    let up = TestServer::start(server_config(vec![c.der.clone()], c.key(), false)).await;
    let proxy = RunningProxy::start(upstream_config(up.addr, vec![c.sha1_pin()])).await;
    let a = get(&proxy.url("/")).await;
    assert_eq!(a.status, 200, "{}", a.text());
}

#[tokio::test]
async fn a_tls12_only_upstream_works() {
    let c = cert();
    let up = TestServer::start(server_config(vec![c.der.clone()], c.key(), true)).await;
    let proxy = RunningProxy::start(upstream_config(up.addr, vec![c.sha1_pin()])).await;
    let a = get(&proxy.url("/")).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(
        *up.stats.last_version.lock().unwrap(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
}

#[tokio::test]
async fn keep_alive_requests_share_one_upstream_handshake() {
    let (up, c) = TestServer::start_self_signed().await;
    let proxy = RunningProxy::start(upstream_config(up.addr, vec![c.sha1_pin()])).await;
    let client = client();
    for i in 0..25 {
        let req = Request::get(proxy.url(&format!("/n/{i}")))
            .body(empty())
            .unwrap();
        let a = send(&client, req).await;
        assert_eq!(a.status, 200);
        assert_eq!(a.json()["path"], format!("/n/{i}"));
    }
    assert_eq!(up.tls_accepted(), 1);
    assert_eq!(up.requests(), 25);
}

/// Every worker accepts on a socket of its own (Linux): a connection the kernel
/// gives to any of them is served, and the port is still this proxy's alone.
#[tokio::test]
async fn new_connections_are_served_on_every_worker_and_a_second_proxy_cannot_join_the_port() {
    let (up, c) = TestServer::start_self_signed().await;
    let cfg = upstream_config(up.addr, vec![c.sha1_pin()]);
    let proxy = RunningProxy::start(cfg.clone()).await;
    // A fresh connection each: all of them on one of the workers' sockets
    // would be a 1 in 2^31 chance with two.
    for i in 0..32 {
        let a = tokio::time::timeout(Duration::from_secs(5), get(&proxy.url("/")))
            .await
            .unwrap_or_else(|_| panic!("connection {i} was never accepted"));
        assert_eq!(a.status, 200, "{}", a.text());
    }
    // A second pinproxy started on the same port by mistake.
    let mut twin = cfg;
    twin.listen = proxy.addr.into();
    let err = pinproxy::server::Proxy::bind(&config_of(vec![twin]))
        .await
        .err()
        .expect("the port is taken");
    assert!(err.to_string().contains("already listens there"), "{err}");
    assert_eq!(get(&proxy.url("/")).await.status, 200);
    proxy.stop().await;
}

#[tokio::test]
async fn a_pooled_connection_the_upstream_closed_is_replaced() {
    let (up, c) = TestServer::start_self_signed().await;
    let proxy = RunningProxy::start(upstream_config(up.addr, vec![c.sha1_pin()])).await;
    let client = client();
    for round in 1..=3 {
        let a = send(&client, Request::get(proxy.url("/")).body(empty()).unwrap()).await;
        assert_eq!(a.status, 200, "round {round}: {}", a.text());
        let a = send(
            &client,
            Request::post(proxy.url("/p")).body(full("x")).unwrap(),
        )
        .await;
        assert_eq!(a.status, 200, "round {round}: {}", a.text());
        assert_eq!(up.tls_accepted(), round);
        up.close_idle_connections().await;
    }
}

#[tokio::test]
async fn hop_by_hop_headers_are_removed_both_ways_and_host_is_rewritten() {
    let (up, c) = TestServer::start_self_signed().await;
    let proxy = RunningProxy::start(upstream_config(up.addr, vec![c.sha1_pin()])).await;
    let req = Request::get(proxy.url("/echo?q=1"))
        .header("host", "localhost:1")
        .header("connection", "x-private, keep-alive")
        .header("x-private", "1")
        .header("keep-alive", "timeout=5")
        .header("proxy-connection", "keep-alive")
        .header("proxy-authorization", "Basic Zm9vOmJhcg==")
        .header("te", "trailers")
        .header("upgrade", "websocket")
        .header("x-chkp-sid", "kept-end-to-end")
        .body(empty())
        .unwrap();
    let a = send(&client(), req).await;
    assert_eq!(a.status, 200);
    let echo = a.json();
    let headers = echo["headers"].as_object().unwrap();
    for gone in [
        "connection",
        "x-private",
        "keep-alive",
        "proxy-connection",
        "proxy-authorization",
        "te",
        "upgrade",
        "transfer-encoding",
    ] {
        assert!(
            !headers.contains_key(gone),
            "{gone} reached the upstream: {echo}"
        );
    }
    assert_eq!(
        echo["headers"]["host"][0],
        format!("localhost:{}", up.addr.port())
    );
    assert_eq!(echo["headers"]["x-chkp-sid"][0], "kept-end-to-end");
    assert_eq!(echo["query"], "q=1");

    let a = get(&proxy.url("/hop")).await;
    assert_eq!(a.status, 200);
    for gone in ["x-resp-hop", "keep-alive", "proxy-authenticate"] {
        assert!(a.headers.get(gone).is_none(), "{gone} reached the client");
    }
    assert_eq!(a.headers["x-resp-end"], "1");
}

#[tokio::test]
async fn head_204_304_chunked_and_sized_bodies_pass_through() {
    let (up, c) = TestServer::start_self_signed().await;
    let proxy = RunningProxy::start(upstream_config(up.addr, vec![c.sha1_pin()])).await;
    let client = client();
    // All on one keep-alive client connection: a framing mistake would desync the next answer.
    let a = send(
        &client,
        Request::head(proxy.url("/bytes/5000"))
            .body(empty())
            .unwrap(),
    )
    .await;
    assert_eq!(a.status, 200);
    assert_eq!(a.headers["content-length"], "5000");
    assert!(a.body.is_empty());
    let a = send(
        &client,
        Request::get(proxy.url("/status/204"))
            .body(empty())
            .unwrap(),
    )
    .await;
    assert_eq!(a.status, 204);
    assert!(a.body.is_empty());
    let a = send(
        &client,
        Request::get(proxy.url("/status/304"))
            .body(empty())
            .unwrap(),
    )
    .await;
    assert_eq!(a.status, 304);
    assert_eq!(a.headers["etag"], "\"v1\"");
    let a = send(
        &client,
        Request::get(proxy.url("/bytes/70000"))
            .body(empty())
            .unwrap(),
    )
    .await;
    assert_eq!(a.headers["content-length"], "70000");
    assert_eq!(a.body.len(), 70000);
    let a = send(
        &client,
        Request::get(proxy.url("/bytes/70001?chunked"))
            .body(empty())
            .unwrap(),
    )
    .await;
    assert_eq!(a.headers["transfer-encoding"], "chunked");
    assert_eq!(a.body.len(), 70001);
    // A chunked upload (no Content-Length) arrives whole.
    let req = Request::post(proxy.url("/upload"))
        .body(http_body_util::BodyExt::boxed(Zeros::new(300_000, false)))
        .unwrap();
    let a = send(&client, req).await;
    assert_eq!(a.text(), "300000");
    let a = send(
        &client,
        Request::post(proxy.url("/echo")).body(full("{}")).unwrap(),
    )
    .await;
    assert_eq!(a.json()["headers"]["content-length"][0], "2");
    assert_eq!(a.json()["body"], "{}");
}

#[tokio::test]
async fn connect_failure_is_a_502_that_says_so() {
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let proxy = RunningProxy::start(upstream_config(closed, vec![cert().sha1_pin()])).await;
    let a = get(&proxy.url("/")).await;
    assert_eq!(a.status, 502);
    assert_eq!(a.error_tag(), Some("connect-failed"));
    assert!(a.text().contains(&closed.to_string()), "{}", a.text());
}

#[tokio::test]
async fn a_server_that_does_not_speak_tls_is_a_handshake_failure() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            use tokio::io::AsyncWriteExt;
            let _ = s
                .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                .await;
        }
    });
    let proxy = RunningProxy::start(upstream_config(addr, vec![cert().sha1_pin()])).await;
    let a = get(&proxy.url("/")).await;
    assert_eq!(a.status, 502);
    assert_eq!(a.error_tag(), Some("handshake-failed"));
    assert!(a.text().contains("serving TLS"), "{}", a.text());
}

#[tokio::test]
async fn a_silent_server_is_a_504_timeout_not_a_hang() {
    // Accepts TCP and never answers the TLS ClientHello.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (held_tx, mut held_rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let _ = held_tx.send(s);
        }
    });
    let mut cfg = upstream_config(addr, vec![cert().sha1_pin()]);
    cfg.handshake_timeout = Duration::from_millis(300);
    let proxy = RunningProxy::start(cfg).await;
    let a = get(&proxy.url("/")).await;
    assert_eq!(a.status, 504);
    assert_eq!(a.error_tag(), Some("timeout"));
    assert!(a.text().contains("TLS handshake"), "{}", a.text());
    assert!(held_rx.recv().await.is_some());

    // A TLS server that accepts the request and never responds.
    let (up, c) = TestServer::start_self_signed().await;
    let mut cfg = upstream_config(up.addr, vec![c.sha1_pin()]);
    cfg.response_timeout = Duration::from_millis(300);
    let proxy = RunningProxy::start(cfg).await;
    let a = get(&proxy.url("/hang")).await;
    assert_eq!(a.status, 504);
    assert_eq!(a.error_tag(), Some("timeout"));
    assert!(
        a.text().contains("waiting for the response"),
        "{}",
        a.text()
    );

    // The same on a pooled connection, which keeps the deadline with a timer
    // of its own: one client connection, so both requests are on one worker.
    let (up, c) = TestServer::start_self_signed().await;
    let mut cfg = upstream_config(up.addr, vec![c.sha1_pin()]);
    cfg.response_timeout = Duration::from_millis(300);
    let proxy = RunningProxy::start(cfg).await;
    let mut kept = KeptConnection::open(proxy.addr).await;
    for round in 0..2 {
        let answer = kept.get("/echo").await.await.unwrap();
        assert_eq!(answer.status(), 200);
        http_body_util::BodyExt::collect(answer.into_body())
            .await
            .unwrap();
        let hung = tokio::time::timeout(Duration::from_secs(10), kept.get("/hang").await)
            .await
            .expect("a pooled connection's request ends at response_timeout")
            .unwrap();
        assert_eq!(hung.status(), 504, "round {round}");
        let tag = hung.headers().get("x-pinproxy-error").cloned();
        assert_eq!(tag.as_ref().and_then(|t| t.to_str().ok()), Some("timeout"));
        http_body_util::BodyExt::collect(hung.into_body())
            .await
            .unwrap();
    }
    // Each /hang went on the connection its /echo had left idle, and that
    // connection closed with it.
    assert_eq!(up.tls_accepted(), 2);
}

#[tokio::test]
async fn malformed_client_http_gets_400_and_connect_gets_405() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (up, c) = TestServer::start_self_signed().await;
    let proxy = RunningProxy::start(upstream_config(up.addr, vec![c.sha1_pin()])).await;
    for (raw, want) in [
        (
            &b"GET / HTTP/1.1\r\nHost: localhost\r\nBad Header\r\n\r\n"[..],
            "HTTP/1.1 400",
        ),
        (&b"\x01\x02\x03 nonsense\r\n\r\n"[..], "HTTP/1.1 400"),
        (
            &b"CONNECT mgmt:443 HTTP/1.1\r\nHost: localhost\r\n\r\n"[..],
            "HTTP/1.1 405",
        ),
    ] {
        let mut s = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
        s.write_all(raw).await.unwrap();
        let mut buf = vec![0u8; 12];
        s.read_exact(&mut buf).await.unwrap();
        assert_eq!(String::from_utf8_lossy(&buf), want);
    }
    assert_eq!(up.requests(), 0, "a bad request was forwarded");
}
