//! The response body every answer goes out in: it counts the bytes it passes
//! and, when finished or dropped, writes the access-log line and the request
//! metrics, and lets go of what the request held.

use std::convert::Infallible;
use std::pin::Pin as StdPin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::header::HeaderValue;
use http::{Method, Request, Response};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::Either;
use tokio::sync::OwnedSemaphorePermit;

use crate::http::access::Client;
use crate::http::brokered::{BrokeredSession, FromUpstream};
use crate::http::idle::Busy;
use crate::http::respond::{ResponseBody, ERROR_HEADER};
use crate::telemetry::metrics::UpstreamMetrics;
use crate::telemetry::{access_log, audit};
use crate::upstream::{BoxError, UpstreamAddress};

pub(crate) struct AccessRecord {
    upstream: Arc<str>,
    client_uid: Option<u32>,
    client: Option<std::net::SocketAddr>,
    request_id: Option<String>,
    upstream_address: Option<Arc<str>>,
    metrics: Arc<UpstreamMetrics>,
    method: Method,
    path: String,
    start: Instant,
    status: u16,
    error: Option<HeaderValue>,
    /// Write an audit record too.
    audit: bool,
    /// The response came from the upstream (else pinproxy answered itself).
    forwarded: bool,
    /// The short hash of the brokered session the request ran in.
    session: Option<String>,
    /// The client certificate's names (a TLS listener).
    identity: Option<Arc<[String]>>,
}

impl AccessRecord {
    /// Boxed: the record rides in every response and in the request's
    /// future, each moved several times per request; at 8 bytes instead of
    /// 256 that is cheaper than the allocation.
    pub(crate) fn new<B>(
        upstream: &Arc<str>,
        metrics: &Arc<UpstreamMetrics>,
        req: &Request<B>,
        client: &Client,
    ) -> Box<AccessRecord> {
        Box::new(AccessRecord {
            upstream: upstream.clone(),
            client_uid: client.uid,
            // Formatted only when a line is written: no allocation per request.
            client: client.peer,
            request_id: request_id(req.headers()),
            upstream_address: None,
            metrics: metrics.clone(),
            method: req.method().clone(),
            // The query string is left out: it may carry tokens.
            // A client may put any byte above 0x7F in a path: escaped for the log.
            path: crate::telemetry::access_log::printable(req.uri().path()).into_owned(),
            start: Instant::now(),
            status: 0,
            error: None,
            audit: false,
            forwarded: false,
            session: None,
            identity: client.identity.clone(),
        })
    }

    /// Also writes an audit record for this request when `on`.
    pub(crate) fn audited(mut self: Box<Self>, on: bool) -> Box<AccessRecord> {
        self.audit = on;
        self
    }
}

/// A response body that counts what it passes and, when it is finished or dropped
/// (a client that went away still counts), writes the access-log line and the
/// request metrics.
pub struct LoggedBody {
    inner: ResponseBody,
    record: Option<Box<AccessRecord>>,
    bytes: u64,
    complete: bool,
    /// The connection stays busy, and the request holds its listener's
    /// in-flight slot, until the response is finished.
    held: Option<(Busy, Option<OwnedSemaphorePermit>)>,
}

impl LoggedBody {
    pub(crate) fn wrap(
        response: Response<ResponseBody>,
        mut record: Box<AccessRecord>,
    ) -> Response<LoggedBody> {
        record.status = response.status().as_u16();
        // Only pinproxy's own answers (its body, not the upstream's) carry a
        // reason: an upstream's header of that name is not ours to count.
        let from_upstream = matches!(response.body(), Either::Left(_))
            || response.extensions().get::<FromUpstream>().is_some();
        record.error = match from_upstream {
            false => response.headers().get(ERROR_HEADER).cloned(),
            true => None,
        };
        record.forwarded = from_upstream;
        record.session = response
            .extensions()
            .get::<BrokeredSession>()
            .map(|s| s.0.clone());
        record.upstream_address = match response.body() {
            Either::Left(body) => body.address().cloned(),
            Either::Right(_) => response
                .extensions()
                .get::<UpstreamAddress>()
                .map(|a| a.0.clone()),
        };
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
    type Error = BoxError;

    fn poll_frame(
        mut self: StdPin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
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
        r.metrics.request(
            r.status,
            duration.as_secs_f64(),
            r.error.as_ref().and_then(|v| v.to_str().ok()),
        );
        let error = r.error.as_ref().and_then(|v| v.to_str().ok()).unwrap_or("");
        if r.audit {
            audit::write(&audit::Record {
                listener: &r.upstream,
                uid: r.client_uid,
                client: r.client,
                method: r.method.as_str(),
                path: &r.path,
                forwarded: r.forwarded,
                reason: error,
                status: r.status,
                bytes: self.bytes,
                duration,
                session: r.session.as_deref(),
                client_certificate: r.identity.as_deref(),
            });
        }
        access_log::write(&access_log::Entry {
            upstream: &r.upstream,
            method: r.method.as_str(),
            path: &r.path,
            status: r.status,
            bytes: self.bytes,
            duration,
            complete,
            error,
            client_uid: r.client_uid,
            client: r.client,
            upstream_address: r.upstream_address.as_deref(),
            request_id: r.request_id.as_deref(),
        });
    }
}

/// The client's `X-Request-Id`, as it goes into the access log: at most 128
/// visible ASCII characters (anything else is not an id, and a log line is no
/// place for a client's arbitrary bytes).
fn request_id(headers: &http::HeaderMap) -> Option<String> {
    // A `HeaderName`, not a `&str`: looking up by text parses and checks the
    // name on every request first.
    static X_REQUEST_ID: http::header::HeaderName =
        http::header::HeaderName::from_static("x-request-id");
    let value = headers.get(&X_REQUEST_ID)?.to_str().ok()?;
    let fine = !value.is_empty()
        && value.len() <= 128
        && value.bytes().all(|b| b.is_ascii_graphic() || b == b' ');
    fine.then(|| value.to_string())
}
