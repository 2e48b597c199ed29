//! Active health checks of the app: a probe of its health path every interval. The
//! threshold counter is pure ([`HealthCounter`]); the loop around it owns the clock.

use super::{Pool, UpstreamBody};
use bytes::Bytes;
use http::{header, Request};
use http_body_util::{BodyExt, Either, Full, Limited};
use std::sync::atomic::{AtomicU8, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// Consecutive failed probes that mark the app down.
pub const UNHEALTHY_THRESHOLD: u32 = 3;
/// Consecutive good probes that mark it up again.
pub const HEALTHY_THRESHOLD: u32 = 1;

/// What the probes say about the app.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// No probe has finished yet.
    Unknown,
    Up,
    Down,
}

/// Pure threshold counter: feed probe results, read the verdict.
#[derive(Clone, Debug)]
pub struct HealthCounter {
    verdict: Verdict,
    successes: u32,
    failures: u32,
}

impl Default for HealthCounter {
    fn default() -> Self {
        HealthCounter {
            verdict: Verdict::Unknown,
            successes: 0,
            failures: 0,
        }
    }
}

impl HealthCounter {
    /// Records one probe; returns the verdict after it.
    pub fn observe(&mut self, ok: bool) -> Verdict {
        if ok {
            self.failures = 0;
            self.successes = self.successes.saturating_add(1);
            if self.successes >= HEALTHY_THRESHOLD {
                self.verdict = Verdict::Up;
            }
        } else {
            self.successes = 0;
            self.failures = self.failures.saturating_add(1);
            // From Unknown, the first failure already says "not up".
            if self.failures >= UNHEALTHY_THRESHOLD || self.verdict == Verdict::Unknown {
                self.verdict = Verdict::Down;
            }
        }
        self.verdict
    }

    pub fn consecutive_failures(&self) -> u32 {
        self.failures
    }
}

/// The shared view of the app's health, written by the probe loop.
#[derive(Debug)]
pub struct UpstreamHealth {
    enabled: bool,
    verdict: AtomicU8,
    detail: Mutex<ProbeDetail>,
}

/// The latest probe's result, for the JSON endpoints.
#[derive(Clone, Debug, Default)]
pub struct ProbeDetail {
    pub consecutive_failures: u32,
    pub last_error: Option<String>,
}

impl UpstreamHealth {
    /// With `enabled = false` (no health path) the app is assumed up.
    pub fn new(enabled: bool) -> UpstreamHealth {
        UpstreamHealth {
            enabled,
            verdict: AtomicU8::new(if enabled { 0 } else { 1 }),
            detail: Mutex::new(ProbeDetail::default()),
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    pub fn verdict(&self) -> Verdict {
        match self.verdict.load(Relaxed) {
            0 => Verdict::Unknown,
            1 => Verdict::Up,
            _ => Verdict::Down,
        }
    }

    pub fn detail(&self) -> ProbeDetail {
        self.detail.lock().map(|d| d.clone()).unwrap_or_default()
    }

    fn set(&self, verdict: Verdict, detail: ProbeDetail) {
        let v = match verdict {
            Verdict::Unknown => 0,
            Verdict::Up => 1,
            Verdict::Down => 2,
        };
        let before = self.verdict.swap(v, Relaxed);
        if before != v {
            match verdict {
                Verdict::Down => {
                    tracing::warn!(error = ?detail.last_error, "upstream marked down by health checks")
                }
                Verdict::Up => tracing::info!("upstream marked up by health checks"),
                Verdict::Unknown => {}
            }
        }
        if let Ok(mut d) = self.detail.lock() {
            *d = detail;
        }
    }
}

/// Probes `path` every `interval` until `shutdown` turns true.
pub async fn run(
    health: Arc<UpstreamHealth>,
    pool: Arc<Pool>,
    host: String,
    path: String,
    interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut counter = HealthCounter::default();
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = crate::listener::stopped(&mut shutdown) => return,
        }
        let result = probe(&pool, &host, &path, interval).await;
        let verdict = counter.observe(result.is_ok());
        health.set(
            verdict,
            ProbeDetail {
                consecutive_failures: counter.consecutive_failures(),
                last_error: result.err(),
            },
        );
    }
}

async fn probe(pool: &Arc<Pool>, host: &str, path: &str, timeout: Duration) -> Result<(), String> {
    let req = Request::get(path)
        .header(header::HOST, host)
        .header(
            header::USER_AGENT,
            concat!("sluice/", env!("CARGO_PKG_VERSION")),
        )
        .body::<UpstreamBody>(Either::Right(Full::new(Bytes::new())))
        .map_err(|e| e.to_string())?;
    let exchange = async {
        let resp = pool.send(req).await.map_err(|e| e.to_string())?;
        let status = resp.status();
        // Read the (small) body so the connection can be reused.
        let _ = Limited::new(resp.into_body(), 64 * 1024).collect().await;
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("health probe answered {status}"))
        }
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| format!("health probe timed out after {timeout:?}"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_needs_consecutive_failures_to_go_down() {
        let mut c = HealthCounter::default();
        assert_eq!(c.observe(true), Verdict::Up);
        assert_eq!(c.observe(false), Verdict::Up);
        assert_eq!(c.observe(false), Verdict::Up);
        assert_eq!(c.observe(true), Verdict::Up);
        for _ in 0..UNHEALTHY_THRESHOLD - 1 {
            assert_eq!(c.observe(false), Verdict::Up);
        }
        assert_eq!(c.observe(false), Verdict::Down);
        assert_eq!(c.consecutive_failures(), UNHEALTHY_THRESHOLD);
        assert_eq!(c.observe(true), Verdict::Up);
    }

    #[test]
    fn first_probe_failing_means_down_not_unknown() {
        let mut c = HealthCounter::default();
        assert_eq!(c.observe(false), Verdict::Down);
    }
}
