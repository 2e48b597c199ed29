//! How sluice speaks HTTP/1.1 to the app: body framing both ways, interim responses,
//! answers that come before the upload ends, connections the app closed, and what it
//! refuses to read. The app here answers with exact bytes (`ScriptedApp`).

mod common;

use bytes::Bytes;
use common::harness::{base_config, reason, set, start};
use common::scripted::{Reply, ScriptedApp, Seen};
use common::{parse_response_head, raw_exchange, H2cClient, Http1Client};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn ok(body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// One worker, so that one client connection's requests share one pool.
async fn sluice_for(app: &ScriptedApp) -> sluice::app::Running {
    start(&set(&base_config(app.addr()), "listener", "workers", "1")).await
}

fn get(path: &str) -> Request<Full<Bytes>> {
    Request::get(path)
        .header("host", "app")
        .body(Full::new(Bytes::new()))
        .expect("request")
}

async fn text(resp: http::Response<hyper::body::Incoming>) -> String {
    let body = resp
        .into_body()
        .collect()
        .await
        .expect("whole body")
        .to_bytes();
    String::from_utf8_lossy(&body).into_owned()
}

#[tokio::test]
async fn chunked_responses_stream_through_with_trailers_and_keep_the_connection() {
    let app = ScriptedApp::start(|_| {
        Reply::Bytes(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: x-sum\r\n\r\n\
              5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nx-sum: 7\r\n\r\n"
                .to_vec(),
        )
    })
    .await;
    let sluice = sluice_for(&app).await;
    let mut client = Http1Client::connect(sluice.addr).await.expect("connect");
    for _ in 0..3 {
        let req = Request::get("/c")
            .header("host", "app")
            .header("te", "trailers")
            .body(Full::new(Bytes::new()))
            .expect("request");
        let resp = client.send(req).await.expect("response");
        assert_eq!(resp.status(), StatusCode::OK);
        let collected = resp.into_body().collect().await.expect("whole body");
        let trailers = collected.trailers().cloned();
        assert_eq!(&collected.to_bytes()[..], b"hello world");
        assert_eq!(
            trailers
                .as_ref()
                .and_then(|t| t.get("x-sum"))
                .map(|v| v.as_bytes()),
            Some(&b"7"[..]),
            "trailers reach a client that accepts them"
        );
    }
    assert_eq!(app.seen().len(), 3);
    assert_eq!(
        app.connections_used(),
        1,
        "one upstream connection for all three"
    );
    sluice.shutdown().await;
}

#[tokio::test]
async fn close_delimited_and_ambiguous_bodies_are_read_whole_and_never_reused() {
    let app = ScriptedApp::start(|s: &Seen| {
        if s.head.contains("/both") {
            // Both framings: read as chunked (RFC 9112 §6.3), then not trusted again.
            Reply::Bytes(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n\
                  3\r\nabc\r\n0\r\n\r\n"
                    .to_vec(),
            )
        } else {
            Reply::ThenClose(b"HTTP/1.1 200 OK\r\n\r\nuntil the app closes".to_vec())
        }
    })
    .await;
    let sluice = sluice_for(&app).await;
    let mut client = Http1Client::connect(sluice.addr).await.expect("connect");
    for _ in 0..2 {
        let resp = client.send(get("/eof")).await.expect("response");
        assert_eq!(text(resp).await, "until the app closes");
    }
    for _ in 0..2 {
        let resp = client.send(get("/both")).await.expect("response");
        assert_eq!(text(resp).await, "abc");
    }
    assert_eq!(
        app.connections_used(),
        4,
        "none of these connections is reused"
    );
    sluice.shutdown().await;
}

#[tokio::test]
async fn bodiless_responses_and_interim_ones_keep_the_connection() {
    let app = ScriptedApp::start(|s: &Seen| {
        let raw: &[u8] = if s.head.starts_with("HEAD") {
            b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n"
        } else if s.head.contains("/no-content") {
            b"HTTP/1.1 204 No Content\r\n\r\n"
        } else if s.head.contains("/not-modified") {
            b"HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\nContent-Length: 42\r\n\r\n"
        } else if s.head.contains("/interim") {
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n\
              HTTP/1.1 201 Created\r\nContent-Length: 7\r\n\r\ncreated"
        } else {
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nafter"
        };
        Reply::Bytes(raw.to_vec())
    })
    .await;
    let sluice = sluice_for(&app).await;
    let mut client = Http1Client::connect(sluice.addr).await.expect("connect");

    let head = Request::head("/h")
        .header("host", "app")
        .body(Full::new(Bytes::new()));
    let resp = client.send(head.expect("request")).await.expect("response");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.headers()["content-length"],
        "100",
        "HEAD keeps the length"
    );
    assert_eq!(text(resp).await, "");

    let resp = client.send(get("/no-content")).await.expect("response");
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_eq!(text(resp).await, "");

    let resp = client.send(get("/not-modified")).await.expect("response");
    assert_eq!(resp.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(resp.headers()["etag"], "\"v1\"");
    assert_eq!(text(resp).await, "");

    let resp = client.send(get("/interim")).await.expect("response");
    assert_eq!(
        resp.status(),
        StatusCode::CREATED,
        "1xx interim answers are skipped"
    );
    assert_eq!(text(resp).await, "created");

    let resp = client.send(get("/after")).await.expect("response");
    assert_eq!(
        text(resp).await,
        "after",
        "nothing left over from the answers before"
    );
    assert_eq!(app.seen().len(), 5);
    assert_eq!(app.connections_used(), 1);
    sluice.shutdown().await;
}

#[tokio::test]
async fn an_answer_before_the_upload_ends_reaches_the_client() {
    let app = ScriptedApp::start(|s: &Seen| {
        if s.head.starts_with("POST") {
            Reply::BeforeBody(
                b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 8\r\n\r\ntoo big!".to_vec(),
            )
        } else {
            Reply::Bytes(ok("fine"))
        }
    })
    .await;
    let sluice = sluice_for(&app).await;
    // The client announces 4 MiB and sends the first 256 KiB, then waits for an answer.
    let mut stream = tokio::net::TcpStream::connect(sluice.addr)
        .await
        .expect("connect");
    let head = "POST /upload HTTP/1.1\r\nHost: app\r\nContent-Length: 4194304\r\n\r\n";
    stream.write_all(head.as_bytes()).await.expect("head");
    stream
        .write_all(&vec![b'x'; 256 * 1024])
        .await
        .expect("part of the body");
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), async {
        let mut chunk = [0u8; 4096];
        while parse_response_head(&buf).is_none() {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "the answer comes without the rest of the upload"
    );
    let (status, _, len) = parse_response_head(&buf).expect("a response head");
    assert_eq!(status, 413);
    assert!(buf.len() >= len);
    drop(stream);

    // That connection is spent; the next request gets a fresh one.
    let mut client = Http1Client::connect(sluice.addr).await.expect("connect");
    let resp = client.send(get("/next")).await.expect("response");
    assert_eq!(text(resp).await, "fine");
    assert_eq!(app.connections_used(), 2);
    sluice.shutdown().await;
}

#[tokio::test]
async fn a_reused_connection_that_dies_unanswered_is_retried_only_when_safe() {
    // Every connection answers its first request and drops the second unanswered.
    let app = ScriptedApp::start(|s: &Seen| {
        if s.nth == 0 {
            Reply::Bytes(ok("answered"))
        } else {
            Reply::Close
        }
    })
    .await;
    let sluice = sluice_for(&app).await;
    let mut client = Http1Client::connect(sluice.addr).await.expect("connect");
    let resp = client.send(get("/first")).await.expect("response");
    assert_eq!(text(resp).await, "answered");
    // A GET without a body is safe to send again: the client never sees the failure.
    let resp = client.send(get("/again")).await.expect("response");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(text(resp).await, "answered");
    let gets: Vec<(usize, usize)> = app.seen().iter().map(|s| (s.conn, s.nth)).collect();
    assert_eq!(
        gets,
        [(0, 0), (0, 1), (1, 0)],
        "retried once, on a fresh connection"
    );

    // A POST may have been acted on: it is not sent twice.
    let post = Request::post("/api/v1/exams/1/submit")
        .header("host", "app")
        .body(Full::new(Bytes::from_static(b"{\"answer\":\"B\"}")))
        .expect("request");
    let resp = client.send(post).await.expect("response");
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(reason(resp.headers()), "upstream_connection_closed");
    let posts = app
        .seen()
        .iter()
        .filter(|s| s.head.starts_with("POST"))
        .count();
    assert_eq!(posts, 1, "the app saw the POST once");
    sluice.shutdown().await;
}

#[tokio::test]
async fn an_idle_connection_the_app_closed_is_not_used_again() {
    // The app closes after each answer without saying so (no `Connection: close`).
    let app = ScriptedApp::start(|_| Reply::ThenClose(ok("done"))).await;
    let sluice = sluice_for(&app).await;
    let mut client = Http1Client::connect(sluice.addr).await.expect("connect");
    for i in 0..3 {
        let post = Request::post("/api/v1/auth/login")
            .header("host", "app")
            .body(Full::new(Bytes::from_static(b"{}")))
            .expect("request");
        let resp = client.send(post).await.expect("response");
        assert_eq!(resp.status(), StatusCode::OK, "request {i}");
        assert_eq!(text(resp).await, "done");
        // Let the app's close arrive before the next request takes a connection.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(app.connections_used(), 3);
    sluice.shutdown().await;
}

#[tokio::test]
async fn responses_sluice_cannot_read_get_502() {
    let app = ScriptedApp::start(|s: &Seen| {
        if s.head.contains("/garbage") {
            Reply::ThenClose(b"NOT HTTP AT ALL\r\n\r\n".to_vec())
        } else if s.head.contains("/huge-head") {
            let mut raw = b"HTTP/1.1 200 OK\r\nX-Big: ".to_vec();
            raw.resize(80 * 1024, b'a');
            Reply::ThenClose(raw)
        } else if s.head.contains("/bad-length") {
            Reply::ThenClose(b"HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\nhello".to_vec())
        } else {
            // The body ends early: the client must see a broken body, not a short one.
            Reply::ThenClose(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort".to_vec())
        }
    })
    .await;
    let sluice = sluice_for(&app).await;
    for path in ["/garbage", "/huge-head", "/bad-length"] {
        let mut client = Http1Client::connect(sluice.addr).await.expect("connect");
        let resp = client.send(get(path)).await.expect("response");
        assert_eq!(resp.status(), StatusCode::BAD_GATEWAY, "{path}");
        assert_eq!(reason(resp.headers()), "upstream_protocol_error", "{path}");
    }
    let mut client = Http1Client::connect(sluice.addr).await.expect("connect");
    // Either the head arrives and the body then fails, or the connection is cut before
    // the head was flushed: never a short body that looks whole.
    if let Ok(resp) = client.send(get("/truncated")).await {
        assert_eq!(resp.status(), StatusCode::OK);
        assert!(
            resp.into_body().collect().await.is_err(),
            "truncated body is an error"
        );
    }
    sluice.shutdown().await;
}

#[tokio::test]
async fn uploads_reach_the_app_framed_as_they_came_or_chunked() {
    let app = ScriptedApp::start(|_| Reply::Bytes(ok("got it"))).await;
    let sluice = sluice_for(&app).await;

    // A chunked HTTP/1.1 upload stays chunked.
    let raw = b"POST /up HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
                5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
    let out = raw_exchange(sluice.addr, raw).await.expect("exchange");
    assert_eq!(parse_response_head(&out).map(|h| h.0), Some(200));
    // A sized upload keeps its length.
    let raw =
        b"PUT /up HTTP/1.1\r\nHost: app\r\nContent-Length: 4\r\nConnection: close\r\n\r\nabcd";
    let out = raw_exchange(sluice.addr, raw).await.expect("exchange");
    assert_eq!(parse_response_head(&out).map(|h| h.0), Some(200));
    // HTTP/2 data frames without a content-length go out chunked.
    let mut h2 = H2cClient::connect(sluice.addr).await.expect("h2c");
    let req = Request::post("http://app/up")
        .body(Full::new(Bytes::from_static(b"from h2")))
        .expect("request");
    let resp = h2.send(req).await.expect("response");
    assert_eq!(resp.status(), StatusCode::OK);

    let seen = app.seen();
    assert_eq!(seen.len(), 3);
    assert_eq!(
        seen[0].header("transfer-encoding").as_deref(),
        Some("chunked")
    );
    assert_eq!(seen[0].body, b"hello world");
    assert_eq!(seen[1].header("content-length").as_deref(), Some("4"));
    assert_eq!(seen[1].header("transfer-encoding"), None);
    assert_eq!(seen[1].body, b"abcd");
    assert_eq!(seen[2].body, b"from h2");
    assert!(
        seen[2].header("transfer-encoding").is_some() || seen[2].header("content-length").is_some(),
        "h2 body framed for HTTP/1.1: {}",
        seen[2].head
    );
    sluice.shutdown().await;
}
