//! The plain-text access line, written byte by byte.
//!
//! It is the line `tracing-subscriber` writes (the access log's tests compare
//! them), but `core::fmt` cost about 4,200 instructions a line (callgrind, the
//! benchmark's keep-alive load): a tenth of what pinproxy spends forwarding the
//! request. Numbers, the address and the timestamp are written here directly;
//! the timestamp's date and time of day are formatted once a second per thread.

use std::cell::Cell;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use super::access_log::{Entry, TARGET};

/// Appends `e`'s line as `tracing-subscriber`'s plain (not ANSI) format has it.
pub(super) fn write(out: &mut Vec<u8>, e: &Entry<'_>, now: SystemTime) {
    timestamp(out, now);
    out.extend_from_slice(b"  INFO ");
    out.extend_from_slice(TARGET.as_bytes());
    out.extend_from_slice(b": request upstream=");
    out.extend_from_slice(e.upstream.as_bytes());
    out.extend_from_slice(b" method=");
    out.extend_from_slice(e.method.as_bytes());
    out.extend_from_slice(b" path=");
    out.extend_from_slice(e.path.as_bytes());
    out.extend_from_slice(b" status=");
    number(out, u64::from(e.status), 1);
    out.extend_from_slice(b" bytes=");
    number(out, e.bytes, 1);
    out.extend_from_slice(b" duration_ms=");
    let nanos = e.duration.as_nanos();
    number(out, u64::try_from(nanos / 1_000_000).unwrap_or(u64::MAX), 1);
    out.push(b'.');
    number(out, (nanos % 1_000_000) as u64, 6);
    out.extend_from_slice(if e.complete {
        b" complete=true"
    } else {
        b" complete=false"
    });
    out.extend_from_slice(b" error=");
    quoted(out, e.error);
    if let Some(uid) = e.client_uid {
        out.extend_from_slice(b" client_uid=");
        number(out, u64::from(uid), 1);
    }
    if let Some(client) = e.client {
        out.extend_from_slice(b" client=");
        address(out, client);
    }
    if let Some(address) = e.upstream_address {
        out.extend_from_slice(b" upstream_address=");
        out.extend_from_slice(address.as_bytes());
    }
    if let Some(id) = e.request_id {
        out.extend_from_slice(b" request_id=");
        quoted(out, id);
    }
    out.push(b'\n');
}

/// `n` in decimal, zero-padded to at least `width` digits.
fn number(out: &mut Vec<u8>, mut n: u64, width: usize) {
    let mut digits = [b'0'; 20];
    let mut start = digits.len();
    while n > 0 || digits.len() - start < width {
        start -= 1;
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
    }
    out.extend_from_slice(&digits[start..]);
}

/// `text` as `{:?}` writes it: quoted, and escaped where it needs to be.
fn quoted(out: &mut Vec<u8>, text: &str) {
    if text
        .bytes()
        .all(|b| (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\')
    {
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
    } else {
        let mut escaped = String::new();
        let _ = write!(escaped, "{text:?}");
        out.extend_from_slice(escaped.as_bytes());
    }
}

fn address(out: &mut Vec<u8>, address: SocketAddr) {
    match address {
        SocketAddr::V4(v4) => {
            for (i, octet) in v4.ip().octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                number(out, u64::from(octet), 1);
            }
            out.push(b':');
            number(out, u64::from(v4.port()), 1);
        }
        SocketAddr::V6(_) => {
            let mut text = String::new();
            let _ = write!(text, "{address}");
            out.extend_from_slice(text.as_bytes());
        }
    }
}

thread_local! {
    /// The second last formatted on this thread, and its `YYYY-MM-DDTHH:MM:SS`.
    static SECOND: Cell<(u64, [u8; 19])> = const { Cell::new((u64::MAX, [0; 19])) };
}

/// `now` in RFC 3339 with microseconds, as `humantime` writes it (a clock
/// before 1970, which `humantime` cannot write, as 1970).
fn timestamp(out: &mut Vec<u8>, now: SystemTime) {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let second = since.as_secs();
    let (cached, mut date) = SECOND.get();
    if cached != second {
        let whole = humantime::format_rfc3339_seconds(UNIX_EPOCH + since).to_string();
        date.copy_from_slice(&whole.as_bytes()[..19]);
        SECOND.set((second, date));
    }
    out.extend_from_slice(&date);
    out.push(b'.');
    number(out, u64::from(since.subsec_micros()), 6);
    out.push(b'Z');
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn numbers_are_padded_to_their_width() {
        let mut out = Vec::new();
        for (n, width) in [(0, 1), (7, 6), (1234567, 6), (u64::MAX, 1)] {
            number(&mut out, n, width);
            out.push(b' ');
        }
        assert_eq!(out, b"0 000007 1234567 18446744073709551615 ");
    }

    #[test]
    fn the_timestamp_is_humantimes_in_every_second() {
        for offset in [0, 1, 59, 3_600, 86_399, 1_000_000_000] {
            let at = UNIX_EPOCH + Duration::new(1_700_000_000 + offset, 123_456_789);
            let mut out = Vec::new();
            timestamp(&mut out, at);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                humantime::format_rfc3339_micros(at).to_string()
            );
        }
        let mut out = Vec::new();
        timestamp(&mut out, UNIX_EPOCH - Duration::from_secs(1));
        assert_eq!(out, b"1970-01-01T00:00:00.000000Z");
    }

    #[test]
    fn quoting_is_debugs() {
        for text in [
            "",
            "fingerprint-mismatch",
            "a \"b\" \\ c",
            "tab\there",
            "caf\u{e9}",
        ] {
            let mut out = Vec::new();
            quoted(&mut out, text);
            assert_eq!(String::from_utf8(out).unwrap(), format!("{text:?}"));
        }
    }

    #[test]
    fn addresses_are_displays() {
        for text in [
            "127.0.0.1:54321",
            "10.0.0.255:1",
            "[::1]:8443",
            "[fe80::1%2]:80",
        ] {
            let addr: SocketAddr = text.parse().unwrap();
            let mut out = Vec::new();
            address(&mut out, addr);
            assert_eq!(String::from_utf8(out).unwrap(), addr.to_string());
        }
    }
}
