//! HTTP/1.1 framing for the upstream side, with no I/O: the request head written from
//! `http::request::Parts`, the response head parsed with `httparse` into an
//! `http::Response` whose header values share the read buffer, and the response body's
//! framing (RFC 9112 §6.3) decoded from whatever bytes have arrived.
//!
//! sluice speaks to one known app over loopback, so this is a client for that job, not a
//! general one: it sends origin-form requests, never pipelines, and treats anything it
//! cannot frame with certainty as the end of the connection's reuse.

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{request, Method, StatusCode, Version};
use std::mem::MaybeUninit;

/// Longest response head accepted from the app.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Most response header lines accepted from the app.
pub const MAX_HEADERS: usize = 128;
/// Longest chunk-size line (with extensions) and trailer section accepted.
const MAX_CHUNK_LINE: usize = 4096;
const MAX_TRAILER_BYTES: usize = 16 * 1024;

/// How the request body is framed on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestFraming {
    /// No body.
    Empty,
    /// `Content-Length: n` (n may be 0 when the client sent that header).
    Length(u64),
    /// `Transfer-Encoding: chunked`: the length is not known up front.
    Chunked,
}

impl RequestFraming {
    /// From the body's exact size, if known, and whether the client sent a
    /// `Content-Length`. A body of unknown size is chunked.
    pub fn choose(exact: Option<u64>, end_stream: bool, had_length: bool) -> RequestFraming {
        match exact {
            Some(0) if end_stream && !had_length => RequestFraming::Empty,
            Some(n) => RequestFraming::Length(n),
            None if end_stream => RequestFraming::Empty,
            None => RequestFraming::Chunked,
        }
    }
}

/// Writes the request head for `parts` into `out`: request line, every header but the
/// framing ones (which `framing` decides), the framing header, the blank line.
pub fn encode_request(parts: &request::Parts, framing: RequestFraming, out: &mut Vec<u8>) {
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    if parts.method == Method::CONNECT {
        out.extend_from_slice(parts.uri.authority().map_or("", |a| a.as_str()).as_bytes());
    } else {
        let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
        out.extend_from_slice(if target.is_empty() { "/" } else { target }.as_bytes());
    }
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in &parts.headers {
        if name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    match framing {
        RequestFraming::Empty => {}
        RequestFraming::Length(n) => {
            out.extend_from_slice(b"content-length: ");
            push_decimal(n, out);
            out.extend_from_slice(b"\r\n");
        }
        RequestFraming::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    out.extend_from_slice(b"\r\n");
}

fn push_decimal(mut n: u64, out: &mut Vec<u8>) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// The size line that opens one chunk of `len` bytes.
pub fn chunk_size_line(len: usize) -> Bytes {
    Bytes::from(format!("{len:x}\r\n"))
}

/// The last chunk plus trailers (or none) and the closing blank line.
pub fn last_chunk(trailers: Option<&HeaderMap>) -> Bytes {
    let mut out = b"0\r\n".to_vec();
    for (name, value) in trailers.into_iter().flatten() {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Bytes::from(out)
}

/// Why the app's response could not be read as HTTP/1.1.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HeadError {
    #[error("invalid response head: {0}")]
    Parse(httparse::Error),
    #[error("response head over {MAX_HEAD_BYTES} bytes or {MAX_HEADERS} headers")]
    TooLarge,
    #[error("invalid header in response")]
    Header,
    #[error("invalid content-length in response")]
    ContentLength,
    #[error("101 Switching Protocols for a request that did not ask to upgrade")]
    UnexpectedUpgrade,
}

/// How the response body is framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// No body (HEAD, 1xx, 204, 304, or `Content-Length: 0`).
    Empty,
    Length(u64),
    Chunked,
    /// Until the app closes the connection.
    Close,
}

/// A parsed response head.
#[derive(Debug)]
pub struct ResponseHead {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    pub framing: Framing,
    /// The connection may carry another request once this body has been read whole.
    pub reusable: bool,
}

/// What the request asked, for reading its answer.
#[derive(Clone, Copy, Debug)]
pub struct Asked {
    pub head: bool,
    pub upgrade: bool,
}

/// Parses a response head from the front of `buf`. `Ok(None)`: incomplete, read more.
/// On success the head's bytes are split off `buf` (header values keep sharing them)
/// and `buf` starts at the body. Interim 1xx responses (other than a 101 the request
/// asked for) are dropped and parsing goes on with what follows them.
pub fn parse_response(buf: &mut BytesMut, asked: Asked) -> Result<Option<ResponseHead>, HeadError> {
    loop {
        let Some(head) = parse_one(buf, asked)? else {
            return Ok(None);
        };
        let interim =
            head.status.is_informational() && head.status != StatusCode::SWITCHING_PROTOCOLS;
        if !interim {
            return Ok(Some(head));
        }
    }
}

fn parse_one(buf: &mut BytesMut, asked: Asked) -> Result<Option<ResponseHead>, HeadError> {
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    // Each header's name, and where its value sits in the head, so that the values can
    // share the head's bytes once it is split off the buffer.
    let (len, code, minor, names) = {
        let mut resp = httparse::Response::new(&mut []);
        let base = buf.as_ptr() as usize;
        let status = match httparse::ParserConfig::default()
            .allow_multiple_spaces_in_response_status_delimiters(true)
            .parse_response_with_uninit_headers(&mut resp, buf, &mut slots)
        {
            Ok(s) => s,
            Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
            Err(e) => return Err(HeadError::Parse(e)),
        };
        let httparse::Status::Complete(len) = status else {
            return if buf.len() > MAX_HEAD_BYTES {
                Err(HeadError::TooLarge)
            } else {
                Ok(None)
            };
        };
        let mut names = Vec::with_capacity(resp.headers.len());
        for h in resp.headers.iter() {
            let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| HeadError::Header)?;
            let start = h.value.as_ptr() as usize - base;
            names.push((name, start, start + h.value.len()));
        }
        (
            len,
            resp.code.unwrap_or(0),
            resp.version.unwrap_or(1),
            names,
        )
    };
    if len > MAX_HEAD_BYTES {
        return Err(HeadError::TooLarge);
    }
    let raw = buf.split_to(len).freeze();
    let status =
        StatusCode::from_u16(code).map_err(|_| HeadError::Parse(httparse::Error::Status))?;
    let mut headers = HeaderMap::with_capacity(names.len());
    for (name, start, end) in names {
        let value =
            HeaderValue::from_maybe_shared(raw.slice(start..end)).map_err(|_| HeadError::Header)?;
        headers.append(name, value);
    }
    let version = if minor == 0 {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    if status == StatusCode::SWITCHING_PROTOCOLS && !asked.upgrade {
        return Err(HeadError::UnexpectedUpgrade);
    }
    let (framing, framing_clean) = framing(&headers, status, asked)?;
    let reusable = framing_clean && framing != Framing::Close && keep_alive(&headers, version);
    Ok(Some(ResponseHead {
        status,
        version,
        headers,
        framing,
        reusable,
    }))
}

/// The body framing (RFC 9112 §6.3) and whether it was unambiguous: a response with both
/// `Transfer-Encoding` and `Content-Length` is read by the former, then not reused.
fn framing(
    headers: &HeaderMap,
    status: StatusCode,
    asked: Asked,
) -> Result<(Framing, bool), HeadError> {
    if asked.head
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok((Framing::Empty, true));
    }
    let has_length = headers.contains_key(header::CONTENT_LENGTH);
    if headers.contains_key(header::TRANSFER_ENCODING) {
        let chunked_last = headers
            .get_all(header::TRANSFER_ENCODING)
            .iter()
            .flat_map(|v| v.as_bytes().split(|&b| b == b','))
            .map(trim)
            .rfind(|t| !t.is_empty())
            .is_some_and(|t| t.eq_ignore_ascii_case(b"chunked"));
        let framing = if chunked_last {
            Framing::Chunked
        } else {
            Framing::Close
        };
        return Ok((framing, !has_length));
    }
    if !has_length {
        return Ok((Framing::Close, true));
    }
    // Every value (and every comma-separated item of each) must be the same number.
    let mut length: Option<u64> = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        for item in value.as_bytes().split(|&b| b == b',').map(trim) {
            let n = parse_decimal(item).ok_or(HeadError::ContentLength)?;
            if length.is_some_and(|l| l != n) {
                return Err(HeadError::ContentLength);
            }
            length = Some(n);
        }
    }
    Ok(match length {
        Some(0) => (Framing::Empty, true),
        Some(n) => (Framing::Length(n), true),
        None => return Err(HeadError::ContentLength),
    })
}

fn keep_alive(headers: &HeaderMap, version: Version) -> bool {
    let token = |want: &[u8]| {
        headers
            .get_all(header::CONNECTION)
            .iter()
            .flat_map(|v| v.as_bytes().split(|&b| b == b','))
            .any(|t| trim(t).eq_ignore_ascii_case(want))
    };
    if version == Version::HTTP_10 {
        token(b"keep-alive")
    } else {
        !token(b"close")
    }
}

fn trim(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &b[start..end]
}

fn parse_decimal(b: &[u8]) -> Option<u64> {
    if b.is_empty() || b.len() > 19 {
        return None;
    }
    b.iter().try_fold(0u64, |n, &c| {
        c.is_ascii_digit().then(|| n * 10 + u64::from(c - b'0'))
    })
}

/// Why a response body could not be read to its end.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BodyError {
    #[error("the app closed the connection before the end of the response body")]
    Incomplete,
    #[error("invalid chunked encoding in the response body")]
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

/// Decodes a response body from the bytes read so far.
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

#[cfg(test)]
mod tests;
