//! The only way to an upstream connection: TCP (or an egress tunnel) to the
//! address in use, failing over in order, then the TLS handshake whose verifier
//! checks the pin. Its result, a [`TlsConn`], can be made nowhere else (private
//! fields and constructor), and the pool takes nothing else.

use std::io;
use std::pin::Pin as StdPin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use prometheus_client::metrics::gauge::Gauge;
use rustls::pki_types::ServerName;
use rustls::ClientConnection;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Semaphore;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::egress;
use super::error::UpstreamError;
use super::handshake_error::handshake_error;
use super::read_waker::ReadWaker;
use super::transport::{connect_tcp, Transport};
use crate::config::{EgressProxy, Http2, Target, UpstreamConfig};
use crate::telemetry::metrics::{Handshake, UpstreamMetrics};
use crate::tls::known_pins::{KnownPins, Verdict};
use crate::tls::pin::Fingerprints;
use crate::tls::verify::record_presented;
use crate::tls::verify::{self, PinMismatch, PinVerifier};

/// Opens pinned TLS connections to one configured upstream.
pub(crate) struct Connector {
    inner: Arc<ConnectorInner>,
}

struct ConnectorInner {
    upstream: String,
    targets: Vec<TargetConn>,
    failover: Arc<Failover>,
    /// `max_connections`: one permit per open connection.
    slots: Arc<Semaphore>,
    max_connections: usize,
    connect_timeout: Duration,
    handshake_timeout: Duration,
    http2: Http2,
    metrics: UpstreamMetrics,
    /// Where a `trust_on_first_use` upstream's pin is learned.
    learn: Option<Arc<KnownPins>>,
}

/// One address of an upstream with the TLS config that pins its certificate.
struct TargetConn {
    address: String,
    /// For SNI; an error only for a hand-built config (see `Upstream::new`).
    server_name: Result<ServerName<'static>, String>,
    tls: TlsConnector,
    /// ALPN `http/1.1` only, for upgrades (`None` when `tls` offers only that).
    http1: Option<TlsConnector>,
    /// A client certificate is configured for this address.
    client_certificate: bool,
    /// The HTTP proxy to tunnel through, if any.
    egress: Option<EgressProxy>,
}

/// Which address of an upstream is in use: the first, until it cannot be
/// reached; then the next that can, for `failback_after`, before the first is
/// tried again.
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

/// Which protocols a new connection offers by ALPN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Alpn {
    /// What the upstream's `http2` setting says.
    Configured,
    /// HTTP/1.1 only: for a request that may switch protocols (WebSocket).
    Http1,
}

impl Connector {
    /// A connector for `cfg` that trusts exactly what `verifier` accepts (at every
    /// address) and counts its handshakes into `metrics`: for one-off handshakes
    /// (`fingerprint`, `check --connect`).
    pub(crate) fn with_verifier(
        cfg: &UpstreamConfig,
        verifier: Arc<PinVerifier>,
        metrics: UpstreamMetrics,
    ) -> Connector {
        let verifiers = vec![verifier; 1 + cfg.fallbacks.len()];
        // A one-off handshake never learns a pin.
        Connector::new(cfg, verifiers, metrics, None)
    }

    /// A connector for `cfg` whose address `i` trusts what `verifiers[i]` accepts;
    /// with `learn`, the first completed handshake's certificate becomes the
    /// upstream's pin there.
    pub(super) fn new(
        cfg: &UpstreamConfig,
        verifiers: Vec<Arc<PinVerifier>>,
        metrics: UpstreamMetrics,
        learn: Option<Arc<KnownPins>>,
    ) -> Connector {
        let alpn: Vec<Vec<u8>> = match cfg.http2 {
            Http2::Auto => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
            Http2::Never => vec![b"http/1.1".to_vec()],
            Http2::Always => vec![b"h2".to_vec()],
        };
        let tls = |verifier: &Arc<PinVerifier>, alpn: Vec<Vec<u8>>, target: &Target| {
            TlsConnector::from(Arc::new(verify::client_config(
                verifier.clone(),
                alpn,
                cfg.tls_resumption,
                cfg.legacy_crypto,
                target.client_identity.as_ref(),
            )))
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
                    tls: tls(&verifier, alpn.clone(), &target),
                    http1: match cfg.http2 {
                        Http2::Never => None,
                        _ => Some(tls(&verifier, vec![b"http/1.1".to_vec()], &target)),
                    },
                    client_certificate: target.client_identity.is_some(),
                    egress: target.egress_proxy.clone(),
                }
            })
            .collect();
        Connector {
            inner: Arc::new(ConnectorInner {
                upstream: cfg.name.clone(),
                targets,
                failover: Failover::new(cfg.failback_after),
                slots: Arc::new(Semaphore::new(cfg.max_connections)),
                max_connections: cfg.max_connections,
                connect_timeout: cfg.connect_timeout,
                handshake_timeout: cfg.handshake_timeout,
                http2: cfg.http2,
                metrics,
                learn,
            }),
        }
    }

    /// Connects to the address in use (failing over in order when one cannot be
    /// reached or times out) and runs the pinned handshake. A pin mismatch never
    /// fails over: it is an attack or a misconfiguration, and must be seen.
    /// At `max_connections` it waits up to `connect_timeout` for a slot (the
    /// pool, which can also hand over a connection, uses [`Connector::try_slot`],
    /// [`Connector::slot`] and [`Connector::connect_with`] instead).
    pub(crate) async fn connect(&self, alpn: Alpn) -> Result<TlsConn, UpstreamError> {
        let slot = match self.try_slot() {
            Some(slot) => slot,
            None => tokio::time::timeout(self.inner.connect_timeout, self.slot())
                .await
                .map_err(|_| self.busy())?,
        };
        self.connect_with(slot, alpn).await
    }

    /// A `max_connections` slot, if one is free now.
    pub(crate) fn try_slot(&self) -> Option<Slot> {
        self.inner.slots.clone().try_acquire_owned().ok()
    }

    /// The next `max_connections` slot to be freed (first come, first served).
    pub(crate) async fn slot(&self) -> Slot {
        match self.inner.slots.clone().acquire_owned().await {
            Ok(slot) => slot,
            // The semaphore is never closed while the connector exists.
            Err(_) => std::future::pending().await,
        }
    }

    /// How long a request may wait for a connection at `max_connections`.
    pub(crate) fn connect_timeout(&self) -> std::time::Duration {
        self.inner.connect_timeout
    }

    /// The refusal of a request that waited `connect_timeout` while every
    /// connection was in use (none idle, no slot freed).
    pub(crate) fn busy(&self) -> UpstreamError {
        UpstreamError::Busy {
            upstream: self.inner.upstream.clone(),
            max_connections: self.inner.max_connections,
            waited: self.inner.connect_timeout,
        }
    }

    /// [`Connector::connect`] on a slot already held.
    pub(crate) async fn connect_with(
        &self,
        slot: Slot,
        alpn: Alpn,
    ) -> Result<TlsConn, UpstreamError> {
        let inner = &*self.inner;
        let (tls, address) = self.connect_any(alpn).await?;
        Ok(TlsConn::new(
            tls,
            slot,
            inner.metrics.upstream_connections.clone(),
            address,
        ))
    }

    /// The verified stream and the address it reached.
    async fn connect_any(
        &self,
        alpn: Alpn,
    ) -> Result<(TlsStream<Transport>, Arc<str>), UpstreamError> {
        let inner = &*self.inner;
        let count = inner.targets.len();
        let first = inner.failover.first();
        let order = std::iter::once(first).chain((0..count).filter(|&i| i != first));
        let mut failures = Vec::new();
        for index in order {
            let target = &inner.targets[index];
            match self.connect_to(target, alpn).await {
                Ok(tls) => {
                    inner.failover.used(index, &inner.upstream, &target.address);
                    inner
                        .metrics
                        .active_target
                        .set(i64::try_from(index).unwrap_or(0));
                    return Ok((tls, Arc::from(target.address.as_str())));
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
    async fn connect_to(
        &self,
        target: &TargetConn,
        alpn: Alpn,
    ) -> Result<TlsStream<Transport>, UpstreamError> {
        let inner = &*self.inner;
        let server_name = target
            .server_name
            .clone()
            .map_err(|reason| UpstreamError::Connect {
                address: target.address.clone(),
                reason,
            })?;
        let transport = match &target.egress {
            Some(proxy) => egress::tunnel(proxy, &target.address, inner.connect_timeout).await,
            None => tokio::time::timeout(inner.connect_timeout, connect_tcp(&target.address))
                .await
                .map_err(|_| UpstreamError::Timeout {
                    address: target.address.clone(),
                    stage: "connect",
                    after: inner.connect_timeout,
                })
                .and_then(|connected| connected)
                .map(Transport::Direct),
        }
        .inspect_err(|_| inner.metrics.connect_failed())?;
        let handshake = tokio::time::timeout(
            inner.handshake_timeout,
            match (alpn, &target.http1) {
                (Alpn::Http1, Some(http1)) => http1.connect(server_name, transport),
                _ => target.tls.connect(server_name, transport),
            },
        )
        .await
        .map_err(|_| UpstreamError::Timeout {
            address: target.address.clone(),
            stage: "TLS handshake",
            after: inner.handshake_timeout,
        })
        .and_then(|done| {
            done.map_err(|e| handshake_error(&target.address, e, target.client_certificate))
        });
        let handshake = handshake.and_then(|tls| {
            if let Some(known) = &inner.learn {
                self.learn(known, target, &tls)?;
            }
            let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
            if inner.http2 == Http2::Always && !h2 {
                return Err(UpstreamError::Handshake {
                    address: target.address.clone(),
                    reason: "the server did not agree to HTTP/2 (ALPN h2); set http2 = \"auto\" for this upstream".into(),
                });
            }
            Ok(tls)
        });
        let (result, error) = match &handshake {
            Ok(_) => (Handshake::Ok, None),
            Err(e @ UpstreamError::FingerprintMismatch(_)) => {
                (Handshake::FingerprintMismatch, Some(e.to_string()))
            }
            Err(e) => (Handshake::Error, Some(e.to_string())),
        };
        inner.metrics.handshake(result, &target.address, error);
        handshake
    }
}

/// One of an upstream's `max_connections`: held by each open connection.
pub(crate) type Slot = tokio::sync::OwnedSemaphorePermit;

impl Connector {
    /// For an upstream that learns its pin: once the handshake has completed
    /// (the server proved it holds the key), records its certificate if no pin
    /// was learned yet, or refuses it if another was, by a concurrent first
    /// connection. Before any request byte either way.
    fn learn(
        &self,
        known: &KnownPins,
        target: &TargetConn,
        tls: &TlsStream<Transport>,
    ) -> Result<(), UpstreamError> {
        let inner = &*self.inner;
        let leaf = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .ok_or_else(|| UpstreamError::Handshake {
                address: target.address.clone(),
                reason: "the server presented no certificate to learn".into(),
            })?;
        let verdict = known.check_or_learn(&inner.upstream, &target.address, leaf.as_ref());
        let accepted = matches!(verdict, Ok(Verdict::Known | Verdict::Learned(_)));
        record_presented(&inner.metrics.certificates(), leaf.as_ref(), accepted);
        match verdict {
            Ok(Verdict::Known) => Ok(()),
            Ok(Verdict::Learned(learned)) => {
                let words = Fingerprints::of(leaf.as_ref()).words_line();
                tracing::warn!(
                    upstream = %inner.upstream,
                    address = %target.address,
                    sha1 = %learned.sha1,
                    words = %words,
                    known_pins = %known.path().display(),
                    "learned this upstream's pin on first use: compare the SHA-1 (or the words) with `api fingerprint` on the server console; from now on only this certificate is accepted"
                );
                inner.metrics.pin_learned.set(true);
                Ok(())
            }
            Ok(Verdict::Other(learned)) => Err(UpstreamError::FingerprintMismatch(PinMismatch {
                presented: Fingerprints::of(leaf.as_ref()),
                expected: vec![learned.pin.clone()],
                learned: Some(Box::new(learned)),
            })),
            Err(reason) => Err(UpstreamError::PinStore {
                address: target.address.clone(),
                reason,
            }),
        }
    }
}

/// A verified TLS connection; counted in `pinproxy_upstream_connections` while
/// it is open.
pub(crate) struct TlsConn {
    tls: TlsStream<Transport>,
    open: Gauge,
    /// The address it reached (which failover target), for the access log.
    address: Arc<str>,
    /// Held while the connection is open; dropping it frees a `max_connections` slot.
    _slot: Slot,
    /// Whom its reads wake while it sits idle in the pool.
    read_waker: Arc<ReadWaker>,
}

impl TlsConn {
    /// Private to this module: only the connector, after the pinned handshake,
    /// makes a `TlsConn`, the one kind of connection the pool takes.
    fn new(tls: TlsStream<Transport>, slot: Slot, open: Gauge, address: Arc<str>) -> TlsConn {
        open.inc();
        TlsConn {
            tls,
            open,
            address,
            _slot: slot,
            read_waker: Arc::default(),
        }
    }

    /// Whom its reads wake while the pool keeps it idle.
    pub(super) fn read_waker(&self) -> &Arc<ReadWaker> {
        &self.read_waker
    }

    /// The address it reached.
    pub(super) fn address(&self) -> &Arc<str> {
        &self.address
    }

    /// The TLS session: what the server presented and what was negotiated.
    pub(crate) fn session(&self) -> &ClientConnection {
        self.tls.get_ref().1
    }

    /// The server chose HTTP/2 by ALPN.
    pub(super) fn is_h2(&self) -> bool {
        self.session().alpn_protocol() == Some(b"h2")
    }
}

impl Drop for TlsConn {
    fn drop(&mut self) {
        self.open.dec();
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: StdPin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.read_waker.get() {
            Some(waker) => {
                StdPin::new(&mut self.tls).poll_read(&mut Context::from_waker(&waker), buf)
            }
            None => StdPin::new(&mut self.tls).poll_read(cx, buf),
        }
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
