//! Tells an HTTP/2 client (prior knowledge) from an HTTP/1 one by its first
//! bytes, and hands those bytes back to the protocol's parser.
//!
//! hyper-util's `auto` builder does the same, but its rewind wrapper gives the
//! HTTP/1 parser the sniffed bytes in a read of their own: the parser's next
//! read then finds less than its usual 8 KiB free and doubles its buffer, so
//! every kept-alive client held 16 KiB instead of 8. [`Prefixed`] fills the
//! same read with what the socket has after the prefix, so a whole request head
//! arrives in one read, and it adds nothing once the prefix is consumed.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// What every HTTP/2 prior-knowledge connection starts with (RFC 9113 §3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The protocol a client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    Http1,
    Http2,
}

/// Reads until the first bytes decide the protocol: a byte that differs from
/// the HTTP/2 preface means HTTP/1 (usually the first one), the whole preface
/// means HTTP/2. A client that closes first counts as HTTP/1, whose parser
/// then sees what it sent and the end.
pub(crate) async fn sniff<IO: AsyncRead + Unpin>(
    mut io: IO,
) -> io::Result<(Protocol, Prefixed<IO>)> {
    let mut prefix = [0u8; 24];
    let mut len = 0;
    let protocol = loop {
        let n = io.read(&mut prefix[len..]).await?;
        if n == 0 {
            break Protocol::Http1;
        }
        len += n;
        if prefix[..len] != H2_PREFACE[..len] {
            break Protocol::Http1;
        }
        if len == H2_PREFACE.len() {
            break Protocol::Http2;
        }
    };
    let prefixed = Prefixed {
        prefix,
        start: 0,
        end: len,
        io,
    };
    Ok((protocol, prefixed))
}

/// The connection with its sniffed bytes put back in front.
pub(crate) struct Prefixed<IO> {
    prefix: [u8; 24],
    start: usize,
    end: usize,
    io: IO,
}

impl<IO: AsyncRead + Unpin> Prefixed<IO> {
    /// Once the prefix is used up: waits for the next bytes and keeps them in
    /// front, as [`sniff`] did (a parked connection waits with 24 bytes of
    /// buffer, not the parser's). `Ok(0)`: the client closed.
    pub(crate) async fn refill(&mut self) -> io::Result<usize> {
        if self.start < self.end {
            return Ok(self.end - self.start);
        }
        let n = self.io.read(&mut self.prefix).await?;
        (self.start, self.end) = (0, n);
        Ok(n)
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Prefixed<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.start == this.end {
            return Pin::new(&mut this.io).poll_read(cx, buf);
        }
        let n = (this.end - this.start).min(buf.remaining());
        buf.put_slice(&this.prefix[this.start..this.start + n]);
        this.start += n;
        if this.start == this.end && buf.remaining() > 0 {
            // Whatever follows, in the same read. Nothing there yet is fine: the
            // prefix is an answer already. An error now comes back on the next read.
            let _ = Pin::new(&mut this.io).poll_read(cx, buf);
        }
        Poll::Ready(Ok(()))
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Prefixed<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    async fn sniffed(chunks: &[&[u8]]) -> (Protocol, Vec<u8>) {
        let (mut client, server) = tokio::io::duplex(1024);
        for chunk in chunks {
            client.write_all(chunk).await.unwrap();
        }
        client.shutdown().await.unwrap();
        let (protocol, mut io) = sniff(server).await.unwrap();
        let mut all = Vec::new();
        io.read_to_end(&mut all).await.unwrap();
        (protocol, all)
    }

    #[tokio::test]
    async fn http1_is_told_by_its_first_byte_and_nothing_is_lost() {
        let request = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(
            sniffed(&[request]).await,
            (Protocol::Http1, request.to_vec())
        );
    }

    #[tokio::test]
    async fn a_request_that_starts_like_the_preface_is_still_http1() {
        let request = b"PRI * HTTP/1.1\r\n\r\n";
        assert_eq!(
            sniffed(&[request]).await,
            (Protocol::Http1, request.to_vec())
        );
    }

    #[tokio::test]
    async fn the_preface_in_pieces_is_http2_with_every_byte_kept() {
        let mut all = H2_PREFACE.to_vec();
        all.extend_from_slice(b"\0\0\0\x04\0\0\0\0\0");
        let (protocol, got) = sniffed(&[&all[..3], &all[3..20], &all[20..]]).await;
        assert_eq!((protocol, got), (Protocol::Http2, all));
    }

    #[tokio::test]
    async fn a_client_that_closes_early_is_handed_to_http1_with_its_bytes() {
        assert_eq!(sniffed(&[b"PRI"]).await, (Protocol::Http1, b"PRI".to_vec()));
        assert_eq!(sniffed(&[]).await, (Protocol::Http1, Vec::new()));
    }

    #[tokio::test]
    async fn the_first_read_after_sniffing_carries_the_prefix_and_what_follows() {
        let (mut client, server) = tokio::io::duplex(1024);
        client.write_all(b"G").await.unwrap();
        let (_, mut io) = sniff(server).await.unwrap();
        client.write_all(b"ET / HTTP/1.1\r\n\r\n").await.unwrap();
        let mut buf = [0u8; 64];
        let n = io.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"GET / HTTP/1.1\r\n\r\n");
    }
}
