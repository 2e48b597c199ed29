//! A circuit breaker for the upstream, with no I/O and no clock of its own: every method
//! takes `now`, and the caller logs and counts the [`Transition`]s it is handed.
//!
//! Closed, every call goes through; too many failures in a row, or too high a failure or
//! slow-call rate over a sliding window, open it. Open, calls are refused for an interval
//! that doubles with each trip since it last closed (capped, jittered). Once the interval
//! has passed, the next [`Breaker::try_acquire`] makes it half-open: a few probe calls go
//! through, and it closes when all of them succeed or opens again when one fails.
//!
//! Hot path: closed, `try_acquire` and `record` of a fast success take no lock; they read
//! one packed atomic word (state and generation) and bump atomic window counters. Open
//! refusals take no lock either. The mutex is taken only to trip, on other transitions, in
//! the half-open state and by [`Breaker::snapshot`], and only around arithmetic.
//!
//! Counting is approximate under contention, by design: the window can lose a call when
//! a bucket rolls over (see [`window`]), and a success resetting the consecutive-failure
//! count can race a failure incrementing it. Probe slots and transitions are exact: they
//! are decided under the lock, each transition checking the generation it was decided on.

mod collector;
mod shell;
#[cfg(test)]
mod tests;
mod window;

pub use collector::ResilienceCollector;
pub use shell::{Breakers, Call, Named};

use std::sync::atomic::{
    AtomicU32, AtomicU64, Ordering::Acquire, Ordering::Relaxed, Ordering::Release,
};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::time::Instant;
use window::Window;

/// Retry hint when half-open and every probe slot is taken: probes are few and short, and
/// a second is the smallest `Retry-After` a client can be told anyway.
pub const HALF_OPEN_BUSY_RETRY: Duration = Duration::from_secs(1);
/// A probe slot whose result has not come back after `open_base` (but no sooner than
/// this) is reclaimed, so a lost [`Ticket`] cannot wedge the breaker half-open.
const MIN_PROBE_TIMEOUT: Duration = Duration::from_millis(100);

/// When the breaker opens and for how long. [`Breaker::new`] brings out-of-range values
/// into range rather than failing (rates and jitter clamped, `half_open_probes` and
/// `minimum_calls` at least 1, `open_max` at least `open_base`); validate at the edge.
#[derive(Clone, Debug, PartialEq)]
pub struct BreakerSettings {
    /// Open after this many failures in a row; 0 turns this trigger off.
    pub consecutive_failures: u32,
    /// Open when failures / calls over the window reaches this (0 < x <= 1; 0 = off).
    pub failure_rate: f64,
    /// Open when slow calls / calls over the window reaches this (0 = off).
    pub slow_call_rate: f64,
    /// A success slower than this is slow (and not a failure); `Duration::ZERO` = never.
    pub slow_call: Duration,
    /// Length of the sliding window for the two rates.
    pub window: Duration,
    /// The rates apply only once the window holds at least this many calls.
    pub minimum_calls: u32,
    /// The first open interval; also how long a half-open probe may take before its slot
    /// is reclaimed (at least 100 ms).
    pub open_base: Duration,
    /// Cap for the doubling interval (before jitter).
    pub open_max: Duration,
    /// 0..=0.5: each interval is scaled by a factor in `[1 - jitter, 1 + jitter]`.
    pub jitter: f64,
    /// Probe calls let through while half-open (at least 1); all must succeed to close.
    pub half_open_probes: u32,
}

impl BreakerSettings {
    fn sanitized(mut self) -> Self {
        let unit = |x: f64| if x > 0.0 { x.min(1.0) } else { 0.0 }; // NaN too
        self.failure_rate = unit(self.failure_rate);
        self.slow_call_rate = unit(self.slow_call_rate);
        self.jitter = unit(self.jitter).min(0.5);
        self.minimum_calls = self.minimum_calls.max(1);
        self.half_open_probes = self.half_open_probes.max(1);
        self.open_max = self.open_max.max(self.open_base);
        self
    }

    fn is_slow(&self, latency: Duration) -> bool {
        !self.slow_call.is_zero() && latency > self.slow_call
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum State {
    Closed,
    Open,
    HalfOpen,
}

impl State {
    pub const ALL: [State; 3] = [State::Closed, State::HalfOpen, State::Open];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half_open",
        }
    }

    /// For a gauge, higher is worse: 0 closed, 1 half-open, 2 open.
    pub fn code(self) -> u8 {
        match self {
            State::Closed => 0,
            State::HalfOpen => 1,
            State::Open => 2,
        }
    }
}

/// How a call admitted by [`Breaker::try_acquire`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallResult {
    /// The upstream answered acceptably, after this long (slow past `slow_call`).
    Success(Duration),
    /// The upstream failed (connect error, timeout, 5xx: the caller decides).
    Failure,
    /// Says nothing about the upstream (the client cancelled, say): counted nowhere,
    /// and frees the probe slot if the call was a probe.
    Ignored,
}

/// Why the breaker opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TripReason {
    ConsecutiveFailures,
    FailureRate,
    SlowCallRate,
    /// A half-open probe failed (or was slow, when the slow-call trigger is on).
    ProbeFailed,
}

impl TripReason {
    pub const ALL: [TripReason; 4] = [
        TripReason::ConsecutiveFailures,
        TripReason::FailureRate,
        TripReason::SlowCallRate,
        TripReason::ProbeFailed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TripReason::ConsecutiveFailures => "consecutive_failures",
            TripReason::FailureRate => "failure_rate",
            TripReason::SlowCallRate => "slow_call_rate",
            TripReason::ProbeFailed => "probe_failed",
        }
    }
}

/// A change of state, for the caller to log and count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transition {
    pub from: State,
    pub to: State,
    /// Set when `to` is [`State::Open`].
    pub reason: Option<TripReason>,
    /// The open interval chosen, jitter included; set when `to` is [`State::Open`].
    pub open_for: Option<Duration>,
}

impl Transition {
    fn to(from: State, to: State) -> Transition {
        let (reason, open_for) = (None, None);
        Transition {
            from,
            to,
            reason,
            open_for,
        }
    }
}

/// Leave to send one call, to be handed back to [`Breaker::record`] exactly once.
///
/// A ticket is plain data with no `Drop`: the caller must record every ticket, with
/// [`CallResult::Ignored`] when the call was cancelled (do it from the caller's own drop
/// guard, beside its admission permit). A ticket dropped unrecorded costs nothing while
/// closed; half-open, its probe slot is reclaimed after `open_base` (at least 100 ms), and
/// a result arriving after that is ignored.
///
/// A ticket carries the generation it was issued in (bumped on every transition and on
/// [`Breaker::reset`]); a result from an older generation is ignored, so a slow call
/// admitted while closed cannot extend an open breaker, re-open a half-open one or close it.
#[derive(Debug, PartialEq, Eq)]
#[must_use = "a ticket must be handed back to Breaker::record"]
pub struct Ticket {
    generation: u64,
    /// The probe's id when issued half-open.
    probe: Option<u64>,
}

impl Ticket {
    fn new(generation: u64, probe: Option<u64>) -> Ticket {
        Ticket { generation, probe }
    }

    /// True for a half-open probe.
    pub fn is_probe(&self) -> bool {
        self.probe.is_some()
    }
}

/// What the breaker holds, for the admin API and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BreakerSnapshot {
    pub state: State,
    pub consecutive_failures: u32,
    pub window_calls: u32,
    pub window_failures: u32,
    pub window_slow: u32,
    /// Trips since the breaker last closed (0 when closed).
    pub trips: u32,
    /// Time left before the next call makes it half-open; zero unless open.
    pub open_remaining: Duration,
    /// Transitions since the breaker was built (resets out of a non-closed state count).
    pub transitions: u64,
    pub last_trip: Option<TripReason>,
    pub probes_in_flight: u32,
    pub probe_successes: u32,
}

/// What only changes under the lock.
#[derive(Default)]
struct Inner {
    trips: u32,
    transitions: u64,
    last_trip: Option<TripReason>,
    /// Half-open probes in flight: (id, admitted at).
    probes: Vec<(u64, Instant)>,
    probe_successes: u32,
    next_probe: u64,
}

/// A circuit breaker shared by every worker behind an `Arc`; see the module docs.
pub struct Breaker {
    settings: BreakerSettings,
    seed: u64,
    origin: Instant,
    /// `generation << 2 | state code`: read lock-free, written only under `inner`.
    word: AtomicU64,
    /// End of the open interval in nanoseconds since `origin`; written only under `inner`,
    /// before `word`.
    open_until: AtomicU64,
    consecutive: AtomicU32,
    window: Window,
    inner: Mutex<Inner>,
}

fn pack(state: State, generation: u64) -> u64 {
    generation << 2 | u64::from(state.code())
}

fn unpack(word: u64) -> (State, u64) {
    let state = match word & 3 {
        0 => State::Closed,
        1 => State::HalfOpen,
        _ => State::Open,
    };
    (state, word >> 2)
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Breaker {
    /// A closed breaker. `seed` makes the jitter deterministic (give each breaker its own).
    pub fn new(settings: BreakerSettings, seed: u64, now: Instant) -> Breaker {
        let settings = settings.sanitized();
        Breaker {
            window: Window::new(settings.window, now),
            settings,
            seed,
            origin: now,
            word: AtomicU64::new(pack(State::Closed, 0)),
            open_until: AtomicU64::new(0),
            consecutive: AtomicU32::new(0),
            inner: Mutex::new(Inner::default()),
        }
    }

    pub fn settings(&self) -> &BreakerSettings {
        &self.settings
    }

    /// Asks to send one call. Refused with the exact time left when open, or with
    /// [`HALF_OPEN_BUSY_RETRY`] when half-open and every probe slot is taken.
    pub fn try_acquire(&self, now: Instant) -> Result<Ticket, Duration> {
        self.acquire(now).0
    }

    /// [`Breaker::try_acquire`], also returning the open → half-open transition when this
    /// call made it (it happens lazily here, once the open interval has passed).
    pub fn acquire(&self, now: Instant) -> (Result<Ticket, Duration>, Option<Transition>) {
        if let Some(decided) = self.acquire_unlocked(self.word.load(Acquire), now) {
            return (decided, None);
        }
        let mut inner = self.lock();
        let word = self.word.load(Relaxed);
        if let Some(decided) = self.acquire_unlocked(word, now) {
            return (decided, None);
        }
        let (state, mut generation) = unpack(word);
        let mut transition = None;
        if state == State::Open {
            generation = generation.wrapping_add(1);
            self.enter(&mut inner, State::HalfOpen, generation);
            transition = Some(Transition::to(State::Open, State::HalfOpen));
        }
        let timeout = self.settings.open_base.max(MIN_PROBE_TIMEOUT);
        inner
            .probes
            .retain(|&(_, at)| now.saturating_duration_since(at) < timeout);
        let admitted = u64::from(inner.probe_successes) + inner.probes.len() as u64;
        if admitted >= u64::from(self.settings.half_open_probes) {
            return (Err(HALF_OPEN_BUSY_RETRY), transition);
        }
        let id = inner.next_probe;
        inner.next_probe = id.wrapping_add(1);
        inner.probes.push((id, now));
        (Ok(Ticket::new(generation, Some(id))), transition)
    }

    /// Decides without the lock when closed, or when open and the interval is still
    /// running; `None` when the lock is needed (half-open, or time to go half-open).
    fn acquire_unlocked(&self, word: u64, now: Instant) -> Option<Result<Ticket, Duration>> {
        match unpack(word) {
            (State::Closed, generation) => Some(Ok(Ticket::new(generation, None))),
            (State::Open, _) => {
                let left = self.open_remaining(now);
                (!left.is_zero()).then_some(Err(left))
            }
            (State::HalfOpen, _) => None,
        }
    }

    /// Reports how a call ended; returns the transition it caused, if any. Results from an
    /// older generation, or from a probe whose slot was reclaimed, are ignored.
    pub fn record(&self, ticket: Ticket, result: CallResult, now: Instant) -> Option<Transition> {
        if ticket.is_probe() {
            return self.record_probe(ticket, result, now);
        }
        let generation = ticket.generation;
        if self.word.load(Acquire) != pack(State::Closed, generation) {
            return None;
        }
        let (failed, slow) = match result {
            CallResult::Ignored => return None,
            CallResult::Failure => (true, false),
            CallResult::Success(latency) => (false, self.settings.is_slow(latency)),
        };
        self.window.record(now, failed, slow);
        if failed {
            self.consecutive.fetch_add(1, Relaxed);
        } else {
            // Only write the shared line when there is something to reset.
            if self.consecutive.load(Relaxed) != 0 {
                self.consecutive.store(0, Relaxed);
            }
            if !slow || self.settings.slow_call_rate <= 0.0 {
                return None;
            }
        }
        let reason = self.trip_reason(now)?;
        self.trip(generation, reason, now)
    }

    /// Opens the closed breaker of `generation`, unless another thread moved it since
    /// this one decided to trip it (lock-free, on what may now be a stale view).
    fn trip(&self, generation: u64, reason: TripReason, now: Instant) -> Option<Transition> {
        let mut inner = self.lock();
        if self.word.load(Relaxed) != pack(State::Closed, generation) {
            return None;
        }
        Some(self.open(&mut inner, reason, now))
    }

    fn record_probe(&self, ticket: Ticket, result: CallResult, now: Instant) -> Option<Transition> {
        let mut inner = self.lock();
        let generation = ticket.generation;
        if self.word.load(Relaxed) != pack(State::HalfOpen, generation) {
            return None;
        }
        let slot = inner
            .probes
            .iter()
            .position(|&(id, _)| Some(id) == ticket.probe)?;
        inner.probes.swap_remove(slot);
        let failed = match result {
            CallResult::Ignored => return None,
            CallResult::Failure => true,
            CallResult::Success(latency) => {
                self.settings.slow_call_rate > 0.0 && self.settings.is_slow(latency)
            }
        };
        if failed {
            return Some(self.open(&mut inner, TripReason::ProbeFailed, now));
        }
        inner.probe_successes += 1;
        if inner.probe_successes < self.settings.half_open_probes {
            return None;
        }
        inner.trips = 0;
        self.clear_counts();
        self.enter(&mut inner, State::Closed, generation.wrapping_add(1));
        Some(Transition::to(State::HalfOpen, State::Closed))
    }

    /// The state as last moved: an open breaker whose interval has passed reports
    /// [`State::Open`] until a [`Breaker::try_acquire`] makes it half-open (see
    /// `open_remaining` in the snapshot). Lock-free.
    pub fn state(&self, _now: Instant) -> State {
        unpack(self.word.load(Acquire)).0
    }

    /// Everything the breaker holds. Takes the lock: for the admin API and metrics
    /// scrapes, not the request path.
    pub fn snapshot(&self, now: Instant) -> BreakerSnapshot {
        let inner = self.lock();
        let (state, _) = unpack(self.word.load(Relaxed));
        let window = self.window.counts(now);
        let open_remaining = match state {
            State::Open => self.open_remaining(now),
            State::Closed | State::HalfOpen => Duration::ZERO,
        };
        BreakerSnapshot {
            state,
            consecutive_failures: self.consecutive.load(Relaxed),
            window_calls: window.calls,
            window_failures: window.failures,
            window_slow: window.slow,
            trips: inner.trips,
            open_remaining,
            transitions: inner.transitions,
            last_trip: inner.last_trip,
            probes_in_flight: u32::try_from(inner.probes.len()).unwrap_or(u32::MAX),
            probe_successes: inner.probe_successes,
        }
    }

    /// Ends the open interval now (the app's health checks say it is back): the next
    /// [`Breaker::try_acquire`] goes half-open and probes, instead of waiting out an
    /// interval that may have grown long. Returns whether the breaker was open.
    pub fn end_open_interval(&self, now: Instant) -> bool {
        let _inner = self.lock();
        let (state, _) = unpack(self.word.load(Relaxed));
        if state != State::Open {
            return false;
        }
        let now = self.since_origin(now);
        self.open_until.fetch_min(now, Relaxed);
        true
    }

    /// Admin reset: closed, counters and trips cleared, outstanding tickets made stale.
    /// Returns the transition when the breaker was not closed. `last_trip` and the
    /// transition total are kept as history.
    pub fn reset(&self, _now: Instant) -> Option<Transition> {
        let mut inner = self.lock();
        let (from, generation) = unpack(self.word.load(Relaxed));
        inner.trips = 0;
        self.clear_counts();
        let generation = generation.wrapping_add(1);
        if from == State::Closed {
            // Not a transition, but outstanding tickets become stale all the same.
            self.word.store(pack(State::Closed, generation), Release);
            return None;
        }
        self.enter(&mut inner, State::Closed, generation);
        Some(Transition::to(from, State::Closed))
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Nothing under the lock can panic midway, so a poisoned lock holds a sound state.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Publishes a new state and generation; the caller holds the lock.
    fn enter(&self, inner: &mut Inner, to: State, generation: u64) {
        inner.transitions += 1;
        inner.probes.clear();
        inner.probe_successes = 0;
        self.word.store(pack(to, generation), Release);
    }

    /// Opens the breaker; the caller holds the lock and has checked the state it opens from.
    fn open(&self, inner: &mut Inner, reason: TripReason, now: Instant) -> Transition {
        let (from, generation) = unpack(self.word.load(Relaxed));
        inner.trips = inner.trips.saturating_add(1);
        inner.last_trip = Some(reason);
        let generation = generation.wrapping_add(1);
        let open_for = self.open_interval(inner.trips, generation);
        let until = self.since_origin(now).saturating_add(nanos(open_for));
        self.open_until.store(until, Relaxed);
        self.enter(inner, State::Open, generation);
        Transition {
            from,
            to: State::Open,
            reason: Some(reason),
            open_for: Some(open_for),
        }
    }

    /// `min(open_max, open_base * 2^(trips - 1))`, scaled by a factor in
    /// `[1 - jitter, 1 + jitter]` drawn from (seed, trips, generation): at most
    /// `open_max * (1 + jitter)`.
    fn open_interval(&self, trips: u32, generation: u64) -> Duration {
        let s = &self.settings;
        let doubling = 1u32
            .checked_shl(trips.saturating_sub(1))
            .unwrap_or(u32::MAX);
        let base = s.open_base.saturating_mul(doubling).min(s.open_max);
        if s.jitter <= 0.0 {
            return base;
        }
        let draw = splitmix64(self.seed ^ splitmix64(u64::from(trips) ^ splitmix64(generation)));
        let unit = (draw >> 11) as f64 / (1u64 << 53) as f64;
        let factor = 1.0 - s.jitter + 2.0 * s.jitter * unit;
        Duration::try_from_secs_f64(base.as_secs_f64() * factor).unwrap_or(base)
    }

    fn since_origin(&self, now: Instant) -> u64 {
        nanos(now.saturating_duration_since(self.origin))
    }

    fn open_remaining(&self, now: Instant) -> Duration {
        let until = self.open_until.load(Relaxed);
        Duration::from_nanos(until.saturating_sub(self.since_origin(now)))
    }

    fn clear_counts(&self) {
        self.consecutive.store(0, Relaxed);
        self.window.clear();
    }

    /// Whether the closed breaker should open now (lock-free; the trip itself is checked
    /// again under the lock).
    fn trip_reason(&self, now: Instant) -> Option<TripReason> {
        let s = &self.settings;
        let consecutive = self.consecutive.load(Relaxed);
        if s.consecutive_failures > 0 && consecutive >= s.consecutive_failures {
            return Some(TripReason::ConsecutiveFailures);
        }
        if s.failure_rate <= 0.0 && s.slow_call_rate <= 0.0 {
            return None;
        }
        let window = self.window.counts(now);
        if window.calls < s.minimum_calls {
            return None;
        }
        let ratio = |n: u32| f64::from(n) / f64::from(window.calls);
        if s.failure_rate > 0.0 && ratio(window.failures) >= s.failure_rate {
            return Some(TripReason::FailureRate);
        }
        if s.slow_call_rate > 0.0 && ratio(window.slow) >= s.slow_call_rate {
            return Some(TripReason::SlowCallRate);
        }
        None
    }
}
