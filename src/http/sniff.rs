//! Tells an HTTP/2 client (prior knowledge) from an HTTP/1 one by its first
//! bytes, and hands those bytes back to the protocol's parser.
//!
//! hyper-util's `auto` builder does the same, but its rewind wrapper gives the
//! HTTP/1 parser the sniffed bytes in a read of their own: the parser's next
//! read then finds less than its usual 8 KiB free and doubles its buffer, so
//! every kept-alive client held 16 KiB instead of 8. [`Prefixed`] reads what
//! the socket has (up to [`READ`] bytes) while sniffing and hands all of it to
//! the parser's first read, so a request head that arrived whole costs one
//! read system call, not two; when more may follow (the head is not complete),
//! that same read takes what the socket has after it. Once the prefix is
//! consumed it holds nothing.

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What every HTTP/2 prior-knowledge connection starts with (RFC 9113 §3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The most one sniffing read takes: a whole ordinary request head. Lives on
/// the stack only for the read; the heap copy is as long as what came.
const READ: usize = 4096;

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
    let mut got: Vec<u8> = Vec::new();
    let mut full = false;
    let protocol = loop {
        let chunk = read_some(&mut io).await?;
        if chunk.is_empty() {
            break Protocol::Http1;
        }
        full = chunk.len() == READ;
        if got.is_empty() {
            got = chunk.into_vec();
        } else {
            got.extend_from_slice(&chunk);
        }
        let len = got.len().min(H2_PREFACE.len());
        if got[..len] != H2_PREFACE[..len] {
            break Protocol::Http1;
        }
        if len == H2_PREFACE.len() {
            break Protocol::Http2;
        }
    };
    let prefixed = Prefixed {
        more: more_after(&got, full),
        prefix: got.into_boxed_slice(),
        start: 0,
        io,
    };
    Ok((protocol, prefixed))
}

/// One read of what the socket has, at most [`READ`] bytes, copied to a heap
/// slice of its length; empty at the end of the stream.
async fn read_some<IO: AsyncRead + Unpin>(io: &mut IO) -> io::Result<Box<[u8]>> {
    std::future::poll_fn(|cx| {
        // Not held across a wait: a connection waiting to be read keeps no buffer.
        let mut buf = [MaybeUninit::<u8>::uninit(); READ];
        let mut read = ReadBuf::uninit(&mut buf);
        ready!(Pin::new(&mut *io).poll_read(cx, &mut read))?;
        Poll::Ready(Ok(Box::from(read.filled())))
    })
    .await
}

/// The connection with its sniffed bytes put back in front.
pub(crate) struct Prefixed<IO> {
    prefix: Box<[u8]>,
    start: usize,
    /// The first read of the parser goes on reading the socket after the prefix:
    /// the head is not complete in it, so the parser would read at once anyway.
    more: bool,
    io: IO,
}

/// Whether the parser, handed `prefix`, will want more bytes at once: the last
/// read filled its buffer, or no request head ends in it.
fn more_after(prefix: &[u8], last_read_full: bool) -> bool {
    last_read_full || !prefix.windows(4).any(|w| w == b"\r\n\r\n")
}

impl<IO: AsyncRead + Unpin> Prefixed<IO> {
    /// Once the prefix is used up: waits for the next bytes and keeps them in
    /// front, as [`sniff`] did (a parked connection waits with no buffer, not
    /// the parser's). `Ok(0)`: the client closed.
    pub(crate) async fn refill(&mut self) -> io::Result<usize> {
        if self.start < self.prefix.len() {
            return Ok(self.prefix.len() - self.start);
        }
        let chunk = read_some(&mut self.io).await?;
        let n = chunk.len();
        (self.more, self.prefix, self.start) = (more_after(&chunk, n == READ), chunk, 0);
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
        if this.start == this.prefix.len() {
            return Pin::new(&mut this.io).poll_read(cx, buf);
        }
        let rest = &this.prefix[this.start..];
        let n = rest.len().min(buf.remaining());
        buf.put_slice(&rest[..n]);
        this.start += n;
        if this.start == this.prefix.len() {
            this.prefix = Box::default();
            this.start = 0;
            if this.more && buf.remaining() > 0 {
                // Whatever follows, in the same read. Nothing there yet is fine: the
                // prefix is an answer already. An error now comes back on the next read.
                let _ = Pin::new(&mut this.io).poll_read(cx, buf);
            }
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
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

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

    #[tokio::test]
    async fn a_whole_head_is_handed_over_without_reading_the_socket_again() {
        let (mut client, server) = tokio::io::duplex(1024);
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let (_, mut io) = sniff(server).await.unwrap();
        client
            .write_all(b"GET /next HTTP/1.1\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 64];
        let n = io.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"GET / HTTP/1.1\r\n\r\n");
        let n = io.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"GET /next HTTP/1.1\r\n\r\n");
    }

    #[tokio::test]
    async fn a_refill_keeps_the_next_bytes_in_front_and_frees_them_once_read() {
        let (mut client, server) = tokio::io::duplex(1024);
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let (_, mut io) = sniff(server).await.unwrap();
        let mut buf = [0u8; 64];
        assert_eq!(io.read(&mut buf).await.unwrap(), 18);
        client
            .write_all(b"GET /again HTTP/1.1\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(io.refill().await.unwrap(), 23);
        let n = io.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"GET /again HTTP/1.1\r\n\r\n");
        assert!(io.prefix.is_empty());
        drop(client);
        assert_eq!(io.refill().await.unwrap(), 0);
    }
}
