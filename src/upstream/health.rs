//! Health of the app: active probes of its health path every interval, and passive
//! tracking of real requests that could not reach it. The threshold counter is pure
//! ([`HealthCounter`]); the loop around it owns the clock.

use super::{Pool, UpstreamBody};
use crate::config::HealthConfig;
use bytes::Bytes;
use http::{header, Request};
use http_body_util::{BodyExt, Either, Full, Limited};
use std::sync::atomic::{AtomicU32, AtomicU8, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// What the probes say about the app.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// No probe has finished yet.
    Unknown,
    Up,
    Down,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Unknown => "unknown",
            Verdict::Up => "up",
            Verdict::Down => "down",
        }
    }
}

/// Pure threshold counter: feed probe results, read the verdict.
#[derive(Clone, Debug)]
pub struct HealthCounter {
    verdict: Verdict,
    successes: u32,
    failures: u32,
    healthy: u32,
    unhealthy: u32,
}

impl HealthCounter {
    /// `healthy` good probes in a row mark a down app up, `unhealthy` failed ones mark
    /// an up app down; from `Unknown` the first probe decides either way.
    pub fn new(healthy: u32, unhealthy: u32) -> HealthCounter {
        HealthCounter {
            verdict: Verdict::Unknown,
            successes: 0,
            failures: 0,
            healthy: healthy.max(1),
            unhealthy: unhealthy.max(1),
        }
    }

    /// Records one probe; returns the verdict after it.
    pub fn observe(&mut self, ok: bool) -> Verdict {
        let first = self.verdict == Verdict::Unknown;
        if ok {
            self.failures = 0;
            self.successes = self.successes.saturating_add(1);
            if self.successes >= self.healthy || first {
                self.verdict = Verdict::Up;
            }
        } else {
            self.successes = 0;
            self.failures = self.failures.saturating_add(1);
            if self.failures >= self.unhealthy || first {
                self.verdict = Verdict::Down;
            }
        }
        self.verdict
    }

    /// Forces the verdict (passive tracking marked the app down); the next probes
    /// start counting from here.
    pub fn force(&mut self, verdict: Verdict) {
        self.verdict = verdict;
        self.successes = 0;
        self.failures = 0;
    }

    pub fn verdict(&self) -> Verdict {
        self.verdict
    }

    pub fn consecutive_failures(&self) -> u32 {
        self.failures
    }
}

/// The shared view of the app's health, written by the probe loop and, for passive
/// tracking, by every worker.
#[derive(Debug)]
pub struct UpstreamHealth {
    enabled: bool,
    verdict: AtomicU8,
    /// Real requests in a row that could not reach the app.
    passive: AtomicU32,
    passive_limit: u32,
    detail: Mutex<ProbeDetail>,
}

/// The latest probe's result, for the JSON endpoints.
#[derive(Clone, Debug, Default)]
pub struct ProbeDetail {
    pub consecutive_failures: u32,
    pub last_error: Option<String>,
    /// True while the app is down because real requests failed, not probes.
    pub passive: bool,
}

impl UpstreamHealth {
    /// Without a health path the app is assumed up and passive tracking is off (with
    /// nothing to probe, nothing could ever mark it up again).
    pub fn new(config: &HealthConfig) -> UpstreamHealth {
        let enabled = !config.path.is_empty();
        UpstreamHealth {
            enabled,
            verdict: AtomicU8::new(if enabled { 0 } else { 1 }),
            passive: AtomicU32::new(0),
            passive_limit: if enabled { config.passive_failures } else { 0 },
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

    /// Passive tracking: a real request reached the app (`true`) or could not connect
    /// or timed out (`false`). Cheap on success: one load unless a streak is running.
    pub fn observe_request(&self, reached: bool) {
        if self.passive_limit == 0 {
            return;
        }
        if reached {
            if self.passive.load(Relaxed) != 0 {
                self.passive.store(0, Relaxed);
            }
            return;
        }
        let n = self.passive.fetch_add(1, Relaxed).saturating_add(1);
        if n == self.passive_limit && self.verdict() != Verdict::Down {
            let error = format!("{n} requests in a row could not reach the app");
            self.set(
                Verdict::Down,
                ProbeDetail {
                    consecutive_failures: 0,
                    last_error: Some(error),
                    passive: true,
                },
            );
        }
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
                Verdict::Down if detail.passive => {
                    tracing::warn!(error = ?detail.last_error, "upstream marked down by passive tracking")
                }
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
/// `on_recovery` runs each time the verdict turns from down to up.
pub async fn run(
    health: Arc<UpstreamHealth>,
    pool: Arc<Pool>,
    host: String,
    config: HealthConfig,
    on_recovery: impl Fn(),
    mut shutdown: watch::Receiver<bool>,
) {
    let mut counter = HealthCounter::new(config.healthy_threshold, config.unhealthy_threshold);
    let mut ticker = tokio::time::interval(config.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = crate::listener::stopped(&mut shutdown) => return,
        }
        let result = probe(&pool, &host, &config.path, config.timeout).await;
        // Passive tracking may have marked the app down since the last probe.
        if health.verdict() == Verdict::Down && counter.verdict() == Verdict::Up {
            counter.force(Verdict::Down);
        }
        let before = health.verdict();
        let verdict = counter.observe(result.is_ok());
        if verdict == Verdict::Up && health.detail().passive {
            health.passive.store(0, Relaxed);
        }
        if before == Verdict::Down && verdict == Verdict::Up {
            on_recovery();
        }
        health.set(
            verdict,
            ProbeDetail {
                consecutive_failures: counter.consecutive_failures(),
                last_error: result.err(),
                passive: false,
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
        let resp = pool.send(req, None).await.map_err(|e| e.to_string())?;
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
        let mut c = HealthCounter::new(1, 3);
        assert_eq!(c.observe(true), Verdict::Up);
        assert_eq!(c.observe(false), Verdict::Up);
        assert_eq!(c.observe(false), Verdict::Up);
        assert_eq!(c.observe(true), Verdict::Up);
        assert_eq!(c.observe(false), Verdict::Up);
        assert_eq!(c.observe(false), Verdict::Up);
        assert_eq!(c.observe(false), Verdict::Down);
        assert_eq!(c.consecutive_failures(), 3);
        assert_eq!(c.observe(true), Verdict::Up);
    }

    #[test]
    fn healthy_threshold_needs_that_many_good_probes() {
        let mut c = HealthCounter::new(2, 1);
        assert_eq!(c.observe(false), Verdict::Down);
        assert_eq!(c.observe(true), Verdict::Down);
        assert_eq!(c.observe(false), Verdict::Down);
        assert_eq!(c.observe(true), Verdict::Down);
        assert_eq!(c.observe(true), Verdict::Up);
        assert_eq!(c.observe(false), Verdict::Down);
    }

    #[test]
    fn first_probe_decides_from_unknown() {
        assert_eq!(HealthCounter::new(3, 3).observe(false), Verdict::Down);
        assert_eq!(HealthCounter::new(3, 3).observe(true), Verdict::Up);
    }

    #[test]
    fn forced_down_needs_the_healthy_threshold_to_come_back() {
        let mut c = HealthCounter::new(2, 3);
        c.observe(true);
        c.force(Verdict::Down);
        assert_eq!(c.observe(true), Verdict::Down);
        assert_eq!(c.observe(true), Verdict::Up);
    }

    fn config(passive: u32, path: &str) -> HealthConfig {
        HealthConfig {
            path: path.into(),
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            healthy_threshold: 1,
            unhealthy_threshold: 3,
            passive_failures: passive,
            ready_requires_upstream: true,
        }
    }

    #[test]
    fn passive_failures_in_a_row_mark_the_app_down() {
        let h = UpstreamHealth::new(&config(3, "/health"));
        h.set(Verdict::Up, ProbeDetail::default());
        h.observe_request(false);
        h.observe_request(false);
        h.observe_request(true);
        h.observe_request(false);
        h.observe_request(false);
        assert_eq!(h.verdict(), Verdict::Up);
        h.observe_request(false);
        assert_eq!(h.verdict(), Verdict::Down);
        assert!(h.detail().passive);
        // A success of a real request does not mark it up: only a probe does.
        h.observe_request(true);
        assert_eq!(h.verdict(), Verdict::Down);
    }

    #[test]
    fn passive_tracking_is_off_without_probes_or_with_zero() {
        for h in [
            UpstreamHealth::new(&config(3, "")),
            UpstreamHealth::new(&config(0, "/health")),
        ] {
            let before = h.verdict();
            for _ in 0..10 {
                h.observe_request(false);
            }
            assert_eq!(h.verdict(), before);
        }
    }
}
