//! The breakers sluice runs: one for the app, or one per admission class, each named
//! (the name is the metric label), with its transitions logged and counted, and a call
//! guard that reports a cancelled request as neutral so no probe slot is lost.

use super::{Breaker, BreakerSettings, CallResult, State, Ticket, Transition, TripReason};
use crate::config::{BreakerConfig, BreakerScope, ClassConfig};
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;
use tokio::time::Instant;

/// One breaker with its name and counters.
pub struct Named {
    pub name: String,
    pub breaker: Breaker,
    /// Transitions by the state entered, in `State::ALL` order.
    transitions: [AtomicU64; 3],
    /// Trips to open by reason, in `TripReason::ALL` order.
    trips: [AtomicU64; 4],
}

/// Every breaker, and which one each class uses.
pub struct Breakers {
    pub config: BreakerConfig,
    pub all: Vec<Named>,
    by_class: Vec<usize>,
}

impl Breakers {
    /// `None` when `circuit_breaker.enabled = false`.
    pub fn new(config: &BreakerConfig, classes: &[ClassConfig], now: Instant) -> Option<Breakers> {
        if !config.enabled {
            return None;
        }
        let names: Vec<String> = match config.scope {
            BreakerScope::Upstream => vec!["upstream".to_string()],
            BreakerScope::Class => classes.iter().map(|c| c.name.clone()).collect(),
        };
        let seeds = std::collections::hash_map::RandomState::new();
        let all = names
            .into_iter()
            .map(|name| {
                let mut h = seeds.build_hasher();
                h.write(name.as_bytes());
                Named {
                    breaker: Breaker::new(settings(config), h.finish(), now),
                    name,
                    transitions: Default::default(),
                    trips: Default::default(),
                }
            })
            .collect();
        let by_class = (0..classes.len())
            .map(|c| match config.scope {
                BreakerScope::Upstream => 0,
                BreakerScope::Class => c,
            })
            .collect();
        Some(Breakers {
            config: config.clone(),
            all,
            by_class,
        })
    }

    pub fn for_class(&self, class: usize) -> Option<&Named> {
        self.all.get(*self.by_class.get(class)?)
    }

    /// Whether any breaker is open or half-open (a degradation signal).
    pub fn any_open(&self, now: Instant) -> bool {
        self.all
            .iter()
            .any(|b| b.breaker.state(now) != State::Closed)
    }

    /// Whether a response with this status counts as a failure.
    pub fn is_failure_status(&self, status: http::StatusCode) -> bool {
        self.config.failure_statuses.contains(status.as_u16())
    }

    /// The app's health checks say it is back: open breakers probe now rather than wait
    /// out intervals that may have doubled several times.
    pub fn app_recovered(&self, now: Instant) {
        for b in &self.all {
            if b.breaker.end_open_interval(now) {
                tracing::info!(breaker = %b.name, "health checks passing again: breaker will probe now");
            }
        }
    }

    /// Closes every breaker (admin endpoint); returns how many were not closed.
    pub fn reset(&self, now: Instant) -> usize {
        let mut n = 0;
        for b in &self.all {
            if let Some(t) = b.breaker.reset(now) {
                b.note(&t, "operator");
                n += 1;
            }
        }
        n
    }
}

impl Named {
    /// Asks to send one call: a guard to report its result, or how long until retrying
    /// makes sense.
    pub fn acquire(&self, now: Instant) -> Result<Call<'_>, Duration> {
        let (ticket, transition) = self.breaker.acquire(now);
        if let Some(t) = transition {
            self.note(&t, "interval passed");
        }
        ticket.map(|ticket| Call {
            named: self,
            ticket: Some(ticket),
        })
    }

    pub fn transitions_to(&self, s: State) -> u64 {
        self.transitions[state_index(s)].load(Relaxed)
    }

    pub fn trips(&self, r: TripReason) -> u64 {
        self.trips[trip_index(r)].load(Relaxed)
    }

    fn note(&self, t: &Transition, cause: &str) {
        self.transitions[state_index(t.to)].fetch_add(1, Relaxed);
        if let Some(r) = t.reason {
            self.trips[trip_index(r)].fetch_add(1, Relaxed);
        }
        let (from, to) = (t.from.as_str(), t.to.as_str());
        match t.to {
            State::Open => tracing::warn!(
                breaker = %self.name, from, to,
                reason = t.reason.map_or("", TripReason::as_str),
                open_for = ?t.open_for,
                "circuit breaker opened"
            ),
            State::HalfOpen => {
                tracing::info!(breaker = %self.name, from, to, cause, "circuit breaker half-open: probing")
            }
            State::Closed => {
                tracing::info!(breaker = %self.name, from, to, cause, "circuit breaker closed")
            }
        }
    }
}

/// One call let through by a breaker. Report its result with [`Call::finish`]; dropped
/// unreported (the client went away), it counts as neither success nor failure.
pub struct Call<'a> {
    named: &'a Named,
    ticket: Option<Ticket>,
}

impl Call<'_> {
    pub fn finish(mut self, result: CallResult) {
        if let Some(t) = self.ticket.take() {
            self.report(t, result);
        }
    }

    fn report(&self, ticket: Ticket, result: CallResult) {
        if let Some(t) = self.named.breaker.record(ticket, result, Instant::now()) {
            self.named.note(&t, "call result");
        }
    }
}

impl Drop for Call<'_> {
    fn drop(&mut self) {
        if let Some(t) = self.ticket.take() {
            self.report(t, CallResult::Ignored);
        }
    }
}

fn settings(c: &BreakerConfig) -> BreakerSettings {
    BreakerSettings {
        consecutive_failures: c.failure_threshold,
        failure_rate: c.failure_rate,
        slow_call_rate: c.slow_call_rate,
        slow_call: c.slow_call,
        window: c.window,
        minimum_calls: c.minimum_calls,
        open_base: c.open,
        open_max: c.max_open,
        jitter: c.jitter,
        half_open_probes: c.half_open_probes,
    }
}

fn state_index(s: State) -> usize {
    State::ALL.iter().position(|x| *x == s).unwrap_or(0)
}

fn trip_index(r: TripReason) -> usize {
    TripReason::ALL.iter().position(|x| *x == r).unwrap_or(0)
}
