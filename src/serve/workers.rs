//! Connection workers: one single-threaded tokio runtime per core.
//!
//! Every worker accepts on its own socket (`reuse_port`) or its own descriptor
//! of each listening socket, and a connection lives on the worker that
//! accepted it, with the upstream connections its requests use (each
//! `Upstream` keeps one idle list per worker), so a request is read, forwarded
//! and answered without crossing threads. On a shared work-stealing runtime the client connection, the pooled
//! upstream connection and the waker between them moved between threads; the
//! benchmark's keep-alive load cost 4.81 CPU seconds per 100k requests there,
//! 4.30 here.

use std::future::Future;
use std::io;
use std::time::Duration;

use tokio::runtime::{Builder, Handle};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::telemetry::access_log;

pub use crate::platform::worker::count;

/// The worker threads of one proxy. Dropping it stops them; a connection still
/// open then is closed.
pub struct Workers {
    handles: Vec<Handle>,
    /// Dropped with `Workers`, which ends each worker's `block_on`.
    _stop: Vec<oneshot::Sender<()>>,
}

impl Workers {
    /// Starts `n` workers. If the system refuses a thread, the proxy runs with
    /// the ones it got, or, with none, on the runtime that calls [`Workers::spawn`].
    pub fn start(n: usize) -> Workers {
        let mut workers = Workers {
            handles: Vec::with_capacity(n),
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
                crate::platform::worker::set_current(index);
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

    /// How many workers run (0 when none could be started).
    pub fn len(&self) -> usize {
        self.handles.len()
    }

    /// Runs the `i`-th of `tasks` on worker `i` (on the calling runtime when
    /// there is no worker) and returns their handles.
    pub fn spawn_each<F>(&self, tasks: impl IntoIterator<Item = F>) -> Vec<JoinHandle<()>>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        tasks
            .into_iter()
            .enumerate()
            .map(|(index, task)| match self.handles.get(index) {
                Some(handle) => handle.spawn(task),
                None => tokio::spawn(task),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn each_worker_runs_its_own_task() {
        let workers = Workers::start(2);
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let tasks = (0..2).map(|_| {
            let tx = tx.clone();
            async move {
                let name = std::thread::current().name().map(String::from);
                let _ = tx.send((crate::platform::worker::current(), name));
            }
        });
        for handle in workers.spawn_each(tasks) {
            handle.await.unwrap();
        }
        let mut seen = vec![rx.recv().await.unwrap(), rx.recv().await.unwrap()];
        seen.sort();
        let names = |i: usize| Some(format!("pinproxy-worker-{i}"));
        assert_eq!(seen, vec![(0, names(0)), (1, names(1))]);
    }

    #[tokio::test]
    async fn with_no_worker_the_caller_runs_the_connection() {
        let workers = Workers::start(0);
        let (tx, rx) = oneshot::channel();
        workers.spawn_each([async move {
            let _ = tx.send(std::thread::current().name().map(String::from));
        }]);
        let name = rx.await.unwrap().unwrap_or_default();
        assert!(!name.starts_with("pinproxy-worker"), "{name}");
    }
}
