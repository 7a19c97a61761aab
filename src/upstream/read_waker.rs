//! Where a pooled connection's reads wake while it sits idle.
//!
//! An idle HTTP/1.1 connection is polled by the pool, so that a close the
//! server sends wakes the pool's tending task. Polled with that task's waker,
//! hyper would also leave the waker in the connection's request queue, and
//! the next request sent on it would wake the task for nothing: a turn of the
//! task, and a poll of every idle connection, per request. So the pool polls
//! it without a waker and routes only the socket's read readiness to the
//! tending task, through this: [`TlsConn`](super::connector::TlsConn) reads
//! with the waker set here, when one is.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::task::Waker;

/// The waker a connection's reads register instead of the caller's, if set.
#[derive(Default)]
pub(crate) struct ReadWaker {
    /// Read without the lock on every read of a connection in use.
    set: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

impl ReadWaker {
    /// Reads wake `waker` from now on, whoever polls.
    pub(crate) fn set(&self, waker: &Waker) {
        let mut slot = self.waker.lock().unwrap_or_else(|p| p.into_inner());
        if !slot.as_ref().is_some_and(|w| w.will_wake(waker)) {
            *slot = Some(waker.clone());
        }
        self.set.store(true, Ordering::Release);
    }

    /// Reads wake whoever polls again (the connection is in use).
    pub(crate) fn clear(&self) {
        if self.set.swap(false, Ordering::AcqRel) {
            *self.waker.lock().unwrap_or_else(|p| p.into_inner()) = None;
        }
    }

    /// The waker set, if any.
    pub(crate) fn get(&self) -> Option<Waker> {
        if !self.set.load(Ordering::Acquire) {
            return None;
        }
        self.waker.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}
