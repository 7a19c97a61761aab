//! The listeners: bind every configured address up front, accept client
//! connections (a bounded number at a time), serve HTTP/1.1 keep-alive on each,
//! and drain in-flight requests on shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use crate::config::Config;
use crate::forward;
use crate::upstream::Upstream;

/// Client connections served at once per listener; more wait in the kernel's accept queue.
pub const MAX_CLIENT_CONNECTIONS: usize = 1024;
/// How long a client may take to send a request head.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// A listener could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr} for upstream {upstream:?}: {source}{hint}")]
pub struct BindError {
    /// The upstream whose listener failed.
    pub upstream: String,
    /// The configured address.
    pub addr: SocketAddr,
    /// The socket error.
    pub source: std::io::Error,
    hint: &'static str,
}

/// Bound listeners, ready to serve.
pub struct Proxy {
    listeners: Vec<(TcpListener, Arc<Upstream>)>,
    shutdown_timeout: Duration,
}

impl Proxy {
    /// Builds every upstream and binds every listener; fails before serving anything
    /// if one address cannot be bound.
    pub async fn bind(config: &Config) -> Result<Proxy, BindError> {
        let mut listeners = Vec::with_capacity(config.upstreams.len());
        for cfg in &config.upstreams {
            let tcp = TcpListener::bind(cfg.listen).await.map_err(|source| {
                let hint = match source.kind() {
                    std::io::ErrorKind::AddrInUse => {
                        " (another program, or another pinproxy, already listens there: stop it or choose another `listen` port)"
                    }
                    std::io::ErrorKind::PermissionDenied => {
                        " (ports below 1024 need privileges: choose a port above 1024)"
                    }
                    std::io::ErrorKind::AddrNotAvailable => {
                        " (this machine has no such address)"
                    }
                    _ => "",
                };
                BindError {
                    upstream: cfg.name.clone(),
                    addr: cfg.listen,
                    source,
                    hint,
                }
            })?;
            listeners.push((tcp, Arc::new(Upstream::new(cfg))));
        }
        Ok(Proxy {
            listeners,
            shutdown_timeout: config.shutdown_timeout,
        })
    }

    /// The bound address of each upstream's listener (useful with port 0).
    pub fn local_addrs(&self) -> Vec<(Arc<str>, SocketAddr)> {
        self.listeners
            .iter()
            .filter_map(|(tcp, up)| Some((up.name.clone(), tcp.local_addr().ok()?)))
            .collect()
    }

    /// Serves until `shutdown` completes, then stops accepting and lets in-flight
    /// requests finish for up to `shutdown_timeout`.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) {
        let graceful = Arc::new(GracefulShutdown::new());
        let (stop_tx, stop_rx) = watch::channel(());
        let mut accept_loops = JoinSet::new();
        for (tcp, upstream) in self.listeners {
            accept_loops.spawn(accept_loop(
                tcp,
                upstream,
                graceful.clone(),
                stop_rx.clone(),
            ));
        }
        drop(stop_rx);
        shutdown.await;

        let _ = stop_tx.send(());
        while accept_loops.join_next().await.is_some() {}
        // The accept loops held the only other references.
        let Ok(graceful) = Arc::try_unwrap(graceful) else {
            return;
        };
        let open = graceful.count();
        tracing::info!(
            open_connections = open,
            timeout = ?self.shutdown_timeout,
            "listeners closed; waiting for in-flight requests"
        );
        match tokio::time::timeout(self.shutdown_timeout, graceful.shutdown()).await {
            Ok(()) => tracing::info!("all connections finished"),
            Err(_) => tracing::warn!(
                timeout = ?self.shutdown_timeout,
                "shutdown_timeout passed; closing the remaining connections"
            ),
        }
    }
}

async fn accept_loop(
    tcp: TcpListener,
    upstream: Arc<Upstream>,
    graceful: Arc<GracefulShutdown>,
    mut stop: watch::Receiver<()>,
) {
    let limit = Arc::new(Semaphore::new(MAX_CLIENT_CONNECTIONS));
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .keep_alive(true);
    loop {
        let permit = tokio::select! {
            _ = stop.changed() => return,
            permit = limit.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let stream = tokio::select! {
            _ = stop.changed() => return,
            accepted = tcp.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(e) => {
                    // EMFILE and friends: wait a little for descriptors to free up
                    // instead of spinning on an accept that keeps failing.
                    tracing::warn!(upstream = %upstream.name, error = %e, "accept failed; retrying in 100 ms");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let up = upstream.clone();
        let service = service_fn(move |req| {
            let up = up.clone();
            async move { Ok::<_, Infallible>(forward::handle(&up, req).await) }
        });
        let conn = http.serve_connection(TokioIo::new(stream), service);
        let watched = graceful.watcher().watch(conn);
        tokio::spawn(async move {
            if let Err(e) = watched.await {
                tracing::debug!(error = %e, "client connection ended with an error");
            }
            drop(permit);
        });
    }
}
