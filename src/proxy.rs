//! The request path, one function per stage:
//!
//! 1. **own endpoints**: sluice's JSON endpoints are answered here and never forwarded;
//! 2. **classify**: the first matching route rule gives `(route, class, priority, timeout)`;
//! 3. **forward**: the head is rewritten ([`crate::forward`]) and sent on a pooled
//!    connection; the body streams as it arrives;
//! 4. **respond**: the app's response head, minus hop-by-hop headers, or sluice's own
//!    refusal ([`crate::rejection`]) when the app cannot be reached or is too slow;
//! 5. **learn**: the outcome and the time to the response head go to the metrics, the
//!    circuit breaker, passive health tracking and the adaptive limit.
//!
//! Between 2 and 3, admission, each refusal cheap and explicit: degradation (a route's
//! fallback, or a refusal below the configured priority) → circuit breaker → rate limit
//! → the class's concurrency gate and priority queue.

use crate::admission::{Permit, Refused, Rejection};
use crate::app::Shared;
use crate::breaker::{CallResult, Named};
use crate::classify::Class;
use crate::forward;
use crate::listener::ClientBody;
use crate::metrics::Outcome;
use crate::rejection::Refusal;
use crate::upstream::{IdleTimeout, Pool, PooledBody, Tunnel, Upgrade, UpstreamError};
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::Body as _;
use http_body_util::{Either, Full};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::time::Instant;

/// What a client receives: the app's streamed body or one of sluice's own.
pub type ResponseBody = Either<PooledBody, Full<Bytes>>;

/// Per-worker-thread context: the shared state plus what only this thread touches.
pub struct Worker {
    pub shared: Arc<Shared>,
    pub pool: Arc<Pool>,
    /// This thread's metrics shard.
    pub shard: usize,
    pub ids: forward::RequestIds,
    /// `X-Forwarded-Proto` for requests accepted by this listener.
    pub proto: &'static str,
    /// Upstream failures are logged at most once a second per worker (an outage at
    /// thousands of requests a second must not flood the logs; the metrics count all).
    pub error_log: LogEvery,
    /// `Date` for the responses this worker writes.
    pub date: crate::listener::h1::DateCache,
}

/// Lets one log line through per interval and counts the ones it held back.
#[derive(Debug)]
pub struct LogEvery {
    every: std::time::Duration,
    epoch: Instant,
    next_ms: std::sync::atomic::AtomicU64,
    held: std::sync::atomic::AtomicU64,
}

impl LogEvery {
    pub fn new(every: std::time::Duration) -> LogEvery {
        LogEvery {
            every,
            epoch: Instant::now(),
            next_ms: std::sync::atomic::AtomicU64::new(0),
            held: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// `Some(lines held back since the last one)` when a line may be logged now.
    pub fn allow(&self) -> Option<u64> {
        use std::sync::atomic::Ordering::Relaxed;
        let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        let next = self.next_ms.load(Relaxed);
        let step = u64::try_from(self.every.as_millis()).unwrap_or(u64::MAX);
        if now >= next
            && self
                .next_ms
                .compare_exchange(next, now.saturating_add(step), Relaxed, Relaxed)
                .is_ok()
        {
            Some(self.held.swap(0, Relaxed))
        } else {
            self.held.fetch_add(1, Relaxed);
            None
        }
    }
}

/// The hyper service: one call per request.
pub async fn handle(
    w: Arc<Worker>,
    req: Request<ClientBody>,
    peer: SocketAddr,
) -> Result<Response<ResponseBody>, Infallible> {
    if crate::api::is_own_path(req.uri().path()) {
        return Ok(crate::api::handle(&w.shared, req).await.map(Either::Right));
    }
    Ok(proxy(&w, req, peer).await)
}

async fn proxy(w: &Worker, req: Request<ClientBody>, peer: SocketAddr) -> Response<ResponseBody> {
    let start = Instant::now();
    let shared = &*w.shared;
    let class = shared
        .classifier
        .classify(req.method(), req.uri().path(), req.headers());
    let record = Record {
        w,
        class,
        start,
        end: None,
        done: false,
    };
    let id = forward::request_id(req.headers(), &w.ids);
    if !class.bypass && shared.degradation.is_degraded() {
        if let Some(resp) = crate::fallback::serve(shared, class, &req, &id) {
            record.finish(Outcome::Fallback);
            return resp.map(Either::Right);
        }
        if shared.degradation.refuses(class.priority) {
            return refuse(shared, record, &id, Rejection::Degraded, DEGRADED_RETRY);
        }
    }
    let call = match breaker(shared, class) {
        None => None,
        Some(b) => match b.acquire(start) {
            Ok(call) => Some(call),
            Err(wait) => {
                return refuse(shared, record, &id, Rejection::CircuitOpen, wait);
            }
        },
    };
    let mut permit = match admit(w, class, peer, req.headers(), start).await {
        Ok(permit) => permit,
        Err(refused) => {
            let refusal = Refusal::from(refused);
            record.finish(refusal.outcome());
            return refusal
                .response(&id, Some(refused.retry_after))
                .map(Either::Right);
        }
    };
    let _inflight = shared.metrics.requests.inflight(class.class);
    let upgrade_asked =
        req.version() == http::Version::HTTP_11 && forward::is_upgrade(req.headers());
    let store = crate::fallback::key_for(shared, class, &req);
    let (mut parts, body) = req.into_parts();
    forward::request_head(&mut parts);
    let forwarded = forward::Forwarded {
        peer: peer.ip(),
        proto: w.proto,
        request_id: &id,
    };
    let body = IdleTimeout::new(body, shared.config.upstream.body_idle_timeout);
    let up_req = Request::from_parts(parts, Either::Left(body));

    // The route's timeout runs from arrival: time spent queueing counts against it.
    let deadline = start + class.timeout;
    let sent_at = Instant::now();
    let sent = if upgrade_asked {
        tokio::time::timeout_at(deadline, upgrade(w, up_req, &forwarded, &mut permit)).await
    } else {
        tokio::time::timeout_at(deadline, w.pool.send(up_req, Some(&forwarded))).await
    };
    // One clock reading for the app's latency and the request's.
    let answered = Instant::now();
    let rtt = answered - sent_at;
    let record = record.ending_at(answered);
    match sent {
        Ok(Ok(mut resp)) => {
            let status = resp.status();
            if let Some(p) = &permit {
                p.record(rtt, status == StatusCode::SERVICE_UNAVAILABLE);
            }
            shared.health.observe_request(true);
            if let Some(call) = call {
                let failed = shared
                    .breakers
                    .as_ref()
                    .is_some_and(|b| b.is_failure_status(status));
                call.finish(if failed {
                    CallResult::Failure
                } else {
                    CallResult::Success(rtt)
                });
            }
            forward::strip_hop_by_hop(
                resp.headers_mut(),
                status == StatusCode::SWITCHING_PROTOCOLS,
            );
            // `Trailer` announces fields after a chunked body; a body of known length
            // goes out with Content-Length and can carry none.
            if resp.body().size_hint().exact().is_some() {
                resp.headers_mut().remove(http::header::TRAILER);
            }
            if !resp.headers().contains_key(forward::X_REQUEST_ID) {
                resp.headers_mut().insert(forward::X_REQUEST_ID, id);
            }
            if let Some(p) = permit {
                resp.body_mut().hold(p);
            }
            if let Some(key) = store {
                crate::fallback::capture(shared, class, key, &mut resp);
            }
            record.finish(Outcome::from_status(status));
            resp.map(Either::Left)
        }
        Ok(Err(e @ UpstreamError::RequestBody(_))) => {
            // The client's upload broke or stalled: nothing to learn about the app.
            if let Some(call) = call {
                call.finish(CallResult::Ignored);
            }
            tracing::debug!(request_id = ?id, error = %e, "request body failed");
            let refusal = Refusal::from(&e);
            record.finish(refusal.outcome());
            refusal.response(&id, None).map(Either::Right)
        }
        Ok(Err(e)) => {
            if let Some(p) = &permit {
                p.record(rtt, true);
            }
            if let Some(call) = call {
                call.finish(CallResult::Failure);
            }
            shared.health.observe_request(!matches!(
                e,
                UpstreamError::Connect(_) | UpstreamError::ConnectTimeout
            ));
            let refusal = Refusal::from(&e);
            count_upstream_error(shared, &e);
            if let Some(held) = w.error_log.allow() {
                tracing::warn!(request_id = ?id, route = %route_name(shared, class), error = %e, similar_lines_held_back = held, "upstream request failed");
            }
            record.finish(refusal.outcome());
            let retry = matches!(e, UpstreamError::Connect(_) | UpstreamError::ConnectTimeout)
                .then_some(std::time::Duration::from_secs(1));
            refusal.response(&id, retry).map(Either::Right)
        }
        Err(_elapsed) => {
            if let Some(p) = &permit {
                p.record(rtt, true);
            }
            // A request that spent most of its timeout in sluice's queue gave the app too
            // little time to blame it: neither the breaker nor passive health counts it.
            let fair_chance = rtt >= class.timeout / 2;
            if let Some(call) = call {
                call.finish(if fair_chance {
                    CallResult::Failure
                } else {
                    CallResult::Ignored
                });
            }
            if fair_chance {
                shared.health.observe_request(false);
            }
            shared.metrics.upstream_errors.timeout.inc();
            if let Some(held) = w.error_log.allow() {
                tracing::warn!(request_id = ?id, route = %route_name(shared, class), timeout = ?class.timeout, similar_lines_held_back = held, "upstream response head timed out");
            }
            record.finish(Refusal::UpstreamTimeout.outcome());
            Refusal::UpstreamTimeout
                .response(&id, None)
                .map(Either::Right)
        }
    }
}

/// Rate limit, then the class's gate. `None`: admission does not apply (bypass routes,
/// or `concurrency.enabled = false`).
async fn admit(
    w: &Worker,
    class: Class,
    peer: SocketAddr,
    headers: &http::HeaderMap,
    start: Instant,
) -> Result<Option<Permit>, Refused> {
    let shared = &*w.shared;
    if class.bypass || !shared.config.concurrency.enabled {
        return Ok(None);
    }
    let admission = &shared.admission;
    admission.check_rate(class.route, class.priority, class.class, peer.ip(), headers)?;
    let Some(gate) = admission.gate(class.class) else {
        return Ok(None);
    };
    let key = admission.key_of(&gate.config.fair_key, peer.ip(), headers);
    let queue_timeout = shared.degradation.queue_timeout(gate.config.queue_timeout);
    let deadline = start + class.timeout.min(queue_timeout);
    gate.admit(class.priority, key, deadline).await.map(Some)
}

/// Forwards an upgrade request on a dedicated connection. On `101` the app's connection
/// travels with the response to the client's server, which splices the two; the
/// admission slot goes with it for as long as the upgraded connection lives.
async fn upgrade(
    w: &Worker,
    req: Request<crate::upstream::UpstreamBody>,
    forwarded: &forward::Forwarded<'_>,
    permit: &mut Option<Permit>,
) -> Result<Response<PooledBody>, UpstreamError> {
    match w.pool.send_upgrade(req, Some(forwarded)).await? {
        Upgrade::Answered(resp) => Ok(resp),
        Upgrade::Switched(mut resp, app) => {
            resp.body_mut().set_tunnel(Tunnel::new(app, permit.take()));
            Ok(resp)
        }
    }
}

/// `Retry-After` for requests refused because sluice is degraded: degradation lasts at
/// least its exit hold, so coming back much sooner is pointless.
const DEGRADED_RETRY: std::time::Duration = std::time::Duration::from_secs(5);

/// The breaker this request's class uses, unless the route bypasses admission.
fn breaker(shared: &Shared, class: Class) -> Option<&Named> {
    if class.bypass {
        return None;
    }
    shared.breakers.as_ref()?.for_class(class.class)
}

/// Refuses before queueing (degraded, breaker open), counting it like any refusal.
fn refuse(
    shared: &Shared,
    record: Record<'_>,
    id: &http::HeaderValue,
    reason: Rejection,
    retry_after: std::time::Duration,
) -> Response<ResponseBody> {
    if let Some(g) = shared.admission.gate(record.class.class) {
        g.stats.rejected(record.class.priority, reason);
    }
    let refusal = Refusal::Admission(reason);
    record.finish(refusal.outcome());
    // Retry-After is whole seconds: round up so a client never comes back too early.
    let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
    refusal
        .response(id, Some(std::time::Duration::from_secs(secs.max(1))))
        .map(Either::Right)
}

fn count_upstream_error(shared: &Shared, e: &UpstreamError) {
    let errors = &shared.metrics.upstream_errors;
    match e {
        UpstreamError::Connect(_) => errors.connect.inc(),
        UpstreamError::ConnectTimeout => errors.connect_timeout.inc(),
        UpstreamError::Closed(_) => errors.closed.inc(),
        UpstreamError::Protocol(_) => errors.protocol.inc(),
        // The client's fault, not the app's: counted with the client errors.
        UpstreamError::RequestBody(_) => {}
    }
}

fn route_name(shared: &Shared, class: Class) -> &str {
    shared
        .classifier
        .routes()
        .get(class.route)
        .map_or("", |r| r.name.as_str())
}

/// Records the request's outcome once: explicitly, or as `cancelled` if the client went
/// away (hyper drops the service future) before a response head was ready.
struct Record<'a> {
    w: &'a Worker,
    class: Class,
    start: Instant,
    /// When the answer was ready, if already read off the clock.
    end: Option<Instant>,
    done: bool,
}

impl Record<'_> {
    fn ending_at(mut self, end: Instant) -> Self {
        self.end = Some(end);
        self
    }

    fn finish(mut self, outcome: Outcome) {
        self.done = true;
        self.write(outcome);
    }

    fn write(&self, outcome: Outcome) {
        let end = self.end.unwrap_or_else(Instant::now);
        self.w.shared.metrics.requests.record(
            self.w.shard,
            self.class.route,
            outcome,
            end.saturating_duration_since(self.start),
        );
    }
}

impl Drop for Record<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.write(Outcome::Cancelled);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::LogEvery;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn log_every_lets_one_line_per_interval_and_counts_the_rest() {
        let log = LogEvery::new(Duration::from_secs(1));
        assert_eq!(log.allow(), Some(0));
        assert_eq!(log.allow(), None);
        assert_eq!(log.allow(), None);
        tokio::time::advance(Duration::from_millis(1001)).await;
        assert_eq!(log.allow(), Some(2));
        assert_eq!(log.allow(), None);
    }
}
