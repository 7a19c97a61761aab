//! Closes client connections that hold a slot without using it.
//!
//! A connection counts as busy from the moment a complete request head (HTTP/1)
//! or HEADERS frame (HTTP/2) reached us until its response is finished, and while
//! it carries an upgraded tunnel. Any other moment it is idle. This is one timer
//! for every way a client can sit on a connection: sending nothing at all, a
//! partial HTTP/1 head or HTTP/2 preface (before hyper's own timer starts), only
//! PINGs on HTTP/2, or an idle keep-alive of either version.
//!
//! Two steps ([`drive`]): once idle for the limit the connection is asked to
//! close gracefully (HTTP/2 GOAWAY, HTTP/1 closes at once); a client that holds
//! on anyway is dropped the same limit later.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use hyper::body::{Body, Incoming};
use tokio::time::Instant;

/// The busy/idle state of one client connection, shared between what drives
/// it ([`drive`]) and the requests on it ([`Busy`]).
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
    /// Wakes [`Activity::idle_for`] when the connection becomes idle. One
    /// waker, not a `Notify`: only the connection's own task waits, and a
    /// `Notify` cost a locked registration for every wait (~0.8k instructions
    /// per connection, docs/benchmark.md, twelfth round).
    became_idle: WakeSlot,
    /// Reads that brought bytes, and their count when the connection last
    /// became idle: equal means nothing arrived since (no partial head waits).
    reads: AtomicU32,
    reads_at_idle: AtomicU32,
    /// Parking an idle HTTP/1 connection (`serve/park.rs`): one of `PARK_*`.
    park: AtomicU8,
}

/// Not parking.
pub(crate) const PARK_NONE: u8 = 0;
/// Asked to park: the parser's next read is told the stream ended.
pub(crate) const PARK_ASKED: u8 = 1;
/// The parser was told; what it does next says whether it was idle.
pub(crate) const PARK_TOLD: u8 = 2;

impl Activity {
    /// A connection that has just been accepted: idle from now.
    pub(crate) fn new() -> Activity {
        Activity {
            inner: Arc::new(Inner {
                busy: AtomicUsize::new(0),
                idle_since: AtomicU64::new(0),
                epoch: Instant::now(),
                became_idle: WakeSlot::default(),
                reads: AtomicU32::new(0),
                reads_at_idle: AtomicU32::new(0),
                park: AtomicU8::new(PARK_NONE),
            }),
        }
    }

    /// Resolves once the connection has been idle for `limit` without a break.
    pub(crate) async fn idle_for(&self, limit: Duration) {
        self.idle_period(limit, None).await;
    }

    /// Like [`Activity::idle_for`], for an idle period other than the one that
    /// began at `skip`; resolves with when the period began.
    ///
    /// Only the connection's task may wait: a second task waiting at the same
    /// time could take the other's wake-up.
    pub(crate) async fn idle_period(&self, limit: Duration, skip: Option<u64>) -> u64 {
        let inner = &self.inner;
        loop {
            let since = std::future::poll_fn(|cx| {
                // Registered before the checks: a request that ends between
                // them wakes this task.
                inner.became_idle.register(cx.waker());
                let since = inner.idle_since.load(Ordering::Acquire);
                if inner.busy.load(Ordering::Acquire) > 0 || skip == Some(since) {
                    Poll::Pending
                } else {
                    Poll::Ready(since)
                }
            })
            .await;
            tokio::time::sleep_until(inner.epoch + Duration::from_nanos(since) + limit).await;
            if inner.busy.load(Ordering::Acquire) == 0
                && inner.idle_since.load(Ordering::Acquire) == since
            {
                return since;
            }
        }
    }

    /// Counts a read that brought bytes.
    pub(crate) fn note_read(&self) {
        self.inner.reads.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether no bytes arrived since the connection last became idle.
    pub(crate) fn quiet_since_idle(&self) -> bool {
        self.inner.reads.load(Ordering::Relaxed) == self.inner.reads_at_idle.load(Ordering::Relaxed)
    }

    pub(crate) fn park_state(&self) -> u8 {
        self.inner.park.load(Ordering::Relaxed)
    }

    pub(crate) fn set_park_state(&self, state: u8) {
        self.inner.park.store(state, Ordering::Relaxed);
    }

    /// Marks the connection busy until the returned guard is dropped.
    pub(crate) fn begin(&self) -> Busy {
        self.inner.busy.fetch_add(1, Ordering::AcqRel);
        Busy {
            inner: self.inner.clone(),
        }
    }
}

/// The one waker [`Activity::idle_period`] leaves: per connection, so its lock
/// is taken by one thread at a time but for a tunnel's end on another worker.
#[derive(Default)]
struct WakeSlot(Mutex<Option<Waker>>);

impl WakeSlot {
    fn register(&self, waker: &Waker) {
        let mut slot = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if !slot.as_ref().is_some_and(|w| w.will_wake(waker)) {
            *slot = Some(waker.clone());
        }
    }

    fn wake(&self) {
        let waker = self.0.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(waker) = waker {
            waker.wake();
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
        let reads = inner.reads.load(Ordering::Relaxed);
        inner.reads_at_idle.store(reads, Ordering::Relaxed);
        if inner.busy.fetch_sub(1, Ordering::AcqRel) == 1 {
            inner.became_idle.wake();
        }
    }
}

fn nanos_since(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// A served connection that can be asked to finish its in-flight work and close.
pub(crate) trait GracefulClose: Future {
    /// Stop taking new requests; end once the in-flight ones are answered.
    fn graceful_close(self: Pin<&mut Self>);
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl<I, S, B> GracefulClose for hyper::server::conn::http1::UpgradeableConnection<I, S>
where
    S: hyper::service::HttpService<Incoming, ResBody = B>,
    S::Error: Into<BoxError>,
    B: Body + 'static,
    B::Error: Into<BoxError>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    fn graceful_close(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

impl<I, S, E, B> GracefulClose for hyper::server::conn::http2::Connection<I, S, E>
where
    S: hyper::service::HttpService<Incoming, ResBody = B>,
    S::Error: Into<BoxError>,
    B: Body + 'static,
    B::Error: Into<BoxError>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    E: hyper::rt::bounds::Http2ServerConnExec<S::Future, B>,
{
    fn graceful_close(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

impl<I, S, B> GracefulClose for hyper::server::conn::http1::Connection<I, S>
where
    S: hyper::service::HttpService<Incoming, ResBody = B>,
    S::Error: Into<BoxError>,
    B: Body + 'static,
    B::Error: Into<BoxError>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
{
    fn graceful_close(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

/// Drives `conn` to its end. Idle (see [`Activity`]) for `limit`, or once `drain`
/// resolves, it is asked to close gracefully; still there `limit` after an idle
/// close, it is dropped (which closes the socket). `None` when it was dropped.
///
/// With `park_after`, a connection idle for as long as it says (asked anew
/// at every wake-up) with no byte of a next request arrived is asked to park
/// (see `serve/park.rs`); whether it did, [`Activity::park_state`] says once
/// it ends.
pub(crate) async fn drive<C: GracefulClose>(
    mut conn: Pin<&mut C>,
    activity: &Activity,
    limit: Duration,
    park_after: Option<impl Fn() -> Duration>,
    drain: impl Future<Output = ()>,
) -> Option<C::Output> {
    tokio::pin!(drain);
    let (mut draining, mut idle_since) = (false, None::<Instant>);
    // The idle period in which parking was last found unsafe: not tried again in it.
    let mut unparkable = None;
    let side = Arc::new(SideWaker::default());
    loop {
        let hard = idle_since.map(|at| at + limit);
        let park_in = park_after.as_ref().map_or(limit, |after| after());
        let may_park = park_after.is_some()
            && !draining
            && idle_since.is_none()
            && activity.park_state() == PARK_NONE;
        let event = {
            // Boxed: the connection's task would otherwise keep room for them,
            // and be copied whole when it is spawned.
            let mut timers = Box::pin(async {
                tokio::select! {
                    biased;
                    () = drain.as_mut(), if !draining => Event::Drain,
                    () = activity.idle_for(limit), if idle_since.is_none() => Event::Idle,
                    since = activity.idle_period(park_in, unparkable), if may_park => Event::Park(since),
                    () = tokio::time::sleep_until(hard.unwrap_or_else(Instant::now)), if hard.is_some() => {
                        Event::Hard
                    }
                }
            });
            side.woken.store(true, Ordering::Release);
            std::future::poll_fn(|cx| {
                if let Poll::Ready(ended) = conn.as_mut().poll(cx) {
                    return Poll::Ready(Event::Ended(ended));
                }
                // The timers and the drain only when one of them woke the task: a
                // connection wakes several times a request, and polling them all
                // each time cost more than the rest of this function.
                if !side.take(cx) {
                    return Poll::Pending;
                }
                let waker = Waker::from(side.clone());
                timers.as_mut().poll(&mut Context::from_waker(&waker))
            })
            .await
        };
        match event {
            Event::Ended(ended) => return Some(ended),
            Event::Drain => {
                draining = true;
                conn.as_mut().graceful_close();
            }
            Event::Idle => {
                idle_since = Some(Instant::now());
                conn.as_mut().graceful_close();
            }
            Event::Park(since) => {
                // Bytes since the last response may be part of a head the parser
                // holds: telling it the stream ended would fail that request.
                if activity.quiet_since_idle() {
                    activity.set_park_state(PARK_ASKED);
                } else {
                    unparkable = Some(since);
                }
            }
            Event::Hard => return None,
        }
    }
}

/// What ended one wait of [`drive`].
enum Event<O> {
    Ended(O),
    Drain,
    Idle,
    Park(u64),
    Hard,
}

/// The waker [`drive`] gives its timers and the drain: it wakes the task and
/// notes that one of them, not the connection, is what woke it.
#[derive(Default)]
struct SideWaker {
    woken: AtomicBool,
    task: Mutex<Option<Waker>>,
}

impl Wake for SideWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        if let Some(task) = &*self.task.lock().unwrap_or_else(|p| p.into_inner()) {
            task.wake_by_ref();
        }
    }
}

impl SideWaker {
    /// Whether a timer or the drain woke the task since the last call; keeps the
    /// task's waker for them.
    fn take(&self, cx: &Context<'_>) -> bool {
        let mut task = self.task.lock().unwrap_or_else(|p| p.into_inner());
        if !task.as_ref().is_some_and(|t| t.will_wake(cx.waker())) {
            *task = Some(cx.waker().clone());
        }
        drop(task);
        self.woken.swap(false, Ordering::AcqRel)
    }
}

/// For [`drive`]: a connection that never parks.
pub(crate) const NO_PARKING: Option<fn() -> Duration> = None;

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection that never ends by itself and records graceful-close requests.
    struct Stubborn {
        asked: Arc<AtomicUsize>,
    }

    impl Future for Stubborn {
        type Output = ();
        fn poll(self: Pin<&mut Self>, _: &mut std::task::Context<'_>) -> std::task::Poll<()> {
            std::task::Poll::Pending
        }
    }

    impl GracefulClose for Stubborn {
        fn graceful_close(self: Pin<&mut Self>) {
            self.asked.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_is_asked_to_close_then_dropped_a_limit_later() {
        let asked = Arc::new(AtomicUsize::new(0));
        let conn = Stubborn {
            asked: asked.clone(),
        };
        let start = Instant::now();
        let ended = drive(
            std::pin::pin!(conn),
            &Activity::new(),
            Duration::from_secs(2),
            NO_PARKING,
            std::future::pending(),
        )
        .await;
        assert!(ended.is_none(), "dropped, not ended by itself");
        assert_eq!(asked.load(Ordering::SeqCst), 1);
        assert_eq!(start.elapsed(), Duration::from_secs(4));
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_connection_is_left_alone_until_it_has_been_idle_for_the_limit() {
        let asked = Arc::new(AtomicUsize::new(0));
        let activity = Activity::new();
        let busy = activity.begin();
        let driven = tokio::spawn({
            let (asked, activity) = (asked.clone(), activity.clone());
            async move {
                drive(
                    std::pin::pin!(Stubborn { asked }),
                    &activity,
                    Duration::from_secs(2),
                    NO_PARKING,
                    std::future::pending(),
                )
                .await;
                Instant::now()
            }
        });
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert_eq!(asked.load(Ordering::SeqCst), 0, "never while busy");
        let idle_from = Instant::now();
        drop(busy);
        // Bounded: a connection never told that it became idle would wait for good.
        let ended = tokio::time::timeout(Duration::from_secs(60), driven)
            .await
            .expect("the end of the request wakes the idle timers");
        assert_eq!(ended.unwrap() - idle_from, Duration::from_secs(4));
        assert_eq!(asked.load(Ordering::SeqCst), 1);
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
        let idle = tokio::time::timeout(Duration::from_secs(60), waiting)
            .await
            .expect("the end of the request wakes idle_for");
        assert_eq!(idle.unwrap() - last_end, Duration::from_secs(3));
    }
}
