use super::*;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Only the consecutive-failure trigger, no jitter: intervals are exact.
fn consecutive(n: u32) -> BreakerSettings {
    BreakerSettings {
        consecutive_failures: n,
        failure_rate: 0.0,
        slow_call_rate: 0.0,
        slow_call: Duration::ZERO,
        window: secs(10),
        minimum_calls: 1,
        open_base: secs(10),
        open_max: secs(60),
        jitter: 0.0,
        half_open_probes: 3,
    }
}

/// Only the failure-rate trigger.
fn rate(failure_rate: f64, minimum_calls: u32) -> BreakerSettings {
    BreakerSettings {
        consecutive_failures: 0,
        failure_rate,
        minimum_calls,
        ..consecutive(0)
    }
}

fn call(b: &Breaker, result: CallResult, now: Instant) -> Option<Transition> {
    let ticket = b.try_acquire(now).unwrap();
    b.record(ticket, result, now)
}

fn ok() -> CallResult {
    CallResult::Success(ms(5))
}

/// Fails calls until the closed breaker opens; returns the transition.
fn trip(b: &Breaker, now: Instant) -> Transition {
    for _ in 0..1000 {
        if let Some(t) = call(b, CallResult::Failure, now) {
            return t;
        }
    }
    panic!("breaker never opened");
}

/// Trips the breaker at `t0` and waits out its interval: returns the instant it can
/// go half-open.
fn open_then_wait(b: &Breaker, t0: Instant) -> Instant {
    let t = trip(b, t0);
    t0 + t.open_for.unwrap()
}

#[test]
fn breaker_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Breaker>();
}

#[test]
fn names_and_gauge_codes() {
    let names: Vec<_> = State::ALL.iter().map(|s| (s.as_str(), s.code())).collect();
    assert_eq!(names, [("closed", 0), ("half_open", 1), ("open", 2)]);
    for s in State::ALL {
        assert_eq!(unpack(pack(s, 12345)), (s, 12345));
    }
    assert_eq!(TripReason::ProbeFailed.as_str(), "probe_failed");
    assert_eq!(TripReason::SlowCallRate.as_str(), "slow_call_rate");
}

#[tokio::test(start_paused = true)]
async fn consecutive_failures_open_and_a_success_resets_the_run() {
    let t0 = Instant::now();
    let b = Breaker::new(consecutive(3), 1, t0);
    assert_eq!(call(&b, CallResult::Failure, t0), None);
    assert_eq!(call(&b, CallResult::Failure, t0), None);
    assert_eq!(call(&b, ok(), t0), None);
    assert_eq!(b.snapshot(t0).consecutive_failures, 0);
    assert_eq!(call(&b, CallResult::Failure, t0), None);
    assert_eq!(call(&b, CallResult::Failure, t0), None);
    assert_eq!(b.state(t0), State::Closed);
    let t = call(&b, CallResult::Failure, t0).unwrap();
    assert_eq!(
        t,
        Transition {
            from: State::Closed,
            to: State::Open,
            reason: Some(TripReason::ConsecutiveFailures),
            open_for: Some(secs(10)),
        }
    );
    assert_eq!(b.state(t0), State::Open);
    let s = b.snapshot(t0);
    assert_eq!((s.trips, s.transitions), (1, 1));
    assert_eq!(s.last_trip, Some(TripReason::ConsecutiveFailures));
}

#[test]
fn failure_rate_waits_for_minimum_calls() {
    let t0 = Instant::now();
    let b = Breaker::new(rate(0.5, 10), 1, t0);
    for _ in 0..4 {
        assert_eq!(call(&b, ok(), t0), None);
    }
    // 5 of 9 failed: above the rate, below minimum_calls.
    for _ in 0..5 {
        assert_eq!(call(&b, CallResult::Failure, t0), None);
    }
    assert_eq!(b.state(t0), State::Closed);
    let t = call(&b, CallResult::Failure, t0).unwrap();
    assert_eq!(t.reason, Some(TripReason::FailureRate));
    let s = b.snapshot(t0);
    assert_eq!((s.window_calls, s.window_failures), (10, 6));
}

#[test]
fn failure_rate_below_threshold_stays_closed() {
    let t0 = Instant::now();
    let b = Breaker::new(rate(0.5, 4), 1, t0);
    for i in 0..40 {
        let result = if i % 3 == 2 {
            CallResult::Failure
        } else {
            ok()
        };
        assert_eq!(call(&b, result, t0), None);
    }
    assert_eq!(b.state(t0), State::Closed);
}

#[test]
fn slow_call_rate_opens_and_slow_is_not_a_failure() {
    let t0 = Instant::now();
    let settings = BreakerSettings {
        slow_call_rate: 0.5,
        slow_call: ms(100),
        minimum_calls: 4,
        ..consecutive(2)
    };
    let b = Breaker::new(settings, 1, t0);
    let slow = CallResult::Success(ms(101));
    assert_eq!(call(&b, ok(), t0), None);
    assert_eq!(call(&b, CallResult::Success(ms(100)), t0), None); // not slower
    assert_eq!(call(&b, slow, t0), None);
    let s = b.snapshot(t0);
    assert_eq!(
        (s.window_calls, s.window_failures, s.window_slow),
        (3, 0, 1)
    );
    let t = call(&b, slow, t0).unwrap();
    assert_eq!(t.reason, Some(TripReason::SlowCallRate));
    assert_eq!(b.snapshot(t0).consecutive_failures, 0);
}

#[test]
fn zero_slow_call_is_never_slow() {
    let t0 = Instant::now();
    let settings = BreakerSettings {
        slow_call_rate: 0.1,
        slow_call: Duration::ZERO,
        ..consecutive(0)
    };
    let b = Breaker::new(settings, 1, t0);
    for _ in 0..20 {
        assert_eq!(call(&b, CallResult::Success(secs(30)), t0), None);
    }
    assert_eq!(b.snapshot(t0).window_slow, 0);
}

#[test]
fn old_failures_slide_out_of_the_window() {
    let t0 = Instant::now();
    let b = Breaker::new(rate(0.5, 4), 1, t0);
    for _ in 0..3 {
        assert_eq!(call(&b, CallResult::Failure, t0), None);
    }
    // 11 s later with a 10 s window: only the new calls count (1 of 4 failed; with the
    // old failures it would be 4 of 7 and open).
    let t1 = t0 + secs(11);
    for _ in 0..3 {
        assert_eq!(call(&b, ok(), t1), None);
    }
    assert_eq!(call(&b, CallResult::Failure, t1), None);
    let s = b.snapshot(t1);
    assert_eq!((s.window_calls, s.window_failures), (4, 1));
    // Still inside the window they would count.
    let b = Breaker::new(rate(0.5, 4), 1, t0);
    for _ in 0..3 {
        call(&b, CallResult::Failure, t0);
    }
    let t1 = t0 + secs(8);
    for _ in 0..3 {
        call(&b, ok(), t1);
    }
    assert!(call(&b, CallResult::Failure, t1).is_some());
}

#[test]
fn window_buckets_drop_out_one_by_one() {
    let t0 = Instant::now();
    let b = Breaker::new(consecutive(0), 1, t0);
    for at in [secs(0), secs(3), secs(9)] {
        call(&b, CallResult::Failure, t0 + at);
    }
    let calls = |at: Duration| b.snapshot(t0 + at).window_calls;
    assert_eq!(calls(ms(9_999)), 3);
    assert_eq!(calls(ms(10_000)), 2); // the first slice is now 10 slices old
    assert_eq!(calls(ms(12_999)), 2);
    assert_eq!(calls(ms(13_000)), 1);
    assert_eq!(calls(ms(19_000)), 0);
    // A bucket reused for a later slice starts from zero.
    call(&b, ok(), t0 + secs(20));
    let s = b.snapshot(t0 + secs(20));
    assert_eq!((s.window_calls, s.window_failures), (1, 0));
}

#[test]
fn open_refuses_with_the_time_left() {
    let t0 = Instant::now();
    let b = Breaker::new(consecutive(1), 1, t0);
    trip(&b, t0);
    assert_eq!(b.try_acquire(t0 + ms(3_250)), Err(ms(6_750)));
    assert_eq!(b.snapshot(t0 + secs(4)).open_remaining, secs(6));
    assert_eq!(b.try_acquire(t0 + ms(9_999)), Err(ms(1)));
}

#[test]
fn open_goes_half_open_lazily_after_the_interval() {
    let t0 = Instant::now();
    let b = Breaker::new(consecutive(1), 1, t0);
    let t1 = open_then_wait(&b, t0);
    // Reported open until a call moves it.
    assert_eq!(b.state(t1 + secs(5)), State::Open);
    assert_eq!(b.snapshot(t1).open_remaining, Duration::ZERO);
    let (ticket, transition) = b.acquire(t1);
    assert!(ticket.unwrap().is_probe());
    assert_eq!(
        transition,
        Some(Transition {
            from: State::Open,
            to: State::HalfOpen,
            reason: None,
            open_for: None,
        })
    );
    assert_eq!(b.state(t1), State::HalfOpen);
    assert_eq!(b.snapshot(t1).transitions, 2);
}

#[test]
fn half_open_admits_exactly_n_probes() {
    let t0 = Instant::now();
    let b = Breaker::new(consecutive(1), 1, t0);
    let t1 = open_then_wait(&b, t0);
    let probes: Vec<_> = (0..3).map(|_| b.try_acquire(t1).unwrap()).collect();
    assert!(probes.iter().all(Ticket::is_probe));
    assert_eq!(b.try_acquire(t1), Err(HALF_OPEN_BUSY_RETRY));
    assert_eq!(b.snapshot(t1).probes_in_flight, 3);
    // A completed probe still holds its slot: three admitted in all, not at once.
    let mut probes = probes.into_iter();
    let first = probes.next().unwrap();
    assert_eq!(b.record(first, ok(), t1), None);
    assert_eq!(b.try_acquire(t1), Err(HALF_OPEN_BUSY_RETRY));
}

#[test]
fn all_probes_succeeding_close_and_clear() {
    let t0 = Instant::now();
    let settings = BreakerSettings {
        failure_rate: 0.9,
        minimum_calls: 1,
        ..consecutive(2)
    };
    let b = Breaker::new(settings, 1, t0);
    let t1 = open_then_wait(&b, t0);
    let probes: Vec<_> = (0..3).map(|_| b.try_acquire(t1).unwrap()).collect();
    let mut transitions = Vec::new();
    for p in probes {
        transitions.push(b.record(p, ok(), t1));
    }
    assert_eq!(transitions[..2], [None, None]);
    assert_eq!(
        transitions[2],
        Some(Transition {
            from: State::HalfOpen,
            to: State::Closed,
            reason: None,
            open_for: None,
        })
    );
    let s = b.snapshot(t1);
    assert_eq!(s.state, State::Closed);
    assert_eq!((s.trips, s.consecutive_failures), (0, 0));
    assert_eq!(
        (s.window_calls, s.window_failures, s.window_slow),
        (0, 0, 0)
    );
    assert_eq!((s.probes_in_flight, s.probe_successes), (0, 0));
    // Counters really cleared: one failure is neither two in a row nor 90% of the window
    // that tripped it, and the next trip starts again at the base interval.
    assert_eq!(call(&b, ok(), t1), None);
    assert_eq!(call(&b, CallResult::Failure, t1), None);
    assert_eq!(trip(&b, t1).open_for, Some(secs(10)));
}

#[test]
fn probe_failure_reopens_for_longer_up_to_the_cap() {
    let t0 = Instant::now();
    let settings = BreakerSettings {
        open_base: secs(1),
        open_max: secs(5),
        ..consecutive(1)
    };
    let b = Breaker::new(settings, 1, t0);
    let mut t = open_then_wait(&b, t0);
    let mut intervals = vec![secs(1)];
    for _ in 0..4 {
        let probe = b.try_acquire(t).unwrap();
        let tr = b.record(probe, CallResult::Failure, t).unwrap();
        assert_eq!((tr.from, tr.to), (State::HalfOpen, State::Open));
        assert_eq!(tr.reason, Some(TripReason::ProbeFailed));
        assert_eq!(b.try_acquire(t), Err(tr.open_for.unwrap()));
        intervals.push(tr.open_for.unwrap());
        t += tr.open_for.unwrap();
    }
    assert_eq!(intervals, [secs(1), secs(2), secs(4), secs(5), secs(5)]);
    assert_eq!(b.snapshot(t).trips, 5);
}

#[test]
fn slow_probe_fails_only_with_the_slow_trigger_on() {
    let t0 = Instant::now();
    for (slow_call_rate, reopens) in [(0.0, false), (0.5, true)] {
        let settings = BreakerSettings {
            slow_call: ms(100),
            slow_call_rate,
            half_open_probes: 1,
            ..consecutive(1)
        };
        let b = Breaker::new(settings, 1, t0);
        let t1 = open_then_wait(&b, t0);
        let probe = b.try_acquire(t1).unwrap();
        let tr = b.record(probe, CallResult::Success(secs(1)), t1).unwrap();
        assert_eq!(tr.to == State::Open, reopens);
    }
}

/// Open intervals over `trips` consecutive trips (each probe fails).
fn intervals(settings: &BreakerSettings, seed: u64, trips: usize) -> Vec<Duration> {
    let t0 = Instant::now();
    let b = Breaker::new(settings.clone(), seed, t0);
    let first = trip(&b, t0).open_for.unwrap();
    let mut out = vec![first];
    let mut t = t0 + first;
    while out.len() < trips {
        let probe = b.try_acquire(t).unwrap();
        let open_for = b.record(probe, CallResult::Failure, t).unwrap().open_for;
        out.push(open_for.unwrap());
        t += open_for.unwrap();
    }
    out
}

#[test]
fn jitter_is_bounded_deterministic_and_seeded() {
    let settings = BreakerSettings {
        open_base: secs(10),
        open_max: secs(40),
        jitter: 0.5,
        ..consecutive(1)
    };
    let mut distinct = std::collections::HashSet::new();
    for seed in 0..50 {
        let got = intervals(&settings, seed, 6);
        for (i, d) in got.iter().enumerate() {
            let base = secs(10 * (1 << i)).min(secs(40));
            assert!(*d >= base / 2 && *d <= base * 3 / 2, "{seed} {i} {d:?}");
        }
        assert_eq!(got, intervals(&settings, seed, 6), "seed {seed}");
        distinct.insert(got);
    }
    assert!(
        distinct.len() > 45,
        "seeds should differ: {}",
        distinct.len()
    );
    // Within one run the factor changes from trip to trip too.
    let got = intervals(&settings, 7, 6);
    assert_ne!(got[4], got[5]);
}

#[test]
fn out_of_range_settings_are_clamped() {
    let t0 = Instant::now();
    let settings = BreakerSettings {
        jitter: 5.0,
        failure_rate: f64::NAN,
        slow_call_rate: -1.0,
        half_open_probes: 0,
        open_max: secs(1),
        ..consecutive(1)
    };
    let b = Breaker::new(settings, 3, t0);
    assert_eq!(b.settings().jitter, 0.5);
    assert_eq!(
        (b.settings().failure_rate, b.settings().slow_call_rate),
        (0.0, 0.0)
    );
    assert_eq!(b.settings().open_max, secs(10));
    let open_for = trip(&b, t0).open_for.unwrap();
    assert!(open_for >= secs(5) && open_for <= secs(15));
    let t1 = t0 + open_for;
    assert!(b.try_acquire(t1).is_ok());
    assert_eq!(b.try_acquire(t1), Err(HALF_OPEN_BUSY_RETRY));
}

#[test]
fn stale_results_do_not_count_against_a_new_state() {
    let t0 = Instant::now();
    let b = Breaker::new(consecutive(1), 1, t0);
    // Slow calls admitted while closed.
    let slow_fail = b.try_acquire(t0).unwrap();
    let slow_ok = b.try_acquire(t0).unwrap();
    let slow_fail2 = b.try_acquire(t0).unwrap();
    trip(&b, t0);
    let before = b.snapshot(t0 + secs(1));
    // A stale failure does not extend the open interval.
    assert_eq!(b.record(slow_fail, CallResult::Failure, t0 + secs(1)), None);
    assert_eq!(b.snapshot(t0 + secs(1)), before);
    // Half-open, probes out: a stale success does not close it ...
    let t1 = t0 + secs(10);
    let [a, b_, c] = [(); 3].map(|_| b.try_acquire(t1).unwrap());
    assert_eq!(b.record(a, ok(), t1), None);
    assert_eq!(b.record(slow_ok, ok(), t1), None);
    assert_eq!(b.snapshot(t1).probe_successes, 1);
    // ... and a stale failure does not re-open it.
    assert_eq!(b.record(slow_fail2, CallResult::Failure, t1), None);
    assert_eq!(b.state(t1), State::HalfOpen);
    // A probe from an earlier half-open spell is stale too.
    let tr = b.record(b_, CallResult::Failure, t1).unwrap();
    let t2 = t1 + tr.open_for.unwrap();
    let probe = b.try_acquire(t2).unwrap();
    assert_eq!(b.record(c, CallResult::Failure, t2), None);
    assert_eq!(b.state(t2), State::HalfOpen);
    assert_eq!(b.snapshot(t2).probes_in_flight, 1);
    assert_eq!(b.record(probe, ok(), t2), None);
}

#[test]
fn ignored_frees_a_probe_slot_and_counts_nowhere() {
    let t0 = Instant::now();
    let settings = BreakerSettings {
        half_open_probes: 1,
        ..consecutive(1)
    };
    let b = Breaker::new(settings, 1, t0);
    assert_eq!(call(&b, CallResult::Ignored, t0), None);
    assert_eq!(b.snapshot(t0).window_calls, 0);
    let t1 = open_then_wait(&b, t0);
    let probe = b.try_acquire(t1).unwrap();
    assert_eq!(b.try_acquire(t1), Err(HALF_OPEN_BUSY_RETRY));
    assert_eq!(b.record(probe, CallResult::Ignored, t1), None);
    assert_eq!(b.state(t1), State::HalfOpen);
    let probe = b.try_acquire(t1).unwrap();
    assert_eq!(b.record(probe, ok(), t1).map(|t| t.to), Some(State::Closed));
}

#[test]
fn a_lost_probe_slot_is_reclaimed() {
    let t0 = Instant::now();
    let settings = BreakerSettings {
        half_open_probes: 1,
        open_base: secs(2),
        ..consecutive(1)
    };
    let b = Breaker::new(settings, 1, t0);
    let t1 = open_then_wait(&b, t0);
    let lost = b.try_acquire(t1).unwrap();
    assert_eq!(b.try_acquire(t1 + ms(1_999)), Err(HALF_OPEN_BUSY_RETRY));
    let probe = b.try_acquire(t1 + secs(2)).unwrap();
    // The lost probe's late result is ignored; the new probe decides.
    assert_eq!(b.record(lost, CallResult::Failure, t1 + secs(3)), None);
    assert_eq!(b.state(t1 + secs(3)), State::HalfOpen);
    let tr = b.record(probe, ok(), t1 + secs(3)).unwrap();
    assert_eq!(tr.to, State::Closed);
}

#[test]
fn reset_closes_and_clears() {
    let t0 = Instant::now();
    let b = Breaker::new(consecutive(2), 1, t0);
    let old = b.try_acquire(t0).unwrap();
    call(&b, CallResult::Failure, t0);
    assert_eq!(b.reset(t0), None); // already closed: no transition ...
    assert_eq!(b.snapshot(t0).consecutive_failures, 0);
    assert_eq!(b.record(old, CallResult::Failure, t0), None); // ... but tickets go stale
    assert_eq!(b.snapshot(t0).window_calls, 0);
    trip(&b, t0);
    let tr = b.reset(t0 + secs(1)).unwrap();
    assert_eq!((tr.from, tr.to), (State::Open, State::Closed));
    let s = b.snapshot(t0 + secs(1));
    assert_eq!(s.state, State::Closed);
    assert_eq!((s.trips, s.consecutive_failures, s.window_calls), (0, 0, 0));
    assert_eq!(s.transitions, 2);
    assert_eq!(s.last_trip, Some(TripReason::ConsecutiveFailures));
    assert!(b.try_acquire(t0 + secs(1)).is_ok());
}

#[test]
fn concurrent_successes_are_all_counted() {
    let t0 = Instant::now();
    let b = Arc::new(Breaker::new(consecutive(0), 1, t0));
    // Roll the bucket before the threads start: no roll-over race can lose counts.
    call(&b, ok(), t0);
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let b = b.clone();
            std::thread::spawn(move || {
                for _ in 0..10_000 {
                    assert_eq!(call(&b, ok(), t0), None);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(b.snapshot(t0).window_calls, 40_001);
}

#[test]
fn a_trip_decided_on_a_stale_view_is_dropped() {
    let t0 = Instant::now();
    let b = Breaker::new(consecutive(1), 1, t0);
    // Two threads both saw generation 0 closed and decided to trip: only one may.
    let reason = TripReason::ConsecutiveFailures;
    assert!(b.trip(0, reason, t0).is_some());
    assert_eq!(b.trip(0, reason, t0 + secs(1)), None);
    let s = b.snapshot(t0);
    assert_eq!((s.trips, s.transitions, s.open_remaining), (1, 1, secs(10)));
}

#[test]
fn concurrent_failures_trip_exactly_once() {
    const THREADS: usize = 4;
    const ROUNDS: usize = 300;
    let t0 = Instant::now();
    let b = Arc::new(Breaker::new(consecutive(1), 1, t0));
    let trips = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(std::sync::Barrier::new(THREADS));
    // Each round every thread takes a ticket while closed, then all fail at once: each
    // failure alone would trip the breaker, yet only one may.
    let threads: Vec<_> = (0..THREADS)
        .map(|i| {
            let (b, trips, barrier) = (b.clone(), trips.clone(), barrier.clone());
            std::thread::spawn(move || {
                for _ in 0..ROUNDS {
                    let ticket = b.try_acquire(t0).unwrap();
                    barrier.wait();
                    if b.record(ticket, CallResult::Failure, t0).is_some() {
                        trips.fetch_add(1, SeqCst);
                    }
                    barrier.wait();
                    if i == 0 {
                        assert_eq!(b.state(t0), State::Open);
                        b.reset(t0);
                    }
                    barrier.wait();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(trips.load(SeqCst), ROUNDS);
    assert_eq!(b.snapshot(t0).transitions, 2 * ROUNDS as u64);
}

#[test]
fn concurrent_half_open_never_admits_more_than_n() {
    let t0 = Instant::now();
    let b = Arc::new(Breaker::new(consecutive(1), 1, t0));
    let t1 = open_then_wait(&b, t0);
    let inflight = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let admitted = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (b, inflight) = (b.clone(), inflight.clone());
            let (most, admitted) = (most.clone(), admitted.clone());
            std::thread::spawn(move || {
                for _ in 0..5_000 {
                    let Ok(ticket) = b.try_acquire(t1) else {
                        continue;
                    };
                    let now = inflight.fetch_add(1, SeqCst) + 1;
                    most.fetch_max(now, SeqCst);
                    admitted.fetch_add(1, SeqCst);
                    std::thread::yield_now();
                    // Leave before the slot is freed, so `inflight` never overstates.
                    inflight.fetch_sub(1, SeqCst);
                    assert_eq!(b.record(ticket, CallResult::Ignored, t1), None);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert!(most.load(SeqCst) <= 3, "{}", most.load(SeqCst));
    assert!(admitted.load(SeqCst) > 3);
    let s = b.snapshot(t1);
    assert_eq!((s.state, s.probes_in_flight), (State::HalfOpen, 0));
}

#[test]
fn health_recovery_ends_the_open_interval_early() {
    let t0 = Instant::now();
    let b = Breaker::new(consecutive(1), 1, t0);
    assert!(!b.end_open_interval(t0), "closed: nothing to end");
    trip(&b, t0);
    assert!(b.try_acquire(t0 + secs(2)).is_err());
    assert!(b.end_open_interval(t0 + secs(2)));
    let ticket = b.try_acquire(t0 + secs(2)).unwrap();
    assert!(ticket.is_probe(), "half-open at once");
    assert_eq!(b.state(t0 + secs(2)), State::HalfOpen);
    assert!(
        !b.end_open_interval(t0 + secs(2)),
        "half-open: nothing to end"
    );
}
