//! Gives back the buffers of an idle HTTP/1 connection.
//!
//! hyper keeps an 8 KiB read and an 8 KiB write buffer, and its connection
//! state, for as long as a connection lives, idle or not; with many kept-alive
//! clients that is most of pinproxy's memory. Once a connection has been idle
//! for `release_idle_buffers_after`, it is *parked*: hyper's connection is
//! ended without closing the socket, and the socket waits with nothing but a
//! 24-byte buffer (`sniff::Prefixed`) for the next request, which gets a new
//! hyper connection.
//!
//! Only hyper knows whether it is between requests, so hyper decides: asked to
//! park, the connection's next read reports the end of the stream
//! ([`Parkable`]). Between requests, hyper takes that as the client closing and
//! finishes cleanly, and its shutdown of the socket is skipped: parked. In the
//! middle of a request (a body still arriving, a head half read), the same end
//! is an error, and the connection closes as it would have; what hyper then
//! tries to write is refused, so no client gets an answer pinproxy did not mean.
//! A connection hyper has stopped reading (a request body it gave up on) never
//! sees the end and closes as hyper decided. Not asked while a response is
//! still being written, nor when bytes arrived since the last response.
//!
//! While more than [`CROWDED`] client connections are open, an idle one parks
//! at once, whatever `release_idle_buffers_after` says: the delay spares a busy
//! client the cost of new buffers for every request (a few percent of CPU),
//! which is worth it only while the buffers idle connections keep are few.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::HttpService;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::http::idle::{self, Activity, PARK_ASKED, PARK_NONE, PARK_TOLD};
use crate::http::logged_body::LoggedBody;
use crate::http::sniff::Prefixed;
use crate::platform::in_place::boxed;

/// The client connection as hyper's HTTP/1 parser sees it.
pub(super) struct Parkable<IO> {
    io: Prefixed<IO>,
    activity: Activity,
    /// The last write or flush could not finish: a response is still going out.
    write_blocked: bool,
}

impl<IO: AsyncRead + Unpin> AsyncRead for Parkable<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match this.activity.park_state() {
            PARK_ASKED if !this.write_blocked => {
                this.activity.set_park_state(PARK_TOLD);
                return Poll::Ready(Ok(()));
            }
            PARK_TOLD => return Poll::Ready(Ok(())),
            _ => {}
        }
        let before = buf.filled().len();
        let read = Pin::new(&mut this.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.note_read();
        }
        read
    }
}

fn refused() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "the connection was being parked")
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Parkable<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.activity.park_state() == PARK_TOLD {
            return Poll::Ready(Err(refused()));
        }
        let wrote = Pin::new(&mut this.io).poll_write(cx, buf);
        this.write_blocked = wrote.is_pending();
        wrote
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.activity.park_state() == PARK_TOLD {
            return Poll::Ready(Err(refused()));
        }
        let wrote = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.write_blocked = wrote.is_pending();
        wrote
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let flushed = Pin::new(&mut this.io).poll_flush(cx);
        this.write_blocked = flushed.is_pending();
        flushed
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.activity.park_state() == PARK_TOLD {
            // hyper ends its connection on the end we made up: the socket stays.
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

/// More open client connections than this, and an idle one parks at once.
/// Up to it, idle connections keep at most ~1.6 MiB of buffers between them.
pub(super) const CROWDED: usize = 100;

/// How long a connection idles before it parks, with `open` client
/// connections open: `configured` (`release_idle_buffers_after`), or at once
/// in a crowd.
pub(super) fn park_after(configured: Duration, open: usize) -> Duration {
    if open > CROWDED {
        Duration::ZERO
    } else {
        configured
    }
}

/// Serves HTTP/1.1 on `io` until the client closes, the idle limit or the
/// drain ends it, parking it whenever it idles for `park_after` (with `open`
/// telling how many client connections are open).
pub(super) async fn serve<IO, S>(
    http: &http1::Builder,
    mut io: Prefixed<IO>,
    mut service: S,
    activity: &Activity,
    (limit, configured, open): (Duration, Duration, &(dyn Fn() -> usize + Sync)),
    drain: &mut super::connection::Draining,
) -> Option<hyper::Result<()>>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: HttpService<Incoming, ResBody = LoggedBody> + Unpin,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    loop {
        activity.set_park_state(PARK_NONE);
        let parkable = Parkable {
            io,
            activity: activity.clone(),
            write_blocked: false,
        };
        // Boxed: parked, the connection's task keeps none of hyper's state.
        let mut conn = boxed(|| {
            http.serve_connection(TokioIo::new(parkable), service)
                .with_upgrades()
        });
        let ended = idle::drive(
            conn.as_mut(),
            activity,
            limit,
            Some(|| park_after(configured, open())),
            drain.signalled(),
        )
        .await;
        if !matches!(ended, Some(Ok(()))) || activity.park_state() != PARK_TOLD {
            return ended;
        }
        let Some(parts) = Pin::into_inner(conn).into_parts() else {
            return ended;
        };
        {
            // In a block of its own: what is left of `parts` goes now, not when
            // this turn ends, and the task keeps no room for it while parked.
            let hyper::server::conn::http1::Parts {
                io: parked,
                read_buf,
                service: kept,
                ..
            } = parts;
            if !read_buf.is_empty() {
                // hyper ends cleanly on an end of stream only with nothing unparsed.
                return ended;
            }
            service = kept;
            io = parked.into_inner().io;
        }
        // Boxed: only a parked connection needs room for these timers, and every
        // connection's task would otherwise keep it (and be copied with it).
        let next = Box::pin(async {
            tokio::select! {
                biased;
                next = io.refill() => matches!(next, Ok(n) if n > 0),
                () = activity.idle_for(limit) => false,
                () = drain.signalled() => false,
            }
        })
        .await;
        if !next {
            return ended;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_crowd_parks_at_once_and_a_few_connections_wait_as_configured() {
        let configured = Duration::from_millis(250);
        assert_eq!(park_after(configured, 1), configured);
        assert_eq!(park_after(configured, CROWDED), configured);
        assert_eq!(park_after(configured, CROWDED + 1), Duration::ZERO);
        assert_eq!(park_after(Duration::ZERO, 1), Duration::ZERO);
    }
}
