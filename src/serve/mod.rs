//! The serving side: the listening sockets (`listen`, or those systemd passed,
//! `socket_activation`), the connection workers (`workers`), the accept loops,
//! reload and drain (`server`), who the client is (`peer`) and the one shutdown
//! signal (`shutdown`).

pub(crate) mod listen;
pub mod peer;
pub mod server;
pub mod shutdown;
pub(crate) mod socket_activation;
pub(crate) mod workers;
