//! STUB (replaced by the config helper's version).
use crate::priority::Priority;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct Config {
    pub listener: ListenerConfig,
    pub observability: ObservabilityConfig,
    pub upstream: UpstreamConfig,
    pub admin: AdminConfig,
    pub concurrency: ConcurrencyConfig,
    pub classes: Vec<ClassConfig>,
    pub routes: Vec<RouteConfig>,
    pub health: HealthConfig,
    pub circuit_breaker: BreakerConfig,
    pub background: BackgroundConfig,
}
#[derive(Clone, Debug)]
pub struct ListenerConfig {
    pub addr: SocketAddr,
    pub workers: usize,
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub http2: bool,
}
#[derive(Clone, Debug)]
pub struct ObservabilityConfig {
    pub addr: Option<SocketAddr>,
    pub log_format: LogFormat,
    pub log_level: String,
}
#[derive(Clone, Copy, Debug)]
pub enum LogFormat {
    Text,
    Json,
}
#[derive(Clone, Debug)]
pub struct UpstreamConfig {
    pub addr: String,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub pool_idle_timeout: Duration,
    pub pool_max_idle_per_worker: usize,
    pub body_idle_timeout: Duration,
}
#[derive(Clone, Debug)]
pub struct AdminConfig {
    pub token: Option<Secret>,
}
#[derive(Clone)]
pub struct Secret(String);
impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}
impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}
#[derive(Clone, Debug)]
pub struct ConcurrencyConfig {
    pub enabled: bool,
}
#[derive(Clone, Debug)]
pub struct ClassConfig {
    pub name: String,
    pub max_concurrent: usize,
    pub min_concurrent: usize,
    pub adaptive: bool,
    pub queue_size: usize,
    pub queue_timeout: Duration,
}
#[derive(Clone, Debug)]
pub struct RouteConfig {
    pub name: String,
    pub methods: Vec<http::Method>,
    pub path: PathMatch,
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
    pub class: usize,
    pub priority: Priority,
    pub timeout: Duration,
    pub bypass: bool,
}
#[derive(Clone, Debug)]
pub enum PathMatch {
    Any,
    Prefix(String),
    Regex(regex::Regex),
}
#[derive(Clone, Debug)]
pub struct HealthConfig {
    pub path: String,
    pub interval: Duration,
}
#[derive(Clone, Debug)]
pub struct BreakerConfig {
    pub failure_threshold: u32,
}
#[derive(Clone, Debug)]
pub struct BackgroundConfig {
    pub workers: usize,
    pub queue_size: usize,
}
#[derive(Debug)]
pub struct ConfigError {
    pub origin: String,
    pub line: Option<usize>,
    pub path: String,
    pub message: String,
}
#[derive(Debug)]
pub struct ConfigErrors(pub Vec<ConfigError>);
impl std::fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for e in &self.0 {
            writeln!(f, "{}:{:?}: {}: {}", e.origin, e.line, e.path, e.message)?;
        }
        Ok(())
    }
}
impl std::error::Error for ConfigErrors {}
impl Config {
    pub fn load(path: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigErrors> {
        let src = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                origin: path.display().to_string(),
                line: None,
                path: String::new(),
                message: e.to_string(),
            }])
        })?;
        Self::from_toml_str(&src, &path.display().to_string(), env)
    }
    pub fn from_toml_str(
        _src: &str,
        _origin: &str,
        _env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigErrors> {
        let class = |n: &str, m| ClassConfig {
            name: n.into(),
            max_concurrent: m,
            min_concurrent: 1,
            adaptive: true,
            queue_size: 100,
            queue_timeout: Duration::from_secs(5),
        };
        Ok(Config {
            listener: ListenerConfig {
                addr: "127.0.0.1:0".parse().map_err(|_| ConfigErrors(vec![]))?,
                workers: 0,
                max_connections: 10000,
                header_read_timeout: Duration::from_secs(10),
                max_header_bytes: 65536,
                max_headers: 100,
                http2: true,
            },
            observability: ObservabilityConfig {
                addr: None,
                log_format: LogFormat::Text,
                log_level: "info".into(),
            },
            upstream: UpstreamConfig {
                addr: "127.0.0.1:8000".into(),
                connect_timeout: Duration::from_secs(1),
                request_timeout: Duration::from_secs(14),
                pool_idle_timeout: Duration::from_secs(90),
                pool_max_idle_per_worker: 128,
                body_idle_timeout: Duration::from_secs(30),
            },
            admin: AdminConfig { token: None },
            concurrency: ConcurrencyConfig { enabled: true },
            classes: vec![class("cache", 200), class("db", 100), class("http", 50)],
            routes: vec![RouteConfig {
                name: "default".into(),
                methods: vec![],
                path: PathMatch::Any,
                headers: vec![],
                class: 1,
                priority: Priority::Normal,
                timeout: Duration::from_secs(14),
                bypass: false,
            }],
            health: HealthConfig {
                path: "/health/ready".into(),
                interval: Duration::from_secs(10),
            },
            circuit_breaker: BreakerConfig {
                failure_threshold: 5,
            },
            background: BackgroundConfig {
                workers: 4,
                queue_size: 1000,
            },
        })
    }
}
