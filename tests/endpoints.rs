//! End-to-end: sluice's own endpoints: JSON stats and health, the admin reset,
//! `/metrics`, `/healthz`, `/readyz`.

mod common;

use common::harness::{base_config, observe, sample, set, start, start_with_env};
use common::{Http1Client, TestUpstream};
use http::StatusCode;
use std::time::Duration;

const CONCURRENCY: &str = "/api/v1/performance/concurrency";
const HEALTH: &str = "/api/v1/performance/concurrency/health";
const RESET: &str = "/api/v1/admin/performance/concurrency/reset";

async fn get_json(addr: std::net::SocketAddr, path: &str) -> (StatusCode, serde_json::Value) {
    let (status, _, body) = Http1Client::get(addr, path, &[]).await;
    let v = serde_json::from_slice(&body).unwrap_or_else(|e| {
        panic!(
            "{path} is not JSON ({e}): {}",
            String::from_utf8_lossy(&body)
        )
    });
    (status, v)
}

async fn post(
    addr: std::net::SocketAddr,
    path: &str,
    auth: Option<&str>,
) -> (StatusCode, serde_json::Value) {
    let mut client = Http1Client::connect(addr).await.expect("connect");
    let mut req = http::Request::post(path).header("host", "sluice");
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    let resp = client
        .send(req.body(Default::default()).expect("request"))
        .await
        .expect("response");
    let status = resp.status();
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .expect("body")
        .to_bytes();
    (
        status,
        serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
    )
}

#[tokio::test]
async fn concurrency_json_has_the_apps_sections_and_counts_traffic() {
    let app = TestUpstream::start().await;
    let sluice = start(&base_config(app.addr())).await;
    let (status, before) = get_json(sluice.addr, CONCURRENCY).await;
    assert_eq!(status, StatusCode::OK);
    for section in [
        "concurrency_metrics",
        "database_stats",
        "system_stats",
        "connection_pool_stats",
        "request_handler_stats",
    ] {
        assert!(
            before[section].is_object(),
            "section {section} missing: {before}"
        );
    }
    for field in [
        "active_db_operations",
        "total_db_operations",
        "avg_db_latency_ms",
        "total_http_operations",
        "active_cache_operations",
    ] {
        assert!(!before["concurrency_metrics"][field].is_null(), "{field}");
    }
    assert_eq!(
        before["database_stats"]["enabled"], false,
        "unbuilt parts say so"
    );
    assert!(before["system_stats"]["cpu_count"].as_u64().unwrap_or(0) >= 1);
    assert!(
        before["system_stats"]["memory_usage_bytes"]
            .as_u64()
            .unwrap_or(0)
            > 0
    );
    assert!(
        before["system_stats"]["goroutine_count"]
            .as_u64()
            .unwrap_or(0)
            > 0
    );
    assert_eq!(before["request_handler_stats"]["total_requests"], 0);

    // The timed-out request goes first: its upstream connection is dropped, and the
    // pool's open count would race that connection's teardown if it came last.
    assert_eq!(
        Http1Client::get(sluice.addr, "/hang", &[]).await.0,
        StatusCode::GATEWAY_TIMEOUT
    );
    for _ in 0..3 {
        assert_eq!(
            Http1Client::get(sluice.addr, "/echo", &[]).await.0,
            StatusCode::OK
        );
    }
    assert_eq!(
        Http1Client::get(sluice.addr, "/status/500", &[]).await.0,
        StatusCode::INTERNAL_SERVER_ERROR
    );

    let (_, after) = get_json(sluice.addr, CONCURRENCY).await;
    let rh = &after["request_handler_stats"];
    assert_eq!(rh["total_requests"], 5, "{rh}");
    assert_eq!(rh["failed_requests"], 2);
    assert_eq!(rh["timeout_requests"], 1);
    assert_eq!(rh["completed_requests"], 3);
    assert!(
        rh["max_response_time_ms"].as_f64().unwrap_or(0.0) >= 300.0,
        "{rh}"
    );
    assert_eq!(after["concurrency_metrics"]["total_db_operations"], 5);
    assert_eq!(after["concurrency_metrics"]["total_http_operations"], 0);
    assert!(
        after["concurrency_metrics"]["avg_db_latency_ms"]
            .as_f64()
            .unwrap_or(0.0)
            > 0.0
    );
    let db = &after["classes"]["db"];
    assert_eq!(db["total"], 5);
    assert_eq!(db["outcomes"]["gateway_timeout"], 1);
    assert!(db["latency_ms"]["p99"].as_f64().unwrap_or(0.0) > 0.0);
    assert!(
        after["connection_pool_stats"]["current_open"]
            .as_u64()
            .unwrap_or(0)
            >= 1,
        "{}",
        after["connection_pool_stats"]
    );
    // The observability listener serves the same JSON.
    let (_, via_obs) = observe(&sluice, CONCURRENCY).await;
    assert!(via_obs.contains("request_handler_stats"));
    sluice.shutdown().await;
}

#[tokio::test]
async fn admin_reset_needs_the_token_and_zeroes_counters_not_gauges() {
    let app = TestUpstream::start().await;
    let cfg = set(
        &base_config(app.addr()),
        "admin",
        "token_env",
        "\"TEST_ADMIN_TOKEN\"",
    );
    let sluice = start_with_env(&cfg, &[("TEST_ADMIN_TOKEN", "s3cret-token")]).await;
    Http1Client::get(sluice.addr, "/echo", &[]).await;

    let (status, body) = post(sluice.addr, RESET, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let (status, _) = post(sluice.addr, RESET, Some("Bearer wrong-token")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = post(sluice.addr, RESET, Some("s3cret-token")).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "the Bearer scheme is required"
    );
    let (_, still) = get_json(sluice.addr, CONCURRENCY).await;
    assert_eq!(
        still["request_handler_stats"]["total_requests"], 1,
        "refused resets change nothing"
    );

    // A request in flight during the reset keeps its gauge.
    let addr = sluice.addr;
    let slow = tokio::spawn(async move { Http1Client::get(addr, "/delay/400", &[]).await });
    tokio::time::sleep(Duration::from_millis(150)).await;
    let (status, body) = post(sluice.addr, RESET, Some("Bearer s3cret-token")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["message"], "Concurrency metrics reset successfully");
    let (_, after) = get_json(sluice.addr, CONCURRENCY).await;
    assert_eq!(after["request_handler_stats"]["total_requests"], 0);
    assert_eq!(
        after["request_handler_stats"]["active_requests"], 1,
        "gauges are not reset"
    );
    let (_, metrics) = observe(&sluice, "/metrics").await;
    assert_eq!(
        sample(
            &metrics,
            "sluice_requests_total",
            "route=\"default\",class=\"db\",priority=\"normal\",outcome=\"success\""
        ),
        Some(0.0)
    );
    assert_eq!(
        sample(&metrics, "sluice_inflight_requests", "class=\"db\""),
        Some(1.0)
    );
    slow.await.expect("slow request");
    sluice.shutdown().await;
}

#[tokio::test]
async fn admin_endpoint_is_404_without_a_configured_token() {
    let app = TestUpstream::start().await;
    let sluice = start(&base_config(app.addr())).await;
    let (status, _) = post(sluice.addr, RESET, Some("Bearer anything")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, _) = Http1Client::get(sluice.addr, RESET, &[]).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(
        app.requests(),
        0,
        "sluice's own endpoints never reach the app"
    );
    sluice.shutdown().await;
}

#[tokio::test]
async fn metrics_are_prometheus_text_and_follow_traffic() {
    let app = TestUpstream::start().await;
    let sluice = start(&base_config(app.addr())).await;
    Http1Client::get(sluice.addr, "/echo", &[]).await;
    Http1Client::get(sluice.addr, "/status/404", &[]).await;
    let (status, text) = observe(&sluice, "/metrics").await;
    assert_eq!(status, 200);
    let ok = "route=\"default\",class=\"db\",priority=\"normal\",outcome=\"success\"";
    assert_eq!(
        sample(&text, "sluice_requests_total", ok),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "sluice_requests_total",
            "route=\"default\",class=\"db\",priority=\"normal\",outcome=\"client_error\""
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            "sluice_request_duration_seconds_count",
            "route=\"default\""
        ),
        Some(2.0)
    );
    assert_eq!(
        sample(
            &text,
            "sluice_request_duration_seconds_bucket",
            "route=\"default\",class=\"db\",le=\"+Inf\""
        ),
        Some(2.0)
    );
    assert!(text.contains("sluice_build_info{version=\""));
    assert!(text.contains("process_resident_memory_bytes"));
    assert!(text.contains("sluice_upstream_errors_total{kind=\"timeout\"} 0"));
    // Every sample line is `name{labels} value` with a numeric value.
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let value = line.rsplit(' ').next().unwrap_or_default();
        assert!(
            value.parse::<f64>().is_ok() || value == "+Inf",
            "bad sample line: {line}"
        );
    }
    // promtool, when installed, is the authority on the format.
    if let Ok(out) = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            if let Some(mut stdin) = child.stdin.take() {
                stdin.write_all(text.as_bytes())?;
            }
            child.wait_with_output()
        })
    {
        let problems = String::from_utf8_lossy(&out.stderr).to_string()
            + &String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "promtool check metrics: {problems}");
    } else if std::env::var("CI").is_ok() {
        panic!("promtool is not installed: .ci/run installs the Debian package prometheus");
    }
    sluice.shutdown().await;
}

#[tokio::test]
async fn healthz_is_sluice_alone_and_readyz_follows_the_app_and_draining() {
    let mut relay = {
        let app = TestUpstream::start().await;
        let relay = common::TcpRelay::start(app.addr()).await;
        (app, relay)
    };
    let cfg = set(
        &base_config(relay.1.addr()),
        "health",
        "path",
        "\"/status/200\"",
    );
    let cfg = set(&cfg, "health", "interval_ms", "100");
    let sluice = start(&cfg).await;
    assert_eq!(observe(&sluice, "/healthz").await.0, 200);
    let ready = |s| async move { observe(s, "/readyz").await };
    let mut up = false;
    for _ in 0..50 {
        if ready(&sluice).await.0 == 200 {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(up, "ready once the app answers its health probe");

    relay.1.cut().await;
    let mut down = None;
    for _ in 0..60 {
        let (status, body) = ready(&sluice).await;
        if status == 503 {
            down = Some(body);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let body = down.expect("readyz fails while the app is down");
    assert!(body.contains("upstream down"), "{body}");
    assert_eq!(
        observe(&sluice, "/healthz").await.0,
        200,
        "healthz does not depend on the app"
    );
    let (status, health) = get_json(sluice.addr, HEALTH).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(health["overall_health"], "unhealthy");
    assert_eq!(health["components"]["upstream"]["status"], "unhealthy");
    assert!(health["components"]["upstream"]["issues"][0].is_string());

    relay.1.restore().await;
    let mut back = false;
    for _ in 0..60 {
        if ready(&sluice).await.0 == 200 {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(back, "ready again after the app recovers");
    let (status, health) = get_json(sluice.addr, HEALTH).await;
    assert_eq!(status, StatusCode::OK);
    // Not "healthy": the system component may flag a busy shared test machine.
    assert_ne!(health["overall_health"], "unhealthy", "{health}");
    assert_eq!(
        health["components"]["upstream"]["status"], "healthy",
        "{health}"
    );

    sluice.begin_drain();
    let (status, body) = ready(&sluice).await;
    assert_eq!(status, 503);
    assert!(body.contains("draining"));
    sluice.shutdown().await;
}

#[tokio::test]
async fn health_json_flags_a_class_with_many_errors() {
    let app = TestUpstream::start().await;
    let sluice = start(&base_config(app.addr())).await;
    let (_, healthy) = get_json(sluice.addr, HEALTH).await;
    assert_eq!(healthy["overall_health"], "healthy", "{healthy}");
    assert!(healthy["components"]["class_db"]["issues"]
        .as_array()
        .is_some_and(|a| a.is_empty()));
    for _ in 0..3 {
        Http1Client::get(sluice.addr, "/status/503", &[]).await;
    }
    let (status, degraded) = get_json(sluice.addr, HEALTH).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(degraded["overall_health"], "degraded");
    assert_eq!(degraded["components"]["class_db"]["status"], "degraded");
    sluice.shutdown().await;
}

#[tokio::test]
async fn endpoints_answer_503_when_concurrency_is_disabled() {
    let app = TestUpstream::start().await;
    let sluice = start_with_env(
        &base_config(app.addr()),
        &[("CONCURRENCY_ENABLED", "false")],
    )
    .await;
    let (status, body) = get_json(sluice.addr, CONCURRENCY).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["error"], "concurrency_disabled");
    assert_eq!(
        Http1Client::get(sluice.addr, "/echo", &[]).await.0,
        StatusCode::OK,
        "traffic still passes"
    );
    sluice.shutdown().await;
}
