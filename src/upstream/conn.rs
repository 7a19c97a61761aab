//! A pinned TLS connection as the pool holds it: counted while open, holding
//! its `max_connections` slot, telling the pool whether it speaks HTTP/2.

use std::io;
use std::pin::Pin as StdPin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::client::legacy::connect::{Connected, Connection};
use prometheus_client::metrics::gauge::Gauge;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::connector::Pinned;

/// A verified TLS connection, as the pool holds it; counted in
/// `pinproxy_upstream_connections` while it is open.
pub struct TlsConn {
    tls: TlsStream<TcpStream>,
    open: Gauge,
    /// The open-connection count of the worker pool this connection belongs to.
    pool_open: Option<(Arc<[AtomicUsize]>, usize)>,
    /// Held while the connection is open; dropping it frees a `max_connections` slot.
    _slot: tokio::sync::OwnedSemaphorePermit,
}

impl TlsConn {
    pub(super) fn new(
        pinned: Pinned,
        open: Gauge,
        pool_open: Option<(Arc<[AtomicUsize]>, usize)>,
    ) -> TlsConn {
        open.inc();
        TlsConn {
            tls: pinned.tls,
            open,
            pool_open,
            _slot: pinned.slot,
        }
    }

    fn is_h2(&self) -> bool {
        self.tls.get_ref().1.alpn_protocol() == Some(b"h2")
    }
}

impl Drop for TlsConn {
    fn drop(&mut self) {
        self.open.dec();
        if let Some((counts, pool)) = &self.pool_open {
            counts[*pool].fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Connection for TlsConn {
    fn connected(&self) -> Connected {
        // The pool multiplexes requests over one connection when the server chose h2.
        let connected = Connected::new();
        if self.is_h2() {
            connected.negotiated_h2()
        } else {
            connected
        }
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
