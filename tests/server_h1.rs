//! sluice's HTTP/1.1 server as a client sees it on the wire: keep-alive, pipelining,
//! `Expect: 100-continue`, HTTP/1.0, request bodies it did not need, malformed heads,
//! the idle and header timeouts, and upgrades that carry bytes with their request.

mod common;

use common::harness::{base_config, start};
use common::{parse_response_head, RawHeaders, TestUpstream};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The base config plus a route refused after one request per second (`/limited`).
fn config(app: SocketAddr, extra_listener: &str) -> String {
    let base = base_config(app).replace(
        "header_read_timeout_ms = 400",
        &format!("header_read_timeout_ms = 400\n{extra_listener}"),
    );
    base.replace(
        "[default_route]",
        "[[routes]]\nname = \"limited\"\npath_prefix = \"/limited\"\nclass = \"http\"\n\
         priority = \"normal\"\nrate_limit_rps = 1\nrate_limit_burst = 1\n\n[default_route]",
    )
}

/// A raw client connection that reads responses one at a time.
struct Raw {
    stream: TcpStream,
    buf: Vec<u8>,
}

struct Answer {
    status: u16,
    headers: RawHeaders,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

impl Raw {
    async fn connect(addr: SocketAddr) -> Raw {
        Raw {
            stream: TcpStream::connect(addr).await.expect("connect"),
            buf: Vec::new(),
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    /// Reads more; false at end of file or after 5 s.
    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 16 * 1024];
        match tokio::time::timeout(Duration::from_secs(5), self.stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            _ => false,
        }
    }

    /// The next response (an interim one too), its body read by length or chunks.
    async fn answer(&mut self, head_request: bool) -> Answer {
        let (status, headers, len) = loop {
            if let Some(h) = parse_response_head(&self.buf) {
                break h;
            }
            assert!(self.fill().await, "connection ended before a response head");
        };
        self.buf.drain(..len);
        let mut a = Answer {
            status,
            headers,
            body: Vec::new(),
        };
        if head_request || status < 200 || status == 204 || status == 304 {
            return a;
        }
        if a.header("transfer-encoding") == Some("chunked") {
            loop {
                let line_end = loop {
                    if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                        break i;
                    }
                    assert!(self.fill().await, "cut in a chunk size");
                };
                let size_text = String::from_utf8_lossy(&self.buf[..line_end]).into_owned();
                let size = usize::from_str_radix(size_text.trim(), 16).expect("chunk size");
                self.buf.drain(..line_end + 2);
                while self.buf.len() < size + 2 {
                    assert!(self.fill().await, "cut in a chunk");
                }
                a.body.extend(self.buf.drain(..size));
                self.buf.drain(..2);
                if size == 0 {
                    return a;
                }
            }
        }
        let len: usize = a
            .header("content-length")
            .map_or(0, |v| v.parse().unwrap_or(0));
        while self.buf.len() < len {
            assert!(self.fill().await, "cut in a body");
        }
        a.body = self.buf.drain(..len).collect();
        a
    }

    /// True when the server closes the connection within `within`.
    async fn closed_within(&mut self, within: Duration) -> bool {
        let mut chunk = [0u8; 1024];
        matches!(
            tokio::time::timeout(within, self.stream.read(&mut chunk)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_on_one_connection() {
    let app = TestUpstream::start().await;
    let sluice = start(&config(app.addr(), "")).await;
    let mut c = Raw::connect(sluice.addr).await;
    c.send(
        b"GET /echo?n=1 HTTP/1.1\r\nHost: x\r\n\r\nGET /echo?n=2 HTTP/1.1\r\nHost: x\r\n\r\n\
          HEAD /echo?n=3 HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await;
    for n in 1..=2 {
        let a = c.answer(false).await;
        assert_eq!(a.status, 200);
        let body = String::from_utf8_lossy(&a.body);
        assert!(
            body.contains(&format!("n={n}")),
            "answer {n} in order: {body}"
        );
    }
    let a = c.answer(true).await;
    assert_eq!(a.status, 200);
    assert!(
        a.header("content-length").is_some(),
        "HEAD keeps the length"
    );
    assert!(a.header("date").is_some(), "every answer has a Date");
    assert_eq!(app.connections(), 1, "one connection to the app, reused");
    sluice.shutdown().await;
}

#[tokio::test]
async fn expect_continue_is_answered_only_when_the_body_is_wanted() {
    let app = TestUpstream::start().await;
    let sluice = start(&config(app.addr(), "")).await;
    let mut c = Raw::connect(sluice.addr).await;
    c.send(b"POST /sink HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        .await;
    let interim = c.answer(false).await;
    assert_eq!(interim.status, 100, "the client is told to send its body");
    c.send(b"hello").await;
    let a = c.answer(false).await;
    assert_eq!(a.status, 200);
    assert_eq!(app.last_request().map(|r| r.body_len), Some(5));

    // A refused request never asks for the body, and the connection then closes (the
    // client may or may not send the body it was not asked for).
    let mut c = Raw::connect(sluice.addr).await;
    c.send(b"GET /limited HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(c.answer(false).await.status, 200, "the burst of one");
    c.send(
        b"POST /limited HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
    )
    .await;
    let a = c.answer(false).await;
    assert_eq!(a.status, 429, "refused outright, no 100 first");
    assert_eq!(a.header("connection"), Some("close"));
    assert!(c.closed_within(Duration::from_secs(3)).await);
    sluice.shutdown().await;
}

#[tokio::test]
async fn an_unread_body_is_dropped_so_the_connection_lives_unless_it_is_big() {
    let app = TestUpstream::start().await;
    let sluice = start(&config(app.addr(), "")).await;
    let mut c = Raw::connect(sluice.addr).await;
    c.send(b"GET /limited HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(c.answer(false).await.status, 200);
    // Refused before forwarding: its small body is read and dropped by sluice...
    c.send(b"POST /limited HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\nhello world")
        .await;
    let a = c.answer(false).await;
    assert_eq!(a.status, 429);
    assert_eq!(a.header("connection"), None, "kept alive");
    // ...so the next request on the connection is read from the right place.
    c.send(b"GET /echo?after HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let a = c.answer(false).await;
    assert_eq!(a.status, 200);
    assert!(String::from_utf8_lossy(&a.body).contains("after"));

    // A big refused upload is not waited for: answer, then close.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut c = Raw::connect(sluice.addr).await;
    c.send(b"GET /limited HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(c.answer(false).await.status, 200);
    c.send(b"POST /limited HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\nstart")
        .await;
    let a = c.answer(false).await;
    assert_eq!(a.status, 429);
    assert_eq!(a.header("connection"), Some("close"));
    sluice.shutdown().await;
}

#[tokio::test]
async fn http_1_0_clients_get_close_by_default_and_keep_alive_when_asked() {
    let app = TestUpstream::start().await;
    let sluice = start(&config(app.addr(), "")).await;
    let mut c = Raw::connect(sluice.addr).await;
    c.send(b"GET /echo HTTP/1.0\r\nHost: x\r\n\r\n").await;
    let a = c.answer(false).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.header("connection"), Some("close"));
    assert!(c.closed_within(Duration::from_secs(3)).await);

    let mut c = Raw::connect(sluice.addr).await;
    for _ in 0..2 {
        c.send(b"GET /echo HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n")
            .await;
        let a = c.answer(false).await;
        assert_eq!(a.status, 200);
        assert_eq!(a.header("connection"), Some("keep-alive"));
        assert_ne!(
            a.header("transfer-encoding"),
            Some("chunked"),
            "no chunks for 1.0"
        );
    }
    sluice.shutdown().await;
}

#[tokio::test]
async fn chunked_uploads_with_trailers_reach_the_app_whole() {
    let app = TestUpstream::start().await;
    let sluice = start(&config(app.addr(), "")).await;
    let mut c = Raw::connect(sluice.addr).await;
    c.send(
        b"POST /sink HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
          4\r\nwiki\r\n5;note=x\r\npedia\r\n0\r\nX-Checksum: 1\r\n\r\n",
    )
    .await;
    let a = c.answer(false).await;
    assert_eq!(a.status, 200);
    assert_eq!(app.last_request().map(|r| r.body_len), Some(9));
    // The connection is still in step after the trailers.
    c.send(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(c.answer(false).await.status, 200);
    sluice.shutdown().await;
}

#[tokio::test]
async fn heads_a_proxy_must_not_guess_at_are_refused_and_never_forwarded() {
    let app = TestUpstream::start().await;
    let sluice = start(&config(app.addr(), "")).await;
    let cases: [(&[u8], u16); 4] = [
        (b"GET / HTTP/1.1\r\nHost x\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\nabc", 400),
        (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabc", 400),
    ];
    for (raw, want) in cases {
        let mut c = Raw::connect(sluice.addr).await;
        c.send(raw).await;
        let a = c.answer(false).await;
        assert_eq!(a.status, want, "{}", String::from_utf8_lossy(raw));
        assert_eq!(a.header("connection"), Some("close"));
        assert!(c.closed_within(Duration::from_secs(3)).await);
    }
    assert_eq!(app.requests(), 0);
    sluice.shutdown().await;
}

#[tokio::test]
async fn idle_keep_alive_connections_close_after_the_idle_timeout_not_before() {
    let app = TestUpstream::start().await;
    let cfg = config(app.addr(), "idle_timeout_ms = 700");
    let sluice = start(&cfg).await;
    let mut c = Raw::connect(sluice.addr).await;
    // Requests every 200 ms keep it open well past the idle timeout in total...
    for _ in 0..6 {
        c.send(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert_eq!(c.answer(false).await.status, 200);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // ...and longer than the 400 ms header read timeout between two of them is fine.
    tokio::time::sleep(Duration::from_millis(300)).await;
    c.send(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(c.answer(false).await.status, 200);
    let started = std::time::Instant::now();
    assert!(
        c.closed_within(Duration::from_secs(3)).await,
        "idle too long: closed"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(600),
        "{:?}",
        started.elapsed()
    );

    // A later request that starts and stalls is cut by the header read timeout.
    let mut c = Raw::connect(sluice.addr).await;
    c.send(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(c.answer(false).await.status, 200);
    c.send(b"GET /echo HTTP/1.1\r\nHo").await;
    let started = std::time::Instant::now();
    assert!(c.closed_within(Duration::from_secs(3)).await);
    assert!(
        started.elapsed() < Duration::from_millis(650),
        "{:?}",
        started.elapsed()
    );
    sluice.shutdown().await;
}

#[tokio::test]
async fn bytes_sent_with_an_upgrade_request_reach_the_app_and_a_drain_closes_it() {
    let app = TestUpstream::start().await;
    let sluice = start(&config(app.addr(), "")).await;
    let mut c = Raw::connect(sluice.addr).await;
    // The request and the first bytes of the new protocol in one write.
    c.send(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nearly bird",
    )
    .await;
    let a = c.answer(true).await;
    assert_eq!(a.status, 101);
    assert_eq!(a.header("upgrade"), Some("websocket"));
    while !c.buf.ends_with(b"early bird") {
        assert!(c.fill().await, "the app echoes what came with the request");
    }
    c.buf.clear();
    c.send(b"and more").await;
    while !c.buf.ends_with(b"and more") {
        assert!(c.fill().await, "spliced both ways");
    }
    // A drain closes an upgraded connection at once rather than waiting out its timeout.
    let started = std::time::Instant::now();
    let stop = tokio::spawn(sluice.shutdown());
    assert!(
        c.closed_within(Duration::from_secs(5)).await,
        "closed by the drain"
    );
    tokio::time::timeout(Duration::from_secs(5), stop)
        .await
        .expect("the drain does not wait for the tunnel")
        .expect("task");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}
