//! `TestUpstream`: a path-scripted HTTP/1.1 origin server for integration tests.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

/// Chunk size used by `/bytes/{n}`.
pub const CHUNK: usize = 64 * 1024;

/// The byte at offset `i` of a `/bytes/{n}` response body.
#[allow(dead_code)]
pub fn pattern_byte(i: u64) -> u8 {
    (i % 251) as u8
}

/// One request as seen by the upstream.
#[allow(dead_code)]
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    pub method: String,
    /// Path and query, as received.
    pub uri: String,
    /// Header names are lowercase (hyper normalises them). Order is received
    /// order, except that repeated names are grouped at their first position.
    pub headers: Vec<(String, Vec<u8>)>,
    /// Body bytes consumed by the upstream (0 for `/hang`, `/ws`, `/close`, `/reset`).
    pub body_len: u64,
}

#[allow(dead_code)]
impl RecordedRequest {
    /// All values of header `name` (case-insensitive), lossily as strings.
    pub fn header_values(&self, name: &str) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .collect()
    }

    /// First value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<String> {
        self.header_values(name).into_iter().next()
    }
}

#[derive(Default)]
struct Shared {
    requests: AtomicUsize,
    connections: AtomicUsize,
    log: Mutex<Vec<RecordedRequest>>,
}

impl Shared {
    fn record(&self, req: &Request<Incoming>) -> usize {
        self.requests.fetch_add(1, Ordering::SeqCst);
        let entry = RecordedRequest {
            method: req.method().to_string(),
            uri: req
                .uri()
                .path_and_query()
                .map(|p| p.to_string())
                .unwrap_or_else(|| req.uri().to_string()),
            headers: req
                .headers()
                .iter()
                .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
                .collect(),
            body_len: 0,
        };
        let mut log = self.log.lock().unwrap();
        log.push(entry);
        log.len() - 1
    }

    fn set_body_len(&self, idx: usize, n: u64) {
        self.log.lock().unwrap()[idx].body_len = n;
    }
}

/// Scriptable HTTP/1.1 upstream; behaviour is chosen by request path:
/// `/status/{code}`, `/delay/{ms}`, `/hang`, `/close`, `/reset`, `/bytes/{n}`,
/// `/sink`, `/headers-out`, `/ws`, anything else echoes the request as JSON.
/// Stops (aborting all its tasks) on drop.
pub struct TestUpstream {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

#[allow(dead_code)]
impl TestUpstream {
    pub async fn start() -> TestUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared::default());
        let task = tokio::spawn(accept_loop(listener, shared.clone()));
        TestUpstream { addr, shared, task }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:port`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn requests(&self) -> usize {
        self.shared.requests.load(Ordering::SeqCst)
    }

    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    pub fn last_request(&self) -> Option<RecordedRequest> {
        self.shared.log.lock().unwrap().last().cloned()
    }

    pub fn requests_log(&self) -> Vec<RecordedRequest> {
        self.shared.log.lock().unwrap().clone()
    }
}

impl Drop for TestUpstream {
    fn drop(&mut self) {
        // Dropping the accept task drops its JoinSet, which aborts every connection.
        self.task.abort();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut conns = JoinSet::new();
    loop {
        while conns.try_join_next().is_some() {}
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        shared.connections.fetch_add(1, Ordering::SeqCst);
        let _ = stream.set_nodelay(true);
        // A duplicate fd lets a handler turn the final close into an RST.
        let dup = socket2::SockRef::from(&stream).try_clone().ok();
        let dup = Arc::new(Mutex::new(dup));
        let shared = shared.clone();
        conns.spawn(async move {
            let svc_dup = dup.clone();
            let svc = service_fn(move |req| handle(req, shared.clone(), svc_dup.clone()));
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), svc)
                .with_upgrades()
                .await;
            drop(dup.lock().unwrap().take());
        });
    }
}

type RespBody = BoxBody<Bytes, Infallible>;
type HandlerResult = Result<Response<RespBody>, std::io::Error>;

fn full(b: impl Into<Bytes>) -> RespBody {
    Full::new(b.into()).boxed()
}

fn json(status: StatusCode, v: serde_json::Value) -> Response<RespBody> {
    let mut resp = Response::new(full(v.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// Consume a body frame by frame, counting data bytes.
async fn drain(mut body: Incoming) -> std::io::Result<u64> {
    let mut n = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(std::io::Error::other)?;
        if let Some(data) = frame.data_ref() {
            n += data.len() as u64;
        }
    }
    Ok(n)
}

async fn handle(
    mut req: Request<Incoming>,
    shared: Arc<Shared>,
    dup: Arc<Mutex<Option<socket2::Socket>>>,
) -> HandlerResult {
    let idx = shared.record(&req);
    let path = req.uri().path().to_owned();
    match path.as_str() {
        "/hang" => return std::future::pending().await,
        "/close" => return Err(std::io::Error::other("scripted close")),
        "/reset" => {
            if let Some(sock) = dup.lock().unwrap().take() {
                let _ = sock.set_linger(Some(Duration::ZERO));
            }
            return Err(std::io::Error::other("scripted reset"));
        }
        "/ws" => return Ok(websocket(&mut req)),
        _ => {}
    }
    let (parts, body) = req.into_parts();
    let body_len = drain(body).await?;
    shared.set_body_len(idx, body_len);

    if let Some(code) = path.strip_prefix("/status/") {
        return Ok(
            match code
                .parse::<u16>()
                .ok()
                .and_then(|c| StatusCode::from_u16(c).ok())
            {
                Some(status) => {
                    let mut resp = Response::new(full(format!("status {}\n", status.as_u16())));
                    *resp.status_mut() = status;
                    resp
                }
                None => json(
                    StatusCode::BAD_REQUEST,
                    serde_json::json!({"error": "bad status"}),
                ),
            },
        );
    }
    if let Some(ms) = path.strip_prefix("/delay/") {
        let ms: u64 = ms.parse().unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        return Ok(json(
            StatusCode::OK,
            serde_json::json!({ "delayed_ms": ms }),
        ));
    }
    if path == "/stall-body" {
        // Promises 1 MiB, sends 1 KiB, then goes quiet.
        let mut resp = Response::new(PatternBody::stalling(1 << 20, 1024).boxed());
        resp.headers_mut()
            .insert(CONTENT_LENGTH, HeaderValue::from(1u64 << 20));
        return Ok(resp);
    }
    if let Some(n) = path.strip_prefix("/bytes/") {
        let n: u64 = n.parse().unwrap_or(0);
        let mut resp = Response::new(PatternBody::new(n).boxed());
        resp.headers_mut()
            .insert(CONTENT_LENGTH, HeaderValue::from(n));
        resp.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        return Ok(resp);
    }
    if path == "/sink" {
        return Ok(json(
            StatusCode::OK,
            serde_json::json!({ "received": body_len }),
        ));
    }
    if path == "/headers-out" {
        let resp = Response::builder()
            .header("set-cookie", "a=1; Path=/")
            .header("set-cookie", "b=2; Path=/")
            .header("x-custom", "a")
            .header("connection", "x-hop")
            .header("x-hop", "1")
            .header("keep-alive", "timeout=5")
            .header("proxy-authenticate", "x")
            .header("proxy-connection", "keep-alive")
            .header("trailer", "x-trailer")
            .body(full("headers-out\n"))
            .unwrap();
        return Ok(resp);
    }
    // Echo.
    let headers: Vec<serde_json::Value> = parts
        .headers
        .iter()
        .map(|(n, v)| serde_json::json!([n.as_str(), String::from_utf8_lossy(v.as_bytes())]))
        .collect();
    let uri = parts
        .uri
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_else(|| parts.uri.to_string());
    Ok(json(
        StatusCode::OK,
        serde_json::json!({
            "method": parts.method.as_str(),
            "uri": uri,
            "headers": headers,
            "body_len": body_len,
        }),
    ))
}

/// `Upgrade: websocket` -> 101, then raw byte echo on the upgraded IO until EOF.
fn websocket(req: &mut Request<Incoming>) -> Response<RespBody> {
    let wants_ws = req
        .headers()
        .get_all("upgrade")
        .iter()
        .any(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    if !wants_ws {
        let mut resp = Response::new(full("upgrade required\n"));
        *resp.status_mut() = StatusCode::UPGRADE_REQUIRED;
        return resp;
    }
    let on_upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let mut io = TokioIo::new(upgraded);
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match io.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if io.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            }
        }
        let _ = io.shutdown().await;
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header("upgrade", "websocket")
        .header("connection", "Upgrade")
        .body(Empty::new().boxed())
        .unwrap()
}

/// Streams `len` pattern bytes in `CHUNK`-sized frames, allocating one chunk at a time.
/// Also usable as a streaming request body for uploads.
pub struct PatternBody {
    offset: u64,
    len: u64,
    stall_at: u64,
}

#[allow(dead_code)]
impl PatternBody {
    pub fn new(len: u64) -> PatternBody {
        PatternBody {
            offset: 0,
            len,
            stall_at: len,
        }
    }

    /// Sends `sent` of `len` bytes, then stalls forever (never ends, never errors).
    pub fn stalling(len: u64, sent: u64) -> PatternBody {
        PatternBody {
            offset: 0,
            len,
            stall_at: sent.min(len),
        }
    }
}

impl Body for PatternBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let remaining = self.len - self.offset;
        if remaining == 0 {
            return Poll::Ready(None);
        }
        if self.offset >= self.stall_at {
            return Poll::Pending;
        }
        let n = remaining.min(CHUNK as u64).min(self.stall_at - self.offset) as usize;
        let start = self.offset;
        let mut chunk = BytesMut::with_capacity(n);
        chunk.extend((0..n as u64).map(|i| pattern_byte(start + i)));
        self.offset += n as u64;
        Poll::Ready(Some(Ok(Frame::data(chunk.freeze()))))
    }

    fn is_end_stream(&self) -> bool {
        self.offset == self.len
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.len - self.offset)
    }
}
