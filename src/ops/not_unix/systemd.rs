//! Where there is no systemd (Windows), this stands in for `ops/systemd.rs`:
//! the same calls, told to whoever runs pinproxy as a service (the Windows
//! service wrapper registers with [`on_ready`]) and otherwise nothing.

use std::sync::OnceLock;

use tokio::task::JoinHandle;

type Hook = Box<dyn Fn() + Send + Sync>;

fn ready_hook() -> &'static OnceLock<Hook> {
    static HOOK: OnceLock<Hook> = OnceLock::new();
    &HOOK
}

/// Calls `hook` when every listener is bound and the config loaded (the
/// service control manager is then told the service is running).
pub fn on_ready(hook: impl Fn() + Send + Sync + 'static) {
    let _ = ready_hook().set(Box::new(hook));
}

/// Tells the service manager how pinproxy is doing.
#[derive(Debug, Clone, Copy, Default)]
pub struct Notifier;

impl Notifier {
    /// Every listener is bound and the config is loaded (also ends a reload).
    pub fn ready(&self, _status: &str) {
        if let Some(hook) = ready_hook().get() {
            hook();
        }
    }

    /// A reload starts.
    pub fn reloading(&self) {}

    /// Shutdown has begun.
    pub fn stopping(&self, _status: &str) {}

    /// No watchdog here.
    pub fn spawn_watchdog(&self) -> Option<JoinHandle<()>> {
        None
    }
}
