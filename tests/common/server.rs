//! A real HTTPS server on loopback (`TestServer`), raw TLS servers, and a TCP redirector.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin as StdPin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};

use super::*;

/// A server-side TLS connection, as [`tls_server`] hands it over.
pub type ServerTls = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;

/// A TLS server on loopback that runs `handle` on each connection once its
/// handshake is done; for upstreams that misbehave on purpose, byte by byte.
pub async fn tls_server<F, Fut>(config: Arc<rustls::ServerConfig>, handle: F) -> SocketAddr
where
    F: Fn(ServerTls) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = Arc::new(handle);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, handle) = (acceptor.clone(), handle.clone());
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(tcp).await {
                    handle(tls).await;
                }
            });
        }
    });
    addr
}

/// Reads one HTTP head, through its blank line; `None` if the stream ends first.
pub async fn read_head(io: &mut (impl tokio::io::AsyncRead + Unpin)) -> Option<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if io.read(&mut byte).await.unwrap_or(0) == 0 {
            return None;
        }
        head.push(byte[0]);
    }
    Some(head)
}

/// What reached the upstream.
#[derive(Default)]
pub struct Stats {
    pub tcp_accepted: AtomicUsize,
    pub tls_accepted: AtomicUsize,
    /// Decrypted application bytes read from clients (request bytes).
    pub app_bytes: AtomicU64,
    pub requests: AtomicUsize,
    /// Request body bytes of the last complete body `/upload` received.
    pub uploaded: AtomicU64,
    pub last_version: Mutex<Option<rustls::ProtocolVersion>>,
    /// TLS connections on which the client and server agreed on h2.
    pub h2_connections: AtomicUsize,
    /// TLS connections that resumed an earlier session (no certificate shown).
    pub resumed: AtomicUsize,
    /// `/slow` requests waiting for `release`.
    pub slow_waiting: watch::Sender<usize>,
}

/// Forwards each new TCP connection to the genuine server, or to the impostor
/// while `to_impostor` is set: DNS or ARP spoofing, in miniature.
pub async fn redirector(
    genuine: SocketAddr,
    impostor: SocketAddr,
) -> (SocketAddr, Arc<AtomicBool>) {
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

/// A real HTTPS server on loopback.
pub struct TestServer {
    pub addr: SocketAddr,
    pub stats: Arc<Stats>,
    /// `/slow` requests wait for this.
    pub release: Arc<Notify>,
    /// Fires each time a `/slow` request arrives.
    pub slow_arrived: Arc<Notify>,
    close: watch::Sender<()>,
    active: watch::Receiver<usize>,
}

impl TestServer {
    pub async fn start(tls: Arc<rustls::ServerConfig>) -> TestServer {
        TestServer::start_on("127.0.0.1:0".parse().unwrap(), tls).await
    }

    /// Starts on a given address (to bring a server "back" where it was).
    pub async fn start_on(addr: SocketAddr, tls: Arc<rustls::ServerConfig>) -> TestServer {
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stats = Arc::new(Stats::default());
        let release = Arc::new(Notify::new());
        let slow_arrived = Arc::new(Notify::new());
        let (close, _) = watch::channel(());
        let (active_tx, active) = watch::channel(0usize);
        let active_tx = Arc::new(active_tx);
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        let (s, r, a, c) = (
            stats.clone(),
            release.clone(),
            slow_arrived.clone(),
            close.clone(),
        );
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                s.tcp_accepted.fetch_add(1, Ordering::SeqCst);
                let (s, r, a) = (s.clone(), r.clone(), a.clone());
                let mut close_rx = c.subscribe();
                let acceptor = acceptor.clone();
                let active_tx = active_tx.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let session = tls.get_ref().1;
                    *s.last_version.lock().unwrap() = session.protocol_version();
                    if session.alpn_protocol() == Some(b"h2") {
                        s.h2_connections.fetch_add(1, Ordering::SeqCst);
                    }
                    if session.handshake_kind() == Some(rustls::HandshakeKind::Resumed) {
                        s.resumed.fetch_add(1, Ordering::SeqCst);
                    }
                    s.tls_accepted.fetch_add(1, Ordering::SeqCst);
                    active_tx.send_modify(|n| *n += 1);
                    let io = Counting {
                        inner: tls,
                        read: s.clone(),
                    };
                    let stats = s.clone();
                    let service = service_fn(move |req| {
                        let (stats, r, a) = (stats.clone(), r.clone(), a.clone());
                        async move { Ok::<_, Infallible>(respond(req, &stats, &r, &a).await) }
                    });
                    // HTTP/1.1, or h2 when the client sends its preface (after ALPN h2).
                    let conn = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(io), service)
                        .into_owned();
                    tokio::pin!(conn);
                    tokio::select! {
                        _ = conn.as_mut() => {}
                        _ = close_rx.changed() => {
                            conn.as_mut().graceful_shutdown();
                            let _ = conn.await;
                        }
                    }
                    active_tx.send_modify(|n| *n -= 1);
                });
            }
        });
        TestServer {
            addr,
            stats,
            release,
            slow_arrived,
            close,
            active,
        }
    }

    /// Like [`TestServer::start_self_signed`], offering `alpn` (e.g. h2, http/1.1).
    pub async fn start_with_alpn(alpn: &[&[u8]]) -> (TestServer, TestCert) {
        let c = cert();
        let mut config = server_config(vec![c.der.clone()], c.key(), false);
        Arc::get_mut(&mut config).unwrap().alpn_protocols =
            alpn.iter().map(|p| p.to_vec()).collect();
        (TestServer::start(config).await, c)
    }

    /// Starts with a fresh self-signed certificate; returns it too.
    pub async fn start_self_signed() -> (TestServer, TestCert) {
        let c = cert();
        let up = TestServer::start(server_config(vec![c.der.clone()], c.key(), false)).await;
        (up, c)
    }

    /// Tells every open connection to close after its in-flight request, as a
    /// restarting server does, without waiting for them.
    pub fn restart_connections(&self) {
        let _ = self.close.send(());
    }

    /// Closes every idle connection (as a server's keep-alive timeout would) and
    /// returns once all of them are gone.
    pub async fn close_idle_connections(&self) {
        let _ = self.close.send(());
        let mut active = self.active.clone();
        active.wait_for(|n| *n == 0).await.unwrap();
    }

    /// Returns once exactly `n` TLS connections are open on the server side
    /// (fails the test, rather than hanging it, after 10 s).
    pub async fn wait_active(&self, n: usize) {
        let mut active = self.active.clone();
        let reached =
            tokio::time::timeout(Duration::from_secs(10), active.wait_for(|now| *now == n))
                .await
                .is_ok();
        assert!(
            reached,
            "expected {n} open upstream connections, have {}",
            *self.active.borrow()
        );
    }

    /// Returns once `n` `/slow` requests are waiting (fails after 10 s); then
    /// `release.notify_waiters()` lets them all finish.
    pub async fn wait_slow(&self, n: usize) {
        let mut waiting = self.stats.slow_waiting.subscribe();
        let reached = tokio::time::timeout(Duration::from_secs(10), waiting.wait_for(|w| *w >= n))
            .await
            .is_ok();
        assert!(
            reached,
            "expected {n} waiting /slow requests, have {}",
            *self.stats.slow_waiting.borrow()
        );
    }

    pub fn tcp_accepted(&self) -> usize {
        self.stats.tcp_accepted.load(Ordering::SeqCst)
    }

    pub fn resumed(&self) -> usize {
        self.stats.resumed.load(Ordering::SeqCst)
    }
    pub fn h2_connections(&self) -> usize {
        self.stats.h2_connections.load(Ordering::SeqCst)
    }

    pub fn tls_accepted(&self) -> usize {
        self.stats.tls_accepted.load(Ordering::SeqCst)
    }
    pub fn requests(&self) -> usize {
        self.stats.requests.load(Ordering::SeqCst)
    }
    pub fn app_bytes(&self) -> u64 {
        self.stats.app_bytes.load(Ordering::SeqCst)
    }
}

async fn respond(
    req: Request<Incoming>,
    stats: &Stats,
    release: &Notify,
    slow_arrived: &Notify,
) -> Response<BoxBody<Bytes, Infallible>> {
    stats.requests.fetch_add(1, Ordering::SeqCst);
    let path = req.uri().path().to_string();
    match path.as_str() {
        "/slow" => {
            // Listen for the release before saying we arrived, so none is missed.
            let released = release.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            stats.slow_waiting.send_modify(|n| *n += 1);
            slow_arrived.notify_one();
            released.await;
            stats.slow_waiting.send_modify(|n| *n -= 1);
            text(StatusCode::OK, "finally")
        }
        "/hang" => std::future::pending().await,
        "/status/204" => text(StatusCode::NO_CONTENT, ""),
        // An API that lets every web page read it (as some appliances do).
        "/cors" => {
            let mut r = text(StatusCode::OK, "readable by any page");
            r.headers_mut()
                .insert("access-control-allow-origin", "*".parse().unwrap());
            r.headers_mut()
                .insert("access-control-allow-credentials", "true".parse().unwrap());
            r
        }
        "/status/304" => {
            let mut r = text(StatusCode::NOT_MODIFIED, "");
            r.headers_mut().insert("etag", "\"v1\"".parse().unwrap());
            r
        }
        "/hop" => {
            let mut r = text(StatusCode::OK, "hop");
            let h = r.headers_mut();
            h.insert("connection", "x-resp-hop".parse().unwrap());
            h.insert("x-resp-hop", "1".parse().unwrap());
            h.insert("keep-alive", "timeout=5".parse().unwrap());
            h.insert("proxy-authenticate", "Basic".parse().unwrap());
            h.insert("x-resp-end", "1".parse().unwrap());
            r
        }
        // An upstream answer that looks like one of pinproxy's own errors.
        "/spoofed-error" => {
            let mut r = text(StatusCode::BAD_GATEWAY, "not pinproxy");
            r.headers_mut()
                .insert("x-pinproxy-error", "fingerprint-mismatch".parse().unwrap());
            r
        }
        "/upload" => {
            let mut body = req.into_body();
            let mut n = 0u64;
            loop {
                match body.frame().await {
                    Some(Ok(frame)) => n += frame.data_ref().map_or(0, |d| d.len() as u64),
                    // A body that broke off is not an upload: nothing is stored.
                    Some(Err(_)) => return text(StatusCode::BAD_REQUEST, "incomplete body"),
                    None => break,
                }
            }
            stats.uploaded.store(n, Ordering::SeqCst);
            text(StatusCode::OK, &n.to_string())
        }
        p if p.starts_with("/bytes/") => {
            let n: u64 = p["/bytes/".len()..].parse().unwrap_or(0);
            let chunked = req.uri().query() == Some("chunked");
            Response::new(Zeros::new(n, !chunked).boxed())
        }
        _ => {
            // Echo what arrived, so tests can see exactly what pinproxy sent.
            let method = req.method().to_string();
            let query = req.uri().query().unwrap_or("").to_string();
            let mut headers = serde_json::Map::new();
            for (k, v) in req.headers() {
                let entry = headers
                    .entry(k.as_str().to_string())
                    .or_insert_with(|| serde_json::Value::Array(vec![]));
                if let serde_json::Value::Array(a) = entry {
                    a.push(String::from_utf8_lossy(v.as_bytes()).into());
                }
            }
            let body = req
                .into_body()
                .collect()
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            let echo = serde_json::json!({
                "method": method, "path": path, "query": query, "headers": headers,
                "body": String::from_utf8_lossy(&body),
            });
            text(StatusCode::OK, &echo.to_string())
        }
    }
}

fn text(status: StatusCode, body: &str) -> Response<BoxBody<Bytes, Infallible>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())).boxed());
    *r.status_mut() = status;
    r
}

/// A body of `left` zero bytes, produced lazily in 64 KiB frames.
pub struct Zeros {
    left: u64,
    sized: bool,
}

impl Zeros {
    pub fn new(len: u64, sized: bool) -> Zeros {
        Zeros { left: len, sized }
    }
}

static ZEROS: [u8; 65536] = [0; 65536];

impl Body for Zeros {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: StdPin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        let n = self.left.min(ZEROS.len() as u64) as usize;
        self.left -= n as u64;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&ZEROS[..n])))))
    }
    fn is_end_stream(&self) -> bool {
        self.left == 0
    }
    fn size_hint(&self) -> SizeHint {
        if self.sized {
            SizeHint::with_exact(self.left)
        } else {
            SizeHint::default()
        }
    }
}

/// Counts decrypted bytes read from the client.
struct Counting<T> {
    inner: T,
    read: Arc<Stats>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Counting<T> {
    fn poll_read(
        mut self: StdPin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = StdPin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        self.read.app_bytes.fetch_add(n as u64, Ordering::SeqCst);
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counting<T> {
    fn poll_write(
        mut self: StdPin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        StdPin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: StdPin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        StdPin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: StdPin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        StdPin::new(&mut self.inner).poll_shutdown(cx)
    }
}
