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
use tokio::net::{TcpStream, UnixStream};

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
