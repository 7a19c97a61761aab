//! The one shutdown signal: SIGINT or SIGTERM (Ctrl-C on other platforms).

/// Waits for SIGINT or SIGTERM and returns its name. The handlers are
/// installed when this is called, not when the future is first polled: a
/// signal that comes while the listeners are still being set up is caught
/// and answered with a graceful shutdown, not the default action (exit).
pub fn signal() -> impl std::future::Future<Output = &'static str> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let handlers = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        );
        async move {
            let (Ok(mut term), Ok(mut int)) = handlers else {
                // Without handlers the default action (exit) still applies; wait forever.
                return std::future::pending().await;
            };
            tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
            "Ctrl-C"
        }
    }
}
