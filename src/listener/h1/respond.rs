//! Writing a response, and reading away a request body nobody read.

use super::conn::Client;
use super::{DRAIN_LIMIT, LINGER};
use crate::h1::server::ResponseFraming;
use crate::listener::body::{ClientBody, Http1Body};
use crate::proxy::ResponseBody;
use http_body::Body;
use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;

/// Body frames up to this size are copied behind the head and sent with it: the copy
/// costs less than the kernel's extra work for a vectored write.
const COALESCE: usize = 4 * 1024;

/// Writes the head and the body in the chosen framing. `Ok(false)`: the body broke or
/// ran short, so the connection must close (the client sees a cut-off response).
pub(super) async fn send_body(
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
        let mut pending_head = head.take().unwrap_or_default();
        match frame {
            None => {
                let ended = left.is_none_or(|n| n == 0);
                let tail: &[u8] = if chunked { b"0\r\n\r\n" } else { b"" };
                if pending_head.is_empty() {
                    client.write(tail).await?;
                } else {
                    pending_head.extend_from_slice(tail);
                    client.write(&pending_head).await?;
                }
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
                    if !pending_head.is_empty() && data.len() <= COALESCE {
                        // A small body rides in the head's buffer: one send(2), not a
                        // writev(2) of two or four pieces.
                        if chunked && !data.is_empty() {
                            let size = crate::h1::client::chunk_size_line(data.len());
                            pending_head.extend_from_slice(&size);
                            pending_head.extend_from_slice(&data);
                            pending_head.extend_from_slice(b"\r\n");
                        } else {
                            pending_head.extend_from_slice(&data);
                        }
                        client.write(&pending_head).await?;
                    } else if chunked && !data.is_empty() {
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
pub(super) async fn drain_body(client: &Arc<Client>) -> bool {
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
