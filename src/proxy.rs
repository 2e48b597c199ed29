//! The request path, one function per stage:
//!
//! 1. **own endpoints**: sluice's JSON endpoints are answered here and never forwarded;
//! 2. **classify**: the first matching route rule gives `(route, class, priority, timeout)`;
//! 3. **forward**: the head is rewritten ([`crate::forward`]) and sent on a pooled
//!    connection; the body streams as it arrives;
//! 4. **respond**: the app's response head, minus hop-by-hop headers, or sluice's own
//!    refusal ([`crate::rejection`]) when the app cannot be reached or is too slow;
//! 5. **learn**: the outcome and the time to the response head go to the metrics.
//!
//! Admission (queues, limits, breaker) slots in between 2 and 3 in a later stage.

use crate::app::Shared;
use crate::classify::Class;
use crate::forward;
use crate::metrics::Outcome;
use crate::rejection::Refusal;
use crate::upstream::{Pool, PooledBody, UpstreamError};
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
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
}

/// The hyper service: one call per request.
pub async fn handle(
    w: Arc<Worker>,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Result<Response<ResponseBody>, Infallible> {
    if crate::api::is_own_path(req.uri().path()) {
        return Ok(crate::api::handle(&w.shared, req).await.map(Either::Right));
    }
    Ok(proxy(&w, req, peer).await)
}

async fn proxy(w: &Worker, mut req: Request<Incoming>, peer: SocketAddr) -> Response<ResponseBody> {
    let start = Instant::now();
    let shared = &*w.shared;
    let class = shared
        .classifier
        .classify(req.method(), req.uri().path(), req.headers());
    let record = Record {
        w,
        class,
        start,
        done: false,
    };
    let _inflight = shared.metrics.requests.inflight(class.class);
    let client_upgrade = (req.version() == http::Version::HTTP_11
        && forward::is_upgrade(req.headers()))
    .then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    let id = forward::request_head(&mut parts, peer.ip(), w.proto, || w.ids.next());
    let up_req = Request::from_parts(parts, Either::Left(body));

    let sent = match client_upgrade {
        None => tokio::time::timeout(class.timeout, w.pool.send(up_req)).await,
        Some(client) => tokio::time::timeout(class.timeout, upgrade(w, up_req, client)).await,
    };
    match sent {
        Ok(Ok(mut resp)) => {
            let switching = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
            forward::strip_hop_by_hop(resp.headers_mut(), switching);
            if !resp.headers().contains_key(forward::X_REQUEST_ID) {
                resp.headers_mut().insert(forward::X_REQUEST_ID, id);
            }
            record.finish(Outcome::from_status(resp.status()));
            resp.map(Either::Left)
        }
        Ok(Err(e)) => {
            let refusal = Refusal::from(&e);
            count_upstream_error(shared, &e);
            tracing::warn!(request_id = ?id, route = %route_name(shared, class), error = %e, "upstream request failed");
            record.finish(refusal.outcome());
            refusal.response(&id).map(Either::Right)
        }
        Err(_elapsed) => {
            shared.metrics.upstream_errors.timeout.inc();
            tracing::warn!(request_id = ?id, route = %route_name(shared, class), timeout = ?class.timeout, "upstream response head timed out");
            record.finish(Refusal::UpstreamTimeout.outcome());
            Refusal::UpstreamTimeout.response(&id).map(Either::Right)
        }
    }
}

/// Forwards an upgrade request on a dedicated connection; on `101` splices the two
/// upgraded streams together in a task of their own.
async fn upgrade(
    w: &Worker,
    req: Request<crate::upstream::UpstreamBody>,
    client: hyper::upgrade::OnUpgrade,
) -> Result<Response<PooledBody>, UpstreamError> {
    let mut resp = w.pool.send_upgrade(req).await?;
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        let app = hyper::upgrade::on(&mut resp);
        tokio::spawn(async move {
            match tokio::try_join!(client, app) {
                Ok((client, app)) => {
                    let (mut client, mut app) = (TokioIo::new(client), TokioIo::new(app));
                    if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut app).await {
                        tracing::debug!(error = %e, "upgraded connection ended");
                    }
                }
                Err(e) => tracing::debug!(error = %e, "upgrade did not complete"),
            }
        });
    }
    let timeout = w.shared.config.upstream.body_idle_timeout;
    Ok(resp.map(|b| PooledBody::unpooled(b, timeout)))
}

fn count_upstream_error(shared: &Shared, e: &UpstreamError) {
    let errors = &shared.metrics.upstream_errors;
    match e {
        UpstreamError::Connect(_) => errors.connect.inc(),
        UpstreamError::ConnectTimeout => errors.connect_timeout.inc(),
        UpstreamError::Closed(_) => errors.closed.inc(),
        UpstreamError::Protocol(_) => errors.protocol.inc(),
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
    done: bool,
}

impl Record<'_> {
    fn finish(mut self, outcome: Outcome) {
        self.done = true;
        self.write(outcome);
    }

    fn write(&self, outcome: Outcome) {
        self.w.shared.metrics.requests.record(
            self.w.shard,
            self.class.route,
            outcome,
            self.start.elapsed(),
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
