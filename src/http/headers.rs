//! Hop-by-hop headers (RFC 9110 §7.6.1): they describe one connection, so a proxy
//! removes them in both directions instead of passing them to the other side.

use http::header::{self, HeaderMap, HeaderName};

/// Headers that are always connection-specific.
static HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
    header::PROXY_AUTHENTICATE,
];

/// Removes the hop-by-hop headers and every header that `Connection` names.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the names (comparing standard names is comparing tags)
    // finds which are there: most messages carry none, or only `Connection:
    // keep-alive`, and a hashed removal of each of nine absent names cost more
    // than the rest of this function.
    let mut present = [false; HOP_BY_HOP.len()];
    for name in headers.keys() {
        if let Some(i) = hop_by_hop_index(name.as_str()) {
            present[i] = true;
        }
    }
    if present == [false; HOP_BY_HOP.len()] {
        return;
    }
    // Collect first: the names listed in Connection are removed after Connection
    // itself. Only names a header has: `close` and `keep-alive` are options here.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|token| {
            !HOP_BY_HOP
                .iter()
                .any(|hop| hop.as_str().eq_ignore_ascii_case(token))
                && headers
                    .keys()
                    .any(|name| name.as_str().eq_ignore_ascii_case(token))
        })
        .filter_map(|token| HeaderName::from_bytes(token.as_bytes()).ok())
        .collect();
    for (name, _) in HOP_BY_HOP.iter().zip(present).filter(|(_, there)| *there) {
        headers.remove(name);
    }
    for name in &named {
        headers.remove(name);
    }
}

/// Where `name` (lower case, as a `HeaderName` has it) is in [`HOP_BY_HOP`]: a
/// `match` on the text compares lengths first, so an ordinary name costs a
/// few instructions, where comparing it with each of the nine cost ~20 apiece.
fn hop_by_hop_index(name: &str) -> Option<usize> {
    Some(match name {
        "connection" => 0,
        "keep-alive" => 1,
        "proxy-connection" => 2,
        "te" => 3,
        "trailer" => 4,
        "transfer-encoding" => 5,
        "upgrade" => 6,
        "proxy-authorization" => 7,
        "proxy-authenticate" => 8,
        _ => return None,
    })
}

/// Readies an upstream response's headers for the client: hop-by-hop headers
/// go; with `Transfer-Encoding` present, `Content-Length` goes too (RFC 9112
/// §6.3: the body was framed by the transfer coding, and a stale length would
/// cut it short); and a header only pinproxy may set (`X-Pinproxy-Error`) goes,
/// so a server cannot make its answer pass for one of pinproxy's own.
pub fn clean_response(headers: &mut HeaderMap) {
    if headers.contains_key(header::TRANSFER_ENCODING) {
        headers.remove(header::CONTENT_LENGTH);
    }
    headers.remove(crate::http::respond::ERROR_HEADER);
    remove_hop_by_hop(headers);
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn removes_fixed_and_connection_named_headers() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("connection", "keep-alive, X-Trace, close"),
            ("connection", "x-other"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("te", "trailers"),
            ("trailer", "x-sum"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("proxy-authorization", "Basic eA=="),
            ("proxy-authenticate", "Basic"),
            ("x-trace", "1"),
            ("x-other", "2"),
            ("x-chkp-sid", "kept"),
            ("content-length", "3"),
        ] {
            h.append(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        remove_hop_by_hop(&mut h);
        let mut left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        left.sort();
        assert_eq!(left, ["content-length", "x-chkp-sid"]);
    }

    #[test]
    fn the_index_names_each_fixed_header() {
        for (i, name) in HOP_BY_HOP.iter().enumerate() {
            assert_eq!(hop_by_hop_index(name.as_str()), Some(i), "{name}");
        }
        assert_eq!(hop_by_hop_index("content-length"), None);
    }
}
