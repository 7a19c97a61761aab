//! Listener keys: where a listener binds (`listen`: TCP, `unix:`, `systemd:`)
//! and who may use it (hosts, origins, users, socket mode and group).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use toml::Spanned;

use super::address::{check_server_name, parse_address};
use super::errors::Located;
use super::model::{Access, HostAlias, Listen, SystemdSocket, UnixSocket, DEFAULT_SOCKET_MODE};

/// The keys every listener table has: where it binds and who may use it.
pub(super) struct ListenerKeys<'a> {
    pub(super) listen: &'a Spanned<String>,
    pub(super) allow_non_loopback: bool,
    pub(super) socket_mode: &'a Option<Spanned<String>>,
    pub(super) socket_group: &'a Option<Spanned<toml::Value>>,
    pub(super) allowed_hosts: &'a [Spanned<String>],
    pub(super) allowed_origins: &'a [Spanned<String>],
    pub(super) allowed_users: &'a Option<Spanned<Vec<Spanned<toml::Value>>>>,
}

/// Where a listener binds and who may use it, checked.
pub(super) fn check_listener(k: &ListenerKeys<'_>, allow_how: &str) -> Located<(Listen, Access)> {
    let listen = parse_listen(k.listen.get_ref(), k.allow_non_loopback, allow_how)
        .map_err(|m| (k.listen.span(), m))?;
    // socket_mode and socket_group are about a socket file pinproxy creates.
    let unix_only = k
        .socket_mode
        .as_ref()
        .map(|m| ("socket_mode", m.span()))
        .or(k.socket_group.as_ref().map(|g| ("socket_group", g.span())));
    if let (Some((key, span)), false) = (&unix_only, cfg!(unix)) {
        return Err((
            span.clone(),
            format!(
                "{key} is for a Unix socket file, and there are none on {}: remove it (a loopback TCP listener has \
                 no file mode)",
                std::env::consts::OS
            ),
        ));
    }
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
            if matches!(listen, Listen::Tcp(_)) && !crate::platform::peer::TCP_OWNER_SUPPORTED {
                return Err((
                    list.span(),
                    "allowed_users on a TCP listener needs Linux or Windows (the system tells pinproxy who owns the \
                     client's socket); on this system use a unix:/path listener, where the peer's credentials are \
                     always known"
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
            identify_users: false,
            tls: None,
            allowed_clients: None,
        },
    ))
}

/// `socket_mode`: octal permission bits such as "0600" or "660".
pub(super) fn socket_mode(text: &str) -> Result<u32, String> {
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
pub(super) fn group_id(value: &toml::Value) -> Result<u32, String> {
    match value {
        toml::Value::Integer(n) => u32::try_from(*n)
            .map_err(|_| format!("socket_group {n} is not a group id (0 to 4294967295)")),
        toml::Value::String(name) => match crate::platform::users::group_id(name) {
            Ok(Some(gid)) => Ok(gid),
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
pub(super) fn user_id(value: &toml::Value) -> Result<u32, String> {
    match value {
        toml::Value::Integer(n) if cfg!(windows) => Err(format!(
            "allowed_users entry {n}: Windows accounts have no uid; give the account's name (\"alice\", \
             \"DOMAIN\\\\alice\") or its SID (\"S-1-5-21-…\", whoami /user prints it)"
        )),
        toml::Value::Integer(n) => {
            u32::try_from(*n).map_err(|_| format!("allowed_users entry {n} is not a uid (0 to 4294967295)"))
        }
        toml::Value::String(name) => match crate::platform::users::user_id(name) {
            Ok(Some(uid)) => Ok(uid),
            Ok(None) if cfg!(windows) => Err(format!(
                "allowed_users entry {name:?}: no such account on this system; check the spelling (whoami prints \
                 yours as DOMAIN\\name), or give its SID (whoami /user)"
            )),
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
pub(super) fn parse_origin(text: &str) -> Result<String, String> {
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

/// Where a client (such as `pinproxy health`) finds a listener: `IP:PORT` or
/// `unix:/absolute/path`.
pub fn parse_client_target(text: &str) -> Result<Listen, String> {
    parse_listen(text, true, "")
}

/// `IP:PORT` (loopback unless allowed) or `unix:/absolute/path`; a Unix
/// socket gets the default mode here, `socket_mode` and `socket_group` later.
pub(super) fn parse_listen(
    text: &str,
    allow_non_loopback: bool,
    allow_how: &str,
) -> Result<Listen, String> {
    if !cfg!(unix) && (text.starts_with("systemd:") || text.starts_with("unix:")) {
        let what = if text.starts_with("unix:") {
            "Unix sockets exist"
        } else {
            "systemd's socket activation exists"
        };
        return Err(format!(
            "listen {text:?}: {what} only on Unix, and this is {}: listen on a loopback TCP address such as \
             \"127.0.0.1:8443\"",
            std::env::consts::OS
        ));
    }
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

/// `host` or `host:port` (IPv6 in brackets when a port follows), lower-cased.
pub(super) fn parse_alias(text: &str) -> Result<HostAlias, String> {
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
