//! Who owns the client end of a loopback TCP connection, on Windows: the TCP
//! table with owning processes (`GetExtendedTcpTable`, what `netstat -ano`
//! shows) names the process, and the process token names its account.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use windows_sys::Win32::NetworkManagement::IpHelper::{
    GetExtendedTcpTable, MIB_TCP6ROW_OWNER_PID, MIB_TCPROW_OWNER_PID,
    TCP_TABLE_OWNER_PID_CONNECTIONS,
};

use crate::platform::users::Process;

const AF_INET: u32 = 2;
const AF_INET6: u32 = 23;
/// MIB_TCP_STATE_ESTAB: an owner of a socket in any other state (closing,
/// TIME_WAIT) proves nothing about who sent the bytes waiting for us.
const ESTABLISHED: u32 = 5;
const ERROR_INSUFFICIENT_BUFFER: u32 = 122;

/// The account number (see `users`) of the process whose socket is `peer`,
/// connected to our `local`.
pub(crate) fn tcp_owner(peer: SocketAddr, local: SocketAddr) -> io::Result<u32> {
    let pid = owning_pid(peer, local)?;
    // Holding the process open keeps its id from being reused; if the socket
    // still names it afterwards, this process is the one that owns it.
    let process = Process::open(pid)?;
    if owning_pid(peer, local)? != pid {
        return Err(io::Error::other(
            "the client socket changed owner while pinproxy looked it up",
        ));
    }
    process.user()
}

fn not_found() -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        "no established local socket has this connection's address (a remote client, or one already gone)",
    )
}

/// The process id that owns the established socket `peer` → `local`.
fn owning_pid(peer: SocketAddr, local: SocketAddr) -> io::Result<u32> {
    let family = if peer.is_ipv4() { AF_INET } else { AF_INET6 };
    let table = table(family)?;
    // The table is a count, then rows (aligned for u32): ours start after the count.
    let rows = table.get(1..).unwrap_or_default();
    let count = table.first().copied().unwrap_or(0) as usize;
    let pid = if family == AF_INET {
        let width = std::mem::size_of::<MIB_TCPROW_OWNER_PID>() / 4;
        rows.chunks_exact(width)
            .take(count)
            .map(|r| {
                // dwState, dwLocalAddr, dwLocalPort, dwRemoteAddr, dwRemotePort, dwOwningPid
                let addr = |a: u32, p: u32| {
                    SocketAddr::new(IpAddr::V4(Ipv4Addr::from(a.to_ne_bytes())), port(p))
                };
                (r[0], addr(r[1], r[2]), addr(r[3], r[4]), r[5])
            })
            .find(|&(_, own, other, _)| own == peer && other == local)
    } else {
        let width = std::mem::size_of::<MIB_TCP6ROW_OWNER_PID>() / 4;
        rows.chunks_exact(width)
            .take(count)
            .map(|r| {
                // ucLocalAddr[16], dwLocalScopeId, dwLocalPort, ucRemoteAddr[16],
                // dwRemoteScopeId, dwRemotePort, dwState, dwOwningPid
                let addr = |words: &[u32], p: u32| {
                    let mut octets = [0u8; 16];
                    for (i, w) in words.iter().enumerate() {
                        octets[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
                    }
                    SocketAddr::new(IpAddr::V6(Ipv6Addr::from(octets)), port(p))
                };
                (r[12], addr(&r[0..4], r[5]), addr(&r[6..10], r[11]), r[13])
            })
            .find(|&(_, own, other, _)| same(own, peer) && same(other, local))
    };
    match pid {
        Some((ESTABLISHED, _, _, pid)) if pid != 0 => Ok(pid),
        _ => Err(not_found()),
    }
}

/// Ports sit in the table in network byte order, in the low two bytes.
fn port(field: u32) -> u16 {
    let bytes = field.to_ne_bytes();
    u16::from_be_bytes([bytes[0], bytes[1]])
}

/// Equal addresses, an IPv6 scope id apart.
fn same(a: SocketAddr, b: SocketAddr) -> bool {
    a.ip() == b.ip() && a.port() == b.port()
}

/// The established TCP connections of `family` with their owners, as u32 words.
#[allow(unsafe_code)]
fn table(family: u32) -> io::Result<Vec<u32>> {
    let mut table = vec![0u32; 1024];
    loop {
        let mut size = u32::try_from(table.len() * 4).unwrap_or(u32::MAX);
        // SAFETY: `table` is `size` bytes long and u32-aligned, as the rows
        // are; Windows writes at most `size` bytes and says how many it needed.
        let status = unsafe {
            GetExtendedTcpTable(
                table.as_mut_ptr().cast(),
                &mut size,
                0,
                family,
                TCP_TABLE_OWNER_PID_CONNECTIONS,
                0,
            )
        };
        match status {
            0 => return Ok(table),
            // Connections come and go between the two calls: ask again, with room to spare.
            ERROR_INSUFFICIENT_BUFFER if (size as usize) / 4 + 256 > table.len() => {
                table.resize(size as usize / 4 + 256, 0);
            }
            ERROR_INSUFFICIENT_BUFFER => table.resize(table.len() * 2, 0),
            code => return Err(io::Error::from_raw_os_error(code as i32)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::wine::under_wine;
    use super::*;

    #[test]
    fn a_port_is_read_in_network_byte_order() {
        // 8443 = 0x20FB, stored as the bytes 20 FB 00 00.
        assert_eq!(port(u32::from_ne_bytes([0x20, 0xFB, 0, 0])), 8443);
    }

    /// On Windows the client socket of our own connection names our process,
    /// and so our account. Wine 8 lists the connection with owning process 0
    /// (it does not track owners): there the owner is unknown, which must be
    /// an error (so `allowed_users` refuses), never some account.
    #[test]
    fn our_own_connection_is_owned_by_us_or_unknown_under_wine() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let local = listener.local_addr().unwrap();
        let client = std::net::TcpStream::connect(local).unwrap();
        let (_server, peer) = listener.accept().unwrap();
        assert_eq!(peer, client.local_addr().unwrap());
        if under_wine() {
            let err = tcp_owner(peer, local).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}");
            // The row is there; only its owner is missing.
            let words = table(AF_INET).unwrap();
            assert!(words[0] >= 2, "both ends of the connection are listed");
            return;
        }
        assert_eq!(owning_pid(peer, local).unwrap(), std::process::id());
        let me = Process::open(std::process::id()).unwrap().user().unwrap();
        assert_eq!(tcp_owner(peer, local).unwrap(), me);
    }

    #[test]
    fn an_address_no_socket_has_is_not_found() {
        let peer: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let local: SocketAddr = "127.0.0.1:10".parse().unwrap();
        assert_eq!(
            owning_pid(peer, local).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
    }
}
