//! The app's side: request heads written from `http::request::Parts`, response heads
//! parsed into `http::Response` parts with the body's framing (RFC 9112 §6.3).
//!
//! sluice speaks to one known app over loopback, so this is a client for that job, not a
//! general one: it sends origin-form requests, never pipelines, and treats anything it
//! cannot frame with certainty as the end of the connection's reuse.

use super::body::Framing;
use super::{push_decimal, push_headers, Facts};
use crate::forward::{Forwarded, Seen};
use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{request, Method, StatusCode, Version};
use std::mem::MaybeUninit;

/// Longest response head accepted from the app.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Most response header lines accepted from the app.
pub const MAX_HEADERS: usize = 128;

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
/// framing ones (which `framing` decides), the headers `forwarded` adds, the framing
/// header, the blank line.
pub fn encode_request(
    parts: &request::Parts,
    framing: RequestFraming,
    forwarded: Option<&Forwarded<'_>>,
    out: &mut Vec<u8>,
) {
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    if parts.method == Method::CONNECT {
        out.extend_from_slice(parts.uri.authority().map_or("", |a| a.as_str()).as_bytes());
    } else {
        let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
        out.extend_from_slice(if target.is_empty() { "/" } else { target }.as_bytes());
    }
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut seen = Seen::default();
    for (name, value) in &parts.headers {
        if name == header::CONTENT_LENGTH
            || name == header::TRANSFER_ENCODING
            || (forwarded.is_some() && seen.see(name, value))
        {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if let Some(f) = forwarded {
        f.write(&seen, out);
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

/// The size line that opens one chunk of `len` bytes.
pub fn chunk_size_line(len: usize) -> Bytes {
    Bytes::from(format!("{len:x}\r\n"))
}

/// The last chunk plus trailers (or none) and the closing blank line.
pub fn last_chunk(trailers: Option<&HeaderMap>) -> Bytes {
    let mut out = b"0\r\n".to_vec();
    if let Some(t) = trailers {
        push_headers(t, |_| false, &mut out);
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
    // share the head's bytes once it is split off the buffer. Declared out here and
    // drained, not moved: it is a kilobyte on the stack.
    let mut names = super::HeaderSpans::new();
    let (len, code, minor, facts) = {
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
        let mut facts = Facts::new();
        for h in resp.headers.iter() {
            let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| HeadError::Header)?;
            facts.see(&name, h.value);
            let start = h.value.as_ptr() as usize - base;
            names.push((name, start, start + h.value.len()));
        }
        (
            len,
            resp.code.unwrap_or(0),
            resp.version.unwrap_or(1),
            facts,
        )
    };
    if len > MAX_HEAD_BYTES {
        return Err(HeadError::TooLarge);
    }
    let raw = buf.split_to(len).freeze();
    let status =
        StatusCode::from_u16(code).map_err(|_| HeadError::Parse(httparse::Error::Status))?;
    // Room for what sluice adds on the way to the client (`X-Request-Id`).
    let mut headers = HeaderMap::with_capacity(names.len() + 2);
    for (name, start, end) in names.drain(..) {
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
    let (framing, framing_clean) = framing(&facts, status, asked)?;
    let reusable = framing_clean && framing != Framing::Close && facts.persists(version);
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
fn framing(facts: &Facts, status: StatusCode, asked: Asked) -> Result<(Framing, bool), HeadError> {
    if asked.head
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok((Framing::Empty, true));
    }
    if facts.transfer_encoding {
        let framing = if facts.chunked_last {
            Framing::Chunked
        } else {
            Framing::Close
        };
        return Ok((framing, !facts.has_length()));
    }
    match facts.length {
        Err(()) => Err(HeadError::ContentLength),
        Ok(None) => Ok((Framing::Close, true)),
        Ok(Some(0)) => Ok((Framing::Empty, true)),
        Ok(Some(n)) => Ok((Framing::Length(n), true)),
    }
}
