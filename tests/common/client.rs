//! Client-side helpers: raw TCP exchanges, HTTP/1.1 and h2c clients,
//! and a WebSocket-style upgrade helper.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue, HOST};
use hyper::upgrade::Upgraded;
use hyper::{HeaderMap, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// Cap for raw reads.
pub const RAW_TIMEOUT: Duration = Duration::from_secs(5);

/// Write `req`, then read until EOF (or `RAW_TIMEOUT`) and return everything read.
/// Send `Connection: close` if you want the exchange to end before the cap.
/// A read error after some bytes arrived (e.g. a reset) returns those bytes.
#[allow(dead_code)]
pub async fn raw_exchange(addr: SocketAddr, req: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.write_all(req).await?;
    let mut out = Vec::new();
    let read_all = async {
        let mut buf = [0u8; 8192];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) => return Ok(()),
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) => return Err(e),
            }
        }
    };
    match tokio::time::timeout(RAW_TIMEOUT, read_all).await {
        Ok(Err(e)) if out.is_empty() => Err(e),
        _ => Ok(out),
    }
}

/// Response headers as (lowercase name, lossy value), in received order.
pub type RawHeaders = Vec<(String, String)>;

/// Parse a response head (`HTTP/1.1 NNN ...\r\n headers \r\n\r\n`) at the start of `buf`.
/// Returns status, headers, and head length; `None` if incomplete or invalid.
#[allow(dead_code)]
pub fn parse_response_head(buf: &[u8]) -> Option<(u16, RawHeaders, usize)> {
    let mut headers = [httparse::EMPTY_HEADER; 128];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(buf) {
        Ok(httparse::Status::Complete(len)) => {
            let hs = resp
                .headers
                .iter()
                .map(|h| {
                    let v = String::from_utf8_lossy(h.value).into_owned();
                    (h.name.to_ascii_lowercase(), v)
                })
                .collect();
            Some((resp.code?, hs, len))
        }
        _ => None,
    }
}

/// Write `req` and read just the first response head (panics on EOF/timeout before one).
/// Header names are lowercased; order and duplicates are preserved.
#[allow(dead_code)]
pub async fn raw_response_head(addr: SocketAddr, req: &[u8]) -> (u16, RawHeaders) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(req).await.unwrap();
    let mut buf = Vec::new();
    let fut = async {
        let mut chunk = [0u8; 8192];
        loop {
            if let Some((status, headers, _)) = parse_response_head(&buf) {
                return (status, headers);
            }
            let n = stream.read(&mut chunk).await.expect("read response head");
            assert!(n > 0, "EOF before a complete response head: {buf:?}");
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(RAW_TIMEOUT, fut)
        .await
        .expect("timed out waiting for a response head")
}

fn build_request(
    uri: &str,
    host: &str,
    headers: &[(&str, &str)],
    set_host: bool,
) -> Request<Full<Bytes>> {
    let mut req = Request::get(uri).body(Full::new(Bytes::new())).unwrap();
    if set_host {
        req.headers_mut()
            .insert(HOST, HeaderValue::from_str(host).unwrap());
    }
    for (n, v) in headers {
        req.headers_mut().append(
            HeaderName::from_bytes(n.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    req
}

async fn collect(resp: Response<Incoming>) -> (StatusCode, HeaderMap, Bytes) {
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.expect("response body").to_bytes();
    (parts.status, parts.headers, body)
}

/// Request body type used by the clients (any `Body<Data = Bytes>` boxed).
pub type ClientBody = BoxBody<Bytes, BoxError>;
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn boxed<B>(req: Request<B>) -> Request<ClientBody>
where
    B: http_body::Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    req.map(|b| b.map_err(Into::into).boxed())
}

/// One HTTP/1.1 connection (keep-alive, upgrades enabled).
pub struct Http1Client {
    addr: SocketAddr,
    sender: hyper::client::conn::http1::SendRequest<ClientBody>,
    conn: JoinHandle<()>,
}

#[allow(dead_code)]
impl Http1Client {
    pub async fn connect(addr: SocketAddr) -> std::io::Result<Http1Client> {
        let stream = TcpStream::connect(addr).await?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(std::io::Error::other)?;
        let conn = tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        Ok(Http1Client { addr, sender, conn })
    }

    /// Send on this connection; adds `Host: addr` if absent. Use an origin-form URI (`/path`).
    pub async fn send(&mut self, req: Request<Full<Bytes>>) -> hyper::Result<Response<Incoming>> {
        self.send_body(req).await
    }

    /// Like `send`, with any body (e.g. a streaming `PatternBody` upload).
    pub async fn send_body<B>(&mut self, req: Request<B>) -> hyper::Result<Response<Incoming>>
    where
        B: http_body::Body<Data = Bytes> + Send + Sync + 'static,
        B::Error: Into<BoxError>,
    {
        let mut req = boxed(req);
        if !req.headers().contains_key(HOST) {
            let host = HeaderValue::from_str(&self.addr.to_string()).unwrap();
            req.headers_mut().insert(HOST, host);
        }
        self.sender.ready().await?;
        self.sender.send_request(req).await
    }

    /// GET `path` on this connection and collect the body (panics on transport errors).
    pub async fn get_on(
        &mut self,
        path: &str,
        headers: &[(&str, &str)],
    ) -> (StatusCode, HeaderMap, Bytes) {
        let req = build_request(path, &self.addr.to_string(), headers, true);
        collect(self.send(req).await.expect("http1 request")).await
    }

    /// One-shot GET on a fresh connection.
    pub async fn get(
        addr: SocketAddr,
        path: &str,
        headers: &[(&str, &str)],
    ) -> (StatusCode, HeaderMap, Bytes) {
        Http1Client::connect(addr)
            .await
            .unwrap()
            .get_on(path, headers)
            .await
    }
}

impl Drop for Http1Client {
    fn drop(&mut self) {
        self.conn.abort();
    }
}

/// One h2c (HTTP/2 prior knowledge) connection.
pub struct H2cClient {
    addr: SocketAddr,
    sender: hyper::client::conn::http2::SendRequest<ClientBody>,
    conn: JoinHandle<()>,
}

#[allow(dead_code)]
impl H2cClient {
    pub async fn connect(addr: SocketAddr) -> std::io::Result<H2cClient> {
        let stream = TcpStream::connect(addr).await?;
        let (sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .map_err(std::io::Error::other)?;
        let conn = tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(H2cClient { addr, sender, conn })
    }

    /// Send on this connection. A relative URI (`/path`) is made absolute (`http://addr/path`).
    pub async fn send(&mut self, req: Request<Full<Bytes>>) -> hyper::Result<Response<Incoming>> {
        self.send_body(req).await
    }

    /// Like `send`, with any body.
    pub async fn send_body<B>(&mut self, req: Request<B>) -> hyper::Result<Response<Incoming>>
    where
        B: http_body::Body<Data = Bytes> + Send + Sync + 'static,
        B::Error: Into<BoxError>,
    {
        let mut req = boxed(req);
        if req.uri().scheme().is_none() {
            let abs = format!("http://{}{}", self.addr, req.uri());
            *req.uri_mut() = abs.parse().unwrap();
        }
        self.sender.ready().await?;
        self.sender.send_request(req).await
    }

    pub async fn get_on(
        &mut self,
        path: &str,
        headers: &[(&str, &str)],
    ) -> (StatusCode, HeaderMap, Bytes) {
        let req = build_request(path, "", headers, false);
        collect(self.send(req).await.expect("h2c request")).await
    }

    pub async fn get(
        addr: SocketAddr,
        path: &str,
        headers: &[(&str, &str)],
    ) -> (StatusCode, HeaderMap, Bytes) {
        H2cClient::connect(addr)
            .await
            .unwrap()
            .get_on(path, headers)
            .await
    }
}

impl Drop for H2cClient {
    fn drop(&mut self) {
        self.conn.abort();
    }
}

/// Client side of an `Upgrade: websocket` request on a fresh HTTP/1.1 connection.
/// Returns the status and, on 101, the upgraded raw byte stream.
#[allow(dead_code)]
pub async fn websocket_upgrade(
    addr: SocketAddr,
    path: &str,
) -> (StatusCode, Option<TokioIo<Upgraded>>) {
    let mut client = Http1Client::connect(addr).await.unwrap();
    let req = build_request(
        path,
        &addr.to_string(),
        &[
            ("connection", "Upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-version", "13"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ],
        true,
    );
    let resp = client.send(req).await.expect("upgrade request");
    let status = resp.status();
    if status != StatusCode::SWITCHING_PROTOCOLS {
        return (status, None);
    }
    // Resolves once the connection task has handed the IO over, so dropping
    // `client` (which aborts that task) afterwards is harmless.
    let upgraded = hyper::upgrade::on(resp).await.expect("upgrade");
    drop(client);
    (status, Some(TokioIo::new(upgraded)))
}
