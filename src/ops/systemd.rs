//! The systemd notification protocol (`sd_notify`): READY, RELOADING, STOPPING,
//! STATUS and watchdog pings, sent to `$NOTIFY_SOCKET` when systemd (or anything
//! speaking its protocol) started us. Without that variable every call is a no-op.

use std::time::Duration;

use sd_notify::NotifyState;
use tokio::task::JoinHandle;

/// Tells the service manager how pinproxy is doing.
#[derive(Debug, Clone, Copy, Default)]
pub struct Notifier;

impl Notifier {
    /// Every listener is bound and the config is loaded (also ends a reload).
    pub fn ready(&self, status: &str) {
        send(&[NotifyState::Ready, NotifyState::Status(&one_line(status))]);
    }

    /// A reload starts. `MONOTONIC_USEC` lets `Type=notify-reload` match this
    /// message to the reload it asked for.
    pub fn reloading(&self) {
        match NotifyState::monotonic_usec_now() {
            Ok(now) => send(&[
                NotifyState::Reloading,
                now,
                NotifyState::Status("reloading the config"),
            ]),
            Err(e) => {
                tracing::debug!(error = %e, "no monotonic clock for MONOTONIC_USEC");
                send(&[
                    NotifyState::Reloading,
                    NotifyState::Status("reloading the config"),
                ]);
            }
        }
    }

    /// Shutdown has begun.
    pub fn stopping(&self, status: &str) {
        send(&[
            NotifyState::Stopping,
            NotifyState::Status(&one_line(status)),
        ]);
    }

    /// Pings the watchdog at half its period when `WATCHDOG_USEC` asks for it.
    /// The pings come from the async runtime, so a wedged runtime stops them.
    pub fn spawn_watchdog(&self) -> Option<JoinHandle<()>> {
        let period = sd_notify::watchdog_enabled()?;
        let every = (period / 2).max(Duration::from_millis(10));
        tracing::info!(watchdog = ?period, "systemd watchdog enabled; pinging every {every:?}");
        Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                send(&[NotifyState::Watchdog]);
            }
        }))
    }
}

/// The protocol is one `KEY=value` per line: a newline in a status would end it.
fn one_line(status: &str) -> String {
    status.replace(['\n', '\r'], " ")
}

fn send(states: &[NotifyState<'_>]) {
    // A notification that cannot be delivered must not stop the proxy; systemd
    // notices a missing READY=1 by itself (TimeoutStartSec).
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "cannot notify the service manager (NOTIFY_SOCKET)");
    }
}
