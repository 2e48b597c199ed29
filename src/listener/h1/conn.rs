//! One client connection's I/O: the halves shared with the request body reading from it,
//! writes through `&self`, the per-connection timer, the lingering close, the splice of
//! an upgraded connection, and the cached `Date`.

use super::{DRAIN_LIMIT, LINGER, READ_CHUNK};
use crate::listener::body::BodyState;
use crate::listener::Drain;
use crate::upstream::Tunnel;
use bytes::{Bytes, BytesMut};
use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::{pin, Pin};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::io::AsyncReadExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

/// The connection's two halves, shared with the request body it is reading.
pub struct Client {
    pub(in crate::listener) rd: Mutex<ReadSide>,
    wr: OwnedWriteHalf,
}

/// The read half, what has been read and not yet used, and the request body's state.
pub struct ReadSide {
    io: OwnedReadHalf,
    pub(in crate::listener) buf: BytesMut,
    pub(in crate::listener) body: BodyState,
}

impl ReadSide {
    /// Reads more into the buffer; `Ok(0)` at end of file.
    pub(in crate::listener) fn poll_fill(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<usize>> {
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
    /// Splits `stream` into the halves the connection and its request bodies share.
    pub(super) fn new(stream: TcpStream) -> Client {
        let (io, wr) = stream.into_split();
        Client {
            rd: Mutex::new(ReadSide {
                io,
                buf: BytesMut::new(),
                body: BodyState::new(crate::h1::body::Framing::Empty, false),
            }),
            wr,
        }
    }

    /// Writes `CONTINUE` whole, or nothing (it is tiny: a fresh socket always takes it).
    pub(in crate::listener) fn try_write_continue(
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
    pub(super) async fn write_all(&self, bufs: &mut [IoSlice<'_>]) -> io::Result<()> {
        let mut bufs = bufs;
        loop {
            // Empty slices are dropped first: a write of nothing writes 0 bytes.
            while bufs.first().is_some_and(|b| b.is_empty()) {
                bufs = &mut bufs[1..];
            }
            if bufs.is_empty() {
                break;
            }
            // One buffer goes out with send(2): writev(2) costs more in the kernel.
            let written = match bufs {
                [one] => self.wr.try_write(one),
                _ => self.wr.try_write_vectored(bufs),
            };
            match written {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => IoSlice::advance_slices(&mut bufs, n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.wr.writable().await?,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    pub(super) async fn write(&self, bytes: &[u8]) -> io::Result<()> {
        self.write_all(&mut [IoSlice::new(bytes)]).await
    }
}

/// A header-read and idle timer per connection. Deadlines only ever need to move later
/// in the common case (one request after another), so the timer is left where it is and
/// moved only when it fires before the deadline that now applies.
pub(super) struct Timer(pub(super) Option<Pin<Box<Sleep>>>);

impl Timer {
    /// Ready once `deadline` has passed.
    pub(super) fn poll_expired(&mut self, cx: &mut Context<'_>, deadline: Instant) -> Poll<()> {
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

/// Closes the write side, then reads and drops what the client still sends for a
/// moment, so that the close does not reset the connection under the last response.
pub(super) async fn linger(client: Arc<Client>) {
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
///
/// A drain closes it at once: an upgraded connection (a WebSocket) may live for hours,
/// and holding the shutdown for it only delays the client's reconnect to another replica.
pub(super) async fn splice(tunnel: Tunnel, client: Arc<Client>, drain: &mut Drain) {
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
    tokio::select! {
        r = tunnel.splice(&mut stream, early) => {
            if let Err(e) = r {
                tracing::debug!(error = %e, "upgraded connection ended");
            }
        }
        _ = drain.fired() => tracing::debug!("upgraded connection closed by the drain"),
    }
}

/// `Date` header values, made once a second per worker.
#[derive(Debug, Default)]
pub struct DateCache(Mutex<(u64, Bytes)>);

impl DateCache {
    /// The value for this second.
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

    /// Formats this second's value ahead of the next response.
    pub fn refresh(&self) {
        let _ = self.now();
    }
}
