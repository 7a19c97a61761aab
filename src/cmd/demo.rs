//! `pinproxy demo`: everything in one process, nothing to install. A mock
//! management API with a fresh self-signed certificate, a pinned listener in front
//! of it, and, to show what the pin is for, an impostor server with another
//! certificate behind a second listener that carries the same pin.

use std::net::SocketAddr;
use std::time::Duration;

use crate::cmd::mock_api;
use crate::config::{self, AdminConfig, Config, Listen, UpstreamConfig};
use crate::ops::admin::{Admin, Health};
use crate::ops::status::{Board, Running};
use crate::serve::server::Proxy;
use crate::tls::pin::{CertPin, Fingerprints};

/// Runs the demo until `shutdown` completes.
pub async fn run(
    listen: SocketAddr,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), String> {
    // The demo's listeners forward to a mock API with fixed credentials, in
    // plain HTTP: the loopback rule holds here as it does for `run`.
    if !listen.ip().is_loopback() {
        return Err(format!(
            "demo --listen {listen}: the demo listens on loopback only (127.0.0.0/8 or [::1]), like every pinproxy \
             listener; try `pinproxy demo --listen 127.0.0.1:0`"
        ));
    }
    let genuine = mock_api::self_signed(&["mgmt.demo.pinproxy", "localhost"])?;
    let impostor = mock_api::self_signed(&["mgmt.demo.pinproxy", "localhost"])?;
    let loopback: SocketAddr = ([127, 0, 0, 1], 0).into();
    let genuine_addr = mock_api::spawn(loopback, genuine.server_config.clone())
        .await
        .map_err(|e| format!("cannot start the mock API: {e}"))?;
    let impostor_addr = mock_api::spawn(loopback, impostor.server_config.clone())
        .await
        .map_err(|e| format!("cannot start the impostor server: {e}"))?;

    let fp = Fingerprints::of(genuine.cert.as_ref());
    let pin = CertPin::Sha1(fp.sha1);
    let server_name = config::parse_server_name("mgmt.demo.pinproxy")?;
    let upstream = |name: &str, listen: SocketAddr, target: SocketAddr| {
        let ip = target.ip().to_string();
        let mut cfg = UpstreamConfig::new(name, listen, &ip, target.port(), vec![pin.clone()]);
        cfg.server_name = Some(server_name.clone());
        cfg
    };
    let impostor_listen = SocketAddr::new(listen.ip(), 0);
    let config = Config {
        admin: None,
        proxy: None,
        limits: Default::default(),
        shutdown_timeout: Duration::from_secs(5),
        shutdown_drain_delay: Duration::ZERO,
        upstreams: vec![
            upstream("gaia", listen, genuine_addr),
            upstream("impostor", impostor_listen, impostor_addr),
        ],
        known_pins: None,
        audit_log: None,
    };
    let proxy = Proxy::bind(&config).await.map_err(|e| {
        format!("{e}\nTry another address, e.g. `pinproxy demo --listen 127.0.0.1:0` for any free port.")
    })?;
    // The status page, on another loopback port: what `[admin]` shows in production.
    let health = Health::new(proxy.metrics().clone());
    let admin_config = AdminConfig {
        listen: Listen::Tcp(SocketAddr::new(listen.ip(), 0)),
        access: Default::default(),
    };
    let running = |admin| Running {
        config: config.clone(),
        file: None,
        loaded_at: std::time::SystemTime::now(),
        listeners: proxy.listens(),
        proxy: None,
        admin,
    };
    let board = Board::new(proxy.metrics().clone(), running(None));
    let admin = Admin::bind(&admin_config, health.clone(), board.clone()).await?;
    board.started(running(Some(admin.local().clone())));
    health.set_ready();
    let addrs = proxy.local_addrs();
    let url = |name: &str| {
        addrs
            .iter()
            .find(|(n, _)| &**n == name)
            .map(|(_, a)| format!("http://{a}"))
            .unwrap_or_default()
    };
    let (good, bad) = (url("gaia"), url("impostor"));
    // `cargo run -- demo` leaves pinproxy off the PATH: name this very binary,
    // relative to where the demo was started when it is below it.
    println!(
        "pinproxy demo
==============
A mock management API is serving HTTPS on {genuine_addr} with a self-signed certificate made just now:

Fingerprint:
{sha1}
{words}

pinproxy listens on {good} (plain HTTP, on loopback only) and forwards to it, pinned to that SHA1.
It answers only requests whose Host names this machine (localhost, a loopback address), and
refuses web pages from other sites: a page in your browser cannot use it.
An impostor with a different certificate waits on {impostor_addr}; {bad} forwards there with the
same pin, as if someone had redirected the traffic.

Try, in another terminal (the demo holds this one):
  curl -s -X POST {good}/web_api/login -H 'Content-Type: application/json' \\
       -d '{{\"user\":\"{user}\",\"password\":\"{password}\"}}'
  curl -s -X POST {good}/web_api/show-hosts -H 'Content-Type: application/json' \\
       -H 'X-chkp-sid: SID_FROM_LOGIN' -d '{{\"limit\":2}}'
  curl -si -X POST {bad}/web_api/login -d '{{}}'     # 502, X-Pinproxy-Error: fingerprint-mismatch
  {me} fingerprint {genuine_addr}    # what trust-on-first-use would show

The status page (each upstream, the certificate it presented, its last handshake):
  open http://{status}/ in a browser, or curl -s http://{status}/status

Ctrl-C stops the demo.
",
        status = admin.local(),
        sha1 = fp.sha1_line(),
        words = fp.words_line(),
        me = this_program(),
        user = mock_api::USER,
        password = mock_api::PASSWORD,
    );
    for (name, addr) in &addrs {
        tracing::info!(upstream = %name, listen = %addr, "listening");
    }
    proxy.serve(shutdown).await;
    Ok(())
}

/// How to run this binary again from the demo's working directory.
fn this_program() -> String {
    let Ok(exe) = std::env::current_exe() else {
        return "pinproxy".into();
    };
    let relative = std::env::current_dir().ok().and_then(|cwd| {
        exe.strip_prefix(cwd)
            .ok()
            .map(|r| format!("./{}", r.display()))
    });
    relative.unwrap_or_else(|| exe.display().to_string())
}
