//! Route rules: matchers, class references, priorities and timeouts. The
//! default route is appended last so that classification always finds a match.

use std::collections::HashSet;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};
use regex::Regex;

use super::sections::MAX_TIMEOUT_MS;
use super::{is_label, Problems};
use crate::config::raw::{RawDefaultRoute, RawRoute};
use crate::config::{ClassConfig, PathMatch, RateLimitConfig, RouteConfig};
use crate::priority::Priority;

const DEFAULT_ROUTE: &str = "default";

pub(super) fn routes(
    raw: Vec<RawRoute>,
    default: RawDefaultRoute,
    classes: &[ClassConfig],
    request_timeout: Duration,
    p: &mut Problems<'_>,
) -> Vec<RouteConfig> {
    // Resolved first: rules without their own class or priority inherit these,
    // and a bad default is reported once, at [default_route], not per rule.
    let default_class = class_index(
        classes,
        default.class.as_deref().unwrap_or("db"),
        "default_route.class",
        p,
    );
    let default_priority = priority(
        default.priority.as_deref().unwrap_or("normal"),
        "default_route.priority",
        p,
    );
    let mut names = HashSet::new();
    let mut out = Vec::with_capacity(raw.len() + 1);

    for (i, r) in raw.into_iter().enumerate() {
        let at = |field: &str| format!("routes[{i}].{field}");
        let name = r.name.unwrap_or_default();
        if name.is_empty() {
            p.at(&format!("routes[{i}]"), "missing name");
        } else if !is_label(&name) {
            p.at(
                &at("name"),
                format!("{name:?} must match [a-z0-9_-]+ (at most 64 bytes): it is a metric label"),
            );
        } else if name == DEFAULT_ROUTE {
            p.at(&at("name"), "\"default\" is reserved for [default_route]");
        } else if !names.insert(name.clone()) {
            p.at(&at("name"), format!("duplicate route name {name:?}"));
        }
        let rate_limit = rate_limit(
            r.rate_limit_rps,
            r.rate_limit_burst,
            r.rate_limit_key.as_deref(),
            &at,
            p,
        );
        let methods = methods(&r.methods, &at("methods"), p);
        let bypass = r.bypass.unwrap_or(false);
        let fallback = r
            .fallback
            .and_then(|f| super::resilience::fallback(f, &methods, bypass, &at, p));
        out.push(RouteConfig {
            methods,
            path: path_match(
                r.path_prefix,
                r.path_regex,
                &at("path_prefix"),
                &at("path_regex"),
                p,
            ),
            headers: headers(r.headers, &at("headers"), p),
            class: match r.class.as_deref() {
                Some(c) => class_index(classes, c, &at("class"), p),
                None => default_class,
            },
            priority: match r.priority.as_deref() {
                Some(s) => priority(s, &at("priority"), p),
                None => default_priority,
            },
            timeout: timeout(r.timeout_ms, request_timeout, &at("timeout_ms"), p),
            bypass,
            rate_limit,
            fallback,
            name,
        });
    }

    out.push(RouteConfig {
        name: DEFAULT_ROUTE.to_owned(),
        methods: Vec::new(),
        path: PathMatch::Any,
        headers: Vec::new(),
        class: default_class,
        priority: default_priority,
        timeout: timeout(
            default.timeout_ms,
            request_timeout,
            "default_route.timeout_ms",
            p,
        ),
        bypass: false,
        rate_limit: None,
        fallback: None,
    });
    out
}

fn methods(raw: &[String], path: &str, p: &mut Problems<'_>) -> Vec<Method> {
    raw.iter()
        .enumerate()
        .filter_map(|(i, m)| {
            let ok = !m.is_empty() && m.bytes().all(|b| b.is_ascii_uppercase());
            match Method::from_bytes(m.as_bytes()) {
                Ok(method) if ok => Some(method),
                _ => {
                    p.at(
                        &format!("{path}[{i}]"),
                        format!("{m:?} is not an HTTP method (uppercase, such as GET or POST)"),
                    );
                    None
                }
            }
        })
        .collect()
}

fn path_match(
    prefix: Option<String>,
    regex: Option<String>,
    prefix_path: &str,
    regex_path: &str,
    p: &mut Problems<'_>,
) -> PathMatch {
    match (prefix, regex) {
        (Some(_), Some(_)) => {
            p.at(regex_path, "set path_prefix or path_regex, not both");
            PathMatch::Any
        }
        (Some(prefix), None) => {
            if !prefix.starts_with('/') {
                p.at(prefix_path, format!("{prefix:?} must start with '/'"));
            }
            PathMatch::Prefix(prefix)
        }
        (None, Some(re)) => match Regex::new(&re) {
            Ok(re) => PathMatch::Regex(re),
            Err(e) => {
                p.at(regex_path, format!("invalid regex: {}", one_line(&e)));
                PathMatch::Any
            }
        },
        (None, None) => PathMatch::Any,
    }
}

/// regex's syntax errors span several lines (pattern, caret, reason); keep the reason.
fn one_line(e: &regex::Error) -> String {
    let text = e.to_string();
    text.lines()
        .find_map(|l| l.trim().strip_prefix("error: "))
        .map(str::to_owned)
        .unwrap_or_else(|| text.lines().map(str::trim).collect::<Vec<_>>().join(" "))
}

fn headers(
    raw: std::collections::BTreeMap<String, String>,
    path: &str,
    p: &mut Problems<'_>,
) -> Vec<(HeaderName, HeaderValue)> {
    raw.into_iter()
        .filter_map(|(name, value)| {
            let at = format!("{path}.{name}");
            let n = HeaderName::from_bytes(name.as_bytes());
            let v = HeaderValue::from_str(&value);
            match (n, v) {
                (Ok(n), Ok(v)) => Some((n, v)),
                (Err(_), _) => {
                    p.at(&at, format!("{name:?} is not a valid header name"));
                    None
                }
                (_, Err(_)) => {
                    p.at(&at, format!("{value:?} is not a valid header value"));
                    None
                }
            }
        })
        .collect()
}

fn class_index(classes: &[ClassConfig], name: &str, path: &str, p: &mut Problems<'_>) -> usize {
    match classes.iter().position(|c| c.name == name) {
        Some(i) => i,
        None => {
            let known: Vec<&str> = classes.iter().map(|c| c.name.as_str()).collect();
            p.at(
                path,
                format!(
                    "unknown class {name:?}; defined classes: {}",
                    known.join(", ")
                ),
            );
            0
        }
    }
}

fn priority(s: &str, path: &str, p: &mut Problems<'_>) -> Priority {
    s.parse().unwrap_or_else(|e| {
        p.at(path, format!("{e}"));
        Priority::Normal
    })
}

fn timeout(ms: Option<u64>, inherited: Duration, path: &str, p: &mut Problems<'_>) -> Duration {
    match ms {
        Some(ms) => p.millis(path, Some(ms), ms, 1..=MAX_TIMEOUT_MS),
        None => inherited,
    }
}

/// `rate_limit_rps` turns a route's token bucket on; burst defaults to one second's worth.
fn rate_limit(
    rps: Option<f64>,
    burst: Option<u32>,
    key: Option<&str>,
    at: &dyn Fn(&str) -> String,
    p: &mut Problems<'_>,
) -> Option<RateLimitConfig> {
    let Some(rps) = rps else {
        if burst.is_some() {
            p.at(&at("rate_limit_burst"), "needs rate_limit_rps");
        }
        if key.is_some() {
            p.at(&at("rate_limit_key"), "needs rate_limit_rps");
        }
        return None;
    };
    if !(rps.is_finite() && rps > 0.0 && rps <= 1_000_000.0) {
        p.at(
            &at("rate_limit_rps"),
            format!("{rps} is out of range (0, 1000000]"),
        );
        return None;
    }
    let burst = burst.unwrap_or_else(|| rps.ceil().max(1.0) as u32);
    if burst == 0 {
        p.at(&at("rate_limit_burst"), "must be at least 1");
    }
    Some(RateLimitConfig {
        per_second: rps,
        burst: burst.max(1),
        key: super::sections::key_source(key, &at("rate_limit_key"), p),
    })
}
