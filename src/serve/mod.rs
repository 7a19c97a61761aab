//! The serving side: the listening sockets (`listen`, or those systemd passed,
//! `socket_activation`), the connection workers (`workers`), the proxy's
//! listeners with reload and drain (`server`), their accept loops (`accept`) on
//! a socket per worker where the system allows (`reuse_port`),
//! one client connection (`connection`; who the client is: `platform::peer`), an
//! idle HTTP/1 connection without its parser's buffers (`park`) and the
//! one shutdown signal (`shutdown`).

mod accept;
mod connection;
pub(crate) mod listen;
mod park;
#[cfg(target_os = "linux")]
mod reuse_port;
pub mod server;
pub mod shutdown;
// Unix sockets and systemd's socket activation exist only on Unix; elsewhere
// stand-ins whose types can hold no value keep the listener code one.
#[cfg_attr(not(unix), path = "not_unix/socket_activation.rs")]
pub(crate) mod socket_activation;
#[cfg_attr(not(unix), path = "not_unix/unix_socket.rs")]
pub(crate) mod unix_socket;
pub(crate) mod workers;
