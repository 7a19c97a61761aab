//! What pinproxy speaks to the upstream: HTTP/2 chosen by ALPN (many client
//! requests over one connection), HTTP/1.1 when told, a clear error when h2 is
//! required and refused; TLS session resumption that never crosses a pin change.

mod common;

use common::*;
use http_body_util::BodyExt;
use pinproxy::config::{Config, Http2, UpstreamConfig};
use pinproxy::server::Proxy;

fn config(upstream: UpstreamConfig) -> Config {
    config_of(vec![upstream])
}

/// Sends `n` `/slow` requests at once (each on its own client connection),
/// waits until all reached the upstream, releases them and returns the statuses.
async fn concurrent_slow(proxy: &Proxy, up: &TestServer, n: usize) -> Vec<u16> {
    let url = format!("http://{}/slow", proxy.local_addrs()[0].1);
    let requests: Vec<_> = (0..n)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { get(&url).await.status.as_u16() })
        })
        .collect();
    up.wait_slow(n).await;
    up.release.notify_waiters();
    let mut statuses = Vec::new();
    for r in requests {
        statuses.push(r.await.unwrap());
    }
    statuses
}

#[tokio::test]
async fn h2_chosen_by_alpn_carries_concurrent_requests_on_one_connection() {
    let (up, c) = TestServer::start_with_alpn(&[b"h2", b"http/1.1"]).await;
    let proxy = Proxy::bind(&config(upstream_config(up.addr, vec![c.sha1_pin()])))
        .await
        .unwrap();
    // The first connection tells the pool that this server speaks h2 (until then a
    // burst would open one connection per request, as over HTTP/1.1).
    let first = get(&format!("http://{}/x", proxy.local_addrs()[0].1)).await;
    assert_eq!(first.status, 200);
    let statuses = concurrent_slow(&proxy, &up, 20).await;
    assert_eq!(statuses, vec![200; 20]);
    assert_eq!(up.tls_accepted(), 1, "21 requests, one TLS connection");
    assert_eq!(up.h2_connections(), 1);
    // Headers arrive as they do over HTTP/1.1 (Host becomes :authority).
    let echo = get(&format!("http://{}/echo", proxy.local_addrs()[0].1))
        .await
        .json();
    assert_eq!(
        echo["headers"]["host"][0],
        format!("localhost:{}", up.addr.port())
    );
    proxy.drain().await;
}

#[tokio::test]
async fn http2_never_keeps_to_http1_with_a_connection_per_concurrent_request() {
    let (up, c) = TestServer::start_with_alpn(&[b"h2", b"http/1.1"]).await;
    let mut cfg = upstream_config(up.addr, vec![c.sha1_pin()]);
    cfg.http2 = Http2::Never;
    let proxy = Proxy::bind(&config(cfg)).await.unwrap();
    let statuses = concurrent_slow(&proxy, &up, 5).await;
    assert_eq!(statuses, vec![200; 5]);
    assert_eq!(up.tls_accepted(), 5);
    assert_eq!(up.h2_connections(), 0);
    proxy.drain().await;
}

#[tokio::test]
async fn the_pool_keeps_every_connection_a_burst_opened_for_the_next_burst() {
    // 40 clients at once need 40 upstream connections; a pool that kept fewer idle
    // (it was 32) would make the next burst pay new handshakes. The same 40 client
    // connections send both bursts, so each worker needs what it needed before.
    let (up, c) = TestServer::start_with_alpn(&[b"http/1.1"]).await;
    let proxy = Proxy::bind(&config(upstream_config(up.addr, vec![c.sha1_pin()])))
        .await
        .unwrap();
    let mut clients = Vec::new();
    for _ in 0..40 {
        clients.push(KeptConnection::open(proxy.local_addrs()[0].1).await);
    }
    for burst in 1..=2 {
        let mut answers = Vec::new();
        for client in &mut clients {
            answers.push(tokio::spawn(client.get("/slow").await));
        }
        up.wait_slow(40).await;
        up.release.notify_waiters();
        for answer in answers {
            let answer = answer.await.unwrap().unwrap();
            assert_eq!(answer.status(), 200);
            answer.into_body().collect().await.unwrap();
        }
        assert_eq!(up.tls_accepted(), 40, "burst {burst}");
    }
    proxy.drain().await;
}

#[tokio::test]
async fn http2_always_against_an_http1_server_fails_with_the_reason() {
    let (up, c) = TestServer::start_with_alpn(&[b"http/1.1"]).await;
    let mut cfg = upstream_config(up.addr, vec![c.sha1_pin()]);
    cfg.http2 = Http2::Always;
    let proxy = Proxy::bind(&config(cfg)).await.unwrap();
    let a = get(&format!("http://{}/x", proxy.local_addrs()[0].1)).await;
    assert_eq!(a.status, 502);
    assert_eq!(a.error_tag(), Some("handshake-failed"));
    assert!(a.text().contains("http2 = \"auto\""), "{}", a.text());
    assert_eq!(up.requests(), 0);
    proxy.drain().await;
}

#[tokio::test]
async fn reconnects_resume_the_session_but_never_across_a_pin_change() {
    let (up, c) = TestServer::start_self_signed().await;
    let pinned = upstream_config(up.addr, vec![c.sha1_pin()]);
    let mut proxy = Proxy::bind(&config(pinned.clone())).await.unwrap();
    let url = format!("http://{}/x", proxy.local_addrs()[0].1);

    assert_eq!(get(&url).await.status, 200);
    up.close_idle_connections().await;
    assert_eq!(get(&url).await.status, 200);
    assert_eq!(
        (up.tls_accepted(), up.resumed()),
        (2, 1),
        "the reconnect resumed"
    );

    // New pins: a new session cache, so the next connection shows its certificate.
    let mut rotated = pinned.clone();
    rotated.pins.push(cert().sha1_pin());
    proxy.reload(&config(rotated)).await.unwrap();
    up.close_idle_connections().await;
    assert_eq!(get(&url).await.status, 200);
    assert_eq!(
        (up.tls_accepted(), up.resumed()),
        (3, 1),
        "full handshake after the pin change"
    );

    // And it can be turned off.
    let mut no_resumption = pinned;
    no_resumption.tls_resumption = false;
    proxy.reload(&config(no_resumption)).await.unwrap();
    for _ in 0..2 {
        up.close_idle_connections().await;
        assert_eq!(get(&url).await.status, 200);
    }
    assert_eq!((up.tls_accepted(), up.resumed()), (5, 1));
    proxy.drain().await;
}

#[tokio::test]
async fn clients_may_speak_http2_with_prior_knowledge_to_a_listener() {
    let (up, c) = TestServer::start_self_signed().await;
    let proxy = Proxy::bind(&config(upstream_config(up.addr, vec![c.sha1_pin()])))
        .await
        .unwrap();
    let h2c: hyper_util::client::legacy::Client<_, TestBody> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .http2_only(true)
            .build_http();
    let url = format!("http://{}/web_api/show-session", proxy.local_addrs()[0].1);
    let req = http::Request::post(&url).body(full("{}")).unwrap();
    let a = send(&h2c, req).await;
    assert_eq!(a.status, 200);
    let echo = a.json();
    assert_eq!(echo["path"], "/web_api/show-session");
    assert_eq!(echo["body"], "{}");
    proxy.drain().await;
}
