//! The request path: one client request in, one request to the pinned upstream,
//! its response (or a precise error) back, and one access-log line.

use std::convert::Infallible;
use std::pin::Pin as StdPin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::header::{HeaderValue, CONNECTION, CONTENT_TYPE, HOST, UPGRADE};
use http::{HeaderName, Method, Request, Response, StatusCode, Version};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::{Either, Empty, Full, Limited};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio::sync::{watch, OwnedSemaphorePermit};

use crate::access_log;
use crate::config::Limits;
use crate::http::access::{Client, Decision, Refusal};
use crate::http::headers::remove_hop_by_hop;
use crate::http::idle::{Activity, Busy};
use crate::metrics::UpstreamMetrics;
use crate::upstream::{Upstream, UpstreamError};

/// The body sent upstream: the client's own, or nothing (which can be sent again).
pub type RequestBody = Either<Limited<Incoming>, Empty<Bytes>>;

/// The name of the header that says which failure a pinproxy error response reports.
pub const ERROR_HEADER: HeaderName = HeaderName::from_static("x-pinproxy-error");

/// Checks `req` against the listener's rules ([`crate::http::access`]), then forwards it to
/// `upstream` and answers the client; an upgrade (WebSocket) that the upstream
/// accepts becomes a tunnel in `tunnels`.
pub async fn handle(
    upstream: &Upstream,
    req: Request<Incoming>,
    tunnels: &Tunnels,
    limits: &Limits,
    client: &Client,
) -> Response<LoggedBody> {
    let record = AccessRecord::new(&upstream.name, upstream.metrics(), &req, client.uid);
    let response = match client.policy.check(&req, client.uid) {
        Decision::Forward(cors) => {
            let mut response = forward(upstream, req, tunnels, limits, &client.activity).await;
            cors.apply(response.headers_mut());
            response
        }
        Decision::Preflight(headers) => {
            let mut response = Response::new(Either::Right(Full::new(Bytes::new())));
            *response.status_mut() = StatusCode::NO_CONTENT;
            *response.headers_mut() = headers;
            response
        }
        Decision::Refuse(refusal) => refused(&upstream.name, client.uid, refusal),
    };
    LoggedBody::wrap(response, record)
}

/// Logs a refusal once at WARN and builds its answer. A client that may not
/// use the listener at all gets its connection closed after it.
fn refused(name: &str, uid: Option<u32>, r: Refusal) -> Response<ResponseBody> {
    tracing::warn!(
        listener = %name,
        reason = r.tag,
        seen = %r.seen,
        client_uid = uid,
        "request refused; nothing was sent upstream"
    );
    let mut response = local_error(r.status, r.tag, r.text);
    if r.close {
        response
            .headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// Answers `req` with pinproxy's own error (status, `X-Pinproxy-Error` tag and a
/// text body), logged and counted under `name`.
pub fn refuse(
    name: &Arc<str>,
    metrics: &Arc<UpstreamMetrics>,
    req: &Request<Incoming>,
    client: &Client,
    status: StatusCode,
    tag: &'static str,
    text: String,
) -> Response<LoggedBody> {
    let record = AccessRecord::new(name, metrics, req, client.uid);
    LoggedBody::wrap(local_error(status, tag, text), record)
}

async fn forward(
    upstream: &Upstream,
    mut req: Request<Incoming>,
    tunnels: &Tunnels,
    limits: &Limits,
    activity: &Activity,
) -> Response<ResponseBody> {
    if req.method() == Method::CONNECT {
        return local_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "connect-refused",
            "pinproxy does not tunnel CONNECT: a tunnel would hide the TLS handshake, and pinproxy must make it \
             itself to check the server's pin. Send plain http:// requests to this listener; it forwards them to \
             its one pinned upstream.\n",
        );
    }
    if let Some(max) = limits.max_request_body {
        // Refused before any upstream connection when the length is announced;
        // a chunked body is cut off (and answered 413) once it passes the limit.
        if req.body().size_hint().lower() > max {
            return too_large(max);
        }
    }
    // Upgrade and Connection are hop-by-hop, but an upgrade is asked of the next
    // hop too: keep the protocol, drop everything else they carried.
    let upgrade = upgrade_protocol(req.headers());
    let client_upgrade = upgrade.is_some().then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    remove_hop_by_hop(&mut parts.headers);
    if let Some(protocol) = &upgrade {
        parts
            .headers
            .insert(CONNECTION, HeaderValue::from_static("upgrade"));
        parts.headers.insert(UPGRADE, protocol.clone());
    }
    match upstream.host_header() {
        Ok(host) => parts.headers.insert(HOST, host.clone()),
        Err(why) => {
            return local_error(
                StatusCode::BAD_GATEWAY,
                "bad-server-name",
                format!("pinproxy: upstream {:?}: {why}\n", upstream.name),
            )
        }
    };
    parts.version = Version::HTTP_11;
    parts.uri = match upstream.uri_for(&parts.uri) {
        Ok(uri) => uri,
        Err(_) => {
            return local_error(
                StatusCode::BAD_REQUEST,
                "bad-request",
                "pinproxy: the request target is not a path it can forward\n",
            )
        }
    };
    // No copy of the request is kept for a retry: when a pooled connection turns
    // out to have been closed by the server before the request went out, hyper
    // hands the unsent request back and the pool sends it on another (pinned)
    // connection. One that was sent is never sent twice.
    let body = if body.is_end_stream() {
        Either::Right(Empty::new())
    } else {
        let max = limits
            .max_request_body
            .map_or(usize::MAX, |m| usize::try_from(m).unwrap_or(usize::MAX));
        Either::Left(Limited::new(body, max))
    };
    let result = upstream.send(Request::from_parts(parts, body)).await;
    match result {
        Ok(mut resp) => {
            let switched = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
            let tunnel = match (switched, client_upgrade) {
                (true, Some(client)) => Some((client, hyper::upgrade::on(&mut resp))),
                _ => None,
            };
            let (mut parts, body) = resp.into_parts();
            let accepted = upgrade_protocol(&parts.headers);
            remove_hop_by_hop(&mut parts.headers);
            if let (Some((client, server)), Some(protocol)) = (tunnel, accepted) {
                parts
                    .headers
                    .insert(CONNECTION, HeaderValue::from_static("upgrade"));
                parts.headers.insert(UPGRADE, protocol);
                tunnels.spawn(upstream, client, server, activity.begin());
            }
            Response::from_parts(parts, Either::Left(body))
        }
        Err(UpstreamError::ClientBody {
            too_large: true, ..
        }) => too_large(limits.max_request_body.unwrap_or(0)),
        Err(e) => upstream_error(upstream, &e),
    }
}

fn too_large(max: u64) -> Response<ResponseBody> {
    local_error(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body-too-large",
        format!("pinproxy: the request body is larger than max_request_body ({max} bytes)\n"),
    )
}

/// Resolves once `stop` says so (never, if its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    loop {
        if *stop.borrow_and_update() {
            return;
        }
        if stop.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}

/// The `Upgrade` value when `Connection` asks for an upgrade.
fn upgrade_protocol(headers: &http::HeaderMap) -> Option<HeaderValue> {
    let asks = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    if asks {
        headers.get(UPGRADE).cloned()
    } else {
        None
    }
}

/// The upgraded connections (WebSocket and friends): each joins a client and an
/// upstream byte stream both ways until either side closes. Shutdown treats them
/// as in-flight requests: they may finish within `shutdown_timeout`, then both
/// sides are shut down (FIN to the client, TLS close_notify to the upstream).
#[derive(Clone)]
pub struct Tunnels {
    stop: Arc<watch::Sender<bool>>,
}

impl Default for Tunnels {
    fn default() -> Self {
        Tunnels {
            stop: Arc::new(watch::channel(false).0),
        }
    }
}

impl Tunnels {
    /// Joins `client` and `server` once both upgrades complete; `busy` keeps the
    /// client connection from counting as idle while the tunnel is open.
    /// The tunnel also ends when a reload revokes `upstream`'s trust.
    fn spawn(&self, upstream: &Upstream, client: OnUpgrade, server: OnUpgrade, busy: Busy) {
        let mut stop = self.stop.subscribe();
        let mut revoked = upstream.revocation();
        let upstream = upstream.name.clone();
        tokio::spawn(async move {
            let _busy = busy;
            let (client, server) = match tokio::try_join!(client, server) {
                Ok(both) => both,
                Err(e) => {
                    tracing::debug!(upstream = %upstream, error = %e, "upgrade did not complete");
                    return;
                }
            };
            let (mut client, mut server) = (TokioIo::new(client), TokioIo::new(server));
            tracing::debug!(upstream = %upstream, "tunnel open");
            tokio::select! {
                done = tokio::io::copy_bidirectional(&mut client, &mut server) => match done {
                    Ok((up, down)) => tracing::debug!(upstream = %upstream, bytes_up = up, bytes_down = down, "tunnel closed"),
                    Err(e) => tracing::debug!(upstream = %upstream, error = %e, "tunnel broke"),
                },
                _ = stopped(&mut stop) => {
                    let _ = tokio::join!(client.shutdown(), server.shutdown());
                    tracing::info!(upstream = %upstream, "tunnel closed for shutdown");
                }
                _ = stopped(&mut revoked) => {
                    let _ = tokio::join!(client.shutdown(), server.shutdown());
                    tracing::debug!(upstream = %upstream, "tunnel closed: its upstream's pins, address or TLS settings changed");
                }
            }
        });
    }

    /// How many tunnels are open.
    pub fn count(&self) -> usize {
        self.stop.receiver_count()
    }

    /// Waits up to `timeout` for open tunnels to end, then closes the rest.
    pub async fn drain(&self, timeout: std::time::Duration) {
        if tokio::time::timeout(timeout, self.stop.closed())
            .await
            .is_err()
        {
            let _ = self.stop.send(true);
            self.stop.closed().await;
        }
    }
}

/// The response body: the upstream's, or pinproxy's own short text.
pub type ResponseBody = Either<Incoming, Full<Bytes>>;

fn upstream_error(upstream: &Upstream, err: &UpstreamError) -> Response<ResponseBody> {
    let (status, tag) = err.status_and_tag();
    let text = match err {
        UpstreamError::FingerprintMismatch(m) => {
            tracing::warn!(
                upstream = %upstream.name,
                presented_sha1 = %m.presented.sha1_line(),
                presented_sha256 = %m.presented.sha256_line(),
                configured = %m.expected.join(" | "),
                "upstream certificate matches no pin; refusing to send the request"
            );
            format!(
                "pinproxy: upstream {:?} presented a certificate that matches no configured pin.\n\
                 presented: {}\n           {}\n{}\
                 configured: {}\n\
                 Nothing was sent. If the server's certificate was renewed on purpose, run `api fingerprint` on the \
                 management server console and update the pin; otherwise someone may be intercepting the connection.\n",
                upstream.name,
                m.presented.sha1_line(),
                m.presented.sha256_line(),
                m.presented
                    .spki_pin()
                    .map(|p| format!("           {p}\n"))
                    .unwrap_or_default(),
                m.expected.join("\n            "),
            )
        }
        other => {
            tracing::warn!(upstream = %upstream.name, error = %other, "upstream request failed");
            let repeat = match other {
                UpstreamError::Protocol {
                    closed_early: true, ..
                } => {
                    " (the connection closed after the request was sent and before an answer; it was not sent \
                     again, since the server may have acted on it)"
                }
                _ => "",
            };
            format!("pinproxy: upstream {:?}: {other}{repeat}\n", upstream.name)
        }
    };
    local_error(status, tag, text)
}

fn local_error(
    status: StatusCode,
    tag: &'static str,
    text: impl Into<String>,
) -> Response<ResponseBody> {
    let mut resp = Response::new(Either::Right(Full::new(Bytes::from(text.into()))));
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert(ERROR_HEADER, HeaderValue::from_static(tag));
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

struct AccessRecord {
    upstream: Arc<str>,
    client_uid: Option<u32>,
    metrics: Arc<UpstreamMetrics>,
    method: Method,
    path: String,
    start: Instant,
    status: u16,
    error: Option<HeaderValue>,
}

impl AccessRecord {
    fn new<B>(
        upstream: &Arc<str>,
        metrics: &Arc<UpstreamMetrics>,
        req: &Request<B>,
        client_uid: Option<u32>,
    ) -> AccessRecord {
        AccessRecord {
            upstream: upstream.clone(),
            client_uid,
            metrics: metrics.clone(),
            method: req.method().clone(),
            // The query string is left out: it may carry tokens.
            path: req.uri().path().to_string(),
            start: Instant::now(),
            status: 0,
            error: None,
        }
    }
}

/// A response body that counts what it passes and, when it is finished or dropped
/// (a client that went away still counts), writes the access-log line and the
/// request metrics.
pub struct LoggedBody {
    inner: ResponseBody,
    record: Option<AccessRecord>,
    bytes: u64,
    complete: bool,
    /// The connection stays busy, and the request holds its listener's
    /// in-flight slot, until the response is finished.
    held: Option<(Busy, Option<OwnedSemaphorePermit>)>,
}

impl LoggedBody {
    fn wrap(response: Response<ResponseBody>, mut record: AccessRecord) -> Response<LoggedBody> {
        record.status = response.status().as_u16();
        record.error = response.headers().get(ERROR_HEADER).cloned();
        response.map(|inner| LoggedBody {
            inner,
            record: Some(record),
            bytes: 0,
            complete: false,
            held: None,
        })
    }

    /// Keeps `busy` and `slot` until this body is finished or dropped.
    pub(crate) fn hold(&mut self, busy: Busy, slot: Option<OwnedSemaphorePermit>) {
        self.held = Some((busy, slot));
    }
}

impl HttpBody for LoggedBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: StdPin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = match &mut self.inner {
            Either::Left(incoming) => StdPin::new(incoming).poll_frame(cx),
            Either::Right(full) => StdPin::new(full)
                .poll_frame(cx)
                .map_err(|never: Infallible| match never {}),
        };
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.bytes += data.len() as u64;
                }
            }
            Poll::Ready(None) => self.complete = true,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for LoggedBody {
    fn drop(&mut self) {
        let Some(r) = self.record.take() else { return };
        let complete = self.complete || self.inner.is_end_stream();
        let duration = r.start.elapsed();
        r.metrics.request(r.status, duration.as_secs_f64());
        access_log::write(&access_log::Entry {
            upstream: &r.upstream,
            method: r.method.as_str(),
            path: &r.path,
            status: r.status,
            bytes: self.bytes,
            duration,
            complete,
            error: r.error.as_ref().and_then(|v| v.to_str().ok()).unwrap_or(""),
            client_uid: r.client_uid,
        });
    }
}
