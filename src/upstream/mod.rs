//! One upstream server: its connection pools ([`Upstream`]) over the pinned
//! connector (`connector.rs`), the connections they hold (`conn.rs`), and what can
//! go wrong on the way (`error.rs`).
//!
//! Every new connection runs a TLS handshake through [`PinVerifier`] (or resumes a
//! session that one of them verified under the same pins); the pools only ever hand
//! out connections that passed it, so the pin is checked on every connection before
//! a request byte is written.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::uri::{Authority, Scheme};
use http::{HeaderValue, Request, Response, Uri};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::sync::{watch, Semaphore};

mod conn;
mod connector;
mod error;

pub use connector::Connector;
pub use error::{chain, ConnectError, UpstreamError};

use connector::{Shared, NOT_POOLED, NO_H2};
use error::{closed_early, too_large};

use crate::config::{Http2, UpstreamConfig};
use crate::metrics::UpstreamMetrics;
use crate::tls::verify::{PinVerifier, Trust};
use crate::workers;

/// The body sent upstream: the client's own (within `max_request_body`), or none.
pub type RequestBody =
    http_body_util::Either<http_body_util::Limited<Incoming>, http_body_util::Empty<bytes::Bytes>>;

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
        let verifiers: Vec<Arc<PinVerifier>> = cfg
            .targets()
            .into_iter()
            .map(|t| {
                Arc::new(
                    PinVerifier::new(
                        &cfg.name,
                        Trust::Pins(t.pins),
                        metrics.certificate_not_after.clone(),
                    )
                    .with_legacy_crypto(cfg.legacy_crypto),
                )
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

fn bracket_v6(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}
