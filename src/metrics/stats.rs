//! Lock-free per-request statistics, sharded by writer thread.

use http::StatusCode;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

/// Upper bounds (seconds) of `sluice_request_duration_seconds`: 1 ms to 30 s, dense
/// between 5 ms and 15 s where the app's answers fall (its write timeout is 15 s).
pub const DURATION_BUCKETS: [f64; 15] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0,
];
const NB: usize = DURATION_BUCKETS.len() + 1; // + the +Inf bucket

/// How one request ended, as the `outcome` label says it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The app answered 1xx, 2xx or 3xx.
    Success,
    /// The app answered 4xx.
    ClientError,
    /// The app answered 5xx.
    ServerError,
    /// sluice answered 502: the app could not be reached or broke the exchange.
    BadGateway,
    /// sluice answered 504: no response head within the route's timeout.
    GatewayTimeout,
    /// The client went away before a response head was ready.
    Cancelled,
    /// Refused by admission control (503: queue full, displaced, timed out, shed).
    Rejected,
    /// Refused by a rate limit (429).
    RateLimited,
    /// Answered by sluice with the route's fallback while degraded.
    Fallback,
}

impl Outcome {
    pub const ALL: [Outcome; 9] = [
        Outcome::Success,
        Outcome::ClientError,
        Outcome::ServerError,
        Outcome::BadGateway,
        Outcome::GatewayTimeout,
        Outcome::Cancelled,
        Outcome::Rejected,
        Outcome::RateLimited,
        Outcome::Fallback,
    ];
    const COUNT: usize = Self::ALL.len();

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::ClientError => "client_error",
            Outcome::ServerError => "server_error",
            Outcome::BadGateway => "bad_gateway",
            Outcome::GatewayTimeout => "gateway_timeout",
            Outcome::Cancelled => "cancelled",
            Outcome::Rejected => "rejected",
            Outcome::Fallback => "fallback",
            Outcome::RateLimited => "rate_limited",
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    /// The outcome of a response the app itself produced.
    pub fn from_status(status: StatusCode) -> Outcome {
        if status.is_server_error() {
            Outcome::ServerError
        } else if status.is_client_error() {
            Outcome::ClientError
        } else {
            Outcome::Success
        }
    }
}

/// Static labels of one route.
pub(crate) struct RouteLabels {
    pub name: String,
    pub class: usize,
    pub priority: &'static str,
}

struct Shard {
    outcomes: Box<[AtomicU64]>,
    buckets: Box<[AtomicU64]>,
    sum_us: Box<[AtomicU64]>,
    max_us: Box<[AtomicU64]>,
}

fn zeroed(n: usize) -> Box<[AtomicU64]> {
    (0..n).map(|_| AtomicU64::new(0)).collect()
}

impl Shard {
    fn new(routes: usize) -> Shard {
        Shard {
            outcomes: zeroed(routes * Outcome::COUNT),
            buckets: zeroed(routes * NB),
            sum_us: zeroed(routes),
            max_us: zeroed(routes),
        }
    }

    fn reset(&self) {
        let all = [&self.outcomes, &self.buckets, &self.sum_us, &self.max_us];
        for cell in all.into_iter().flat_map(|a| a.iter()) {
            cell.store(0, Relaxed);
        }
    }
}

/// Per-route counters and latency histograms plus per-class in-flight gauges.
pub struct RequestStats {
    pub(crate) routes: Vec<RouteLabels>,
    pub(crate) classes: Vec<String>,
    shards: Box<[Shard]>,
    inflight: Box<[AtomicI64]>,
}

impl RequestStats {
    pub(crate) fn new(
        routes: Vec<(String, usize, &'static str)>,
        classes: Vec<String>,
        shards: usize,
    ) -> RequestStats {
        let n = routes.len();
        RequestStats {
            routes: routes
                .into_iter()
                .map(|(name, class, priority)| RouteLabels {
                    name,
                    class,
                    priority,
                })
                .collect(),
            inflight: (0..classes.len()).map(|_| AtomicI64::new(0)).collect(),
            classes,
            shards: (0..shards.max(1)).map(|_| Shard::new(n)).collect(),
        }
    }

    /// Records one finished request. `shard` is the writer's own shard index (any value
    /// is safe; out-of-range ones fold onto the last shard).
    pub fn record(&self, shard: usize, route: usize, outcome: Outcome, elapsed: Duration) {
        let Some(s) = self.shards.get(shard).or(self.shards.last()) else {
            return;
        };
        if route >= self.routes.len() {
            return;
        }
        s.outcomes[route * Outcome::COUNT + outcome.index()].fetch_add(1, Relaxed);
        let secs = elapsed.as_secs_f64();
        let bucket = DURATION_BUCKETS
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(NB - 1);
        s.buckets[route * NB + bucket].fetch_add(1, Relaxed);
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        s.sum_us[route].fetch_add(us, Relaxed);
        s.max_us[route].fetch_max(us, Relaxed);
    }

    /// Counts a request in flight for `class` until the guard drops.
    pub fn inflight(self: &Arc<Self>, class: usize) -> InflightGuard {
        if let Some(g) = self.inflight.get(class) {
            g.fetch_add(1, Relaxed);
        }
        InflightGuard {
            stats: self.clone(),
            class,
        }
    }

    /// Zeroes counters and histograms; in-flight gauges are left alone.
    pub fn reset(&self) {
        for s in self.shards.iter() {
            s.reset();
        }
    }

    /// A consistent-enough copy of every number (each cell read once).
    pub fn snapshot(&self) -> StatsSnapshot {
        let routes = (0..self.routes.len())
            .map(|r| {
                let mut snap = RouteSnapshot {
                    outcomes: [0; Outcome::COUNT],
                    buckets: [0; NB],
                    sum_seconds: 0.0,
                    max_seconds: 0.0,
                };
                let mut sum_us = 0u64;
                let mut max_us = 0u64;
                for s in self.shards.iter() {
                    for (o, c) in snap.outcomes.iter_mut().enumerate() {
                        *c += s.outcomes[r * Outcome::COUNT + o].load(Relaxed);
                    }
                    for (b, c) in snap.buckets.iter_mut().enumerate() {
                        *c += s.buckets[r * NB + b].load(Relaxed);
                    }
                    sum_us = sum_us.saturating_add(s.sum_us[r].load(Relaxed));
                    max_us = max_us.max(s.max_us[r].load(Relaxed));
                }
                snap.sum_seconds = sum_us as f64 / 1e6;
                snap.max_seconds = max_us as f64 / 1e6;
                snap
            })
            .collect::<Vec<_>>();
        let classes = (0..self.classes.len())
            .map(|c| {
                let mut cs = ClassSnapshot {
                    inflight: self.inflight[c].load(Relaxed).max(0),
                    ..ClassSnapshot::default()
                };
                for (r, rs) in routes.iter().enumerate() {
                    if self.routes[r].class == c {
                        cs.add(rs);
                    }
                }
                cs
            })
            .collect();
        StatsSnapshot { routes, classes }
    }
}

/// Decrements a class's in-flight gauge on drop, so a cancelled request cannot leak it.
pub struct InflightGuard {
    stats: Arc<RequestStats>,
    class: usize,
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        if let Some(g) = self.stats.inflight.get(self.class) {
            g.fetch_sub(1, Relaxed);
        }
    }
}

/// One route's numbers at a point in time.
#[derive(Clone, Debug)]
pub struct RouteSnapshot {
    pub outcomes: [u64; Outcome::COUNT],
    /// Per-bucket (not cumulative) counts, the last one being +Inf.
    pub buckets: [u64; NB],
    pub sum_seconds: f64,
    pub max_seconds: f64,
}

impl RouteSnapshot {
    pub fn total(&self) -> u64 {
        self.outcomes.iter().sum()
    }
    pub fn count(&self, o: Outcome) -> u64 {
        self.outcomes[o.index()]
    }
}

/// One class's numbers: its routes added up, plus its in-flight gauge.
#[derive(Clone, Debug, Default)]
pub struct ClassSnapshot {
    pub inflight: i64,
    pub outcomes: [u64; Outcome::COUNT],
    pub buckets: [u64; NB],
    pub sum_seconds: f64,
    pub max_seconds: f64,
}

impl ClassSnapshot {
    fn add(&mut self, r: &RouteSnapshot) {
        for (a, b) in self.outcomes.iter_mut().zip(r.outcomes) {
            *a += b;
        }
        for (a, b) in self.buckets.iter_mut().zip(r.buckets) {
            *a += b;
        }
        self.sum_seconds += r.sum_seconds;
        self.max_seconds = self.max_seconds.max(r.max_seconds);
    }
    pub fn total(&self) -> u64 {
        self.outcomes.iter().sum()
    }
    pub fn count(&self, o: Outcome) -> u64 {
        self.outcomes[o.index()]
    }
    /// Failures at or behind the app: its 5xx answers, and sluice's 502s and 504s.
    pub fn failures(&self) -> u64 {
        self.count(Outcome::ServerError)
            + self.count(Outcome::BadGateway)
            + self.count(Outcome::GatewayTimeout)
    }
    pub fn mean_seconds(&self) -> f64 {
        match self.total() {
            0 => 0.0,
            n => self.sum_seconds / n as f64,
        }
    }
}

/// Every route and class at a point in time.
#[derive(Clone, Debug)]
pub struct StatsSnapshot {
    pub routes: Vec<RouteSnapshot>,
    pub classes: Vec<ClassSnapshot>,
}

/// Estimates the `q` quantile (seconds) of a request-duration histogram.
pub fn quantile(buckets: &[u64; NB], q: f64) -> Option<f64> {
    super::histogram::quantile_of(&DURATION_BUCKETS, buckets, q)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats() -> Arc<RequestStats> {
        Arc::new(RequestStats::new(
            vec![("a".into(), 0, "critical"), ("b".into(), 1, "low")],
            vec!["db".into(), "http".into()],
            2,
        ))
    }

    #[test]
    fn records_add_up_across_shards_and_reset_zeroes_them() {
        let s = stats();
        s.record(0, 0, Outcome::Success, Duration::from_millis(3));
        s.record(1, 0, Outcome::ServerError, Duration::from_millis(20));
        s.record(7, 1, Outcome::BadGateway, Duration::from_secs(100));
        let snap = s.snapshot();
        assert_eq!(snap.routes[0].total(), 2);
        assert_eq!(snap.routes[0].count(Outcome::ServerError), 1);
        assert_eq!(snap.routes[0].buckets[2], 1); // 3 ms -> le 0.005
        assert_eq!(snap.routes[0].buckets[4], 1); // 20 ms -> le 0.025
        assert_eq!(snap.routes[1].buckets[NB - 1], 1); // 100 s -> +Inf
        assert!((snap.routes[0].sum_seconds - 0.023).abs() < 1e-9);
        assert_eq!(snap.classes[1].count(Outcome::BadGateway), 1);
        s.reset();
        let snap = s.snapshot();
        assert_eq!(snap.routes[0].total() + snap.routes[1].total(), 0);
        assert_eq!(snap.routes[1].max_seconds, 0.0);
    }

    #[test]
    fn inflight_guard_releases_on_drop_and_survives_reset() {
        let s = stats();
        let g1 = s.inflight(1);
        let _g2 = s.inflight(1);
        s.reset();
        assert_eq!(s.snapshot().classes[1].inflight, 2);
        drop(g1);
        assert_eq!(s.snapshot().classes[1].inflight, 1);
    }

    #[test]
    fn quantile_interpolates_inside_buckets() {
        let mut b = [0u64; NB];
        assert_eq!(quantile(&b, 0.5), None);
        b[3] = 100; // all in (0.005, 0.01]
        let p50 = quantile(&b, 0.5).unwrap_or(0.0);
        assert!((p50 - 0.0075).abs() < 1e-9, "{p50}");
        b[NB - 1] = 100; // half beyond the last bound
        assert_eq!(quantile(&b, 0.99), Some(30.0));
    }
}
