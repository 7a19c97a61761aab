//! Listening sockets systemd passed (socket activation): `LISTEN_FDS` and
//! `LISTEN_FDNAMES`, for `listen = "systemd:NAME"`. The `listenfd` crate turns
//! the descriptors into listeners, so no `unsafe` is needed here. Each socket
//! can be taken once; a reload keeps the listeners that already hold theirs.

use std::io;
use std::net::TcpListener;
use std::os::unix::net::UnixListener;
use std::sync::{Mutex, OnceLock};

use listenfd::ListenFd;

/// A socket systemd passed.
pub enum Inherited {
    /// A TCP listening socket.
    Tcp(TcpListener),
    /// A Unix stream listening socket.
    Unix(UnixListener),
}

/// The passed descriptors and their names, read once from the environment.
struct Passed {
    fds: ListenFd,
    names: Vec<String>,
}

fn passed() -> &'static Mutex<Passed> {
    static PASSED: OnceLock<Mutex<Passed>> = OnceLock::new();
    PASSED.get_or_init(|| {
        let fds = ListenFd::from_env();
        // Unnamed sockets are called "unknown", as sd_listen_fds_with_names() does.
        let mut names: Vec<String> = std::env::var("LISTEN_FDNAMES")
            .map(|v| v.split(':').map(String::from).collect())
            .unwrap_or_default();
        names.resize(fds.len(), "unknown".to_string());
        Mutex::new(Passed { fds, names })
    })
}

/// Takes the socket systemd passed as `name`.
pub fn take(name: &str) -> io::Result<Inherited> {
    let mut passed = passed().lock().unwrap_or_else(|p| p.into_inner());
    let not_found = |message: String| io::Error::new(io::ErrorKind::NotFound, message);
    if passed.fds.len() == 0 {
        return Err(not_found(format!(
            "listen = \"systemd:{name}\", but systemd passed no sockets (LISTEN_FDS is unset): start pinproxy from a \
             .socket unit with FileDescriptorName={name} (see deploy/systemd/pinproxy.socket), or test with \
             `systemd-socket-activate -l 127.0.0.1:8443 --fdname={name} pinproxy run …`"
        )));
    }
    let Some(index) = passed.names.iter().position(|n| n == name) else {
        return Err(not_found(format!(
            "systemd passed no socket named {name:?}; it passed: {} (FileDescriptorName= in the .socket unit names them)",
            passed.names.join(", ")
        )));
    };
    let taken = || {
        io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("the socket systemd passed as {name:?} is already in use by another listener (or was closed by a reload; restart pinproxy to get it back)"),
        )
    };
    // A listener of the wrong family is an error from take_tcp_listener, and
    // the descriptor stays there for take_unix_listener.
    if let Ok(Some(tcp)) = passed.fds.take_tcp_listener(index) {
        return Ok(Inherited::Tcp(tcp));
    }
    match passed.fds.take_unix_listener(index) {
        Ok(Some(unix)) => Ok(Inherited::Unix(unix)),
        Ok(None) => Err(taken()),
        Err(e) => Err(io::Error::new(
            e.kind(),
            format!("the socket systemd passed as {name:?} is neither a TCP nor a Unix stream listener: {e}"),
        )),
    }
}
