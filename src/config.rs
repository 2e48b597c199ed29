//! sluice's configuration: `config.toml` plus the seed app's environment overrides,
//! validated once at the edge into the runtime [`Config`] the rest of sluice reads.
//!
//! Loading goes raw TOML -> env overrides -> validation and reports every problem
//! found, each with its origin (file or variable), line and key path, never
//! panicking. Nothing here reads the process environment itself: callers pass a
//! lookup (`&|k| std::env::var(k).ok()` in `main`, a map in tests).
//! Invariants of a loaded `Config`: `classes` is sorted by name and every
//! `RouteConfig::class` indexes into it; `routes` keeps file order and ends with
//! the default route.

mod env;
mod parse;
mod raw;
mod spans;
mod validate;

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use crate::priority::Priority;

/// Everything sluice needs to run, validated.
#[derive(Clone, Debug)]
pub struct Config {
    pub listener: ListenerConfig,
    pub observability: ObservabilityConfig,
    pub upstream: UpstreamConfig,
    pub admin: AdminConfig,
    pub concurrency: ConcurrencyConfig,
    /// Admission classes sorted by name; the index is the class id that
    /// [`RouteConfig::class`] refers to.
    pub classes: Vec<ClassConfig>,
    /// Route rules in file order, first match wins. The last element is always
    /// the default route (name `"default"`, from `[default_route]`), which matches
    /// everything.
    pub routes: Vec<RouteConfig>,
    pub health: HealthConfig,
    pub circuit_breaker: BreakerConfig,
    pub degradation: DegradationConfig,
    pub background: BackgroundConfig,
}

/// The client-facing listener.
#[derive(Clone, Debug)]
pub struct ListenerConfig {
    pub addr: SocketAddr,
    /// Runtime threads; 0 = one per available core.
    pub workers: usize,
    /// Open client connections beyond which new ones are refused.
    pub max_connections: usize,
    /// Time a client has to send a complete request head.
    pub header_read_timeout: Duration,
    /// Longest wait for the next request on a keep-alive client connection.
    pub idle_timeout: Duration,
    /// Largest request head in bytes.
    pub max_header_bytes: usize,
    /// Most header fields in one request head.
    pub max_headers: usize,
    /// Serve HTTP/2 (prior knowledge or ALPN) as well as HTTP/1.1.
    pub http2: bool,
}

/// sluice's own metrics, health and admin listener, and its logs.
#[derive(Clone, Debug)]
pub struct ObservabilityConfig {
    /// `None` when the file says `addr = ""`: no observability listener.
    pub addr: Option<SocketAddr>,
    pub log_format: LogFormat,
    /// A `tracing` env-filter directive such as `"info"` or `"sluice=debug,info"`.
    pub log_level: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// The app behind sluice.
#[derive(Clone, Debug)]
pub struct UpstreamConfig {
    /// `host:port` (`[v6]:port` for IPv6), checked for shape, not resolved.
    pub addr: String,
    pub connect_timeout: Duration,
    /// Deadline for the response head; the default for routes without their own.
    pub request_timeout: Duration,
    /// Idle pooled connections are closed after this; below the app's 120 s
    /// IdleTimeout so sluice never reuses a connection the app is closing.
    pub pool_idle_timeout: Duration,
    pub pool_max_idle_per_worker: usize,
    /// Longest pause between chunks of a streaming body, either way.
    pub body_idle_timeout: Duration,
}

/// The admin API.
#[derive(Clone, Debug)]
pub struct AdminConfig {
    /// Bearer token for admin endpoints; `None` when neither `token_env` nor
    /// `token_file` is set (the admin API is then closed).
    pub token: Option<Secret>,
    /// Why there is no token (the admin API is then off), for the start-up log.
    pub disabled: Option<String>,
}

/// A secret string that never shows up in `Debug` or `Display` output.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The secret itself, for comparing against a presented credential.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The seed's `CONCURRENCY_ENABLED` switch.
#[derive(Clone, Debug)]
pub struct ConcurrencyConfig {
    /// When false, admission limits and queues are off and the concurrency
    /// endpoints answer 503, as in the app.
    pub enabled: bool,
}

/// One admission class: a concurrency limit with its own priority queue.
#[derive(Clone, Debug)]
pub struct ClassConfig {
    pub name: String,
    /// Upper bound on requests in flight (the adaptive limit never exceeds it).
    pub max_concurrent: usize,
    /// Floor for the adaptive limit; `1 <= min_concurrent <= max_concurrent`.
    pub min_concurrent: usize,
    /// Adapt the limit between min and max from observed latency.
    pub adaptive: bool,
    /// Waiters beyond the limit; 0 = refuse at once when full.
    pub queue_size: usize,
    /// Longest a request may wait in the queue.
    pub queue_timeout: Duration,
    /// Once the queue has not emptied for `codel_interval`, new waiters wait at most
    /// `codel_target` (a standing queue sheds early instead of timing out late).
    pub codel_target: Duration,
    pub codel_interval: Duration,
    /// Fairness inside a priority: waiters are grouped by this key and take turns.
    pub fair_key: KeySource,
}

/// Where a per-client key (fairness, rate limits) comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeySource {
    /// One key for everybody.
    None,
    /// The TCP peer address (the ingress or the client, depending on the path).
    ClientIp,
    /// A request header's value (absent header = one shared key).
    Header(http::HeaderName),
}

/// A route's token bucket.
#[derive(Clone, Debug, PartialEq)]
pub struct RateLimitConfig {
    pub per_second: f64,
    pub burst: u32,
    pub key: KeySource,
}

/// One route rule: what it matches and how matching requests are admitted.
#[derive(Clone, Debug)]
pub struct RouteConfig {
    /// Unique, `[a-z0-9_-]+`: used as a metric label.
    pub name: String,
    /// Empty = any method.
    pub methods: Vec<http::Method>,
    pub path: PathMatch,
    /// Every pair must be present with exactly this value.
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
    /// Index into [`Config::classes`].
    pub class: usize,
    pub priority: Priority,
    /// Upstream deadline; defaults to `upstream.request_timeout`.
    pub timeout: Duration,
    /// Never queued or shed (the app's health probes and scrapes).
    pub bypass: bool,
    /// `None`: no rate limit on this route.
    pub rate_limit: Option<RateLimitConfig>,
    /// Served while degraded instead of queueing (GET routes only).
    pub fallback: Option<FallbackConfig>,
}

#[derive(Clone, Debug)]
pub enum PathMatch {
    Any,
    Prefix(String),
    Regex(regex::Regex),
}

/// Health checks of the app: active probes and passive tracking of real traffic.
#[derive(Clone, Debug)]
pub struct HealthConfig {
    /// "" = no active probes (the app is assumed up unless passive tracking says not).
    pub path: String,
    pub interval: Duration,
    /// A probe without a 2xx head within this time failed; at most `interval`.
    pub timeout: Duration,
    /// Consecutive good probes that mark a down app up.
    pub healthy_threshold: u32,
    /// Consecutive failed probes that mark an up app down.
    pub unhealthy_threshold: u32,
    /// Consecutive real requests that could not reach the app (connect errors and
    /// timeouts) that mark it down until a probe succeeds; 0 = no passive tracking.
    pub passive_failures: u32,
    /// `/readyz` fails while the app is down (so Kubernetes stops routing to the pod).
    pub ready_requires_upstream: bool,
}

/// Which requests share one circuit breaker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerScope {
    /// One breaker for the whole app.
    Upstream,
    /// One breaker per admission class (a failing `http` class does not stop `db`).
    Class,
}

/// The upstream circuit breaker.
#[derive(Clone, Debug)]
pub struct BreakerConfig {
    pub enabled: bool,
    pub scope: BreakerScope,
    /// Consecutive upstream failures that open the breaker (`CIRCUIT_BREAKER_THRESHOLD`).
    pub failure_threshold: u32,
    /// Failure share over `window` that opens it; 0 = off.
    pub failure_rate: f64,
    /// Slow-call share over `window` that opens it; 0 = off.
    pub slow_call_rate: f64,
    /// A response head slower than this is a slow call; zero = none is.
    pub slow_call: Duration,
    pub window: Duration,
    /// Calls the window must hold before the rates apply.
    pub minimum_calls: u32,
    /// First open interval; doubles on each repeated trip up to `max_open`.
    pub open: Duration,
    pub max_open: Duration,
    /// Each interval is scaled by a random factor in `1 ± jitter`.
    pub jitter: f64,
    /// Requests let through while half-open; all must succeed to close.
    pub half_open_probes: u32,
    /// Response statuses that count as failures (connect errors and timeouts always do).
    pub failure_statuses: StatusSet,
}

/// A set of HTTP status codes, from entries such as `"5xx"`, `"502"` or `"500-504"`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusSet(Vec<(u16, u16)>);

impl StatusSet {
    pub fn contains(&self, status: u16) -> bool {
        self.0.iter().any(|&(lo, hi)| (lo..=hi).contains(&status))
    }

    /// Parses one entry; `None` if it is none of the accepted shapes.
    pub fn parse_entry(s: &str) -> Option<(u16, u16)> {
        let s = s.trim();
        let in_range = |v: u16| (100..=599).contains(&v);
        if let Some(class) = s.strip_suffix("xx").or_else(|| s.strip_suffix("XX")) {
            let d: u16 = class.parse().ok().filter(|d| (1..=5).contains(d))?;
            return Some((d * 100, d * 100 + 99));
        }
        let (lo, hi) = match s.split_once('-') {
            Some((a, b)) => (a.trim().parse().ok()?, b.trim().parse().ok()?),
            None => {
                let v = s.parse().ok()?;
                (v, v)
            }
        };
        (in_range(lo) && in_range(hi) && lo <= hi).then_some((lo, hi))
    }

    pub fn new(ranges: Vec<(u16, u16)>) -> StatusSet {
        StatusSet(ranges)
    }
}

/// Degradation mode: when to enter it and what it does.
#[derive(Clone, Debug)]
pub struct DegradationConfig {
    pub enabled: bool,
    /// How often the signals are sampled.
    pub interval: Duration,
    /// A signal must stay breached this long to enter.
    pub enter_after: Duration,
    /// Every signal must stay clear this long to leave.
    pub exit_after: Duration,
    /// A signal is clear below `threshold × exit_margin` (hysteresis on the value).
    pub exit_margin: f64,
    /// While degraded, requests below this priority are refused at once.
    pub refuse_below: Priority,
    /// While degraded, queue deadlines are scaled by this factor.
    pub queue_timeout_factor: f64,
    /// Signals; `None` turns one off.
    pub queue_wait: Option<Duration>,
    pub shed_ratio: Option<f64>,
    pub upstream_latency: Option<Duration>,
    pub error_ratio: Option<f64>,
    pub breaker_open: bool,
    pub cpu_ratio: Option<f64>,
    pub memory_ratio: Option<f64>,
}

/// What a route answers while degraded instead of queueing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FallbackConfig {
    /// Serve the last 2xx response seen for the same path and query, if it is no
    /// older than this; `None` = never.
    pub last_good_max_age: Option<Duration>,
    /// Largest response body kept as a last good response.
    pub last_good_max_bytes: usize,
    /// Served when there is no usable last good response; `None` = the request takes
    /// the normal path (admission, which may refuse it).
    pub static_response: Option<StaticResponse>,
}

/// A fixed response from the config file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StaticResponse {
    pub status: http::StatusCode,
    pub content_type: http::HeaderValue,
    pub body: bytes::Bytes,
}

/// Background task workers.
#[derive(Clone, Debug)]
pub struct BackgroundConfig {
    pub workers: usize,
    pub queue_size: usize,
}

/// One problem with the configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The file name, or `"env VAR"` for an environment override.
    pub origin: String,
    /// 1-based line in the file, where one applies.
    pub line: Option<usize>,
    /// Key path such as `routes[2].path_regex`; empty for the file as a whole.
    pub path: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.origin)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if !self.path.is_empty() {
            write!(f, ": {}", self.path)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Every problem found in one load, in file order, environment problems last.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl Config {
    /// Reads and validates the file at `path`, then applies environment overrides
    /// looked up through `env`. Errors name the file as `path` was given.
    pub fn load(path: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigErrors> {
        let origin = path.display().to_string();
        match std::fs::read_to_string(path) {
            Ok(src) => Config::from_toml_str(&src, &origin, env),
            Err(e) => Err(ConfigErrors(vec![ConfigError {
                origin,
                line: None,
                path: String::new(),
                message: format!("cannot read the config file: {e}"),
            }])),
        }
    }

    /// Like [`Config::load`] with the file's contents in hand; `origin` names it
    /// in errors.
    pub fn from_toml_str(
        src: &str,
        origin: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigErrors> {
        let parsed = parse::parse(src, origin).map_err(ConfigErrors)?;
        let parse::Parsed {
            mut raw,
            index,
            mut errors,
            removed,
        } = parsed;
        let mut sources = env::EnvSources::new();
        let mut env_errors = Vec::new();
        env::apply(&mut raw, env, &mut sources, &mut env_errors);

        let mut ctx = validate::Problems::new(origin, &index, &sources);
        let config = validate::validate(raw, env, &mut ctx);
        // A key already reported as structurally wrong was dropped and defaulted;
        // do not report the default's consequences a second time.
        errors.extend(ctx.into_errors().into_iter().filter(|e| {
            !removed.iter().any(|r| {
                e.path == *r
                    || e.path.starts_with(&format!("{r}."))
                    || e.path.starts_with(&format!("{r}["))
            })
        }));
        errors.sort_by_key(|e| (e.line.is_none(), e.line));
        errors.extend(env_errors);
        if errors.is_empty() {
            Ok(config)
        } else {
            Err(ConfigErrors(errors))
        }
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod tests_resilience;
