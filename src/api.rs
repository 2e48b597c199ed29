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
pub const DEGRADATION_PATH: &str = "/api/v1/admin/performance/degradation";
pub const BREAKER_RESET_PATH: &str = "/api/v1/admin/performance/circuit-breaker/reset";

type Reply = Response<Full<Bytes>>;

/// True for the paths sluice answers itself on the main listener.
pub fn is_own_path(path: &str) -> bool {
    matches!(
        path,
        CONCURRENCY_PATH | HEALTH_PATH | RESET_PATH | DEGRADATION_PATH | BREAKER_RESET_PATH
    )
}

/// Answers one of the [`is_own_path`] endpoints.
pub async fn handle<B>(shared: &Shared, req: Request<B>) -> Reply
where
    B: http_body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let path = req.uri().path();
    // The app's own three endpoints answer 503 when concurrency control is off, as in the
    // app; the breaker and degradation endpoints keep working (those features run anyway).
    let app_endpoint = matches!(path, CONCURRENCY_PATH | HEALTH_PATH | RESET_PATH);
    if app_endpoint && !shared.config.concurrency.enabled {
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
        (RESET_PATH, &Method::POST) => match authorize(shared, &req) {
            Some(refusal) => refusal,
            None => reset(shared),
        },
        (DEGRADATION_PATH, &Method::GET | &Method::POST) => match authorize(shared, &req) {
            Some(refusal) => refusal,
            None => degradation(shared, req).await,
        },
        (BREAKER_RESET_PATH, &Method::POST) => match authorize(shared, &req) {
            Some(refusal) => refusal,
            None => reset_breakers(shared),
        },
        (RESET_PATH | BREAKER_RESET_PATH, _) => method_not_allowed("POST"),
        (DEGRADATION_PATH, _) => method_not_allowed("GET, POST"),
        _ => method_not_allowed("GET, HEAD"),
    }
}

/// Answers a request on the observability listener.
pub async fn handle_observability<B>(shared: &Shared, req: Request<B>) -> Reply
where
    B: http_body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
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
    // With `ready_requires_upstream = false` the pod stays in the Service while the app
    // is down (sluice then answers with its own refusals).
    if shared.config.health.ready_requires_upstream {
        match shared.health.verdict() {
            Verdict::Up => {}
            Verdict::Unknown => reasons.push("upstream not probed yet".to_string()),
            Verdict::Down => reasons.push(format!(
                "upstream down: {}",
                shared.health.detail().last_error.unwrap_or_default()
            )),
        }
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

/// Admin endpoints need the bearer token; without a configured token they do not exist.
/// `Some(refusal)` unless the request carries the admin token.
fn authorize<B>(shared: &Shared, req: &Request<B>) -> Option<Reply> {
    let Some(token) = shared.config.admin.token.as_ref() else {
        let why = shared
            .config
            .admin
            .disabled
            .as_deref()
            .unwrap_or("no token");
        return Some(json(
            StatusCode::NOT_FOUND,
            &serde_json::json!({"error": "not_found", "message": format!("admin API disabled: {why}")}),
        ));
    };
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
    if presented.is_some_and(|p| constant_time_eq(p, token.expose().as_bytes())) {
        return None;
    }
    let mut r = json(
        StatusCode::UNAUTHORIZED,
        &serde_json::json!({"error": "unauthorized", "message": "a valid admin bearer token is required"}),
    );
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"sluice\""),
    );
    Some(r)
}

fn reset(shared: &Shared) -> Reply {
    shared.metrics.reset();
    shared.admission.reset();
    tracing::info!("concurrency metrics reset through the admin API");
    json(
        StatusCode::OK,
        &serde_json::json!({"message": "Concurrency metrics reset successfully"}),
    )
}

fn reset_breakers(shared: &Shared) -> Reply {
    let Some(breakers) = &shared.breakers else {
        return json(
            StatusCode::CONFLICT,
            &serde_json::json!({"error": "circuit_breaker_disabled", "message": "circuit_breaker.enabled is false"}),
        );
    };
    let closed = breakers.reset(tokio::time::Instant::now());
    tracing::warn!(closed, "circuit breakers reset through the admin API");
    json(
        StatusCode::OK,
        &serde_json::json!({"message": "Circuit breakers closed", "closed": closed}),
    )
}

/// Largest admin request body read.
const MAX_ADMIN_BODY: usize = 4096;

/// `GET`: the current mode and state. `POST` with `?mode=` or `{"mode": …}`: sets the
/// override (`auto`, `force_on`, `force_off`).
async fn degradation<B>(shared: &Shared, req: Request<B>) -> Reply
where
    B: http_body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    use crate::degrade::Mode;
    let bad = |message: String| {
        json(
            StatusCode::BAD_REQUEST,
            &serde_json::json!({"error": "bad_request", "message": message}),
        )
    };
    if req.method() == Method::POST {
        let from_query = req.uri().query().and_then(|q| {
            q.split('&')
                .find_map(|kv| kv.strip_prefix("mode="))
                .map(str::to_owned)
        });
        let mode = match from_query {
            Some(m) => m,
            None => {
                let body = http_body_util::Limited::new(req.into_body(), MAX_ADMIN_BODY);
                let bytes = match http_body_util::BodyExt::collect(body).await {
                    Ok(c) => c.to_bytes(),
                    Err(_) => {
                        return bad(format!(
                            "body missing, unreadable or over {MAX_ADMIN_BODY} bytes"
                        ))
                    }
                };
                #[derive(serde::Deserialize)]
                struct Body {
                    mode: String,
                }
                match serde_json::from_slice::<Body>(&bytes) {
                    Ok(b) => b.mode,
                    Err(e) => {
                        return bad(format!(
                            "expected ?mode=… or a JSON body {{\"mode\": \"auto\"|\"force_on\"|\"force_off\"}}: {e}"
                        ))
                    }
                }
            }
        };
        match mode.parse::<Mode>() {
            Ok(m) => {
                shared.degradation.set_mode(m, tokio::time::Instant::now());
            }
            Err(e) => return bad(e.to_string()),
        }
    }
    let snap = shared.metrics.requests.snapshot();
    json(StatusCode::OK, &report::degradation(shared, &snap))
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
