//! Unit tests, and a discrete-event simulated app: `capacity` workers, FIFO queue inside
//! the app, service times uniform in [0.5 T, 1.5 T] from a seeded generator, open-loop
//! evenly spaced arrivals; the proxy admits while in-flight < limit and sheds the rest.
//! Every `critical_every`-th arrival may be critical: critical ones are admitted up to the
//! limit, the rest up to the limit less the limiter's critical lane.

use super::*;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

struct Sim {
    now: u64,
    capacity: usize,
    service_ns: u64,
    /// Arrivals per second.
    rate: f64,
    next_arrival: f64,
    /// (finish, admitted, critical) of requests in service.
    busy: BinaryHeap<Reverse<(u64, u64, bool)>>,
    /// Admission times of requests queued inside the app, and whether critical.
    queue: VecDeque<(u64, bool)>,
    /// Every this many arrivals one is critical (0: none).
    critical_every: u64,
    arrivals: u64,
    /// Critical requests admitted, and how many of them found a request that is not
    /// critical queued in the app ahead of them.
    critical_admitted: u64,
    critical_behind: u64,
    rng: u64,
    /// Service times are uniform in [1 - spread, 1 + spread] × T.
    spread: f64,
    /// Mean time a request takes from admission to the app, and an answer from the app
    /// to its release (uniform in 0..2× each, drawn from `transit_rng`): the proxy's and
    /// the kernel's share of a real request, which a proxy counts in flight while the
    /// app does not. 0: none.
    transit_ns: u64,
    transit_rng: u64,
    /// (reaches the app, admitted, critical) of requests on their way to the app.
    to_app: BinaryHeap<Reverse<(u64, u64, bool)>>,
    /// (released, admitted) of answers on their way back.
    from_app: BinaryHeap<Reverse<(u64, u64)>>,
    /// Requests waiting in the proxy's own queue, critical ones first, admitted the
    /// moment there is room (as sluice's gate does), at most `waiting_max` of each kind;
    /// 0: no queue, what finds no room is shed at once.
    waiting: [VecDeque<()>; 2],
    waiting_max: usize,
    /// The windows say how many arrived ([`WindowSample::arrivals`]), as sluice's do.
    counts_arrivals: bool,
}

#[derive(Debug)]
struct Window {
    sample: WindowSample,
    limit_before: usize,
    /// The window ran at a probe's dipped limit.
    probe: bool,
}

impl Sim {
    fn new(capacity: usize, service: Duration, load: f64) -> Sim {
        let service_ns = service.as_nanos() as u64;
        let mut sim = Sim {
            now: 0,
            capacity,
            service_ns,
            rate: 0.0,
            next_arrival: 0.0,
            busy: BinaryHeap::new(),
            queue: VecDeque::new(),
            rng: 0x9E37_79B9_7F4A_7C15,
            spread: 0.5,
            critical_every: 0,
            arrivals: 0,
            critical_admitted: 0,
            critical_behind: 0,
            transit_ns: 0,
            transit_rng: 0x2545_F491_4F6C_DD1D,
            to_app: BinaryHeap::new(),
            from_app: BinaryHeap::new(),
            waiting: [VecDeque::new(), VecDeque::new()],
            waiting_max: 0,
            counts_arrivals: true,
        };
        sim.set_load(load);
        sim
    }

    /// Offered load as a multiple of capacity.
    fn set_load(&mut self, load: f64) {
        self.rate = load * self.capacity as f64 / (self.service_ns as f64 / 1e9);
    }

    fn service(&mut self) -> u64 {
        // xorshift64*: deterministic, good enough for service-time jitter.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let u = (self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64;
        (self.service_ns as f64 * (1.0 - self.spread + 2.0 * self.spread * u)) as u64
    }

    /// One hop's transit time, uniform in 0..2 × `transit_ns`.
    fn transit(&mut self) -> u64 {
        self.transit_rng ^= self.transit_rng >> 12;
        self.transit_rng ^= self.transit_rng << 25;
        self.transit_rng ^= self.transit_rng >> 27;
        let u = (self.transit_rng.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64
            / (1u64 << 53) as f64;
        (2.0 * self.transit_ns as f64 * u) as u64
    }

    /// In flight as the proxy counts: in transit, queued in the app, in service.
    fn inflight(&self) -> usize {
        self.busy.len() + self.queue.len() + self.to_app.len() + self.from_app.len()
    }

    fn start_waiting(&mut self, at: u64) {
        while self.busy.len() < self.capacity {
            let Some((admitted, critical)) = self.queue.pop_front() else {
                break;
            };
            let finish = at + self.service();
            self.busy.push(Reverse((finish, admitted, critical)));
        }
    }

    /// Admits a request at `at`: on its way to the app, or in its queue at once.
    fn admit(&mut self, at: u64, critical: bool) {
        if critical {
            self.critical_admitted += 1;
            let behind = self.queue.iter().any(|&(_, c)| !c);
            self.critical_behind += u64::from(behind);
        }
        if self.transit_ns == 0 {
            self.queue.push_back((at, critical));
            self.start_waiting(at);
        } else {
            let reaches = at + self.transit();
            self.to_app.push(Reverse((reaches, at, critical)));
        }
    }

    /// Admits from the proxy's queue while there is room: critical requests up to
    /// `limit`, the rest up to `limit - lane`.
    fn admit_waiting(&mut self, at: u64, limit: usize, lane: usize) {
        while self.inflight() < limit && self.waiting[0].pop_front().is_some() {
            self.admit(at, true);
        }
        while self.inflight() < limit.saturating_sub(lane) && self.waiting[1].pop_front().is_some()
        {
            self.admit(at, false);
        }
    }

    /// Runs one window of `len` with at most `limit` in flight (`limit - lane` for
    /// requests that are not critical).
    fn run(&mut self, len: Duration, limit: usize, lane: usize) -> WindowSample {
        let end = self.now + len.as_nanos() as u64;
        let (mut samples, mut sum, mut min) = (0u64, 0u64, u64::MAX);
        let mut max_inflight = self.inflight();
        let mut criticals = 0;
        let arrived = self.arrivals;
        loop {
            let done = self.busy.peek().map(|Reverse((f, _, _))| *f);
            let reach = self.to_app.peek().map(|Reverse((r, _, _))| *r);
            let back = self.from_app.peek().map(|Reverse((r, _))| *r);
            let arrival = self.next_arrival as u64;
            // The earliest of the three; on a tie, answers first (they free room).
            let first = [back, done, reach]
                .into_iter()
                .enumerate()
                .filter_map(|(i, t)| t.map(|t| (t, i)))
                .min();
            let t = match first {
                Some((at, 0)) if at <= arrival && at <= end => {
                    if let Some(Reverse((released, admitted))) = self.from_app.pop() {
                        let rtt = released - admitted;
                        samples += 1;
                        sum += rtt;
                        min = min.min(rtt);
                    }
                    at
                }
                Some((finish, 1)) if finish <= arrival && finish <= end => {
                    if let Some(Reverse((_, admitted, _))) = self.busy.pop() {
                        if self.transit_ns == 0 {
                            let rtt = finish - admitted;
                            samples += 1;
                            sum += rtt;
                            min = min.min(rtt);
                        } else {
                            let released = finish + self.transit();
                            self.from_app.push(Reverse((released, admitted)));
                        }
                    }
                    self.start_waiting(finish);
                    finish
                }
                Some((at, _)) if at <= arrival && at <= end => {
                    if let Some(Reverse((_, admitted, critical))) = self.to_app.pop() {
                        self.queue.push_back((admitted, critical));
                        self.start_waiting(at);
                    }
                    at
                }
                _ if arrival <= end => {
                    self.next_arrival += 1e9 / self.rate;
                    self.arrivals += 1;
                    let critical =
                        self.critical_every > 0 && self.arrivals % self.critical_every == 0;
                    criticals += u64::from(critical);
                    let cap = if critical {
                        limit
                    } else {
                        limit.saturating_sub(lane)
                    };
                    if self.waiting_max > 0 {
                        let q = &mut self.waiting[usize::from(!critical)];
                        if q.len() < self.waiting_max {
                            q.push_back(());
                        }
                    } else if self.inflight() < cap {
                        self.admit(arrival, critical);
                    }
                    arrival
                }
                _ => break,
            };
            if self.waiting_max > 0 {
                self.admit_waiting(t, limit, lane);
            }
            max_inflight = max_inflight.max(self.inflight());
        }
        self.now = end;
        WindowSample {
            samples,
            rtt_avg: Duration::from_nanos(sum.checked_div(samples).unwrap_or(0)),
            rtt_min: Duration::from_nanos(if samples == 0 { 0 } else { min }),
            max_inflight,
            inflight_at_end: self.inflight(),
            dropped: 0,
            window: len,
            lane,
            critical: criticals,
            arrivals: Some(self.arrivals - arrived).filter(|_| self.counts_arrivals),
        }
    }
}

/// The window the shell is assumed to use: 100 ms, or 250 ms for a slow app so that a
/// small capacity still yields ≥ 10 completions.
fn window_for(service: Duration) -> Duration {
    if service >= Duration::from_millis(20) {
        Duration::from_millis(250)
    } else {
        Duration::from_millis(100)
    }
}

fn settings() -> LimitSettings {
    LimitSettings { min: 1, max: 1000 }
}

fn step(sim: &mut Sim, limiter: &mut GradientLimit, len: Duration) -> Window {
    let limit_before = limiter.limit();
    let probe = limiter.is_probing();
    let sample = sim.run(len, limit_before, limiter.lane());
    limiter.update(&sample);
    Window {
        sample,
        limit_before,
        probe,
    }
}

/// The limit after each of the next `windows` windows.
fn limits_over(
    sim: &mut Sim,
    limiter: &mut GradientLimit,
    len: Duration,
    windows: usize,
) -> Vec<usize> {
    (0..windows)
        .map(|_| {
            step(sim, limiter, len);
            limiter.limit()
        })
        .collect()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[test]
fn converges_on_known_capacities() {
    for capacity in [4usize, 20, 100] {
        for service in [Duration::from_millis(5), Duration::from_millis(50)] {
            let mut sim = Sim::new(capacity, service, 2.0);
            let mut limiter = GradientLimit::new(settings());
            let len = window_for(service);
            let mut converged = None;
            let c = capacity as f64;
            let (mut lo, mut hi, mut worst) = (usize::MAX, 0, Duration::ZERO);
            let (mut probes, mut probe_lo) = (0, usize::MAX);
            for w in 0..400 {
                let win = step(&mut sim, &mut limiter, len);
                let l = limiter.limit() as f64;
                let inside = l >= 0.9 * c && l <= 1.25 * c + 2.0;
                if converged.is_none() && inside {
                    converged = Some(w + 1);
                }
                if w >= 50 && win.probe {
                    probes += 1;
                    probe_lo = probe_lo.min(win.limit_before);
                } else if w >= 50 {
                    lo = lo.min(win.limit_before);
                    hi = hi.max(win.limit_before);
                }
                if w >= 50 {
                    worst = worst.max(win.sample.rtt_avg);
                }
            }
            eprintln!(
                "C={capacity} T={}ms: in band after {converged:?} windows; limit {lo}..={hi}; \
                 {probes} probes down to {probe_lo}; worst rtt {:.1}ms; baseline {:?}",
                ms(service),
                ms(worst),
                limiter.baseline_rtt()
            );
            // Dips are shallow (at most a fifth, or one request) and rare: at most one window
            // in 6 at a dipped limit, even at C = 4 where each takes 5 windows of 20.
            assert!(probes * 6 <= 350, "C={capacity}: {probes} dip windows");
            assert!(probe_lo == usize::MAX || probe_lo as f64 >= 0.8 * lo as f64 - 1.0);
            assert!(
                converged.is_some_and(|w| w <= 20),
                "C={capacity}: {converged:?}"
            );
            // One request is 25 % of C = 4: allow two above 1.25 C for rounding and noise.
            assert!(
                lo as f64 >= 0.9 * c && hi as f64 <= 1.25 * c + 2.0,
                "C={capacity}: {lo}..={hi}"
            );
            assert!(worst < service * 2, "C={capacity}: rtt {worst:?}");
        }
    }
}

/// Runs 100 windows at capacity `from` (offered 2x the larger capacity), then switches to
/// `to`; returns the number of windows after the switch until the limit is inside `band`
/// (in multiples of `to`) with latency under 2 T, checking that it stays so (a 5-window
/// grace for noise) and that the cut was not mistaken for a slower app.
fn capacity_change(from: usize, to: usize, band: (f64, f64), service: Duration) -> usize {
    let len = window_for(service);
    let mut sim = Sim::new(from, service, 2.0 * to.max(from) as f64 / from as f64);
    let mut limiter = GradientLimit::new(settings());
    for _ in 0..100 {
        step(&mut sim, &mut limiter, len);
    }
    sim.capacity = to;
    let mut settled = None;
    let (lo, hi) = (band.0 * to as f64, band.1 * to as f64);
    for w in 0..300 {
        let win = step(&mut sim, &mut limiter, len);
        let l = limiter.limit() as f64;
        // A dip (the limit deliberately under capacity for a few windows) is in band
        // once settled, but does not settle.
        let probing = limiter.is_probing();
        let in_band = probing || (l >= lo && l <= hi);
        let ok = in_band && win.sample.rtt_avg < service * 2;
        match settled {
            None if ok && !probing => settled = Some(w + 1),
            Some(at) if !ok && w > at + 5 => {
                panic!("{from}->{to}: left the band at window {w}: {l}, {win:?}")
            }
            _ => {}
        }
        let base = limiter.baseline_rtt().unwrap_or_default();
        assert!(
            base <= service.mul_f64(1.1),
            "{from}->{to}: re-based to {base:?}"
        );
    }
    let settled = settled.unwrap_or(usize::MAX);
    eprintln!(
        "{from}->{to} T={}ms: settled after {settled} windows, limit {}",
        ms(service),
        limiter.limit()
    );
    settled
}

#[test]
fn drops_on_a_capacity_cut() {
    // 60 -> 20 while offered 120 requests' worth: 6x the new capacity.
    for service in [Duration::from_millis(5), Duration::from_millis(50)] {
        assert!(capacity_change(60, 20, (0.9, 1.3), service) <= 5);
    }
}

#[test]
fn recovers_when_capacity_returns() {
    for service in [Duration::from_millis(5), Duration::from_millis(50)] {
        assert!(capacity_change(20, 60, (0.9, 1.3), service) <= 15);
    }
}

#[test]
fn overload_after_a_quiet_spell_starts_near_capacity() {
    // As the bench does: half the capacity for 5 s (the limit sits at twice the peak in
    // flight, ~24 at C = 20), then 2x. The spell's windows show no queue; they must not
    // be taken for room to grow once the overload lifts the 2x-peak ceiling.
    // (At 5 ms the latency floor counts up to 5 ms as unqueued: a window can reach 1.4×.)
    // At 0.7 of the capacity the quiet limit, twice the peak, is above the capacity: the
    // rush puts the excess in the app's queue at once, for the window or two latency
    // takes to show it.
    for (service, window, spread, load, worst_bound) in [
        (50, 100, 0.02, 0.5, 1.25),
        (50, 100, 0.02, 0.7, 1.5),
        (50, 250, 0.5, 0.5, 1.25),
        (5, 100, 0.5, 0.5, 1.5),
    ] {
        let (service, len) = (
            Duration::from_millis(service),
            Duration::from_millis(window),
        );
        let mut sim = Sim::new(20, service, load);
        sim.spread = spread;
        let mut limiter = GradientLimit::new(settings());
        while sim.now < 5_000_000_000 {
            step(&mut sim, &mut limiter, len);
        }
        let quiet = limiter.limit();
        sim.set_load(2.0);
        let (mut highest, mut worst) = (0, Duration::ZERO);
        for _ in 0..20 {
            let win = step(&mut sim, &mut limiter, len);
            highest = highest.max(limiter.limit());
            worst = worst.max(win.sample.rtt_avg);
        }
        eprintln!(
            "T={service:?} W={len:?}: quiet at {quiet}, then at most {highest}, worst {worst:?}"
        );
        // At most one step of 1.5× past the quiet limit (when that was under capacity:
        // the rush's first window only holds it, the second shows room, and one limited
        // step shows the capacity; a doubling put 12 requests in the app's queue at
        // once), and settled near capacity by the end.
        assert!(highest <= 24.max(quiet * 3 / 2), "T={service:?}: {highest}");
        let end = limiter.limit();
        assert!((20..=26).contains(&end), "T={service:?}: ended at {end}");
        // (The quiet limit, twice the peak, may exceed capacity: one window of queue.)
        assert!(
            worst < service.mul_f64(worst_bound),
            "T={service:?}: {worst:?}"
        );
    }
}

#[test]
fn growth_held_by_the_peak_in_flight_does_not_build_up() {
    // Windows at exactly half the limit in flight (not app-limited) with no queue: each
    // finds room to grow, but twice the peak holds the limit. When demand then fills the
    // limit, the next step is an ordinary one, not eight held-up steps at once.
    let mut g = warmed(24);
    let quiet = |max_inflight: usize| WindowSample {
        max_inflight,
        ..window(100, 10, max_inflight)
    };
    for _ in 0..20 {
        let l = g.limit();
        g.update(&quiet(l.div_ceil(2)));
    }
    let held = g.limit();
    let after = g.update(&quiet(held));
    assert!(
        after <= held + 3,
        "from {held} to {after} at the first full window"
    );
}

#[test]
fn app_limited_load_does_not_run_away() {
    for service in [Duration::from_millis(5), Duration::from_millis(50)] {
        let capacity = 20;
        let mut sim = Sim::new(capacity, service, 0.3);
        let mut limiter = GradientLimit::new(settings());
        let mut peak = 0;
        for _ in 0..1000 {
            let win = step(&mut sim, &mut limiter, window_for(service));
            peak = peak.max(win.sample.max_inflight);
        }
        eprintln!(
            "app-limited: peak in flight {peak}, limit {}",
            limiter.limit()
        );
        assert!(
            limiter.limit() <= 2 * peak,
            "{} vs peak {peak}",
            limiter.limit()
        );
        assert!(limiter.limit() <= 2 * capacity);
    }
}

#[test]
fn baseline_does_not_drift_under_sustained_overload() {
    for (capacity, service) in [(4, 5), (20, 5), (100, 5), (4, 50), (20, 50), (100, 50)] {
        let service = Duration::from_millis(service);
        let mut sim = Sim::new(capacity, service, 2.0);
        let mut limiter = GradientLimit::new(settings());
        let mut highest = Duration::ZERO;
        for w in 0..1050 {
            step(&mut sim, &mut limiter, window_for(service));
            if w >= 50 {
                highest = highest.max(limiter.baseline_rtt().unwrap_or_default());
            }
        }
        let end = limiter.baseline_rtt().unwrap_or_default();
        eprintln!("C={capacity} T={service:?}: baseline at most {highest:?}, at the end {end:?}");
        assert!(highest <= service.mul_f64(1.1), "C={capacity}: {highest:?}");
        assert!(end >= service.mul_f64(0.75), "C={capacity}: {end:?}");
    }
}

#[test]
fn follows_a_lasting_change_in_unloaded_latency() {
    // The app gets slower with the same workers (same concurrency, less throughput), under
    // 2x overload throughout: 2x and 1.5x slower, then back to the original speed.
    for (service, factor) in [(5, 2.0), (50, 2.0), (5, 1.5), (50, 1.5)] {
        let service = Duration::from_millis(service);
        let capacity = 20;
        let len = window_for(service);
        let mut sim = Sim::new(capacity, service, 2.0);
        let mut limiter = GradientLimit::new(settings());
        for _ in 0..100 {
            step(&mut sim, &mut limiter, len);
        }
        let slower = service.mul_f64(factor);
        sim.service_ns = slower.as_nanos() as u64;
        sim.set_load(2.0);
        let mut followed = None;
        for w in 0..200 {
            step(&mut sim, &mut limiter, len);
            let base = limiter.baseline_rtt().unwrap_or_default();
            if followed.is_none() && base >= slower.mul_f64(0.85) {
                followed = Some(w + 1);
            }
        }
        // (Not in the middle of a dip.)
        while limiter.is_probing() {
            step(&mut sim, &mut limiter, len);
        }
        let (base, limit) = (limiter.baseline_rtt().unwrap_or_default(), limiter.limit());
        eprintln!(
            "T {service:?} x{factor}: baseline {base:?} after {followed:?} windows, limit {limit}"
        );
        assert!(followed.is_some_and(|w| w <= 30), "{followed:?}");
        assert!(base <= slower.mul_f64(1.1), "{base:?}");
        assert!((19..=25).contains(&limit), "{limit}");
        // Faster again. The standing queue at the old limit hides the new speed until a
        // probe (after 100 unconfirmed windows) shows it.
        sim.service_ns = service.as_nanos() as u64;
        sim.set_load(2.0);
        let mut back = None;
        for w in 0..250 {
            step(&mut sim, &mut limiter, len);
            let base = limiter.baseline_rtt().unwrap_or_default();
            if back.is_none() && base <= service.mul_f64(1.15) {
                back = Some(w + 1);
            }
        }
        while limiter.is_probing() {
            step(&mut sim, &mut limiter, len);
        }
        eprintln!(
            "  faster again: baseline back after {back:?} windows, limit {} probing {}",
            limiter.limit(),
            limiter.is_probing()
        );
        // 1.15: a probe window still completes the queue of the window before it, which
        // at T = 50 ms in a 250 ms window keeps the measured latency ~10 % high.
        let base = limiter.baseline_rtt().unwrap_or_default();
        assert!(back.is_some_and(|w| w <= 150), "back: {back:?}");
        assert!(base <= service.mul_f64(1.15), "back: {base:?}");
        assert!(
            (19..=25).contains(&limiter.limit()),
            "back: {}",
            limiter.limit()
        );
    }
}

/// What a stretch of windows in front of a [`Sim`] showed.
#[derive(Debug)]
struct Stretch {
    /// Mean limit over the windows not at a dipped limit ...
    limit: f64,
    /// ... and its range.
    lo: usize,
    hi: usize,
    /// Mean latency of the completions, in multiples of the service time.
    latency: f64,
    /// Completions over what the app could have done (capacity / service time).
    goodput: f64,
    /// Windows at a dipped limit.
    dips: usize,
}

/// Runs `skip` windows, then measures `windows` more.
fn stretch(
    sim: &mut Sim,
    limiter: &mut GradientLimit,
    len: Duration,
    skip: usize,
    windows: usize,
) -> Stretch {
    for _ in 0..skip {
        step(sim, limiter, len);
    }
    let service = Duration::from_nanos(sim.service_ns).as_secs_f64();
    let (mut sum, mut cruising, mut lo, mut hi, mut dips) = (0.0, 0.0, usize::MAX, 0, 0);
    let (mut done, mut rtt) = (0u64, 0.0);
    for _ in 0..windows {
        let win = step(sim, limiter, len);
        done += win.sample.samples;
        rtt += win.sample.rtt_avg.as_secs_f64() * win.sample.samples as f64;
        if win.probe {
            dips += 1;
        } else {
            sum += win.limit_before as f64;
            cruising += 1.0;
            lo = lo.min(win.limit_before);
            hi = hi.max(win.limit_before);
        }
    }
    let possible = windows as f64 * len.as_secs_f64() * sim.capacity as f64 / service;
    Stretch {
        limit: sum / cruising,
        lo,
        hi,
        latency: rtt / done as f64 / service,
        goodput: done as f64 / possible,
        dips,
    }
}

#[test]
fn settles_with_about_one_request_queued_in_the_app() {
    // 2x overload, 400 windows after 100 of settling. The limit sits one request above
    // capacity (more at C = 100, where the target queue is 0.2 √limit = 2 and noise is a
    // request or two), so latency is T × (C + 1) / C: 1.25 T at C = 4, 1.05 T at C = 20.
    // Before: 22-25 at C = 20 (1.15 T), 103-112 at C = 100, 5-7 at C = 4 (1.3 T).
    for (capacity, limits, latency) in [
        (4usize, (4.5, 5.5), 1.3),
        (20, (20.5, 22.0), 1.07),
        (100, (100.5, 105.0), 1.04),
    ] {
        for service in [Duration::from_millis(5), Duration::from_millis(50)] {
            let mut sim = Sim::new(capacity, service, 2.0);
            let mut limiter = GradientLimit::new(settings());
            let s = stretch(&mut sim, &mut limiter, window_for(service), 100, 400);
            eprintln!("C={capacity} T={service:?}: {s:?}");
            assert!(
                s.limit >= limits.0 && s.limit <= limits.1,
                "C={capacity} T={service:?}: limit {s:?}"
            );
            assert!(s.latency <= latency, "C={capacity} T={service:?}: {s:?}");
            // Under capacity only while a dip runs (and one request under the app's
            // 20-50 % service-time spread at C = 4).
            assert!(s.goodput >= 0.97, "C={capacity} T={service:?}: {s:?}");
            assert!(s.lo + 1 >= capacity, "C={capacity} T={service:?}: {s:?}");
            assert!(
                s.hi as f64 <= 1.25 * capacity as f64 + 2.0,
                "C={capacity} T={service:?}: {s:?}"
            );
            // At most one window in 6 at a dipped limit.
            assert!(s.dips * 6 <= 400, "C={capacity} T={service:?}: {s:?}");
        }
    }
}

#[test]
fn goodput_stays_at_capacity_from_slight_to_heavy_overload() {
    // From 1.2x to 4x the capacity: the limit never settles under capacity. (The simulated
    // proxy sheds what it cannot admit at once, so at 1.2x a request or two of slack in
    // the app is all that covers the service-time spread.)
    for load in [1.2, 2.0, 4.0] {
        for (capacity, service) in [(4usize, 50u64), (20, 50), (20, 5), (100, 5)] {
            let service = Duration::from_millis(service);
            let mut sim = Sim::new(capacity, service, load);
            let mut limiter = GradientLimit::new(settings());
            let s = stretch(&mut sim, &mut limiter, window_for(service), 100, 400);
            eprintln!("load {load} C={capacity} T={service:?}: {s:?}");
            let least = if capacity < 10 { 0.95 } else { 0.97 };
            assert!(s.goodput >= least, "load {load} C={capacity}: {s:?}");
        }
    }
}

#[test]
fn settles_as_well_when_latency_is_a_large_part_of_the_window() {
    // The shell closes windows every 100 ms: at T = 50-100 ms most completions of a window
    // were admitted in the one before, under the limit before. With the bench app's
    // near-constant service time and with a ±50 % spread (40 and 20 completions a window).
    for (service, spread) in [(50, 0.02), (100, 0.02), (50, 0.5), (100, 0.5)] {
        let service = Duration::from_millis(service);
        let mut sim = Sim::new(20, service, 2.0);
        sim.spread = spread;
        let mut limiter = GradientLimit::new(settings());
        let s = stretch(&mut sim, &mut limiter, Duration::from_millis(100), 100, 500);
        eprintln!("T={service:?} spread {spread}: {s:?}");
        assert!(
            s.limit >= 20.5 && s.limit <= 22.5,
            "T={service:?} spread {spread}: {s:?}"
        );
        assert!(s.latency <= 1.09, "T={service:?} spread {spread}: {s:?}");
        assert!(s.goodput >= 0.95, "T={service:?} spread {spread}: {s:?}");
    }
}

#[test]
fn a_baseline_learned_a_few_percent_off_is_corrected() {
    // The app answers 8 % faster (or 15 % slower) during the cold start than ever after,
    // so slow start learns a baseline 12 % under (or 9 % over) the true no-queue mean: the
    // reason the old controller tolerated 1.1x the baseline as "no queue". Low, limit ×
    // baseline / rtt would settle under capacity (at C = 100, with its target queue of 2,
    // near 20); high, it would keep a standing queue of 9 % of C. The dips measure the
    // app without a queue and bring the baseline, and the limit, back.
    for capacity in [20usize, 100] {
        for off in [0.92, 1.15] {
            let service = Duration::from_millis(50);
            let len = window_for(service);
            let mut sim = Sim::new(capacity, service, 2.0);
            sim.service_ns = service.mul_f64(off).as_nanos() as u64;
            sim.set_load(2.0 / off);
            let mut limiter = GradientLimit::new(settings());
            while limiter.in_slow_start() {
                step(&mut sim, &mut limiter, len);
            }
            let learned = limiter.baseline_rtt().unwrap_or_default().as_secs_f64() / 0.05;
            // (The ramp itself learns a few per cent low: short requests finish first.)
            assert!((learned - 1.0).abs() >= 0.05, "learned {learned}");
            sim.service_ns = service.as_nanos() as u64;
            sim.set_load(2.0);
            let s = stretch(&mut sim, &mut limiter, len, 60, 240);
            let base = limiter.baseline_rtt().unwrap_or_default().as_secs_f64() / 0.05;
            eprintln!("C={capacity} baseline learned at {learned:.3} T, now {base:.3} T: {s:?}");
            assert!((base - 1.0).abs() <= 0.03, "C={capacity} off {off}: {base}");
            let c = capacity as f64;
            assert!(
                s.limit >= c && s.limit <= c + 0.05 * c + 2.0,
                "C={capacity} off {off}: {s:?}"
            );
            assert!(s.goodput >= 0.97, "C={capacity} off {off}: {s:?}");
        }
    }
}

fn window(samples: u64, rtt_ms: u64, max_inflight: usize) -> WindowSample {
    WindowSample {
        samples,
        rtt_avg: Duration::from_millis(rtt_ms),
        rtt_min: Duration::from_millis(rtt_ms / 2),
        max_inflight,
        inflight_at_end: max_inflight,
        dropped: 0,
        // Unknown length: these hand-made windows are not consistent with Little's law,
        // so the throughput test of slow start is skipped for them.
        window: Duration::ZERO,
        ..WindowSample::default()
    }
}

/// A limiter past slow start, at about `limit`, with a 10 ms baseline.
fn warmed(limit: usize) -> GradientLimit {
    let mut g = GradientLimit::new(settings());
    while g.limit() < limit {
        let l = g.limit();
        g.update(&window(100, 10, l));
    }
    g.update(&window(100, 30, g.limit()));
    assert!(!g.in_slow_start());
    g
}

#[test]
fn slow_start_doubles_then_stops_at_the_first_queue() {
    let mut g = GradientLimit::new(settings());
    assert_eq!(g.limit(), 1);
    for expected in [2, 4, 8, 16, 32] {
        let l = g.limit();
        assert_eq!(g.update(&window(100, 10, l)), expected);
    }
    assert!(g.update(&window(100, 20, 32)) < 32);
    assert!(!g.in_slow_start());
}

#[test]
fn the_cold_start_finds_capacity_whatever_share_of_the_window_latency_is() {
    // From 5 % of a window (T = 5 ms in 100 ms) to all of it (T = 100 ms): at T = W a
    // window's completions were all admitted in the window before, under half the limit
    // (with a constant service time the first window after a doubling shows exactly half
    // the throughput per unit of limit). Slow start ends between 0.5x and 1.5x capacity,
    // and the limit is within 15 % of it within 30 windows (3 s at 100 ms). Service times
    // spread ±50 %, but ±10 % at T = 50 ms in 100 ms windows: there, at ±50 %, a ramp
    // window of ~20 completions can look stalled, and the noise of both the ramp's
    // baseline and the first dips (±3 %) can keep the limit a few requests short for
    // several seconds (one seed in 20 here).
    for capacity in [20usize, 100] {
        for (service, window, spread) in [
            (5, 100, 0.5),
            (50, 250, 0.5),
            (50, 100, 0.1),
            (100, 100, 0.5),
            // As the end-to-end test's app: every request takes the same time.
            (100, 100, 0.02),
        ] {
            let (service, len) = (
                Duration::from_millis(service),
                Duration::from_millis(window),
            );
            let mut sim = Sim::new(capacity, service, 2.0);
            sim.spread = spread;
            let mut limiter = GradientLimit::new(settings());
            let (mut windows, mut exit, mut reached) = (0, None, None);
            while windows < 30 {
                step(&mut sim, &mut limiter, len);
                windows += 1;
                let l = limiter.limit() as f64;
                if exit.is_none() && !limiter.in_slow_start() {
                    exit = Some(limiter.limit());
                }
                if reached.is_none() && l >= 0.85 * capacity as f64 && !limiter.is_probing() {
                    reached = Some(windows);
                }
            }
            eprintln!(
                "C={capacity} T={service:?} W={len:?}: slow start ended at {exit:?}, \
                 within 15 % after {reached:?} windows"
            );
            let c = capacity as f64;
            assert!(
                exit.is_some_and(|l| l as f64 >= 0.5 * c && l as f64 <= 1.5 * c),
                "C={capacity} T={service:?} W={len:?}: {exit:?}"
            );
            assert!(reached.is_some(), "C={capacity} T={service:?} W={len:?}");
        }
    }
}

#[test]
fn app_limited_windows_change_neither_limit_nor_baseline() {
    let mut g = warmed(64);
    let (limit, base) = (g.limit(), g.baseline_rtt());
    for rtt in [5, 10, 40] {
        assert_eq!(g.update(&window(100, rtt, limit / 2 - 1)), limit);
        assert_eq!(g.baseline_rtt(), base);
    }
    // Too few samples: nothing either.
    assert_eq!(g.update(&window(3, 40, limit)), limit);
}

#[test]
fn dropped_heavy_window_halves_and_a_few_drops_cut_by_a_fifth() {
    let mut g = warmed(64);
    let limit = g.limit();
    let mut heavy = window(100, 10, limit);
    heavy.dropped = 30;
    assert_eq!(g.update(&heavy), (limit as f64 * 0.5).round() as usize);
    let limit = g.limit();
    let mut light = window(100, 10, limit);
    light.dropped = 1;
    assert_eq!(g.update(&light), (limit as f64 * 0.8).round() as usize);
}

#[test]
fn limit_is_clamped_to_min_and_max() {
    let mut g = GradientLimit::new(LimitSettings { min: 5, max: 12 });
    assert_eq!(g.limit(), 5);
    for _ in 0..10 {
        let l = g.limit();
        assert!(g.update(&window(100, 10, l)) <= 12);
    }
    assert_eq!(g.limit(), 12);
    for _ in 0..10 {
        let mut w = window(100, 100, 12);
        w.dropped = 100;
        assert!(g.update(&w) >= 5);
    }
    assert_eq!(g.limit(), 5);
}

#[test]
fn fixed_limits_never_change() {
    let mut fixed = Limiter::Fixed(7);
    let mut same = Limiter::Gradient(Box::new(GradientLimit::new(LimitSettings {
        min: 9,
        max: 9,
    })));
    for rtt in [1, 10, 1000] {
        let mut w = window(100, rtt, 100);
        assert_eq!(fixed.update(&w), 7);
        assert_eq!(same.update(&w), 9);
        w.dropped = 100;
        assert_eq!(fixed.update(&w), 7);
        assert_eq!(same.update(&w), 9);
    }
    assert_eq!(fixed.limit(), 7);
    assert_eq!(fixed.baseline_rtt(), None);
}

#[test]
fn slow_start_ends_when_throughput_stalls_before_latency_shows_it() {
    // Windows as measured in front of an app of capacity 20 and 50 ms service: the limit
    // doubles while throughput follows it (Little's concurrency ≈ 0.78 × the limit), and
    // stops at the window whose throughput stalled (36 in 100 ms at 55 ms ≈ 20 of 32),
    // although its latency still looked unqueued.
    let measured = |samples: u64, rtt_ms: u64, max_inflight: usize| WindowSample {
        samples,
        rtt_avg: Duration::from_millis(rtt_ms),
        rtt_min: Duration::from_millis(rtt_ms),
        max_inflight,
        inflight_at_end: max_inflight,
        dropped: 0,
        window: Duration::from_millis(100),
        ..WindowSample::default()
    };
    let mut g = GradientLimit::new(LimitSettings { min: 2, max: 200 });
    assert_eq!(g.update(&measured(3, 52, 2)), 4);
    assert_eq!(g.update(&measured(6, 52, 4)), 8);
    assert_eq!(g.update(&measured(12, 52, 8)), 16);
    assert_eq!(g.update(&measured(24, 52, 16)), 32);
    let after = g.update(&measured(36, 55, 32));
    assert!(!g.in_slow_start());
    assert!(
        (20..=24).contains(&after),
        "set near the measured capacity: {after}"
    );
}

#[test]
fn slow_start_stops_at_capacity_in_windows_of_uneven_length() {
    // Windows as the shell closed them in front of an app of capacity 24 and 100 ms (the
    // end-to-end test's): 200 ms while a window held fewer than min(10, limit)
    // completions, then 100 ms. The window at 16 is half made of completions admitted at
    // 8, so its throughput per unit of limit is what saturation shows at 32: only once
    // both are measured against what a ramp that fits shows is the stall at 32 seen.
    let mut g = GradientLimit::new(LimitSettings { min: 2, max: 200 });
    let mut limits = vec![];
    for (samples, rtt_us, max_inflight, window_ms) in [
        (2, 100_986, 2, 200),
        (6, 107_279, 4, 210),
        (12, 101_170, 8, 200),
        (24, 108_393, 16, 200),
        (16, 101_254, 32, 100),
        (24, 106_887, 32, 100),
    ] {
        limits.push(g.update(&WindowSample {
            samples,
            rtt_avg: Duration::from_micros(rtt_us),
            rtt_min: Duration::from_micros(rtt_us - 1_000),
            max_inflight,
            inflight_at_end: max_inflight,
            dropped: 0,
            window: Duration::from_millis(window_ms),
            ..WindowSample::default()
        }));
    }
    assert_eq!(&limits[..5], &[4, 8, 16, 32, 32], "the ramp");
    assert!(!g.in_slow_start(), "{limits:?}");
    assert!((24..=27).contains(&limits[5]), "{limits:?}");
}

#[test]
fn a_fast_app_is_not_throttled_by_scheduling_noise() {
    // Sub-millisecond answers whose latency still triples as concurrency grows (the
    // machine's cores are shared): all under the latency floor, so the limit keeps
    // growing instead of settling where the noise starts.
    let mut g = GradientLimit::new(LimitSettings { min: 10, max: 500 });
    for _ in 0..200 {
        let l = g.limit();
        let rtt_us = 300 + (l as u64) * 10; // 0.4 ms at 10, 2.3 ms at 200
        g.update(&WindowSample {
            samples: 1000,
            rtt_avg: Duration::from_micros(rtt_us),
            rtt_min: Duration::from_micros(rtt_us / 2),
            max_inflight: l,
            inflight_at_end: l,
            dropped: 0,
            window: Duration::from_millis(100),
            ..WindowSample::default()
        });
    }
    assert!(g.limit() >= 400, "limit {}", g.limit());
}

#[test]
fn after_a_failure_the_limit_doubles_back_to_where_it_was() {
    let mut g = warmed(25);
    let before = g.limit();
    let failing = WindowSample {
        dropped: 50,
        ..window(50, 10, before)
    };
    for _ in 0..10 {
        g.update(&failing);
    }
    assert!(g.limit() <= 2, "collapsed: {}", g.limit());
    assert!(g.ramping());
    // The app answers again at its usual latency: back within a few windows.
    let mut windows = 0;
    while g.limit() < before && windows < 10 {
        let l = g.limit();
        g.update(&window(100, 10, l));
        windows += 1;
    }
    assert_eq!(g.limit(), before, "after {windows} windows");
    assert!(windows <= 5, "{windows} windows");
    // ... and it does not overshoot past where it was.
    let l = g.limit();
    g.update(&window(100, 10, l));
    assert!(!g.ramping());
    assert!(g.limit() <= before + 4);
}

#[test]
fn demand_falling_during_a_queue_is_not_taken_for_a_slower_app() {
    // At equilibrium in front of an app of capacity 4 and 10 ms (limit 5: one request
    // queued, latency 1.25x the baseline, so every window counts as elevated and feeds
    // the re-base test), the clients' demand halves (or degradation refuses most of it):
    // concurrency halves while the app still works off its queue at the same latency.
    // That is no reason to re-base and restart slow start; the limit must not jump.
    let mut g = warmed(4);
    let app_ms = |limit: usize| 10.0 * (limit as f64 / 4.0).max(1.0);
    let w = |samples: u64, rtt_ms: f64, conc: f64, max_inflight: usize| WindowSample {
        samples,
        rtt_avg: Duration::from_secs_f64(rtt_ms / 1e3),
        rtt_min: Duration::from_millis(10),
        max_inflight,
        inflight_at_end: max_inflight,
        dropped: 0,
        // samples × rtt / window = concurrency
        window: Duration::from_secs_f64(samples as f64 * rtt_ms / 1e3 / conc),
        ..WindowSample::default()
    };
    let mut windows = 0;
    while windows < 60 || g.is_probing() {
        let l = g.limit();
        g.update(&w(20, app_ms(l), l as f64, l));
        windows += 1;
    }
    let limit = g.limit();
    assert_eq!(limit, 5, "equilibrium at C = 4");
    assert!(!g.in_slow_start());
    let mut highest = 0;
    for _ in 0..12 {
        highest = highest.max(g.update(&w(20, app_ms(limit), 2.5, limit)));
    }
    assert!(!g.in_slow_start(), "re-based on a demand drop");
    assert!(
        highest <= limit + 2,
        "limit jumped from {limit} to {highest}"
    );
}

#[test]
fn clients_that_stop_mid_window_do_not_pass_for_the_apps_capacity() {
    // A fast app (latency under the floor): slow start doubles to the maximum and never
    // sees a queue, so it is still on when the load test ends.
    let mut g = GradientLimit::new(LimitSettings { min: 2, max: 100 });
    let busy = |limit: usize| WindowSample {
        samples: 2_700,
        rtt_avg: Duration::from_micros(1_200),
        rtt_min: Duration::from_micros(100),
        max_inflight: limit.min(64),
        inflight_at_end: limit.min(64),
        dropped: 0,
        window: Duration::from_millis(100),
        ..WindowSample::default()
    };
    for _ in 0..10 {
        let l = g.limit();
        g.update(&busy(l));
    }
    assert_eq!(g.limit(), 100);
    // The last window: 64 in flight at its start, the clients gone a tenth of the way
    // in. Its throughput (279 in 100 ms) is the clients', not the app's capacity.
    let ended = WindowSample {
        samples: 279,
        inflight_at_end: 0,
        ..busy(100)
    };
    let after = g.update(&ended);
    assert!(
        after >= 64,
        "limit fell to {after} when the clients stopped"
    );
}

/// 2x overload at C = 20, T = 50 ms, every 4th arrival critical, 100 windows of settling
/// and 400 measured: the share of critical admissions that found a request that is not
/// critical queued in the app ahead of them, the windows with the lane open, goodput,
/// and the lowest and highest limit. `use_lane: false` ignores the lane (the proxy
/// admits everyone up to the limit, and tells the limiter so).
fn with_criticals(spread: f64, use_lane: bool) -> (f64, usize, f64, usize, usize) {
    let service = Duration::from_millis(50);
    let len = Duration::from_millis(100);
    let mut sim = Sim::new(20, service, 2.0);
    sim.spread = spread;
    sim.critical_every = 4;
    let mut limiter = GradientLimit::new(settings());
    let (mut laned, mut done, mut lo, mut hi) = (0, 0, usize::MAX, 0);
    for w in 0..500 {
        if w == 100 {
            (sim.critical_admitted, sim.critical_behind) = (0, 0);
        }
        let limit = limiter.limit();
        let lane = if use_lane { limiter.lane() } else { 0 };
        let sample = sim.run(len, limit, lane);
        limiter.update(&sample);
        if w >= 100 {
            laned += usize::from(lane > 0);
            done += sample.samples;
            lo = lo.min(limit);
            hi = hi.max(limit);
        }
    }
    let possible = 400.0 * len.as_secs_f64() * 20.0 / service.as_secs_f64();
    let behind = sim.critical_behind as f64 / sim.critical_admitted.max(1) as f64;
    (behind, laned, done as f64 / possible, lo, hi)
}

#[test]
fn the_critical_lane_keeps_critical_requests_out_of_the_apps_queue() {
    for spread in [0.02, 0.5] {
        let without = with_criticals(spread, false);
        let with = with_criticals(spread, true);
        eprintln!("spread {spread}: without the lane {without:?}, with it {with:?}");
        // Without the lane a third of critical requests queue behind another; with it, a
        // few, admitted during the probes and dips.
        assert!(
            with.0 <= 0.2 && with.0 <= 0.6 * without.0,
            "{with:?} vs {without:?}"
        );
        assert!(with.1 >= 200, "lane open in {} of 400 windows", with.1);
        assert!(with.2 >= 0.97, "goodput {with:?}");
        assert!(with.3 + 2 >= 20, "limit {with:?}");
    }
}

/// With critical requests arriving (and so the lane open whenever the limit settles),
/// capacity changes are still followed: a cut at once (a large deviation), a rise at the
/// next probe. Returns the windows until the limit was within [0.9, 1.3] × the new
/// capacity.
fn capacity_change_with_criticals(from: usize, to: usize) -> usize {
    let service = Duration::from_millis(50);
    let len = Duration::from_millis(100);
    let mut sim = Sim::new(from, service, 2.0 * to.max(from) as f64 / from as f64);
    sim.critical_every = 4;
    let mut limiter = GradientLimit::new(settings());
    let mut laned = 0;
    for _ in 0..100 {
        step(&mut sim, &mut limiter, len);
        laned += usize::from(limiter.lane() > 0);
    }
    assert!(laned >= 40, "{from}: lane open in {laned} of 100 windows");
    sim.capacity = to;
    let (lo, hi) = (0.9 * to as f64, 1.3 * to as f64);
    for w in 0..200 {
        step(&mut sim, &mut limiter, len);
        let l = limiter.limit() as f64;
        if l >= lo && l <= hi {
            eprintln!(
                "{from}->{to} with criticals: in band after {} windows",
                w + 1
            );
            return w + 1;
        }
    }
    usize::MAX
}

#[test]
fn with_the_critical_lane_open_capacity_changes_are_still_followed() {
    assert!(capacity_change_with_criticals(60, 20) <= 5);
    // The lane holds the limit until the next probe (every 16 windows), then it grows as
    // it does without one (<= 15 windows).
    assert!(capacity_change_with_criticals(20, 60) <= 35);
}

#[test]
fn a_rush_after_a_quiet_spell_does_not_take_the_quiet_for_the_apps_capacity() {
    // A quiet spell at half the capacity leaves slow start's limit at twice the quiet peak,
    // above the capacity (as in the bench, where Poisson arrivals peak at 16 in flight
    // against a capacity of 20 and leave the limit at 32). The rush's first window
    // completes what the quiet admitted: its throughput is the quiet's. Taken for the
    // app's, it set the limit at about 0.6 of capacity for the next second (12 for 20 in
    // the bench; 9 for 12 here). It must wait for a window the rush pressed from its
    // start.
    let (service, len) = (Duration::from_millis(50), Duration::from_millis(100));
    // (Judged against what the clients asked for, the quiet limit no longer sits above
    // the capacity: the guard is tested here as a shell that does not count arrivals
    // has it.)
    let mut sim = Sim::new(12, service, 0.5);
    sim.counts_arrivals = false;
    let mut limiter = GradientLimit::new(settings());
    while sim.now < 5_000_000_000 {
        step(&mut sim, &mut limiter, len);
    }
    let quiet = limiter.limit();
    assert!(
        quiet > 13,
        "the quiet limit {quiet} should sit above capacity"
    );
    sim.set_load(2.0);
    let limits = limits_over(&mut sim, &mut limiter, len, 20);
    eprintln!("quiet at {quiet}, then {limits:?}");
    let lowest = limits.iter().copied().min().unwrap_or(0);
    assert!(
        lowest >= 11,
        "fell to {lowest} against a capacity of 12: {limits:?}"
    );
    assert!(limits[limits.len() - 1] <= 16, "{limits:?}");
}

#[test]
fn slow_start_held_by_light_traffic_is_not_ramping() {
    // 10 ms per request; windows of 100 ms whose completions match what was in flight.
    let busy = |inflight: usize| WindowSample {
        samples: inflight as u64 * 10,
        rtt_avg: Duration::from_millis(10),
        rtt_min: Duration::from_millis(9),
        max_inflight: inflight,
        inflight_at_end: inflight,
        window: Duration::from_millis(100),
        ..WindowSample::default()
    };
    let mut g = GradientLimit::new(settings());
    // Seconds without traffic before the first request: still everything to climb.
    for _ in 0..5 {
        g.update(&WindowSample {
            window: Duration::from_secs(1),
            ..WindowSample::default()
        });
    }
    assert!(g.ramping());
    for _ in 0..6 {
        let l = g.limit();
        g.update(&busy(l));
        assert!(g.ramping(), "doubling at {l}");
        if g.limit() > 8 {
            break;
        }
    }
    let limit = g.limit();
    assert!(limit > 8, "{limit}");
    // Light traffic: the limit holds, and after half a second slow start is not
    // climbing any more (a queue at this limit is overload, not a ramp).
    let light = WindowSample {
        inflight_at_end: 1,
        ..busy(limit / 2)
    };
    let mut ramping = vec![];
    for _ in 0..8 {
        g.update(&light);
        ramping.push(g.ramping());
    }
    assert_eq!(g.limit(), limit);
    assert!(g.in_slow_start());
    assert_eq!(
        ramping,
        [true, true, true, true, false, false, false, false]
    );
    // Demand fills the limit at the app's speed: slow start climbs again, by half a
    // doubling (the limit was held, not tried), and these cautious steps are not a
    // ramp either: a queue that stands meanwhile is overload.
    g.update(&busy(limit));
    g.update(&busy(limit));
    assert_eq!(g.limit(), limit * 3 / 2);
    assert!(g.in_slow_start());
    assert!(!g.ramping());
}

#[test]
fn slow_start_held_by_light_traffic_comes_down_to_twice_its_peak() {
    // 10 ms per request. The cold ramp's backlog took the limit to 32 ...
    let mut g = GradientLimit::new(settings());
    let busy = |inflight: usize, end: usize| WindowSample {
        samples: inflight as u64 * 10,
        rtt_avg: Duration::from_millis(10),
        rtt_min: Duration::from_millis(9),
        max_inflight: inflight,
        inflight_at_end: end,
        window: Duration::from_millis(100),
        ..WindowSample::default()
    };
    while g.limit() < 32 {
        let l = g.limit();
        g.update(&busy(l, l));
    }
    assert_eq!(g.limit(), 32);
    // ... and then the clients had 17 in flight at most in the first half second
    // (twice that is above the limit: it stays), and 12 in the next: the limit comes
    // down to 24 at its end, and slow start, still on, is not ramping.
    let mut limits = vec![];
    for peak in [17, 12, 10, 12, 11, 9, 12, 12, 10, 12] {
        g.update(&busy(peak, 8));
        limits.push(g.limit());
    }
    assert_eq!(limits, [32, 32, 32, 32, 32, 32, 32, 32, 32, 24]);
    assert!(g.in_slow_start());
    assert!(!g.ramping());
    // A rush, and the app takes 21 at once: throughput short of the limit, but not by
    // much, and latency 24 / 21 of the baseline, under slow start's exit. The first
    // window (not pressed from its start) only holds; the second, whose latency rose
    // as Little's law says a queue of 3 would raise it, ends slow start at the
    // capacity instead of a step to 36 that would queue 15 requests in the app.
    let rush = |rtt_us: u64| WindowSample {
        samples: 210,
        rtt_avg: Duration::from_micros(rtt_us),
        rtt_min: Duration::from_millis(9),
        max_inflight: 24,
        inflight_at_end: 24,
        window: Duration::from_millis(100),
        ..WindowSample::default()
    };
    let mut queued = g.clone();
    let limits: Vec<_> = (0..2).map(|_| queued.update(&rush(11_430))).collect();
    assert_eq!(limits[0], 24);
    assert!((21..=23).contains(&limits[1]), "{limits:?}");
    assert!(!queued.in_slow_start());
    // With latency flat the shortfall is doubtful: one more look, and short twice
    // running ends slow start all the same.
    let limits: Vec<_> = (0..3).map(|_| g.update(&rush(10_000))).collect();
    assert_eq!(limits[..2], [24, 24]);
    assert!((21..=23).contains(&limits[2]), "{limits:?}");
    assert!(!g.in_slow_start());
}

#[test]
fn an_app_a_little_slower_for_reasons_of_its_own_is_not_read_as_a_queue() {
    // A throttled CPU or a slower database: every request takes 10-30 % longer, with the
    // same workers, under 2x overload throughout. The latency rise is under the re-base
    // test's 1.2x, so before slides were dipped on, each pooled decision read it as a
    // queue and cut the limit (20 -> 5-7 over 3 s; over these cases the lowest limit was
    // 5-20 and goodput over 30 s 59-99 % of capacity; now 11-20 and 90-99 %).
    // Three seeds each; with and without critical requests (and their lane).
    for crit in [0u64, 4] {
        for service in [5u64, 50] {
            for factor in [1.1, 1.15, 1.2, 1.3] {
                for seed in 0..3u64 {
                    let service = Duration::from_millis(service);
                    let len = window_for(service);
                    let mut sim = Sim::new(20, service, 2.0);
                    sim.rng ^= (seed + 1).wrapping_mul(0xD1B5_4A32_D192_ED03);
                    sim.critical_every = crit;
                    let mut limiter = GradientLimit::new(settings());
                    for _ in 0..100 {
                        step(&mut sim, &mut limiter, len);
                    }
                    let slower = service.mul_f64(factor);
                    sim.service_ns = slower.as_nanos() as u64;
                    let s = stretch(&mut sim, &mut limiter, len, 0, 120);
                    let base = limiter.baseline_rtt().unwrap_or_default();
                    let case = format!("crit {crit} T={service:?} x{factor} seed {seed}");
                    eprintln!("{case}: baseline {base:?}: {s:?}");
                    assert!(s.lo >= 10, "{case}: {s:?}");
                    assert!(s.goodput >= 0.9, "{case}: {s:?}");
                    assert!(
                        base >= slower.mul_f64(0.93) && base <= slower.mul_f64(1.07),
                        "{case}: {base:?}"
                    );
                }
            }
        }
    }
}

#[test]
fn noise_alone_does_not_step_the_limit_down_while_the_lane_is_open() {
    // With the lane open, latency a request's worth over the baseline steps the limit down
    // and nothing steps it back up before the next probe. Pooled over 120 completions
    // spread ±50 %, a request's worth (5 % at 20) is within two standard errors, so that
    // rule alone ratcheted the limit down on noise: in bench/steady.py (C = 20, ±50 %, 2x,
    // three runs) 11-15 % of windows left the non-critical requests at 16-17 of the app's
    // 20 workers, and goodput was 93.6-94.2 % of capacity (now none under 18, 95.9-96.2
    // %). A queue counts now less one standard error.
    let (service, len) = (Duration::from_millis(50), Duration::from_millis(100));
    let mut sim = Sim::new(20, service, 2.0);
    sim.critical_every = 4;
    let mut limiter = GradientLimit::new(settings());
    // Settle, then stop at a window that opened the lane (16 windows before its probe).
    let mut opened = false;
    for w in 0..1000 {
        let lane = limiter.lane();
        step(&mut sim, &mut limiter, len);
        if w >= 100 && lane == 0 && limiter.lane() > 0 && !limiter.is_probing() {
            opened = true;
            break;
        }
    }
    assert!(opened, "the lane never opened");
    let limit = limiter.limit();
    assert!(limit >= 20, "settled at {limit}");
    let baseline = limiter.baseline_rtt().unwrap_or_default();
    let window = |ratio: f64, lane: usize| WindowSample {
        samples: 40,
        rtt_avg: baseline.mul_f64(ratio),
        rtt_min: baseline.mul_f64(ratio / 2.0),
        max_inflight: limit,
        inflight_at_end: limit,
        dropped: 0,
        window: len,
        lane,
        critical: 10,
        arrivals: None,
    };
    // A queue of 1.1 requests by the pooled mean (6 % over the baseline with 20 below the
    // lane), whose standard error is 0.55 of a request: held.
    for _ in 0..12 {
        let sample = window(1.06, limiter.lane());
        limiter.update(&sample);
        assert_eq!(limiter.limit(), limit, "stepped down on noise");
        assert!(limiter.lane() > 0, "the lane closed");
    }
    // A queue well clear of the noise (2.6 requests, 15 %) still steps it down.
    for _ in 0..3 {
        let sample = window(1.15, limiter.lane());
        limiter.update(&sample);
    }
    assert!(
        limiter.limit() < limit,
        "a real queue was not acted on: {} from {limit}",
        limiter.limit()
    );
}

#[test]
fn settles_as_well_behind_a_queue_and_a_network() {
    // As in front of the bench app: sluice's own queue refills a slot the moment it frees
    // (the simulated proxy above sheds what finds no room on arrival), and a request
    // spends time between admission and the app, and its answer between the app and the
    // release, that sluice counts in flight and the app does not (measured in the bench:
    // 0.4 requests of 20 at 400 req/s, 0.5 ms each way). A quarter of the load critical.
    for seed in [1u64, 2, 3] {
        let (service, len) = (Duration::from_millis(50), Duration::from_millis(100));
        let mut sim = Sim::new(20, service, 2.0);
        sim.rng ^= seed.wrapping_mul(0x9E37_79B9);
        sim.critical_every = 4;
        sim.transit_ns = 500_000;
        sim.waiting_max = 20;
        let mut limiter = GradientLimit::new(settings());
        let s = stretch(&mut sim, &mut limiter, len, 100, 500);
        eprintln!("seed {seed}: {s:?}");
        assert!(s.limit >= 20.5 && s.limit <= 22.5, "seed {seed}: {s:?}");
        assert!(s.goodput >= 0.97, "seed {seed}: {s:?}");
        assert!(s.latency <= 1.1, "seed {seed}: {s:?}");
    }
}

/// The bench's scenario 5 in the simulation: C = 20, 50 ms ± 50 %, 2x, a quarter critical,
/// sluice's own queue, 0.5 ms each way between sluice and the app; 100 windows to settle,
/// then the app `factor` × slower, and the 200 windows after it measured.
fn scenario_5(factor: f64, seed: u64) -> Stretch {
    let (service, len) = (Duration::from_millis(50), Duration::from_millis(100));
    let mut sim = Sim::new(20, service, 2.0);
    sim.rng ^= (seed + 1).wrapping_mul(0xD1B5_4A32_D192_ED03);
    sim.critical_every = 4;
    sim.waiting_max = 20;
    sim.transit_ns = 500_000;
    let mut limiter = GradientLimit::new(settings());
    for _ in 0..100 {
        step(&mut sim, &mut limiter, len);
    }
    sim.service_ns = service.mul_f64(factor).as_nanos() as u64;
    stretch(&mut sim, &mut limiter, len, 0, 200)
}

#[test]
fn an_app_slower_by_about_the_re_base_threshold_does_not_spiral_the_limit_down() {
    // As in the bench's scenario 5 (C = 20, 50 ms ± 50 %, 2x, a quarter critical, sluice's
    // own queue, 0.5 ms each way between sluice and the app), the app 1.15-1.3x slower
    // from one window on. Noise about the re-base test's 1.2x put windows on both sides
    // of it: those above were large deviations (a step to bound / ratio each), those
    // under cleared the history the re-base test compares, so the limit fell to 5-8
    // before it re-based (1.5 s at critical p99 549-1523 ms in one full bench run). The
    // history now keeps windows from 1.1x, and the slow start the re-base restarts goes
    // no higher than the limit where the slowdown began. Eight seeds each: lowest limit 5-20 before,
    // 9-20 after; goodput over the 20 s after 77-99 % of the slower capacity, then 90-99 %.
    // With large steps in the slide (see the sweep below): lowest 10-21 (mean 14.3 -> 15.4),
    // goodput 88-99 % (mean 96.6 -> 96.7 %; one seed's baseline was 8 % high before the
    // slowdown, and its dips took 4 s to settle).
    for factor in [1.15, 1.2, 1.25, 1.3] {
        for seed in 0..8u64 {
            let s = scenario_5(factor, seed);
            eprintln!("x{factor} seed {seed}: {s:?}");
            assert!(s.lo >= 10, "x{factor} seed {seed}: {s:?}");
            // The slow start after the re-base stops where the slowdown began (it ran
            // on to 48 here, 87 in the bench, with the latency test alone).
            assert!(s.hi <= 30, "x{factor} seed {seed}: {s:?}");
            assert!(s.goodput >= 0.88, "x{factor} seed {seed}: {s:?}");
        }
    }
}

#[test]
fn a_slower_app_loses_less_to_the_spiral_over_many_seeds() {
    // Scenario 5's setup over 64 seeds and five slowdowns (1.1-1.3x). The slide test used
    // to restart at every large step, the dip it made due waited for large back-offs,
    // and a dip ended sooner when its windows were faster by chance (a smaller
    // `1 - min / avg`): limit fell a long way in some seeds. Before: mean lowest limit
    // 14.65, 42 of 320 under 95 % goodput (8 under 90 %, the worst 61.6 %); after: 15.42,
    // 19 (3, 86.1 %).
    let (mut lows, mut poor, mut n) = (0usize, 0usize, 0usize);
    for factor in [1.1, 1.15, 1.2, 1.25, 1.3] {
        for seed in 0..64u64 {
            let s = scenario_5(factor, seed);
            lows += s.lo;
            poor += usize::from(s.goodput < 0.95);
            n += 1;
            assert!(s.goodput >= 0.85, "x{factor} seed {seed}: {s:?}");
        }
    }
    let mean_lo = lows as f64 / n as f64;
    eprintln!("mean lowest limit {mean_lo:.2}, {poor} of {n} under 95 % goodput");
    assert!(mean_lo >= 15.0, "mean lowest limit {mean_lo:.2}");
    assert!(poor <= 25, "{poor} of {n} under 95 % goodput");
}

#[test]
fn a_backlog_from_a_lower_limit_is_not_taken_for_the_apps_capacity() {
    // As `sluice demo` warms up: 20 workers at 50 ms, slow start from 4, and clients
    // that keep 5 requests busy (a quarter of capacity), queued in the proxy when the
    // limit is full. At 4 a backlog builds; doubled to 8, it fills the new limit for a
    // window, whose throughput is the clients' (5), not the app's. Judged against the
    // limit, that ended slow start at 6-8, and the overload that followed climbed
    // additively from there (8 -> 25 in 1.2 s) with critical requests queueing. Judged
    // against what the clients asked for, slow start goes on (to 12-14, twice what the
    // clients use, where it holds) and a 2x overload finds the capacity in a few
    // windows.
    let (service, len) = (Duration::from_millis(50), Duration::from_millis(100));
    let mut found = 0;
    for seed in 0..8u64 {
        let mut sim = Sim::new(20, service, 0.25);
        sim.rng ^= (seed + 1).wrapping_mul(0xD1B5_4A32_D192_ED03);
        sim.waiting_max = 100;
        let mut limiter = GradientLimit::new(LimitSettings { min: 4, max: 100 });
        while sim.now < 2_000_000_000 {
            step(&mut sim, &mut limiter, len);
        }
        let warm = limiter.limit();
        assert!(
            limiter.in_slow_start() && !limiter.ramping(),
            "seed {seed}: slow start ended at {warm} on the clients' throughput"
        );
        sim.set_load(2.0);
        let limits = limits_over(&mut sim, &mut limiter, len, 8);
        eprintln!("seed {seed}: warm at {warm}, then {limits:?}");
        // Steps of 1.5x past the limit light traffic held (with a doubling, 14 -> 21 ->
        // 42: at 21 the latency of half a window hid the queue) ...
        assert!(limits.iter().all(|&l| l <= 32), "seed {seed}: {limits:?}");
        // ... and within 0.5 s of the overload's start the limit is at the capacity (an
        // additive climb from 8 took over a second).
        if limits.iter().position(|&l| l >= 18).is_some_and(|w| w < 5) {
            found += 1;
        }
    }
    assert_eq!(found, 8, "{found} of 8 found the capacity within 0.5 s");
}

#[test]
fn a_stall_after_a_capacity_cut_is_not_taken_for_a_slower_app() {
    // Capacity 24 -> 8 at 100 ms under 400 a second offered (the end-to-end test in
    // tests/adaptive.rs). After the cut the limit settles at 9: one request queued in the
    // app, 1.12x the baseline, so every window is elevated and the streak still holds
    // the cut's onset (concurrency 14-24 at 1.5-3x the baseline). A pause of the host
    // (a GC, a CPU quota running out, a descheduled VM) then stretches one window's
    // latency to that of the onset at a third of its concurrency: one window, not an
    // app that got slower, and no reason to re-base (the limit would settle at twice the
    // app's capacity, with its own queue of a full capacity).
    for seed in 0..8u64 {
        for stretch in [1.3, 1.4, 1.5, 1.6] {
            let service = Duration::from_millis(100);
            let len = window_for(service);
            let mut sim = Sim::new(24, service, 400.0 / 240.0);
            sim.rng ^= seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let mut g = GradientLimit::new(settings());
            for _ in 0..60 {
                step(&mut sim, &mut g, len);
            }
            sim.capacity = 8;
            let mut limits = Vec::new();
            for w in 0..60 {
                let mut sample = sim.run(len, g.limit(), g.lane());
                // A pause every 7 windows from the 5th after the cut.
                if w >= 4 && w % 7 == 4 {
                    sample.rtt_avg = sample.rtt_avg.mul_f64(stretch);
                }
                g.update(&sample);
                limits.push(g.limit());
                let base = g.baseline_rtt().unwrap_or_default();
                assert!(
                    base <= service.mul_f64(1.25),
                    "seed {seed}, ×{stretch}: re-based to {base:?} at window {w}: {limits:?}"
                );
            }
            // (Not bounded below: a pause also reads as a queue, and backs the limit off.)
            let last = &limits[limits.len() - 20..];
            assert!(
                last.iter().all(|&l| l <= 14),
                "seed {seed}, ×{stretch}: limit {limits:?}"
            );
        }
    }
}

#[test]
fn a_pause_during_a_slides_dip_is_not_taken_for_a_slower_app() {
    // Scenario 5 (C = 20, 50 ms ± 50 %, 2x, the app 1.16x slower from window 100 on):
    // slides start dips, and a slide's dip takes all of a gap that did not fall with the
    // limit. A pause of the host in one of its windows (a GC, a CPU quota run out: 30-70
    // ms, 1.4-1.6x a window's mean latency in tests/adaptive.rs) is no such gap: far
    // slower than the windows before the dip, at less concurrency, it learned nothing.
    let (service, len) = (Duration::from_millis(50), Duration::from_millis(100));
    let slower = service.mul_f64(1.16);
    let mut paused = 0;
    for seed in 0..32u64 {
        let mut sim = Sim::new(20, service, 2.0);
        sim.rng ^= (seed + 1).wrapping_mul(0xD1B5_4A32_D192_ED03);
        sim.critical_every = 4;
        sim.waiting_max = 20;
        sim.transit_ns = 500_000;
        let mut g = GradientLimit::new(settings());
        for _ in 0..100 {
            step(&mut sim, &mut g, len);
        }
        sim.service_ns = slower.as_nanos() as u64;
        let (mut second, mut was_in_dip) = (false, false);
        for w in 0..300 {
            let in_dip = g.in_slide_dip();
            let mut sample = sim.run(len, g.limit(), g.lane());
            // The dip's second window (its first is mostly admitted before it).
            if in_dip && second {
                sample.rtt_avg = sample.rtt_avg.mul_f64(1.5);
                paused += 1;
            }
            second = in_dip && !second && !was_in_dip;
            was_in_dip = in_dip;
            g.update(&sample);
            let base = g.baseline_rtt().unwrap_or_default();
            assert!(
                base <= slower.mul_f64(1.2),
                "seed {seed}: baseline {base:?} at window {w} (app {slower:?})"
            );
        }
    }
    assert!(paused >= 16, "only {paused} slide dips paused");
}
