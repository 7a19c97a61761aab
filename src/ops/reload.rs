//! What asks for a config reload: SIGHUP, and with `--watch-config` a change in
//! the config file's content.
//!
//! The watcher compares the file's bytes once a second, following symlinks on
//! every read. That catches every way a file gets replaced: an edit in place, an
//! editor's rename over it, and the symlink swap Kubernetes does when it updates a
//! mounted ConfigMap (`proxy.toml -> ..data/proxy.toml`, `..data` renamed to a new
//! directory), which inotify on the file itself would miss. Reading a small file
//! once a second costs nothing measurable; touching it without changing it does
//! nothing.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::mpsc;

/// How often `--watch-config` looks at the file.
pub const WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// Why a reload was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// `kill -HUP`, `systemctl reload`.
    #[cfg_attr(not(unix), allow(dead_code))] // no SIGHUP there
    Signal,
    /// `--watch-config` saw new content.
    FileChanged,
    /// The Windows service control manager sent ParamChange
    /// (`sc control pinproxy paramchange`), through [`request`].
    ServiceControl,
}

/// Asks the running service to reload, as SIGHUP does: from a thread outside
/// the runtime (the Windows service control handler). Requests before the
/// service listens are kept for it.
#[cfg_attr(not(windows), allow(dead_code))] // Unix has SIGHUP
pub fn request() {
    requests().notify_one();
}

fn requests() -> &'static tokio::sync::Notify {
    static REQUESTS: std::sync::OnceLock<tokio::sync::Notify> = std::sync::OnceLock::new();
    REQUESTS.get_or_init(tokio::sync::Notify::new)
}

impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Trigger::Signal => "SIGHUP",
            Trigger::FileChanged => "file change",
            Trigger::ServiceControl => "service control (paramchange)",
        })
    }
}

/// Starts listening for SIGHUP (at once, so an early SIGHUP cannot kill the
/// process) and, given `watch = Some((path, loaded))`, watching `path` for
/// content other than `loaded`. Triggers that arrive while one is pending are
/// merged into it.
pub fn triggers(watch: Option<(PathBuf, Vec<u8>)>) -> mpsc::Receiver<Trigger> {
    let (tx, rx) = mpsc::channel(1);
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::hangup()) {
            Ok(mut hup) => {
                let tx = tx.clone();
                tokio::spawn(async move {
                    while hup.recv().await.is_some() {
                        let _ = tx.try_send(Trigger::Signal);
                    }
                });
            }
            Err(e) => tracing::warn!(error = %e, "cannot handle SIGHUP; reload by restarting"),
        }
    }
    let requested = tx.clone();
    tokio::spawn(async move {
        loop {
            requests().notified().await;
            if requested.try_send(Trigger::ServiceControl).is_err() && requested.is_closed() {
                return;
            }
        }
    });
    if let Some((path, loaded)) = watch {
        tokio::spawn(watch_file(path, loaded, tx));
    }
    rx
}

async fn watch_file(path: PathBuf, mut last: Vec<u8>, tx: mpsc::Sender<Trigger>) {
    let mut tick = tokio::time::interval(WATCH_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut unreadable = false;
    loop {
        tick.tick().await;
        match tokio::fs::read(&path).await {
            Ok(now) => {
                unreadable = false;
                if now != last {
                    last = now;
                    if tx.try_send(Trigger::FileChanged).is_err() && tx.is_closed() {
                        return;
                    }
                }
            }
            // A swap can leave the path dangling for an instant; say so only once.
            Err(e) if !unreadable => {
                unreadable = true;
                tracing::warn!(path = %path.display(), error = %e, "cannot read the watched config file; still serving the loaded config");
            }
            Err(_) => {}
        }
    }
}
