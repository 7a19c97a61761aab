//! An in-process proxy built from configs made here.

use std::net::SocketAddr;
use std::time::Duration;

use pinproxy::config::{Config, UpstreamConfig};
use pinproxy::server::Proxy;
use pinproxy::tls::pin::CertPin;
use tokio::sync::oneshot;

/// An upstream entry pointing at `target`, SNI/Host `localhost`, listening on any port.
pub fn upstream_config(target: SocketAddr, pins: Vec<CertPin>) -> UpstreamConfig {
    let ip = target.ip().to_string();
    let mut cfg = UpstreamConfig::new(
        "test",
        "127.0.0.1:0".parse::<SocketAddr>().unwrap(),
        &ip,
        target.port(),
        pins,
    );
    cfg.server_name = Some(pinproxy::config::parse_server_name("localhost").unwrap());
    cfg.connect_timeout = Duration::from_secs(5);
    cfg.handshake_timeout = Duration::from_secs(5);
    cfg.response_timeout = Duration::from_secs(30);
    cfg
}

/// A config of just these upstreams: no admin, no proxy listener, 5 s drain.
pub fn config_of(upstreams: Vec<UpstreamConfig>) -> Config {
    Config {
        admin: None,
        proxy: None,
        limits: Default::default(),
        shutdown_timeout: Duration::from_secs(5),
        shutdown_drain_delay: Duration::ZERO,
        upstreams,
        known_pins: None,
        audit_log: None,
    }
}

/// The proxy running in this process.
pub struct RunningProxy {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    done: Option<tokio::task::JoinHandle<()>>,
}

impl RunningProxy {
    pub async fn start(cfg: UpstreamConfig) -> RunningProxy {
        let proxy = Proxy::bind(&config_of(vec![cfg])).await.unwrap();
        let addr = proxy.local_addrs()[0].1;
        let (tx, rx) = oneshot::channel::<()>();
        let done = tokio::spawn(proxy.serve(async move {
            let _ = rx.await;
        }));
        RunningProxy {
            addr,
            stop: Some(tx),
            done: Some(done),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(done) = self.done.take() {
            done.await.unwrap();
        }
    }
}

/// Waits (at most 10 s) until `proxy` counts no open client connection on the
/// test upstream's listener: every connection task has ended. Panics with the
/// metrics if it does not.
pub async fn wait_no_client_connections(proxy: &Proxy) {
    let gone = tokio::time::timeout(Duration::from_secs(10), async {
        while !proxy
            .metrics()
            .encode()
            .contains("pinproxy_client_connections{upstream=\"test\"} 0")
        {
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(gone.is_ok(), "{}", proxy.metrics().encode());
}
