//! The typed configuration pinproxy runs on: what each table and key means once
//! checked, with the defaults.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use rustls::pki_types::ServerName;
use serde::Deserialize;

use crate::tls::identity::ClientIdentity;
use crate::tls::pin::CertPin;

use super::address::join_host_port;
use super::egress::EgressProxy;

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
/// Default for `check_interval`: how often each address of an upstream is
/// handshaken with in the background to see the certificate it presents.
pub const DEFAULT_CHECK_INTERVAL: Duration = Duration::from_secs(600);
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
    /// `audit_log`: the JSON-lines file audit records also go to.
    pub audit_log: Option<PathBuf>,
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
    /// How long an HTTP/1 connection idles before its parser's buffers are
    /// given back (it keeps the socket; the next request gets new ones), while
    /// few client connections are open; in a crowd, at once (`serve/park.rs`).
    pub release_idle_buffers_after: Duration,
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
            release_idle_buffers_after: Duration::from_millis(250),
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
    /// Find out each client's uid even without `allowed_users`: a per-user
    /// request policy (`[[upstream.policy]]`) needs it.
    pub identify_users: bool,
    /// TLS with required client certificates (`tls_certificate`, `tls_key`,
    /// `client_ca`): clients prove who they are.
    pub tls: Option<crate::tls::listener::ListenerTls>,
    /// `allowed_clients`: the client-certificate names (CN or SAN) that may
    /// use the listener; `None`: any certificate the CA issued.
    pub allowed_clients: Option<Vec<String>>,
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
    /// Which requests may be forwarded; `None`: every one the access rules let in.
    pub requests: Option<crate::config::RequestPolicy>,
    /// Write an audit record per request (`audit`; default: with a command policy).
    pub audit: bool,
    /// Headers set on every forwarded request (`inject_headers`): credentials
    /// the tools behind pinproxy then never hold.
    pub inject_headers: Vec<crate::config::InjectedHeader>,
    /// `[upstream.session]`: pinproxy logs in and brokers the session.
    pub session: Option<SessionConfig>,
    /// How often every address is checked in the background (a pinned
    /// handshake, nothing sent); zero: never.
    pub check_interval: Duration,
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
            check_interval: DEFAULT_CHECK_INTERVAL,
            requests: None,
            audit: false,
            inject_headers: Vec::new(),
            session: None,
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
        // How often checks run is not how requests are served.
        other.check_interval = self.check_interval;
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

impl fmt::Display for UpstreamConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({} -> {})", self.name, self.listen, self.address())
    }
}

/// `[upstream.session]`: a Check Point management API session pinproxy logs
/// in to and hands to requests that bring none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionConfig {
    /// How pinproxy logs in.
    pub credentials: Credentials,
    /// `domain`: the domain (MDS) to log in to.
    pub domain: Option<String>,
    /// `read_only`: log in with `"read-only": true`.
    pub read_only: bool,
    /// `session_timeout`: the server's idle timeout asked for at login.
    pub timeout: Duration,
}

/// The credentials of a brokered session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    /// `api_key_file`.
    ApiKey(crate::config::SecretText),
    /// `user` and `password_file`.
    User {
        /// The administrator's name.
        user: String,
        /// The password.
        password: crate::config::SecretText,
    },
}
