//! Limits on both sides: header size and count (431), request body (413),
//! connections to the upstream (503 after waiting), and 1,000 slowloris plus
//! 1,000 idle keep-alive connections that must not keep out a real request.

mod common;

use std::time::Duration;

use common::*;
use pinproxy::config::{Config, Limits};
use pinproxy::server::Proxy;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn proxy_with(limits: Limits, up: &Upstream, pin: pinproxy::pin::Pin) -> Proxy {
    let config = Config {
        limits,
        ..config_of(vec![upstream_config(up.addr, vec![pin])])
    };
    Proxy::bind(&config).await.unwrap()
}

async fn status_of(addr: std::net::SocketAddr, bytes: &[u8]) -> String {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(bytes).await.unwrap();
    let mut out = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut out))
        .await
        .expect("an answer")
        .unwrap_or(0);
    String::from_utf8_lossy(&out[..n])
        .lines()
        .next()
        .unwrap_or("")
        .to_string()
}

#[tokio::test]
async fn heads_over_the_size_or_count_limit_get_431_and_bodies_over_the_limit_413() {
    let (up, c) = Upstream::start_self_signed().await;
    let limits = Limits {
        max_header_bytes: 16 * 1024,
        max_headers: 20,
        max_request_body: Some(1000),
        ..Limits::default()
    };
    let proxy = proxy_with(limits, &up, c.sha1_pin()).await;
    let addr = proxy.local_addrs()[0].1;

    let many: String = (0..30).map(|i| format!("X-H{i}: v\r\n")).collect();
    let req = format!("GET /x HTTP/1.1\r\nHost: localhost\r\n{many}\r\n");
    assert_eq!(
        status_of(addr, req.as_bytes()).await,
        "HTTP/1.1 431 Request Header Fields Too Large"
    );
    let big = format!(
        "GET /x HTTP/1.1\r\nHost: localhost\r\nX-Big: {}\r\n\r\n",
        "a".repeat(20 * 1024)
    );
    assert_eq!(
        status_of(addr, big.as_bytes()).await,
        "HTTP/1.1 431 Request Header Fields Too Large"
    );

    // Announced too large: refused before any upstream connection.
    let announced = "POST /upload HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5000\r\n\r\n";
    assert_eq!(
        status_of(addr, announced.as_bytes()).await,
        "HTTP/1.1 413 Payload Too Large"
    );
    assert_eq!(up.tls_accepted(), 0);
    // Chunked past the limit: cut off, answered 413, never a complete upload.
    let chunk = format!("{:x}\r\n{}\r\n", 600, "b".repeat(600));
    let chunked = format!("POST /upload HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n{chunk}{chunk}0\r\n\r\n");
    assert_eq!(
        status_of(addr, chunked.as_bytes()).await,
        "HTTP/1.1 413 Payload Too Large"
    );
    assert_eq!(
        up.stats.uploaded.load(std::sync::atomic::Ordering::SeqCst),
        0
    );
    // Within the limits, all is well.
    let fine = "POST /upload HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\n\r\nhello";
    assert_eq!(status_of(addr, fine.as_bytes()).await, "HTTP/1.1 200 OK");
    proxy.drain().await;
}

#[tokio::test]
async fn max_connections_caps_upstream_connections_and_the_excess_gets_503() {
    let (up, c) = Upstream::start_self_signed().await;
    let mut cfg = upstream_config(up.addr, vec![c.sha1_pin()]);
    cfg.max_connections = 1;
    cfg.connect_timeout = Duration::from_millis(300);
    let proxy = Proxy::bind(&config_of(vec![cfg])).await.unwrap();
    let addr = proxy.local_addrs()[0].1;
    let slow = tokio::spawn(async move { get(&format!("http://{addr}/slow")).await });
    up.wait_slow(1).await;
    // The one connection is busy: the next request waits connect_timeout, then 503.
    let a = get(&format!("http://{addr}/x")).await;
    assert_eq!(a.status, 503);
    assert_eq!(a.error_tag(), Some("upstream-busy"));
    assert!(a.text().contains("max_connections"), "{}", a.text());
    assert_eq!(up.tls_accepted(), 1);
    up.release.notify_waiters();
    assert_eq!(slow.await.unwrap().status, 200);
    // The slot is free again (the pooled connection is reused).
    assert_eq!(get(&format!("http://{addr}/x")).await.status, 200);
    proxy.drain().await;
}

#[tokio::test]
async fn a_thousand_slowloris_and_a_thousand_idle_connections_do_not_keep_out_a_real_request() {
    let (up, c) = Upstream::start_self_signed().await;
    let proxy = proxy_with(Limits::default(), &up, c.sha1_pin()).await;
    let addr = proxy.local_addrs()[0].1;
    let mut held = Vec::with_capacity(2000);
    for _ in 0..1000 {
        // Half a request head, never finished.
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(b"GET /slow HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
            .await
            .unwrap();
        held.push(tcp);
    }
    for _ in 0..1000 {
        // One request answered, then the connection sits idle, kept alive.
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(b"GET /x HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 1024];
        let n = tcp.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        held.push(tcp);
    }
    let a = tokio::time::timeout(Duration::from_secs(5), get(&format!("http://{addr}/real")))
        .await
        .expect("the real request is answered while 2,000 connections are held");
    assert_eq!(a.status, 200);
    drop(held);
    proxy.drain().await;
}

#[tokio::test]
async fn running_out_of_file_descriptors_backs_off_and_recovers() {
    let (up, c) = Upstream::start_self_signed().await;
    let config = temp_file(&config_text(up.addr, &c.sha1_pin(), ""));
    // 64 descriptors: the runtime and listeners use some, the rest go quickly.
    let mut bin = Binary::spawn_with_open_files(
        Some(64),
        &["run", "--config", config.path().to_str().unwrap()],
        &[],
    );
    let addr = bin.listening();
    let mut held = Vec::new();
    for _ in 0..100 {
        // The kernel completes these handshakes from the backlog even when
        // pinproxy cannot accept them.
        held.push(TcpStream::connect(addr).await.unwrap());
    }
    let (bin, line) = tokio::task::spawn_blocking(move || {
        let line = bin.wait_for(|v| v["message"] == "accept failed; retrying in 100 ms");
        (bin, line)
    })
    .await
    .unwrap();
    assert!(
        line["error"]
            .as_str()
            .unwrap()
            .contains("Too many open files"),
        "{line}"
    );
    drop(held);
    // Descriptors are free again: a request is served, and the process is alive.
    let a = tokio::time::timeout(Duration::from_secs(10), get(&format!("http://{addr}/x")))
        .await
        .expect("served after the descriptors came back");
    assert_eq!(a.status, 200);
    drop(bin);
}
