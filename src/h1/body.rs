//! Request and response bodies, decoded from the bytes read so far: a known length or
//! chunked (RFC 9112 §7.1, extensions ignored, trailers kept), or, for responses only,
//! everything until the connection closes.

use super::{trim, MAX_CHUNK_LINE, MAX_TRAILER_BYTES};
use bytes::{Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};

/// How a body is framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// No body (HEAD, 1xx, 204, 304, `Content-Length: 0`, a request without either header).
    Empty,
    Length(u64),
    Chunked,
    /// Until the app closes the connection (responses only).
    Close,
}

/// Why a body could not be read to its end.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BodyError {
    #[error("the connection closed before the end of the body")]
    Incomplete,
    #[error("invalid chunked encoding in the body")]
    Chunked,
}

/// One step of body decoding.
#[derive(Debug, PartialEq)]
pub enum Decoded {
    Data(Bytes),
    Trailers(HeaderMap),
    /// The body ended; nothing of it is left in the buffer.
    End,
    /// Read more.
    More,
}

/// Decodes a body from the bytes read so far.
#[derive(Debug)]
pub struct Decoder {
    state: State,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Length(u64),
    Close,
    /// Chunked: reading a size line (`seen` bytes of it looked at so far).
    Size {
        seen: usize,
    },
    /// Chunked: inside a chunk's data.
    Data(u64),
    /// Chunked: the CRLF after a chunk's data.
    DataEnd,
    Trailers,
    Done,
}

impl Decoder {
    pub fn new(framing: Framing) -> Decoder {
        let state = match framing {
            Framing::Empty | Framing::Length(0) => State::Done,
            Framing::Length(n) => State::Length(n),
            Framing::Close => State::Close,
            Framing::Chunked => State::Size { seen: 0 },
        };
        Decoder { state }
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Bytes of data still expected, when known.
    pub fn remaining(&self) -> Option<u64> {
        match self.state {
            State::Length(n) => Some(n),
            State::Done => Some(0),
            _ => None,
        }
    }

    /// The next piece of the body from `buf`, consuming what it uses.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, BodyError> {
        loop {
            match self.state {
                State::Done => return Ok(Decoded::End),
                State::Length(n) | State::Data(n) => {
                    if buf.is_empty() {
                        return Ok(Decoded::More);
                    }
                    let take = usize::try_from(n).unwrap_or(usize::MAX).min(buf.len());
                    let left = n - take as u64;
                    self.state = match self.state {
                        State::Length(_) if left == 0 => State::Done,
                        State::Length(_) => State::Length(left),
                        _ if left == 0 => State::DataEnd,
                        _ => State::Data(left),
                    };
                    return Ok(Decoded::Data(buf.split_to(take).freeze()));
                }
                State::Close => {
                    if buf.is_empty() {
                        return Ok(Decoded::More);
                    }
                    return Ok(Decoded::Data(buf.split().freeze()));
                }
                State::Size { seen } => {
                    let Some(lf) = buf[seen..].iter().position(|&b| b == b'\n') else {
                        if buf.len() > MAX_CHUNK_LINE {
                            return Err(BodyError::Chunked);
                        }
                        self.state = State::Size { seen: buf.len() };
                        return Ok(Decoded::More);
                    };
                    let line = buf.split_to(seen + lf + 1);
                    let size = chunk_size(&line)?;
                    self.state = if size == 0 {
                        State::Trailers
                    } else {
                        State::Data(size)
                    };
                }
                State::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(Decoded::More);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(BodyError::Chunked);
                    }
                    let _ = buf.split_to(2);
                    self.state = State::Size { seen: 0 };
                }
                State::Trailers => return self.trailers(buf),
            }
        }
    }

    fn trailers(&mut self, buf: &mut BytesMut) -> Result<Decoded, BodyError> {
        let mut slots = [httparse::EMPTY_HEADER; 32];
        match httparse::parse_headers(buf, &mut slots) {
            Ok(httparse::Status::Complete((len, parsed))) => {
                let mut map = HeaderMap::new();
                for h in parsed.iter() {
                    // Trailers that are not valid headers are dropped, not fatal.
                    if let (Ok(n), Ok(v)) = (
                        HeaderName::from_bytes(h.name.as_bytes()),
                        HeaderValue::from_bytes(h.value),
                    ) {
                        map.append(n, v);
                    }
                }
                let _ = buf.split_to(len);
                self.state = State::Done;
                Ok(if map.is_empty() {
                    Decoded::End
                } else {
                    Decoded::Trailers(map)
                })
            }
            Ok(httparse::Status::Partial) if buf.len() <= MAX_TRAILER_BYTES => Ok(Decoded::More),
            Ok(httparse::Status::Partial) | Err(_) => Err(BodyError::Chunked),
        }
    }

    /// The connection reached end of file: the end of a close-delimited body, an
    /// error for any other that is not done.
    pub fn eof(&mut self) -> Result<Decoded, BodyError> {
        match self.state {
            State::Close | State::Done => {
                self.state = State::Done;
                Ok(Decoded::End)
            }
            _ => Err(BodyError::Incomplete),
        }
    }
}

/// The size from a chunk-size line (`1a;ext=v\r\n`), extensions ignored.
fn chunk_size(line: &[u8]) -> Result<u64, BodyError> {
    let line = line.strip_suffix(b"\n").ok_or(BodyError::Chunked)?;
    let line = line.strip_suffix(b"\r").ok_or(BodyError::Chunked)?;
    let digits_end = line
        .iter()
        .position(|b| !b.is_ascii_hexdigit())
        .unwrap_or(line.len());
    let (digits, rest) = line.split_at(digits_end);
    if digits.is_empty() || digits.len() > 15 {
        return Err(BodyError::Chunked);
    }
    let rest = trim(rest);
    if !(rest.is_empty() || rest.starts_with(b";")) {
        return Err(BodyError::Chunked);
    }
    digits.iter().try_fold(0u64, |n, &c| {
        let d = (c as char).to_digit(16).ok_or(BodyError::Chunked)?;
        Ok(n * 16 + u64::from(d))
    })
}
