//! Listening sockets: a TCP address, a Unix socket file (`unix_socket`) or a
//! socket systemd passed (`socket_activation`), bound the same way for every
//! listener, the admin endpoint included, and copied to each worker (on Linux a
//! TCP address gets a socket per worker instead, `reuse_port`).

use std::io;
use std::net::SocketAddr;
use std::path::Path;

use tokio::net::{TcpListener, TcpStream};

use crate::config::{Listen, UnixSocket};
use crate::serve::socket_activation as systemd;
use crate::serve::unix_socket::{
    bind_unix, duplicate, SocketFile, StdUnixListener, UnixListener, UnixStream,
};

/// A bound listening socket.
pub enum Listener {
    /// A TCP listener.
    Tcp(TcpListener),
    /// A Unix-socket listener and the file it owns (held for its `Drop`, which
    /// removes the file if it is still ours); none for a socket systemd passed.
    Unix(UnixListener, #[allow(dead_code)] Option<SocketFile>),
}

/// An accepted client connection.
pub enum Accepted {
    /// From a TCP listener, with the client's address.
    Tcp(TcpStream, SocketAddr),
    /// From a Unix-socket listener.
    Unix(UnixStream),
}

impl Listener {
    /// Binds `listen`.
    pub async fn bind(listen: &Listen) -> io::Result<Listener> {
        match listen {
            Listen::Tcp(addr) => Ok(Listener::Tcp(TcpListener::bind(addr).await?)),
            Listen::Unix(socket) => {
                let (std, file) = bind_unix(socket)?;
                std.set_nonblocking(true)?;
                Ok(Listener::Unix(UnixListener::from_std(std)?, Some(file)))
            }
            Listen::Systemd(socket) => {
                let inherited = systemd::take(&socket.name)?;
                match inherited {
                    systemd::Inherited::Tcp(std) => {
                        let addr = std.local_addr()?;
                        if !addr.ip().is_loopback() && !socket.allow_non_loopback {
                            return Err(io::Error::new(
                                io::ErrorKind::PermissionDenied,
                                format!(
                                    "systemd passed {addr} for systemd:{}, which is not a loopback address; set \
                                     ListenStream=127.0.0.1:PORT in the .socket unit, or allow_non_loopback = true if \
                                     that exposure is really intended",
                                    socket.name
                                ),
                            ));
                        }
                        std.set_nonblocking(true)?;
                        Ok(Listener::Tcp(TcpListener::from_std(std)?))
                    }
                    systemd::Inherited::Unix(std) => {
                        std.set_nonblocking(true)?;
                        Ok(Listener::Unix(UnixListener::from_std(std)?, None))
                    }
                }
            }
        }
    }

    /// Accepts the next connection.
    pub async fn accept(&self) -> io::Result<Accepted> {
        match self {
            Listener::Tcp(tcp) => {
                let (stream, peer) = tcp.accept().await?;
                Ok(Accepted::Tcp(stream, peer))
            }
            Listener::Unix(unix, _) => Ok(Accepted::Unix(unix.accept().await?.0)),
        }
    }

    /// A second descriptor of the same socket, for an accept loop on another
    /// worker's reactor. This `Listener` still owns the socket file.
    pub fn share(&self) -> io::Result<SharedListener> {
        Ok(match self {
            Listener::Tcp(tcp) => {
                SharedListener::Tcp(socket2::SockRef::from(tcp).try_clone()?.into())
            }
            Listener::Unix(unix, _) => SharedListener::Unix(duplicate(unix)?),
        })
    }

    /// Binds `listen` for the workers' accept loops (see
    /// [`OwnedListener::share_for`]), on no runtime's reactor.
    pub async fn bind_for_workers(listen: &Listen) -> io::Result<OwnedListener> {
        #[cfg(target_os = "linux")]
        if let Listen::Tcp(addr) = listen {
            let first = super::reuse_port::bind_first(*addr)?;
            let spread = Some(first.local_addr()?);
            return Ok(OwnedListener {
                shared: SharedListener::Tcp(first),
                file: None,
                spread,
            });
        }
        Listener::bind(listen).await.and_then(Listener::detach)
    }

    /// The socket without a reactor (no runtime is woken by its connections
    /// until an accept loop registers a copy), still owning its file.
    fn detach(self) -> io::Result<OwnedListener> {
        let shared = self.share()?;
        let file = match self {
            Listener::Tcp(_) => None,
            Listener::Unix(_, file) => file,
        };
        Ok(OwnedListener {
            shared,
            file,
            spread: None,
        })
    }

    /// Where it is bound: with port 0, the port the system chose.
    pub fn bound(&self, configured: &Listen) -> Listen {
        match self {
            Listener::Tcp(tcp) => tcp.local_addr().map_or(configured.clone(), Listen::Tcp),
            Listener::Unix(unix, _) => {
                let addr = unix.local_addr().ok();
                unix_bound(addr.as_ref().and_then(|a| a.as_pathname()), configured)
            }
        }
    }
}

/// A listening socket that accept loops take copies of; closing the socket
/// (and removing its file) waits for this and every copy.
pub struct OwnedListener {
    shared: SharedListener,
    /// Held for its `Drop`, and for a reload that changes its mode or group.
    file: Option<SocketFile>,
    /// The address of a TCP socket that every worker after the first gets a
    /// socket of its own on (`reuse_port`).
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    spread: Option<SocketAddr>,
}

impl OwnedListener {
    /// What the accept loop of worker `worker` accepts on: a socket of its own
    /// on a spread TCP address, else another descriptor of this one.
    pub fn share_for(&self, worker: usize) -> io::Result<SharedListener> {
        #[cfg(target_os = "linux")]
        if let (Some(addr), 1..) = (self.spread, worker) {
            return super::reuse_port::bind_sibling(addr).map(SharedListener::Tcp);
        }
        #[cfg(not(target_os = "linux"))]
        let _ = worker;
        Ok(match &self.shared {
            SharedListener::Tcp(tcp) => SharedListener::Tcp(tcp.try_clone()?),
            SharedListener::Unix(unix) => SharedListener::Unix(unix.try_clone()?),
        })
    }

    /// Where it is bound: with port 0, the port the system chose.
    pub fn bound(&self, configured: &Listen) -> Listen {
        match &self.shared {
            SharedListener::Tcp(tcp) => tcp.local_addr().map_or(configured.clone(), Listen::Tcp),
            SharedListener::Unix(unix) => {
                let addr = unix.local_addr().ok();
                unix_bound(addr.as_ref().and_then(|a| a.as_pathname()), configured)
            }
        }
    }
}

/// What a Unix listener is bound to: as configured, or, for a socket systemd
/// passed, its path (the unit's mode and owner apply, not pinproxy's).
fn unix_bound(path: Option<&Path>, configured: &Listen) -> Listen {
    match (configured, path) {
        (Listen::Systemd(_), Some(path)) => Listen::Unix(crate::config::UnixSocket {
            path: path.to_path_buf(),
            mode: crate::config::DEFAULT_SOCKET_MODE,
            group: None,
        }),
        _ => configured.clone(),
    }
}

/// A listening socket's descriptor on its way to the worker that accepts on it.
pub enum SharedListener {
    /// A TCP listener.
    Tcp(std::net::TcpListener),
    /// A Unix-socket listener.
    Unix(StdUnixListener),
}

impl SharedListener {
    /// Registers it with the calling runtime's reactor.
    pub fn register(self) -> io::Result<WorkerListener> {
        Ok(match self {
            SharedListener::Tcp(std) => {
                // Requests and responses are written whole; Nagle must not hold
                // back their tail. Set on the listening socket, every connection
                // accepted on it starts with it on Linux: one system call per
                // connection fewer (`accept`).
                socket2::SockRef::from(&std).set_tcp_nodelay(true)?;
                WorkerListener::Tcp(TcpListener::from_std(std)?)
            }
            SharedListener::Unix(std) => WorkerListener::Unix(UnixListener::from_std(std)?),
        })
    }
}

/// One worker's descriptor of a listening socket.
pub enum WorkerListener {
    /// A TCP listener.
    Tcp(TcpListener),
    /// A Unix-socket listener.
    Unix(UnixListener),
}

impl WorkerListener {
    /// Accepts the next connection.
    pub async fn accept(&self) -> io::Result<Accepted> {
        match self {
            WorkerListener::Tcp(tcp) => {
                let (stream, peer) = tcp.accept().await?;
                Ok(Accepted::Tcp(stream, peer))
            }
            WorkerListener::Unix(unix) => Ok(Accepted::Unix(unix.accept().await?.0)),
        }
    }
}

impl OwnedListener {
    /// Sets the socket file's mode and group (a reload that changed them): only
    /// on the file this process created, never through a symlink or on whatever
    /// else now sits at the path (someone who can write the socket's directory
    /// could have planted a link to a file of their choosing). A socket systemd
    /// passed keeps the unit's settings.
    pub fn apply_permissions(&self, socket: &UnixSocket) -> io::Result<()> {
        match &self.file {
            Some(file) => file.set_permissions(socket),
            None => Ok(()),
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connections_accepted_on_every_worker_s_socket_have_nodelay() {
        let listen = Listen::Tcp("127.0.0.1:0".parse().unwrap());
        let socket = Listener::bind_for_workers(&listen).await.unwrap();
        let Listen::Tcp(addr) = socket.bound(&listen) else {
            unreachable!("a TCP listener")
        };
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for worker in 0..2 {
            let accepting = socket.share_for(worker).unwrap().register().unwrap();
            let tx = tx.clone();
            tokio::spawn(async move {
                while let Ok(Accepted::Tcp(stream, _)) = accepting.accept().await {
                    let _ = tx.send((worker, stream.nodelay().unwrap()));
                }
            });
        }
        let mut clients = Vec::new();
        let mut seen = [false; 2];
        for _ in 0..32 {
            clients.push(TcpStream::connect(addr).await.unwrap());
            let (worker, nodelay) = rx.recv().await.unwrap();
            assert!(
                nodelay,
                "a connection on worker {worker} without TCP_NODELAY"
            );
            seen[worker] = true;
        }
        assert_eq!(seen, [true, true], "both workers' sockets accepted");
    }
}
