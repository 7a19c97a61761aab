//! The request path on the client side: who may use a listener (`access`),
//! one request forwarded (`forward`) or routed by host first (`proxy_mode`),
//! pinproxy's own error answers (`respond`), the response body that logs
//! (`logged_body`), upgraded tunnels (`tunnel`), hop-by-hop headers
//! (`headers`), the idle timer every client connection runs under (`idle`),
//! and the one summary line for HTTP/2 rapid-reset connections (`rapid_reset`).

pub(crate) mod access;
pub(crate) mod brokered;
pub(crate) mod command_policy;
pub(crate) mod forward;
pub mod headers;
pub(crate) mod idle;
pub(crate) mod logged_body;
pub(crate) mod proxy_mode;
pub(crate) mod rapid_reset;
pub(crate) mod respond;
pub(crate) mod sniff;
pub(crate) mod tunnel;
