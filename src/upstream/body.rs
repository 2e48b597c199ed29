//! The upstream response body as streamed to the client: frames pass through as they
//! arrive (nothing is buffered whole), a stall longer than the body idle timeout ends the
//! stream with an error, and a cleanly finished body returns its connection to the pool
//! (see [`super::conn::Stream`]) and frees its admission slot.

use super::conn::{BoxError, Stream};
use super::idle::IdleTimeout;
use crate::admission::Permit;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use prometheus::IntCounter;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

/// The app's response body, read from its connection as the client takes it. Boxed: a
/// response is moved several times on its way out, and the connection state is most
/// of its size.
pub struct Upstream(Option<Box<Stream>>);

impl Body for Upstream {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut().0.as_mut() {
            Some(s) => s.poll_next(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.0.as_ref().is_none_or(|s| s.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        match self.0.as_ref().map_or(Some(0), |s| s.remaining()) {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

pin_project_lite::pin_project! {
    /// An upstream response body: frames pass through as they arrive, a stall fails it,
    /// and it holds the request's admission slot (and a capture) until it ends.
    pub struct PooledBody {
        #[pin]
        inner: IdleTimeout<Upstream>,
        // The admission slot this response occupies, freed when the body ends.
        permit: Option<Permit>,
        errors: IntCounter,
        // A copy of the body being kept (a last good response), if asked for.
        capture: Option<Box<Capture>>,
        // After a 101: the app's connection, for the client's connection to be spliced to.
        tunnel: Option<Box<super::Tunnel>>,
    }
}

/// Collects a body up to a size limit and hands it to `done` once it ended cleanly.
/// A body over the limit, or one that breaks, is dropped without a call.
pub struct Capture {
    chunks: Vec<Bytes>,
    size: usize,
    limit: usize,
    done: Box<dyn FnOnce(Bytes) + Send>,
}

impl Capture {
    pub fn new(limit: usize, done: Box<dyn FnOnce(Bytes) + Send>) -> Capture {
        Capture {
            chunks: Vec::new(),
            size: 0,
            limit,
            done,
        }
    }

    /// Adds a chunk; `false` once the body is over the limit.
    fn push(&mut self, data: &Bytes) -> bool {
        self.size = self.size.saturating_add(data.len());
        if self.size > self.limit {
            return false;
        }
        self.chunks.push(data.clone());
        true
    }

    fn finish(self) {
        let body = match self.chunks.len() {
            0 => Bytes::new(),
            1 => self.chunks.into_iter().next().unwrap_or_default(),
            _ => Bytes::from(self.chunks.concat()),
        };
        (self.done)(body);
    }
}

impl PooledBody {
    pub(crate) fn new(stream: Stream, timeout: Duration, errors: IntCounter) -> PooledBody {
        Self::of(Upstream(Some(Box::new(stream))), timeout, errors)
    }

    /// A body with nothing in it (a `101 Switching Protocols` response's).
    pub(crate) fn empty(timeout: Duration, errors: IntCounter) -> PooledBody {
        Self::of(Upstream(None), timeout, errors)
    }

    fn of(inner: Upstream, timeout: Duration, errors: IntCounter) -> PooledBody {
        PooledBody {
            inner: IdleTimeout::new(inner, timeout),
            permit: None,
            errors,
            capture: None,
            tunnel: None,
        }
    }

    /// Carries an upgraded connection to the server that splices it.
    pub fn set_tunnel(&mut self, tunnel: super::Tunnel) {
        self.tunnel = Some(Box::new(tunnel));
    }

    pub fn take_tunnel(&mut self) -> Option<super::Tunnel> {
        self.tunnel.take().map(|t| *t)
    }

    /// Keeps a copy of the body as it streams by, for `capture` to store at the end.
    pub fn capture(&mut self, capture: Capture) {
        if self.inner.is_end_stream() {
            capture.finish();
        } else {
            self.capture = Some(Box::new(capture));
        }
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
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let mut this = self.project();
        let polled = this.inner.as_mut().poll_frame(cx);
        if let (Some(c), Poll::Ready(Some(Ok(frame)))) = (this.capture.as_mut(), &polled) {
            if let Some(data) = frame.data_ref() {
                if !c.push(data) {
                    this.capture.take();
                }
            }
        }
        match &polled {
            Poll::Ready(Some(Ok(_))) if this.inner.is_end_stream() => {
                this.permit.take();
                if let Some(c) = this.capture.take() {
                    c.finish();
                }
            }
            Poll::Ready(None) => {
                this.permit.take();
                if let Some(c) = this.capture.take() {
                    c.finish();
                }
            }
            Poll::Ready(Some(Err(_))) => {
                // A broken or stalled body: its connection is already closed.
                this.permit.take();
                this.capture.take();
                this.errors.inc();
            }
            Poll::Ready(Some(Ok(_))) | Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
