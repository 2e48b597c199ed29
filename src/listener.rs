//! Accepting and serving client connections.
//!
//! Each worker thread runs its own current-thread runtime and its own `SO_REUSEPORT`
//! listener on the same address, so the kernel spreads connections across cores and no
//! accept lock is shared. Listener hygiene lives here: a header read timeout, limits on
//! header count and size (hyper answers 431), and one connection cap across all workers
//! (a semaphore: at the cap, workers stop accepting and the kernel backlog holds the rest).
//! On shutdown a worker stops accepting, asks every connection to finish its in-flight
//! requests and close, and waits up to the drain timeout.
//!
//! HTTP/1.1 is served by sluice's own server ([`h1`]), HTTP/2 (h2c, told from the
//! preface with `peek`) by hyper. Memory per idle HTTP/1.1 connection is the task and
//! the socket's registration: buffers exist only while a request is being read or
//! answered.

pub mod body;
pub mod h1;

pub use body::ClientBody;

use crate::proxy::{self, Worker};
use hyper::server::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use socket2::{Domain, Protocol, Socket, Type};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

/// HTTP serving limits, from `[listener]`.
#[derive(Clone, Debug)]
pub struct ServeSettings {
    pub header_read_timeout: Duration,
    /// Longest wait for the next request on a keep-alive connection.
    pub idle_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub http2: bool,
    pub drain_timeout: Duration,
}

/// Binds `count` listening sockets on `addr` with `SO_REUSEPORT`. With port 0 the first
/// socket picks the port and the others join it.
pub fn bind_reuseport(
    addr: SocketAddr,
    count: usize,
) -> std::io::Result<Vec<std::net::TcpListener>> {
    let mut out: Vec<std::net::TcpListener> = Vec::with_capacity(count);
    let mut target = addr;
    for _ in 0..count.max(1) {
        let socket = Socket::new(
            Domain::for_address(target),
            Type::STREAM,
            Some(Protocol::TCP),
        )?;
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        socket.set_nonblocking(true)?;
        socket.set_tcp_nodelay(true)?;
        socket.bind(&target.into())?;
        // A deep backlog: a burst of new connections that overflows it costs each
        // dropped SYN a 1 s retransmission (the kernel caps it at somaxconn).
        socket.listen(4096)?;
        let listener: std::net::TcpListener = socket.into();
        target = listener.local_addr()?;
        out.push(listener);
    }
    Ok(out)
}

/// How one worker serves its connections: sluice's HTTP/1.1 server, and hyper's HTTP/2
/// one when h2c is on.
pub struct Builders {
    http1: h1::Settings,
    http2: Option<http2::Builder<TokioExecutor>>,
}

impl Builders {
    pub fn new(s: &ServeSettings) -> Builders {
        let mut http2 = http2::Builder::new(TokioExecutor::new());
        http2
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(s.max_header_bytes).unwrap_or(u32::MAX))
            .max_concurrent_streams(256);
        Builders {
            http1: h1::Settings {
                limits: crate::h1::server::Limits {
                    max_head_bytes: s.max_header_bytes,
                    max_headers: s.max_headers,
                },
                header_read_timeout: s.header_read_timeout,
                idle_timeout: s.idle_timeout,
            },
            http2: s.http2.then_some(http2),
        }
    }
}

/// The HTTP/2 connection preface (RFC 9113 §3.4), sent first by an h2c client with
/// prior knowledge.
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What a connection's first bytes say it speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sniffed {
    Http1,
    Http2,
    /// A prefix of the HTTP/2 preface, too short to tell.
    Unsure,
    /// The client closed without sending anything.
    Closed,
}

/// Pure: the protocol from the first bytes received (at most 24 are looked at).
fn sniff(first: &[u8]) -> Sniffed {
    let n = first.len().min(H2_PREFACE.len());
    if first.is_empty() {
        Sniffed::Closed
    } else if first[..n] != H2_PREFACE[..n] {
        Sniffed::Http1
    } else if n == H2_PREFACE.len() {
        Sniffed::Http2
    } else {
        Sniffed::Unsure
    }
}

/// Waits for the client's first bytes and tells the protocol from them without consuming
/// them; a cut-short HTTP/2 preface is looked at again as more arrives.
async fn first_bytes(stream: &TcpStream) -> std::io::Result<Sniffed> {
    let mut buf = [0u8; 24];
    loop {
        let n = stream.peek(&mut buf).await?;
        match sniff(&buf[..n]) {
            // Rare (a client that splits the preface): look again shortly. `peek` does
            // not consume, so the socket stays readable and cannot be waited on.
            Sniffed::Unsure => tokio::time::sleep(Duration::from_millis(5)).await,
            decided => return Ok(decided),
        }
    }
}

/// One worker's accept loop; returns when shutdown was asked and connections drained.
pub async fn run(
    listener: std::net::TcpListener,
    worker: Arc<Worker>,
    settings: ServeSettings,
    limit: Arc<Semaphore>,
    mut shutdown: watch::Receiver<bool>,
) {
    let listener = match TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "cannot register listener with the runtime");
            return;
        }
    };
    let builders = Arc::new(Builders::new(&settings));
    let mut conns = JoinSet::new();
    let mut drains = Drains::default();
    // A timer due within a second stays in this worker's timer wheel. Without one, a
    // request's timeout (seconds away) is often the earliest timer when it is set, and
    // tokio's time driver then wakes its own thread to re-arm: an eventfd write and an
    // extra epoll_wait every few dozen requests at full load. The tick also formats the
    // `Date` header value once a second.
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let (stream, peer) = tokio::select! {
            _ = tick.tick() => {
                worker.date.refresh();
                continue;
            }
            // Reap connection tasks as they end: a finished task's memory (the size of
            // its future) stays allocated until it is joined, and waiting for the next
            // accept to join it kept the memory of a burst of closed connections.
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            r = listener.accept() => match r {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stopped(&mut shutdown) => break,
        };
        // Accept first, then wait for a slot: a permit taken before accepting could sit
        // on a worker whose socket gets no connection while another worker's waits.
        // At the cap each worker holds at most one accepted, unserved connection.
        let permit = tokio::select! {
            p = limit.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = stopped(&mut shutdown) => break,
        };
        let _ = stream.set_nodelay(true);
        let worker = worker.clone();
        let builders = builders.clone();
        let header_timeout = settings.header_read_timeout;
        let drain = drains.add(conns.len());
        conns.spawn(async move {
            let _permit = permit;
            let gauge = worker.shared.metrics.downstream_connections.clone();
            gauge.inc();
            serve(stream, peer, worker, &builders, header_timeout, drain).await;
            gauge.dec();
        });
    }
    drop(listener);
    drains.start();
    let drained = tokio::time::timeout(settings.drain_timeout, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            left = conns.len(),
            "drain timeout: closing remaining connections"
        );
        conns.abort_all();
    }
}

/// Serves one client connection until it closes, or until shutdown asks it to finish
/// its in-flight requests. The wait for the first bytes counts against the header read
/// timeout.
async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    worker: Arc<Worker>,
    builders: &Builders,
    header_timeout: Duration,
    mut drain: Drain,
) {
    let sniffed = tokio::select! {
        r = tokio::time::timeout(header_timeout, first_bytes(&stream)) => r,
        // Nothing in flight yet: a drain just closes the connection.
        _ = drain.fired() => return,
    };
    let sniffed = match sniffed {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "client connection failed before a request");
            return;
        }
        Err(_elapsed) => {
            tracing::debug!(%peer, "client sent nothing within the header read timeout");
            return;
        }
    };
    match (sniffed, &builders.http2) {
        (Sniffed::Closed, _) => {}
        (Sniffed::Http2, Some(h2)) => {
            // The request future is boxed per request: hyper keeps a box the size of the
            // service's future for as long as the connection lives.
            let service =
                hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    Box::pin(proxy::handle(
                        worker.clone(),
                        req.map(ClientBody::Http2),
                        peer,
                    ))
                });
            let conn = h2.serve_connection(TokioIo::new(stream), service);
            // Boxed so that its larger state does not size every connection's task.
            let ended = Box::pin(async move {
                tokio::pin!(conn);
                tokio::select! {
                    r = conn.as_mut() => r,
                    _ = drain.fired() => {
                        conn.as_mut().graceful_shutdown();
                        conn.await
                    }
                }
            })
            .await;
            if let Err(e) = ended {
                tracing::debug!(%peer, error = %e, "client connection ended with an error");
            }
        }
        // With h2c off, a preface is served (and refused) as HTTP/1.1.
        (Sniffed::Http1 | Sniffed::Http2 | Sniffed::Unsure, _) => {
            h1::serve(stream, peer, worker, builders.http1, drain).await;
        }
    }
}

/// One connection's drain signal: fires when the worker starts draining (or is gone).
/// A waiting oneshot receiver costs a few atomic loads per poll (a waiting `watch`
/// receiver takes its notifier's lock).
pub struct Drain {
    rx: tokio::sync::oneshot::Receiver<()>,
    fired: bool,
}

impl Drain {
    /// Ready once draining began; safe to poll again after that.
    pub fn poll_fired(&mut self, cx: &mut std::task::Context<'_>) -> bool {
        if !self.fired && Pin::new(&mut self.rx).poll(cx).is_ready() {
            self.fired = true;
        }
        self.fired
    }

    /// Whether draining began, without waiting for it.
    pub fn fired_now(&mut self) -> bool {
        if !self.fired {
            self.fired = !matches!(
                self.rx.try_recv(),
                Err(tokio::sync::oneshot::error::TryRecvError::Empty)
            );
        }
        self.fired
    }

    /// Resolves once draining began.
    pub async fn fired(&mut self) {
        std::future::poll_fn(|cx| {
            if self.poll_fired(cx) {
                std::task::Poll::Ready(())
            } else {
                std::task::Poll::Pending
            }
        })
        .await
    }
}

/// The senders of one worker's connections' drain signals.
#[derive(Default)]
struct Drains(Vec<tokio::sync::oneshot::Sender<()>>);

impl Drains {
    /// A signal for a new connection; `live` is how many connections are being served.
    fn add(&mut self, live: usize) -> Drain {
        // Drop the senders of ended connections once they make up half the list:
        // amortised O(1) per connection, and the list stays within 2x the live count.
        if self.0.len() >= 2 * live + 64 {
            self.0.retain(|tx| !tx.is_closed());
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.0.push(tx);
        Drain { rx, fired: false }
    }

    /// Tells every connection to drain.
    fn start(&mut self) {
        for tx in self.0.drain(..) {
            let _ = tx.send(());
        }
    }
}

/// Resolves once `shutdown` turns true (or its sender is gone).
pub async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|&d| d).await;
}

#[cfg(test)]
mod tests {
    use super::{sniff, Sniffed, H2_PREFACE};

    #[test]
    fn first_bytes_tell_http1_from_the_h2_preface() {
        assert_eq!(sniff(b""), Sniffed::Closed);
        assert_eq!(sniff(b"GET / HTTP/1.1\r\n"), Sniffed::Http1);
        assert_eq!(sniff(b"G"), Sniffed::Http1);
        // PRI is also a (strange) HTTP/1 method; it is HTTP/1 as soon as it differs.
        assert_eq!(sniff(b"PRI * HTTP/1.1\r\n"), Sniffed::Http1);
        assert_eq!(sniff(b"PRI * HTTP/2.0"), Sniffed::Unsure);
        assert_eq!(sniff(b"P"), Sniffed::Unsure);
        assert_eq!(sniff(H2_PREFACE), Sniffed::Http2);
        let mut more = H2_PREFACE.to_vec();
        more.extend_from_slice(b"\x00\x00\x12\x04");
        assert_eq!(sniff(&more), Sniffed::Http2);
    }
}
