//! `TcpRelay`: a TCP forwarder on 127.0.0.1:0 that can be cut, restored and slowed.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

struct RelayState {
    target: SocketAddr,
    delay_us: AtomicU64,
    accepted: AtomicU64,
    conns: Mutex<JoinSet<()>>,
}

/// Forwards every connection to `target`, one task per connection (both directions).
/// `cut()` closes the listener (new connects are refused) and drops all live
/// connections; `restore()` listens again on the same port. Aborted on drop.
pub struct TcpRelay {
    addr: SocketAddr,
    state: Arc<RelayState>,
    accept: Option<JoinHandle<()>>,
}

#[allow(dead_code)]
impl TcpRelay {
    pub async fn start(target: SocketAddr) -> TcpRelay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(RelayState {
            target,
            delay_us: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            conns: Mutex::new(JoinSet::new()),
        });
        let accept = Some(tokio::spawn(accept_loop(listener, state.clone())));
        TcpRelay {
            addr,
            state,
            accept,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.state.accepted.load(Ordering::SeqCst)
    }

    /// Delay applied before forwarding each chunk, in both directions.
    pub fn set_delay(&self, delay: Duration) {
        let us = delay.as_micros().min(u64::MAX as u128) as u64;
        self.state.delay_us.store(us, Ordering::SeqCst);
    }

    /// Stop listening (connects get ECONNREFUSED) and drop every live connection.
    /// Returns once the listener and the connections are closed.
    pub async fn cut(&mut self) {
        if let Some(accept) = self.accept.take() {
            accept.abort();
            let _ = accept.await;
        }
        let mut conns = std::mem::take(&mut *self.state.conns.lock().unwrap());
        conns.shutdown().await;
    }

    /// Listen again on the same address (no-op if not cut).
    pub async fn restore(&mut self) {
        if self.accept.is_some() {
            return;
        }
        let mut tries = 0;
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(e) if tries < 50 => {
                    tries += 1;
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(e) => panic!("relay could not rebind {}: {e}", self.addr),
            }
        };
        self.accept = Some(tokio::spawn(accept_loop(listener, self.state.clone())));
    }
}

impl Drop for TcpRelay {
    fn drop(&mut self) {
        if let Some(accept) = self.accept.take() {
            accept.abort();
        }
        self.state.conns.lock().unwrap().abort_all();
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<RelayState>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        state.accepted.fetch_add(1, Ordering::SeqCst);
        let st = state.clone();
        let mut conns = state.conns.lock().unwrap();
        while conns.try_join_next().is_some() {}
        conns.spawn(async move {
            let Ok(server) = TcpStream::connect(st.target).await else {
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            tokio::join!(pipe(cr, sw, &st), pipe(sr, cw, &st));
        });
    }
}

async fn pipe(mut from: impl AsyncRead + Unpin, mut to: impl AsyncWrite + Unpin, st: &RelayState) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let us = st.delay_us.load(Ordering::SeqCst);
        if us > 0 {
            tokio::time::sleep(Duration::from_micros(us)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}
