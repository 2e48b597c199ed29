//! The adaptive concurrency limit of one class: how many requests may be in the app at
//! once. Pure: no clock, no I/O, no locks, no randomness. The shell aggregates completions
//! into a [`WindowSample`] (100–250 ms, longer if fewer than ~10 completions arrived; fill
//! in `window`), calls [`GradientLimit::update`] once per window and enforces the limit.
//! `dropped` counts upstream timeouts, 503s from the app and connect failures, never
//! sluice's own refusals.
//!
//! The controller itself is described in the docs below; slow start and the dips
//! that re-measure the baseline are in their own modules.
#![doc = include_str!("limit/algorithm.md")]
//! `min == max` makes the limit fixed; [`Limiter::Fixed`] is the non-adaptive form.

use std::time::Duration;

use dip::{DIP_LAG, DIP_SOON};

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
    /// Requests in flight when the window closed. Well under the limit, the clients
    /// sent less by the end (they stopped or slowed), and the window's throughput says
    /// nothing about what the app can take.
    pub inflight_at_end: usize,
    /// Completions that signal overload: upstream timeouts, 503s from the app,
    /// connection failures.
    pub dropped: u64,
    /// The window's length (for rate-based reasoning, optional).
    pub window: Duration,
    /// Slots of the limit that only critical requests could take during the window
    /// (the [`GradientLimit::lane`] in force).
    pub lane: usize,
    /// Critical requests that arrived during the window.
    pub critical: u64,
    /// Requests of every priority that asked for a slot during the window (admitted at
    /// once, queued or refused): what the clients offered. Slow start judges the app's
    /// throughput only against what was asked of it. `None`: not counted (throughput is
    /// then judged on the in-flight counts alone).
    pub arrivals: Option<u64>,
}

/// Fewer completions than this (or than the limit, when the limit is smaller) make an
/// average too noisy to act on; at small limits every completion counts or slow start
/// could never leave a limit of 1 on a slow app.
const MIN_SAMPLES: u64 = 10;
/// A window whose peak in-flight stayed below this share of the limit did not test the
/// limit (app-limited). 0.5 as in `Gradient2Limit`: the limit may sit at most 2× above
/// the real peak, which is harmless, and bounded.
const APP_LIMITED_FRACTION: f64 = 0.5;
/// Latencies below this count as this. On an app answering in microseconds, latency is
/// mostly the machine's own scheduling (the proxy, the app and the clients share the
/// cores), which rises with any concurrency; limiting on it throttles a healthy fast
/// app and refuses its clients. 5 ms of queueing is not worth a refusal.
const LATENCY_FLOOR: Duration = Duration::from_millis(5);

/// Slow start ends at the first window slower than baseline × this. 1.25 sits above
/// window-average noise (±5–10 %) but below the 1.5–2× a doubling past capacity causes.
const SLOW_START_EXIT: f64 = 1.25;

/// The standing queue the limit aims at: `max(1, this × √limit)` requests. At least one,
/// so the app never idles between two requests (sluice's own queue and the trip to the
/// app take a little time) and more capacity shows at once; more only at large limits,
/// where one request is under the baseline's noise (±1 % at C = 100 is a request). 1
/// up to a limit of 25, 2 at 100, 6 at 1000.
const QUEUE_SQRT_SHARE: f64 = 0.2;
/// Growth without a queue: at most `max(target, this × √limit)` requests a step (Netflix
/// adds a full √limit), in proportion to how far under the target the queue is ...
const HEADROOM_SQRT_SHARE: f64 = 0.5;
/// ... times 1, 2, ... up to this for decisions in a row that found less than half the
/// target queue: 20 -> 60 in 5–13 windows.
const GROWTH_STEPS_MAX: u32 = 8;
/// Floor of one gradient step: at most halve per window, as TCP does, so one slow window
/// (a GC pause) cannot collapse the limit.
const MIN_GRADIENT: f64 = 0.5;

/// Completions that back a decision on a small deviation, and a dip's measurement, at a
/// service-time spread of ±50 % ([`DECIDE_SPREAD`]): their mean is within ±3 % (one
/// queued request at C = 20 is 5 %). 1–3 windows at 100 ms and T = 5–50 ms. Scaled by
/// the square of the measured spread (see [`decide_samples`]).
const DECIDE_SAMPLES: f64 = 100.0;
/// The [`spread`] of service times uniform in ±50 %.
const DECIDE_SPREAD: f64 = 0.5;
/// Latency over what the target queue itself brings, × this, is a large deviation: acted
/// on from a single window (a capacity cut, a stall). 1.26× the baseline at C = 20, 1.5×
/// at C = 4 (where one queued request is already 1.25×).
const LARGE: f64 = 1.2;
/// ... and over `1 + this × ONE_NOISE × spread / 0.5 / √n`, for a window of `n`
/// completions, when more: three times the window's own noise.
const LARGE_NOISE: f64 = 3.0;
/// The relative noise of one completion's latency at the ±50 % spread (uniform: 0.29).
const ONE_NOISE: f64 = 0.3;
/// A window with more than this share of its completions admitted before the limit
/// last changed (latency over the time since, per window length) shows the old limit:
/// only a large deviation is acted on from it.
const DECIDE_LAG: f64 = 0.5;
/// Windows pooled over enough completions (see [`decide_samples`]) faster than baseline ×
/// this at full use: the app got faster. 5 %: above the pooled noise.
const FASTER: f64 = 0.95;
/// ... and a window faster than baseline × this, however few its completions: far
/// faster than noise, so the baseline takes its latency outright.
const FASTER_AT_ONCE: f64 = 0.8;
/// Share of the gap to a [`FASTER`] window's latency the baseline closes. Below 1 so a
/// lucky window does not set it; the dip that follows soon measures the rest.
const BASELINE_DOWN_GAIN: f64 = 0.25;
/// A slide: decisions that stepped the limit down on small deviations, over at least
/// this share of it, with latency that did not fall by half as much. A queue shed would
/// have fallen in proportion (Little's law), and half of this share is above the
/// pooled noise (±3 %). Latency that does not fall as the limit does is an app slower
/// for reasons of its own (a throttled CPU, a slower database): the baseline is what is
/// wrong, and a dip, which measures it, starts at the next decision, whatever the wait
/// after the last one that confirmed it. (A step or two down is what noise does now
/// and then.)
const SLIDE_SHARE: f64 = 0.1;
/// A gradient step below limit × this on a large deviation is a back-off (a queue the
/// limit must still shed): no dip until the limit has settled.
const BACKED_OFF: f64 = 0.9;

/// The critical lane (see [`GradientLimit::lane`]) only for an app this slow at least:
/// without a queue in the app, each completion leaves a worker idle for sluice's round
/// trip to hand it the next request (0.1–0.3 ms), 1–3 % of a 10 ms service time.
const LANE_MIN_BASELINE: f64 = 0.010;
/// ... and at limits of at least this many, so that the lane is a small share of them.
const LANE_MIN_LIMIT: usize = 4;
/// Windows with the lane before a probe without it: the limit's fine control (growth,
/// small deviations) is only decided with the app's queue in view.
const LANE_PROBE_EVERY: u8 = 16;

/// Slow start that light traffic has held this long (milliseconds of windows) is no
/// longer ramping (see [`GradientLimit::ramping`]): five windows at the usual 100 ms,
/// longer than a doubling takes to show.
const RAMP_STILL_MS: u16 = 500;

/// Share of the gap to a decision's capacity estimate the smoothed one closes.
const CAPACITY_GAIN: f64 = 0.5;

/// Latency above baseline × this counts as elevated (a queue or a slower app): the
/// window after a dip is judged only if it is. Above window noise.
const ELEVATED: f64 = 1.2;
/// Windows with latency at or above baseline × this feed the re-base test, and one
/// under it clears the test's history. The re-base test itself tells a queue from a
/// slower app, so windows at equilibrium may be in it too (at C = 4). At 1.2, noise
/// about an app 1.15-1.3× slower wiped the history window after window, and the limit
/// fell to 5-8 of 20 before two windows were left to compare (simulation, 8 seeds).
const ELEVATED_KEEP: f64 = 1.1;
/// Two elevated windows whose concurrency differs at least this much ...
const REBASE_SPREAD: f64 = 1.5;
/// ... and whose latencies are within this ratio of each other (either way) show latency
/// that does not depend on our concurrency. A queue would have answered 1.5× less
/// concurrency with ≤ 0.67× the latency; 0.9 leaves room for noise. Either way: latency
/// that rose while concurrency fell is a capacity cut between the two windows, not a
/// slower app, and must not re-base.
const REBASE_FLAT: f64 = 0.9;
/// A window between the two of a flat pair with latency over the higher of theirs × this
/// breaks the pair: latency rose and fell again, as a queue does that builds and drains.
/// The first window of a capacity cut (1.3x, before the queue had built; 2-3x after)
/// and a window soon after the back-off (still draining, or stretched by a pause of the
/// host: a GC, a CPU quota run out) are such a pair: they read as latency flat at a
/// third of the concurrency, and re-based the limit to twice the cut capacity. An app
/// that got slower is as slow in every window after. Well above window noise.
const REBASE_HUMP: f64 = 1.4;
/// Elevated windows remembered for the re-base test: a few seconds of back-off.
const HISTORY: usize = 16;

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
    /// Slow start held its limit for a window of doubtful throughput.
    held: bool,
    /// Slow start's last step up was a limited one (see `slow_start::LIMITED_GROWTH`).
    limited: bool,
    /// Throughput per unit of the limit a fitting ramp fills (less what lag holds back) in
    /// the last window slow start judged and doubled on.
    ramp_yield: Option<f64>,
    /// Completions and the sum of their latencies (seconds) over the cold start's windows.
    cold_rtt: (f64, f64),
    /// The limit before a streak of windows with drops cut it: once the app answers at
    /// its baseline latency again, the limit doubles back toward it (TCP's slow start
    /// up to ssthresh) instead of creeping back by the additive increase.
    recover_to: Option<f64>,
    /// The current streak of elevated windows.
    elevated: Vec<Elevated>,
    /// Where the slow start after a re-base ends at the latest (TCP's ssthresh): the
    /// highest limit of the streak that showed the app slower, not queued.
    restart_to: Option<f64>,
    /// The capacity estimate (limit × baseline / rtt), smoothed over limit-bound windows.
    capacity: Option<f64>,
    /// Completions, their summed latency (seconds) and summed [`spread`], pooled since
    /// the last decision ...
    pending: (f64, f64, f64),
    /// ... at this limit.
    pending_at: f64,
    /// The mean [`spread`] the last decision pooled: what a dip that starts from it
    /// measures for (see `dip::Dip::needed`).
    decided_spread: f64,
    /// Seconds of windows since the limit (as enforced) last changed.
    since_change: f64,
    /// Decisions in a row that found no queue.
    growing: u32,
    /// The limit, pooled latency (over the baseline) and baseline at the first of the
    /// small steps down since the limit last grew, or since latency last followed one
    /// (see [`SLIDE_SHARE`]).
    slide: Option<(f64, f64, f64)>,
    /// A slide from this limit made the next dip due (see [`GradientLimit::slid`]).
    slid_from: Option<f64>,
    /// The dip in progress, if any (boxed: rare).
    dip: Option<Box<dip::Dip>>,
    /// The window after a dip mixes both limits: nothing is learned from it.
    settling: bool,
    /// Limit-bound windows before the next dip.
    dip_in: u32,
    /// The wait after a dip that confirmed the baseline.
    dip_every: u32,
    /// Multiplies the next dip's depth: doubled after a dip that still found a queue.
    dip_deeper: f64,
    /// Slots reserved for critical requests in the next window (see [`GradientLimit::lane`]).
    lane: u16,
    /// Windows with the lane left before the next probe without it.
    lane_in: u8,
    /// The last window's decision found the target queue (the limit is where it should
    /// be): the lane may open.
    at_target: bool,
    /// The last window ended with the limit (nearly) full: this window's completions were
    /// admitted under pressure, so its throughput is the app's (see slow start).
    pressed: bool,
    /// Milliseconds of windows since the limit last rose in which traffic came but did
    /// not fill the limit (see [`GradientLimit::ramping`]; saturating) ...
    light_ms: u16,
    /// ... and the most in flight in those windows since slow start last brought the
    /// limit down to twice it (see [`GradientLimit::update`]).
    light_peak: u16,
    /// Slow start held the last window because the clients asked for less than half of
    /// what its limit serves: a light window, however full the limit was at its end.
    unasked: bool,
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
            held: false,
            limited: false,
            ramp_yield: None,
            cold_rtt: (0.0, 0.0),
            recover_to: None,
            elevated: Vec::with_capacity(HISTORY),
            restart_to: None,
            capacity: None,
            pending: (0.0, 0.0, 0.0),
            pending_at: 0.0,
            decided_spread: DECIDE_SPREAD,
            since_change: 0.0,
            growing: 0,
            slide: None,
            slid_from: None,
            dip: None,
            settling: false,
            dip_in: DIP_SOON,
            dip_every: DIP_SOON,
            dip_deeper: 1.0,
            lane: 0,
            lane_in: 0,
            at_target: false,
            pressed: true,
            light_ms: 0,
            light_peak: 0,
            unasked: false,
        }
    }

    /// The current limit, always within `[min, max]`.
    pub fn limit(&self) -> usize {
        self.limit.round().clamp(self.min, self.max) as usize
    }

    /// True while the limit is still climbing to what the app can take (slow start, or
    /// the fast recovery after drops): a queue then says little about overload. Slow
    /// start that light traffic has held at its limit for [`RAMP_STILL_MS`] is not
    /// climbing: the clients never filled it (hours of light traffic leave it at twice
    /// their peak), and a queue that builds at that limit is overload like any other.
    /// (Windows without traffic do not count: before the first request, slow start has
    /// everything still to climb.) Nor are the limited steps past such a limit (see
    /// `slow_start::LIMITED_GROWTH`): they probe from near where the app may be.
    pub fn ramping(&self) -> bool {
        (self.slow_start && !self.limited && self.light_ms < RAMP_STILL_MS)
            || self.recover_to.is_some()
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
        self.dip.is_some()
    }

    /// The critical lane: slots at the top of the limit that only critical requests may
    /// take (non-critical ones stop at `limit - lane`). The target queue inside the app
    /// is then critical requests or nothing: a critical request waits for the next
    /// completion only, not behind a non-critical one already queued in the app. Open
    /// while the limit is settled, critical requests arrive and the app is slow enough
    /// (see [`LANE_MIN_BASELINE`]); every [`LANE_PROBE_EVERY`] windows it closes until a
    /// decision with the app's queue in view finds the limit at its target again. With
    /// the lane open, non-critical requests fill the app without a queue, so only a
    /// large deviation (a capacity cut) is acted on: whether the app could take more
    /// shows only at the probes.
    pub fn lane(&self) -> usize {
        usize::from(self.lane)
    }

    /// Feeds one window; returns the new limit.
    pub fn update(&mut self, sample: &WindowSample) -> usize {
        if self.min >= self.max {
            return self.limit();
        }
        self.at_target = false;
        let full = self.limit * slow_start::SLOW_START_BUSY;
        let before = self.limit();
        let was_slow = self.slow_start;
        self.unasked = false;
        let mut limit = self.update_limit(sample);
        let traffic = sample.samples >= MIN_SAMPLES.min(before as u64).max(1);
        if limit > before || (!was_slow && self.slow_start) {
            self.light_ms = 0;
            self.light_peak = 0;
        } else if limit == before
            && traffic
            && ((sample.inflight_at_end as f64) < full || self.unasked)
        {
            let ms = u16::try_from(sample.window.as_millis()).unwrap_or(u16::MAX);
            let was = self.light_ms;
            self.light_ms = self.light_ms.saturating_add(ms);
            let peak = u16::try_from(sample.max_inflight).unwrap_or(u16::MAX);
            self.light_peak = self.light_peak.max(peak);
            if self.slow_start && was / RAMP_STILL_MS < self.light_ms / RAMP_STILL_MS {
                limit = self.validate();
            }
        }
        // (A limit the clients asked for less than was full of an older backlog.)
        self.pressed = sample.inflight_at_end as f64 >= full && !self.unasked;
        let lane = self.next_lane(sample);
        if lane != self.lane {
            // What non-critical requests may take changed: the next window shows the old,
            // and what was pooled was at the other bound.
            self.since_change = 0.0;
            self.pending = (0.0, 0.0, 0.0);
            self.lane = lane;
        }
        limit
    }

    /// Slow start held by light traffic: every [`RAMP_STILL_MS`] of it, the limit comes
    /// down to twice the most the clients had in flight meanwhile, as TCP's window
    /// validation does for an application-limited flight (RFC 2861, RFC 7661). Above
    /// that it was never tried: a rush on startup (the backlog of the cold ramp) can
    /// leave it at twice the app's capacity, and the next step into overload would
    /// then put that excess in the app's own queue at once, ahead of every critical
    /// request, for the windows it takes the latency to show.
    fn validate(&mut self) -> usize {
        let peak = 2.0 * f64::from(self.light_peak);
        self.light_peak = 0;
        if peak < self.limit {
            return self.set(peak);
        }
        self.limit()
    }

    fn next_lane(&mut self, sample: &WindowSample) -> u16 {
        let settled = !self.slow_start
            && self.recover_to.is_none()
            && self.dip.is_none()
            && !self.settling
            && self.limit() >= LANE_MIN_LIMIT
            && self.baseline.is_some_and(|b| b >= LANE_MIN_BASELINE);
        if !settled || sample.critical == 0 {
            self.lane_in = 0;
            return 0;
        }
        let lane = target_queue(self.limit).round() as u16;
        if sample.lane > 0 {
            self.lane_in = self.lane_in.saturating_sub(1);
            if self.lane_in == 0 {
                return 0; // probe
            }
            lane
        } else if self.at_target {
            self.lane_in = LANE_PROBE_EVERY;
            lane
        } else {
            0
        }
    }

    fn update_limit(&mut self, sample: &WindowSample) -> usize {
        // Seconds the limit in force had been in force when this window began.
        let since_change = self.since_change;
        self.since_change += sample.window.as_secs_f64();
        if sample.dropped > 0 {
            self.abandon_dip();
            let heavy = sample.dropped.saturating_mul(DROP_HEAVY_ONE_IN) >= sample.samples;
            let factor = if heavy {
                DROP_HEAVY_FACTOR
            } else {
                DROP_FACTOR
            };
            self.slow_start = false;
            self.restart_to = None;
            self.elevated.clear();
            self.recover_to.get_or_insert(self.limit);
            // Of the limit in force (as enforced, rounded).
            return self.set(self.limit() as f64 * factor);
        }
        let needed = MIN_SAMPLES.min(self.limit.round() as u64).max(1);
        if sample.samples < needed || sample.rtt_avg.is_zero() {
            return self.thin_window(sample);
        }
        // Latency under the floor all looks alike: no queue worth refusing anyone for.
        let rtt = sample.rtt_avg.max(LATENCY_FLOOR).as_secs_f64();
        let baseline = *self.baseline.get_or_insert(rtt);
        if let Some(dip) = self.dip.take() {
            return self.dip_window(dip, sample, rtt, baseline);
        }
        if std::mem::take(&mut self.settling) && rtt < baseline * ELEVATED {
            return self.limit();
        }
        if (sample.max_inflight as f64) < self.limit * APP_LIMITED_FRACTION {
            return self.limit();
        }
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
            if let Some(limit) =
                self.slow_start_window(sample, rtt, baseline, ceiling, since_change)
            {
                return limit;
            }
        }

        if ratio >= ELEVATED_KEEP {
            if self.elevated.len() == HISTORY {
                self.elevated.remove(0);
            }
            self.elevated.push(Elevated {
                limit: self.limit,
                concurrency: concurrency(sample, self.limit),
                rtt,
            });
            if let Some(rebased) = flat_latency(&self.elevated) {
                // Latency did not follow our back-off: the app itself got slower, with
                // as much concurrency as before (at least up to the highest limit that
                // showed it), so slow start goes back there and no further.
                let highest = self
                    .elevated
                    .iter()
                    .map(|e| e.limit)
                    .fold(self.limit, f64::max);
                self.baseline = Some(rebased);
                self.elevated.clear();
                self.slow_start = true;
                self.limited = false;
                self.restart_to = Some(highest);
                return self.limit();
            }
        } else {
            self.elevated.clear();
        }

        // A small deviation in one window is mostly noise: pool windows at this limit
        // until enough completions back it. A large one (a capacity cut) and a window
        // without any queue (room to grow) are acted on at once. A window whose
        // completions were mostly admitted before the limit last changed shows the old
        // limit: only a large deviation is acted on from it.
        if (self.pending_at - self.limit).abs() > 0.5 {
            self.pending = (0.0, 0.0, 0.0);
        }
        self.pending_at = self.limit;
        self.dip_in = self.dip_in.saturating_sub(1);
        let window = sample.window.as_secs_f64();
        let lagged = window > 0.0 && (rtt - since_change) / window > DECIDE_LAG;
        // Large: well above the latency the target queue itself brings (at a small limit
        // that is a large share: 1.25× with one request queued at C = 4), and above this
        // window's own noise (three times it: ±9 % at 10 completions spread ±50 %).
        let target = target_queue(self.limit);
        let noise = LARGE_NOISE * ONE_NOISE * (spread(sample) / DECIDE_SPREAD)
            / (sample.samples as f64).sqrt();
        let large = ratio
            >= LARGE.max(1.0 + noise) * self.limit / (self.limit - target).max(self.limit / 2.0);
        if lagged && !large {
            return self.limit();
        }
        if sample.lane > 0 && !large {
            return self.lane_window(sample, rtt, baseline);
        }
        // In flight at most during a window with the lane: what non-critical requests
        // could take (criticals in the lane are few), so a cut is not underdone.
        let bound = self.limit - sample.lane as f64;
        let n = sample.samples as f64;
        self.pending.0 += n;
        self.pending.1 += n * rtt;
        self.pending.2 += n * spread(sample);
        let pooled = self.pending.1 / self.pending.0;
        let enough = self.pending.0 >= decide_samples(self.pending.2 / self.pending.0);
        let ratio = if large { ratio } else { pooled / baseline };
        if !enough && ratio > 1.0 && !large {
            return self.limit();
        }
        let rtt = if large { rtt } else { pooled };
        let backed = enough || ratio < FASTER_AT_ONCE;
        self.decided_spread = self.pending.2 / self.pending.0;
        self.pending = (0.0, 0.0, 0.0);
        let ratio = if ratio < FASTER && backed {
            // Markedly faster than the baseline at full use: the app itself got faster,
            // and a queue may soon hide how much. Follow part of the way, dip soon, and
            // do not take the speed for spare capacity (no accelerated growth).
            self.dip_in = self.dip_in.min(DIP_SOON);
            self.growing = 0;
            let lowered = if ratio < FASTER_AT_ONCE {
                // Far faster: no noise does that; any queue left in it shows at the dip.
                rtt
            } else {
                baseline - (baseline - rtt) * BASELINE_DOWN_GAIN
            };
            self.baseline = Some(lowered);
            rtt / lowered
        } else {
            ratio
        };

        // Little's law: with a queue in the app, limit × baseline / rtt is its capacity,
        // and the rest of the limit is the queue. When the limit has just fallen,
        // latency still shows the higher one it had (the queue it built): throughput ×
        // baseline, which does not lag, is then the larger. (Only then, in a window partly
        // admitted before the change: in a settled window it is just a second, noisier
        // estimate, and the larger of two is biased.)
        let throughput = sample.samples as f64 / window.max(1e-9);
        let recent = window > 0.0 && (rtt - since_change) / window > DIP_LAG;
        let capacity = if recent {
            (bound / ratio).max((throughput * baseline).min(bound))
        } else {
            bound / ratio
        };
        let queue = self.limit - capacity;
        let grow = (self.limit.sqrt() * HEADROOM_SQRT_SHARE).max(target);
        let headroom = if queue >= target {
            self.growing = 0;
            // A hold, not a back-off from a cut.
            self.at_target = !large;
            target
        } else {
            // Decision after decision without a queue: the steps grow (1, 2, 3, ... times
            // the usual), so a capacity far above the limit is found in a few of them.
            if ratio >= FASTER && queue < target / 2.0 {
                self.growing = (self.growing + 1).min(GROWTH_STEPS_MAX);
            } else {
                self.growing = 0;
            }
            target + (grow - target) * (1.0 - queue.max(0.0) / target) * self.growing.max(1) as f64
        };
        let step = capacity.clamp(self.limit * MIN_GRADIENT, self.limit) + headroom;
        if step > ceiling {
            // Held by the peak in flight (demand, not the app): no growth to build on.
            self.growing = 0;
        }
        let next = step.min(ceiling);
        let smoothed = self
            .capacity
            .map_or(capacity, |c| c + (capacity - c) * CAPACITY_GAIN);
        self.capacity = Some(smoothed);
        if large && next < self.limit * BACKED_OFF {
            // A back-off from a real queue: the dip waits until the limit has settled.
            // (Not from small, pooled steps: those are what a baseline too low does to
            // the limit, and only a dip shows it. Nor when a slide made the dip due: then
            // latency did not follow the limit down, and the back-off is likely more of
            // the same.)
            if self.slid_from.is_none() {
                self.dip_in = self.dip_in.max(DIP_SOON);
            }
        }
        if !large && next < self.limit - 0.5 {
            self.slid(ratio);
        } else if large && next < self.limit - 0.5 {
            // A large step down is part of a slide too (noise puts some of a slower
            // app's windows over the large threshold): it starts one, or the one under
            // way goes on across it, to be judged at the next small step.
            if self.slide.is_none() {
                self.slide = Some((self.limit, ratio, baseline));
            }
        } else if next > self.limit + 0.5 {
            // (A hold says nothing either way.)
            self.slide = None;
        }
        self.step_or_dip(next, capacity, smoothed, ceiling, rtt)
    }

    /// A window with the lane open and no large deviation. Non-critical requests stopped
    /// at `limit - lane`: without a queue of theirs in the app, there is no telling
    /// whether it could take more (that waits for the probe), but a queue of theirs that
    /// shows all the same (pooled over enough completions, a request or more) means the
    /// limit is that much too high for the lane: it steps down by it.
    fn lane_window(&mut self, sample: &WindowSample, rtt: f64, baseline: f64) -> usize {
        let n = sample.samples as f64;
        self.pending.0 += n;
        self.pending.1 += n * rtt;
        self.pending.2 += n * spread(sample);
        if self.pending.0 < decide_samples(self.pending.2 / self.pending.0) {
            return self.limit();
        }
        let (n, spread) = (self.pending.0, self.pending.2 / self.pending.0);
        let ratio = self.pending.1 / n / baseline;
        self.pending = (0.0, 0.0, 0.0);
        let bound = (self.limit - sample.lane as f64).max(1.0);
        // A critical request in the lane adds to everyone's latency too (it waits for a
        // completion): under a request's worth is left alone, and the step is whole
        // requests, rounded down, so a limit at capacity is not stepped under it. Nothing
        // here steps the limit back up (that waits for the probe), so noise alone would
        // ratchet it down: what counts is the queue less one standard error of the
        // pooled mean (0.55 of a request at C = 20 over 120 completions spread ±50 %).
        let noise = bound * ONE_NOISE * (spread / DECIDE_SPREAD) / n.sqrt();
        let queued = bound - bound / ratio - noise;
        if queued >= 1.0 {
            if self.slid(ratio) {
                // The dip needs the app's queue in view: probe without the lane next.
                self.lane_in = 1;
            }
            return self.set(self.limit - queued.floor());
        }
        self.limit()
    }

    /// A decision stepped the limit down on a small deviation, with latency `ratio` ×
    /// the baseline. After a step down from a queue, latency falls with the limit (by
    /// Little's law, in proportion); a slower app's does not. True when this makes a
    /// slide (see [`SLIDE_SHARE`]): a dip is due at the next decision.
    fn slid(&mut self, ratio: f64) -> bool {
        let baseline = self.baseline.unwrap_or_default();
        // (A slide from before the baseline moved was judged by another.)
        let start = self.slide.filter(|s| s.2 == baseline);
        let Some((limit, before, _)) = start else {
            self.slide = Some((self.limit, ratio, baseline));
            return false;
        };
        let fell = (1.0 - self.limit / limit).max(0.0);
        if ratio < before * (1.0 - 0.5 * fell) {
            // Latency followed: a queue, shed. A slide starts over from here.
            self.slide = Some((self.limit, ratio, baseline));
            return false;
        }
        if fell < SLIDE_SHARE {
            return false;
        }
        self.slide = None;
        self.dip_in = 0;
        self.slid_from = Some(limit);
        true
    }

    fn set(&mut self, limit: f64) -> usize {
        let before = self.limit();
        self.limit = limit.clamp(self.min, self.max);
        if self.limit() != before {
            self.since_change = 0.0;
        }
        self.limit()
    }
}

/// How far the window's fastest completion was under its mean (0: all alike, 0.5 for
/// service times spread ±50 %): a rough measure of the latency noise, from the two
/// numbers a window has.
fn spread(sample: &WindowSample) -> f64 {
    let avg = sample.rtt_avg.as_secs_f64();
    if avg > 0.0 {
        (1.0 - sample.rtt_min.as_secs_f64() / avg).clamp(0.0, 1.0)
    } else {
        1.0
    }
}

/// Completions that back a decision on a small deviation at a mean [`spread`]: the mean
/// of `n` is within `±0.3 × spread / √n` (0.29 for uniform service times), so
/// [`DECIDE_SAMPLES`] at the ±50 % spread, one window's worth for an app that takes the
/// same time for every request, more for a wider spread (up to 4 × at `spread` = 1).
fn decide_samples(spread: f64) -> f64 {
    (DECIDE_SAMPLES * (spread / DECIDE_SPREAD).powi(2)).clamp(1.0, 4.0 * DECIDE_SAMPLES)
}

/// The standing queue the limit aims at, in requests (see [`QUEUE_SQRT_SHARE`]).
fn target_queue(limit: f64) -> f64 {
    (limit.sqrt() * QUEUE_SQRT_SHARE).max(1.0)
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

/// One window of a streak of elevated ones, for the re-base test.
#[derive(Clone, Copy, Debug)]
struct Elevated {
    limit: f64,
    concurrency: f64,
    /// Mean latency, seconds.
    rtt: f64,
}

/// The lowest latency of a pair of windows, the last one and another, whose limits and
/// concurrencies both differ by [`REBASE_SPREAD`] but whose latencies do not differ by
/// [`REBASE_FLAT`], and with no [`REBASE_HUMP`] between them, if any. (Each pair is
/// looked at once: when its later window came.) The limit must have moved too:
/// concurrency that fell on its own (the clients sent less, or sluice refused more,
/// while the app still worked off its queue) says nothing about the app's speed.
fn flat_latency(windows: &[Elevated]) -> Option<f64> {
    let (last, earlier) = windows.split_last()?;
    let spread = |lo: &Elevated, hi: &Elevated| {
        hi.concurrency >= lo.concurrency * REBASE_SPREAD && hi.limit >= lo.limit * REBASE_SPREAD
    };
    let mut found: Option<f64> = None;
    // The highest latency of the windows after `other`, up to the last.
    let mut between: f64 = 0.0;
    for other in earlier.iter().rev() {
        let flat = other.rtt >= last.rtt * REBASE_FLAT && last.rtt >= other.rtt * REBASE_FLAT;
        let hump = between > other.rtt.max(last.rtt) * REBASE_HUMP;
        if flat && !hump && (spread(last, other) || spread(other, last)) {
            let rtt = other.rtt.min(last.rtt);
            found = Some(found.map_or(rtt, |f| f.min(rtt)));
        }
        between = between.max(other.rtt);
    }
    found
}

/// The limit a class runs with: fixed (`adaptive = false`) or adaptive (boxed: a few
/// hundred bytes, touched once a window).
#[derive(Clone, Debug)]
pub enum Limiter {
    Fixed(usize),
    Gradient(Box<GradientLimit>),
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

    /// Slots of the limit only critical requests may take (see [`GradientLimit::lane`]).
    pub fn lane(&self) -> usize {
        match self {
            Limiter::Fixed(_) => 0,
            Limiter::Gradient(gradient) => gradient.lane(),
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

mod dip;
mod slow_start;

#[cfg(test)]
mod tests;
