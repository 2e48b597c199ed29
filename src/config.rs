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
    /// Largest request head in bytes; at least 8192, hyper's minimum buffer.
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
}

#[derive(Clone, Debug)]
pub enum PathMatch {
    Any,
    Prefix(String),
    Regex(regex::Regex),
}

/// Active health checks of the app.
#[derive(Clone, Debug)]
pub struct HealthConfig {
    pub path: String,
    pub interval: Duration,
}

#[derive(Clone, Debug)]
pub struct BreakerConfig {
    /// Consecutive upstream failures that open the breaker.
    pub failure_threshold: u32,
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
