//! pinproxy: a loopback plain-HTTP listener that forwards every request to one
//! configured HTTPS upstream, trusting that upstream only if its certificate
//! matches a configured fingerprint (pin).
//!
//! The folders show the architecture: `http` is the client side's request
//! path, `upstream` the pool and connector on the server side, `tls` the
//! trust decision, `cmd` the subcommands other than `run`.
//!
//! The flow from a client to the upstream socket:
//! `config` (what to do) → `server` (listeners from `listen`, or from
//! `socket_activation` for sockets systemd passed; accept loop,
//! drain; who the client is from `peer`) → `http::access` (may this client
//! and this request use the listener?) → `http::forward` (one request:
//! headers, errors, access log, upgrades) → `upstream` (pools, failover and
//! connector) → `tls::verify` (the pin check inside the TLS handshake).
//! `http::proxy_mode` routes `http_proxy` clients to an upstream by host.
//! Every client connection runs under an idle timer (`http::idle`).
//!
//! Around that path: `service` runs it as a long-lived process (reloads from
//! `reload` of a file `permissions` trusts, readiness, `metrics` and the `status` page
//! on the `admin` endpoint, which `cmd::health` asks, `systemd` notifications).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod access_log;
pub(crate) mod admin;
pub mod cmd;
pub mod config;
pub mod http;
pub(crate) mod listen;
pub(crate) mod metrics;
pub mod peer;
pub(crate) mod permissions;
pub(crate) mod reload;
pub mod server;
pub mod service;
pub mod shutdown;
pub(crate) mod socket_activation;
pub(crate) mod status;
pub(crate) mod systemd;
pub mod tls;
pub(crate) mod upstream;
pub(crate) mod workers;
