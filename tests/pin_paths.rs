//! The pin holds on every path that opens an upstream connection. An attacker
//! who can redirect pinproxy's traffic (a TCP redirector in front of the real
//! server, switched to an impostor with its own certificate) is refused on the
//! first request, on a pool refill, on the retry after a stale pooled
//! connection, after a reload, and after a failover — and the impostor never
//! receives a request.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use pinproxy::config::Target;
use pinproxy::server::Proxy;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

/// Forwards each new TCP connection to the genuine server, or to the impostor
/// while `to_impostor` is set: DNS or ARP spoofing, in miniature.
async fn redirector(genuine: SocketAddr, impostor: SocketAddr) -> (SocketAddr, Arc<AtomicBool>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let to_impostor = Arc::new(AtomicBool::new(false));
    let switch = to_impostor.clone();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let target = if switch.load(Ordering::SeqCst) {
                impostor
            } else {
                genuine
            };
            tokio::spawn(async move {
                if let Ok(mut server) = TcpStream::connect(target).await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            });
        }
    });
    (addr, to_impostor)
}

/// A genuine server that answers the first request on each connection and keeps
/// it alive, then drops the connection when a second request arrives on it: the
/// stale pooled connection that makes pinproxy retry an idempotent request.
async fn one_request_per_connection_server(c: &TestCert) -> SocketAddr {
    let config = server_config(vec![c.der.clone()], c.key(), false);
    tls_server(config, |mut tls| async move {
        if read_head(&mut tls).await.is_none() {
            return;
        }
        let _ = tls
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            .await;
        // A second request on this connection is read, then left unanswered.
        let _ = read_head(&mut tls).await;
    })
    .await
}

#[tokio::test]
async fn first_request_pool_refill_and_stale_retry_all_check_the_pin() {
    let genuine_cert = cert();
    let genuine = one_request_per_connection_server(&genuine_cert).await;
    let (impostor, _) = Upstream::start_self_signed().await;
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

    // The pooled connection goes stale (the server drops it on the next request);
    // pinproxy retries the GET on a fresh connection, which is redirected: refused.
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
    let (genuine, genuine_cert) = Upstream::start_self_signed().await;
    let (impostor, _) = Upstream::start_self_signed().await;
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

/// The retry itself: an idempotent request on a connection the server dropped is
/// sent again on a fresh (pinned) connection; a POST, which the server may have
/// processed, is not.
#[tokio::test]
async fn a_dropped_pooled_connection_retries_get_once_but_never_post() {
    let c = cert();
    let server = one_request_per_connection_server(&c).await;
    let proxy = RunningProxy::start(upstream_config(server, vec![c.sha1_pin()])).await;
    let client = client();
    let req = |method: &str| {
        http::Request::builder()
            .method(method)
            .uri(proxy.url("/x"))
            .body(empty())
            .unwrap()
    };
    assert_eq!(send(&client, req("GET")).await.text(), "ok");
    // Pooled connection, dropped by the server on the next request: retried on a
    // connection of its own, which is not pooled afterwards.
    assert_eq!(send(&client, req("GET")).await.text(), "ok");
    // So this one opens a connection, which is pooled ...
    assert_eq!(send(&client, req("GET")).await.text(), "ok");
    // ... and dropped by the server on this POST: answered 502, not sent a second time.
    let a = send(&client, req("POST")).await;
    assert_eq!(
        (a.status.as_u16(), a.error_tag()),
        (502, Some("upstream-failed"))
    );
    proxy.stop().await;
}
