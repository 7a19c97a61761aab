//! What the proxy tells its operator about itself while it runs: the
//! `metrics` it counts, the `access_log` it writes, the `audit` trail, and
//! where every log line goes (`logging`). A bottom layer beside
//! `platform`: every part of the request path reports here, and it uses
//! nothing else in the crate, so no arrow runs back up from `tls` or
//! `upstream` to the operations side that serves these figures.

pub mod access_log;
pub mod audit;
pub mod logging;
pub(crate) mod metrics;
mod text_line;
