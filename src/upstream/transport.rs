//! What TLS to an upstream runs over: a TCP connection to the server
//! (`connect_tcp`), or a CONNECT tunnel through an egress proxy (made in
//! `egress.rs`). Below both the connector and the egress proxy, so the arrows
//! between them point one way.

use std::io;
use std::pin::Pin as StdPin;
use std::task::{Context, Poll};

use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::error::UpstreamError;

/// What TLS runs over: a TCP connection to the server, or a CONNECT tunnel
/// through an egress proxy.
pub(crate) enum Transport {
    /// Straight to the server.
    Direct(TcpStream),
    /// Through `egress_proxy` (see `egress.rs`).
    Tunnel(TokioIo<Upgraded>),
}

impl AsyncRead for Transport {
    fn poll_read(
        self: StdPin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Direct(tcp) => StdPin::new(tcp).poll_read(cx, buf),
            Transport::Tunnel(tunnel) => StdPin::new(tunnel).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Transport {
    fn poll_write(
        self: StdPin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Direct(tcp) => StdPin::new(tcp).poll_write(cx, buf),
            Transport::Tunnel(tunnel) => StdPin::new(tunnel).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: StdPin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Direct(tcp) => StdPin::new(tcp).poll_write_vectored(cx, bufs),
            Transport::Tunnel(tunnel) => StdPin::new(tunnel).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Transport::Direct(tcp) => tcp.is_write_vectored(),
            Transport::Tunnel(tunnel) => tunnel.is_write_vectored(),
        }
    }

    fn poll_flush(self: StdPin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Direct(tcp) => StdPin::new(tcp).poll_flush(cx),
            Transport::Tunnel(tunnel) => StdPin::new(tunnel).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: StdPin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Direct(tcp) => StdPin::new(tcp).poll_shutdown(cx),
            Transport::Tunnel(tunnel) => StdPin::new(tunnel).poll_shutdown(cx),
        }
    }
}

pub(super) async fn connect_tcp(address: &str) -> Result<TcpStream, UpstreamError> {
    let failed = |reason: String| UpstreamError::Connect {
        address: address.to_string(),
        reason,
    };
    let addrs = tokio::net::lookup_host(address)
        .await
        .map_err(|e| failed(format!("name lookup failed: {e}")))?;
    let mut errors = Vec::new();
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(tcp) => {
                // Requests and responses are written whole; don't let Nagle hold back the tail.
                let _ = tcp.set_nodelay(true);
                return Ok(tcp);
            }
            Err(e) => errors.push((addr, e)),
        }
    }
    Err(failed(connect_errors(address, &errors)))
}

/// What the connects to `address` said, naming a resolved address only where
/// it adds something: "Connection refused", not "127.0.0.1:1: Connection refused"
/// after "cannot connect to 127.0.0.1:1".
fn connect_errors(address: &str, errors: &[(std::net::SocketAddr, std::io::Error)]) -> String {
    match errors {
        [] => "the name resolved to no address".to_string(),
        [(addr, e)] if addr.to_string() == address => e.to_string(),
        [(addr, e)] => format!("{e} (at {addr})"),
        many => many
            .iter()
            .map(|(addr, e)| format!("{addr}: {e}"))
            .collect::<Vec<_>>()
            .join("; "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_refused_connect_names_the_address_once() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = closed.local_addr().unwrap().to_string();
        drop(closed);
        let Err(e) = connect_tcp(&address).await else {
            panic!("connected to a closed port");
        };
        let text = e.to_string();
        assert_eq!(text.matches(&address).count(), 1, "{text}");
        assert!(
            text.starts_with(&format!("cannot connect to {address}: ")),
            "{text}"
        );
    }
}
