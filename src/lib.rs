//! pinproxy: a loopback plain-HTTP listener that forwards every request to one
//! configured HTTPS upstream, trusting that upstream only if its certificate
//! matches a configured fingerprint (pin).
//!
//! The flow from a client to the upstream socket:
//! [`config`] (what to do) → [`server`] (listeners from [`listen`], accept loop,
//! drain; who the client is from [`peer`]) → [`access`] (may this client and
//! this request use the listener?) → [`forward`] (one request: headers, errors,
//! access log, upgrades) → [`upstream`]
//! (pools, failover and connector) → [`verify`] (the pin check inside the TLS
//! handshake). [`proxy_mode`] routes `http_proxy` clients to an upstream by host.
//!
//! Every client connection runs under an idle timer (`idle`).
//!
//! Around that path: [`service`] runs it as a long-lived process (reloads from
//! [`reload`] of a file [`permissions`] trusts, readiness and [`metrics`] on the
//! [`admin`] endpoint, which [`health`] asks, [`systemd`] notifications).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod access;
pub mod access_log;
pub mod admin;
pub mod check;
pub mod config;
pub mod demo;
pub mod forward;
pub mod headers;
pub mod health;
mod idle;
pub mod listen;
pub mod metrics;
pub mod mock_api;
pub mod peer;
pub mod permissions;
pub mod pin;
pub mod probe;
pub mod proxy_mode;
pub mod reload;
pub mod rfc1751;
pub mod server;
pub mod service;
pub mod shutdown;
pub mod systemd;
pub mod upstream;
pub mod verify;
pub mod workers;
