//! Exercises the integration-test kit directly (no proxy involved).

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper::{Request, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn json(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body).expect("json body")
}

#[tokio::test]
async fn echo_reports_request_in_order() {
    let up = TestUpstream::start().await;
    let hs = [("x-zeta", "1"), ("x-alpha", "2"), ("x-mid", "3")];
    let (status, headers, body) = Http1Client::get(up.addr(), "/echo/a?b=c", &hs).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "application/json");
    let v = json(&body);
    assert_eq!(v["method"], "GET");
    assert_eq!(v["uri"], "/echo/a?b=c");
    assert_eq!(v["body_len"], 0);
    let names: Vec<&str> = v["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h[0].as_str().unwrap())
        .collect();
    assert_eq!(names, ["host", "x-zeta", "x-alpha", "x-mid"]);
    assert_eq!(v["headers"][2][1], "2");

    let last = up.last_request().unwrap();
    assert_eq!(last.method, "GET");
    assert_eq!(last.uri, "/echo/a?b=c");
    assert_eq!(last.header("X-Alpha").as_deref(), Some("2"));
    assert_eq!(last.headers[1], ("x-zeta".to_string(), b"1".to_vec()));
    assert_eq!((up.requests(), up.connections()), (1, 1));
}

#[tokio::test]
async fn keep_alive_counts_requests_and_bodies() {
    let up = TestUpstream::start().await;
    let mut c = Http1Client::connect(up.addr()).await.unwrap();
    let req = Request::post("/anything")
        .body(Full::new(Bytes::from_static(b"hello")))
        .unwrap();
    let resp = c.send(req).await.unwrap();
    let v = json(&resp.into_body().collect().await.unwrap().to_bytes());
    assert_eq!(
        (v["method"].as_str(), v["body_len"].as_u64()),
        (Some("POST"), Some(5))
    );
    let (status, _, _) = c.get_on("/status/201", &[]).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!((up.requests(), up.connections()), (2, 1));
    let log = up.requests_log();
    assert_eq!(log[0].body_len, 5);
    assert_eq!(log[1].uri, "/status/201");
}

#[tokio::test]
async fn status_and_delay() {
    let up = TestUpstream::start().await;
    let (status, _, body) = Http1Client::get(up.addr(), "/status/503", &[]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(&body[..], b"status 503\n");

    let start = Instant::now();
    let (status, _, _) = Http1Client::get(up.addr(), "/delay/150", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(start.elapsed() >= Duration::from_millis(150));
}

#[tokio::test]
async fn hang_never_answers() {
    let up = TestUpstream::start().await;
    let r = tokio::time::timeout(
        Duration::from_millis(200),
        Http1Client::get(up.addr(), "/hang", &[]),
    )
    .await;
    assert!(r.is_err(), "hang answered");
    assert_eq!(up.requests(), 1);
}

async fn raw_read_after(addr: std::net::SocketAddr, path: &str) -> std::io::Result<usize> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = [0u8; 1024];
    tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf))
        .await
        .expect("no close/reset")
}

#[tokio::test]
async fn close_is_eof_without_response() {
    let up = TestUpstream::start().await;
    let mut c = Http1Client::connect(up.addr()).await.unwrap();
    let err = c
        .send(Request::get("/close").body(Full::default()).unwrap())
        .await;
    assert!(err.is_err());
    assert_eq!(raw_read_after(up.addr(), "/close").await.unwrap(), 0);
}

#[tokio::test]
async fn reset_is_a_tcp_rst() {
    let up = TestUpstream::start().await;
    let mut c = Http1Client::connect(up.addr()).await.unwrap();
    let err = c
        .send(Request::get("/reset").body(Full::default()).unwrap())
        .await;
    assert!(err.is_err());
    let e = raw_read_after(up.addr(), "/reset").await.unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset);
}

#[tokio::test]
async fn bytes_streams_ten_megabytes() {
    let up = TestUpstream::start().await;
    let n: u64 = 10 * 1024 * 1024 + 7;
    let mut c = Http1Client::connect(up.addr()).await.unwrap();
    let req = Request::get(format!("/bytes/{n}"))
        .body(Full::default())
        .unwrap();
    let resp = c.send(req).await.unwrap();
    assert_eq!(resp.headers()["content-length"], n.to_string().as_str());
    let mut body = resp.into_body();
    let (mut seen, mut frames) = (0u64, 0);
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            for (i, b) in data.iter().enumerate() {
                assert_eq!(
                    *b,
                    pattern_byte(seen + i as u64),
                    "byte {}",
                    seen + i as u64
                );
            }
            seen += data.len() as u64;
            frames += 1;
        }
    }
    assert_eq!(seen, n);
    assert!(frames > 1, "body was not streamed");
}

#[tokio::test]
async fn sink_counts_streamed_upload() {
    let up = TestUpstream::start().await;
    let n: u64 = 5 * 1024 * 1024 + 3;
    let mut c = Http1Client::connect(up.addr()).await.unwrap();
    let req = Request::post("/sink").body(PatternBody::new(n)).unwrap();
    let resp = c.send_body(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let v = json(&resp.into_body().collect().await.unwrap().to_bytes());
    assert_eq!(v["received"].as_u64(), Some(n));
    assert_eq!(up.last_request().unwrap().body_len, n);
}

#[tokio::test]
async fn headers_out_sends_tricky_headers() {
    let up = TestUpstream::start().await;
    let req = b"GET /headers-out HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n";
    let (status, headers) = raw_response_head(up.addr(), req).await;
    assert_eq!(status, 200);
    let get = |n: &str| -> Vec<&str> {
        headers
            .iter()
            .filter(|(k, _)| k == n)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    assert_eq!(get("set-cookie"), ["a=1; Path=/", "b=2; Path=/"]);
    assert_eq!(get("x-custom"), ["a"]);
    assert_eq!(get("x-hop"), ["1"]);
    assert_eq!(get("keep-alive"), ["timeout=5"]);
    assert_eq!(get("proxy-authenticate"), ["x"]);
    assert!(
        get("connection").iter().any(|v| v.contains("x-hop")),
        "{headers:?}"
    );

    let raw = raw_exchange(up.addr(), req).await.unwrap();
    let (_, _, head_len) = parse_response_head(&raw).unwrap();
    assert_eq!(&raw[head_len..], b"headers-out\n");
}

#[tokio::test]
async fn websocket_upgrade_echoes_raw_bytes() {
    let up = TestUpstream::start().await;
    let (status, io) = websocket_upgrade(up.addr(), "/ws").await;
    assert_eq!(status, StatusCode::SWITCHING_PROTOCOLS);
    let mut io = io.unwrap();
    io.write_all(b"ping over upgraded io").await.unwrap();
    let mut buf = [0u8; 21];
    io.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ping over upgraded io");
    io.shutdown().await.unwrap();
    let mut rest = Vec::new();
    io.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty());

    let (status, _, _) = Http1Client::get(up.addr(), "/ws", &[]).await;
    assert_eq!(status, StatusCode::UPGRADE_REQUIRED);
}

#[tokio::test]
async fn h2c_client_talks_to_auto_server() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let svc = hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async move {
            let body = format!("{:?} {}", req.version(), req.uri().path());
            Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(Bytes::from(body))))
        });
        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
            .serve_connection(TokioIo::new(stream), svc)
            .await
            .unwrap();
    });
    let mut c = H2cClient::connect(addr).await.unwrap();
    let (status, _, body) = c.get_on("/one", &[("x-a", "1")]).await;
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"HTTP/2.0 /one"[..]));
    let (_, _, body) = c.get_on("/two", &[]).await;
    assert_eq!(&body[..], b"HTTP/2.0 /two");
    drop(c);
    server.abort();
}

#[tokio::test]
async fn relay_forwards_cuts_restores_and_delays() {
    let up = TestUpstream::start().await;
    let mut relay = TcpRelay::start(up.addr()).await;
    let (status, _, _) = Http1Client::get(relay.addr(), "/status/204", &[]).await;
    assert_eq!(status, StatusCode::NO_CONTENT);

    let mut live = Http1Client::connect(relay.addr()).await.unwrap();
    assert_eq!(live.get_on("/echo", &[]).await.0, StatusCode::OK);
    relay.cut().await;
    let r = live
        .send(Request::get("/echo").body(Full::default()).unwrap())
        .await;
    assert!(r.is_err(), "live connection survived cut");
    let e = TcpStream::connect(relay.addr()).await.unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused);

    relay.restore().await;
    assert_eq!(
        Http1Client::get(relay.addr(), "/echo", &[]).await.0,
        StatusCode::OK
    );

    relay.set_delay(Duration::from_millis(100));
    let start = Instant::now();
    assert_eq!(
        Http1Client::get(relay.addr(), "/echo", &[]).await.0,
        StatusCode::OK
    );
    assert!(
        start.elapsed() >= Duration::from_millis(200),
        "delay not applied"
    );
    assert_eq!(relay.accepted(), 4);
    assert_eq!(up.connections(), 4);
}
