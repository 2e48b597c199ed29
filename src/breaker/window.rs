//! The closed breaker's sliding window: calls, failures and slow calls over the last
//! `window`, counted without a lock.
//!
//! A ring of [`BUCKETS`] buckets, each `window / BUCKETS` long and keyed by its slice
//! number (its epoch); the counts cover the last `BUCKETS` slices, so between 90% and 100%
//! of `window`. Rolling a bucket over to a new slice is a CAS on its epoch followed by
//! zeroing its counters: an increment another thread lands between the two is lost, and a
//! [`Window::clear`] racing a recording may keep or lose that call. Either way it is a
//! call or two, which the rates tolerate; nothing else depends on exact counts.

use super::nanos;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::Duration;
use tokio::time::Instant;

pub(super) const BUCKETS: usize = 10;

/// One slice. `epoch` is the slice's number plus one (0: unused). A cache line to itself,
/// so the counters every call bumps share no line with the breaker's state word.
#[derive(Default)]
#[repr(align(64))]
struct Bucket {
    epoch: AtomicU64,
    calls: AtomicU32,
    failures: AtomicU32,
    slow: AtomicU32,
}

impl Bucket {
    fn zero(&self) {
        for counter in [&self.calls, &self.failures, &self.slow] {
            counter.store(0, Relaxed);
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Counts {
    pub calls: u32,
    pub failures: u32,
    pub slow: u32,
}

pub(super) struct Window {
    origin: Instant,
    bucket_nanos: u64,
    buckets: [Bucket; BUCKETS],
}

impl Window {
    pub(super) fn new(window: Duration, now: Instant) -> Window {
        Window {
            origin: now,
            bucket_nanos: (nanos(window) / BUCKETS as u64).max(1),
            buckets: Default::default(),
        }
    }

    fn epoch(&self, now: Instant) -> u64 {
        nanos(now.saturating_duration_since(self.origin)) / self.bucket_nanos + 1
    }

    /// Counts one call in the current slice's bucket, rolling the bucket over first if it
    /// still holds an older slice.
    pub(super) fn record(&self, now: Instant, failed: bool, slow: bool) {
        let epoch = self.epoch(now);
        let bucket = &self.buckets[(epoch % BUCKETS as u64) as usize];
        let seen = bucket.epoch.load(Relaxed);
        if seen < epoch
            && bucket
                .epoch
                .compare_exchange(seen, epoch, Relaxed, Relaxed)
                .is_ok()
        {
            bucket.zero();
        }
        bucket.calls.fetch_add(1, Relaxed);
        if failed {
            bucket.failures.fetch_add(1, Relaxed);
        }
        if slow {
            bucket.slow.fetch_add(1, Relaxed);
        }
    }

    /// The sums over the last `BUCKETS` slices (and over any slice a thread with a
    /// slightly later `now` has already started).
    pub(super) fn counts(&self, now: Instant) -> Counts {
        let epoch = self.epoch(now);
        let mut sum = Counts::default();
        for bucket in &self.buckets {
            let seen = bucket.epoch.load(Relaxed);
            if seen == 0 || epoch.saturating_sub(seen) >= BUCKETS as u64 {
                continue;
            }
            sum.calls = sum.calls.saturating_add(bucket.calls.load(Relaxed));
            sum.failures = sum.failures.saturating_add(bucket.failures.load(Relaxed));
            sum.slow = sum.slow.saturating_add(bucket.slow.load(Relaxed));
        }
        sum
    }

    pub(super) fn clear(&self) {
        for bucket in &self.buckets {
            bucket.epoch.store(0, Relaxed);
            bucket.zero();
        }
    }
}
