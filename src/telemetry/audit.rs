//! The audit trail: one record per request on a listener that audits (one
//! with a command policy, or `audit = true`), separate from the access log:
//! who (uid and user name), on which listener, which method, path and API
//! command, whether it was forwarded or refused and why, status, bytes and
//! duration. Never a body or a header value. Records go to the log as target
//! `pinproxy::audit` and, with `audit_log`, to a JSON-lines file (created
//! 0600, reopened on every reload for logrotate). A failed write is an ERROR
//! and `pinproxy_audit_write_failures_total`, never a silent loss.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use prometheus_client::metrics::counter::Counter;

/// One request, as the audit trail keeps it.
#[derive(Debug)]
pub struct Record<'a> {
    /// The listener's upstream name.
    pub listener: &'a str,
    /// The local user behind the client, where the kernel said.
    pub uid: Option<u32>,
    /// The client's address (TCP listeners).
    pub client: Option<std::net::SocketAddr>,
    /// The request's method.
    pub method: &'a str,
    /// The path, escaped for a log, without the query (it may carry tokens).
    pub path: &'a str,
    /// `forwarded`, or `refused` with `reason`.
    pub forwarded: bool,
    /// pinproxy's own `X-Pinproxy-Error` reason, if it answered itself.
    pub reason: &'a str,
    /// The status the client got.
    pub status: u16,
    /// Response body bytes sent.
    pub bytes: u64,
    /// From the request to the end of its response.
    pub duration: Duration,
    /// The brokered session it ran in, as a short hash (never the sid).
    pub session: Option<&'a str>,
    /// The names of the client certificate it came with (CN, then SANs).
    pub client_certificate: Option<&'a [String]>,
}

/// The API command of a path: its last non-empty segment (`show-hosts` of
/// `/web_api/v1.9/show-hosts`), as Check Point names commands.
pub fn command(path: &str) -> &str {
    path.rsplit('/').find(|s| !s.is_empty()).unwrap_or("")
}

/// The user name of `uid`, looked up once.
fn user_name(uid: u32) -> Option<String> {
    static NAMES: OnceLock<Mutex<HashMap<u32, Option<String>>>> = OnceLock::new();
    let names = NAMES.get_or_init(Mutex::default);
    let mut names = names.lock().unwrap_or_else(|p| p.into_inner());
    names
        .entry(uid)
        .or_insert_with(|| crate::platform::users::name(uid))
        .clone()
}

/// The file records also go to, and whether the last write failed.
struct Sink {
    path: PathBuf,
    file: Option<File>,
    failing: bool,
}

fn sink() -> &'static Mutex<Option<Sink>> {
    static SINK: OnceLock<Mutex<Option<Sink>>> = OnceLock::new();
    SINK.get_or_init(Mutex::default)
}

/// `pinproxy_audit_write_failures_total`, registered by the metrics.
pub(crate) fn failures() -> &'static Counter {
    static FAILURES: OnceLock<Counter> = OnceLock::new();
    FAILURES.get_or_init(Counter::default)
}

fn open(path: &Path) -> std::io::Result<File> {
    let mut options = OpenOptions::new();
    options.create(true).append(true);
    crate::platform::permissions::owner_only(&mut options).open(path)
}

/// Sends records to `path` too (`None`: only to the log), opening it anew:
/// called at start and on every reload, so a file logrotate moved away is
/// replaced. An error here is the config's: the file cannot be written.
pub fn set_file(path: Option<&Path>) -> Result<(), String> {
    let mut sink = sink().lock().unwrap_or_else(|p| p.into_inner());
    *sink = match path {
        None => None,
        Some(path) => Some(Sink {
            path: path.to_path_buf(),
            file: Some(open(path).map_err(|e| format!("audit_log {}: {e}", path.display()))?),
            failing: false,
        }),
    };
    Ok(())
}

/// Writes one record to the log and to the audit file, if any.
pub fn write(r: &Record<'_>) {
    let user = r.uid.and_then(user_name);
    let decision = if r.forwarded { "forwarded" } else { "refused" };
    let duration_ms = r.duration.as_secs_f64() * 1000.0;
    tracing::info!(
        target: "pinproxy::audit",
        listener = r.listener,
        uid = r.uid,
        user = user.as_deref(),
        client = r.client.map(tracing::field::display),
        method = r.method,
        path = r.path,
        command = command(r.path),
        decision,
        reason = r.reason,
        status = r.status,
        bytes = r.bytes,
        duration_ms,
        session = r.session,
        client_certificate = r.client_certificate.map(|n| n.join(",")),
        "audit"
    );
    let mut sink = sink().lock().unwrap_or_else(|p| p.into_inner());
    let Some(sink) = sink.as_mut() else { return };
    let line = serde_json::json!({
        "time": humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
        "listener": r.listener,
        "uid": r.uid,
        "user": user,
        "client": r.client.map(|c| c.to_string()),
        "method": r.method,
        "path": r.path,
        "command": command(r.path),
        "decision": decision,
        "reason": r.reason,
        "status": r.status,
        "bytes": r.bytes,
        "duration_ms": duration_ms,
        "session": r.session,
        "client_certificate": r.client_certificate,
    })
    .to_string()
        + "\n";
    let written = match sink.file.as_mut() {
        Some(file) => file.write_all(line.as_bytes()),
        None => open(&sink.path).and_then(|mut f| {
            let done = f.write_all(line.as_bytes());
            sink.file = Some(f);
            done
        }),
    };
    match written {
        Ok(()) if sink.failing => {
            sink.failing = false;
            tracing::info!(path = %sink.path.display(), "audit_log is written again");
        }
        Ok(()) => {}
        Err(e) => {
            failures().inc();
            // Every lost record counts; the ERROR line once per outage.
            if !sink.failing {
                tracing::error!(path = %sink.path.display(), error = %e, "cannot write the audit record to audit_log; it is in the log (target pinproxy::audit), and pinproxy_audit_write_failures_total counts each one lost from the file");
            }
            sink.failing = true;
            sink.file = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_is_the_last_segment() {
        assert_eq!(command("/web_api/v1.9/show-hosts"), "show-hosts");
        assert_eq!(command("/web_api/publish/"), "publish");
        assert_eq!(command("/"), "");
    }
}
