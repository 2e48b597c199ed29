//! Degradation mode: whether sluice should run degraded, decided from sampled signals
//! (queue wait, shed rate, upstream latency and errors, breaker, CPU, memory, DB). Pure:
//! no I/O, no locks, time comes in as `now`. What to do while degraded is the caller's.
//!
//! Decisions:
//! - **Auto always runs.** The signal timers and the Auto state are updated by every
//!   sample in every mode; `ForceOn`/`ForceOff` only override the output. Going back to
//!   `Auto` adopts the Auto state as if it had never been overridden: from `ForceOn` with
//!   signals that never held a breach it leaves at once; if Auto had entered, it leaves
//!   once everything has been clear for `exit_after` (counted from the first clear sample,
//!   which may lie in the forced period, so possibly at once).
//! - **Timers start at the first sample that shows a state.** A breach is held from the
//!   first breaching sample; clear is held from the first all-clear sample. Samples more
//!   than `max_gap` apart break every run, so nothing is "held continuously" across a gap:
//!   the sample after a gap starts new runs. A gap never enters or leaves by itself.
//! - **Reasons.** While degraded in Auto, [`Controller::reasons`] lists the signals in
//!   breach now; when none is (values within the hysteresis band, or clear but not yet
//!   for `exit_after`), the signals that were in breach when it entered. Empty when not
//!   degraded, `[Manual]` when forced on. A transition carries `reasons()` as it is just
//!   after entering, or just before leaving.
//! - A [`Transition`] is returned only when the degraded flag flips; a mode change that
//!   keeps the flag returns `None`.

pub mod sample;
mod shell;

pub use shell::{Degradation, Pressure, View};

use std::fmt;
use std::str::FromStr;
use std::time::Duration;
use tokio::time::Instant;

/// One sample of every signal. `None` is unknown (not measured yet, not on this host):
/// an unknown signal never counts as a breach and always counts as clear.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Signals {
    /// The worst class's recent queue-wait p99.
    pub queue_wait: Option<Duration>,
    /// Refused / arrived over the last interval, `0..=1`.
    pub shed_ratio: Option<f64>,
    /// Recent upstream p99, time to the response head.
    pub upstream_latency: Option<Duration>,
    /// Upstream failures / responses over the last interval, `0..=1`.
    pub error_ratio: Option<f64>,
    pub breaker_open: bool,
    /// CPU used / quota; above 1 when the quota is exceeded.
    pub cpu_ratio: Option<f64>,
    /// Memory used / limit.
    pub memory_ratio: Option<f64>,
    /// Active / max database connections.
    pub db_saturation: Option<f64>,
}

/// A breach is `value >= threshold`; a `None` threshold disables its signal.
/// `Default` disables everything.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Thresholds {
    pub queue_wait: Option<Duration>,
    pub shed_ratio: Option<f64>,
    pub upstream_latency: Option<Duration>,
    pub error_ratio: Option<f64>,
    /// Whether an open breaker counts as a breach.
    pub breaker_open: bool,
    pub cpu_ratio: Option<f64>,
    pub memory_ratio: Option<f64>,
    pub db_saturation: Option<f64>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct DegradeSettings {
    pub thresholds: Thresholds,
    /// How long one signal must stay in breach before Auto enters.
    pub enter_after: Duration,
    /// How long every signal must stay clear before Auto leaves.
    pub exit_after: Duration,
    /// Value hysteresis in `0..=1`, e.g. 0.8: a signal is clear only below
    /// `threshold * exit_margin`. Clamped into `0..=1`; NaN counts as 1 (no band).
    pub exit_margin: f64,
    /// Samples further apart than this break every run; about 4× the sampling interval.
    pub max_gap: Duration,
}

/// Why sluice is degraded: one per signal, plus an operator's override.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    QueueWait,
    ShedRate,
    UpstreamLatency,
    ErrorRate,
    BreakerOpen,
    Cpu,
    Memory,
    DbSaturation,
    Manual,
}

const SIGNAL_COUNT: usize = 8;

impl Reason {
    /// Every reason that is a sampled signal (all but `Manual`), in listing order.
    pub const SIGNALS: [Reason; SIGNAL_COUNT] = [
        Reason::QueueWait,
        Reason::ShedRate,
        Reason::UpstreamLatency,
        Reason::ErrorRate,
        Reason::BreakerOpen,
        Reason::Cpu,
        Reason::Memory,
        Reason::DbSaturation,
    ];

    /// Every reason, for pre-registering metric labels.
    pub const ALL: [Reason; SIGNAL_COUNT + 1] = [
        Reason::QueueWait,
        Reason::ShedRate,
        Reason::UpstreamLatency,
        Reason::ErrorRate,
        Reason::BreakerOpen,
        Reason::Cpu,
        Reason::Memory,
        Reason::DbSaturation,
        Reason::Manual,
    ];

    /// The snake_case name used as a metric label and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::QueueWait => "queue_wait",
            Reason::ShedRate => "shed_rate",
            Reason::UpstreamLatency => "upstream_latency",
            Reason::ErrorRate => "error_rate",
            Reason::BreakerOpen => "breaker_open",
            Reason::Cpu => "cpu",
            Reason::Memory => "memory",
            Reason::DbSaturation => "db_saturation",
            Reason::Manual => "manual",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who decides: the signals, or an operator through the admin API.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    Auto,
    ForceOn,
    ForceOff,
}

impl Mode {
    pub const ALL: [Mode; 3] = [Mode::Auto, Mode::ForceOn, Mode::ForceOff];

    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Auto => "auto",
            Mode::ForceOn => "force_on",
            Mode::ForceOff => "force_off",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A mode name that is not `auto`, `force_on` or `force_off`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown degradation mode {0:?}: expected one of auto, force_on, force_off")]
pub struct ParseModeError(pub String);

impl FromStr for Mode {
    type Err = ParseModeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Mode::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| ParseModeError(s.to_owned()))
    }
}

/// The degraded flag changed.
#[derive(Clone, Debug, PartialEq)]
pub struct Transition {
    pub degraded: bool,
    /// `reasons()` just after entering, or just before leaving.
    pub reasons: Vec<Reason>,
    pub at: Instant,
}

/// The state for the health and stats endpoints.
#[derive(Clone, Debug, PartialEq)]
pub struct DegradeSnapshot {
    pub degraded: bool,
    pub mode: Mode,
    pub reasons: Vec<Reason>,
    /// How long the degraded flag has had its current value.
    pub since: Duration,
    /// What Auto decides (it runs in every mode); equals `degraded` in Auto.
    pub auto_degraded: bool,
    /// Auto not degraded: signals in breach, not yet for `enter_after`.
    pub pending: Vec<Reason>,
    /// Auto not degraded: time until the first pending signal has held its breach.
    pub until_enter: Option<Duration>,
    /// Auto degraded and every signal clear: time until it has been for `exit_after`.
    pub until_exit: Option<Duration>,
    /// How many times the degraded flag went on (forced or not).
    pub entered_count: u64,
    pub last_transition: Option<Transition>,
}

/// Where one signal stands against its threshold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Level {
    /// Below `threshold * exit_margin`, unknown, or disabled.
    Clear,
    /// Between `threshold * exit_margin` and the threshold: keeps degraded, doesn't enter.
    Band,
    Breach,
}

/// The Auto state machine's output.
#[derive(Clone, Debug, Default)]
struct Auto {
    degraded: bool,
    entered_with: Vec<Reason>,
    reasons: Vec<Reason>,
}

/// The degradation state machine. Plain `&mut self`; the caller owns lock and clock.
#[derive(Debug)]
pub struct Controller {
    settings: DegradeSettings,
    margin: f64,
    mode: Mode,
    /// Per signal (in `Reason::SIGNALS` order): the first sample of its current breach.
    breach_since: [Option<Instant>; SIGNAL_COUNT],
    /// The first sample of the current all-clear run.
    clear_since: Option<Instant>,
    last_sample: Option<Instant>,
    auto: Auto,
    /// The effective reasons, what `reasons()` returns.
    reasons: Vec<Reason>,
    changed_at: Instant,
    entered_count: u64,
    last_transition: Option<Transition>,
}

impl Controller {
    /// Starts in `Auto`, not degraded, with no history.
    pub fn new(settings: DegradeSettings, now: Instant) -> Controller {
        let margin = if settings.exit_margin.is_nan() {
            1.0
        } else {
            settings.exit_margin.clamp(0.0, 1.0)
        };
        Controller {
            settings,
            margin,
            mode: Mode::Auto,
            breach_since: [None; SIGNAL_COUNT],
            clear_since: None,
            last_sample: None,
            auto: Auto::default(),
            reasons: Vec::new(),
            changed_at: now,
            entered_count: 0,
            last_transition: None,
        }
    }

    /// Feeds one sample. Returns a transition when the degraded flag flips.
    pub fn evaluate(&mut self, signals: &Signals, now: Instant) -> Option<Transition> {
        let was = self.is_degraded();
        self.observe(signals, now);
        self.step_auto(now);
        self.publish(was, now)
    }

    /// Switches mode (the admin endpoint). Returns a transition when the flag flips.
    pub fn set_mode(&mut self, mode: Mode, now: Instant) -> Option<Transition> {
        let was = self.is_degraded();
        self.mode = mode;
        self.publish(was, now)
    }

    pub fn settings(&self) -> &DegradeSettings {
        &self.settings
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    pub fn is_degraded(&self) -> bool {
        match self.mode {
            Mode::Auto => self.auto.degraded,
            Mode::ForceOn => true,
            Mode::ForceOff => false,
        }
    }

    /// Why it is degraded (see the module docs); empty when it is not.
    pub fn reasons(&self) -> &[Reason] {
        &self.reasons
    }

    pub fn snapshot(&self, now: Instant) -> DegradeSnapshot {
        let held = |since: Instant| now.saturating_duration_since(since);
        let (mut pending, mut until_enter, mut until_exit) = (Vec::new(), None, None);
        if self.auto.degraded {
            until_exit = self
                .clear_since
                .map(|since| self.settings.exit_after.saturating_sub(held(since)));
        } else {
            for (reason, since) in Reason::SIGNALS.into_iter().zip(self.breach_since) {
                if let Some(since) = since {
                    let left = self.settings.enter_after.saturating_sub(held(since));
                    pending.push(reason);
                    until_enter = Some(until_enter.map_or(left, |u: Duration| u.min(left)));
                }
            }
        }
        DegradeSnapshot {
            degraded: self.is_degraded(),
            mode: self.mode,
            reasons: self.reasons.clone(),
            since: held(self.changed_at),
            auto_degraded: self.auto.degraded,
            pending,
            until_enter,
            until_exit,
            entered_count: self.entered_count,
            last_transition: self.last_transition.clone(),
        }
    }

    /// Human text for logs and health issues, e.g. `queue wait p99 1.2s >= 500ms`.
    pub fn describe(reason: Reason, signals: &Signals, t: &Thresholds) -> String {
        let name = match reason {
            Reason::QueueWait => "queue wait p99",
            Reason::ShedRate => "shed rate",
            Reason::UpstreamLatency => "upstream latency p99",
            Reason::ErrorRate => "upstream error rate",
            Reason::Cpu => "cpu use of quota",
            Reason::Memory => "memory use of limit",
            Reason::DbSaturation => "db connections in use",
            Reason::BreakerOpen if signals.breaker_open => return "circuit breaker open".into(),
            Reason::BreakerOpen => return "circuit breaker closed".into(),
            Reason::Manual => return "forced on by an operator".into(),
        };
        let show = |v: f64| match reason {
            Reason::QueueWait | Reason::UpstreamLatency => secs_text(v),
            _ => percent_text(v),
        };
        match reading(reason, signals, t) {
            (None, _) => format!("{name} unknown"),
            (Some(v), None) => format!("{name} {} (no threshold)", show(v)),
            (Some(v), Some(limit)) => {
                let op = if v >= limit { ">=" } else { "<" };
                format!("{name} {} {op} {}", show(v), show(limit))
            }
        }
    }

    /// Updates the per-signal breach timers and the all-clear timer from one sample.
    fn observe(&mut self, signals: &Signals, now: Instant) {
        let max_gap = self.settings.max_gap;
        if let Some(last) = self.last_sample {
            if now.saturating_duration_since(last) > max_gap {
                self.breach_since = [None; SIGNAL_COUNT];
                self.clear_since = None;
            }
        }
        self.last_sample = Some(now);
        let mut all_clear = true;
        for (reason, since) in Reason::SIGNALS.into_iter().zip(&mut self.breach_since) {
            let level = level(reason, signals, &self.settings.thresholds, self.margin);
            all_clear &= level == Level::Clear;
            if level == Level::Breach {
                since.get_or_insert(now);
            } else {
                *since = None;
            }
        }
        if all_clear {
            self.clear_since.get_or_insert(now);
        } else {
            self.clear_since = None;
        }
    }

    /// The Auto state machine: enter on one held breach, leave on a held all-clear.
    fn step_auto(&mut self, now: Instant) {
        let held = |since: Option<Instant>, after: Duration| {
            since.is_some_and(|s| now.saturating_duration_since(s) >= after)
        };
        let breaching: Vec<Reason> = Reason::SIGNALS
            .into_iter()
            .zip(self.breach_since)
            .filter_map(|(reason, since)| since.map(|_| reason))
            .collect();
        let auto = &mut self.auto;
        if !auto.degraded {
            if self
                .breach_since
                .iter()
                .any(|s| held(*s, self.settings.enter_after))
            {
                auto.degraded = true;
                auto.entered_with.clone_from(&breaching);
            }
        } else if held(self.clear_since, self.settings.exit_after) {
            auto.degraded = false;
            auto.entered_with.clear();
        }
        auto.reasons = match (auto.degraded, breaching.is_empty()) {
            (false, _) => Vec::new(),
            (true, true) => auto.entered_with.clone(),
            (true, false) => breaching,
        };
    }

    /// Recomputes the effective reasons and reports a flip of the degraded flag.
    fn publish(&mut self, was: bool, now: Instant) -> Option<Transition> {
        let reasons = match self.mode {
            Mode::Auto => self.auto.reasons.clone(),
            Mode::ForceOn => vec![Reason::Manual],
            Mode::ForceOff => Vec::new(),
        };
        let before = std::mem::replace(&mut self.reasons, reasons);
        let degraded = self.is_degraded();
        if degraded == was {
            return None;
        }
        self.changed_at = now;
        let reasons = if degraded {
            self.entered_count += 1;
            self.reasons.clone()
        } else {
            before
        };
        let transition = Transition {
            degraded,
            reasons,
            at: now,
        };
        self.last_transition = Some(transition.clone());
        Some(transition)
    }
}

/// A signal's value and threshold as plain numbers (durations in seconds).
fn reading(reason: Reason, s: &Signals, t: &Thresholds) -> (Option<f64>, Option<f64>) {
    let secs = |d: Option<Duration>| d.map(|d| d.as_secs_f64());
    match reason {
        Reason::QueueWait => (secs(s.queue_wait), secs(t.queue_wait)),
        Reason::ShedRate => (s.shed_ratio, t.shed_ratio),
        Reason::UpstreamLatency => (secs(s.upstream_latency), secs(t.upstream_latency)),
        Reason::ErrorRate => (s.error_ratio, t.error_ratio),
        Reason::BreakerOpen => (
            Some(if s.breaker_open { 1.0 } else { 0.0 }),
            t.breaker_open.then_some(1.0),
        ),
        Reason::Cpu => (s.cpu_ratio, t.cpu_ratio),
        Reason::Memory => (s.memory_ratio, t.memory_ratio),
        Reason::DbSaturation => (s.db_saturation, t.db_saturation),
        Reason::Manual => (None, None),
    }
}

/// NaN values and thresholds compare false both ways, so they come out `Clear`.
fn level(reason: Reason, s: &Signals, t: &Thresholds, margin: f64) -> Level {
    if reason == Reason::BreakerOpen {
        // A bool has no band: a closed breaker is clear whatever the margin.
        return if t.breaker_open && s.breaker_open {
            Level::Breach
        } else {
            Level::Clear
        };
    }
    match reading(reason, s, t) {
        (Some(v), Some(limit)) if v >= limit => Level::Breach,
        (Some(v), Some(limit)) if v >= limit * margin => Level::Band,
        _ => Level::Clear,
    }
}

/// Seconds as `1.2s` / `500ms`, rounded to the millisecond.
fn secs_text(secs: f64) -> String {
    let ms = (secs * 1000.0).round();
    if ms.is_finite() && ms >= 0.0 {
        format!("{:?}", Duration::from_millis(ms as u64)) // `as` saturates
    } else {
        format!("{secs}s")
    }
}

/// A ratio as a percentage: `12%`, `0.5%`.
fn percent_text(ratio: f64) -> String {
    let pct = ratio * 100.0;
    if (pct - pct.round()).abs() < 0.05 {
        format!("{pct:.0}%")
    } else {
        format!("{pct:.1}%")
    }
}

#[cfg(test)]
mod tests;
