use super::body::{BodyError, Decoded, Decoder, Framing};
use super::client::*;
use super::*;
use bytes::{Bytes, BytesMut};
use http::header::{HeaderMap, HeaderValue};
use http::{request, Request, StatusCode, Version};

fn parts(req: Request<()>) -> request::Parts {
    req.into_parts().0
}

fn encode(req: Request<()>, framing: RequestFraming) -> String {
    let mut out = Vec::new();
    encode_request(&parts(req), framing, None, &mut out);
    String::from_utf8(out).unwrap_or_default()
}

const GET: Asked = Asked {
    head: false,
    upgrade: false,
};

fn parse(raw: &[u8], asked: Asked) -> (Result<Option<ResponseHead>, HeadError>, BytesMut) {
    let mut buf = BytesMut::from(raw);
    let r = parse_response(&mut buf, asked);
    (r, buf)
}

fn head(raw: &[u8]) -> ResponseHead {
    match parse(raw, GET).0 {
        Ok(Some(h)) => h,
        other => panic!("expected a head, got {other:?}"),
    }
}

#[test]
fn request_head_keeps_headers_and_sets_framing() {
    let req = Request::post("/api/v1/exams/7/answers?x=1")
        .header("host", "app")
        .header("content-length", "999")
        .header("transfer-encoding", "chunked")
        .header("x-security-token", "abc")
        .header("set-cookie", "a=1")
        .header("set-cookie", "b=2")
        .body(())
        .unwrap_or_default();
    let text = encode(req, RequestFraming::Length(12));
    assert_eq!(
        text,
        "POST /api/v1/exams/7/answers?x=1 HTTP/1.1\r\nhost: app\r\nx-security-token: abc\r\n\
         set-cookie: a=1\r\nset-cookie: b=2\r\ncontent-length: 12\r\n\r\n"
    );
    let req = Request::put("/up").body(()).unwrap_or_default();
    assert!(encode(req, RequestFraming::Chunked).ends_with("transfer-encoding: chunked\r\n\r\n"));
    let req = Request::get("/").body(()).unwrap_or_default();
    assert_eq!(encode(req, RequestFraming::Empty), "GET / HTTP/1.1\r\n\r\n");
}

#[test]
fn framing_choice_follows_the_body() {
    use RequestFraming::*;
    assert_eq!(RequestFraming::choose(Some(0), true, false), Empty);
    assert_eq!(RequestFraming::choose(Some(0), true, true), Length(0));
    assert_eq!(RequestFraming::choose(Some(5), false, true), Length(5));
    // An h2 body without content-length, or a chunked HTTP/1 upload.
    assert_eq!(RequestFraming::choose(None, false, false), Chunked);
    assert_eq!(RequestFraming::choose(None, true, false), Empty);
    let mut out = Vec::new();
    push_decimal(0, &mut out);
    out.push(b' ');
    push_decimal(18_446_744_073_709_551_615, &mut out);
    assert_eq!(out, b"0 18446744073709551615");
}

#[test]
fn response_head_is_parsed_and_the_body_left_in_the_buffer() {
    let raw = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\nX-A: 1\r\nx-a: 2\r\n\r\n{\"ok\":true}";
    let (r, buf) = parse(raw, GET);
    let h = r.ok().flatten().expect("complete");
    assert_eq!(h.status, StatusCode::OK);
    assert_eq!(h.version, Version::HTTP_11);
    assert_eq!(h.framing, Framing::Length(11));
    assert!(h.reusable);
    assert_eq!(h.headers["content-type"], "application/json");
    let repeats: Vec<_> = h.headers.get_all("x-a").iter().collect();
    assert_eq!(repeats, ["1", "2"]);
    assert_eq!(&buf[..], b"{\"ok\":true}");
}

#[test]
fn partial_heads_ask_for_more_and_oversized_ones_fail() {
    let (r, buf) = parse(b"HTTP/1.1 200 OK\r\nContent-Le", GET);
    assert!(matches!(r, Ok(None)));
    assert_eq!(buf.len(), 27, "nothing consumed");
    let mut big = b"HTTP/1.1 200 OK\r\nx: ".to_vec();
    big.resize(MAX_HEAD_BYTES + 10, b'a');
    assert!(matches!(parse(&big, GET).0, Err(HeadError::TooLarge)));
    let mut many = b"HTTP/1.1 200 OK\r\n".to_vec();
    for i in 0..=MAX_HEADERS {
        many.extend_from_slice(format!("h{i}: v\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    assert!(matches!(parse(&many, GET).0, Err(HeadError::TooLarge)));
    assert!(matches!(
        parse(b"HTTX/1.1 200 OK\r\n\r\n", GET).0,
        Err(HeadError::Parse(_))
    ));
}

#[test]
fn body_framing_follows_rfc_9112() {
    assert_eq!(
        head(b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n").framing,
        Framing::Empty
    );
    assert_eq!(
        head(b"HTTP/1.1 304 Not Modified\r\n\r\n").framing,
        Framing::Empty
    );
    let h = head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n");
    assert_eq!((h.framing, h.reusable), (Framing::Chunked, true));
    // Both: chunked wins and the connection is not reused (request smuggling).
    let h = head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n");
    assert_eq!((h.framing, h.reusable), (Framing::Chunked, false));
    let h = head(b"HTTP/1.1 200 OK\r\n\r\n");
    assert_eq!((h.framing, h.reusable), (Framing::Close, false));
    assert_eq!(
        head(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").framing,
        Framing::Empty
    );
    assert_eq!(
        head(b"HTTP/1.1 200 OK\r\nContent-Length: 7, 7\r\n\r\n").framing,
        Framing::Length(7)
    );
    for bad in [&b"7, 8"[..], b"-1", b"", b"1x", b"99999999999999999999"] {
        let mut raw = b"HTTP/1.1 200 OK\r\nContent-Length: ".to_vec();
        raw.extend_from_slice(bad);
        raw.extend_from_slice(b"\r\n\r\n");
        assert_eq!(
            parse(&raw, GET).0.err(),
            Some(HeadError::ContentLength),
            "{bad:?}"
        );
    }
    let asked_head = Asked {
        head: true,
        upgrade: false,
    };
    let h = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n", asked_head).0;
    assert_eq!(h.ok().flatten().map(|h| h.framing), Some(Framing::Empty));
}

#[test]
fn connection_reuse_follows_version_and_connection_header() {
    assert!(!head(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n").reusable);
    assert!(!head(b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n").reusable);
    let h = head(b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 1\r\n\r\n");
    assert!(h.reusable);
    assert_eq!(h.version, Version::HTTP_10);
}

#[test]
fn interim_responses_are_skipped_and_upgrades_only_when_asked() {
    let raw = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n";
    assert_eq!(head(raw).status, StatusCode::CREATED);
    // Only the interim part arrived so far: consumed, then more is asked for.
    let (r, buf) = parse(b"HTTP/1.1 100 Continue\r\n\r\n", GET);
    assert!(matches!(r, Ok(None)));
    assert!(buf.is_empty());
    let switch = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nframe";
    assert_eq!(
        parse(switch, GET).0.err(),
        Some(HeadError::UnexpectedUpgrade)
    );
    let asked = Asked {
        head: false,
        upgrade: true,
    };
    let (r, buf) = parse(switch, asked);
    assert_eq!(
        r.ok().flatten().map(|h| h.status),
        Some(StatusCode::SWITCHING_PROTOCOLS)
    );
    assert_eq!(
        &buf[..],
        b"frame",
        "the upgraded protocol's first bytes stay"
    );
}

/// Decodes `input` fed in pieces of `step` bytes; the data, trailers and whether it ended.
fn decode_all(
    framing: Framing,
    input: &[u8],
    step: usize,
) -> Result<(Vec<u8>, Option<HeaderMap>, bool), BodyError> {
    let mut d = Decoder::new(framing);
    let mut buf = BytesMut::new();
    let (mut data, mut trailers) = (Vec::new(), None);
    let mut fed = 0;
    loop {
        match d.decode(&mut buf)? {
            Decoded::Data(b) => data.extend_from_slice(&b),
            Decoded::Trailers(t) => trailers = Some(t),
            Decoded::End => return Ok((data, trailers, buf.is_empty())),
            Decoded::More if fed < input.len() => {
                let end = (fed + step).min(input.len());
                buf.extend_from_slice(&input[fed..end]);
                fed = end;
            }
            Decoded::More => {
                d.eof()?;
                return Ok((data, trailers, true));
            }
        }
    }
}

#[test]
fn chunked_bodies_decode_in_any_split() {
    let input =
        b"5\r\nhello\r\n1a;name=v\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nx-checksum: 42\r\n\r\n";
    for step in [1, 2, 3, 7, input.len()] {
        let (data, trailers, clean) = decode_all(Framing::Chunked, input, step).expect("valid");
        assert_eq!(data, b"helloabcdefghijklmnopqrstuvwxyz", "step {step}");
        assert_eq!(trailers.expect("trailers")["x-checksum"], "42");
        assert!(clean);
    }
    let (data, trailers, _) =
        decode_all(Framing::Chunked, b"3\r\nabc\r\n0\r\n\r\n", 4).expect("valid");
    assert_eq!((data.as_slice(), trailers), (&b"abc"[..], None));
    // What follows the body stays in the buffer (the connection's next bytes).
    let mut d = Decoder::new(Framing::Chunked);
    let mut buf = BytesMut::from(&b"0\r\n\r\nHTTP/1.1"[..]);
    assert_eq!(d.decode(&mut buf), Ok(Decoded::End));
    assert_eq!(&buf[..], b"HTTP/1.1");
}

#[test]
fn bad_or_truncated_chunked_bodies_fail() {
    for bad in [
        &b"zz\r\n"[..],
        b"5\r\nhelloXX",
        b"5 x\r\nhello\r\n",
        b"1234567890abcdef0\r\n",
        b"5\nhello\r\n",
    ] {
        assert_eq!(
            decode_all(Framing::Chunked, bad, 3),
            Err(BodyError::Chunked),
            "{bad:?}"
        );
    }
    assert_eq!(
        decode_all(Framing::Chunked, b"5\r\nhel", 2),
        Err(BodyError::Incomplete)
    );
    let mut endless = vec![b'1'; 3];
    endless.extend(std::iter::repeat_n(b' ', MAX_CHUNK_LINE + 1));
    assert_eq!(
        decode_all(Framing::Chunked, &endless, 512),
        Err(BodyError::Chunked)
    );
}

#[test]
fn length_and_close_delimited_bodies() {
    let (data, _, clean) = decode_all(Framing::Length(5), b"hello", 2).expect("valid");
    assert_eq!((data.as_slice(), clean), (&b"hello"[..], true));
    // Bytes past the length are not part of the body.
    let mut d = Decoder::new(Framing::Length(3));
    let mut buf = BytesMut::from(&b"abcdef"[..]);
    assert_eq!(
        d.decode(&mut buf),
        Ok(Decoded::Data(Bytes::from_static(b"abc")))
    );
    assert!(d.is_done());
    assert_eq!(&buf[..], b"def");
    assert_eq!(
        decode_all(Framing::Length(5), b"hel", 2),
        Err(BodyError::Incomplete)
    );
    let (data, _, _) = decode_all(Framing::Close, b"until the end", 4).expect("valid");
    assert_eq!(data, b"until the end");
    assert!(Decoder::new(Framing::Empty).is_done());
    assert_eq!(Decoder::new(Framing::Length(9)).remaining(), Some(9));
    assert_eq!(Decoder::new(Framing::Chunked).remaining(), None);
}

#[test]
fn chunk_framing_for_requests() {
    assert_eq!(&chunk_size_line(26)[..], b"1a\r\n");
    assert_eq!(&last_chunk(None)[..], b"0\r\n\r\n");
    let mut t = HeaderMap::new();
    t.insert("x-sum", HeaderValue::from_static("1"));
    assert_eq!(&last_chunk(Some(&t))[..], b"0\r\nx-sum: 1\r\n\r\n");
}
