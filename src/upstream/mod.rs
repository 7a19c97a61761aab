//! One upstream server: the pinned TLS connector, the connection pool over it,
//! and the classification of everything that can go wrong on the way there.
//!
//! Every new connection runs a TLS handshake through [`PinVerifier`] (or resumes a
//! session that one of them verified under the same pins); the pools only ever hand
//! out connections that passed it, so the pin is checked on every connection before
//! a request byte is written.

use std::future::Future;
use std::io;
use std::pin::Pin as StdPin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::uri::{Authority, Scheme};
use http::{HeaderValue, Request, Response, StatusCode, Uri};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use prometheus_client::metrics::gauge::Gauge;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{watch, Semaphore};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::config::Http2;
use crate::config::UpstreamConfig;
use crate::metrics::{Handshake, UpstreamMetrics};
use crate::tls::verify::{self, PinMismatch, PinVerifier};
use crate::workers;

/// The body sent upstream: the client's own (within `max_request_body`), or none.
pub type RequestBody =
    http_body_util::Either<http_body_util::Limited<Incoming>, http_body_util::Empty<bytes::Bytes>>;

/// Why a request could not be answered by the upstream.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    /// The presented certificate matched no pin.
    #[error("{0}")]
    FingerprintMismatch(PinMismatch),
    /// TLS failed for another reason (not TLS, unsupported version or cipher, bad signature…).
    #[error("TLS handshake with {address} failed: {reason}")]
    Handshake {
        /// `host:port` of the upstream.
        address: String,
        /// rustls' or the socket's explanation, with a hint where one helps.
        reason: String,
    },
    /// DNS or TCP failure.
    #[error("cannot connect to {address}: {reason}")]
    Connect {
        /// `host:port` of the upstream.
        address: String,
        /// What the resolver or socket said.
        reason: String,
    },
    /// A connect, handshake or response timeout.
    #[error("{stage} with {address} timed out after {after:?}")]
    Timeout {
        /// `host:port` of the upstream.
        address: String,
        /// `connect`, `TLS handshake` or `waiting for the response`.
        stage: &'static str,
        /// The configured limit.
        after: Duration,
    },
    /// `max_connections` connections to the upstream were busy for `connect_timeout`.
    #[error("all {max_connections} connections to upstream {upstream:?} (max_connections) stayed busy for {waited:?}")]
    Busy {
        /// The upstream's name.
        upstream: String,
        /// The configured cap.
        max_connections: usize,
        /// How long the request waited for a slot.
        waited: Duration,
    },
    /// The client's request body broke while it was being forwarded (malformed
    /// chunked encoding, or the client went away).
    #[error("the request body from the client broke off: {reason}")]
    ClientBody {
        /// hyper's explanation.
        reason: String,
        /// It passed `max_request_body`.
        too_large: bool,
    },
    /// The connection broke after it was established (reset, closed early, bad HTTP).
    #[error("the connection to {address} failed: {reason}")]
    Protocol {
        /// `host:port` of the upstream.
        address: String,
        /// hyper's explanation.
        reason: String,
        /// The connection closed or reset after the request went out and before a
        /// response arrived.
        closed_early: bool,
    },
}

impl UpstreamError {
    /// The status the client gets and the `X-Pinproxy-Error` value.
    pub fn status_and_tag(&self) -> (StatusCode, &'static str) {
        match self {
            UpstreamError::FingerprintMismatch(_) => {
                (StatusCode::BAD_GATEWAY, "fingerprint-mismatch")
            }
            UpstreamError::Handshake { .. } => (StatusCode::BAD_GATEWAY, "handshake-failed"),
            UpstreamError::Connect { .. } => (StatusCode::BAD_GATEWAY, "connect-failed"),
            UpstreamError::Timeout { .. } => (StatusCode::GATEWAY_TIMEOUT, "timeout"),
            UpstreamError::Protocol { .. } => (StatusCode::BAD_GATEWAY, "upstream-failed"),
            UpstreamError::ClientBody { .. } => (StatusCode::BAD_REQUEST, "bad-request-body"),
            UpstreamError::Busy { .. } => (StatusCode::SERVICE_UNAVAILABLE, "upstream-busy"),
        }
    }
}

/// A configured upstream with its connection pool.
pub struct Upstream {
    /// The upstream's name from the config.
    pub name: Arc<str>,
    address: String,
    /// The `:authority` and `Host` every forwarded request carries.
    origin: Result<(Authority, HeaderValue), String>,
    response_timeout: Duration,
    /// One pool per connection worker, so a request uses connections that run on
    /// its own thread (see [`crate::workers`]).
    clients: Vec<Client<Connector, RequestBody>>,
    h2_pool: Arc<AtomicUsize>,
    pool_open: Arc<[AtomicUsize]>,
    /// `max_connections` (shared with the connectors).
    slots: Arc<Semaphore>,
    /// Set once this upstream's pins, address or TLS settings are revoked by a
    /// reload; the tunnels opened through it watch it. Shared with the
    /// `Upstream` that replaces this one when a reload keeps those settings.
    revoked: Arc<watch::Sender<bool>>,
    /// HTTP/1.1-only pool for upgrades (WebSocket needs HTTP/1.1); the first of
    /// `clients` when `http2 = "never"`.
    upgrades: Client<Connector, RequestBody>,
    metrics: Arc<UpstreamMetrics>,
}

impl Upstream {
    /// Builds the connector and pool for `cfg`. Nothing connects until the first request.
    ///
    /// Each call makes a new rustls `ClientConfig` and an empty pool: an `Upstream`
    /// is built once per pin set, so nothing verified under old pins is reused.
    pub fn new(cfg: &UpstreamConfig, metrics: UpstreamMetrics) -> Upstream {
        // One verifier (and so one TLS config and session cache) per address and pin set.
        let verifiers: Vec<Arc<dyn rustls::client::danger::ServerCertVerifier>> = cfg
            .targets()
            .into_iter()
            .map(|t| {
                Arc::new(
                    PinVerifier::new(&cfg.name, t.pins, metrics.certificate_not_after.clone())
                        .with_legacy_crypto(cfg.legacy_crypto),
                ) as Arc<dyn rustls::client::danger::ServerCertVerifier>
            })
            .collect();
        let shared = Shared::new(cfg);
        // The pools of one upstream share its TLS configs (and session caches),
        // failover state and max_connections; max_idle_connections is split
        // between them.
        // `counted`: its connections count towards the choice of pool at
        // max_connections (only the per-worker pools are candidates).
        let pool = |http2: Http2, count: usize, idle: usize, counted: bool| {
            let connector = Connector::new(
                cfg,
                verifiers.clone(),
                metrics.clone(),
                http2,
                shared.clone(),
            );
            (0..count)
                .map(|index| {
                    Client::builder(TokioExecutor::new())
                        .pool_timer(TokioTimer::new())
                        .timer(TokioTimer::new())
                        .pool_idle_timeout(cfg.idle_timeout)
                        .pool_max_idle_per_host(idle)
                        .http2_only(http2 == Http2::Always)
                        // Host comes from the config, never from the client's request.
                        .set_host(false)
                        .build(connector.for_pool(if counted { index } else { NOT_POOLED }))
                })
                .collect::<Vec<_>>()
        };
        let count = workers::count();
        let clients = pool(
            cfg.http2,
            count,
            cfg.max_idle_connections.div_ceil(count),
            true,
        );
        let upgrades = match cfg.http2 {
            Http2::Never => clients[0].clone(),
            _ => pool(Http2::Never, 1, cfg.max_idle_connections, false).remove(0),
        };
        let host = cfg.effective_server_name();
        let host_value = if cfg.port == 443 {
            bracket_v6(&host)
        } else {
            crate::config::join_host_port(&host, cfg.port)
        };
        // Also HTTP/2's :authority, so it names the server as Host does. A config
        // loaded from a file or flags always has a valid one (server names are
        // rustls' ServerName, hosts checked names or IPs); only a hand-built
        // UpstreamConfig can lack it, and its requests then get a 502 saying so.
        let origin = host_value
            .parse::<Authority>()
            .ok()
            .zip(HeaderValue::from_str(&host_value).ok())
            .ok_or_else(|| format!("{host_value:?} is not a valid host for the Host header"));
        Upstream {
            name: cfg.name.as_str().into(),
            address: cfg.address(),
            origin,
            response_timeout: cfg.response_timeout,
            clients,
            h2_pool: shared.h2_pool.clone(),
            pool_open: shared.pool_open.clone(),
            slots: shared.slots.clone(),
            upgrades,
            revoked: Arc::new(watch::channel(false).0),
            metrics: Arc::new(metrics),
        }
    }

    /// Makes the tunnels opened through `previous` this upstream's too: a reload
    /// changed something (timeouts, pool sizes) that does not touch trust.
    pub(crate) fn keep_tunnels_of(&mut self, previous: &Upstream) {
        self.revoked = previous.revoked.clone();
    }

    /// Closes every tunnel opened through this upstream (its pins, address or TLS
    /// settings were changed or removed) and returns how many there were.
    pub(crate) fn revoke(&self) -> usize {
        let open = self.revoked.receiver_count();
        self.revoked.send_replace(true);
        open
    }

    /// What a tunnel opened through this upstream watches for revocation.
    pub(crate) fn revocation(&self) -> watch::Receiver<bool> {
        self.revoked.subscribe()
    }

    /// This upstream's metric handles.
    pub fn metrics(&self) -> &Arc<UpstreamMetrics> {
        &self.metrics
    }

    /// The Host header every forwarded request carries, or why there is none.
    pub fn host_header(&self) -> Result<&HeaderValue, &str> {
        self.origin
            .as_ref()
            .map(|(_, host)| host)
            .map_err(String::as_str)
    }

    /// `https://address` plus the path and query of `uri`.
    pub fn uri_for(&self, uri: &Uri) -> Result<Uri, http::Error> {
        let path = uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
        let mut builder = Uri::builder().scheme(Scheme::HTTPS);
        if let Ok((authority, _)) = &self.origin {
            builder = builder.authority(authority.clone());
        }
        builder.path_and_query(path).build()
    }

    /// Sends a prepared request and waits (up to `response_timeout`) for the response head.
    pub async fn send(
        &self,
        req: Request<RequestBody>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let client = if req.headers().contains_key(http::header::UPGRADE) {
            &self.upgrades
        } else {
            // HTTP/2 multiplexes: once the server is known to speak it, every
            // worker sends through the pool holding that connection, so the
            // server sees one connection, not one per worker.
            let pool = match self.h2_pool.load(Ordering::Relaxed) {
                // At max_connections a worker cannot open one more, and the idle
                // connections of the others hold the slots: use the pool with the
                // most connections, where one will come free first.
                NO_H2 if self.slots.available_permits() == 0 => (0..self.clients.len())
                    .max_by_key(|&p| self.pool_open[p].load(Ordering::Relaxed))
                    .unwrap_or(0),
                NO_H2 => workers::current() % self.clients.len(),
                pool => pool,
            };
            &self.clients[pool]
        };
        self.send_with(client, req).await
    }

    async fn send_with(
        &self,
        client: &Client<Connector, RequestBody>,
        req: Request<RequestBody>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        match tokio::time::timeout(self.response_timeout, client.request(req)).await {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => Err(self.classify(&e)),
            Err(_) => Err(UpstreamError::Timeout {
                address: self.address.clone(),
                stage: "waiting for the response",
                after: self.response_timeout,
            }),
        }
    }

    fn classify(&self, err: &hyper_util::client::legacy::Error) -> UpstreamError {
        let mut source = std::error::Error::source(err);
        while let Some(e) = source {
            if let Some(connect) = e.downcast_ref::<ConnectError>() {
                return connect.0.clone();
            }
            // The request body we were streaming came from the client and broke
            // (malformed chunking, or the client went away): the client's fault.
            if let Some(h) = e.downcast_ref::<hyper::Error>() {
                // hyper's only user errors with a cause are those of the request body.
                if h.is_user() && e.source().is_some() {
                    return UpstreamError::ClientBody {
                        reason: chain(e),
                        too_large: too_large(e),
                    };
                }
            }
            source = e.source();
        }
        UpstreamError::Protocol {
            address: self.address.clone(),
            reason: chain(err),
            closed_early: closed_early(err),
        }
    }
}

impl UpstreamError {
    /// True when the next address of an upstream should be tried: this one could
    /// not be reached, or did not answer in time. Never for a pin mismatch.
    pub fn fails_over(&self) -> bool {
        matches!(
            self,
            UpstreamError::Connect { .. }
                | UpstreamError::Timeout {
                    stage: "connect" | "TLS handshake",
                    ..
                }
        )
    }
}

fn closed_early(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(err);
    while let Some(e) = source {
        if let Some(h) = e.downcast_ref::<hyper::Error>() {
            if h.is_incomplete_message() {
                return true;
            }
        }
        if let Some(io) = e.downcast_ref::<io::Error>() {
            if matches!(
                io.kind(),
                io::ErrorKind::ConnectionReset
                    | io::ErrorKind::BrokenPipe
                    // rustls: the peer closed without close_notify, as a server
                    // dropping an idle keep-alive connection often does.
                    | io::ErrorKind::UnexpectedEof
            ) {
                return true;
            }
        }
        source = e.source();
    }
    false
}

fn too_large(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(err);
    while let Some(e) = source {
        if e.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = e.source();
    }
    false
}

fn bracket_v6(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

/// The error and all its causes, joined by ": ".
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        let text = e.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = e.source();
    }
    out
}

/// The connector's error: an [`UpstreamError`] that hyper-util carries as a source.
#[derive(Debug)]
pub struct ConnectError(UpstreamError);

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for ConnectError {}

/// Opens pinned TLS connections to one configured address.
#[derive(Clone)]
pub struct Connector {
    inner: Arc<ConnectorInner>,
    /// Which of the upstream's pools this connector fills.
    pool: usize,
}

struct ConnectorInner {
    upstream: String,
    targets: Vec<TargetConn>,
    failover: Arc<Failover>,
    /// `max_connections`: one permit per open connection, shared by the upstream's pools.
    slots: Arc<Semaphore>,
    max_connections: usize,
    connect_timeout: Duration,
    handshake_timeout: Duration,
    http2: Http2,
    h2_pool: Arc<AtomicUsize>,
    pool_open: Arc<[AtomicUsize]>,
    metrics: UpstreamMetrics,
}

/// One address of an upstream with the TLS config that pins its certificate.
struct TargetConn {
    address: String,
    /// For SNI; an error only for a hand-built config (see `Upstream::new`).
    server_name: Result<ServerName<'static>, String>,
    tls: TlsConnector,
}

/// Which address of an upstream is in use: the first, until it cannot be
/// reached; then the next that can, for `failback_after`, before the first is
/// tried again. Shared by an upstream's pools.
pub struct Failover {
    current: AtomicUsize,
    since: Mutex<Instant>,
    failback_after: Duration,
}

impl Failover {
    fn new(failback_after: Duration) -> Arc<Failover> {
        Arc::new(Failover {
            current: AtomicUsize::new(0),
            since: Mutex::new(Instant::now()),
            failback_after,
        })
    }

    /// The address to try first now.
    fn first(&self) -> usize {
        let current = self.current.load(Ordering::Relaxed);
        let since = *self.since.lock().unwrap_or_else(|p| p.into_inner());
        if current != 0 && since.elapsed() >= self.failback_after {
            0
        } else {
            current
        }
    }

    /// A connection to address `index` succeeded.
    fn used(&self, index: usize, upstream: &str, address: &str) {
        let before = self.current.swap(index, Ordering::Relaxed);
        if before == index {
            return;
        }
        *self.since.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
        if index == 0 {
            tracing::info!(upstream = %upstream, address = %address, "the first address answers again; new connections go there");
        } else {
            tracing::warn!(upstream = %upstream, address = %address, retry_first_after = ?self.failback_after, "failed over: new connections go to this address");
        }
    }
}

/// What an upstream's pools (the main one and the HTTP/1.1 one for upgrades) share.
#[derive(Clone)]
struct Shared {
    failover: Arc<Failover>,
    slots: Arc<Semaphore>,
    /// The pool that made the first HTTP/2 connection ([`NO_H2`] until one did).
    h2_pool: Arc<AtomicUsize>,
    /// Open connections of each worker's pool.
    pool_open: Arc<[AtomicUsize]>,
}

const NO_H2: usize = usize::MAX;
/// The pool index of the client that is not a per-worker pool: the one for upgrades.
const NOT_POOLED: usize = usize::MAX - 1;

impl Shared {
    fn new(cfg: &UpstreamConfig) -> Shared {
        Shared {
            failover: Failover::new(cfg.failback_after),
            slots: Arc::new(Semaphore::new(cfg.max_connections)),
            h2_pool: Arc::new(AtomicUsize::new(NO_H2)),
            pool_open: (0..workers::count()).map(|_| AtomicUsize::new(0)).collect(),
        }
    }
}

impl Connector {
    /// A connector for `cfg` that trusts exactly what `verifier` accepts (at every
    /// address) and counts its handshakes into `metrics`, offering HTTP/2 by ALPN as
    /// `cfg` says.
    pub fn with_verifier(
        cfg: &UpstreamConfig,
        verifier: Arc<dyn rustls::client::danger::ServerCertVerifier>,
        metrics: UpstreamMetrics,
    ) -> Connector {
        let verifiers = vec![verifier; 1 + cfg.fallbacks.len()];
        Connector::new(cfg, verifiers, metrics, cfg.http2, Shared::new(cfg))
    }

    fn new(
        cfg: &UpstreamConfig,
        verifiers: Vec<Arc<dyn rustls::client::danger::ServerCertVerifier>>,
        metrics: UpstreamMetrics,
        http2: Http2,
        shared: Shared,
    ) -> Connector {
        let alpn: Vec<Vec<u8>> = match http2 {
            Http2::Auto => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
            Http2::Never => vec![b"http/1.1".to_vec()],
            Http2::Always => vec![b"h2".to_vec()],
        };
        let targets = cfg
            .targets()
            .into_iter()
            .zip(verifiers)
            .map(|(target, verifier)| {
                // The configured name, else the host (an IP: no SNI is sent).
                let server_name = cfg
                    .server_name
                    .clone()
                    .ok_or(())
                    .or_else(|()| ServerName::try_from(target.host.clone()))
                    .map_err(|_| {
                        format!("{:?} is not a valid DNS name or IP address", target.host)
                    });
                TargetConn {
                    address: target.address(),
                    server_name,
                    tls: TlsConnector::from(Arc::new(verify::client_config(
                        verifier,
                        alpn.clone(),
                        cfg.tls_resumption,
                        cfg.legacy_crypto,
                    ))),
                }
            })
            .collect();
        Connector {
            inner: Arc::new(ConnectorInner {
                upstream: cfg.name.clone(),
                targets,
                failover: shared.failover,
                slots: shared.slots,
                max_connections: cfg.max_connections,
                connect_timeout: cfg.connect_timeout,
                handshake_timeout: cfg.handshake_timeout,
                http2,
                h2_pool: shared.h2_pool,
                pool_open: shared.pool_open,
                metrics,
            }),
            pool: 0,
        }
    }

    fn for_pool(&self, pool: usize) -> Connector {
        Connector {
            inner: self.inner.clone(),
            pool,
        }
    }

    /// Connects to the address in use (failing over in order when one cannot be
    /// reached or times out) and runs the pinned handshake. A pin mismatch never
    /// fails over: it is an attack or a misconfiguration, and must be seen.
    pub async fn connect(&self) -> Result<Pinned, UpstreamError> {
        let inner = &*self.inner;
        // A flood of clients must not become a flood of TLS sessions to the server.
        let slot = tokio::time::timeout(inner.connect_timeout, inner.slots.clone().acquire_owned())
            .await
            .ok()
            .and_then(Result::ok)
            .ok_or_else(|| UpstreamError::Busy {
                upstream: inner.upstream.clone(),
                max_connections: inner.max_connections,
                waited: inner.connect_timeout,
            })?;
        let tls = self.connect_any().await?;
        Ok(Pinned { tls, slot })
    }

    async fn connect_any(&self) -> Result<TlsStream<TcpStream>, UpstreamError> {
        let inner = &*self.inner;
        let count = inner.targets.len();
        let first = inner.failover.first();
        let order = std::iter::once(first).chain((0..count).filter(|&i| i != first));
        let mut failures = Vec::new();
        for index in order {
            let target = &inner.targets[index];
            match self.connect_to(target).await {
                Ok(tls) => {
                    inner.failover.used(index, &inner.upstream, &target.address);
                    return Ok(tls);
                }
                Err(e) if count > 1 && e.fails_over() => {
                    tracing::warn!(upstream = %inner.upstream, address = %target.address, error = %e, "address failed; trying the next");
                    failures.push(e);
                }
                Err(e) => return Err(e),
            }
        }
        match failures.len() {
            1 => Err(failures.remove(0)),
            _ => Err(UpstreamError::Connect {
                address: inner
                    .targets
                    .iter()
                    .map(|t| t.address.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                reason: format!(
                    "every address failed: {}",
                    failures
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
            }),
        }
    }

    /// Resolves, connects and runs the pinned handshake with one address.
    async fn connect_to(&self, target: &TargetConn) -> Result<TlsStream<TcpStream>, UpstreamError> {
        let inner = &*self.inner;
        let server_name = target
            .server_name
            .clone()
            .map_err(|reason| UpstreamError::Connect {
                address: target.address.clone(),
                reason,
            })?;
        let tcp = tokio::time::timeout(inner.connect_timeout, connect_tcp(&target.address))
            .await
            .map_err(|_| UpstreamError::Timeout {
                address: target.address.clone(),
                stage: "connect",
                after: inner.connect_timeout,
            })
            .and_then(|connected| connected)
            .inspect_err(|_| inner.metrics.connect_failed())?;
        let handshake = tokio::time::timeout(
            inner.handshake_timeout,
            target.tls.connect(server_name, tcp),
        )
        .await
        .map_err(|_| UpstreamError::Timeout {
            address: target.address.clone(),
            stage: "TLS handshake",
            after: inner.handshake_timeout,
        })
        .and_then(|done| done.map_err(|e| handshake_error(&target.address, e)));
        let handshake = handshake.and_then(|tls| {
            let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
            if h2 && self.pool != NOT_POOLED {
                let _ = inner.h2_pool.compare_exchange(
                    NO_H2,
                    self.pool,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
            }
            if inner.http2 == Http2::Always && !h2 {
                return Err(UpstreamError::Handshake {
                    address: target.address.clone(),
                    reason: "the server did not agree to HTTP/2 (ALPN h2); set http2 = \"auto\" for this upstream".into(),
                });
            }
            Ok(tls)
        });
        inner.metrics.handshake(match &handshake {
            Ok(_) => Handshake::Ok,
            Err(UpstreamError::FingerprintMismatch(_)) => Handshake::FingerprintMismatch,
            Err(_) => Handshake::Error,
        });
        handshake
    }
}

async fn connect_tcp(address: &str) -> Result<TcpStream, UpstreamError> {
    let failed = |reason: String| UpstreamError::Connect {
        address: address.to_string(),
        reason,
    };
    let addrs = tokio::net::lookup_host(address)
        .await
        .map_err(|e| failed(format!("name lookup failed: {e}")))?;
    let mut last = None;
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(tcp) => {
                // Requests and responses are written whole; don't let Nagle hold back the tail.
                let _ = tcp.set_nodelay(true);
                return Ok(tcp);
            }
            Err(e) => last = Some(format!("{addr}: {e}")),
        }
    }
    Err(failed(last.unwrap_or_else(|| {
        "the name resolved to no address".to_string()
    })))
}

fn handshake_error(address: &str, err: io::Error) -> UpstreamError {
    if let Some(mismatch) = verify::find_mismatch(&err) {
        return UpstreamError::FingerprintMismatch(mismatch.clone());
    }
    let mut reason = chain(&err);
    let lower = reason.to_ascii_lowercase();
    if lower.contains("handshakefailure")
        || lower.contains("protocolversion")
        || lower.contains("handshake_failure")
        || lower.contains("protocol_version")
    {
        reason.push_str(
            " (the server may offer only TLS 1.0/1.1 or CBC/static-RSA cipher suites, which pinproxy does not \
             support; it needs TLS 1.3, or TLS 1.2 with ECDHE and AES-GCM or ChaCha20-Poly1305)",
        );
    } else if lower.contains("badsignature")
        || lower.contains("unsupportedcertversion")
        || lower.contains("unsupportedsignaturealgorithm")
    {
        reason.push_str(
            " (the pin matched, but the handshake signature could not be checked with modern algorithms: an old \
             appliance with an RSA key under 2048 bits, SHA-1 signatures or an X.509 v1 certificate fails this way. If \
             that is this server, set legacy_crypto = true for this upstream; the signature is then checked with \
             ring's legacy RSA algorithms over TLS 1.2. A server that shows the certificate without its private key \
             fails either way)",
        );
    } else if lower.contains("noapplicationprotocol") {
        reason.push_str(
            " (the server does not speak HTTP/2, which http2 = \"always\" requires; set http2 = \"auto\")",
        );
    } else if lower.contains("corrupt message") || lower.contains("invalidcontenttype") {
        reason.push_str(" (is this port serving TLS? plain HTTP or another protocol answered)");
    }
    UpstreamError::Handshake {
        address: address.to_string(),
        reason,
    }
}

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<TlsConn>;
    type Error = ConnectError;
    type Future = StdPin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: Uri) -> Self::Future {
        // The URI is ignored on purpose: this connector only ever reaches its configured address.
        let this = self.clone();
        Box::pin(async move {
            match this.connect().await {
                Ok(tls) => {
                    let pool_open = this.inner.pool_open.get(this.pool).map(|open| {
                        open.fetch_add(1, Ordering::Relaxed);
                        (this.inner.pool_open.clone(), this.pool)
                    });
                    Ok(TokioIo::new(TlsConn::new(
                        tls,
                        this.inner.metrics.upstream_connections.clone(),
                        pool_open,
                    )))
                }
                Err(e) => Err(ConnectError(e)),
            }
        })
    }
}

/// A pinned TLS connection and the `max_connections` slot it occupies.
pub struct Pinned {
    /// The verified TLS stream.
    pub tls: TlsStream<TcpStream>,
    slot: tokio::sync::OwnedSemaphorePermit,
}

/// A verified TLS connection, as the pool holds it; counted in
/// `pinproxy_upstream_connections` while it is open.
pub struct TlsConn {
    tls: TlsStream<TcpStream>,
    open: Gauge,
    /// The open-connection count of the worker pool this connection belongs to.
    pool_open: Option<(Arc<[AtomicUsize]>, usize)>,
    /// Held while the connection is open; dropping it frees a `max_connections` slot.
    _slot: tokio::sync::OwnedSemaphorePermit,
}

impl TlsConn {
    fn new(pinned: Pinned, open: Gauge, pool_open: Option<(Arc<[AtomicUsize]>, usize)>) -> TlsConn {
        open.inc();
        TlsConn {
            tls: pinned.tls,
            open,
            pool_open,
            _slot: pinned.slot,
        }
    }

    fn is_h2(&self) -> bool {
        self.tls.get_ref().1.alpn_protocol() == Some(b"h2")
    }
}

impl Drop for TlsConn {
    fn drop(&mut self) {
        self.open.dec();
        if let Some((counts, pool)) = &self.pool_open {
            counts[*pool].fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Connection for TlsConn {
    fn connected(&self) -> Connected {
        // The pool multiplexes requests over one connection when the server chose h2.
        let connected = Connected::new();
        if self.is_h2() {
            connected.negotiated_h2()
        } else {
            connected
        }
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: StdPin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        StdPin::new(&mut self.tls).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: StdPin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        StdPin::new(&mut self.tls).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: StdPin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        StdPin::new(&mut self.tls).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tls.is_write_vectored()
    }

    fn poll_flush(mut self: StdPin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        StdPin::new(&mut self.tls).poll_flush(cx)
    }

    fn poll_shutdown(mut self: StdPin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        StdPin::new(&mut self.tls).poll_shutdown(cx)
    }
}
