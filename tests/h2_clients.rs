//! HTTP/2 clients are held to the same bounds as HTTP/1.1 ones: a flood of
//! streams with large header blocks towards a stalled upstream stays within the
//! memory of our own Kubernetes manifest and cannot stall other listeners, and
//! header count and size limits apply to a decoded HTTP/2 head too.
//!
//! The flooding client is written frame by frame: a real attacker ignores the
//! server's SETTINGS, which every HTTP/2 library obeys.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// An HPACK integer with an `n`-bit prefix (RFC 7541 §5.1), first byte `flags`.
fn hpack_int(out: &mut Vec<u8>, flags: u8, n: u32, mut value: usize) {
    let max = (1usize << n) - 1;
    if value < max {
        out.push(flags | value as u8);
        return;
    }
    out.push(flags | max as u8);
    value -= max;
    while value >= 128 {
        out.push((value % 128 + 128) as u8);
        value /= 128;
    }
    out.push(value as u8);
}

/// A header block of literal fields without indexing (RFC 7541 §6.2.2).
fn header_block(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        out.push(0);
        hpack_int(&mut out, 0, 7, name.len());
        out.extend_from_slice(name.as_bytes());
        hpack_int(&mut out, 0, 7, value.len());
        out.extend_from_slice(value.as_bytes());
    }
    out
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// A GET on `stream` with `block` as its header block: HEADERS then
/// CONTINUATION frames of at most 16 KiB (the default SETTINGS_MAX_FRAME_SIZE).
fn request_frames(stream: u32, block: &[u8]) -> Vec<u8> {
    const END_STREAM: u8 = 0x1;
    const END_HEADERS: u8 = 0x4;
    let chunks: Vec<&[u8]> = block.chunks(16 * 1024).collect();
    let mut out = Vec::new();
    for (i, chunk) in chunks.iter().enumerate() {
        let last = i + 1 == chunks.len();
        let (kind, mut flags) = if i == 0 { (1, END_STREAM) } else { (9, 0) };
        if last {
            flags |= END_HEADERS;
        }
        out.extend(frame(kind, flags, stream, chunk));
    }
    out
}

/// Opens an HTTP/2 connection and sends `streams` GETs for `path` at once, each
/// with `header_bytes` of extra headers, then keeps reading (and answering
/// PINGs) so the connection stays open. Returns the socket's task.
async fn flood(addr: SocketAddr, path: &str, streams: u32, header_bytes: usize) {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    tcp.write_all(&frame(4, 0, 0, &[])).await.unwrap();
    let authority = format!("localhost:{}", addr.port());
    let value = "v".repeat(15_000);
    let mut fields = vec![
        (":method", "GET"),
        (":scheme", "http"),
        (":path", path),
        (":authority", authority.as_str()),
    ];
    let extra = ["x-bulk-a", "x-bulk-b", "x-bulk-c", "x-bulk-d"];
    for name in extra.iter().take(header_bytes.div_ceil(15_000)) {
        fields.push((name, value.as_str()));
    }
    let block = header_block(&fields);
    let mut all = Vec::new();
    for i in 0..streams {
        all.extend(request_frames(1 + 2 * i, &block));
    }
    // The server may stop reading while it refuses; don't block on that.
    let (mut rd, mut wr) = tcp.into_split();
    tokio::spawn(async move {
        let _ = wr.write_all(&all).await;
        std::future::pending::<()>().await;
        drop(wr);
    });
    tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n) = rd.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    });
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_flooding_h2_connections_stay_under_64_mib_and_other_listeners_answer() {
    let (stalled, c) = TestServer::start_self_signed().await;
    let (other, c2) = TestServer::start_self_signed().await;
    let text = format!(
        "{}\n[[upstream]]\nname = \"other\"\nlisten = \"127.0.0.1:0\"\naddress = \"{}\"\nserver_name = \"localhost\"\nfingerprints = [\"{}\"]\n",
        config_text(stalled.addr, &c.sha1_pin(), "connect_timeout = \"30s\"\nresponse_timeout = \"60s\""),
        other.addr,
        c2.sha1_pin()
    );
    let config = temp_file(&text);
    let mut bin = Binary::spawn(&["run", "--config", config.path().to_str().unwrap()], &[]);
    let flooded: SocketAddr = bin.listening();
    let spare: SocketAddr = bin.listening();
    bin.discard_output();
    let before = rss_kib(bin.child.id());

    for _ in 0..8 {
        flood(flooded, "/slow", 200, 60 * 1024).await;
    }
    // The upstream sees the flood: its connections (max_connections) all stalled.
    stalled.wait_slow(1).await;

    let a = tokio::time::timeout(Duration::from_secs(2), get(&format!("http://{spare}/x")))
        .await
        .expect("another listener answers at once");
    assert_eq!(a.status, 200);
    // The floods' streams are admitted while this runs: until 256
    // (max_requests_in_flight) are in progress, a request still gets a slot
    // and queues for an upstream connection like the flood's. Once the limit is
    // reached, every request is refused at once. Asked with a short timeout
    // (a request that got a slot is dropped and gives it back) until then.
    let flooded_url = format!("http://{flooded}/x");
    let mut a = None;
    for _ in 0..20 {
        if let Ok(answer) =
            tokio::time::timeout(Duration::from_millis(500), get(&flooded_url)).await
        {
            a = Some(answer);
            break;
        }
    }
    let a = a.expect("the flooded listener refuses at once when it is full, never hangs");
    assert_eq!(
        (a.status.as_u16(), a.error_tag()),
        (503, Some("too-busy")),
        "{}",
        a.text()
    );
    assert!(a.text().contains("max_requests_in_flight"), "{}", a.text());

    let peak = bin.peak_rss_kib();
    eprintln!("RSS before {before} KiB, peak {peak} KiB");
    assert!(
        peak < 64 * 1024,
        "peak RSS {peak} KiB under the flood (64 MiB is the manifest's limit)"
    );
    stalled.release.notify_waiters();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_requests_get_431_past_max_headers_or_max_header_bytes_as_http1_ones_do() {
    let (up, c) = TestServer::start_self_signed().await;
    let config = temp_file(&config_text(up.addr, &c.sha1_pin(), ""));
    let mut bin = Binary::spawn(&["run", "--config", config.path().to_str().unwrap()], &[]);
    let addr = bin.listening();
    let url = format!("http://{addr}/x");
    let curl = |extra: &[String]| {
        let out = std::process::Command::new("curl")
            .args(["-s", "--http2-prior-knowledge", "-o", "/dev/null"])
            .args(["-w", "%{http_code} %header{x-pinproxy-error}"])
            .args(extra)
            .arg(&url)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let many: Vec<String> = (0..1500)
        .flat_map(|i| ["-H".to_string(), format!("X-H{i}: v")])
        .collect();
    // Well under the default max_header_bytes (64 KiB), far over max_headers (100).
    assert_eq!(curl(&many), "431 headers-too-large");
    let some: Vec<String> = (0..101)
        .flat_map(|i| ["-H".to_string(), format!("X-H{i}: v")])
        .collect();
    assert_eq!(curl(&some), "431 headers-too-large");
    // Over max_header_bytes (announced in SETTINGS): the stream is refused while
    // its header block is decoded, or answered 431 if it got through.
    let big = vec!["-H".to_string(), format!("X-Big: {}", "a".repeat(70_000))];
    let answer = curl(&big);
    assert!(answer == "000 " || answer.starts_with("431"), "{answer}");
    let big = vec![
        "-H".to_string(),
        format!("X-Big: {}", "a".repeat(62_000)),
        "-H".to_string(),
        format!("X-Big2: {}", "a".repeat(4_000)),
    ];
    let answer = curl(&big);
    assert!(answer == "000 " || answer.starts_with("431"), "{answer}");
    assert_eq!(curl(&[]), "200 ");
    assert_eq!(
        up.requests(),
        1,
        "only the request within the limits went upstream"
    );
}

/// HTTP/2 rapid reset (CVE-2023-44487): each such connection used to leave a
/// WARN line from the h2 crate, so a client could fill the journal. Now they
/// are counted and summed up in at most one line per minute.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_connections_leave_one_summary_line_not_one_each() {
    let (up, c) = TestServer::start_self_signed().await;
    let config = temp_file(&config_text(up.addr, &c.sha1_pin(), ""));
    let mut bin = Binary::spawn(
        &["run", "--config", config.path().to_str().unwrap()],
        &[("RUST_LOG", "info")],
    );
    let addr = bin.listening();
    const CONNECTIONS: usize = 12;
    for _ in 0..CONNECTIONS {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        let mut all = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        all.extend(frame(4, 0, 0, &[]));
        let authority = format!("localhost:{}", addr.port());
        let block = header_block(&[
            (":method", "GET"),
            (":scheme", "http"),
            (":path", "/x"),
            (":authority", authority.as_str()),
        ]);
        for i in 0..500u32 {
            all.extend(request_frames(1 + 2 * i, &block));
            // RST_STREAM, CANCEL (0x8).
            all.extend(frame(3, 0, 1 + 2 * i, &8u32.to_be_bytes()));
        }
        let (mut rd, mut wr) = tcp.split();
        let write = async {
            let _ = wr.write_all(&all).await;
        };
        let read = async {
            let mut buf = vec![0u8; 64 * 1024];
            while let Ok(n) = rd.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
        };
        // The server answers with GOAWAY and closes the connection.
        tokio::time::timeout(Duration::from_secs(10), async { tokio::join!(write, read) })
            .await
            .expect("the server closes a rapid-reset connection");
        tcp.shutdown().await.ok();
    }
    let summary = bin.wait_for(|v| {
        v["message"]
            .as_str()
            .is_some_and(|m| m.contains("rapid reset"))
    });
    assert_eq!(summary["level"], "WARN", "{summary}");
    // One more ordinary request, so every line of the floods has been written.
    assert_eq!(get(&format!("http://{addr}/after")).await.status, 200);
    bin.wait_for(|v| v["message"] == "request" && v["path"] == "/after");
    let from_h2 = bin
        .seen
        .iter()
        .filter(|l| l.contains("reached limit") || l.contains("\"target\":\"h2"))
        .count();
    let summaries = bin
        .seen
        .iter()
        .filter(|l| l.contains("rapid reset"))
        .count();
    assert_eq!((from_h2, summaries), (0, 1), "{:#?}", bin.seen);
}
