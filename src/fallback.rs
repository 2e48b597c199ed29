//! Fallback responses for read-only routes while sluice is degraded: the last good
//! response seen for the same request, or a static one from the config file.
//!
//! Last good responses are kept per route, keyed by path, query and the caller's
//! credentials (a hash of `Authorization` and `Cookie`), so one user is never served
//! another's data. Only `200 OK` answers to `GET` are kept, never ones marked
//! `Cache-Control: no-store`/`private` without credentials in the key, nor ones that set
//! a cookie. Memory is bounded per route ([`MAX_ENTRIES`], [`MAX_ROUTE_BYTES`]).

use crate::app::Shared;
use crate::classify::Class;
use crate::config::{FallbackConfig, RouteConfig, StaticResponse};
use crate::rejection::X_SLUICE_REASON;
use crate::upstream::{Capture, PooledBody};
use bytes::Bytes;
use http::header::{HeaderValue, AGE, CACHE_CONTROL, CONTENT_TYPE, COOKIE, SET_COOKIE};
use http::{HeaderMap, HeaderName, Method, Request, Response, StatusCode};
use http_body_util::Full;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::{Arc, Mutex};
use tokio::time::Instant;

/// Names which fallback answered: `last-good` or `static`.
pub const X_SLUICE_FALLBACK: HeaderName = HeaderName::from_static("x-sluice-fallback");
/// Most responses kept per route.
pub const MAX_ENTRIES: usize = 1024;
/// Most body bytes kept per route.
pub const MAX_ROUTE_BYTES: usize = 16 * 1024 * 1024;

#[derive(Clone, PartialEq, Eq, Hash)]
struct Key {
    path_and_query: String,
    credentials: u64,
}

struct Entry {
    content_type: Option<HeaderValue>,
    body: Bytes,
    at: Instant,
}

#[derive(Default)]
struct RouteCache {
    entries: HashMap<Key, Entry>,
    bytes: usize,
}

impl RouteCache {
    fn insert(&mut self, key: Key, entry: Entry) {
        if let Some(old) = self.entries.remove(&key) {
            self.bytes -= old.body.len();
        }
        self.bytes += entry.body.len();
        self.entries.insert(key, entry);
        while self.entries.len() > MAX_ENTRIES || self.bytes > MAX_ROUTE_BYTES {
            let Some(oldest) = self
                .entries
                .iter()
                .min_by_key(|(_, e)| e.at)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some(e) = self.entries.remove(&oldest) {
                self.bytes -= e.body.len();
            }
        }
    }
}

/// Every route's last good responses (`None` for routes without `last_good_max_age_ms`).
pub struct LastGood {
    routes: Vec<Option<Arc<Mutex<RouteCache>>>>,
    hasher: std::collections::hash_map::RandomState,
}

impl LastGood {
    pub fn new(routes: &[RouteConfig]) -> LastGood {
        LastGood {
            routes: routes
                .iter()
                .map(|r| {
                    r.fallback
                        .as_ref()
                        .and_then(|f| f.last_good_max_age)
                        .map(|_| Arc::default())
                })
                .collect(),
            hasher: std::collections::hash_map::RandomState::new(),
        }
    }

    fn key<B>(&self, req: &Request<B>) -> Key {
        let mut h = self.hasher.build_hasher();
        for name in [http::header::AUTHORIZATION, COOKIE] {
            for v in req.headers().get_all(name) {
                v.as_bytes().hash(&mut h);
            }
        }
        Key {
            path_and_query: req
                .uri()
                .path_and_query()
                .map_or_else(|| req.uri().path().to_owned(), |p| p.as_str().to_owned()),
            credentials: h.finish(),
        }
    }

    /// The state of the caches, for the JSON endpoint: `(route id, entries, bytes)`.
    pub fn usage(&self) -> Vec<(usize, usize, usize)> {
        self.routes
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                let c = c.as_ref()?.lock().ok()?;
                Some((i, c.entries.len(), c.bytes))
            })
            .collect()
    }
}

/// Called before forwarding: the key to store the response under, if it may be kept.
pub fn key_for<B>(shared: &Shared, class: Class, req: &Request<B>) -> Option<StoreKey> {
    shared.last_good.routes.get(class.route)?.as_ref()?;
    (req.method() == Method::GET).then(|| StoreKey {
        key: shared.last_good.key(req),
        shared_response: !has_credentials(req.headers()),
    })
}

/// Where a response may be stored (see [`key_for`]).
pub struct StoreKey {
    key: Key,
    /// No credentials on the request: a `private` response must not be kept.
    shared_response: bool,
}

/// Keeps a copy of a `200 OK` response as its body streams to the client.
pub fn capture(shared: &Shared, class: Class, key: StoreKey, resp: &mut Response<PooledBody>) {
    let (Some(Some(cache)), Some(config)) = (
        shared.last_good.routes.get(class.route),
        route_fallback(shared, class),
    ) else {
        return;
    };
    let h = resp.headers();
    let cache_control = h
        .get_all(CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join(",")
        .to_ascii_lowercase();
    let forbidden = cache_control.contains("no-store")
        || (key.shared_response && cache_control.contains("private"));
    if resp.status() != StatusCode::OK || forbidden || h.contains_key(SET_COOKIE) {
        return;
    }
    let content_type = h.get(CONTENT_TYPE).cloned();
    let cache = cache.clone();
    let done = Box::new(move |body: Bytes| {
        let entry = Entry {
            content_type,
            body,
            at: Instant::now(),
        };
        if let Ok(mut c) = cache.lock() {
            c.insert(key.key, entry);
        }
    });
    resp.body_mut()
        .capture(Capture::new(config.last_good_max_bytes, done));
}

/// While degraded: the route's fallback for this request, if it has one that applies.
pub fn serve<B>(
    shared: &Shared,
    class: Class,
    req: &Request<B>,
    request_id: &HeaderValue,
) -> Option<Response<Full<Bytes>>> {
    let config = route_fallback(shared, class)?;
    // HEAD gets GET's answer without the body (hyper leaves it out).
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return None;
    }
    let last = config.last_good_max_age.and_then(|max_age| {
        let cache = shared.last_good.routes.get(class.route)?.as_ref()?;
        let key = shared.last_good.key(req);
        let c = cache.lock().ok()?;
        let e = c.entries.get(&key)?;
        let age = e.at.elapsed();
        (age <= max_age).then(|| (e.content_type.clone(), e.body.clone(), age))
    });
    let mut resp = match (last, &config.static_response) {
        (Some((content_type, body, age)), _) => {
            let mut r = Response::new(Full::new(body));
            let h = r.headers_mut();
            if let Some(ct) = content_type {
                h.insert(CONTENT_TYPE, ct);
            }
            h.insert(AGE, HeaderValue::from(age.as_secs()));
            h.insert(X_SLUICE_FALLBACK, HeaderValue::from_static("last-good"));
            r
        }
        (None, Some(s)) => static_response(s),
        (None, None) => return None,
    };
    let h = resp.headers_mut();
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(X_SLUICE_REASON, HeaderValue::from_static("degraded"));
    h.insert(crate::forward::X_REQUEST_ID, request_id.clone());
    Some(resp)
}

fn static_response(s: &StaticResponse) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(s.body.clone()));
    *r.status_mut() = s.status;
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, s.content_type.clone());
    h.insert(X_SLUICE_FALLBACK, HeaderValue::from_static("static"));
    r
}

fn route_fallback(shared: &Shared, class: Class) -> Option<&FallbackConfig> {
    shared.config.routes.get(class.route)?.fallback.as_ref()
}

fn has_credentials(h: &HeaderMap) -> bool {
    h.contains_key(http::header::AUTHORIZATION) || h.contains_key(COOKIE)
}
