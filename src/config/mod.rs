//! The configuration: the TOML file (or the `run` flags) turned into checked,
//! typed settings. Every error names where it is (file:line:column, or the flag)
//! and says how to fix it.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustls::pki_types::ServerName;
use serde::Deserialize;
use toml::Spanned;

use crate::tls::identity::ClientIdentity;
use crate::tls::pin::CertPin;

mod errors;

pub use errors::ConfigError;
use errors::{every_error, explain_toml_error, Problem};

/// Default for `connect_timeout`: TCP connect to the upstream.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default for `handshake_timeout`: the TLS handshake after connecting.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default for `response_timeout`: from sending the request to the whole response
/// head. Generous because `publish` and `install-policy` can take minutes.
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(300);
/// Default for `idle_timeout`: how long a pooled upstream connection may sit unused.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default for an upstream's `max_connections`: enough for busy automation, few
/// enough that a flood of clients cannot open thousands of TLS sessions to a
/// management server.
pub const DEFAULT_MAX_UPSTREAM_CONNECTIONS: usize = 128;
/// Default for `failback_after`: how long to stay on a fallback address.
pub const DEFAULT_FAILBACK_AFTER: Duration = Duration::from_secs(30);
/// Default for `shutdown_timeout`: how long in-flight requests may finish on SIGTERM.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

/// The whole, checked configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// How long in-flight requests may run after SIGINT/SIGTERM.
    pub shutdown_timeout: Duration,
    /// How long to keep accepting after SIGINT/SIGTERM, with `/readyz` at 503,
    /// before the drain starts (`shutdown_drain_delay`, default 0).
    pub shutdown_drain_delay: Duration,
    /// The optional admin endpoint (`/healthz`, `/readyz`, `/metrics`).
    pub admin: Option<AdminConfig>,
    /// The optional HTTP-proxy listener (`http_proxy=http://…`).
    pub proxy: Option<ProxyConfig>,
    /// Client-side limits, for every listener.
    pub limits: Limits,
    /// One entry per listener and its upstream.
    pub upstreams: Vec<UpstreamConfig>,
    /// Where pins learned on first use are kept (`known_pins`; set when an
    /// upstream has `trust_on_first_use`).
    pub known_pins: Option<PathBuf>,
}

/// The `[limits]` table: what one client may take of a listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Client connections served at once per listener; more wait in the accept queue.
    pub max_client_connections: usize,
    /// Time a client has to send a request head, and so also how long a kept-alive
    /// connection may sit idle between requests (slowloris defence).
    pub header_read_timeout: Duration,
    /// Largest request head in bytes; larger gets 431 (or 414 for the request line).
    pub max_header_bytes: usize,
    /// Most header fields in one request; more gets 431.
    pub max_headers: usize,
    /// Largest request body in bytes; larger gets 413. `None`: no limit.
    pub max_request_body: Option<u64>,
    /// HTTP/2 streams one client connection may have open at once (announced in
    /// SETTINGS; more are refused with REFUSED_STREAM).
    pub max_concurrent_streams: u32,
    /// Requests in progress at once per listener, over all its connections;
    /// more get 503 `too-busy` at once.
    pub max_requests_in_flight: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_client_connections: 4096,
            header_read_timeout: Duration::from_secs(60),
            max_header_bytes: 64 * 1024,
            max_headers: 100,
            max_request_body: None,
            max_concurrent_streams: 64,
            max_requests_in_flight: 256,
        }
    }
}

/// The `[admin]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminConfig {
    /// Where the admin endpoint listens (plain HTTP, loopback unless allowed).
    pub listen: Listen,
    /// Who may use it.
    pub access: Access,
}

/// The `[proxy]` table: one listener for clients that send absolute-form
/// requests through `http_proxy`, routed to upstreams by host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyConfig {
    /// Where the HTTP-proxy listener binds (loopback unless allowed).
    pub listen: Listen,
    /// Who may use it (its Host picks the upstream, so `allowed_hosts` is empty).
    pub access: Access,
}

/// Where a listener binds: a TCP address, a Unix socket file, or a socket
/// systemd passed (socket activation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    /// `IP:PORT` (port 0: any free port).
    Tcp(SocketAddr),
    /// `unix:/path`.
    Unix(UnixSocket),
    /// `systemd:NAME`: the listening socket systemd passed under that name
    /// (`FileDescriptorName=` in the .socket unit).
    Systemd(SystemdSocket),
}

/// A socket systemd passed, by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemdSocket {
    /// Its `FileDescriptorName=`.
    pub name: String,
    /// A TCP socket on a non-loopback address is accepted (`allow_non_loopback`).
    pub allow_non_loopback: bool,
}

/// A Unix-socket listener's file and who may open it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnixSocket {
    /// Absolute path of the socket file.
    pub path: PathBuf,
    /// Permission bits of the file (`socket_mode`, default 0600).
    pub mode: u32,
    /// Group of the file (`socket_group`), if not pinproxy's own.
    pub group: Option<u32>,
}

/// Default for `socket_mode`: only pinproxy's own user may connect.
pub const DEFAULT_SOCKET_MODE: u32 = 0o600;

impl Listen {
    /// The TCP address, if this is one.
    pub fn tcp(&self) -> Option<SocketAddr> {
        match self {
            Listen::Tcp(addr) => Some(*addr),
            Listen::Unix(_) | Listen::Systemd(_) => None,
        }
    }

    /// Whether a listener bound for `self` can serve `other` without a new
    /// socket: the same socket file, or the same TCP address (port 0 means "any
    /// port", which never names a socket that is already bound).
    pub fn same_socket(&self, other: &Listen) -> bool {
        match (self, other) {
            (Listen::Tcp(a), Listen::Tcp(b)) => a == b && a.port() != 0,
            (Listen::Unix(a), Listen::Unix(b)) => a.path == b.path,
            (Listen::Systemd(a), Listen::Systemd(b)) => a.name == b.name,
            _ => false,
        }
    }
}

impl From<SocketAddr> for Listen {
    fn from(addr: SocketAddr) -> Listen {
        Listen::Tcp(addr)
    }
}

impl fmt::Display for Listen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Listen::Tcp(addr) => addr.fmt(f),
            Listen::Unix(s) => write!(f, "unix:{}", s.path.display()),
            Listen::Systemd(s) => write!(f, "systemd:{}", s.name),
        }
    }
}

/// Who may use a listener, besides reaching it at all (see SECURITY.md).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Access {
    /// Host names besides loopback ones that requests may carry in `Host` /
    /// `:authority` (DNS-rebinding defence).
    pub allowed_hosts: Vec<HostAlias>,
    /// Web origins (`scheme://host[:port]`, lower case) whose pages may use the
    /// listener, besides `http://` + an allowed host.
    pub allowed_origins: Vec<String>,
    /// The only local users (uids) that may connect; `None`: any.
    pub allowed_users: Option<Vec<u32>>,
}

/// A name by which proxy-mode clients reach an upstream: `host` or `host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostAlias {
    /// Lower-case host name or IP (IPv6 without brackets).
    pub host: String,
    /// If given, only requests for this port match.
    pub port: Option<u16>,
}

impl fmt::Display for HostAlias {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.port {
            Some(p) => f.write_str(&join_host_port(&self.host, p)),
            None => f.write_str(&self.host),
        }
    }
}

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

/// A failover address with its own pins.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// Host part (DNS name or IP, without brackets).
    pub host: String,
    /// Port.
    pub port: u16,
    /// Pins for this server's certificate.
    pub pins: Vec<CertPin>,
    /// The client certificate shown to this server when it asks for one.
    pub client_identity: Option<ClientIdentity>,
    /// The HTTP proxy connections to this server go through.
    pub egress_proxy: Option<EgressProxy>,
}

impl Target {
    /// `host:port`.
    pub fn address(&self) -> String {
        join_host_port(&self.host, self.port)
    }
}

/// Whether to speak HTTP/2 to the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Http2 {
    /// Offer h2 and http/1.1 by ALPN; use what the server picks.
    #[default]
    Auto,
    /// HTTP/1.1 only.
    Never,
    /// h2 only (the server must pick it).
    Always,
}

/// One plain-HTTP listener and the pinned TLS server it forwards to.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamConfig {
    /// Unique name, used in logs.
    pub name: String,
    /// Where the plain-HTTP listener binds.
    pub listen: Listen,
    /// Who may use the listener.
    pub access: Access,
    /// Host part of `address` (a DNS name or an IP, without brackets).
    pub host: String,
    /// Port of `address`.
    pub port: u16,
    /// SNI and Host name; `None` means "use `host`".
    pub server_name: Option<ServerName<'static>>,
    /// Any one matching pin accepts the server.
    pub pins: Vec<CertPin>,
    /// The client certificate shown to the server when it asks for one
    /// (`client_certificate`, `client_key`).
    pub client_identity: Option<ClientIdentity>,
    /// The HTTP proxy connections to the server go through (`egress_proxy`).
    pub egress_proxy: Option<EgressProxy>,
    /// With `trust_on_first_use = true`: the `known_pins` file where this
    /// upstream's pin is learned and kept (`pins` is then empty).
    pub known_pins: Option<PathBuf>,
    /// More addresses, tried in order when the ones before cannot be reached.
    pub fallbacks: Vec<Target>,
    /// After failing over, how long to stay on a fallback before trying the
    /// first address again.
    pub failback_after: Duration,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// TLS handshake timeout.
    pub handshake_timeout: Duration,
    /// Time allowed for the response head after the request is sent.
    pub response_timeout: Duration,
    /// Idle pooled upstream connections are closed after this long.
    pub idle_timeout: Duration,
    /// Names by which HTTP-proxy clients select this upstream (besides `name`).
    pub hosts: Vec<HostAlias>,
    /// HTTP/2 to the upstream.
    pub http2: Http2,
    /// Accept legacy signature algorithms (RSA keys under 2048 bits, SHA-1 signatures)
    /// in the handshake; off by default.
    pub legacy_crypto: bool,
    /// Resume TLS sessions on reconnect (the session cache belongs to this pin set).
    pub tls_resumption: bool,
    /// Most connections open to the upstream at once (busy and idle); a request
    /// that needs one more waits up to `connect_timeout`.
    pub max_connections: usize,
    /// Most idle connections kept in the pool.
    pub max_idle_connections: usize,
}

impl UpstreamConfig {
    /// An upstream with every optional setting at its default.
    pub fn new(
        name: &str,
        listen: impl Into<Listen>,
        host: &str,
        port: u16,
        pins: Vec<CertPin>,
    ) -> UpstreamConfig {
        UpstreamConfig {
            name: name.to_string(),
            listen: listen.into(),
            access: Access::default(),
            host: host.to_string(),
            port,
            server_name: None,
            pins,
            client_identity: None,
            egress_proxy: None,
            known_pins: None,
            fallbacks: Vec::new(),
            failback_after: DEFAULT_FAILBACK_AFTER,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            response_timeout: DEFAULT_RESPONSE_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            hosts: Vec::new(),
            http2: Http2::default(),
            legacy_crypto: false,
            tls_resumption: true,
            max_connections: DEFAULT_MAX_UPSTREAM_CONNECTIONS,
            max_idle_connections: DEFAULT_MAX_UPSTREAM_CONNECTIONS,
        }
    }

    /// The name used for SNI and the Host header.
    pub fn effective_server_name(&self) -> std::borrow::Cow<'_, str> {
        match &self.server_name {
            Some(name) => name.to_str(),
            None => std::borrow::Cow::Borrowed(&self.host),
        }
    }

    /// `host:port` for connecting, with brackets around an IPv6 host.
    pub fn address(&self) -> String {
        join_host_port(&self.host, self.port)
    }

    /// Whether `other` describes the same upstream (address, pins, TLS and
    /// timeouts), whatever its listener and access rules: only then may the
    /// pool and TLS state be kept.
    pub fn same_upstream(&self, other: &UpstreamConfig) -> bool {
        let mut other = other.clone();
        other.listen = self.listen.clone();
        other.access = self.access.clone();
        *self == other
    }

    /// Whether a connection made under `self` would be trusted under `other`
    /// too: same addresses, pins, server name and TLS settings. A reload that
    /// changes any of these closes the upstream's open tunnels.
    pub fn same_trust(&self, other: &UpstreamConfig) -> bool {
        self.targets() == other.targets()
            && self.server_name == other.server_name
            && self.legacy_crypto == other.legacy_crypto
            && self.tls_resumption == other.tls_resumption
    }

    /// Every address in failover order, the first one included.
    pub fn targets(&self) -> Vec<Target> {
        std::iter::once(Target {
            host: self.host.clone(),
            port: self.port,
            pins: self.pins.clone(),
            client_identity: self.client_identity.clone(),
            egress_proxy: self.egress_proxy.clone(),
        })
        .chain(self.fallbacks.iter().cloned())
        .collect()
    }
}

impl Config {
    /// Reads and checks a TOML file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::parse(&read(path)?, path)
    }

    /// Checks TOML `text`; `path` names the file in errors, and the directory
    /// files named in it are found relative to. Reports every mistake in it.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        every_error(text, path, |text| Config::check(text, path))
    }

    /// One check of `text`, to its first mistake.
    fn check(text: &str, path: &Path) -> Result<Config, Problem> {
        let at = Problem::at;
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let span = e.span().unwrap_or(0..0);
            let message = explain_toml_error(e.message(), text, span.start);
            at(span, message)
        })?;
        if raw.upstream.is_empty() {
            return Err(Problem {
                span: None,
                message: "no [[upstream]] table: add one with name, listen, address and fingerprints (see proxy.example.toml)".into(),
            });
        }
        let shutdown_timeout = match &raw.shutdown_timeout {
            Some(v) => duration(v.get_ref()).map_err(|m| at(v.span(), m))?,
            None => DEFAULT_SHUTDOWN_TIMEOUT,
        };
        let shutdown_drain_delay = match &raw.shutdown_drain_delay {
            Some(v) => {
                let delay = duration(v.get_ref()).map_err(|m| at(v.span(), m))?;
                if delay > Duration::from_secs(3600) {
                    return Err(at(
                        v.span(),
                        "shutdown_drain_delay is at most 1h: it delays every stop and restart by that much".into(),
                    ));
                }
                delay
            }
            None => Duration::ZERO,
        };
        // Files the config names (client certificates) are found relative to it.
        let base = path.parent().unwrap_or(Path::new("."));
        let mut upstreams: Vec<UpstreamConfig> = Vec::new();
        for u in &raw.upstream {
            let up = check_upstream(u, base).map_err(|(span, m)| at(span, m))?;
            if upstreams.iter().any(|o| o.name == up.name) {
                return Err(at(
                    u.name.span(),
                    format!(
                        "upstream name {:?} is used twice; names must be unique",
                        up.name
                    ),
                ));
            }
            if let Some(o) = upstreams.iter().find(|o| o.listen.same_socket(&up.listen)) {
                return Err(at(
                    u.listen.span(),
                    format!(
                        "listen address {} is already used by upstream {:?}; give each upstream its own port",
                        up.listen, o.name
                    ),
                ));
            }
            upstreams.push(up);
        }
        let learning = raw.upstream.iter().any(|u| u.learns().is_some());
        let known_pins = match (&raw.known_pins, learning) {
            (Some(path), _) => Some(base.join(path.get_ref())),
            (None, false) => None,
            (None, true) => match std::env::var_os("STATE_DIRECTORY") {
                // systemd's StateDirectory= (may list several, colon-separated).
                Some(dirs) => std::env::split_paths(&dirs)
                    .next()
                    .map(|dir| dir.join("known_pins.toml")),
                None => None,
            },
        };
        for (up, raw_u) in upstreams.iter_mut().zip(&raw.upstream) {
            if let Some(span) = raw_u.learns() {
                match &known_pins {
                    Some(path) => {
                        // Missing, unsafe, unreadable or damaged: refuse it now (a
                        // reload keeps the running config).
                        crate::tls::known_pins::check_store(path)
                            .and_then(|()| crate::tls::known_pins::KnownPins::open(path))
                            .map_err(|m| at(span.clone(), m))?;
                        up.known_pins = Some(path.clone());
                    }
                    None => {
                        return Err(at(
                            span,
                            "trust_on_first_use needs a file to keep the learned pin in: add known_pins = \
                             \"/var/lib/pinproxy/known_pins.toml\" at the top level (under systemd, StateDirectory= \
                             gives a default)"
                                .into(),
                        ))
                    }
                }
            }
        }
        // Every name a proxy-mode client may use must lead to exactly one upstream.
        let mut seen: Vec<(HostAlias, &str)> = Vec::new();
        for (u, raw_u) in upstreams.iter().zip(&raw.upstream) {
            let own = HostAlias {
                host: u.name.to_ascii_lowercase(),
                port: None,
            };
            let spans =
                std::iter::once(raw_u.name.span()).chain(raw_u.hosts.iter().map(|h| h.span()));
            for (alias, span) in std::iter::once(&own).chain(&u.hosts).zip(spans) {
                if let Some((_, other)) = seen.iter().find(|(a, _)| a == alias) {
                    return Err(at(
                        span,
                        format!(
                            "host {alias} would select both upstream {other:?} and {:?} in proxy mode; give it to one",
                            u.name
                        ),
                    ));
                }
                seen.push((alias.clone(), &u.name));
            }
        }
        let side_listener = |raw: &Option<RawAdmin>,
                             table: &str|
         -> Result<Option<(Listen, Access)>, Problem> {
            let Some(a) = raw else { return Ok(None) };
            if table == "proxy" {
                if let Some(h) = a.allowed_hosts.first() {
                    return Err(at(
                        h.span(),
                        "allowed_hosts does not apply to [proxy]: its clients name an upstream in every URL, and only \
                         configured upstream names and hosts are served; use allowed_origins and allowed_users here"
                            .into(),
                    ));
                }
            }
            let (listen, access) = check_listener(
                &a.keys(),
                &format!("set allow_non_loopback = true in [{table}]"),
            )
            .map_err(|(span, m)| at(span, m))?;
            if let Some(up) = upstreams.iter().find(|u| u.listen.same_socket(&listen)) {
                return Err(at(
                    a.listen.span(),
                    format!(
                        "[{table}] listen address {listen} is already used by upstream {:?}; give it its own port",
                        up.name
                    ),
                ));
            }
            Ok(Some((listen, access)))
        };
        let admin = side_listener(&raw.admin, "admin")?
            .map(|(listen, access)| AdminConfig { listen, access });
        let proxy = side_listener(&raw.proxy, "proxy")?
            .map(|(listen, access)| ProxyConfig { listen, access });
        if let (Some(a), Some(p)) = (&admin, &proxy) {
            if a.listen.same_socket(&p.listen) {
                let span = raw.proxy.as_ref().map_or(0..0, |p| p.listen.span());
                return Err(at(
                    span,
                    format!(
                        "[proxy] listen address {} is also [admin]'s; give each its own port",
                        p.listen
                    ),
                ));
            }
        }
        let limits = match &raw.limits {
            Some(l) => check_limits(l).map_err(|(span, m)| at(span, m))?,
            None => Limits::default(),
        };
        Ok(Config {
            shutdown_timeout,
            shutdown_drain_delay,
            admin,
            proxy,
            limits,
            upstreams,
            known_pins,
        })
    }

    /// Builds a one-upstream config from `pinproxy run` flags.
    pub fn from_flags(flags: &Flags) -> Result<Config, ConfigError> {
        let flag = |name: &str, message: String| ConfigError::new(name, message);
        let listen = parse_listen(
            &flags.listen,
            flags.allow_non_loopback,
            "pass --allow-non-loopback",
        )
        .map_err(|m| flag("--listen", m))?;
        let listen = match listen {
            Listen::Unix(socket) => Listen::Unix(UnixSocket {
                mode: match &flags.socket_mode {
                    Some(text) => socket_mode(text).map_err(|m| flag("--socket-mode", m))?,
                    None => DEFAULT_SOCKET_MODE,
                },
                ..socket
            }),
            Listen::Tcp(_) if flags.socket_mode.is_some() => {
                return Err(flag(
                    "--socket-mode",
                    "--socket-mode applies to a unix:/path listener only".into(),
                ))
            }
            tcp => tcp,
        };
        let (host, port) = parse_address(&flags.upstream).map_err(|m| flag("--upstream", m))?;
        let server_name = match &flags.server_name {
            Some(name) => Some(parse_server_name(name).map_err(|m| flag("--server-name", m))?),
            None => None,
        };
        if flags.fingerprints.is_empty() {
            return Err(flag(
                "--fingerprint",
                "at least one --fingerprint PIN is required; get it with `api fingerprint` on the server or `pinproxy fingerprint HOST:PORT`".into(),
            ));
        }
        let mut pins = Vec::new();
        for (i, text) in flags.fingerprints.iter().enumerate() {
            let pin = CertPin::parse(text)
                .map_err(|e| flag("--fingerprint", format!("pin {}: {e}", i + 1)))?;
            pins.push(pin);
        }
        let mut upstream = UpstreamConfig::new("default", listen, &host, port, pins);
        upstream.server_name = server_name;
        Ok(Config {
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            shutdown_drain_delay: Duration::ZERO,
            admin: None,
            proxy: None,
            limits: Limits::default(),
            upstreams: vec![upstream],
            known_pins: None,
        })
    }
}

/// The `pinproxy run` flags that describe one upstream without a file.
#[derive(Debug, Clone, Default)]
pub struct Flags {
    /// `--listen`.
    pub listen: String,
    /// `--upstream`.
    pub upstream: String,
    /// `--fingerprint`, repeated.
    pub fingerprints: Vec<String>,
    /// `--server-name`.
    pub server_name: Option<String>,
    /// `--allow-non-loopback`.
    pub allow_non_loopback: bool,
    /// `--socket-mode` (for a `unix:` listener).
    pub socket_mode: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    shutdown_timeout: Option<Spanned<String>>,
    shutdown_drain_delay: Option<Spanned<String>>,
    admin: Option<RawAdmin>,
    proxy: Option<RawAdmin>,
    limits: Option<RawLimits>,
    known_pins: Option<Spanned<String>>,
    #[serde(default)]
    upstream: Vec<RawUpstream>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_client_connections: Option<Spanned<i64>>,
    header_read_timeout: Option<Spanned<String>>,
    max_header_bytes: Option<Spanned<i64>>,
    max_headers: Option<Spanned<i64>>,
    max_request_body: Option<Spanned<i64>>,
    max_concurrent_streams: Option<Spanned<i64>>,
    max_requests_in_flight: Option<Spanned<i64>>,
}

/// A whole number in `range`, or where it is and what would do.
fn count(v: &Spanned<i64>, key: &str, range: std::ops::RangeInclusive<i64>) -> Located<usize> {
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

fn check_limits(raw: &RawLimits) -> Located<Limits> {
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
    })
}

/// `[admin]` and `[proxy]`: a listener of pinproxy's own.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    listen: Spanned<String>,
    #[serde(default)]
    allow_non_loopback: bool,
    socket_mode: Option<Spanned<String>>,
    socket_group: Option<Spanned<toml::Value>>,
    #[serde(default)]
    allowed_hosts: Vec<Spanned<String>>,
    #[serde(default)]
    allowed_origins: Vec<Spanned<String>>,
    allowed_users: Option<Spanned<Vec<Spanned<toml::Value>>>>,
}

impl RawAdmin {
    fn keys(&self) -> ListenerKeys<'_> {
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

/// The keys every listener table has: where it binds and who may use it.
struct ListenerKeys<'a> {
    listen: &'a Spanned<String>,
    allow_non_loopback: bool,
    socket_mode: &'a Option<Spanned<String>>,
    socket_group: &'a Option<Spanned<toml::Value>>,
    allowed_hosts: &'a [Spanned<String>],
    allowed_origins: &'a [Spanned<String>],
    allowed_users: &'a Option<Spanned<Vec<Spanned<toml::Value>>>>,
}

/// Where a listener binds and who may use it, checked.
fn check_listener(k: &ListenerKeys<'_>, allow_how: &str) -> Located<(Listen, Access)> {
    let listen = parse_listen(k.listen.get_ref(), k.allow_non_loopback, allow_how)
        .map_err(|m| (k.listen.span(), m))?;
    // socket_mode and socket_group are about a socket file pinproxy creates.
    let unix_only = k
        .socket_mode
        .as_ref()
        .map(|m| ("socket_mode", m.span()))
        .or(k.socket_group.as_ref().map(|g| ("socket_group", g.span())));
    let listen = match listen {
        Listen::Unix(socket) => Listen::Unix(UnixSocket {
            mode: match k.socket_mode {
                Some(m) => socket_mode(m.get_ref()).map_err(|e| (m.span(), e))?,
                None => DEFAULT_SOCKET_MODE,
            },
            group: match k.socket_group {
                Some(g) => Some(group_id(g.get_ref()).map_err(|e| (g.span(), e))?),
                None => None,
            },
            ..socket
        }),
        Listen::Tcp(addr) => match unix_only {
            Some((key, span)) => {
                return Err((
                    span,
                    format!("{key} applies to a unix:/path listener only; listen is {addr}"),
                ))
            }
            None => Listen::Tcp(addr),
        },
        Listen::Systemd(socket) => match unix_only {
            Some((key, span)) => {
                return Err((
                    span,
                    format!(
                        "{key} does not apply to systemd:{}: the .socket unit sets the file's SocketMode=, SocketUser= \
                         and SocketGroup=",
                        socket.name
                    ),
                ))
            }
            None => Listen::Systemd(socket),
        },
    };
    let mut allowed_hosts = Vec::new();
    for h in k.allowed_hosts {
        let alias = parse_alias(h.get_ref())
            .map_err(|m| (h.span(), m.replace("hosts entry", "allowed_hosts entry")))?;
        allowed_hosts.push(alias);
    }
    let mut allowed_origins = Vec::new();
    for o in k.allowed_origins {
        allowed_origins.push(parse_origin(o.get_ref()).map_err(|m| (o.span(), m))?);
    }
    let allowed_users = match k.allowed_users {
        None => None,
        Some(list) => {
            if list.get_ref().is_empty() {
                return Err((
                    list.span(),
                    "allowed_users is empty, which would refuse everyone: list the users (names or uids) that may \
                     connect, or remove the key to let every local user in"
                        .into(),
                ));
            }
            if matches!(listen, Listen::Tcp(_)) && !crate::peer::TCP_OWNER_SUPPORTED {
                return Err((
                    list.span(),
                    "allowed_users on a TCP listener needs Linux (the kernel tells pinproxy who owns the client's \
                     socket); on this system use a unix:/path listener, where the peer's credentials are always known"
                        .into(),
                ));
            }
            let mut uids = Vec::new();
            for u in list.get_ref() {
                uids.push(user_id(u.get_ref()).map_err(|m| (u.span(), m))?);
            }
            Some(uids)
        }
    };
    Ok((
        listen,
        Access {
            allowed_hosts,
            allowed_origins,
            allowed_users,
        },
    ))
}

/// `socket_mode`: octal permission bits such as "0600" or "660".
fn socket_mode(text: &str) -> Result<u32, String> {
    let digits = text.strip_prefix("0o").unwrap_or(text);
    match u32::from_str_radix(digits, 8) {
        Ok(mode) if (3..=4).contains(&digits.len()) && mode <= 0o777 => Ok(mode),
        _ => Err(format!(
            "socket_mode {text:?} is not a file mode: write octal permission bits such as \"0600\" (only pinproxy's \
             user) or \"0660\" (also socket_group)"
        )),
    }
}

/// `socket_group`: a group name, resolved now, or a gid.
fn group_id(value: &toml::Value) -> Result<u32, String> {
    match value {
        toml::Value::Integer(n) => u32::try_from(*n)
            .map_err(|_| format!("socket_group {n} is not a group id (0 to 4294967295)")),
        toml::Value::String(name) => match nix::unistd::Group::from_name(name) {
            Ok(Some(group)) => Ok(group.gid.as_raw()),
            Ok(None) => Err(format!(
                "socket_group {name:?}: no such group on this system; create it (groupadd {name}) or give a gid"
            )),
            Err(e) => Err(format!("socket_group {name:?}: cannot look it up: {e}")),
        },
        other => Err(format!(
            "socket_group must be a group name or a gid, not {}",
            other.type_str()
        )),
    }
}

/// An `allowed_users` entry: a user name, resolved now, or a uid.
fn user_id(value: &toml::Value) -> Result<u32, String> {
    match value {
        toml::Value::Integer(n) => {
            u32::try_from(*n).map_err(|_| format!("allowed_users entry {n} is not a uid (0 to 4294967295)"))
        }
        toml::Value::String(name) => match nix::unistd::User::from_name(name) {
            Ok(Some(user)) => Ok(user.uid.as_raw()),
            Ok(None) => Err(format!(
                "allowed_users entry {name:?}: no such user on this system; check the spelling, or give the uid \
                 (id -u {name} on the machine where it exists)"
            )),
            Err(e) => Err(format!("allowed_users entry {name:?}: cannot look it up: {e}")),
        },
        other => Err(format!(
            "allowed_users entries are user names or uids, not {}",
            other.type_str()
        )),
    }
}

/// An `allowed_origins` entry: `scheme://host[:port]`, as a browser sends it
/// in `Origin`, lower-cased.
fn parse_origin(text: &str) -> Result<String, String> {
    let fix = "write the exact origin of the page, as its browser sends it: scheme://host[:port], for example \
               \"https://dashboard.example.com\" or \"http://localhost:3000\"";
    if text.trim() == "*" {
        return Err(format!(
            "allowed_origins = [\"*\"] would let every web page open in a browser on this machine use the pinned \
             channel (and read the answers): that is the attack this setting exists to stop; {fix}"
        ));
    }
    if text.trim().eq_ignore_ascii_case("null") {
        return Err(format!(
            "allowed_origins \"null\" is the origin of sandboxed frames and local files, which any page can create; {fix}"
        ));
    }
    let uri: http::Uri = text
        .parse()
        .map_err(|_| format!("allowed_origins entry {text:?} is not an origin; {fix}"))?;
    let plain = matches!(uri.scheme_str(), Some("http") | Some("https"))
        && uri.authority().is_some_and(|a| !a.as_str().contains('@'))
        && matches!(uri.path(), "" | "/")
        && uri.query().is_none()
        && !text.ends_with('/');
    if !plain {
        return Err(format!(
            "allowed_origins entry {text:?} is not an origin (scheme://host[:port], nothing after it); {fix}"
        ));
    }
    Ok(text.to_ascii_lowercase())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpstream {
    name: Spanned<String>,
    listen: Spanned<String>,
    /// `"host:port"` or a list of them, in failover order.
    address: Option<Spanned<toml::Value>>,
    server_name: Option<Spanned<String>>,
    fingerprints: Option<Spanned<Vec<Spanned<String>>>>,
    /// `[[upstream.target]]`: failover addresses with their own pins.
    #[serde(default)]
    target: Vec<RawTarget>,
    failback_after: Option<Spanned<String>>,
    #[serde(default)]
    allow_non_loopback: bool,
    connect_timeout: Option<Spanned<String>>,
    handshake_timeout: Option<Spanned<String>>,
    response_timeout: Option<Spanned<String>>,
    idle_timeout: Option<Spanned<String>>,
    #[serde(default)]
    hosts: Vec<Spanned<String>>,
    #[serde(default)]
    http2: Http2,
    #[serde(default = "yes")]
    tls_resumption: bool,
    #[serde(default)]
    legacy_crypto: bool,
    client_certificate: Option<Spanned<String>>,
    client_key: Option<Spanned<String>>,
    egress_proxy: Option<Spanned<String>>,
    trust_on_first_use: Option<Spanned<bool>>,
    max_connections: Option<Spanned<i64>>,
    max_idle_connections: Option<Spanned<i64>>,
    socket_mode: Option<Spanned<String>>,
    socket_group: Option<Spanned<toml::Value>>,
    #[serde(default)]
    allowed_hosts: Vec<Spanned<String>>,
    #[serde(default)]
    allowed_origins: Vec<Spanned<String>>,
    allowed_users: Option<Spanned<Vec<Spanned<toml::Value>>>>,
}

impl RawUpstream {
    /// `trust_on_first_use = true`, and where it says so.
    fn learns(&self) -> Option<std::ops::Range<usize>> {
        self.trust_on_first_use
            .as_ref()
            .filter(|t| *t.get_ref())
            .map(|t| t.span())
    }
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTarget {
    address: Spanned<String>,
    fingerprints: Option<Spanned<Vec<Spanned<String>>>>,
    client_certificate: Option<Spanned<String>>,
    client_key: Option<Spanned<String>>,
    egress_proxy: Option<Spanned<String>>,
}

fn parse_egress(text: &Option<Spanned<String>>) -> Located<Option<EgressProxy>> {
    match text {
        Some(t) => EgressProxy::parse(t.get_ref()).map_err(|m| (t.span(), m)),
        None => Ok(None),
    }
}

/// `client_certificate` and `client_key`, both or neither, read relative to
/// the config file's directory.
fn parse_identity(
    certificate: &Option<Spanned<String>>,
    key: &Option<Spanned<String>>,
    base: &Path,
) -> Located<Option<ClientIdentity>> {
    match (certificate, key) {
        (None, None) => Ok(None),
        (Some(c), Some(k)) => {
            let resolve = |p: &str| base.join(p);
            ClientIdentity::load(&resolve(c.get_ref()), &resolve(k.get_ref()))
                .map(Some)
                .map_err(|e| (if e.in_key { k.span() } else { c.span() }, e.message))
        }
        (Some(c), None) => Err((
            c.span(),
            "client_certificate needs client_key too: add client_key = \"/etc/pinproxy/client.key\" (its PEM private key)".into(),
        )),
        (None, Some(k)) => Err((
            k.span(),
            "client_key needs client_certificate too: add client_certificate = \"/etc/pinproxy/client.pem\" (the PEM certificate chain)".into(),
        )),
    }
}

fn parse_pins(list: &Spanned<Vec<Spanned<String>>>) -> Located<Vec<CertPin>> {
    if list.get_ref().is_empty() {
        return Err((
            list.span(),
            "fingerprints is empty: add the SHA1 line printed by `api fingerprint` on the server (or run `pinproxy fingerprint HOST:PORT`)".into(),
        ));
    }
    list.get_ref()
        .iter()
        .map(|text| {
            CertPin::parse(text.get_ref())
                .map_err(|e| (text.span(), format!("bad pin {:?}: {e}", text.get_ref())))
        })
        .collect()
}

/// Every target of an upstream, in failover order, with its pins.
fn parse_targets(u: &RawUpstream, base: &Path) -> Located<Vec<Target>> {
    let shared = match &u.fingerprints {
        Some(list) => Some(parse_pins(list)?),
        None => None,
    };
    let shared_identity = parse_identity(&u.client_certificate, &u.client_key, base)?;
    let shared_egress = parse_egress(&u.egress_proxy)?;
    let need_pins = |span: std::ops::Range<usize>| {
        (
            span,
            "no fingerprints: add fingerprints = [\"SHA1: …\"] (the SHA1 line of `api fingerprint` on the server) \
             to the upstream, or to each [[upstream.target]] (or, without a pin to compare, \
             trust_on_first_use = true)"
                .to_string(),
        )
    };
    let mut targets = Vec::new();
    if let Some(span) = u.learns() {
        if u.fingerprints.is_some() || u.target.iter().any(|t| t.fingerprints.is_some()) {
            return Err((
                span,
                "trust_on_first_use learns the pin: remove fingerprints, or remove trust_on_first_use and keep them \
                 (a configured pin is always better)"
                    .into(),
            ));
        }
        let single = match &u.address {
            Some(address) if u.target.is_empty() => address.get_ref().as_str(),
            _ => None,
        };
        let Some(text) = single else {
            return Err((
                span,
                "trust_on_first_use learns one pin per upstream: give it a single address = \"HOST:PORT\" (no list, \
                 no [[upstream.target]])"
                    .into(),
            ));
        };
        let (host, port) = parse_address(text).map_err(|m| (span.clone(), m))?;
        targets.push(Target {
            host,
            port,
            pins: Vec::new(),
            client_identity: shared_identity,
            egress_proxy: shared_egress,
        });
        return Ok(targets);
    }
    match (&u.address, u.target.is_empty()) {
        (Some(address), true) => {
            let texts: Vec<&str> = match address.get_ref() {
                toml::Value::String(one) => vec![one.as_str()],
                toml::Value::Array(many) if !many.is_empty() => many
                    .iter()
                    .map(|v| v.as_str())
                    .collect::<Option<_>>()
                    .ok_or_else(|| (address.span(), "address list must hold \"HOST:PORT\" strings".to_string()))?,
                _ => {
                    return Err((
                        address.span(),
                        "address must be \"HOST:PORT\" or a list [\"HOST:PORT\", …] tried in order".into(),
                    ))
                }
            };
            let addresses = texts
                .into_iter()
                .map(|text| parse_address(text).map_err(|m| (address.span(), m)))
                .collect::<Result<Vec<_>, _>>()?;
            // After the addresses: a missing pin list is often what a malformed
            // one left behind (see config/errors.rs), and must not hide them.
            let pins = shared.ok_or_else(|| need_pins(u.name.span()))?;
            for (host, port) in addresses {
                targets.push(Target {
                    host,
                    port,
                    pins: pins.clone(),
                    client_identity: shared_identity.clone(),
                    egress_proxy: shared_egress.clone(),
                });
            }
        }
        (None, false) => {
            for t in &u.target {
                let (host, port) = parse_address(t.address.get_ref()).map_err(|m| (t.address.span(), m))?;
                let pins = match (&t.fingerprints, &shared) {
                    (Some(own), _) => parse_pins(own)?,
                    (None, Some(shared)) => shared.clone(),
                    (None, None) => return Err(need_pins(t.address.span())),
                };
                let client_identity =
                    match parse_identity(&t.client_certificate, &t.client_key, base)? {
                        Some(own) => Some(own),
                        None => shared_identity.clone(),
                    };
                let egress_proxy = match &t.egress_proxy {
                    Some(_) => parse_egress(&t.egress_proxy)?,
                    None => shared_egress.clone(),
                };
                targets.push(Target {
                    host,
                    port,
                    pins,
                    client_identity,
                    egress_proxy,
                });
            }
        }
        (Some(address), false) => {
            return Err((
                address.span(),
                "give either address or [[upstream.target]] tables, not both".into(),
            ))
        }
        (None, true) => {
            return Err((
                u.name.span(),
                "missing field `address`: add address = \"HOST:PORT\" (or a list, or [[upstream.target]] tables)".into(),
            ))
        }
    }
    Ok(targets)
}

type Located<T> = Result<T, (std::ops::Range<usize>, String)>;

fn check_upstream(u: &RawUpstream, base: &Path) -> Located<UpstreamConfig> {
    let name = u.name.get_ref();
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err((
            u.name.span(),
            format!("upstream name {name:?} must be non-empty and use only letters, digits, '-', '_' and '.'"),
        ));
    }
    let (listen, access) = check_listener(
        &ListenerKeys {
            listen: &u.listen,
            allow_non_loopback: u.allow_non_loopback,
            socket_mode: &u.socket_mode,
            socket_group: &u.socket_group,
            allowed_hosts: &u.allowed_hosts,
            allowed_origins: &u.allowed_origins,
            allowed_users: &u.allowed_users,
        },
        "set allow_non_loopback = true for this upstream",
    )?;
    let mut targets = parse_targets(u, base)?.into_iter();
    let Some(primary) = targets.next() else {
        return Err((u.name.span(), "no address".into()));
    };
    let server_name = match &u.server_name {
        Some(sn) => Some(parse_server_name(sn.get_ref()).map_err(|m| (sn.span(), m))?),
        None => None,
    };
    let timeout = |v: &Option<Spanned<String>>, default: Duration| -> Located<Duration> {
        match v {
            Some(s) => duration(s.get_ref()).map_err(|m| (s.span(), m)),
            None => Ok(default),
        }
    };
    let mut hosts = Vec::new();
    for alias in &u.hosts {
        hosts.push(parse_alias(alias.get_ref()).map_err(|m| (alias.span(), m))?);
    }
    let max_connections = match &u.max_connections {
        Some(v) => count(v, "max_connections", 1..=100_000)?,
        None => DEFAULT_MAX_UPSTREAM_CONNECTIONS,
    };
    Ok(UpstreamConfig {
        name: name.clone(),
        listen,
        access,
        host: primary.host,
        port: primary.port,
        server_name,
        pins: primary.pins,
        client_identity: primary.client_identity,
        egress_proxy: primary.egress_proxy,
        // Set once the top-level known_pins is known.
        known_pins: None,
        fallbacks: targets.collect(),
        failback_after: timeout(&u.failback_after, DEFAULT_FAILBACK_AFTER)?,
        connect_timeout: timeout(&u.connect_timeout, DEFAULT_CONNECT_TIMEOUT)?,
        handshake_timeout: timeout(&u.handshake_timeout, DEFAULT_HANDSHAKE_TIMEOUT)?,
        response_timeout: timeout(&u.response_timeout, DEFAULT_RESPONSE_TIMEOUT)?,
        idle_timeout: timeout(&u.idle_timeout, DEFAULT_IDLE_TIMEOUT)?,
        hosts,
        http2: u.http2,
        legacy_crypto: u.legacy_crypto,
        tls_resumption: u.tls_resumption,
        max_connections,
        // As many as may be open: a pool smaller than the client concurrency closes
        // connections that the next request then re-opens with a new handshake (the
        // benchmark's 64 keep-alive clients made one handshake per eight requests
        // with 32). idle_timeout still closes the ones no longer needed.
        max_idle_connections: match &u.max_idle_connections {
            Some(v) => count(v, "max_idle_connections", 0..=100_000)?,
            None => max_connections,
        },
    })
}

/// Where a client (such as `pinproxy health`) finds a listener: `IP:PORT` or
/// `unix:/absolute/path`.
pub fn parse_client_target(text: &str) -> Result<Listen, String> {
    parse_listen(text, true, "")
}

/// `IP:PORT` (loopback unless allowed) or `unix:/absolute/path`; a Unix
/// socket gets the default mode here, `socket_mode` and `socket_group` later.
fn parse_listen(text: &str, allow_non_loopback: bool, allow_how: &str) -> Result<Listen, String> {
    if let Some(name) = text.strip_prefix("systemd:") {
        // systemd's FileDescriptorName=: up to 255 printable ASCII characters, no ':'.
        let valid = !name.is_empty()
            && name.len() <= 255
            && name.bytes().all(|b| b.is_ascii_graphic() && b != b':');
        if !valid {
            return Err(format!(
                "listen {text:?}: after systemd: comes the socket's FileDescriptorName= (letters, digits, '-', '_', \
                 '.'), for example \"systemd:gaia\""
            ));
        }
        return Ok(Listen::Systemd(SystemdSocket {
            name: name.to_string(),
            allow_non_loopback,
        }));
    }
    if let Some(path) = text.strip_prefix("unix:") {
        let path = PathBuf::from(path);
        if !path.is_absolute() || path.file_name().is_none() {
            return Err(format!(
                "listen {text:?}: a Unix socket needs an absolute file path, for example \"unix:/run/pinproxy/gaia.sock\""
            ));
        }
        // sun_path holds 108 bytes with its terminating NUL.
        if path.as_os_str().len() > 107 {
            return Err(format!(
                "listen {text:?}: a Unix socket path may be at most 107 bytes long; choose a shorter one"
            ));
        }
        return Ok(Listen::Unix(UnixSocket {
            path,
            mode: DEFAULT_SOCKET_MODE,
            group: None,
        }));
    }
    let addr: SocketAddr = text.parse().map_err(|_| {
        format!("listen {text:?} is not IP:PORT or unix:/path; write for example \"127.0.0.1:8443\", \"[::1]:8443\" or \"unix:/run/pinproxy/gaia.sock\"")
    })?;
    if !addr.ip().is_loopback() && !allow_non_loopback {
        return Err(format!(
            "listen {addr} is not a loopback address. pinproxy's listener speaks plain HTTP, so anyone who can reach \
             {addr} could send requests to the upstream through a connection that looks verified, and read \
             credentials and session ids in clear. Use 127.0.0.1 or [::1] (a Kubernetes pod shares its loopback), \
             or a unix:/path socket, or, if that exposure is really intended, {allow_how}"
        ));
    }
    Ok(Listen::Tcp(addr))
}

/// Splits `host:port` (or `[v6]:port`); the port is required.
pub fn parse_address(text: &str) -> Result<(String, u16), String> {
    let fix = "write HOST:PORT, for example \"mgmt.example.com:443\", \"192.0.2.10:443\" or \"[2001:db8::1]:443\"";
    if let Some((scheme, rest)) = text.split_once("://") {
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
        let has_port = authority
            .rsplit_once(':')
            .is_some_and(|(h, p)| !p.is_empty() && (!h.contains(':') || h.ends_with(']')));
        let default = if scheme.eq_ignore_ascii_case("http") {
            80
        } else {
            443
        };
        let suggestion = if has_port {
            authority.to_string()
        } else {
            format!("{authority}:{default}")
        };
        return Err(format!(
            "address {text:?} is a URL, but pinproxy wants the server's HOST:PORT (it always speaks TLS to it and \
             forwards each request's own path): write {suggestion:?}"
        ));
    }
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (h, p) = rest
            .split_once("]:")
            .ok_or_else(|| format!("address {text:?} has no port after the IPv6 address; {fix}"))?;
        h.parse::<std::net::Ipv6Addr>()
            .map_err(|_| format!("address {text:?}: {h:?} is not an IPv6 address; {fix}"))?;
        (h, p)
    } else {
        let (h, p) = text
            .rsplit_once(':')
            .ok_or_else(|| format!("address {text:?} has no port; {fix}"))?;
        if h.contains(':') {
            return Err(format!(
                "address {text:?}: put an IPv6 address in brackets; {fix}"
            ));
        }
        (h, p)
    };
    if host.is_empty() {
        return Err(format!("address {text:?} has no host; {fix}"));
    }
    if host.parse::<IpAddr>().is_err() {
        check_server_name(host).map_err(|_| {
            format!("address {text:?}: {host:?} is neither an IP address nor a DNS name; {fix}")
        })?;
    }
    let port: u16 = match port.parse() {
        Ok(p) if p > 0 => p,
        _ => {
            return Err(format!(
                "address {text:?}: port {port:?} is not a number from 1 to 65535; {fix}"
            ))
        }
    };
    Ok((host.to_string(), port))
}

/// `text` with `:port` added when it names only a host (`mgmt.example.com`,
/// `192.0.2.10`, `[2001:db8::1]`); anything else is left for
/// [`parse_address`] to judge.
pub fn with_default_port(text: &str, port: u16) -> String {
    let bracketed = text.starts_with('[') && text.ends_with(']');
    if !text.contains("://") && (bracketed || !text.contains(':')) {
        format!("{text}:{port}")
    } else {
        text.to_string()
    }
}

/// `host` or `host:port` (IPv6 in brackets when a port follows), lower-cased.
fn parse_alias(text: &str) -> Result<HostAlias, String> {
    let fix = "write a host name or IP as a client puts it in its URL, optionally with :PORT, for example \"mgmt.example.com\" or \"192.0.2.10:443\"";
    let (host, port) = match parse_address(text) {
        Ok((host, port)) => (host, Some(port)),
        Err(_) => (
            text.trim_matches(|c| c == '[' || c == ']').to_string(),
            None,
        ),
    };
    if host.is_empty() || (host.parse::<IpAddr>().is_err() && check_server_name(&host).is_err()) {
        return Err(format!(
            "hosts entry {text:?} is not a host name or IP; {fix}"
        ));
    }
    Ok(HostAlias {
        host: host.to_ascii_lowercase(),
        port,
    })
}

fn check_server_name(name: &str) -> Result<(), String> {
    parse_server_name(name).map(|_| ())
}

/// A name for SNI and the Host header, as rustls will use it: a DNS name
/// (letters, digits, `-`, `_`, dots) or an IP address.
pub fn parse_server_name(name: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(name.to_string()).map_err(|_| {
        format!(
            "server_name {name:?} is not a valid DNS name or IP address: write the name the server's certificate \
             or virtual host answers to, such as \"mgmt.example.com\" (letters, digits, '-' and '.' only)"
        )
    })
}

/// `host:port`, bracketing IPv6 hosts.
pub fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

fn duration(text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text) {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err(format!("duration {text:?} must be more than zero")),
        Err(e) => Err(format!(
            "duration {text:?} is not valid ({e}); write for example \"5s\", \"500ms\" or \"2m\""
        )),
    }
}

impl fmt::Display for UpstreamConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({} -> {})", self.name, self.listen, self.address())
    }
}

/// Reads a config file as text (following symlinks), with an error that says what to do.
///
/// Refused, before reading, when someone other than root and pinproxy's own user
/// could have changed it (see `permissions.rs`).
pub fn read(path: &Path) -> Result<String, ConfigError> {
    crate::permissions::check(path)
        .map_err(|message| ConfigError::new(path.display().to_string(), message))?;
    std::fs::read_to_string(path).map_err(|e| {
        ConfigError::new(
            path.display().to_string(),
            format!(
                "cannot read the config file: {e}; pass another with --config FILE or set PINPROXY_CONFIG"
            ),
        )
    })
}

/// Where the config file is when `--config` is not given.
pub fn default_path() -> PathBuf {
    std::env::var_os("PINPROXY_CONFIG")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/etc/pinproxy/proxy.toml"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PIN: &str = "SHA1: 7D:FE:DE:EE:C7:B9:D0:67:35:E4:C4:16:EC:7A:03:13:48:CD:CA:8D";

    #[test]
    fn a_bare_host_gets_the_default_port_and_a_url_is_explained() {
        assert_eq!(
            with_default_port("mgmt.example.com", 443),
            "mgmt.example.com:443"
        );
        assert_eq!(with_default_port("[2001:db8::1]", 443), "[2001:db8::1]:443");
        assert_eq!(with_default_port("192.0.2.10:8443", 443), "192.0.2.10:8443");
        for (url, fix) in [
            ("https://mgmt.example.com", "\"mgmt.example.com:443\""),
            ("http://user:pw@[2001:db8::1]/x", "\"[2001:db8::1]:80\""),
            (
                "HTTPS://[2001:db8::1]:8443/web_api?x",
                "\"[2001:db8::1]:8443\"",
            ),
        ] {
            let err = parse_address(url).unwrap_err();
            assert!(
                err.contains("is a URL") && err.contains(fix),
                "{url}: {err}"
            );
        }
    }

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("proxy.toml"))
    }

    fn good() -> String {
        format!(
            "shutdown_timeout = \"5s\"\n\n[[upstream]]\nname = \"gaia\"\nlisten = \"127.0.0.1:8443\"\naddress = \"192.0.2.10:443\"\nfingerprints = [\"{PIN}\"]\n"
        )
    }

    #[test]
    fn a_minimal_file_gets_defaults() {
        let c = parse(&good()).unwrap();
        assert_eq!(c.shutdown_timeout, Duration::from_secs(5));
        let u = &c.upstreams[0];
        assert_eq!(u.name, "gaia");
        assert_eq!(u.address(), "192.0.2.10:443");
        assert_eq!(u.effective_server_name(), "192.0.2.10");
        assert_eq!(u.connect_timeout, DEFAULT_CONNECT_TIMEOUT);
        assert_eq!(u.response_timeout, DEFAULT_RESPONSE_TIMEOUT);
        assert_eq!(u.pins.len(), 1);
    }

    #[test]
    fn unknown_key_names_file_line_and_column() {
        let text = good().replace("address =", "adress =");
        let err = parse(&text).unwrap_err();
        assert_eq!(err.location, "proxy.toml:6:1");
        assert!(err.message.contains("adress"), "{err}");
        assert!(err.message.contains("proxy.example.toml"), "{err}");
    }

    #[test]
    fn bad_pin_points_at_the_pin() {
        let text = good().replace("CA:8D", "CA:8");
        let err = parse(&text).unwrap_err();
        assert_eq!(err.location, "proxy.toml:7:17");
        assert!(err.message.contains("39 hex digits"), "{err}");
    }

    #[test]
    fn non_loopback_listener_is_refused_unless_allowed() {
        let text = good().replace("127.0.0.1:8443", "0.0.0.0:8443");
        let err = parse(&text).unwrap_err();
        assert_eq!(err.location, "proxy.toml:5:10");
        assert!(err.message.contains("allow_non_loopback = true"), "{err}");
        let allowed = text.replace(
            "[[upstream]]\n",
            "[[upstream]]\nallow_non_loopback = true\n",
        );
        assert!(parse(&allowed).is_ok());
    }

    #[test]
    fn other_mistakes_are_explained() {
        let cases = [
            (
                good().replace("192.0.2.10:443", "192.0.2.10"),
                "has no port",
            ),
            (good().replace("\"gaia\"", "\"my gaia\""), "letters, digits"),
            (good().replace("\"5s\"", "\"five\""), "\"5s\""),
            (
                good().replace(&format!("[\"{PIN}\"]"), "[]"),
                "fingerprints is empty",
            ),
            (
                good().replace("fingerprints", "#"),
                "no fingerprints: add fingerprints",
            ),
            (
                good() + &good().replace("shutdown_timeout = \"5s\"", ""),
                "used twice",
            ),
            ("shutdown_timeout = \"1s\"\n".to_string(), "no [[upstream]]"),
            ("[[upstream]\n".to_string(), "proxy.toml:1:"),
            (
                good().replace("[[upstream]]", "[upstream]"),
                "write [[upstream]] (two brackets)",
            ),
            (
                good().replace(&format!("[\"{PIN}\"]"), &format!("\"{PIN}\"")),
                "fingerprints is a list: put the value in brackets",
            ),
            (
                good().replace("[[upstream]]", "[[upstream]]\nconnect_timeout = 5"),
                "connect_timeout = \"5s\"",
            ),
            (
                good().replace("[[upstream]]", "[[upstream]]\nlegacy_crypto = \"yes\""),
                "legacy_crypto is true or false, without quotes",
            ),
            (
                good().replace("shutdown_timeout", "shutdown_timout"),
                "did you mean `shutdown_timeout`?",
            ),
            (
                good().replace(&format!("[\"{PIN}\"]"), "[\"SHA1: 7D:FE:DE\n:EE\"]"),
                "use a multi-line string",
            ),
        ];
        for (text, want) in cases {
            let err = parse(&text).unwrap_err();
            assert!(err.to_string().contains(want), "{want:?} not in {err}");
            // One mistake, one error: what blanking its line would make other
            // checks say is not reported (see errors.rs).
            assert!(
                err.more.is_empty(),
                "one mistake reported as several:\n{err}"
            );
        }
    }

    #[test]
    fn every_mistake_in_the_file_is_reported_in_file_order() {
        let text = format!(
            "shutdown_timeout = 30\n\
             [admin]\n\
             listen = \"0.0.0.0:9901\"\n\
             [[upstream]]\n\
             name = \"gaia\"\n\
             listen = \"127.0.0.1:8443\"\n\
             address = \"192.0.2.10:443\"\n\
             fingerprints = [\"SHA1: 12\"]\n\
             conect_timeout = \"5s\"\n\
             [[upstream]]\n\
             name = \"backup\"\n\
             listen = \"127.0.0.1:8444\"\n\
             address = \"192.0.2.11:443\"\n\
             fingerprints = [\"{PIN}\"]\n\
             legacy_crypto = \"yes\"\n\
             idle_timeout = \"forever\"\n"
        );
        let err = parse(&text).unwrap_err();
        let found: Vec<(&str, &str)> = err
            .all()
            .map(|e| (e.location.as_str(), e.message.as_str()))
            .collect();
        let want = [
            ("proxy.toml:1:20", "shutdown_timeout is a duration"),
            ("proxy.toml:3:10", "allow_non_loopback"),
            ("proxy.toml:8:17", "bad pin"),
            ("proxy.toml:9:1", "did you mean `connect_timeout`?"),
            ("proxy.toml:15:17", "legacy_crypto is true or false"),
            ("proxy.toml:16:16", "\"forever\""),
        ];
        assert_eq!(found.len(), want.len(), "{err}");
        for ((location, message), (want_location, want_text)) in found.iter().zip(want) {
            assert_eq!(*location, want_location, "{err}");
            assert!(
                message.contains(want_text),
                "{want_text:?} not in {message:?}"
            );
        }
        // One line per mistake, as the CLI prints it.
        assert_eq!(err.to_string().lines().count(), want.len());
    }

    #[test]
    fn past_a_syntax_error_nothing_else_is_guessed() {
        let text = good().replace("name = \"gaia\"", "name = \"gaia") + "bogus = 1\n";
        let err = parse(&text).unwrap_err();
        assert!(err.more.is_empty(), "{err}");
        assert!(err.message.contains("invalid basic string"), "{err}");
    }

    #[test]
    fn addresses() {
        assert_eq!(parse_address("mgmt:4434"), Ok(("mgmt".into(), 4434)));
        assert_eq!(parse_address("[::1]:443"), Ok(("::1".into(), 443)));
        assert_eq!(join_host_port("::1", 443), "[::1]:443");
        assert!(parse_address("::1:443").is_err());
        assert!(parse_address("mgmt:0").is_err());
        assert!(parse_address("bad host:443").is_err());
    }

    #[test]
    fn flags_build_one_upstream() {
        let flags = Flags {
            listen: "127.0.0.1:9000".into(),
            upstream: "mgmt.example:443".into(),
            fingerprints: vec![PIN.into()],
            server_name: None,
            allow_non_loopback: false,
            socket_mode: None,
        };
        let c = Config::from_flags(&flags).unwrap();
        assert_eq!(c.upstreams[0].effective_server_name(), "mgmt.example");
        let bad = Flags {
            fingerprints: vec!["12:34".into()],
            ..flags
        };
        let err = Config::from_flags(&bad).unwrap_err().to_string();
        assert!(
            err.starts_with("--fingerprint: pin 1: 4 hex digits"),
            "{err}"
        );
    }

    #[test]
    fn the_documented_example_parses_and_sets_every_key() {
        let c = Config::parse(
            include_str!("../../proxy.example.toml"),
            Path::new("proxy.example.toml"),
        )
        .unwrap();
        assert_eq!(
            c.admin.as_ref().map(|a| a.listen.clone()),
            Some(Listen::Tcp("127.0.0.1:9901".parse().unwrap()))
        );
        let u = &c.upstreams[0];
        assert_eq!(u.effective_server_name(), "mgmt.example.com");
        assert_eq!(u.response_timeout, Duration::from_secs(300));
        assert_eq!(u.pins[0].to_string(), PIN);
        assert_eq!(u.hosts.len(), 2);
        assert_eq!(
            (u.http2, u.tls_resumption, u.legacy_crypto),
            (Http2::Auto, true, false)
        );
        assert_eq!((u.max_connections, u.max_idle_connections), (128, 128));
        assert_eq!(c.limits, Limits::default());
        assert_eq!(u.hosts[0].to_string(), "mgmt.example.com");
    }

    #[test]
    fn failover_addresses_and_targets_with_their_own_pins() {
        let list = parse(&good().replace(
            "address = \"192.0.2.10:443\"",
            "address = [\"mgmt-a:443\", \"mgmt-b:4434\"]\nfailback_after = \"2m\"",
        ))
        .unwrap();
        let u = &list.upstreams[0];
        let addrs: Vec<String> = u.targets().iter().map(Target::address).collect();
        assert_eq!(addrs, ["mgmt-a:443", "mgmt-b:4434"]);
        assert_eq!(
            u.targets()[1].pins,
            u.pins,
            "a plain list shares the upstream's pins"
        );
        assert_eq!(u.failback_after, Duration::from_secs(120));

        const OTHER: &str =
            "SHA256:0000000000000000000000000000000000000000000000000000000000000000";
        let tables = parse(&format!(
            "[[upstream]]\nname = \"ha\"\nlisten = \"127.0.0.1:8443\"\n\
             [[upstream.target]]\naddress = \"mgmt-a:443\"\nfingerprints = [\"{PIN}\"]\n\
             [[upstream.target]]\naddress = \"mgmt-b:443\"\nfingerprints = [\"{OTHER}\"]\n"
        ))
        .unwrap();
        let t = tables.upstreams[0].targets();
        assert_eq!(
            (t[0].host.as_str(), t[1].host.as_str()),
            ("mgmt-a", "mgmt-b")
        );
        assert_ne!(t[0].pins, t[1].pins);

        let both = good().replace("fingerprints", "[[upstream.target]]\naddress = \"x:1\"\n#");
        assert!(parse(&both).unwrap_err().to_string().contains("not both"));
        let unpinned = "[[upstream]]\nname = \"ha\"\nlisten = \"127.0.0.1:8443\"\n[[upstream.target]]\naddress = \"mgmt-a:443\"\n";
        let err = parse(unpinned).unwrap_err();
        assert_eq!(err.location, "proxy.toml:5:11");
        assert!(err.message.contains("no fingerprints"), "{err}");
        let empty = good().replace("\"192.0.2.10:443\"", "[]");
        assert!(parse(&empty).unwrap_err().to_string().contains("or a list"));
    }

    #[test]
    fn limits_are_read_and_checked() {
        let with = |table: &str| {
            parse(&format!(
                "[limits]\n{table}\n{}",
                good().replace("shutdown_timeout = \"5s\"", "")
            ))
        };
        let c = with(
            "max_client_connections = 10\nmax_request_body = 1000\nheader_read_timeout = \"5s\"",
        )
        .unwrap();
        assert_eq!(c.limits.max_client_connections, 10);
        assert_eq!(c.limits.max_request_body, Some(1000));
        assert_eq!(c.limits.header_read_timeout, Duration::from_secs(5));
        let err = with("max_header_bytes = 100").unwrap_err();
        assert_eq!(err.location, "proxy.toml:2:20");
        assert!(err.message.contains("from 8192"), "{err}");
        assert!(with("max_client_connections = 0").is_err());
        let c = with("max_concurrent_streams = 8\nmax_requests_in_flight = 20").unwrap();
        assert_eq!(
            (
                c.limits.max_concurrent_streams,
                c.limits.max_requests_in_flight
            ),
            (8, 20)
        );
        assert!(with("max_requests_in_flight = 0").is_err());
        let err = with("header_read_timeout = \"1000years\"").unwrap_err();
        assert!(err.message.contains("at most \"24h\""), "{err}");
        assert!(with("max_clients = 5")
            .unwrap_err()
            .message
            .contains("unknown field"));
    }

    #[test]
    fn listener_access_keys_are_read_and_checked() {
        let with =
            |keys: &str| parse(&good().replace("fingerprints", &format!("{keys}\nfingerprints")));
        let c = with(
            "allowed_hosts = [\"Gaia-Proxy.internal\", \"jump:8443\"]\n\
             allowed_origins = [\"https://Dash.example.com:8080\"]\nallowed_users = [\"root\", 1001]",
        )
        .unwrap();
        let a = &c.upstreams[0].access;
        assert_eq!(a.allowed_hosts[0].to_string(), "gaia-proxy.internal");
        assert_eq!(a.allowed_hosts[1].port, Some(8443));
        assert_eq!(a.allowed_origins, ["https://dash.example.com:8080"]);
        assert_eq!(a.allowed_users, Some(vec![0, 1001]));
        assert_eq!(
            parse(&good()).unwrap().upstreams[0].access,
            Access::default()
        );

        for (keys, want) in [
            ("allowed_origins = [\"*\"]", "every web page"),
            ("allowed_origins = [\"null\"]", "sandboxed frames"),
            (
                "allowed_origins = [\"https://dash.example.com/app\"]",
                "nothing after it",
            ),
            ("allowed_origins = [\"dash.example.com\"]", "not an origin"),
            ("allowed_hosts = [\"*.example.com\"]", "allowed_hosts entry"),
            (
                "allowed_users = [\"no-such-user-pinproxy\"]",
                "no such user",
            ),
            ("allowed_users = []", "refuse everyone"),
            ("socket_mode = \"0600\"", "unix:/path listener only"),
        ] {
            let err = with(keys).unwrap_err();
            assert!(err.location.starts_with("proxy.toml:7:"), "{keys}: {err}");
            assert!(err.message.contains(want), "{keys}: {err}");
        }
    }

    #[test]
    fn unix_listeners_are_read_and_checked() {
        let unix = |extra: &str| {
            parse(&good().replace(
                "\"127.0.0.1:8443\"",
                &format!("\"unix:/run/pinproxy/gaia.sock\"\n{extra}"),
            ))
        };
        let c = unix("socket_mode = \"0660\"\nsocket_group = \"root\"").unwrap();
        let Listen::Unix(s) = &c.upstreams[0].listen else {
            panic!("not a unix listener");
        };
        assert_eq!(
            (s.path.to_str(), s.mode, s.group),
            (Some("/run/pinproxy/gaia.sock"), 0o660, Some(0))
        );
        assert_eq!(
            c.upstreams[0].listen.to_string(),
            "unix:/run/pinproxy/gaia.sock"
        );
        let Listen::Unix(d) = &unix("").unwrap().upstreams[0].listen else {
            panic!("not a unix listener");
        };
        assert_eq!((d.mode, d.group), (0o600, None));
        for (extra, want) in [
            ("socket_mode = \"rw\"", "not a file mode"),
            ("socket_mode = \"4755\"", "not a file mode"),
            ("socket_group = \"no-such-group-pinproxy\"", "no such group"),
        ] {
            let err = unix(extra).unwrap_err().to_string();
            assert!(err.contains(want), "{extra}: {err}");
        }
        // socket_mode is for socket files pinproxy makes: not TCP, not systemd's.
        for (listen, want) in [
            ("127.0.0.1:8443", "applies to a unix:/path listener only"),
            (
                "systemd:gaia",
                "the .socket unit sets the file's SocketMode=",
            ),
        ] {
            let text = good()
                .replace("\"127.0.0.1:8443\"", &format!("\"{listen}\""))
                .replace("[[upstream]]\n", "[[upstream]]\nsocket_mode = \"0660\"\n");
            let err = parse(&text).unwrap_err().message;
            assert!(err.contains(want), "{listen}: {err}");
        }
        let relative = parse(&good().replace("\"127.0.0.1:8443\"", "\"unix:gaia.sock\""));
        assert!(relative.unwrap_err().message.contains("absolute file path"));
        let twice = good()
            + &good()
                .replace("shutdown_timeout = \"5s\"", "")
                .replace("\"gaia\"", "\"lab\"");
        let twice = twice.replace("\"127.0.0.1:8443\"", "\"unix:/run/p.sock\"");
        assert!(parse(&twice)
            .unwrap_err()
            .message
            .contains("already used by upstream"));
        let proxy = parse(&format!(
            "[proxy]\nlisten = \"unix:/run/p.sock\"\nallowed_hosts = [\"x\"]\n{}",
            good().replace("shutdown_timeout = \"5s\"", "")
        ));
        assert!(proxy
            .unwrap_err()
            .message
            .contains("does not apply to [proxy]"));
    }

    #[test]
    fn proxy_mode_hosts_are_checked() {
        let with = |hosts: &str| {
            parse(&good().replace("fingerprints", &format!("hosts = [{hosts}]\nfingerprints")))
        };
        let c = with("\"MGMT.example:8443\", \"[2001:db8::1]\"").unwrap();
        assert_eq!(c.upstreams[0].hosts[0].to_string(), "mgmt.example:8443");
        assert_eq!(c.upstreams[0].hosts[1].host, "2001:db8::1");
        let err = with("\"bad host\"").unwrap_err().to_string();
        assert!(err.contains("not a host name or IP"), "{err}");
        let twice = good()
            + &good()
                .replace("shutdown_timeout = \"5s\"", "")
                .replace("\"gaia\"", "\"lab\"")
                .replace("8443", "8444");
        let twice = twice.replacen("fingerprints", "hosts = [\"lab\"]\nfingerprints", 1);
        let err = parse(&twice).unwrap_err().to_string();
        assert!(
            err.contains("would select both upstream \"gaia\" and \"lab\""),
            "{err}"
        );
        let proxy = parse(&format!(
            "[proxy]\nlisten = \"127.0.0.1:3128\"\n{}",
            good().replace("shutdown_timeout = \"5s\"", "")
        ))
        .unwrap();
        assert_eq!(
            proxy.proxy.and_then(|p| p.listen.tcp()).map(|a| a.port()),
            Some(3128)
        );
        let clash = parse(&format!(
            "[proxy]\nlisten = \"127.0.0.1:8443\"\n{}",
            good().replace("shutdown_timeout = \"5s\"", "")
        ))
        .unwrap_err();
        assert!(
            clash
                .to_string()
                .contains("already used by upstream \"gaia\""),
            "{clash}"
        );
    }
}
