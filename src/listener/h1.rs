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

mod conn;
mod respond;

pub use conn::{Client, DateCache, ReadSide};

use super::body::{BodyState, ClientBody, Http1Body};
use super::Drain;
use crate::h1::body::Framing;
use crate::h1::server::{
    self, encode_response_head, response_framing, Limits, Persist, RequestError, RequestHead,
    ResponseFraming, ResponseInfo,
};
use crate::proxy::{self, ResponseBody, Worker};
use crate::upstream::Tunnel;
use bytes::BytesMut;
use conn::{linger, splice, Timer};
use http::{Method, Response, StatusCode, Version};
use http_body::Body;
use http_body_util::Either;
use respond::{drain_body, send_body};
use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::time::Instant;

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

/// What ended the wait for a request head.
// Made and matched once per request, never stored: boxing the head would cost more.
#[allow(clippy::large_enum_variant)]
enum Wait {
    Head(RequestHead),
    Refused(RequestError),
    /// The client closed, the connection failed, a timeout ran out, or a drain began.
    Done,
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
    let client = Arc::new(Client::new(stream));
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
                Box::pin(splice(tunnel, client, &mut drain)).await;
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
