//! Reading the config: the file (with its permission check) or the `run` flags,
//! turned into a checked [`Config`], every mistake located.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::tls::pin::CertPin;

use super::address::{duration, parse_address, parse_server_name};
use super::errors::{every_error, explain_toml_error, ConfigError, Problem};
use super::listener::{check_listener, parse_listen, socket_mode};
use super::model::{
    Access, AdminConfig, Config, HostAlias, Limits, Listen, ProxyConfig, UnixSocket,
    UpstreamConfig, DEFAULT_SHUTDOWN_TIMEOUT, DEFAULT_SOCKET_MODE,
};
use super::raw::{check_limits, RawAdmin, RawConfig};
use super::upstream::check_upstream;

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
                also: Vec::new(),
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
        // Every table is checked, and names and listen addresses compared
        // across tables, in one round: a mistake in one table does not hide
        // another table's, nor a duplicate.
        let mut problems: Vec<Problem> = Vec::new();
        for (i, u) in raw.upstream.iter().enumerate() {
            let earlier = &raw.upstream[..i];
            if earlier.iter().any(|o| o.name.get_ref() == u.name.get_ref()) {
                problems.push(at(
                    u.name.span(),
                    format!(
                        "upstream name {:?} is used twice; names must be unique",
                        u.name.get_ref()
                    ),
                ));
            }
            // Port 0 is a new free port each time, never a clash.
            let any_port = u.listen.get_ref().ends_with(":0");
            if let Some(o) = earlier
                .iter()
                .find(|o| !any_port && o.listen.get_ref() == u.listen.get_ref())
            {
                problems.push(at(
                    u.listen.span(),
                    format!(
                        "listen address {} is already used by upstream {:?}; give each upstream its own port",
                        u.listen.get_ref(),
                        o.name.get_ref()
                    ),
                ));
            }
        }
        let mut upstreams: Vec<UpstreamConfig> = Vec::new();
        for u in &raw.upstream {
            let up = match check_upstream(u, base) {
                Ok(up) => up,
                Err((span, m)) => {
                    problems.push(at(span, m));
                    continue;
                }
            };
            // Written differently, the same socket (127.0.0.1:8443 and [::ffff:…]).
            if let Some(o) = upstreams.iter().find(|o| o.listen.same_socket(&up.listen)) {
                let p = at(
                    u.listen.span(),
                    format!(
                        "listen address {} is already used by upstream {:?}; give each upstream its own port",
                        up.listen, o.name
                    ),
                );
                if !problems.iter().any(|q| q.span == p.span) {
                    problems.push(p);
                }
            }
            upstreams.push(up);
        }
        if !problems.is_empty() {
            problems.sort_by_key(|p| p.span.as_ref().map_or(0, |s| s.start));
            let mut first = problems.remove(0);
            first.also = problems;
            return Err(first);
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
        // Upstreams with per-user rules are reached through [proxy] too: it
        // must learn each client's uid for them.
        let per_user = upstreams
            .iter()
            .any(|u| u.requests.as_ref().is_some_and(|p| !p.per_user.is_empty()));
        let proxy = side_listener(&raw.proxy, "proxy")?.map(|(listen, mut access)| {
            access.identify_users = per_user;
            ProxyConfig { listen, access }
        });
        if let (Some(p), Some(up)) = (
            &proxy,
            upstreams
                .iter()
                .find(|u| !u.inject_headers.is_empty() || u.session.is_some()),
        ) {
            let identified =
                matches!(p.listen, Listen::Unix(_)) || p.access.allowed_users.is_some();
            if !identified {
                let span = raw.proxy.as_ref().map_or(0..0, |p| p.listen.span());
                return Err(at(
                    span,
                    format!(
                        "[proxy] routes to upstream {:?}, which injects credentials (inject_headers, [upstream.session]), and every local \
                         process can reach [proxy]: listen on a unix:/path socket or set allowed_users in [proxy]",
                        up.name
                    ),
                ));
            }
        }
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
            audit_log: raw.audit_log.as_ref().map(|p| base.join(p.get_ref())),
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
            audit_log: None,
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

/// Reads a config file as text (following symlinks), with an error that says what to do.
///
/// Refused, before reading, when someone other than root and pinproxy's own user
/// could have changed it (see `permissions.rs`).
pub fn read(path: &Path) -> Result<String, ConfigError> {
    crate::platform::permissions::check(path)
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

/// Where the config file is when `--config` is not given: `$PINPROXY_CONFIG`,
/// else /etc/pinproxy/proxy.toml (on Windows %ProgramData%\pinproxy\proxy.toml).
pub fn default_path() -> PathBuf {
    std::env::var_os("PINPROXY_CONFIG")
        .map(PathBuf::from)
        .unwrap_or_else(|| default_dir().join("proxy.toml"))
}

/// Where pinproxy's files live by default: /etc/pinproxy, or on Windows
/// %ProgramData%\pinproxy (SECURITY.md says which ACL to give it there).
pub fn default_dir() -> PathBuf {
    if cfg!(windows) {
        let data = std::env::var_os("ProgramData").unwrap_or_else(|| r"C:\ProgramData".into());
        PathBuf::from(data).join("pinproxy")
    } else {
        PathBuf::from("/etc/pinproxy")
    }
}
