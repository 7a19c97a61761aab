//! The request path on the client side: who may use a listener ([`access`]),
//! one request forwarded ([`forward`]) or routed by host first ([`proxy_mode`]),
//! pinproxy's own error answers ([`respond`]), the response body that logs
//! ([`logged_body`]), upgraded tunnels ([`tunnel`]), hop-by-hop headers
//! ([`headers`]), and the idle timer every client connection runs under (`idle`).

pub mod access;
pub mod forward;
pub mod headers;
pub(crate) mod idle;
pub mod logged_body;
pub mod proxy_mode;
pub mod respond;
pub mod tunnel;
