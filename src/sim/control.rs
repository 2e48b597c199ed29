//! Client side of the simulated app's control endpoints, for scripts and tests:
//! one short HTTP/1.1 exchange per call, on its own connection.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::app::SimStats;

/// Cap on one control exchange, connect to last byte.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(5);

/// Largest answer read.
const MAX_ANSWER: usize = 1 << 20;

/// Send one request and return the status and body.
pub async fn exchange(
    target: SocketAddr,
    method: Method,
    path: &str,
    body: Bytes,
) -> io::Result<(u16, Bytes)> {
    let fut = async {
        let stream = TcpStream::connect(target).await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(io::Error::other)?;
        let driver = tokio::spawn(conn);
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, target.to_string())
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(body))
            .map_err(io::Error::other)?;
        let resp = sender.send_request(req).await.map_err(io::Error::other)?;
        let status = resp.status().as_u16();
        let bytes = Limited::new(resp.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(io::Error::other)?
            .to_bytes();
        drop(sender);
        driver.abort();
        Ok((status, bytes))
    };
    tokio::time::timeout(CONTROL_TIMEOUT, fut)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "control exchange timed out"))?
}

/// `POST /_control` with `update` (JSON, any subset of `capacity`, `service_ms`, `mode`,
/// `queue_limit`); returns the status and the answer's body (the app's stats on success).
pub async fn control(target: SocketAddr, update: &str) -> io::Result<(u16, String)> {
    let (status, body) = exchange(
        target,
        Method::POST,
        "/_control",
        Bytes::copy_from_slice(update.as_bytes()),
    )
    .await?;
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// `GET /_stats`, parsed.
pub async fn stats(target: SocketAddr) -> io::Result<SimStats> {
    let (status, body) = exchange(target, Method::GET, "/_stats", Bytes::new()).await?;
    if status != 200 {
        return Err(io::Error::other(format!("/_stats answered {status}")));
    }
    serde_json::from_slice(&body).map_err(io::Error::other)
}
