//! What the proxy tells its operator about itself while it runs: the
//! `metrics` it counts and the `access_log` it writes. A bottom layer beside
//! `platform`: every part of the request path reports here, and it uses
//! nothing else in the crate, so no arrow runs back up from `tls` or
//! `upstream` to the operations side that serves these figures.

pub mod access_log;
pub(crate) mod metrics;
