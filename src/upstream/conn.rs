//! One keep-alive TCP connection to the app, and one request/response exchange on it.
//!
//! The exchange runs inside the request's own task: the head is written, the body (if
//! any) is sent while the response head is awaited, and the response body is read by
//! whoever polls it. No connection task, no channel between tasks, no wake-up hand-off:
//! a request to a fast app costs one write and one read on this side.
//!
//! The app may answer before it has read the whole request body (a 401 for an upload,
//! say). Then sending stops, the answer goes to the client, and the connection is not
//! reused, since the app's view of where the request ended is unknown.

use super::{Pool, UpstreamBody};
use crate::h1::body::{Decoded, Decoder, Framing};
use crate::h1::client::{self as h1, Asked, RequestFraming, ResponseHead};
use bytes::{Buf, Bytes, BytesMut};
use http_body::Frame;
use http_body_util::BodyExt;
use prometheus::IntGauge;
use std::future::Future;
use std::io;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// Room kept free in the read buffer before each read.
const READ_CHUNK: usize = 8 * 1024;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// An open connection to the app with its read buffer.
pub struct Conn {
    pub(super) io: TcpStream,
    pub(super) buf: BytesMut,
    /// `sluice_upstream_connections`, decremented when the connection closes.
    open: IntGauge,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.open.dec();
    }
}

/// How an exchange failed, and how far it got (which decides whether a retry is safe).
#[derive(Debug)]
pub enum Failed {
    /// The request head did not reach the app whole: it cannot have been processed.
    NotSent(io::Error),
    /// Sent, then the connection closed or broke before any byte of a response.
    NoResponse(io::Error),
    /// The connection broke in the middle of the response head.
    Broken(io::Error),
    /// The app's response is not valid HTTP/1.1.
    Protocol(h1::HeadError),
    /// The client's request body failed (the client went away or stalled).
    RequestBody(BoxError),
}

enum SendError {
    Client(BoxError),
    Upstream,
}

impl Conn {
    pub fn new(io: TcpStream, open: IntGauge) -> Conn {
        open.inc();
        Conn {
            io,
            buf: BytesMut::new(),
            open,
        }
    }

    /// An idle connection is still fit for a request: the app has neither closed it nor
    /// sent anything unasked. Reads the cached readiness, so the usual answer costs no
    /// system call.
    pub fn is_usable(&mut self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        let mut cx = Context::from_waker(Waker::noop());
        match self.io.poll_read_ready(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            Poll::Ready(Ok(())) => {
                let mut probe = [0u8; 1];
                matches!(self.io.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
        }
    }

    /// Sends one request (`head` already encoded, then `body`) and reads the response
    /// head. The response body is left in `self.buf` and on the socket. `body` is only
    /// taken once the head is written, so a request that was not sent keeps it.
    pub async fn exchange(
        &mut self,
        head: &[u8],
        body: &mut Option<UpstreamBody>,
        framing: RequestFraming,
        asked: Asked,
    ) -> Result<ResponseHead, Failed> {
        self.io.write_all(head).await.map_err(Failed::NotSent)?;
        let Some(body) = body.take() else {
            return read_head(&mut self.io, &mut self.buf, asked).await;
        };
        let (mut rd, mut wr) = self.io.split();
        let mut reading = pin!(read_head(&mut rd, &mut self.buf, asked));
        let sending = send_body(&mut wr, body, framing);
        let sent = tokio::select! {
            biased;
            early = &mut reading => {
                // Answered before the request body was sent whole.
                let mut head = early?;
                head.reusable = false;
                return Ok(head);
            }
            sent = sending => sent,
        };
        match sent {
            Ok(()) => reading.await,
            Err(SendError::Client(e)) => Err(Failed::RequestBody(e)),
            // The app stopped reading: it may have answered already (and closed).
            Err(SendError::Upstream) => {
                let mut head = reading.await?;
                head.reusable = false;
                Ok(head)
            }
        }
    }

    /// Reads more of the response into the buffer; `Ok(0)` at end of file.
    pub fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        reserve(&mut self.buf);
        pin!(self.io.read_buf(&mut self.buf)).poll(cx)
    }

    /// Splices an upgraded connection (after `101 Switching Protocols`) with the
    /// client's: what each side sent after the heads goes to the other first.
    pub async fn splice<C>(mut self, client: &mut C, from_client: Bytes) -> io::Result<(u64, u64)>
    where
        C: AsyncRead + AsyncWrite + Unpin,
    {
        if !from_client.is_empty() {
            self.io.write_all(&from_client).await?;
        }
        if !self.buf.is_empty() {
            let from_app = self.buf.split().freeze();
            client.write_all(&from_app).await?;
        }
        tokio::io::copy_bidirectional(client, &mut self.io).await
    }
}

fn reserve(buf: &mut BytesMut) {
    if buf.capacity() - buf.len() < READ_CHUNK / 4 {
        buf.reserve(READ_CHUNK);
    }
}

async fn read_head<R: AsyncRead + Unpin>(
    rd: &mut R,
    buf: &mut BytesMut,
    asked: Asked,
) -> Result<ResponseHead, Failed> {
    let mut answered = false;
    loop {
        if !buf.is_empty() {
            if let Some(head) = h1::parse_response(buf, asked).map_err(Failed::Protocol)? {
                return Ok(head);
            }
        }
        reserve(buf);
        let read = rd.read_buf(buf).await;
        let broke = |e: io::Error| {
            if answered {
                Failed::Broken(e)
            } else {
                Failed::NoResponse(e)
            }
        };
        match read {
            Ok(0) => return Err(broke(io::ErrorKind::UnexpectedEof.into())),
            Ok(_) => answered = true,
            Err(e) => return Err(broke(e)),
        }
    }
}

async fn send_body<W: AsyncWrite + Unpin>(
    wr: &mut W,
    body: UpstreamBody,
    framing: RequestFraming,
) -> Result<(), SendError> {
    let mut body = pin!(body);
    let mut trailers = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(SendError::Client)?;
        let data = match frame.into_data() {
            Ok(data) => data,
            Err(frame) => {
                trailers = frame.into_trailers().ok();
                continue;
            }
        };
        if data.is_empty() {
            continue;
        }
        let written = match framing {
            RequestFraming::Chunked => {
                let mut chunk = h1::chunk_size_line(data.len())
                    .chain(data)
                    .chain(Bytes::from_static(b"\r\n"));
                wr.write_all_buf(&mut chunk).await
            }
            RequestFraming::Length(_) | RequestFraming::Empty => wr.write_all(&data).await,
        };
        written.map_err(|_| SendError::Upstream)?;
    }
    if framing == RequestFraming::Chunked {
        wr.write_all(&h1::last_chunk(trailers.as_ref()))
            .await
            .map_err(|_| SendError::Upstream)?;
    }
    Ok(())
}

/// A response body read from its connection as it is polled, handing the connection
/// back to `pool` when the body ended cleanly and the connection is reusable.
pub struct Stream {
    conn: Option<Conn>,
    decoder: Decoder,
    reusable: bool,
    pool: Option<Arc<Pool>>,
}

impl Stream {
    pub fn new(conn: Conn, framing: Framing, reusable: bool, pool: Option<Arc<Pool>>) -> Stream {
        let mut stream = Stream {
            conn: Some(conn),
            decoder: Decoder::new(framing),
            reusable,
            pool,
        };
        if stream.decoder.is_done() {
            stream.finish();
        }
        stream
    }

    fn finish(&mut self) {
        if let (Some(conn), Some(pool)) = (self.conn.take(), self.pool.as_ref()) {
            if self.reusable && conn.buf.is_empty() {
                pool.put(conn);
            }
        }
    }

    /// The next frame: decoded from what is buffered, reading more when that runs out.
    pub fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        loop {
            let Some(conn) = self.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match self.decoder.decode(&mut conn.buf) {
                Ok(Decoded::Data(data)) => {
                    if self.decoder.is_done() {
                        self.finish();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Ok(Decoded::Trailers(t)) => {
                    self.finish();
                    return Poll::Ready(Some(Ok(Frame::trailers(t))));
                }
                Ok(Decoded::End) => {
                    self.finish();
                    return Poll::Ready(None);
                }
                Ok(Decoded::More) => {}
                Err(e) => {
                    self.conn = None;
                    return Poll::Ready(Some(Err(Box::new(e))));
                }
            }
            match conn.poll_fill(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0)) => {
                    // End of file ends a close-delimited body; the connection is spent.
                    self.conn = None;
                    return match self.decoder.eof() {
                        Ok(_) => Poll::Ready(None),
                        Err(e) => Poll::Ready(Some(Err(Box::new(e)))),
                    };
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => {
                    self.conn = None;
                    return Poll::Ready(Some(Err(Box::new(e))));
                }
            }
        }
    }

    pub fn is_end_stream(&self) -> bool {
        self.conn.is_none() || self.decoder.is_done()
    }

    /// Bytes of body still to come, when known.
    pub fn remaining(&self) -> Option<u64> {
        if self.conn.is_none() {
            return Some(0);
        }
        self.decoder.remaining()
    }
}
