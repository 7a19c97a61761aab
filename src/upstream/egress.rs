//! The way through an egress proxy: an HTTP CONNECT tunnel to the upstream's
//! address, asked for with hyper's client (hyper parses the proxy's answer).
//! pinproxy then runs its own pinned handshake inside the tunnel, so the proxy
//! sees only ciphertext, and one that answers with its own certificate fails
//! the pin like any other impostor.

use std::time::Duration;

use bytes::Bytes;
use http::header::{HOST, PROXY_AUTHORIZATION};
use http::{Method, Request, StatusCode};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;

use super::error::{chain, UpstreamError};
use super::transport::{connect_tcp, Transport};
use crate::config::EgressProxy;

/// A tunnel through `proxy` to `target` (`host:port`), within `timeout` for
/// the connection to the proxy and again for its answer.
pub(super) async fn tunnel(
    proxy: &EgressProxy,
    target: &str,
    timeout: Duration,
) -> Result<Transport, UpstreamError> {
    let failed = |reason: String| UpstreamError::Connect {
        address: target.to_string(),
        reason: format!("egress proxy {}: {reason}", proxy.address),
    };
    let timed_out = |stage: &str| failed(format!("{stage} timed out after {timeout:?}"));
    let tcp = tokio::time::timeout(timeout, connect_tcp(&proxy.address))
        .await
        .map_err(|_| timed_out("connecting"))?
        .map_err(|e| match e {
            UpstreamError::Connect { reason, .. } => failed(reason),
            other => failed(other.to_string()),
        })?;
    let ask = async {
        let (mut send, conn) =
            hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(tcp))
                .await
                .map_err(|e| failed(chain(&e)))?;
        // Runs until the tunnel is handed over (or the proxy closes).
        tokio::spawn(conn.with_upgrades());
        let mut request = Request::builder()
            .method(Method::CONNECT)
            .uri(target)
            .header(HOST, target);
        if let Some(authorization) = &proxy.authorization {
            request = request.header(PROXY_AUTHORIZATION, authorization.clone());
        }
        let request = request
            .body(Empty::new())
            .map_err(|e| failed(format!("cannot ask for {target}: {e}")))?;
        let response = send
            .send_request(request)
            .await
            .map_err(|e| failed(format!("no answer to CONNECT: {}", chain(&e))))?;
        if response.status() != StatusCode::OK {
            let reason = response
                .extensions()
                .get::<hyper::ext::ReasonPhrase>()
                .map(|r| String::from_utf8_lossy(r.as_bytes()).into_owned())
                .or_else(|| response.status().canonical_reason().map(String::from))
                .unwrap_or_default();
            let hint = match response.status() {
                StatusCode::PROXY_AUTHENTICATION_REQUIRED => {
                    " (the proxy wants credentials: egress_proxy = \"http://user:password@host:port\")"
                }
                StatusCode::FORBIDDEN => " (the proxy's rules do not allow this address or port)",
                _ => "",
            };
            return Err(failed(format!(
                "refused CONNECT to {target}: \"HTTP/1.1 {} {reason}\"{hint}",
                response.status().as_u16()
            )));
        }
        let upgraded = hyper::upgrade::on(response)
            .await
            .map_err(|e| failed(format!("the tunnel broke as it opened: {}", chain(&e))))?;
        Ok(Transport::Tunnel(TokioIo::new(upgraded)))
    };
    tokio::time::timeout(timeout, ask)
        .await
        .map_err(|_| timed_out("waiting for the answer to CONNECT"))?
}
