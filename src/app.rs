//! Builds every part of sluice from a [`Config`] and one metrics registry, and owns the
//! threads and tasks that run them.
//!
//! Threads: one per worker (each a current-thread runtime with its own listener and
//! upstream pool). Tasks on the caller's runtime: the observability listener and the
//! active health checks. Everything stops through one shutdown signal.

use crate::admission::{Admission, AdmissionCollector, Rejection};
use crate::breaker::{Breakers, ResilienceCollector};
use crate::classify::Classifier;
use crate::config::Config;
use crate::degrade::sample::{Bounds, Counters, Sampler};
use crate::degrade::{Degradation, Pressure};
use crate::listener::{self, ServeSettings};
use crate::metrics::Metrics;
use crate::proxy::Worker;
use crate::system::{SystemCollector, SystemMonitor};
use crate::upstream::health::{self, UpstreamHealth};
use crate::upstream::{Pool, PoolSettings};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{oneshot, watch, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How long a drain waits for in-flight requests before closing connections.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(25);

/// Why sluice could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot build metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("cannot compile route rules: {0}")]
    Routes(#[from] regex::Error),
    #[error("cannot start worker thread: {0}")]
    Thread(#[source] std::io::Error),
}

/// State shared by every worker and task.
pub struct Shared {
    pub config: Config,
    pub admission: Arc<Admission>,
    pub classifier: Classifier,
    pub metrics: Metrics,
    pub health: Arc<UpstreamHealth>,
    /// `None` when `circuit_breaker.enabled = false`.
    pub breakers: Option<Arc<Breakers>>,
    pub degradation: Arc<Degradation>,
    pub system: Arc<SystemMonitor>,
    /// Last good responses of routes with a `last_good` fallback.
    pub last_good: crate::fallback::LastGood,
    /// Every worker's upstream pool, for the JSON endpoints.
    pub pools: Vec<Arc<Pool>>,
    pub workers: usize,
    pub started: Instant,
    draining: AtomicBool,
    runtimes: Arc<Mutex<Vec<tokio::runtime::Handle>>>,
}

impl Shared {
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }
}

/// Tasks alive across sluice's runtimes (the JSON's `goroutine_count`).
fn tasks_alive(runtimes: &Mutex<Vec<tokio::runtime::Handle>>) -> usize {
    let worker_tasks: usize = runtimes
        .lock()
        .map(|r| r.iter().map(|h| h.metrics().num_alive_tasks()).sum())
        .unwrap_or(0);
    let control = tokio::runtime::Handle::try_current()
        .map(|h| h.metrics().num_alive_tasks())
        .unwrap_or(0);
    worker_tasks + control
}

/// A running sluice.
pub struct Running {
    /// Where the main listener accepts connections.
    pub addr: SocketAddr,
    /// Where `/metrics`, `/healthz` and `/readyz` answer, if enabled.
    pub observability_addr: Option<SocketAddr>,
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    workers: Vec<oneshot::Receiver<()>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Stops accepting, lets in-flight requests finish (up to the drain timeout), then
    /// stops every task.
    pub async fn shutdown(self) {
        self.shared.draining.store(true, Ordering::Relaxed);
        let _ = self.shutdown.send(true);
        for w in self.workers {
            let _ = w.await;
        }
        for t in self.tasks {
            let _ = t.await;
        }
        for p in &self.shared.pools {
            p.clear();
        }
    }

    /// Marks sluice as draining (`/readyz` fails) without stopping it yet.
    pub fn begin_drain(&self) {
        self.shared.draining.store(true, Ordering::Relaxed);
    }
}

/// Starts sluice: binds every socket, spawns the workers and the control tasks.
/// Must be called from within a tokio runtime (it hosts the control tasks).
pub async fn start(config: Config) -> Result<Running, StartError> {
    let workers = match config.listener.workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let classifier = Classifier::new(config.routes.clone())?;
    let route_labels = config
        .routes
        .iter()
        .map(|r| (r.name.clone(), r.class, r.priority.as_str()))
        .collect();
    let class_names = config.classes.iter().map(|c| c.name.clone()).collect();
    // One shard per worker plus one for the control runtime.
    let metrics = Metrics::new(route_labels, class_names, workers + 1)?;
    let admission = Admission::new(&config);
    metrics.register(Box::new(AdmissionCollector::new(admission.clone())))?;

    let bind = |addr: SocketAddr, n| {
        listener::bind_reuseport(addr, n).map_err(|source| StartError::Bind { addr, source })
    };
    let listeners = bind(config.listener.addr, workers)?;
    let addr = listeners
        .first()
        .and_then(|l| l.local_addr().ok())
        .unwrap_or(config.listener.addr);
    let obs_listener = match config.observability.addr {
        Some(a) => Some(bind(a, 1)?.remove(0)),
        None => None,
    };

    let up = &config.upstream;
    let pool_settings = PoolSettings {
        addr: up.addr.clone(),
        connect_timeout: up.connect_timeout,
        idle_timeout: up.pool_idle_timeout,
        max_idle: up.pool_max_idle_per_worker,
        body_idle_timeout: up.body_idle_timeout,
    };
    let pools: Vec<Arc<Pool>> = (0..workers)
        .map(|_| {
            Pool::new(
                pool_settings.clone(),
                metrics.upstream_connections.clone(),
                metrics.upstream_errors.body.clone(),
            )
        })
        .collect();
    let probe_pool = Pool::new(
        pool_settings,
        metrics.upstream_connections.clone(),
        metrics.upstream_errors.body.clone(),
    );
    let health = Arc::new(UpstreamHealth::new(&config.health));
    let now = Instant::now();
    let breakers = Breakers::new(&config.circuit_breaker, &config.classes, now).map(Arc::new);
    let degradation = Arc::new(Degradation::new(config.degradation.clone(), now));
    metrics.register(Box::new(ResilienceCollector::new(
        breakers.clone(),
        degradation.clone(),
        health.clone(),
    )))?;
    let runtimes = Arc::new(Mutex::new(Vec::new()));
    let system = {
        let runtimes = runtimes.clone();
        Arc::new(SystemMonitor::detect().with_tokio_tasks(move || tasks_alive(&runtimes)))
    };
    // A first reading now, so the endpoints never show an empty one.
    system.sample(now);
    metrics.register(Box::new(SystemCollector::new(system.clone())))?;
    let settings = ServeSettings {
        header_read_timeout: config.listener.header_read_timeout,
        idle_timeout: config.listener.idle_timeout,
        max_header_bytes: config.listener.max_header_bytes,
        max_headers: config.listener.max_headers,
        http2: config.listener.http2,
        drain_timeout: DRAIN_TIMEOUT,
    };
    let limit = Arc::new(Semaphore::new(config.listener.max_connections));
    let shared = Arc::new(Shared {
        admission: admission.clone(),
        classifier,
        metrics,
        health: health.clone(),
        breakers,
        degradation,
        system,
        last_good: crate::fallback::LastGood::new(&config.routes),
        pools: pools.clone(),
        workers,
        started: now,
        draining: AtomicBool::new(false),
        runtimes,
        config,
    });
    let (shutdown, shutdown_rx) = watch::channel(false);

    let mut done = Vec::with_capacity(workers);
    for (i, (listener, pool)) in listeners.into_iter().zip(pools).enumerate() {
        let worker = Arc::new(Worker {
            shared: shared.clone(),
            pool,
            shard: i,
            ids: crate::forward::RequestIds::new(),
            proto: "http",
            error_log: crate::proxy::LogEvery::new(Duration::from_secs(1)),
            date: Default::default(),
        });
        let (tx, rx) = oneshot::channel();
        done.push(rx);
        let (settings, limit, shutdown_rx) = (settings.clone(), limit.clone(), shutdown_rx.clone());
        let shared = shared.clone();
        std::thread::Builder::new()
            .name(format!("sluice-worker-{i}"))
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot build worker runtime");
                        return;
                    }
                };
                if let Ok(mut r) = shared.runtimes.lock() {
                    r.push(rt.handle().clone());
                }
                rt.block_on(listener::run(
                    listener,
                    worker,
                    settings,
                    limit,
                    shutdown_rx,
                ));
                let _ = tx.send(());
            })
            .map_err(StartError::Thread)?;
    }

    let mut tasks = Vec::new();
    let mut observability_addr = None;
    if let Some(l) = obs_listener {
        observability_addr = l.local_addr().ok();
        tasks.push(tokio::spawn(serve_observability(
            l,
            shared.clone(),
            shutdown_rx.clone(),
        )));
    }
    if shared.config.concurrency.enabled {
        tasks.push(tokio::spawn(admission.run(shutdown_rx.clone())));
    }
    if health.enabled() {
        let host = host_of(&shared.config.upstream.addr);
        let breakers = shared.breakers.clone();
        let on_recovery = move || {
            if let Some(b) = &breakers {
                b.app_recovered(Instant::now());
            }
        };
        tasks.push(tokio::spawn(health::run(
            health,
            probe_pool,
            host,
            shared.config.health.clone(),
            on_recovery,
            shutdown_rx.clone(),
        )));
    }
    tasks.push(tokio::spawn(crate::system::run(
        shared.system.clone(),
        SYSTEM_INTERVAL,
        shutdown_rx.clone(),
    )));
    {
        let shared = shared.clone();
        let shutdown_rx = shutdown_rx.clone();
        tasks.push(tokio::spawn(async move {
            let sampler = Sampler::new(
                SIGNAL_SPAN,
                Bounds {
                    waits: &crate::admission::WAIT_BUCKETS,
                    upstream: &crate::metrics::DURATION_BUCKETS,
                },
            );
            let read = || (counters(&shared), pressure(&shared));
            shared.degradation.run(sampler, read, shutdown_rx).await;
        }));
    }
    if let Some(why) = &shared.config.admin.disabled {
        tracing::warn!(reason = %why, "admin API disabled (answers 404)");
    }
    tracing::info!(%addr, ?observability_addr, workers, upstream = %shared.config.upstream.addr, "sluice started");
    Ok(Running {
        addr,
        observability_addr,
        shared,
        shutdown,
        workers: done,
        tasks,
    })
}

/// How often the system monitor reads the cgroup and `/proc`.
const SYSTEM_INTERVAL: Duration = Duration::from_secs(1);
/// The span degradation signals are measured over.
const SIGNAL_SPAN: Duration = Duration::from_secs(1);

/// The running totals degradation signals are computed from.
fn counters(shared: &Shared) -> Counters {
    let mut c = Counters::default();
    let mut upstream: Vec<u64> = Vec::new();
    for g in &shared.admission.gates {
        let mut waits: Vec<u64> = Vec::new();
        for p in crate::priority::Priority::ALL {
            c.decided += g.stats.admitted_count(p);
            for r in Rejection::ALL.into_iter().filter(|r| r.is_overload()) {
                let n = g.stats.rejected_count(p, r);
                c.decided += n;
                c.shed += n;
            }
            add_counts(&mut waits, &g.stats.waits[p.index()].snapshot().counts);
        }
        c.waits.push(waits);
        add_counts(&mut upstream, &g.stats.upstream.snapshot().counts);
    }
    c.upstream = upstream;
    let snap = shared.metrics.requests.snapshot();
    for class in &snap.classes {
        use crate::metrics::Outcome;
        let failed = class.failures();
        c.failures += failed;
        c.responses += failed + class.count(Outcome::Success) + class.count(Outcome::ClientError);
    }
    c
}

fn add_counts(into: &mut Vec<u64>, from: &[u64]) {
    if into.len() < from.len() {
        into.resize(from.len(), 0);
    }
    for (a, b) in into.iter_mut().zip(from) {
        *a += b;
    }
}

fn pressure(shared: &Shared) -> Pressure {
    Pressure {
        breaker_open: shared
            .breakers
            .as_ref()
            .is_some_and(|b| b.any_open(Instant::now())),
        cpu_ratio: shared.system.cpu_ratio(),
        memory_ratio: shared.system.memory_ratio(),
    }
}

fn host_of(addr: &str) -> String {
    addr.to_string()
}

/// The observability listener: plain HTTP/1.1, a handful of requests a minute.
async fn serve_observability(
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "cannot register observability listener");
            return;
        }
    };
    loop {
        let stream = tokio::select! {
            r = listener.accept() => match r { Ok((s, _)) => s, Err(_) => continue },
            _ = crate::listener::stopped(&mut shutdown) => return,
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let shared = shared.clone();
                async move {
                    Ok::<_, std::convert::Infallible>(
                        crate::api::handle_observability(&shared, req).await,
                    )
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Resolves on SIGTERM or SIGINT, naming which (for the drain log).
pub async fn wait_for_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers, fall back to Ctrl-C only.
        let _ = tokio::signal::ctrl_c().await;
        return "SIGINT";
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}
