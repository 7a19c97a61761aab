//! The pin holds on every path that opens an upstream connection. An attacker
//! who can redirect pinproxy's traffic (a TCP redirector in front of the real
//! server, switched to an impostor with its own certificate) is refused on the
//! first request, on a pool refill, on the retry after a stale pooled
//! connection, after a reload, and after a failover — and the impostor never
//! receives a request.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use pinproxy::config::Target;
use pinproxy::server::Proxy;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

/// A genuine server that answers one request per connection, keeps the
/// connection alive in its answer, and then closes it at once: the pooled
/// connection a server drops while it sits idle (Apache's KeepAliveTimeout).
async fn closes_after_each_answer_server(c: &TestCert) -> SocketAddr {
    let config = server_config(vec![c.der.clone()], c.key(), false);
    tls_server(config, |mut tls| async move {
        if read_head(&mut tls).await.is_none() {
            return;
        }
        let _ = tls
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            .await;
        let _ = tls.shutdown().await;
    })
    .await
}

/// A server that reads a request and drops the connection without an answer,
/// counting the requests that reached it.
async fn reads_then_drops_server(c: &TestCert) -> (SocketAddr, Arc<AtomicUsize>) {
    let config = server_config(vec![c.der.clone()], c.key(), false);
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    let addr = tls_server(config, move |mut tls| {
        let counter = counter.clone();
        async move {
            if read_head(&mut tls).await.is_some() {
                counter.fetch_add(1, Ordering::SeqCst);
            }
        }
    })
    .await;
    (addr, seen)
}

#[tokio::test]
async fn first_request_pool_refill_and_stale_retry_all_check_the_pin() {
    let genuine_cert = cert();
    let genuine = closes_after_each_answer_server(&genuine_cert).await;
    let (impostor, _) = TestServer::start_self_signed().await;
    let (front, to_impostor) = redirector(genuine, impostor.addr).await;
    let proxy = RunningProxy::start(upstream_config(front, vec![genuine_cert.sha1_pin()])).await;
    let client = client();
    let get = || {
        send(
            &client,
            http::Request::get(proxy.url("/x")).body(empty()).unwrap(),
        )
    };

    // First request, redirected: refused.
    to_impostor.store(true, Ordering::SeqCst);
    let a = get().await;
    assert_eq!(
        (a.status.as_u16(), a.error_tag()),
        (502, Some("fingerprint-mismatch"))
    );

    // Genuine: served, and the connection is pooled.
    to_impostor.store(false, Ordering::SeqCst);
    assert_eq!(get().await.text(), "ok");

    // The server dropped that connection; the next request goes out on a fresh
    // connection (or, if the pool had not noticed yet, hyper hands the unsent request
    // back and it goes out on a fresh one), which is redirected: refused.
    to_impostor.store(true, Ordering::SeqCst);
    let a = get().await;
    assert_eq!(
        (a.status.as_u16(), a.error_tag()),
        (502, Some("fingerprint-mismatch")),
        "{}",
        a.text()
    );

    // Pool refill after the server closed idle connections: refused too.
    let a = get().await;
    assert_eq!(a.status, 502);
    assert_eq!(impostor.requests(), 0, "the impostor never saw a request");
    assert_eq!(impostor.app_bytes(), 0, "not a byte of one");
    proxy.stop().await;
}

#[tokio::test]
async fn after_a_reload_and_after_a_failover_the_pin_still_holds() {
    let (genuine, genuine_cert) = TestServer::start_self_signed().await;
    let (impostor, _) = TestServer::start_self_signed().await;
    let (front, to_impostor) = redirector(genuine.addr, impostor.addr).await;
    let pin = genuine_cert.sha1_pin();
    let mut proxy = Proxy::bind(&config_of(vec![upstream_config(front, vec![pin.clone()])]))
        .await
        .unwrap();
    let url = format!("http://{}/x", proxy.local_addrs()[0].1);
    assert_eq!(get(&url).await.status, 200);

    // Reload (a second pin added): the new pool's connections are checked too.
    let mut rotated = upstream_config(front, vec![pin.clone(), cert().sha1_pin()]);
    rotated.name = "test".into();
    proxy.reload(&config_of(vec![rotated])).await.unwrap();
    to_impostor.store(true, Ordering::SeqCst);
    assert_eq!(get(&url).await.error_tag(), Some("fingerprint-mismatch"));

    // Failover: the first address is down, the second is redirected: refused,
    // not silently accepted because it was a fallback.
    let vacant = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    let mut ha = upstream_config(vacant, vec![pin.clone()]);
    ha.fallbacks = vec![Target {
        host: front.ip().to_string(),
        port: front.port(),
        pins: vec![pin],
        client_identity: None,
        egress_proxy: None,
    }];
    ha.failback_after = Duration::from_secs(30);
    proxy.reload(&config_of(vec![ha])).await.unwrap();
    let a = get(&url).await;
    assert_eq!(
        (a.status.as_u16(), a.error_tag()),
        (502, Some("fingerprint-mismatch"))
    );
    assert_eq!(impostor.requests(), 0);
    assert_eq!(impostor.app_bytes(), 0);
    proxy.drain().await;
}

/// A pooled connection the server closed while it sat idle never fails a
/// request: the request goes out on a fresh (pinned) connection. A request that
/// did reach the server before the connection broke is never sent a second
/// time, GET or POST: pinproxy keeps no copy of it, and the server may have acted.
#[tokio::test]
async fn a_connection_the_server_closed_is_replaced_and_a_sent_request_never_repeated() {
    let c = cert();
    let server = closes_after_each_answer_server(&c).await;
    let proxy = RunningProxy::start(upstream_config(server, vec![c.sha1_pin()])).await;
    let client = client();
    let req = |proxy: &RunningProxy, method: &str| {
        http::Request::builder()
            .method(method)
            .uri(proxy.url("/x"))
            .body(empty())
            .unwrap()
    };
    for method in ["GET", "GET", "POST", "GET", "DELETE"] {
        let a = send(&client, req(&proxy, method)).await;
        assert_eq!(
            (a.status.as_u16(), a.text()),
            (200, "ok".into()),
            "{method}"
        );
    }
    proxy.stop().await;

    let (server, seen) = reads_then_drops_server(&c).await;
    let proxy = RunningProxy::start(upstream_config(server, vec![c.sha1_pin()])).await;
    for (n, method) in ["GET", "POST"].into_iter().enumerate() {
        let a = send(&client, req(&proxy, method)).await;
        assert_eq!(
            (a.status.as_u16(), a.error_tag()),
            (502, Some("upstream-failed")),
            "{method}"
        );
        assert!(a.text().contains("not sent again"), "{}", a.text());
        assert_eq!(
            seen.load(Ordering::SeqCst),
            n + 1,
            "{method} reached the server once"
        );
    }
    proxy.stop().await;
}
