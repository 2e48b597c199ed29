//! End-to-end degradation mode: sustained overload enters it and refuses low priorities
//! while critical ones pass, recovery leaves it with hysteresis; fallbacks are served
//! while degraded; the operator's override.

mod common;

use common::harness::{json, observe, reason, sample, start, start_with_env};
use common::{Http1Client, TestUpstream};
use http::StatusCode;
use sluice::sim::app::{Mode, SimApp, SimSettings};
use sluice::sim::load::{self, Arrivals, LoadPlan, Stream};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const CONCURRENCY: &str = "/api/v1/performance/concurrency";
const HEALTH: &str = "/api/v1/performance/concurrency/health";
const DEGRADATION: &str = "/api/v1/admin/performance/degradation";

fn overload_config(app: SocketAddr) -> String {
    format!(
        r#"
[listener]
addr = "127.0.0.1:0"
workers = 2
[observability]
addr = "127.0.0.1:0"
[upstream]
addr = "{app}"
request_timeout_ms = 3000
[health]
path = ""
[classes.db]
max_concurrent = 4
min_concurrent = 4
adaptive = false
queue_size = 8
queue_timeout_ms = 100
[degradation]
interval_ms = 100
enter_after_ms = 600
exit_after_ms = 1500
shed_ratio = 0.3
queue_wait_ms = 0
error_ratio = 0
memory_ratio = 0
[[routes]]
name = "crit"
path_prefix = "/crit"
priority = "critical"
[[routes]]
name = "low"
path_prefix = "/low"
priority = "low"
[default_route]
class = "db"
priority = "normal"
"#
    )
}

fn stream(name: &str, rate: f64, path: &str) -> Stream {
    Stream {
        name: name.into(),
        rate_per_sec: rate,
        method: http::Method::GET,
        path: path.into(),
        headers: vec![],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sustained_overload_degrades_refuses_low_keeps_critical_and_leaves_with_hysteresis() {
    let settings = SimSettings {
        capacity: 4,
        service_time: Duration::from_millis(25),
        mode: Mode::Normal,
        queue_limit: 0,
        ..SimSettings::default()
    };
    let app = SimApp::start("127.0.0.1:0".parse().expect("addr"), settings)
        .await
        .expect("sim app");
    let sluice = start(&overload_config(app.addr())).await;
    // Capacity 160/s; 20/s critical plus 400/s low for 4 s.
    let plan = LoadPlan {
        target: sluice.addr,
        streams: vec![
            stream("critical", 20.0, "/crit"),
            stream("low", 400.0, "/low"),
        ],
        duration: Duration::from_secs(4),
        max_connections: 500,
        timeout: Duration::from_secs(5),
        arrivals: Arrivals::Even,
    };
    let load = tokio::spawn(load::run(plan));

    let t0 = Instant::now();
    let entered = loop {
        let d = json(sluice.addr, CONCURRENCY).await["degradation"].clone();
        if d["degraded"] == true {
            break d;
        }
        assert!(t0.elapsed() < Duration::from_secs(3), "never degraded: {d}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let entered_at = Instant::now();
    assert!(
        t0.elapsed() >= Duration::from_millis(600),
        "not before enter_after"
    );
    assert_eq!(entered["reasons"][0], "shed_rate", "{entered}");
    assert!(
        entered["issues"][0].as_str().unwrap().contains("shed"),
        "{entered}"
    );

    let (status, h, _) = Http1Client::get(sluice.addr, "/low", &[]).await;
    assert_eq!(
        (status, reason(&h)),
        (StatusCode::SERVICE_UNAVAILABLE, "degraded")
    );
    assert_eq!(h["retry-after"], "5");
    let (status, _, _) = Http1Client::get(sluice.addr, "/crit", &[]).await;
    assert_eq!(status, StatusCode::OK, "critical passes while degraded");
    let health = json(sluice.addr, HEALTH).await;
    assert_eq!(health["overall_health"], "degraded", "{health}");
    assert_eq!(health["components"]["degradation"]["status"], "degraded");

    // With the low load refused, the signals clear; it leaves only after they have
    // stayed clear for exit_after (1.5 s), never at once.
    let left_after = loop {
        let d = json(sluice.addr, CONCURRENCY).await["degradation"].clone();
        if d["degraded"] == false {
            break entered_at.elapsed();
        }
        assert!(
            entered_at.elapsed() < Duration::from_secs(8),
            "never left: {d}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        left_after >= Duration::from_millis(1400),
        "left after {left_after:?}"
    );

    let report = load.await.expect("load task").expect("load plan");
    let crit = &report.streams[0];
    assert!(
        crit.successes * 100 >= crit.sent * 99,
        "critical served: {} of {}\n{}",
        crit.successes,
        crit.sent,
        report.table()
    );
    let metrics = observe(&sluice, "/metrics").await.1;
    assert!(
        sample(
            &metrics,
            "sluice_degradation_transitions_total",
            "to=\"degraded\""
        ) >= Some(1.0)
    );
    assert!(
        sample(
            &metrics,
            "sluice_rejections_total",
            "class=\"db\",priority=\"low\",reason=\"degraded\""
        ) > Some(0.0)
    );
    eprintln!(
        "degraded after {:?}, left after {left_after:?}\n{}",
        entered_at - t0,
        report.table()
    );
    sluice.shutdown().await;
    app.shutdown().await;
}

fn fallback_config(app: SocketAddr) -> String {
    format!(
        r#"
[listener]
addr = "127.0.0.1:0"
workers = 2
[observability]
addr = "127.0.0.1:0"
[upstream]
addr = "{app}"
[admin]
token_env = "DRILL_TOKEN"
[health]
path = ""
[[routes]]
name = "login"
methods = ["POST"]
path_prefix = "/api/v1/auth/login"
priority = "critical"
[[routes]]
name = "board"
methods = ["GET", "HEAD"]
path_prefix = "/bytes"
priority = "low"
[routes.fallback]
last_good_max_age_ms = 60000
content_type = "application/json"
body = '{{"entries":[],"stale":true}}'
[default_route]
class = "db"
priority = "normal"
"#
    )
}

async fn admin(
    addr: SocketAddr,
    query: &str,
    body: &str,
    token: Option<&str>,
) -> (StatusCode, serde_json::Value) {
    let mut client = Http1Client::connect(addr).await.expect("connect");
    let mut req = http::Request::post(format!("{DEGRADATION}{query}")).header("host", "sluice");
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let resp = client
        .send(
            req.body(bytes::Bytes::from(body.to_owned()).into())
                .expect("request"),
        )
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

fn fallback_kind(h: &http::HeaderMap) -> &str {
    h.get("x-sluice-fallback")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

#[tokio::test]
async fn fallbacks_while_degraded_and_the_operator_override() {
    let app = TestUpstream::start().await;
    let sluice = start_with_env(&fallback_config(app.addr()), &[("DRILL_TOKEN", "t0ken")]).await;
    let addr = sluice.addr;

    // A good response is kept as it streams to the client.
    let (status, h, original) = Http1Client::get(addr, "/bytes/3000", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(fallback_kind(&h), "");
    let before = app.requests();

    // The override needs the token and a known mode.
    assert_eq!(
        admin(addr, "?mode=force_on", "", None).await.0,
        StatusCode::UNAUTHORIZED
    );
    let (status, err) = admin(addr, "?mode=sideways", "", Some("t0ken")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        err["message"].as_str().unwrap().contains("force_on"),
        "{err}"
    );
    let (status, err) = admin(addr, "", "not json", Some("t0ken")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
    let (status, state) = admin(addr, "", r#"{"mode":"force_on"}"#, Some("t0ken")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (state["mode"].as_str(), state["degraded"].as_bool()),
        (Some("force_on"), Some(true))
    );
    assert_eq!(state["reasons"][0], "manual");

    // Degraded: the kept response, marked, without touching the app...
    let (status, h, body) = Http1Client::get(addr, "/bytes/3000", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(fallback_kind(&h), "last-good");
    assert_eq!(reason(&h), "degraded");
    assert!(h.contains_key("age"));
    assert_eq!(body, original);
    let mut c = Http1Client::connect(addr).await.expect("connect");
    let head = http::Request::head("/bytes/3000")
        .body(Default::default())
        .expect("request");
    let resp = c.send(head).await.expect("head");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(fallback_kind(resp.headers()), "last-good", "HEAD too");
    // ...the static one where nothing was kept, or for another caller's credentials...
    for (path, headers) in [
        ("/bytes/10", vec![]),
        (
            "/bytes/3000",
            vec![("authorization", "Bearer someone-else")],
        ),
    ] {
        let (status, h, body) = Http1Client::get(addr, path, &headers).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(fallback_kind(&h), "static", "{path} {headers:?}");
        assert_eq!(&body[..], br#"{"entries":[],"stale":true}"#);
        assert_eq!(h["content-type"], "application/json");
    }
    assert_eq!(app.requests(), before, "fallbacks never reach the app");
    // ...normal priority refused, critical still served.
    let (status, h, _) = Http1Client::get(addr, "/echo", &[]).await;
    assert_eq!(
        (status, reason(&h)),
        (StatusCode::SERVICE_UNAVAILABLE, "degraded")
    );
    let mut c = Http1Client::connect(addr).await.expect("connect");
    let login = http::Request::post("/api/v1/auth/login")
        .body(Default::default())
        .expect("request");
    assert_eq!(c.send(login).await.expect("login").status(), StatusCode::OK);

    let stats = json(addr, CONCURRENCY).await;
    assert_eq!(
        stats["request_handler_stats"]["degraded_requests"], 5,
        "{}",
        stats["request_handler_stats"]
    );
    assert_eq!(stats["degradation"]["fallback_requests"], 4);
    assert_eq!(stats["fallbacks"]["board"]["last_good_entries"], 1);
    let health = json(addr, HEALTH).await;
    assert_eq!(
        health["components"]["degradation"]["issues"][0],
        "forced on by an operator"
    );
    let metrics = observe(&sluice, "/metrics").await.1;
    assert_eq!(
        sample(&metrics, "sluice_degradation_mode", "mode=\"force_on\""),
        Some(1.0)
    );
    assert_eq!(sample(&metrics, "sluice_degraded", ""), Some(1.0));

    // Forced off: straight to the app again, whatever the signals say.
    let (status, state) = admin(addr, "?mode=force_off", "", Some("t0ken")).await;
    assert_eq!(
        (status, state["degraded"].as_bool()),
        (StatusCode::OK, Some(false))
    );
    let (status, h, _) = Http1Client::get(addr, "/bytes/3000", &[]).await;
    assert_eq!((status, fallback_kind(&h)), (StatusCode::OK, ""));
    assert_eq!(app.requests(), before + 2, "the login and this request");
    let (status, state) = admin(addr, "?mode=auto", "", Some("t0ken")).await;
    assert_eq!(
        (status, state["mode"].as_str()),
        (StatusCode::OK, Some("auto"))
    );
    sluice.shutdown().await;
}

#[tokio::test]
async fn without_an_admin_token_the_override_does_not_exist() {
    let app = TestUpstream::start().await;
    let cfg = fallback_config(app.addr());
    let sluice = start(&cfg).await;
    let (status, _) = admin(sluice.addr, "?mode=force_on", "", Some("anything")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, _) = Http1Client::get(sluice.addr, "/echo", &[]).await;
    assert_eq!(status, StatusCode::OK, "not degraded");
    sluice.shutdown().await;
}
