//! The admin endpoint: `/healthz`, `/readyz` and `/metrics` in plain HTTP on
//! their own (loopback) port, for systemd health checks, Kubernetes probes and
//! Prometheus, and the status page (`/`, `/status`) for people. It never
//! forwards anything.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{
    HeaderValue, ACCEPT, ALLOW, CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE,
    REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use crate::config::{AdminConfig, Listen};
use crate::http::access::{Decision, Policy};
use crate::http::idle::{self, Activity};
use crate::http::respond::ERROR_HEADER;
use crate::ops::status::Board;
use crate::platform::peer;
use crate::serve::listen::{Accepted, Listener};
use crate::telemetry::metrics::{self, Metrics};

/// Admin connections served at once. Probes and scrapes need few, but a
/// local process holding connections open must not crowd them out: each one
/// costs a few KiB, and is closed after [`ADMIN_IDLE`] without a request.
const MAX_ADMIN_CONNECTIONS: usize = 1024;

/// How long an admin connection may go without a request (from the first
/// byte on): probes and scrapes send theirs at once.
const ADMIN_IDLE: Duration = Duration::from_secs(5);

const STARTING: u8 = 0;
const READY: u8 = 1;
const DRAINING: u8 = 2;

/// What `/readyz` reports, shared between the service and the admin endpoint.
#[derive(Clone)]
pub struct Health {
    state: Arc<AtomicU8>,
    metrics: Arc<Metrics>,
}

impl Health {
    /// Starts "not ready": listeners are not bound yet.
    pub fn new(metrics: Arc<Metrics>) -> Health {
        Health {
            state: Arc::new(AtomicU8::new(STARTING)),
            metrics,
        }
    }

    /// Every listener is bound and the config is loaded.
    pub fn set_ready(&self) {
        self.state.store(READY, Ordering::SeqCst);
    }

    /// Shutting down: load balancers and Kubernetes should stop sending.
    pub fn set_draining(&self) {
        self.state.store(DRAINING, Ordering::SeqCst);
    }

    /// `ready`, `starting` or `draining`.
    fn readiness(&self) -> &'static str {
        match self.state.load(Ordering::SeqCst) {
            READY => "ready",
            DRAINING => "draining",
            _ => "starting",
        }
    }
}

/// A bound admin endpoint; serving stops when this is dropped.
pub struct Admin {
    local: Listen,
    task: JoinHandle<()>,
}

impl Admin {
    /// Binds `[admin] listen` and starts serving, to the clients its access
    /// rules admit (Host and cross-site checks as on every listener).
    pub async fn bind(
        config: &AdminConfig,
        health: Health,
        board: Arc<Board>,
    ) -> Result<Admin, String> {
        let addr = &config.listen;
        let socket = Listener::bind(addr).await.map_err(|e| {
            format!("cannot listen on {addr} for the admin endpoint ([admin] listen): {e}")
        })?;
        let local = socket.bound(addr);
        let policy = Arc::new(Policy::new(&local, &config.access, true));
        let task = tokio::spawn(accept_loop(socket, policy, health, board));
        Ok(Admin { local, task })
    }

    /// Where it listens (useful with port 0).
    pub fn local(&self) -> &Listen {
        &self.local
    }
}

impl Drop for Admin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(socket: Listener, policy: Arc<Policy>, health: Health, board: Arc<Board>) {
    let limit = Arc::new(Semaphore::new(MAX_ADMIN_CONNECTIONS));
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(ADMIN_IDLE);
    loop {
        let Ok(permit) = limit.clone().acquire_owned().await else {
            return;
        };
        let accepted = match socket.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "admin accept failed; retrying in 100 ms");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (health, policy, http) = (health.clone(), policy.clone(), http.clone());
        let board = board.clone();
        tokio::spawn(async move {
            match accepted {
                Accepted::Tcp(stream, peer) => {
                    let uid = policy
                        .needs_uid()
                        .then(|| peer::tcp_client(&stream, peer))
                        .flatten();
                    serve(stream, uid, &http, policy, (health, board)).await
                }
                Accepted::Unix(stream) => {
                    let uid = crate::serve::unix_socket::peer_uid(&stream);
                    serve(stream, uid, &http, policy, (health, board)).await
                }
            }
            drop(permit);
        });
    }
}

async fn serve<IO>(
    io: IO,
    uid: Option<u32>,
    http: &http1::Builder,
    policy: Arc<Policy>,
    (health, board): (Health, Arc<Board>),
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Activity::new();
    let busy = activity.clone();
    let service = service_fn(move |req| {
        let _busy = busy.begin();
        let answer = match policy.check(&req, uid) {
            Decision::Refuse(r) => {
                tracing::warn!(listener = "[admin]", reason = r.tag, seen = %crate::telemetry::access_log::printable(&r.seen), client_uid = uid, "admin request refused");
                let mut resp = Response::new(Full::new(Bytes::from(r.text)));
                *resp.status_mut() = r.status;
                resp.headers_mut()
                    .insert(ERROR_HEADER, HeaderValue::from_static(r.tag));
                resp
            }
            Decision::Forward(cors) => {
                let mut resp = respond(&health, &board, &req);
                cors.apply(resp.headers_mut());
                resp
            }
            // Nothing here is for web pages: a preflight gets no permissions.
            Decision::Preflight(_) => respond(&health, &board, &req),
        };
        async move { Ok::<_, Infallible>(answer) }
    });
    let conn = std::pin::pin!(http.serve_connection(TokioIo::new(io), service));
    let _ = idle::drive(
        conn,
        &activity,
        ADMIN_IDLE,
        idle::NO_PARKING,
        std::future::pending(),
    )
    .await;
}

fn respond(health: &Health, board: &Board, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut resp = text(
            StatusCode::METHOD_NOT_ALLOWED,
            "the admin endpoint only answers GET and HEAD\n",
        );
        resp.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return resp;
    }
    match req.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => match health.state.load(Ordering::SeqCst) {
            READY => text(StatusCode::OK, "ready\n"),
            DRAINING => text(
                StatusCode::SERVICE_UNAVAILABLE,
                "draining: shutting down, finishing in-flight requests\n",
            ),
            _ => text(StatusCode::SERVICE_UNAVAILABLE, "starting\n"),
        },
        "/" => page(
            board.status(health.readiness()).html(),
            "text/html; charset=utf-8",
        ),
        "/status" => page(
            board.status(health.readiness()).json(),
            "application/json",
        ),
        "/metrics" => {
            // OpenMetrics only when the scraper asks for it (Prometheus does);
            // anything else (curl, promtool, older agents) gets the classic format.
            let openmetrics = req
                .headers()
                .get_all(ACCEPT)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .any(|v| v.contains("application/openmetrics-text"));
            let (body, content_type) = if openmetrics {
                (health.metrics.encode(), metrics::OPENMETRICS)
            } else {
                (health.metrics.encode_classic(), metrics::CLASSIC)
            };
            let mut resp = Response::new(Full::new(Bytes::from(body)));
            resp.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
            resp
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found; the admin endpoint serves / (status page), /status (JSON), /healthz, /readyz and /metrics\n",
        ),
    }
}

/// The status page or its JSON: never cached, never framed, and (for the
/// page) nothing loaded or run but its own inline style.
fn page(body: String, content_type: &'static str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    let headers = resp.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
        ),
    );
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    resp
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}
