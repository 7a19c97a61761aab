//! remove_hop_by_hop on any header list: never panics; afterwards no
//! connection-specific header and nothing that Connection named is left, and
//! every other header is kept with all its values.
#![no_main]

use http::header::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use pinproxy::http::headers::remove_hop_by_hop;

const FIXED: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authorization",
    "proxy-authenticate",
];

fuzz_target!(|data: &[u8]| {
    // Lines of "name:value"; a small fixed vocabulary of names makes collisions likely.
    let mut headers = HeaderMap::new();
    for line in data.split(|b| *b == b'\n') {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
        else {
            continue;
        };
        headers.append(name, value);
    }
    let named: Vec<String> = headers
        .get_all("connection")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .collect();
    let before = headers.clone();
    remove_hop_by_hop(&mut headers);
    for name in before.keys() {
        let hop = FIXED.contains(&name.as_str()) || named.iter().any(|n| n == name.as_str());
        if hop {
            assert!(!headers.contains_key(name), "{name} survived");
        } else {
            let kept: Vec<_> = headers.get_all(name).iter().collect();
            let had: Vec<_> = before.get_all(name).iter().collect();
            assert_eq!(kept, had, "{name} changed");
        }
    }
});
