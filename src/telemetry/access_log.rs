//! The access log: one line per request on stdout (or `--log-file`), target `pinproxy::access`.
//!
//! The line is formatted here, by hand, in the layout `tracing-subscriber` gives
//! every other line (text, or JSON with `--log-format json`). Going through
//! tracing's field visitors cost a fifth of the instructions of a whole proxied
//! request (callgrind: 69.7k per request with the line, 56.1k without). It still
//! obeys `RUST_LOG` (`RUST_LOG=info,pinproxy::access=off` turns it off) and is
//! written whole under stdout's lock, so lines never interleave. Connection
//! workers write theirs in batches (see [`batch_on_this_thread`]).

use std::cell::RefCell;
use std::io::Write;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

/// The target the access log is filtered by.
pub const TARGET: &str = "pinproxy::access";

/// How lines are laid out, as `--log-format` says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `tracing-subscriber`'s default text line, coloured for a terminal if `ansi`.
    Text {
        /// Colours (only for a person at a terminal).
        ansi: bool,
    },
    /// One JSON object per line, fields flattened.
    Json,
}

static FORMAT: OnceLock<Format> = OnceLock::new();

/// Lines get journald's `<6>` priority prefix (stdout is the journal).
static JOURNAL: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Prefixes each access line with `<6>` (info) for journald.
pub fn set_journal(on: bool) {
    JOURNAL.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// Where lines go instead of stdout (`--log-file`), set once at startup.
static FILE: OnceLock<std::sync::Mutex<std::fs::File>> = OnceLock::new();

/// Writes the access log to `file` (appending) instead of stdout.
pub fn set_file(file: std::fs::File) {
    let _ = FILE.set(std::sync::Mutex::new(file));
}

/// Sets the layout once, at startup (plain text without it).
pub fn set_format(format: Format) {
    let _ = FORMAT.set(format);
}

/// One finished request.
#[derive(Debug)]
pub struct Entry<'a> {
    /// The upstream's name.
    pub upstream: &'a str,
    /// The request method.
    pub method: &'a str,
    /// The path, without the query string (it may carry tokens).
    pub path: &'a str,
    /// The status sent to the client.
    pub status: u16,
    /// Response body bytes passed to the client.
    pub bytes: u64,
    /// From the request head to the end of the response (or the client leaving).
    pub duration: Duration,
    /// Whether the response body was sent whole.
    pub complete: bool,
    /// pinproxy's error tag (`X-Pinproxy-Error`), empty if none.
    pub error: &'a str,
    /// The local user behind the client connection, where known (a Unix
    /// socket, or a TCP listener with `allowed_users`).
    pub client_uid: Option<u32>,
    /// The client's address (TCP listeners).
    pub client: Option<std::net::SocketAddr>,
    /// The upstream address the request went to (the failover target in use).
    pub upstream_address: Option<&'a str>,
    /// The client's `X-Request-Id`, if it sent one (passed on upstream too).
    pub request_id: Option<&'a str>,
}

/// Writes the line for `entry`, unless `RUST_LOG` turned the access log off.
pub fn write(entry: &Entry<'_>) {
    if !tracing::enabled!(target: TARGET, tracing::Level::INFO) {
        return;
    }
    let format = FORMAT
        .get()
        .copied()
        .unwrap_or(Format::Text { ansi: false });
    BATCH.with(|batch| {
        let mut batch = batch.borrow_mut();
        let Some(lines) = batch.as_mut() else {
            let mut line = Vec::with_capacity(256);
            format_line(&mut line, entry, SystemTime::now(), format);
            write_out(&line);
            return;
        };
        format_line(lines, entry, SystemTime::now(), format);
        if lines.len() >= BATCH_BYTES {
            write_out(lines);
            lines.clear();
        }
    });
}

thread_local! {
    // Lines a worker thread has formatted but not yet written, if this is one.
    static BATCH: RefCell<Option<Vec<u8>>> = const { RefCell::new(None) };
}

/// A busy worker writes its lines in batches of about this size.
const BATCH_BYTES: usize = 16 * 1024;

/// Makes this thread collect its access lines until [`flush`] (which a worker
/// calls whenever it runs out of work, and when it stops) or until a batch is
/// full: one write for many lines while busy, at once when idle. A write per line
/// cost the benchmark's keep-alive load about a tenth of its throughput.
pub fn batch_on_this_thread() {
    BATCH.with(|batch| *batch.borrow_mut() = Some(Vec::with_capacity(BATCH_BYTES)));
}

/// Writes the lines this thread has collected.
pub fn flush() {
    BATCH.with(|batch| {
        if let Some(lines) = batch.borrow_mut().as_mut().filter(|l| !l.is_empty()) {
            write_out(lines);
            lines.clear();
        }
    });
}

/// `text` with every control character (C0, DEL, C1 such as U+009B, the
/// terminal's CSI) and every character that reorders or breaks a line
/// (U+2028/U+2029, the bidi controls such as U+202E) written as `\u{..}`: a
/// client's path or Host, or a server's words, can then neither forge a log
/// line nor hide part of one on a terminal, in text and JSON alike. Borrowed
/// when there is nothing to escape (nearly always).
pub(crate) fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    fn unsafe_char(c: char) -> bool {
        c.is_control()
            || matches!(
                c,
                '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{2028}' | '\u{2029}'
            )
            || ('\u{202A}'..='\u{202E}').contains(&c)
            || ('\u{2066}'..='\u{2069}').contains(&c)
    }
    if !text.chars().any(unsafe_char) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if unsafe_char(c) {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

fn write_out(lines: &[u8]) {
    // Like tracing-subscriber, a failed log write is not the request's problem.
    match FILE.get() {
        Some(file) => {
            let _ = file
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .write_all(lines);
        }
        None => {
            let _ = std::io::stdout().lock().write_all(lines);
        }
    }
}

fn format_line(out: &mut Vec<u8>, e: &Entry<'_>, now: SystemTime, format: Format) {
    if JOURNAL.load(std::sync::atomic::Ordering::Relaxed) {
        out.extend_from_slice(b"<6>");
    }
    let timestamp = humantime::format_rfc3339_micros(now);
    let nanos = e.duration.as_nanos();
    let (ms, fraction) = (nanos / 1_000_000, nanos % 1_000_000);
    // Writes into a Vec cannot fail.
    let _ = match format {
        Format::Text { ansi: false } => {
            super::text_line::write(out, e, now);
            Ok(())
        }
        Format::Text { ansi: true } => {
            const DIM: &str = "\x1b[2m";
            const RESET: &str = "\x1b[0m";
            let _ = write!(
                out,
                "{DIM}{timestamp}{RESET} \x1b[32m INFO{RESET} {DIM}{TARGET}{RESET}{DIM}:{RESET} request"
            );
            let fields: [(&str, &dyn std::fmt::Display); 5] = [
                ("upstream", &e.upstream),
                ("method", &e.method),
                ("path", &e.path),
                ("status", &e.status),
                ("bytes", &e.bytes),
            ];
            for (name, value) in fields {
                let _ = write!(out, " \x1b[3m{name}{RESET}{DIM}={RESET}{value}");
            }
            let _ = write!(
                out,
                " \x1b[3mduration_ms{RESET}{DIM}={RESET}{ms}.{fraction:06} \x1b[3mcomplete{RESET}{DIM}={RESET}{} \
                 \x1b[3merror{RESET}{DIM}={RESET}{:?}",
                e.complete, e.error
            );
            if let Some(uid) = e.client_uid {
                let _ = write!(out, " \x1b[3mclient_uid{RESET}{DIM}={RESET}{uid}");
            }
            if let Some(client) = e.client {
                let _ = write!(out, " \x1b[3mclient{RESET}{DIM}={RESET}{client}");
            }
            if let Some(address) = e.upstream_address {
                let _ = write!(out, " \x1b[3mupstream_address{RESET}{DIM}={RESET}{address}");
            }
            if let Some(id) = e.request_id {
                let _ = write!(out, " \x1b[3mrequest_id{RESET}{DIM}={RESET}{id:?}");
            }
            writeln!(out)
        }
        Format::Json => {
            let _ = write!(
                out,
                "{{\"timestamp\":\"{timestamp}\",\"level\":\"INFO\",\"message\":\"request\",\"upstream\":"
            );
            let _ = serde_json::to_writer(&mut *out, e.upstream);
            let _ = out.write_all(b",\"method\":");
            let _ = serde_json::to_writer(&mut *out, e.method);
            let _ = out.write_all(b",\"path\":");
            let _ = serde_json::to_writer(&mut *out, e.path);
            let _ = write!(
                out,
                ",\"status\":{},\"bytes\":{},\"duration_ms\":{ms}.{fraction:06},\"complete\":{},\"error\":",
                e.status, e.bytes, e.complete
            );
            let _ = serde_json::to_writer(&mut *out, e.error);
            if let Some(uid) = e.client_uid {
                let _ = write!(out, ",\"client_uid\":{uid}");
            }
            if let Some(client) = e.client {
                let _ = write!(out, ",\"client\":\"{client}\"");
            }
            for (name, value) in [
                ("upstream_address", e.upstream_address),
                ("request_id", e.request_id),
            ] {
                if let Some(value) = value {
                    let _ = write!(out, ",\"{name}\":");
                    let _ = serde_json::to_writer(&mut *out, value);
                }
            }
            writeln!(out, ",\"target\":\"{TARGET}\"}}")
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_and_bidi_characters_are_escaped() {
        assert!(matches!(
            printable("/web_api/show-hosts"),
            std::borrow::Cow::Borrowed(_)
        ));
        assert_eq!(
            printable("/a\u{9b}31mb\u{2028}c\u{202e}d\te\u{7f}"),
            "/a\\u{9b}31mb\\u{2028}c\\u{202e}d\\u{9}e\\u{7f}"
        );
        assert_eq!(
            printable("caf\u{e9} \u{4e2d}"),
            "caf\u{e9} \u{4e2d}",
            "letters stay"
        );
    }
    use std::sync::{Arc, Mutex};

    fn entry() -> Entry<'static> {
        Entry {
            upstream: "gaia",
            method: "POST",
            path: "/web_api/show-hosts\"x",
            status: 502,
            bytes: 1234,
            duration: Duration::from_nanos(2_186_734),
            complete: false,
            error: "fingerprint-mismatch",
            client_uid: Some(1000),
            client: Some("127.0.0.1:54321".parse().unwrap()),
            upstream_address: Some("192.0.2.11:443"),
            request_id: Some("job-42 \"retry\""),
        }
    }

    /// The same event as tracing-subscriber formats it, as pinproxy logged it before.
    fn from_tracing(json: bool, ansi: bool) -> String {
        from_tracing_of(&entry(), json, ansi)
    }

    fn from_tracing_of(e: &Entry<'_>, json: bool, ansi: bool) -> String {
        #[derive(Clone, Default)]
        struct Captured(Arc<Mutex<Vec<u8>>>);
        impl Write for Captured {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let captured = Captured::default();
        let out = captured.clone();
        let builder = tracing_subscriber::fmt()
            .with_ansi(ansi)
            .with_writer(move || out.clone());
        let emit = || {
            tracing::info!(
                target: TARGET,
                upstream = %e.upstream,
                method = %e.method,
                path = %e.path,
                status = e.status,
                bytes = e.bytes,
                duration_ms = e.duration.as_secs_f64() * 1000.0,
                complete = e.complete,
                error = e.error,
                client_uid = e.client_uid,
                client = e.client.map(tracing::field::display),
                upstream_address = e.upstream_address.map(tracing::field::display),
                request_id = e.request_id,
                "request"
            )
        };
        if json {
            tracing::subscriber::with_default(builder.json().flatten_event(true).finish(), emit);
        } else {
            tracing::subscriber::with_default(builder.finish(), emit);
        }
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        text
    }

    fn ours(format: Format) -> String {
        ours_of(&entry(), format)
    }

    fn ours_of(e: &Entry<'_>, format: Format) -> String {
        let mut out = Vec::new();
        format_line(&mut out, e, SystemTime::now(), format);
        String::from_utf8(out).unwrap()
    }

    /// Everything after the timestamp (which differs by the microsecond).
    fn after_timestamp(line: &str) -> &str {
        let end = line.find('Z').expect("a timestamp ending in Z");
        &line[end + 1..]
    }

    #[test]
    fn the_text_line_is_the_one_tracing_subscriber_writes() {
        let other = Entry {
            path: "/",
            status: 200,
            bytes: 0,
            duration: Duration::from_nanos(250_125_375),
            complete: true,
            error: "",
            client_uid: None,
            client: Some("[::1]:8443".parse().unwrap()),
            upstream_address: None,
            request_id: None,
            ..entry()
        };
        for e in [entry(), other] {
            for ansi in [false, true] {
                let theirs = from_tracing_of(&e, false, ansi);
                let ours = ours_of(&e, Format::Text { ansi });
                assert_eq!(
                    after_timestamp(&ours),
                    after_timestamp(&theirs),
                    "ansi {ansi}"
                );
                assert!(ours.ends_with('\n'));
            }
        }
    }

    #[test]
    fn the_json_line_has_the_fields_tracing_subscriber_writes() {
        let theirs: serde_json::Value = serde_json::from_str(&from_tracing(true, false)).unwrap();
        let line = ours(Format::Json);
        let ours: serde_json::Value = serde_json::from_str(&line).unwrap();
        let keys =
            |v: &serde_json::Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
        assert_eq!(keys(&ours), keys(&theirs));
        for key in keys(&ours) {
            if key != "timestamp" {
                assert_eq!(ours[&key], theirs[&key], "{key}");
            }
        }
        assert_eq!(ours["path"], "/web_api/show-hosts\"x");
        let stamp = ours["timestamp"].as_str().unwrap();
        assert!(humantime::parse_rfc3339(stamp).is_ok(), "{stamp}");
        assert_eq!(line.matches('\n').count(), 1);
    }
}
