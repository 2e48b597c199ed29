//! [`CpuMeter`]: a cumulative CPU-time counter in, a utilisation ratio per interval out.
//! Pure: the caller reads the counter and the clock.

use std::time::Duration;
use tokio::time::Instant;

/// Readings closer together than this give no ratio.
pub const MIN_INTERVAL: Duration = Duration::from_millis(250);

/// Remembers the previous `(usage, instant)` reading.
#[derive(Clone, Debug, Default)]
pub struct CpuMeter {
    last: Option<(Duration, Instant)>,
}

impl CpuMeter {
    pub fn new() -> CpuMeter {
        CpuMeter::default()
    }

    /// Records `usage` (cumulative CPU time) read at `now` and returns the share of
    /// `cores` used since the previous reading: `Δusage / (Δwall × cores)`. 1.0 means
    /// every core was busy the whole interval; bursts can briefly exceed it.
    ///
    /// `None` for the first reading, when less than [`MIN_INTERVAL`] has passed (the older
    /// baseline is kept),
    /// when the counter went backwards (its cgroup was recreated; the new reading becomes
    /// the baseline), and when `cores` is not a positive number.
    pub fn observe(&mut self, usage: Duration, now: Instant, cores: f64) -> Option<f64> {
        let (prev_usage, prev_at) = self.last.replace((usage, now))?;
        // Too short an interval says more about counter granularity than about load
        // (process CPU time moves in 10 ms ticks): keep the older baseline.
        if now.saturating_duration_since(prev_at) < MIN_INTERVAL {
            self.last = Some((prev_usage, prev_at));
            return None;
        }
        let used = usage.checked_sub(prev_usage)?;
        let wall = now.duration_since(prev_at).as_secs_f64();
        (cores.is_finite() && cores > 0.0).then(|| used.as_secs_f64() / (wall * cores))
    }

    /// Whether a reading at `now` would come too soon after the baseline to give a ratio.
    pub fn too_soon(&self, now: Instant) -> bool {
        self.last
            .is_some_and(|(_, at)| now.saturating_duration_since(at) < MIN_INTERVAL)
    }

    /// Forgets the baseline, e.g. when the counter's source changed.
    pub fn reset(&mut self) {
        self.last = None;
    }
}
