//! sluice's HTTP/1.1 server: one client connection, request after request.
//!
//! Per request: read the head ([`crate::h1::server`]), hand the request to the request
//! path with a body that reads from this connection as it is polled, watch for the
//! client hanging up while the answer is prepared, write the response head and body
//! (the head and a body that is already there go out in one write), then make sure the
//! request body was read to its end before reading the next head.
//!
//! What an idle connection holds is small: no read buffer (it is given back whenever it
//! is empty), no write buffer, no request state; and it costs no timer work per request
//! (one timer per connection, moved only when it fires early).
//!
//! Timeouts: `header_read_timeout` from the first byte of a request to the end of its
//! head (and for a new connection's first request, from the accept); `idle_timeout`
//! between a response and the next request's first byte.

use super::body::{BodyState, ClientBody, Http1Body};
use super::Drain;
use crate::h1::body::Framing;
use crate::h1::server::{
    self, encode_response_head, response_framing, Limits, Persist, RequestError, RequestHead,
    ResponseFraming, ResponseInfo,
};
use crate::proxy::{self, ResponseBody, Worker};
use crate::upstream::Tunnel;
use bytes::{Bytes, BytesMut};
use http::{Method, Response, StatusCode, Version};
use http_body::Body;
use http_body_util::Either;
use std::future::{poll_fn, Future};
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

/// Room kept free in the read buffer before each read.
const READ_CHUNK: usize = 8 * 1024;
/// An unread request body up to this size is read and dropped after the response so
/// that the connection stays usable; a larger one closes it.
const DRAIN_LIMIT: u64 = 256 * 1024;
/// How long a closing connection keeps reading (and dropping) what the client still
/// sends, so that its unread bytes do not turn the close into a reset that could destroy
/// the response on its way.
const LINGER: Duration = Duration::from_secs(1);

/// HTTP/1.1 serving settings, from `[listener]`.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    pub limits: Limits,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
}

/// The connection's two halves, shared with the request body it is reading.
pub struct Client {
    pub(super) rd: Mutex<ReadSide>,
    wr: OwnedWriteHalf,
}

/// The read half, what has been read and not yet used, and the request body's state.
pub struct ReadSide {
    io: OwnedReadHalf,
    pub(super) buf: BytesMut,
    pub(super) body: BodyState,
}

impl ReadSide {
    /// Reads more into the buffer; `Ok(0)` at end of file.
    pub(super) fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.buf.capacity() == 0 {
            // An idle connection holds no buffer: wait until there is something to read.
            std::task::ready!(self.io.as_ref().poll_read_ready(cx))?;
        }
        if self.buf.capacity() - self.buf.len() < READ_CHUNK / 4 {
            self.buf.reserve(READ_CHUNK);
        }
        pin!(self.io.read_buf(&mut self.buf)).poll(cx)
    }
}

impl Client {
    /// Writes `CONTINUE` whole, or nothing (it is tiny: a fresh socket always takes it).
    pub(super) fn try_write_continue(
        &self,
        cx: &mut Context<'_>,
        bytes: &[u8],
    ) -> Poll<io::Result<()>> {
        loop {
            match self.wr.try_write(bytes) {
                Ok(n) if n == bytes.len() => return Poll::Ready(Ok(())),
                Ok(_) => return Poll::Ready(Err(io::Error::other("short write of 100 Continue"))),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::task::ready!(self.wr.as_ref().poll_write_ready(cx))?;
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    /// Writes every byte of `bufs`.
    async fn write_all(&self, bufs: &mut [IoSlice<'_>]) -> io::Result<()> {
        let mut bufs = bufs;
        loop {
            // Empty slices are dropped first: a write of nothing writes 0 bytes.
            while bufs.first().is_some_and(|b| b.is_empty()) {
                bufs = &mut bufs[1..];
            }
            if bufs.is_empty() {
                break;
            }
            match self.wr.try_write_vectored(bufs) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => IoSlice::advance_slices(&mut bufs, n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.wr.writable().await?,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    async fn write(&self, bytes: &[u8]) -> io::Result<()> {
        self.write_all(&mut [IoSlice::new(bytes)]).await
    }
}

/// What ended the wait for a request head.
// Made and matched once per request, never stored: boxing the head would cost more.
#[allow(clippy::large_enum_variant)]
enum Wait {
    Head(RequestHead),
    Refused(RequestError),
    /// The client closed, the connection failed, a timeout ran out, or a drain began.
    Done,
}

/// A header-read and idle timer per connection. Deadlines only ever need to move later
/// in the common case (one request after another), so the timer is left where it is and
/// moved only when it fires before the deadline that now applies.
struct Timer(Option<Pin<Box<Sleep>>>);

impl Timer {
    /// Ready once `deadline` has passed.
    fn poll_expired(&mut self, cx: &mut Context<'_>, deadline: Instant) -> Poll<()> {
        let sleep = self
            .0
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if sleep.deadline() > deadline {
            sleep.as_mut().reset(deadline);
        }
        loop {
            std::task::ready!(sleep.as_mut().poll(cx));
            if Instant::now() >= deadline {
                return Poll::Ready(());
            }
            sleep.as_mut().reset(deadline);
        }
    }
}

/// Serves one client connection until it closes, a timeout runs out, or a drain asks it
/// to finish.
pub async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    worker: Arc<Worker>,
    settings: Settings,
    mut drain: Drain,
) {
    let (io, wr) = stream.into_split();
    let client = Arc::new(Client {
        rd: Mutex::new(ReadSide {
            io,
            buf: BytesMut::new(),
            body: BodyState::new(Framing::Empty, false),
        }),
        wr,
    });
    let mut timer = Timer(None);
    // The listener saw this connection's first bytes already.
    let mut head_started = Some(Instant::now());
    loop {
        let idle_since = Instant::now();
        let head = match next_head(
            &client,
            settings,
            &mut timer,
            &mut drain,
            &mut head_started,
            idle_since,
        )
        .await
        {
            Wait::Head(head) => head,
            Wait::Refused(e) => {
                tracing::debug!(%peer, error = %e, "refused a request head");
                let reply = server::refusal(e.status(), &worker.date.now());
                Box::pin(async {
                    let _ = client.write(&reply).await;
                    linger(client).await;
                })
                .await;
                return;
            }
            Wait::Done => return,
        };
        head_started = None;
        // Boxed: what an exchange holds (the request head, the response body, the write
        // buffer) is only allocated while there is one, not for every idle connection.
        match Box::pin(exchange(&client, head, peer, &worker, &mut drain)).await {
            Next::KeepAlive => {}
            Next::Close => {
                Box::pin(linger(client)).await;
                return;
            }
            Next::Gone => return,
            Next::Upgraded(tunnel) => {
                Box::pin(splice(tunnel, client)).await;
                return;
            }
        }
        // An empty buffer is given back while the connection idles.
        if let Ok(mut rd) = client.rd.lock() {
            if rd.buf.is_empty() {
                rd.buf = BytesMut::new();
            }
        }
    }
}

/// Waits for the next request head. `head_started` is when its first byte arrived.
async fn next_head(
    client: &Client,
    settings: Settings,
    timer: &mut Timer,
    drain: &mut Drain,
    head_started: &mut Option<Instant>,
    idle_since: Instant,
) -> Wait {
    poll_fn(|cx| {
        let Ok(mut rd) = client.rd.lock() else {
            return Poll::Ready(Wait::Done);
        };
        loop {
            if !rd.buf.is_empty() {
                head_started.get_or_insert_with(Instant::now);
                match server::parse_request(&mut rd.buf, settings.limits) {
                    Ok(Some(head)) => return Poll::Ready(Wait::Head(head)),
                    Ok(None) => {}
                    Err(e) => return Poll::Ready(Wait::Refused(e)),
                }
            } else if drain.poll_fired(cx) {
                // Idle between requests: a drain closes the connection at once.
                return Poll::Ready(Wait::Done);
            }
            match rd.poll_fill(cx) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Poll::Ready(Wait::Done),
                Poll::Ready(Ok(_)) => continue,
                Poll::Pending => break,
            }
        }
        let deadline = match head_started {
            Some(t) => *t + settings.header_read_timeout,
            None => idle_since + settings.idle_timeout,
        };
        match timer.poll_expired(cx, deadline) {
            Poll::Ready(()) => Poll::Ready(Wait::Done),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

/// What the connection does after one exchange.
enum Next {
    KeepAlive,
    /// Close after what was written (the client or sluice asked, or the framing needs it).
    Close,
    /// The client went away, or writing to it failed: nothing more to do.
    Gone,
    Upgraded(Tunnel),
}

/// One request and its response.
async fn exchange(
    client: &Arc<Client>,
    head: RequestHead,
    peer: SocketAddr,
    worker: &Arc<Worker>,
    drain: &mut Drain,
) -> Next {
    let RequestHead {
        parts,
        framing,
        keep_alive,
        expect_continue,
    } = head;
    let head_request = parts.method == Method::HEAD;
    let version = parts.version;
    let trailers_ok = crate::h1::accepts_trailers(&parts.headers);
    if let Ok(mut rd) = client.rd.lock() {
        rd.body = BodyState::new(framing, expect_continue);
    }
    let has_body = framing != Framing::Empty;
    let body = ClientBody::Http1(Http1Body::new(has_body.then(|| client.clone())));
    let req = http::Request::from_parts(parts, body);
    // Boxed: the request path's future is large, and an idle connection's task should
    // not carry its size.
    let handling = Box::pin(proxy::handle(worker.clone(), req, peer));
    let Some(resp) = answer_unless_gone(client, handling).await else {
        return Next::Gone;
    };
    let (mut parts, body) = resp.into_parts();
    if parts.status == StatusCode::SWITCHING_PROTOCOLS {
        if let Either::Left(mut pooled) = body {
            if let Some(tunnel) = pooled.take_tunnel() {
                let mut out = Vec::with_capacity(256);
                let framing = (ResponseFraming::None, false);
                encode_response_head(
                    parts.status,
                    &parts.headers,
                    framing,
                    Persist::Default,
                    b"",
                    &mut out,
                );
                if client.write(&out).await.is_err() {
                    return Next::Gone;
                }
                return Next::Upgraded(tunnel);
            }
        }
        // A 101 with nothing to splice (not an upgrade sluice forwarded): not sent on.
        parts.status = StatusCode::BAD_GATEWAY;
        let reply = server::refusal(parts.status, &worker.date.now());
        let _ = client.write(&reply).await;
        return Next::Close;
    }
    let exact = if body.is_end_stream() {
        Some(0)
    } else {
        body.size_hint().exact()
    };
    let info = ResponseInfo {
        status: parts.status,
        head_request,
        client_version: version,
        exact,
    };
    let framing = response_framing(&parts.headers, info);
    let (body_done, continue_owed) = client.rd.lock().map_or((false, false), |rd| {
        (rd.body.is_done(), rd.body.continue_due)
    });
    let draining = drain.fired_now();
    // A client still waiting for `100 Continue` may or may not send its body now; a body
    // too big to read and drop is not worth waiting for.
    let drainable = body_done || (!continue_owed && unread_fits(client));
    let keep = keep_alive && !draining && drainable && framing.0 != ResponseFraming::Close;
    let persist = match (keep, version) {
        (false, _) => Persist::Close,
        (true, Version::HTTP_10) => Persist::KeepAlive,
        (true, _) => Persist::Default,
    };
    let mut out = Vec::with_capacity(192 + 48 * parts.headers.len());
    encode_response_head(
        parts.status,
        &parts.headers,
        framing,
        persist,
        &worker.date.now(),
        &mut out,
    );
    let sent = match framing.0 {
        ResponseFraming::None => client.write(&out).await.map(|()| true),
        f => send_body(client, out, body, f, trailers_ok).await,
    };
    match sent {
        Err(_) => return Next::Gone,
        Ok(false) => return Next::Close,
        Ok(true) => {}
    }
    if !keep {
        return Next::Close;
    }
    if !body_done && !drain_body(client).await {
        return Next::Close;
    }
    Next::KeepAlive
}

/// Whether the rest of the request body is small enough to read and drop.
fn unread_fits(client: &Client) -> bool {
    client.rd.lock().is_ok_and(|rd| {
        !rd.body.failed
            && rd
                .body
                .decoder
                .remaining()
                .is_some_and(|n| n <= DRAIN_LIMIT)
    })
}

/// Runs the request path while watching for the client hanging up; `None` when it did
/// (the request path's future is dropped: a queued request leaves its queue).
async fn answer_unless_gone<F>(
    client: &Client,
    handling: Pin<Box<F>>,
) -> Option<Response<ResponseBody>>
where
    F: Future<Output = Result<Response<ResponseBody>, std::convert::Infallible>>,
{
    let mut handling = handling;
    poll_fn(|cx| {
        if let Poll::Ready(Ok(resp)) = handling.as_mut().poll(cx) {
            return Poll::Ready(Some(resp));
        }
        // While the body is being read, its reader sees a hang-up; after it, look here.
        // Bytes that arrive meanwhile (a pipelined request) wait in the buffer.
        if let Ok(mut rd) = client.rd.lock() {
            if rd.body.is_done() && rd.buf.len() < READ_CHUNK * 8 {
                match rd.poll_fill(cx) {
                    Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Poll::Ready(None),
                    Poll::Ready(Ok(_)) => cx.waker().wake_by_ref(),
                    Poll::Pending => {}
                }
            }
        }
        Poll::Pending
    })
    .await
}

/// Writes the head and the body in the chosen framing. `Ok(false)`: the body broke or
/// ran short, so the connection must close (the client sees a cut-off response).
async fn send_body(
    client: &Client,
    head: Vec<u8>,
    body: ResponseBody,
    framing: ResponseFraming,
    trailers_ok: bool,
) -> io::Result<bool> {
    let mut body = pin!(body);
    let mut head = Some(head);
    let mut left = match framing {
        ResponseFraming::Length(n) => Some(n),
        _ => None,
    };
    let chunked = framing == ResponseFraming::Chunked;
    loop {
        // Only wait for the body once the head is out.
        let frame = match head {
            Some(_) => match poll_fn(|cx| Poll::Ready(body.as_mut().poll_frame(cx))).await {
                Poll::Ready(f) => f,
                Poll::Pending => {
                    if let Some(h) = head.take() {
                        client.write(&h).await?;
                    }
                    continue;
                }
            },
            None => poll_fn(|cx| body.as_mut().poll_frame(cx)).await,
        };
        let pending_head = head.take().unwrap_or_default();
        match frame {
            None => {
                let ended = left.is_none_or(|n| n == 0);
                let tail: &[u8] = if chunked { b"0\r\n\r\n" } else { b"" };
                client
                    .write_all(&mut [IoSlice::new(&pending_head), IoSlice::new(tail)])
                    .await?;
                return Ok(ended);
            }
            Some(Err(e)) => {
                tracing::debug!(error = %e, "response body failed; closing the connection");
                client.write(&pending_head).await?;
                return Ok(false);
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    let data = match left.as_mut() {
                        Some(n) => {
                            let take = usize::try_from(*n).unwrap_or(usize::MAX).min(data.len());
                            *n -= take as u64;
                            data.slice(..take)
                        }
                        None => data,
                    };
                    if chunked && !data.is_empty() {
                        let size = crate::h1::client::chunk_size_line(data.len());
                        let mut bufs = [
                            IoSlice::new(&pending_head),
                            IoSlice::new(&size),
                            IoSlice::new(&data),
                            IoSlice::new(b"\r\n"),
                        ];
                        client.write_all(&mut bufs).await?;
                    } else {
                        client
                            .write_all(&mut [IoSlice::new(&pending_head), IoSlice::new(&data)])
                            .await?;
                    }
                }
                Err(frame) => {
                    if let (true, Ok(t)) = (chunked, frame.into_trailers()) {
                        let tail = crate::h1::client::last_chunk(trailers_ok.then_some(&t));
                        client
                            .write_all(&mut [IoSlice::new(&pending_head), IoSlice::new(&tail)])
                            .await?;
                        return Ok(true);
                    }
                    client.write(&pending_head).await?;
                }
            },
        }
    }
}

/// Reads and drops the rest of a request body the request path did not read (a request
/// refused before it was forwarded, or answered early), up to [`DRAIN_LIMIT`].
/// `false`: it could not be read whole; the connection closes.
async fn drain_body(client: &Arc<Client>) -> bool {
    let mut body = pin!(ClientBody::Http1(Http1Body::new(Some(client.clone()))));
    let mut read = 0u64;
    let whole = tokio::time::timeout(LINGER, async {
        while let Some(frame) = poll_fn(|cx| body.as_mut().poll_frame(cx)).await {
            match frame {
                Ok(f) => {
                    read += f.data_ref().map_or(0, |d| d.len() as u64);
                    if read > DRAIN_LIMIT {
                        return false;
                    }
                }
                Err(_) => return false,
            }
        }
        true
    })
    .await;
    whole.unwrap_or(false)
}

/// Closes the write side, then reads and drops what the client still sends for a
/// moment, so that the close does not reset the connection under the last response.
async fn linger(client: Arc<Client>) {
    let Ok(client) = Arc::try_unwrap(client) else {
        return;
    };
    let Ok(rd) = client.rd.into_inner() else {
        return;
    };
    let Ok(mut stream) = rd.io.reunite(client.wr) else {
        return;
    };
    let _ = tokio::io::AsyncWriteExt::shutdown(&mut stream).await;
    let _ = tokio::time::timeout(LINGER, async {
        let mut sink = [0u8; 4096];
        let mut total = 0usize;
        while let Ok(n) = stream.read(&mut sink).await {
            total += n;
            if n == 0 || total > DRAIN_LIMIT as usize {
                break;
            }
        }
    })
    .await;
}

/// Splices the client's connection (and what it sent after its request head) with the
/// app's, after `101 Switching Protocols`.
async fn splice(tunnel: Tunnel, client: Arc<Client>) {
    let Ok(client) = Arc::try_unwrap(client) else {
        return;
    };
    let Ok(rd) = client.rd.into_inner() else {
        return;
    };
    let early: Bytes = rd.buf.freeze();
    let Ok(mut stream) = rd.io.reunite(client.wr) else {
        return;
    };
    if let Err(e) = tunnel.splice(&mut stream, early).await {
        tracing::debug!(error = %e, "upgraded connection ended");
    }
}

/// `Date` header values, made once a second per worker.
#[derive(Debug, Default)]
pub struct DateCache(Mutex<(u64, Bytes)>);

impl DateCache {
    pub fn now(&self) -> Bytes {
        let now = std::time::SystemTime::now();
        let secs = now
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let Ok(mut cached) = self.0.lock() else {
            return Bytes::new();
        };
        if cached.0 != secs || cached.1.is_empty() {
            *cached = (secs, Bytes::from(httpdate::fmt_http_date(now)));
        }
        cached.1.clone()
    }
}
