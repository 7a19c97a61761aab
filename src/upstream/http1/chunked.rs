//! Reading a chunked response body (RFC 9112 §7.1): sizes in hex, each chunk
//! followed by CRLF, the last of size 0, then a trailer section, which is
//! read and dropped. Every line it reads has a bound.

use bytes::{Buf, Bytes, BytesMut};

use super::Error;

/// Longest chunk-size line, extensions included.
const MAX_LINE: usize = 4096;
/// Most bytes of trailer fields after the last chunk.
const MAX_TRAILERS: usize = 16 * 1024;

/// Where the decoder is in the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// In a chunk-size line: the size so far, its digits, and the line's length.
    Size {
        size: u64,
        digits: u8,
        ext: bool,
        line: usize,
    },
    /// After the size line's CR.
    SizeLf {
        size: u64,
    },
    /// In a chunk's data, with this much left.
    Data(u64),
    /// After a chunk's data: its CR, then its LF.
    DataCr,
    DataLf,
    /// In the trailer section: the current line's length, and the section's.
    Trailer {
        line: usize,
        total: usize,
    },
    /// After a trailer line's CR.
    TrailerLf {
        line: usize,
        total: usize,
    },
    Done,
}

/// What the decoder found in the bytes at hand.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Chunk {
    /// Data of the body.
    Data(Bytes),
    /// More bytes are needed.
    More,
    /// The body has ended.
    End,
}

/// A chunked body's decoder.
#[derive(Debug)]
pub(super) struct Decoder {
    state: State,
}

fn size_line() -> State {
    State::Size {
        size: 0,
        digits: 0,
        ext: false,
        line: 0,
    }
}

impl Decoder {
    pub(super) fn new() -> Decoder {
        Decoder { state: size_line() }
    }

    /// The body has ended.
    #[cfg(test)]
    pub(super) fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Takes what it can from the front of `buf`: framing is consumed, data
    /// is split off without a copy.
    pub(super) fn next(&mut self, buf: &mut BytesMut) -> Result<Chunk, Error> {
        loop {
            if let State::Data(left) = self.state {
                if buf.is_empty() {
                    return Ok(Chunk::More);
                }
                let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                self.state = if n as u64 == left {
                    State::DataCr
                } else {
                    State::Data(left - n as u64)
                };
                return Ok(Chunk::Data(buf.split_to(n).freeze()));
            }
            if self.state == State::Done {
                return Ok(Chunk::End);
            }
            let Some(&byte) = buf.first() else {
                return Ok(Chunk::More);
            };
            buf.advance(1);
            self.state = step(self.state, byte)?;
        }
    }
}

fn bad(what: &'static str) -> Error {
    Error::Malformed(what)
}

/// The state after `byte` in `state` (any but `Data` and `Done`).
fn step(state: State, byte: u8) -> Result<State, Error> {
    Ok(match state {
        State::Size {
            size,
            digits,
            ext,
            line,
        } => {
            if line >= MAX_LINE {
                return Err(bad("a chunk-size line longer than 4 KiB"));
            }
            let line = line + 1;
            match byte {
                b'\r' if digits > 0 => State::SizeLf { size },
                b'\n' => return Err(bad("a chunk-size line not ended by CRLF")),
                _ if ext => State::Size {
                    size,
                    digits,
                    ext,
                    line,
                },
                b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F'
                    if !ext && line == usize::from(digits) + 1 =>
                {
                    if digits >= 16 {
                        return Err(bad("a chunk size that does not fit in 64 bits"));
                    }
                    let value = u64::from(char::from(byte).to_digit(16).unwrap_or(0));
                    State::Size {
                        size: (size << 4) | value,
                        digits: digits + 1,
                        ext,
                        line,
                    }
                }
                // Whitespace before an extension, and the extension itself.
                b' ' | b'\t' if digits > 0 => State::Size {
                    size,
                    digits,
                    ext,
                    line,
                },
                b';' if digits > 0 => State::Size {
                    size,
                    digits,
                    ext: true,
                    line,
                },
                _ => return Err(bad("an invalid chunk size")),
            }
        }
        State::SizeLf { size } => match byte {
            b'\n' if size == 0 => State::Trailer { line: 0, total: 0 },
            b'\n' => State::Data(size),
            _ => return Err(bad("a chunk-size line not ended by CRLF")),
        },
        State::DataCr => match byte {
            b'\r' => State::DataLf,
            _ => return Err(bad("a chunk not followed by CRLF")),
        },
        State::DataLf => match byte {
            b'\n' => size_line(),
            _ => return Err(bad("a chunk not followed by CRLF")),
        },
        State::Trailer { line, total } => {
            if total >= MAX_TRAILERS {
                return Err(bad("trailer fields larger than 16 KiB"));
            }
            match byte {
                b'\r' => State::TrailerLf {
                    line,
                    total: total + 1,
                },
                _ => State::Trailer {
                    line: line + 1,
                    total: total + 1,
                },
            }
        }
        State::TrailerLf { line, total } => match byte {
            b'\n' if line == 0 => State::Done,
            b'\n' => State::Trailer {
                line: 0,
                total: total + 1,
            },
            _ => return Err(bad("a trailer line not ended by CRLF")),
        },
        State::Data(_) | State::Done => state,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The body `wire` decodes to, fed `step` bytes at a time, and whether it ended.
    fn decode(wire: &[u8], step: usize) -> Result<(Vec<u8>, bool), Error> {
        let mut decoder = Decoder::new();
        let mut buf = BytesMut::new();
        let mut body = Vec::new();
        for piece in wire.chunks(step) {
            buf.extend_from_slice(piece);
            loop {
                match decoder.next(&mut buf)? {
                    Chunk::Data(d) => body.extend_from_slice(&d),
                    Chunk::More => break,
                    Chunk::End => return Ok((body, true)),
                }
            }
        }
        Ok((body, decoder.is_done()))
    }

    #[test]
    fn chunks_decode_whole_however_the_bytes_arrive() {
        let wire =
            b"5\r\nhello\r\n1;name=value\r\n \r\nA \t; x\r\n0123456789\r\n0\r\nTrailer: t\r\n\r\n";
        for step in [1, 2, 3, 7, wire.len()] {
            assert_eq!(
                decode(wire, step).unwrap(),
                (b"hello 0123456789".to_vec(), true),
                "{step} bytes at a time"
            );
        }
    }

    #[test]
    fn bytes_after_the_end_are_left_in_the_buffer() {
        let mut decoder = Decoder::new();
        let mut buf = BytesMut::from(&b"0\r\n\r\nHTTP/1.1"[..]);
        assert_eq!(decoder.next(&mut buf).unwrap(), Chunk::End);
        assert_eq!(&buf[..], b"HTTP/1.1");
    }

    #[test]
    fn malformed_framing_is_refused() {
        for bad in [
            &b"x\r\n"[..],
            b"\r\n",
            b"-5\r\nhello\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"5\r\nhelloXY0\r\n\r\n",
            b"5 5\r\nhello\r\n",
            b"0\r\n\r\r",
            b"11111111111111111\r\n",
        ] {
            assert!(decode(bad, 1).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        let long = [b"5;".to_vec(), vec![b'x'; MAX_LINE], b"\r\n".to_vec()].concat();
        assert!(decode(&long, 100).is_err());
        let trailers = [
            b"0\r\n".to_vec(),
            b"T: x\r\n".repeat(MAX_TRAILERS / 6 + 1),
            b"\r\n".to_vec(),
        ]
        .concat();
        assert!(decode(&trailers, 100).is_err());
    }

    #[test]
    fn a_body_cut_short_has_not_ended() {
        assert_eq!(decode(b"5\r\nhel", 2).unwrap(), (b"hel".to_vec(), false));
        assert_eq!(
            decode(b"5\r\nhello\r\n0\r\n", 2).unwrap(),
            (b"hello".to_vec(), false)
        );
    }
}
