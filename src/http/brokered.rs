//! A request that runs in a session pinproxy brokers (`[upstream.session]`):
//! its body is held whole (within `max_request_body`), it gets the session of
//! its user, and when the server answers that the session is wrong or expired
//! (it did not run the request) pinproxy logs in again and sends it once more.

use bytes::Bytes;
use http::header::HeaderValue;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Either, Full, Limited};
use hyper::body::Incoming;

use crate::config::Limits;
use crate::http::headers::clean_response;
use crate::http::respond::{body_too_large, local_error, upstream_error, ResponseBody};
use crate::upstream::session::{is_own_login, is_session_error, Broker, Holder, SID_HEADER};
use crate::upstream::{RequestBody, Upstream, UpstreamAddress};

/// Held in a response's extensions: the short hash of the session it ran in,
/// for the audit trail.
#[derive(Debug, Clone)]
pub struct BrokeredSession(pub String);

/// Held in a response's extensions when its body, though pinproxy holds it,
/// is the upstream's answer: not pinproxy's own, whatever headers it has.
#[derive(Debug, Clone, Copy)]
pub struct FromUpstream;

/// Whether `req` should get the brokered session: it brings none, it is not
/// the tool's own login or logout, and it is an API call (a CONNECT or an
/// upgrade takes the ordinary path, which refuses or tunnels it).
pub fn wants_session<B>(req: &Request<B>) -> bool {
    req.method() != http::Method::CONNECT
        && !req.headers().contains_key(http::header::UPGRADE)
        && !req.headers().contains_key(SID_HEADER)
        && !is_own_login(req.uri().path())
}

/// Body bytes held for a possible second sending when no `max_request_body` is set.
const DEFAULT_HELD: u64 = 16 << 20;

/// An error answer read whole to see whether it is about the session.
const MAX_ERROR_READ: usize = 64 * 1024;

/// Sends `req` in the session of `user` (a local user or a client certificate); `prepare` makes its head the upstream's.
pub async fn forward(
    upstream: &Upstream,
    broker: &Broker,
    req: Request<Incoming>,
    limits: &Limits,
    user: &Holder,
    prepare: impl Fn(&mut http::request::Parts) -> Result<(), Box<Response<ResponseBody>>>,
) -> Response<ResponseBody> {
    let client_version = req.version();
    let (mut parts, body) = req.into_parts();
    let max = limits.max_request_body.unwrap_or(DEFAULT_HELD);
    let body: Bytes = match Limited::new(body, usize::try_from(max).unwrap_or(usize::MAX))
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => return body_too_large(max),
        Err(e) => {
            return local_error(
                StatusCode::BAD_REQUEST,
                "bad-request-body",
                format!("pinproxy: the request body from the client broke off: {e}\n"),
            )
        }
    };
    if let Err(refusal) = prepare(&mut parts) {
        return *refusal;
    }
    for attempt in 0..2 {
        let session = match broker.session(upstream, user).await {
            Ok(s) => s,
            Err(e) => {
                let mut resp = upstream_error(upstream, &e);
                resp.headers_mut().insert(
                    crate::http::respond::ERROR_HEADER,
                    HeaderValue::from_static("session-login-failed"),
                );
                return resp;
            }
        };
        let mut req = Request::from_parts(parts.clone(), RequestBody::full(body.clone()));
        req.headers_mut()
            .insert(SID_HEADER, session.held.sid.clone());
        let resp = match upstream.send(req).await {
            Ok(resp) => resp,
            Err(e) => return upstream_error(upstream, &e),
        };
        let (mut head, body) = resp.into_parts();
        clean_response(&mut head.headers);
        head.version = client_version;
        head.extensions
            .insert(BrokeredSession(session.held.tag.clone()));
        if attempt == 0 && matches!(head.status.as_u16(), 400 | 401 | 403) {
            if let Some(address) = body.address() {
                head.extensions.insert(UpstreamAddress(address.clone()));
            }
            // Small error answers are read whole to see what they are about.
            let answer = Limited::new(body, MAX_ERROR_READ)
                .collect()
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            if is_session_error(head.status, &answer) {
                broker.invalidate(user, &session.held).await;
                continue;
            }
            head.headers.remove(http::header::TRANSFER_ENCODING);
            head.headers.insert(
                http::header::CONTENT_LENGTH,
                HeaderValue::from(answer.len()),
            );
            head.extensions.insert(FromUpstream);
            return Response::from_parts(head, Either::Right(Full::new(answer)));
        }
        return Response::from_parts(head, Either::Left(body));
    }
    local_error(
        StatusCode::BAD_GATEWAY,
        "session-login-failed",
        format!(
            "pinproxy: upstream {:?} refused the session pinproxy had just logged in with; nothing was run\n",
            upstream.name
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_api_calls_without_their_own_session_get_the_brokered_one() {
        let req = |method: &str, path: &str, header: Option<(&str, &str)>| {
            let mut b = Request::builder().method(method).uri(path);
            if let Some((k, v)) = header {
                b = b.header(k, v);
            }
            b.body(()).unwrap()
        };
        assert!(wants_session(&req("POST", "/web_api/show-hosts", None)));
        assert!(!wants_session(&req(
            "POST",
            "/web_api/show-hosts",
            Some(("X-chkp-sid", "own"))
        )));
        assert!(!wants_session(&req("POST", "/web_api/v1.9/login", None)));
        assert!(!wants_session(&req("POST", "/web_api/logout", None)));
        assert!(!wants_session(&req("CONNECT", "mgmt.example:443", None)));
        assert!(!wants_session(&req(
            "GET",
            "/ws",
            Some(("Upgrade", "websocket"))
        )));
    }
}
