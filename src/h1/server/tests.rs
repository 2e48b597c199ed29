use super::*;

const LIMITS: Limits = Limits {
    max_head_bytes: 8192,
    max_headers: 100,
};

fn parse(raw: &[u8]) -> (Result<Option<RequestHead>, RequestError>, BytesMut) {
    let mut buf = BytesMut::from(raw);
    let r = parse_request(&mut buf, LIMITS);
    (r, buf)
}

fn head(raw: &[u8]) -> RequestHead {
    match parse(raw).0 {
        Ok(Some(h)) => h,
        other => panic!("expected a head, got {other:?}"),
    }
}

fn err(raw: &[u8]) -> Option<RequestError> {
    parse(raw).0.err()
}

#[test]
fn a_request_head_becomes_parts_and_leaves_the_body() {
    let raw =
        b"POST /api/v1/exams/3/answers?draft=1 HTTP/1.1\r\nHost: app\r\nX-Security-Token: t\r\n\
                Set-Cookie: a\r\nset-cookie: b\r\nContent-Length: 5\r\n\r\nhelloGET /next";
    let (r, buf) = parse(raw);
    let h = r.ok().flatten().expect("complete");
    assert_eq!(h.parts.method, Method::POST);
    assert_eq!(h.parts.uri.path(), "/api/v1/exams/3/answers");
    assert_eq!(h.parts.uri.query(), Some("draft=1"));
    assert_eq!(h.parts.version, Version::HTTP_11);
    assert_eq!(h.parts.headers["x-security-token"], "t");
    let cookies: Vec<_> = h.parts.headers.get_all("set-cookie").iter().collect();
    assert_eq!(cookies, ["a", "b"]);
    assert_eq!(h.framing, Framing::Length(5));
    assert!(h.keep_alive && !h.expect_continue);
    assert_eq!(&buf[..], b"helloGET /next", "body and what follows stay");
}

#[test]
fn partial_heads_wait_and_oversized_ones_are_refused() {
    let (r, buf) = parse(b"GET / HTTP/1.1\r\nHost: a");
    assert!(matches!(r, Ok(None)));
    assert_eq!(buf.len(), 23);
    let mut big = b"GET / HTTP/1.1\r\nX-Big: ".to_vec();
    big.resize(LIMITS.max_head_bytes + 1, b'a');
    assert_eq!(
        err(&big),
        Some(RequestError::TooLarge),
        "partial but over the limit"
    );
    big.extend_from_slice(b"\r\n\r\n");
    assert_eq!(
        err(&big),
        Some(RequestError::TooLarge),
        "complete but over the limit"
    );
    // More headers than fit on the stack but within the limit are fine; over it is not.
    let mut many = b"GET / HTTP/1.1\r\n".to_vec();
    for i in 0..90 {
        many.extend_from_slice(format!("X-H{i}: v\r\n").as_bytes());
    }
    let mut ok = many.clone();
    ok.extend_from_slice(b"\r\n");
    assert_eq!(head(&ok).parts.headers.len(), 90);
    for i in 90..120 {
        many.extend_from_slice(format!("X-H{i}: v\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    assert_eq!(err(&many), Some(RequestError::TooLarge));
}

#[test]
fn malformed_heads_are_refused() {
    assert!(matches!(
        err(b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n"),
        Some(RequestError::Malformed(_))
    ));
    assert!(matches!(
        err(b"G@T / HTTP/1.1\r\n\r\n"),
        Some(RequestError::Malformed(_))
    ));
    assert_eq!(err(b"GET / HTTP/2.0\r\n\r\n"), Some(RequestError::Version));
    assert_eq!(err(b"GET / HTTP/1.1\r\n\r\n"), None);
    assert_eq!(
        err(b"CONNECT app:443 HTTP/1.1\r\nHost: app:443\r\n\r\n"),
        Some(RequestError::Connect)
    );
    assert_eq!(
        RequestError::Connect.status(),
        StatusCode::METHOD_NOT_ALLOWED
    );
    assert_eq!(
        RequestError::TooLarge.status(),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
    );
    assert_eq!(
        RequestError::Malformed("x").status(),
        StatusCode::BAD_REQUEST
    );
}

#[test]
fn request_framing_refuses_what_could_smuggle() {
    let h = head(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
    assert_eq!(h.framing, Framing::Chunked);
    assert_eq!(head(b"GET / HTTP/1.1\r\n\r\n").framing, Framing::Empty);
    assert_eq!(
        head(b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n").framing,
        Framing::Empty
    );
    assert!(matches!(
        err(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n"),
        Some(RequestError::Malformed(_))
    ));
    assert_eq!(
        err(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"),
        Some(RequestError::TransferCoding)
    );
    assert!(matches!(
        err(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"),
        Some(RequestError::Malformed(_))
    ));
    assert!(matches!(
        err(b"POST / HTTP/1.1\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\n"),
        Some(RequestError::Malformed(_))
    ));
    assert_eq!(
        head(b"POST / HTTP/1.1\r\nContent-Length: 4, 4\r\n\r\n").framing,
        Framing::Length(4)
    );
}

#[test]
fn persistence_and_expectations() {
    assert!(!head(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n").keep_alive);
    assert!(!head(b"GET / HTTP/1.0\r\n\r\n").keep_alive);
    let h = head(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n");
    assert!(h.keep_alive);
    assert_eq!(h.parts.version, Version::HTTP_10);
    let h = head(b"PUT /a HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n");
    assert!(h.expect_continue);
    assert!(!head(b"PUT /a HTTP/1.0\r\nExpect: 100-continue\r\n\r\n").expect_continue);
}

fn info(status: u16, head_request: bool, v10: bool, exact: Option<u64>) -> ResponseInfo {
    ResponseInfo {
        status: StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
        head_request,
        client_version: if v10 {
            Version::HTTP_10
        } else {
            Version::HTTP_11
        },
        exact,
    }
}

#[test]
fn response_framing_choices() {
    let none = HeaderMap::new();
    let mut cl = HeaderMap::new();
    cl.insert(header::CONTENT_LENGTH, HeaderValue::from_static("11"));
    use ResponseFraming as F;
    assert_eq!(
        response_framing(&cl, info(200, false, false, None)),
        (F::Length(11), true)
    );
    assert_eq!(
        response_framing(&none, info(200, false, false, Some(3))),
        (F::Length(3), false)
    );
    assert_eq!(
        response_framing(&none, info(200, false, false, None)),
        (F::Chunked, false)
    );
    assert_eq!(
        response_framing(&none, info(200, false, true, None)),
        (F::Close, false)
    );
    assert_eq!(
        response_framing(&cl, info(204, false, false, Some(0))),
        (F::None, false)
    );
    assert_eq!(
        response_framing(&cl, info(304, false, false, None)),
        (F::None, true)
    );
    // HEAD: no body, but the length the GET would have.
    assert_eq!(
        response_framing(&cl, info(200, true, false, None)),
        (F::None, true)
    );
    assert_eq!(
        response_framing(&none, info(200, true, false, Some(7))).0,
        F::None
    );
}

#[test]
fn response_heads_are_written_with_framing_date_and_persistence() {
    let mut h = HeaderMap::new();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(
        header::TRANSFER_ENCODING,
        HeaderValue::from_static("chunked"),
    );
    h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
    let mut out = Vec::new();
    let date = b"Tue, 01 Dec 2026 08:00:00 GMT";
    encode_response_head(
        StatusCode::OK,
        &h,
        (ResponseFraming::Length(2), false),
        Persist::Close,
        date,
        &mut out,
    );
    assert_eq!(
        String::from_utf8_lossy(&out),
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\
         date: Tue, 01 Dec 2026 08:00:00 GMT\r\nconnection: close\r\n\r\n"
    );
    let mut h = HeaderMap::new();
    h.insert(header::DATE, HeaderValue::from_static("app's date"));
    let mut out = Vec::new();
    encode_response_head(
        StatusCode::NOT_FOUND,
        &h,
        (ResponseFraming::Chunked, false),
        Persist::KeepAlive,
        date,
        &mut out,
    );
    assert_eq!(
        String::from_utf8_lossy(&out),
        "HTTP/1.1 404 Not Found\r\ndate: app's date\r\ntransfer-encoding: chunked\r\nconnection: keep-alive\r\n\r\n"
    );
    let mut h = HeaderMap::new();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    let mut out = Vec::new();
    encode_response_head(
        StatusCode::SWITCHING_PROTOCOLS,
        &h,
        (ResponseFraming::None, false),
        Persist::Default,
        b"",
        &mut out,
    );
    assert_eq!(
        String::from_utf8_lossy(&out),
        "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n"
    );
    let r = String::from_utf8(refusal(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, b""))
        .unwrap_or_default();
    assert!(
        r.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
        "{r}"
    );
    assert!(
        r.contains("content-length: 0\r\n") && r.ends_with("connection: close\r\n\r\n"),
        "{r}"
    );
}
