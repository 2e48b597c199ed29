//! One request of the load generator, and the pool of idle keep-alive connections.
//!
//! The pool is plain data owned by the run loop (no lock): a request task gets a
//! connection (or the right to open one) when it is spawned and hands it back in its
//! result. A connection that turns out closed before the request was written is replaced
//! once, so a server closing idle connections is not counted as a failure.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{HeaderName, HeaderValue, HOST};
use hyper::{HeaderMap, Method, Request, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

use super::{PlanError, Stream};

pub(super) type Conn = SendRequest<Empty<Bytes>>;

/// What became of one scheduled send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Outcome {
    /// A complete response with this status.
    Status(u16),
    /// The TCP connection (or HTTP handshake) could not be made.
    Connect,
    /// The connection broke before the response was complete (reset, close, bad message).
    Reset,
    /// No complete response by the deadline.
    Timeout,
}

/// A finished request, with its connection when it can be reused.
pub(super) struct Done {
    pub stream: usize,
    pub intended: Instant,
    pub started: Instant,
    pub finished: Instant,
    pub outcome: Outcome,
    pub conn: Option<Conn>,
}

/// The request head of a stream, built once.
#[derive(Debug)]
pub(super) struct Template {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
}

impl Template {
    pub(super) fn new(stream: &Stream, target: SocketAddr) -> Result<Self, PlanError> {
        let uri: Uri = stream
            .path
            .parse()
            .map_err(|_| PlanError::Path(stream.path.clone()))?;
        let mut headers = HeaderMap::new();
        let host = HeaderValue::from_str(&target.to_string())
            .map_err(|_| PlanError::Header(target.to_string()))?;
        headers.insert(HOST, host);
        for (name, value) in &stream.headers {
            let bad = || PlanError::Header(format!("{name}: {value}"));
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| bad())?;
            let value = HeaderValue::from_str(value).map_err(|_| bad())?;
            headers.append(name, value);
        }
        Ok(Self {
            method: stream.method.clone(),
            uri,
            headers,
        })
    }

    fn request(&self) -> Request<Empty<Bytes>> {
        let mut req = Request::new(Empty::new());
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.headers_mut() = self.headers.clone();
        req
    }
}

/// Idle connections and the count of open ones (idle, in use, or being opened).
#[derive(Debug)]
pub(super) struct Pool {
    idle: Vec<Conn>,
    open: usize,
    max: usize,
}

/// What a new send gets from the pool.
pub(super) enum Lease {
    Reuse(Conn),
    Open,
    Saturated,
}

impl Pool {
    pub(super) fn new(max: usize) -> Self {
        Self {
            idle: Vec::new(),
            open: 0,
            max,
        }
    }

    pub(super) fn lease(&mut self) -> Lease {
        while let Some(conn) = self.idle.pop() {
            if !conn.is_closed() {
                return Lease::Reuse(conn);
            }
            self.open -= 1;
        }
        if self.open < self.max {
            self.open += 1;
            Lease::Open
        } else {
            Lease::Saturated
        }
    }

    /// Take back what a lease became: a reusable connection, or nothing (closed).
    pub(super) fn give_back(&mut self, conn: Option<Conn>) {
        match conn {
            Some(c) if !c.is_closed() => self.idle.push(c),
            _ => self.open = self.open.saturating_sub(1),
        }
    }
}

/// Everything a request task needs besides its lease.
#[derive(Clone)]
pub(super) struct Shared {
    pub target: SocketAddr,
    pub templates: Arc<[Template]>,
    /// Dropped by the run loop at the end, which stops every connection driver.
    pub stop: watch::Receiver<()>,
}

/// Send one request of `stream` and read the whole response by `deadline`.
pub(super) async fn send(
    shared: Shared,
    stream: usize,
    intended: Instant,
    deadline: Instant,
    conn: Option<Conn>,
) -> Done {
    let started = Instant::now();
    let template = &shared.templates[stream];
    let work = async {
        let mut req = Some(template.request());
        if let Some(mut c) = conn {
            if c.ready().await.is_ok() {
                if let Some(r) = req.take() {
                    match c.try_send_request(r).await {
                        Ok(resp) => return read_to_end(resp, c).await,
                        // Never written: the connection closed while idle. Retry below on
                        // a fresh one; a request that was written is not retried.
                        Err(mut e) => req = e.take_message(),
                    }
                }
            }
        }
        let Some(req) = req else {
            return Err(Outcome::Reset);
        };
        let mut c = connect(&shared).await.ok_or(Outcome::Connect)?;
        let resp = c.send_request(req).await.map_err(|_| Outcome::Reset)?;
        read_to_end(resp, c).await
    };
    let (outcome, conn) = match tokio::time::timeout_at(deadline, work).await {
        Ok(Ok((status, sender))) => (Outcome::Status(status), Some(sender)),
        Ok(Err(outcome)) => (outcome, None),
        Err(_) => (Outcome::Timeout, None),
    };
    Done {
        stream,
        intended,
        started,
        finished: Instant::now(),
        outcome,
        conn,
    }
}

/// Read (and discard) the whole body; the status counts only once the response is complete.
async fn read_to_end(
    resp: hyper::Response<hyper::body::Incoming>,
    conn: Conn,
) -> Result<(u16, Conn), Outcome> {
    let status = resp.status().as_u16();
    let mut body = resp.into_body();
    while let Some(frame) = body.frame().await {
        frame.map_err(|_| Outcome::Reset)?;
    }
    Ok((status, conn))
}

/// Open a connection and spawn its driver, which ends with the connection or the run.
async fn connect(shared: &Shared) -> Option<Conn> {
    let stream = TcpStream::connect(shared.target).await.ok()?;
    let _ = stream.set_nodelay(true);
    let (sender, conn) = http1::handshake(TokioIo::new(stream)).await.ok()?;
    let mut stop = shared.stop.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = conn => {}
            _ = stop.changed() => {}
        }
    });
    Some(sender)
}
