//! Who may use a listener. Loopback is not a trust boundary: a web page in a
//! browser on this machine can send requests to it (and, by DNS rebinding,
//! read the answers), and so can every local user. Each request is checked
//! here before anything is sent upstream:
//!
//! 1. the client's uid, where `allowed_users` is set (found at accept, see
//!    [`crate::platform::peer`]);
//! 2. `Host` / `:authority` must name the listener itself (a loopback address,
//!    `localhost`, a name under `.localhost`, the socket file of a Unix
//!    listener, or an `allowed_hosts` name): a rebinding page sends its own name;
//! 3. a browser's cross-site request (`Origin` not allowed, `Sec-Fetch-Site`
//!    `cross-site` or `same-site`) is refused; CORS and Private-Network-Access
//!    preflights are answered here and never forwarded;
//!
//! and CORS headers coming back from the upstream reach only allowed origins.

use std::net::IpAddr;
use std::sync::Arc;

use http::header::{HeaderMap, HeaderName, HeaderValue, HOST, ORIGIN, VARY};
use http::{Method, Request, StatusCode};

use crate::config::{Access, HostAlias, Listen};

const ACAO: HeaderName = http::header::ACCESS_CONTROL_ALLOW_ORIGIN;
const ACAC: HeaderName = http::header::ACCESS_CONTROL_ALLOW_CREDENTIALS;
const ACRM: HeaderName = http::header::ACCESS_CONTROL_REQUEST_METHOD;
const ACRH: HeaderName = http::header::ACCESS_CONTROL_REQUEST_HEADERS;
const ACRPN: HeaderName = HeaderName::from_static("access-control-request-private-network");
const ACAPN: HeaderName = HeaderName::from_static("access-control-allow-private-network");
const SEC_FETCH_SITE: HeaderName = HeaderName::from_static("sec-fetch-site");

/// One listener's rules, built from its config.
#[derive(Debug, Clone)]
pub struct Policy {
    hosts: Vec<HostAlias>,
    origins: Vec<String>,
    users: Option<Vec<u32>>,
    /// Learn each client's uid even without `allowed_users` (a per-user request policy).
    identify: bool,
    /// TLS with required client certificates.
    tls: Option<Arc<rustls::ServerConfig>>,
    /// The client-certificate names that may use the listener; `None`: any.
    clients: Option<Vec<String>>,
    /// The `[proxy]` listener routes by host instead.
    check_host: bool,
    /// A listener on a non-loopback address (`allow_non_loopback`) is reached
    /// by IP; an IP literal cannot be rebound, so any is a valid Host there.
    any_ip: bool,
    /// A Unix listener's path: clients such as requests-unixsocket send it,
    /// percent-encoded, as the Host.
    socket_path: Option<String>,
}

/// What a client connection is: the uid behind it (where known) and the
/// rules of the listener it came in on.
#[derive(Clone)]
pub struct Client {
    /// The local user owning the client socket, where known.
    pub uid: Option<u32>,
    /// The client's address, for a TCP listener.
    pub peer: Option<std::net::SocketAddr>,
    /// The names of the client certificate it proved (a TLS listener): CN, then SANs.
    pub identity: Option<Arc<[String]>>,
    /// The listener's rules, as they were when the request arrived.
    pub policy: Arc<Policy>,
    /// Its connection's busy/idle state; an upgraded tunnel keeps it busy.
    pub(crate) activity: crate::http::idle::Activity,
}

/// What to do with a request.
#[derive(Debug)]
pub enum Decision {
    /// Forward it; then pass the response's CORS headers through [`Cors::apply`].
    Forward(Cors),
    /// Answer a preflight from an allowed origin with `204` and these headers.
    Preflight(HeaderMap),
    /// Refuse it, sending nothing upstream.
    Refuse(Refusal),
}

/// A refused request: the status, `X-Pinproxy-Error` tag, text for the client,
/// and what to log.
#[derive(Debug)]
pub struct Refusal {
    /// 403.
    pub status: StatusCode,
    /// `host-not-allowed`, `cross-site-refused` or `user-not-allowed`.
    pub tag: &'static str,
    /// The body: what was seen and which key would allow it.
    pub text: String,
    /// What was refused (the Host, Origin or uid seen), for the WARN line.
    pub seen: String,
    /// The client itself may not use the listener: close its connection after
    /// the answer instead of waiting for more of its requests.
    pub close: bool,
}

/// The request's origin, if it is allowed, for the response's CORS headers.
#[derive(Debug, Default)]
pub struct Cors {
    origin: Option<HeaderValue>,
    /// Listed in `allowed_origins`: the operator wants that page to read answers.
    listed: bool,
}

impl Policy {
    /// The rules of a listener at `listen`; `check_host` is false for `[proxy]`.
    pub fn new(listen: &Listen, access: &Access, check_host: bool) -> Policy {
        let (any_ip, socket_path) = match listen {
            Listen::Tcp(addr) => (!addr.ip().is_loopback(), None),
            Listen::Unix(s) => (false, Some(s.path.to_string_lossy().into_owned())),
            // Only before the socket is taken: the server builds the rules from
            // what it turned out to be (see `server`).
            Listen::Systemd(_) => (false, None),
        };
        Policy {
            hosts: access.allowed_hosts.clone(),
            origins: access.allowed_origins.clone(),
            users: access.allowed_users.clone(),
            identify: access.identify_users,
            tls: access.tls.as_ref().map(|t| t.config.clone()),
            clients: access.allowed_clients.clone(),
            check_host,
            any_ip,
            socket_path,
        }
    }

    /// Whether accepting a TCP connection must find out who owns its client
    /// socket (it costs a kernel query, so only when `allowed_users` is set).
    pub fn needs_uid(&self) -> bool {
        self.users.is_some() || self.identify
    }

    /// The TLS the listener serves, if its clients must show a certificate.
    pub fn tls(&self) -> Option<&Arc<rustls::ServerConfig>> {
        self.tls.as_ref()
    }

    /// Refuses a client whose certificate names no one in `allowed_clients`.
    pub fn client_refusal(&self, identity: Option<&[String]>) -> Option<Refusal> {
        let allowed = self.clients.as_ref()?;
        let names = identity.unwrap_or_default();
        if names.iter().any(|n| allowed.contains(n)) {
            return None;
        }
        Some(Refusal {
            status: StatusCode::FORBIDDEN,
            tag: "client-not-allowed",
            text: format!(
                "pinproxy: the client certificate ({}) is not in allowed_clients = {allowed:?} of this listener. Add \
                 one of its names there if it should be.\n",
                if names.is_empty() { "no name".to_string() } else { names.join(", ") }
            ),
            seen: names.join(","),
            close: true,
        })
    }

    /// Checks one request from a client with `uid`.
    pub fn check<B>(&self, req: &Request<B>, uid: Option<u32>) -> Decision {
        if let Some(users) = &self.users {
            if !uid.is_some_and(|u| users.contains(&u)) {
                let who = uid.map_or(
                    "an unknown user (the system could not say who owns the client socket)"
                        .to_string(),
                    crate::platform::users::label,
                );
                return Decision::Refuse(Refusal {
                    status: StatusCode::FORBIDDEN,
                    tag: "user-not-allowed",
                    text: format!(
                        "pinproxy: {who} may not use this listener: only allowed_users = {:?} may. Add the user to \
                         allowed_users in the listener's config if it should.\n",
                        self.users.as_deref().unwrap_or_default()
                    ),
                    seen: uid.map_or("unknown".into(), |u| u.to_string()),
                    close: true,
                });
            }
        }
        if self.check_host {
            // CONNECT's authority names the tunnel's target, not this listener
            // (and is refused later); its Host is still checked.
            let authority = (req.method() != Method::CONNECT)
                .then(|| req.uri().authority().map(|a| a.as_str()))
                .flatten();
            let host = req.headers().get_all(HOST).iter();
            for seen in authority
                .into_iter()
                .map(str::as_bytes)
                .chain(host.map(HeaderValue::as_bytes))
            {
                if !self.host_allowed(seen) {
                    let seen = String::from_utf8_lossy(seen).into_owned();
                    if let Some(path) = &self.socket_path {
                        return Decision::Refuse(Refusal {
                            status: StatusCode::FORBIDDEN,
                            tag: "host-not-allowed",
                            text: format!(
                                "pinproxy: refused: the request's Host is {seen:?}. On this Unix-socket listener call it \
                                 as localhost: curl --unix-socket {path} http://localhost/web_api/... (the socket \
                                 picks the server, not the URL). Other names are refused here too, because a TCP \
                                 bridge to the socket (socat) would otherwise open it to DNS rebinding; add the name \
                                 to allowed_hosts if a tool of yours must send it.\n"
                            ),
                            seen,
                            close: false,
                        });
                    }
                    return Decision::Refuse(Refusal {
                        status: StatusCode::FORBIDDEN,
                        tag: "host-not-allowed",
                        text: format!(
                            "pinproxy: refused: the request's Host is {seen:?}, which does not name this listener. A web \
                             page whose name was pointed at this machine (DNS rebinding) sends its own name here, so \
                             only loopback addresses, localhost and *.localhost are accepted. If a tool of yours really \
                             reaches pinproxy by this name, add it to allowed_hosts = [\"NAME\"] for this listener.\n"
                        ),
                        seen,
                        close: false,
                    });
                }
            }
        }
        let origin = req.headers().get(ORIGIN);
        let allowed = origin.and_then(|o| self.origin_allowed(o));
        let site = req.headers().get(SEC_FETCH_SITE).map(HeaderValue::as_bytes);
        let cross_site = matches!(site, Some(b"cross-site") | Some(b"same-site"));
        if (origin.is_some() && allowed.is_none()) || (cross_site && allowed.is_none()) {
            let seen = match origin {
                Some(o) => format!("Origin {:?}", String::from_utf8_lossy(o.as_bytes())),
                None => format!(
                    "Sec-Fetch-Site {:?}",
                    String::from_utf8_lossy(site.unwrap_or_default())
                ),
            };
            return Decision::Refuse(cross_site_refusal(seen));
        }
        let is_preflight = req.method() == Method::OPTIONS
            && (req.headers().contains_key(ACRM) || req.headers().contains_key(ACRPN));
        match (is_preflight, origin) {
            (true, Some(origin)) => Decision::Preflight(preflight_headers(origin, req.headers())),
            (true, None) => {
                Decision::Refuse(cross_site_refusal("a CORS preflight without Origin".into()))
            }
            (false, _) => Decision::Forward(Cors {
                origin: allowed.map(|_| origin.cloned()).unwrap_or_default(),
                listed: allowed == Some(Allowed::Listed),
            }),
        }
    }

    /// `Host` or `:authority`: `host[:port]`.
    fn host_allowed(&self, seen: &[u8]) -> bool {
        is_plain_loopback(seen) || self.authority_allowed(seen)
    }

    /// [`Policy::host_allowed`] the long way: `seen` parsed as an authority.
    fn authority_allowed(&self, seen: &[u8]) -> bool {
        if let (Some(path), Ok(text)) = (&self.socket_path, std::str::from_utf8(seen)) {
            if crate::config::percent_decode(text).as_deref() == Some(path.as_bytes()) {
                return true;
            }
        }
        let Ok(authority) = http::uri::Authority::try_from(seen) else {
            return false;
        };
        if authority.as_str().contains('@') {
            return false;
        }
        self.name_allowed(authority.host(), authority.port_u16(), self.any_ip)
    }

    /// A host name or IP literal (IPv6 in brackets), with the port it came with.
    fn name_allowed(&self, host: &str, port: Option<u16>, any_ip: bool) -> bool {
        // Compared without lower-casing a copy: this runs on every request.
        let host = host.strip_suffix('.').unwrap_or(host);
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            if any_ip || ip.to_canonical().is_loopback() {
                return true;
            }
        } else if is_localhost(host) {
            return true;
        }
        self.hosts
            .iter()
            .any(|a| a.host.eq_ignore_ascii_case(bare) && (a.port.is_none() || a.port == port))
    }

    fn origin_allowed(&self, origin: &HeaderValue) -> Option<Allowed> {
        let text = origin.to_str().ok()?.to_ascii_lowercase();
        if self.origins.contains(&text) {
            return Some(Allowed::Listed);
        }
        // A page served over plain http from a name that is this listener's
        // (another loopback port, say): allowed, as same-host. Never by IP
        // alone on a non-loopback listener: other machines have IPs too.
        let authority = text.strip_prefix("http://")?;
        let authority = http::uri::Authority::try_from(authority).ok()?;
        if authority.as_str().contains('@') {
            return None;
        }
        self.name_allowed(authority.host(), authority.port_u16(), false)
            .then_some(Allowed::SameHost)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Allowed {
    /// `http://` + a name the listener answers to.
    SameHost,
    /// Listed in `allowed_origins`.
    Listed,
}

impl Cors {
    /// Keeps the upstream's `Access-Control-Allow-Origin` / `-Credentials`
    /// only for an allowed origin (an upstream's `*` would otherwise hand the
    /// answer to any page), and lets a listed origin's page read the answer.
    pub fn apply(&self, headers: &mut HeaderMap) {
        match &self.origin {
            // Looked for before removing: most answers have neither, and a
            // pass over the names costs less than two hashed removals.
            None if headers
                .keys()
                .any(|name| name.as_str().starts_with("access-control-allow-")) =>
            {
                headers.remove(ACAO);
                headers.remove(ACAC);
            }
            None => {}
            Some(origin) if self.listed && !headers.contains_key(ACAO) => {
                headers.insert(ACAO, origin.clone());
                headers.insert(ACAC, HeaderValue::from_static("true"));
                headers.append(VARY, HeaderValue::from_static("Origin"));
            }
            Some(_) => {}
        }
    }
}

/// `127.0.0.1` or `localhost`, with or without a port: what nearly every
/// request carries, allowed on every listener (as the full parse would) without
/// parsing an authority.
fn is_plain_loopback(seen: &[u8]) -> bool {
    let host = match seen.iter().rposition(|&b| b == b':') {
        Some(colon) => {
            let port = &seen[colon + 1..];
            if port.is_empty() || port.len() > 5 || !port.iter().all(u8::is_ascii_digit) {
                return false;
            }
            &seen[..colon]
        }
        None => seen,
    };
    host == b"127.0.0.1" || host.eq_ignore_ascii_case(b"localhost")
}

/// `localhost` or a name under `.localhost`, which browsers resolve to
/// loopback themselves (RFC 6761), so no attacker's DNS can answer for them.
fn is_localhost(host: &str) -> bool {
    const NAME: &str = "localhost";
    let n = host.len();
    n >= NAME.len()
        && host.is_char_boundary(n - NAME.len())
        && host[n - NAME.len()..].eq_ignore_ascii_case(NAME)
        && (n == NAME.len() || host.as_bytes()[n - NAME.len() - 1] == b'.')
}

fn cross_site_refusal(seen: String) -> Refusal {
    Refusal {
        status: StatusCode::FORBIDDEN,
        tag: "cross-site-refused",
        text: format!(
            "pinproxy: refused a request from a web page ({seen}): a page open in a browser on this machine must not \
             use the pinned channel. If that page is yours, add its exact origin (scheme://host[:port]) to \
             allowed_origins for this listener.\n"
        ),
        seen,
        close: false,
    }
}

/// The answer to a preflight from an allowed origin: exactly what was asked,
/// for that origin (never `*`).
fn preflight_headers(origin: &HeaderValue, request: &HeaderMap) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(ACAO, origin.clone());
    h.insert(ACAC, HeaderValue::from_static("true"));
    if let Some(method) = request.get(ACRM) {
        h.insert(http::header::ACCESS_CONTROL_ALLOW_METHODS, method.clone());
    }
    if let Some(headers) = request.get(ACRH) {
        h.insert(http::header::ACCESS_CONTROL_ALLOW_HEADERS, headers.clone());
    }
    if request
        .get(ACRPN)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"))
    {
        h.insert(ACAPN, HeaderValue::from_static("true"));
    }
    h.insert(
        http::header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
    h.insert(
        VARY,
        HeaderValue::from_static(
            "Origin, Access-Control-Request-Method, Access-Control-Request-Headers, \
             Access-Control-Request-Private-Network",
        ),
    );
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::UnixSocket;

    fn policy(access: Access) -> Policy {
        Policy::new(
            &Listen::Tcp("127.0.0.1:8443".parse().unwrap()),
            &access,
            true,
        )
    }

    fn req(headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::post("/web_api/login");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }

    fn tag(d: &Decision) -> Option<&'static str> {
        match d {
            Decision::Refuse(r) => Some(r.tag),
            _ => None,
        }
    }

    #[test]
    fn hosts_that_name_the_listener_pass_and_others_are_refused() {
        let p = policy(Access {
            allowed_hosts: vec![HostAlias {
                host: "gaia-proxy.internal".into(),
                port: None,
            }],
            ..Access::default()
        });
        for host in [
            "127.0.0.1:8443",
            "127.9.9.9",
            "[::1]:8443",
            "localhost:8443",
            "LOCALHOST",
            "app.localhost:1",
            "localhost.",
            "gaia-proxy.internal:8443",
        ] {
            assert!(
                matches!(p.check(&req(&[("host", host)]), None), Decision::Forward(_)),
                "{host}"
            );
        }
        for host in [
            "evil.example:8443",
            "localhost.evil.example",
            "evillocalhost",
            "127.0.0.1.nip.io",
            "192.0.2.1:8443",
            "[::2]",
            "user@localhost",
            "",
        ] {
            assert_eq!(
                tag(&p.check(&req(&[("host", host)]), None)),
                Some("host-not-allowed"),
                "{host}"
            );
        }
        // HTTP/1.0 without Host: nothing to rebind.
        assert!(matches!(p.check(&req(&[]), None), Decision::Forward(_)));
    }

    #[test]
    fn the_loopback_shortcut_passes_only_what_the_full_parse_passes() {
        let p = policy(Access::default());
        for host in [
            "127.0.0.1",
            "127.0.0.1:8443",
            "localhost",
            "LocalHost:1",
            "localhost:65535",
        ] {
            assert!(is_plain_loopback(host.as_bytes()), "{host}");
            assert!(p.authority_allowed(host.as_bytes()), "{host}");
        }
        for host in [
            "127.0.0.1:",
            "127.0.0.1:123456",
            "127.0.0.1:8a",
            "localhost:80:80",
            "user@localhost",
            "127.0.0.1@evil.example",
            "x127.0.0.1",
            "localhost.evil.example",
            "127.0.0.1.nip.io:80",
            "",
        ] {
            assert!(!is_plain_loopback(host.as_bytes()), "{host}");
        }
    }

    #[test]
    fn the_authority_of_an_absolute_or_h2_request_is_checked_too() {
        let p = policy(Access::default());
        let r = Request::get("http://evil.example:8443/").body(()).unwrap();
        assert_eq!(tag(&p.check(&r, None)), Some("host-not-allowed"));
        let r = Request::get("http://localhost:8443/").body(()).unwrap();
        assert!(matches!(p.check(&r, None), Decision::Forward(_)));
    }

    #[test]
    fn a_unix_listener_accepts_its_own_encoded_path_as_host() {
        let listen = Listen::Unix(UnixSocket {
            path: "/run/pinproxy/gaia.sock".into(),
            mode: 0o600,
            group: None,
        });
        let p = Policy::new(&listen, &Access::default(), true);
        let ok = p.check(&req(&[("host", "%2Frun%2Fpinproxy%2Fgaia.sock")]), None);
        assert!(matches!(ok, Decision::Forward(_)));
        let other = p.check(&req(&[("host", "%2Frun%2Fother.sock")]), None);
        assert_eq!(tag(&other), Some("host-not-allowed"));
        // curl --unix-socket S http://mgmt.example/: the refusal says how to call it.
        let Decision::Refuse(named) = p.check(&req(&[("host", "mgmt.example")]), None) else {
            panic!("a Unix listener accepted another name");
        };
        assert!(
            named
                .text
                .contains("curl --unix-socket /run/pinproxy/gaia.sock http://localhost/"),
            "{}",
            named.text
        );
        assert!(matches!(
            p.check(&req(&[("host", "localhost")]), None),
            Decision::Forward(_)
        ));
    }

    #[test]
    fn cross_site_requests_are_refused_unless_the_origin_is_allowed() {
        let p = policy(Access {
            allowed_origins: vec!["https://dash.example.com".into()],
            ..Access::default()
        });
        let host = ("host", "127.0.0.1:8443");
        for refused in [
            vec![host, ("origin", "http://evil.example:8443")],
            vec![host, ("origin", "null")],
            vec![host, ("origin", "https://localhost:8443")],
            vec![host, ("sec-fetch-site", "cross-site")],
            vec![host, ("sec-fetch-site", "same-site")],
            vec![
                host,
                ("origin", "http://evil.example"),
                ("sec-fetch-site", "same-origin"),
            ],
        ] {
            assert_eq!(
                tag(&p.check(&req(&refused), None)),
                Some("cross-site-refused"),
                "{refused:?}"
            );
        }
        for passed in [
            vec![
                host,
                ("origin", "http://127.0.0.1:8443"),
                ("sec-fetch-site", "same-origin"),
            ],
            vec![host, ("origin", "http://localhost:3000")],
            vec![
                host,
                ("origin", "https://DASH.example.com"),
                ("sec-fetch-site", "cross-site"),
            ],
            vec![host, ("sec-fetch-site", "none")],
        ] {
            assert!(
                matches!(p.check(&req(&passed), None), Decision::Forward(_)),
                "{passed:?}"
            );
        }
    }

    #[test]
    fn preflights_are_answered_here_for_allowed_origins_only() {
        let p = policy(Access {
            allowed_origins: vec!["https://dash.example.com".into()],
            ..Access::default()
        });
        let preflight = |origin: &str| {
            let mut r = req(&[
                ("host", "localhost:8443"),
                ("origin", origin),
                ("access-control-request-method", "POST"),
                ("access-control-request-headers", "content-type, x-chkp-sid"),
                ("access-control-request-private-network", "true"),
            ]);
            *r.method_mut() = Method::OPTIONS;
            p.check(&r, None)
        };
        let Decision::Preflight(h) = preflight("https://dash.example.com") else {
            panic!("allowed preflight not answered");
        };
        assert_eq!(h[ACAO], "https://dash.example.com");
        assert_eq!(h[http::header::ACCESS_CONTROL_ALLOW_METHODS], "POST");
        assert_eq!(
            h[http::header::ACCESS_CONTROL_ALLOW_HEADERS],
            "content-type, x-chkp-sid"
        );
        assert_eq!(h[ACAPN], "true");
        assert_eq!(
            tag(&preflight("https://evil.example")),
            Some("cross-site-refused")
        );
    }

    #[test]
    fn upstream_cors_headers_reach_allowed_origins_only() {
        let p = policy(Access {
            allowed_origins: vec!["https://dash.example.com".into()],
            ..Access::default()
        });
        let upstream = || {
            let mut h = HeaderMap::new();
            h.insert(ACAO, HeaderValue::from_static("*"));
            h.insert(ACAC, HeaderValue::from_static("true"));
            h
        };
        let cors = |headers: &[(&str, &str)]| match p.check(&req(headers), None) {
            Decision::Forward(c) => c,
            other => panic!("{other:?}"),
        };
        let mut h = upstream();
        cors(&[("host", "localhost")]).apply(&mut h);
        assert!(h.get(ACAO).is_none() && h.get(ACAC).is_none(), "{h:?}");
        let mut h = upstream();
        cors(&[("host", "localhost"), ("origin", "http://localhost:3000")]).apply(&mut h);
        assert_eq!(h[ACAO], "*", "an allowed origin sees the upstream's own");
        let mut h = HeaderMap::new();
        cors(&[
            ("host", "localhost"),
            ("origin", "https://dash.example.com"),
        ])
        .apply(&mut h);
        assert_eq!(h[ACAO], "https://dash.example.com");
    }

    #[test]
    fn allowed_users_refuse_other_and_unknown_uids() {
        let p = policy(Access {
            allowed_users: Some(vec![1000]),
            ..Access::default()
        });
        let r = req(&[("host", "localhost")]);
        assert!(matches!(p.check(&r, Some(1000)), Decision::Forward(_)));
        assert_eq!(tag(&p.check(&r, Some(1001))), Some("user-not-allowed"));
        assert_eq!(tag(&p.check(&r, None)), Some("user-not-allowed"));
        assert!(p.needs_uid());
        assert!(!policy(Access::default()).needs_uid());
    }
}
