//! The upstream pool: idle connections leave it as soon as the server closes
//! them or `idle_timeout` passes (their `max_connections` slots with them); at
//! `max_connections` an idle connection of another worker serves instead of a
//! request waiting, and a burst far beyond it is served by the connections
//! there are, each handed to the next waiting request; a response that starts
//! before its request body is sent does not stall the upload.

mod common;

use std::time::Duration;

use common::*;
use pinproxy::server::Proxy;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Waits (at most 10 s) until the proxy's metrics contain `needle`.
async fn metrics_show(proxy: &Proxy, needle: &str) {
    let seen = tokio::time::timeout(Duration::from_secs(10), async {
        while !proxy.metrics().encode().contains(needle) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(
        seen.is_ok(),
        "{needle} not in\n{}",
        proxy.metrics().encode()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_the_server_closes_leaves_the_pool_at_once() {
    let (up, c) = TestServer::start_with_alpn(&[b"http/1.1"]).await;
    let proxy = Proxy::bind(&config_of(vec![upstream_config(
        up.addr,
        vec![c.sha1_pin()],
    )]))
    .await
    .unwrap();
    let url = format!("http://{}/x", proxy.local_addrs()[0].1);
    assert_eq!(get(&url).await.status, 200);
    metrics_show(&proxy, "pinproxy_upstream_connections{upstream=\"test\"} 1").await;
    // The server's keep-alive timeout closes it; nobody sends a request, and the
    // pool still lets it go (idle_timeout is a minute away).
    up.close_idle_connections().await;
    metrics_show(&proxy, "pinproxy_upstream_connections{upstream=\"test\"} 0").await;
    assert_eq!(get(&url).await.status, 200);
    assert_eq!(up.tls_accepted(), 2);
    proxy.drain().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_timeout_closes_an_unused_connection() {
    let (up, c) = TestServer::start_with_alpn(&[b"http/1.1"]).await;
    let mut cfg = upstream_config(up.addr, vec![c.sha1_pin()]);
    cfg.idle_timeout = Duration::from_millis(300);
    let proxy = Proxy::bind(&config_of(vec![cfg])).await.unwrap();
    let url = format!("http://{}/x", proxy.local_addrs()[0].1);
    assert_eq!(get(&url).await.status, 200);
    up.wait_active(0).await;
    metrics_show(&proxy, "pinproxy_upstream_connections{upstream=\"test\"} 0").await;
    proxy.drain().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_idle_timeout_closes_the_shared_connection() {
    let (up, c) = TestServer::start_with_alpn(&[b"h2"]).await;
    let mut cfg = upstream_config(up.addr, vec![c.sha1_pin()]);
    cfg.idle_timeout = Duration::from_millis(300);
    let proxy = Proxy::bind(&config_of(vec![cfg])).await.unwrap();
    let url = format!("http://{}/x", proxy.local_addrs()[0].1);
    assert_eq!(get(&url).await.status, 200);
    assert_eq!(up.h2_connections(), 1);
    up.wait_active(0).await;
    assert_eq!(get(&url).await.status, 200);
    assert_eq!(
        up.h2_connections(),
        2,
        "a new connection after the idle one closed"
    );
    proxy.drain().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_max_connections_an_idle_connection_of_another_worker_serves() {
    let (up, c) = TestServer::start_with_alpn(&[b"http/1.1"]).await;
    let mut cfg = upstream_config(up.addr, vec![c.sha1_pin()]);
    cfg.max_connections = 1;
    cfg.connect_timeout = Duration::from_secs(1);
    let proxy = Proxy::bind(&config_of(vec![cfg])).await.unwrap();
    let addr = proxy.local_addrs()[0].1;
    // Each worker keeps its own idle connections, and each accepts client
    // connections as they come: eight clients taking turns land on both
    // workers (all on one has a chance of 1 in 128; the test then proves less,
    // but still passes).
    let mut clients = Vec::new();
    for _ in 0..8 {
        clients.push(KeptConnection::open(addr).await);
    }
    for round in 0..16 {
        let answer = clients[round % 8].get("/x").await.await.unwrap();
        // Without taking it the request would wait connect_timeout for the
        // slot another worker's idle connection holds: 503 upstream-busy.
        assert_eq!(answer.status(), 200, "round {round}");
        http_body_util::BodyExt::collect(answer.into_body())
            .await
            .unwrap();
    }
    proxy.drain().await;
}

/// A server that starts its answer as soon as the head arrives and streams it
/// while it reads the upload, ending the answer once the upload is in.
async fn streams_while_reading_server(c: &TestCert, answer: usize) -> std::net::SocketAddr {
    let config = server_config(vec![c.der.clone()], c.key(), false);
    tls_server(config, move |mut tls| async move {
        let Some(head) = read_head(&mut tls).await else {
            return;
        };
        let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        let (mut rd, mut wr) = tokio::io::split(tls);
        let writer = tokio::spawn(async move {
            wr.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                .await?;
            let chunk = vec![b'y'; 64 * 1024];
            for _ in 0..answer / chunk.len() {
                wr.write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
                    .await?;
                wr.write_all(&chunk).await?;
                wr.write_all(b"\r\n").await?;
            }
            Ok::<_, std::io::Error>(wr)
        });
        let mut got = 0;
        let mut buf = vec![0u8; 64 * 1024];
        while got < length {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got += n,
            }
        }
        if let Ok(Ok(mut wr)) = writer.await {
            let _ = wr.write_all(b"0\r\n\r\n").await;
            let _ = wr.flush().await;
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_streamed_during_the_upload_does_not_stall_it() {
    // More than every socket buffer on the way can hold, so the client, which
    // sends its whole body before it reads, only finishes if the proxy keeps
    // sending the upload while the answer waits for the client.
    const ANSWER: usize = 48 << 20;
    const UPLOAD: usize = 16 << 20;
    let c = cert();
    let server = streams_while_reading_server(&c, ANSWER).await;
    let proxy = RunningProxy::start(upstream_config(server, vec![c.sha1_pin()])).await;
    let mut tcp = TcpStream::connect(proxy.addr).await.unwrap();
    let done = tokio::time::timeout(Duration::from_secs(60), async {
        tcp.write_all(
            format!("POST /up HTTP/1.1\r\nHost: localhost\r\nContent-Length: {UPLOAD}\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
        tcp.write_all(&vec![b'x'; UPLOAD]).await.unwrap();
        let mut received = Vec::new();
        let mut buf = vec![0u8; 256 * 1024];
        while !received.ends_with(b"0\r\n\r\n") {
            let n = tcp.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed early");
            received.extend_from_slice(&buf[..n]);
        }
        received.len()
    })
    .await;
    let received = done.expect("the exchange finishes");
    assert!(received > ANSWER, "{received}");
    proxy.stop().await;
}

/// A burst far larger than `max_connections` against a fast upstream: every
/// request is answered, none waits for `connect_timeout` while a connection
/// sits idle (a finished connection goes to the oldest waiting request, on
/// whichever worker), and no more than `max_connections` are ever opened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_far_beyond_max_connections_is_served_by_the_connections_there_are() {
    let (up, c) = TestServer::start_with_alpn(&[b"http/1.1"]).await;
    let mut cfg = upstream_config(up.addr, vec![c.sha1_pin()]);
    cfg.max_connections = 8;
    cfg.connect_timeout = Duration::from_secs(3);
    let proxy = Proxy::bind(&config_of(vec![cfg])).await.unwrap();
    let addr = proxy.local_addrs()[0].1;
    let started = std::time::Instant::now();
    let answers: Vec<_> = (0..200)
        .map(|i| {
            tokio::spawn(async move {
                let answer = get(&format!("http://{addr}/x{i}")).await;
                (answer.status.as_u16(), answer.text())
            })
        })
        .collect();
    for answer in answers {
        let (status, text) = answer.await.unwrap();
        assert_eq!(status, 200, "{text}");
    }
    // Anyone who waited for connect_timeout would have got a 503 above; the
    // whole burst takes less than one such wait.
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(up.tls_accepted() <= 8, "{} connections", up.tls_accepted());
    proxy.drain().await;
}
