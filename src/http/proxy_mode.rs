//! HTTP-proxy mode: one listener for clients configured with
//! `http_proxy=http://127.0.0.1:3128`. Each absolute-form request
//! (`GET http://mgmt.example/web_api/… HTTP/1.1`) is routed by its host (and
//! port, if given) to the configured upstream of that name or alias, then
//! forwarded exactly as on that upstream's own listener. Any other host is
//! refused: pinproxy is never an open proxy.

use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::config::{HostAlias, UpstreamConfig};
use crate::http::access::Client;
use crate::http::forward;
use crate::http::logged_body::LoggedBody;
use crate::telemetry::metrics::UpstreamMetrics;
use crate::upstream::Upstream;

/// The reason phrase of the refusal of CONNECT: what a client that shows only
/// "Tunnel connection failed: 405 …" needs to read.
const CONNECT_REASON: &[u8] =
    b"pinproxy does not tunnel - use http:// URLs with http_proxy, pinproxy makes the pinned TLS itself";

/// The name under which proxy-mode refusals are logged and counted; it cannot
/// clash with an upstream (parentheses are not allowed in names).
pub const PROXY_LABEL: &str = "(proxy)";

/// Which upstream each host a client may ask for leads to.
pub struct Routes {
    entries: Vec<(HostAlias, Arc<Upstream>)>,
    /// The hosts a refused client could have used, for the 403 body.
    known: String,
    name: Arc<str>,
    metrics: Arc<UpstreamMetrics>,
}

impl Routes {
    /// Routes to `upstreams` by each one's name and `hosts`, counting refusals
    /// into `metrics` (the `(proxy)` series).
    pub fn new<'a>(
        upstreams: impl IntoIterator<Item = (&'a UpstreamConfig, Arc<Upstream>)>,
        metrics: Arc<UpstreamMetrics>,
    ) -> Routes {
        let mut entries = Vec::new();
        let mut known = Vec::new();
        for (cfg, upstream) in upstreams {
            let own = HostAlias {
                host: cfg.name.to_ascii_lowercase(),
                port: None,
            };
            let aliases: Vec<HostAlias> = std::iter::once(own).chain(cfg.hosts.clone()).collect();
            known.push(format!(
                "  {}: {}",
                cfg.name,
                aliases
                    .iter()
                    .map(|a| format!("http://{a}/"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            entries.extend(aliases.into_iter().map(|a| (a, upstream.clone())));
        }
        Routes {
            entries,
            known: known.join("\n"),
            name: PROXY_LABEL.into(),
            metrics,
        }
    }

    /// The name its refusals are logged under.
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// Where its refusals are counted.
    pub fn metrics(&self) -> &Arc<UpstreamMetrics> {
        &self.metrics
    }

    /// The upstream for `host` (as written in the URL) and `port` (if given).
    /// An alias with a port matches only that port; one without matches any.
    pub fn find(&self, host: &str, port: Option<u16>) -> Option<&Arc<Upstream>> {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        self.entries
            .iter()
            .find(|(alias, _)| {
                alias.host.eq_ignore_ascii_case(host)
                    && (alias.port.is_none() || alias.port == port)
            })
            .map(|(_, upstream)| upstream)
    }
}

/// Routes one proxy-mode request: the upstream it names, or pinproxy's answer
/// saying why it goes nowhere. The caller forwards it (a function, not a
/// future of its own, so that a request's future is not made larger by
/// holding one inside the other).
pub fn route(
    routes: &Routes,
    req: &Request<Incoming>,
    client: &Client,
) -> Result<Arc<Upstream>, Box<Response<LoggedBody>>> {
    let refuse = |status, tag, text: String| {
        Err(Box::new(forward::refuse(
            &routes.name,
            &routes.metrics,
            req,
            client,
            status,
            tag,
            text,
        )))
    };
    if req.method() == Method::CONNECT {
        // A client that asked for a tunnel (HTTPS_PROXY with an https:// URL)
        // shows only the status line, so the essence goes there and in the log.
        tracing::info!(target_host = %crate::telemetry::access_log::printable(&req.uri().to_string()), "refused a CONNECT on the HTTP-proxy port: the client must use http:// URLs (http_proxy), not https:// through HTTPS_PROXY");
        let mut refused = refuse(
            StatusCode::METHOD_NOT_ALLOWED,
            "connect-refused",
            format!(
                "pinproxy does not tunnel CONNECT: a tunnel would hide the TLS handshake, and pinproxy must make it \
                 itself to check the server's pin. Request http:// URLs through this proxy instead \
                 (http://mgmt.example/web_api/login, not https://); pinproxy then speaks pinned TLS to the server.\n\
                 Configured hosts:\n{}\n",
                routes.known
            ),
        );
        if let Err(refused) = &mut refused {
            refused
                .extensions_mut()
                .insert(hyper::ext::ReasonPhrase::from_static(CONNECT_REASON));
        }
        return refused;
    }
    let Some(host) = req.uri().host() else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "not-a-proxy-request",
            format!(
                "This is pinproxy's HTTP-proxy port: it expects absolute URLs as proxy clients send them \
                 (GET http://HOST/path). Set http_proxy=http://THIS_ADDRESS for your tool and use http:// URLs, \
                 or send plain requests to an upstream's own listener instead.\nConfigured hosts:\n{}\n",
                routes.known
            ),
        );
    };
    if !matches!(req.uri().scheme_str(), Some("http") | Some("https")) {
        return refuse(
            StatusCode::BAD_REQUEST,
            "not-a-proxy-request",
            "pinproxy forwards only http:// URLs (it adds the TLS itself)\n".to_string(),
        );
    }
    match routes.find(host, req.uri().port_u16()) {
        Some(upstream) => Ok(upstream.clone()),
        None => {
            let asked = req
                .uri()
                .authority()
                .map_or(host, |a| a.as_str())
                .to_string();
            refuse(
                StatusCode::FORBIDDEN,
                "unknown-host",
                format!(
                    "pinproxy is not an open proxy: {asked:?} is not a configured upstream.\n\
                     Configured hosts:\n{}\n",
                    routes.known
                ),
            )
        }
    }
}
