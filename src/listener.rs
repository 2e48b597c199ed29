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
//! Memory per connection: hyper's HTTP/1 state (an 8 KiB read and an 8 KiB write buffer,
//! kept while the connection idles) is only built once the client's first bytes have
//! arrived, and the protocol is told from those bytes with `peek`, so hyper reads the
//! request itself in one go. (hyper-util's auto builder reads the first 24 bytes ahead of
//! hyper and hands them back through a rewind buffer; hyper's read buffer then doubles to
//! 16 KiB on the second read, for the life of the connection.)

use crate::proxy::{self, Worker};
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
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

/// The hyper connection builders shared by one worker's connections.
pub struct Builders {
    http1: http1::Builder,
    http2: Option<http2::Builder<TokioExecutor>>,
    /// For a client whose first bytes are a cut-short HTTP/2 preface: hyper-util reads
    /// on until it can tell.
    auto: auto::Builder<TokioExecutor>,
}

impl Builders {
    pub fn new(s: &ServeSettings) -> Builders {
        let mut http1 = http1::Builder::new();
        http1
            .timer(TokioTimer::new())
            .header_read_timeout(s.header_read_timeout)
            .max_buf_size(s.max_header_bytes.max(8192))
            .max_headers(s.max_headers)
            .keep_alive(true);
        let mut http2 = http2::Builder::new(TokioExecutor::new());
        http2
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(s.max_header_bytes).unwrap_or(u32::MAX))
            .max_concurrent_streams(256);
        let mut auto = auto::Builder::new(TokioExecutor::new());
        auto.http1()
            .timer(TokioTimer::new())
            .header_read_timeout(s.header_read_timeout)
            .max_buf_size(s.max_header_bytes.max(8192))
            .max_headers(s.max_headers)
            .keep_alive(true);
        auto.http2()
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(s.max_header_bytes).unwrap_or(u32::MAX))
            .max_concurrent_streams(256);
        Builders {
            http1,
            http2: s.http2.then_some(http2),
            auto,
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

/// Waits for the client's first bytes and looks at them without consuming them.
async fn first_bytes(stream: &TcpStream) -> std::io::Result<Sniffed> {
    let mut buf = [0u8; 24];
    let n = stream.peek(&mut buf).await?;
    Ok(sniff(&buf[..n]))
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
    loop {
        let (stream, peer) = tokio::select! {
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
/// timeout's own bound (hyper's timer starts once the connection is handed to it).
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
        _ = &mut drain => return,
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
    // The request future is boxed per request: hyper keeps a box the size of the
    // service's future for as long as the connection lives, so an unboxed `handle`
    // (3.5 KiB) would stay allocated on every idle keep-alive connection.
    let service =
        hyper::service::service_fn(move |req| Box::pin(proxy::handle(worker.clone(), req, peer)));
    let io = TokioIo::new(stream);
    // HTTP/2 and the auto builder are boxed so that their larger state does not size
    // every connection's task.
    let ended = match (sniffed, &builders.http2) {
        (Sniffed::Closed, _) => return,
        (Sniffed::Http1, _) | (_, None) => {
            let conn = builders.http1.serve_connection(io, service).with_upgrades();
            drive(conn, |c| c.graceful_shutdown(), drain)
                .await
                .map_err(|e| e.to_string())
        }
        (Sniffed::Http2, Some(h2)) => {
            let conn = h2.serve_connection(io, service);
            Box::pin(drive(conn, |c| c.graceful_shutdown(), drain))
                .await
                .map_err(|e| e.to_string())
        }
        (Sniffed::Unsure, Some(_)) => {
            let conn = builders.auto.serve_connection_with_upgrades(io, service);
            Box::pin(drive(conn, |c| c.graceful_shutdown(), drain))
                .await
                .map_err(|e| e.to_string())
        }
    };
    if let Err(e) = ended {
        tracing::debug!(%peer, error = %e, "client connection ended with an error");
    }
}

/// Runs `conn` to its end; once `drain` fires, `finish` asks it to complete its in-flight
/// requests and close.
async fn drive<C: Future>(
    conn: C,
    finish: impl FnOnce(Pin<&mut C>),
    mut drain: Drain,
) -> C::Output {
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => r,
        _ = &mut drain => {
            finish(conn.as_mut());
            conn.await
        }
    }
}

/// One connection's drain signal: resolves when the worker starts draining (or is
/// gone). A connection task is polled on every wakeup, and `select!` polls this each
/// time: a waiting oneshot receiver costs a few atomic loads per poll, where a waiting
/// `watch` receiver takes its notifier's lock (callgrind: `stopped()` was about 1 % of
/// a proxied request's instructions).
type Drain = tokio::sync::oneshot::Receiver<()>;

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
        rx
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
