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

/// Sends each request in turn on one kept-alive client connection and reads
/// each answer by its Content-Length; returns the bodies.
async fn bodies_on_one_connection(addr: std::net::SocketAddr, paths: &[&str]) -> Vec<String> {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let mut bodies = Vec::new();
    let mut buf = Vec::new();
    for path in paths {
        tcp.write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let body = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let text = String::from_utf8_lossy(&buf).into_owned();
                if let Some(end) = text.find("\r\n\r\n") {
                    let length: usize = text[..end]
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().to_string())
                        })
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    if buf.len() >= end + 4 + length {
                        let body =
                            String::from_utf8_lossy(&buf[end + 4..end + 4 + length]).into_owned();
                        buf.drain(..end + 4 + length);
                        return body;
                    }
                }
                let mut chunk = [0u8; 4096];
                let n = tcp.read(&mut chunk).await.unwrap();
                assert!(n > 0, "the listener closed the connection");
                buf.extend_from_slice(&chunk[..n]);
            }
        })
        .await
        .expect("an answer");
        bodies.push(body);
    }
    bodies
}

#[tokio::test]
async fn a_response_smuggled_behind_another_never_answers_the_next_request() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    // On each connection: the first request gets its answer with a forged
    // second response right behind it, in the same write; a later request on
    // that connection would read the forgery. The server numbers its answers.
    let c = cert();
    let answered = Arc::new(AtomicUsize::new(0));
    let counter = answered.clone();
    let config = server_config(vec![c.der.clone()], c.key(), false);
    let addr = tls_server(config, move |mut tls| {
        let counter = counter.clone();
        async move {
            let mut first = true;
            while read_head(&mut tls).await.is_some() {
                let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
                let mut answer = format!("HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\nanswer{n}");
                if first {
                    answer.push_str("HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nforged");
                }
                first = false;
                if tls.write_all(answer.as_bytes()).await.is_err() {
                    return;
                }
                let _ = tls.flush().await;
            }
        }
    })
    .await;
    let proxy = RunningProxy::start(upstream_config(addr, vec![c.sha1_pin()])).await;
    let bodies = bodies_on_one_connection(proxy.addr, &["/a", "/b", "/c"]).await;
    assert_eq!(
        bodies,
        ["answer1", "answer2", "answer3"],
        "each request gets the server's answer to it, never the bytes that followed another"
    );
    assert_eq!(answered.load(Ordering::SeqCst), 3);
    proxy.stop().await;
}

#[tokio::test]
async fn a_chunked_answer_that_breaks_mid_body_is_not_passed_on_as_complete() {
    // The body announces chunks, sends one, then garbage where the next size
    // should be: the client must not see a complete answer (a final 0-chunk).
    let c = cert();
    let config = server_config(vec![c.der.clone()], c.key(), false);
    let addr = tls_server(config, |mut tls| async move {
        if read_head(&mut tls).await.is_none() {
            return;
        }
        let _ = tls
            .write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\nmore\r\n0\r\n\r\n")
            .await;
        let _ = tls.flush().await;
        // Held open: the answer must end for its framing, not for a close.
        let mut rest = Vec::new();
        let _ = tls.read_to_end(&mut rest).await;
    })
    .await;
    let proxy = RunningProxy::start(upstream_config(addr, vec![c.sha1_pin()])).await;
    let answer = raw(
        proxy.addr,
        b"GET /x HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    assert!(
        answer.contains("hello"),
        "what came before the break: {answer:?}"
    );
    assert!(!answer.contains("more"), "{answer:?}");
    assert!(
        !answer.ends_with("0\r\n\r\n"),
        "a broken body must not end as a complete one: {answer:?}"
    );
    proxy.stop().await;
}
