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
    let present = Present::scan(headers);
    remove_present(headers, &present.hop_by_hop);
}

/// Which of the names this module removes a message has, found in one pass
/// over its names: most messages carry none of them, or only `Connection:
/// keep-alive`, and a hashed lookup of each absent name cost more than the
/// rest of the work.
struct Present {
    hop_by_hop: [bool; HOP_BY_HOP.len()],
    error_tag: bool,
}

impl Present {
    fn scan(headers: &HeaderMap) -> Present {
        let mut present = Present {
            hop_by_hop: [false; HOP_BY_HOP.len()],
            error_tag: false,
        };
        for name in headers.keys() {
            if let Some(i) = hop_by_hop_index(name.as_str()) {
                present.hop_by_hop[i] = true;
            } else if name == crate::http::respond::ERROR_HEADER {
                present.error_tag = true;
            }
        }
        present
    }
}

/// Removes the hop-by-hop headers `present` says are there, and every header
/// that `Connection` names.
fn remove_present(headers: &mut HeaderMap, present: &[bool; HOP_BY_HOP.len()]) {
    if *present == [false; HOP_BY_HOP.len()] {
        return;
    }
    // Nearly every response from a keep-alive server carries exactly
    // `Connection: keep-alive` (or `close`): options that name no header, so
    // there is nothing to look up (the token scan below cost ~350 instructions
    // a response, callgrind).
    let only_options = headers.get_all(header::CONNECTION).iter().all(|v| {
        let v = v.as_bytes();
        v.eq_ignore_ascii_case(b"keep-alive") || v.eq_ignore_ascii_case(b"close")
    });
    // Collect first: the names listed in Connection are removed after Connection
    // itself. Only names a header has: `close` and `keep-alive` are options here.
    let named: Vec<HeaderName> = if only_options {
        Vec::new()
    } else {
        headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|token| {
                // The two options nearly every Connection header carries, named
                // no header of their own.
                !token.eq_ignore_ascii_case("keep-alive")
                    && !token.eq_ignore_ascii_case("close")
                    && !HOP_BY_HOP
                        .iter()
                        .any(|hop| hop.as_str().eq_ignore_ascii_case(token))
                    && headers
                        .keys()
                        .any(|name| name.as_str().eq_ignore_ascii_case(token))
            })
            .filter_map(|token| HeaderName::from_bytes(token.as_bytes()).ok())
            .collect()
    };
    for (name, _) in HOP_BY_HOP.iter().zip(present).filter(|(_, there)| **there) {
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
    let present = Present::scan(headers);
    if present.hop_by_hop[TRANSFER_ENCODING_INDEX] {
        headers.remove(header::CONTENT_LENGTH);
    }
    if present.error_tag {
        headers.remove(crate::http::respond::ERROR_HEADER);
    }
    remove_present(headers, &present.hop_by_hop);
}

const TRANSFER_ENCODING_INDEX: usize = 5;

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn map(fields: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for &(k, v) in fields {
            h.append(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        h
    }

    /// The names left, sorted.
    fn names(h: &HeaderMap) -> Vec<&str> {
        let mut left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        left.sort();
        left
    }

    #[test]
    fn removes_fixed_and_connection_named_headers() {
        let mut h = map(&[
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
        ]);
        remove_hop_by_hop(&mut h);
        assert_eq!(names(&h), ["content-length", "x-chkp-sid"]);
    }

    #[test]
    fn a_connection_header_of_options_only_goes_and_names_nothing() {
        for options in [
            &["keep-alive"][..],
            &["Keep-Alive"],
            &["close"],
            &["CLOSE", "keep-alive"],
        ] {
            let mut h = map(&[
                ("keep-alive", "timeout=5"),
                ("close", "a header that happens to be called close"),
                ("x-chkp-sid", "kept"),
            ]);
            for &value in options {
                h.append(header::CONNECTION, http::HeaderValue::from_static(value));
            }
            clean_response(&mut h);
            assert_eq!(names(&h), ["close", "x-chkp-sid"], "{options:?}");
        }
        // One Connection header naming a header sends the slow path its way.
        let mut h = map(&[
            ("connection", "keep-alive"),
            ("connection", "x-trace"),
            ("x-trace", "1"),
        ]);
        clean_response(&mut h);
        assert!(h.is_empty(), "{:?}", names(&h));
    }

    #[test]
    fn a_response_loses_a_stale_length_and_a_forged_error_tag() {
        let mut h = map(&[
            ("connection", "close"),
            ("transfer-encoding", "chunked"),
            ("content-length", "3"),
            ("x-pinproxy-error", "upstream-failed"),
            ("content-type", "application/json"),
        ]);
        clean_response(&mut h);
        assert_eq!(names(&h), ["content-type"]);
        // Without a transfer coding the length is what frames the body.
        let mut h = map(&[("content-length", "3")]);
        clean_response(&mut h);
        assert!(h.contains_key(header::CONTENT_LENGTH));
    }

    #[test]
    fn the_index_names_each_fixed_header() {
        for (i, name) in HOP_BY_HOP.iter().enumerate() {
            assert_eq!(hop_by_hop_index(name.as_str()), Some(i), "{name}");
        }
        assert_eq!(
            HOP_BY_HOP[TRANSFER_ENCODING_INDEX],
            header::TRANSFER_ENCODING
        );
        assert_eq!(hop_by_hop_index("content-length"), None);
    }
}
