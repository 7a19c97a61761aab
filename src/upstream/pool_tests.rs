//! The pool against a pinned TLS server on loopback, at the moments an
//! integration test cannot reach: here the test holds the worker's runtime
//! (a current-thread one, as each worker is) and so decides what runs when.

use std::io::Read;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{RequestBody, Upstream, UpstreamError};
use crate::config::{parse_server_name, UpstreamConfig};
use crate::telemetry::metrics::UpstreamMetrics;
use crate::tls::pin::{CertPin, Fingerprints};

/// A self-signed certificate for `localhost` and the server config that shows it.
fn server_config() -> (Arc<rustls::ServerConfig>, CertPin) {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let der = made.cert.der().clone();
    let pin = CertPin::Sha1(Fingerprints::of(&der).sha1);
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(made.key_pair.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![der], key)
    .unwrap();
    (Arc::new(config), pin)
}

/// Reads one request head (the tests send no bodies); false if the stream ends first.
async fn read_head(io: &mut (impl tokio::io::AsyncRead + Unpin)) -> bool {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if io.read(&mut byte).await.unwrap_or(0) == 0 {
            return false;
        }
        head.push(byte[0]);
    }
    true
}

fn upstream_to(addr: SocketAddr, pin: CertPin) -> Upstream {
    let mut cfg = UpstreamConfig::new(
        "test",
        "127.0.0.1:0".parse::<SocketAddr>().unwrap(),
        &addr.ip().to_string(),
        addr.port(),
        vec![pin],
    );
    cfg.server_name = Some(parse_server_name("localhost").unwrap());
    // Bounds a request left waiting: the failure this file guards against.
    cfg.response_timeout = Duration::from_secs(5);
    Upstream::new(&cfg, UpstreamMetrics::detached())
}

async fn get(upstream: &Upstream) -> Result<(StatusCode, Bytes), UpstreamError> {
    let uri = upstream.uri_for(&"/x".parse().unwrap()).unwrap();
    let req = Request::get(uri).body(RequestBody::empty()).unwrap();
    let resp = upstream.send(req).await?;
    let status = resp.status();
    // Read to the end: the connection goes back to the pool with the body.
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Ok((status, body))
}

/// The server closes an idle pooled connection, and the next request takes it
/// from the pool before the pool's tending task has run (the close is known to
/// the reactor, the task is only woken). The request finds the close on its
/// first poll, before any of it is written, and goes out on a new connection:
/// it is neither lost nor left waiting until `response_timeout`.
#[tokio::test(flavor = "current_thread")]
async fn a_request_that_takes_a_connection_the_server_just_closed_goes_out_on_a_new_one() {
    // The kernel may hand the close to the pooled socket a moment after the
    // server's word that it closed, if its network work was deferred (a busy
    // machine). The request is then written into the closing connection and
    // fails as any HTTP client's would, not sent twice: that run did not reach
    // the moment this test is about, so it runs again, a few times at most.
    for attempt in 1..=5 {
        match closed_while_idle_then_taken().await {
            (Ok(answer), requests) => {
                assert_eq!(answer, (StatusCode::OK, Bytes::from("second")));
                assert_eq!(requests, 2, "each request reached the server once");
                return;
            }
            (Err(e @ UpstreamError::Timeout { .. }), _) => {
                panic!("the request waited instead of going out again: {e}")
            }
            (Err(e), _) if attempt < 5 => eprintln!("attempt {attempt}: {e}; again"),
            (Err(e), _) => panic!("five attempts, each met the close too late: {e}"),
        }
    }
}

/// One run: the answer to the request that took the closed connection, and how
/// many requests reached the server.
async fn closed_while_idle_then_taken() -> (Result<(StatusCode, Bytes), UpstreamError>, usize) {
    let (config, pin) = server_config();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (close, closing) = mpsc::channel::<()>();
    let (mut closed, mut said_closed) = std::os::unix::net::UnixStream::pair().unwrap();
    let requests = Arc::new(AtomicUsize::new(0));
    let seen = requests.clone();
    // The server runs on a thread and runtime of its own: the test's runtime
    // must not run while the server closes.
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            listener.set_nonblocking(true).unwrap();
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let acceptor = tokio_rustls::TlsAcceptor::from(config);
            for answer in [&b"first"[..], b"second"] {
                // The second comes only when the request went out again.
                let Ok(accepted) =
                    tokio::time::timeout(Duration::from_secs(10), listener.accept()).await
                else {
                    return;
                };
                let mut tls = acceptor.accept(accepted.unwrap().0).await.unwrap();
                if !read_head(&mut tls).await {
                    return;
                }
                seen.fetch_add(1, Ordering::SeqCst);
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
                    answer.len()
                );
                tls.write_all(head.as_bytes()).await.unwrap();
                tls.write_all(answer).await.unwrap();
                tls.flush().await.unwrap();
                if answer == b"first" {
                    // Idle now, kept alive; closed when the test says so.
                    if closing.recv().is_err() {
                        return;
                    }
                    tls.shutdown().await.unwrap();
                    drop(tls);
                    std::io::Write::write_all(&mut said_closed, b"x").unwrap();
                }
            }
        });
    });
    let upstream = upstream_to(addr, pin);

    assert_eq!(
        get(&upstream).await.unwrap(),
        (StatusCode::OK, Bytes::from("first"))
    );
    // The connection is idle in the pool; its tending task, queued, runs now
    // and polls it once (from then on a close wakes that task).
    tokio::task::yield_now().await;

    close.send(()).unwrap();
    // Blocking on purpose: this runtime's reactor must not see the close yet.
    let mut byte = [0u8; 1];
    closed.read_exact(&mut byte).unwrap();
    // One turn of the reactor: it finds the close and wakes the tending task,
    // but the test's own future is polled before any woken task runs, so the
    // request below takes the closed connection from the pool.
    tokio::task::yield_now().await;
    let second = get(&upstream).await;
    (second, requests.load(Ordering::SeqCst))
}
