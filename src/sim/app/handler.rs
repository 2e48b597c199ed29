//! One request to the simulated app: control endpoints first, then the mode decides.

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use tokio::sync::Notify;

use super::gate::Refused;
use super::{spread_service, ControlUpdate, Mode, Shared};

/// Largest request body read (and discarded) by the app; larger bodies are cut off.
const MAX_BODY: usize = 1 << 20;

/// The path that answers at once without taking capacity.
const READY_PATH: &str = "/health/ready";

pub(super) async fn handle(
    shared: Arc<Shared>,
    reset: Arc<Notify>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    match path.as_str() {
        "/_control" if method == Method::POST => return Ok(control(&shared, req).await),
        "/_stats" if method == Method::GET => {
            let body = serde_json::to_vec(&shared.stats()).unwrap_or_default();
            return Ok(json(StatusCode::OK, Bytes::from(body)));
        }
        "/_control" | "/_stats" => {
            return Ok(json(
                StatusCode::METHOD_NOT_ALLOWED,
                Bytes::from_static(br#"{"error":"method not allowed"}"#),
            ))
        }
        _ => {}
    }
    // Read the body like an app would (and so keep-alive stays usable); size is capped.
    let _ = Limited::new(req.into_body(), MAX_BODY).collect().await;
    shared.received.fetch_add(1, Ordering::SeqCst);
    let ready_probe = path == READY_PATH;
    if ready_probe {
        shared.health_checks.fetch_add(1, Ordering::SeqCst);
    }
    let settings = shared.settings();
    let status = match settings.mode {
        Mode::Reset => {
            shared.resets.fetch_add(1, Ordering::SeqCst);
            reset.notify_one();
            // The connection task drops this future while resetting the socket.
            return std::future::pending().await;
        }
        Mode::Hang => return std::future::pending().await,
        Mode::Fail500 if ready_probe => StatusCode::SERVICE_UNAVAILABLE,
        Mode::Fail500 => StatusCode::INTERNAL_SERVER_ERROR,
        Mode::Fast => StatusCode::OK,
        Mode::Normal if ready_probe => StatusCode::OK,
        Mode::Normal => match shared.gate.admit(settings.queue_limit).await {
            Ok(slot) => {
                // Read again: the service time may have changed while this one waited.
                let settings = shared.settings();
                let n = shared.draws.fetch_add(1, Ordering::Relaxed);
                let service_time = spread_service(settings.service_time, settings.spread, n);
                tokio::time::sleep(service_time).await;
                drop(slot);
                StatusCode::OK
            }
            Err(Refused::QueueFull) => StatusCode::SERVICE_UNAVAILABLE,
        },
    };
    shared.count_served(status.as_u16());
    let body: &'static [u8] = match status {
        StatusCode::OK => br#"{"ok":true}"#,
        StatusCode::INTERNAL_SERVER_ERROR => br#"{"error":"simulated failure"}"#,
        _ => br#"{"error":"unavailable"}"#,
    };
    Ok(json(status, Bytes::from_static(body)))
}

/// `POST /_control`: apply a [`ControlUpdate`] and answer with the resulting stats.
async fn control(shared: &Shared, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let bytes = match Limited::new(req.into_body(), 64 * 1024).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            return json(
                StatusCode::BAD_REQUEST,
                Bytes::from_static(br#"{"error":"unreadable body"}"#),
            )
        }
    };
    let parsed = serde_json::from_slice::<ControlUpdate>(&bytes)
        .map_err(|e| e.to_string())
        .and_then(|update| update.validate().map(|()| update));
    match parsed {
        Ok(update) => {
            shared.apply(&update);
            let body = serde_json::to_vec(&shared.stats()).unwrap_or_default();
            json(StatusCode::OK, Bytes::from(body))
        }
        Err(e) => {
            let body = serde_json::json!({ "error": e }).to_string();
            json(StatusCode::BAD_REQUEST, Bytes::from(body))
        }
    }
}

fn json(status: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}
