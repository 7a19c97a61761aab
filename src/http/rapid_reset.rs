//! HTTP/2 connections closed for resetting streams faster than they are served
//! (rapid reset, CVE-2023-44487): counted and summed up in at most one WARN
//! line a minute, never a line each, so a client cannot fill the journal. The
//! h2 crate's own WARN per such connection is filtered out by the log setup.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// At most one summary line per this long.
const WINDOW: Duration = Duration::from_secs(60);

static PENDING: AtomicU64 = AtomicU64::new(0);
static LAST_LINE: Mutex<Option<Instant>> = Mutex::new(None);
static FLUSH_SCHEDULED: AtomicBool = AtomicBool::new(false);

/// Whether a client connection ended because h2 closed it for rapid reset
/// (its GOAWAY ENHANCE_YOUR_CALM).
pub(crate) fn is_rapid_reset(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(err);
    while let Some(e) = source {
        if let Some(h2) = e.downcast_ref::<h2::Error>() {
            return h2.is_go_away()
                && h2.is_library()
                && h2.reason() == Some(h2::Reason::ENHANCE_YOUR_CALM);
        }
        source = e.source();
    }
    false
}

/// Counts one such connection; logs now if no line was written in the last
/// minute, else once the minute is over.
pub(crate) fn note() {
    PENDING.fetch_add(1, Ordering::Relaxed);
    let wait = {
        let last = LAST_LINE.lock().unwrap_or_else(|p| p.into_inner());
        last.map(|t| WINDOW.saturating_sub(t.elapsed()))
            .filter(|left| !left.is_zero())
    };
    match wait {
        None => flush(),
        Some(left) => {
            if !FLUSH_SCHEDULED.swap(true, Ordering::AcqRel) {
                tokio::spawn(async move {
                    tokio::time::sleep(left).await;
                    FLUSH_SCHEDULED.store(false, Ordering::Release);
                    flush();
                });
            }
        }
    }
}

fn flush() {
    let connections = PENDING.swap(0, Ordering::Relaxed);
    if connections == 0 {
        return;
    }
    *LAST_LINE.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
    tracing::warn!(
        connections,
        "closed HTTP/2 client connections for rapid reset (streams reset faster than they were served): \
         a client misbehaving or attacking; such connections are summed up in one line a minute"
    );
}
