//! The benchmark tools over real sockets: the simulated app's capacity, modes and
//! control endpoints, and the load generator against it.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use hyper::Method;
use sluice::sim::app::{spread_service, ControlUpdate, Mode, SimApp, SimSettings};
use sluice::sim::control;
use sluice::sim::load::{self, Arrivals, LoadPlan, Stream};
use tokio::time::Instant;

fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

async fn app(capacity: usize, service_ms: u64, mode: Mode, queue_limit: usize) -> SimApp {
    let settings = SimSettings {
        capacity,
        service_time: Duration::from_millis(service_ms),
        mode,
        queue_limit,
        ..SimSettings::default()
    };
    SimApp::start(any_port(), settings).await.unwrap()
}

async fn get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, Bytes)> {
    control::exchange(addr, Method::GET, path, Bytes::new()).await
}

/// Send `n` requests at once, each on its own connection; the time each took from the
/// common start, and its status, sorted.
async fn concurrent(addr: SocketAddr, n: usize) -> Vec<(Duration, u16)> {
    let start = Instant::now();
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            tokio::spawn(async move {
                let status = get(addr, "/work").await.unwrap().0;
                (start.elapsed(), status)
            })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capacity_two_serves_six_in_three_rounds_and_counts() {
    let app = app(2, 100, Mode::Normal, 0).await;
    let done = concurrent(app.addr(), 6).await;
    assert!(done.iter().all(|&(_, s)| s == 200), "{done:?}");
    let last = done.last().unwrap().0;
    assert!(
        last >= Duration::from_millis(290) && last < Duration::from_millis(500),
        "last took {last:?}"
    );
    let stats = control::stats(app.addr()).await.unwrap();
    assert_eq!(stats.received, 6);
    assert_eq!(stats.served.get(&200), Some(&6));
    assert_eq!(stats.max_queued, 4);
    assert_eq!((stats.in_service, stats.queued), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_changes_capacity_mid_run() {
    let app = app(1, 100, Mode::Normal, 0).await;
    let (status, body) = control::control(app.addr(), r#"{"capacity":3}"#)
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""capacity":3"#), "{body}");
    let done = concurrent(app.addr(), 3).await;
    assert!(
        done.last().unwrap().0 < Duration::from_millis(190),
        "{done:?}"
    );

    // Down to one: three now take three rounds.
    let (status, _) = control::control(app.addr(), r#"{"capacity":1,"service_ms":50}"#)
        .await
        .unwrap();
    assert_eq!(status, 200);
    let done = concurrent(app.addr(), 3).await;
    assert!(
        done.last().unwrap().0 >= Duration::from_millis(145),
        "{done:?}"
    );

    let (status, body) = control::control(app.addr(), r#"{"colour":"red"}"#)
        .await
        .unwrap();
    assert_eq!(status, 400, "{body}");
}

#[test]
fn spread_service_times_are_uniform_around_the_service_time() {
    let t = Duration::from_millis(100);
    assert_eq!(spread_service(t, 0.0, 7), t);
    let draws: Vec<f64> = (0..10_000)
        .map(|n| spread_service(t, 0.5, n).as_secs_f64() / t.as_secs_f64())
        .collect();
    let mean = draws.iter().sum::<f64>() / draws.len() as f64;
    let (lo, hi) = draws
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), &d| (lo.min(d), hi.max(d)));
    assert!((mean - 1.0).abs() < 0.01, "mean {mean}");
    assert!(
        (0.5..0.51).contains(&lo) && hi <= 1.5 && hi > 1.49,
        "{lo}..{hi}"
    );
    // A quarter of the draws in each quarter of the range.
    let first = draws.iter().filter(|&&d| d < 0.75).count();
    assert!((2300..2700).contains(&first), "{first}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_spreads_service_times_and_rejects_a_spread_out_of_range() {
    let app = app(40, 100, Mode::Normal, 0).await;
    let (status, body) = control::control(app.addr(), r#"{"spread":1.5}"#)
        .await
        .unwrap();
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("spread must be between 0 and 1"), "{body}");
    let (status, body) = control::control(app.addr(), r#"{"spread":0.5}"#)
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""spread":0.5"#), "{body}");
    // All 40 are in service at once: each one's time is its own service time.
    let done = concurrent(app.addr(), 40).await;
    assert!(done.iter().all(|&(_, s)| s == 200), "{done:?}");
    let (first, last) = (done[0].0, done[39].0);
    assert!(first < Duration::from_millis(80), "{done:?}");
    assert!(last > Duration::from_millis(120), "{done:?}");
}

#[tokio::test]
async fn a_full_app_queue_answers_503() {
    let app = app(1, 150, Mode::Normal, 1).await;
    let done = concurrent(app.addr(), 3).await;
    let statuses: Vec<u16> = done.iter().map(|&(_, s)| s).collect();
    assert_eq!(
        statuses.iter().filter(|&&s| s == 503).count(),
        1,
        "{done:?}"
    );
    assert_eq!(app.stats().served.get(&503), Some(&1));
}

#[tokio::test]
async fn modes_fail_reset_fast_and_hang() {
    let app = app(1, 1000, Mode::Fast, 0).await;
    let t = Instant::now();
    assert_eq!(get(app.addr(), "/x").await.unwrap().0, 200);
    assert!(t.elapsed() < Duration::from_millis(200));

    app.control(&ControlUpdate {
        mode: Some(Mode::Fail500),
        ..Default::default()
    });
    assert_eq!(get(app.addr(), "/x").await.unwrap().0, 500);
    assert_eq!(get(app.addr(), "/health/ready").await.unwrap().0, 503);

    app.control(&ControlUpdate {
        mode: Some(Mode::Reset),
        ..Default::default()
    });
    let err = get(app.addr(), "/x").await.unwrap_err();
    assert_ne!(err.kind(), std::io::ErrorKind::TimedOut, "{err}");
    assert_eq!(app.stats().resets, 1);

    app.control(&ControlUpdate {
        mode: Some(Mode::Hang),
        ..Default::default()
    });
    let hung = tokio::time::timeout(Duration::from_millis(150), get(app.addr(), "/x")).await;
    assert!(hung.is_err(), "a hanging app answered: {hung:?}");

    // Control endpoints work whatever the mode, and are not counted.
    let stats = control::stats(app.addr()).await.unwrap();
    assert_eq!(stats.mode, Mode::Hang);
    assert_eq!(stats.received, 5);
    assert_eq!(stats.health_checks, 1);
    app.shutdown().await;
}

#[tokio::test]
async fn readiness_takes_no_capacity() {
    let app = app(0, 50, Mode::Normal, 0).await;
    assert_eq!(get(app.addr(), "/health/ready").await.unwrap().0, 200);
}

fn stream(name: &str, rate: f64) -> Stream {
    Stream {
        name: name.into(),
        rate_per_sec: rate,
        method: Method::POST,
        path: "/api/v1/auth/login".into(),
        headers: vec![("x-priority".into(), "critical".into())],
    }
}

fn plan(target: SocketAddr, streams: Vec<Stream>, secs: f64, max: usize) -> LoadPlan {
    LoadPlan {
        target,
        streams,
        duration: Duration::from_secs_f64(secs),
        max_connections: max,
        timeout: Duration::from_secs(5),
        arrivals: Arrivals::Even,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_against_a_fast_app_sends_on_schedule() {
    let app = app(1, 0, Mode::Fast, 0).await;
    let streams = vec![stream("critical", 400.0), stream("low", 100.0)];
    let report = load::run(plan(app.addr(), streams, 1.0, 100))
        .await
        .unwrap();
    let (c, l) = (&report.streams[0], &report.streams[1]);
    assert_eq!((c.sent, c.successes), (400, 400), "{}", report.table());
    assert_eq!((l.sent, l.successes), (100, 100), "{}", report.table());
    assert_eq!(app.stats().received, 500);
    assert!(
        report.elapsed < Duration::from_millis(1300),
        "{:?}",
        report.elapsed
    );
    assert!(
        c.success_latency.quantile(0.5) < 20_000,
        "{}",
        report.table()
    );
    assert_eq!(c.series.len(), 1);
    assert_eq!(c.series[0].sent, 400);
    let json = report.to_json();
    assert_eq!(json["streams"][0]["successes"], 400);
    assert!(json["streams"][0]["success_latency_us"]["p99"].is_u64());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_shows_in_latency_from_the_intended_time() {
    // Capacity 2 × 10 ms = 200 requests/s; 400/s offered for 1.2 s builds a ~1 s backlog.
    let app = app(2, 10, Mode::Normal, 0).await;
    let report = load::run(plan(app.addr(), vec![stream("s", 400.0)], 1.2, 1000))
        .await
        .unwrap();
    let s = &report.streams[0];
    assert_eq!((s.sent, s.successes), (480, 480), "{}", report.table());
    let p99 = s.success_latency.quantile(0.99);
    assert!(p99 > 500_000, "p99 {p99} us\n{}", report.table());
    let early = s.series[0].success_latency.quantile(0.5);
    let late = s.series[1].success_latency.quantile(0.5);
    assert!(late > early, "latency did not grow: {early} -> {late}");
    assert!(app.stats().max_queued > 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bounded_pool_counts_saturation_and_timeouts() {
    let app = app(1, 0, Mode::Hang, 0).await;
    let mut p = plan(app.addr(), vec![stream("s", 100.0)], 0.5, 5);
    p.timeout = Duration::from_millis(200);
    let t = Instant::now();
    let report = load::run(p).await.unwrap();
    assert!(t.elapsed() < Duration::from_millis(1300));
    let s = &report.streams[0];
    assert_eq!(s.sent, 50, "{}", report.table());
    assert_eq!(s.successes, 0);
    assert!(s.errors.timeout >= 5, "{}", report.table());
    assert!(s.errors.saturated >= 25, "{}", report.table());
    assert_eq!(s.errors.timeout + s.errors.saturated, 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_and_resetting_apps_are_counted_apart() {
    let app = app(1, 0, Mode::Fail500, 0).await;
    let report = load::run(plan(app.addr(), vec![stream("s", 100.0)], 0.3, 10))
        .await
        .unwrap();
    let s = &report.streams[0];
    assert_eq!(
        (s.sent, s.refusals.other_5xx),
        (30, 30),
        "{}",
        report.table()
    );
    assert_eq!(s.refusal_latency.count(), 30);
    // From the actual send: the same refusals, none later than from the intended time.
    assert_eq!(s.refusal_from_send.count(), 30);
    assert!(s.refusal_from_send.max() <= s.refusal_latency.max());
    assert!(s.refusal_from_send.quantile(0.5) <= s.refusal_latency.quantile(0.5));

    app.control(&ControlUpdate {
        mode: Some(Mode::Reset),
        ..Default::default()
    });
    let report = load::run(plan(app.addr(), vec![stream("s", 100.0)], 0.3, 10))
        .await
        .unwrap();
    let s = &report.streams[0];
    assert_eq!((s.sent, s.errors.reset), (30, 30), "{}", report.table());
}
