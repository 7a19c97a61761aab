//! The request path: one client request in, checked against the listener's
//! rules, one request to the pinned upstream, its response (or a precise error)
//! back, and one access-log line.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{HeaderValue, CONNECTION, HOST, UPGRADE};
use http::{Method, Request, Response, StatusCode, Version};
use http_body::Body as HttpBody;
use http_body_util::{Either, Full};
use hyper::body::Incoming;

use crate::config::Limits;
use crate::http::access::{Client, Decision};
use crate::http::brokered;
use crate::http::command_policy::{self, Verdict};
use crate::http::headers::{clean_response, remove_hop_by_hop};
use crate::http::idle::Activity;
use crate::http::logged_body::{AccessRecord, LoggedBody};
use crate::http::respond::{body_too_large, local_error, refused, upstream_error, ResponseBody};
use crate::http::tunnel::Tunnels;
use crate::telemetry::access_log::printable;
use crate::telemetry::metrics::UpstreamMetrics;
use crate::upstream::session::Holder;
use crate::upstream::{RequestBody, Upstream, UpstreamError};

/// Checks `req` against the listener's rules ([`crate::http::access`]), then forwards it to
/// `upstream` and answers the client; an upgrade (WebSocket) that the upstream
/// accepts becomes a tunnel in `tunnels`.
pub async fn handle(
    upstream: &Upstream,
    mut req: Request<Incoming>,
    tunnels: &Tunnels,
    limits: &Limits,
    client: &Client,
) -> Response<LoggedBody> {
    let record = AccessRecord::new(&upstream.name, upstream.metrics(), &req, client)
        .audited(upstream.audits());
    if let Some(refusal) = client.policy.client_refusal(client.identity.as_deref()) {
        return LoggedBody::wrap(refused(&upstream.name, client.uid, refusal), record);
    }
    let response = match client.policy.check(&req, client.uid) {
        Decision::Forward(cors) => {
            let mut response = match commands(upstream, &mut req, client) {
                Ok(()) => match upstream.sessions() {
                    Some(broker) if brokered::wants_session(&req) => {
                        let prepare = |parts: &mut http::request::Parts| prepare(upstream, parts);
                        let holder = Holder::of(client.uid, client.identity.as_deref());
                        // Boxed: a session's exchange is larger than the plain
                        // path's, and every request's future would keep room for it.
                        Box::pin(brokered::forward(
                            upstream, broker, req, limits, &holder, prepare,
                        ))
                        .await
                    }
                    _ => forward(upstream, req, tunnels, limits, &client.activity).await,
                },
                Err(refusal) => *refusal,
            };
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

/// The command policy: gives `req` the path its rule matched, or is the
/// refusal (nothing is sent upstream). By reference: a request is 264 bytes,
/// and every move of it through a `Result` was a copy.
fn commands(
    upstream: &Upstream,
    req: &mut Request<Incoming>,
    client: &Client,
) -> Result<(), Box<Response<ResponseBody>>> {
    let uid = client.uid;
    let Some(policy) = upstream.requests() else {
        return Ok(());
    };
    match command_policy::judge(policy, req.method(), req.uri(), uid, client.identity.as_deref()) {
        Verdict::Allow(uri) => {
            *req.uri_mut() = uri;
            Ok(())
        }
        Verdict::NotAllowed {
            rules,
            allowed,
            request,
        } => {
            let who = uid.map_or("this client".to_string(), crate::platform::users::label);
            tracing::debug!(upstream = %upstream.name, uid, request = %printable(&request), rules = %rules, "request not allowed by the command policy; not sent");
            Err(Box::new(local_error(
                StatusCode::FORBIDDEN,
                "request-not-allowed",
                format!(
                    "pinproxy: {} is not allowed for {who} on upstream {:?}: {rules} allows {}. Nothing was sent.\n",
                    printable(&request),
                    upstream.name,
                    if allowed.is_empty() { "nothing".to_string() } else { allowed.join(", ") }
                ),
            )))
        }
        Verdict::Ambiguous(why) => Err(Box::new(local_error(
            StatusCode::BAD_REQUEST,
            "ambiguous-path",
            format!(
                "pinproxy: refused: {why}. On a listener with a command policy, a path must mean the same to \
                 pinproxy and to the server. Nothing was sent.\n"
            ),
        ))),
    }
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
    let record = AccessRecord::new(name, metrics, req, client);
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
            return body_too_large(max);
        }
    }
    // Upgrade and Connection are hop-by-hop, but an upgrade is asked of the next
    // hop too: keep the protocol, drop everything else they carried.
    let client_version = req.version();
    let upgrade = upgrade_protocol(req.headers());
    let client_upgrade = upgrade.is_some().then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    if let Err(refusal) = prepare(upstream, &mut parts) {
        return *refusal;
    }
    if let Some(protocol) = &upgrade {
        parts
            .headers
            .insert(CONNECTION, HeaderValue::from_static("upgrade"));
        parts.headers.insert(UPGRADE, protocol.clone());
    }
    // No copy of the request is kept for a retry: when a pooled connection turns
    // out to have been closed by the server before the request went out, the
    // unsent request comes back and the pool sends it on another (pinned)
    // connection. One that was sent is never sent twice.
    let body = if body.is_end_stream() {
        RequestBody::empty()
    } else {
        let max = limits
            .max_request_body
            .map_or(usize::MAX, |m| usize::try_from(m).unwrap_or(usize::MAX));
        RequestBody::limited(body, max)
    };
    let result = upstream.send(Request::from_parts(parts, body)).await;
    match result {
        Ok(mut resp) => {
            let switched = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
            let accepted = upgrade_protocol(resp.headers());
            if switched && (client_upgrade.is_none() || accepted.is_none()) {
                // A 101 nobody asked for (or that names no protocol) would leave
                // the client reading a stream it never agreed to.
                return local_error(
                    StatusCode::BAD_GATEWAY,
                    "upstream-failed",
                    format!(
                        "pinproxy: upstream {:?} answered 101 Switching Protocols {}; not passed on\n",
                        upstream.name,
                        if client_upgrade.is_none() {
                            "to a request that asked for no upgrade"
                        } else {
                            "without naming the protocol it switched to"
                        }
                    ),
                );
            }
            let tunnel = match (switched, client_upgrade) {
                (true, Some(client)) => Some((client, hyper::upgrade::on(&mut resp))),
                _ => None,
            };
            let (mut parts, body) = resp.into_parts();
            clean_response(&mut parts.headers);
            // The client's protocol, whatever the server spoke (an HTTP/1.0
            // status line is not passed to an HTTP/1.1 client).
            parts.version = client_version;
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
        }) => body_too_large(limits.max_request_body.unwrap_or(0)),
        Err(e) => upstream_error(upstream, &e),
    }
}

/// Makes the client's request head the upstream's: hop-by-hop headers out,
/// injected credentials in, the upstream's Host, HTTP/1.1, its URI.
fn prepare(
    upstream: &Upstream,
    parts: &mut http::request::Parts,
) -> Result<(), Box<Response<ResponseBody>>> {
    remove_hop_by_hop(&mut parts.headers);
    for header in upstream.injected() {
        parts
            .headers
            .insert(header.name.clone(), header.value.header_value().clone());
    }
    match upstream.host_header() {
        Ok(host) => parts.headers.insert(HOST, host.clone()),
        Err(why) => {
            return Err(Box::new(local_error(
                StatusCode::BAD_GATEWAY,
                "bad-server-name",
                format!("pinproxy: upstream {:?}: {why}\n", upstream.name),
            )))
        }
    };
    parts.version = Version::HTTP_11;
    parts.uri = match upstream.uri_for(&parts.uri) {
        Ok(uri) => uri,
        Err(_) => {
            return Err(Box::new(local_error(
                StatusCode::BAD_REQUEST,
                "bad-request",
                "pinproxy: the request target is not a path it can forward\n",
            )))
        }
    };
    Ok(())
}

/// The `Upgrade` value when `Connection` asks for an upgrade.
fn upgrade_protocol(headers: &http::HeaderMap) -> Option<HeaderValue> {
    // Looked up first: almost no request or response has one, and the
    // Connection tokens are not worth splitting without it.
    let protocol = headers.get(UPGRADE)?;
    let asks = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    asks.then(|| protocol.clone())
}
