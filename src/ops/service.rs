//! `pinproxy run` as a long-running service: bind the listeners and the admin
//! endpoint, tell systemd we are ready, apply reloads (SIGHUP, `--watch-config`)
//! until the shutdown signal, then drain.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use crate::config::{self, Config, Listen};
use crate::ops::admin::{Admin, Health};
use crate::ops::checks;
use crate::ops::reload::{self, Trigger};
use crate::ops::status::{Board, Running};
use crate::ops::systemd::Notifier;
use crate::serve::server::Proxy;
use crate::tls::known_pins::KnownPins;

/// How often brokered sessions are looked after: idle ones logged out (after
/// half the server's session_timeout), busy ones kept alive.
const SESSION_TICK: std::time::Duration = std::time::Duration::from_secs(2);

/// Where the running config came from, which decides what a reload re-reads.
#[derive(Debug, Clone)]
pub enum Source {
    /// A file, re-read on every reload.
    File {
        /// The path as given (symlinks are followed on every read).
        path: PathBuf,
        /// Reload when the file's content changes.
        watch: bool,
    },
    /// `run` flags: nothing to re-read.
    Flags(Box<Config>),
}

/// Loads the config, serves it until `shutdown` completes, and drains.
/// Errors before serving (bad config, busy port) come back as one message.
pub async fn run(source: Source, shutdown: impl Future<Output = ()>) -> Result<(), String> {
    // Before anything that can take time: SIGHUP's default action is to exit.
    let (config, watch) = match &source {
        Source::File { path, watch } => {
            let text = config::read(path).map_err(|e| e.to_string())?;
            let config = Config::parse(&text, path).map_err(|e| e.to_string())?;
            (config, watch.then(|| (path.clone(), text.into_bytes())))
        }
        Source::Flags(config) => (Config::clone(config), None),
    };
    crate::telemetry::audit::set_file(config.audit_log.as_deref())?;
    let mut triggers = reload::triggers(watch);
    let notifier = Notifier;

    let mut proxy = Proxy::bind(&config).await.map_err(|e| e.to_string())?;
    let health = Health::new(proxy.metrics().clone());
    let board = Board::new(
        proxy.metrics().clone(),
        running_of(&proxy, &config, &source, None),
    );
    let mut admin = match &config.admin {
        Some(a) => Some(Admin::bind(a, health.clone(), board.clone()).await?),
        None => None,
    };
    let admin_listen = admin.as_ref().map(|a| a.local().clone());
    board.started(running_of(&proxy, &config, &source, admin_listen.clone()));
    // Ready before the log lines say so, so whoever reads them finds /readyz at 200.
    health.set_ready();
    log_listening(&proxy, &config, |_| true);
    log_proxy_listener(&proxy, &config);
    if let Some(a) = &admin {
        tracing::info!(listen = %a.local(), "admin endpoint: / (status page) /status /healthz /readyz /metrics");
    }
    notifier.ready(&status(&config));
    let _watchdog = notifier.spawn_watchdog();
    let memory = Arc::new(checks::Memory::default());
    let mut running_checks = checks::start(&config, proxy.metrics(), &memory);

    let mut running = config;
    tokio::pin!(shutdown);
    // Brokered sessions: kept alive while used, logged out when idle.
    let mut sessions = tokio::time::interval(SESSION_TICK);
    sessions.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = sessions.tick() => {
                for up in proxy.upstreams() {
                    if let Some(broker) = up.sessions() {
                        broker.maintain(&up).await;
                    }
                }
            }
            Some(trigger) = triggers.recv() => {
                notifier.reloading();
                let outcome = apply_reload(&source, trigger, &mut proxy, &mut running, &admin, &board).await;
                proxy.metrics().reloaded(outcome.is_ok());
                match outcome {
                    Ok(()) => {
                        notifier.ready(&status(&running));
                        // The old checks stop; each address is checked again now.
                        running_checks = checks::start(&running, proxy.metrics(), &memory);
                    }
                    Err(e) => {
                        board.reload_failed(&e);
                        tracing::error!(trigger = %trigger, error = %e, "config reload failed; still serving the previous config");
                        notifier.ready(&format!("{}; last reload failed: {e}", status(&running)));
                    }
                }
            }
        }
    }
    health.set_draining();
    drop(running_checks);
    let delay = running.shutdown_drain_delay;
    if !delay.is_zero() {
        // Readiness is 503 at once, so nothing new is sent here; what is
        // already on its way (a sidecar's job finishing, a `logout`) still gets
        // in. A second signal ends the wait.
        notifier.stopping("shutdown_drain_delay: still serving, /readyz at 503");
        tracing::info!(delay = ?delay, "shutting down: still accepting for shutdown_drain_delay with /readyz at 503; a second signal skips the wait");
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            signal = crate::serve::shutdown::signal() => {
                tracing::info!(signal, "second signal: draining now");
            }
        }
    }
    notifier.stopping("draining in-flight requests");
    let upstreams = proxy.upstreams();
    proxy.drain().await;
    // After the last request: a session pinproxy holds is not left open on the server.
    for up in upstreams {
        if let Some(broker) = up.sessions() {
            broker.logout_all(&up).await;
        }
    }
    // Readiness stays 503 until the very end; then the admin endpoint goes too.
    admin.take();
    Ok(())
}

async fn apply_reload(
    source: &Source,
    trigger: Trigger,
    proxy: &mut Proxy,
    running: &mut Config,
    admin: &Option<Admin>,
    board: &Board,
) -> Result<(), String> {
    // The status page shows the new config before the log line says so, so
    // whoever reads that line finds it there.
    let admin_listen = admin.as_ref().map(|a| a.local().clone());
    let Source::File { path, .. } = source else {
        tracing::warn!(trigger = %trigger, "started from flags, without a config file: nothing to reload");
        return Ok(());
    };
    let new = config::read(path)
        .and_then(|text| Config::parse(&text, path))
        .map_err(|e| e.to_string())?;
    // Reopened on every reload, so a file logrotate moved away is replaced.
    crate::telemetry::audit::set_file(new.audit_log.as_deref())?;
    // `pinproxy pins forget` edits the file: read it again, so the next
    // connection of a forgotten upstream learns its pin anew, and what the old
    // pin verified (pooled connections, tunnels) is closed.
    let learned_before = proxy.learned_pins();
    KnownPins::reread_all()?;
    let revoked = proxy.learned_pins_changed(&learned_before);
    for up in new.upstreams.iter().filter(|u| u.known_pins.is_some()) {
        if let Some(Ok(known)) = up.known_pins.as_deref().map(KnownPins::shared) {
            let learned = known.get(&up.name).is_some();
            proxy.metrics().upstream(&up.name).pin_learned.set(learned);
        }
    }
    if new == *running && revoked.is_empty() {
        board.reloaded(running_of(proxy, running, source, admin_listen));
        tracing::info!(trigger = %trigger, "config reloaded: nothing changed");
        return Ok(());
    }
    let summary = proxy
        .reload_revoking(&new, &revoked)
        .await
        .map_err(|e| e.to_string())?;
    for name in &summary.pins_revoked {
        tracing::warn!(
            upstream = %name,
            "the pin this upstream learned on first use was forgotten or replaced: closed its pooled connections and tunnels; the next connection learns or checks the pin in known_pins"
        );
    }
    if summary.limits_changed {
        tracing::warn!("[limits] changed: listeners bound from now on use the new limits; restart pinproxy to apply them to every listener");
    }
    if new.admin != running.admin {
        tracing::warn!(
            running = %admin.as_ref().map_or("none".into(), |a| a.local().to_string()),
            "[admin] changed: the admin endpoint moves only on restart; keeping the running one"
        );
    }
    for name in &summary.changed {
        if let Some(up) = new.upstreams.iter().find(|u| &u.name == name) {
            tracing::info!(
                upstream = %up.name,
                address = %up.address(),
                pins = up.pins.len(),
                "upstream settings changed: new connections use them; idle pooled connections and TLS state of the old settings are dropped"
            );
        }
    }
    for name in &summary.removed {
        tracing::info!(upstream = %name, "listener closed");
    }
    log_listening(proxy, &new, |name| summary.added.iter().any(|a| a == name));
    if new.proxy != running.proxy {
        log_proxy_listener(proxy, &new);
    }
    board.reloaded(running_of(proxy, &new, source, admin_listen));
    tracing::info!(trigger = %trigger, summary = %summary, "config reloaded");
    *running = new;
    Ok(())
}

fn log_listening(proxy: &Proxy, config: &Config, which: impl Fn(&str) -> bool) {
    let addrs = proxy.listens();
    for up in config.upstreams.iter().filter(|u| which(&u.name)) {
        let bound = addrs
            .iter()
            .find(|(name, _)| **name == *up.name)
            .map_or(up.listen.clone(), |(_, a)| a.clone());
        tracing::info!(
            upstream = %up.name,
            listen = %bound,
            address = %up.address(),
            server_name = %up.effective_server_name(),
            pins = up.pins.len(),
            "listening"
        );
        if up.legacy_crypto {
            tracing::warn!(
                upstream = %up.name,
                "legacy_crypto is on: TLS 1.2 only, and RSA keys from 1024 bits, SHA-1 signatures and X.509 v1 \
                 certificates are accepted (the pin and the handshake signature are still checked)"
            );
        }
    }
}

fn log_proxy_listener(proxy: &Proxy, config: &Config) {
    if let Some(addr) = proxy.proxy_listen() {
        let hosts: Vec<String> = config
            .upstreams
            .iter()
            .flat_map(|u| {
                std::iter::once(u.name.clone()).chain(u.hosts.iter().map(|h| h.to_string()))
            })
            .collect();
        match addr.tcp() {
            Some(tcp) => {
                tracing::info!(listen = %addr, hosts = %hosts.join(","), "HTTP-proxy listener (http_proxy=http://{tcp})")
            }
            None => tracing::info!(listen = %addr, hosts = %hosts.join(","), "HTTP-proxy listener"),
        }
    }
}

/// What the status page shows of the running config.
fn running_of(proxy: &Proxy, config: &Config, source: &Source, admin: Option<Listen>) -> Running {
    Running {
        config: config.clone(),
        file: match source {
            // Absolute: the page is read from elsewhere than pinproxy's directory.
            Source::File { path, .. } => {
                Some(std::path::absolute(path).unwrap_or_else(|_| path.clone()))
            }
            Source::Flags(_) => None,
        },
        loaded_at: std::time::SystemTime::now(),
        listeners: proxy.listens(),
        proxy: proxy.proxy_listen(),
        admin,
    }
}

fn status(config: &Config) -> String {
    let names: Vec<&str> = config.upstreams.iter().map(|u| u.name.as_str()).collect();
    format!(
        "serving {} upstream{}: {}",
        names.len(),
        if names.len() == 1 { "" } else { "s" },
        names.join(", ")
    )
}
