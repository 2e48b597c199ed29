//! Turning cumulative counters into the degradation signals: each sample is compared with
//! the one about a second older, so a signal says what happened recently, not since
//! start-up. Pure: counters and instants come in, [`Signals`] parts come out.

use super::Signals;
use crate::metrics::quantile_of;
use std::collections::VecDeque;
use std::time::Duration;
use tokio::time::Instant;

/// Fewer events than this in the span: the ratio or percentile is unknown, not 0 or 1
/// (three failures out of four at night must not degrade the pod).
pub const MIN_VOLUME: u64 = 20;

/// Everything the signals are computed from, as running totals.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Requests a class's gate decided on: admitted, or refused for overload.
    pub decided: u64,
    /// Of those, refused for overload (queue full, displaced, queue timeout, shed).
    pub shed: u64,
    /// Per class: queue-wait histogram counts, all priorities together.
    pub waits: Vec<Vec<u64>>,
    /// Time-to-response-head histogram counts, all classes together.
    pub upstream: Vec<u64>,
    /// Requests that went to the app, and those that failed there (5xx, 502, 504).
    pub responses: u64,
    pub failures: u64,
}

/// Bucket bounds (seconds) of the two histograms.
#[derive(Clone, Copy, Debug)]
pub struct Bounds {
    pub waits: &'static [f64],
    pub upstream: &'static [f64],
}

/// Keeps the last second or so of samples and diffs against the oldest.
#[derive(Debug)]
pub struct Sampler {
    span: Duration,
    bounds: Bounds,
    history: VecDeque<(Instant, Counters)>,
}

impl Sampler {
    pub fn new(span: Duration, bounds: Bounds) -> Sampler {
        Sampler {
            span,
            bounds,
            history: VecDeque::new(),
        }
    }

    /// Records `now`'s counters and returns the signals over the span behind it (the
    /// breaker, CPU and memory fields are left for the caller).
    pub fn observe(&mut self, now: Instant, counters: Counters) -> Signals {
        // Keep exactly one sample at least `span` old as the base.
        while self.history.len() >= 2
            && self
                .history
                .get(1)
                .is_some_and(|(t, _)| now.saturating_duration_since(*t) >= self.span)
        {
            self.history.pop_front();
        }
        let signals = match self.history.front() {
            Some((_, base)) => match delta(base, &counters) {
                Some(d) => self.signals(&d),
                // A counter went backwards (admin reset): start over.
                None => {
                    self.history.clear();
                    Signals::default()
                }
            },
            None => Signals::default(),
        };
        self.history.push_back((now, counters));
        // Bounded whatever the sampling rate.
        while self.history.len() > 64 {
            self.history.pop_front();
        }
        signals
    }

    fn signals(&self, d: &Counters) -> Signals {
        let ratio =
            |part: u64, whole: u64| (whole >= MIN_VOLUME).then(|| part as f64 / whole as f64);
        let p99 = |bounds: &[f64], counts: &[u64]| {
            let n: u64 = counts.iter().sum();
            if n < MIN_VOLUME {
                return None;
            }
            quantile_of(bounds, counts, 0.99).map(Duration::from_secs_f64)
        };
        Signals {
            queue_wait: d
                .waits
                .iter()
                .filter_map(|w| p99(self.bounds.waits, w))
                .max(),
            shed_ratio: ratio(d.shed, d.decided),
            upstream_latency: p99(self.bounds.upstream, &d.upstream),
            error_ratio: ratio(d.failures, d.responses),
            ..Signals::default()
        }
    }
}

/// `new - old`, or `None` if anything went backwards or changed shape.
fn delta(old: &Counters, new: &Counters) -> Option<Counters> {
    let sub = |a: &[u64], b: &[u64]| -> Option<Vec<u64>> {
        if a.len() != b.len() {
            return None;
        }
        b.iter().zip(a).map(|(b, a)| b.checked_sub(*a)).collect()
    };
    if old.waits.len() != new.waits.len() {
        return None;
    }
    Some(Counters {
        decided: new.decided.checked_sub(old.decided)?,
        shed: new.shed.checked_sub(old.shed)?,
        waits: old
            .waits
            .iter()
            .zip(&new.waits)
            .map(|(a, b)| sub(a, b))
            .collect::<Option<_>>()?,
        upstream: sub(&old.upstream, &new.upstream)?,
        responses: new.responses.checked_sub(old.responses)?,
        failures: new.failures.checked_sub(old.failures)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: &[f64] = &[0.01, 0.1, 1.0];

    fn sampler() -> Sampler {
        Sampler::new(
            Duration::from_secs(1),
            Bounds {
                waits: B,
                upstream: B,
            },
        )
    }

    fn counters(
        decided: u64,
        shed: u64,
        wait: [u64; 4],
        responses: u64,
        failures: u64,
    ) -> Counters {
        Counters {
            decided,
            shed,
            waits: vec![wait.to_vec(), vec![0; 4]],
            upstream: wait.to_vec(),
            responses,
            failures,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn signals_are_rates_over_the_last_second() {
        let mut s = sampler();
        let t0 = Instant::now();
        assert_eq!(
            s.observe(t0, counters(1000, 0, [0; 4], 900, 0)),
            Signals::default()
        );
        let step = Duration::from_millis(250);
        // 100 decided, 40 shed, 100 waits all in the 0.1-1 s bucket, 100 responses, 30 failed.
        let now = t0 + step;
        let got = s.observe(now, counters(1100, 40, [0, 0, 100, 0], 1000, 30));
        assert_eq!(got.shed_ratio, Some(0.4));
        assert_eq!(got.error_ratio, Some(0.3));
        let wait = got.queue_wait.unwrap();
        assert!(
            wait > Duration::from_millis(900) && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        assert_eq!(got.upstream_latency, got.queue_wait);
        assert!(!got.breaker_open);
        assert_eq!(got.cpu_ratio, None);
        // Calm traffic afterwards: once the burst is more than a second behind, the
        // signals say calm.
        let mut last = got;
        for i in 2..=6u64 {
            let n = 100 * i;
            last = s.observe(
                t0 + step * i as u32,
                counters(1000 + n, 40, [0, 0, 100, 0], 900 + n, 30),
            );
        }
        assert_eq!(last.shed_ratio, Some(0.0));
        assert_eq!(last.error_ratio, Some(0.0));
        assert_eq!(last.queue_wait, None, "no waits in the last second");
    }

    #[tokio::test(start_paused = true)]
    async fn low_volume_is_unknown_not_a_ratio() {
        let mut s = sampler();
        let t0 = Instant::now();
        s.observe(t0, counters(0, 0, [0; 4], 0, 0));
        let got = s.observe(
            t0 + Duration::from_millis(500),
            counters(MIN_VOLUME - 1, MIN_VOLUME - 1, [0, 0, 0, 5], 4, 3),
        );
        assert_eq!(got, Signals::default());
    }

    #[tokio::test(start_paused = true)]
    async fn counters_going_backwards_restart_the_history() {
        let mut s = sampler();
        let t0 = Instant::now();
        s.observe(t0, counters(500, 100, [0; 4], 500, 100));
        let got = s.observe(
            t0 + Duration::from_millis(250),
            counters(10, 0, [0; 4], 10, 0),
        );
        assert_eq!(got, Signals::default());
        let got = s.observe(
            t0 + Duration::from_millis(500),
            counters(110, 50, [0; 4], 110, 0),
        );
        assert_eq!(got.shed_ratio, Some(0.5));
    }

    #[tokio::test(start_paused = true)]
    async fn history_stays_bounded() {
        let mut s = sampler();
        let t0 = Instant::now();
        for i in 0..1000u64 {
            s.observe(t0 + Duration::from_micros(i), counters(i, 0, [0; 4], i, 0));
        }
        assert!(s.history.len() <= 64);
    }
}
