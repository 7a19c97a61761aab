//! Addresses and names: `host:port`, server names for SNI, durations.

use std::net::IpAddr;
use std::time::Duration;

use rustls::pki_types::ServerName;

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

pub(super) fn check_server_name(name: &str) -> Result<(), String> {
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

pub(super) fn duration(text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text) {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err(format!("duration {text:?} must be more than zero")),
        Err(e) => Err(format!(
            "duration {text:?} is not valid ({e}); write for example \"5s\", \"500ms\" or \"2m\""
        )),
    }
}
