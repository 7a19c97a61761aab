//! pinproxy's own answers: the status, `X-Pinproxy-Error` tag and text of every
//! error it reports instead of an upstream response.

use bytes::Bytes;
use http::header::{HeaderValue, CONNECTION, CONTENT_TYPE};
use http::{HeaderName, Response, StatusCode};
use http_body_util::{Either, Full};

use crate::http::access::Refusal;
use crate::telemetry::access_log::printable;
use crate::tls::verify::repin_commands;
use crate::upstream::{Upstream, UpstreamBody, UpstreamError};

/// The name of the header that says which failure a pinproxy error response reports.
pub const ERROR_HEADER: HeaderName = HeaderName::from_static("x-pinproxy-error");

/// The response body: the upstream's, or pinproxy's own short text.
pub type ResponseBody = Either<UpstreamBody, Full<Bytes>>;

/// Logs a refusal once at WARN and builds its answer. A client that may not
/// use the listener at all gets its connection closed after it.
pub(crate) fn refused(name: &str, uid: Option<u32>, r: Refusal) -> Response<ResponseBody> {
    tracing::warn!(
        listener = %name,
        reason = r.tag,
        seen = %printable(&r.seen),
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

pub(crate) fn body_too_large(max: u64) -> Response<ResponseBody> {
    local_error(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body-too-large",
        format!("pinproxy: the request body is larger than max_request_body ({max} bytes)\n"),
    )
}

pub(crate) fn upstream_error(upstream: &Upstream, err: &UpstreamError) -> Response<ResponseBody> {
    let (status, tag) = err.status_and_tag();
    let text = match err {
        UpstreamError::FingerprintMismatch(m) => {
            tracing::warn!(
                upstream = %upstream.name,
                presented_sha1 = %m.presented.sha1_line(),
                presented_sha256 = %m.presented.sha256_line(),
                configured = %m.expected.join(" | "),
                repin = %repin_commands(&upstream.name, upstream.address(), &m.presented),
                "upstream certificate matches no pin; refusing to send the request"
            );
            match &m.learned {
                Some(learned) => format!(
                    "pinproxy: upstream {:?} presented a certificate that does not match the pin it learned on first \
                     use on {} (from {}).\n\
                     presented: {}\n           {}\n\
                     learned:   {}\n           {}\n\
                     Nothing was sent. If the server's certificate was renewed on purpose, compare the presented SHA1 \
                     with `api fingerprint` on the management server console, then run `pinproxy pins forget {}` and \
                     reload pinproxy to learn the new one; otherwise someone may be intercepting the connection.\n",
                    upstream.name,
                    learned.learned,
                    learned.address,
                    m.presented.sha1_line(),
                    m.presented.sha256_line(),
                    learned.sha1,
                    learned.pin,
                    upstream.name,
                ),
                None => format!(
                    "pinproxy: upstream {:?} presented a certificate that matches no configured pin.\n\
                     presented: {}\n           {}\n{}\
                     configured: {}\n\
                     Nothing was sent. If the server's certificate was renewed on purpose, compare the presented SHA1 \
                     with `api fingerprint` on the management server console and re-pin:\n  \
                     pinproxy pins add {} '{}'\n\
                     or in one step, comparing over SSH:\n  \
                     pinproxy pins add {} --from-server --expect-from 'ssh admin@{} api fingerprint'\n\
                     then reload pinproxy (systemctl reload pinproxy). Otherwise someone may be intercepting the \
                     connection.\n",
                    upstream.name,
                    m.presented.sha1_line(),
                    m.presented.sha256_line(),
                    m.presented
                        .spki_pin()
                        .map(|p| format!("           {p}\n"))
                        .unwrap_or_default(),
                    m.expected.join("\n            "),
                    upstream.name,
                    m.presented.sha1_line(),
                    upstream.name,
                    upstream.host(),
                ),
            }
        }
        other => {
            tracing::warn!(upstream = %upstream.name, error = %printable(&other.to_string()), "upstream request failed");
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

pub(crate) fn local_error(
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
