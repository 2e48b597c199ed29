//! sluice's own HTTP endpoints.
//!
//! On the main listener (and the observability one): the JSON endpoints that take over
//! the app's `/api/v1/performance/concurrency*`. On the observability listener only:
//! `/metrics` (Prometheus text), `/healthz` (sluice itself) and `/readyz` (may the pod
//! take traffic). The admin endpoint needs `Authorization: Bearer <token>`.

mod report;

use crate::app::Shared;
use crate::upstream::health::Verdict;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;

pub const CONCURRENCY_PATH: &str = "/api/v1/performance/concurrency";
pub const HEALTH_PATH: &str = "/api/v1/performance/concurrency/health";
pub const RESET_PATH: &str = "/api/v1/admin/performance/concurrency/reset";

type Reply = Response<Full<Bytes>>;

/// True for the paths sluice answers itself on the main listener.
pub fn is_own_path(path: &str) -> bool {
    path == CONCURRENCY_PATH || path == HEALTH_PATH || path == RESET_PATH
}

/// Answers one of the [`is_own_path`] endpoints.
pub async fn handle<B>(shared: &Shared, req: Request<B>) -> Reply {
    let path = req.uri().path();
    if !shared.config.concurrency.enabled {
        return json(
            StatusCode::SERVICE_UNAVAILABLE,
            &serde_json::json!({
                "error": "concurrency_disabled",
                "message": "concurrency control is disabled (CONCURRENCY_ENABLED=false)",
            }),
        );
    }
    match (path, req.method()) {
        (CONCURRENCY_PATH, &Method::GET | &Method::HEAD) => {
            json(StatusCode::OK, &report::concurrency(shared))
        }
        (HEALTH_PATH, &Method::GET | &Method::HEAD) => {
            let (healthy, body) = report::health(shared);
            let status = if healthy {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            json(status, &body)
        }
        (RESET_PATH, &Method::POST) => reset(shared, &req),
        (RESET_PATH, _) => method_not_allowed("POST"),
        _ => method_not_allowed("GET, HEAD"),
    }
}

/// Answers a request on the observability listener.
pub async fn handle_observability<B>(shared: &Shared, req: Request<B>) -> Reply {
    match req.uri().path() {
        "/metrics" => match shared.metrics.render() {
            Ok(text) => {
                let mut r = Response::new(Full::new(Bytes::from(text)));
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                r
            }
            Err(e) => json(
                StatusCode::INTERNAL_SERVER_ERROR,
                &serde_json::json!({"error": "metrics_encoding", "message": e.to_string()}),
            ),
        },
        "/healthz" => json(StatusCode::OK, &serde_json::json!({"status": "ok"})),
        "/readyz" => readyz(shared),
        p if is_own_path(p) => handle(shared, req).await,
        _ => json(
            StatusCode::NOT_FOUND,
            &serde_json::json!({"error": "not_found", "message": "no such endpoint"}),
        ),
    }
}

fn readyz(shared: &Shared) -> Reply {
    let mut reasons = Vec::new();
    if shared.is_draining() {
        reasons.push("draining".to_string());
    }
    match shared.health.verdict() {
        Verdict::Up => {}
        Verdict::Unknown => reasons.push("upstream not probed yet".to_string()),
        Verdict::Down => reasons.push(format!(
            "upstream down: {}",
            shared.health.detail().last_error.unwrap_or_default()
        )),
    }
    let ready = reasons.is_empty();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json(
        status,
        &serde_json::json!({"ready": ready, "reasons": reasons}),
    )
}

fn reset<B>(shared: &Shared, req: &Request<B>) -> Reply {
    let Some(token) = shared.config.admin.token.as_ref() else {
        // No token configured: the admin API does not exist.
        let why = shared
            .config
            .admin
            .disabled
            .as_deref()
            .unwrap_or("no token");
        return json(
            StatusCode::NOT_FOUND,
            &serde_json::json!({"error": "not_found", "message": format!("admin API disabled: {why}")}),
        );
    };
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
    let authorized = presented.is_some_and(|p| constant_time_eq(p, token.expose().as_bytes()));
    if !authorized {
        let mut r = json(
            StatusCode::UNAUTHORIZED,
            &serde_json::json!({"error": "unauthorized", "message": "a valid admin bearer token is required"}),
        );
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"sluice\""),
        );
        return r;
    }
    shared.metrics.reset();
    shared.admission.reset();
    tracing::info!("concurrency metrics reset through the admin API");
    json(
        StatusCode::OK,
        &serde_json::json!({"message": "Concurrency metrics reset successfully"}),
    )
}

/// Compares in time that depends only on the lengths, not on where bytes differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn method_not_allowed(allow: &'static str) -> Reply {
    let mut r = json(
        StatusCode::METHOD_NOT_ALLOWED,
        &serde_json::json!({"error": "method_not_allowed", "message": format!("use {allow}")}),
    );
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    r
}

fn json(status: StatusCode, body: &serde_json::Value) -> Reply {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_compares_exactly() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
    }
}
