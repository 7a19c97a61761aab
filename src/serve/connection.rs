//! One client connection: HTTP/1.1 (with upgrades) or HTTP/2 on it, each
//! request checked against the listener's limits and forwarded to its target
//! (one upstream, or routed by host), until the client closes, the idle timer
//! ends it, or the drain does.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use http::{Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{watch, Semaphore};

use crate::config::Limits;
use crate::http::access::{Client, Policy};
use crate::http::forward;
use crate::http::idle::{self, Activity};
use crate::http::logged_body::LoggedBody;
use crate::http::proxy_mode::{self, Routes};
use crate::http::rapid_reset;
use crate::http::sniff::{self, Protocol};
use crate::http::tunnel::Tunnels;
use crate::platform::in_place::boxed;
use crate::upstream::Upstream;

/// What a listener's requests go to.
#[derive(Clone)]
pub(super) enum Target {
    /// One upstream (a dedicated listener).
    Upstream(Arc<ArcSwap<Upstream>>),
    /// Any configured upstream, chosen by host (the `[proxy]` listener).
    Routes(Arc<ArcSwap<Routes>>),
}

/// Serves one client connection (on a worker) until it closes or, on shutdown,
/// its in-flight requests end.
pub(super) async fn serve<IO>(
    io: IO,
    (uid, peer, identity): (Option<u32>, Option<SocketAddr>, Option<Arc<[String]>>),
    context: Arc<ConnContext>,
    mut drain: Draining,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Activity::new();
    let idle_limit = context.limits.header_read_timeout;
    let park_after = context.limits.release_idle_buffers_after;
    let idle = activity.clone();
    let shared = context.clone();
    // Each request reads the current upstream (or routes) and rules, so a
    // reload applies to the next request even on a kept-alive client connection.
    let service = service_fn(move |req: Request<Incoming>| {
        let busy = activity.begin();
        // One reference count for what the listener's connections share:
        // each is a cache line both workers write.
        let context = shared.clone();
        let client = Client {
            uid,
            peer,
            identity: identity.clone(),
            policy: context.policy.load_full(),
            activity: activity.clone(),
        };
        // Taken now, not awaited: a listener at its cap answers at once.
        let slot = context.in_flight.clone().try_acquire_owned();
        // Boxed: hyper keeps room for one service future in every connection,
        // idle or not, and this one is 4.2 KB; boxed, an idle connection keeps 16
        // bytes and a request allocates what it needs while it runs.
        boxed(move || async move {
            let ConnContext {
                target,
                tunnels,
                limits,
                ..
            } = &*context;
            let upstream = match (slot.is_ok(), h2_headers_over(&req, limits)) {
                (_, Some(refusal)) => Err(Box::new(local_refusal(target, &req, &client, refusal))),
                (false, None) => Err(Box::new(local_refusal(
                    target,
                    &req,
                    &client,
                    too_busy(limits),
                ))),
                (true, None) => match target {
                    Target::Upstream(up) => Ok(up.load_full()),
                    Target::Routes(routes) => proxy_mode::route(&routes.load(), &req, &client),
                },
            };
            // One await for both kinds of listener: the future has room for one
            // forwarding, not two.
            let mut response = match upstream {
                Ok(up) => forward::handle(&up, req, tunnels, limits, &client).await,
                Err(answer) => *answer,
            };
            response.body_mut().hold(busy, slot.ok());
            Ok::<_, Infallible>(response)
        })
    });
    // The first bytes say which protocol; the idle limit and the drain apply
    // while they are awaited, as to a request head.
    let sniffed = tokio::select! {
        biased;
        sniffed = sniff::sniff(io) => sniffed,
        () = idle.idle_for(idle_limit) => return,
        () = drain.signalled() => return,
    };
    let ended = match sniffed {
        Ok((Protocol::Http1, io)) => {
            let open_now = || context.open.open();
            let timers = (
                idle_limit,
                park_after,
                &open_now as &(dyn Fn() -> usize + Sync),
            );
            // Boxed apart from the connection's own future: each is then under
            // 1 KiB, which glibc serves from its per-thread cache.
            boxed(|| {
                super::park::serve(&context.http.http1, io, service, &idle, timers, &mut drain)
            })
            .await
        }
        Ok((Protocol::Http2, io)) => {
            // Boxed: the task of every HTTP/1 connection would otherwise keep room
            // for HTTP/2's larger state.
            let mut conn = Box::pin(
                context
                    .http
                    .http2
                    .serve_connection(TokioIo::new(io), service),
            );
            idle::drive(
                conn.as_mut(),
                &idle,
                idle_limit,
                idle::NO_PARKING,
                drain.signalled(),
            )
            .await
        }
        Err(e) => {
            tracing::debug!(error = %e, "client connection ended before its first request");
            return;
        }
    };
    // On drain an idle HTTP/1.1 connection closes at once, a busy one after its
    // response; HTTP/2 gets a GOAWAY.
    match ended {
        Some(Err(e)) if rapid_reset::is_rapid_reset(&e) => rapid_reset::note(),
        Some(Err(e)) => tracing::debug!(error = %e, "client connection ended with an error"),
        Some(Ok(())) => {}
        None => tracing::debug!("client connection closed: idle, and it did not close when asked"),
    }
}

/// How client connections are served, per protocol.
pub(super) struct Protocols {
    pub(super) http1: http1::Builder,
    pub(super) http2: http2::Builder<TokioExecutor>,
}

/// Tells every open client connection to finish (after its in-flight request)
/// and waits until all have.
#[derive(Default)]
pub(super) struct Drain {
    pub(super) signal: watch::Sender<bool>,
}

/// One open connection's end of [`Drain`]; dropping it says the connection is done.
pub(super) struct Draining(watch::Receiver<bool>);

impl Drain {
    pub(super) fn track(&self) -> Draining {
        Draining(self.signal.subscribe())
    }

    pub(super) fn open(&self) -> usize {
        self.signal.receiver_count()
    }

    pub(super) async fn finish(&self) {
        self.signal.send_replace(true);
        self.signal.closed().await;
    }
}

impl Draining {
    /// Resolves once the drain has begun.
    pub(super) async fn signalled(&mut self) {
        if self.0.wait_for(|&drain| drain).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// A refusal made here, before a request is routed.
pub(super) struct LocalRefusal {
    pub(super) status: StatusCode,
    pub(super) tag: &'static str,
    pub(super) text: String,
}

pub(super) fn local_refusal(
    target: &Target,
    req: &Request<Incoming>,
    client: &Client,
    r: LocalRefusal,
) -> Response<LoggedBody> {
    let (name, metrics) = match target {
        Target::Upstream(up) => {
            let up = up.load();
            (up.name.clone(), up.metrics().clone())
        }
        Target::Routes(routes) => {
            let routes = routes.load();
            (routes.name().clone(), routes.metrics().clone())
        }
    };
    // Counted and in the access log; a flood of these must not become a flood of WARN lines.
    forward::refuse(&name, &metrics, req, client, r.status, r.tag, r.text)
}

pub(super) fn too_busy(limits: &Limits) -> LocalRefusal {
    LocalRefusal {
        status: StatusCode::SERVICE_UNAVAILABLE,
        tag: "too-busy",
        text: format!(
            "pinproxy: this listener already has {} requests in progress (max_requests_in_flight); try again \
             shortly\n",
            limits.max_requests_in_flight
        ),
    }
}

/// HTTP/1 head limits are hyper's parser's; an HTTP/2 request arrives already
/// decoded, so the same limits are applied to it here.
pub(super) fn h2_headers_over(req: &Request<Incoming>, limits: &Limits) -> Option<LocalRefusal> {
    if req.version() != Version::HTTP_2 {
        return None;
    }
    let headers = req.headers();
    let count = headers.len();
    // As HTTP/2 counts a header list (RFC 9113 §6.5.2): name, value and 32 per field.
    let bytes: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 32)
        .sum();
    let what = if count > limits.max_headers {
        format!(
            "{count} header fields, more than max_headers ({})",
            limits.max_headers
        )
    } else if bytes > limits.max_header_bytes {
        format!(
            "{bytes} bytes of headers, more than max_header_bytes ({})",
            limits.max_header_bytes
        )
    } else {
        return None;
    };
    Some(LocalRefusal {
        status: StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        tag: "headers-too-large",
        text: format!("pinproxy: the request has {what}\n"),
    })
}

/// What serving a listener's client connections needs, shared by all of them
/// (one `Arc` per connection and per request, not one per field).
pub(super) struct ConnContext {
    pub(super) http: Protocols,
    pub(super) target: Target,
    pub(super) policy: Arc<ArcSwap<Policy>>,
    pub(super) tunnels: Tunnels,
    pub(super) limits: Arc<Limits>,
    /// `max_requests_in_flight` of the connection's listener.
    pub(super) in_flight: Arc<Semaphore>,
    /// The proxy's drain, here for its count of open client connections.
    pub(super) open: Arc<Drain>,
}
