//! `pinproxy health`: asks a running pinproxy's admin endpoint whether it is
//! ready (or, with `--live`, alive), for exec probes and container
//! HEALTHCHECKs. The answer is an exit status and one line.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::serve::unix_socket::UnixStream;

use crate::config::Listen;

/// Which question to ask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// `/readyz`: serving (not starting, not draining).
    Ready,
    /// `/healthz`: the process answers at all.
    Live,
}

/// Asks the admin endpoint at `admin`. `Ok` with the endpoint's one-line answer
/// when it says yes; `Err` with the reason (its answer, or why it could not be
/// asked) otherwise. Gives up after `timeout`.
pub async fn check(admin: &Listen, probe: Probe, timeout: Duration) -> Result<String, String> {
    let path = match probe {
        Probe::Ready => "/readyz",
        Probe::Live => "/healthz",
    };
    let asked = async {
        match admin {
            Listen::Tcp(addr) => {
                let addr = reachable(*addr);
                let tcp = TcpStream::connect(addr)
                    .await
                    .map_err(|e| format!("cannot reach the admin endpoint at {addr}: {e}"))?;
                ask(tcp, path).await
            }
            Listen::Unix(socket) => {
                let unix = UnixStream::connect(&socket.path).await.map_err(|e| {
                    format!(
                        "cannot reach the admin endpoint at {}: {e}",
                        socket.path.display()
                    )
                })?;
                ask(unix, path).await
            }
            Listen::Systemd(socket) => Err(format!(
                "the admin endpoint listens on the socket systemd passes as {:?}, whose address only the .socket \
                 unit knows: give it with --admin ADDR",
                socket.name
            )),
        }
    };
    let (status, text) = tokio::time::timeout(timeout, asked).await.map_err(|_| {
        format!("the admin endpoint at {admin} did not answer {path} within {timeout:?}")
    })??;
    let line = text.lines().next().unwrap_or("").trim().to_string();
    if status == StatusCode::OK {
        Ok(line)
    } else {
        Err(format!("{path} answered {}: {line}", status.as_u16()))
    }
}

/// Where the config file at `path` puts the admin endpoint: only its
/// `[admin] listen` is read, leniently. A probe must keep answering for a
/// pinproxy that serves its last good config while the file holds a bad edit
/// (a typo in a ConfigMap would otherwise fail the liveness probe, and the
/// restart that follows fails on the same file: CrashLoopBackOff from one
/// typo). So mistakes elsewhere in the file, even broken TOML, do not count.
pub fn admin_in_file(path: &std::path::Path) -> Result<Listen, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let listen = match text.parse::<toml::Table>() {
        Ok(table) => table
            .get("admin")
            .and_then(|admin| admin.get("listen"))
            .and_then(|listen| listen.as_str())
            .map(str::to_string),
        Err(_) => admin_listen_line(&text),
    };
    let listen = listen.ok_or_else(|| {
        format!(
            "{} has no [admin] table with a listen address, so there is no endpoint to ask; add one \
             (listen = \"127.0.0.1:9901\") or pass --admin",
            path.display()
        )
    })?;
    crate::config::parse_client_target(&listen)
        .map_err(|e| format!("{}: [admin] {e}", path.display()))
}

/// `listen = "…"` in the `[admin]` table of a file that is not valid TOML
/// as a whole, found line by line.
fn admin_listen_line(text: &str) -> Option<String> {
    let mut in_admin = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_admin = line.starts_with("[admin]");
            continue;
        }
        if !in_admin {
            continue;
        }
        let Some(value) = line.strip_prefix("listen").map(str::trim_start) else {
            continue;
        };
        let value = value.strip_prefix('=')?.trim();
        let value = value.strip_prefix('"')?;
        return value.split_once('"').map(|(listen, _)| listen.to_string());
    }
    None
}

/// A listener on "any address" is asked on loopback.
fn reachable(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V4(a) if a.ip().is_unspecified() => (Ipv4Addr::LOCALHOST, a.port()).into(),
        SocketAddr::V6(a) if a.ip().is_unspecified() => (Ipv6Addr::LOCALHOST, a.port()).into(),
        other => other,
    }
}

async fn ask<IO>(io: IO, path: &str) -> Result<(StatusCode, String), String>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let failed = |e: hyper::Error| format!("the admin endpoint broke off: {e}");
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(failed)?;
    tokio::spawn(conn);
    let req = Request::get(path)
        .header(http::header::HOST, "localhost")
        .header(http::header::USER_AGENT, "pinproxy-health")
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let resp = send.send_request(req).await.map_err(failed)?;
    let status = resp.status();
    let body = resp.into_body().collect().await.map_err(failed)?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_admin_address_is_found_in_a_file_that_does_not_parse() {
        let broken = "[[upstream]]\nname = \"gaia\nlisten = 1\n[admin]\nlisten = \"127.0.0.1:9901\"  # probes\n[limits]\n";
        assert!(broken.parse::<toml::Table>().is_err());
        assert_eq!(admin_listen_line(broken).as_deref(), Some("127.0.0.1:9901"));
        assert_eq!(admin_listen_line("[admin]\nallow_users = 1\n"), None);
        assert_eq!(admin_listen_line("[limits]\nlisten = \"x\"\n"), None);
    }
}
