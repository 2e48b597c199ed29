//! HTTP/1.1 framing with no I/O, for both sides of sluice: [`server`] reads client
//! request heads and writes response heads, [`client`] writes request heads to the app
//! and reads its response heads, [`body`] decodes `Content-Length` and chunked bodies
//! from whatever bytes have arrived. Heads are parsed with `httparse`; header values share
//! the read buffer instead of being copied.
//!
//! The I/O around these lives in `listener::h1` (clients) and `upstream::conn` (the app).

pub mod body;
pub mod client;
pub mod server;

use http::header::{HeaderMap, HeaderName};

/// A parsed head's header names and where each value lies in the head's bytes, kept
/// until the head is split off the read buffer: on the stack for up to
/// [`INLINE_HEADERS`] (browsers send 10–20), on the heap past that.
type HeaderSpans = smallvec::SmallVec<[(HeaderName, usize, usize); INLINE_HEADERS]>;
const INLINE_HEADERS: usize = 24;

/// Longest chunk-size line (with extensions) and trailer section accepted.
const MAX_CHUNK_LINE: usize = 4096;
const MAX_TRAILER_BYTES: usize = 16 * 1024;

/// `b` without leading and trailing ASCII whitespace.
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

/// A non-negative decimal without sign or spaces, as `Content-Length` requires.
fn parse_decimal(b: &[u8]) -> Option<u64> {
    if b.is_empty() || b.len() > 19 {
        return None;
    }
    b.iter().try_fold(0u64, |n, &c| {
        c.is_ascii_digit().then(|| n * 10 + u64::from(c - b'0'))
    })
}

/// True when a comma-separated list in any `name` header has the token `want`
/// (case-insensitive), as in `Connection: keep-alive, Upgrade`.
fn has_token(headers: &HeaderMap, name: &HeaderName, want: &[u8]) -> bool {
    headers
        .get_all(name)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .any(|t| trim(t).eq_ignore_ascii_case(want))
}

/// What the framing and persistence headers of one head say, gathered while its headers
/// are parsed, so that no header is looked up again afterwards.
#[derive(Debug)]
struct Facts {
    /// The `Content-Length` every value agrees on; `Err` once two disagree or one is bad.
    length: Result<Option<u64>, ()>,
    transfer_encoding: bool,
    /// The last transfer coding named so far is `chunked`.
    chunked_last: bool,
    close: bool,
    keep_alive: bool,
    expect_continue: bool,
}

impl Facts {
    fn new() -> Facts {
        Facts {
            length: Ok(None),
            transfer_encoding: false,
            chunked_last: false,
            close: false,
            keep_alive: false,
            expect_continue: false,
        }
    }

    fn see(&mut self, name: &HeaderName, value: &[u8]) {
        use http::header::{CONNECTION, CONTENT_LENGTH, EXPECT, TRANSFER_ENCODING};
        if name == CONTENT_LENGTH {
            for item in value.split(|&b| b == b',').map(trim) {
                self.length = match (self.length, parse_decimal(item)) {
                    (Ok(None), Some(n)) => Ok(Some(n)),
                    (Ok(Some(l)), Some(n)) if l == n => Ok(Some(n)),
                    _ => Err(()),
                };
            }
        } else if name == TRANSFER_ENCODING {
            self.transfer_encoding = true;
            if let Some(last) = value
                .split(|&b| b == b',')
                .map(trim)
                .rfind(|t| !t.is_empty())
            {
                self.chunked_last = last.eq_ignore_ascii_case(b"chunked");
            }
        } else if name == CONNECTION {
            for t in value.split(|&b| b == b',').map(trim) {
                self.close |= t.eq_ignore_ascii_case(b"close");
                self.keep_alive |= t.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if name == EXPECT {
            self.expect_continue = value.eq_ignore_ascii_case(b"100-continue");
        }
    }

    fn has_length(&self) -> bool {
        !matches!(self.length, Ok(None))
    }

    /// Whether the connection persists after this message (RFC 9112 §9.3).
    fn persists(&self, version: http::Version) -> bool {
        if version == http::Version::HTTP_10 {
            self.keep_alive && !self.close
        } else {
            !self.close
        }
    }
}

/// The client accepts trailer fields after a chunked response (`TE: trailers`).
pub fn accepts_trailers(headers: &HeaderMap) -> bool {
    has_token(headers, &http::header::TE, b"trailers")
}

/// The one length every `Content-Length` value (and every comma-separated item of each)
/// agrees on; `Err` when they disagree or one is not a number; `Ok(None)` with none.
fn content_length(headers: &HeaderMap) -> Result<Option<u64>, ()> {
    let mut length: Option<u64> = None;
    for value in headers.get_all(http::header::CONTENT_LENGTH) {
        for item in value.as_bytes().split(|&b| b == b',').map(trim) {
            let n = parse_decimal(item).ok_or(())?;
            if length.is_some_and(|l| l != n) {
                return Err(());
            }
            length = Some(n);
        }
    }
    Ok(length)
}

/// Appends `n` in decimal.
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

/// Appends `name: value\r\n` for every header in `headers`, skipping those `skip` says.
fn push_headers(headers: &HeaderMap, mut skip: impl FnMut(&HeaderName) -> bool, out: &mut Vec<u8>) {
    for (name, value) in headers {
        if skip(name) {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}

#[cfg(test)]
mod tests;
