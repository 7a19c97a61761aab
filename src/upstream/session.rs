//! Brokered Check Point sessions (`[upstream.session]`): pinproxy logs in to
//! the management API with a credential the tools behind it never see, hands
//! the session to their requests, keeps it alive while a request runs, and
//! logs out when it sits idle and at shutdown. With `allowed_users` each local
//! user gets a session of their own, so their locks and unpublished changes
//! never mix. The sid never leaves this module but as the header it is sent in
//! (marked sensitive); logs, the status page and the audit trail name a
//! session by a short hash of it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE, HOST};
use http::{Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Limited};
use sha2::Digest;

use crate::config::{Credentials, SessionConfig};
use crate::telemetry::metrics::SessionRecord;

use super::{RequestBody, Upstream, UpstreamError};

/// The header a Check Point session travels in.
pub const SID_HEADER: &str = "x-chkp-sid";

/// What a management API answers, at most, to a login or a session error.
const MAX_ANSWER: usize = 64 * 1024;

/// A session held for one user (or for the listener).
#[derive(Clone)]
pub struct Held {
    /// The sid, as the header value it is sent in.
    pub sid: HeaderValue,
    /// A short hash of the sid: how logs and the audit trail name it.
    pub tag: String,
    since: SystemTime,
}

#[derive(Default)]
struct Slot {
    held: tokio::sync::Mutex<Option<Held>>,
    /// The start or end of the last request, or the last keepalive.
    last_use: Mutex<Option<Instant>>,
    in_flight: std::sync::atomic::AtomicUsize,
}

/// The sessions of one upstream.
pub struct Broker {
    cfg: SessionConfig,
    slots: Mutex<HashMap<Holder, Arc<Slot>>>,
}

/// A request's hold on its session: counts it in flight until dropped.
pub struct InUse {
    slot: Arc<Slot>,
    /// The session the request carries.
    pub held: Held,
}

impl Drop for InUse {
    fn drop(&mut self) {
        self.slot
            .in_flight
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        *self.slot.last_use.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
    }
}

/// Whose session: the local user where the kernel says who it is, else the
/// client certificate's first name (a TLS listener), else the listener's one.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Holder {
    /// The client's uid.
    pub uid: Option<u32>,
    /// The first name of the client's certificate.
    pub client: Option<String>,
}

impl Holder {
    /// The holder of a request from `uid` with certificate `names`: by uid
    /// first, so one user keeps one session however they connect.
    pub fn of(uid: Option<u32>, names: Option<&[String]>) -> Holder {
        Holder {
            uid,
            client: uid
                .is_none()
                .then(|| names.and_then(|n| n.first().cloned()))
                .flatten(),
        }
    }
}

fn key(user: &Holder) -> String {
    match (user.uid, &user.client) {
        // The number, not a name: a key must differ for every user (on Windows
        // two accounts can both be without a name).
        (Some(uid), _) => format!("uid {uid}"),
        (None, Some(name)) => format!("client {name}"),
        (None, None) => "listener".to_string(),
    }
}

/// Whether a Check Point error answer says the session is wrong or gone: the
/// server did not run the request, so it may be sent again on a new session.
pub fn is_session_error(status: StatusCode, body: &[u8]) -> bool {
    if !matches!(status.as_u16(), 400 | 401 | 403) {
        return false;
    }
    let code = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["code"].as_str().map(str::to_string))
        .unwrap_or_default();
    matches!(
        code.as_str(),
        "generic_err_wrong_session_id"
            | "generic_err_invalid_session_id"
            | "generic_err_session_expired"
    )
}

/// Whether a request is the tool's own login or logout, which pass unchanged.
pub fn is_own_login(path: &str) -> bool {
    matches!(
        path.rsplit('/').find(|s| !s.is_empty()),
        Some("login" | "logout" | "login-with-api-key")
    )
}

impl Broker {
    /// The broker for `cfg`; nothing logs in until a request needs it.
    pub fn new(cfg: SessionConfig) -> Broker {
        Broker {
            cfg,
            slots: Mutex::default(),
        }
    }

    fn slot(&self, user: &Holder) -> Arc<Slot> {
        self.slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(user.clone())
            .or_default()
            .clone()
    }

    /// The session for `user`, logging in first if none is held.
    pub async fn session(
        &self,
        upstream: &Upstream,
        user: &Holder,
    ) -> Result<InUse, UpstreamError> {
        let slot = self.slot(user);
        slot.in_flight
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        *slot.last_use.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        let guard = InUse {
            slot: slot.clone(),
            held: Held {
                sid: HeaderValue::from_static(""),
                tag: String::new(),
                since: SystemTime::now(),
            },
        };
        let mut held = slot.held.lock().await;
        let session = match held.as_ref() {
            Some(h) => h.clone(),
            None => {
                let h = self.login(upstream, user).await?;
                *held = Some(h.clone());
                h
            }
        };
        drop(held);
        let mut guard = guard;
        guard.held = session;
        Ok(guard)
    }

    /// Forgets `stale` (the server said it is wrong or expired), unless
    /// another request already replaced it.
    pub async fn invalidate(&self, user: &Holder, stale: &Held) {
        let slot = self.slot(user);
        let mut held = slot.held.lock().await;
        if held.as_ref().is_some_and(|h| h.tag == stale.tag) {
            tracing::info!(session = %stale.tag, user = %key(user), "the management server says the brokered session is wrong or expired; logging in again");
            *held = None;
        }
    }

    async fn login(&self, upstream: &Upstream, user: &Holder) -> Result<Held, UpstreamError> {
        let mut body = serde_json::Map::new();
        let secret = match &self.cfg.credentials {
            Credentials::ApiKey(key) => {
                body.insert("api-key".into(), key.expose().into());
                key.expose()
            }
            Credentials::User { user, password } => {
                body.insert("user".into(), user.clone().into());
                body.insert("password".into(), password.expose().into());
                password.expose()
            }
        };
        if let Some(domain) = &self.cfg.domain {
            body.insert("domain".into(), domain.clone().into());
        }
        if self.cfg.read_only {
            body.insert("read-only".into(), true.into());
        }
        body.insert("session-timeout".into(), self.cfg.timeout.as_secs().into());
        let body = Bytes::from(serde_json::Value::Object(body).to_string());
        let (status, answer) = call(upstream, "login", None, body).await.inspect_err(|e| {
            self.note(upstream, user, None, Some(e.to_string()));
        })?;
        let parsed: serde_json::Value = serde_json::from_slice(&answer).unwrap_or_default();
        let sid = parsed["sid"].as_str().filter(|_| status == StatusCode::OK);
        let Some(sid) = sid.and_then(|s| HeaderValue::from_str(s).ok()) else {
            // The server's own words, minus anything that could be the secret.
            let said = parsed["message"]
                .as_str()
                .unwrap_or("no sid in the answer")
                .replace(secret, "[redacted]");
            let reason =
                format!("the login pinproxy makes for this listener failed ({status}): {said}");
            self.note(upstream, user, None, Some(reason.clone()));
            return Err(UpstreamError::Protocol {
                address: upstream.address().to_string(),
                reason,
                closed_early: false,
            });
        };
        let mut sid = sid;
        sid.set_sensitive(true);
        let tag: String = sha2::Sha256::digest(sid.as_bytes())[..4]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let held = Held {
            sid,
            tag,
            since: SystemTime::now(),
        };
        tracing::info!(upstream = %upstream.name, user = %key(user), session = %held.tag, read_only = self.cfg.read_only, "logged in to the management API for this listener's clients");
        self.note(upstream, user, Some(&held), None);
        Ok(held)
    }

    fn note(&self, upstream: &Upstream, user: &Holder, held: Option<&Held>, error: Option<String>) {
        upstream.metrics().session(
            &key(user),
            SessionRecord {
                uid: user.uid,
                held: held.is_some(),
                since: held.map(|h| unix(h.since)),
                tag: held.map(|h| h.tag.clone()),
                last_error: error,
            },
        );
    }

    /// Keeps sessions with a request in flight alive and logs out those idle
    /// for half the server's timeout; called every few seconds.
    pub async fn maintain(&self, upstream: &Upstream) {
        let slots: Vec<(Holder, Arc<Slot>)> = self
            .slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (user, slot) in slots {
            let busy = slot.in_flight.load(std::sync::atomic::Ordering::SeqCst) > 0;
            let idle = slot
                .last_use
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .map_or(Duration::ZERO, |t| t.elapsed());
            let mut held = slot.held.lock().await;
            let Some(h) = held.clone() else { continue };
            if busy && idle >= self.cfg.timeout / 3 {
                // A request has run long (publish, install-policy): the server
                // counts time since the last call, so one is made for it.
                let _ = call(
                    upstream,
                    "keepalive",
                    Some(&h.sid),
                    Bytes::from_static(b"{}"),
                )
                .await;
                *slot.last_use.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
            } else if !busy && idle >= self.cfg.timeout / 2 {
                let _ = call(upstream, "logout", Some(&h.sid), Bytes::from_static(b"{}")).await;
                tracing::info!(upstream = %upstream.name, user = %key(&user), session = %h.tag, "logged out of the idle brokered session");
                *held = None;
                self.note(upstream, &user, None, None);
            }
        }
    }

    /// Logs out of every session (at shutdown).
    pub async fn logout_all(&self, upstream: &Upstream) {
        let slots: Vec<(Holder, Arc<Slot>)> = self
            .slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .collect();
        for (user, slot) in slots {
            if let Some(h) = slot.held.lock().await.take() {
                // After the drain, a pooled connection may belong to a stopped
                // worker and fail; the second try makes a new one.
                for _ in 0..2 {
                    let out =
                        call(upstream, "logout", Some(&h.sid), Bytes::from_static(b"{}")).await;
                    if out.is_ok() {
                        break;
                    }
                }
                tracing::info!(upstream = %upstream.name, user = %key(&user), session = %h.tag, "logged out of the brokered session");
                self.note(upstream, &user, None, None);
            }
        }
    }
}

fn unix(t: SystemTime) -> i64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// One management API call of pinproxy's own: status and (bounded) answer.
async fn call(
    upstream: &Upstream,
    command: &str,
    sid: Option<&HeaderValue>,
    body: Bytes,
) -> Result<(StatusCode, Bytes), UpstreamError> {
    let path: Uri = format!("/web_api/{command}")
        .parse()
        .map_err(|_| UpstreamError::Protocol {
            address: upstream.address().to_string(),
            reason: "bad command".into(),
            closed_early: false,
        })?;
    let uri = upstream
        .uri_for(&path)
        .map_err(|e| UpstreamError::Protocol {
            address: upstream.address().to_string(),
            reason: e.to_string(),
            closed_early: false,
        })?;
    let mut req = Request::new(RequestBody::full(body));
    *req.method_mut() = Method::POST;
    *req.uri_mut() = uri;
    let headers = req.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Ok(host) = upstream.host_header() {
        headers.insert(HOST, host.clone());
    }
    if let Some(sid) = sid {
        headers.insert(SID_HEADER, sid.clone());
    }
    let resp = upstream.send(req).await?;
    let status = resp.status();
    let answer = Limited::new(resp.into_body(), MAX_ANSWER)
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    Ok((status, answer))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_user_or_client_certificate_holds_its_own_session() {
        let names = ["alice".to_string(), "alice.example".to_string()];
        let by_uid = Holder::of(Some(1001), Some(&names));
        assert_eq!(
            (key(&by_uid), by_uid.client),
            ("uid 1001".to_string(), None)
        );
        let by_cert = Holder::of(None, Some(&names));
        assert_eq!(key(&by_cert), "client alice");
        assert_ne!(by_cert, Holder::of(None, Some(&["bob".to_string()])));
        assert_eq!(key(&Holder::of(None, None)), "listener");
    }
}
