//! End-to-end admission control: a real sluice in front of a slow test upstream.

mod common;

use common::harness::{observe, sample, start, start_with_env};
use common::{Http1Client, TestUpstream};
use http::StatusCode;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// One class `db` with a fixed limit of `limit`, a queue of `queue`, and routes that
/// take their priority from `x-priority` (the operator's choice, for tests).
fn config(app: SocketAddr, limit: usize, queue: usize, queue_timeout_ms: u64) -> String {
    let mut routes = String::new();
    for p in ["critical", "high", "normal", "low", "background"] {
        routes.push_str(&format!(
            "[[routes]]\nname = \"{p}\"\nheaders = {{ \"x-priority\" = \"{p}\" }}\nclass = \"db\"\npriority = \"{p}\"\n\n"
        ));
    }
    format!(
        r#"
[listener]
addr = "127.0.0.1:0"
workers = 2

[observability]
addr = "127.0.0.1:0"

[upstream]
addr = "{app}"
request_timeout_ms = 5000

[health]
path = ""

[classes.db]
max_concurrent = {limit}
min_concurrent = {limit}
adaptive = false
queue_size = {queue}
queue_timeout_ms = {queue_timeout_ms}
codel_interval_ms = 60000

[classes.other]
max_concurrent = 100
min_concurrent = 100
adaptive = false

[[routes]]
name = "limited"
path_prefix = "/limited"
class = "other"
priority = "normal"
rate_limit_rps = 1
rate_limit_burst = 2
rate_limit_key = "client_ip"

{routes}
[default_route]
class = "db"
priority = "normal"
"#
    )
}

async fn get(
    addr: SocketAddr,
    path: &str,
    priority: &str,
) -> (StatusCode, http::HeaderMap, String) {
    let (s, h, b) = Http1Client::get(addr, path, &[("x-priority", priority)]).await;
    (s, h, String::from_utf8_lossy(&b).into_owned())
}

fn spawn_get(
    addr: SocketAddr,
    path: &'static str,
    priority: &'static str,
) -> tokio::task::JoinHandle<(StatusCode, http::HeaderMap, String)> {
    tokio::spawn(async move { get(addr, path, priority).await })
}

async fn json(addr: SocketAddr) -> serde_json::Value {
    let (_, _, body) = Http1Client::get(addr, "/api/v1/performance/concurrency", &[]).await;
    serde_json::from_slice(&body).expect("json")
}

/// Waits until the class has `n` waiters (as the JSON endpoint reports).
async fn until_queued(addr: SocketAddr, n: u64) {
    for _ in 0..200 {
        if json(addr).await["classes"]["db"]["queued_total"] == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "queue never reached {n}: {}",
        json(addr).await["classes"]["db"]
    );
}

#[tokio::test]
async fn a_burst_beyond_the_limit_is_served_in_priority_order() {
    let app = TestUpstream::start().await;
    let sluice = start(&config(app.addr(), 1, 10, 5000)).await;
    let blocker = spawn_get(sluice.addr, "/delay/400", "normal");
    until_app_saw(&app, 1).await;
    let mut waiters = vec![];
    for (i, p) in ["low", "background", "normal", "critical", "high"]
        .into_iter()
        .enumerate()
    {
        waiters.push(spawn_get(
            sluice.addr,
            [
                "/echo/low",
                "/echo/background",
                "/echo/normal",
                "/echo/critical",
                "/echo/high",
            ][i],
            p,
        ));
        until_queued(sluice.addr, i as u64 + 1).await;
    }
    let v = json(sluice.addr).await;
    assert_eq!(v["classes"]["db"]["active"], 1);
    assert_eq!(v["classes"]["db"]["queued"]["critical"], 1);
    let (_, metrics) = observe(&sluice, "/metrics").await;
    assert_eq!(
        sample(
            &metrics,
            "sluice_queue_depth",
            "class=\"db\",priority=\"low\""
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&metrics, "sluice_concurrency_limit", "class=\"db\""),
        Some(1.0)
    );
    // A fixed limit has no critical lane.
    assert_eq!(
        sample(&metrics, "sluice_concurrency_critical_lane", "class=\"db\""),
        Some(0.0)
    );

    assert_eq!(blocker.await.expect("task").0, StatusCode::OK);
    for w in waiters {
        assert_eq!(w.await.expect("task").0, StatusCode::OK);
    }
    let order: Vec<String> = app
        .requests_log()
        .iter()
        .skip(1)
        .map(|r| r.uri.clone())
        .collect();
    assert_eq!(
        order,
        [
            "/echo/critical",
            "/echo/high",
            "/echo/normal",
            "/echo/low",
            "/echo/background"
        ]
    );
    let (_, metrics) = observe(&sluice, "/metrics").await;
    assert_eq!(
        sample(
            &metrics,
            "sluice_queue_wait_seconds_count",
            "class=\"db\",priority=\"critical\""
        ),
        Some(1.0)
    );
    sluice.shutdown().await;
}

async fn until_app_saw(app: &TestUpstream, n: usize) {
    for _ in 0..200 {
        if app.requests() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("the app never saw {n} requests");
}

#[tokio::test]
async fn a_full_queue_displaces_low_priority_for_critical() {
    let app = TestUpstream::start().await;
    let sluice = start(&config(app.addr(), 1, 1, 5000)).await;
    let blocker = spawn_get(sluice.addr, "/delay/400", "normal");
    until_app_saw(&app, 1).await;
    let low = spawn_get(sluice.addr, "/echo/low", "low");
    until_queued(sluice.addr, 1).await;
    let started = Instant::now();
    let crit = spawn_get(sluice.addr, "/echo/critical", "critical");
    let (status, headers, body) = low.await.expect("task");
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(headers["x-sluice-reason"], "displaced");
    assert!(
        headers["retry-after"]
            .to_str()
            .unwrap_or("0")
            .parse::<u64>()
            .unwrap_or(0)
            >= 1
    );
    assert!(
        started.elapsed() < Duration::from_millis(300),
        "displaced at once, not after the blocker"
    );
    assert_eq!(crit.await.expect("task").0, StatusCode::OK);
    assert_eq!(blocker.await.expect("task").0, StatusCode::OK);
    assert!(
        app.requests_log().iter().all(|r| r.uri != "/echo/low"),
        "the displaced request never reached the app"
    );
    let v = json(sluice.addr).await;
    assert_eq!(v["classes"]["db"]["rejections"]["displaced"], 1);
    assert_eq!(v["request_handler_stats"]["rejected_requests"], 1);
    let (_, metrics) = observe(&sluice, "/metrics").await;
    assert_eq!(
        sample(
            &metrics,
            "sluice_rejections_total",
            "class=\"db\",priority=\"low\",reason=\"displaced\""
        ),
        Some(1.0)
    );
    sluice.shutdown().await;
}

#[tokio::test]
async fn a_waiter_is_refused_at_its_queue_timeout() {
    let app = TestUpstream::start().await;
    let sluice = start(&config(app.addr(), 1, 10, 200)).await;
    let blocker = spawn_get(sluice.addr, "/delay/800", "normal");
    until_app_saw(&app, 1).await;
    let started = Instant::now();
    let (status, headers, body) = get(sluice.addr, "/echo/late", "normal").await;
    let took = started.elapsed();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(headers["x-sluice-reason"], "queue_timeout");
    assert!(headers.contains_key("retry-after"));
    assert!(body.contains("queue_timeout"));
    assert!(
        took >= Duration::from_millis(190) && took < Duration::from_millis(700),
        "{took:?}"
    );
    assert_eq!(
        app.requests(),
        1,
        "the timed-out request never reached the app"
    );
    assert_eq!(blocker.await.expect("task").0, StatusCode::OK);
    sluice.shutdown().await;
}

#[tokio::test]
async fn a_client_that_hangs_up_while_queued_leaves_the_queue() {
    let app = TestUpstream::start().await;
    let sluice = start(&config(app.addr(), 1, 10, 5000)).await;
    let blocker = spawn_get(sluice.addr, "/delay/500", "normal");
    until_app_saw(&app, 1).await;
    let gone = spawn_get(sluice.addr, "/echo/gone", "high");
    until_queued(sluice.addr, 1).await;
    gone.abort(); // drops the client connection
    until_queued(sluice.addr, 0).await;
    assert_eq!(blocker.await.expect("task").0, StatusCode::OK);
    // The slot is free again: the next request is admitted at once.
    let (status, _, _) = get(sluice.addr, "/echo/next", "low").await;
    assert_eq!(status, StatusCode::OK);
    assert!(app.requests_log().iter().all(|r| r.uri != "/echo/gone"));
    let v = json(sluice.addr).await;
    assert_eq!(v["classes"]["db"]["active"], 0, "no slot leaked");
    assert_eq!(v["request_handler_stats"]["cancelled_requests"], 1);
    sluice.shutdown().await;
}

#[tokio::test]
async fn a_rate_limited_route_answers_429_with_retry_after() {
    let app = TestUpstream::start().await;
    let sluice = start(&config(app.addr(), 4, 10, 5000)).await;
    for _ in 0..2 {
        assert_eq!(get(sluice.addr, "/limited", "x").await.0, StatusCode::OK);
    }
    let (status, headers, body) = get(sluice.addr, "/limited", "x").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(headers["x-sluice-reason"], "rate_limited");
    assert_eq!(headers["retry-after"], "1");
    assert_eq!(app.requests(), 2);
    let (_, metrics) = observe(&sluice, "/metrics").await;
    assert_eq!(
        sample(
            &metrics,
            "sluice_requests_total",
            "route=\"limited\",class=\"other\",priority=\"normal\",outcome=\"rate_limited\""
        ),
        Some(1.0)
    );
    sluice.shutdown().await;
}

#[tokio::test]
async fn pass_through_mode_applies_no_limits() {
    let app = TestUpstream::start().await;
    let sluice = start_with_env(
        &config(app.addr(), 1, 0, 100),
        &[("CONCURRENCY_ENABLED", "false")],
    )
    .await;
    let started = Instant::now();
    let tasks: Vec<_> = (0..5)
        .map(|_| spawn_get(sluice.addr, "/delay/300", "low"))
        .collect();
    for t in tasks {
        assert_eq!(t.await.expect("task").0, StatusCode::OK);
    }
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(1000),
        "5 requests ran side by side, not one at a time: {took:?}"
    );
    for _ in 0..3 {
        assert_eq!(
            get(sluice.addr, "/limited", "x").await.0,
            StatusCode::OK,
            "no rate limit either"
        );
    }
    sluice.shutdown().await;
}

#[tokio::test]
async fn bypass_routes_are_never_queued() {
    let app = TestUpstream::start().await;
    let cfg = config(app.addr(), 1, 0, 100).replace(
        "[default_route]",
        "[[routes]]\nname = \"probe\"\npath_prefix = \"/health\"\nclass = \"db\"\npriority = \"critical\"\nbypass = true\n\n[default_route]",
    );
    let sluice = start(&cfg).await;
    let blocker = spawn_get(sluice.addr, "/delay/400", "normal");
    until_app_saw(&app, 1).await;
    let (status, headers, _) = get(sluice.addr, "/echo/x", "normal").await;
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "queue_size 0: refused at once"
    );
    assert_eq!(headers["x-sluice-reason"], "queue_full");
    let (status, _, _) = Http1Client::get(sluice.addr, "/health/ready", &[]).await;
    assert_eq!(status, StatusCode::OK, "bypass routes skip the full queue");
    assert_eq!(blocker.await.expect("task").0, StatusCode::OK);
    sluice.shutdown().await;
}
