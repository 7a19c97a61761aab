//! Where there is no systemd (Windows), this stands in for
//! `serve/socket_activation.rs`: the config refuses `listen = "systemd:NAME"`
//! here, naming the platform, and `take` says so again should anything ask.

use std::io;
use std::net::TcpListener;

use crate::serve::unix_socket::StdUnixListener;

/// A socket systemd passed (never, here).
#[allow(dead_code)] // matched by the listener code, never made
pub enum Inherited {
    /// A TCP listening socket.
    Tcp(TcpListener),
    /// A Unix stream listening socket.
    Unix(StdUnixListener),
}

/// No service manager passes sockets on this platform.
pub fn take(name: &str) -> io::Result<Inherited> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        format!(
            "listen = \"systemd:{name}\": socket activation is systemd's, and there is none on {}; listen on a \
             loopback TCP address",
            std::env::consts::OS
        ),
    ))
}
