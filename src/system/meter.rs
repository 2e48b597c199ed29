//! [`CpuMeter`]: a cumulative CPU-time counter in, a utilisation ratio per interval out.
//! Pure: the caller reads the counter and the clock.

use std::time::Duration;
use tokio::time::Instant;

/// Readings closer together than this give no new ratio.
pub const MIN_INTERVAL: Duration = Duration::from_millis(250);

/// Remembers the previous `(usage, instant)` reading and the last ratio.
#[derive(Clone, Debug, Default)]
pub struct CpuMeter {
    last: Option<(Duration, Instant)>,
    ratio: Option<f64>,
}

impl CpuMeter {
    pub fn new() -> CpuMeter {
        CpuMeter::default()
    }

    /// Records `usage` (cumulative CPU time) read at `now` and returns the share of
    /// `cores` used since the previous reading: `Δusage / (Δwall × cores)`. 1.0 means
    /// every core was busy the whole interval; bursts can briefly exceed it.
    ///
    /// Less than [`MIN_INTERVAL`] after the baseline, the previous ratio again (the
    /// baseline is kept). `None` for the first reading, when the counter went backwards
    /// (its cgroup was recreated; the new reading becomes the baseline), and when `cores`
    /// is not a positive number.
    pub fn observe(&mut self, usage: Duration, now: Instant, cores: f64) -> Option<f64> {
        let (prev_usage, prev_at) = self.last.replace((usage, now))?;
        // Too short an interval says more about counter granularity than about load
        // (process CPU time moves in 10 ms ticks): keep the older baseline and ratio.
        if now.saturating_duration_since(prev_at) < MIN_INTERVAL {
            self.last = Some((prev_usage, prev_at));
            return self.ratio;
        }
        let wall = now.duration_since(prev_at).as_secs_f64();
        self.ratio = usage
            .checked_sub(prev_usage)
            .filter(|_| cores.is_finite() && cores > 0.0)
            .map(|used| used.as_secs_f64() / (wall * cores));
        self.ratio
    }

    /// Forgets the baseline and the last ratio, e.g. when the counter's source changed.
    pub fn reset(&mut self) {
        *self = CpuMeter::default();
    }
}
