//! Admission control: who goes to the app now, who waits, who is refused.
//!
//! Order for each request (bypass routes and `concurrency.enabled = false` skip it all):
//! 1. the route's **rate limit** (token bucket, optionally per client key) → `429`;
//! 2. the class's **gate**: a free concurrency slot admits at once; otherwise the request
//!    waits in the class's bounded priority queue until a slot frees, its deadline
//!    passes, or a higher-priority arrival displaces it → `503` with `Retry-After`.
//!
//! Each class's limit adapts to the app's latency ([`limit`]); the controller task
//! closes a measurement window every [`WINDOW`] and feeds it to every class's limiter.
//! Decisions are pure ([`queue`], [`rate`], [`limit`]); [`gate`] is the shell around
//! them that owns the locks, the clock and the channels.

mod collector;
pub mod gate;
pub mod limit;
pub mod queue;
pub mod rate;
mod stats;

pub use collector::AdmissionCollector;
pub use gate::{Gate, Permit, Refused};
pub use stats::WAIT_BUCKETS;

use crate::config::{Config, KeySource};
use crate::priority::Priority;
use http::HeaderMap;
use limit::{GradientLimit, LimitSettings, Limiter};
use rate::{KeyedBuckets, Rate};
use std::hash::{BuildHasher, Hash, Hasher};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// How often the controller looks at each class; a class's measurement window closes at
/// such a tick once it holds enough completions (see [`gate`]).
pub const WINDOW: Duration = Duration::from_millis(100);
/// While any class has waiters, how often the controller looks for a queue that has
/// just begun to stand (see [`Gate::sweep_if_newly_standing`]).
pub const SWEEP_POLL: Duration = Duration::from_millis(10);
/// Most per-key rate-limit buckets kept per route.
const MAX_RATE_KEYS: usize = 100_000;

/// Why admission refused a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// The class's queue is full of waiters at or above this priority.
    QueueFull,
    /// A higher-priority arrival took this waiter's place in a full queue.
    Displaced,
    /// The wait reached its deadline (shortened while the queue is standing).
    QueueTimeout,
    /// Refused on arrival: at the measured drain rate it would not be served in time.
    Shed,
    /// The route's token bucket is empty.
    RateLimited,
    /// The circuit breaker is open (or half-open with every probe slot taken).
    CircuitOpen,
    /// Degradation mode refuses this priority.
    Degraded,
}

impl Rejection {
    pub const ALL: [Rejection; 7] = [
        Rejection::QueueFull,
        Rejection::Displaced,
        Rejection::QueueTimeout,
        Rejection::Shed,
        Rejection::RateLimited,
        Rejection::CircuitOpen,
        Rejection::Degraded,
    ];
    pub const COUNT: usize = Self::ALL.len();

    pub fn as_str(self) -> &'static str {
        match self {
            Rejection::QueueFull => "queue_full",
            Rejection::Displaced => "displaced",
            Rejection::QueueTimeout => "queue_timeout",
            Rejection::Shed => "shed",
            Rejection::RateLimited => "rate_limited",
            Rejection::CircuitOpen => "circuit_open",
            Rejection::Degraded => "degraded",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }

    /// Refusals that say the class itself is over capacity (the shed-rate signal).
    pub fn is_overload(self) -> bool {
        matches!(
            self,
            Rejection::QueueFull | Rejection::Displaced | Rejection::QueueTimeout | Rejection::Shed
        )
    }
}

struct RouteRate {
    key: KeySource,
    buckets: Mutex<KeyedBuckets>,
}

/// Every class's gate and every route's rate limit.
pub struct Admission {
    pub gates: Vec<Arc<Gate>>,
    rates: Vec<Option<RouteRate>>,
    hasher: std::collections::hash_map::RandomState,
}

impl Admission {
    pub fn new(config: &Config) -> Arc<Admission> {
        let now = Instant::now();
        let gates = config
            .classes
            .iter()
            .map(|c| {
                let limiter = if c.adaptive && c.min_concurrent < c.max_concurrent {
                    Limiter::Gradient(Box::new(GradientLimit::new(LimitSettings {
                        min: c.min_concurrent,
                        max: c.max_concurrent,
                    })))
                } else {
                    Limiter::Fixed(c.max_concurrent)
                };
                Gate::new(c.clone(), limiter)
            })
            .collect();
        let rates = config
            .routes
            .iter()
            .map(|r| {
                r.rate_limit.as_ref().map(|rl| RouteRate {
                    key: rl.key.clone(),
                    buckets: Mutex::new(KeyedBuckets::new(
                        Rate {
                            per_second: rl.per_second,
                            burst: f64::from(rl.burst),
                        },
                        MAX_RATE_KEYS,
                        now,
                    )),
                })
            })
            .collect();
        Arc::new(Admission {
            gates,
            rates,
            hasher: std::collections::hash_map::RandomState::new(),
        })
    }

    pub fn gate(&self, class: usize) -> Option<&Arc<Gate>> {
        self.gates.get(class)
    }

    /// A 64-bit key for fairness or rate limiting (`0` when the source gives none).
    pub fn key_of(&self, source: &KeySource, peer: IpAddr, headers: &HeaderMap) -> u64 {
        let mut h = self.hasher.build_hasher();
        match source {
            KeySource::None => return 0,
            KeySource::ClientIp => peer.hash(&mut h),
            KeySource::Header(name) => match headers.get(name) {
                Some(v) => v.as_bytes().hash(&mut h),
                None => return 0,
            },
        }
        h.finish()
    }

    /// Takes a token from the route's bucket, or says how long until one is free.
    pub fn check_rate(
        &self,
        route: usize,
        priority: Priority,
        class: usize,
        peer: IpAddr,
        headers: &HeaderMap,
    ) -> Result<(), Refused> {
        let Some(Some(rate)) = self.rates.get(route) else {
            return Ok(());
        };
        let key = self.key_of(&rate.key, peer, headers);
        let taken = match rate.buckets.lock() {
            Ok(mut b) => b.try_take(key, Instant::now()),
            Err(_) => Ok(()),
        };
        taken.map_err(|wait| {
            if let Some(g) = self.gates.get(class) {
                g.stats.rejected(priority, Rejection::RateLimited);
            }
            Refused {
                reason: Rejection::RateLimited,
                // Whole seconds, rounded up, at least 1 (Retry-After has no fractions).
                retry_after: Duration::from_secs(wait.as_secs_f64().ceil().max(1.0) as u64),
            }
        })
    }

    /// Zeroes admission counters and histograms (not gauges, not limits).
    pub fn reset(&self) {
        for g in &self.gates {
            g.stats.reset();
        }
    }

    /// The controller: offers every gate a window close each [`WINDOW`] until shutdown,
    /// and while any class has waiters, looks every [`SWEEP_POLL`] for a queue that has
    /// just begun to stand (an idle sidecar wakes only for the windows).
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut ticker = tokio::time::interval(WINDOW);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut poll_at = None;
        loop {
            let poll = async move {
                match poll_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = ticker.tick() => {
                    let now = Instant::now();
                    for g in &self.gates {
                        g.end_window(now);
                    }
                }
                _ = poll => {
                    let now = Instant::now();
                    for g in &self.gates {
                        g.sweep_if_newly_standing(now);
                    }
                }
                _ = crate::listener::stopped(&mut shutdown) => return,
            }
            let waiting = self.gates.iter().any(|g| g.queued() > 0);
            poll_at = waiting.then(|| Instant::now() + SWEEP_POLL);
        }
    }
}
