//! Validation of what keeps the pod useful when things fail: health checks, the
//! circuit breaker, degradation mode and per-route fallbacks. Defaults live here, next
//! to their ranges; `config.toml` documents the same numbers.

use std::time::Duration;

use super::Problems;
use crate::config::raw::{RawBreaker, RawDegradation, RawFallback, RawHealth};
use crate::config::{
    BreakerConfig, BreakerScope, DegradationConfig, FallbackConfig, HealthConfig, StaticResponse,
    StatusSet,
};
use crate::priority::Priority;

pub(super) fn health(raw: RawHealth, p: &mut Problems<'_>) -> HealthConfig {
    let path = raw.path.unwrap_or_else(|| "/health/ready".to_owned());
    // "" turns active health checks off (the app is then assumed up).
    if !path.is_empty()
        && (!path.starts_with('/') || path.parse::<http::uri::PathAndQuery>().is_err())
    {
        p.at(
            "health.path",
            format!("{path:?} is not an absolute request path (\"\" disables health checks)"),
        );
    }
    let interval = p.millis(
        "health.interval_ms",
        raw.interval_ms,
        10_000,
        100..=3_600_000,
    );
    let interval_ms = u64::try_from(interval.as_millis()).unwrap_or(u64::MAX);
    let timeout = p.millis(
        "health.timeout_ms",
        raw.timeout_ms,
        interval_ms.min(2_000),
        1..=interval_ms.max(1),
    );
    HealthConfig {
        path,
        interval,
        timeout,
        healthy_threshold: p.count32(
            "health.healthy_threshold",
            raw.healthy_threshold,
            1,
            1..=100,
        ),
        unhealthy_threshold: p.count32(
            "health.unhealthy_threshold",
            raw.unhealthy_threshold,
            3,
            1..=100,
        ),
        passive_failures: p.count32(
            "health.passive_failures",
            raw.passive_failures,
            5,
            0..=10_000,
        ),
        ready_requires_upstream: raw.ready_requires_upstream.unwrap_or(true),
    }
}

pub(super) fn breaker(raw: RawBreaker, p: &mut Problems<'_>) -> BreakerConfig {
    let scope = match raw.scope.as_deref().unwrap_or("class") {
        "class" => BreakerScope::Class,
        "upstream" => BreakerScope::Upstream,
        other => {
            p.at(
                "circuit_breaker.scope",
                format!("unknown scope {other:?}: expected \"class\" or \"upstream\""),
            );
            BreakerScope::Class
        }
    };
    let open = p.millis("circuit_breaker.open_ms", raw.open_ms, 5_000, 100..=600_000);
    let max_open = p.millis(
        "circuit_breaker.max_open_ms",
        raw.max_open_ms,
        60_000.max(u64::try_from(open.as_millis()).unwrap_or(0)),
        100..=3_600_000,
    );
    if max_open < open {
        p.at_any(
            &["circuit_breaker.max_open_ms", "circuit_breaker.open_ms"],
            format!(
                "max_open_ms ({}) must not be below open_ms ({})",
                max_open.as_millis(),
                open.as_millis()
            ),
        );
    }
    let statuses = raw
        .failure_statuses
        .unwrap_or_else(|| vec!["5xx".to_owned()]);
    let mut ranges = Vec::with_capacity(statuses.len());
    for (i, s) in statuses.iter().enumerate() {
        match StatusSet::parse_entry(s) {
            Some(r) => ranges.push(r),
            None => p.at(
                &format!("circuit_breaker.failure_statuses[{i}]"),
                format!("{s:?}: expected a status (\"502\"), a range (\"500-504\") or a class (\"5xx\")"),
            ),
        }
    }
    BreakerConfig {
        enabled: raw.enabled.unwrap_or(true),
        scope,
        failure_threshold: p.count32(
            "circuit_breaker.failure_threshold",
            raw.failure_threshold,
            5,
            1..=10_000,
        ),
        failure_rate: p.ratio(
            "circuit_breaker.failure_rate",
            raw.failure_rate,
            0.5,
            0.0..=1.0,
        ),
        slow_call_rate: p.ratio(
            "circuit_breaker.slow_call_rate",
            raw.slow_call_rate,
            0.8,
            0.0..=1.0,
        ),
        slow_call: p.millis(
            "circuit_breaker.slow_call_ms",
            raw.slow_call_ms,
            0,
            0..=super::sections::MAX_TIMEOUT_MS,
        ),
        window: p.millis(
            "circuit_breaker.window_ms",
            raw.window_ms,
            10_000,
            1_000..=600_000,
        ),
        minimum_calls: p.count32(
            "circuit_breaker.minimum_calls",
            raw.minimum_calls,
            20,
            1..=1_000_000,
        ),
        open,
        max_open,
        jitter: p.ratio("circuit_breaker.jitter", raw.jitter, 0.2, 0.0..=0.5),
        half_open_probes: p.count32(
            "circuit_breaker.half_open_probes",
            raw.half_open_probes,
            3,
            1..=1_000,
        ),
        failure_statuses: StatusSet::new(ranges),
    }
}

/// `0` in the file turns a signal off.
fn signal_ms(p: &mut Problems<'_>, path: &str, raw: Option<u64>, default: u64) -> Option<Duration> {
    let d = p.millis(path, raw, default, 0..=3_600_000);
    (!d.is_zero()).then_some(d)
}

fn signal_ratio(p: &mut Problems<'_>, path: &str, raw: Option<f64>, default: f64) -> Option<f64> {
    let r = p.ratio(path, raw, default, 0.0..=10.0);
    (r > 0.0).then_some(r)
}

pub(super) fn degradation(raw: RawDegradation, p: &mut Problems<'_>) -> DegradationConfig {
    let refuse_below = raw
        .refuse_below
        .as_deref()
        .unwrap_or("high")
        .parse::<Priority>()
        .unwrap_or_else(|e| {
            p.at("degradation.refuse_below", e.to_string());
            Priority::High
        });
    DegradationConfig {
        enabled: raw.enabled.unwrap_or(true),
        interval: p.millis("degradation.interval_ms", raw.interval_ms, 250, 50..=10_000),
        enter_after: p.millis(
            "degradation.enter_after_ms",
            raw.enter_after_ms,
            5_000,
            0..=600_000,
        ),
        exit_after: p.millis(
            "degradation.exit_after_ms",
            raw.exit_after_ms,
            15_000,
            0..=3_600_000,
        ),
        exit_margin: p.ratio("degradation.exit_margin", raw.exit_margin, 0.8, 0.1..=1.0),
        refuse_below,
        queue_timeout_factor: p.ratio(
            "degradation.queue_timeout_factor",
            raw.queue_timeout_factor,
            0.5,
            0.01..=1.0,
        ),
        queue_wait: signal_ms(p, "degradation.queue_wait_ms", raw.queue_wait_ms, 1_000),
        shed_ratio: signal_ratio(p, "degradation.shed_ratio", raw.shed_ratio, 0.5),
        upstream_latency: signal_ms(
            p,
            "degradation.upstream_latency_ms",
            raw.upstream_latency_ms,
            0,
        ),
        error_ratio: signal_ratio(p, "degradation.error_ratio", raw.error_ratio, 0.25),
        breaker_open: raw.breaker_open.unwrap_or(false),
        cpu_ratio: signal_ratio(p, "degradation.cpu_ratio", raw.cpu_ratio, 0.0),
        memory_ratio: signal_ratio(p, "degradation.memory_ratio", raw.memory_ratio, 0.9),
    }
}

/// A route's `[routes.fallback]`; only for routes that match GET/HEAD alone and are
/// not bypass routes (a fallback must never stand in for a write).
pub(super) fn fallback(
    raw: RawFallback,
    methods: &[http::Method],
    bypass: bool,
    at: &dyn Fn(&str) -> String,
    p: &mut Problems<'_>,
) -> Option<FallbackConfig> {
    let only_reads = !methods.is_empty()
        && methods
            .iter()
            .all(|m| m == http::Method::GET || m == http::Method::HEAD);
    if !only_reads {
        p.at(
            &at("fallback"),
            "fallbacks are for read-only routes: set methods = [\"GET\"] (or GET and HEAD)",
        );
    }
    if bypass {
        p.at(
            &at("fallback"),
            "a bypass route is never degraded, so it cannot have a fallback",
        );
    }
    let last_good_max_age = raw.last_good_max_age_ms.map(|ms| {
        p.millis(
            &at("fallback.last_good_max_age_ms"),
            Some(ms),
            ms,
            1..=86_400_000,
        )
    });
    let last_good_max_bytes = p.count(
        &at("fallback.last_good_max_bytes"),
        raw.last_good_max_bytes,
        256 * 1024,
        1..=16 * 1024 * 1024,
    );
    let has_static = raw.body.is_some() || raw.status.is_some() || raw.content_type.is_some();
    let static_response = has_static.then(|| {
        let status = match http::StatusCode::from_u16(raw.status.unwrap_or(200)) {
            Ok(s) => s,
            Err(_) => {
                p.at(&at("fallback.status"), "must be an HTTP status (100-599)");
                http::StatusCode::OK
            }
        };
        let content_type = raw
            .content_type
            .as_deref()
            .unwrap_or("application/json")
            .parse::<http::HeaderValue>()
            .unwrap_or_else(|_| {
                p.at(&at("fallback.content_type"), "not a valid header value");
                http::HeaderValue::from_static("application/octet-stream")
            });
        StaticResponse {
            status,
            content_type,
            body: bytes::Bytes::from(raw.body.unwrap_or_default()),
        }
    });
    if last_good_max_age.is_none() && static_response.is_none() {
        p.at(
            &at("fallback"),
            "set last_good_max_age_ms, a static body, or both",
        );
        return None;
    }
    Some(FallbackConfig {
        last_good_max_age,
        last_good_max_bytes,
        static_response,
    })
}
