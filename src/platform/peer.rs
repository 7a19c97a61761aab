//! Who is on the other end of a client connection: the local user (uid) that
//! owns the client's socket, for `allowed_users`.
//!
//! On a Unix socket the kernel hands it over with the connection
//! (`SO_PEERCRED`). On a loopback TCP connection the client's socket is another
//! socket on this machine, and the kernel knows its owner: pinproxy asks
//! `sock_diag` (the netlink interface `ss` uses) for the one socket with the
//! connection's exact 4-tuple, and falls back to reading `/proc/net/tcp{,6}`
//! where netlink is not allowed. The netlink query costs the same however many
//! sockets the machine has; the `/proc` scan grows with them (figures in the
//! README, "Who can use the listener"). On Windows the TCP table with owning
//! processes names the client's process, and its token the account
//! (`platform/windows`); there the number is pinproxy's own for that account.

use std::io;
use std::net::SocketAddr;

/// Whether [`tcp_owner`] can work on this platform; elsewhere `allowed_users`
/// on a TCP listener is a configuration error.
pub const TCP_OWNER_SUPPORTED: bool = cfg!(any(target_os = "linux", windows));

/// The uid of the process at the other end of a Unix-socket connection.
#[cfg(unix)]
pub fn unix_peer(stream: &tokio::net::UnixStream) -> Option<u32> {
    stream.peer_cred().ok().map(|cred| cred.uid())
}

/// The uid behind an accepted TCP connection from `peer`, where the kernel
/// can tell (it costs a query: call it only where `allowed_users` needs it).
pub fn tcp_client(stream: &tokio::net::TcpStream, peer: SocketAddr) -> Option<u32> {
    let local = stream.local_addr().ok()?;
    match tcp_owner(peer, local) {
        Ok(uid) => Some(uid),
        Err(e) => {
            tracing::debug!(peer = %peer, error = %e, "cannot tell who owns the client socket");
            None
        }
    }
}

/// The uid that owns the client socket of the TCP connection from `peer` to
/// `local`, when that client is on this machine. An error when the kernel
/// knows no such socket (the client is remote, or already gone), and when the
/// socket it knows is not held by a process any more: a socket in TIME_WAIT or
/// SYN_RECV reports uid 0 (the kernel keeps no owner for those), and one its
/// process already closed (inode 0) proves nothing about who sent the bytes
/// waiting for us. Such an owner is unknown, never root.
pub fn tcp_owner(peer: SocketAddr, local: SocketAddr) -> io::Result<u32> {
    #[cfg(target_os = "linux")]
    {
        match linux::sock_diag_owner(peer, local) {
            // No netlink here (a sandbox that allows only inet and unix
            // sockets: EAFNOSUPPORT; a kernel or emulator without sock_diag,
            // such as qemu-user or gVisor: EPROTONOSUPPORT): the slower scan
            // gives the same answer.
            Err(e)
                if e.kind() == io::ErrorKind::PermissionDenied
                    || matches!(e.raw_os_error(), Some(93 | 97)) =>
            {
                linux::proc_net_owner(peer, local)
            }
            other => other,
        }
    }
    #[cfg(windows)]
    {
        super::windows::tcp_owner::tcp_owner(peer, local)
    }
    #[cfg(not(any(target_os = "linux", windows)))]
    {
        let _ = (peer, local);
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "this platform cannot tell who owns a TCP socket",
        ))
    }
}

/// The sock_diag lookup alone (for measuring it against the `/proc` scan).
#[cfg(target_os = "linux")]
pub fn tcp_owner_sock_diag(peer: SocketAddr, local: SocketAddr) -> io::Result<u32> {
    linux::sock_diag_owner(peer, local)
}

/// The `/proc/net/tcp{,6}` scan alone (for measuring it against sock_diag).
#[cfg(target_os = "linux")]
pub fn tcp_owner_proc(peer: SocketAddr, local: SocketAddr) -> io::Result<u32> {
    linux::proc_net_owner(peer, local)
}

#[cfg(target_os = "linux")]
mod linux {
    use std::io;
    use std::net::{IpAddr, SocketAddr};

    use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_REQUEST};
    use netlink_packet_sock_diag::constants::{AF_INET, AF_INET6, IPPROTO_TCP};
    use netlink_packet_sock_diag::inet::{ExtensionFlags, InetRequest, SocketId, StateFlags};
    use netlink_packet_sock_diag::SockDiagMessage;
    use netlink_sys::{protocols::NETLINK_SOCK_DIAG, Socket};

    fn not_found() -> io::Error {
        io::Error::new(
            io::ErrorKind::NotFound,
            "no local socket has this connection's address (a remote client, or one already gone)",
        )
    }

    /// One exact-match query (no dump): the kernel looks the 4-tuple up in
    /// its connection hash and answers with that socket alone.
    pub(super) fn sock_diag_owner(peer: SocketAddr, local: SocketAddr) -> io::Result<u32> {
        // The client's socket is the one whose own address is `peer`.
        let family = if peer.is_ipv4() { AF_INET } else { AF_INET6 };
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST;
        let mut request = NetlinkMessage::new(
            header,
            SockDiagMessage::InetRequest(InetRequest {
                family,
                protocol: IPPROTO_TCP,
                extensions: ExtensionFlags::empty(),
                states: StateFlags::all(),
                socket_id: SocketId {
                    source_port: peer.port(),
                    destination_port: local.port(),
                    source_address: peer.ip(),
                    destination_address: local.ip(),
                    interface_id: 0,
                    // INET_DIAG_NOCOOKIE: match by address, not by cookie.
                    cookie: [0xff; 8],
                },
            })
            .into(),
        );
        request.finalize();
        let mut buf = vec![0; request.buffer_len()];
        request.serialize(&mut buf);

        let socket = Socket::new(NETLINK_SOCK_DIAG)?;
        socket.send_to(&buf, &netlink_sys::SocketAddr::new(0, 0), 0)?;
        let mut answer = Vec::with_capacity(1024);
        socket.recv(&mut answer, 0)?;
        let message = NetlinkMessage::<SockDiagMessage>::deserialize(&answer)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
        match message.payload {
            NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(response)) => {
                let h = &response.header;
                live_owner(h.state, h.inode, h.uid)
            }
            NetlinkPayload::Error(e) => match e.code {
                Some(code) if -code.get() == 2 => Err(not_found()),
                Some(code) => Err(io::Error::from_raw_os_error(-code.get())),
                None => Err(not_found()),
            },
            _ => Err(not_found()),
        }
    }

    /// Scans `/proc/net/tcp` (or `tcp6`) for the line whose local address is
    /// `peer` and remote address is `local`; its eighth column is the uid.
    pub(super) fn proc_net_owner(peer: SocketAddr, local: SocketAddr) -> io::Result<u32> {
        let (file, want_local, want_remote) = match (peer.ip(), local.ip()) {
            (IpAddr::V4(p), IpAddr::V4(l)) => {
                ("/proc/net/tcp", hex_v4(p.octets()), hex_v4(l.octets()))
            }
            (p, l) => ("/proc/net/tcp6", hex_v6(&to_v6(p)), hex_v6(&to_v6(l))),
        };
        let want_local = format!("{want_local}:{:04X}", peer.port());
        let want_remote = format!("{want_remote}:{:04X}", local.port());
        let table = std::fs::read_to_string(file)?;
        for line in table.lines().skip(1) {
            let mut cols = line.split_whitespace();
            let (Some(l), Some(r)) = (cols.nth(1), cols.next()) else {
                continue;
            };
            if l == want_local && r == want_remote {
                // state, tx:rx queue, timer, retransmits, uid, timeout, inode.
                let unreadable = || io::Error::new(io::ErrorKind::InvalidData, "unreadable line");
                let state = cols.next().and_then(|s| u8::from_str_radix(s, 16).ok());
                let uid = cols.nth(3).and_then(|uid| uid.parse().ok());
                let inode = cols.nth(1).and_then(|inode| inode.parse().ok());
                let (Some(state), Some(uid), Some(inode)) = (state, uid, inode) else {
                    return Err(unreadable());
                };
                return live_owner(state, inode, uid);
            }
        }
        Err(not_found())
    }

    /// The owner of a socket a process still holds, in a state where the
    /// kernel keeps its owner. TIME_WAIT and SYN_RECV entries are not full
    /// sockets (their uid reads 0); inode 0 is a socket whose process closed
    /// it (an orphan). Either way the owner cannot be established.
    fn live_owner(state: u8, inode: u32, uid: u32) -> io::Result<u32> {
        // ESTABLISHED, FIN_WAIT1, FIN_WAIT2, CLOSE_WAIT, LAST_ACK, CLOSING:
        // states of a connected full socket.
        const CONNECTED: [u8; 6] = [1, 4, 5, 8, 9, 11];
        if !CONNECTED.contains(&state) {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("the client socket is in TCP state {state} (closed or not yet accepted): its owner is unknown"),
            ));
        }
        if inode == 0 {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "the client closed its socket before pinproxy could ask who owns it: its owner is unknown",
            ));
        }
        Ok(uid)
    }

    fn to_v6(ip: IpAddr) -> [u8; 16] {
        match ip {
            IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
            IpAddr::V6(v6) => v6.octets(),
        }
    }

    /// The kernel prints an IPv4 address as one native-endian u32 in hex.
    fn hex_v4(octets: [u8; 4]) -> String {
        format!("{:08X}", u32::from_ne_bytes(octets))
    }

    /// And an IPv6 address as four native-endian u32s.
    fn hex_v6(octets: &[u8; 16]) -> String {
        octets
            .chunks_exact(4)
            .map(|c| format!("{:08X}", u32::from_ne_bytes([c[0], c[1], c[2], c[3]])))
            .collect()
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    fn own_uid() -> u32 {
        nix::unistd::getuid().as_raw()
    }

    #[test]
    fn both_lookups_find_the_owner_of_a_loopback_client_socket() {
        for bind in ["127.0.0.1:0", "[::1]:0"] {
            let Ok(listener) = std::net::TcpListener::bind(bind) else {
                continue; // no IPv6 loopback on this machine
            };
            let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
            let (server, peer) = listener.accept().unwrap();
            let local = server.local_addr().unwrap();
            assert_eq!(peer, client.local_addr().unwrap());
            assert_eq!(
                tcp_owner_sock_diag(peer, local).unwrap(),
                own_uid(),
                "{bind}"
            );
            assert_eq!(tcp_owner_proc(peer, local).unwrap(), own_uid(), "{bind}");
        }
    }

    #[test]
    fn a_client_that_closed_its_socket_has_no_owner() {
        // The TIME_WAIT race: a client writes and closes before pinproxy
        // accepts. The kernel still knows the connection (in TIME_WAIT or as
        // an orphan) and would report uid 0: that must never read as root.
        use std::io::Write;
        for bind in ["127.0.0.1:0", "[::1]:0"] {
            let Ok(listener) = std::net::TcpListener::bind(bind) else {
                continue;
            };
            let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
            let peer = client.local_addr().unwrap();
            client
                .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            drop(client);
            let (server, accepted_peer) = listener.accept().unwrap();
            assert_eq!(accepted_peer, peer);
            let local = server.local_addr().unwrap();
            for lookup in [tcp_owner_sock_diag, tcp_owner_proc] {
                let err = lookup(peer, local).expect_err("a closed client socket has no owner");
                assert_eq!(err.kind(), io::ErrorKind::NotFound, "{bind}: {err}");
            }
        }
    }

    #[test]
    fn a_half_closed_client_still_has_its_owner() {
        // shutdown(SHUT_WR) but still held: the process is there to vouch.
        for bind in ["127.0.0.1:0", "[::1]:0"] {
            let Ok(listener) = std::net::TcpListener::bind(bind) else {
                continue;
            };
            let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
            client.shutdown(std::net::Shutdown::Write).unwrap();
            let (server, peer) = listener.accept().unwrap();
            let local = server.local_addr().unwrap();
            for lookup in [tcp_owner_sock_diag, tcp_owner_proc] {
                assert_eq!(lookup(peer, local).unwrap(), own_uid(), "{bind}");
            }
        }
    }

    #[test]
    fn a_socket_nobody_has_is_not_found() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let local = listener.local_addr().unwrap();
        // Port 1 on loopback is not a connection to this listener.
        let peer: SocketAddr = "127.0.0.1:1".parse().unwrap();
        for lookup in [tcp_owner_sock_diag, tcp_owner_proc] {
            let err = lookup(peer, local).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}");
        }
    }
}
