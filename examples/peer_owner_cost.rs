//! What finding the owner of a loopback client socket costs per accepted
//! connection, with sock_diag (what pinproxy uses) and with a `/proc/net/tcp`
//! scan (its fallback), while the machine holds `OPEN` other connections.
//!
//! cargo run --release --example peer_owner_cost [OPEN] [LOOKUPS]

#[cfg(target_os = "linux")]
fn main() {
    use std::net::{TcpListener, TcpStream};
    use std::time::Instant;

    let mut args = std::env::args().skip(1).map(|a| a.parse::<usize>().ok());
    let open = args.next().flatten().unwrap_or(1000);
    let lookups = args.next().flatten().unwrap_or(2000);

    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("address");
    // Other connections, so the kernel's tables look like a busy proxy's.
    let mut held = Vec::with_capacity(open * 2);
    for _ in 0..open {
        held.push(TcpStream::connect(addr).expect("connect"));
        held.push(listener.accept().expect("accept").0);
    }
    let client = TcpStream::connect(addr).expect("connect");
    let (server, peer) = listener.accept().expect("accept");
    let local = server.local_addr().expect("address");
    assert_eq!(client.local_addr().ok(), Some(peer));

    type Lookup = fn(std::net::SocketAddr, std::net::SocketAddr) -> std::io::Result<u32>;
    let methods: [(&str, Lookup); 2] = [
        ("sock_diag", pinproxy::peer::tcp_owner_sock_diag),
        ("/proc/net/tcp", pinproxy::peer::tcp_owner_proc),
    ];
    println!(
        "{} other loopback connections ({} sockets), {lookups} lookups each",
        open,
        open * 2
    );
    for (name, lookup) in methods {
        let uid = lookup(peer, local).expect("lookup");
        let start = Instant::now();
        for _ in 0..lookups {
            assert_eq!(lookup(peer, local).expect("lookup"), uid);
        }
        let each = start.elapsed() / lookups as u32;
        println!(
            "{name:>14}: {:>8.1} µs per lookup",
            each.as_secs_f64() * 1e6
        );
    }
}

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("sock_diag and /proc/net/tcp are Linux's");
}
