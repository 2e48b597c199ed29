//! An open-loop HTTP/1.1 load generator.
//!
//! Each stream sends on a fixed schedule whatever the answers: a slow server makes
//! requests pile up (up to `max_connections` connections), it never slows the sends.
//! Latency is measured from each request's *intended* send time, so waiting for a
//! connection, connecting, or a late generator all show (no coordinated omission).
//!
//! Bounded: at most `max_connections` connections and as many requests in flight, a
//! bounded schedule channel, fixed-size histograms; the run ends by
//! `duration + timeout` (plus a short grace), whatever the server does.

mod report;
mod request;
mod schedule;
mod spec;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hyper::Method;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

pub use report::{ClientErrors, LoadReport, Refusals, Second, StreamReport, MAX_SERIES_SECONDS};

use request::{Done, Lease, Pool, Template};

/// Capacity of the schedule channel; sends beyond it count as `client_saturated`.
const SCHEDULE_BACKLOG: usize = 16_384;

/// How often [`run_observed`] reports progress.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// Time allowed past `duration + timeout` for outstanding work to finish being counted.
const GRACE: Duration = Duration::from_millis(500);

/// One kind of request sent at a steady rate.
#[derive(Clone, Debug, PartialEq)]
pub struct Stream {
    /// Label in the report.
    pub name: String,
    /// Requests per second (0 sends nothing).
    pub rate_per_sec: f64,
    pub method: Method,
    /// Path and query, e.g. `/api/v1/auth/login`.
    pub path: String,
    /// Extra request headers, e.g. `("x-priority", "critical")` for the operator's routes.
    pub headers: Vec<(String, String)>,
}

/// How intended send times are spread.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Arrivals {
    /// Evenly spaced: exactly `rate × duration` sends.
    #[default]
    Even,
    /// Exponential gaps (a Poisson process) from a seeded generator: reproducible bursts.
    Poisson { seed: u64 },
}

/// A load run.
#[derive(Clone, Debug)]
pub struct LoadPlan {
    pub target: SocketAddr,
    pub streams: Vec<Stream>,
    /// Sends are scheduled within `[0, duration)`.
    pub duration: Duration,
    /// Most connections open at once (≥ 1).
    pub max_connections: usize,
    /// Per request, from its intended send time to its complete response.
    pub timeout: Duration,
    pub arrivals: Arrivals,
}

/// A plan that cannot run.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("invalid path {0:?}")]
    Path(String),
    #[error("invalid header {0:?}")]
    Header(String),
    #[error("rate of stream {0:?} must be a finite number ≥ 0")]
    Rate(String),
    #[error("max_connections must be at least 1")]
    NoConnections,
    #[error("could not start the schedule thread: {0}")]
    Thread(#[source] std::io::Error),
}

/// Run `plan` to the end and report what happened. Uses the current tokio runtime plus
/// one OS thread for the schedule (see `schedule.rs` for why).
pub async fn run(plan: LoadPlan) -> Result<LoadReport, PlanError> {
    run_observed(plan, |_, _| {}).await
}

/// Like [`run`], and calls `observe` about once a second with the time since the start
/// and the reports so far (answered sends only), for live progress.
pub async fn run_observed(
    plan: LoadPlan,
    mut observe: impl FnMut(Duration, &[StreamReport]),
) -> Result<LoadReport, PlanError> {
    if plan.max_connections == 0 {
        return Err(PlanError::NoConnections);
    }
    let mut templates = Vec::with_capacity(plan.streams.len());
    for s in &plan.streams {
        if !s.rate_per_sec.is_finite() || s.rate_per_sec < 0.0 {
            return Err(PlanError::Rate(s.name.clone()));
        }
        templates.push(Template::new(s, plan.target)?);
    }
    let mut reports: Vec<StreamReport> = plan
        .streams
        .iter()
        .map(|s| StreamReport::new(&s.name, s.rate_per_sec))
        .collect();
    let mut in_flight = vec![0u64; plan.streams.len()];
    let dropped: schedule::Dropped = plan.streams.iter().map(|_| AtomicU64::new(0)).collect();
    let rates: Vec<f64> = plan.streams.iter().map(|s| s.rate_per_sec).collect();

    let (stop_tx, stop_rx) = watch::channel(());
    let shared = request::Shared {
        target: plan.target,
        templates: templates.into(),
        stop: stop_rx,
    };
    let (tx, mut ticks) = mpsc::channel(SCHEDULE_BACKLOG);
    let start = Instant::now();
    let _thread = schedule::spawn(
        start,
        plan.duration,
        &rates,
        plan.arrivals,
        tx,
        dropped.clone(),
    )
    .map_err(PlanError::Thread)?;

    let mut pool = Pool::new(plan.max_connections);
    let mut tasks: JoinSet<Done> = JoinSet::new();
    let cut_off = start + plan.duration + plan.timeout + GRACE;
    let mut scheduling = true;
    let mut last = start;
    let mut progress = tokio::time::interval_at(start + PROGRESS_EVERY, PROGRESS_EVERY);
    progress.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    while scheduling || !tasks.is_empty() {
        tokio::select! {
            _ = progress.tick() => observe(start.elapsed(), &reports),
            tick = ticks.recv(), if scheduling => {
                let Some(tick) = tick else {
                    scheduling = false;
                    continue;
                };
                let conn = match pool.lease() {
                    Lease::Reuse(c) => Some(c),
                    Lease::Open => None,
                    Lease::Saturated => {
                        reports[tick.stream]
                            .record_unsent(tick.intended.saturating_duration_since(start));
                        continue;
                    }
                };
                in_flight[tick.stream] += 1;
                let deadline = tick.intended + plan.timeout;
                tasks.spawn(request::send(shared.clone(), tick.stream, tick.intended, deadline, conn));
            }
            joined = tasks.join_next(), if !tasks.is_empty() => match joined {
                Some(Ok(mut done)) => {
                    in_flight[done.stream] -= 1;
                    pool.give_back(done.conn.take());
                    last = last.max(done.finished);
                    reports[done.stream].record(start, &done);
                }
                // A request task panicked: its connection is gone with it.
                Some(Err(_)) | None => pool.give_back(None),
            },
            _ = tokio::time::sleep_until(cut_off) => break,
        }
    }
    // Cut off: whatever is still out counts as timed out.
    tasks.shutdown().await;
    drop(ticks);
    drop(stop_tx);
    for (report, n) in reports.iter_mut().zip(&in_flight) {
        report.record_cut_off(*n);
    }
    for (report, d) in reports.iter_mut().zip(dropped.iter()) {
        report.record_dropped(d.load(Ordering::Relaxed));
    }
    let end = if in_flight.iter().any(|&n| n > 0) {
        Instant::now()
    } else {
        last
    };
    Ok(LoadReport {
        planned: plan.duration,
        elapsed: end.saturating_duration_since(start),
        streams: reports,
    })
}
