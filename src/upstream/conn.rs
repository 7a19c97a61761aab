//! A pinned TLS connection as the pool holds it: counted while open and
//! holding its `max_connections` slot. The only constructor takes a
//! [`Pinned`], which only the connector makes.

use std::io;
use std::pin::Pin as StdPin;
use std::task::{Context, Poll};

use prometheus_client::metrics::gauge::Gauge;
use rustls::ClientConnection;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_rustls::client::TlsStream;

use super::connector::Pinned;
use super::transport::Transport;

/// A verified TLS connection; counted in `pinproxy_upstream_connections` while
/// it is open.
pub(crate) struct TlsConn {
    tls: TlsStream<Transport>,
    open: Gauge,
    /// The address it reached (which failover target), for the access log.
    address: std::sync::Arc<str>,
    /// Held while the connection is open; dropping it frees a `max_connections` slot.
    _slot: tokio::sync::OwnedSemaphorePermit,
}

impl TlsConn {
    pub(super) fn new(pinned: Pinned, open: Gauge, address: std::sync::Arc<str>) -> TlsConn {
        let (tls, slot) = pinned.into_parts();
        open.inc();
        TlsConn {
            tls,
            open,
            address,
            _slot: slot,
        }
    }

    /// The address it reached.
    pub(super) fn address(&self) -> &std::sync::Arc<str> {
        &self.address
    }

    /// The TLS session: what the server presented and what was negotiated.
    pub(crate) fn session(&self) -> &ClientConnection {
        self.tls.get_ref().1
    }

    /// The server chose HTTP/2 by ALPN.
    pub(super) fn is_h2(&self) -> bool {
        self.session().alpn_protocol() == Some(b"h2")
    }
}

impl Drop for TlsConn {
    fn drop(&mut self) {
        self.open.dec();
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: StdPin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        StdPin::new(&mut self.tls).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: StdPin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        StdPin::new(&mut self.tls).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: StdPin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        StdPin::new(&mut self.tls).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tls.is_write_vectored()
    }

    fn poll_flush(mut self: StdPin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        StdPin::new(&mut self.tls).poll_flush(cx)
    }

    fn poll_shutdown(mut self: StdPin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        StdPin::new(&mut self.tls).poll_shutdown(cx)
    }
}
