//! The serde layer: the file's tables as written, every value with its span so
//! that a mistake can name its line, and the `[limits]` checks.

use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::address::duration;
use super::errors::Located;
use super::listener::ListenerKeys;
use super::model::{Http2, Limits};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) shutdown_timeout: Option<Spanned<String>>,
    pub(super) shutdown_drain_delay: Option<Spanned<String>>,
    pub(super) admin: Option<RawAdmin>,
    pub(super) proxy: Option<RawAdmin>,
    pub(super) limits: Option<RawLimits>,
    pub(super) known_pins: Option<Spanned<String>>,
    pub(super) audit_log: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) upstream: Vec<RawUpstream>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimits {
    pub(super) max_client_connections: Option<Spanned<i64>>,
    pub(super) header_read_timeout: Option<Spanned<String>>,
    pub(super) max_header_bytes: Option<Spanned<i64>>,
    pub(super) max_headers: Option<Spanned<i64>>,
    pub(super) max_request_body: Option<Spanned<i64>>,
    pub(super) max_concurrent_streams: Option<Spanned<i64>>,
    pub(super) max_requests_in_flight: Option<Spanned<i64>>,
    pub(super) release_idle_buffers_after: Option<Spanned<String>>,
}

/// A whole number in `range`, or where it is and what would do.
pub(super) fn count(
    v: &Spanned<i64>,
    key: &str,
    range: std::ops::RangeInclusive<i64>,
) -> Located<usize> {
    let n = *v.get_ref();
    if range.contains(&n) {
        Ok(n as usize)
    } else {
        Err((
            v.span(),
            format!(
                "{key} = {n} is out of range: use a number from {} to {}",
                range.start(),
                range.end()
            ),
        ))
    }
}

pub(super) fn check_limits(raw: &RawLimits) -> Located<Limits> {
    let d = Limits::default();
    Ok(Limits {
        max_client_connections: match &raw.max_client_connections {
            Some(v) => count(v, "max_client_connections", 1..=1_000_000)?,
            None => d.max_client_connections,
        },
        header_read_timeout: match &raw.header_read_timeout {
            Some(v) => {
                let limit = duration(v.get_ref()).map_err(|m| (v.span(), m))?;
                // Timers are armed from it on every connection; a day is already generous.
                if limit > Duration::from_secs(86_400) {
                    return Err((
                        v.span(),
                        format!(
                            "header_read_timeout = {:?} is too long: use at most \"24h\" (it is how long an idle \
                             or silent client connection may hold a slot)",
                            v.get_ref()
                        ),
                    ));
                }
                limit
            }
            None => d.header_read_timeout,
        },
        // hyper needs room for at least 8 KiB of head.
        max_header_bytes: match &raw.max_header_bytes {
            Some(v) => count(v, "max_header_bytes", 8192..=16 * 1024 * 1024)?,
            None => d.max_header_bytes,
        },
        max_headers: match &raw.max_headers {
            Some(v) => count(v, "max_headers", 1..=10_000)?,
            None => d.max_headers,
        },
        max_request_body: match &raw.max_request_body {
            Some(v) => Some(count(v, "max_request_body", 0..=i64::MAX)? as u64),
            None => d.max_request_body,
        },
        max_concurrent_streams: match &raw.max_concurrent_streams {
            Some(v) => count(v, "max_concurrent_streams", 1..=10_000)? as u32,
            None => d.max_concurrent_streams,
        },
        max_requests_in_flight: match &raw.max_requests_in_flight {
            Some(v) => count(v, "max_requests_in_flight", 1..=1_000_000)?,
            None => d.max_requests_in_flight,
        },
        release_idle_buffers_after: match &raw.release_idle_buffers_after {
            // "0s" is meaningful here: as soon as each response is sent.
            Some(v) if humantime::parse_duration(v.get_ref()).is_ok_and(|d| d.is_zero()) => {
                Duration::ZERO
            }
            Some(v) => duration(v.get_ref()).map_err(|m| (v.span(), m))?,
            None => d.release_idle_buffers_after,
        },
    })
}

/// `[admin]` and `[proxy]`: a listener of pinproxy's own.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAdmin {
    pub(super) listen: Spanned<String>,
    #[serde(default)]
    pub(super) allow_non_loopback: bool,
    pub(super) socket_mode: Option<Spanned<String>>,
    pub(super) socket_group: Option<Spanned<toml::Value>>,
    #[serde(default)]
    pub(super) allowed_hosts: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) allowed_origins: Vec<Spanned<String>>,
    pub(super) allowed_users: Option<Spanned<Vec<Spanned<toml::Value>>>>,
}

impl RawAdmin {
    pub(super) fn keys(&self) -> ListenerKeys<'_> {
        ListenerKeys {
            listen: &self.listen,
            allow_non_loopback: self.allow_non_loopback,
            socket_mode: &self.socket_mode,
            socket_group: &self.socket_group,
            allowed_hosts: &self.allowed_hosts,
            allowed_origins: &self.allowed_origins,
            allowed_users: &self.allowed_users,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUpstream {
    pub(super) name: Spanned<String>,
    pub(super) listen: Spanned<String>,
    /// `"host:port"` or a list of them, in failover order.
    pub(super) address: Option<Spanned<toml::Value>>,
    pub(super) server_name: Option<Spanned<String>>,
    pub(super) fingerprints: Option<Spanned<Vec<Spanned<String>>>>,
    /// `[[upstream.target]]`: failover addresses with their own pins.
    #[serde(default)]
    pub(super) target: Vec<RawTarget>,
    pub(super) failback_after: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) allow_non_loopback: bool,
    pub(super) connect_timeout: Option<Spanned<String>>,
    pub(super) handshake_timeout: Option<Spanned<String>>,
    pub(super) response_timeout: Option<Spanned<String>>,
    pub(super) idle_timeout: Option<Spanned<String>>,
    pub(super) check_interval: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) hosts: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) http2: Http2,
    #[serde(default = "yes")]
    pub(super) tls_resumption: bool,
    #[serde(default)]
    pub(super) legacy_crypto: bool,
    pub(super) client_certificate: Option<Spanned<String>>,
    pub(super) client_key: Option<Spanned<String>>,
    pub(super) egress_proxy: Option<Spanned<String>>,
    pub(super) trust_on_first_use: Option<Spanned<bool>>,
    pub(super) max_connections: Option<Spanned<i64>>,
    pub(super) max_idle_connections: Option<Spanned<i64>>,
    pub(super) socket_mode: Option<Spanned<String>>,
    pub(super) socket_group: Option<Spanned<toml::Value>>,
    #[serde(default)]
    pub(super) allowed_hosts: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) allowed_origins: Vec<Spanned<String>>,
    pub(super) allowed_users: Option<Spanned<Vec<Spanned<toml::Value>>>>,
    pub(super) tls_certificate: Option<Spanned<String>>,
    pub(super) tls_key: Option<Spanned<String>>,
    pub(super) client_ca: Option<Spanned<String>>,
    pub(super) allowed_clients: Option<Spanned<Vec<Spanned<String>>>>,
    /// `"METHOD /path-glob"` rules for every client.
    pub(super) allowed_requests: Option<Spanned<Vec<Spanned<String>>>>,
    /// `[[upstream.policy]]`: rules per local user.
    #[serde(default)]
    pub(super) policy: Vec<RawPolicy>,
    pub(super) audit: Option<bool>,
    pub(super) session: Option<Spanned<RawSession>>,
    /// Header name to `"file:PATH"` or `"env:VAR"`.
    pub(super) inject_headers: Option<Spanned<std::collections::BTreeMap<String, Spanned<String>>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSession {
    pub(super) kind: Spanned<String>,
    pub(super) api_key_file: Option<Spanned<String>>,
    pub(super) user: Option<Spanned<String>>,
    pub(super) password_file: Option<Spanned<String>>,
    pub(super) domain: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) read_only: bool,
    pub(super) session_timeout: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPolicy {
    #[serde(default)]
    pub(super) users: Vec<Spanned<toml::Value>>,
    #[serde(default)]
    pub(super) clients: Vec<Spanned<String>>,
    pub(super) allow: Spanned<Vec<Spanned<String>>>,
}

impl RawUpstream {
    /// `trust_on_first_use = true`, and where it says so.
    pub(super) fn learns(&self) -> Option<std::ops::Range<usize>> {
        self.trust_on_first_use
            .as_ref()
            .filter(|t| *t.get_ref())
            .map(|t| t.span())
    }
}

pub(super) fn yes() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTarget {
    pub(super) address: Spanned<String>,
    pub(super) fingerprints: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) client_certificate: Option<Spanned<String>>,
    pub(super) client_key: Option<Spanned<String>>,
    pub(super) egress_proxy: Option<Spanned<String>>,
}
