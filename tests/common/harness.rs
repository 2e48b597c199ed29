//! Starts a whole sluice in-process for one test, configured from TOML text.

use sluice::app::Running;
use sluice::config::Config;
use std::net::SocketAddr;

/// The configuration every end-to-end test starts from: loopback listeners on port 0,
/// two workers, fast timeouts, and routes for the test upstream's behaviours.
pub fn base_config(upstream: SocketAddr) -> String {
    format!(
        r#"
[listener]
addr = "127.0.0.1:0"
workers = 2
header_read_timeout_ms = 400

[observability]
addr = "127.0.0.1:0"

[upstream]
addr = "{upstream}"
connect_timeout_ms = 500
request_timeout_ms = 3000

[health]
path = ""

[[routes]]
name = "hang"
path_prefix = "/hang"
class = "db"
priority = "low"
timeout_ms = 300

[[routes]]
name = "login"
methods = ["POST"]
path_prefix = "/api/v1/auth/login"
class = "db"
priority = "critical"

[[routes]]
name = "ws"
path_prefix = "/ws"
class = "http"
priority = "normal"

[default_route]
class = "db"
priority = "normal"
"#
    )
}

/// Replaces `key = ...` inside `[section]` of `toml` (or appends it to the section).
pub fn set(toml: &str, section: &str, key: &str, value: &str) -> String {
    let header = format!("[{section}]");
    let mut out = Vec::new();
    let mut in_section = false;
    let mut done = false;
    for line in toml.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('[') {
            if in_section && !done {
                out.push(format!("{key} = {value}"));
                done = true;
            }
            in_section = trimmed == header;
        }
        if in_section && trimmed.split('=').next().map(str::trim) == Some(key) {
            out.push(format!("{key} = {value}"));
            done = true;
            continue;
        }
        out.push(line.to_string());
    }
    if in_section && !done {
        out.push(format!("{key} = {value}"));
        done = true;
    }
    if !done {
        out.push(header);
        out.push(format!("{key} = {value}"));
    }
    out.join("\n")
}

/// Parses `toml` (with `env` as the environment) and starts sluice.
pub async fn start_with_env(toml: &str, env: &[(&str, &str)]) -> Running {
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let lookup = move |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let config = Config::from_toml_str(toml, "test.toml", &lookup)
        .unwrap_or_else(|e| panic!("test config invalid:\n{e}"));
    sluice::app::start(config)
        .await
        .unwrap_or_else(|e| panic!("sluice did not start: {e}"))
}

pub async fn start(toml: &str) -> Running {
    start_with_env(toml, &[]).await
}

/// `GET` on the observability listener; returns (status, body text).
pub async fn observe(running: &Running, path: &str) -> (u16, String) {
    let addr = running.observability_addr.expect("observability listener");
    let (status, _, body) = super::Http1Client::get(addr, path, &[]).await;
    (status.as_u16(), String::from_utf8_lossy(&body).into_owned())
}

/// Reads one sample `name{labels}` from Prometheus text; labels given as a substring.
pub fn sample(text: &str, name: &str, labels: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| l.starts_with(name) && l.contains(labels))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// `GET` a JSON endpoint of sluice's and parse the body (panics if it is not JSON).
pub async fn json(addr: std::net::SocketAddr, path: &str) -> serde_json::Value {
    let (_, _, body) = super::Http1Client::get(addr, path, &[]).await;
    serde_json::from_slice(&body).unwrap_or_else(|e| {
        panic!(
            "{path} is not JSON ({e}): {}",
            String::from_utf8_lossy(&body)
        )
    })
}

/// The `X-Sluice-Reason` of a response, or `""`.
pub fn reason(h: &http::HeaderMap) -> &str {
    h.get("x-sluice-reason")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}
