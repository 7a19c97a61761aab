//! Faults on either side: an upstream that dies mid-response, clients that go
//! away mid-upload or mid-download, a name that does not resolve. pinproxy
//! closes what must be closed, keeps nothing half-used, and keeps serving.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use http_body_util::BodyExt;
use pinproxy::server::Proxy;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A TLS server that answers `/reset` with a head promising 100,000 bytes, sends
/// 1,000 and drops the connection; anything else gets a short, complete answer.
async fn breaking_server() -> (std::net::SocketAddr, TestCert) {
    let c = cert();
    let config = server_config(vec![c.der.clone()], c.key(), false);
    let addr = tls_server(config, |mut tls| async move {
        let Some(head) = read_head(&mut tls).await else {
            return;
        };
        if head.starts_with(b"GET /reset ") {
            let _ = tls
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
                .await;
            let _ = tls.write_all(&[b'x'; 1000]).await;
            let _ = tls.flush().await;
            // Dropped here: no close_notify, no more bytes.
        } else {
            let _ = tls
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
                .await;
            let _ = tls.shutdown().await;
        }
    })
    .await;
    (addr, c)
}

#[tokio::test]
async fn an_upstream_dying_mid_response_closes_the_client_connection_and_the_next_request_works() {
    let (addr, c) = breaking_server().await;
    let proxy = RunningProxy::start(upstream_config(addr, vec![c.sha1_pin()])).await;
    let client = client();
    let resp = client
        .request(
            http::Request::get(proxy.url("/reset"))
                .body(empty())
                .unwrap(),
        )
        .await
        .expect("the head arrives");
    assert_eq!(resp.status(), 200);
    let body = tokio::time::timeout(Duration::from_secs(10), resp.into_body().collect())
        .await
        .expect("the client is not left hanging");
    assert!(body.is_err(), "a truncated body must not look complete");
    assert_eq!(get(&proxy.url("/fine")).await.text(), "ok");
    proxy.stop().await;
}

#[tokio::test]
async fn a_client_leaving_mid_download_or_mid_upload_releases_the_upstream_connection() {
    let (up, c) = TestServer::start_self_signed().await;
    let proxy = Proxy::bind(&config_of(vec![upstream_config(
        up.addr,
        vec![c.sha1_pin()],
    )]))
    .await
    .unwrap();
    let addr = proxy.local_addrs()[0].1;

    // Download: read the head and a little of 1 GiB, then hang up.
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET /bytes/1073741824 HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    let n = tcp.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    up.wait_active(1).await;
    drop(tcp);
    // The half-read upstream connection is closed, not put back in the pool.
    up.wait_active(0).await;

    // Upload: promise 100 MB, send 1 MB, hang up.
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"POST /upload HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100000000\r\n\r\n")
        .await
        .unwrap();
    tcp.write_all(&vec![0u8; 1 << 20]).await.unwrap();
    up.wait_active(1).await;
    drop(tcp);
    up.wait_active(0).await;
    assert!(up.stats.uploaded.load(Ordering::SeqCst) < 100_000_000);

    // pinproxy counts it closed too (the gauge drops before the socket closes).
    let m = proxy.metrics().encode();
    assert!(
        m.contains("pinproxy_upstream_connections{upstream=\"test\"} 0"),
        "{m}"
    );
    // And both client connection tasks end: nothing is left running for them.
    wait_no_client_connections(&proxy).await;
    // And the next request is served.
    assert_eq!(get(&format!("http://{addr}/x")).await.status, 200);
    proxy.drain().await;
}

#[tokio::test]
async fn a_name_that_does_not_resolve_is_a_502_connect_failed_with_the_reason() {
    let mut cfg = upstream_config("127.0.0.1:443".parse().unwrap(), vec![cert().sha1_pin()]);
    // RFC 6761: .invalid never resolves.
    cfg.host = "pinproxy-test.invalid".into();
    cfg.connect_timeout = Duration::from_secs(20);
    let proxy = RunningProxy::start(cfg).await;
    let a = get(&proxy.url("/x")).await;
    assert_eq!(a.status, 502);
    assert_eq!(a.error_tag(), Some("connect-failed"));
    assert!(
        a.text().contains("pinproxy-test.invalid:443"),
        "{}",
        a.text()
    );
    assert!(a.text().contains("name lookup failed"), "{}", a.text());
    proxy.stop().await;
}

/// A TLS server that answers every request with `answer`, byte for byte, then
/// closes.
async fn raw_answer_server(answer: &'static [u8]) -> (std::net::SocketAddr, TestCert) {
    let c = cert();
    let config = server_config(vec![c.der.clone()], c.key(), false);
    let addr = tls_server(config, move |mut tls| async move {
        let mut buf = [0u8; 4096];
        let _ = tls.read(&mut buf).await;
        let _ = tls.write_all(answer).await;
        let _ = tls.shutdown().await;
    })
    .await;
    (addr, c)
}

#[tokio::test]
async fn malformed_upstream_responses_give_a_clean_502_and_the_client_connection_stays_in_sync() {
    let storm: &'static [u8] = Box::leak(
        [
            b"HTTP/1.1 100 Continue\r\n\r\n".repeat(10_000),
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec(),
        ]
        .concat()
        .into_boxed_slice(),
    );
    let cases: [(&str, &'static [u8]); 4] = [
        ("not HTTP at all", b"SSH-2.0-OpenSSH_9.2\r\n"),
        (
            "Content-Length and Transfer-Encoding together",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        ),
        (
            "two different Content-Lengths",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\nhello",
        ),
        ("a storm of 10,000 interim 100 responses", storm),
    ];
    for (what, answer) in cases {
        let (addr, c) = raw_answer_server(answer).await;
        let proxy = RunningProxy::start(upstream_config(addr, vec![c.sha1_pin()])).await;
        // Two requests on one kept-alive client connection: the second must get
        // its own answer, whatever the first one's upstream sent.
        let client = client();
        for _ in 0..2 {
            let req = http::Request::get(proxy.url("/x")).body(empty()).unwrap();
            let a = tokio::time::timeout(Duration::from_secs(10), send(&client, req))
                .await
                .unwrap_or_else(|_| panic!("{what}: no answer"));
            match what {
                // hyper lets chunked framing win (RFC 9112 §6.3) and relays exactly the
                // chunked body; the client gets one complete, consistent answer.
                "Content-Length and Transfer-Encoding together" => {
                    assert_eq!((a.status.as_u16(), a.text().as_str()), (200, "hello"))
                }
                // Interim responses are skipped; the final one arrives intact.
                "a storm of 10,000 interim 100 responses" => {
                    assert_eq!((a.status.as_u16(), a.text().as_str()), (200, "ok"))
                }
                _ => {
                    assert_eq!(a.status, 502, "{what}: {}", a.text());
                    assert_eq!(a.error_tag(), Some("upstream-failed"), "{what}");
                }
            }
        }
        proxy.stop().await;
    }
}

/// An upstream that closes its connections under load: each request is either
/// answered, or, when it was already written to a connection the server was
/// closing, refused with a 502 that says it was not sent again (pinproxy keeps
/// no copy to resend, and the server may have acted on it). None is answered
/// twice or silently lost, and traffic carries on over fresh pinned connections.
#[tokio::test]
async fn an_upstream_restarting_its_connections_under_keep_alive_load_doubles_and_hides_nothing() {
    let (up, c) = TestServer::start_self_signed().await;
    let proxy = RunningProxy::start(upstream_config(up.addr, vec![c.sha1_pin()])).await;
    let url = proxy.url("/x");
    // Four clients, each on one kept-alive connection, 50 GETs apiece; meanwhile
    // the upstream closes every connection it has, three times over.
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                let client = client();
                let mut answers = Vec::new();
                for _ in 0..50 {
                    let req = http::Request::get(&url).body(empty()).unwrap();
                    answers.push(send(&client, req).await);
                }
                answers
            })
        })
        .collect();
    for round in 1..=3 {
        // Wait for traffic to flow, then drop every connection the server has.
        while up.requests() < round * 40 {
            tokio::task::yield_now().await;
        }
        up.restart_connections();
    }
    let mut ok = 0;
    for c in clients {
        let answers = c.await.unwrap();
        for a in &answers {
            if a.status == 200 {
                ok += 1;
            } else {
                assert_eq!(
                    (a.status.as_u16(), a.error_tag()),
                    (502, Some("upstream-failed"))
                );
                assert!(a.text().contains("it was not sent again"), "{}", a.text());
            }
        }
        assert_eq!(answers.last().unwrap().status, 200, "traffic carries on");
    }
    assert_eq!(
        up.requests(),
        ok,
        "each request the server answered was answered once"
    );
    proxy.stop().await;
}
