//! Slow start: from the minimum, the limit doubles until latency or throughput shows
//! the app's capacity (see the algorithm in the parent module's docs).

use super::dip::DIP_SOON;
use super::{
    spread, target_queue, GradientLimit, WindowSample, DECIDE_SPREAD, MIN_SAMPLES, SLOW_START_EXIT,
};

/// Slow start ends at a window slower than baseline × [`SLOW_START_EXIT`], or
/// `1 + this × √(1/n + 1/m)` when larger, for a window of `n` completions and a
/// baseline of `m`, at a service-time spread of ±50 %: the noise of two small means
/// (±0.3 / √n each; five of that). A window of 4 against a baseline of 4 needs 2.06×.
/// Scaled by the window's [`spread`] (0.5 → 1), not under [`SPREAD_FLOOR`].
const SLOW_START_NOISE: f64 = 1.5;
/// Slow start also ends when a window's throughput × baseline fell under this share of
/// what a ramp that fits shows (the limit × (1 − lag / 2), lag being the share of its
/// completions admitted before the last doubling), and its throughput per unit of that
/// under this share of the last judged window's ...
const SLOW_START_STALL: f64 = 0.85;
/// ... or under `1 - this × √(1/n + 1/m)` when lower, for a window of `n` completions
/// and a baseline of `m`, at a ±50 % spread (scaled like [`SLOW_START_NOISE`]): more than
/// three times the noise of two means, since the requests a doubling admits start
/// together and finish within the window or not together too. (The old test, Little's
/// concurrency against a fixed share of the limit, took a ramp that fits for a stall
/// when latency is the whole window: such a ramp shows (1 − latency / 2 windows) × the
/// limit, half of it at T = 100 ms in 100 ms windows.)
const STALL_NOISE: f64 = 1.0;
/// Throughput is judged only in a window that ended with at least this share of the
/// limit in flight (see [`WindowSample::inflight_at_end`]). An app past its capacity
/// keeps every slot busy; fewer at the end is demand that fell.
pub(super) const SLOW_START_BUSY: f64 = 0.75;
/// Throughput under this share of what a fitting ramp shows (and of the last judged
/// window's) holds the limit for one more window before doubling.
const SLOW_START_HOLD: f64 = 0.95;
/// Slow start's noise allowances scale with [`spread`] / [`DECIDE_SPREAD`], but not under
/// this: with every request taking the same time, completions still come in whole
/// numbers, and windows are not all alike.
const SPREAD_FLOOR: f64 = 0.3;
/// A window with more than this share of its completions admitted before the last
/// doubling is not judged (the gradient's [`super::DECIDE_LAG`] is 0.5): past capacity
/// even a window half from before the doubling shows it (throughput stops at once).
const RAMP_LAG: f64 = 0.75;

/// A throughput shortfall counts as confirmed by latency when latency rose by at least
/// this share of what the shortfall predicts for a queue (see `slow_start_window`).
const CONFIRMED_SHARE: f64 = 0.5;

/// The growth of slow start's first step past a limit light traffic held (see
/// [`GradientLimit::ramping`]), instead of a doubling.
const LIMITED_GROWTH: f64 = 1.5;

impl GradientLimit {
    /// Both sides of each of slow start's comparisons are noisy means of a few
    /// completions (the window's, and the baseline's), as noisy as the app's latencies
    /// are spread: the window's spread against [`DECIDE_SPREAD`], and `√(1/n + 1/m)`.
    /// (The minimum of a few says little: a small window counts as widely spread.)
    fn noise(&self, sample: &WindowSample) -> (f64, f64) {
        let n = (sample.samples as f64).max(1.0);
        let spread = if sample.samples >= MIN_SAMPLES {
            (spread(sample) / DECIDE_SPREAD).max(SPREAD_FLOOR)
        } else {
            1.0
        };
        let behind = if self.cold { self.cold_rtt.0 } else { n };
        (spread, (1.0 / n + 1.0 / behind.max(1.0)).sqrt())
    }

    /// The latency (over the baseline) at which slow start ends on this window. A
    /// window of a few completions is noisy: it needs a clearer rise to stop.
    fn exit_ratio(&self, sample: &WindowSample) -> f64 {
        let (spread, both) = self.noise(sample);
        SLOW_START_EXIT.max(1.0 + SLOW_START_NOISE * spread * both)
    }

    /// One window during slow start: `Some(limit)` when it decided, `None` when slow
    /// start ended without a decision of its own (the gradient takes the window).
    pub(super) fn slow_start_window(
        &mut self,
        sample: &WindowSample,
        rtt: f64,
        baseline: f64,
        ceiling: f64,
        since_change: f64,
    ) -> Option<usize> {
        let ratio = rtt / baseline;
        // Latency lags a doubling by a window; throughput does not. On the cold start,
        // a window whose throughput per unit of limit fell from the window before's
        // found the app's capacity (past it the app's throughput stops growing at
        // once): set the limit there instead of one doubling (and one window of the
        // app's queue) later. A restart after a re-base keeps the latency test alone:
        // it starts near capacity anyway.
        let n = sample.samples as f64;
        let window = sample.window.as_secs_f64();
        // Throughput is the app's capacity only while demand kept every slot busy to the
        // end: a window in which the clients stopped (a load test's last moments) shows
        // low throughput at a high limit too, and once set the limit there.
        let busy = sample.inflight_at_end as f64 >= self.limit * SLOW_START_BUSY;
        // ... and from the start: after a quiet spell (the limit twice the quiet peak),
        // the first window of a rush completes what the quiet admitted, and its
        // throughput is the quiet's, not the app's (it would set the limit at half the
        // capacity).
        let pressed = busy && self.pressed;
        let measured = self.cold && sample.samples >= MIN_SAMPLES && window > 0.0 && pressed;
        let throughput = n / window.max(1e-9);
        let (spread, both) = self.noise(sample);
        // A ramp that fits keeps the app as busy as the limit allows: throughput ×
        // baseline = the limit, less half the share of the window's completions
        // admitted before the last doubling (under half the limit).
        let lag = ((rtt - since_change) / window.max(1e-9)).clamp(0.0, 1.0);
        // (After a step of 1.5×, not 2×, a third of the limit is new.)
        let grown = if self.limited { LIMITED_GROWTH } else { 2.0 };
        let ramp = self.limit * (1.0 - lag * (1.0 - 1.0 / grown));
        // ... but no more than the clients asked for: throughput × baseline short of
        // the limit is the app's capacity only if the clients offered more. (After a
        // doubling, a window's demand just over the old limit fills the new one with
        // the backlog the old one left, and the window looks pressed; judged against the
        // limit, the clients' throughput ended slow start at 6-8 for an app of 20.)
        let offered = sample
            .arrivals
            .filter(|_| window > 0.0)
            .map(|a| a as f64 / window * baseline);
        let fits = offered.map_or(ramp, |o| ramp.min(o));
        // The clients asked for less than half what the ramp serves: the limit was not
        // tried, and it is already twice what they use (RFC 7661 grows a window only
        // while at least half of it is in use).
        let asked = offered.is_none_or(|o| o >= ramp * super::APP_LIMITED_FRACTION);
        // ... and throughput per unit of that keeps the last window judged's (which
        // does not depend on the baseline, but is as noisy as this one). Each can be
        // fooled (a baseline from a few lucky completions, a window that caught a few
        // too many); both must say so.
        let yielded = throughput / fits;
        let kept = self
            .ramp_yield
            .is_none_or(|before| yielded < before * SLOW_START_HOLD);
        let stall = SLOW_START_STALL.min(1.0 - STALL_NOISE * spread * both);
        let short = measured && kept && throughput * baseline < fits * SLOW_START_HOLD;
        let held = std::mem::take(&mut self.held);
        // An app just past its capacity (a limit 1.2× it) shows throughput only somewhat
        // short, and latency only somewhat up, window after window. Short twice running
        // (the second look after a hold) is no longer doubtful; nor is a shortfall that
        // latency confirms: a queue in the app raises it by limit / capacity (Little's
        // law), where a few lucky or unlucky completions move one and not the other.
        // (Half of that rise is enough: some of the window's completions were admitted
        // before the queue built; but no less than the noise of the two means.)
        let little = (fits / (throughput * baseline).max(1e-9) - 1.0).max(0.0);
        let noise = SLOW_START_NOISE * spread * both;
        let confirmed = ratio - 1.0 >= (CONFIRMED_SHARE * little).max(noise);
        let saturated = short && (held || confirmed || throughput * baseline < fits * stall);
        let exit = self.exit_ratio(sample);
        // A window mostly admitted before the last doubling shows the limit before it:
        // judge (and double) on the next one, unless latency already rose.
        if window > 0.0 && lag > RAMP_LAG && ratio <= exit {
            return Some(self.limit());
        }
        if ratio <= exit && !saturated && short && !held {
            // Somewhat short of what a ramp that fits shows: hold the limit for one
            // more look (judged against the same window before) rather than double on
            // doubtful evidence. Past capacity the second window shows it plainly (the
            // queue has built); a doubling too many queues the limit in the app.
            self.held = true;
            return Some(self.limit());
        }
        if ratio <= exit && !saturated {
            if measured {
                self.ramp_yield = Some(yielded);
            }
            if self.cold {
                // Every unqueued window of the ramp counts, weighted by its
                // completions: the lowest of a few windows sits well under the mean.
                self.cold_rtt.0 += n;
                self.cold_rtt.1 += n * rtt;
                self.baseline = Some(self.cold_rtt.1 / self.cold_rtt.0);
            }
            if window > 0.0 && (!pressed || !asked) {
                // The clients did not fill the limit by the window's end (an
                // application-limited flight, RFC 7661), or only just did, or asked for
                // less than half of what it serves (the backlog of a lower limit filled
                // it): a doubling would admit a burst the app was never tried with. Hold
                // until demand has pressed for a window.
                self.unasked = !asked;
                return Some(self.limit());
            }
            // A limit light traffic held (see `ramping`) is twice what the clients had
            // in flight, and the app may take less than that: the steps past it are
            // half a doubling (RFC 3742's limited slow start), so that a doubling
            // does not put up to the whole limit's worth in the app's queue at once.
            // Every step, not just the first: with latency half a window, a doubling
            // past the capacity shows only in throughput short by a quarter of it,
            // inside the noise allowance (12 -> 24 -> 48 for an app of 20 at 50 ms).
            self.limited = self.limited || !self.ramping();
            let factor = if self.limited { LIMITED_GROWTH } else { 2.0 };
            let next = (self.limit * factor).min(ceiling);
            if let Some(to) = self.restart_to.filter(|&to| next >= to) {
                // Back where the app showed itself slower, not queued: the gradient takes
                // it from here. (Without this bound the restart, judged on latency alone
                // with a wide allowance for noise, doubled 11 -> 87 in the bench and put
                // 65 requests at once in front of an app with 20 workers.)
                self.slow_start = false;
                self.restart_to = None;
                self.dip_in = DIP_SOON;
                return Some(self.set(to.max(self.limit)));
            }
            return Some(self.set(next));
        }
        self.slow_start = false;
        self.cold = false;
        self.restart_to = None;
        self.dip_in = DIP_SOON;
        if saturated {
            // The app's capacity by Little's law, and the target queue.
            let capacity = throughput * baseline;
            return Some(self.set(capacity + target_queue(capacity)));
        }
        None
    }
}
