//! The upstream side: a small per-worker pool of HTTP/1.1 keep-alive connections to the
//! app, and the response body that hands its connection back when it is done.
//!
//! Each worker thread owns one [`Pool`]; only that thread touches its idle list, so its
//! mutex is never contended. The exchange itself ([`conn`]) runs in the request's task
//! with sluice's own HTTP/1.1 framing ([`h1`]): there is no per-connection task. A
//! connection goes back to the pool only after its response body ended cleanly; a body
//! dropped early closes its connection. A request is retried once, on a fresh
//! connection, when a reused connection failed before the app could have seen it: the
//! head was not written whole, or (for an idempotent request without a body) the
//! connection closed before any byte of a response. Nothing else is ever retried.

mod body;
mod conn;
pub mod health;
mod idle;

pub use body::{Capture, PooledBody};
pub use conn::Conn;
pub use idle::{BodyIdleTimeout, IdleTimeout};

use crate::admission::Permit;
use crate::forward::Forwarded;
use crate::h1::client::{self as h1, Asked, RequestFraming};
use crate::listener::ClientBody;
use bytes::Bytes;
use conn::Failed;
use http::{header, Method, Request, Response};
use http_body::Body;
use http_body_util::{Either, Full};
use prometheus::{IntCounter, IntGauge};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// What sluice sends upstream: the client's streamed body (failing if the client stalls
/// longer than the body idle timeout), or a body of its own.
pub type UpstreamBody = Either<IdleTimeout<ClientBody>, Full<Bytes>>;

/// Why a request could not get a response head from the app.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("connect to upstream failed: {0}")]
    Connect(#[source] std::io::Error),
    #[error("connect to upstream timed out")]
    ConnectTimeout,
    #[error("upstream closed the connection before a response: {0}")]
    Closed(#[source] std::io::Error),
    #[error("upstream exchange failed: {0}")]
    Protocol(#[source] h1::HeadError),
    /// The client's request body failed while it was being sent (the client went away,
    /// or stalled past the body idle timeout): nothing the app did.
    #[error("request body failed: {0}")]
    RequestBody(#[source] conn::BoxError),
}

impl UpstreamError {
    /// The request body stalled past the body idle timeout (rather than breaking).
    pub fn is_request_body_timeout(&self) -> bool {
        matches!(self, UpstreamError::RequestBody(e) if e.is::<BodyIdleTimeout>())
    }
}

impl From<Failed> for UpstreamError {
    fn from(f: Failed) -> UpstreamError {
        match f {
            Failed::NotSent(e) | Failed::NoResponse(e) | Failed::Broken(e) => {
                UpstreamError::Closed(e)
            }
            Failed::Protocol(e) => UpstreamError::Protocol(e),
            Failed::RequestBody(e) => UpstreamError::RequestBody(e),
        }
    }
}

/// Pool settings, from `[upstream]`.
#[derive(Clone, Debug)]
pub struct PoolSettings {
    pub addr: String,
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_idle: usize,
    pub body_idle_timeout: Duration,
}

struct Idle {
    conn: Conn,
    since: Instant,
}

/// A response to an upgrade request: the app switched protocols (the connection is
/// handed over for splicing), or answered like any other request.
pub enum Upgrade {
    Switched(Response<PooledBody>, Conn),
    Answered(Response<PooledBody>),
}

/// An upgraded connection to the app (after `101 Switching Protocols`) and the admission
/// slot it holds for as long as it lives.
pub struct Tunnel {
    app: Conn,
    _permit: Option<Permit>,
}

impl Tunnel {
    pub fn new(app: Conn, permit: Option<Permit>) -> Tunnel {
        Tunnel {
            app,
            _permit: permit,
        }
    }

    /// Splices the client's connection with the app's: `early` (what the client sent
    /// after its request head) goes to the app first, what the app sent after its 101
    /// head goes to the client first.
    pub async fn splice(self, client: &mut TcpStream, early: Bytes) -> std::io::Result<(u64, u64)> {
        self.app.splice(client, early).await
    }
}

/// One worker's keep-alive connections to the app.
pub struct Pool {
    settings: PoolSettings,
    idle: Mutex<Vec<Idle>>,
    open: IntGauge,
    /// `sluice_upstream_errors_total{kind="body"}`: response bodies that broke or stalled.
    body_errors: IntCounter,
}

/// A request encoded once, so that a retry sends the very same bytes.
struct Encoded {
    head: Vec<u8>,
    body: Option<UpstreamBody>,
    framing: RequestFraming,
    asked: Asked,
    /// A retry after the app may have seen the head is safe.
    replayable: bool,
}

impl Encoded {
    fn new(
        req: Request<UpstreamBody>,
        forwarded: Option<&Forwarded<'_>>,
        upgrade: bool,
    ) -> Encoded {
        let (parts, body) = req.into_parts();
        let end = body.is_end_stream();
        let framing = RequestFraming::choose(
            body.size_hint().exact(),
            end,
            parts.headers.contains_key(header::CONTENT_LENGTH),
        );
        let mut head = Vec::with_capacity(256 + 64 * parts.headers.len());
        h1::encode_request(&parts, framing, forwarded, &mut head);
        let idempotent = matches!(
            parts.method,
            Method::GET
                | Method::HEAD
                | Method::OPTIONS
                | Method::PUT
                | Method::DELETE
                | Method::TRACE
        );
        Encoded {
            head,
            body: (!end).then_some(body),
            framing,
            asked: Asked {
                head: parts.method == Method::HEAD,
                upgrade,
            },
            replayable: end && idempotent && !upgrade,
        }
    }
}

impl Pool {
    /// `open` counts connections across all pools (`sluice_upstream_connections`);
    /// `body_errors` counts response bodies that failed after their head was sent.
    pub fn new(settings: PoolSettings, open: IntGauge, body_errors: IntCounter) -> Arc<Pool> {
        Arc::new(Pool {
            settings,
            idle: Mutex::new(Vec::new()),
            open,
            body_errors,
        })
    }

    /// Idle connections held right now.
    pub fn idle_count(&self) -> usize {
        self.idle.lock().map_or(0, |v| v.len())
    }

    /// Sends `req` on a pooled (or new) connection and returns the response head;
    /// `forwarded` adds the forwarding headers of a proxied request.
    pub async fn send(
        self: &Arc<Self>,
        req: Request<UpstreamBody>,
        forwarded: Option<&Forwarded<'_>>,
    ) -> Result<Response<PooledBody>, UpstreamError> {
        let mut req = Encoded::new(req, forwarded, false);
        let (conn, head) = self.exchange(&mut req).await?;
        Ok(self.response(conn, head, true))
    }

    /// Sends an upgrade request (WebSocket) on a dedicated connection that is never pooled.
    pub async fn send_upgrade(
        self: &Arc<Self>,
        req: Request<UpstreamBody>,
        forwarded: Option<&Forwarded<'_>>,
    ) -> Result<Upgrade, UpstreamError> {
        let mut req = Encoded::new(req, forwarded, true);
        let mut conn = self.connect().await?;
        let head = conn
            .exchange(&req.head, &mut req.body, req.framing, req.asked)
            .await?;
        if head.status == http::StatusCode::SWITCHING_PROTOCOLS {
            let mut resp = self.response_head(&head);
            *resp.headers_mut() = head.headers;
            let body = PooledBody::empty(self.settings.body_idle_timeout, self.body_errors.clone());
            return Ok(Upgrade::Switched(resp.map(|()| body), conn));
        }
        Ok(Upgrade::Answered(self.response(conn, head, false)))
    }

    /// The exchange on an idle connection, or a new one; once more on a new one when a
    /// reused connection turned out to be closed before the app could act on it.
    async fn exchange(
        self: &Arc<Self>,
        req: &mut Encoded,
    ) -> Result<(Conn, h1::ResponseHead), UpstreamError> {
        if let Some(mut conn) = self.take_idle() {
            // The body is only taken once the head is written: a request that failed
            // before that still has it for the retry.
            match conn
                .exchange(&req.head, &mut req.body, req.framing, req.asked)
                .await
            {
                Ok(head) => return Ok((conn, head)),
                Err(Failed::NotSent(_)) => {}
                Err(Failed::NoResponse(_)) if req.replayable => {}
                Err(e) => return Err(e.into()),
            }
        }
        let mut conn = self.connect().await?;
        let head = conn
            .exchange(&req.head, &mut req.body, req.framing, req.asked)
            .await?;
        Ok((conn, head))
    }

    fn response_head(&self, head: &h1::ResponseHead) -> Response<()> {
        let mut resp = Response::new(());
        *resp.status_mut() = head.status;
        *resp.version_mut() = head.version;
        resp
    }

    fn response(
        self: &Arc<Self>,
        conn: Conn,
        head: h1::ResponseHead,
        pooled: bool,
    ) -> Response<PooledBody> {
        let mut resp = self.response_head(&head);
        let stream = conn::Stream::new(
            conn,
            head.framing,
            head.reusable,
            pooled.then(|| self.clone()),
        );
        *resp.headers_mut() = head.headers;
        resp.map(|()| {
            PooledBody::new(
                stream,
                self.settings.body_idle_timeout,
                self.body_errors.clone(),
            )
        })
    }

    fn take_idle(&self) -> Option<Conn> {
        let mut idle = self.idle.lock().ok()?;
        let now = Instant::now();
        while let Some(mut c) = idle.pop() {
            if now.duration_since(c.since) < self.settings.idle_timeout && c.conn.is_usable() {
                return Some(c.conn);
            }
        }
        None
    }

    /// Hands a connection back after its response ended cleanly.
    pub(crate) fn put(&self, conn: Conn) {
        if let Ok(mut idle) = self.idle.lock() {
            let now = Instant::now();
            let ttl = self.settings.idle_timeout;
            // Expired connections sit at the bottom (oldest first): drop them there.
            let expired = idle
                .iter()
                .take_while(|c| now.duration_since(c.since) >= ttl)
                .count();
            if expired > 0 {
                idle.drain(..expired);
            }
            if idle.len() < self.settings.max_idle {
                idle.push(Idle { conn, since: now });
            }
        }
    }

    /// Drops every idle connection (used on drain).
    pub fn clear(&self) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.clear();
        }
    }

    async fn connect(&self) -> Result<Conn, UpstreamError> {
        let stream = tokio::time::timeout(
            self.settings.connect_timeout,
            TcpStream::connect(self.settings.addr.as_str()),
        )
        .await
        .map_err(|_| UpstreamError::ConnectTimeout)?
        .map_err(UpstreamError::Connect)?;
        stream.set_nodelay(true).map_err(UpstreamError::Connect)?;
        Ok(Conn::new(stream, self.open.clone()))
    }
}
