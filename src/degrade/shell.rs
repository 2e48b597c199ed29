//! The running degradation mode: the [`Controller`] behind a lock that only the sampler
//! task and the admin endpoint take, and an atomic flag the request path reads.

use super::sample::{Counters, Sampler};
use super::{Controller, DegradeSettings, DegradeSnapshot, Mode, Reason, Signals, Thresholds};
use crate::config::DegradationConfig;
use crate::priority::Priority;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// What the sampler reads besides the counters.
#[derive(Clone, Copy, Debug, Default)]
pub struct Pressure {
    pub breaker_open: bool,
    pub cpu_ratio: Option<f64>,
    pub memory_ratio: Option<f64>,
}

/// Degradation mode as the rest of sluice sees it.
pub struct Degradation {
    pub config: DegradationConfig,
    degraded: AtomicBool,
    state: Mutex<State>,
}

struct State {
    controller: Controller,
    signals: Signals,
}

/// A moment's view for the JSON endpoints.
#[derive(Clone, Debug)]
pub struct View {
    pub snapshot: DegradeSnapshot,
    pub signals: Signals,
    /// One human line per reason, e.g. "queue wait p99 1.2s >= 1s".
    pub issues: Vec<String>,
}

impl Degradation {
    pub fn new(config: DegradationConfig, now: Instant) -> Degradation {
        let settings = settings(&config);
        Degradation {
            degraded: AtomicBool::new(false),
            state: Mutex::new(State {
                controller: Controller::new(settings, now),
                signals: Signals::default(),
            }),
            config,
        }
    }

    /// The hot-path check: one relaxed load.
    pub fn is_degraded(&self) -> bool {
        self.degraded.load(Relaxed)
    }

    /// Whether a request of this priority is refused now. Critical never is.
    pub fn refuses(&self, p: Priority) -> bool {
        p != Priority::Critical && p < self.config.refuse_below && self.is_degraded()
    }

    /// The queue deadline to use now: shortened while degraded.
    pub fn queue_timeout(&self, timeout: Duration) -> Duration {
        if self.is_degraded() {
            timeout.mul_f64(self.config.queue_timeout_factor)
        } else {
            timeout
        }
    }

    /// Feeds one sample; logs and returns a change of state.
    pub fn evaluate(&self, signals: Signals, now: Instant) -> Option<bool> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let t = st.controller.evaluate(&signals, now);
        st.signals = signals;
        self.publish(&st, t.as_ref().map(|t| t.degraded), "signals")
    }

    /// The admin override.
    pub fn set_mode(&self, mode: Mode, now: Instant) -> Option<bool> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let before = st.controller.mode();
        let t = st.controller.set_mode(mode, now);
        if before != mode {
            tracing::warn!(
                from = before.as_str(),
                to = mode.as_str(),
                "degradation mode set by an operator"
            );
        }
        self.publish(&st, t.as_ref().map(|t| t.degraded), "operator")
    }

    fn publish(&self, st: &State, changed: Option<bool>, by: &str) -> Option<bool> {
        let degraded = st.controller.is_degraded();
        self.degraded.store(degraded, Relaxed);
        if changed.is_some() {
            let why = issues(st).join("; ");
            if degraded {
                tracing::warn!(reasons = %why, by, refuse_below = %self.config.refuse_below, "entering degradation mode");
            } else {
                tracing::info!(by, "leaving degradation mode");
            }
        }
        changed
    }

    pub fn view(&self, now: Instant) -> View {
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        View {
            snapshot: st.controller.snapshot(now),
            signals: st.signals.clone(),
            issues: issues(&st),
        }
    }

    /// Samples every `config.interval` until shutdown: `read` gives the counters and the
    /// pressure readings of the moment.
    pub async fn run(
        &self,
        mut sampler: Sampler,
        mut read: impl FnMut() -> (Counters, Pressure),
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut ticker = tokio::time::interval(self.config.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = crate::listener::stopped(&mut shutdown) => return,
            }
            let now = Instant::now();
            let (counters, pressure) = read();
            let mut signals = sampler.observe(now, counters);
            signals.breaker_open = pressure.breaker_open;
            signals.cpu_ratio = pressure.cpu_ratio;
            signals.memory_ratio = pressure.memory_ratio;
            self.evaluate(signals, now);
        }
    }
}

fn issues(st: &State) -> Vec<String> {
    let t = &st.controller.settings().thresholds;
    st.controller
        .reasons()
        .iter()
        .map(|&r| match r {
            Reason::Manual => "forced on by an operator".to_string(),
            r => Controller::describe(r, &st.signals, t),
        })
        .collect()
}

/// The pure controller's settings from the config; `enabled = false` turns every signal
/// off (the operator override still works).
pub fn settings(c: &DegradationConfig) -> DegradeSettings {
    let on = c.enabled;
    DegradeSettings {
        thresholds: Thresholds {
            queue_wait: c.queue_wait.filter(|_| on),
            shed_ratio: c.shed_ratio.filter(|_| on),
            upstream_latency: c.upstream_latency.filter(|_| on),
            error_ratio: c.error_ratio.filter(|_| on),
            breaker_open: c.breaker_open && on,
            cpu_ratio: c.cpu_ratio.filter(|_| on),
            memory_ratio: c.memory_ratio.filter(|_| on),
            db_saturation: None,
        },
        enter_after: c.enter_after,
        exit_after: c.exit_after,
        exit_margin: c.exit_margin,
        max_gap: c.interval * 4,
    }
}
