//! A client's request body as the request path sees it: read from the connection by
//! whoever polls it (sluice's HTTP/1.1 server), or hyper's for HTTP/2.

use super::h1::Client;
use crate::h1::body::{Decoded, Decoder, Framing};
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The interim response a client that sent `Expect: 100-continue` waits for.
const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// A request body from either protocol.
pub enum ClientBody {
    Http1(Http1Body),
    Http2(Incoming),
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ClientBody::Http1(b) => b.poll_next(cx),
            ClientBody::Http2(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ClientBody::Http1(b) => b.is_end_stream(),
            ClientBody::Http2(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ClientBody::Http1(b) => b.size_hint(),
            ClientBody::Http2(b) => b.size_hint(),
        }
    }
}

/// Where an HTTP/1.1 request body stands; kept with the connection's read buffer so that
/// the connection can tell, once the response is out, whether the body was read whole.
#[derive(Debug)]
pub struct BodyState {
    pub decoder: Decoder,
    /// `100 Continue` is owed to the client before the first read of the body.
    pub continue_due: bool,
    /// The body failed (bad framing, or the client closed mid-body).
    pub failed: bool,
}

impl BodyState {
    pub fn new(framing: Framing, expect_continue: bool) -> BodyState {
        let decoder = Decoder::new(framing);
        BodyState {
            continue_due: expect_continue && !decoder.is_done(),
            decoder,
            failed: false,
        }
    }

    /// Read to its end (or there was none).
    pub fn is_done(&self) -> bool {
        self.decoder.is_done()
    }
}

/// An HTTP/1.1 request body, read from the client's connection as it is polled.
pub struct Http1Body {
    /// `None` for a request without a body.
    client: Option<Arc<Client>>,
}

impl Http1Body {
    pub fn new(client: Option<Arc<Client>>) -> Http1Body {
        Http1Body { client }
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let Some(client) = self.client.as_ref() else {
            return Poll::Ready(None);
        };
        let Ok(mut rd) = client.rd.lock() else {
            return Poll::Ready(Some(Err("connection state poisoned".into())));
        };
        if rd.body.continue_due {
            // Only now that the body is wanted: a refused request never asks for it.
            match client.try_write_continue(cx, CONTINUE) {
                Poll::Ready(Ok(())) => rd.body.continue_due = false,
                Poll::Ready(Err(e)) => return Poll::Ready(Some(Err(e.into()))),
                Poll::Pending => return Poll::Pending,
            }
        }
        loop {
            let side = &mut *rd;
            match side.body.decoder.decode(&mut side.buf) {
                Ok(Decoded::Data(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                Ok(Decoded::Trailers(t)) => return Poll::Ready(Some(Ok(Frame::trailers(t)))),
                Ok(Decoded::End) => return Poll::Ready(None),
                Ok(Decoded::More) => {}
                Err(e) => {
                    side.body.failed = true;
                    return Poll::Ready(Some(Err(e.into())));
                }
            }
            match side.poll_fill(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0)) => {
                    side.body.failed = true;
                    let e = side.body.decoder.eof().err().map_or_else(
                        || BoxError::from("client closed the connection mid-body"),
                        |e| e.into(),
                    );
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => {
                    side.body.failed = true;
                    return Poll::Ready(Some(Err(e.into())));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.client
            .as_ref()
            .is_none_or(|c| c.rd.lock().is_ok_and(|rd| rd.body.is_done()))
    }

    fn size_hint(&self) -> SizeHint {
        let remaining = match self.client.as_ref() {
            None => Some(0),
            Some(c) => c.rd.lock().ok().and_then(|rd| rd.body.decoder.remaining()),
        };
        remaining.map_or_else(SizeHint::default, SizeHint::with_exact)
    }
}
