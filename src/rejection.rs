//! Responses sluice writes itself when a request cannot be served: status code, reason
//! header, `Retry-After`, metric outcome and a small JSON body, all from one exhaustive
//! match per field so a new reason cannot be forgotten anywhere.

use crate::admission::{Refused, Rejection};
use crate::metrics::Outcome;
use crate::upstream::UpstreamError;
use bytes::Bytes;
use http::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderName, Response, StatusCode};
use http_body_util::Full;
use std::time::Duration;

/// The header that names why sluice answered instead of the app.
pub const X_SLUICE_REASON: HeaderName = HeaderName::from_static("x-sluice-reason");

/// Why a request got sluice's answer rather than the app's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The app refused or did not accept the TCP connection.
    UpstreamConnect,
    /// The TCP connect to the app did not complete in time.
    UpstreamConnectTimeout,
    /// The app closed or reset the connection before a response head.
    UpstreamClosed,
    /// The app sent something that is not HTTP/1.1.
    UpstreamProtocol,
    /// No response head within the route's timeout.
    UpstreamTimeout,
    /// The client stalled in the middle of its request body for longer than the body
    /// idle timeout.
    RequestBodyTimeout,
    /// The client's request body broke off (the connection closed or sent bad framing).
    RequestBodyFailed,
    /// Admission refused the request before anything was sent to the app.
    Admission(Rejection),
}

impl Refusal {
    pub fn status(self) -> StatusCode {
        match self {
            Refusal::UpstreamConnect
            | Refusal::UpstreamConnectTimeout
            | Refusal::UpstreamClosed
            | Refusal::UpstreamProtocol => StatusCode::BAD_GATEWAY,
            Refusal::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            Refusal::RequestBodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Refusal::RequestBodyFailed => StatusCode::BAD_REQUEST,
            Refusal::Admission(r) => match r {
                Rejection::RateLimited => StatusCode::TOO_MANY_REQUESTS,
                Rejection::QueueFull
                | Rejection::Displaced
                | Rejection::QueueTimeout
                | Rejection::Shed
                | Rejection::CircuitOpen
                | Rejection::Degraded => StatusCode::SERVICE_UNAVAILABLE,
            },
        }
    }

    /// Machine-readable reason: the `X-Sluice-Reason` value and the JSON `error` field.
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::UpstreamConnect => "upstream_connect_failed",
            Refusal::UpstreamConnectTimeout => "upstream_connect_timeout",
            Refusal::UpstreamClosed => "upstream_connection_closed",
            Refusal::UpstreamProtocol => "upstream_protocol_error",
            Refusal::UpstreamTimeout => "upstream_timeout",
            Refusal::RequestBodyTimeout => "request_body_timeout",
            Refusal::RequestBodyFailed => "request_body_failed",
            Refusal::Admission(r) => r.as_str(),
        }
    }

    fn message(self) -> &'static str {
        match self {
            Refusal::UpstreamConnect => "the application could not be reached",
            Refusal::UpstreamConnectTimeout => "connecting to the application timed out",
            Refusal::UpstreamClosed => "the application closed the connection without answering",
            Refusal::UpstreamProtocol => "the application sent an invalid response",
            Refusal::UpstreamTimeout => "the application did not answer in time",
            Refusal::RequestBodyTimeout => "the request body stalled for too long",
            Refusal::RequestBodyFailed => "the request body could not be read",
            Refusal::Admission(r) => match r {
                Rejection::QueueFull => "too many requests are waiting; try again later",
                Rejection::Displaced => "more urgent requests took this request's place",
                Rejection::QueueTimeout => "no capacity became free in time",
                Rejection::Shed => {
                    "the service is overloaded; this request would not be served in time"
                }
                Rejection::RateLimited => "rate limit exceeded",
                Rejection::CircuitOpen => {
                    "the application is failing; requests are paused while it recovers"
                }
                Rejection::Degraded => {
                    "the service is degraded and serving only its most important requests"
                }
            },
        }
    }

    pub fn outcome(self) -> Outcome {
        match self {
            Refusal::UpstreamConnect
            | Refusal::UpstreamConnectTimeout
            | Refusal::UpstreamClosed
            | Refusal::UpstreamProtocol => Outcome::BadGateway,
            Refusal::UpstreamTimeout => Outcome::GatewayTimeout,
            Refusal::RequestBodyTimeout | Refusal::RequestBodyFailed => Outcome::ClientError,
            Refusal::Admission(Rejection::RateLimited) => Outcome::RateLimited,
            Refusal::Admission(
                Rejection::QueueFull
                | Rejection::Displaced
                | Rejection::QueueTimeout
                | Rejection::Shed
                | Rejection::CircuitOpen
                | Rejection::Degraded,
            ) => Outcome::Rejected,
        }
    }

    /// The JSON response sent to the client. `retry_after` (whole seconds) is sent as
    /// `Retry-After` when given.
    pub fn response(
        self,
        request_id: &HeaderValue,
        retry_after: Option<Duration>,
    ) -> Response<Full<Bytes>> {
        let body = serde_json::json!({
            "error": self.reason(),
            "message": self.message(),
            "request_id": request_id.to_str().unwrap_or_default(),
        });
        let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
        *resp.status_mut() = self.status();
        let h = resp.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        h.insert(X_SLUICE_REASON, HeaderValue::from_static(self.reason()));
        h.insert(crate::forward::X_REQUEST_ID, request_id.clone());
        if let Some(after) = retry_after {
            h.insert(RETRY_AFTER, HeaderValue::from(after.as_secs().max(1)));
        }
        resp
    }
}

impl From<Refused> for Refusal {
    fn from(r: Refused) -> Refusal {
        Refusal::Admission(r.reason)
    }
}

impl From<&UpstreamError> for Refusal {
    fn from(e: &UpstreamError) -> Refusal {
        match e {
            UpstreamError::Connect(_) => Refusal::UpstreamConnect,
            UpstreamError::ConnectTimeout => Refusal::UpstreamConnectTimeout,
            UpstreamError::Closed(_) => Refusal::UpstreamClosed,
            UpstreamError::Protocol(_) => Refusal::UpstreamProtocol,
            UpstreamError::RequestBody(_) if e.is_request_body_timeout() => {
                Refusal::RequestBodyTimeout
            }
            UpstreamError::RequestBody(_) => Refusal::RequestBodyFailed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_carry_status_reason_and_json() {
        let id = HeaderValue::from_static("req-1");
        let r = Refusal::UpstreamTimeout.response(&id, None);
        assert_eq!(r.status(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(r.headers()[X_SLUICE_REASON], "upstream_timeout");
        assert!(r.headers().get(RETRY_AFTER).is_none());
        let r = Refusal::UpstreamConnect.response(&id, Some(Duration::from_secs(1)));
        assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(r.headers()[RETRY_AFTER], "1");
        assert_eq!(Refusal::UpstreamConnect.outcome(), Outcome::BadGateway);
        let r =
            Refusal::Admission(Rejection::RateLimited).response(&id, Some(Duration::from_secs(3)));
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()[RETRY_AFTER], "3");
        assert_eq!(r.headers()[X_SLUICE_REASON], "rate_limited");
        let r =
            Refusal::Admission(Rejection::Displaced).response(&id, Some(Duration::from_secs(2)));
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            Refusal::Admission(Rejection::Shed).outcome(),
            Outcome::Rejected
        );
    }
}
