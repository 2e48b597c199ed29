//! A body wrapper that fails a stream stalled for longer than an idle timeout, used for
//! request bodies (client → app) and response bodies (app → client) alike.

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

/// The body stalled for longer than `body_idle_timeout_ms`.
#[derive(Debug, thiserror::Error)]
#[error("body idle for longer than {0:?}")]
pub struct BodyIdleTimeout(pub Duration);

pin_project_lite::pin_project! {
    /// `inner`, failing with [`BodyIdleTimeout`] when no frame arrives for `timeout`.
    ///
    /// The clock starts at the first poll, and the timer exists only once the body has
    /// had to wait: an empty body (never polled) or one that is ready whenever it is
    /// polled (most responses of a fast app) costs neither a clock read at creation nor
    /// timer registration.
    pub struct IdleTimeout<B> {
        #[pin]
        inner: B,
        // Boxed: the body (and every request and response that carries it) stays small
        // and cheap to move; the box is only made when the body has to wait.
        idle: Option<Pin<Box<Sleep>>>,
        last_activity: Option<Instant>,
        timeout: Duration,
    }
}

impl<B> IdleTimeout<B> {
    pub fn new(inner: B, timeout: Duration) -> IdleTimeout<B> {
        IdleTimeout {
            inner,
            idle: None,
            last_activity: None,
            timeout,
        }
    }
}

impl<B> Body for IdleTimeout<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let mut this = self.project();
        match this.inner.as_mut().poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                // The last frame needs no clock: nothing is waited for after it.
                if !this.inner.is_end_stream() {
                    *this.last_activity = Some(Instant::now());
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                let last = *this.last_activity.get_or_insert_with(Instant::now);
                let idle = this.idle.get_or_insert_with(|| {
                    Box::pin(tokio::time::sleep_until(last + *this.timeout))
                });
                loop {
                    // The timer is re-armed lazily: only when it fires do we look at the
                    // last activity, so a busy stream costs no timer work per frame.
                    ready!(idle.as_mut().poll(cx));
                    let deadline = this.last_activity.unwrap_or(last) + *this.timeout;
                    if Instant::now() >= deadline {
                        return Poll::Ready(Some(Err(Box::new(BodyIdleTimeout(*this.timeout)))));
                    }
                    idle.as_mut().reset(deadline);
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use tokio::sync::mpsc;

    /// A body fed by a channel, frame by frame.
    struct Channel(mpsc::Receiver<Bytes>);

    impl Body for Channel {
        type Data = Bytes;
        type Error = std::io::Error;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
            self.0.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_body_fails_after_the_idle_timeout_and_a_steady_one_does_not() {
        let (tx, rx) = mpsc::channel(4);
        let body = IdleTimeout::new(Channel(rx), Duration::from_secs(1));
        let mut body = std::pin::pin!(body);
        // A frame every 900 ms keeps it alive for longer than the timeout in total.
        for _ in 0..3 {
            tokio::time::advance(Duration::from_millis(900)).await;
            assert!(tx.send(Bytes::from_static(b"x")).await.is_ok());
            assert!(matches!(body.frame().await, Some(Ok(_))));
        }
        let start = Instant::now();
        let err = body
            .frame()
            .await
            .and_then(Result::err)
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("idle"), "{err}");
        assert_eq!(start.elapsed(), Duration::from_secs(1));
        drop(tx);
    }
}
