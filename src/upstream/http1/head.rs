//! HTTP/1.1 heads on the upstream side: the request head pinproxy writes, and
//! the response head it reads with the framing of the body that follows
//! (RFC 9112 §6.3). Strict where a head could be read two ways: conflicting
//! lengths are refused, and a response whose framing is doubtful is not
//! followed by another on the same connection.

use std::fmt::Write as _;
use std::mem::MaybeUninit;

use bytes::{Buf, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode, Version};

use super::Error;

/// Header fields a response head may have; more is refused (hyper's limit).
pub(super) const MAX_HEADERS: usize = 100;
/// Bytes a response head may take; a longer one is refused.
pub(super) const MAX_HEAD_BYTES: usize = 64 * 1024;

/// How a request body is framed on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RequestFraming {
    /// No body, and no length said.
    None,
    /// `Content-Length`.
    Length(u64),
    /// `Transfer-Encoding: chunked`, for a body of unknown length.
    Chunked,
}

impl RequestFraming {
    /// The framing for a body that `ends` at once, or has an `exact` length.
    pub(super) fn of(method: &Method, ends: bool, exact: Option<u64>) -> RequestFraming {
        if ends {
            // A body-less POST, PUT or PATCH says so, as hyper's client did.
            return match *method {
                Method::POST | Method::PUT | Method::PATCH => RequestFraming::Length(0),
                _ => RequestFraming::None,
            };
        }
        exact.map_or(RequestFraming::Chunked, RequestFraming::Length)
    }
}

/// Appends the request head to `out`: the origin form of the URI, every header
/// but the framing ones (pinproxy frames the body itself), then `framing`'s.
pub(super) fn write_request(
    out: &mut BytesMut,
    parts: &http::request::Parts,
    framing: RequestFraming,
) {
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.extend_from_slice(b" ");
    out.extend_from_slice(if path.is_empty() {
        b"/"
    } else {
        path.as_bytes()
    });
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in &parts.headers {
        if name == CONTENT_LENGTH || name == TRANSFER_ENCODING {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    match framing {
        RequestFraming::None => {}
        RequestFraming::Length(n) => {
            let _ = write!(out, "content-length: {n}\r\n");
        }
        RequestFraming::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    out.extend_from_slice(b"\r\n");
}

/// How the body after a response head is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Framing {
    /// None follows (HEAD, 1xx, 204, 304).
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked.
    Chunked,
    /// Everything until the server closes the connection.
    Close,
}

/// A final response head.
#[derive(Debug)]
pub(super) struct ResponseHead {
    pub(super) response: Response<()>,
    pub(super) framing: Framing,
    /// The connection may carry another request after this response.
    pub(super) keep_alive: bool,
}

/// What the bytes read so far hold.
#[derive(Debug)]
pub(super) enum Parsed {
    /// Not a whole head yet.
    Partial,
    /// An interim (1xx) response, taken off and to be skipped.
    Interim,
    /// The final response head, taken off.
    Final(ResponseHead),
}

/// Reads a response head from the start of `buf` and takes it off (the body
/// stays); `head_request` says the request was HEAD, whose response has no
/// body whatever it says. The header values are slices of the bytes read,
/// not copies.
pub(super) fn parse_response(buf: &mut BytesMut, head_request: bool) -> Result<Parsed, Error> {
    if buf.is_empty() {
        return Ok(Parsed::Partial);
    }
    // Left uninitialised for httparse to fill, as hyper's server does: 100
    // empty fields written before every parse cost more than the parse of a
    // short head.
    let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut []);
    let length = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut parsed,
        buf,
        &mut fields,
    ) {
        Ok(httparse::Status::Complete(length)) if length > MAX_HEAD_BYTES => {
            return Err(Error::Malformed("a response head larger than 64 KiB"))
        }
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD_BYTES => {
            return Err(Error::Malformed("a response head larger than 64 KiB"))
        }
        Ok(httparse::Status::Partial) => return Ok(Parsed::Partial),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(Error::Malformed(
                "a response head with more than 100 header fields",
            ))
        }
        Err(_) => return Err(Error::Malformed("a response that is not HTTP/1.1")),
    };
    let code = parsed.code.unwrap_or(0);
    let status =
        StatusCode::from_u16(code).map_err(|_| Error::Malformed("an invalid status code"))?;
    if status.is_informational() && status != StatusCode::SWITCHING_PROTOCOLS {
        buf.advance(length);
        return Ok(Parsed::Interim);
    }
    let version = match parsed.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    // Where each name and value lies in the head, so that both can be taken
    // from it once it is split off (values as slices of it). On the stack: a
    // `Vec` here was an allocation per response. `u32`s (a head is at most
    // 64 KiB) keep the array small enough to clear with a few vector stores.
    let start = buf.as_ptr() as usize;
    let offset = |field: &[u8]| match field {
        [] => Some(0),
        field => (field.as_ptr() as usize)
            .checked_sub(start)
            .filter(|at| at + field.len() <= length)
            .and_then(|at| u32::try_from(at).ok()),
    };
    let mut spans = [(0u32, 0u32, 0u32, 0u32); MAX_HEADERS];
    let count = parsed.headers.len();
    for (span, field) in spans.iter_mut().zip(parsed.headers.iter()) {
        let (name, value) = (field.name.as_bytes(), field.value);
        *span = match (offset(name), offset(value)) {
            // Both lengths fit: each field lies within the head.
            (Some(n), Some(v)) => (n, name.len() as u32, v, value.len() as u32),
            _ => return Err(Error::Malformed("a header field outside its head")),
        };
    }
    let head = buf.split_to(length).freeze();
    let mut headers = HeaderMap::with_capacity(count);
    for &(name_at, name_len, value_at, value_len) in &spans[..count] {
        let (name_at, name_len) = (name_at as usize, name_len as usize);
        let (value_at, value_len) = (value_at as usize, value_len as usize);
        let name = HeaderName::from_bytes(&head[name_at..name_at + name_len])
            .map_err(|_| Error::Malformed("an invalid header field name"))?;
        let value = HeaderValue::from_maybe_shared(head.slice(value_at..value_at + value_len))
            .map_err(|_| Error::Malformed("an invalid header field value"))?;
        headers.append(name, value);
    }
    let (framing, clean) = framing(&headers, status, version, head_request)?;
    let keep_alive = clean
        && version == Version::HTTP_11
        && framing != Framing::Close
        && status != StatusCode::SWITCHING_PROTOCOLS
        && !has_token(&headers, &CONNECTION, "close");
    let mut response = Response::new(());
    *response.status_mut() = status;
    *response.version_mut() = version;
    *response.headers_mut() = headers;
    Ok(Parsed::Final(ResponseHead {
        response,
        framing,
        keep_alive,
    }))
}

/// The body's framing (RFC 9112 §6.3), and false when the head framed it in
/// two ways (the connection is then not used again).
fn framing(
    headers: &HeaderMap,
    status: StatusCode,
    version: Version,
    head_request: bool,
) -> Result<(Framing, bool), Error> {
    if head_request
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok((Framing::Empty, true));
    }
    let lengths = content_length(headers)?;
    if headers.contains_key(TRANSFER_ENCODING) {
        if version == Version::HTTP_10 {
            return Err(Error::Malformed(
                "Transfer-Encoding in an HTTP/1.0 response",
            ));
        }
        // Chunked wins over a Content-Length beside it, which is dropped
        // before the response goes on (`clean_response`).
        let chunked = headers
            .get_all(TRANSFER_ENCODING)
            .iter()
            .next_back()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
        let framing = if chunked {
            Framing::Chunked
        } else {
            Framing::Close
        };
        return Ok((framing, lengths.is_none()));
    }
    Ok((lengths.map_or(Framing::Close, Framing::Length), true))
}

/// The Content-Length, if there is one: every value (across fields and
/// comma-separated lists) must be the same run of digits.
fn content_length(headers: &HeaderMap) -> Result<Option<u64>, Error> {
    let mut length = None;
    for value in headers.get_all(CONTENT_LENGTH) {
        let text = value
            .to_str()
            .map_err(|_| Error::Malformed("an invalid Content-Length"))?;
        for item in text.split(',') {
            let item = item.trim();
            if item.is_empty() || item.len() > 19 || !item.bytes().all(|b| b.is_ascii_digit()) {
                return Err(Error::Malformed("an invalid Content-Length"));
            }
            let n: u64 = item
                .parse()
                .map_err(|_| Error::Malformed("an invalid Content-Length"))?;
            if length.is_some_and(|l| l != n) {
                return Err(Error::Malformed("two different Content-Lengths"));
            }
            length = Some(n);
        }
    }
    Ok(length)
}

fn has_token(headers: &HeaderMap, name: &HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8], head_request: bool) -> Result<Parsed, Error> {
        parse_response(&mut BytesMut::from(bytes), head_request)
    }

    fn head(bytes: &[u8]) -> Result<ResponseHead, Error> {
        let mut buf = BytesMut::from(bytes);
        match parse_response(&mut buf, false)? {
            Parsed::Final(head) => {
                assert!(buf.is_empty(), "the whole head is taken off");
                Ok(head)
            }
            other => panic!("not a final head: {other:?}"),
        }
    }

    #[test]
    fn a_length_frames_the_body_and_keeps_the_connection() {
        let h = head(b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\nX-A: b\r\n\r\n").unwrap();
        assert_eq!((h.framing, h.keep_alive), (Framing::Length(12), true));
        assert_eq!(h.response.headers()["x-a"], "b");
    }

    #[test]
    fn the_head_is_taken_off_and_the_body_stays_with_values_as_sent() {
        let mut buf = BytesMut::from(
            &b"HTTP/1.1 200 OK\r\nX-Empty:\r\nX-Tab: a\tb\r\nContent-Length: 2\r\n\r\nok"[..],
        );
        let Parsed::Final(h) = parse_response(&mut buf, false).unwrap() else {
            panic!("a final head")
        };
        assert_eq!(&buf[..], b"ok");
        assert_eq!(h.response.headers()["x-empty"], "");
        assert_eq!(h.response.headers()["x-tab"].as_bytes(), b"a\tb");
    }

    #[test]
    fn chunked_wins_over_a_length_and_the_connection_is_not_used_again() {
        let h = head(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n")
            .unwrap();
        assert_eq!((h.framing, h.keep_alive), (Framing::Chunked, false));
        let h = head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n").unwrap();
        assert_eq!((h.framing, h.keep_alive), (Framing::Chunked, true));
        // Chunked not last: the body runs to the close.
        let h = head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n").unwrap();
        assert_eq!((h.framing, h.keep_alive), (Framing::Close, false));
    }

    #[test]
    fn lengths_that_disagree_or_are_not_digits_are_refused() {
        for bad in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: 5, 7\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 0x5\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: \r\n\r\n",
        ] {
            assert!(head(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        let same =
            head(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5, 5\r\n\r\n").unwrap();
        assert_eq!(same.framing, Framing::Length(5));
    }

    #[test]
    fn no_body_after_head_204_304_whatever_the_head_says() {
        let h = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", true).unwrap();
        assert!(matches!(
            h,
            Parsed::Final(ResponseHead {
                framing: Framing::Empty,
                keep_alive: true,
                ..
            })
        ));
        for status in [204, 304] {
            let h = head(format!("HTTP/1.1 {status} X\r\nContent-Length: 9\r\n\r\n").as_bytes())
                .unwrap();
            assert_eq!(h.framing, Framing::Empty);
        }
    }

    #[test]
    fn interim_responses_are_skipped_and_101_is_final_and_last() {
        let mut buf = BytesMut::from(&b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200"[..]);
        assert!(matches!(
            parse_response(&mut buf, false).unwrap(),
            Parsed::Interim
        ));
        assert_eq!(&buf[..], b"HTTP/1.1 200", "the interim head is taken off");
        let h = head(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n").unwrap();
        assert_eq!((h.framing, h.keep_alive), (Framing::Empty, false));
    }

    #[test]
    fn without_framing_the_body_runs_to_the_close_and_so_does_http_1_0() {
        let h = head(b"HTTP/1.1 200 OK\r\n\r\n").unwrap();
        assert_eq!((h.framing, h.keep_alive), (Framing::Close, false));
        let h = head(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n").unwrap();
        assert_eq!((h.framing, h.keep_alive), (Framing::Length(2), false));
        let h =
            head(b"HTTP/1.1 200 OK\r\nConnection: keep-alive, close\r\nContent-Length: 2\r\n\r\n")
                .unwrap();
        assert!(!h.keep_alive);
        assert!(head(b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n").is_err());
    }

    #[test]
    fn heads_that_are_not_http_or_too_large_are_refused() {
        assert!(parse(b"SSH-2.0-OpenSSH_9.2\r\n", false).is_err());
        assert!(parse(b"HTTP/1.1 99 X\r\n\r\n", false).is_err());
        assert!(head(b"HTTP/1.1 200 OK\r\nX: a\x01b\r\n\r\n").is_err());
        // One long field, so the size limit is what refuses it, not the count.
        let long = format!("HTTP/1.1 200 OK\r\nX-Long: {}", "a".repeat(MAX_HEAD_BYTES));
        assert!(
            parse(long.as_bytes(), false).is_err(),
            "partial and past the limit"
        );
        let whole = format!("{long}\r\n\r\n");
        assert!(
            parse(whole.as_bytes(), false).is_err(),
            "complete and past the limit"
        );
        let fits = format!(
            "HTTP/1.1 200 OK\r\nX-Long: {}",
            "a".repeat(MAX_HEAD_BYTES - 100)
        );
        assert!(matches!(parse(fits.as_bytes(), false), Ok(Parsed::Partial)));
        let many: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: a\r\n")).collect();
        assert!(parse(format!("HTTP/1.1 200 OK\r\n{many}\r\n").as_bytes(), false).is_err());
    }

    #[test]
    fn the_request_head_carries_pinproxys_framing_only() {
        let req = http::Request::post("https://up.example/a?b=1")
            .header("host", "up.example")
            .header("content-length", "99")
            .header("transfer-encoding", "chunked")
            .body(())
            .unwrap();
        let (parts, ()) = req.into_parts();
        let mut out = BytesMut::new();
        write_request(&mut out, &parts, RequestFraming::Length(5));
        assert_eq!(
            &out[..],
            b"POST /a?b=1 HTTP/1.1\r\nhost: up.example\r\ncontent-length: 5\r\n\r\n"
        );
        assert_eq!(
            RequestFraming::of(&Method::GET, true, Some(0)),
            RequestFraming::None
        );
        assert_eq!(
            RequestFraming::of(&Method::POST, true, Some(0)),
            RequestFraming::Length(0)
        );
        assert_eq!(
            RequestFraming::of(&Method::POST, false, None),
            RequestFraming::Chunked
        );
    }
}
