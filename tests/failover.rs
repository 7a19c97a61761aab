//! HA failover: `address` lists and `[[upstream.target]]` with their own pins.
//! The primary down: the secondary serves; the primary back: traffic returns
//! (after failback_after); a pin mismatch on the primary is a loud 502, never a
//! silent failover.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use pinproxy::config::{Config, Target, UpstreamConfig};
use pinproxy::server::Proxy;
use pinproxy::tls::pin::CertPin;

/// A loopback address where nothing listens (yet).
async fn vacant() -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

fn ha(
    primary: SocketAddr,
    primary_pins: Vec<CertPin>,
    secondary: SocketAddr,
    secondary_pins: Vec<CertPin>,
    failback: Duration,
) -> Config {
    let mut cfg: UpstreamConfig = upstream_config(primary, primary_pins);
    cfg.fallbacks = vec![Target {
        host: secondary.ip().to_string(),
        port: secondary.port(),
        pins: secondary_pins,
        client_identity: None,
        egress_proxy: None,
    }];
    cfg.failback_after = failback;
    config_of(vec![cfg])
}

/// The primary down, the secondary (with its own pin) served once; then the
/// primary comes back where it was and the secondary's pooled connection closes.
/// Returns the proxy, its URL and both servers.
async fn fail_over_then_restore_primary(
    failback: Duration,
) -> (Proxy, String, TestServer, TestServer) {
    let primary_addr = vacant().await;
    let (secondary, b) = TestServer::start_self_signed().await;
    let a = cert();
    let proxy = Proxy::bind(&ha(
        primary_addr,
        vec![a.sha1_pin()],
        secondary.addr,
        vec![b.sha1_pin()],
        failback,
    ))
    .await
    .unwrap();
    let url = format!("http://{}/x", proxy.local_addrs()[0].1);
    assert_eq!(
        get(&url).await.status,
        200,
        "served by the secondary, with its own pin"
    );
    assert_eq!(secondary.tls_accepted(), 1);
    assert!(
        proxy
            .metrics()
            .encode()
            .contains("pinproxy_upstream_active_target{upstream=\"test\"} 1"),
        "the metrics say the fallback is in use"
    );
    let primary = TestServer::start_on(
        primary_addr,
        server_config(vec![a.der.clone()], a.key(), false),
    )
    .await;
    secondary.close_idle_connections().await;
    (proxy, url, primary, secondary)
}

#[tokio::test]
async fn primary_down_the_secondary_serves_primary_back_traffic_returns() {
    let (proxy, url, primary, secondary) =
        fail_over_then_restore_primary(Duration::from_millis(1)).await;
    // New connections go to the primary again.
    assert_eq!(get(&url).await.status, 200);
    assert_eq!((primary.tls_accepted(), secondary.tls_accepted()), (1, 1));
    proxy.drain().await;
}

#[tokio::test]
async fn the_secondary_is_kept_for_failback_after_even_when_the_primary_returns() {
    let (proxy, url, primary, secondary) =
        fail_over_then_restore_primary(Duration::from_secs(3600)).await;
    assert_eq!(get(&url).await.status, 200);
    assert_eq!((primary.tls_accepted(), secondary.tls_accepted()), (0, 2));
    proxy.drain().await;
}

#[tokio::test]
async fn a_pin_mismatch_on_the_primary_is_a_502_not_a_failover() {
    let (primary, _) = TestServer::start_self_signed().await;
    let (secondary, b) = TestServer::start_self_signed().await;
    let proxy = Proxy::bind(&ha(
        primary.addr,
        vec![cert().sha1_pin()],
        secondary.addr,
        vec![b.sha1_pin()],
        Duration::from_secs(30),
    ))
    .await
    .unwrap();
    let a = get(&format!("http://{}/x", proxy.local_addrs()[0].1)).await;
    assert_eq!(a.status, 502);
    assert_eq!(a.error_tag(), Some("fingerprint-mismatch"));
    assert_eq!(secondary.tcp_accepted(), 0, "the secondary was never tried");
    proxy.drain().await;
}

#[tokio::test]
async fn every_address_down_is_one_502_naming_each() {
    let (one, two) = (vacant().await, vacant().await);
    let pin = cert().sha1_pin();
    let proxy = Proxy::bind(&ha(
        one,
        vec![pin.clone()],
        two,
        vec![pin],
        Duration::from_secs(30),
    ))
    .await
    .unwrap();
    let a = get(&format!("http://{}/x", proxy.local_addrs()[0].1)).await;
    assert_eq!(a.status, 502);
    assert_eq!(a.error_tag(), Some("connect-failed"));
    let text = a.text();
    assert!(
        text.contains("every address failed")
            && text.contains(&one.to_string())
            && text.contains(&two.to_string()),
        "{text}"
    );
    proxy.drain().await;
}
