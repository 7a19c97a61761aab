//! Upgraded connections (WebSocket and friends) after the `101`: both byte
//! streams joined until either side closes, shutdown drains them, and a reload
//! that revokes their upstream's trust closes them.

use std::sync::Arc;

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;

use crate::http::idle::Busy;
use crate::upstream::Upstream;

/// Resolves once `stop` says so (never, if its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    loop {
        if *stop.borrow_and_update() {
            return;
        }
        if stop.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}

/// The upgraded connections (WebSocket and friends): each joins a client and an
/// upstream byte stream both ways until either side closes. Shutdown treats them
/// as in-flight requests: they may finish within `shutdown_timeout`, then both
/// sides are shut down (FIN to the client, TLS close_notify to the upstream).
#[derive(Clone)]
pub struct Tunnels {
    stop: Arc<watch::Sender<bool>>,
}

impl Default for Tunnels {
    fn default() -> Self {
        Tunnels {
            stop: Arc::new(watch::channel(false).0),
        }
    }
}

impl Tunnels {
    /// Joins `client` and `server` once both upgrades complete; `busy` keeps the
    /// client connection from counting as idle while the tunnel is open.
    /// The tunnel also ends when a reload revokes `upstream`'s trust.
    pub(crate) fn spawn(
        &self,
        upstream: &Upstream,
        client: OnUpgrade,
        server: OnUpgrade,
        busy: Busy,
    ) {
        let mut stop = self.stop.subscribe();
        let mut revoked = upstream.revocation();
        let upstream = upstream.name.clone();
        tokio::spawn(async move {
            let _busy = busy;
            let (client, server) = match tokio::try_join!(client, server) {
                Ok(both) => both,
                Err(e) => {
                    tracing::debug!(upstream = %upstream, error = %e, "upgrade did not complete");
                    return;
                }
            };
            let (mut client, mut server) = (TokioIo::new(client), TokioIo::new(server));
            tracing::debug!(upstream = %upstream, "tunnel open");
            tokio::select! {
                done = tokio::io::copy_bidirectional(&mut client, &mut server) => match done {
                    Ok((up, down)) => tracing::debug!(upstream = %upstream, bytes_up = up, bytes_down = down, "tunnel closed"),
                    Err(e) => tracing::debug!(upstream = %upstream, error = %e, "tunnel broke"),
                },
                _ = stopped(&mut stop) => {
                    let _ = tokio::join!(client.shutdown(), server.shutdown());
                    tracing::info!(upstream = %upstream, "tunnel closed for shutdown");
                }
                _ = stopped(&mut revoked) => {
                    let _ = tokio::join!(client.shutdown(), server.shutdown());
                    tracing::debug!(upstream = %upstream, "tunnel closed: its upstream's pins, address or TLS settings changed");
                }
            }
        });
    }

    /// How many tunnels are open.
    pub fn count(&self) -> usize {
        self.stop.receiver_count()
    }

    /// Waits up to `timeout` for open tunnels to end, then closes the rest.
    pub async fn drain(&self, timeout: std::time::Duration) {
        if tokio::time::timeout(timeout, self.stop.closed())
            .await
            .is_err()
        {
            let _ = self.stop.send(true);
            self.stop.closed().await;
        }
    }
}
