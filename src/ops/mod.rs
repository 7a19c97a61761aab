//! The operations side: `pinproxy run` as a long-lived process (`service`),
//! its reloads (`reload`) of a file `platform::permissions` trusts, the admin endpoint
//! (`admin`) with its `metrics` and `status` page, the access log
//! (`access_log`) and systemd notifications (`systemd`).

pub mod access_log;
pub(crate) mod admin;
pub(crate) mod metrics;
pub(crate) mod reload;
pub mod service;
pub(crate) mod status;
pub(crate) mod systemd;
