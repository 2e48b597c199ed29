//! A simulated web app with bounded capacity, standing in for the Go/Gin app behind sluice.
//!
//! `capacity` requests are served at once, each taking `service_time`; the rest wait in
//! the app's own FIFO line, so latency explodes under overload like an app whose database
//! pool is saturated. [`Mode`] switches to fast, failing, resetting or hanging behaviour.
//! `POST /_control` changes the settings mid-run and `GET /_stats` returns [`SimStats`];
//! neither is counted, nor affected by the mode. `GET /health/ready` takes no capacity.

mod gate;
mod handler;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::Notify;
use tokio::task::{JoinHandle, JoinSet};

use gate::Gate;

/// Accept backlog asked for (the kernel caps it at `net.core.somaxconn`).
const LISTEN_BACKLOG: u32 = 4096;

/// How the simulated app answers requests other than its control endpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Bounded capacity, `service_time` each, FIFO waiting line.
    Normal,
    /// 200 at once with no capacity limit: for pass-through overhead benchmarks.
    Fast,
    /// 500 at once (503 on the readiness path).
    Fail500,
    /// The connection is closed with a TCP RST (SO_LINGER 0) instead of an answer.
    Reset,
    /// Never answers; the connection stays open until the client gives up.
    Hang,
}

impl FromStr for Mode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "normal" => Ok(Mode::Normal),
            "fast" => Ok(Mode::Fast),
            "fail500" => Ok(Mode::Fail500),
            "reset" => Ok(Mode::Reset),
            "hang" => Ok(Mode::Hang),
            other => Err(format!(
                "unknown mode {other:?} (normal, fast, fail500, reset, hang)"
            )),
        }
    }
}

/// The simulated app's behaviour; all of it can change mid-run through `/_control`.
#[derive(Clone, Debug)]
pub struct SimSettings {
    /// Requests served at once in [`Mode::Normal`].
    pub capacity: usize,
    /// How long each request is served for in [`Mode::Normal`].
    pub service_time: Duration,
    pub mode: Mode,
    /// Most requests waiting for capacity; beyond it the app answers 503 at once.
    /// 0 means unbounded.
    pub queue_limit: usize,
    /// Service times are spread uniformly over `service_time × [1 - spread, 1 + spread]`
    /// (0 to 1; 0: every request takes `service_time`), as a real app's are. The draws
    /// are deterministic, one per request in the order they enter service.
    pub spread: f64,
}

impl Default for SimSettings {
    fn default() -> Self {
        Self {
            capacity: 20,
            service_time: Duration::from_millis(50),
            mode: Mode::Normal,
            queue_limit: 0,
            spread: 0.0,
        }
    }
}

/// A change of settings, as posted to `/_control` (any subset of the fields).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlUpdate {
    pub capacity: Option<usize>,
    pub service_ms: Option<u64>,
    pub mode: Option<Mode>,
    pub queue_limit: Option<usize>,
    pub spread: Option<f64>,
}

impl ControlUpdate {
    /// Rejects values the app cannot take (a spread outside 0..=1).
    pub fn validate(&self) -> Result<(), String> {
        match self.spread {
            Some(f) => check_spread(f).map(drop),
            None => Ok(()),
        }
    }
}

/// A service-time spread must lie in 0..=1 (see [`SimSettings::spread`]).
pub fn check_spread(spread: f64) -> Result<f64, String> {
    if (0.0..=1.0).contains(&spread) {
        Ok(spread)
    } else {
        Err(format!("spread must be between 0 and 1, not {spread}"))
    }
}

/// The `n`-th service time of an app at `service_time` ± `spread` (splitmix64 of `n`).
pub fn spread_service(service_time: Duration, spread: f64, n: u64) -> Duration {
    if spread <= 0.0 {
        return service_time;
    }
    let mut z = n.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    let u = (z >> 11) as f64 / (1u64 << 53) as f64;
    service_time.mul_f64((1.0 - spread + 2.0 * spread * u).max(0.0))
}

/// Counters and current settings, as returned by `/_stats`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SimStats {
    /// Requests that reached the app (the readiness path included, control paths not).
    pub received: u64,
    /// Of `received`, those on the readiness path.
    pub health_checks: u64,
    /// Answers sent, by status code.
    pub served: BTreeMap<u16, u64>,
    /// Connections closed with RST in [`Mode::Reset`].
    pub resets: u64,
    pub in_service: usize,
    pub queued: usize,
    pub max_queued: usize,
    pub capacity: usize,
    pub service_ms: u64,
    pub mode: Mode,
    pub queue_limit: usize,
    pub spread: f64,
}

/// State shared by every connection of one app.
#[derive(Debug)]
struct Shared {
    /// Service time, mode and queue limit; capacity lives in the gate.
    settings: Mutex<SimSettings>,
    gate: Arc<Gate>,
    received: AtomicU64,
    /// Service times drawn so far (see [`spread_service`]).
    draws: AtomicU64,
    health_checks: AtomicU64,
    resets: AtomicU64,
    served: Mutex<BTreeMap<u16, u64>>,
}

impl Shared {
    fn settings(&self) -> SimSettings {
        let s = self.settings.lock().unwrap_or_else(PoisonError::into_inner);
        SimSettings {
            capacity: self.gate.capacity(),
            ..s.clone()
        }
    }

    fn apply(&self, update: &ControlUpdate) {
        let mut s = self.settings.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(c) = update.capacity {
            self.gate.set_capacity(c);
            s.capacity = c;
        }
        if let Some(ms) = update.service_ms {
            s.service_time = Duration::from_millis(ms);
        }
        if let Some(m) = update.mode {
            s.mode = m;
        }
        if let Some(q) = update.queue_limit {
            s.queue_limit = q;
        }
        if let Some(f) = update.spread {
            // (Validated on `/_control`; a caller in code gets it clamped.)
            s.spread = if f.is_nan() { 0.0 } else { f.clamp(0.0, 1.0) };
        }
    }

    fn count_served(&self, status: u16) {
        let mut served = self.served.lock().unwrap_or_else(PoisonError::into_inner);
        *served.entry(status).or_default() += 1;
    }

    fn stats(&self) -> SimStats {
        let s = self.settings();
        let served = self
            .served
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        SimStats {
            received: self.received.load(Ordering::SeqCst),
            health_checks: self.health_checks.load(Ordering::SeqCst),
            served,
            resets: self.resets.load(Ordering::SeqCst),
            in_service: self.gate.in_service.load(Ordering::SeqCst),
            queued: self.gate.queued.load(Ordering::SeqCst),
            max_queued: self.gate.max_queued.load(Ordering::SeqCst),
            capacity: s.capacity,
            service_ms: u64::try_from(s.service_time.as_millis()).unwrap_or(u64::MAX),
            mode: s.mode,
            queue_limit: s.queue_limit,
            spread: s.spread,
        }
    }
}

/// A running simulated app. Stops (closing every connection) on drop or [`shutdown`].
///
/// [`shutdown`]: SimApp::shutdown
#[derive(Debug)]
pub struct SimApp {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Arc<Notify>,
    task: Option<JoinHandle<()>>,
}

impl SimApp {
    /// Bind `addr` (port 0 picks one) and serve on the current tokio runtime.
    pub async fn start(addr: SocketAddr, settings: SimSettings) -> std::io::Result<SimApp> {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        // Bursts of new connections from an open-loop client overflow tokio's default
        // backlog of 1024, and each dropped SYN costs a 1 s retransmission.
        let listener = socket.listen(LISTEN_BACKLOG)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            gate: Gate::new(settings.capacity),
            settings: Mutex::new(settings),
            received: AtomicU64::new(0),
            draws: AtomicU64::new(0),
            health_checks: AtomicU64::new(0),
            resets: AtomicU64::new(0),
            served: Mutex::new(BTreeMap::new()),
        });
        let stop = Arc::new(Notify::new());
        let task = tokio::spawn(accept_loop(listener, shared.clone(), stop.clone()));
        Ok(SimApp {
            addr,
            shared,
            stop,
            task: Some(task),
        })
    }

    /// The address the app listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The counters `/_stats` would return.
    pub fn stats(&self) -> SimStats {
        self.shared.stats()
    }

    /// Change settings as `/_control` would.
    pub fn control(&self, update: &ControlUpdate) {
        self.shared.apply(update);
    }

    /// Stop accepting and close every connection, returning once all are closed.
    pub async fn shutdown(mut self) {
        self.stop.notify_one();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for SimApp {
    fn drop(&mut self) {
        // Aborting drops the accept loop's JoinSet, which aborts every connection.
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// Accept connections until told to stop. Connection tasks live in a `JoinSet` owned
/// here: finished ones are reaped as they end, the rest aborted when the loop ends.
async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, stop: Arc<Notify>) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    conns.spawn(serve(stream, shared.clone()));
                }
                // Out of file descriptors and the like: back off briefly, keep serving.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            _ = stop.notified() => break,
        }
    }
    drop(listener);
    conns.shutdown().await;
}

/// Serve one connection with HTTP/1.1 keep-alive until it closes, or reset it when a
/// request asks for that (see [`Mode::Reset`]).
async fn serve(stream: TcpStream, shared: Arc<Shared>) {
    let _ = stream.set_nodelay(true);
    let reset = Arc::new(Notify::new());
    // A second descriptor for the same socket, so SO_LINGER can be set once hyper owns
    // the stream. Closing both descriptors with linger 0 sends the RST.
    let linger_handle = dup_fd(&stream);
    let service = {
        let reset = reset.clone();
        service_fn(move |req| handler::handle(shared.clone(), reset.clone(), req))
    };
    let conn = http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        _ = conn => {}
        _ = reset.notified() => {
            if let Some(fd) = &linger_handle {
                let _ = socket2::SockRef::from(fd).set_linger(Some(Duration::ZERO));
            }
            // `conn` (the first descriptor) is dropped with this branch, `linger_handle`
            // right after: the kernel then answers with RST.
        }
    }
}

fn dup_fd(stream: &TcpStream) -> Option<std::os::fd::OwnedFd> {
    use std::os::fd::AsFd;
    stream.as_fd().try_clone_to_owned().ok()
}
