//! The gate's shell on tokio's paused clock: ordering, displacement, deadlines,
//! cancellation, standing-queue timeouts, early shedding, and that no slot ever leaks.

use super::*;
use crate::config::KeySource;
use std::sync::Mutex as StdMutex;
use Priority::*;

fn class(limit: usize, queue: usize) -> ClassConfig {
    ClassConfig {
        name: "db".into(),
        max_concurrent: limit,
        min_concurrent: limit,
        adaptive: false,
        queue_size: queue,
        queue_timeout: Duration::from_secs(5),
        codel_target: Duration::from_millis(50),
        codel_interval: Duration::from_millis(100),
        fair_key: KeySource::None,
    }
}

fn gate(limit: usize, queue: usize) -> Arc<Gate> {
    Gate::new(class(limit, queue), Limiter::Fixed(limit))
}

fn later(ms: u64) -> Instant {
    Instant::now() + Duration::from_millis(ms)
}

/// Spawns a waiter that records its label when admitted and holds the permit until told.
fn waiter(
    g: &Arc<Gate>,
    p: Priority,
    label: &'static str,
    log: &Arc<StdMutex<Vec<String>>>,
) -> tokio::task::JoinHandle<Result<Permit, Refused>> {
    let (g, log) = (g.clone(), log.clone());
    tokio::spawn(async move {
        let r = g.admit(p, 0, later(5_000)).await;
        let what = match &r {
            Ok(_) => label.to_string(),
            Err(e) => format!("{label}:{}", e.reason.as_str()),
        };
        log.lock().map(|mut l| l.push(what)).unwrap_or_default();
        r
    })
}

/// Asks for a slot at `p` with a deadline `ms` from now, expects a queue timeout, and
/// returns how long it waited.
async fn waited_for_timeout(g: &Arc<Gate>, p: Priority, ms: u64) -> Duration {
    let start = Instant::now();
    let r = g.admit(p, 0, later(ms)).await.expect_err("times out");
    assert_eq!(r.reason, Rejection::QueueTimeout);
    start.elapsed()
}

async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn free_slots_admit_at_once_and_released_slots_go_to_waiters() {
    let g = gate(2, 10);
    let a = g.admit(Normal, 0, later(100)).await.expect("slot 1");
    let _b = g.admit(Normal, 0, later(100)).await.expect("slot 2");
    assert_eq!(g.inflight(), 2);
    let log = Arc::new(StdMutex::new(vec![]));
    let c = waiter(&g, Normal, "c", &log);
    settle().await;
    assert_eq!(g.queued_by_priority()[Normal.index()], 1);
    drop(a);
    settle().await;
    assert_eq!(*log.lock().unwrap(), ["c"]);
    assert_eq!(g.inflight(), 2, "the slot went straight to the waiter");
    drop(c.await.expect("task").expect("permit"));
    assert_eq!(g.inflight(), 1);
}

#[tokio::test(start_paused = true)]
async fn waiters_are_served_highest_priority_first() {
    let g = gate(1, 10);
    let held = g.admit(Critical, 0, later(100)).await.expect("slot");
    let log = Arc::new(StdMutex::new(vec![]));
    let mut tasks = vec![];
    for (p, l) in [
        (Low, "low"),
        (Background, "bg"),
        (Normal, "normal"),
        (Critical, "crit"),
        (High, "high"),
    ] {
        let (g, log) = (g.clone(), log.clone());
        // Each admitted waiter frees its slot at once, letting the next one in.
        tasks.push(tokio::spawn(async move {
            let r = g.admit(p, 0, later(5_000)).await.map(drop);
            log.lock().map(|mut v| v.push(l)).unwrap_or_default();
            r
        }));
        settle().await;
    }
    drop(held);
    for t in tasks {
        assert!(t.await.expect("task").is_ok());
    }
    assert_eq!(
        *log.lock().unwrap(),
        ["crit", "high", "normal", "low", "bg"]
    );
    assert_eq!(g.inflight(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_full_queue_displaces_the_lowest_waiter_at_once() {
    let g = gate(1, 2);
    let _held = g.admit(Normal, 0, later(100)).await.expect("slot");
    let log = Arc::new(StdMutex::new(vec![]));
    let low = waiter(&g, Low, "low", &log);
    settle().await;
    let _high = waiter(&g, High, "high", &log);
    settle().await;
    let _crit = waiter(&g, Critical, "crit", &log);
    settle().await;
    assert_eq!(*log.lock().unwrap(), ["low:displaced"]);
    let refused = low.await.expect("task").expect_err("displaced");
    assert!(refused.retry_after >= Duration::from_secs(1));
    // A background arrival has nobody to displace: refused as queue full.
    let r = g.admit(Background, 0, later(100)).await.expect_err("full");
    assert_eq!(r.reason, Rejection::QueueFull);
    assert_eq!(g.stats.rejected_count(Low, Rejection::Displaced), 1);
    assert_eq!(g.stats.rejected_count(Background, Rejection::QueueFull), 1);
}

#[tokio::test(start_paused = true)]
async fn a_waiter_times_out_at_its_deadline_and_leaves_no_trace() {
    let g = gate(1, 10);
    let held = g.admit(Normal, 0, later(100)).await.expect("slot");
    assert_eq!(
        waited_for_timeout(&g, Normal, 300).await,
        Duration::from_millis(300)
    );
    assert_eq!(g.queued_by_priority().iter().sum::<usize>(), 0);
    drop(held);
    assert_eq!(g.inflight(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_client_that_goes_away_leaves_the_queue_and_frees_nothing() {
    let g = gate(1, 10);
    let held = g.admit(Normal, 0, later(100)).await.expect("slot");
    let log = Arc::new(StdMutex::new(vec![]));
    let gone = waiter(&g, High, "gone", &log);
    let stays = waiter(&g, Low, "stays", &log);
    settle().await;
    gone.abort();
    settle().await;
    assert_eq!(g.queued_by_priority()[High.index()], 0);
    assert_eq!(
        g.inflight(),
        1,
        "the cancelled waiter held no slot and freed none"
    );
    drop(held);
    settle().await;
    assert_eq!(*log.lock().unwrap(), ["stays"]);
    drop(stays.await.expect("task"));
    assert_eq!(g.inflight(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_standing_queue_shortens_new_waits() {
    let g = gate(1, 10);
    let _held = g.admit(Normal, 0, later(10_000)).await.expect("slot");
    let log = Arc::new(StdMutex::new(vec![]));
    let _first = waiter(&g, Normal, "first", &log); // deadline 5 s
    settle().await;
    // The queue has not emptied for longer than codel_interval (100 ms) ...
    tokio::time::advance(Duration::from_millis(150)).await;
    // ... so a new waiter waits codel_target (50 ms), not 5 s.
    assert_eq!(
        waited_for_timeout(&g, Normal, 5_000).await,
        Duration::from_millis(50)
    );
}

#[tokio::test(start_paused = true)]
async fn arrivals_that_cannot_be_served_in_time_are_shed_at_once() {
    // A queue that never counts as standing (the waiters keep their deadlines at the
    // window close a second later): shedding on arrival alone.
    let g = Gate::new(
        ClassConfig {
            codel_interval: Duration::from_secs(10),
            ..class(1, 100)
        },
        Limiter::Fixed(1),
    );
    let _held = g.admit(Normal, 0, later(10_000)).await.expect("slot");
    let log = Arc::new(StdMutex::new(vec![]));
    let _w: Vec<_> = (0..10).map(|_| waiter(&g, Normal, "w", &log)).collect();
    settle().await;
    // 10 completions a second measured: 10 waiters ahead means ~1 s of waiting.
    g.window.completions.store(10, Relaxed);
    g.end_window(Instant::now() + Duration::from_secs(1));
    assert!((g.drain_rate() - 10.0).abs() < 1e-9);
    let start = Instant::now();
    let r = g.admit(Normal, 0, later(500)).await.expect_err("shed");
    assert_eq!(r.reason, Rejection::Shed);
    assert_eq!(start.elapsed(), Duration::ZERO, "refused on arrival");
    assert_eq!(
        r.retry_after,
        Duration::from_secs(2),
        "(10 ahead + 1) / 10 per s, rounded up"
    );
    // A critical arrival has nobody ahead of it: it queues.
    let crit = waiter(&g, Critical, "crit", &log);
    settle().await;
    assert_eq!(g.queued_by_priority()[Critical.index()], 1);
    crit.abort();
}

#[tokio::test(start_paused = true)]
async fn a_rising_limit_lets_waiters_in() {
    let g = Gate::new(
        ClassConfig {
            adaptive: true,
            ..class(1, 10)
        },
        Limiter::Fixed(1),
    );
    let _held = g.admit(Normal, 0, later(10_000)).await.expect("slot");
    let log = Arc::new(StdMutex::new(vec![]));
    let _w = waiter(&g, Normal, "w", &log);
    settle().await;
    g.limiter.lock().unwrap().limiter = Limiter::Fixed(2);
    g.end_window(Instant::now() + Duration::from_secs(1));
    settle().await;
    assert_eq!(*log.lock().unwrap(), ["w"]);
    assert_eq!(g.limit(), 2);
}

#[tokio::test(start_paused = true)]
async fn many_concurrent_waiters_never_leak_slots() {
    let g = gate(3, 50);
    let mut tasks = vec![];
    for i in 0..200u64 {
        let g = g.clone();
        let p = Priority::ALL[(i % 5) as usize];
        tasks.push(tokio::spawn(async move {
            if let Ok(permit) = g.admit(p, i % 7, later(400)).await {
                tokio::time::sleep(Duration::from_millis(3 + i % 5)).await;
                drop(permit);
            }
        }));
        if i % 3 == 0 {
            tokio::time::advance(Duration::from_millis(1)).await;
        }
        if i % 17 == 0 {
            if let Some(t) = tasks.get(tasks.len() / 2) {
                t.abort();
            }
        }
    }
    for t in tasks {
        let _ = t.await;
    }
    assert_eq!(g.inflight(), 0);
    assert_eq!(g.queued_by_priority().iter().sum::<usize>(), 0);
}

#[tokio::test(start_paused = true)]
async fn critical_waiters_keep_their_full_deadline_in_a_standing_queue() {
    let g = gate(1, 10);
    let _held = g.admit(Normal, 0, later(10_000)).await.expect("slot");
    let log = Arc::new(StdMutex::new(vec![]));
    let _first = waiter(&g, Normal, "first", &log);
    settle().await;
    tokio::time::advance(Duration::from_millis(150)).await; // standing now
    assert_eq!(
        waited_for_timeout(&g, Critical, 400).await,
        Duration::from_millis(400),
        "not cut to codel_target"
    );
}

#[tokio::test(start_paused = true)]
async fn in_a_standing_queue_a_priority_gets_only_what_higher_ones_leave() {
    let g = gate(1, 100);
    let _held = g.admit(Normal, 0, later(10_000)).await.expect("slot");
    let log = Arc::new(StdMutex::new(vec![]));
    // A critical waiter keeps the queue standing (it keeps its full deadline).
    let _w = waiter(&g, Critical, "w", &log);
    settle().await;
    // 100 completions a second, and critical alone arrives at 100 a second.
    critical_takes_the_drain(&g).await;
    assert!(
        g.arrival_rate(Critical) > 95.0,
        "{}",
        g.arrival_rate(Critical)
    );
    // Standing queue, and critical takes the whole drain rate: normal is refused on arrival.
    let start = Instant::now();
    let r = g.admit(Normal, 0, later(5_000)).await.expect_err("shed");
    assert_eq!(r.reason, Rejection::Shed);
    assert_eq!(start.elapsed(), Duration::ZERO);
    // Critical itself still queues.
    let crit = waiter(&g, Critical, "crit", &log);
    settle().await;
    assert_eq!(g.queued_by_priority()[Critical.index()], 2);
    crit.abort();
}

/// Closes the window now with `completions` in it and no arrivals.
fn close_window(g: &Arc<Gate>, completions: u64) {
    g.window.completions.store(completions, Relaxed);
    g.window.samples.store(completions, Relaxed);
    for a in &g.arrivals {
        a.store(0, Relaxed);
    }
    g.end_window(Instant::now());
}

/// Twenty 100 ms windows of 10 completions and 10 critical arrivals each: critical
/// arrives as fast as the class drains.
async fn critical_takes_the_drain(g: &Arc<Gate>) {
    critical_windows(g, 20, 10).await;
}

/// `n` 100 ms windows of 10 completions and `critical` critical arrivals each.
async fn critical_windows(g: &Arc<Gate>, n: usize, critical: u64) {
    for _ in 0..n {
        g.arrivals[Critical.index()].store(critical, Relaxed);
        g.window.completions.store(10, Relaxed);
        g.window.samples.store(10, Relaxed);
        tokio::time::advance(Duration::from_millis(100)).await;
        g.end_window(Instant::now());
    }
}

#[tokio::test(start_paused = true)]
async fn the_sweep_judges_each_waiter_by_the_rate_left_for_its_own_priority() {
    let g = gate(1, 100);
    // 100 completions a second; critical and high arrive at 20 a second each, normal at
    // 60: high can count on 80 a second, low on none.
    for _ in 0..20 {
        for (p, n) in [(Critical, 2), (High, 2), (Normal, 6)] {
            g.arrivals[p.index()].store(n, Relaxed);
        }
        g.window.completions.store(10, Relaxed);
        g.window.samples.store(10, Relaxed);
        tokio::time::advance(Duration::from_millis(100)).await;
        g.end_window(Instant::now());
    }
    let _held = g.admit(Normal, 0, later(10_000)).await.expect("slot");
    let log = Arc::new(StdMutex::new(vec![]));
    let _w = waiter(&g, Critical, "w", &log);
    settle().await;
    tokio::time::advance(Duration::from_millis(80)).await;
    // Queued before the queue stood, with the full deadline.
    let _h = waiter(&g, High, "h", &log);
    let _l = waiter(&g, Low, "l", &log);
    settle().await;
    tokio::time::advance(Duration::from_millis(20)).await;
    // The queue stands. High's place (after the critical waiter) comes in 2 / 80 s = 25
    // ms, within its own deadline: it stays. Low's never comes: refused now.
    for (p, n) in [(Critical, 2), (High, 2), (Normal, 6)] {
        g.arrivals[p.index()].store(n, Relaxed);
    }
    g.window.completions.store(10, Relaxed);
    g.window.samples.store(10, Relaxed);
    g.end_window(Instant::now());
    settle().await;
    assert_eq!(*log.lock().expect("log"), vec!["l:shed".to_string()]);
    assert_eq!(g.queued_by_priority()[High.index()], 1);
}

#[tokio::test(start_paused = true)]
async fn a_step_up_in_higher_arrivals_counts_at_once() {
    let g = gate(1, 100);
    let _held = g.admit(Normal, 0, later(10_000)).await.expect("slot");
    let log = Arc::new(StdMutex::new(vec![]));
    let _w = waiter(&g, Critical, "w", &log); // keeps the queue standing
    settle().await;
    // 100 completions a second; critical arrives at 20 a second ...
    critical_windows(&g, 20, 2).await;
    assert!((g.arrival_rate(Critical) - 20.0).abs() < 0.1);
    // ... a window of 8 (too few to believe outright) is smoothed ...
    critical_windows(&g, 1, 8).await;
    assert!(g.arrival_rate(Critical) < 40.0);
    // ... and then it steps to the whole drain rate: believed at once. Smoothed, the
    // estimate would leave normal about 45 a second, and a normal waiter would queue
    // for completions that critical arrivals take, to time out.
    critical_windows(&g, 1, 10).await;
    assert_eq!(g.arrival_rate(Critical), 100.0);
    let start = Instant::now();
    let r = g.admit(Normal, 0, later(5_000)).await.expect_err("shed");
    assert_eq!(r.reason, Rejection::Shed);
    assert_eq!(start.elapsed(), Duration::ZERO, "refused on arrival");
}

/// Closes a one-second window holding `completions` and returns the drain rate then.
fn drain_after(g: &Arc<Gate>, now: &mut Instant, completions: u64) -> f64 {
    g.window.completions.store(completions, Relaxed);
    g.window.samples.store(completions, Relaxed);
    *now += Duration::from_secs(1);
    g.end_window(*now);
    g.drain_rate()
}

#[tokio::test(start_paused = true)]
async fn the_drain_rate_follows_a_climb_at_once_and_a_fall_smoothly() {
    let g = gate(1, 10);
    let mut now = Instant::now();
    let mut window = |completions: u64| drain_after(&g, &mut now, completions);
    assert_eq!(window(10), 10.0);
    // Slow start doubled the limit twice: 40 a second drained, believed at once (an
    // estimate lagging at ~20 would shed work the app is about to take).
    assert_eq!(window(40), 40.0);
    // A small rise and a fall are smoothed.
    assert!((window(50) - 43.0).abs() < 1e-9);
    assert!((window(10) - 33.1).abs() < 1e-9);
}

#[tokio::test(start_paused = true)]
async fn the_drain_rate_survives_a_quiet_spell_and_decays_only_when_the_app_stalls() {
    let g = gate(1, 10);
    let mut now = Instant::now();
    let mut window = |completions: u64| drain_after(&g, &mut now, completions);
    assert_eq!(window(40), 40.0);
    // A minute with no traffic at all says nothing about the app's speed: the estimate
    // stays, so the next burst is not shed on a rate decayed toward zero.
    for _ in 0..60 {
        assert_eq!(window(0), 40.0);
    }
    // A request in flight and nothing completing is a stalled app: that decays.
    let _held = g.admit(Normal, 0, later(100_000)).await.expect("slot");
    assert!((window(0) - 28.0).abs() < 1e-9);
}

#[tokio::test(start_paused = true)]
async fn the_critical_lane_is_for_critical_requests_only() {
    // Limit 3 with a lane of 1: other requests stop at 2, a critical one takes the third
    // slot at once, and a freed slot goes to a waiting request only when its priority
    // may take it.
    let g = gate(3, 10);
    g.set_lane(1);
    let log = Arc::new(StdMutex::new(Vec::new()));
    let a = g.admit(Normal, 0, later(1_000)).await.expect("slot 1");
    let b = g.admit(High, 0, later(1_000)).await.expect("slot 2");
    let low = waiter(&g, Low, "low", &log);
    settle().await;
    assert_eq!(g.inflight(), 2, "the lane is not for a low request");
    let crit = g.admit(Critical, 0, later(1_000)).await.expect("the lane");
    assert_eq!(g.inflight(), 3);
    // The critical request leaves: its slot is the lane's, not the low waiter's.
    drop(crit);
    settle().await;
    assert!(log.lock().map(|l| l.is_empty()).unwrap_or(false));
    assert_eq!(g.inflight(), 2);
    // A non-critical one leaves: the low waiter gets its slot.
    drop(a);
    settle().await;
    assert_eq!(*log.lock().expect("log"), vec!["low".to_string()]);
    assert_eq!(g.inflight(), 2);
    // With the lane closed, the limit is everyone's again.
    g.set_lane(0);
    let c = g.admit(Normal, 0, later(1_000)).await.expect("slot 3");
    assert_eq!(g.inflight(), 3);
    drop((b, c, low));
}

#[tokio::test(start_paused = true)]
async fn once_the_queue_stands_waiters_that_cannot_make_it_are_refused_at_once() {
    let g = gate(1, 100);
    // 200 completions a second; critical and normal arrive at 100 a second each: normal
    // can count on 100 a second, low on none.
    let window = |g: &Arc<Gate>, windows: u64| {
        g.arrivals[Critical.index()].store(10 * windows, Relaxed);
        g.arrivals[Normal.index()].store(10 * windows, Relaxed);
        g.window.completions.store(20 * windows, Relaxed);
        g.window.samples.store(20 * windows, Relaxed);
        g.end_window(Instant::now());
    };
    for _ in 0..20 {
        tokio::time::advance(Duration::from_millis(100)).await;
        window(&g, 1);
    }
    let _held = g.admit(Normal, 0, later(10_000)).await.expect("slot");
    let log = Arc::new(StdMutex::new(vec![]));
    // Queued before the queue stood: the full 5 s deadline each.
    let old: Vec<_> = ["l1", "l2", "l3"]
        .into_iter()
        .map(|l| waiter(&g, Low, l, &log))
        .collect();
    let crit = waiter(&g, Critical, "crit", &log);
    let normal: Vec<_> = ["n1", "n2", "n3"]
        .into_iter()
        .map(|l| waiter(&g, Normal, l, &log))
        .collect();
    settle().await;
    tokio::time::advance(Duration::from_millis(100)).await;
    // 100 ms: standing. Low's place never comes: refused now, not at 5 s. The normal
    // waiters have waited 100 ms, past the short wait (50 ms) new waiters get, but a
    // refusal now would be a late one: their places come in 20-40 ms, well within
    // their own deadline, and they stay.
    g.sweep_if_newly_standing(Instant::now());
    settle().await;
    let mut refused = log.lock().expect("log").clone();
    refused.sort_unstable();
    assert_eq!(refused, ["l1:shed", "l2:shed", "l3:shed"]);
    assert_eq!(g.stats.rejected_count(Low, Rejection::Shed), 3);
    assert_eq!(g.queued_by_priority()[Normal.index()], 3);
    for t in old {
        assert!(t.await.expect("task").is_err());
    }
    // The limit climbs for a while (a recovery, say): no short waits, no shedding, and
    // two more normal waiters queue with the full timeout.
    tokio::time::advance(Duration::from_millis(10)).await;
    g.ramping.store(true, Relaxed);
    let late: Vec<_> = ["r1", "r2"]
        .into_iter()
        .map(|l| waiter(&g, Normal, l, &log))
        .collect();
    settle().await;
    assert_eq!(g.queued_by_priority()[Normal.index()], 5);
    // 200 ms: the climb is over (the fixed limit never ramps) and the window closes. The
    // queue stood before they came: they get the short wait from their arrival, run
    // out at 160 ms, and are refused. The first three keep their deadline.
    tokio::time::advance(Duration::from_millis(90)).await;
    window(&g, 2);
    settle().await;
    assert_eq!(log.lock().expect("log").len(), 5);
    assert_eq!(g.stats.rejected_count(Normal, Rejection::Shed), 2);
    for t in late {
        assert!(t.await.expect("task").is_err());
    }
    assert_eq!(g.queued_by_priority()[Normal.index()], 3);
    assert_eq!(
        g.queued_by_priority()[Critical.index()],
        1,
        "critical keeps its wait"
    );
    crit.abort();
    for t in normal {
        t.abort();
    }
}

#[tokio::test(start_paused = true)]
async fn a_queue_that_empties_for_a_moment_is_still_standing() {
    let g = gate(1, 10);
    let held = g.admit(Normal, 0, later(10_000)).await.expect("slot");
    let log = Arc::new(StdMutex::new(vec![]));
    let first = waiter(&g, Normal, "first", &log);
    settle().await;
    tokio::time::advance(Duration::from_millis(150)).await; // standing
    drop(held); // "first" takes the slot: the queue is empty for a moment
    settle().await;
    let _slot = first.await.expect("task").expect("admitted");
    tokio::time::advance(Duration::from_millis(10)).await;
    // Still the same spell: the short wait, not 5 s.
    assert_eq!(
        waited_for_timeout(&g, Normal, 5_000).await,
        Duration::from_millis(50)
    );
    // Empty for a whole codel_interval: the spell is over, but a new one so soon after
    // a standing one stands at once (CoDel's re-entry): the short wait again ...
    tokio::time::advance(Duration::from_millis(100)).await;
    assert_eq!(
        waited_for_timeout(&g, Normal, 400).await,
        Duration::from_millis(50)
    );
    // ... and only after 16 intervals without one is the full deadline back.
    tokio::time::advance(Duration::from_millis(1_600)).await;
    assert_eq!(
        waited_for_timeout(&g, Normal, 400).await,
        Duration::from_millis(400)
    );
}

#[tokio::test(start_paused = true)]
async fn a_slot_free_for_a_moment_is_not_for_a_priority_the_higher_ones_starve() {
    let g = gate(1, 100);
    let held = g.admit(Normal, 0, later(10_000)).await.expect("slot");
    let log = Arc::new(StdMutex::new(vec![]));
    let w = waiter(&g, Critical, "w", &log);
    settle().await;
    // 100 completions a second, and critical alone arrives at 100 a second.
    critical_takes_the_drain(&g).await;
    drop(held);
    let critical_slot = w.await.expect("task").expect("admitted");
    drop(critical_slot);
    // A free slot and an empty queue, but the queue stood a moment ago and critical
    // arrivals take every completion: a low arrival is refused at once, not let in.
    assert_eq!(g.inflight(), 0);
    let start = Instant::now();
    let r = g.admit(Low, 0, later(5_000)).await.expect_err("starved");
    assert_eq!(r.reason, Rejection::Shed);
    assert_eq!(start.elapsed(), Duration::ZERO);
    let _c = g
        .admit(Critical, 0, later(5_000))
        .await
        .expect("critical takes it");
    // Once the queue has stayed empty for a while, anyone may take a free slot again.
    drop(_c);
    tokio::time::advance(Duration::from_millis(150)).await;
    g.window.samples.store(10, Relaxed);
    g.end_window(Instant::now());
    let _l = g
        .admit(Low, 0, later(5_000))
        .await
        .expect("no longer starved");
}

#[tokio::test(start_paused = true)]
async fn in_a_standing_queue_a_wait_that_only_just_fits_is_refused_at_once() {
    let g = gate(1, 100);
    let _held = g.admit(Normal, 0, later(10_000)).await.expect("slot");
    let log = Arc::new(StdMutex::new(vec![]));
    let ahead: Vec<_> = ["c1", "c2", "c3"]
        .into_iter()
        .map(|l| waiter(&g, Critical, l, &log))
        .collect();
    settle().await;
    tokio::time::advance(Duration::from_millis(150)).await; // standing
    close_window(&g, 15); // 100 a second
    assert!((g.drain_rate() - 100.0).abs() < 1e-9);
    // Three ahead: served in 40 ms of the 50 ms a standing queue allows. It queues.
    let fits = waiter(&g, Normal, "fits", &log);
    settle().await;
    assert_eq!(g.queued_by_priority()[Normal.index()], 1);
    // Four ahead: 50 ms, all of it. Refused now, not timed out at 50 ms.
    let start = Instant::now();
    let r = g.admit(Normal, 0, later(5_000)).await.expect_err("shed");
    assert_eq!(r.reason, Rejection::Shed);
    assert_eq!(start.elapsed(), Duration::ZERO);
    fits.abort();
    for t in ahead {
        t.abort();
    }
}

#[tokio::test(start_paused = true)]
async fn the_wait_estimate_counts_completions_that_free_no_slot() {
    let g = gate(2, 10);
    let _a = g.admit(Normal, 0, later(10_000)).await.expect("slot 1");
    let _b = g.admit(Normal, 0, later(10_000)).await.expect("slot 2");
    let log = Arc::new(StdMutex::new(vec![]));
    let crit = waiter(&g, Critical, "crit", &log);
    settle().await;
    g.drain_rate.store(100f64.to_bits(), Relaxed);
    // 100 completions a second and one critical waiter ahead: 20 ms for a normal arrival.
    // But the limit has just fallen to 1 with 2 in flight: the next completion frees no
    // slot, so it is 30 ms, past a 25 ms deadline.
    g.limit.store(1, SeqCst);
    let r = g.admit(Normal, 0, later(25)).await.expect_err("shed");
    assert_eq!(r.reason, Rejection::Shed);
    // At the limit in force again, the same arrival fits.
    g.limit.store(2, SeqCst);
    let g2 = g.clone();
    let fits = tokio::spawn(async move { g2.admit(Normal, 0, later(25)).await });
    settle().await;
    assert_eq!(g.queued_by_priority()[Normal.index()], 1);
    fits.abort();
    crit.abort();
}

#[tokio::test(start_paused = true)]
async fn the_sweep_comes_once_as_soon_as_the_queue_stands() {
    let g = gate(1, 100);
    // 100 completions a second; critical and high arrive at 20 a second each, normal at
    // 60: high can count on 80 a second, low on none.
    for _ in 0..20 {
        for (p, n) in [(Critical, 2), (High, 2), (Normal, 6)] {
            g.arrivals[p.index()].store(n, Relaxed);
        }
        g.window.completions.store(10, Relaxed);
        g.window.samples.store(10, Relaxed);
        tokio::time::advance(Duration::from_millis(100)).await;
        g.end_window(Instant::now());
    }
    let _held = g.admit(Normal, 0, later(10_000)).await.expect("slot");
    let log = Arc::new(StdMutex::new(vec![]));
    let _w = waiter(&g, Critical, "w", &log);
    let _l = waiter(&g, Low, "l", &log);
    settle().await;
    tokio::time::advance(Duration::from_millis(80)).await;
    let _h = waiter(&g, High, "h", &log);
    settle().await;
    // Queued before the queue stood, with the full deadline. At 99 ms it does not stand.
    tokio::time::advance(Duration::from_millis(19)).await;
    g.sweep_if_newly_standing(Instant::now());
    settle().await;
    assert!(log.lock().expect("log").is_empty());
    // At 100 ms it stands: swept now, with no window closed. Low's place never comes;
    // high's (2 / 80 s = 25 ms) comes well within its deadline: it stays.
    tokio::time::advance(Duration::from_millis(1)).await;
    g.sweep_if_newly_standing(Instant::now());
    settle().await;
    assert_eq!(*log.lock().expect("log"), vec!["l:shed".to_string()]);
    // Critical's arrivals rise to the whole drain rate: high's place will not come. Once
    // per onset: the next poll leaves it alone (the estimate is a mean); the window
    // close judges again, and refuses it.
    g.arrival_rates[Critical.index()].store(100f64.to_bits(), Relaxed);
    tokio::time::advance(Duration::from_millis(30)).await;
    g.sweep_if_newly_standing(Instant::now());
    settle().await;
    assert_eq!(g.queued_by_priority()[High.index()], 1);
    assert_eq!(log.lock().expect("log").len(), 1);
    g.arrivals[Critical.index()].store(13, Relaxed);
    g.window.completions.store(13, Relaxed);
    g.window.samples.store(13, Relaxed);
    g.end_window(Instant::now());
    settle().await;
    assert_eq!(g.queued_by_priority()[High.index()], 0);
    assert_eq!(
        *log.lock().expect("log"),
        vec!["l:shed".to_string(), "h:shed".to_string()]
    );
}

#[tokio::test(start_paused = true)]
async fn the_controller_sweeps_a_queue_that_begins_to_stand_between_windows() {
    let toml = "[upstream]\naddr = \"127.0.0.1:9\"\n\n\
                [classes.db]\nmax_concurrent = 1\nadaptive = false\nqueue_size = 10\n\
                queue_timeout_ms = 5000\n";
    let config = crate::config::Config::from_toml_str(toml, "test", &|_| None).expect("config");
    let admission = crate::admission::Admission::new(&config);
    let g = admission
        .gates
        .iter()
        .find(|g| g.config.name == "db")
        .cloned()
        .expect("db gate");
    // Critical arrives as fast as the class drains: low can count on nothing.
    critical_takes_the_drain(&g).await;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let controller = tokio::spawn(admission.clone().run(stopped));
    settle().await;
    tokio::time::advance(Duration::from_millis(50)).await; // between two window ticks
    let _held = g.admit(Critical, 0, later(10_000)).await.expect("slot");
    let start = Instant::now();
    let g2 = g.clone();
    let low = tokio::spawn(async move { g2.admit(Low, 0, later(5_000)).await });
    settle().await;
    assert_eq!(g.queued(), 1, "queued with the full deadline");
    let mut refused_after = None;
    for _ in 0..30 {
        tokio::time::advance(Duration::from_millis(5)).await;
        settle().await;
        if low.is_finished() {
            refused_after = Some(start.elapsed());
            break;
        }
    }
    let waited = refused_after.expect("refused within 150 ms");
    // The queue stands at 100 ms; the poll comes within 10 ms of it. (The window ticks
    // at 50 and 150 ms from the waiter's arrival, with no completions to close on.)
    assert!(
        waited >= Duration::from_millis(100) && waited <= Duration::from_millis(115),
        "refused after {waited:?}"
    );
    let r = low.await.expect("task").expect_err("refused");
    assert_eq!(r.reason, Rejection::Shed);
    let _ = stop.send(true);
    let _ = controller.await;
}
