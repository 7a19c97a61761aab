//! A small imitation of a Check Point management API over HTTPS with a
//! self-signed certificate: what `pinproxy demo` puts behind the proxy.
//!
//! `POST /web_api/login` with `{"user":"admin","password":"demo"}` (or
//! `{"api-key": API_KEY}`) answers a `sid`;
//! every other `/web_api/<command>` needs header `X-chkp-sid` with a live sid.
//! Answers are JSON, errors use the API's `{"code","message"}` shape.

use std::collections::HashSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// The demo's user name.
pub const USER: &str = "admin";
/// The demo's password.
pub const PASSWORD: &str = "demo";
/// The demo's API key (`"api-key"` in the login body).
pub const API_KEY: &str = "demo-api-key-0123456789";

/// The sessions the mock knows, and what was asked of it: tests look here to
/// see what a client (or pinproxy's session broker) did.
#[derive(Default)]
pub struct Sessions {
    live: Mutex<HashSet<String>>,
    /// Every accepted login body, the secret fields left out.
    logins: Mutex<Vec<Value>>,
    /// `(sid, command)` of every call with a session, in order.
    calls: Mutex<Vec<(String, String)>>,
}

impl Sessions {
    /// Ends every session, as a server restart or a timeout would.
    pub fn expire_all(&self) {
        self.live.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// How many sessions are open.
    pub fn live(&self) -> usize {
        self.live.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// The login bodies accepted so far (without password or api-key).
    pub fn logins(&self) -> Vec<Value> {
        self.logins
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// `(sid, command)` of every call made with a session so far.
    pub fn calls(&self) -> Vec<(String, String)> {
        self.calls.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Serves the mock API on `listener` with `tls` until the task is dropped.
pub async fn serve(listener: TcpListener, tls: Arc<rustls::ServerConfig>) {
    serve_with(listener, tls, Arc::new(Sessions::default())).await
}

/// [`serve`], keeping its sessions in `sessions`.
pub async fn serve_with(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    sessions: Arc<Sessions>,
) {
    let acceptor = TlsAcceptor::from(tls);
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let acceptor = acceptor.clone();
        let sessions = sessions.clone();
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let service = service_fn(move |req| {
                let sessions = sessions.clone();
                async move { Ok::<_, Infallible>(answer(&sessions, req).await) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(tls), service)
                .await;
        });
    }
}

/// Binds `addr` and serves the mock API in the background; returns the bound address.
pub async fn spawn(
    addr: SocketAddr,
    tls: Arc<rustls::ServerConfig>,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(serve(listener, tls));
    Ok(bound)
}

/// [`spawn`], with the sessions handle a test inspects.
pub async fn spawn_with_sessions(
    addr: SocketAddr,
    tls: Arc<rustls::ServerConfig>,
) -> std::io::Result<(SocketAddr, Arc<Sessions>)> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let sessions = Arc::new(Sessions::default());
    tokio::spawn(serve_with(listener, tls, sessions.clone()));
    Ok((bound, sessions))
}

async fn answer(sessions: &Sessions, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    let Some(command) = path
        .strip_prefix("/web_api/")
        .map(|rest| rest.rsplit('/').next().unwrap_or(rest).to_string())
    else {
        return error(
            StatusCode::NOT_FOUND,
            "generic_err_object_not_found",
            "Requested object not found",
        );
    };
    if req.method() != Method::POST {
        return error(
            StatusCode::METHOD_NOT_ALLOWED,
            "generic_err_invalid_method",
            "Use POST",
        );
    }
    let sid = req
        .headers()
        .get("x-chkp-sid")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body: Value = match Limited::new(req.into_body(), 1 << 20).collect().await {
        Ok(collected) => match collected.to_bytes() {
            b if b.is_empty() => json!({}),
            b => match serde_json::from_slice(&b) {
                Ok(v) => v,
                Err(_) => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "generic_err_invalid_syntax",
                        "Request body is not valid JSON",
                    )
                }
            },
        },
        Err(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "generic_err_invalid_syntax",
                "Request body too large",
            )
        }
    };

    if command == "login" {
        let by_key = body["api-key"] == API_KEY;
        if !by_key && (body["user"] != USER || body["password"] != PASSWORD) {
            return error(
                StatusCode::BAD_REQUEST,
                "err_login_failed",
                "Authentication to server failed.",
            );
        }
        let sid = random_hex(16);
        sessions
            .live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(sid.clone());
        let mut seen = body.clone();
        if let Some(fields) = seen.as_object_mut() {
            fields.remove("password");
            fields.remove("api-key");
        }
        sessions
            .logins
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(seen);
        return ok(json!({
            "sid": sid,
            "url": "https://127.0.0.1:443/web_api",
            "uid": random_hex(8),
            "session-timeout": 600,
            "api-server-version": "1.9",
        }));
    }

    let Some(sid) = sid else {
        return error(
            StatusCode::UNAUTHORIZED,
            "generic_err_missing_session_id",
            "Missing header: [X-chkp-sid]",
        );
    };
    let live = sessions
        .live
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .contains(&sid);
    if !live {
        return error(
            StatusCode::UNAUTHORIZED,
            "generic_err_wrong_session_id",
            "Wrong session id [X-chkp-sid]",
        );
    }
    sessions
        .calls
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push((sid.clone(), command.clone()));
    match command.as_str() {
        "keepalive" => ok(json!({"message": "OK"})),
        "logout" => {
            sessions
                .live
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&sid);
            ok(json!({"message": "OK"}))
        }
        "show-hosts" => {
            let all: Vec<Value> = (1..=5)
                .map(|i| json!({"name": format!("host-{i}"), "type": "host", "ipv4-address": format!("192.0.2.{i}")}))
                .collect();
            let offset = body["offset"].as_u64().unwrap_or(0).min(5) as usize;
            let limit = body["limit"].as_u64().unwrap_or(50) as usize;
            let page: Vec<Value> = all.iter().skip(offset).take(limit).cloned().collect();
            ok(
                json!({"objects": page, "from": offset + 1, "to": offset + page.len(), "total": all.len()}),
            )
        }
        "show-session" => ok(json!({"user-name": USER, "state": "open", "expired-session": false})),
        "publish" | "install-policy" => ok(json!({"task-id": random_hex(8)})),
        "show-task" => ok(json!({"tasks": [{"status": "succeeded", "progress-percentage": 100}]})),
        _ => error(
            StatusCode::NOT_FOUND,
            "generic_err_command_not_found",
            "Unknown command",
        ),
    }
}

fn ok(body: Value) -> Response<Full<Bytes>> {
    json_response(StatusCode::OK, body)
}

fn error(status: StatusCode, code: &str, message: &str) -> Response<Full<Bytes>> {
    json_response(status, json!({"code": code, "message": message}))
}

fn json_response(status: StatusCode, body: Value) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        "content-type",
        http::HeaderValue::from_static("application/json"),
    );
    resp.headers_mut()
        .insert("server", http::HeaderValue::from_static("CPWS"));
    resp
}

fn random_hex(bytes: usize) -> String {
    use ring::rand::SecureRandom;
    let mut buf = vec![0u8; bytes];
    // The system RNG only fails on broken platforms; a fixed sid is harmless in a demo.
    let _ = ring::rand::SystemRandom::new().fill(&mut buf);
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// A self-signed certificate and a TLS server config that presents it.
pub struct SelfSigned {
    /// The DER certificate (what pins are computed over).
    pub cert: rustls::pki_types::CertificateDer<'static>,
    /// A server config presenting `cert`.
    pub server_config: Arc<rustls::ServerConfig>,
}

/// Generates a fresh ECDSA P-256 self-signed certificate for `names`.
pub fn self_signed(names: &[&str]) -> Result<SelfSigned, String> {
    let generated =
        rcgen::generate_simple_self_signed(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .map_err(|e| format!("cannot generate a certificate: {e}"))?;
    let cert = generated.cert.der().clone();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(generated.key_pair.serialize_der().into());
    let server_config =
        rustls::ServerConfig::builder_with_provider(Arc::new(crate::tls::signature::provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_no_client_auth()
            .with_single_cert(vec![cert.clone()], key)
            .map_err(|e| format!("cannot use the generated certificate: {e}"))?;
    Ok(SelfSigned {
        cert,
        server_config: Arc::new(server_config),
    })
}
