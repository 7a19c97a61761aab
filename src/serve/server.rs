//! The proxy's listeners as a whole ([`Proxy`]): bind every configured address
//! up front, start their accept loops (`accept.rs`, which serve each client
//! connection with `connection.rs`), apply a reloaded config without disturbing
//! what is in flight, and drain in-flight requests on shutdown.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::watch;

use crate::config::{Config, Limits, Listen, ProxyConfig, UpstreamConfig};
use crate::http::access::Policy;
use crate::http::proxy_mode::{Routes, PROXY_LABEL};
use crate::http::tunnel::Tunnels;
use crate::serve::listen::{self, OwnedListener as Socket};
use crate::serve::workers::{self, Workers};
use crate::telemetry::metrics::{Metrics, UpstreamMetrics};
use crate::tls::known_pins::{KnownPins, Learned};
use crate::upstream::Upstream;

use super::accept::{accept_loop, AcceptShared, Acceptor, LoopContext};
use super::connection::{Drain, Target};

/// A listener could not be bound.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot listen on {addr} for {}: {source}{hint}",
    listener_name(upstream)
)]
pub struct BindError {
    /// The upstream whose listener failed.
    pub upstream: String,
    /// The configured address.
    pub addr: Listen,
    /// The socket error.
    pub source: std::io::Error,
    hint: &'static str,
}

fn listener_name(upstream: &str) -> String {
    if upstream == PROXY_LABEL {
        "[proxy]".to_string()
    } else {
        format!("upstream {upstream:?}")
    }
}

/// The running listeners, each with the upstream it forwards to.
pub struct Proxy {
    listeners: Vec<Listener>,
    /// The `[proxy]` listener, if configured, and where it was asked to listen.
    forward_proxy: Option<(Listen, Acceptor)>,
    routes: Arc<ArcSwap<Routes>>,
    metrics: Arc<Metrics>,
    /// The `(proxy)` series, which exist only while `[proxy]` is configured.
    proxy_metrics: Option<Arc<UpstreamMetrics>>,
    drain: Arc<Drain>,
    tunnels: Tunnels,
    /// Client-side limits, fixed when a listener is bound.
    limits: Arc<Limits>,
    shutdown_timeout: Duration,
    /// Where client connections run; stopped when the proxy is dropped.
    workers: Arc<Workers>,
}

/// One bound, serving listener. Its upstream can be swapped without touching the
/// socket or the connections on it.
struct Listener {
    config: UpstreamConfig,
    upstream: Arc<ArcSwap<Upstream>>,
    acceptor: Acceptor,
}

/// What a reload changed, by upstream name.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReloadSummary {
    /// New listeners, bound by this reload.
    pub added: Vec<String>,
    /// Listeners closed by this reload.
    pub removed: Vec<String>,
    /// Listeners kept whose upstream settings (pins, address, timeouts…) changed:
    /// they got a fresh TLS config and an empty pool.
    pub changed: Vec<String>,
    /// Listeners and upstreams left exactly as they were.
    pub unchanged: Vec<String>,
    /// `[limits]` changed: they apply to listeners bound from now on; a restart
    /// applies them everywhere.
    pub limits_changed: bool,
    /// Upstreams whose learned pin (`known_pins`) was forgotten or replaced: every
    /// pooled connection and tunnel verified by the old one was closed.
    pub pins_revoked: Vec<String>,
}

impl fmt::Display for ReloadSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |v: &[String]| {
            if v.is_empty() {
                "-".to_string()
            } else {
                v.join(",")
            }
        };
        write!(
            f,
            "added {}; removed {}; changed {}; unchanged {}",
            list(&self.added),
            list(&self.removed),
            list(&self.changed),
            list(&self.unchanged)
        )?;
        if !self.pins_revoked.is_empty() {
            write!(f, "; learned pin revoked {}", list(&self.pins_revoked))?;
        }
        Ok(())
    }
}

impl Proxy {
    /// Builds every upstream, binds every listener and starts accepting; fails
    /// before serving anything if one address cannot be bound.
    pub async fn bind(config: &Config) -> Result<Proxy, BindError> {
        let metrics = Metrics::new();
        let mut proxy = Proxy {
            listeners: Vec::with_capacity(config.upstreams.len()),
            forward_proxy: None,
            routes: Arc::new(ArcSwap::from_pointee(Routes::new(
                [],
                Arc::new(UpstreamMetrics::detached()),
            ))),
            metrics,
            proxy_metrics: None,
            drain: Arc::new(Drain::default()),
            tunnels: Tunnels::default(),
            limits: Arc::new(config.limits.clone()),
            shutdown_timeout: config.shutdown_timeout,
            workers: Arc::new(Workers::start(workers::count())),
        };
        let mut bound = Vec::with_capacity(config.upstreams.len());
        for cfg in &config.upstreams {
            bound.push(bind(&cfg.name, &cfg.listen).await?);
        }
        let forward_proxy = match &config.proxy {
            Some(p) => Some((p, bind(PROXY_LABEL, &p.listen).await?)),
            None => None,
        };
        for (cfg, socket) in config.upstreams.iter().zip(bound) {
            let listener = proxy.start(cfg, socket);
            proxy.listeners.push(listener);
        }
        proxy.set_proxy_metrics(config.proxy.is_some());
        proxy.update_routes();
        if let Some((p, socket)) = forward_proxy {
            proxy.start_proxy(p, socket);
        }
        Ok(proxy)
    }

    /// Where the `[proxy]` listener is bound, if it is a TCP one.
    pub fn proxy_addr(&self) -> Option<SocketAddr> {
        self.forward_proxy.as_ref().and_then(|(_, a)| a.local.tcp())
    }

    /// Where the `[proxy]` listener is bound, if there is one.
    pub fn proxy_listen(&self) -> Option<Listen> {
        self.forward_proxy.as_ref().map(|(_, a)| a.local.clone())
    }

    fn update_routes(&self) {
        let current: Vec<(&UpstreamConfig, Arc<Upstream>)> = self
            .listeners
            .iter()
            .map(|l| (&l.config, l.upstream.load_full()))
            .collect();
        let metrics = self
            .proxy_metrics
            .clone()
            .unwrap_or_else(|| Arc::new(UpstreamMetrics::detached()));
        self.routes.store(Arc::new(Routes::new(current, metrics)));
    }

    /// Creates the `(proxy)` series when `[proxy]` is configured, and drops its
    /// gauges when it no longer is.
    fn set_proxy_metrics(&mut self, configured: bool) {
        match (configured, &self.proxy_metrics) {
            (true, None) => {
                self.proxy_metrics = Some(Arc::new(self.metrics.upstream(PROXY_LABEL)));
            }
            (false, Some(_)) => {
                self.proxy_metrics = None;
                self.metrics.forget_upstream(PROXY_LABEL);
            }
            _ => {}
        }
    }

    /// The metrics every listener and upstream of this proxy count into.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The upstream each listener forwards to now.
    pub(crate) fn upstreams(&self) -> Vec<Arc<Upstream>> {
        self.listeners
            .iter()
            .map(|l| l.upstream.load_full())
            .collect()
    }

    /// The bound address of each upstream's TCP listener (useful with port 0).
    pub fn local_addrs(&self) -> Vec<(Arc<str>, SocketAddr)> {
        self.listeners
            .iter()
            .filter_map(|l| Some((l.config.name.as_str().into(), l.acceptor.local.tcp()?)))
            .collect()
    }

    /// Where each upstream's listener is bound, TCP or Unix.
    pub fn listens(&self) -> Vec<(Arc<str>, Listen)> {
        self.listeners
            .iter()
            .map(|l| (l.config.name.as_str().into(), l.acceptor.local.clone()))
            .collect()
    }

    /// Applies a new config. A listener whose address stays keeps its socket and
    /// its client connections; if its upstream's settings changed it gets a new
    /// `Upstream` (new pins, new TLS config, empty pool) for every request from
    /// now on, while requests already in flight finish on the old one. New
    /// addresses are bound, vanished ones closed. If any new address cannot be
    /// bound, nothing changes.
    pub async fn reload(&mut self, config: &Config) -> Result<ReloadSummary, BindError> {
        self.reload_revoking(config, &[]).await
    }

    /// The pin each running trust-on-first-use upstream has learned, as this
    /// process holds it now: compare with [`Proxy::learned_pins_changed`] after
    /// the `known_pins` files were read again.
    pub fn learned_pins(&self) -> Vec<(String, Option<Learned>)> {
        self.listeners
            .iter()
            .filter_map(|l| {
                let path = l.config.known_pins.as_deref()?;
                let known = KnownPins::shared(path).ok()?;
                Some((l.config.name.clone(), known.get(&l.config.name)))
            })
            .collect()
    }

    /// The upstreams whose learned pin differs from `before` (forgotten with
    /// `pinproxy pins forget`, or replaced in the file): their connections were
    /// verified by a pin that is no longer trusted.
    pub fn learned_pins_changed(&self, before: &[(String, Option<Learned>)]) -> Vec<String> {
        let now = self.learned_pins();
        before
            .iter()
            .filter(|(name, pin)| {
                pin.is_some() && now.iter().find(|(n, _)| n == name).map(|(_, p)| p) != Some(pin)
            })
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// [`Proxy::reload`], and the upstreams named in `revoked` lose every pooled
    /// connection and tunnel even where their settings did not change: the
    /// pin that verified them was taken back (see [`Proxy::learned_pins_changed`]).
    pub async fn reload_revoking(
        &mut self,
        config: &Config,
        revoked: &[String],
    ) -> Result<ReloadSummary, BindError> {
        enum Plan {
            Keep(usize, Option<Box<Upstream>>),
            Bind(Socket),
        }
        let mut taken = vec![false; self.listeners.len()];
        let mut plans = Vec::with_capacity(config.upstreams.len());
        for cfg in &config.upstreams {
            let same_socket = self.listeners.iter().enumerate().position(|(i, l)| {
                !taken[i]
                    && (l.config.listen.same_socket(&cfg.listen)
                        // Port 0 means "any port": only the same upstream keeps such a socket.
                        || (l.config.listen == cfg.listen && l.config.name == cfg.name))
            });
            plans.push(match same_socket {
                Some(i) => {
                    taken[i] = true;
                    let swap = (!self.listeners[i].config.same_upstream(cfg)
                        || revoked.contains(&cfg.name))
                    .then(|| Box::new(Upstream::new(cfg, self.metrics.upstream(&cfg.name))));
                    Plan::Keep(i, swap)
                }
                // Bound before anything changes, so a busy port leaves the old config serving.
                None => Plan::Bind(bind(&cfg.name, &cfg.listen).await?),
            });
        }
        let keep_proxy = match (&self.forward_proxy, &config.proxy) {
            (Some((old, _)), Some(new)) => old.same_socket(&new.listen) || *old == new.listen,
            _ => false,
        };
        let new_proxy = match &config.proxy {
            Some(p) if !keep_proxy => Some((p, bind(PROXY_LABEL, &p.listen).await?)),
            _ => None,
        };

        let mut summary = ReloadSummary::default();
        let old_names: Vec<String> = self
            .listeners
            .iter()
            .map(|l| l.config.name.clone())
            .collect();
        let mut old: Vec<Option<Listener>> = std::mem::take(&mut self.listeners)
            .into_iter()
            .map(Some)
            .collect();
        for (cfg, plan) in config.upstreams.iter().zip(plans) {
            let listener = match plan {
                Plan::Keep(i, swap) => {
                    let Some(mut listener) = old[i].take() else {
                        unreachable!("each old listener is planned for at most once")
                    };
                    let access_changed = listener.config.access != cfg.access
                        || listener.config.listen != cfg.listen;
                    match swap {
                        Some(mut upstream) => {
                            let old = listener.upstream.load_full();
                            let pin_revoked = revoked.contains(&cfg.name);
                            let same_trust = listener.config.same_trust(cfg) && !pin_revoked;
                            if same_trust {
                                upstream.keep_tunnels_of(&old);
                            }
                            listener.upstream.store(Arc::new(*upstream));
                            if pin_revoked {
                                summary.pins_revoked.push(cfg.name.clone());
                                revoke(
                                    &old,
                                    "the pin it learned on first use was forgotten or replaced",
                                );
                                old.metrics().certificates().clear();
                            } else if !same_trust {
                                revoke(&old, "its pins, address or TLS settings changed");
                                // Learned under pins that may be gone: wait for a handshake under the new ones.
                                old.metrics().certificates().clear();
                            }
                            if !pin_revoked || !listener.config.same_upstream(cfg) {
                                summary.changed.push(cfg.name.clone());
                            }
                        }
                        None if access_changed => summary.changed.push(cfg.name.clone()),
                        None => summary.unchanged.push(cfg.name.clone()),
                    }
                    if access_changed {
                        listener.acceptor.update(&cfg.listen, &cfg.access, true);
                    }
                    listener.config = cfg.clone();
                    listener
                }
                Plan::Bind(socket) => {
                    summary.added.push(cfg.name.clone());
                    self.start(cfg, socket)
                }
            };
            self.listeners.push(listener);
        }
        for listener in old.into_iter().flatten() {
            summary.removed.push(listener.config.name.clone());
            listener.acceptor.close().await;
            revoke(&listener.upstream.load(), "it was removed from the config");
        }
        self.set_proxy_metrics(config.proxy.is_some());
        self.update_routes();
        if keep_proxy {
            if let (Some((listen, acceptor)), Some(p)) = (&mut self.forward_proxy, &config.proxy) {
                acceptor.update(&p.listen, &p.access, false);
                *listen = p.listen.clone();
            }
        } else {
            if let Some((_, acceptor)) = self.forward_proxy.take() {
                acceptor.close().await;
            }
            if let Some((p, socket)) = new_proxy {
                self.start_proxy(p, socket);
            }
        }
        // Renamed or removed: their gauges would otherwise report stale values forever.
        for name in old_names {
            if !config.upstreams.iter().any(|u| u.name == name) {
                self.metrics.forget_upstream(&name);
            }
        }
        self.shutdown_timeout = config.shutdown_timeout;
        if *self.limits != config.limits {
            // Listeners bound from now on use the new limits; kept ones keep theirs.
            self.limits = Arc::new(config.limits.clone());
            summary.limits_changed = true;
        }
        Ok(summary)
    }

    /// Serves until `shutdown` completes, then drains (see [`Proxy::drain`]).
    pub async fn serve(self, shutdown: impl Future<Output = ()>) {
        shutdown.await;
        self.drain().await;
    }

    /// Stops accepting on every listener and lets in-flight requests finish for
    /// up to `shutdown_timeout`.
    pub async fn drain(self) {
        for listener in self.listeners {
            listener.acceptor.close().await;
        }
        if let Some((_, acceptor)) = self.forward_proxy {
            acceptor.close().await;
        }
        drop(self.routes);
        let open = self.drain.open();
        let tunnels = self.tunnels.count();
        tracing::info!(
            open_connections = open,
            tunnels,
            timeout = ?self.shutdown_timeout,
            "listeners closed; waiting for in-flight requests"
        );
        let requests = tokio::time::timeout(self.shutdown_timeout, self.drain.finish());
        let (requests, ()) = tokio::join!(requests, self.tunnels.drain(self.shutdown_timeout));
        match requests {
            Ok(()) => tracing::info!("all connections finished"),
            Err(_) => tracing::warn!(
                timeout = ?self.shutdown_timeout,
                "shutdown_timeout passed; closing the remaining connections"
            ),
        }
    }

    fn start(&self, cfg: &UpstreamConfig, socket: Socket) -> Listener {
        let upstream = Arc::new(ArcSwap::from_pointee(Upstream::new(
            cfg,
            self.metrics.upstream(&cfg.name),
        )));
        // The rules follow what the socket is (a socket systemd passed is only
        // known once taken).
        let policy = Policy::new(&socket.bound(&cfg.listen), &cfg.access, true);
        let acceptor = self.accept(
            socket,
            &cfg.listen,
            policy,
            Target::Upstream(upstream.clone()),
        );
        Listener {
            config: cfg.clone(),
            upstream,
            acceptor,
        }
    }

    /// Serves the `[proxy]` listener on `socket`: routed by host, so only the
    /// user and cross-site checks apply.
    fn start_proxy(&mut self, p: &ProxyConfig, socket: Socket) {
        let policy = Policy::new(&socket.bound(&p.listen), &p.access, false);
        let acceptor = self.accept(
            socket,
            &p.listen,
            policy,
            Target::Routes(self.routes.clone()),
        );
        self.forward_proxy = Some((p.listen.clone(), acceptor));
    }

    fn accept(
        &self,
        socket: Socket,
        configured: &Listen,
        policy: Policy,
        target: Target,
    ) -> Acceptor {
        let local = socket.bound(configured);
        let policy = Arc::new(ArcSwap::from_pointee(policy));
        let connections = match &target {
            Target::Upstream(up) => up.load().metrics().client_connections.clone(),
            Target::Routes(_) => self
                .proxy_metrics
                .as_ref()
                .map_or_else(Gauge::default, |m| m.client_connections.clone()),
        };
        let (stop, stopped) = watch::channel(false);
        let shared = Arc::new(AcceptShared::new(
            target,
            policy.clone(),
            connections,
            LoopContext {
                drain: self.drain.clone(),
                tunnels: self.tunnels.clone(),
                limits: self.limits.clone(),
            },
        ));
        // Every worker accepts on its own socket (Linux, TCP) or its own
        // descriptor of the one socket.
        let workers = 0..self.workers.len().max(1);
        let loops =
            self.workers.spawn_each(workers.map(|worker| {
                accept_loop(socket.share_for(worker), shared.clone(), stopped.clone())
            }));
        Acceptor {
            local,
            policy,
            stop,
            loops,
            socket,
        }
    }
}

/// Closes the tunnels opened through `upstream`, whose trust a reload took back
/// (a revoked pin must not keep carrying data); in-flight plain requests finish.
fn revoke(upstream: &Upstream, why: &str) {
    let closed = upstream.revoke();
    if closed > 0 {
        tracing::warn!(
            upstream = %upstream.name,
            tunnels = closed,
            "closed the upstream's open tunnels: {why}"
        );
    }
}

async fn bind(name: &str, listen: &Listen) -> Result<Socket, BindError> {
    // Detached from this runtime's reactor at once: the workers accept on it.
    let bound = listen::Listener::bind_for_workers(listen).await;
    bound.map_err(|source| {
        let tcp = matches!(listen, Listen::Tcp(_));
        let hint = match source.kind() {
            std::io::ErrorKind::AddrInUse if tcp => {
                " (another program, or another pinproxy, already listens there: stop it or choose another `listen` port)"
            }
            std::io::ErrorKind::PermissionDenied if tcp => {
                " (ports below 1024 need privileges: choose a port above 1024)"
            }
            std::io::ErrorKind::AddrNotAvailable => " (this machine has no such address)",
            _ => "",
        };
        BindError {
            upstream: name.to_string(),
            addr: listen.clone(),
            source,
            hint,
        }
    })
}
