//! The file as written: serde structs that mirror `config.toml` one to one.
//!
//! Every field is optional (`None` = use the default) so that validation can tell
//! "not set" from "set to the default" (a route without `timeout_ms` inherits the
//! upstream's; `min_concurrent` defaults from the effective `max_concurrent`).
//! Unknown keys are errors. Nothing here checks ranges: that is `validate`'s job.

use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    #[serde(default)]
    pub listener: RawListener,
    #[serde(default)]
    pub observability: RawObservability,
    #[serde(default)]
    pub upstream: RawUpstream,
    #[serde(default)]
    pub admin: RawAdmin,
    #[serde(default)]
    pub concurrency: RawConcurrency,
    /// `None` when the file has no `[classes]`: the seed's db/http/cache are used.
    /// When present it replaces them entirely.
    pub classes: Option<BTreeMap<String, RawClass>>,
    #[serde(default)]
    pub routes: Vec<RawRoute>,
    #[serde(default)]
    pub default_route: RawDefaultRoute,
    #[serde(default)]
    pub health: RawHealth,
    #[serde(default)]
    pub circuit_breaker: RawBreaker,
    #[serde(default)]
    pub degradation: RawDegradation,
    #[serde(default)]
    pub background: RawBackground,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawListener {
    pub addr: Option<String>,
    pub workers: Option<usize>,
    pub max_connections: Option<usize>,
    pub header_read_timeout_ms: Option<u64>,
    pub idle_timeout_ms: Option<u64>,
    pub max_header_bytes: Option<usize>,
    pub max_headers: Option<usize>,
    pub http2: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawObservability {
    pub addr: Option<String>,
    pub log_format: Option<String>,
    pub log_level: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawUpstream {
    pub addr: Option<String>,
    pub connect_timeout_ms: Option<u64>,
    pub request_timeout_ms: Option<u64>,
    pub pool_idle_timeout_ms: Option<u64>,
    pub pool_max_idle_per_worker: Option<usize>,
    pub body_idle_timeout_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAdmin {
    pub token_env: Option<String>,
    pub token_file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConcurrency {
    pub enabled: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawClass {
    pub max_concurrent: Option<usize>,
    pub min_concurrent: Option<usize>,
    pub adaptive: Option<bool>,
    pub queue_size: Option<usize>,
    pub queue_timeout_ms: Option<u64>,
    pub codel_target_ms: Option<u64>,
    pub codel_interval_ms: Option<u64>,
    pub fair_key: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRoute {
    pub name: Option<String>,
    #[serde(default)]
    pub methods: Vec<String>,
    pub path_prefix: Option<String>,
    pub path_regex: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    pub class: Option<String>,
    pub priority: Option<String>,
    pub timeout_ms: Option<u64>,
    pub bypass: Option<bool>,
    pub rate_limit_rps: Option<f64>,
    pub rate_limit_burst: Option<u32>,
    pub rate_limit_key: Option<String>,
    pub fallback: Option<RawFallback>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFallback {
    pub last_good_max_age_ms: Option<u64>,
    pub last_good_max_bytes: Option<usize>,
    pub status: Option<u16>,
    pub content_type: Option<String>,
    pub body: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDefaultRoute {
    pub class: Option<String>,
    pub priority: Option<String>,
    pub timeout_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHealth {
    pub path: Option<String>,
    pub interval_ms: Option<u64>,
    pub timeout_ms: Option<u64>,
    pub healthy_threshold: Option<u32>,
    pub unhealthy_threshold: Option<u32>,
    pub passive_failures: Option<u32>,
    pub ready_requires_upstream: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBreaker {
    pub enabled: Option<bool>,
    pub scope: Option<String>,
    pub failure_threshold: Option<u32>,
    pub failure_rate: Option<f64>,
    pub slow_call_rate: Option<f64>,
    pub slow_call_ms: Option<u64>,
    pub window_ms: Option<u64>,
    pub minimum_calls: Option<u32>,
    pub open_ms: Option<u64>,
    pub max_open_ms: Option<u64>,
    pub jitter: Option<f64>,
    pub half_open_probes: Option<u32>,
    pub failure_statuses: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDegradation {
    pub enabled: Option<bool>,
    pub interval_ms: Option<u64>,
    pub enter_after_ms: Option<u64>,
    pub exit_after_ms: Option<u64>,
    pub exit_margin: Option<f64>,
    pub refuse_below: Option<String>,
    pub queue_timeout_factor: Option<f64>,
    pub queue_wait_ms: Option<u64>,
    pub shed_ratio: Option<f64>,
    pub upstream_latency_ms: Option<u64>,
    pub error_ratio: Option<f64>,
    pub breaker_open: Option<bool>,
    pub cpu_ratio: Option<f64>,
    pub memory_ratio: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBackground {
    pub workers: Option<usize>,
    pub queue_size: Option<usize>,
}

/// The classes used when the file has no `[classes]` table: the seed app's three pools.
pub(crate) fn default_classes() -> BTreeMap<String, RawClass> {
    ["db", "http", "cache"]
        .into_iter()
        .map(|name| (name.to_owned(), RawClass::default()))
        .collect()
}
