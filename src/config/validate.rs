//! Raw file values -> runtime [`Config`]: defaults, ranges and cross-references,
//! collecting every problem rather than stopping at the first.
//!
//! Each problem is reported against a key path; [`Problems`] turns that into a
//! line in the file, or into the environment variable that set the value.

mod resilience;
mod routes;
mod sections;

use std::ops::RangeInclusive;
use std::time::Duration;

use super::env::EnvSources;
use super::raw::RawConfig;
use super::spans::SpanIndex;
use super::{Config, ConfigError};

/// Every problem found so far, each placed by key path.
pub(crate) struct Problems<'a> {
    origin: &'a str,
    index: &'a SpanIndex,
    sources: &'a EnvSources,
    errors: Vec<ConfigError>,
}

impl<'a> Problems<'a> {
    pub(crate) fn new(origin: &'a str, index: &'a SpanIndex, sources: &'a EnvSources) -> Self {
        Problems {
            origin,
            index,
            sources,
            errors: Vec::new(),
        }
    }

    pub(crate) fn into_errors(self) -> Vec<ConfigError> {
        self.errors
    }

    /// A problem with the value at `path`.
    pub(crate) fn at(&mut self, path: &str, message: impl Into<String>) {
        self.at_any(&[path], message);
    }

    /// A problem involving several values (say min and max): blamed on the first
    /// one an environment variable set, else on the first path.
    pub(crate) fn at_any(&mut self, paths: &[&str], message: impl Into<String>) {
        let from_env = paths
            .iter()
            .find_map(|p| self.sources.get(*p).map(|var| (*p, var)));
        let error = match from_env {
            Some((path, var)) => ConfigError {
                origin: format!("env {var}"),
                line: None,
                path: path.to_owned(),
                message: message.into(),
            },
            None => {
                let path = paths.first().copied().unwrap_or_default();
                ConfigError {
                    origin: self.origin.to_owned(),
                    line: self.index.line(path),
                    path: path.to_owned(),
                    message: message.into(),
                }
            }
        };
        self.errors.push(error);
    }

    /// `value` (or `default` when unset); a problem at `path` if it is outside `range`
    /// (`unit` follows the numbers in the message, e.g. `" ms"`).
    fn in_range<T: PartialOrd + Copy + std::fmt::Display>(
        &mut self,
        path: &str,
        value: Option<T>,
        default: T,
        range: RangeInclusive<T>,
        unit: &str,
    ) -> T {
        let v = value.unwrap_or(default);
        if !range.contains(&v) {
            self.at(
                path,
                format!(
                    "must be between {} and {}{unit}, got {v}",
                    range.start(),
                    range.end()
                ),
            );
        }
        v
    }

    /// `value` (or `default` when unset), checked against `range`.
    pub(crate) fn count(
        &mut self,
        path: &str,
        value: Option<usize>,
        default: usize,
        range: RangeInclusive<usize>,
    ) -> usize {
        self.in_range(path, value, default, range, "")
    }

    /// A count that must fit a `u32`, checked against `range`.
    pub(crate) fn count32(
        &mut self,
        path: &str,
        value: Option<u32>,
        default: u32,
        range: RangeInclusive<u32>,
    ) -> u32 {
        self.in_range(path, value, default, range, "")
    }

    /// A fraction (or `default` when unset), checked against `range`; the default stands
    /// in for a value outside it (NaN included).
    pub(crate) fn ratio(
        &mut self,
        path: &str,
        value: Option<f64>,
        default: f64,
        range: RangeInclusive<f64>,
    ) -> f64 {
        let v = self.in_range(path, value, default, range.clone(), "");
        // NaN and infinities are in no range of finite bounds: reported above too.
        if range.contains(&v) {
            v
        } else {
            default
        }
    }

    /// A `*_ms` field (or `default_ms` when unset), checked against `range`.
    pub(crate) fn millis(
        &mut self,
        path: &str,
        value: Option<u64>,
        default_ms: u64,
        range: RangeInclusive<u64>,
    ) -> Duration {
        Duration::from_millis(self.in_range(path, value, default_ms, range, " ms"))
    }
}

/// Builds the runtime config. The result is meaningful only if `problems` stayed
/// empty; otherwise it holds placeholders where values were wrong.
pub(crate) fn validate(
    raw: RawConfig,
    env: &dyn Fn(&str) -> Option<String>,
    p: &mut Problems<'_>,
) -> Config {
    let upstream = sections::upstream(raw.upstream, p);
    let classes = sections::classes(raw.classes.unwrap_or_default(), p);
    let routes = routes::routes(
        raw.routes,
        raw.default_route,
        &classes,
        upstream.request_timeout,
        p,
    );
    Config {
        listener: sections::listener(raw.listener, p),
        observability: sections::observability(raw.observability, p),
        upstream,
        admin: sections::admin(raw.admin, env, p),
        concurrency: super::ConcurrencyConfig {
            enabled: raw.concurrency.enabled.unwrap_or(true),
        },
        classes,
        routes,
        health: resilience::health(raw.health, p),
        circuit_breaker: resilience::breaker(raw.circuit_breaker, p),
        degradation: resilience::degradation(raw.degradation, p),
        background: super::BackgroundConfig {
            workers: p.count("background.workers", raw.background.workers, 4, 0..=1024),
            queue_size: p.count(
                "background.queue_size",
                raw.background.queue_size,
                1000,
                1..=1_000_000,
            ),
        },
    }
}

/// Whether `s` can be a metric label value: `[a-z0-9_-]+`, at most 64 bytes.
pub(crate) fn is_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}
