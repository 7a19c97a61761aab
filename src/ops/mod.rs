//! The operations side: `pinproxy run` as a long-lived process (`service`),
//! its reloads (`reload`) of a file `platform::permissions` trusts, the admin endpoint
//! (`admin`) serving `telemetry`'s metrics and the `status` page, and systemd
//! notifications (`systemd`). The top of the library: nothing below asks it.

pub(crate) mod admin;
pub(crate) mod checks;
pub(crate) mod reload;
pub mod service;
pub(crate) mod status;
// The service manager's notifications: systemd's on Unix; on Windows, the
// service control manager's (`ops/not_unix/systemd.rs`).
#[cfg_attr(not(unix), path = "not_unix/systemd.rs")]
pub(crate) mod systemd;
#[cfg(windows)]
pub mod windows_service;
