//! Test harness: certificates made at test time, a real TLS upstream that
//! records what reaches it, the proxy in-process or as the built binary, and a
//! real HTTP client. Everything listens on 127.0.0.1 with OS-chosen ports.
#![allow(dead_code)]

use std::convert::Infallible;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::pin::Pin as StdPin;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use pinproxy::config::{Config, UpstreamConfig};
use pinproxy::server::Proxy;
use pinproxy::tls::pin::{Fingerprints, Pin};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch, Notify};

// ---------------------------------------------------------------- certificates

/// A certificate with its key, in every form the tests need.
pub struct TestCert {
    pub der: CertificateDer<'static>,
    pub key_der: Vec<u8>,
    pub pem: String,
}

impl TestCert {
    pub fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(self.key_der.clone().into())
    }
    pub fn fingerprints(&self) -> Fingerprints {
        Fingerprints::of(self.der.as_ref())
    }
    pub fn sha1_pin(&self) -> Pin {
        Pin::Sha1(self.fingerprints().sha1)
    }
}

pub fn cert() -> TestCert {
    make_cert(false)
}

/// A certificate valid from yesterday for `days` more days.
pub fn cert_valid_for(days: i64) -> TestCert {
    let now = time::OffsetDateTime::now_utc();
    make_cert_with(|params| {
        params.not_before = now - time::Duration::days(1);
        params.not_after = now + time::Duration::days(days);
    })
}

/// A certificate whose validity ended in 2001.
pub fn expired_cert() -> TestCert {
    make_cert(true)
}

fn make_cert(expired: bool) -> TestCert {
    make_cert_with(|params| {
        if expired {
            params.not_before = rcgen::date_time_ymd(2000, 1, 1);
            params.not_after = rcgen::date_time_ymd(2001, 1, 1);
        }
    })
}

fn make_cert_with(validity: impl FnOnce(&mut rcgen::CertificateParams)) -> TestCert {
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "pinproxy test upstream");
    validity(&mut params);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    TestCert {
        der: cert.der().clone(),
        key_der: key.serialize_der(),
        pem: cert.pem(),
    }
}

/// Presents `chain` and signs with `key`, whether or not they belong together:
/// rustls' own builder refuses a mismatched pair, an attacker's server would not.
#[derive(Debug)]
struct Fixed(Arc<CertifiedKey>);

impl ResolvesServerCert for Fixed {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

pub fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    tls12_only: bool,
) -> Arc<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let signing_key = provider.key_provider.load_private_key(key).unwrap();
    let versions: &[&rustls::SupportedProtocolVersion] = if tls12_only {
        &[&rustls::version::TLS12]
    } else {
        rustls::DEFAULT_VERSIONS
    };
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(Fixed(Arc::new(CertifiedKey::new(
            chain,
            signing_key,
        )))));
    Arc::new(config)
}

// ---------------------------------------------------------------- upstream

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
pub struct Upstream {
    pub addr: SocketAddr,
    pub stats: Arc<Stats>,
    /// `/slow` requests wait for this.
    pub release: Arc<Notify>,
    /// Fires each time a `/slow` request arrives.
    pub slow_arrived: Arc<Notify>,
    close: watch::Sender<()>,
    active: watch::Receiver<usize>,
}

impl Upstream {
    pub async fn start(tls: Arc<rustls::ServerConfig>) -> Upstream {
        Upstream::start_on("127.0.0.1:0".parse().unwrap(), tls).await
    }

    /// Starts on a given address (to bring a server "back" where it was).
    pub async fn start_on(addr: SocketAddr, tls: Arc<rustls::ServerConfig>) -> Upstream {
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
        Upstream {
            addr,
            stats,
            release,
            slow_arrived,
            close,
            active,
        }
    }

    /// Like [`Upstream::start_self_signed`], offering `alpn` (e.g. h2, http/1.1).
    pub async fn start_with_alpn(alpn: &[&[u8]]) -> (Upstream, TestCert) {
        let c = cert();
        let mut config = server_config(vec![c.der.clone()], c.key(), false);
        Arc::get_mut(&mut config).unwrap().alpn_protocols =
            alpn.iter().map(|p| p.to_vec()).collect();
        (Upstream::start(config).await, c)
    }

    /// Starts with a fresh self-signed certificate; returns it too.
    pub async fn start_self_signed() -> (Upstream, TestCert) {
        let c = cert();
        let up = Upstream::start(server_config(vec![c.der.clone()], c.key(), false)).await;
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

// ---------------------------------------------------------------- proxy

/// An upstream entry pointing at `target`, SNI/Host `localhost`, listening on any port.
pub fn upstream_config(target: SocketAddr, pins: Vec<Pin>) -> UpstreamConfig {
    let ip = target.ip().to_string();
    let mut cfg = UpstreamConfig::new(
        "test",
        "127.0.0.1:0".parse::<SocketAddr>().unwrap(),
        &ip,
        target.port(),
        pins,
    );
    cfg.server_name = Some(pinproxy::config::parse_server_name("localhost").unwrap());
    cfg.connect_timeout = Duration::from_secs(5);
    cfg.handshake_timeout = Duration::from_secs(5);
    cfg.response_timeout = Duration::from_secs(30);
    cfg
}

/// A config of just these upstreams: no admin, no proxy listener, 5 s drain.
pub fn config_of(upstreams: Vec<UpstreamConfig>) -> Config {
    Config {
        admin: None,
        proxy: None,
        limits: Default::default(),
        shutdown_timeout: Duration::from_secs(5),
        upstreams,
    }
}

/// The proxy running in this process.
pub struct RunningProxy {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    done: Option<tokio::task::JoinHandle<()>>,
}

impl RunningProxy {
    pub async fn start(cfg: UpstreamConfig) -> RunningProxy {
        let proxy = Proxy::bind(&config_of(vec![cfg])).await.unwrap();
        let addr = proxy.local_addrs()[0].1;
        let (tx, rx) = oneshot::channel::<()>();
        let done = tokio::spawn(proxy.serve(async move {
            let _ = rx.await;
        }));
        RunningProxy {
            addr,
            stop: Some(tx),
            done: Some(done),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(done) = self.done.take() {
            done.await.unwrap();
        }
    }
}

// ---------------------------------------------------------------- client

pub type TestBody = BoxBody<Bytes, Infallible>;

/// One client connection to `addr` that stays open: every request sent on it
/// reaches the same proxy worker (unlike [`client`], which may open new ones).
pub struct KeptConnection(hyper::client::conn::http1::SendRequest<TestBody>);

impl KeptConnection {
    pub async fn open(addr: SocketAddr) -> KeptConnection {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .unwrap();
        tokio::spawn(conn);
        KeptConnection(sender)
    }

    /// Starts a GET of `path` once the previous response is done; the returned
    /// future can be spawned while the connection is used for the next one.
    pub async fn get(
        &mut self,
        path: &str,
    ) -> impl std::future::Future<Output = hyper::Result<Response<Incoming>>> {
        self.0.ready().await.unwrap();
        let req = Request::get(path)
            .header("host", "localhost")
            .body(empty())
            .unwrap();
        self.0.send_request(req)
    }
}

pub fn client() -> Client<HttpConnector, TestBody> {
    Client::builder(TokioExecutor::new()).build_http()
}

pub fn empty() -> TestBody {
    Full::new(Bytes::new()).boxed()
}

pub fn full(s: impl Into<Bytes>) -> TestBody {
    Full::new(s.into()).boxed()
}

pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.text()))
    }
    pub fn error_tag(&self) -> Option<&str> {
        self.headers
            .get("x-pinproxy-error")
            .and_then(|v| v.to_str().ok())
    }
}

pub async fn send(client: &Client<HttpConnector, TestBody>, req: Request<TestBody>) -> Answer {
    let resp = client.request(req).await.expect("the proxy answered");
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.expect("whole body").to_bytes();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

pub async fn get(url: &str) -> Answer {
    let req = Request::get(url).body(empty()).unwrap();
    send(&client(), req).await
}

// ---------------------------------------------------------------- binary

/// The built `pinproxy` binary, logging JSON lines to stdout.
pub struct Binary {
    pub child: Child,
    /// `None` once [`Binary::discard_output`] took it.
    lines: Option<std::io::Lines<BufReader<ChildStdout>>>,
    pub seen: Vec<String>,
}

impl Binary {
    pub fn spawn(args: &[&str], env: &[(&str, &str)]) -> Binary {
        Binary::spawn_with_open_files(None, args, env)
    }

    /// Like [`Binary::spawn`], with the open-file limit (soft and hard) set to `nofile`.
    pub fn spawn_with_open_files(
        nofile: Option<u32>,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Binary {
        Binary::spawn_after(nofile.map(|n| format!("ulimit -n {n}")), args, env)
    }

    /// Like [`Binary::spawn`], with the file-creation mask set to `umask` (octal).
    pub fn spawn_with_umask(umask: &str, args: &[&str], env: &[(&str, &str)]) -> Binary {
        Binary::spawn_after(Some(format!("umask {umask}")), args, env)
    }

    /// Runs the binary from a shell that runs `setup` first, if given.
    fn spawn_after(setup: Option<String>, args: &[&str], env: &[(&str, &str)]) -> Binary {
        let mut cmd = match setup {
            Some(setup) => {
                let mut sh = Command::new("sh");
                sh.args([
                    "-c",
                    &format!("{setup} && exec \"$0\" \"$@\""),
                    env!("CARGO_BIN_EXE_pinproxy"),
                ]);
                sh
            }
            None => Command::new(env!("CARGO_BIN_EXE_pinproxy")),
        };
        cmd.args(["--log-format", "json"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn pinproxy");
        let stdout = child.stdout.take().unwrap();
        Binary {
            child,
            lines: Some(BufReader::new(stdout).lines()),
            seen: Vec::new(),
        }
    }

    /// Reads log lines until one satisfies `pred`; panics if the process ends first.
    pub fn wait_for(&mut self, pred: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        let lines = self.lines.as_mut().expect("output not discarded");
        for line in lines.by_ref() {
            let line = line.expect("read stdout");
            self.seen.push(line.clone());
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                if pred(&v) {
                    return v;
                }
            }
        }
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut err);
        }
        panic!(
            "pinproxy exited before the expected log line; stdout: {:?} stderr: {err}",
            self.seen
        );
    }

    /// The first line so far that satisfies `pred`, or else the next one
    /// (lines from different threads may come in either order).
    pub fn seen_or_wait(&mut self, pred: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        let seen = self
            .seen
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(&pred);
        seen.unwrap_or_else(|| self.wait_for(pred))
    }

    /// Waits for the next `listening` line and returns it.
    pub fn listening_line(&mut self) -> serde_json::Value {
        self.wait_for(|v| v["message"] == "listening")
    }

    /// Waits for the `listening` line and returns the bound address.
    pub fn listening(&mut self) -> SocketAddr {
        let v = self.wait_for(|v| v["message"] == "listening");
        v["listen"].as_str().unwrap().parse().unwrap()
    }

    /// Waits for the admin endpoint's line and returns its address.
    pub fn admin(&mut self) -> SocketAddr {
        self.admin_line()["listen"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap()
    }

    /// Waits for the admin endpoint's line (it is serving then) and returns it.
    pub fn admin_line(&mut self) -> serde_json::Value {
        self.seen_or_wait(|v| {
            v["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("admin endpoint"))
        })
    }

    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Reads the rest of stdout (the process must be ending) and returns every line.
    pub fn finish(mut self) -> (std::process::ExitStatus, Vec<String>) {
        for line in self.lines.iter_mut().flatten() {
            self.seen.push(line.unwrap_or_default());
        }
        let status = self.child.wait().unwrap();
        (status, std::mem::take(&mut self.seen))
    }

    /// Reads and drops the rest of stdout on a thread of its own, so a test that
    /// makes the process log a lot never blocks it on a full pipe.
    pub fn discard_output(&mut self) {
        if let Some(lines) = self.lines.take() {
            std::thread::spawn(move || lines.for_each(drop));
        }
    }

    /// Peak resident memory so far, in KiB (Linux).
    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `python3` that can import `packages` (PyPI names): the system's, or with
/// the missing ones installed once into target/test-python.
pub fn python_with(packages: &[&str]) -> Command {
    static INSTALL: Mutex<()> = Mutex::new(());
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/target/test-python");
    let modules: Vec<String> = packages.iter().map(|p| p.replace('-', "_")).collect();
    let imports = |pythonpath: Option<&str>| {
        let mut check = Command::new("python3");
        check.args(["-c", &format!("import {}", modules.join(", "))]);
        if let Some(p) = pythonpath {
            check.env("PYTHONPATH", p);
        }
        check
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let _one_at_a_time = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    let pythonpath = if imports(None) {
        None
    } else {
        if !imports(Some(dir)) {
            let ok = Command::new("python3")
                .args(["-m", "pip", "install", "--quiet", "--target", dir])
                .args(packages)
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "pip install {packages:?} (needed by the tests) failed");
        }
        Some(dir)
    };
    let mut cmd = Command::new("python3");
    if let Some(p) = pythonpath {
        cmd.env("PYTHONPATH", p);
    }
    cmd
}

/// Writes `text` to a fresh temporary file and returns it (kept alive by the caller).
pub fn temp_file(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    std::io::Write::write_all(&mut f, text.as_bytes()).unwrap();
    f
}

/// A config file for the binary: one upstream at `target`.
pub fn config_text(target: SocketAddr, pin: &Pin, extra: &str) -> String {
    format!(
        "shutdown_timeout = \"10s\"\n[[upstream]]\nname = \"gaia\"\nlisten = \"127.0.0.1:0\"\naddress = \"{target}\"\nserver_name = \"localhost\"\nfingerprints = [\"{pin}\"]\n{extra}"
    )
}
