//! One `[[upstream]]` table checked: its addresses and pins, failover targets,
//! client certificate and egress proxy.

use std::path::Path;
use std::time::Duration;

use toml::Spanned;

use crate::tls::identity::ClientIdentity;
use crate::tls::pin::CertPin;

use super::address::{duration, parse_address, parse_server_name};
use super::egress::EgressProxy;
use super::errors::Located;
use super::listener::{check_listener, parse_alias, ListenerKeys};
use super::model::{Credentials, SessionConfig};
use super::model::{
    Target, UpstreamConfig, DEFAULT_CHECK_INTERVAL, DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_FAILBACK_AFTER, DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_UPSTREAM_CONNECTIONS, DEFAULT_RESPONSE_TIMEOUT,
};
use super::raw::{count, RawSession, RawUpstream};

pub(super) fn parse_egress(text: &Option<Spanned<String>>) -> Located<Option<EgressProxy>> {
    match text {
        Some(t) => EgressProxy::parse(t.get_ref()).map_err(|m| (t.span(), m)),
        None => Ok(None),
    }
}

/// `client_certificate` and `client_key`, both or neither, read relative to
/// the config file's directory.
pub(super) fn parse_identity(
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

pub(super) fn parse_pins(
    list: &Spanned<Vec<Spanned<String>>>,
    base: &Path,
) -> Located<Vec<CertPin>> {
    if list.get_ref().is_empty() {
        return Err((
            list.span(),
            "fingerprints is empty: add the SHA1 line printed by `api fingerprint` on the server (or run `pinproxy fingerprint HOST:PORT`)".into(),
        ));
    }
    let mut pins = Vec::new();
    for text in list.get_ref() {
        match text.get_ref().strip_prefix("file:") {
            Some(file) => pins.extend(
                pins_of_certificate_file(&base.join(file))
                    .map_err(|e| (text.span(), format!("{:?}: {e}", text.get_ref())))?,
            ),
            None => pins.push(
                CertPin::parse(text.get_ref())
                    .map_err(|e| (text.span(), format!("bad pin {:?}: {e}", text.get_ref())))?,
            ),
        }
    }
    Ok(pins)
}

/// `"file:PATH"`: the SHA-256 of each certificate in a PEM file, for operators
/// who hold the server's certificate file rather than its fingerprint. The file
/// decides what is trusted, so it is checked like the config file.
pub(crate) fn pins_of_certificate_file(path: &Path) -> Result<Vec<CertPin>, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    use sha2::Digest;

    crate::platform::permissions::check(path)?;
    // The PEM parser's own errors quote the offending line; if the path names
    // a key by mistake, that line is key material, so our words say what is wrong.
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|e| match e {
            rustls::pki_types::pem::Error::Io(io) => format!("cannot read {}: {io}", path.display()),
            _ => format!("cannot read {}", path.display()),
        })?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| {
            format!(
                "{} is not well-formed PEM: each -----BEGIN CERTIFICATE----- and -----END CERTIFICATE----- \
                 line on a line of its own, the base64 between them",
                path.display()
            )
        })?;
    if certificates.is_empty() {
        return Err(format!(
            "{} holds no certificate: give the server's certificate in PEM (-----BEGIN CERTIFICATE-----), \
             or write its fingerprint instead of file:",
            path.display()
        ));
    }
    Ok(certificates
        .iter()
        .map(|der| CertPin::Sha256(sha2::Sha256::digest(der.as_ref()).into()))
        .collect())
}

/// `tls_certificate`, `tls_key` and `client_ca`: all three or none, on a TCP listener.
fn parse_listener_tls(
    u: &RawUpstream,
    listen: &super::model::Listen,
    base: &Path,
) -> Located<Option<crate::tls::listener::ListenerTls>> {
    match (&u.tls_certificate, &u.tls_key, &u.client_ca) {
        (None, None, None) => Ok(None),
        (Some(c), Some(k), Some(ca)) => {
            if !matches!(listen, super::model::Listen::Tcp(_)) {
                return Err((
                    c.span(),
                    "tls_certificate is for a TCP listener (listen = \"0.0.0.0:8443\"); a unix: socket's clients are \
                     known by their uid (allowed_users)"
                        .into(),
                ));
            }
            crate::tls::listener::load(
                &base.join(c.get_ref()),
                &base.join(k.get_ref()),
                &base.join(ca.get_ref()),
            )
            .map(Some)
            .map_err(|m| (c.span(), m))
        }
        (c, k, ca) => {
            let span = c
                .as_ref()
                .or(k.as_ref())
                .or(ca.as_ref())
                .map_or(0..0, |s| s.span());
            Err((
                span,
                "a TLS listener needs all three: tls_certificate (its certificate chain), tls_key (its key) and \
                 client_ca (the CA whose client certificates it requires)"
                    .into(),
            ))
        }
    }
}

/// `[upstream.session]`: how pinproxy logs in to a Check Point management API.
fn parse_session(raw: &Spanned<RawSession>, base: &Path) -> Located<SessionConfig> {
    let s = raw.get_ref();
    if s.kind.get_ref() != "check-point" {
        return Err((
            s.kind.span(),
            format!(
                "session kind {:?} is not known: write kind = \"check-point\"",
                s.kind.get_ref()
            ),
        ));
    }
    let credentials = match (&s.api_key_file, &s.user, &s.password_file) {
        (Some(key), None, None) => Credentials::ApiKey(
            super::secrets::secret_file("api_key_file", key.get_ref(), base).map_err(|m| (key.span(), m))?,
        ),
        (None, Some(user), Some(password)) => Credentials::User {
            user: user.get_ref().clone(),
            password: super::secrets::secret_file("password_file", password.get_ref(), base)
                .map_err(|m| (password.span(), m))?,
        },
        _ => {
            return Err((
                raw.span(),
                "[upstream.session] logs in with api_key_file = \"/etc/pinproxy/api-key\", or with user = \"NAME\" \
                 and password_file = \"/etc/pinproxy/password\": give one of the two"
                    .into(),
            ))
        }
    };
    let timeout = match &s.session_timeout {
        Some(t) => {
            let d = duration(t.get_ref()).map_err(|m| (t.span(), m))?;
            if !(Duration::from_secs(10)..=Duration::from_secs(3600)).contains(&d) {
                return Err((
                    t.span(),
                    "session_timeout must be between \"10s\" and \"1h\" (what the management API accepts)".into(),
                ));
            }
            d
        }
        None => Duration::from_secs(600),
    };
    Ok(SessionConfig {
        credentials,
        domain: s.domain.as_ref().map(|d| d.get_ref().clone()),
        read_only: s.read_only,
        timeout,
    })
}

/// `check_interval`: a duration, "0s" for no checks. Under a second would be a
/// handshake storm against a management server, not a check.
fn check_interval(text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text) {
        Ok(d) if d.is_zero() => Ok(d),
        Ok(d) if d < Duration::from_secs(1) => Err(format!(
            "check_interval {text:?} is under a second: write at least \"1s\" (the default is \"10m\"), or \"0s\" for no checks"
        )),
        Ok(d) => Ok(d),
        Err(e) => Err(format!(
            "check_interval {text:?} is not a duration ({e}); write for example \"10m\", or \"0s\" for no checks"
        )),
    }
}

/// Every target of an upstream, in failover order, with its pins.
pub(super) fn parse_targets(u: &RawUpstream, base: &Path) -> Located<Vec<Target>> {
    let shared = match &u.fingerprints {
        Some(list) => Some(parse_pins(list, base)?),
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
                    (Some(own), _) => parse_pins(own, base)?,
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

pub(super) fn check_upstream(u: &RawUpstream, base: &Path) -> Located<UpstreamConfig> {
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
    let serves_tls = u.tls_certificate.is_some() && u.tls_key.is_some() && u.client_ca.is_some();
    let (listen, mut access) = check_listener(
        &ListenerKeys {
            listen: &u.listen,
            // Clients that prove who they are may come from anywhere.
            allow_non_loopback: u.allow_non_loopback || serves_tls,
            socket_mode: &u.socket_mode,
            socket_group: &u.socket_group,
            allowed_hosts: &u.allowed_hosts,
            allowed_origins: &u.allowed_origins,
            allowed_users: &u.allowed_users,
        },
        "set allow_non_loopback = true for this upstream",
    )?;
    access.tls = parse_listener_tls(u, &listen, base)?;
    if let Some(list) = &u.allowed_clients {
        if access.tls.is_none() {
            return Err((
                list.span(),
                "allowed_clients names client certificates: the listener needs tls_certificate, tls_key and \
                 client_ca to ask for them"
                    .into(),
            ));
        }
        if list.get_ref().is_empty() {
            return Err((
                list.span(),
                "allowed_clients is empty, which would refuse everyone: list the certificate names (CN or SAN) \
                 that may connect, or remove the key to let every certificate client_ca issued in"
                    .into(),
            ));
        }
        access.allowed_clients = Some(list.get_ref().iter().map(|c| c.get_ref().clone()).collect());
    }
    let requests = super::requests::parse_policy(u)?;
    let mut inject_headers = Vec::new();
    if let Some(table) = &u.inject_headers {
        for (name, reference) in table.get_ref() {
            inject_headers.push(
                super::secrets::injected(name, reference.get_ref(), base)
                    .map_err(|m| (reference.span(), m))?,
            );
        }
    }
    let session = match &u.session {
        Some(raw) => Some(parse_session(raw, base)?),
        None => None,
    };
    let credentials_span = u
        .inject_headers
        .as_ref()
        .map(|t| t.span())
        .or(u.session.as_ref().map(|s| s.span()));
    if let Some(span) = credentials_span {
        // Every local process (and a web page that slipped past the browser's
        // checks) could act as whoever the credential names.
        let identified = matches!(listen, super::model::Listen::Unix(_))
            || access.allowed_users.is_some()
            || access.tls.is_some();
        if !identified {
            return Err((
                span,
                "credentials (inject_headers, [upstream.session]) on a TCP listener anyone on this machine can reach \
                 would let every local process use them: listen on a unix:/path socket (socket_mode, socket_group), \
                 set allowed_users = [\"USER\"] to the users whose tools may use them, or require client \
                 certificates (tls_certificate, tls_key, client_ca)"
                    .into(),
            ));
        }
    }
    access.identify_users = requests.as_ref().is_some_and(|p| !p.per_user.is_empty());
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
        audit: u.audit.unwrap_or(requests.is_some()),
        inject_headers,
        session,
        requests,
        check_interval: match &u.check_interval {
            Some(s) => check_interval(s.get_ref()).map_err(|m| (s.span(), m))?,
            None => DEFAULT_CHECK_INTERVAL,
        },
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
