//! The serving side: the listening sockets (`listen`, or those systemd passed,
//! `socket_activation`), the connection workers (`workers`), the proxy's
//! listeners with reload and drain (`server`), their accept loops (`accept`),
//! one client connection (`connection`; who the client is: `platform::peer`) and the
//! one shutdown signal (`shutdown`).

mod accept;
mod connection;
pub(crate) mod listen;
pub mod server;
pub mod shutdown;
pub(crate) mod socket_activation;
mod unix_socket;
pub(crate) mod workers;
