//! The connections an upstream keeps open: per worker, a list of idle HTTP/1.1
//! connections; per upstream, one shared HTTP/2 connection. Every connection in
//! here was made by the pinned connector: the pool only accepts a [`TlsConn`],
//! and only `connector.rs` can make one.
//!
//! An HTTP/1.1 connection (`http1/`, pinproxy's own client) is not a task of
//! its own. The request that checks it out drives it (writing the request,
//! reading the response head), then the
//! response body does while the client reads it, and hands it back to its
//! worker's idle list when the body ends. So a request and its answer cost no
//! hop through a channel to another task, and the connection stays on the
//! worker (and reactor) that made it. While it sits idle, a tending task on that
//! worker polls it, so a connection the server closes leaves the list (and frees
//! its `max_connections` slot) at once; `idle_timeout` closes the rest.
//!
//! An HTTP/2 connection multiplexes, so it runs as its own task and every
//! worker's requests share it.
//!
//! At `max_connections` no request waits while a connection is idle: it takes
//! an idle one of any worker, and otherwise queues ([`Waiters`]); a connection
//! that finishes an exchange goes to the oldest queued request before it may
//! go idle, and a slot freed by a closed connection goes to the oldest too.

use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::pin::{pin, Pin as StdPin};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::{http2, TrySendError};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::sync::oneshot;

use super::connector::TlsConn;
use super::http1::{ResponseBody, H1};
use super::{BoxError, RequestBody};

struct IdleH1 {
    h1: Box<H1>,
    expires: Instant,
}

/// The requests waiting for a connection at `max_connections`, oldest first.
#[derive(Default)]
pub(super) struct Waiters {
    queue: Mutex<VecDeque<oneshot::Sender<Box<H1>>>>,
    /// The queue's length, read without the lock on every finished exchange.
    waiting: AtomicUsize,
}

impl Waiters {
    /// Queues a request; the connection comes through the receiver.
    fn join(&self) -> oneshot::Receiver<Box<H1>> {
        let (tx, rx) = oneshot::channel();
        let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        queue.push_back(tx);
        self.waiting.store(queue.len(), Ordering::Release);
        rx
    }

    /// Gives `h1` to the oldest request still waiting; back if there is none.
    fn hand_over(&self, mut h1: Box<H1>) -> Option<Box<H1>> {
        if self.waiting.load(Ordering::Acquire) == 0 {
            return Some(h1);
        }
        let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(waiter) = queue.pop_front() {
            match waiter.send(h1) {
                Ok(()) => {
                    self.waiting.store(queue.len(), Ordering::Release);
                    return None;
                }
                // Gone (answered by a freed slot, or timed out): the next one.
                Err(back) => h1 = back,
            }
        }
        self.waiting.store(0, Ordering::Release);
        Some(h1)
    }
}

/// One worker's idle HTTP/1.1 connections (most recently used last).
pub(super) struct Idle {
    state: Mutex<IdleState>,
    max: usize,
    timeout: Duration,
    waiters: Arc<Waiters>,
}

#[derive(Default)]
struct IdleState {
    conns: Vec<IdleH1>,
    /// The tending task's waker while it runs.
    tender: Option<Waker>,
    tending: bool,
}

impl Idle {
    fn new(max: usize, timeout: Duration, waiters: Arc<Waiters>) -> Arc<Idle> {
        Arc::new(Idle {
            state: Mutex::new(IdleState::default()),
            max,
            timeout,
            waiters,
        })
    }

    fn lock(&self) -> MutexGuard<'_, IdleState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The most recently used connection that is still open and ready; the
    /// closed and expired ones met on the way are dropped.
    fn take(&self) -> Option<Box<H1>> {
        loop {
            let mut idle = self.lock().conns.pop()?;
            if idle.expires <= Instant::now() {
                continue;
            }
            if idle.h1.ready() {
                idle.h1.in_use();
                return Some(idle.h1);
            }
        }
    }

    /// Hands `h1` to the oldest request waiting for a connection, or else keeps
    /// it for the next request (unless the list is full), making sure a tending
    /// task watches it. Called on the worker whose request used it last.
    fn put(self: &Arc<Self>, h1: Box<H1>) {
        let Some(h1) = self.waiters.hand_over(h1) else {
            return;
        };
        if self.max == 0 {
            return;
        }
        let mut state = self.lock();
        if state.conns.len() >= self.max {
            return;
        }
        let mut h1 = h1;
        match &state.tender {
            // Polled so that a close wakes the tending task; the task itself is
            // not woken (under load every request ends here, and a wake-up each
            // would cost more than the whole exchange).
            Some(tender) => {
                if !h1.tend(tender) {
                    return;
                }
            }
            None if state.tending => {} // not polled yet: it will poll them all
            None => match tokio::runtime::Handle::try_current() {
                Ok(runtime) => {
                    state.tending = true;
                    runtime.spawn(tend(Arc::downgrade(self)));
                }
                // Outside a runtime (a body dropped while one shuts down) the
                // connection is simply closed.
                Err(_) => return,
            },
        }
        state.conns.push(IdleH1 {
            h1,
            expires: Instant::now() + self.timeout,
        });
    }
}

/// Polls a worker's idle connections, so those the server closed go at once and
/// their slots are freed, and closes each at `idle_timeout`. Ends when the list
/// is empty (the next `put` starts another) or the pool is gone.
async fn tend(idle: Weak<Idle>) {
    let mut sleep = pin!(tokio::time::sleep(Duration::ZERO));
    poll_fn(|cx| {
        let Some(idle) = idle.upgrade() else {
            return Poll::Ready(());
        };
        let mut state = idle.lock();
        loop {
            let now = Instant::now();
            state
                .conns
                .retain_mut(|c| c.expires > now && c.h1.tend(cx.waker()));
            // Put in order, so the first expires first.
            let Some(next) = state.conns.first().map(|c| c.expires) else {
                state.tending = false;
                state.tender = None;
                return Poll::Ready(());
            };
            sleep.as_mut().reset(next.into());
            if sleep.as_mut().poll(cx).is_pending() {
                break;
            }
        }
        state.tender = Some(cx.waker().clone());
        Poll::Pending
    })
    .await
}

/// The shared HTTP/2 connection and how long it has been unused.
#[derive(Clone)]
struct H2 {
    send: http2::SendRequest<RequestBody>,
    address: Arc<str>,
    /// One clone per request in flight on it (held by its response body).
    in_use: Arc<LastUse>,
}

/// When an HTTP/2 connection was last used, in milliseconds since the pool's start.
struct LastUse {
    millis: AtomicU64,
    epoch: Instant,
}

impl LastUse {
    fn touch(&self) {
        let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.millis.store(now, Ordering::Relaxed);
    }

    fn at(&self) -> Instant {
        self.epoch + Duration::from_millis(self.millis.load(Ordering::Relaxed))
    }
}

/// An upstream's pool: one idle list per worker plus the shared HTTP/2 connection.
pub(super) struct Pool {
    workers: Box<[Arc<Idle>]>,
    waiters: Arc<Waiters>,
    h2: Arc<Mutex<Option<H2>>>,
    idle_timeout: Duration,
}

impl Pool {
    /// A pool for `workers` workers keeping at most `max_idle` idle connections
    /// in all, each for at most `idle_timeout`.
    pub(super) fn new(workers: usize, max_idle: usize, idle_timeout: Duration) -> Pool {
        let workers = workers.max(1);
        let waiters = Arc::new(Waiters::default());
        Pool {
            workers: (0..workers)
                .map(|_| Idle::new(max_idle.div_ceil(workers), idle_timeout, waiters.clone()))
                .collect(),
            waiters,
            h2: Arc::new(Mutex::new(None)),
            idle_timeout,
        }
    }

    fn h2_slot(&self) -> MutexGuard<'_, Option<H2>> {
        self.h2.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// This worker's idle list.
    pub(super) fn idle(&self, worker: usize) -> &Arc<Idle> {
        &self.workers[worker % self.workers.len()]
    }

    /// A ready idle HTTP/1.1 connection of `worker`'s.
    pub(super) fn take_h1(&self, worker: usize) -> Option<Box<H1>> {
        self.idle(worker).take()
    }

    /// A ready idle HTTP/1.1 connection of any worker, `worker`'s first: at
    /// `max_connections`, one idle anywhere serves rather than a request waiting.
    pub(super) fn take_any_h1(&self, worker: usize) -> Option<Box<H1>> {
        let n = self.workers.len();
        for i in 0..n {
            if let Some(h1) = self.idle(worker + i).take() {
                return Some(h1);
            }
        }
        None
    }

    /// Queues for the next connection that finishes an exchange.
    pub(super) fn wait(&self) -> oneshot::Receiver<Box<H1>> {
        self.waiters.join()
    }

    /// The shared HTTP/2 connection, while it is open.
    pub(super) fn h2(&self) -> Option<H2Handle> {
        let mut slot = self.h2_slot();
        match &*slot {
            Some(h2) if !h2.send.is_closed() => {
                h2.in_use.touch();
                Some(H2Handle(h2.clone()))
            }
            Some(_) => {
                *slot = None;
                None
            }
            None => None,
        }
    }

    /// Starts HTTP/2 on a pinned connection (its task runs on this worker) and
    /// makes it the shared one unless another already is.
    pub(super) async fn add_h2(&self, tls: TlsConn) -> hyper::Result<H2Handle> {
        let address = tls.address().clone();
        let (send, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .handshake(TokioIo::new(tls))
            .await?;
        let in_use = Arc::new(LastUse {
            millis: AtomicU64::new(0),
            epoch: Instant::now(),
        });
        in_use.touch();
        let h2 = H2 {
            send,
            address,
            in_use,
        };
        {
            let mut slot = self.h2_slot();
            if slot.as_ref().is_none_or(|h2| h2.send.is_closed()) {
                *slot = Some(h2.clone());
            }
        }
        let (shared, timeout) = (Arc::downgrade(&self.h2), self.idle_timeout);
        let watched = h2.in_use.clone();
        tokio::spawn(async move {
            let mut conn = pin!(conn);
            tokio::select! {
                result = &mut conn => {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "upstream HTTP/2 connection ended with an error");
                    }
                    return;
                }
                () = h2_idle(&watched, timeout) => {}
            }
            // Unused for idle_timeout: no new request may take it; it closes
            // once the handles still out (none in flight) are gone.
            if let Some(shared) = shared.upgrade() {
                let mut slot = shared.lock().unwrap_or_else(|p| p.into_inner());
                if slot
                    .as_ref()
                    .is_some_and(|h2| Arc::ptr_eq(&h2.in_use, &watched))
                {
                    *slot = None;
                }
            }
            drop(watched);
            let _ = conn.await;
        });
        Ok(H2Handle(h2))
    }
}

/// Returns once the HTTP/2 connection whose use `in_use` tracks has carried no
/// request for `timeout`.
async fn h2_idle(in_use: &Arc<LastUse>, timeout: Duration) {
    loop {
        tokio::time::sleep_until((in_use.at() + timeout).into()).await;
        // Two references: the pool's entry and ours; more are requests in flight.
        if Arc::strong_count(in_use) <= 2 && in_use.at().elapsed() >= timeout {
            return;
        }
        if Arc::strong_count(in_use) > 2 {
            in_use.touch();
        }
    }
}

/// A request's hold on the shared HTTP/2 connection.
pub(super) struct H2Handle(H2);

impl H2Handle {
    /// The address the shared connection reached.
    pub(super) fn address(&self) -> &Arc<str> {
        &self.0.address
    }

    /// Sends `req` and waits for the response head.
    pub(super) async fn send(
        mut self,
        req: Request<RequestBody>,
    ) -> Result<(Response<Incoming>, H2Handle), TrySendError<Request<RequestBody>>> {
        let response = self.0.send.try_send_request(req).await?;
        Ok((response, self))
    }
}

impl Drop for H2Handle {
    fn drop(&mut self) {
        self.0.in_use.touch();
    }
}

/// What a response body reads from.
enum Inner {
    /// pinproxy's own HTTP/1.1 client.
    H1(ResponseBody),
    /// hyper's (HTTP/2, and an upgrade's response).
    Hyper(Incoming),
}

/// What keeps a response's connection usable while its body is read.
enum Carrier {
    /// The idle list its HTTP/1.1 connection goes back to at the end.
    H1(Arc<Idle>),
    /// A request on the shared HTTP/2 connection (in use until the body is done).
    H2 {
        _in_use: H2Handle,
    },
    None,
}

/// An upstream response body. For HTTP/1.1 it reads the connection that
/// carries it and returns it to the pool once the body is complete; a body
/// dropped early closes the connection (the rest of it would have to be read).
pub struct UpstreamBody {
    inner: Inner,
    carrier: Carrier,
    /// Which address answered (with failover, not always the first): carried
    /// here for the access log rather than in the response's extensions,
    /// which would allocate a map for every response.
    address: Option<Arc<str>>,
    /// The last poll returned data.
    after_data: bool,
    /// An error held back for one poll (see `poll_frame`).
    held_error: Option<BoxError>,
}

impl UpstreamBody {
    fn new(inner: Inner, carrier: Carrier, address: Option<Arc<str>>) -> UpstreamBody {
        UpstreamBody {
            inner,
            carrier,
            address,
            after_data: false,
            held_error: None,
        }
    }

    pub(super) fn h1(inner: ResponseBody, idle: &Arc<Idle>) -> UpstreamBody {
        UpstreamBody::new(Inner::H1(inner), Carrier::H1(idle.clone()), None)
    }

    pub(super) fn h2(inner: Incoming, handle: H2Handle) -> UpstreamBody {
        let address = Some(handle.address().clone());
        UpstreamBody::new(
            Inner::Hyper(inner),
            Carrier::H2 { _in_use: handle },
            address,
        )
    }

    pub(super) fn plain(inner: Incoming) -> UpstreamBody {
        UpstreamBody::new(Inner::Hyper(inner), Carrier::None, None)
    }
}

impl UpstreamBody {
    /// Notes which address answered.
    pub(super) fn with_address(mut self, address: Arc<str>) -> UpstreamBody {
        self.address = Some(address);
        self
    }

    /// The address that answered.
    pub fn address(&self) -> Option<&Arc<str>> {
        self.address.as_ref()
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: StdPin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let Some(e) = this.held_error.take() {
            return Poll::Ready(Some(Err(e)));
        }
        let polled = match &mut this.inner {
            Inner::H1(body) => StdPin::new(body).poll_frame(cx).map_err(BoxError::from),
            Inner::Hyper(body) => StdPin::new(body).poll_frame(cx).map_err(BoxError::from),
        };
        // The server broke off right after sending data, and the same poll
        // saw both. hyper drops what it has buffered for the client when
        // the body fails, so give it one turn to write the data first: the
        // client sees what the server sent, then the break.
        if let Poll::Ready(Some(Err(e))) = polled {
            if this.after_data {
                this.after_data = false;
                this.held_error = Some(e);
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            return Poll::Ready(Some(Err(e)));
        }
        this.after_data = matches!(&polled, Poll::Ready(Some(Ok(_))));
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::H1(body) => body.is_end_stream(),
            Inner::Hyper(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::H1(body) => body.size_hint(),
            Inner::Hyper(body) => body.size_hint(),
        }
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        if let (Inner::H1(body), Carrier::H1(idle)) = (&mut self.inner, &self.carrier) {
            if let Some(h1) = body.reusable() {
                idle.put(h1);
            }
        }
    }
}
