//! The client's side: request heads parsed into `http::request::Parts` with the body's
//! framing (RFC 9112 §6), and response heads written from `http::response::Parts`.
//!
//! A request that could smuggle a second one past a proxy is refused outright:
//! `Transfer-Encoding` together with `Content-Length`, a transfer coding other than a
//! final `chunked`, or `Content-Length` values that disagree.

use super::body::Framing;
use super::{content_length, push_decimal, push_headers, Facts};
use bytes::BytesMut;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{request, Method, Request, StatusCode, Uri, Version};
use std::mem::MaybeUninit;

/// Header slots on the stack; a head with more (up to the configured limit) is parsed
/// again with slots on the heap.
const STACK_HEADERS: usize = 64;

/// A parsed request head.
#[derive(Debug)]
pub struct RequestHead {
    pub parts: request::Parts,
    /// The request body's framing (never `Close`).
    pub framing: Framing,
    /// The client keeps the connection open after the response.
    pub keep_alive: bool,
    /// The client waits for `100 Continue` before it sends the body.
    pub expect_continue: bool,
}

/// Why a request head was refused; each maps to the status sluice answers with before
/// closing the connection.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RequestError {
    #[error("request head over the size or header-count limit")]
    TooLarge,
    #[error("malformed request: {0}")]
    Malformed(&'static str),
    #[error("unsupported transfer coding")]
    TransferCoding,
    #[error("unsupported HTTP version")]
    Version,
    /// `CONNECT`: sluice is a reverse proxy for one app, not a tunnel to anywhere.
    #[error("CONNECT is not served")]
    Connect,
}

impl RequestError {
    pub fn status(&self) -> StatusCode {
        match self {
            RequestError::TooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            RequestError::Malformed(_) => StatusCode::BAD_REQUEST,
            RequestError::TransferCoding => StatusCode::NOT_IMPLEMENTED,
            RequestError::Version => StatusCode::HTTP_VERSION_NOT_SUPPORTED,
            RequestError::Connect => StatusCode::METHOD_NOT_ALLOWED,
        }
    }
}

/// Limits for request heads, from `[listener]`.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_head_bytes: usize,
    pub max_headers: usize,
}

/// Parses a request head from the front of `buf`. `Ok(None)`: incomplete, read more.
/// On success the head is split off `buf` (header values and the path share its bytes)
/// and `buf` starts at the body or the next request.
pub fn parse_request(
    buf: &mut BytesMut,
    limits: Limits,
) -> Result<Option<RequestHead>, RequestError> {
    match parse_with(buf, limits, false) {
        Err(RequestError::TooLarge) if limits.max_headers > STACK_HEADERS => {
            parse_with(buf, limits, true)
        }
        other => other,
    }
}

/// Where the request target and each header sit in the head, to be cut out of it once it
/// is split off the buffer.
struct Layout {
    len: usize,
    method: Method,
    target: (usize, usize),
    minor: u8,
    facts: Facts,
}

fn parse_with(
    buf: &mut BytesMut,
    limits: Limits,
    on_heap: bool,
) -> Result<Option<RequestHead>, RequestError> {
    // Each header's name and where its value sits; declared out here and drained, not
    // moved: it is a kilobyte on the stack.
    let mut spans = super::HeaderSpans::new();
    let layout = {
        let mut stack;
        let mut heap;
        let slots: &mut [MaybeUninit<httparse::Header<'_>>] = if on_heap {
            heap = Vec::with_capacity(limits.max_headers);
            heap.resize_with(limits.max_headers, MaybeUninit::uninit);
            &mut heap
        } else {
            stack = [const { MaybeUninit::uninit() }; STACK_HEADERS];
            &mut stack
        };
        let raw: &[u8] = buf;
        let base = raw.as_ptr() as usize;
        let mut req = httparse::Request::new(&mut []);
        let status = httparse::ParserConfig::default()
            .allow_multiple_spaces_in_request_line_delimiters(false)
            .parse_request_with_uninit_headers(&mut req, raw, slots);
        let len = match status {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) if raw.len() > limits.max_head_bytes => {
                return Err(RequestError::TooLarge)
            }
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => return Err(RequestError::TooLarge),
            Err(httparse::Error::Version) => return Err(RequestError::Version),
            Err(_) => return Err(RequestError::Malformed("invalid request head")),
        };
        if len > limits.max_head_bytes || req.headers.len() > limits.max_headers {
            return Err(RequestError::TooLarge);
        }
        let method = req.method.unwrap_or("");
        let method = Method::from_bytes(method.as_bytes())
            .map_err(|_| RequestError::Malformed("invalid method"))?;
        if method == Method::CONNECT {
            return Err(RequestError::Connect);
        }
        let path = req.path.unwrap_or("");
        let start = path.as_ptr() as usize - base;
        let mut facts = Facts::new();
        for h in req.headers.iter() {
            let name = HeaderName::from_bytes(h.name.as_bytes())
                .map_err(|_| RequestError::Malformed("invalid header name"))?;
            facts.see(&name, h.value);
            let vs = h.value.as_ptr() as usize - base;
            spans.push((name, vs, vs + h.value.len()));
        }
        Layout {
            len,
            method,
            target: (start, start + path.len()),
            minor: req.version.unwrap_or(1),
            facts,
        }
    };
    let raw = buf.split_to(layout.len).freeze();
    let uri = Uri::from_maybe_shared(raw.slice(layout.target.0..layout.target.1))
        .map_err(|_| RequestError::Malformed("invalid request target"))?;
    let mut headers = HeaderMap::with_capacity(spans.len() + 4);
    for (name, start, end) in spans.drain(..) {
        let value = HeaderValue::from_maybe_shared(raw.slice(start..end))
            .map_err(|_| RequestError::Malformed("invalid header value"))?;
        headers.append(name, value);
    }
    let version = if layout.minor == 0 {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    let facts = layout.facts;
    let framing = request_framing(&facts, version)?;
    let keep_alive = facts.persists(version);
    let expect_continue = version == Version::HTTP_11 && facts.expect_continue;
    let (mut parts, ()) = Request::new(()).into_parts();
    parts.method = layout.method;
    parts.uri = uri;
    parts.version = version;
    parts.headers = headers;
    Ok(Some(RequestHead {
        parts,
        framing,
        keep_alive,
        expect_continue,
    }))
}

/// RFC 9112 §6.1-6.3 for requests, refusing what a proxy must not guess at.
fn request_framing(facts: &Facts, version: Version) -> Result<Framing, RequestError> {
    if facts.transfer_encoding {
        if facts.has_length() {
            return Err(RequestError::Malformed(
                "both Transfer-Encoding and Content-Length",
            ));
        }
        if version == Version::HTTP_10 {
            return Err(RequestError::Malformed("Transfer-Encoding in HTTP/1.0"));
        }
        return if facts.chunked_last {
            Ok(Framing::Chunked)
        } else {
            Err(RequestError::TransferCoding)
        };
    }
    match facts.length {
        Err(()) => Err(RequestError::Malformed("invalid Content-Length")),
        Ok(None | Some(0)) => Ok(Framing::Empty),
        Ok(Some(n)) => Ok(Framing::Length(n)),
    }
}

/// How sluice frames a response body for the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResponseFraming {
    /// No body is sent (HEAD, 1xx, 204, 304), whatever the headers say.
    None,
    Length(u64),
    Chunked,
    /// Until sluice closes the connection (an HTTP/1.0 client, length unknown).
    Close,
}

/// What the response's framing depends on.
#[derive(Clone, Copy, Debug)]
pub struct ResponseInfo {
    pub status: StatusCode,
    pub head_request: bool,
    pub client_version: Version,
    /// The body's exact size when known.
    pub exact: Option<u64>,
}

/// The framing for a response, and whether its `Content-Length` header (if any) is to
/// be written as the headers have it (`true`) or replaced by the framing's. A body of
/// known size is sent with that size: the app's bodies are read by their length, so the
/// two agree, and no header needs looking up.
pub fn response_framing(headers: &HeaderMap, info: ResponseInfo) -> (ResponseFraming, bool) {
    let bodiless = info.status.is_informational()
        || info.status == StatusCode::NO_CONTENT
        || info.status == StatusCode::NOT_MODIFIED;
    if bodiless {
        return (
            ResponseFraming::None,
            info.status == StatusCode::NOT_MODIFIED,
        );
    }
    if info.head_request {
        // The length a GET would have had tells the client the size: keep the app's.
        return (ResponseFraming::None, true);
    }
    match info.exact {
        Some(n) => (ResponseFraming::Length(n), false),
        None => match content_length(headers).ok().flatten() {
            Some(n) => (ResponseFraming::Length(n), true),
            None if info.client_version == Version::HTTP_10 => (ResponseFraming::Close, false),
            None => (ResponseFraming::Chunked, false),
        },
    }
}

/// What the `Connection` header of a response says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Persist {
    /// HTTP/1.1 default: nothing to write.
    Default,
    /// An HTTP/1.0 client asked to keep the connection: `Connection: keep-alive`.
    KeepAlive,
    /// sluice closes after this response: `Connection: close`.
    Close,
}

/// Writes a response head: status line, the headers but the framing ones, the framing
/// header (unless `keep_length` keeps the response's own `Content-Length`), `Date` when
/// the response has none, the `Connection` header `persist` asks for, the blank line.
pub fn encode_response_head(
    status: StatusCode,
    headers: &HeaderMap,
    framing: (ResponseFraming, bool),
    persist: Persist,
    date: &[u8],
    out: &mut Vec<u8>,
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    let (framing, keep_length) = framing;
    let mut has_date = false;
    push_headers(
        headers,
        |n| {
            has_date |= n == header::DATE;
            n == header::TRANSFER_ENCODING
                || n == header::CONNECTION
                || (n == header::CONTENT_LENGTH && !keep_length)
        },
        out,
    );
    match framing {
        ResponseFraming::Length(n) if !keep_length => {
            out.extend_from_slice(b"content-length: ");
            push_decimal(n, out);
            out.extend_from_slice(b"\r\n");
        }
        ResponseFraming::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        ResponseFraming::Length(_) | ResponseFraming::None | ResponseFraming::Close => {}
    }
    if !has_date && !date.is_empty() {
        out.extend_from_slice(b"date: ");
        out.extend_from_slice(date);
        out.extend_from_slice(b"\r\n");
    }
    // An upgrade's `Connection: upgrade` is kept; otherwise sluice decides.
    if status == StatusCode::SWITCHING_PROTOCOLS {
        for v in headers.get_all(header::CONNECTION) {
            out.extend_from_slice(b"connection: ");
            out.extend_from_slice(v.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    } else {
        match persist {
            Persist::Default => {}
            Persist::KeepAlive => out.extend_from_slice(b"connection: keep-alive\r\n"),
            Persist::Close => out.extend_from_slice(b"connection: close\r\n"),
        }
    }
    out.extend_from_slice(b"\r\n");
}

/// A complete minimal response for a refused request head (`400`, `431`, ...); the
/// connection closes after it.
pub fn refusal(status: StatusCode, date: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    encode_response_head(
        status,
        &headers,
        (ResponseFraming::Length(0), true),
        Persist::Close,
        date,
        &mut out,
    );
    out
}

#[cfg(test)]
mod tests;
