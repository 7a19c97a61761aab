//! Closes client connections that hold a slot without using it.
//!
//! A connection counts as busy from the moment a complete request head (HTTP/1)
//! or HEADERS frame (HTTP/2) reached us until its response is finished, and while
//! it carries an upgraded tunnel. Any other moment it is idle. This is one timer
//! for every way a client can sit on a connection: sending nothing at all, a
//! partial HTTP/1 head or HTTP/2 preface (before hyper's own timer starts), only
//! PINGs on HTTP/2, or an idle keep-alive of either version.
//!
//! Two steps: once idle for the limit ([`Activity::idle_for`]) the server asks
//! the connection to close gracefully (HTTP/2 GOAWAY); a client that holds on
//! anyway finds, after the hard limit, that reads on its byte stream fail
//! ([`Guarded`]), which no protocol state can escape.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};

/// The busy/idle state of one client connection, shared between its byte
/// stream ([`Guarded`]) and the requests on it ([`Busy`]).
#[derive(Clone)]
pub(crate) struct Activity {
    inner: Arc<Inner>,
}

struct Inner {
    /// Requests in progress (and tunnels) on the connection.
    busy: AtomicUsize,
    /// When it last became idle, in nanoseconds after `epoch`.
    idle_since: AtomicU64,
    epoch: Instant,
    /// The connection's task, woken when it becomes idle so its timer starts.
    waker: Mutex<Option<Waker>>,
    /// Wakes [`Activity::idle_for`] when the connection becomes idle.
    became_idle: Notify,
}

impl Activity {
    /// A connection that has just been accepted: idle from now.
    pub(crate) fn new() -> Activity {
        Activity {
            inner: Arc::new(Inner {
                busy: AtomicUsize::new(0),
                idle_since: AtomicU64::new(0),
                epoch: Instant::now(),
                waker: Mutex::new(None),
                became_idle: Notify::new(),
            }),
        }
    }

    /// Resolves once the connection has been idle for `limit` without a break.
    pub(crate) async fn idle_for(&self, limit: Duration) {
        let inner = &self.inner;
        loop {
            let became_idle = inner.became_idle.notified();
            if inner.busy.load(Ordering::Acquire) > 0 {
                became_idle.await;
                continue;
            }
            let since = inner.idle_since.load(Ordering::Acquire);
            tokio::time::sleep_until(inner.epoch + Duration::from_nanos(since) + limit).await;
            if inner.busy.load(Ordering::Acquire) == 0
                && inner.idle_since.load(Ordering::Acquire) == since
            {
                return;
            }
        }
    }

    /// Marks the connection busy until the returned guard is dropped.
    pub(crate) fn begin(&self) -> Busy {
        self.inner.busy.fetch_add(1, Ordering::AcqRel);
        Busy {
            inner: self.inner.clone(),
        }
    }
}

/// Keeps a connection busy (see [`Activity::begin`]).
pub(crate) struct Busy {
    inner: Arc<Inner>,
}

impl Drop for Busy {
    fn drop(&mut self) {
        let inner = &self.inner;
        let now = nanos_since(inner.epoch);
        inner.idle_since.store(now, Ordering::Release);
        if inner.busy.fetch_sub(1, Ordering::AcqRel) == 1 {
            inner.became_idle.notify_one();
            let waker = inner.waker.lock().unwrap_or_else(|p| p.into_inner()).take();
            if let Some(waker) = waker {
                waker.wake();
            }
        }
    }
}

fn nanos_since(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// A client byte stream whose reads fail once the connection has been idle for
/// `limit` (the hard limit). Writes pass through untouched.
pub(crate) struct Guarded<IO> {
    io: IO,
    activity: Activity,
    limit: Duration,
    timer: Pin<Box<Sleep>>,
}

impl<IO> Guarded<IO> {
    pub(crate) fn new(io: IO, activity: Activity, limit: Duration) -> Guarded<IO> {
        let timer = Box::pin(tokio::time::sleep(limit));
        Guarded {
            io,
            activity,
            limit,
            timer,
        }
    }

    /// Ready with an error once the idle limit has passed; otherwise arranges
    /// to be woken when it would (or when the connection becomes idle).
    fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let inner = &self.activity.inner;
        if inner.busy.load(Ordering::Acquire) > 0 {
            let mut waker = inner.waker.lock().unwrap_or_else(|p| p.into_inner());
            match &*waker {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => *waker = Some(cx.waker().clone()),
            }
            drop(waker);
            // It may have become idle between the load and storing the waker.
            if inner.busy.load(Ordering::Acquire) > 0 {
                return Poll::Pending;
            }
        }
        let idle_since = Duration::from_nanos(inner.idle_since.load(Ordering::Acquire));
        let deadline = inner.epoch + idle_since + self.limit;
        if self.timer.deadline() != deadline {
            self.timer.as_mut().reset(deadline);
        }
        match self.timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no request on this connection for {:?}", self.limit),
            )),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Guarded<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Poll::Ready(e) = self.poll_expired(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Guarded<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn a_silent_connection_is_cut_after_the_limit_and_not_before() {
        let (client, server) = tokio::io::duplex(64);
        let mut guarded = Guarded::new(server, Activity::new(), Duration::from_secs(2));
        let started = Instant::now();
        let mut buf = [0u8; 8];
        let err = guarded.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(2));
        drop(client);
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_connection_is_never_cut_and_its_idle_time_starts_when_it_ends() {
        let (mut client, server) = tokio::io::duplex(64);
        let activity = Activity::new();
        let mut guarded = Guarded::new(server, activity.clone(), Duration::from_secs(2));
        let busy = activity.begin();
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 8];
            let n = guarded.read(&mut buf).await.unwrap();
            assert_eq!(&buf[..n], b"hi");
            let err = guarded.read(&mut buf).await.unwrap_err();
            (err.kind(), Instant::now())
        });
        // Far past the limit while busy: still open.
        tokio::time::sleep(Duration::from_secs(10)).await;
        client.write_all(b"hi").await.unwrap();
        tokio::time::sleep(Duration::from_secs(5)).await;
        let idle_from = Instant::now();
        drop(busy);
        let (kind, cut_at) = reader.await.unwrap();
        assert_eq!(kind, io::ErrorKind::TimedOut);
        assert_eq!(cut_at - idle_from, Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn idle_for_counts_from_the_end_of_the_last_request() {
        let activity = Activity::new();
        let start = Instant::now();
        activity.idle_for(Duration::from_secs(3)).await;
        assert_eq!(start.elapsed(), Duration::from_secs(3));

        let busy = activity.begin();
        let waiting = tokio::spawn({
            let activity = activity.clone();
            async move {
                activity.idle_for(Duration::from_secs(3)).await;
                Instant::now()
            }
        });
        tokio::time::sleep(Duration::from_secs(10)).await;
        // A request that starts and ends while idle_for sleeps restarts the count.
        drop(busy);
        tokio::time::sleep(Duration::from_secs(2)).await;
        drop(activity.begin());
        let last_end = Instant::now();
        assert_eq!(waiting.await.unwrap() - last_end, Duration::from_secs(3));
    }
}
