//! pinproxy: a loopback plain-HTTP listener that forwards every request to one
//! configured HTTPS upstream, trusting that upstream only if its certificate
//! matches a configured fingerprint (pin).
//!
//! The folders show the architecture: `config` what to do, `serve` the
//! listening side (sockets, workers, accept loops), `http` the client side's
//! request path, `upstream` the pool and connector on the server side, `tls`
//! the trust decision, `ops` what runs around it (the process, reloads, admin
//! endpoint, status page), `telemetry` the metrics and access log every layer
//! reports to, `platform` what the operating system says about sockets' and
//! files' owners and which worker a thread is, `cmd` the subcommands other
//! than `run`. Arrows point one way, down this list read from the end:
//! `cmd` → `ops` → `serve` → `http` → `upstream` → `config` → `tls` →
//! `telemetry` → `platform`. Where an operating system lacks something
//! (Windows: Unix sockets, systemd, file modes), a `not_unix/` stand-in of the
//! same shape takes the Unix module's place, so no `cfg` enters the request path.
//!
//! The flow from a client to the upstream socket:
//! `config` (what to do) → `serve::server` (listeners from `serve::listen`, or
//! from `serve::socket_activation` for sockets systemd passed; accept loop,
//! drain; who the client is from `platform::peer`) → `http::access` (may this
//! client and this request use the listener?) → `http::forward` (one request:
//! headers, errors, access log, upgrades) → `upstream` (pools, failover and
//! connector) → `tls::verify` (the pin check inside the TLS handshake).
//! `http::proxy_mode` routes `http_proxy` clients to an upstream by host.
//! Every client connection runs under an idle timer (`http::idle`).
//!
//! Around that path: `ops::service` runs it as a long-lived process (reloads
//! from `ops::reload` of a file `platform::permissions` trusts, readiness,
//! `telemetry::metrics` and the `ops::status` page on the `ops::admin` endpoint,
//! which `cmd::health` asks, `ops::systemd` notifications).

// Forbidden outright on Unix. On Windows the service entry point comes from
// windows-service's macro, whose FFI glue is allowed in that one place.
#![cfg_attr(not(windows), forbid(unsafe_code))]
#![cfg_attr(windows, deny(unsafe_code))]
#![warn(missing_docs)]

pub mod cmd;
pub mod config;
pub mod http;
pub mod ops;
pub mod platform;
pub mod serve;
pub mod telemetry;
pub mod tls;
pub(crate) mod upstream;

// The public names tools and tests use, where they were before the folders.
pub use ops::service;
pub use platform::peer;
pub use serve::{server, shutdown};
pub use telemetry::access_log;
