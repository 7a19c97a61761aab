//! The request path: one client request in, one request to the pinned upstream,
//! its response (or a precise error) back, and one access-log line.

use std::convert::Infallible;
use std::pin::Pin as StdPin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE, HOST};
use http::{HeaderName, Method, Request, Response, StatusCode, Version};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::{Either, Empty, Full};
use hyper::body::Incoming;

use crate::headers::remove_hop_by_hop;
use crate::metrics::UpstreamMetrics;
use crate::upstream::{Upstream, UpstreamError};

/// The body sent upstream: the client's own, or nothing (which can be sent again).
pub type RequestBody = Either<Incoming, Empty<Bytes>>;

/// The name of the header that says which failure a pinproxy error response reports.
pub const ERROR_HEADER: HeaderName = HeaderName::from_static("x-pinproxy-error");

/// Forwards `req` to `upstream` and answers the client.
pub async fn handle(upstream: &Upstream, req: Request<Incoming>) -> Response<LoggedBody> {
    let record = AccessRecord::new(&upstream.name, upstream.metrics(), &req);
    let response = forward(upstream, req).await;
    LoggedBody::wrap(response, record)
}

/// Answers `req` with pinproxy's own error (status, `X-Pinproxy-Error` tag and a
/// text body), logged and counted under `name`.
pub fn refuse(
    name: &Arc<str>,
    metrics: &Arc<UpstreamMetrics>,
    req: &Request<Incoming>,
    status: StatusCode,
    tag: &'static str,
    text: String,
) -> Response<LoggedBody> {
    let record = AccessRecord::new(name, metrics, req);
    LoggedBody::wrap(local_error(status, tag, text), record)
}

async fn forward(upstream: &Upstream, req: Request<Incoming>) -> Response<ResponseBody> {
    if req.method() == Method::CONNECT {
        return local_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "connect-refused",
            "pinproxy does not tunnel CONNECT: a tunnel would hide the TLS handshake, and pinproxy must make it \
             itself to check the server's pin. Send plain http:// requests to this listener; it forwards them to \
             its one pinned upstream.\n",
        );
    }
    let (mut parts, body) = req.into_parts();
    remove_hop_by_hop(&mut parts.headers);
    parts.headers.insert(HOST, upstream.host_header().clone());
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
    // A request without a body that the client may repeat (RFC 9110 §9.2.2) can be sent
    // again if a pooled connection turns out to have been closed by the server.
    let replay = if is_idempotent(&parts.method) && body.is_end_stream() {
        Some((
            parts.method.clone(),
            parts.uri.clone(),
            parts.headers.clone(),
        ))
    } else {
        None
    };
    let body = if replay.is_some() {
        Either::Right(Empty::new())
    } else {
        Either::Left(body)
    };
    let mut result = upstream.send(Request::from_parts(parts, body)).await;
    if let (Err(e), Some((method, uri, headers))) = (&result, replay) {
        if e.is_retryable() {
            tracing::debug!(upstream = %upstream.name, error = %e, "the connection closed before answering; sending the idempotent request once more");
            let mut again = Request::new(Either::Right(Empty::new()));
            *again.method_mut() = method;
            *again.uri_mut() = uri;
            *again.headers_mut() = headers;
            result = upstream.send(again).await;
        }
    }
    match result {
        Ok(resp) => {
            let (mut parts, body) = resp.into_parts();
            remove_hop_by_hop(&mut parts.headers);
            Response::from_parts(parts, Either::Left(body))
        }
        Err(e) => upstream_error(upstream, &e),
    }
}

fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
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
            format!("pinproxy: upstream {:?}: {other}\n", upstream.name)
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
    ) -> AccessRecord {
        AccessRecord {
            upstream: upstream.clone(),
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
        })
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
        let elapsed = r.start.elapsed().as_secs_f64();
        r.metrics.request(r.status, elapsed);
        tracing::info!(
            target: "pinproxy::access",
            upstream = %r.upstream,
            method = %r.method,
            path = %r.path,
            status = r.status,
            bytes = self.bytes,
            duration_ms = elapsed * 1000.0,
            complete,
            error = r.error.as_ref().and_then(|v| v.to_str().ok()).unwrap_or(""),
            "request"
        );
    }
}
