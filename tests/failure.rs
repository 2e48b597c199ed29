//! End-to-end failure drills: the circuit breaker against a failing, hanging and
//! recovering app; degradation under sustained overload, its fallbacks and its override.

mod common;

use common::harness::{json, observe, reason, sample, set, start};
use common::{Http1Client, TestUpstream};
use http::StatusCode;
use sluice::sim::app::{ControlUpdate, Mode, SimApp, SimSettings};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

fn sim_settings(capacity: usize, service_ms: u64) -> SimSettings {
    SimSettings {
        capacity,
        service_time: Duration::from_millis(service_ms),
        mode: Mode::Normal,
        queue_limit: 0,
        ..SimSettings::default()
    }
}

async fn sim(capacity: usize, service_ms: u64) -> SimApp {
    SimApp::start(
        "127.0.0.1:0".parse().expect("addr"),
        sim_settings(capacity, service_ms),
    )
    .await
    .expect("sim app")
}

fn set_mode(app: &SimApp, mode: Mode) {
    app.control(&ControlUpdate {
        mode: Some(mode),
        ..Default::default()
    });
}

/// One breaker for the whole app, tripping after 5 failures, open 500 ms then 1 s,
/// no jitter, two probes; degradation off so only the breaker acts.
fn breaker_config(app: SocketAddr, extra: &str) -> String {
    format!(
        r#"
[listener]
addr = "127.0.0.1:0"
workers = 2
[observability]
addr = "127.0.0.1:0"
[upstream]
addr = "{app}"
request_timeout_ms = 2000
[health]
path = ""
[circuit_breaker]
scope = "upstream"
failure_threshold = 5
open_ms = 500
max_open_ms = 4000
jitter = 0.0
half_open_probes = 2
[degradation]
enabled = false
{extra}
"#
    )
}

async fn get(addr: SocketAddr, path: &str) -> (StatusCode, http::HeaderMap, String) {
    let (status, headers, body) = Http1Client::get(addr, path, &[]).await;
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn breaker_opens_on_500s_refuses_at_once_lets_only_probes_through_and_recovers() {
    let app = sim(50, 1).await;
    let sluice = start(&breaker_config(app.addr(), "")).await;
    for _ in 0..10 {
        assert_eq!(get(sluice.addr, "/api/x").await.0, StatusCode::OK);
    }

    set_mode(&app, Mode::Fail500);
    let before = app.stats().received;
    let opened_at = Instant::now();
    let mut failures = 0;
    let time_to_open = loop {
        let (status, h, _) = get(sluice.addr, "/api/x").await;
        if status == StatusCode::SERVICE_UNAVAILABLE && reason(&h) == "circuit_open" {
            let retry: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
            assert_eq!(retry, 1, "500 ms left rounds up to 1 s");
            break opened_at.elapsed();
        }
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        failures += 1;
        assert!(failures <= 5, "the breaker opens after 5 failures in a row");
    };
    assert_eq!(failures, 5);
    assert_eq!(
        app.stats().received - before,
        5,
        "only the 5 failures reached the app"
    );

    // Open: refusals are sluice's own, and nothing reaches the app.
    let received = app.stats().received;
    let mut slowest = Duration::ZERO;
    for _ in 0..50 {
        let t = Instant::now();
        let (status, h, body) = get(sluice.addr, "/api/x").await;
        slowest = slowest.max(t.elapsed());
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(reason(&h), "circuit_open", "{body}");
    }
    assert_eq!(
        app.stats().received,
        received,
        "no request reached the failing app"
    );
    let metrics = observe(&sluice, "/metrics").await.1;
    assert_eq!(
        sample(&metrics, "sluice_circuit_state", "breaker=\"upstream\""),
        Some(2.0)
    );
    assert_eq!(
        sample(
            &metrics,
            "sluice_circuit_trips_total",
            "reason=\"consecutive_failures\""
        ),
        Some(1.0)
    );
    assert!(
        slowest < Duration::from_millis(200),
        "refusals are immediate: {slowest:?}"
    );

    // Half-open while the app still fails: one probe reaches it and reopens the breaker
    // for twice as long.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (status, _, _) = get(sluice.addr, "/api/x").await;
    assert_eq!(
        status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "the probe reached the app"
    );
    assert_eq!(app.stats().received, received + 1);
    let (status, h, _) = get(sluice.addr, "/api/x").await;
    assert_eq!(
        (status, reason(&h)),
        (StatusCode::SERVICE_UNAVAILABLE, "circuit_open")
    );
    let cb = json(sluice.addr, "/api/v1/performance/concurrency").await["circuit_breaker"].clone();
    assert_eq!(cb["breakers"]["upstream"]["state"], "open", "{cb}");
    assert_eq!(
        cb["breakers"]["upstream"]["last_trip_reason"], "probe_failed",
        "{cb}"
    );
    assert_eq!(cb["breakers"]["upstream"]["refused"], 52, "{cb}");
    let remaining = cb["breakers"]["upstream"]["open_remaining_ms"]
        .as_f64()
        .unwrap();
    assert!(
        remaining > 600.0 && remaining <= 1000.0,
        "second interval doubles: {remaining}"
    );

    // The app recovers; after the interval two good probes close the breaker.
    set_mode(&app, Mode::Normal);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for _ in 0..20 {
        assert_eq!(get(sluice.addr, "/api/x").await.0, StatusCode::OK);
    }
    let recovered = opened_at.elapsed();
    let metrics = observe(&sluice, "/metrics").await.1;
    assert_eq!(
        sample(&metrics, "sluice_circuit_state", "breaker=\"upstream\""),
        Some(0.0)
    );
    assert_eq!(
        sample(
            &metrics,
            "sluice_circuit_transitions_total",
            "to=\"closed\""
        ),
        Some(1.0)
    );
    // 1 (the first refusal) + 50 + 1 (after the failed probe).
    assert_eq!(
        sample_sum(
            &metrics,
            "sluice_rejections_total",
            "reason=\"circuit_open\""
        ),
        52.0
    );
    eprintln!(
        "drill: opened after 5 failures ({time_to_open:?} after the app began failing); \
         52 refusals, slowest {slowest:?}; the app saw 1 probe while open; \
         recovered {recovered:?} after the first failure"
    );
    sluice.shutdown().await;
    app.shutdown().await;
}

/// Sum of every sample of `name` whose labels contain `labels`.
fn sample_sum(text: &str, name: &str, labels: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#') && l.starts_with(name) && l.contains(labels))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_app_times_out_and_timeouts_open_the_breaker() {
    let app = sim(50, 1).await;
    let cfg = breaker_config(app.addr(), "");
    let cfg = set(&cfg, "upstream", "request_timeout_ms", "200");
    let cfg = set(&cfg, "circuit_breaker", "failure_threshold", "3");
    let sluice = start(&cfg).await;
    set_mode(&app, Mode::Hang);
    for _ in 0..3 {
        let t = Instant::now();
        let (status, h, _) = get(sluice.addr, "/api/x").await;
        assert_eq!(
            (status, reason(&h)),
            (StatusCode::GATEWAY_TIMEOUT, "upstream_timeout")
        );
        assert!(t.elapsed() >= Duration::from_millis(190));
    }
    let t = Instant::now();
    let (status, h, _) = get(sluice.addr, "/api/x").await;
    assert_eq!(
        (status, reason(&h)),
        (StatusCode::SERVICE_UNAVAILABLE, "circuit_open")
    );
    assert!(
        t.elapsed() < Duration::from_millis(150),
        "refused without waiting for the timeout: {:?}",
        t.elapsed()
    );
    sluice.shutdown().await;
    app.shutdown().await;
}

#[tokio::test]
async fn per_class_breakers_keep_a_failing_class_from_cutting_the_others() {
    let app = TestUpstream::start().await;
    let cfg = breaker_config(
        app.addr(),
        r#"
[[routes]]
name = "ai"
path_prefix = "/status"
class = "http"
priority = "low"
[default_route]
class = "db"
"#,
    );
    let cfg = set(&cfg, "circuit_breaker", "scope", "\"class\"");
    let sluice = start(&cfg).await;
    for _ in 0..5 {
        assert_eq!(
            get(sluice.addr, "/status/502").await.0,
            StatusCode::BAD_GATEWAY
        );
    }
    let (status, h, _) = get(sluice.addr, "/status/502").await;
    assert_eq!(
        (status, reason(&h)),
        (StatusCode::SERVICE_UNAVAILABLE, "circuit_open")
    );
    assert_eq!(
        get(sluice.addr, "/echo").await.0,
        StatusCode::OK,
        "class db unaffected"
    );
    let metrics = observe(&sluice, "/metrics").await.1;
    assert_eq!(
        sample(&metrics, "sluice_circuit_state", "breaker=\"http\""),
        Some(2.0)
    );
    assert_eq!(
        sample(&metrics, "sluice_circuit_state", "breaker=\"db\""),
        Some(0.0)
    );
    sluice.shutdown().await;
}

#[tokio::test]
async fn client_errors_do_not_open_the_breaker() {
    let app = TestUpstream::start().await;
    let sluice = start(&breaker_config(app.addr(), "")).await;
    for _ in 0..20 {
        assert_eq!(
            get(sluice.addr, "/status/404").await.0,
            StatusCode::NOT_FOUND
        );
    }
    assert_eq!(get(sluice.addr, "/echo").await.0, StatusCode::OK);
    sluice.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passing_health_checks_cut_a_long_open_interval_short() {
    let app = sim(50, 1).await;
    let cfg = breaker_config(app.addr(), "");
    let cfg = set(&cfg, "circuit_breaker", "open_ms", "30000");
    let cfg = set(&cfg, "circuit_breaker", "max_open_ms", "60000");
    let cfg = set(&cfg, "health", "path", "\"/health/ready\"");
    let cfg = set(&cfg, "health", "interval_ms", "100");
    let cfg = set(&cfg, "health", "unhealthy_threshold", "1");
    let sluice = start(&cfg).await;
    set_mode(&app, Mode::Fail500);
    for _ in 0..5 {
        assert_eq!(
            get(sluice.addr, "/api/x").await.0,
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
    let (status, h, _) = get(sluice.addr, "/api/x").await;
    assert_eq!(
        (status, reason(&h)),
        (StatusCode::SERVICE_UNAVAILABLE, "circuit_open")
    );
    // Wait for the probes to see the app down (its readiness answers 503 now).
    let t = Instant::now();
    while observe(&sluice, "/readyz").await.0 == 200 {
        assert!(t.elapsed() < Duration::from_secs(3), "readyz never failed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    set_mode(&app, Mode::Normal);
    let recovered = Instant::now();
    loop {
        if get(sluice.addr, "/api/x").await.0 == StatusCode::OK {
            break;
        }
        assert!(
            recovered.elapsed() < Duration::from_secs(3),
            "traffic resumes after the probes pass, not after the 30 s interval"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "drill: traffic resumed {:?} after the app recovered",
        recovered.elapsed()
    );
    sluice.shutdown().await;
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_after_a_long_queue_wait_is_not_blamed_on_the_app() {
    let app = TestUpstream::start().await;
    let cfg = breaker_config(
        app.addr(),
        r#"
[classes.db]
max_concurrent = 1
min_concurrent = 1
adaptive = false
queue_size = 10
queue_timeout_ms = 1000
[default_route]
class = "db"
"#,
    );
    let cfg = set(&cfg, "upstream", "request_timeout_ms", "400");
    let cfg = set(&cfg, "circuit_breaker", "failure_threshold", "1");
    let sluice = start(&cfg).await;
    // The one slot is busy for 300 ms; the hanging request queues behind it and reaches
    // the app with 100 ms of its 400 ms left.
    let busy = tokio::spawn(get(sluice.addr, "/delay/300"));
    tokio::time::sleep(Duration::from_millis(30)).await;
    let (status, h, _) = get(sluice.addr, "/hang").await;
    assert_eq!(
        (status, reason(&h)),
        (StatusCode::GATEWAY_TIMEOUT, "upstream_timeout")
    );
    assert_eq!(busy.await.expect("busy").0, StatusCode::OK);
    let (status, h, _) = get(sluice.addr, "/echo").await;
    assert_eq!(
        status,
        StatusCode::OK,
        "breaker still closed: {}",
        reason(&h)
    );
    // A timeout that had the whole 400 ms is the app's fault, and opens it.
    let (status, _, _) = get(sluice.addr, "/hang").await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    let (status, h, _) = get(sluice.addr, "/echo").await;
    assert_eq!(
        (status, reason(&h)),
        (StatusCode::SERVICE_UNAVAILABLE, "circuit_open")
    );
    sluice.shutdown().await;
}
