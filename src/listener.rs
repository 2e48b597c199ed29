//! Accepting and serving client connections.
//!
//! Each worker thread runs its own current-thread runtime and its own `SO_REUSEPORT`
//! listener on the same address, so the kernel spreads connections across cores and no
//! accept lock is shared. Listener hygiene lives here: a header read timeout, limits on
//! header count and size (hyper answers 431), and one connection cap across all workers
//! (a semaphore: at the cap, workers stop accepting and the kernel backlog holds the rest).
//! On shutdown a worker stops accepting, asks every connection to finish its in-flight
//! requests and close, and waits up to the drain timeout.

use crate::proxy::{self, Worker};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use socket2::{Domain, Protocol, Socket, Type};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
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

/// The hyper connection builder shared by one worker's connections.
pub fn builder(s: &ServeSettings) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(s.header_read_timeout)
        .max_buf_size(s.max_header_bytes.max(8192))
        .max_headers(s.max_headers)
        .keep_alive(true);
    b.http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(s.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(256);
    if s.http2 {
        b
    } else {
        b.http1_only()
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
    let builder = Arc::new(builder(&settings));
    let mut conns = JoinSet::new();
    loop {
        while conns.try_join_next().is_some() {}
        let (stream, peer) = tokio::select! {
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
        let builder = builder.clone();
        let mut shutdown = shutdown.clone();
        conns.spawn(async move {
            let _permit = permit;
            let gauge = worker.shared.metrics.downstream_connections.clone();
            gauge.inc();
            let service =
                hyper::service::service_fn(move |req| proxy::handle(worker.clone(), req, peer));
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            tokio::pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
                _ = stopped(&mut shutdown) => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "client connection ended with an error");
            }
            gauge.dec();
        });
    }
    drop(listener);
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

/// Resolves once `shutdown` turns true (or its sender is gone).
pub async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|&d| d).await;
}
