//! The accept loops of one listener: one per worker, each on its own socket
//! or descriptor of the socket, at most `max_client_connections` served at a
//! time, each accepted connection served on the worker that accepted it.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{watch, Semaphore, TryAcquireError};
use tokio::task::JoinHandle;

use crate::config::{Access, Limits, Listen};
use crate::http::access::Policy;
use crate::http::tunnel::Tunnels;
use crate::platform::in_place::boxed;
use crate::platform::peer;
use crate::serve::listen::{Accepted, OwnedListener as Socket, SharedListener};
use crate::tls::listener::client_names;

use super::connection::{serve, ConnContext, Drain, Protocols, Target};

/// A running accept loop on one socket, and the rules its clients are held to
/// (swapped by a reload like the upstream).
pub(super) struct Acceptor {
    pub(super) local: Listen,
    pub(super) policy: Arc<ArcSwap<Policy>>,
    pub(super) stop: watch::Sender<bool>,
    /// One accept loop per worker, each on its own socket or descriptor of `socket`.
    pub(super) loops: Vec<JoinHandle<()>>,
    /// Owns the socket (and its file); closed once the loops are done.
    pub(super) socket: Socket,
}

impl Acceptor {
    /// Applies a reload's rules to the next request, and a changed socket
    /// mode or group to the file at once.
    pub(super) fn update(&self, listen: &Listen, access: &Access, check_host: bool) {
        if let Listen::Unix(socket) = listen {
            if let Err(e) = self.socket.apply_permissions(socket) {
                tracing::error!(listen = %listen, error = %e, "cannot apply socket_mode / socket_group; the socket keeps its old permissions");
            }
        }
        let policy = Policy::new(&self.local, access, check_host);
        self.policy.store(Arc::new(policy));
    }

    /// Stops accepting and closes the socket; open connections carry on until
    /// they finish or the drain ends them.
    pub(super) async fn close(self) {
        self.stop.send_replace(true);
        for accept_loop in self.loops {
            let _ = accept_loop.await;
        }
        drop(self.socket);
    }
}

/// What the accept loops of one proxy share.
pub(super) struct LoopContext {
    pub(super) drain: Arc<Drain>,
    pub(super) tunnels: Tunnels,
    pub(super) limits: Arc<Limits>,
}

/// What the accept loops of one listener (one per worker) share.
pub(super) struct AcceptShared {
    /// What its connections share.
    pub(super) conn: Arc<ConnContext>,
    pub(super) connections: Gauge,
    /// `max_client_connections` of this listener.
    pub(super) limit: Arc<Semaphore>,
}

impl AcceptShared {
    pub(super) fn new(
        target: Target,
        policy: Arc<ArcSwap<Policy>>,
        connections: Gauge,
        context: LoopContext,
    ) -> AcceptShared {
        let limits = &context.limits;
        // HTTP/1.1 (with upgrades, for WebSocket) and, for clients that speak it,
        // HTTP/2 with prior knowledge on the same port.
        let mut http1 = http1::Builder::new();
        // No timer for hyper: `header_read_timeout` is kept by `http::idle`, which
        // closes a connection that has not been running a request for that long
        // (a head sent slowly included); hyper's own would arm a second timer for
        // every request (~1.1k instructions each).
        http1
            .header_read_timeout(None)
            .max_buf_size(limits.max_header_bytes)
            .max_headers(limits.max_headers)
            // A script that writes its request and then closes its sending side
            // (`printf … | socat - UNIX-CONNECT:…`, `nc -N`) still gets the answer.
            .half_close(true)
            .keep_alive(true);
        let mut http2 = http2::Builder::new(TokioExecutor::new());
        http2
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
            .max_concurrent_streams(limits.max_concurrent_streams)
            // The idle limit (see `idle`) closes a connection with no stream open;
            // these pings find a dead peer while a long request is in progress.
            .keep_alive_interval(limits.header_read_timeout);
        let limit = Arc::new(Semaphore::new(limits.max_client_connections));
        let in_flight = Arc::new(Semaphore::new(limits.max_requests_in_flight));
        let LoopContext {
            drain,
            tunnels,
            limits,
        } = context;
        AcceptShared {
            conn: Arc::new(ConnContext {
                http: Protocols { http1, http2 },
                target,
                policy,
                tunnels,
                limits,
                in_flight,
                open: drain,
            }),
            connections,
            limit,
        }
    }
}

/// One worker's accept loop on its own socket or descriptor of a listening
/// socket: the connections it accepts are served on this worker, registered
/// with its reactor from the start. (Handing each connection from one
/// accepting runtime to a worker cost two `epoll_ctl` calls and a cross-thread
/// wake-up apiece.)
pub(super) async fn accept_loop(
    descriptor: std::io::Result<SharedListener>,
    shared: Arc<AcceptShared>,
    mut stop: watch::Receiver<bool>,
) {
    let socket = match descriptor.and_then(SharedListener::register) {
        Ok(socket) => socket,
        Err(e) => {
            tracing::error!(error = %e, "a connection worker cannot accept on this listener; the others still do");
            return;
        }
    };
    let AcceptShared {
        conn: context,
        connections,
        limit,
    } = &*shared;
    // One wait for the stop, made once: a new one per connection registered
    // and unregistered a waiter on the shared channel every time.
    let stopped = stop.changed();
    tokio::pin!(stopped);
    loop {
        let accepted = tokio::select! {
            _ = &mut stopped => return,
            accepted = socket.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // EMFILE and friends: wait a little for descriptors to free up
                    // instead of spinning on an accept that keeps failing.
                    tracing::warn!(error = %e, "accept failed; retrying in 100 ms");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        // Accepted first, then a slot waited for: each worker has a socket of
        // its own (`reuse_port`), and a loop that took the last free slot before
        // accepting would wait on its own empty socket while a client queued on
        // another worker's waited for that slot. So a listener at its limit
        // holds at most one more connection per worker, not yet read from.
        let permit = match limit.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(TryAcquireError::Closed) => return,
            Err(TryAcquireError::NoPermits) => tokio::select! {
                _ = &mut stopped => return,
                permit = limit.clone().acquire_owned() => match permit {
                    Ok(p) => p,
                    Err(_) => return,
                },
            },
        };
        let context = context.clone();
        let (draining, open) = (context.open.track(), connections.clone());
        open.inc();
        tokio::spawn(async move {
            match accepted {
                Accepted::Tcp(stream, peer) => {
                    // On Linux it came with the listening socket (`register`).
                    #[cfg(not(target_os = "linux"))]
                    let _ = stream.set_nodelay(true);
                    let policy = context.policy.load_full();
                    let uid = policy
                        .needs_uid()
                        .then(|| peer::tcp_client(&stream, peer))
                        .flatten();
                    match policy.tls() {
                        // Boxed, as the other kinds: the task's future is then a
                        // few hundred bytes. tokio copies it five times on the way
                        // into its cell and three when it ends, 1.4k instructions
                        // per connection at its full 1.5 KB.
                        None => {
                            boxed(|| serve(stream, (uid, Some(peer), None), context, draining))
                                .await
                        }
                        // Boxed: a TLS handshake and stream are ~8 KB, and the task of
                        // every plain connection would otherwise keep room for them.
                        Some(tls) => {
                            let acceptor = tokio_rustls::TlsAcceptor::from(tls.clone());
                            boxed(|| async move {
                                // Bounded like a request head: a client that never
                                // finishes its handshake holds nothing for long.
                                let limit = context.limits.header_read_timeout;
                                match tokio::time::timeout(limit, acceptor.accept(stream)).await {
                                    Ok(Ok(tls)) => {
                                        let names: Option<Arc<[String]>> = tls
                                            .get_ref()
                                            .1
                                            .peer_certificates()
                                            .and_then(|chain| chain.first())
                                            .map(|leaf| client_names(leaf.as_ref()).into());
                                        serve(tls, (uid, Some(peer), names), context, draining).await
                                    }
                                    Ok(Err(e)) => {
                                        tracing::debug!(client = %peer, error = %e, "TLS handshake with a client failed (no or a wrong client certificate?)");
                                    }
                                    Err(_) => {
                                        tracing::debug!(client = %peer, "a client did not finish its TLS handshake in header_read_timeout");
                                    }
                                }
                            })
                            .await
                        }
                    }
                }
                Accepted::Unix(stream) => {
                    let uid = crate::serve::unix_socket::peer_uid(&stream);
                    // Boxed for the same reason as TLS.
                    boxed(|| serve(stream, (uid, None, None), context, draining)).await
                }
            }
            open.dec();
            drop(permit);
        });
    }
}
