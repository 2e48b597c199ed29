//! End-to-end: the adaptive limit finds the app's capacity, follows a cut to a third and
//! a recovery, with no configuration change. A simulated app with a real FIFO of its
//! own, an open-loop load at about twice the initial capacity, sluice in between.

mod common;

use common::harness::start;
use common::Http1Client;
use sluice::sim::app::{ControlUpdate, Mode, SimApp, SimSettings};
use sluice::sim::load::{self, Arrivals, LoadPlan, Stream};
use std::net::SocketAddr;
use std::time::Duration;

fn config(app: SocketAddr) -> String {
    format!(
        r#"
[listener]
addr = "127.0.0.1:0"
workers = 1
[observability]
addr = ""
[upstream]
addr = "{app}"
request_timeout_ms = 10000
[health]
path = ""
[degradation]
# This test is about the limit alone: sustained overload would otherwise (rightly)
# degrade and refuse the normal-priority load.
enabled = false
[classes.db]
max_concurrent = 200
min_concurrent = 2
adaptive = true
queue_size = 400
queue_timeout_ms = 5000
[default_route]
class = "db"
priority = "normal"
"#
    )
}

/// The limit, and the baseline latency it was set for (so that a failure shows whether
/// the limiter took a queue for a slower app).
struct Reading {
    limit: u64,
    baseline_ms: f64,
}

impl std::fmt::Debug for Reading {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({:.0} ms)", self.limit, self.baseline_ms)
    }
}

async fn limit(addr: SocketAddr) -> Reading {
    let (_, _, body) = Http1Client::get(addr, "/api/v1/performance/concurrency", &[]).await;
    let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
    let limit = &v["classes"]["db"]["limit"];
    Reading {
        limit: limit["current"].as_u64().unwrap_or(0),
        baseline_ms: limit["baseline_rtt_ms"].as_f64().unwrap_or(f64::NAN),
    }
}

/// Polls the limit for `span`, returning what it read in the last third.
async fn settle(addr: SocketAddr, span: Duration) -> Vec<Reading> {
    let step = Duration::from_millis(200);
    let n = (span.as_millis() / step.as_millis()) as usize;
    let mut seen = Vec::new();
    for i in 0..n {
        tokio::time::sleep(step).await;
        let l = limit(addr).await;
        if i >= n * 2 / 3 {
            seen.push(l);
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_limit_finds_capacity_follows_a_cut_and_recovers_without_config() {
    let settings = SimSettings {
        capacity: 24,
        service_time: Duration::from_millis(100),
        mode: Mode::Normal,
        queue_limit: 0,
        ..SimSettings::default()
    };
    let app = SimApp::start("127.0.0.1:0".parse().expect("addr"), settings)
        .await
        .expect("sim app");
    let sluice = start(&config(app.addr())).await;
    // 400 a second against 240 a second of capacity, for the whole test.
    let plan = LoadPlan {
        target: sluice.addr,
        streams: vec![Stream {
            name: "all".into(),
            rate_per_sec: 400.0,
            method: http::Method::GET,
            path: "/api/x".into(),
            headers: vec![],
        }],
        duration: Duration::from_secs(13),
        max_connections: 1000,
        timeout: Duration::from_secs(10),
        arrivals: Arrivals::Even,
    };
    let load = tokio::spawn(load::run(plan));

    let found = settle(sluice.addr, Duration::from_secs(4)).await;
    assert!(
        found.iter().all(|r| (20..=40).contains(&r.limit)),
        "capacity 24: limit {found:?}"
    );

    app.control(&ControlUpdate {
        capacity: Some(8),
        ..Default::default()
    });
    let cut = settle(sluice.addr, Duration::from_secs(4)).await;
    assert!(
        cut.iter().all(|r| (5..=14).contains(&r.limit)),
        "capacity cut to 8: limit {cut:?}"
    );

    app.control(&ControlUpdate {
        capacity: Some(24),
        ..Default::default()
    });
    let back = settle(sluice.addr, Duration::from_secs(4)).await;
    assert!(
        back.iter().all(|r| (18..=40).contains(&r.limit)),
        "capacity back to 24: limit {back:?}"
    );

    let report = load.await.expect("load task").expect("load plan");
    let stats = app.stats();
    assert!(
        stats.max_queued <= 40,
        "the app's own queue stayed short: {}",
        stats.max_queued
    );
    eprintln!(
        "found {found:?} cut {cut:?} back {back:?}\n{}",
        report.table()
    );
    sluice.shutdown().await;
}

async fn lane(addr: SocketAddr) -> u64 {
    let (_, _, body) = Http1Client::get(addr, "/api/v1/performance/concurrency", &[]).await;
    let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
    v["classes"]["db"]["limit"]["critical_lane"]
        .as_u64()
        .unwrap_or(u64::MAX)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_overload_with_critical_traffic_the_critical_lane_opens() {
    // Capacity 10 × 50 ms (200 a second), offered 100 critical and 300 normal a second.
    // (Latency is the bench's business: this test runs the app, sluice and the load in
    // one debug-built process on CI's two cores.)
    let settings = SimSettings {
        capacity: 10,
        service_time: Duration::from_millis(50),
        mode: Mode::Normal,
        queue_limit: 0,
        ..SimSettings::default()
    };
    let app = SimApp::start("127.0.0.1:0".parse().expect("addr"), settings)
        .await
        .expect("sim app");
    let config = config(app.addr())
        + r#"
[[routes]]
name = "critical"
headers = { "x-priority" = "critical" }
class = "db"
priority = "critical"
"#;
    let sluice = start(&config).await;
    let stream = |name: &str, rate: f64, header: Option<&str>| Stream {
        name: name.into(),
        rate_per_sec: rate,
        method: http::Method::GET,
        path: "/api/x".into(),
        headers: header
            .map(|v| vec![("x-priority".to_string(), v.to_string())])
            .unwrap_or_default(),
    };
    let plan = LoadPlan {
        target: sluice.addr,
        streams: vec![
            stream("critical", 100.0, Some("critical")),
            stream("normal", 300.0, None),
        ],
        duration: Duration::from_secs(8),
        max_connections: 1000,
        timeout: Duration::from_secs(10),
        arrivals: Arrivals::Even,
    };
    let load = tokio::spawn(load::run(plan));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut lanes = Vec::new();
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        lanes.push(lane(sluice.addr).await);
    }
    let report = load.await.expect("load task").expect("load plan");
    eprintln!("lane {lanes:?}\n{}", report.table());
    assert!(lanes.iter().all(|&l| l <= 1), "lane {lanes:?}");
    assert!(
        lanes.iter().filter(|&&l| l == 1).count() >= 8,
        "the lane was open in under half the polls: {lanes:?}"
    );
    let critical = &report.streams[0];
    assert_eq!(
        critical.successes, critical.sent,
        "every critical request served"
    );
    sluice.shutdown().await;
}
