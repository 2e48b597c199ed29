//! Rewriting request and response heads as they cross sluice.
//!
//! End-to-end headers pass exactly as sent (names, values, order of repeats): the app
//! checks `X-Security-Token`, `X-Client-Signature`, `X-Request-Timestamp`, `Origin` and
//! `Authorization`. Hop-by-hop headers (RFC 9110 §7.6.1, plus any named in `Connection`)
//! are removed both ways, except `Upgrade`/`Connection: upgrade` on an upgrade exchange.
//! The peer address is appended to `X-Forwarded-For` (the app rate-limits by it),
//! `X-Forwarded-Proto` is set when absent, and `X-Request-Id` is kept or created: these
//! three are written straight into the encoded head ([`Forwarded`]), so the request's
//! header map is never grown for them.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{request, Uri, Version};
use std::net::{IpAddr, Ipv4Addr};

pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Hop-by-hop headers that never cross a proxy (besides those `Connection` names).
/// `Trailer` is not one (RFC 9110 §6.6.2): it names the trailer fields that follow a
/// chunked body, and hyper sends a response's trailers only when it names them.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    KEEP_ALIVE,
    PROXY_CONNECTION,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// True when the head asks to switch protocols (`Connection: upgrade` + `Upgrade`).
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && connection_tokens(headers).any(|t| t.eq_ignore_ascii_case("upgrade"))
}

fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// True for the fixed hop-by-hop names. Looks at the length first: almost every header
/// is end-to-end, and no hop-by-hop name is 3-6, 8, 9 or 11-15 bytes long.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(name.as_str().len(), 2 | 7 | 10 | 16..=19) && HOP_BY_HOP.contains(name)
}

/// Removes hop-by-hop headers. With `upgrade`, keeps `Upgrade` and sets
/// `Connection: upgrade` so the next hop sees the same request to switch.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    // One pass over the names instead of a hashed `remove` per hop-by-hop name: most
    // heads carry none of them.
    if !headers.keys().any(is_hop_by_hop) {
        if upgrade {
            headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        }
        return;
    }
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = connection_tokens(headers)
            .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
            .collect();
        for name in named {
            if !(upgrade && name == header::UPGRADE) {
                headers.remove(name);
            }
        }
    }
    for name in HOP_BY_HOP.iter() {
        if !(upgrade && *name == header::UPGRADE) {
            headers.remove(name);
        }
    }
    if upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// The headers sluice adds to a forwarded request, written by the request encoder as it
/// goes over the client's headers ([`crate::h1::client::encode_request`]).
#[derive(Clone, Copy, Debug)]
pub struct Forwarded<'a> {
    /// Appended to `X-Forwarded-For` (repeated lines are folded into one list).
    pub peer: IpAddr,
    /// `X-Forwarded-Proto`, unless the client sent one.
    pub proto: &'static str,
    /// `X-Request-Id`, unless the client sent one.
    pub request_id: &'a HeaderValue,
}

/// What the encoder saw of the headers [`Forwarded`] completes.
#[derive(Debug, Default)]
pub struct Seen<'h> {
    forwarded_for: Vec<&'h [u8]>,
    proto: bool,
    request_id: bool,
}

impl<'h> Seen<'h> {
    /// Looks at one client header; `true` when the encoder must not write it as it is
    /// (an `X-Forwarded-For` line, written folded at the end).
    pub fn see(&mut self, name: &HeaderName, value: &'h HeaderValue) -> bool {
        // Most names are none of these three: compare lengths first.
        match name.as_str().len() {
            15 if *name == X_FORWARDED_FOR => {
                self.forwarded_for.push(value.as_bytes());
                true
            }
            17 if *name == X_FORWARDED_PROTO => {
                self.proto = true;
                false
            }
            12 if *name == X_REQUEST_ID => {
                self.request_id = true;
                false
            }
            _ => false,
        }
    }
}

impl Forwarded<'_> {
    /// Writes the added header lines, given what the client's head had.
    pub fn write(&self, seen: &Seen<'_>, out: &mut Vec<u8>) {
        out.extend_from_slice(b"x-forwarded-for: ");
        for prior in &seen.forwarded_for {
            out.extend_from_slice(prior);
            out.extend_from_slice(b", ");
        }
        let mut v4 = [0u8; 15];
        match self.peer {
            IpAddr::V4(ip) => out.extend_from_slice(ipv4_text(ip, &mut v4)),
            IpAddr::V6(ip) => out.extend_from_slice(ip.to_string().as_bytes()),
        }
        out.extend_from_slice(b"\r\n");
        if !seen.proto {
            out.extend_from_slice(b"x-forwarded-proto: ");
            out.extend_from_slice(self.proto.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        if !seen.request_id {
            out.extend_from_slice(b"x-request-id: ");
            out.extend_from_slice(self.request_id.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }
}

/// Dotted-quad text of `ip` in `buf`, without `fmt` (a tenth of the instructions of
/// `Display`; this runs on every request).
fn ipv4_text(ip: Ipv4Addr, buf: &mut [u8; 15]) -> &[u8] {
    let mut n = 0;
    for (i, octet) in ip.octets().into_iter().enumerate() {
        if i > 0 {
            buf[n] = b'.';
            n += 1;
        }
        if octet >= 100 {
            buf[n] = b'0' + octet / 100;
            n += 1;
        }
        if octet >= 10 {
            buf[n] = b'0' + octet / 10 % 10;
            n += 1;
        }
        buf[n] = b'0' + octet % 10;
        n += 1;
    }
    &buf[..n]
}

/// The request's id: the client's `X-Request-Id`, or a new one.
pub fn request_id(headers: &HeaderMap, ids: &RequestIds) -> HeaderValue {
    headers
        .get(&X_REQUEST_ID)
        .cloned()
        .unwrap_or_else(|| ids.next())
}

/// Rewrites a client request head for the upstream, in place: hop-by-hop headers go,
/// an HTTP/2 `:authority` becomes `Host`, the target becomes origin-form. (The
/// forwarding headers are added as the head is encoded: [`Forwarded`].)
pub fn request_head(parts: &mut request::Parts) {
    let upgrade = parts.version == Version::HTTP_11 && is_upgrade(&parts.headers);
    strip_hop_by_hop(&mut parts.headers, upgrade);
    // HTTP/2 carries the host in the :authority pseudo-header; HTTP/1.1 needs `Host`.
    if parts.uri.authority().is_some() && !parts.headers.contains_key(header::HOST) {
        if let Some(v) = parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        {
            parts.headers.insert(header::HOST, v);
        }
    }
    // Origin-form for the upstream.
    if parts.uri.scheme().is_some() || parts.uri.authority().is_some() {
        let pq = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
        if let Ok(uri) = pq.parse::<Uri>() {
            parts.uri = uri;
        }
    }
    parts.version = Version::HTTP_11;
}

/// Generates request ids: 32 hex digits, a random per-generator prefix and a counter.
#[derive(Debug)]
pub struct RequestIds {
    prefix: [u8; 16],
    next: std::sync::atomic::AtomicU64,
}

impl RequestIds {
    pub fn new() -> RequestIds {
        use std::hash::{BuildHasher, Hasher};
        // RandomState is seeded from the OS; one hash of it is a good-enough random prefix.
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(0x5eed);
        let mut prefix = [0u8; 16];
        hex(h.finish(), &mut prefix);
        RequestIds {
            prefix,
            next: std::sync::atomic::AtomicU64::new(1),
        }
    }

    pub fn next(&self) -> HeaderValue {
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut id = [0u8; 32];
        let (prefix, counter) = id.split_at_mut(16);
        prefix.copy_from_slice(&self.prefix);
        if let Ok(counter) = <&mut [u8; 16]>::try_from(counter) {
            hex(n, counter);
        }
        HeaderValue::from_bytes(&id).unwrap_or(HeaderValue::from_static("0"))
    }
}

/// `v` as 16 lowercase hex digits (`format!("{v:016x}")` without `fmt`).
fn hex(v: u64, out: &mut [u8; 16]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, d) in out.iter_mut().enumerate() {
        *d = DIGITS[((v >> (60 - 4 * i)) & 0xf) as usize];
    }
}

impl Default for RequestIds {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::h1::client::{encode_request, RequestFraming};
    use http::Request;

    fn parts(req: Request<()>) -> request::Parts {
        req.into_parts().0
    }

    /// `parts` rewritten for the app and encoded with `forwarded`: the header lines after
    /// the request line, lowercase names.
    fn forwarded_head(
        mut p: request::Parts,
        peer: IpAddr,
        id: &HeaderValue,
    ) -> Vec<(String, String)> {
        request_head(&mut p);
        let f = Forwarded {
            peer,
            proto: "http",
            request_id: id,
        };
        let mut out = Vec::new();
        encode_request(&p, RequestFraming::Empty, Some(&f), &mut out);
        String::from_utf8_lossy(&out)
            .lines()
            .skip(1)
            .filter_map(|l| l.split_once(": "))
            .map(|(n, v)| (n.to_owned(), v.to_owned()))
            .collect()
    }

    fn get<'a>(h: &'a [(String, String)], name: &str) -> Vec<&'a str> {
        h.iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    #[test]
    fn strips_hop_by_hop_and_connection_named_headers_only() {
        let p = parts(
            Request::get("/x")
                .header("connection", "keep-alive, X-Secret-Hop")
                .header("x-secret-hop", "1")
                .header("keep-alive", "timeout=5")
                .header("te", "trailers")
                .header("x-security-token", "abc")
                .header("authorization", "Bearer t")
                .header("set-cookie", "a=1")
                .header("set-cookie", "b=2")
                .body(())
                .unwrap_or_default(),
        );
        let peer = "10.1.2.3".parse().unwrap_or(IpAddr::from([0; 4]));
        let h = forwarded_head(p, peer, &HeaderValue::from_static("id-1"));
        for gone in ["connection", "x-secret-hop", "keep-alive", "te"] {
            assert!(get(&h, gone).is_empty(), "{gone} should be removed");
        }
        assert_eq!(get(&h, "x-security-token"), ["abc"]);
        assert_eq!(get(&h, "authorization"), ["Bearer t"]);
        assert_eq!(get(&h, "set-cookie"), ["a=1", "b=2"]);
        assert_eq!(get(&h, "x-forwarded-for"), ["10.1.2.3"]);
        assert_eq!(get(&h, "x-forwarded-proto"), ["http"]);
        assert_eq!(get(&h, "x-request-id"), ["id-1"]);
    }

    #[test]
    fn appends_to_existing_forwarded_for_and_keeps_request_id() {
        let p = parts(
            Request::get("/x")
                .header("x-forwarded-for", "1.1.1.1")
                .header("x-forwarded-for", "2.2.2.2, 3.3.3.3")
                .header("x-forwarded-proto", "https")
                .header("x-request-id", "abc")
                .body(())
                .unwrap_or_default(),
        );
        let ids = RequestIds::new();
        let id = request_id(&p.headers, &ids);
        assert_eq!(id, "abc");
        let h = forwarded_head(p, IpAddr::from([9, 9, 9, 9]), &id);
        assert_eq!(get(&h, "x-request-id"), ["abc"]);
        assert_eq!(
            get(&h, "x-forwarded-for"),
            ["1.1.1.1, 2.2.2.2, 3.3.3.3, 9.9.9.9"],
            "one folded line"
        );
        assert_eq!(get(&h, "x-forwarded-proto"), ["https"]);
        let v6 = forwarded_head(
            parts(Request::get("/").body(()).unwrap_or_default()),
            "2001:db8::1".parse().unwrap_or(IpAddr::from([0; 4])),
            &id,
        );
        assert_eq!(get(&v6, "x-forwarded-for"), ["2001:db8::1"]);
    }

    #[test]
    fn upgrade_keeps_upgrade_headers() {
        let p = parts(
            Request::get("/ws")
                .header("connection", "Upgrade")
                .header("upgrade", "websocket")
                .header("sec-websocket-key", "k")
                .body(())
                .unwrap_or_default(),
        );
        let h = forwarded_head(
            p,
            IpAddr::from([1, 2, 3, 4]),
            &HeaderValue::from_static("i"),
        );
        assert_eq!(get(&h, "upgrade"), ["websocket"]);
        assert_eq!(get(&h, "connection"), ["upgrade"]);
        assert_eq!(get(&h, "sec-websocket-key"), ["k"]);
    }

    #[test]
    fn h2_authority_becomes_host_and_origin_form() {
        let mut p = parts(
            Request::get("http://app.example:8080/a?b=1")
                .version(Version::HTTP_2)
                .body(())
                .unwrap_or_default(),
        );
        request_head(&mut p);
        assert_eq!(p.headers["host"], "app.example:8080");
        assert_eq!(p.uri, "/a?b=1");
        assert_eq!(p.version, Version::HTTP_11);
        // An origin-form request is left as it came.
        let mut p = parts(Request::get("/a").body(()).unwrap_or_default());
        request_head(&mut p);
        assert!(!p.headers.contains_key("host"));
    }

    #[test]
    fn request_ids_are_unique_hex() {
        let ids = RequestIds::new();
        let (a, b) = (ids.next(), ids.next());
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        let (a, b) = (a.as_bytes(), b.as_bytes());
        assert_eq!(a[..16], b[..16], "one prefix per generator");
        assert_eq!(&a[16..], b"0000000000000001");
        assert_eq!(&b[16..], b"0000000000000002");
        let mut out = [0u8; 16];
        hex(0x0123_4567_89ab_cdef, &mut out);
        assert_eq!(&out, b"0123456789abcdef");
    }

    #[test]
    fn ipv4_text_matches_display() {
        for ip in [
            [0, 0, 0, 0],
            [127, 0, 0, 1],
            [10, 99, 100, 255],
            [9, 10, 200, 1],
        ] {
            let ip = Ipv4Addr::from(ip);
            let mut buf = [0u8; 15];
            assert_eq!(ipv4_text(ip, &mut buf), ip.to_string().as_bytes());
        }
    }

    #[test]
    fn upgrade_without_hop_by_hop_headers_still_gets_connection_upgrade() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("x"));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h["connection"], "upgrade");
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("x"));
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1);
        for name in HOP_BY_HOP.iter() {
            assert!(is_hop_by_hop(name), "{name}");
        }
        assert!(!is_hop_by_hop(&header::HOST));
        assert!(!is_hop_by_hop(&HeaderName::from_static("x-connection")));
    }
}
