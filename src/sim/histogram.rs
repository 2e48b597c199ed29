//! A log-linear latency histogram in the style of HdrHistogram, written small.
//!
//! Values are microseconds. Below `2^bits` each value has its own bucket; above, every
//! power of two is split into `2^bits` equal buckets, so a recorded value is known to
//! within `2^-bits` of itself (0.8 % at the default 7 bits). Memory is fixed at creation
//! (2,560 counters at 7 bits for the 60 s range); values above the range are clamped to
//! it, and the exact maximum is kept beside the buckets.

/// Largest value the buckets resolve: 60 s in microseconds.
pub const MAX_MICROS: u64 = 60_000_000;

/// Sub-bucket bits for the default precision: relative error under 1/128.
pub const DEFAULT_BITS: u32 = 7;

/// Counts of microsecond values in log-linear buckets; see the module docs.
#[derive(Clone, Debug)]
pub struct Histogram {
    bits: u32,
    counts: Box<[u64]>,
    total: u64,
    sum: u128,
    min: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

impl Histogram {
    /// A histogram at the default precision (relative error under 1 %).
    pub fn new() -> Self {
        Self::with_bits(DEFAULT_BITS)
    }

    /// A histogram whose buckets are within `2^-bits` of their values (`bits` in 1..=16).
    /// Fewer bits cost less memory: 5 bits (3 %) is 704 counters.
    pub fn with_bits(bits: u32) -> Self {
        let bits = bits.clamp(1, 16);
        let len = index_of(bits, MAX_MICROS) + 1;
        Self {
            bits,
            counts: vec![0; len].into_boxed_slice(),
            total: 0,
            sum: 0,
            min: u64::MAX,
            max: 0,
        }
    }

    /// Record one value in microseconds (values past [`MAX_MICROS`] land in the last bucket).
    pub fn record(&mut self, micros: u64) {
        let idx = index_of(self.bits, micros.min(MAX_MICROS));
        self.counts[idx] += 1;
        self.total += 1;
        self.sum += u128::from(micros);
        self.min = self.min.min(micros);
        self.max = self.max.max(micros);
    }

    /// Record a duration (rounded down to the microsecond).
    pub fn record_duration(&mut self, d: std::time::Duration) {
        self.record(u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
    }

    /// Add every count of `other` (which must have the same precision to be exact; a
    /// coarser or finer one is re-bucketed by its bucket values).
    pub fn merge(&mut self, other: &Histogram) {
        if other.total == 0 {
            return;
        }
        for (idx, &n) in other.counts.iter().enumerate() {
            if n == 0 {
                continue;
            }
            let at = if other.bits == self.bits {
                idx
            } else {
                index_of(self.bits, other.value_at(idx))
            };
            self.counts[at] += n;
        }
        self.total += other.total;
        self.sum += other.sum;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }

    /// Number of values recorded.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// Exact largest value recorded, 0 when empty.
    pub fn max(&self) -> u64 {
        self.max
    }

    /// Exact smallest value recorded, 0 when empty.
    pub fn min(&self) -> u64 {
        if self.total == 0 {
            0
        } else {
            self.min
        }
    }

    /// Exact mean in microseconds, 0 when empty.
    pub fn mean(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.sum as f64 / self.total as f64
        }
    }

    /// The value at quantile `q` (0.0..=1.0): the smallest bucket value such that at least
    /// `q` of the values are at or below it. 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (idx, &n) in self.counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return self.value_at(idx).clamp(self.min, self.max);
            }
        }
        self.max
    }

    /// The representative value of bucket `idx`: its midpoint.
    fn value_at(&self, idx: usize) -> u64 {
        let sub_count = 1usize << self.bits;
        if idx < sub_count {
            return idx as u64;
        }
        let shift = (idx / sub_count - 1) as u32;
        let sub = (idx % sub_count) as u64;
        let low = (sub_count as u64 + sub) << shift;
        let width = 1u64 << shift;
        low + width / 2
    }
}

/// Bucket index of `v` for `bits` sub-bucket bits (see the module docs for the layout).
fn index_of(bits: u32, v: u64) -> usize {
    let sub_count = 1u64 << bits;
    if v < sub_count {
        return v as usize;
    }
    let exp = 63 - v.leading_zeros();
    let shift = exp - bits;
    let sub = (v >> shift) - sub_count;
    ((u64::from(shift) + 1) * sub_count + sub) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exact(sorted: &[u64], q: f64) -> u64 {
        let rank = ((q * sorted.len() as f64).ceil() as usize).max(1);
        sorted[rank - 1]
    }

    fn assert_close(got: u64, want: u64, tolerance: f64) {
        let err = (got as f64 - want as f64).abs() / (want as f64).max(1.0);
        assert!(err <= tolerance, "got {got}, want {want} (error {err:.4})");
    }

    #[test]
    fn small_values_are_exact() {
        let mut h = Histogram::new();
        for v in 0..128 {
            h.record(v);
        }
        assert_eq!(h.quantile(0.5), 63);
        assert_eq!(h.quantile(1.0), 127);
        assert_eq!(h.min(), 0);
        assert_eq!(h.count(), 128);
    }

    #[test]
    fn percentiles_within_one_percent_on_synthetic_data() {
        // A deterministic spread over five decades: 100 us .. 10 s, log-uniform-ish,
        // plus a heavy tail, like a latency distribution under overload.
        let mut values = Vec::new();
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for i in 0..200_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let unit = (x >> 11) as f64 / (1u64 << 53) as f64;
            let v = if i % 100 == 0 {
                1_000_000 + (unit * 9_000_000.0) as u64
            } else {
                (100.0 * 10f64.powf(unit * 3.0)) as u64
            };
            values.push(v);
        }
        let mut h = Histogram::new();
        for &v in &values {
            h.record(v);
        }
        values.sort_unstable();
        for q in [0.5, 0.9, 0.99, 0.999, 1.0] {
            assert_close(h.quantile(q), exact(&values, q), 0.01);
        }
        assert_eq!(h.max(), *values.last().unwrap());
        let mean = values.iter().sum::<u64>() as f64 / values.len() as f64;
        assert!((h.mean() - mean).abs() < 1e-6 * mean);
    }

    #[test]
    fn clamps_beyond_range_and_keeps_exact_max() {
        let mut h = Histogram::new();
        h.record(MAX_MICROS * 10);
        assert_eq!(h.max(), MAX_MICROS * 10);
        assert_eq!(h.quantile(1.0), MAX_MICROS * 10);
        assert_close(h.quantile(0.5), MAX_MICROS * 10, 0.0);
    }

    #[test]
    fn merge_adds_counts_and_coarse_precision_stays_within_bound() {
        let mut fine = Histogram::new();
        let mut coarse = Histogram::with_bits(5);
        for v in (1..=100_000u64).step_by(7) {
            fine.record(v);
            coarse.record(v);
        }
        assert_close(coarse.quantile(0.99), fine.quantile(0.99), 0.04);
        let mut merged = Histogram::new();
        merged.merge(&fine);
        merged.merge(&fine);
        assert_eq!(merged.count(), 2 * fine.count());
        assert_eq!(merged.quantile(0.9), fine.quantile(0.9));
        assert_eq!(Histogram::new().quantile(0.99), 0);
    }
}
