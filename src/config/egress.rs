//! `egress_proxy`: the HTTP CONNECT proxy an upstream is reached through, parsed
//! with its credentials kept out of every message.

use std::fmt;

use super::address::{join_host_port, parse_address};

/// An HTTP proxy that upstream connections go through (`egress_proxy`): a
/// CONNECT tunnel to the upstream's address, inside which pinproxy makes its
/// own pinned handshake.
#[derive(Clone, PartialEq, Eq)]
pub struct EgressProxy {
    /// `host:port` of the proxy.
    pub address: String,
    /// `Proxy-Authorization: Basic …` for `user:password@` in the URL.
    pub authorization: Option<http::HeaderValue>,
}

impl fmt::Debug for EgressProxy {
    // The address only: the credentials are never printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EgressProxy({})", self.address)
    }
}

impl EgressProxy {
    /// `http://[user:password@]host:port`; `env` reads it from `HTTPS_PROXY`
    /// (or `https_proxy`), and with neither set there is no proxy.
    pub fn parse(text: &str) -> Result<Option<EgressProxy>, String> {
        if text == "env" {
            return match std::env::var("HTTPS_PROXY").or_else(|_| std::env::var("https_proxy")) {
                Ok(value) if !value.is_empty() => EgressProxy::parse_url(&value)
                    .map(Some)
                    .map_err(|e| format!("egress_proxy = \"env\": HTTPS_PROXY: {e}")),
                _ => Ok(None),
            };
        }
        EgressProxy::parse_url(text).map(Some)
    }

    fn parse_url(text: &str) -> Result<EgressProxy, String> {
        let example =
            "write \"http://proxy.internal:3128\" or \"http://user:password@proxy.internal:3128\"";
        let Some(rest) = text.strip_prefix("http://") else {
            let scheme = text.split_once("://").map_or("", |(s, _)| s);
            return Err(if scheme.is_empty() {
                format!("egress_proxy {:?} is not a URL: {example}", redact(text))
            } else {
                format!(
                    "egress_proxy: {scheme}:// proxies are not supported; pinproxy asks the proxy for a CONNECT \
                     tunnel over plain http:// (the tunnel carries its own TLS, checked by pin): {example}"
                )
            });
        };
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.contains(['/', '?', '#']) {
            return Err(format!(
                "egress_proxy {:?} has a path; only the proxy's address counts: {example}",
                redact(text)
            ));
        }
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((user, host)) => (Some(user), host),
            None => (None, authority),
        };
        let (host, port) = parse_address(hostport).map_err(|_| {
            format!(
                "egress_proxy {:?} needs HOST:PORT (the port too): {example}",
                redact(text)
            )
        })?;
        let authorization = match userinfo {
            None => None,
            Some(userinfo) => {
                use base64::Engine as _;
                let decoded = percent_decode(userinfo).ok_or_else(|| {
                    "egress_proxy: the user:password part has a bad %-escape".to_string()
                })?;
                let token = base64::engine::general_purpose::STANDARD.encode(decoded);
                let mut value =
                    http::HeaderValue::from_str(&format!("Basic {token}")).map_err(|_| {
                        "egress_proxy: the credentials cannot be sent in a header".to_string()
                    })?;
                value.set_sensitive(true);
                Some(value)
            }
        };
        Ok(EgressProxy {
            address: join_host_port(&host, port),
            authorization,
        })
    }
}

/// `text` with everything before its last `@` (the `user:password`) replaced,
/// for messages: with or without a scheme, whatever the rest looks like.
pub(crate) fn redact(text: &str) -> String {
    match text.rsplit_once('@') {
        Some((before, host)) => {
            let scheme = before.split_once("://").map_or("", |(s, _)| s);
            let sep = if scheme.is_empty() { "" } else { "://" };
            format!("{scheme}{sep}…@{host}")
        }
        None => text.to_string(),
    }
}

/// Decodes `%XX` escapes (user names and passwords in URLs, socket paths in Host).
pub(crate) fn percent_decode(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(out)
}
