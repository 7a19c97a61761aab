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
    /// `LISTEN_FDS` was set but not for this process (`LISTEN_PID` missing or
    /// another's): why its descriptors were not taken.
    not_ours: Option<String>,
}

fn passed() -> &'static Mutex<Passed> {
    static PASSED: OnceLock<Mutex<Passed>> = OnceLock::new();
    PASSED.get_or_init(|| {
        // sd_listen_fds(3): the descriptors are ours only when LISTEN_PID names
        // this process. listenfd also accepts a missing LISTEN_PID (it removes
        // the variable, so it is read first): an inherited environment could
        // then hand pinproxy descriptors that were never sockets for it.
        let not_ours =
            std::env::var_os("LISTEN_FDS").and_then(|_| match std::env::var("LISTEN_PID") {
                Ok(pid) if pid.trim() == std::process::id().to_string() => None,
                Ok(pid) => Some(format!("LISTEN_PID is {pid:?}, another process's")),
                Err(_) => Some("LISTEN_PID is not set".to_string()),
            });
        let fds = if not_ours.is_some() {
            ListenFd::empty()
        } else {
            ListenFd::from_env()
        };
        // Unnamed sockets are called "unknown", as sd_listen_fds_with_names() does.
        let mut names: Vec<String> = std::env::var("LISTEN_FDNAMES")
            .map(|v| v.split(':').map(String::from).collect())
            .unwrap_or_default();
        names.resize(fds.len(), "unknown".to_string());
        Mutex::new(Passed {
            fds,
            names,
            not_ours,
        })
    })
}

/// Takes the socket systemd passed as `name`.
pub fn take(name: &str) -> io::Result<Inherited> {
    let mut passed = passed().lock().unwrap_or_else(|p| p.into_inner());
    let not_found = |message: String| io::Error::new(io::ErrorKind::NotFound, message);
    if let Some(why) = &passed.not_ours {
        return Err(not_found(format!(
            "listen = \"systemd:{name}\", but LISTEN_FDS is set and {why}: those descriptors were not passed to this \
             process, so pinproxy does not take them. systemd and systemd-socket-activate set LISTEN_PID; a \
             launcher that passes sockets must set it to pinproxy's pid"
        )));
    }
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
        listening(&tcp, name)?;
        return Ok(Inherited::Tcp(tcp));
    }
    match passed.fds.take_unix_listener(index) {
        Ok(Some(unix)) => {
            listening(&unix, name)?;
            Ok(Inherited::Unix(unix))
        }
        Ok(None) => Err(taken()),
        Err(e) => Err(io::Error::new(
            e.kind(),
            format!("the socket systemd passed as {name:?} is neither a TCP nor a Unix stream listener: {e}"),
        )),
    }
}

/// A passed stream socket must be listening (`SO_ACCEPTCONN`): a bound but not
/// listening socket, or a connected one, would make every `accept` fail, over
/// and over, for as long as pinproxy runs.
fn listening(socket: &impl std::os::fd::AsFd, name: &str) -> io::Result<()> {
    use nix::sys::socket::{getsockopt, sockopt};
    let accepts = getsockopt(socket, sockopt::AcceptConn).map_err(io::Error::from)?;
    let stream = getsockopt(socket, sockopt::SockType)
        .is_ok_and(|t| t == nix::sys::socket::SockType::Stream);
    if accepts && stream {
        return Ok(());
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidInput,
        format!(
            "the socket systemd passed as {name:?} is not a listening stream socket (a bound but not listening, or a \
             connected, socket cannot accept connections): in the .socket unit use ListenStream= (Accept=no)"
        ),
    ))
}
