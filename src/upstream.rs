//! The upstream side: a small per-worker pool of HTTP/1.1 keep-alive connections to the
//! app, and the response body that hands its connection back when it is done.
//!
//! Each worker thread owns one [`Pool`]; only that thread touches its idle list, so its
//! mutex is never contended. A connection goes back to the pool only after its response
//! body ended cleanly; a body dropped early closes its connection. A request that was
//! never written to a reused connection (hyper hands it back) is retried once on a fresh
//! one; nothing already sent is ever retried.

mod body;
pub mod health;
mod idle;

pub use body::{Capture, PooledBody};
pub use idle::{BodyIdleTimeout, IdleTimeout};

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use prometheus::{IntCounter, IntGauge};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// What sluice sends upstream: the client's streamed body (failing if the client stalls
/// longer than the body idle timeout), or a body of its own.
pub type UpstreamBody = Either<IdleTimeout<Incoming>, Full<Bytes>>;

/// Why a request could not get a response head from the app.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("connect to upstream failed: {0}")]
    Connect(#[source] std::io::Error),
    #[error("connect to upstream timed out")]
    ConnectTimeout,
    #[error("upstream closed the connection before a response")]
    Closed(#[source] hyper::Error),
    #[error("upstream exchange failed: {0}")]
    Protocol(#[source] hyper::Error),
}

impl UpstreamError {
    fn from_hyper(e: hyper::Error) -> UpstreamError {
        if e.is_incomplete_message() || e.is_closed() || e.is_canceled() {
            UpstreamError::Closed(e)
        } else {
            UpstreamError::Protocol(e)
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
    sender: http1::SendRequest<UpstreamBody>,
    since: Instant,
}

/// One worker's keep-alive connections to the app.
pub struct Pool {
    settings: PoolSettings,
    idle: Mutex<Vec<Idle>>,
    open: IntGauge,
    /// `sluice_upstream_errors_total{kind="body"}`: response bodies that broke or stalled.
    body_errors: IntCounter,
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

    /// A body for a response on a connection that is never pooled (an upgrade's).
    pub fn unpooled_body(&self, inner: Incoming) -> PooledBody {
        PooledBody::unpooled(
            inner,
            self.settings.body_idle_timeout,
            self.body_errors.clone(),
        )
    }

    /// Idle connections held right now.
    pub fn idle_count(&self) -> usize {
        self.idle.lock().map_or(0, |v| v.len())
    }

    /// Sends `req` on a pooled (or new) connection and returns the response head.
    pub async fn send(
        self: &Arc<Self>,
        mut req: Request<UpstreamBody>,
    ) -> Result<Response<PooledBody>, UpstreamError> {
        loop {
            let (mut sender, reused) = match self.take_idle() {
                Some(s) => (s, true),
                None => (self.connect().await?, false),
            };
            match sender.try_send_request(req).await {
                Ok(resp) => {
                    let timeout = self.settings.body_idle_timeout;
                    let errors = self.body_errors.clone();
                    return Ok(
                        resp.map(|b| PooledBody::new(b, self.clone(), sender, timeout, errors))
                    );
                }
                Err(mut e) => match e.take_message() {
                    // Never written: safe to try again on a fresh connection.
                    Some(back) if reused => req = back,
                    _ => return Err(UpstreamError::from_hyper(e.into_error())),
                },
            }
        }
    }

    /// Sends an upgrade request (WebSocket) on a dedicated connection that is never pooled.
    pub async fn send_upgrade(
        &self,
        req: Request<UpstreamBody>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let io = self.dial().await?;
        let (mut sender, conn) = http1::handshake(io)
            .await
            .map_err(UpstreamError::from_hyper)?;
        let open = self.open.clone();
        open.inc();
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
            open.dec();
        });
        sender
            .send_request(req)
            .await
            .map_err(UpstreamError::from_hyper)
    }

    fn take_idle(&self) -> Option<http1::SendRequest<UpstreamBody>> {
        let mut idle = self.idle.lock().ok()?;
        let now = Instant::now();
        while let Some(c) = idle.pop() {
            if c.sender.is_ready() && now.duration_since(c.since) < self.settings.idle_timeout {
                return Some(c.sender);
            }
        }
        None
    }

    /// Hands a connection back after its response ended cleanly.
    pub(crate) fn put(&self, sender: http1::SendRequest<UpstreamBody>) {
        if sender.is_closed() {
            return;
        }
        if let Ok(mut idle) = self.idle.lock() {
            let now = Instant::now();
            let ttl = self.settings.idle_timeout;
            idle.retain(|c| !c.sender.is_closed() && now.duration_since(c.since) < ttl);
            if idle.len() < self.settings.max_idle {
                idle.push(Idle { sender, since: now });
            }
        }
    }

    /// Drops every idle connection (used on drain).
    pub fn clear(&self) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.clear();
        }
    }

    async fn dial(&self) -> Result<TokioIo<TcpStream>, UpstreamError> {
        let stream = tokio::time::timeout(
            self.settings.connect_timeout,
            TcpStream::connect(self.settings.addr.as_str()),
        )
        .await
        .map_err(|_| UpstreamError::ConnectTimeout)?
        .map_err(UpstreamError::Connect)?;
        stream.set_nodelay(true).map_err(UpstreamError::Connect)?;
        Ok(TokioIo::new(stream))
    }

    async fn connect(&self) -> Result<http1::SendRequest<UpstreamBody>, UpstreamError> {
        let io = self.dial().await?;
        let (sender, conn) = http1::handshake(io)
            .await
            .map_err(UpstreamError::from_hyper)?;
        let open = self.open.clone();
        open.inc();
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "upstream connection ended with an error");
            }
            open.dec();
        });
        Ok(sender)
    }
}
