//! Live reload through the library: `Proxy::reload` swaps pins under kept-alive
//! clients, drops the old pool, binds and closes listeners, and leaves unchanged
//! upstreams and in-flight requests alone.

mod common;

use common::*;
use http_body_util::BodyExt;
use pinproxy::config::{Config, UpstreamConfig};
use pinproxy::server::Proxy;

fn config(upstreams: Vec<UpstreamConfig>) -> Config {
    config_of(upstreams)
}

fn named(name: &str, mut cfg: UpstreamConfig) -> UpstreamConfig {
    cfg.name = name.into();
    cfg
}

fn addr_of(proxy: &Proxy, name: &str) -> std::net::SocketAddr {
    proxy
        .local_addrs()
        .into_iter()
        .find(|(n, _)| &**n == name)
        .unwrap_or_else(|| panic!("no listener for {name}"))
        .1
}

#[tokio::test]
async fn changed_pins_reach_kept_alive_clients_and_the_old_pool_is_dropped() {
    let (up, right) = TestServer::start_self_signed().await;
    let wrong = cert();
    let good = upstream_config(up.addr, vec![right.sha1_pin()]);
    let mut proxy = Proxy::bind(&config(vec![good.clone()])).await.unwrap();
    let url = format!("http://{}/x", addr_of(&proxy, "test"));
    // One client, one kept-alive connection to the proxy throughout.
    let client = client();
    let get = || send(&client, http::Request::get(&url).body(empty()).unwrap());

    assert_eq!(get().await.status, 200);
    up.wait_active(1).await;

    let rotated = upstream_config(up.addr, vec![wrong.sha1_pin()]);
    let summary = proxy.reload(&config(vec![rotated])).await.unwrap();
    assert_eq!(summary.changed, ["test"]);
    assert!(summary.added.is_empty() && summary.removed.is_empty());
    // The pooled connection verified under the old pins is closed, not reused.
    up.wait_active(0).await;
    let refused = get().await;
    assert_eq!(refused.status, 502);
    assert_eq!(refused.error_tag(), Some("fingerprint-mismatch"));

    let summary = proxy.reload(&config(vec![good])).await.unwrap();
    assert_eq!(summary.changed, ["test"]);
    assert_eq!(get().await.status, 200);
    assert_eq!(
        up.tls_accepted(),
        2,
        "a fresh, verified connection after the reload"
    );
    proxy.drain().await;
}

#[tokio::test]
async fn listeners_come_and_go_while_unchanged_upstreams_keep_their_requests_and_pool() {
    let (up_a, cert_a) = TestServer::start_self_signed().await;
    let (up_b, cert_b) = TestServer::start_self_signed().await;
    let a = named("a", upstream_config(up_a.addr, vec![cert_a.sha1_pin()]));
    let b = named("b", upstream_config(up_b.addr, vec![cert_b.sha1_pin()]));
    let mut proxy = Proxy::bind(&config(vec![a.clone(), b.clone()]))
        .await
        .unwrap();
    let (addr_a, addr_b) = (addr_of(&proxy, "a"), addr_of(&proxy, "b"));

    // A request on `a` is in flight across the reload, on a client connection that
    // is kept for the request after it (so both are served by the same worker,
    // whose pool must still hold the upstream connection).
    let mut kept = KeptConnection::open(addr_a).await;
    let slow = tokio::spawn(kept.get("/slow").await);
    up_a.slow_arrived.notified().await;

    let c = named("c", b.clone());
    let summary = proxy
        .reload(&config(vec![a.clone(), c.clone()]))
        .await
        .unwrap();
    assert_eq!(summary.unchanged, ["a"]);
    assert_eq!(summary.added, ["c"]);
    assert_eq!(summary.removed, ["b"]);
    assert!(
        tokio::net::TcpStream::connect(addr_b).await.is_err(),
        "b's listener is closed"
    );
    let addr_c = addr_of(&proxy, "c");
    assert_eq!(get(&format!("http://{addr_c}/x")).await.status, 200);

    up_a.release.notify_one();
    let answer = slow.await.unwrap().unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(
        answer.into_body().collect().await.unwrap().to_bytes(),
        "finally"
    );
    // The same pooled upstream connection serves `a` after the reload.
    let after = kept.get("/x").await.await.unwrap();
    assert_eq!(after.status(), 200);
    assert_eq!(up_a.tls_accepted(), 1);

    // A reload that cannot bind changes nothing.
    let busy = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut d = named("d", a.clone());
    d.listen = busy.local_addr().unwrap().into();
    let err = proxy.reload(&config(vec![a.clone(), d])).await.unwrap_err();
    assert!(err.to_string().contains("already listens there"), "{err}");
    assert_eq!(get(&format!("http://{addr_c}/x")).await.status, 200);
    assert_eq!(get(&format!("http://{addr_a}/x")).await.status, 200);
    proxy.drain().await;
}
