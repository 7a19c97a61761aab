//! One upstream server: its connection pools ([`Upstream`], `pool.rs`) over the
//! pinned connector (`connector.rs`, which alone makes the connections they
//! hold), what those run over (`transport.rs`: TCP, or an `egress.rs` tunnel),
//! and what can go wrong on the way (`error.rs`, `handshake_error.rs`).
//!
//! Every new connection runs a TLS handshake through [`PinVerifier`] (or resumes a
//! session that one of them verified under the same pins); the pools only ever hand
//! out connections that passed it, so the pin is checked on every connection before
//! a request byte is written.

use std::error::Error as StdError;
use std::pin::Pin as StdPin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Request, Response, Uri};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{Full, Limited};
use hyper::body::Incoming;
use hyper::client::conn::TrySendError;
use tokio::sync::watch;

mod connector;
mod egress;
mod error;
mod handshake_error;
mod http1;
mod pool;
#[cfg(all(test, unix))]
mod pool_tests;
pub(crate) mod probe;
mod read_waker;
pub(crate) mod session;
mod transport;

pub(crate) use connector::{Alpn, Connector};
pub use error::{chain, UpstreamError};
pub use pool::UpstreamBody;

use connector::TlsConn;
use error::{closed_early, too_large};
use http1::{Failed, H1};
use pool::Pool;

use crate::config::{Http2, InjectedHeader, RequestPolicy, UpstreamConfig};
use crate::platform::worker;
use crate::telemetry::metrics::UpstreamMetrics;
use crate::tls::known_pins::KnownPins;
use crate::tls::verify::{PinVerifier, Trust};

/// Which address of the upstream answered, for the access log (with failover
/// it is not always the first): a response extension when pinproxy answers
/// with a body of its own made from the upstream's (see `http::brokered`);
/// otherwise [`UpstreamBody::address`] says.
#[derive(Debug, Clone)]
pub struct UpstreamAddress(pub Arc<str>);

/// The error of a body pinproxy passes on: the upstream's, or the client's.
pub type BoxError = Box<dyn StdError + Send + Sync>;

/// The body sent upstream: the client's own (within `max_request_body`), or none.
pub struct RequestBody {
    inner: http_body_util::Either<Limited<Incoming>, Full<Bytes>>,
}

impl RequestBody {
    /// No body.
    pub fn empty() -> RequestBody {
        RequestBody {
            inner: http_body_util::Either::Right(Full::new(Bytes::new())),
        }
    }

    /// A body pinproxy holds whole (a login, or a request it may send twice).
    pub fn full(bytes: Bytes) -> RequestBody {
        RequestBody {
            inner: http_body_util::Either::Right(Full::new(bytes)),
        }
    }

    /// The client's body, cut off with an error past `max` bytes.
    pub fn limited(body: Incoming, max: usize) -> RequestBody {
        RequestBody {
            inner: http_body_util::Either::Left(Limited::new(body, max)),
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = Box<dyn StdError + Send + Sync>;

    fn poll_frame(
        mut self: StdPin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        StdPin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Where a request's connection came from at the pool's edge.
enum Obtained {
    /// Made now, on a free `max_connections` slot (boxed: a TLS stream is
    /// large, and this is the cold path).
    New(Box<TlsConn>),
    /// Idle on another worker, or handed over by a finished exchange.
    Pooled(Box<H1>),
}

/// A configured upstream with its connection pool.
pub struct Upstream {
    /// The upstream's name from the config.
    pub name: Arc<str>,
    address: String,
    /// The `:authority` and `Host` every forwarded request carries.
    origin: Result<(Authority, HeaderValue), String>,
    response_timeout: Duration,
    http2: Http2,
    /// A client certificate is configured (for what a refusal says).
    client_certificate: bool,
    /// Which requests may be forwarded (`allowed_requests`, `[[upstream.policy]]`).
    requests: Option<Arc<RequestPolicy>>,
    /// Write an audit record per request.
    audit: bool,
    /// Headers set on every forwarded request (`inject_headers`).
    inject: Arc<[InjectedHeader]>,
    /// Brokered management API sessions (`[upstream.session]`).
    sessions: Option<session::Broker>,
    /// The only source of new connections.
    connector: Connector,
    pool: Pool,
    /// Set once this upstream's pins, address or TLS settings are revoked by a
    /// reload; the tunnels opened through it watch it. Shared with the
    /// `Upstream` that replaces this one when a reload keeps those settings.
    revoked: Arc<watch::Sender<bool>>,
    metrics: Arc<UpstreamMetrics>,
}

impl Upstream {
    /// The request policy, if the upstream has one.
    pub fn requests(&self) -> Option<&RequestPolicy> {
        self.requests.as_deref()
    }

    /// The headers every forwarded request gets, replacing the client's.
    pub fn injected(&self) -> &[InjectedHeader] {
        &self.inject
    }

    /// The session broker, if pinproxy logs in for this listener's clients.
    pub(crate) fn sessions(&self) -> Option<&session::Broker> {
        self.sessions.as_ref()
    }

    /// Whether each request gets an audit record.
    pub fn audits(&self) -> bool {
        self.audit
    }

    /// `host:port` of the first address.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The host of the first address (no brackets around an IPv6 one).
    pub fn host(&self) -> &str {
        self.address
            .rsplit_once(':')
            .map_or(self.address.as_str(), |(host, _)| host)
            .trim_matches(['[', ']'])
    }

    /// Builds the connector and pool for `cfg`. Nothing connects until the first request.
    ///
    /// Each call makes a new rustls `ClientConfig` and an empty pool: an `Upstream`
    /// is built once per pin set, so nothing verified under old pins is reused.
    pub fn new(cfg: &UpstreamConfig, metrics: UpstreamMetrics) -> Upstream {
        // One verifier (and so one TLS config and session cache) per address and pin set.
        // With trust_on_first_use, the one address learns its pin into known_pins.
        let learning = cfg.known_pins.as_deref().map(|path| {
            KnownPins::shared(path).inspect_err(|e| {
                tracing::error!(upstream = %cfg.name, error = %e, "cannot read known_pins; every connection to this upstream is refused");
            })
        });
        if let Some(Ok(known)) = &learning {
            metrics.pin_learned.set(known.get(&cfg.name).is_some());
        }
        // One verifier (and so one TLS config and session cache) per address and pin set.
        let verifiers: Vec<Arc<PinVerifier>> = cfg
            .targets()
            .into_iter()
            .map(|t| {
                let trust = match &learning {
                    Some(Ok(known)) => Trust::Learned(known.clone()),
                    _ => Trust::Pins(t.pins),
                };
                Arc::new(
                    PinVerifier::new(&cfg.name, trust, metrics.certificates())
                        .with_legacy_crypto(cfg.legacy_crypto),
                )
            })
            .collect();
        let connector = Connector::new(
            cfg,
            verifiers,
            metrics.clone(),
            learning.and_then(Result::ok),
        );
        let pool = Pool::new(worker::count(), cfg.max_idle_connections, cfg.idle_timeout);
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
            http2: cfg.http2,
            client_certificate: cfg.targets().iter().any(|t| t.client_identity.is_some()),
            requests: cfg.requests.clone().map(Arc::new),
            audit: cfg.audit,
            inject: cfg.inject_headers.clone().into(),
            sessions: cfg.session.clone().map(session::Broker::new),
            connector,
            pool,
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

    /// Sends a prepared request and waits (up to `response_timeout`, counted
    /// from this call) for the response head.
    ///
    /// Not an `async fn`: its future would hold `dispatch`'s and the request
    /// a second time, 2.4 KB copied with every request for nothing.
    pub fn send(
        &self,
        req: Request<RequestBody>,
    ) -> impl std::future::Future<Output = Result<Response<UpstreamBody>, UpstreamError>> + Send + '_
    {
        let deadline = tokio::time::Instant::now() + self.response_timeout;
        self.dispatch(req, deadline)
    }

    /// Picks the connection for `req`: the shared HTTP/2 one, else an idle
    /// HTTP/1.1 one of this worker, else a new one from the connector. A pooled
    /// connection that turns out closed before the request went out gets the
    /// request back, and it goes out on the next; one that was sent is never
    /// sent again. All before `deadline`: a pooled HTTP/1.1 connection keeps
    /// it with a timer of its own (`H1::exchange`), every other way is bounded
    /// here.
    async fn dispatch(
        &self,
        mut req: Request<RequestBody>,
        deadline: tokio::time::Instant,
    ) -> Result<Response<UpstreamBody>, UpstreamError> {
        // The cold paths (a new connection, an upgrade) are boxed: their futures
        // hold a TLS handshake and are many times the size of the hot path's,
        // which would otherwise be copied around with every request.
        if req.headers().contains_key(http::header::UPGRADE) {
            return self.by(deadline, Box::pin(self.upgrade(req))).await?;
        }
        let worker = worker::current();
        if self.http2 != Http2::Never {
            if let Some(h2) = self.pool.h2() {
                match self.by(deadline, h2.send(req)).await? {
                    Ok((resp, h2)) => return Ok(h2_response(resp, h2)),
                    Err(unsent) => req = self.unsent(unsent)?,
                }
            }
        }
        while let Some(h1) = self.pool.take_h1(worker) {
            match self.exchange(h1, worker, req, deadline).await {
                Ok(resp) => return Ok(resp),
                Err(failed) => req = self.unsent_h1(failed)?,
            }
        }
        self.by(
            deadline,
            Box::pin(self.connect_and_send(worker, req, deadline)),
        )
        .await?
    }

    /// `work`'s result, or a timeout error once `deadline` has passed.
    async fn by<T>(
        &self,
        deadline: tokio::time::Instant,
        work: impl std::future::Future<Output = T>,
    ) -> Result<T, UpstreamError> {
        tokio::time::timeout_at(deadline, work)
            .await
            .map_err(|_| self.response_timed_out())
    }

    fn response_timed_out(&self) -> UpstreamError {
        UpstreamError::Timeout {
            address: self.address.clone(),
            stage: "waiting for the response",
            after: self.response_timeout,
        }
    }

    /// A connection for a request that found none idle on its worker: a new
    /// one while a `max_connections` slot is free; else an idle one of another
    /// worker; else, first come first served, whichever comes first of a
    /// connection finishing its exchange and a slot freed by one that closed,
    /// for up to `connect_timeout`.
    async fn obtain(&self, worker: usize, alpn: Alpn) -> Result<Obtained, UpstreamError> {
        let connector = &self.connector;
        if let Some(slot) = connector.try_slot() {
            return Ok(Obtained::New(Box::new(
                connector.connect_with(slot, alpn).await?,
            )));
        }
        if let Some(h1) = self.pool.take_any_h1(worker) {
            return Ok(Obtained::Pooled(h1));
        }
        let mut handed = self.pool.wait();
        // One may have gone idle between the look and joining the queue.
        if let Some(h1) = self.pool.take_any_h1(worker) {
            return Ok(Obtained::Pooled(h1));
        }
        let waited = tokio::time::timeout(connector.connect_timeout(), async {
            tokio::select! {
                h1 = &mut handed => h1.map(Ok).ok(),
                slot = connector.slot() => Some(Err(slot)),
            }
        })
        .await;
        match waited {
            Ok(Some(Ok(h1))) => Ok(Obtained::Pooled(h1)),
            Ok(Some(Err(slot))) => {
                // A connection handed over at the same moment is used, not lost.
                handed.close();
                if let Ok(h1) = handed.try_recv() {
                    return Ok(Obtained::Pooled(h1));
                }
                Ok(Obtained::New(Box::new(
                    connector.connect_with(slot, alpn).await?,
                )))
            }
            Ok(None) | Err(_) => Err(connector.busy()),
        }
    }

    /// `req` on a new connection, or on one handed over at `max_connections`.
    async fn connect_and_send(
        &self,
        worker: usize,
        req: Request<RequestBody>,
        deadline: tokio::time::Instant,
    ) -> Result<Response<UpstreamBody>, UpstreamError> {
        let tls = match self.obtain(worker, Alpn::Configured).await? {
            Obtained::New(tls) => *tls,
            Obtained::Pooled(h1) => {
                return match self.exchange(h1, worker, req, deadline).await {
                    Ok(resp) => Ok(resp),
                    // Closed by the server before the request went out: once
                    // more, from the start.
                    Err(failed) => {
                        let req = self.unsent_h1(failed)?;
                        Box::pin(self.connect_and_send(worker, req, deadline)).await
                    }
                };
            }
        };
        if tls.is_h2() {
            let h2 = self.pool.add_h2(tls).await.map_err(|e| self.classify(&e))?;
            return h2
                .send(req)
                .await
                .map(|(resp, h2)| h2_response(resp, h2))
                .map_err(|e| self.classify(e.error()));
        }
        // A new connection that closes before the request goes out is not
        // tried again: the server refuses this client.
        self.exchange(H1::new(tls), worker, req, deadline)
            .await
            .map_err(|failed| match failed {
                Failed::Unsent(_) => self.classify_h1(&http1::Error::ClosedBeforeSending),
                Failed::Sent(e) => self.classify_h1(&e),
            })
    }

    /// One request on an HTTP/1.1 connection (written in origin form); its
    /// body carries the connection back to `worker`'s idle list.
    async fn exchange(
        &self,
        h1: Box<H1>,
        worker: usize,
        req: Request<RequestBody>,
        deadline: tokio::time::Instant,
    ) -> Result<Response<UpstreamBody>, Failed> {
        let address = h1.address().clone();
        let resp = h1.exchange(req, deadline).await?;
        Ok(resp.map(|b| UpstreamBody::h1(b, self.pool.idle(worker)).with_address(address)))
    }

    /// A request that may switch protocols (WebSocket) on an HTTP/1.1 connection
    /// of its own, which a tunnel takes over when the server agrees.
    async fn upgrade(
        &self,
        mut req: Request<RequestBody>,
    ) -> Result<Response<UpstreamBody>, UpstreamError> {
        origin_form(&mut req);
        let worker = worker::current();
        let h1 = match self.pool.take_h1(worker) {
            Some(h1) => h1,
            None => match self.obtain(worker, Alpn::Http1).await? {
                Obtained::Pooled(h1) => h1,
                Obtained::New(tls) => H1::new(*tls),
            },
        };
        let address = h1.address().clone();
        let mut send = h1.upgradable().await.map_err(|e| self.classify(&e))?;
        match send.send_request(req).await {
            Ok(resp) => Ok(resp.map(|b| UpstreamBody::plain(b).with_address(address))),
            Err(e) => Err(self.classify(&e)),
        }
    }

    /// The request a closed pooled HTTP/1.1 connection gave back, or the
    /// error when it had already been sent.
    fn unsent_h1(&self, failed: Failed) -> Result<Request<RequestBody>, UpstreamError> {
        match failed {
            Failed::Unsent(req) => Ok(*req),
            Failed::Sent(e) => Err(self.classify_h1(&e)),
        }
    }

    /// What an exchange's failure on pinproxy's own HTTP/1.1 client means.
    fn classify_h1(&self, err: &http1::Error) -> UpstreamError {
        if let Some(refused) = self.certificate_refused(err) {
            return refused;
        }
        match err {
            http1::Error::TimedOut => self.response_timed_out(),
            // The request body we were streaming came from the client and
            // broke (malformed chunking, or the client went away): the
            // client's fault.
            http1::Error::ClientBody(cause) => UpstreamError::ClientBody {
                reason: chain(err),
                too_large: too_large(cause.as_ref()),
            },
            _ => UpstreamError::Protocol {
                address: self.address.clone(),
                reason: chain(err),
                closed_early: err.closed_early(),
            },
        }
    }

    /// The request a closed pooled HTTP/2 connection gave back, or the error
    /// when it had already been sent.
    fn unsent(
        &self,
        mut err: TrySendError<Request<RequestBody>>,
    ) -> Result<Request<RequestBody>, UpstreamError> {
        match err.take_message() {
            Some(req) => Ok(req),
            None => Err(self.classify(err.error())),
        }
    }

    /// The server's refusal of the client certificate, when `err` carries one:
    /// with TLS 1.3 it comes as an alert on the first read after the handshake.
    fn certificate_refused(&self, err: &(dyn StdError + 'static)) -> Option<UpstreamError> {
        let reason = handshake_error::client_certificate_refusal(err, self.client_certificate)?;
        Some(UpstreamError::Handshake {
            address: self.address.clone(),
            reason,
        })
    }

    /// What a failure of hyper's client (HTTP/2, an upgrade) means.
    fn classify(&self, err: &hyper::Error) -> UpstreamError {
        if let Some(refused) = self.certificate_refused(err) {
            return refused;
        }
        // The request body we were streaming came from the client and broke
        // (malformed chunking, or the client went away): the client's fault.
        // hyper's only user errors with a cause are those of the request body.
        if err.is_user() {
            if let Some(cause) = std::error::Error::source(err) {
                return UpstreamError::ClientBody {
                    reason: chain(err),
                    too_large: too_large(cause),
                };
            }
        }
        UpstreamError::Protocol {
            address: self.address.clone(),
            reason: chain(err),
            closed_early: closed_early(err),
        }
    }
}

/// A response on the shared HTTP/2 connection, carrying its address.
fn h2_response(resp: Response<Incoming>, h2: pool::H2Handle) -> Response<UpstreamBody> {
    resp.map(|b| UpstreamBody::h2(b, h2))
}

/// HTTP/1.1 sends the origin form (the path); HTTP/2 needs the full URI.
fn origin_form(req: &mut Request<RequestBody>) {
    let path = req
        .uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    *req.uri_mut() = Uri::from(path);
}

fn bracket_v6(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}
