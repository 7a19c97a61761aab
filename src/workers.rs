//! Connection workers: one single-threaded tokio runtime per core.
//!
//! The accept loops hand each client connection to a worker in turn, and it lives
//! there with the upstream connections its requests use (each `Upstream` keeps
//! one pool per worker), so a request is read, forwarded and answered without
//! crossing threads. On a shared work-stealing runtime the client connection, the
//! pooled upstream connection and the waker between them moved between threads;
//! the benchmark's keep-alive load cost 4.81 CPU seconds per 100k requests there,
//! 4.30 here.

use std::cell::Cell;
use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::runtime::{Builder, Handle};
use tokio::sync::oneshot;

use crate::access_log;

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

/// The worker threads of one proxy. Dropping it stops them; a connection still
/// open then is closed.
pub struct Workers {
    handles: Vec<Handle>,
    next: AtomicUsize,
    /// Dropped with `Workers`, which ends each worker's `block_on`.
    _stop: Vec<oneshot::Sender<()>>,
}

impl Workers {
    /// Starts `n` workers. If the system refuses a thread, the proxy runs with
    /// the ones it got, or, with none, on the runtime that calls [`Workers::spawn`].
    pub fn start(n: usize) -> Workers {
        let mut workers = Workers {
            handles: Vec::with_capacity(n),
            next: AtomicUsize::new(0),
            _stop: Vec::with_capacity(n),
        };
        for index in 0..n {
            if let Err(e) = workers.start_one(index) {
                tracing::warn!(error = %e, started = index, wanted = n, "cannot start a connection worker");
                break;
            }
        }
        workers
    }

    fn start_one(&mut self, index: usize) -> io::Result<()> {
        let runtime = Builder::new_current_thread()
            .enable_all()
            .on_thread_park(access_log::flush)
            .build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name(format!("pinproxy-worker-{index}"))
            .spawn(move || {
                CURRENT.with(|c| c.set(index));
                access_log::batch_on_this_thread();
                runtime.block_on(async {
                    let _ = stopped.await;
                });
                runtime.shutdown_timeout(Duration::from_millis(100));
                access_log::flush();
            })?;
        self.handles.push(handle);
        self._stop.push(stop);
        Ok(())
    }

    /// Runs `task` on the next worker.
    pub fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        if self.handles.is_empty() {
            tokio::spawn(task);
            return;
        }
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len();
        self.handles[index].spawn(task);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connections_are_dealt_to_the_workers_in_turn() {
        let workers = Workers::start(2);
        let mut seen = Vec::new();
        for _ in 0..4 {
            let (tx, rx) = oneshot::channel();
            workers.spawn(async move {
                let name = std::thread::current().name().map(String::from);
                let _ = tx.send((current(), name));
            });
            seen.push(rx.await.unwrap());
        }
        let names = |i: usize| Some(format!("pinproxy-worker-{i}"));
        assert_eq!(
            seen,
            vec![(0, names(0)), (1, names(1)), (0, names(0)), (1, names(1))]
        );
    }

    #[tokio::test]
    async fn with_no_worker_the_caller_runs_the_connection() {
        let workers = Workers::start(0);
        let (tx, rx) = oneshot::channel();
        workers.spawn(async move {
            let _ = tx.send(std::thread::current().name().map(String::from));
        });
        let name = rx.await.unwrap().unwrap_or_default();
        assert!(!name.starts_with("pinproxy-worker"), "{name}");
    }
}
