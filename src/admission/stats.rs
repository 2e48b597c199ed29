//! Per-class admission counters: admissions and queue waits by priority, refusals by
//! priority and reason. Atomics only; read by the JSON endpoint and the collector.

use super::Rejection;
use crate::metrics::AtomicHistogram;
use crate::priority::Priority;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Upper bounds (seconds) of `sluice_queue_wait_seconds`: 0.5 ms to 10 s.
pub const WAIT_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

pub struct GateStats {
    admitted: [AtomicU64; 5],
    rejected: [[AtomicU64; Rejection::COUNT]; 5],
    pub waits: [AtomicHistogram; 5],
    /// Time from sending to the app's response head, for admitted requests.
    pub upstream: AtomicHistogram,
}

impl Default for GateStats {
    fn default() -> Self {
        GateStats {
            admitted: Default::default(),
            rejected: Default::default(),
            waits: std::array::from_fn(|_| AtomicHistogram::new(&WAIT_BUCKETS)),
            upstream: AtomicHistogram::new(&crate::metrics::DURATION_BUCKETS),
        }
    }
}

impl GateStats {
    pub(crate) fn admitted(&self, p: Priority, waited: Duration) {
        self.admitted[p.index()].fetch_add(1, Relaxed);
        self.waits[p.index()].observe(waited);
    }

    pub(crate) fn rejected(&self, p: Priority, reason: Rejection) {
        self.rejected[p.index()][reason.index()].fetch_add(1, Relaxed);
    }

    pub fn admitted_count(&self, p: Priority) -> u64 {
        self.admitted[p.index()].load(Relaxed)
    }

    pub fn rejected_count(&self, p: Priority, reason: Rejection) -> u64 {
        self.rejected[p.index()][reason.index()].load(Relaxed)
    }

    /// Zeroes counters and histograms (admin reset).
    pub fn reset(&self) {
        for c in self.admitted.iter().chain(self.rejected.iter().flatten()) {
            c.store(0, Relaxed);
        }
        for h in &self.waits {
            h.reset();
        }
        self.upstream.reset();
    }
}
