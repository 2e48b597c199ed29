//! Environment overrides, applied to the raw file before validation so that an
//! env-derived value is checked exactly like a written one.
//!
//! The variables are the seed app's (`MAX_CONCURRENT_DB_OPS`, ...). An empty value
//! counts as unset. Each applied variable is recorded against the key path it set,
//! so a later validation error on that path names the variable instead of a line.

use std::collections::HashMap;

use super::raw::RawConfig;
use super::ConfigError;

/// Key path -> name of the variable that set it.
pub(crate) type EnvSources = HashMap<String, String>;

/// The class-sized variables: (class name, suffix of `MAX_CONCURRENT_*_OPS` and
/// `WORKER_POOL_SIZE_*`).
const CLASS_VARS: [(&str, &str); 3] = [("db", "DB"), ("http", "HTTP"), ("cache", "CACHE")];

/// Applies every override present in `env` to `raw`. Unparseable values and
/// overrides of classes the file does not define are pushed to `errors`.
pub(crate) fn apply(
    raw: &mut RawConfig,
    env: &dyn Fn(&str) -> Option<String>,
    sources: &mut EnvSources,
    errors: &mut Vec<ConfigError>,
) {
    let mut ov = Overrides {
        env,
        sources,
        errors,
    };

    if let Some(v) = ov.get("CONCURRENCY_ENABLED", "concurrency.enabled", parse_bool) {
        raw.concurrency.enabled = Some(v);
    }

    for (class, suffix) in CLASS_VARS {
        let max_var = format!("MAX_CONCURRENT_{suffix}_OPS");
        let min_var = format!("WORKER_POOL_SIZE_{suffix}");
        let max_path = format!("classes.{class}.max_concurrent");
        let min_path = format!("classes.{class}.min_concurrent");
        let max = ov.get(&max_var, &max_path, parse_usize);
        let min = ov.get(&min_var, &min_path, parse_usize);
        if max.is_none() && min.is_none() {
            continue;
        }
        let entry = raw.classes.as_mut().and_then(|c| c.get_mut(class));
        match entry {
            Some(c) => {
                if max.is_some() {
                    c.max_concurrent = max;
                }
                if min.is_some() {
                    c.min_concurrent = min;
                }
            }
            None => {
                for (var, path, set) in [(&max_var, &max_path, max), (&min_var, &min_path, min)] {
                    if set.is_some() {
                        ov.error(
                            var,
                            path,
                            format!("the config defines no class named {class:?}"),
                        );
                    }
                }
            }
        }
    }

    if let Some(v) = ov.get("BACKGROUND_WORKER_COUNT", "background.workers", parse_usize) {
        raw.background.workers = Some(v);
    }
    if let Some(v) = ov.get(
        "BACKGROUND_QUEUE_SIZE",
        "background.queue_size",
        parse_usize,
    ) {
        raw.background.queue_size = Some(v);
    }
    if let Some(v) = ov.get(
        "CIRCUIT_BREAKER_THRESHOLD",
        "circuit_breaker.failure_threshold",
        |s| {
            s.parse::<u32>()
                .map_err(|_| "expected a whole number".to_owned())
        },
    ) {
        raw.circuit_breaker.failure_threshold = Some(v);
    }
    // Routes without their own timeout_ms inherit the upstream's, so setting the
    // upstream's is enough to reach them.
    if let Some(v) = ov.get(
        "REQUEST_TIMEOUT_SECONDS",
        "upstream.request_timeout_ms",
        parse_seconds_as_ms,
    ) {
        raw.upstream.request_timeout_ms = Some(v);
    }
    if let Some(v) = ov.get(
        "HEALTH_CHECK_INTERVAL",
        "health.interval_ms",
        parse_go_duration_ms,
    ) {
        raw.health.interval_ms = Some(v);
    }
}

struct Overrides<'a> {
    env: &'a dyn Fn(&str) -> Option<String>,
    sources: &'a mut EnvSources,
    errors: &'a mut Vec<ConfigError>,
}

impl Overrides<'_> {
    /// Reads `var`; on a good value records it as the source of `path`.
    fn get<T>(
        &mut self,
        var: &str,
        path: &str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Option<T> {
        let value = (self.env)(var)?;
        let value = value.trim();
        if value.is_empty() {
            return None;
        }
        match parse(value) {
            Ok(v) => {
                self.sources.insert(path.to_owned(), var.to_owned());
                Some(v)
            }
            Err(why) => {
                self.error(var, path, format!("invalid value {value:?}: {why}"));
                None
            }
        }
    }

    fn error(&mut self, var: &str, path: &str, message: String) {
        self.errors.push(ConfigError {
            origin: format!("env {var}"),
            line: None,
            path: path.to_owned(),
            message,
        });
    }
}

/// Go's `strconv.ParseBool` spellings, which the seed app accepted.
fn parse_bool(s: &str) -> Result<bool, String> {
    match s {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err("expected true, false, 1 or 0".to_owned()),
    }
}

fn parse_usize(s: &str) -> Result<usize, String> {
    s.parse()
        .map_err(|_| "expected a non-negative whole number".to_owned())
}

fn parse_seconds_as_ms(s: &str) -> Result<u64, String> {
    s.parse::<u64>()
        .ok()
        .and_then(|secs| secs.checked_mul(1000))
        .ok_or_else(|| "expected a whole number of seconds".to_owned())
}

/// A Go `time.Duration` string ("30s", "500ms", "1m30s", "1.5h") or a bare
/// whole number of seconds, in milliseconds (fractions of a millisecond dropped).
pub(crate) fn parse_go_duration_ms(s: &str) -> Result<u64, String> {
    const HINT: &str = "expected a duration such as 30s, 500ms, 1m30s, or whole seconds";
    if s.is_empty() {
        return Err(HINT.to_owned());
    }
    if let Ok(secs) = s.parse::<u64>() {
        return secs.checked_mul(1000).ok_or_else(|| HINT.to_owned());
    }
    // Work in microseconds so that "1.5ms" and "250us" add up exactly.
    let mut total_us: u128 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| HINT.to_owned())?;
        let (num, tail) = rest.split_at(num_len);
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let unit_us: u128 = match unit {
            "us" | "µs" => 1,
            "ms" => 1_000,
            "s" => 1_000_000,
            "m" => 60_000_000,
            "h" => 3_600_000_000,
            _ => return Err(HINT.to_owned()),
        };
        let (whole, frac) = num.split_once('.').unwrap_or((num, ""));
        if whole.is_empty() && frac.is_empty() {
            return Err(HINT.to_owned());
        }
        let whole: u128 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| HINT.to_owned())?
        };
        let mut part = whole.checked_mul(unit_us).ok_or_else(|| HINT.to_owned())?;
        let mut scale = unit_us;
        for digit in frac.chars() {
            let d = u128::from(digit.to_digit(10).ok_or_else(|| HINT.to_owned())?);
            scale /= 10;
            part += d * scale;
        }
        total_us = total_us.checked_add(part).ok_or_else(|| HINT.to_owned())?;
        rest = tail;
    }
    u64::try_from(total_us / 1000).map_err(|_| HINT.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        let ok = |s: &str| parse_go_duration_ms(s).unwrap();
        assert_eq!(ok("30"), 30_000);
        assert_eq!(ok("30s"), 30_000);
        assert_eq!(ok("500ms"), 500);
        assert_eq!(ok("1m"), 60_000);
        assert_eq!(ok("1m30s"), 90_000);
        assert_eq!(ok("1.5h"), 5_400_000);
        assert_eq!(ok("2h0m5s"), 7_205_000);
        assert_eq!(ok("1500us"), 1);
        for bad in [
            "",
            "s",
            "10x",
            "1.2.3s",
            "-5s",
            "5 s",
            ".s",
            "99999999999999999999h",
        ] {
            assert!(
                parse_go_duration_ms(bad).is_err(),
                "{bad:?} should be rejected"
            );
        }
    }

    #[test]
    fn bools_follow_go() {
        assert_eq!(parse_bool("1"), Ok(true));
        assert_eq!(parse_bool("false"), Ok(false));
        assert!(parse_bool("yes").is_err());
    }
}
