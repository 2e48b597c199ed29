//! Builds the JSON of `/api/v1/performance/concurrency` and its `/health`.
//!
//! The five sections dashboards already read from the app keep its field names; numbers
//! come from live state. Parts sluice has not built yet say `"enabled": false` with a
//! reason instead of inventing values.

use crate::admission::Rejection;
use crate::app::Shared;
use crate::metrics::{quantile, ClassSnapshot, Outcome, StatsSnapshot};
use crate::priority::Priority;
use crate::upstream::health::Verdict;
use serde_json::{json, Map, Value};
use std::time::SystemTime;
use tokio::time::Instant;

/// A class is "degraded" above this share of its limit, as the app's own endpoint does.
const BUSY_RATIO: f64 = 0.8;
/// ... or above this share of failed requests.
const ERROR_RATIO: f64 = 0.1;

fn ms(seconds: f64) -> f64 {
    (seconds * 1e6).round() / 1e3
}

pub(super) fn concurrency(shared: &Shared) -> Value {
    let snap = shared.metrics.requests.snapshot();
    let now = rfc3339(SystemTime::now());
    json!({
        "concurrency_metrics": concurrency_metrics(shared, &snap),
        "database_stats": {
            "enabled": false,
            "reason": "sluice's own PostgreSQL pool is not configured in this version",
        },
        "system_stats": system_stats(shared, &now),
        "connection_pool_stats": pool_stats(shared),
        "request_handler_stats": request_handler_stats(shared, &snap, &now),
        "classes": classes(shared, &snap),
        "routes": routes(shared, &snap),
        "upstream": upstream(shared),
        "circuit_breaker": circuit_breaker(shared),
        "degradation": degradation(shared, &snap),
        "fallbacks": fallbacks(shared),
        "background": {"enabled": false, "reason": "the background task queue is not built yet"},
        "alerts": alerts(shared),
        "sluice": {
            "version": env!("CARGO_PKG_VERSION"),
            "workers": shared.workers,
            "draining": shared.is_draining(),
            "uptime_seconds": shared.started.elapsed().as_secs(),
        },
    })
}

/// The app's `active_{db,http,cache}_operations` family, from the classes of those names.
fn concurrency_metrics(shared: &Shared, snap: &StatsSnapshot) -> Value {
    let mut out = Map::new();
    for name in ["db", "http", "cache"] {
        let index = shared.config.classes.iter().position(|c| c.name == name);
        let class = index.and_then(|i| Some((snap.classes.get(i)?, shared.admission.gate(i)?)));
        let (active, total, avg) = match class {
            Some((c, gate)) => (
                json!(gate.inflight()),
                json!(c.total()),
                json!(ms(c.mean_seconds())),
            ),
            None => (Value::Null, Value::Null, Value::Null),
        };
        out.insert(format!("active_{name}_operations"), active);
        out.insert(format!("total_{name}_operations"), total);
        out.insert(format!("avg_{name}_latency_ms"), avg);
    }
    Value::Object(out)
}

fn system_stats(shared: &Shared, now: &str) -> Value {
    let r = shared.system.latest();
    let tasks = r.tokio_tasks;
    json!({
        "cpu_count": r.cpu_count,
        "cpu_quota_cores": r.cpu_quota_cores,
        "cpu_usage_ratio": r.cpu_usage_ratio,
        "cpu_throttled_seconds_total": r.cpu_throttled_seconds_total,
        "memory_usage_bytes": r.memory_usage_bytes,
        "memory_working_set_bytes": r.memory_working_set_bytes,
        "memory_limit_bytes": r.memory_limit_bytes,
        "memory_usage_ratio": r.memory_ratio(),
        // The nearest honest equivalent of the app's goroutine count.
        "goroutine_count": tasks,
        "tokio_tasks_alive": tasks,
        "open_fds": r.open_fds,
        "max_fds": r.max_fds,
        "last_updated": now,
    })
}

/// sluice's pool is of HTTP connections to the app, not of database connections.
fn pool_stats(shared: &Shared) -> Value {
    let open = shared.metrics.upstream_connections.get().max(0) as u64;
    let idle: usize = shared.pools.iter().map(|p| p.idle_count()).sum();
    let idle = idle as u64;
    json!({
        "kind": "upstream_http",
        "upstream": shared.config.upstream.addr,
        "current_open": open,
        "current_in_use": open.saturating_sub(idle),
        "current_idle": idle,
        "max_idle": shared.config.upstream.pool_max_idle_per_worker * shared.pools.len(),
        "idle_timeout_ms": shared.config.upstream.pool_idle_timeout.as_millis() as u64,
    })
}

fn request_handler_stats(shared: &Shared, snap: &StatsSnapshot, now: &str) -> Value {
    let mut all = ClassSnapshot::default();
    for c in &snap.classes {
        all.inflight += c.inflight;
        for (a, b) in all.outcomes.iter_mut().zip(c.outcomes) {
            *a += b;
        }
        all.sum_seconds += c.sum_seconds;
        all.max_seconds = all.max_seconds.max(c.max_seconds);
    }
    let total = all.total();
    let failed = all.failures();
    let refused = all.count(Outcome::Rejected) + all.count(Outcome::RateLimited);
    json!({
        "active_requests": all.inflight,
        "total_requests": total,
        "completed_requests": total - failed - refused - all.count(Outcome::Cancelled),
        "failed_requests": failed,
        "timeout_requests": all.count(Outcome::GatewayTimeout),
        "cancelled_requests": all.count(Outcome::Cancelled),
        "rejected_requests": all.count(Outcome::Rejected),
        "rate_limited_requests": all.count(Outcome::RateLimited),
        // Requests answered differently because sluice was degraded: refused for their
        // priority, or given the route's fallback.
        "degraded_requests": degraded_refusals(shared) + all.count(Outcome::Fallback),
        "fallback_requests": all.count(Outcome::Fallback),
        "average_response_time_ms": ms(all.mean_seconds()),
        "max_response_time_ms": ms(all.max_seconds),
        "last_updated": now,
    })
}

fn outcomes_json(outcomes: &[u64]) -> Value {
    Value::Object(
        Outcome::ALL
            .iter()
            .zip(outcomes)
            .map(|(o, n)| (o.as_str().to_string(), json!(n)))
            .collect(),
    )
}

fn latency_json(c: &ClassSnapshot) -> Value {
    let q = |p| quantile(&c.buckets, p).map(ms);
    json!({
        "p50": q(0.5), "p95": q(0.95), "p99": q(0.99),
        "mean": ms(c.mean_seconds()), "max": ms(c.max_seconds),
    })
}

fn per_priority(f: impl Fn(Priority) -> Value) -> Value {
    Value::Object(
        Priority::ALL
            .iter()
            .map(|&p| (p.as_str().to_string(), f(p)))
            .collect(),
    )
}

fn classes(shared: &Shared, snap: &StatsSnapshot) -> Value {
    let mut out = Map::new();
    for ((cfg, c), gate) in shared
        .config
        .classes
        .iter()
        .zip(&snap.classes)
        .zip(&shared.admission.gates)
    {
        let (active, limit) = (gate.inflight(), gate.limit());
        let queued = gate.queued_by_priority();
        let waits: Vec<_> = gate.stats.waits.iter().map(|h| h.snapshot()).collect();
        let rejections: Map<String, Value> = Rejection::ALL
            .iter()
            .map(|&r| {
                let n: u64 = Priority::ALL
                    .iter()
                    .map(|&p| gate.stats.rejected_count(p, r))
                    .sum();
                (r.as_str().to_string(), json!(n))
            })
            .collect();
        out.insert(
            cfg.name.clone(),
            json!({
                "active": active,
                "limit": {
                    "current": limit,
                    "min": cfg.min_concurrent,
                    "max": cfg.max_concurrent,
                    "adaptive": cfg.adaptive && cfg.min_concurrent < cfg.max_concurrent,
                    "baseline_rtt_ms": gate.baseline_rtt().map(|d| ms(d.as_secs_f64())),
                    "critical_lane": gate.lane(),
                },
                "utilization": active as f64 / limit.max(1) as f64,
                "queued": per_priority(|p| json!(queued[p.index()])),
                "queued_total": queued.iter().sum::<usize>(),
                "queue_size": cfg.queue_size,
                "drain_rate_per_second": gate.drain_rate(),
                "arrival_rate_per_second": per_priority(|p| json!(gate.arrival_rate(p))),
                "admitted": per_priority(|p| json!(gate.stats.admitted_count(p))),
                "queue_wait_ms": per_priority(|p| {
                    let w = &waits[p.index()];
                    json!({"p50": w.quantile(0.5).map(ms), "p99": w.quantile(0.99).map(ms)})
                }),
                "rejections": rejections,
                "rejections_by_priority": per_priority(|p| Value::Object(
                    Rejection::ALL
                        .iter()
                        .map(|&r| (r.as_str().to_string(), json!(gate.stats.rejected_count(p, r))))
                        .collect(),
                )),
                "total": c.total(),
                "outcomes": outcomes_json(&c.outcomes),
                "latency_ms": latency_json(c),
            }),
        );
    }
    Value::Object(out)
}

fn routes(shared: &Shared, snap: &StatsSnapshot) -> Value {
    let routes = shared.classifier.routes();
    Value::Array(
        routes
            .iter()
            .zip(&snap.routes)
            .map(|(r, s)| {
                json!({
                    "name": r.name,
                    "class": shared.config.classes.get(r.class).map(|c| c.name.as_str()),
                    "priority": r.priority.as_str(),
                    "total": s.total(),
                    "outcomes": outcomes_json(&s.outcomes),
                })
            })
            .collect(),
    )
}

fn upstream(shared: &Shared) -> Value {
    let d = shared.health.detail();
    json!({
        "addr": shared.config.upstream.addr,
        "health_checks": shared.health.enabled(),
        "status": verdict_str(shared.health.verdict()),
        "consecutive_probe_failures": d.consecutive_failures,
        "last_probe_error": d.last_error,
    })
}

fn verdict_str(v: Verdict) -> &'static str {
    v.as_str()
}

fn ms_of(d: std::time::Duration) -> f64 {
    ms(d.as_secs_f64())
}

fn circuit_breaker(shared: &Shared) -> Value {
    let Some(b) = &shared.breakers else {
        return json!({"enabled": false, "reason": "circuit_breaker.enabled is false"});
    };
    let now = Instant::now();
    let c = &b.config;
    let breakers: Map<String, Value> = b
        .all
        .iter()
        .map(|n| {
            // Its refusals, as counted by the gates of the classes it guards.
            let refused: u64 = shared
                .admission
                .gates
                .iter()
                .enumerate()
                .filter(|(c, _)| b.for_class(*c).is_some_and(|x| std::ptr::eq(x, n)))
                .flat_map(|(_, g)| {
                    Priority::ALL.map(|p| g.stats.rejected_count(p, Rejection::CircuitOpen))
                })
                .sum();
            let s = n.breaker.snapshot(now);
            let v = json!({
                "state": s.state.as_str(),
                "consecutive_failures": s.consecutive_failures,
                "window": {"calls": s.window_calls, "failures": s.window_failures, "slow": s.window_slow},
                "trips_since_closed": s.trips,
                "open_remaining_ms": ms_of(s.open_remaining),
                "transitions": s.transitions,
                "last_trip_reason": s.last_trip.map(|r| r.as_str()),
                "probes_in_flight": s.probes_in_flight,
                "probe_successes": s.probe_successes,
                "refused": refused,
            });
            (n.name.clone(), v)
        })
        .collect();
    json!({
        "enabled": true,
        "scope": match c.scope {
            crate::config::BreakerScope::Upstream => "upstream",
            crate::config::BreakerScope::Class => "class",
        },
        "settings": {
            "failure_threshold": c.failure_threshold,
            "failure_rate": c.failure_rate,
            "slow_call_rate": c.slow_call_rate,
            "slow_call_ms": ms_of(c.slow_call),
            "window_ms": ms_of(c.window),
            "minimum_calls": c.minimum_calls,
            "open_ms": ms_of(c.open),
            "max_open_ms": ms_of(c.max_open),
            "half_open_probes": c.half_open_probes,
        },
        "breakers": breakers,
    })
}

/// Requests refused for their priority while degraded, as the gates counted them.
fn degraded_refusals(shared: &Shared) -> u64 {
    shared
        .admission
        .gates
        .iter()
        .flat_map(|g| Priority::ALL.map(|p| g.stats.rejected_count(p, Rejection::Degraded)))
        .sum()
}

pub(super) fn degradation(shared: &Shared, snap: &StatsSnapshot) -> Value {
    let d = &shared.degradation;
    let v = d.view(Instant::now());
    let s = &v.snapshot;
    let sig = &v.signals;
    let reasons: Vec<&str> = s.reasons.iter().map(|r| r.as_str()).collect();
    let pending: Vec<&str> = s.pending.iter().map(|r| r.as_str()).collect();
    json!({
        "enabled": d.config.enabled,
        "degraded": s.degraded,
        "mode": s.mode.as_str(),
        "reasons": reasons,
        "issues": v.issues,
        "since_ms": ms_of(s.since),
        "auto_degraded": s.auto_degraded,
        "pending": pending,
        "until_enter_ms": s.until_enter.map(ms_of),
        "until_exit_ms": s.until_exit.map(ms_of),
        "entered_count": s.entered_count,
        "refuse_below": d.config.refuse_below.as_str(),
        "refused_requests": degraded_refusals(shared),
        "fallback_requests": snap.classes.iter().map(|c| c.count(Outcome::Fallback)).sum::<u64>(),
        "signals": {
            "queue_wait_p99_ms": sig.queue_wait.map(ms_of),
            "shed_ratio": sig.shed_ratio,
            "upstream_latency_p99_ms": sig.upstream_latency.map(ms_of),
            "error_ratio": sig.error_ratio,
            "breaker_open": sig.breaker_open,
            "cpu_ratio": sig.cpu_ratio,
            "memory_ratio": sig.memory_ratio,
        },
    })
}

fn fallbacks(shared: &Shared) -> Value {
    let routes = shared.classifier.routes();
    Value::Object(
        shared
            .last_good
            .usage()
            .into_iter()
            .filter_map(|(i, entries, bytes)| {
                let name = routes.get(i)?.name.clone();
                Some((
                    name,
                    json!({"last_good_entries": entries, "last_good_bytes": bytes}),
                ))
            })
            .collect(),
    )
}

/// sluice's own CPU, memory and file descriptors above [`BUSY_RATIO`] of their limits.
fn system_issues(shared: &Shared) -> Vec<String> {
    let sys = shared.system.latest();
    [
        ("memory", sys.memory_ratio()),
        ("cpu", sys.cpu_usage_ratio),
        ("file descriptors", sys.fd_ratio()),
    ]
    .into_iter()
    .filter_map(|(what, ratio)| {
        let r = ratio.filter(|r| *r > BUSY_RATIO)?;
        Some(format!("{what} at {:.0}% of the limit", r * 100.0))
    })
    .collect()
}

/// Thresholds crossed right now, one line each: what an operator should look at.
fn alerts(shared: &Shared) -> Value {
    let mut out = Vec::new();
    for (cfg, gate) in shared.config.classes.iter().zip(&shared.admission.gates) {
        let (active, limit) = (gate.inflight(), gate.limit().max(1));
        if active as f64 / limit as f64 > BUSY_RATIO {
            out.push(json!({
                "component": format!("class_{}", cfg.name),
                "severity": "warning",
                "message": format!("{active} of {limit} slots busy (above {:.0}%)", BUSY_RATIO * 100.0),
            }));
        }
    }
    if let Some(b) = &shared.breakers {
        let now = Instant::now();
        for n in &b.all {
            let state = n.breaker.state(now);
            if state != crate::breaker::State::Closed {
                out.push(json!({
                    "component": "circuit_breaker",
                    "severity": "critical",
                    "message": format!("breaker {} is {}", n.name, state.as_str()),
                }));
            }
        }
    }
    let d = shared.degradation.view(Instant::now());
    if d.snapshot.degraded {
        out.push(json!({
            "component": "degradation",
            "severity": "critical",
            "message": format!("degraded: {}", d.issues.join("; ")),
        }));
    }
    for message in system_issues(shared) {
        out.push(json!({"component": "system", "severity": "warning", "message": message}));
    }
    if shared.health.verdict() == Verdict::Down {
        out.push(json!({
            "component": "upstream",
            "severity": "critical",
            "message": format!("app down: {}", shared.health.detail().last_error.unwrap_or_default()),
        }));
    }
    Value::Array(out)
}

/// `(healthy enough to serve, body)` for the health endpoint.
pub(super) fn health(shared: &Shared) -> (bool, Value) {
    let snap = shared.metrics.requests.snapshot();
    let mut components = Map::new();
    let mut worst = 0u8; // 0 healthy, 1 degraded, 2 unhealthy
    let mut add = |name: String, level: u8, issues: Vec<String>| {
        worst = worst.max(level);
        let status = ["healthy", "degraded", "unhealthy"][usize::from(level.min(2))];
        components.insert(name, json!({"status": status, "issues": issues}));
    };
    if shared.is_draining() {
        add(
            "listener".into(),
            2,
            vec!["draining: not accepting new connections".into()],
        );
    } else {
        add("listener".into(), 0, vec![]);
    }
    match shared.health.verdict() {
        Verdict::Up => add("upstream".into(), 0, vec![]),
        Verdict::Unknown => add("upstream".into(), 1, vec!["not probed yet".into()]),
        Verdict::Down => {
            let err = shared.health.detail().last_error.unwrap_or_default();
            add(
                "upstream".into(),
                2,
                vec![format!("health probes failing: {err}")],
            );
        }
    }
    for ((cfg, c), gate) in shared
        .config
        .classes
        .iter()
        .zip(&snap.classes)
        .zip(&shared.admission.gates)
    {
        let mut issues = Vec::new();
        let (active, limit) = (gate.inflight(), gate.limit().max(1));
        let used = active as f64 / limit as f64;
        if used > BUSY_RATIO {
            issues.push(format!(
                "{active} of {limit} slots busy ({:.0}%)",
                used * 100.0
            ));
        }
        let waiting: usize = gate.queued_by_priority().iter().sum();
        if waiting > 0 {
            issues.push(format!("{waiting} requests waiting for a slot"));
        }
        let total = c.total();
        if total > 0 {
            let ratio = c.failures() as f64 / total as f64;
            if ratio > ERROR_RATIO {
                issues.push(format!("error rate {:.1}% since last reset", ratio * 100.0));
            }
        }
        let level = u8::from(!issues.is_empty());
        add(format!("class_{}", cfg.name), level, issues);
    }
    let now = Instant::now();
    if let Some(b) = &shared.breakers {
        // One class's breaker open is a degraded pod; every breaker open, an unhealthy one.
        let mut issues = Vec::new();
        let mut open = 0;
        for n in &b.all {
            let st = n.breaker.snapshot(now);
            match st.state {
                crate::breaker::State::Closed => {}
                state => {
                    open += 1;
                    issues.push(format!(
                        "breaker {} is {} (last trip: {})",
                        n.name,
                        state.as_str(),
                        st.last_trip.map_or("operator", |r| r.as_str())
                    ));
                }
            }
        }
        let level = match open {
            0 => 0,
            n if n == b.all.len() => 2,
            _ => 1,
        };
        add("circuit_breaker".into(), level, issues);
    }
    let d = shared.degradation.view(now);
    if d.snapshot.degraded {
        add("degradation".into(), 1, d.issues.clone());
    } else {
        add("degradation".into(), 0, vec![]);
    }
    let issues = system_issues(shared);
    let level = u8::from(!issues.is_empty());
    add("system".into(), level, issues);
    let overall = ["healthy", "degraded", "unhealthy"][usize::from(worst)];
    let body = json!({
        "overall_health": overall,
        "components": components,
        "timestamp": rfc3339(SystemTime::now()),
    });
    (worst < 2, body)
}

/// UTC RFC 3339 with milliseconds, e.g. `2026-11-26T23:12:05.123Z`.
pub(crate) fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rfc3339_formats_known_instants() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_734_725_123);
        assert_eq!(rfc3339(t), "2026-11-26T23:12:05.123Z");
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let leap = SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000Z");
    }
}
