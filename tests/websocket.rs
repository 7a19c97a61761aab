//! WebSocket through pinproxy: a real client (tokio-tungstenite) on the plain
//! side, a WebSocket echo server behind pinned TLS on the other, on a dedicated
//! listener and in proxy mode; closing on shutdown.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use pinproxy::config::{Config, ProxyConfig};
use pinproxy::server::Proxy;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// A WebSocket echo server over TLS with a fresh self-signed certificate.
async fn echo_server() -> (SocketAddr, TestCert) {
    let c = cert();
    // It also offers h2, which pinproxy uses for other requests (http2 = "auto");
    // an upgrade must still go over HTTP/1.1.
    let mut tls = server_config(vec![c.der.clone()], c.key(), false);
    Arc::get_mut(&mut tls).unwrap().alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let addr = tls_server(tls, |tls| async move {
        let Ok(mut ws) = tokio_tungstenite::accept_async(tls).await else {
            return;
        };
        while let Some(Ok(msg)) = ws.next().await {
            if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                return;
            }
        }
    })
    .await;
    (addr, c)
}

fn config(target: SocketAddr, c: &TestCert, shutdown: Duration) -> Config {
    Config {
        admin: None,
        limits: Default::default(),
        proxy: Some(ProxyConfig {
            listen: "127.0.0.1:0".parse::<SocketAddr>().unwrap().into(),
            access: Default::default(),
        }),
        shutdown_timeout: shutdown,
        shutdown_drain_delay: Duration::ZERO,
        upstreams: vec![upstream_config(target, vec![c.sha1_pin()])],
        known_pins: None,
        audit_log: None,
    }
}

async fn exchange<S>(ws: &mut WebSocketStream<S>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    ws.send(Message::text("show-session")).await.unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::text("show-session")
    );
    ws.send(Message::binary(vec![0u8, 1, 2, 255]))
        .await
        .unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::binary(vec![0u8, 1, 2, 255])
    );
    let big: Vec<u8> = (0..10 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    ws.send(Message::binary(big.clone())).await.unwrap();
    match ws.next().await.unwrap().unwrap() {
        Message::Binary(got) => assert!(got == big, "the 10 MiB message came back changed"),
        other => panic!("expected binary, got {other:?}"),
    }
    // The close handshake goes end to end: the server answers our Close.
    ws.close(None).await.unwrap();
    match ws.next().await {
        Some(Ok(Message::Close(_))) | None => {}
        Some(Ok(other)) => panic!("after close: {other:?}"),
        Some(Err(e)) => panic!("close handshake failed: {e}"),
    }
}

#[tokio::test]
async fn websocket_on_a_dedicated_listener_text_binary_10_mib_and_close() {
    let (target, c) = echo_server().await;
    let proxy = Proxy::bind(&config(target, &c, Duration::from_secs(5)))
        .await
        .unwrap();
    let addr = proxy.local_addrs()[0].1;
    let (mut ws, resp) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
        .await
        .expect("the upgrade goes through pinproxy");
    assert_eq!(resp.status(), 101);
    exchange(&mut ws).await;
    proxy.drain().await;
}

#[tokio::test]
async fn a_websocket_to_a_server_with_the_wrong_certificate_is_refused() {
    let (target, _) = echo_server().await;
    let proxy = Proxy::bind(&config(target, &cert(), Duration::from_secs(5)))
        .await
        .unwrap();
    let addr = proxy.local_addrs()[0].1;
    let err = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
        .await
        .unwrap_err();
    match err {
        tokio_tungstenite::tungstenite::Error::Http(resp) => {
            assert_eq!(resp.status(), 502);
            assert_eq!(resp.headers()["x-pinproxy-error"], "fingerprint-mismatch");
        }
        other => panic!("expected a 502, got {other}"),
    }
    proxy.drain().await;
}

/// Opens a WebSocket to upstream "test" through the `[proxy]` listener at
/// `proxy`, as a proxy-aware client does for ws://, checking the 101.
async fn through_proxy_mode(proxy: SocketAddr) -> WebSocketStream<TcpStream> {
    let mut tcp = TcpStream::connect(proxy).await.unwrap();
    // RFC 6455 §4.1's sample key.
    tcp.write_all(
        b"GET http://test/ws HTTP/1.1\r\nHost: test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await
    .unwrap();
    let head = read_head(&mut tcp).await.expect("an answer to the upgrade");
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(
        head.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
        "{head}"
    );
    WebSocketStream::from_raw_socket(tcp, Role::Client, None).await
}

#[tokio::test]
async fn websocket_in_proxy_mode_with_an_absolute_form_upgrade() {
    let (target, c) = echo_server().await;
    let proxy = Proxy::bind(&config(target, &c, Duration::from_secs(5)))
        .await
        .unwrap();
    let mut ws = through_proxy_mode(proxy.proxy_addr().unwrap()).await;
    exchange(&mut ws).await;
    proxy.drain().await;
}

#[tokio::test]
async fn shutdown_closes_an_open_websocket_after_shutdown_timeout() {
    let (target, c) = echo_server().await;
    let proxy = Proxy::bind(&config(target, &c, Duration::from_millis(200)))
        .await
        .unwrap();
    let addr = proxy.local_addrs()[0].1;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
        .await
        .unwrap();
    ws.send(Message::text("still here")).await.unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::text("still here")
    );
    let drained = Arc::new(tokio::sync::Notify::new());
    let done = drained.clone();
    tokio::spawn(async move {
        proxy.drain().await;
        done.notify_one();
    });
    // The tunnel ends (the client sees the stream close), and the drain returns.
    let end = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .expect("the tunnel was closed, not left open");
    assert!(!matches!(end, Some(Ok(Message::Text(_)))), "{end:?}");
    tokio::time::timeout(Duration::from_secs(10), drained.notified())
        .await
        .expect("drain finished");
}

/// Whether `ws` still carries a message both ways.
async fn still_open<S>(ws: &mut WebSocketStream<S>) -> bool
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    if ws.send(Message::text("ping")).await.is_err() {
        return false;
    }
    let answer = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .expect("the tunnel answers or closes, never hangs");
    matches!(answer, Some(Ok(Message::Text(t))) if t == "ping")
}

#[tokio::test]
async fn a_reload_that_changes_the_pins_closes_open_tunnels_and_one_that_does_not_keeps_them() {
    let (target, c) = echo_server().await;
    let mut cfg = config(target, &c, Duration::from_secs(5));
    let mut proxy = Proxy::bind(&cfg).await.unwrap();
    let addr = proxy.local_addrs()[0].1;
    let (mut direct, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
        .await
        .unwrap();
    let mut routed = through_proxy_mode(proxy.proxy_addr().unwrap()).await;
    assert!(still_open(&mut direct).await && still_open(&mut routed).await);

    // Timeouts only: the upstream is rebuilt, but nothing about trust changed.
    cfg.upstreams[0].response_timeout = Duration::from_secs(7);
    let summary = proxy.reload(&cfg).await.unwrap();
    assert_eq!(summary.changed, vec!["test".to_string()]);
    assert!(
        still_open(&mut direct).await,
        "kept across a timeout change"
    );
    assert!(
        still_open(&mut routed).await,
        "kept across a timeout change"
    );

    // The pins change (here the genuine one is replaced): both tunnels close.
    cfg.upstreams[0].pins = vec![cert().sha1_pin()];
    proxy.reload(&cfg).await.unwrap();
    assert!(
        !still_open(&mut direct).await,
        "closed when the pins changed"
    );
    assert!(
        !still_open(&mut routed).await,
        "closed when the pins changed"
    );
    proxy.drain().await;
}
