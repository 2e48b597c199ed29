//! Dips: now and then the limit goes a little under the app's estimated capacity so
//! that latency without a queue, the baseline everything rests on, is measured again
//! (see the algorithm in the parent module's docs).

use super::{decide_samples, spread, GradientLimit, WindowSample, DECIDE_SPREAD, ONE_NOISE};

/// A dip goes `max(1, this × √capacity)` requests under the estimated capacity (smoothed
/// over decisions, not the limit, which may be a request or two high for a window; and
/// at least one under the limit in force): 1 at C = 20, 2 at C = 100. Enough when the
/// baseline is within a few per cent; when not, [`DIP_ELASTIC`] deepens the next.
const DIP_SQRT_SHARE: f64 = 0.2;
/// No dip deeper than this share of the limit, or than one request (at 5, to 4; at 2,
/// to 1).
const DIP_MAX_SHARE: f64 = 0.2;
/// A dip window counts toward the measurement once at most this share of its
/// completions were admitted before the dip began (the rest waited in the old queue: at
/// T = 50 ms in a 250 ms window, 20 % of them would make the baseline 1 % high, a bias
/// that feeds itself) ...
pub(super) const DIP_LAG: f64 = 0.1;
/// ... and the dip ends once measured windows hold enough completions (see
/// [`decide_samples`]), or after this many windows.
const DIP_MAX_WINDOWS: u32 = 8;
/// Share of the gap to a dip's latency the baseline closes: two dips bring a baseline
/// 9 % off within 2.5 %, and the noise of one measurement (±3 %) moves it by half.
const DIP_GAIN: f64 = 0.5;
/// ... or all of it when the gap is over this many times the measurement's noise (and
/// not under [`DIP_AGREE`]): a baseline 16 % off (learned from a few completions) is
/// then right after one dip, not four.
const DIP_FAR: f64 = 3.0;
/// ... upward only when latency fell by less than this share of the proportion to the
/// limit across the dip (see [`DIP_ELASTIC`]).
const DIP_FLAT: f64 = 0.25;
/// A dip slower than the windows before it by more than this learned nothing: the app
/// changed during it (a capacity cut, a slower app), which is for the gradient and the
/// re-base test.
const DIP_SLOWER: f64 = 1.1;
/// ... and after a slide (whose dip takes all of a gap that did not fall with the limit)
/// by more than this: one window before the dip is a noisy thing to be slower than
/// (±10 %). A pause of the host in a slide's dip (30-70 ms: 1.4-1.6x a window's latency
/// in tests/adaptive.rs, 1.2x pooled over a five-window dip in the simulation) was taken
/// whole for the app's speed, and the limit went to 1.6x the capacity.
const DIP_SLOWER_SLID: f64 = 1.15;
/// A dip within this of the baseline (or within half a request, 0.5 / limit, when more:
/// one request, 1 / C, is the error that settles the limit under capacity)
/// confirms it ...
const DIP_AGREE: f64 = 0.03;
/// ... and doubles the wait before the next, from [`DIP_SOON`] up to this many
/// windows (13–32 s at 100–250 ms windows, like BBR's 10 s ProbeRTT interval) ...
const DIP_EVERY_MAX: u32 = 128;
/// ... and at least this many windows per window the dip took, so a long dip (few
/// completions a window) costs as little as a short one.
const DIP_DUTY: u32 = 8;
/// A dip that moved the baseline (or still queued) is followed by the next after this
/// many windows, until the baseline holds; also the first after slow start and soon
/// after a faster window.
pub(super) const DIP_SOON: u32 = 4;
/// A dip whose latency fell by at least this share of the proportion its limit fell by
/// (log-log; 1 in a queue, 0 without) ...
const DIP_ELASTIC: f64 = 0.8;
/// ... and by at least this much (log): still queued, so the next dip goes twice as
/// deep. (A shallow dip's ratio is mostly noise; and one held up by [`DIP_MAX_SHARE`]
/// landed at capacity, where latency falls in full proportion too.)
const DIP_DROP_MIN: f64 = 0.05;

/// A dip in progress (see the module docs).
#[derive(Clone, Debug)]
pub(super) struct Dip {
    /// The limit to go back to ...
    restore: f64,
    /// ... and the most it may become with a higher baseline.
    ceiling: f64,
    /// The latency (seconds) of the windows before the dip, and their limit.
    cruise_rtt: f64,
    cruise_limit: f64,
    /// Seconds the dip ran before the current window.
    elapsed: f64,
    /// Windows the dip has run, the current one included.
    windows: u32,
    /// The dipped limit ...
    dipped: f64,
    /// ... held up by the depth cap.
    capped: bool,
    /// Completions, their summed latency and summed [`spread`] in the windows measured ...
    measured: (f64, f64, f64),
    /// ... and how many are enough, set when the dip starts from the spread the decision
    /// before it pooled. (From the dip's own windows, a window faster by chance has a
    /// smaller spread, `1 - min / avg`, and ends the dip sooner: optional stopping that
    /// biased the measurement low.)
    needed: f64,
    /// Due to a slide from this limit (see `GradientLimit::slid`): latency had already
    /// not followed the limit down over a tenth of it.
    slid_from: Option<f64>,
}

impl GradientLimit {
    /// A dip is under way, started by a slide.
    #[cfg(test)]
    pub(super) fn in_slide_dip(&self) -> bool {
        self.dip.as_ref().is_some_and(|d| d.slid_from.is_some())
    }

    /// Drops end a dip at once: the limit it left is restored before the back-off.
    pub(super) fn abandon_dip(&mut self) {
        if let Some(dip) = self.dip.take() {
            self.set(dip.restore);
        }
        self.settling = false;
    }

    /// A window too thin to measure: a dip runs on, up to its last window.
    pub(super) fn thin_window(&mut self, sample: &WindowSample) -> usize {
        if let Some(dip) = &mut self.dip {
            dip.windows += 1;
            dip.elapsed += sample.window.as_secs_f64();
            if dip.windows >= DIP_MAX_WINDOWS {
                let restore = dip.restore;
                self.dip = None;
                self.settling = true;
                self.dip_in = DIP_SOON;
                return self.set(restore);
            }
        }
        self.limit()
    }

    /// Sets the limit the gradient chose, or, when a dip is due, starts one under it.
    pub(super) fn step_or_dip(
        &mut self,
        next: f64,
        capacity: f64,
        smoothed: f64,
        ceiling: f64,
        rtt: f64,
    ) -> usize {
        if self.dip_in > 0 {
            return self.set(next);
        }
        let slid_from = self.slid_from.take();
        // Below the capacity as estimated (smoothed over a few windows), not below the
        // limit: a limit a request or two high for a window must not keep the dip above
        // capacity.
        let below = (capacity.sqrt() * DIP_SQRT_SHARE).max(1.0) * self.dip_deeper;
        // (Under the limit in force as well as the next: a dip at the old limit after a
        // step up would measure the queue it had.)
        let top = next.min(self.limit).round();
        let wanted = (smoothed - below).min(top - 1.0).floor();
        let floor = (top * (1.0 - DIP_MAX_SHARE))
            .ceil()
            .min(top - 1.0)
            .max(self.min);
        let dipped = wanted.max(floor);
        if dipped >= top {
            // Too small a limit to dip at all.
            self.dip_in = self.dip_every;
            return self.set(next);
        }
        self.dip = Some(Box::new(Dip {
            ceiling,
            restore: next,
            cruise_rtt: rtt,
            cruise_limit: self.limit,
            elapsed: 0.0,
            windows: 0,
            dipped,
            capped: wanted < floor,
            measured: (0.0, 0.0, 0.0),
            needed: decide_samples(self.decided_spread),
            slid_from,
        }));
        self.set(dipped)
    }

    /// A window at a dipped limit: once its completions were admitted during the dip,
    /// its latency is the app's without a queue, and the baseline moves toward it.
    pub(super) fn dip_window(
        &mut self,
        mut dip: Box<Dip>,
        sample: &WindowSample,
        rtt: f64,
        baseline: f64,
    ) -> usize {
        let window = sample.window.as_secs_f64();
        dip.windows += 1;
        // Share of this window's completions admitted before the dip began.
        let lagged = if window > 0.0 {
            ((dip.cruise_rtt - dip.elapsed) / window).max(0.0)
        } else {
            0.0
        };
        dip.elapsed += window;
        if lagged <= DIP_LAG {
            let n = sample.samples as f64;
            dip.measured.0 += n;
            dip.measured.1 += n * rtt;
            dip.measured.2 += n * spread(sample);
        }
        let enough = dip.measured.0 > 0.0 && dip.measured.0 >= dip.needed;
        if !enough && dip.windows < DIP_MAX_WINDOWS {
            self.dip = Some(dip);
            return self.limit();
        }
        self.set(dip.restore);
        self.settling = true;
        if dip.measured.0 == 0.0 {
            self.dip_in = DIP_SOON;
            return self.limit();
        }
        let rtt = dip.measured.1 / dip.measured.0;
        let slower = if dip.slid_from.is_none() {
            DIP_SLOWER
        } else {
            DIP_SLOWER_SLID
        };
        if rtt > dip.cruise_rtt * slower {
            // Slower at less concurrency: the app changed during the dip (a capacity cut,
            // a slower app) or the host paused; that is for the gradient and the re-base
            // test. (After a slide, with a wider margin: latency was flat over a tenth of
            // the limit and more, and one window before the dip is a noisy thing to be
            // slower than.)
            self.dip_in = DIP_SOON;
            return self.limit();
        }
        let agreed = (rtt / baseline - 1.0).abs() <= DIP_AGREE.max(0.5 / dip.restore);
        // Latency that fell with the limit, nearly in proportion: the dip still queued.
        let drop = (dip.cruise_rtt / rtt).ln();
        let elastic = drop / (dip.cruise_limit / dip.dipped).ln().max(f64::EPSILON);
        // Half of the gap, to average out the measurement's noise; all of it when the gap
        // is far beyond that noise, unless the latency fell with the dip (then the dip
        // may still have queued, and the baseline should not rise to it; latency flat
        // across the dip is what a baseline too low looks like: no queue at either).
        let m = dip.measured;
        let noise = ONE_NOISE * (m.2 / m.0 / DECIDE_SPREAD) / m.0.sqrt();
        let far = (rtt / baseline).ln().abs() > DIP_FAR * noise.max(DIP_AGREE / DIP_FAR);
        // After a slide (latency flat over a tenth of the limit and more), a dip slower
        // than the baseline that did not still queue is a third look that says the
        // same: the app is this slow. (A shallow dip's own elasticity is mostly noise.
        // One that agrees with the baseline says the slide was a queue after all.)
        let flat = elastic < DIP_FLAT;
        let slid = dip.slid_from.is_some() && !agreed && rtt > baseline && elastic < DIP_ELASTIC;
        let gain = if slid || (far && (rtt < baseline || flat)) {
            1.0
        } else {
            DIP_GAIN
        };
        let rebased = baseline + (rtt - baseline) * gain;
        self.baseline = Some(rebased);
        // (A baseline taken from a queue agrees with a dip that still queued.) A dip held
        // up by the depth cap landed at most at capacity: at the capacity itself latency
        // falls in full proportion too, and there is no going deeper anyway.
        let queued = elastic >= DIP_ELASTIC && drop >= DIP_DROP_MIN && !dip.capped;
        self.dip_deeper = if queued {
            (self.dip_deeper * 2.0).min(8.0)
        } else {
            1.0
        };
        self.dip_every = if agreed && !queued {
            (self.dip_every * 2).min(DIP_EVERY_MAX)
        } else {
            DIP_SOON
        };
        // A long dip (few completions a window) that confirmed the baseline waits longer
        // for the next; one that moved it is followed soon, until the baseline holds.
        self.dip_in = if agreed && !queued {
            self.dip_every.max(dip.windows * DIP_DUTY)
        } else {
            DIP_SOON
        };
        // The limit restored was set for the old baseline. After a slide that a baseline
        // too low caused, the limit where it began was right (the app has as many
        // workers as before): it goes back there at least.
        let mut restore = dip.restore * rebased / baseline;
        if let Some(from) = dip.slid_from.filter(|_| slid) {
            restore = restore.max(from);
        }
        self.set(restore.min(dip.ceiling.max(dip.restore)))
    }
}
