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

async fn proxy_with(limits: Limits, up: &TestServer, pin: pinproxy::tls::pin::CertPin) -> Proxy {
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
    let (up, c) = TestServer::start_self_signed().await;
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
    let (up, c) = TestServer::start_self_signed().await;
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
    let (up, c) = TestServer::start_self_signed().await;
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
    let (up, c) = TestServer::start_self_signed().await;
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

/// Speaks just enough HTTP/2 to look alive without ever opening a stream:
/// the preface, SETTINGS, and PINGs both ways (its own every 200 ms, and an
/// answer to each of the server's). Returns once the server closes.
async fn h2_pinger(addr: std::net::SocketAddr) {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    // An empty SETTINGS frame: length 0, type 4, flags 0, stream 0.
    tcp.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await.unwrap();
    let (mut rd, mut wr) = tcp.into_split();
    let (ack_tx, mut ack_rx) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
    let writer = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        loop {
            let frame = tokio::select! {
                _ = tick.tick() => [&[0, 0, 8, 6, 0, 0, 0, 0, 0][..], &[7; 8]].concat(),
                frame = ack_rx.recv() => match frame { Some(f) => f, None => return },
            };
            if wr.write_all(&frame).await.is_err() {
                return;
            }
        }
    });
    loop {
        let mut head = [0u8; 9];
        if rd.read_exact(&mut head).await.is_err() {
            break;
        }
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let mut payload = vec![0u8; len];
        if rd.read_exact(&mut payload).await.is_err() {
            break;
        }
        let (kind, flags) = (head[3], head[4]);
        let answer = match (kind, flags & 1) {
            (4, 0) => Some(vec![0, 0, 0, 4, 1, 0, 0, 0, 0]),
            (6, 0) => Some([&[0, 0, 8, 6, 1, 0, 0, 0, 0][..], &payload].concat()),
            _ => None,
        };
        if let Some(frame) = answer {
            let _ = ack_tx.send(frame);
        }
    }
    writer.abort();
}

/// Waits until the server closes `tcp` (EOF or reset), reading whatever it sends.
async fn closed_by_server(mut tcp: TcpStream) {
    let mut buf = [0u8; 1024];
    while let Ok(n) = tcp.read(&mut buf).await {
        if n == 0 {
            break;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_never_send_a_request_are_closed_and_cannot_lock_out_clients() {
    let (up, c) = TestServer::start_self_signed().await;
    let limits = Limits {
        header_read_timeout: Duration::from_millis(1500),
        max_client_connections: 5,
        ..Limits::default()
    };
    let proxy = proxy_with(limits, &up, c.sha1_pin()).await;
    let addr = proxy.local_addrs()[0].1;
    let silent = TcpStream::connect(addr).await.unwrap();
    let mut half_preface = TcpStream::connect(addr).await.unwrap();
    half_preface.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    let mut half_head = TcpStream::connect(addr).await.unwrap();
    half_head.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
    // HTTP/2 that served a request and then keeps nothing open.
    let (mut h2, h2_conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(TcpStream::connect(addr).await.unwrap()),
    )
    .await
    .unwrap();
    let h2_conn = tokio::spawn(h2_conn);
    let req = http::Request::get(format!("http://localhost:{}/x", addr.port()))
        .body(empty())
        .unwrap();
    assert_eq!(h2.send_request(req).await.unwrap().status(), 200);

    // Every slot is taken; each is given back within the limit plus slack.
    let all_closed = async {
        tokio::join!(
            closed_by_server(silent),
            closed_by_server(half_preface),
            closed_by_server(half_head),
            h2_pinger(addr),
            h2_conn,
        )
    };
    let (.., h2_ended) = tokio::time::timeout(Duration::from_secs(15), all_closed)
        .await
        .expect("every connection without a request in progress is closed");
    assert!(
        h2_ended.unwrap().is_ok(),
        "the idle HTTP/2 connection ended cleanly"
    );
    let a = tokio::time::timeout(Duration::from_secs(5), get(&format!("http://{addr}/real")))
        .await
        .expect("a real client gets in");
    assert_eq!(a.status, 200);
    proxy.drain().await;
}

/// At `max_client_connections` a new client waits, and is served as soon as a
/// slot is free, whichever worker's socket the kernel queued it on (each
/// worker accepts on a socket of its own). Eight rounds: a client queued on
/// the other worker's socket is a coin toss each time.
#[tokio::test]
async fn a_client_queued_at_max_client_connections_is_served_once_a_slot_frees() {
    let (up, c) = TestServer::start_self_signed().await;
    let limits = Limits {
        max_client_connections: 1,
        ..Limits::default()
    };
    let proxy = proxy_with(limits, &up, c.sha1_pin()).await;
    let addr = proxy.local_addrs()[0].1;
    let request = b"GET /x HTTP/1.1\r\nHost: localhost\r\n\r\n";
    for round in 0..8 {
        let mut held = TcpStream::connect(addr).await.unwrap();
        held.write_all(request).await.unwrap();
        let (status, _) = tokio::time::timeout(Duration::from_secs(5), response_on(&mut held))
            .await
            .unwrap_or_else(|_| {
                panic!("round {round}: a client never served with every slot free")
            });
        assert_eq!(status, "HTTP/1.1 200 OK", "round {round}");
        let mut queued = TcpStream::connect(addr).await.unwrap();
        queued.write_all(request).await.unwrap();
        let mut byte = [0u8; 1];
        let early = tokio::time::timeout(Duration::from_millis(200), queued.read(&mut byte)).await;
        assert!(early.is_err(), "round {round}: served past the limit");
        drop(held);
        let (status, _) = tokio::time::timeout(Duration::from_secs(5), response_on(&mut queued))
            .await
            .unwrap_or_else(|_| {
                panic!("round {round}: the freed slot never reached the queued client")
            });
        assert_eq!(status, "HTTP/1.1 200 OK", "round {round}");
    }
    proxy.drain().await;
}

/// Reads one response with a Content-Length body: its status line and body.
async fn response_on(tcp: &mut TcpStream) -> (String, String) {
    let mut got = Vec::new();
    let head_end = loop {
        if let Some(at) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut chunk))
            .await
            .expect("a response in time")
            .expect("the connection stays usable");
        assert!(
            n > 0,
            "the connection closed; got {:?}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&got[..head_end]).to_string();
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .expect("a Content-Length");
    let mut body = got[head_end..].to_vec();
    while body.len() < length {
        let mut chunk = [0u8; 4096];
        let n = tcp.read(&mut chunk).await.unwrap();
        assert!(n > 0, "the connection closed mid-body");
        body.extend_from_slice(&chunk[..n]);
    }
    assert_eq!(
        body.len(),
        length,
        "nothing after the body: responses come one by one"
    );
    let status = head.lines().next().unwrap_or("").to_string();
    (status, String::from_utf8_lossy(&body).to_string())
}

/// An upstream, a proxy whose connections give back their buffers after every
/// response, and a client connection to it.
async fn parking_at_once() -> (TestServer, Proxy, TcpStream) {
    let (up, c) = TestServer::start_self_signed().await;
    let limits = Limits {
        release_idle_buffers_after: Duration::ZERO,
        ..Limits::default()
    };
    let proxy = proxy_with(limits, &up, c.sha1_pin()).await;
    let tcp = TcpStream::connect(proxy.local_addrs()[0].1).await.unwrap();
    (up, proxy, tcp)
}

/// `release_idle_buffers_after = "0s"`: every kept-alive connection gives back
/// its parser's buffers after each response, and is given new ones for the
/// next request. Nothing a client sends may be lost or misread across that:
/// sequential requests, pipelined ones, a body, a head that arrives in pieces.
#[tokio::test]
async fn a_connection_that_gives_back_its_buffers_between_requests_serves_every_next_one() {
    let (up, _proxy, mut tcp) = parking_at_once().await;

    for i in 0..20 {
        let req = format!("GET /n{i} HTTP/1.1\r\nHost: localhost\r\n\r\n");
        tcp.write_all(req.as_bytes()).await.unwrap();
        let (status, body) = response_on(&mut tcp).await;
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert!(body.contains(&format!("\"path\":\"/n{i}\"")), "{body}");
    }
    // Pipelined: the second request is already there when the first is answered.
    tcp.write_all(b"GET /first HTTP/1.1\r\nHost: localhost\r\n\r\nGET /second HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    for path in ["/first", "/second"] {
        let (status, body) = response_on(&mut tcp).await;
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert!(body.contains(&format!("\"path\":\"{path}\"")), "{body}");
    }
    // A body, then a request after it.
    tcp.write_all(b"POST /post HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\n\r\nhello")
        .await
        .unwrap();
    let (_, body) = response_on(&mut tcp).await;
    assert!(body.contains("\"body\":\"hello\""), "{body}");
    // A client that pauses in the middle of a head (the pause lets the first
    // half reach the parser first; the answer must not depend on it).
    for _ in 0..3 {
        tcp.write_all(b"GET /slow-client HTTP/1.1\r\nHo")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        tcp.write_all(b"st: localhost\r\n\r\n").await.unwrap();
        let (status, body) = response_on(&mut tcp).await;
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert!(body.contains("\"path\":\"/slow-client\""), "{body}");
    }
    assert_eq!(up.requests(), 26);
}

/// A request refused before its body was read: what the client sends after it
/// is the rest of that body, never a request of its own, whether or not the
/// connection's buffers were given back in between.
#[tokio::test]
async fn the_unread_body_of_a_refused_request_is_never_read_as_a_request() {
    let (up, proxy, mut tcp) = parking_at_once().await;
    let smuggled = b"GET /smuggled HTTP/1.1\r\nHost: localhost\r\n\r\n";
    let head = format!(
        "POST /x HTTP/1.1\r\nHost: evil.example\r\nContent-Length: {}\r\n\r\n",
        smuggled.len()
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    let (status, _) = response_on(&mut tcp).await;
    assert_eq!(status, "HTTP/1.1 403 Forbidden");
    // The announced body, which looks like a request of its own.
    let _ = tcp.write_all(smuggled).await;
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut rest))
        .await
        .expect("the connection is closed, not left waiting");
    assert!(
        !String::from_utf8_lossy(&rest).contains("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&rest)
    );
    // Its task ends: nothing is left reading what the client sent after.
    wait_no_client_connections(&proxy).await;
    assert_eq!(up.requests(), 0, "nothing reached the upstream");
}
