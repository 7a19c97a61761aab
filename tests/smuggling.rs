//! Request smuggling and parsing, with raw bytes on a TCP socket: for each
//! malformed or ambiguous request, what the listener answers, and that the
//! upstream receives nothing, or exactly one well-formed request — never a
//! second, smuggled one.

mod common;

use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends `bytes`, then reads until the listener closes the connection (or 10 s
/// pass) and returns everything it answered.
async fn raw(addr: std::net::SocketAddr, bytes: &[u8]) -> String {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

fn statuses(answer: &str) -> Vec<u16> {
    answer
        .match_indices("HTTP/1.1 ")
        .filter_map(|(i, _)| answer.get(i + 9..i + 12)?.parse().ok())
        .collect()
}

async fn setup() -> (TestServer, RunningProxy) {
    let (up, c) = TestServer::start_self_signed().await;
    let proxy = RunningProxy::start(upstream_config(up.addr, vec![c.sha1_pin()])).await;
    (up, proxy)
}

#[tokio::test]
async fn ambiguous_framing_is_refused_and_nothing_is_forwarded() {
    let cases: &[(&str, &[u8])] = &[
        (
            "two different Content-Length",
            b"POST /a HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        ),
        (
            "Transfer-Encoding not ending in chunked",
            b"POST /a HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked, identity\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        ),
        (
            "Transfer-Encoding: xchunked",
            b"POST /a HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: xchunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        ),
        (
            "obs-fold continuation line",
            b"GET /a HTTP/1.1\r\nHost: localhost\r\nX-Folded: one\r\n two\r\n\r\n",
        ),
        ("NUL in a header value", b"GET /a HTTP/1.1\r\nHost: localhost\r\nX-Nul: a\0b\r\n\r\n"),
        ("control byte in a header name", b"GET /a HTTP/1.1\r\nHost: localhost\r\nX-\x01: a\r\n\r\n"),
        ("space before the colon", b"GET /a HTTP/1.1\r\nHost: localhost\r\nContent-Length : 5\r\n\r\nhello"),
        (
            "request line over the limit",
            &[b"GET /".as_slice(), &[b'a'; 200 * 1024], b" HTTP/1.1\r\nHost: localhost\r\n\r\n"].concat(),
        ),
        (
            "a bad first request with a second one pipelined behind it",
            b"POST /a HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: localhost\r\n\r\n",
        ),
    ];
    let (up, proxy) = setup().await;
    for (what, bytes) in cases {
        let answer = raw(proxy.addr, bytes).await;
        let got = statuses(&answer);
        assert_eq!(
            got.len(),
            1,
            "{what}: one answer, then the connection closes: {answer:?}"
        );
        // A head over max_header_bytes (64 KiB by default) gets 431.
        let want = if what.starts_with("request line") {
            431
        } else {
            400
        };
        assert_eq!(got[0], want, "{what}: refused, not forwarded: {answer:?}");
        assert!(answer.contains("connection: close"), "{what}: {answer:?}");
        assert_eq!(up.requests(), 0, "{what}: the upstream received a request");
    }
    proxy.stop().await;
}

#[tokio::test]
async fn content_length_with_transfer_encoding_forwards_one_request_framed_by_chunks() {
    // RFC 9112 §6.3: chunked wins, and the connection must not be reused. The
    // bytes after the chunked body ("GET /smuggled …") must never become a request.
    let (up, proxy) = setup().await;
    let answer = raw(
        proxy.addr,
        b"POST /a HTTP/1.1\r\nHost: localhost\r\nContent-Length: 50\r\nTransfer-Encoding: chunked\r\n\r\n\
          5\r\nhello\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: localhost\r\n\r\n",
    )
    .await;
    assert_eq!(statuses(&answer), [200], "{answer:?}");
    assert!(answer.contains("connection: close"), "{answer:?}");
    assert_eq!(up.requests(), 1);
    let echo: serde_json::Value =
        serde_json::from_str(&answer[answer.find("\r\n\r\n").unwrap() + 4..]).unwrap();
    assert_eq!(echo["path"], "/a");
    assert_eq!(echo["body"], "hello");
    assert_eq!(echo["headers"]["transfer-encoding"][0], "chunked");
    assert!(echo["headers"].get("content-length").is_none(), "{echo}");
    proxy.stop().await;
}

#[tokio::test]
async fn bare_lf_and_leading_space_te_are_parsed_one_way_and_forwarded_once() {
    let (up, proxy) = setup().await;
    for (what, bytes) in [
        (
            "bare LF line endings",
            b"GET /lf HTTP/1.1\nHost: localhost\nConnection: close\n\n".as_slice(),
        ),
        (
            "Transfer-Encoding with leading space",
            b"POST /te HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding:  chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        ),
    ] {
        let before = up.requests();
        let answer = raw(proxy.addr, bytes).await;
        let got = statuses(&answer);
        assert_eq!(got.len(), 1, "{what}: {answer:?}");
        // hyper reads both one way (LF as a line end, the space as whitespace) and
        // forwards exactly one request, re-framed in canonical form.
        assert_eq!(got[0], 200, "{what}: {answer:?}");
        assert_eq!(up.requests(), before + 1, "{what}");
    }
    proxy.stop().await;
}

#[tokio::test]
async fn an_absurd_chunk_size_never_reaches_the_upstream_as_a_complete_request() {
    let (up, proxy) = setup().await;
    let answer = raw(
        proxy.addr,
        b"POST /upload HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffffffff\r\nx\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(statuses(&answer), [400], "{answer:?}");
    assert!(
        answer.contains("x-pinproxy-error: bad-request-body"),
        "{answer:?}"
    );
    // The upload handler stores what it counted only for a body it read to the end.
    assert_eq!(
        up.stats.uploaded.load(std::sync::atomic::Ordering::SeqCst),
        0
    );
    proxy.stop().await;
}

/// A pinned but hostile upstream: each path gets an answer meant to mislead
/// the client through pinproxy.
async fn lying_server() -> (std::net::SocketAddr, TestCert) {
    let c = cert();
    let config = server_config(vec![c.der.clone()], c.key(), false);
    let addr = tls_server(config, |mut tls| async move {
        let Some(head) = read_head(&mut tls).await else {
            return;
        };
        let answer: &[u8] = if head.starts_with(b"GET /tagged ") {
            // Dressed up as pinproxy's own fingerprint-mismatch.
            b"HTTP/1.1 502 Bad Gateway\r\nX-Pinproxy-Error: fingerprint-mismatch\r\nContent-Length: 2\r\n\r\nno"
        } else if head.starts_with(b"GET /both ") {
            // Chunked with a stale Content-Length: 24 bytes of body, "3" announced.
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n18\r\nabcdefghijklmnopqrstuvwx\r\n0\r\n\r\n"
        } else if head.starts_with(b"GET /switch ") {
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\nraw bytes"
        } else {
            b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok"
        };
        let _ = tls.write_all(answer).await;
        let _ = tls.flush().await;
        let _ = tls.shutdown().await;
    })
    .await;
    (addr, c)
}

#[tokio::test]
async fn a_hostile_upstream_cannot_speak_in_pinproxys_name_or_misframe_an_answer() {
    let (addr, c) = lying_server().await;
    let proxy = RunningProxy::start(upstream_config(addr, vec![c.sha1_pin()])).await;
    let get = |path: &str| {
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").into_bytes()
    };

    let tagged = raw(proxy.addr, &get("/tagged")).await;
    assert!(tagged.starts_with("HTTP/1.1 502"), "{tagged}");
    assert!(
        !tagged.to_ascii_lowercase().contains("x-pinproxy-error"),
        "only pinproxy tags its own answers: {tagged}"
    );

    let both = raw(proxy.addr, &get("/both")).await;
    assert!(both.starts_with("HTTP/1.1 200"), "{both}");
    assert!(
        both.contains("abcdefghijklmnopqrstuvwx"),
        "the whole body, not the first 3 bytes: {both:?}"
    );
    assert!(
        !both.to_ascii_lowercase().contains("content-length: 3"),
        "{both:?}"
    );

    let switch = raw(proxy.addr, &get("/switch")).await;
    assert!(switch.starts_with("HTTP/1.1 502"), "{switch}");
    assert!(
        switch.contains("x-pinproxy-error: upstream-failed"),
        "{switch}"
    );
    assert!(switch.contains("asked for no upgrade"), "{switch}");
    assert!(!switch.contains("raw bytes"), "{switch}");

    let old = raw(proxy.addr, &get("/old")).await;
    assert!(
        old.starts_with("HTTP/1.1 200"),
        "an HTTP/1.1 client gets an HTTP/1.1 answer: {old}"
    );
    assert!(old.ends_with("ok"), "{old}");
}
