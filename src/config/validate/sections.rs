//! Validation of the sections other than routes. Defaults live here, next to the
//! range each value is checked against; `config.toml` documents the same numbers.

use std::collections::BTreeMap;
use std::net::{Ipv6Addr, SocketAddr};

use super::{is_label, Problems};
use crate::config::raw::{RawAdmin, RawClass, RawListener, RawObservability, RawUpstream};
use crate::config::{
    AdminConfig, ClassConfig, KeySource, ListenerConfig, LogFormat, ObservabilityConfig, Secret,
    UpstreamConfig,
};

const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 8080);

/// Longest route or upstream timeout accepted, in ms. The app's own WriteTimeout
/// (15 s) makes 14000 the useful ceiling, but longer is allowed for other apps.
pub(super) const MAX_TIMEOUT_MS: u64 = 300_000;

pub(super) fn listener(raw: RawListener, p: &mut Problems<'_>) -> ListenerConfig {
    ListenerConfig {
        addr: socket_addr(
            p,
            "listener.addr",
            raw.addr.as_deref().unwrap_or("0.0.0.0:8080"),
        )
        .unwrap_or(DEFAULT_LISTEN),
        workers: p.count("listener.workers", raw.workers, 0, 0..=1024),
        max_connections: p.count(
            "listener.max_connections",
            raw.max_connections,
            10_000,
            1..=1_000_000,
        ),
        header_read_timeout: p.millis(
            "listener.header_read_timeout_ms",
            raw.header_read_timeout_ms,
            5_000,
            1..=60_000,
        ),
        idle_timeout: p.millis(
            "listener.idle_timeout_ms",
            raw.idle_timeout_ms,
            120_000,
            1..=3_600_000,
        ),
        max_header_bytes: p.count(
            "listener.max_header_bytes",
            raw.max_header_bytes,
            65_536,
            8_192..=1_048_576,
        ),
        max_headers: p.count("listener.max_headers", raw.max_headers, 100, 1..=1_000),
        http2: raw.http2.unwrap_or(true),
    }
}

pub(super) fn observability(raw: RawObservability, p: &mut Problems<'_>) -> ObservabilityConfig {
    let addr = match raw.addr.as_deref().unwrap_or("0.0.0.0:9090") {
        "" => None,
        s => socket_addr(p, "observability.addr", s),
    };
    let log_format = match raw.log_format.as_deref().unwrap_or("text") {
        "text" => LogFormat::Text,
        "json" => LogFormat::Json,
        other => {
            p.at(
                "observability.log_format",
                format!("unknown log format {other:?}: expected \"text\" or \"json\""),
            );
            LogFormat::Text
        }
    };
    let log_level = raw.log_level.unwrap_or_else(|| "info".to_owned());
    if let Err(e) = tracing_subscriber::EnvFilter::try_new(&log_level) {
        p.at("observability.log_level", format!("invalid filter: {e}"));
    }
    ObservabilityConfig {
        addr,
        log_format,
        log_level,
    }
}

pub(super) fn upstream(raw: RawUpstream, p: &mut Problems<'_>) -> UpstreamConfig {
    let addr = raw.addr.unwrap_or_else(|| "127.0.0.1:8000".to_owned());
    if let Err(why) = check_host_port(&addr) {
        p.at("upstream.addr", format!("{addr:?} is not host:port: {why}"));
    }
    UpstreamConfig {
        addr,
        connect_timeout: p.millis(
            "upstream.connect_timeout_ms",
            raw.connect_timeout_ms,
            1_000,
            1..=60_000,
        ),
        request_timeout: p.millis(
            "upstream.request_timeout_ms",
            raw.request_timeout_ms,
            14_000,
            1..=MAX_TIMEOUT_MS,
        ),
        pool_idle_timeout: p.millis(
            "upstream.pool_idle_timeout_ms",
            raw.pool_idle_timeout_ms,
            90_000,
            1..=119_999,
        ),
        pool_max_idle_per_worker: p.count(
            "upstream.pool_max_idle_per_worker",
            raw.pool_max_idle_per_worker,
            256,
            0..=10_000,
        ),
        body_idle_timeout: p.millis(
            "upstream.body_idle_timeout_ms",
            raw.body_idle_timeout_ms,
            30_000,
            1..=3_600_000,
        ),
    }
}

pub(super) fn admin(
    raw: RawAdmin,
    env: &dyn Fn(&str) -> Option<String>,
    p: &mut Problems<'_>,
) -> AdminConfig {
    let mut disabled = None;
    let token = match (raw.token_env, raw.token_file) {
        (Some(_), Some(_)) => {
            p.at("admin.token_file", "set token_env or token_file, not both");
            None
        }
        // An unset variable means "no token": the admin API is off (404), which fails
        // closed, and sluice still starts; the app logs why at start-up.
        (Some(var), None) => match env(&var).map(|t| t.trim().to_owned()) {
            Some(t) if !t.is_empty() => Some(Secret(t)),
            _ => {
                disabled = Some(format!("environment variable {var} is unset or empty"));
                None
            }
        },
        (None, Some(file)) => match std::fs::read_to_string(&file) {
            Ok(t) if !t.trim().is_empty() => Some(Secret(t.trim().to_owned())),
            Ok(_) => {
                p.at("admin.token_file", format!("{file} is empty"));
                None
            }
            Err(e) => {
                p.at("admin.token_file", format!("cannot read {file}: {e}"));
                None
            }
        },
        (None, None) => {
            disabled = Some("no admin.token_env or admin.token_file configured".to_owned());
            None
        }
    };
    AdminConfig { token, disabled }
}

/// The seed app's pool sizes for its three classes; 100 for any other class.
fn default_max(class: &str) -> usize {
    match class {
        "http" => 50,
        "cache" => 200,
        _ => 100,
    }
}

pub(super) fn classes(raw: BTreeMap<String, RawClass>, p: &mut Problems<'_>) -> Vec<ClassConfig> {
    raw.into_iter()
        .map(|(name, c)| {
            let at = |field: &str| format!("classes.{name}.{field}");
            if !is_label(&name) {
                p.at(
                    &format!("classes.{name}"),
                    "class names must match [a-z0-9_-]+ (at most 64 bytes): they are metric labels",
                );
            }
            let max_path = at("max_concurrent");
            let min_path = at("min_concurrent");
            let max = p.count(&max_path, c.max_concurrent, default_max(&name), 1..=100_000);
            let min = c.min_concurrent.unwrap_or((max / 10).max(1));
            if min == 0 {
                p.at(&min_path, "must be at least 1");
            } else if min > max {
                p.at_any(
                    &[&min_path, &max_path],
                    format!("min_concurrent ({min}) must not exceed max_concurrent ({max})"),
                );
            }
            ClassConfig {
                max_concurrent: max,
                min_concurrent: min,
                adaptive: c.adaptive.unwrap_or(true),
                queue_size: p.count(
                    &at("queue_size"),
                    c.queue_size,
                    max.saturating_mul(2),
                    0..=1_000_000,
                ),
                queue_timeout: p.millis(
                    &at("queue_timeout_ms"),
                    c.queue_timeout_ms,
                    5_000,
                    1..=MAX_TIMEOUT_MS,
                ),
                codel_target: p.millis(
                    &at("codel_target_ms"),
                    c.codel_target_ms,
                    50,
                    1..=MAX_TIMEOUT_MS,
                ),
                codel_interval: p.millis(
                    &at("codel_interval_ms"),
                    c.codel_interval_ms,
                    100,
                    1..=MAX_TIMEOUT_MS,
                ),
                fair_key: key_source(c.fair_key.as_deref(), &at("fair_key"), p),
                name,
            }
        })
        .collect()
}

fn socket_addr(p: &mut Problems<'_>, path: &str, s: &str) -> Option<SocketAddr> {
    match s.parse() {
        Ok(a) => Some(a),
        Err(_) => {
            p.at(
                path,
                format!("{s:?} is not ip:port (such as 0.0.0.0:8080 or [::]:8080)"),
            );
            None
        }
    }
}

/// `host:port` or `[v6]:port`, with a non-zero port and a plausible host name.
fn check_host_port(s: &str) -> Result<(), &'static str> {
    let (host, port) = s.rsplit_once(':').ok_or("missing :port")?;
    match port.parse::<u16>() {
        Ok(0) | Err(_) => return Err("port must be 1-65535"),
        Ok(_) => {}
    }
    if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return v6
            .parse::<Ipv6Addr>()
            .map(|_| ())
            .map_err(|_| "invalid IPv6 address");
    }
    let plausible = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_');
    if plausible {
        Ok(())
    } else {
        Err("invalid host")
    }
}

/// `""` or absent: no key; `"client_ip"`; `"header:NAME"`.
pub(super) fn key_source(raw: Option<&str>, path: &str, p: &mut Problems<'_>) -> KeySource {
    match raw.map(str::trim) {
        None | Some("") => KeySource::None,
        Some("client_ip") => KeySource::ClientIp,
        Some(other) => match other.strip_prefix("header:") {
            Some(name) => match http::HeaderName::from_bytes(name.trim().as_bytes()) {
                Ok(h) => KeySource::Header(h),
                Err(_) => {
                    p.at(path, format!("{name:?} is not a valid header name"));
                    KeySource::None
                }
            },
            None => {
                p.at(
                    path,
                    format!("{other:?}: expected \"client_ip\", \"header:NAME\" or \"\""),
                );
                KeySource::None
            }
        },
    }
}
