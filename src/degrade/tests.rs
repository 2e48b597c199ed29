//! The degradation state machine on tokio's paused clock (or explicit instants), through
//! every transition: entry, exit, both hysteresis, gaps, and the operator's overrides.

use super::*;
use tokio::time::advance;

/// The sampler's interval.
const TICK: Duration = Duration::from_millis(250);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn thresholds() -> Thresholds {
    Thresholds {
        queue_wait: Some(ms(500)),
        shed_ratio: Some(0.1),
        upstream_latency: Some(ms(1000)),
        error_ratio: Some(0.2),
        breaker_open: true,
        cpu_ratio: Some(0.9),
        memory_ratio: Some(0.9),
        db_saturation: Some(0.8),
    }
}

/// Enter after 2 s, leave after 10 s, clear below 80 % of a threshold.
fn settings(thresholds: Thresholds) -> DegradeSettings {
    DegradeSettings {
        thresholds,
        enter_after: Duration::from_secs(2),
        exit_after: Duration::from_secs(10),
        exit_margin: 0.8,
        max_gap: TICK * 3,
    }
}

fn controller() -> Controller {
    Controller::new(settings(thresholds()), Instant::now())
}

/// Every signal known and well below its threshold.
fn calm() -> Signals {
    Signals {
        queue_wait: Some(ms(10)),
        shed_ratio: Some(0.0),
        upstream_latency: Some(ms(50)),
        error_ratio: Some(0.0),
        breaker_open: false,
        cpu_ratio: Some(0.3),
        memory_ratio: Some(0.4),
        db_saturation: Some(0.1),
    }
}

fn queue_wait(wait: Duration) -> Signals {
    Signals {
        queue_wait: Some(wait),
        ..calm()
    }
}

/// Samples `s` every tick for `span` (first sample one tick from now), collecting transitions.
async fn hold(c: &mut Controller, s: &Signals, span: Duration) -> Vec<Transition> {
    let mut out = Vec::new();
    let mut elapsed = Duration::ZERO;
    while elapsed < span {
        advance(TICK).await;
        elapsed += TICK;
        out.extend(c.evaluate(s, Instant::now()));
    }
    out
}

/// Holds a queue-wait breach until Auto enters.
async fn enter_on_queue_wait(c: &mut Controller) {
    assert_eq!(c.evaluate(&queue_wait(ms(600)), Instant::now()), None);
    let t = hold(c, &queue_wait(ms(600)), Duration::from_secs(2)).await;
    assert_eq!(t.len(), 1, "{t:?}");
    assert!(c.is_degraded());
}

#[tokio::test(start_paused = true)]
async fn no_entry_before_enter_after_then_entry_when_held() {
    let mut c = controller();
    let start = Instant::now();
    assert_eq!(c.evaluate(&queue_wait(ms(600)), start), None);
    let none = hold(&mut c, &queue_wait(ms(600)), ms(1750)).await;
    assert_eq!(none, vec![]);
    assert!(!c.is_degraded());
    assert_eq!(c.reasons(), &[] as &[Reason]);
    let snap = c.snapshot(Instant::now());
    assert_eq!(snap.pending, vec![Reason::QueueWait]);
    assert_eq!(snap.until_enter, Some(TICK));

    let entered = hold(&mut c, &queue_wait(ms(600)), TICK).await;
    let expected = Transition {
        degraded: true,
        reasons: vec![Reason::QueueWait],
        at: start + Duration::from_secs(2),
    };
    assert_eq!(entered, vec![expected.clone()]);
    assert!(c.is_degraded());
    assert_eq!(c.reasons(), &[Reason::QueueWait]);
    let snap = c.snapshot(Instant::now());
    assert_eq!((snap.entered_count, snap.since), (1, Duration::ZERO));
    assert_eq!(snap.last_transition, Some(expected));
    assert_eq!((snap.pending, snap.until_enter), (vec![], None));
}

#[test]
fn entry_exactly_at_enter_after_with_explicit_instants() {
    let t0 = Instant::now();
    let mut c = Controller::new(settings(thresholds()), t0);
    let breach = queue_wait(ms(500)); // equal to the threshold is a breach
    for at in [0, 500, 1000, 1500, 1999] {
        assert_eq!(c.evaluate(&breach, t0 + ms(at)), None, "at {at} ms");
    }
    let t = c.evaluate(&breach, t0 + ms(2000));
    assert_eq!(t.map(|t| (t.degraded, t.at)), Some((true, t0 + ms(2000))));
}

#[tokio::test(start_paused = true)]
async fn a_dip_below_threshold_restarts_that_signals_timer() {
    let mut c = controller();
    c.evaluate(&queue_wait(ms(600)), Instant::now());
    assert_eq!(hold(&mut c, &queue_wait(ms(600)), ms(1500)).await, vec![]);
    // One sample below the threshold (still inside the band) breaks the run.
    assert_eq!(hold(&mut c, &queue_wait(ms(450)), TICK).await, vec![]);
    assert_eq!(hold(&mut c, &queue_wait(ms(600)), ms(2000)).await, vec![]);
    assert!(!c.is_degraded(), "the breach began 1.75 s ago, not 3.75 s");
    assert_eq!(hold(&mut c, &queue_wait(ms(600)), TICK).await.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn exit_only_after_exit_after_of_all_clear() {
    let mut c = controller();
    enter_on_queue_wait(&mut c).await;
    let entered_at = Instant::now();
    // Clear is first seen one tick after entry; it must then hold for 10 s.
    assert_eq!(hold(&mut c, &calm(), ms(10_000)).await, vec![]);
    assert!(c.is_degraded());
    assert_eq!(
        c.reasons(),
        &[Reason::QueueWait],
        "the reasons it entered with"
    );
    let snap = c.snapshot(Instant::now());
    assert_eq!(snap.until_exit, Some(TICK));
    assert_eq!(snap.since, ms(10_000));

    let left = hold(&mut c, &calm(), TICK).await;
    let expected = Transition {
        degraded: false,
        reasons: vec![Reason::QueueWait],
        at: entered_at + ms(10_250),
    };
    assert_eq!(left, vec![expected]);
    assert!(!c.is_degraded());
    assert_eq!(c.reasons(), &[] as &[Reason]);
    assert_eq!(c.snapshot(Instant::now()).until_exit, None);
}

#[tokio::test(start_paused = true)]
async fn a_value_between_margin_and_threshold_keeps_degraded_but_never_enters() {
    let mut c = controller();
    // 450 ms: below the 500 ms threshold, above the 400 ms exit level.
    assert_eq!(hold(&mut c, &queue_wait(ms(450)), ms(30_000)).await, vec![]);
    assert!(c.snapshot(Instant::now()).pending.is_empty());

    enter_on_queue_wait(&mut c).await;
    assert_eq!(hold(&mut c, &queue_wait(ms(450)), ms(30_000)).await, vec![]);
    assert!(c.is_degraded());
    assert_eq!(c.reasons(), &[Reason::QueueWait]);
    assert_eq!(c.snapshot(Instant::now()).until_exit, None);
    // 400 ms is not below the exit level either.
    assert_eq!(hold(&mut c, &queue_wait(ms(400)), ms(30_000)).await, vec![]);

    assert_eq!(hold(&mut c, &queue_wait(ms(399)), ms(10_000)).await, vec![]);
    assert_eq!(hold(&mut c, &queue_wait(ms(399)), TICK).await.len(), 1);
    assert!(!c.is_degraded());
}

#[tokio::test(start_paused = true)]
async fn multiple_reasons_are_listed_and_follow_the_signals() {
    let mut c = controller();
    let both = Signals {
        cpu_ratio: Some(0.95),
        ..queue_wait(ms(600))
    };
    c.evaluate(&both, Instant::now());
    let t = hold(&mut c, &both, Duration::from_secs(2)).await;
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].reasons, vec![Reason::QueueWait, Reason::Cpu]);
    assert_eq!(c.reasons(), &[Reason::QueueWait, Reason::Cpu]);

    // CPU eases into its band: only the queue wait is a breach now.
    let queue_only = Signals {
        cpu_ratio: Some(0.85),
        ..queue_wait(ms(600))
    };
    hold(&mut c, &queue_only, TICK).await;
    assert_eq!(c.reasons(), &[Reason::QueueWait]);

    // A signal that breaches after entry is listed at once.
    let with_errors = Signals {
        error_ratio: Some(0.5),
        ..queue_only
    };
    hold(&mut c, &with_errors, TICK).await;
    assert_eq!(c.reasons(), &[Reason::QueueWait, Reason::ErrorRate]);

    // Nothing in breach, not yet clear: the reasons it entered with.
    hold(&mut c, &calm(), TICK).await;
    assert_eq!(c.reasons(), &[Reason::QueueWait, Reason::Cpu]);
}

#[tokio::test(start_paused = true)]
async fn unknown_signals_never_breach_and_count_as_clear() {
    let mut c = controller();
    let nan = Signals {
        shed_ratio: Some(f64::NAN),
        cpu_ratio: Some(f64::NAN),
        ..Signals::default()
    };
    c.evaluate(&Signals::default(), Instant::now());
    assert_eq!(hold(&mut c, &Signals::default(), ms(60_000)).await, vec![]);
    assert_eq!(hold(&mut c, &nan, ms(60_000)).await, vec![]);
    assert!(c.snapshot(Instant::now()).pending.is_empty());

    enter_on_queue_wait(&mut c).await;
    assert_eq!(hold(&mut c, &nan, ms(10_000)).await, vec![]);
    assert_eq!(hold(&mut c, &Signals::default(), TICK).await.len(), 1);
    assert!(!c.is_degraded());
}

#[tokio::test(start_paused = true)]
async fn disabled_thresholds_are_ignored() {
    let only_queue = Thresholds {
        queue_wait: Some(ms(500)),
        ..Thresholds::default()
    };
    let mut c = Controller::new(settings(only_queue), Instant::now());
    let everything_else = Signals {
        shed_ratio: Some(1.0),
        upstream_latency: Some(Duration::from_secs(30)),
        error_ratio: Some(1.0),
        breaker_open: true,
        cpu_ratio: Some(2.0),
        memory_ratio: Some(1.0),
        db_saturation: Some(1.0),
        queue_wait: Some(ms(10)),
    };
    c.evaluate(&everything_else, Instant::now());
    assert_eq!(hold(&mut c, &everything_else, ms(60_000)).await, vec![]);

    // Nor do they hold it degraded.
    let breach = Signals {
        queue_wait: Some(ms(600)),
        ..everything_else.clone()
    };
    assert_eq!(hold(&mut c, &breach, ms(2250)).await.len(), 1); // first breach one tick in
    assert_eq!(c.reasons(), &[Reason::QueueWait]);
    assert_eq!(hold(&mut c, &everything_else, ms(10_250)).await.len(), 1);
    assert!(!c.is_degraded());
}

#[tokio::test(start_paused = true)]
async fn an_open_breaker_is_a_signal_when_enabled() {
    let open = Signals {
        breaker_open: true,
        ..calm()
    };
    let mut c = controller();
    c.evaluate(&open, Instant::now());
    let t = hold(&mut c, &open, Duration::from_secs(2)).await;
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].reasons, vec![Reason::BreakerOpen]);
    assert_eq!(hold(&mut c, &calm(), ms(10_250)).await.len(), 1);

    let mut ignoring = Controller::new(
        settings(Thresholds {
            breaker_open: false,
            ..thresholds()
        }),
        Instant::now(),
    );
    ignoring.evaluate(&open, Instant::now());
    assert_eq!(hold(&mut ignoring, &open, ms(60_000)).await, vec![]);
}

#[tokio::test(start_paused = true)]
async fn a_gap_between_samples_breaks_every_run() {
    let mut c = controller();
    let t0 = Instant::now();
    let breach = queue_wait(ms(600));
    assert_eq!(c.evaluate(&breach, t0), None);
    // Five seconds without a sample: the breach is not known to have held through it.
    assert_eq!(c.evaluate(&breach, t0 + ms(5000)), None);
    assert_eq!(c.evaluate(&breach, t0 + ms(5750)), None);
    assert_eq!(c.evaluate(&breach, t0 + ms(6500)), None);
    assert!(c.evaluate(&breach, t0 + ms(7000)).is_some());

    // Likewise clear: a sample, a long gap, a sample is not ten seconds of clear.
    assert_eq!(c.evaluate(&calm(), t0 + ms(8000)), None);
    assert_eq!(c.evaluate(&calm(), t0 + ms(30_000)), None);
    assert!(c.is_degraded());
    let mut at = 30_000;
    while at < 39_750 {
        at += 250;
        assert_eq!(c.evaluate(&calm(), t0 + ms(at)), None, "at {at} ms");
    }
    assert!(c.evaluate(&calm(), t0 + ms(40_000)).is_some());
}

#[tokio::test(start_paused = true)]
async fn force_on_then_auto_with_clear_signals_leaves_at_once() {
    let mut c = controller();
    hold(&mut c, &calm(), ms(5000)).await;
    let on = c.set_mode(Mode::ForceOn, Instant::now());
    let expected = Transition {
        degraded: true,
        reasons: vec![Reason::Manual],
        at: Instant::now(),
    };
    assert_eq!(on, Some(expected));
    assert_eq!(
        (c.mode(), c.reasons()),
        (Mode::ForceOn, &[Reason::Manual][..])
    );
    assert_eq!(c.set_mode(Mode::ForceOn, Instant::now()), None);
    assert_eq!(hold(&mut c, &calm(), ms(1000)).await, vec![]);
    assert!(c.is_degraded());
    assert!(!c.snapshot(Instant::now()).auto_degraded);

    let auto = c.set_mode(Mode::Auto, Instant::now());
    assert_eq!(
        auto.map(|t| (t.degraded, t.reasons)),
        Some((false, vec![Reason::Manual]))
    );
    assert_eq!(c.reasons(), &[] as &[Reason]);
    assert_eq!(c.snapshot(Instant::now()).entered_count, 1);
}

#[tokio::test(start_paused = true)]
async fn force_on_while_auto_degraded_changes_reasons_not_the_flag() {
    let mut c = controller();
    enter_on_queue_wait(&mut c).await;
    assert_eq!(c.set_mode(Mode::ForceOn, Instant::now()), None);
    assert_eq!(c.reasons(), &[Reason::Manual]);
    // Signals clear for 3.75 s (first clear sample one tick in) when the operator hands
    // back: Auto counts that time and needs 6.25 s more.
    assert_eq!(hold(&mut c, &calm(), ms(4000)).await, vec![]);
    assert_eq!(c.set_mode(Mode::Auto, Instant::now()), None);
    assert_eq!(c.reasons(), &[Reason::QueueWait]);
    assert_eq!(c.snapshot(Instant::now()).until_exit, Some(ms(6250)));
    assert_eq!(hold(&mut c, &calm(), ms(6000)).await, vec![]);
    assert_eq!(hold(&mut c, &calm(), TICK).await.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn auto_exits_while_forced_on_so_handing_back_leaves_at_once() {
    let mut c = controller();
    enter_on_queue_wait(&mut c).await;
    c.set_mode(Mode::ForceOn, Instant::now());
    assert_eq!(hold(&mut c, &calm(), ms(12_000)).await, vec![]);
    assert!(c.is_degraded());
    let auto = c.set_mode(Mode::Auto, Instant::now());
    assert_eq!(auto.map(|t| t.degraded), Some(false));
}

#[tokio::test(start_paused = true)]
async fn force_off_overrides_and_auto_resumes_with_its_history() {
    let mut c = controller();
    assert_eq!(c.set_mode(Mode::ForceOff, Instant::now()), None);
    assert_eq!(c.set_mode(Mode::Auto, Instant::now()), None);

    enter_on_queue_wait(&mut c).await;
    let off = c.set_mode(Mode::ForceOff, Instant::now());
    assert_eq!(
        off.map(|t| (t.degraded, t.reasons)),
        Some((false, vec![Reason::QueueWait]))
    );
    assert_eq!(c.reasons(), &[] as &[Reason]);
    assert_eq!(hold(&mut c, &queue_wait(ms(900)), ms(5000)).await, vec![]);
    assert!(!c.is_degraded());
    assert!(c.snapshot(Instant::now()).auto_degraded);

    let auto = c.set_mode(Mode::Auto, Instant::now());
    assert_eq!(
        auto.map(|t| (t.degraded, t.reasons)),
        Some((true, vec![Reason::QueueWait]))
    );
    // Forced on from forced off flips too.
    c.set_mode(Mode::ForceOff, Instant::now());
    let on = c.set_mode(Mode::ForceOn, Instant::now());
    assert_eq!(on.map(|t| t.reasons), Some(vec![Reason::Manual]));
    assert_eq!(c.snapshot(Instant::now()).entered_count, 3);
}

#[test]
fn mode_parses_its_names_and_rejects_anything_else() {
    for mode in Mode::ALL {
        assert_eq!(mode.as_str().parse::<Mode>(), Ok(mode));
    }
    for bad in ["", "Auto", "on", "force-on", " auto", "forceoff"] {
        let err = bad.parse::<Mode>().err();
        assert_eq!(err, Some(ParseModeError(bad.to_owned())), "{bad:?}");
    }
    let text = "on".parse::<Mode>().err().map(|e| e.to_string());
    assert_eq!(
        text.as_deref(),
        Some("unknown degradation mode \"on\": expected one of auto, force_on, force_off")
    );
}

#[test]
fn reason_names_are_distinct_snake_case() {
    let names: std::collections::HashSet<_> = Reason::ALL.iter().map(|r| r.as_str()).collect();
    assert_eq!(names.len(), Reason::ALL.len());
    assert!(!Reason::SIGNALS.contains(&Reason::Manual));
    assert_eq!(Reason::ShedRate.to_string(), "shed_rate");
    assert_eq!(Reason::DbSaturation.as_str(), "db_saturation");
}

#[test]
fn describe_says_value_and_threshold() {
    let t = thresholds();
    let s = Signals {
        queue_wait: Some(ms(1200)),
        shed_ratio: Some(0.125),
        upstream_latency: Some(Duration::from_micros(450_400)),
        breaker_open: true,
        cpu_ratio: Some(1.2),
        memory_ratio: None,
        ..calm()
    };
    let d = |r| Controller::describe(r, &s, &t);
    assert_eq!(d(Reason::QueueWait), "queue wait p99 1.2s >= 500ms");
    assert_eq!(d(Reason::ShedRate), "shed rate 12.5% >= 10%");
    assert_eq!(
        d(Reason::UpstreamLatency),
        "upstream latency p99 450ms < 1s"
    );
    assert_eq!(d(Reason::ErrorRate), "upstream error rate 0% < 20%");
    assert_eq!(d(Reason::Cpu), "cpu use of quota 120% >= 90%");
    assert_eq!(d(Reason::Memory), "memory use of limit unknown");
    assert_eq!(d(Reason::DbSaturation), "db connections in use 10% < 80%");
    assert_eq!(d(Reason::BreakerOpen), "circuit breaker open");
    assert_eq!(d(Reason::Manual), "forced on by an operator");
    let off = Thresholds::default();
    assert_eq!(
        Controller::describe(Reason::QueueWait, &s, &off),
        "queue wait p99 1.2s (no threshold)"
    );
}
