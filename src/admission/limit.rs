//! The adaptive concurrency limit of one class: how many requests may be in the app at
//! once. Pure: no clock, no I/O, no locks, no randomness. The shell aggregates completions
//! into a [`WindowSample`] (100–250 ms, longer if fewer than ~10 completions arrived; fill
//! in `window`), calls [`GradientLimit::update`] once per window and enforces the limit.
//! `dropped` counts upstream timeouts, 503s from the app and connect failures, never
//! sluice's own refusals.
//!
//! # Algorithm (after Netflix `Gradient2Limit`, TCP Vegas and slow start)
//! - **Baseline**: the app's mean latency with no queue. Learned from the first usable
//!   window, then only lowered by faster windows. It never rises on its own, so sustained
//!   overload (every window queued) cannot drag it up, the failure of long-term averages.
//! - **Slow start**: from `min` (a first window above capacity would learn a queued
//!   baseline), double while latency stays within 1.25× the baseline and
//!   throughput keeps up with the limit (Little's law): on the cold start, a window whose
//!   throughput stalled sets the limit to the concurrency it measured (× 1.1), one
//!   doubling earlier than latency alone would (latency lags a window).
//! - **Gradient**: `limit × clamp(1.1 × baseline / rtt_avg, 0.5, 1) + max(1, √limit / 2)`.
//!   With a queue, latency is `T × inflight / C`, so `limit × baseline / rtt` is the app's
//!   capacity `C` (Little's law; 1.1 absorbs noise). The last term is a small standing
//!   queue that makes spare capacity visible, and the additive increase when none queues.
//! - **Overload**: `dropped > 0` multiplies the limit by 0.8; ≥ 10 % dropped halves it.
//!   When the drops stop and latency is back at baseline, the limit doubles back toward
//!   where it was before them (an app that failed for a while did not shrink).
//! - **App-limited** windows (peak in flight under half the limit) and thin windows change
//!   nothing, and no increase goes past twice the window's peak in flight, so a quiet class
//!   holds at most 2× its real peak instead of running away to `max`.
//! - **A slower app** (the baseline must rise): while latency is elevated (≥ 1.2×), each
//!   window's concurrency by Little's law (completions / length × rtt_avg) and latency are
//!   kept. A queue answers less concurrency with proportionally less latency; a slower app
//!   with the same latency. Two windows ≥ 1.5× apart in concurrency and in limit (demand
//!   that fell on its own proves nothing) with latencies within 10 % either way re-base
//!   the baseline to the lower latency and restart slow start. The
//!   evidence comes from the back-off done anyway. Changes under ~20 % are not followed;
//!   the tolerance and headroom absorb them.
//! - **A faster app** (the baseline must fall) shows as faster windows, unless a standing
//!   queue hides it. So after 100 limit-bound windows in a row above 1.1× baseline, the
//!   limit dips to 0.6× for one window and the baseline takes that window's latency if
//!   lower; the next window restores the limit. A probe that found ≥ 5 % less, or a full
//!   window ≥ 5 % under the baseline, brings the next probe 5 windows later; a probe that
//!   found nothing doubles the wait, up to 800 windows. Unlike Envoy's periodic minRTT
//!   probe, this is never a drop to a floor: one window at 60 %, rarer the longer nothing
//!   is found (< 0.1 % of throughput in steady overload), so waits in the proxy queue grow
//!   a little and no 503 burst follows. A probe only lowers the baseline: no drift.
//!
//! `min == max` makes the limit fixed; [`Limiter::Fixed`] is the non-adaptive form.

use std::time::Duration;

/// Bounds of the adaptive limit.
#[derive(Clone, Debug)]
pub struct LimitSettings {
    pub min: usize,
    pub max: usize,
}

/// One window of completed requests (latency to the response head).
#[derive(Clone, Debug, Default)]
pub struct WindowSample {
    /// Completions in the window (successes + app errors).
    pub samples: u64,
    pub rtt_avg: Duration,
    pub rtt_min: Duration,
    /// Most requests in flight at once during the window.
    pub max_inflight: usize,
    /// Completions that signal overload: upstream timeouts, 503s from the app,
    /// connection failures.
    pub dropped: u64,
    /// The window's length (for rate-based reasoning, optional).
    pub window: Duration,
}

/// Fewer completions than this (or than the limit, when the limit is smaller) make an
/// average too noisy to act on; at small limits every completion counts or slow start
/// could never leave a limit of 1 on a slow app.
const MIN_SAMPLES: u64 = 10;
/// A window whose peak in-flight stayed below this share of the limit did not test the
/// limit (app-limited). 0.5 as in `Gradient2Limit`: the limit may sit at most 2× above
/// the real peak, which is harmless, and bounded.
const APP_LIMITED_FRACTION: f64 = 0.5;
/// Slow start ends at the first window slower than baseline × this. 1.25 sits above
/// window-average noise (±5–10 %) but below the 1.5–2× a doubling past capacity causes.
const SLOW_START_EXIT: f64 = 1.25;
/// Latencies below this count as this. On an app answering in microseconds, latency is
/// mostly the machine's own scheduling (the proxy, the app and the clients share the
/// cores), which rises with any concurrency; limiting on it throttles a healthy fast
/// app and refuses its clients. 5 ms of queueing is not worth a refusal.
const LATENCY_FLOOR: Duration = Duration::from_millis(5);
/// Slow start also ends when a window's concurrency by Little's law (throughput ×
/// latency) fell below this share of the limit in force. A doubling ramp that still fits
/// shows ≈ 0.75–0.8 (admissions spread over the window); a doubling past capacity shows
/// ≈ 0.6 or less, because the app's throughput stops growing at once.
const SLOW_START_SATURATED: f64 = 0.7;
/// Latency up to baseline × this is not treated as queueing. The baseline follows the
/// lower envelope of window averages, so it sits a few per cent under the true mean
/// (≈ 5 % in the simulation); without this allowance the limit would settle that much
/// under capacity and grow back slowly. 1.1 puts the equilibrium at ≈ 1.05 C + headroom.
const TOLERANCE: f64 = 1.1;
/// Floor of one gradient step: at most halve per window, as TCP does, so one slow window
/// (a GC pause) cannot collapse the limit.
const MIN_GRADIENT: f64 = 0.5;
/// Share of the gap closed when a window is faster than the baseline. Below 1 so a single
/// lucky window does not set it; the baseline still tracks a lower envelope, so it errs
/// low, and a too-low baseline is corrected by the re-base test below.
const BASELINE_DOWN_GAIN: f64 = 0.25;
/// The standing queue allowed above the measured capacity is `max(1, this × √limit)`
/// (Netflix adds a full √limit). At least 1 so a limit at capacity still sees whether more
/// fits; it is also the additive increase per window when nothing queues (20 -> 60 in
/// ~12 windows). Half of √limit measured in simulation: limit 5–6 at C = 4, 22–25 at
/// C = 20, 103–112 at C = 100, mean latency 1.3, 1.15 and 1.06–1.09 × T.
const HEADROOM_SQRT_SHARE: f64 = 0.5;
/// Latency above baseline × this counts as elevated (a queue or a slower app); such
/// windows feed the re-base test. Above window noise; the re-base test itself tells a
/// queue from a slower app, so windows at equilibrium may be elevated too.
const ELEVATED: f64 = 1.2;
/// Two elevated windows whose concurrency differs at least this much ...
const REBASE_SPREAD: f64 = 1.5;
/// ... and whose latencies are within this ratio of each other (either way) show latency
/// that does not depend on our concurrency. A queue would have answered 1.5× less
/// concurrency with ≤ 0.67× the latency; 0.9 leaves room for noise. Either way: latency
/// that rose while concurrency fell is a capacity cut between the two windows, not a
/// slower app, and must not re-base.
const REBASE_FLAT: f64 = 0.9;
/// Elevated windows remembered for the re-base test: a few seconds of back-off.
const HISTORY: usize = 16;
/// After this many limit-bound windows in a row without one near the baseline (10–25 s
/// at 100–250 ms windows), dip for one window to re-measure it ...
const PROBE_AFTER: u32 = 100;
/// ... doubling the wait after each probe that found nothing, up to this (80–200 s), so
/// steady overload pays < 0.1 % of throughput for probes.
const PROBE_AFTER_MAX: u32 = 800;
/// The dip. The equilibrium sits about 1.05–1.25 C, so × 0.6 is well under capacity
/// (5 -> 3, 23 -> 14, 110 -> 66) even when the baseline is a little high, and a baseline
/// 2× too high is found in two probes. Not a floor: the app keeps 60 % of its work.
const PROBE_FACTOR: f64 = 0.6;
/// A probe whose latency came in under baseline × this found a lower baseline (5 %:
/// above window-average noise) ...
const PROBE_FOUND: f64 = 0.95;
/// ... and may have found only part of it (the dip still queued), so the next probe
/// follows after this many windows, once the gradient has settled on the lower baseline.
const PROBE_AGAIN: u32 = 5;
/// A window with at least 1 in this many completions dropped is heavy overload.
const DROP_HEAVY_ONE_IN: u64 = 10;
/// Multiplicative decrease on heavy overload (TCP's halving).
const DROP_HEAVY_FACTOR: f64 = 0.5;
/// Multiplicative decrease on any drop: a timeout or a 503 means the app's queue already
/// overflowed, a stronger signal than latency.
const DROP_FACTOR: f64 = 0.8;

/// A latency-gradient concurrency limit. See the module docs.
#[derive(Clone, Debug)]
pub struct GradientLimit {
    min: f64,
    max: f64,
    /// The estimate, kept fractional so small gradient steps accumulate.
    limit: f64,
    /// No-queue mean latency in seconds, once learned.
    baseline: Option<f64>,
    slow_start: bool,
    /// The first slow start (not a restart after a re-base).
    cold: bool,
    /// The limit before a streak of windows with drops cut it: once the app answers at
    /// its baseline latency again, the limit doubles back toward it (TCP's slow start
    /// up to ssthresh) instead of creeping back by the additive increase.
    recover_to: Option<f64>,
    /// `(limit, concurrency, rtt_avg seconds)` of the current streak of elevated windows.
    elevated: Vec<(f64, f64, f64)>,
    /// Limit-bound windows in a row with latency above baseline × [`TOLERANCE`].
    unconfirmed: u32,
    /// The limit to restore after a probe window, while one runs.
    probe: Option<f64>,
    /// Unconfirmed windows before the next probe.
    probe_after: u32,
}

impl GradientLimit {
    pub fn new(settings: LimitSettings) -> GradientLimit {
        let min = settings.min.max(1) as f64;
        let max = (settings.max as f64).max(min);
        GradientLimit {
            min,
            max,
            limit: min,
            baseline: None,
            slow_start: true,
            cold: true,
            recover_to: None,
            elevated: Vec::with_capacity(HISTORY),
            unconfirmed: 0,
            probe: None,
            probe_after: PROBE_AFTER,
        }
    }

    /// The current limit, always within `[min, max]`.
    pub fn limit(&self) -> usize {
        self.limit.round().clamp(self.min, self.max) as usize
    }

    /// True while the limit is still climbing to what the app can take (slow start, or
    /// the fast recovery after drops): a queue then says little about overload.
    pub fn ramping(&self) -> bool {
        self.slow_start || self.recover_to.is_some()
    }

    /// What the controller believes the app's latency is without a queue.
    pub fn baseline_rtt(&self) -> Option<Duration> {
        self.baseline.map(Duration::from_secs_f64)
    }

    /// True while still doubling towards the first sign of queueing.
    pub fn in_slow_start(&self) -> bool {
        self.slow_start
    }

    /// True while the current window runs at a deliberately dipped limit (see the module
    /// docs); the shell may want to report it.
    pub fn is_probing(&self) -> bool {
        self.probe.is_some()
    }

    /// Feeds one window; returns the new limit.
    pub fn update(&mut self, sample: &WindowSample) -> usize {
        if self.min >= self.max {
            return self.limit();
        }
        // The window after a probe ran at the dipped limit: restore the limit first.
        let probed = self.probe.take();
        if let Some(saved) = probed {
            self.limit = saved;
        }
        if sample.dropped > 0 {
            let heavy = sample.dropped.saturating_mul(DROP_HEAVY_ONE_IN) >= sample.samples;
            let factor = if heavy {
                DROP_HEAVY_FACTOR
            } else {
                DROP_FACTOR
            };
            self.slow_start = false;
            self.elevated.clear();
            self.recover_to.get_or_insert(self.limit);
            return self.set(self.limit * factor);
        }
        let needed = MIN_SAMPLES.min(self.limit.round() as u64).max(1);
        if sample.samples < needed || sample.rtt_avg.is_zero() {
            return self.limit();
        }
        // Latency under the floor all looks alike: no queue worth refusing anyone for.
        let rtt = sample.rtt_avg.max(LATENCY_FLOOR).as_secs_f64();
        let baseline = *self.baseline.get_or_insert(rtt);
        if probed.is_some() {
            // Latency at less concurrency: the one measurement that can lower a baseline
            // stuck at a queued value. Nothing else is learned from a dipped window.
            self.baseline = Some(rtt.min(baseline));
            // A probe that found lower latency may have found only part of it (the dip
            // was still above capacity): probe again soon, until one finds nothing.
            let found = rtt < baseline * PROBE_FOUND;
            self.probe_after = if found {
                PROBE_AGAIN
            } else {
                (self.probe_after * 2).clamp(PROBE_AFTER, PROBE_AFTER_MAX)
            };
            self.unconfirmed = 0;
            return self.limit();
        }
        if (sample.max_inflight as f64) < self.limit * APP_LIMITED_FRACTION {
            return self.limit();
        }
        if rtt < baseline * PROBE_FOUND {
            // Markedly faster than the baseline at full use: the app itself got faster,
            // and a queue may soon hide how much. Probe soon.
            self.probe_after = PROBE_AGAIN;
        }
        let baseline = if rtt < baseline {
            baseline - (baseline - rtt) * BASELINE_DOWN_GAIN
        } else {
            baseline
        };
        self.baseline = Some(baseline);
        let ratio = rtt / baseline;

        // Never grow past twice what the window actually had in flight.
        let ceiling = self.limit.max(2.0 * sample.max_inflight as f64);
        if let Some(target) = self.recover_to.take() {
            if ratio <= SLOW_START_EXIT && self.limit < target {
                // Back at baseline latency after drops: double back toward the limit
                // the drops cut (the app failed or stalled; it did not shrink).
                self.recover_to = Some(target);
                return self.set((self.limit * 2.0).min(target).min(ceiling.max(target)));
            }
        }
        if self.slow_start {
            // Latency lags a doubling by a window; throughput does not. A window that ran
            // far less concurrency (by Little's law) than the limit allowed found the
            // app's capacity: on the cold start, set the limit there instead of one
            // doubling (and one window of the app's queue) later. A restart after a
            // re-base keeps the latency test alone: it starts near capacity anyway.
            let concurrency = concurrency(sample, self.limit);
            let saturated = self.cold
                && sample.samples >= MIN_SAMPLES
                && sample.window > Duration::ZERO
                && concurrency < self.limit * SLOW_START_SATURATED;
            if ratio <= SLOW_START_EXIT && !saturated {
                return self.set((self.limit * 2.0).min(ceiling));
            }
            self.slow_start = false;
            self.cold = false;
            if saturated {
                // The app's capacity, as measured, plus the usual tolerance.
                return self.set(concurrency * TOLERANCE);
            }
        }

        self.unconfirmed = if ratio <= TOLERANCE {
            0
        } else {
            self.unconfirmed + 1
        };
        if self.unconfirmed >= self.probe_after {
            self.unconfirmed = 0;
            self.probe = Some(self.limit);
            return self.set(self.limit * PROBE_FACTOR);
        }

        if ratio >= ELEVATED {
            if self.elevated.len() == HISTORY {
                self.elevated.remove(0);
            }
            self.elevated
                .push((self.limit, concurrency(sample, self.limit), rtt));
            if let Some(rebased) = flat_latency(&self.elevated) {
                // Latency did not follow our back-off: the app itself got slower.
                self.baseline = Some(rebased);
                self.elevated.clear();
                self.slow_start = true;
                return self.limit();
            }
        } else {
            self.elevated.clear();
        }

        let gradient = (TOLERANCE * baseline / rtt).clamp(MIN_GRADIENT, 1.0);
        let headroom = (self.limit.sqrt() * HEADROOM_SQRT_SHARE).max(1.0);
        self.set((self.limit * gradient + headroom).min(ceiling))
    }

    fn set(&mut self, limit: f64) -> usize {
        self.limit = limit.clamp(self.min, self.max);
        self.limit()
    }
}

/// The window's mean concurrency by Little's law (throughput × latency), measured on the
/// same completions as its latency, so it does not lag behind a limit change the way the
/// limit itself does when latency is a large part of the window. When the app queues,
/// throughput is its capacity and this moves with latency; when the app is slower, it
/// moves with the limit while latency stays. Falls back to the limit without a length.
fn concurrency(sample: &WindowSample, limit: f64) -> f64 {
    let window = sample.window.as_secs_f64();
    if window > 0.0 {
        sample.samples as f64 * sample.rtt_avg.as_secs_f64() / window
    } else {
        limit
    }
}

/// The lower latency of a pair of windows whose limits and concurrencies both differ by
/// [`REBASE_SPREAD`] but whose latencies do not differ by [`REBASE_FLAT`], if any.
/// Entries are `(limit, concurrency, rtt)`. The limit must have moved too: concurrency
/// that fell on its own (the clients sent less, or sluice refused more, while the app
/// still worked off its queue) says nothing about the app's speed.
fn flat_latency(windows: &[(f64, f64, f64)]) -> Option<f64> {
    let mut found: Option<f64> = None;
    for &(lo_limit, lo_conc, lo_rtt) in windows {
        for &(hi_limit, hi_conc, hi_rtt) in windows {
            let flat = lo_rtt >= hi_rtt * REBASE_FLAT && hi_rtt >= lo_rtt * REBASE_FLAT;
            let spread = hi_conc >= lo_conc * REBASE_SPREAD && hi_limit >= lo_limit * REBASE_SPREAD;
            if spread && flat {
                let rtt = lo_rtt.min(hi_rtt);
                found = Some(found.map_or(rtt, |f| f.min(rtt)));
            }
        }
    }
    found
}

/// The limit a class runs with: fixed (`adaptive = false`) or adaptive.
#[derive(Clone, Debug)]
pub enum Limiter {
    Fixed(usize),
    Gradient(GradientLimit),
}

impl Limiter {
    pub fn limit(&self) -> usize {
        match self {
            Limiter::Fixed(limit) => *limit,
            Limiter::Gradient(gradient) => gradient.limit(),
        }
    }

    /// True while the current window runs at a deliberately dipped limit (see the module
    /// docs); the shell may want to report it.
    pub fn is_probing(&self) -> bool {
        match self {
            Limiter::Fixed(_) => false,
            Limiter::Gradient(gradient) => gradient.is_probing(),
        }
    }

    /// Feeds one window; a fixed limit ignores it. Returns the limit.
    pub fn update(&mut self, sample: &WindowSample) -> usize {
        match self {
            Limiter::Fixed(limit) => *limit,
            Limiter::Gradient(gradient) => gradient.update(sample),
        }
    }

    pub fn ramping(&self) -> bool {
        match self {
            Limiter::Fixed(_) => false,
            Limiter::Gradient(g) => g.ramping(),
        }
    }

    pub fn baseline_rtt(&self) -> Option<Duration> {
        match self {
            Limiter::Fixed(_) => None,
            Limiter::Gradient(gradient) => gradient.baseline_rtt(),
        }
    }
}

#[cfg(test)]
mod tests;
