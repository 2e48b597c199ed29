//! Config tests for health checks, the circuit breaker, degradation and fallbacks.

use super::*;

fn load(src: &str) -> Result<Config, ConfigErrors> {
    Config::from_toml_str(src, "config.toml", &|_| None)
}

fn placed(src: &str) -> Vec<(Option<usize>, String)> {
    match load(src) {
        Ok(_) => panic!("expected errors for:\n{src}"),
        Err(e) => e.0.into_iter().map(|e| (e.line, e.path)).collect(),
    }
}

#[test]
fn defaults_are_safe_for_the_toeic_app() {
    let c = load("").unwrap();
    let b = &c.circuit_breaker;
    assert!(b.enabled);
    assert_eq!(b.scope, BreakerScope::Class);
    assert_eq!(b.failure_threshold, 5);
    assert!(b.failure_statuses.contains(500) && b.failure_statuses.contains(599));
    assert!(!b.failure_statuses.contains(404) && !b.failure_statuses.contains(499));
    assert_eq!(b.open, Duration::from_secs(5));
    assert_eq!(b.max_open, Duration::from_secs(60));
    assert!(b.slow_call.is_zero());
    let h = &c.health;
    assert_eq!(h.timeout, Duration::from_secs(2));
    assert_eq!((h.healthy_threshold, h.unhealthy_threshold), (1, 3));
    assert!(h.ready_requires_upstream);
    let d = &c.degradation;
    assert!(d.enabled);
    assert_eq!(d.refuse_below, Priority::High);
    assert_eq!(
        d.upstream_latency, None,
        "off by default: AI routes are slow"
    );
    assert_eq!(d.queue_wait, Some(Duration::from_secs(1)));
    assert!(c.routes.iter().all(|r| r.fallback.is_none()));
}

#[test]
fn status_sets_parse_classes_ranges_and_codes() {
    assert_eq!(StatusSet::parse_entry("5xx"), Some((500, 599)));
    assert_eq!(StatusSet::parse_entry(" 502 "), Some((502, 502)));
    assert_eq!(StatusSet::parse_entry("500-504"), Some((500, 504)));
    for bad in ["6xx", "0xx", "abc", "504-500", "99", "600", "", "5x"] {
        assert_eq!(StatusSet::parse_entry(bad), None, "{bad:?}");
    }
}

#[test]
fn breaker_problems_are_placed_on_their_lines() {
    let src = "[circuit_breaker]\nscope = \"pod\"\nfailure_statuses = [\"5xx\", \"teapot\"]\nfailure_rate = 1.5\nopen_ms = 10000\nmax_open_ms = 5000\njitter = 0.9\n";
    let got = placed(src);
    assert!(
        got.contains(&(Some(2), "circuit_breaker.scope".into())),
        "{got:?}"
    );
    assert!(
        got.contains(&(Some(3), "circuit_breaker.failure_statuses[1]".into())),
        "{got:?}"
    );
    assert!(
        got.contains(&(Some(4), "circuit_breaker.failure_rate".into())),
        "{got:?}"
    );
    assert!(
        got.contains(&(Some(6), "circuit_breaker.max_open_ms".into())),
        "{got:?}"
    );
    assert!(
        got.contains(&(Some(7), "circuit_breaker.jitter".into())),
        "{got:?}"
    );
}

#[test]
fn health_timeout_cannot_exceed_the_interval() {
    let got = placed("[health]\ninterval_ms = 1000\ntimeout_ms = 1500\n");
    assert_eq!(got, vec![(Some(3), "health.timeout_ms".to_string())]);
    let c = load("[health]\ninterval_ms = 500\n").unwrap();
    assert_eq!(c.health.timeout, Duration::from_millis(500));
}

#[test]
fn degradation_signals_can_be_turned_off_with_zero() {
    let c = load("[degradation]\nqueue_wait_ms = 0\nshed_ratio = 0\nupstream_latency_ms = 800\nrefuse_below = \"critical\"\n").unwrap();
    let d = &c.degradation;
    assert_eq!(d.queue_wait, None);
    assert_eq!(d.shed_ratio, None);
    assert_eq!(d.upstream_latency, Some(Duration::from_millis(800)));
    assert_eq!(d.refuse_below, Priority::Critical);
    let got = placed("[degradation]\nrefuse_below = \"urgent\"\nexit_margin = 0\n");
    assert_eq!(
        got,
        vec![
            (Some(2), "degradation.refuse_below".to_string()),
            (Some(3), "degradation.exit_margin".to_string())
        ]
    );
}

#[test]
fn fallbacks_load_for_read_routes() {
    let src = r#"
[[routes]]
name = "leaderboard"
methods = ["GET"]
path_regex = "^/api/v1/exams/[^/]+/leaderboard$"
priority = "low"
[routes.fallback]
last_good_max_age_ms = 60000
body = '{"data":[],"degraded":true}'
"#;
    let c = load(src).unwrap();
    let f = c.routes[0].fallback.as_ref().unwrap();
    assert_eq!(f.last_good_max_age, Some(Duration::from_secs(60)));
    assert_eq!(f.last_good_max_bytes, 256 * 1024);
    let s = f.static_response.as_ref().unwrap();
    assert_eq!(s.status, http::StatusCode::OK);
    assert_eq!(s.content_type, "application/json");
    assert_eq!(&s.body[..], br#"{"data":[],"degraded":true}"#);
}

#[test]
fn fallbacks_on_writes_bypass_routes_or_empty_are_refused() {
    let src = r#"
[[routes]]
name = "submit"
methods = ["POST"]
path_prefix = "/api/v1/user-answers"
[routes.fallback]
body = "{}"

[[routes]]
name = "probe"
methods = ["GET"]
path_prefix = "/health"
bypass = true
[routes.fallback]
body = "{}"

[[routes]]
name = "any"
path_prefix = "/x"
[routes.fallback]
status = 99

[[routes]]
name = "empty"
methods = ["GET"]
path_prefix = "/y"
[routes.fallback]
last_good_max_bytes = 10
"#;
    let got = placed(src);
    let paths: Vec<&str> = got.iter().map(|(_, p)| p.as_str()).collect();
    assert_eq!(
        paths,
        [
            "routes[0].fallback",
            "routes[1].fallback",
            "routes[2].fallback",
            "routes[2].fallback.status",
            "routes[3].fallback",
        ],
        "{got:?}"
    );
    assert!(got.iter().all(|(line, _)| line.is_some()), "{got:?}");
}
