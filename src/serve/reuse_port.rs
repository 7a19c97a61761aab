//! One listening socket per worker for a TCP listener (Linux): with
//! `SO_REUSEPORT` the kernel hands each new connection to one worker's socket
//! and wakes that worker only. On one socket in every worker's epoll, a
//! connection could wake both. Measured with a new connection per request
//! (`perf stat -e syscalls:sys_enter_epoll_wait,context-switches`, ~47k
//! connections): 10,750 → 8,526 `epoll_wait` calls, 22,071 → 20,830 context
//! switches, and 3–7% less CPU per request (`CLOSE=1 bash tests/bench/ab.sh`).
//!
//! The port stays this pinproxy's alone. Before its sockets are bound, one
//! without the option is bound and closed: that fails if anything holds the
//! port, a listener that set the option included (without the probe a second
//! pinproxy would quietly join the first one's group and take half of its
//! clients). While pinproxy listens, a later bind without the option fails, and
//! the kernel lets only a process of the same user join with it.

use std::io;
use std::net::{SocketAddr, TcpListener};

use socket2::{Domain, Socket, Type};

/// As `tokio::net::TcpListener::bind`.
const BACKLOG: i32 = 1024;

/// Binds the first socket of a listener that workers share out: fails with
/// `AddrInUse` if anything already holds `addr` (see the module comment).
/// Port 0 gets a free port, which the other workers' sockets then bind.
pub(crate) fn bind_first(addr: SocketAddr) -> io::Result<TcpListener> {
    let probe = socket(addr)?;
    probe.bind(&addr.into())?;
    let chosen = probe
        .local_addr()?
        .as_socket()
        .ok_or_else(|| io::Error::other("a TCP socket without an IP address"))?;
    // Nothing runs between the probe's close and the bind: a program that
    // binds the port in these few instructions is the only one that can share it.
    drop(probe);
    bind_sibling(chosen)
}

/// Another worker's socket on the port of a socket from [`bind_first`].
pub(crate) fn bind_sibling(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = socket(addr)?;
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

fn socket(addr: SocketAddr) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    // As tokio and std do on Unix: a restart binds again while the old
    // process's connections are still in TIME_WAIT.
    socket.set_reuse_address(true)?;
    Ok(socket)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn nothing_else_binds_the_port_while_the_workers_listen() {
        let first = bind_first("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = first.local_addr().unwrap();
        let _second = bind_sibling(addr).unwrap();
        // Another pinproxy (or any program) starting on the same port.
        let err = bind_first(addr).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse, "{err}");
        let err = TcpListener::bind(addr).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse, "{err}");
    }

    #[test]
    fn a_port_already_held_by_a_sharing_listener_is_refused() {
        // A listener with SO_REUSEPORT set, of this same user: without the
        // probe the kernel would let the new socket join its group.
        let other = bind_sibling("127.0.0.1:0".parse().unwrap()).unwrap();
        let err = bind_first(other.local_addr().unwrap()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse, "{err}");
    }

    #[tokio::test]
    async fn the_kernel_spreads_new_connections_over_the_workers_sockets() {
        let first = bind_first("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = first.local_addr().unwrap();
        let sockets = [first, bind_sibling(addr).unwrap()];
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for (index, socket) in sockets.into_iter().enumerate() {
            let listener = tokio::net::TcpListener::from_std(socket).unwrap();
            let tx = tx.clone();
            tokio::spawn(async move {
                while let Ok((mut stream, _)) = listener.accept().await {
                    let _ = tx.send(index);
                    let _ = stream.write_all(b"x").await;
                }
            });
        }
        // Each connection is answered by whichever socket the kernel chose; 32
        // all on one of two sockets would be a 1 in 2^31 chance.
        for _ in 0..32 {
            let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
            let mut byte = [0u8; 1];
            client.read_exact(&mut byte).await.unwrap();
        }
        let mut accepted = [0; 2];
        for _ in 0..32 {
            accepted[rx.recv().await.unwrap()] += 1;
        }
        assert!(accepted.iter().all(|&n| n > 0), "{accepted:?}");
    }
}
