//! The upstream response body as streamed to the client: frames pass through as they
//! arrive (nothing is buffered whole), a stall longer than the body idle timeout ends the
//! stream with an error, and a cleanly finished body returns its connection to the pool.

use super::{Pool, UpstreamBody};
use crate::admission::Permit;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

/// The response body stalled for longer than `body_idle_timeout_ms`.
#[derive(Debug, thiserror::Error)]
#[error("upstream response body idle for longer than {0:?}")]
pub struct BodyIdleTimeout(pub Duration);

pin_project_lite::pin_project! {
    /// An upstream response body tied to its pooled connection.
    pub struct PooledBody {
        #[pin]
        inner: Incoming,
        #[pin]
        idle: Sleep,
        last_activity: Instant,
        timeout: Duration,
        conn: Option<(Arc<Pool>, SendRequest<UpstreamBody>)>,
        // The admission slot this response occupies, freed when the body ends.
        permit: Option<Permit>,
    }
}

impl PooledBody {
    pub(crate) fn new(
        inner: Incoming,
        pool: Arc<Pool>,
        sender: SendRequest<UpstreamBody>,
        timeout: Duration,
    ) -> PooledBody {
        Self::with_conn(inner, Some((pool, sender)), timeout)
    }

    /// A body whose connection is not pooled (an upgrade's dedicated connection).
    pub(crate) fn unpooled(inner: Incoming, timeout: Duration) -> PooledBody {
        Self::with_conn(inner, None, timeout)
    }

    fn with_conn(
        inner: Incoming,
        conn: Option<(Arc<Pool>, SendRequest<UpstreamBody>)>,
        timeout: Duration,
    ) -> PooledBody {
        let now = Instant::now();
        let done = inner.is_end_stream();
        let mut body = PooledBody {
            inner,
            idle: tokio::time::sleep_until(now + timeout),
            last_activity: now,
            timeout,
            conn,
            permit: None,
        };
        if done {
            release(&mut body.conn);
        }
        body
    }

    /// Keeps `permit` (an admission slot) until the body has been sent or dropped.
    pub fn hold(&mut self, permit: Permit) {
        if !self.inner.is_end_stream() {
            self.permit = Some(permit);
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let mut this = self.project();
        match this.inner.as_mut().poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                *this.last_activity = Instant::now();
                if this.inner.is_end_stream() {
                    release(this.conn);
                    this.permit.take();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(None) => {
                release(this.conn);
                this.permit.take();
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                this.conn.take();
                this.permit.take();
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Pending => loop {
                // The timer is re-armed lazily: only when it fires do we look at the
                // last activity, so a busy stream costs no timer work per frame.
                ready!(this.idle.as_mut().poll(cx));
                let deadline = *this.last_activity + *this.timeout;
                if Instant::now() >= deadline {
                    this.conn.take();
                    this.permit.take();
                    return Poll::Ready(Some(Err(Box::new(BodyIdleTimeout(*this.timeout)))));
                }
                this.idle.as_mut().reset(deadline);
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

fn release(conn: &mut Option<(Arc<Pool>, SendRequest<UpstreamBody>)>) {
    if let Some((pool, sender)) = conn.take() {
        pool.put(sender);
    }
}
