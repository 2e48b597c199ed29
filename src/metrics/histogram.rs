//! A fixed-bucket histogram of durations on atomics: lock-free to observe, resettable,
//! readable as per-bucket counts for Prometheus and for percentiles.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

pub struct AtomicHistogram {
    bounds: &'static [f64],
    /// One more than `bounds`: the last is +Inf.
    buckets: Box<[AtomicU64]>,
    sum_us: AtomicU64,
}

/// A histogram's numbers at one moment.
#[derive(Clone, Debug, Default)]
pub struct HistogramSnapshot {
    pub bounds: &'static [f64],
    pub counts: Vec<u64>,
    pub sum_seconds: f64,
}

impl HistogramSnapshot {
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    pub fn quantile(&self, q: f64) -> Option<f64> {
        quantile_of(self.bounds, &self.counts, q)
    }
}

impl AtomicHistogram {
    pub fn new(bounds: &'static [f64]) -> AtomicHistogram {
        AtomicHistogram {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_us: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = self
            .bounds
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(self.bounds.len());
        self.buckets[i].fetch_add(1, Relaxed);
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.sum_us.fetch_add(us, Relaxed);
    }

    pub fn reset(&self) {
        for b in self.buckets.iter() {
            b.store(0, Relaxed);
        }
        self.sum_us.store(0, Relaxed);
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            bounds: self.bounds,
            counts: self.buckets.iter().map(|b| b.load(Relaxed)).collect(),
            sum_seconds: self.sum_us.load(Relaxed) as f64 / 1e6,
        }
    }
}

/// Estimates the `q` quantile (0..=1) in seconds from per-bucket counts (the last bucket
/// is +Inf), interpolating inside a bucket as Prometheus' `histogram_quantile` does.
/// `None` when there are no observations.
pub fn quantile_of(bounds: &[f64], counts: &[u64], q: f64) -> Option<f64> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = q.clamp(0.0, 1.0) * total as f64;
    let mut seen = 0u64;
    for (i, &c) in counts.iter().enumerate() {
        if c > 0 && (seen + c) as f64 >= rank {
            let lower = if i == 0 { 0.0 } else { bounds[i - 1] };
            let Some(&upper) = bounds.get(i) else {
                // +Inf bucket: the highest finite bound, as Prometheus does.
                return Some(lower);
            };
            let within = (rank - seen as f64) / c as f64;
            return Some(lower + (upper - lower) * within);
        }
        seen += c;
    }
    bounds.last().copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: [f64; 3] = [0.01, 0.1, 1.0];

    #[test]
    fn observes_resets_and_estimates() {
        let h = AtomicHistogram::new(&B);
        assert_eq!(h.snapshot().quantile(0.5), None);
        for ms in [5, 5, 50, 500, 5000] {
            h.observe(Duration::from_millis(ms));
        }
        let s = h.snapshot();
        assert_eq!(s.counts, [2, 1, 1, 1]);
        assert!((s.sum_seconds - 5.56).abs() < 1e-9);
        assert_eq!(s.quantile(0.99), Some(1.0));
        let p40 = s.quantile(0.4).unwrap_or(0.0);
        assert!((p40 - 0.01).abs() < 1e-9, "{p40}");
        h.reset();
        assert_eq!(h.snapshot().count(), 0);
    }
}
