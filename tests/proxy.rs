//! End-to-end: a real sluice in front of the scriptable test upstream, over real sockets.

mod common;

use bytes::Bytes;
use common::harness::{base_config, set, start};
use common::{
    parse_response_head, raw_exchange, raw_response_head, websocket_upgrade, H2cClient,
    Http1Client, TestUpstream,
};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn echo_headers(body: &Bytes) -> Vec<(String, String)> {
    let v: serde_json::Value = serde_json::from_slice(body).expect("echo JSON");
    v["headers"]
        .as_array()
        .expect("headers array")
        .iter()
        .map(|p| {
            (
                p[0].as_str().unwrap_or_default().to_string(),
                p[1].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn values<'a>(h: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    h.iter()
        .filter(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
        .collect()
}

#[tokio::test]
async fn end_to_end_headers_pass_hop_by_hop_are_removed_and_forwarded_for_appended() {
    let app = TestUpstream::start().await;
    let sluice = start(&base_config(app.addr())).await;
    let (status, headers, body) = Http1Client::get(
        sluice.addr,
        "/api/v1/exams?x=1",
        &[
            ("x-security-token", "tok-123"),
            ("x-client-signature", "sig=="),
            ("x-request-timestamp", "1700000000"),
            ("x-origin-validation", "ok"),
            ("origin", "https://toeic.example"),
            ("authorization", "Bearer user-jwt"),
            ("x-forwarded-for", "203.0.113.9"),
            ("connection", "x-private-hop"),
            ("x-private-hop", "secret"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("x-multi", "one"),
            ("x-multi", "two"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let seen = echo_headers(&body);
    for (name, value) in [
        ("x-security-token", "tok-123"),
        ("x-client-signature", "sig=="),
        ("x-request-timestamp", "1700000000"),
        ("x-origin-validation", "ok"),
        ("origin", "https://toeic.example"),
        ("authorization", "Bearer user-jwt"),
    ] {
        assert_eq!(values(&seen, name), [value], "{name}");
    }
    assert_eq!(values(&seen, "x-multi"), ["one", "two"]);
    for gone in ["x-private-hop", "keep-alive", "te", "proxy-connection"] {
        assert!(
            values(&seen, gone).is_empty(),
            "{gone} must not reach the app"
        );
    }
    assert_eq!(values(&seen, "x-forwarded-for"), ["203.0.113.9, 127.0.0.1"]);
    assert_eq!(values(&seen, "x-forwarded-proto"), ["http"]);
    let ids = values(&seen, "x-request-id");
    assert_eq!(ids.len(), 1);
    assert_eq!(ids[0].len(), 32);
    assert_eq!(
        headers["x-request-id"], ids[0],
        "the client sees the same id"
    );
    let recorded = app.last_request().expect("app saw the request");
    assert_eq!(recorded.uri, "/api/v1/exams?x=1");
    sluice.shutdown().await;
}

#[tokio::test]
async fn response_headers_keep_repeats_and_lose_hop_by_hop() {
    let app = TestUpstream::start().await;
    let sluice = start(&base_config(app.addr())).await;
    let (status, headers, _) = Http1Client::get(
        sluice.addr,
        "/headers-out",
        &[("x-request-id", "client-chosen-id")],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let cookies: Vec<_> = headers.get_all("set-cookie").iter().collect();
    assert_eq!(cookies, ["a=1; Path=/", "b=2; Path=/"]);
    assert_eq!(headers["x-custom"], "a");
    for gone in ["x-hop", "proxy-authenticate", "proxy-connection", "trailer"] {
        assert!(
            !headers.contains_key(gone),
            "{gone} must not reach the client"
        );
    }
    assert_ne!(
        headers.get("connection").map(|v| v.as_bytes()),
        Some(&b"x-hop"[..])
    );
    assert_eq!(
        app.last_request()
            .and_then(|r| r.header("x-request-id"))
            .as_deref(),
        Some("client-chosen-id")
    );
    assert_eq!(headers["x-request-id"], "client-chosen-id");
    sluice.shutdown().await;
}

#[tokio::test]
async fn keep_alive_connections_to_the_app_are_reused() {
    let app = TestUpstream::start().await;
    let sluice = start(&set(&base_config(app.addr()), "listener", "workers", "1")).await;
    let mut client = Http1Client::connect(sluice.addr).await.expect("connect");
    for _ in 0..20 {
        let (status, _, _) = client.get_on("/echo", &[]).await;
        assert_eq!(status, StatusCode::OK);
    }
    assert_eq!(app.requests(), 20);
    assert_eq!(
        app.connections(),
        1,
        "one pooled upstream connection serves them all"
    );
    sluice.shutdown().await;
}

#[tokio::test]
async fn h2c_clients_are_served_over_http1_upstream() {
    let app = TestUpstream::start().await;
    let sluice = start(&base_config(app.addr())).await;
    let mut client = H2cClient::connect(sluice.addr).await.expect("h2c connect");
    for _ in 0..3 {
        let (status, _, body) = client
            .get_on("/echo/h2", &[("x-security-token", "t")])
            .await;
        assert_eq!(status, StatusCode::OK);
        let seen = echo_headers(&body);
        assert_eq!(values(&seen, "x-security-token"), ["t"]);
        assert_eq!(values(&seen, "host"), [sluice.addr.to_string().as_str()]);
    }
    let recorded = app.last_request().expect("seen");
    assert_eq!(recorded.uri, "/echo/h2");
    sluice.shutdown().await;
}

#[tokio::test]
async fn websocket_upgrade_is_spliced_through() {
    let app = TestUpstream::start().await;
    let sluice = start(&base_config(app.addr())).await;
    let (status, io) = websocket_upgrade(sluice.addr, "/ws").await;
    assert_eq!(status, StatusCode::SWITCHING_PROTOCOLS);
    let mut io = io.expect("upgraded stream");
    for msg in [&b"hello"[..], b"second message", &[0u8, 1, 2, 255]] {
        io.write_all(msg).await.expect("write");
        let mut back = vec![0u8; msg.len()];
        tokio::time::timeout(Duration::from_secs(5), io.read_exact(&mut back))
            .await
            .expect("echo in time")
            .expect("read");
        assert_eq!(back, msg);
    }
    sluice.shutdown().await;
}

#[tokio::test]
async fn unreachable_app_gets_an_honest_502() {
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let sluice = start(&base_config(closed)).await;
    let (status, headers, body) = Http1Client::get(sluice.addr, "/api/v1/words", &[]).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(headers["x-sluice-reason"], "upstream_connect_failed");
    assert_eq!(headers["content-type"], "application/json");
    let v: serde_json::Value = serde_json::from_slice(&body).expect("json body");
    assert_eq!(v["error"], "upstream_connect_failed");
    assert_eq!(
        v["request_id"],
        headers["x-request-id"].to_str().unwrap_or("-")
    );
    let (_, metrics) = common::harness::observe(&sluice, "/metrics").await;
    assert_eq!(
        common::harness::sample(&metrics, "sluice_upstream_errors_total", "kind=\"connect\""),
        Some(1.0)
    );
    sluice.shutdown().await;
}

#[tokio::test]
async fn app_closing_without_answer_gets_502() {
    let app = TestUpstream::start().await;
    let sluice = start(&base_config(app.addr())).await;
    let (status, headers, _) = Http1Client::get(sluice.addr, "/close", &[]).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(headers["x-sluice-reason"], "upstream_connection_closed");
    let (status, _, _) = Http1Client::get(sluice.addr, "/reset", &[]).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    sluice.shutdown().await;
}

#[tokio::test]
async fn slow_app_gets_504_after_the_route_timeout() {
    let app = TestUpstream::start().await;
    let sluice = start(&base_config(app.addr())).await;
    let started = std::time::Instant::now();
    let (status, headers, body) = Http1Client::get(sluice.addr, "/hang", &[]).await;
    let took = started.elapsed();
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(headers["x-sluice-reason"], "upstream_timeout");
    assert!(
        took >= Duration::from_millis(300),
        "route timeout is 300 ms, took {took:?}"
    );
    assert!(
        took < Duration::from_secs(3),
        "the default 3 s timeout must not apply, took {took:?}"
    );
    let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(v["error"], "upstream_timeout");
    sluice.shutdown().await;
}

#[tokio::test]
async fn oversized_or_too_many_headers_get_431() {
    let app = TestUpstream::start().await;
    let cfg = set(
        &base_config(app.addr()),
        "listener",
        "max_header_bytes",
        "16384",
    );
    let cfg = set(&cfg, "listener", "max_headers", "50");
    let sluice = start(&cfg).await;
    let big = "a".repeat(40 * 1024);
    let req = format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\nConnection: close\r\n\r\n");
    let (status, _) = raw_response_head(sluice.addr, req.as_bytes()).await;
    assert_eq!(status, 431);
    let many: String = (0..80).map(|i| format!("X-H{i}: v\r\n")).collect();
    let req = format!("GET / HTTP/1.1\r\nHost: x\r\n{many}Connection: close\r\n\r\n");
    let (status, _) = raw_response_head(sluice.addr, req.as_bytes()).await;
    assert_eq!(status, 431);
    assert_eq!(app.requests(), 0, "nothing oversized reaches the app");
    // A normal request still passes.
    let (status, _) = raw_response_head(
        sluice.addr,
        b"GET /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200);
    sluice.shutdown().await;
}

#[tokio::test]
async fn h2c_preface_split_across_writes_is_still_http2() {
    let app = TestUpstream::start().await;
    let sluice = start(&base_config(app.addr())).await;
    let mut stream = tokio::net::TcpStream::connect(sluice.addr)
        .await
        .expect("connect");
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    stream.write_all(&preface[..10]).await.expect("first part");
    tokio::time::sleep(Duration::from_millis(100)).await;
    stream.write_all(&preface[10..]).await.expect("rest");
    // An empty SETTINGS frame: length 0, type 4, no flags, stream 0.
    stream
        .write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0])
        .await
        .expect("settings");
    let mut head = [0u8; 9];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut head))
        .await
        .expect("answered in time")
        .expect("a frame");
    assert_eq!(head[3], 4, "the server's first frame is its SETTINGS");
    drop(stream);
    sluice.shutdown().await;
}

#[tokio::test]
async fn h2c_is_refused_when_http2_is_off() {
    let app = TestUpstream::start().await;
    let cfg = set(&base_config(app.addr()), "listener", "http2", "false");
    let sluice = start(&cfg).await;
    let mut stream = tokio::net::TcpStream::connect(sluice.addr)
        .await
        .expect("connect");
    stream
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .expect("preface");
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the connection is closed");
    assert!(
        buf.is_empty() || buf.starts_with(b"HTTP/1.1 "),
        "answered as HTTP/1 or not at all: {:?}",
        String::from_utf8_lossy(&buf)
    );
    assert_eq!(app.requests(), 0);
    sluice.shutdown().await;
}

#[tokio::test]
async fn silent_client_is_disconnected_after_the_header_read_timeout() {
    let app = TestUpstream::start().await;
    let sluice = start(&base_config(app.addr())).await; // header_read_timeout_ms = 400
    let mut stream = tokio::net::TcpStream::connect(sluice.addr)
        .await
        .expect("connect");
    let started = std::time::Instant::now();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut buf)).await;
    assert!(
        read.is_ok(),
        "sluice must close a connection that sends nothing"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "closed too early: {:?}",
        started.elapsed()
    );
    assert_eq!(app.requests(), 0);
    sluice.shutdown().await;
}

#[tokio::test]
async fn slow_header_sender_is_disconnected() {
    let app = TestUpstream::start().await;
    let sluice = start(&base_config(app.addr())).await; // header_read_timeout_ms = 400
    let mut stream = tokio::net::TcpStream::connect(sluice.addr)
        .await
        .expect("connect");
    stream
        .write_all(b"GET /echo HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("partial head");
    let started = std::time::Instant::now();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut buf)).await;
    assert!(
        read.is_ok(),
        "sluice must close the connection, not wait forever"
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(300),
        "closed too early: {took:?}"
    );
    if let Some((status, _, _)) = parse_response_head(&buf) {
        assert_eq!(status, 408, "if anything is answered, it is a timeout");
    }
    assert_eq!(app.requests(), 0);
    sluice.shutdown().await;
}

#[tokio::test]
async fn connection_cap_holds_extra_clients_until_a_slot_frees() {
    let app = TestUpstream::start().await;
    let cfg = set(&base_config(app.addr()), "listener", "max_connections", "2");
    // hyper's header read timeout also closes idle keep-alive connections: keep it long
    // so that a and b stay open for the whole test.
    let cfg = set(&cfg, "listener", "header_read_timeout_ms", "10000");
    let sluice = start(&cfg).await;
    let mut a = Http1Client::connect(sluice.addr).await.expect("a");
    let mut b = Http1Client::connect(sluice.addr).await.expect("b");
    assert_eq!(a.get_on("/echo", &[]).await.0, StatusCode::OK);
    assert_eq!(b.get_on("/echo", &[]).await.0, StatusCode::OK);
    let third = tokio::spawn(raw_exchange(
        sluice.addr,
        b"GET /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !third.is_finished(),
        "a third connection is not served while two are open"
    );
    assert_eq!(app.requests(), 2);
    drop(a);
    let out = tokio::time::timeout(Duration::from_secs(5), third)
        .await
        .expect("served once a slot frees")
        .expect("task")
        .expect("io");
    assert_eq!(parse_response_head(&out).map(|h| h.0), Some(200));
    drop(b);
    sluice.shutdown().await;
}

#[tokio::test]
async fn shutdown_drains_in_flight_requests() {
    let app = TestUpstream::start().await;
    let sluice = start(&base_config(app.addr())).await;
    let addr = sluice.addr;
    let slow = tokio::spawn(async move { Http1Client::get(addr, "/delay/300", &[]).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let shared = sluice.shared().clone();
    let stop = tokio::spawn(sluice.shutdown());
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(shared.is_draining());
    let (status, _, _) = slow.await.expect("task");
    assert_eq!(
        status,
        StatusCode::OK,
        "the in-flight request completes during the drain"
    );
    tokio::time::timeout(Duration::from_secs(5), stop)
        .await
        .expect("drain finishes")
        .expect("task");
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no longer accepting"
    );
}

#[tokio::test]
async fn stalled_bodies_are_cut_after_the_body_idle_timeout() {
    let app = TestUpstream::start().await;
    let cfg = set(
        &base_config(app.addr()),
        "upstream",
        "body_idle_timeout_ms",
        "300",
    );
    let sluice = start(&cfg).await;

    // The app stalls mid-response: the client gets the head and the first bytes, then
    // the stream ends with an error instead of hanging forever.
    let mut client = Http1Client::connect(sluice.addr).await.expect("connect");
    let resp = client
        .send(
            Request::get("/stall-body")
                .body(Full::new(Bytes::new()))
                .expect("req"),
        )
        .await
        .expect("head arrives");
    assert_eq!(resp.status(), StatusCode::OK);
    let started = std::time::Instant::now();
    let body = tokio::time::timeout(Duration::from_secs(5), resp.into_body().collect())
        .await
        .expect("the stalled body is cut, not left hanging");
    assert!(
        body.is_err(),
        "a truncated body is an error, never a silent short read"
    );
    assert!(started.elapsed() >= Duration::from_millis(250));
    let (_, metrics) = common::harness::observe(&sluice, "/metrics").await;
    assert_eq!(
        common::harness::sample(&metrics, "sluice_upstream_errors_total", "kind=\"body\""),
        Some(1.0),
        "the stalled response body is counted"
    );

    // The client stalls mid-upload: the app's request is aborted and the client told.
    let mut stream = tokio::net::TcpStream::connect(sluice.addr)
        .await
        .expect("connect");
    stream
        .write_all(b"POST /sink HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\npartial")
        .await
        .expect("write");
    let started = std::time::Instant::now();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut buf)).await;
    assert!(
        read.is_ok(),
        "sluice ends the exchange instead of waiting for the client forever"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "cut by the 300 ms body idle timeout, not the 3 s request timeout: {:?}",
        started.elapsed()
    );
    // The client is told its upload timed out (408), not that the app failed.
    let (status, headers, _) = parse_response_head(&buf).expect("an answer");
    assert_eq!(status, 408, "{}", String::from_utf8_lossy(&buf));
    assert!(
        headers
            .iter()
            .any(|(n, v)| n == "x-sluice-reason" && v == "request_body_timeout"),
        "{}",
        String::from_utf8_lossy(&buf)
    );
    sluice.shutdown().await;
}
