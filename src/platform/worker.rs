//! Which connection worker the calling thread is. `serve::workers` starts one
//! single-threaded runtime per core and names each thread's index here;
//! `upstream` keeps one idle list per worker and asks which one is its own.

use std::cell::Cell;

thread_local! {
    static CURRENT: Cell<usize> = const { Cell::new(0) };
}

/// How many workers a proxy starts: one per core it may use (this honours CPU
/// affinity and cgroup quotas, so a sidecar limited to one CPU gets one).
pub fn count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The index of the worker running the caller (0 outside the workers).
pub fn current() -> usize {
    CURRENT.with(Cell::get)
}

/// Names the calling thread worker `index`; called once as each worker starts.
pub(crate) fn set_current(index: usize) {
    CURRENT.with(|c| c.set(index));
}
