//! One class's gate: its concurrency slots, its priority queue, and the permits that
//! hold slots.
//!
//! Fast path: when nobody waits and a slot is free, admission is one compare-and-swap
//! on the in-flight count; no lock. Only waiting takes the class's lock. A released
//! slot goes straight to the best waiter (under the lock), so the in-flight count never
//! dips while someone waits. Lost wake-ups cannot happen: an arrival re-checks for a
//! free slot under the lock after queueing, and a release looks at the queue after
//! freeing its slot; with sequentially consistent atomics one of the two sees the other.
//!
//! Waiters are futures: a deadline timer, a channel the permit arrives on, and a guard
//! that takes the waiter out of the queue if the future is dropped (the client left).
//! A permit sent to a waiter that has just gone is dropped with the channel and so
//! releases its slot: nothing leaks.

use super::limit::{Limiter, WindowSample};
use super::queue::{Entry, PriorityQueue, Pushed, Ticket};
use super::stats::GateStats;
use super::Rejection;
use crate::config::ClassConfig;
use crate::priority::Priority;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::time::Instant;

type Grant = Result<Permit, Rejection>;

/// The limiter and the start of its current measurement window.
struct Control {
    limiter: Limiter,
    window_started: Instant,
}

/// A window closes once it holds this many completions (fewer at small limits) ...
const WINDOW_SAMPLES: u64 = 10;
/// ... or once it is this old, however few it holds.
const MAX_WINDOW: Duration = Duration::from_secs(1);

struct State {
    queue: PriorityQueue<oneshot::Sender<Grant>>,
    /// When the queue's current busy spell began: it went from empty to non-empty, and
    /// has not been empty for `codel_interval` since (None: no spell).
    nonempty_since: Option<Instant>,
    /// When the queue last emptied (None while it holds waiters). A queue that empties
    /// for a moment under steady overload (a sweep, a burst of completions) is still
    /// standing: otherwise each moment would give the next `codel_interval` of arrivals
    /// the full queue timeout and the whole drain rate, whatever their priority.
    emptied: Option<Instant>,
    /// When the queue last emptied during a spell that had stood: a new spell within
    /// [`REENTRY_INTERVALS`] of it stands at once (see [`Gate::recalled`]).
    stood: Option<Instant>,
    /// When [`Gate::sweep`] last judged the queue (None: never).
    swept_at: Option<Instant>,
    /// When [`Gate::sweep`] first judged the current spell, keyed by the spell's
    /// `nonempty_since`: the moment the queue was first taken to stand.
    first_swept: Option<(Instant, Instant)>,
}

/// Completions gathered for the limiter's next window (atomics; no lock per request).
#[derive(Default)]
struct Window {
    samples: AtomicU64,
    rtt_sum_us: AtomicU64,
    rtt_min_us: AtomicU64,
    dropped: AtomicU64,
    max_inflight: AtomicUsize,
    completions: AtomicU64,
}

/// A refusal with the wait the client should leave before retrying.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refused {
    pub reason: Rejection,
    pub retry_after: Duration,
}

pub struct Gate {
    pub config: ClassConfig,
    inflight: AtomicUsize,
    limit: AtomicUsize,
    /// Slots at the top of the limit only critical requests may take (the limiter's
    /// critical lane).
    lane: AtomicUsize,
    queued: AtomicUsize,
    /// Priorities (bit [`Priority::index`]) that were starved (see [`Gate::starved_now`])
    /// at the last window close: they take the lock to look again before taking a free
    /// slot.
    starved: AtomicU8,
    state: Mutex<State>,
    limiter: Mutex<Control>,
    window: Window,
    /// Completions a second, smoothed (f64 bits).
    drain_rate: AtomicU64,
    /// While the limiter dips under the app's capacity to re-measure its baseline, the
    /// dipped limit over the limit before the dip (f64 bits; 1 otherwise): the drain
    /// rate the next waiters can count on is that much lower for the dip's windows, and
    /// a lower priority's share of it (what higher ones leave) falls by more.
    drain_scale: AtomicU64,
    /// The limit outside dips.
    undipped: AtomicUsize,
    /// The limiter's no-queue latency of the app, in microseconds (0: unknown).
    baseline_us: AtomicU64,
    /// The limiter is still climbing (slow start or recovery): no standing-queue
    /// shortening and no early shedding, which would refuse load the limit is about to
    /// let in.
    ramping: std::sync::atomic::AtomicBool,
    /// Arrivals per priority since the last window close ...
    arrivals: [AtomicU64; 5],
    /// ... and a second, smoothed (f64 bits), for the share of the drain rate each
    /// priority can count on while a queue stands.
    arrival_rates: [AtomicU64; 5],
    pub stats: GateStats,
}

impl Gate {
    pub fn new(config: ClassConfig, limiter: Limiter) -> Arc<Gate> {
        let (limit, ramping) = (limiter.limit(), limiter.ramping());
        Arc::new(Gate {
            inflight: AtomicUsize::new(0),
            limit: AtomicUsize::new(limit),
            lane: AtomicUsize::new(0),
            queued: AtomicUsize::new(0),
            starved: AtomicU8::new(0),
            state: Mutex::new(State {
                queue: PriorityQueue::new(config.queue_size),
                nonempty_since: None,
                emptied: None,
                stood: None,
                swept_at: None,
                first_swept: None,
            }),
            limiter: Mutex::new(Control {
                limiter,
                window_started: Instant::now(),
            }),
            window: Window {
                rtt_min_us: AtomicU64::new(u64::MAX),
                ..Window::default()
            },
            drain_rate: AtomicU64::new(0f64.to_bits()),
            drain_scale: AtomicU64::new(1f64.to_bits()),
            undipped: AtomicUsize::new(limit),
            baseline_us: AtomicU64::new(0),
            ramping: std::sync::atomic::AtomicBool::new(ramping),
            arrivals: Default::default(),
            arrival_rates: Default::default(),
            stats: GateStats::default(),
            config,
        })
    }

    /// Waiters in the queue.
    pub fn queued(&self) -> usize {
        self.queued.load(Relaxed)
    }

    pub fn inflight(&self) -> usize {
        self.inflight.load(Relaxed)
    }

    pub fn limit(&self) -> usize {
        self.limit.load(Relaxed)
    }

    /// Slots of the limit only critical requests may take.
    pub fn lane(&self) -> usize {
        self.lane.load(Relaxed)
    }

    #[cfg(test)]
    fn set_lane(&self, lane: usize) {
        self.lane.store(lane, SeqCst);
    }

    /// Waiters per priority (index = `Priority::index`).
    pub fn queued_by_priority(&self) -> [usize; 5] {
        let st = self.lock();
        let mut out = [0; 5];
        for p in Priority::ALL {
            out[p.index()] = st.queue.len_at(p);
        }
        out
    }

    /// Completions a second, smoothed over recent windows.
    pub fn drain_rate(&self) -> f64 {
        f64::from_bits(self.drain_rate.load(Relaxed))
    }

    pub fn baseline_rtt(&self) -> Option<Duration> {
        self.limiter
            .lock()
            .ok()
            .and_then(|c| c.limiter.baseline_rtt())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the queue inconsistent in a way
        // that matters more than refusing service, so poisoning is ignored.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The slots priority `p` may fill: the limit, less the critical lane for the rest.
    fn cap_for(&self, p: Priority) -> usize {
        let limit = self.limit.load(SeqCst);
        if p == Priority::Critical {
            limit
        } else {
            limit.saturating_sub(self.lane.load(SeqCst)).max(1)
        }
    }

    /// Completions that free no slot for `p`: in flight above what `p` may fill, after
    /// the limit fell (slow start leaving at the step into overload, a cut) or while
    /// critical requests hold the lane.
    fn excess_for(&self, p: Priority) -> usize {
        self.inflight.load(SeqCst).saturating_sub(self.cap_for(p))
    }

    /// Takes a slot for a request at `p` if one is free for it: critical requests up to
    /// the limit, the rest up to the limit less the critical lane.
    fn try_acquire(&self, p: Priority) -> bool {
        let limit = self.cap_for(p);
        let mut cur = self.inflight.load(SeqCst);
        loop {
            if cur >= limit {
                return false;
            }
            match self
                .inflight
                .compare_exchange_weak(cur, cur + 1, SeqCst, SeqCst)
            {
                Ok(_) => {
                    self.window.max_inflight.fetch_max(cur + 1, Relaxed);
                    return true;
                }
                Err(now) => cur = now,
            }
        }
    }

    /// Admits at `priority`, waiting until `deadline` at most.
    pub async fn admit(
        self: &Arc<Self>,
        priority: Priority,
        key: u64,
        deadline: Instant,
    ) -> Result<Permit, Refused> {
        self.arrivals[priority.index()].fetch_add(1, Relaxed);
        let starved = self.starved.load(Relaxed) & (1 << priority.index()) != 0;
        if self.queued.load(SeqCst) == 0 && !starved && self.try_acquire(priority) {
            self.stats.admitted(priority, Duration::ZERO);
            return Ok(Permit::new(self.clone()));
        }
        let now = Instant::now();
        let (tx, mut rx) = oneshot::channel();
        let (ticket, displaced, deadline) = {
            let mut st = self.lock();
            if st.queue.is_empty()
                && !self.starved_now(&st, priority, now)
                && self.try_acquire(priority)
            {
                drop(st);
                self.stats.admitted(priority, Duration::ZERO);
                return Ok(Permit::new(self.clone()));
            }
            let deadline = self.effective_deadline(&st, priority, now, deadline);
            if let Some(refused) = self.predict(&st, priority, now, deadline) {
                drop(st);
                return Err(self.refuse(priority, refused));
            }
            let (ticket, displaced) = match st.queue.push(priority, key, now, deadline, tx) {
                Pushed::Queued { ticket, displaced } => (ticket, displaced),
                Pushed::Full(_) => {
                    let retry = self.retry_after(st.queue.ahead_of(priority));
                    drop(st);
                    return Err(self.refuse(
                        priority,
                        Refused {
                            reason: Rejection::QueueFull,
                            retry_after: retry,
                        },
                    ));
                }
            };
            self.after_change(&mut st, now);
            // A slot may have been freed while we queued: hand it out now.
            let leftovers = self.dispatch(&mut st, now);
            drop(st);
            finish(leftovers);
            (ticket, displaced, deadline)
        };
        if let Some(victim) = displaced {
            // Counted here; the victim's own `admit` turns it into its 503.
            self.stats
                .rejected(victim.ticket.priority, Rejection::Displaced);
            let _ = victim.value.send(Err(Rejection::Displaced));
        }
        let mut guard = WaitGuard {
            gate: self,
            ticket,
            active: true,
        };
        let sleep = tokio::time::sleep_until(deadline);
        tokio::pin!(sleep);
        let outcome = tokio::select! {
            granted = &mut rx => granted.unwrap_or(Err(Rejection::QueueTimeout)),
            _ = &mut sleep => {
                guard.active = false;
                match guard.leave() {
                    true => Err(Rejection::QueueTimeout),
                    // Already taken out: a permit (or a refusal) is on its way or here.
                    false => rx.try_recv().unwrap_or(Err(Rejection::QueueTimeout)),
                }
            }
        };
        guard.active = false;
        match outcome {
            Ok(permit) => Ok(permit),
            Err(reason) => {
                let retry = self.retry_after(self.queued.load(Relaxed));
                if reason == Rejection::QueueTimeout {
                    tracing::debug!(
                        class = %self.config.name,
                        priority = %priority,
                        waited_ms = now.elapsed().as_secs_f64() * 1e3,
                        queued = self.queued.load(Relaxed),
                        inflight = self.inflight(),
                        limit = self.limit(),
                        "queue timeout"
                    );
                }
                if reason != Rejection::Displaced {
                    self.stats.rejected(priority, reason);
                }
                Err(Refused {
                    reason,
                    retry_after: retry,
                })
            }
        }
    }

    /// The queue has stood for `codel_interval`: held waiters all along, or emptied for
    /// less than that at a time (and the limit is not climbing).
    fn standing(&self, st: &State, now: Instant) -> bool {
        !self.ramping.load(Relaxed)
            && st.nonempty_since.is_some_and(|since| {
                now.saturating_duration_since(since) >= self.config.codel_interval
            })
            && st
                .emptied
                .is_none_or(|at| now.saturating_duration_since(at) < self.config.codel_interval)
    }

    /// The deadline a waiter actually gets: shorter once the queue is standing, except
    /// for critical waiters, who are first in line and only wait for the next free slot
    /// (their own overload is caught by [`Gate::predict`] instead). The short wait is
    /// `codel_target`, or one no-queue app latency if that is longer: asking a request
    /// to wait less than one service time would refuse work a slot is about to take.
    fn effective_deadline(
        &self,
        st: &State,
        p: Priority,
        now: Instant,
        deadline: Instant,
    ) -> Instant {
        // (A waiter that starts a spell standing at once, see [`Gate::recalled`], too.)
        if p != Priority::Critical && (self.standing(st, now) || self.recalled(st, now)) {
            deadline.min(now + self.short_wait())
        } else {
            deadline
        }
    }

    /// The wait a standing queue gives non-critical waiters (see
    /// [`Gate::effective_deadline`]).
    fn short_wait(&self) -> Duration {
        let baseline = Duration::from_micros(self.baseline_us.load(Relaxed));
        self.config.codel_target.max(baseline)
    }

    /// In a standing queue, takes out the non-critical waiters that will not be served in
    /// time, to be refused now rather than at their deadline: any whose place in line,
    /// at the rate left for its priority (see [`Gate::predict`]), does not come before
    /// its time runs out. Waiters queued before the queue first stood keep their queue
    /// timeout: they have waited up to `codel_interval` already, so a refusal now is a
    /// late one, and the lower priorities a higher one starves (rate nil) are all that
    /// the onset's sweep should refuse. (Given the short wait from their arrival, as
    /// new waiters of a standing queue get, high's waiters of an overload's first 50 ms
    /// were refused some 100 ms in, however soon they would have been served.) Those
    /// queued with the full timeout while the limit climbed after it stood get the
    /// short wait from their arrival. (CoDel drops at the head what waited too long; in
    /// a priority queue the waits that will be too long are at the back.) Critical
    /// waiters keep their full deadline, as on arrival.
    fn sweep(&self, st: &mut State, now: Instant) -> Vec<Entry<oneshot::Sender<Grant>>> {
        if st.queue.is_empty() || !self.standing(st, now) || self.drain_rate() <= 0.0 {
            return Vec::new();
        }
        st.swept_at = Some(now);
        let stood_at = match (st.first_swept, st.nonempty_since) {
            (Some((spell, at)), Some(since)) if spell == since => at,
            (_, since) => {
                st.first_swept = since.map(|since| (since, now));
                now
            }
        };
        let short = self.short_wait();
        let rates = Priority::by_index(|p| self.rate_for(st, p, now));
        let excess = Priority::by_index(|p| self.excess_for(p));
        let taken = st.queue.take_unless(|place, e| {
            let p = e.ticket.priority;
            if p == Priority::Critical || e.deadline <= e.enqueued + short {
                // Critical, or queued with the short wait already: its own deadline
                // stands (the estimate is a mean; many a waiter it gives up on is
                // served in time).
                return true;
            }
            // Queued before the queue stood, with the queue timeout: by now a refusal
            // is late whatever happens, so its own deadline stands unless it cannot be
            // served in it. Queued with the full timeout while the limit climbed after
            // the queue stood: the short wait, from its arrival.
            let by = if e.enqueued < stood_at {
                e.deadline
            } else {
                e.enqueued + short
            };
            let needed = place + 1 + excess[p.index()];
            let keep =
                estimated_wait(needed, rates[p.index()]) <= by.saturating_duration_since(now);
            if !keep {
                tracing::debug!(
                    class = %self.config.name,
                    priority = %p,
                    waited_ms = now.saturating_duration_since(e.enqueued).as_secs_f64() * 1e3,
                    place,
                    rate = rates[p.index()],
                    excess = excess[p.index()],
                    drain = self.drain_rate(),
                    "swept"
                );
            }
            keep
        });
        if !taken.is_empty() {
            self.after_change(st, now);
        }
        taken
    }

    /// Sweeps (see [`Gate::sweep`]) as soon as the queue stands, not at the next window
    /// close: the waiters that queued with the full timeout before it stood are refused
    /// about `codel_interval` after the spell began, instead of up to a window (100 ms)
    /// later. Once per onset; the sweeps after it come with the window closes, as
    /// before (one every few milliseconds would give up on waiters near the head that
    /// the estimate, a mean, only just misses). The controller calls this every
    /// [`crate::admission::SWEEP_POLL`] while any class has waiters.
    pub fn sweep_if_newly_standing(&self, now: Instant) {
        if self.queued.load(SeqCst) == 0 {
            return;
        }
        let mut st = self.lock();
        let Some(since) = st.nonempty_since else {
            return;
        };
        let stood_at = since + self.config.codel_interval;
        if !self.standing(&st, now) || st.swept_at.is_some_and(|at| at >= stood_at) {
            return;
        }
        let swept = self.sweep(&mut st, now);
        drop(st);
        for e in swept {
            let _ = e.value.send(Err(Rejection::Shed));
        }
    }

    /// Arrivals a second at priority `p`, smoothed.
    pub fn arrival_rate(&self, p: Priority) -> f64 {
        f64::from_bits(self.arrival_rates[p.index()].load(Relaxed))
    }

    /// Completions a second that priority `p` can count on. While a queue stands, every
    /// higher priority's arrivals are served first, so `p` gets what they leave.
    fn rate_for(&self, st: &State, p: Priority, now: Instant) -> f64 {
        let drain = self.drain_rate() * f64::from_bits(self.drain_scale.load(Relaxed));
        if !self.standing(st, now) {
            return drain;
        }
        let above: f64 = Priority::ALL
            .iter()
            .filter(|&&q| q > p)
            .map(|&q| self.arrival_rate(q))
            .sum();
        drain - above
    }

    /// Whether arrivals above `p` use up the drain rate before `p` gets any: in a
    /// standing queue, the rate left for `p` does not serve one request within the
    /// short wait. A slot free for a moment then is not `p`'s to take (the next higher
    /// arrival needs it), and `p` is refused on arrival (see [`Gate::predict`]).
    /// Without this, under steady overload the lowest priority would take every slot
    /// that came free while the queue happened to be empty, and a higher one would be
    /// refused for it.
    fn starved_now(&self, st: &State, p: Priority, now: Instant) -> bool {
        p != Priority::Critical
            && self.drain_rate() > 0.0
            && self.standing(st, now)
            && self.rate_for(st, p, now) * self.short_wait().as_secs_f64() < 1.0
    }

    /// Refuses at once a waiter that, at the rate left for its priority, cannot be
    /// served before its deadline: a refusal in microseconds instead of a timeout later.
    /// Before the waiters ahead of it, any completions that free no slot for it (see
    /// [`Gate::excess_for`]) must come too.
    fn predict(&self, st: &State, p: Priority, now: Instant, deadline: Instant) -> Option<Refused> {
        if self.drain_rate() <= 0.0 || self.ramping.load(Relaxed) {
            return None;
        }
        if st.queue.is_empty() && !self.starved_now(st, p, now) {
            return None;
        }
        let ahead = st.queue.ahead_of(p);
        let rate = self.rate_for(st, p, now);
        let wait = estimated_wait(ahead + 1 + self.excess_for(p), rate);
        // In a standing queue a lower priority's share is what the higher ones leave: a
        // small change in the drain is a large one in it. A waiter the estimate only
        // just fits is refused now rather than timed out at its deadline.
        let budget = deadline.saturating_duration_since(now);
        let budget = if p != Priority::Critical && self.standing(st, now) {
            budget.mul_f64(PREDICT_SLACK)
        } else {
            budget
        };
        (wait > budget).then(|| Refused {
            reason: Rejection::Shed,
            retry_after: self.retry_after(ahead),
        })
    }

    fn refuse(&self, p: Priority, r: Refused) -> Refused {
        self.stats.rejected(p, r.reason);
        r
    }

    /// How long until `ahead` waiters drain at the measured rate, in whole seconds 1–60.
    pub fn retry_after(&self, ahead: usize) -> Duration {
        let rate = self.drain_rate();
        let secs = if rate > 0.0 {
            ((ahead as f64 + 1.0) / rate).ceil()
        } else {
            1.0
        };
        Duration::from_secs(secs.clamp(1.0, 60.0) as u64)
    }

    fn after_change(&self, st: &mut State, now: Instant) {
        self.queued.store(st.queue.len(), SeqCst);
        if st.queue.is_empty() {
            if st.emptied.is_none() && self.standing(st, now) {
                st.stood = Some(now);
            }
            st.emptied.get_or_insert(now);
        } else {
            let recalled = self.recalled(st, now);
            if let Some(at) = st.emptied.take() {
                if now.saturating_duration_since(at) >= self.config.codel_interval {
                    // A new spell; one soon after a standing one stands at once.
                    st.nonempty_since = recalled
                        .then(|| now.checked_sub(self.config.codel_interval))
                        .flatten();
                }
            }
            st.nonempty_since.get_or_insert(now);
        }
    }

    /// The queue is empty, its last spell is over, and one that stood ended less than
    /// [`REENTRY_INTERVALS`] × `codel_interval` ago: the next waiter starts a spell
    /// that stands at once. As CoDel re-enters its dropping state where it left off when
    /// the queue builds again soon: under steady overload a queue often empties for a
    /// little longer than the interval (at a priority whose arrivals about match its
    /// share), and a spell that started afresh each time would give its first interval
    /// of arrivals the full queue timeout, to be refused late by the sweep.
    fn recalled(&self, st: &State, now: Instant) -> bool {
        let interval = self.config.codel_interval;
        st.queue.is_empty()
            && st
                .emptied
                .is_some_and(|at| now.saturating_duration_since(at) >= interval)
            && st
                .stood
                .is_some_and(|at| now.saturating_duration_since(at) < interval * REENTRY_INTERVALS)
    }

    /// Hands free slots to the best waiters. Returns grants that could not be delivered
    /// or refusals to send, to be finished after the lock is released.
    fn dispatch(
        self: &Arc<Self>,
        st: &mut State,
        now: Instant,
    ) -> Vec<Entry<oneshot::Sender<Grant>>> {
        let mut expired = Vec::new();
        while let Some(p) = st.queue.top_priority() {
            if !self.try_acquire(p) {
                break;
            }
            let Some(entry) = st.queue.pop() else {
                self.inflight.fetch_sub(1, SeqCst);
                break;
            };
            if entry.deadline <= now {
                self.inflight.fetch_sub(1, SeqCst);
                expired.push(entry);
                continue;
            }
            let waited = now.saturating_duration_since(entry.enqueued);
            self.stats.admitted(entry.ticket.priority, waited);
            let permit = Permit::new(self.clone());
            if let Err(Ok(mut permit)) = entry.value.send(Ok(permit)) {
                // The waiter is gone: take the slot back without re-entering the lock.
                permit.armed = false;
                self.inflight.fetch_sub(1, SeqCst);
            }
        }
        self.after_change(st, now);
        expired
    }

    fn release(self: &Arc<Self>) {
        self.inflight.fetch_sub(1, SeqCst);
        self.window.completions.fetch_add(1, Relaxed);
        if self.queued.load(SeqCst) > 0 {
            let now = Instant::now();
            let mut st = self.lock();
            let leftovers = self.dispatch(&mut st, now);
            drop(st);
            finish(leftovers);
        }
    }

    fn record(&self, rtt: Duration, overload: bool) {
        self.stats.upstream.observe(rtt);
        let us = u64::try_from(rtt.as_micros()).unwrap_or(u64::MAX);
        let w = &self.window;
        w.samples.fetch_add(1, Relaxed);
        w.rtt_sum_us.fetch_add(us, Relaxed);
        w.rtt_min_us.fetch_min(us, Relaxed);
        if overload {
            w.dropped.fetch_add(1, Relaxed);
        }
    }

    /// Closes the current measurement window if it holds enough completions (or is old
    /// enough): feeds the limiter, updates the drain rate, and lets waiters in if the
    /// limit rose. Called by the controller task every tick.
    pub fn end_window(self: &Arc<Self>, now: Instant) {
        let Ok(mut ctl) = self.limiter.lock() else {
            return;
        };
        let window = now.saturating_duration_since(ctl.window_started);
        let w = &self.window;
        let needed = WINDOW_SAMPLES.min(self.limit() as u64).max(1);
        if w.samples.load(Relaxed) < needed && window < MAX_WINDOW {
            return; // keep gathering: a thin window says little
        }
        ctl.window_started = now;
        let samples = w.samples.swap(0, Relaxed);
        let sum = w.rtt_sum_us.swap(0, Relaxed);
        let min = w.rtt_min_us.swap(u64::MAX, Relaxed);
        let inflight = self.inflight.load(Relaxed);
        let sample = WindowSample {
            samples,
            rtt_avg: Duration::from_micros(sum.checked_div(samples).unwrap_or(0)),
            rtt_min: Duration::from_micros(if min == u64::MAX { 0 } else { min }),
            max_inflight: w.max_inflight.swap(inflight, Relaxed),
            inflight_at_end: inflight,
            dropped: w.dropped.swap(0, Relaxed),
            window,
            lane: self.lane.load(SeqCst),
            critical: self.arrivals[Priority::Critical.index()].load(Relaxed),
            arrivals: Some(self.arrivals.iter().map(|a| a.load(Relaxed)).sum()),
        };
        let completions = w.completions.swap(0, Relaxed) as f64;
        let rate = completions / window.as_secs_f64().max(1e-3);
        let old = self.drain_rate();
        // Smoothed over a few windows on the way down (a stalled class decays toward
        // zero), but followed at once on the way up: while the limit climbs (slow start,
        // a recovery), a lagging estimate would have predictive shedding refuse work the
        // app is about to take.
        // An idle window (nothing completed, in flight or queued) keeps the estimate:
        // quiet says nothing about the app's speed, and an estimate decayed over a quiet
        // minute would have predictive shedding refuse the next burst outright.
        let idle = completions == 0.0 && sample.max_inflight == 0 && self.queued.load(SeqCst) == 0;
        let new = if idle {
            old
        } else if old == 0.0 || rate >= old * DRAIN_JUMP {
            rate
        } else {
            old * 0.7 + rate * 0.3
        };
        self.drain_rate.store(new.to_bits(), Relaxed);
        let secs = window.as_secs_f64().max(1e-3);
        for (count, smoothed) in self.arrivals.iter().zip(&self.arrival_rates) {
            let count = count.swap(0, Relaxed);
            let rate = count as f64 / secs;
            let old = f64::from_bits(smoothed.load(Relaxed));
            // A step up is believed at once, like the drain's climb: the rate left for
            // each lower priority is what these leave, and an estimate lagging a step
            // by a few windows queues lower waiters for completions the higher
            // arrivals take (they time out instead of being refused on arrival).
            let new = if count >= ARRIVAL_JUMP_MIN && rate >= old * DRAIN_JUMP {
                rate
            } else {
                old * 0.7 + rate * 0.3
            };
            smoothed.store(new.to_bits(), Relaxed);
        }
        let limit = ctl.limiter.update(&sample);
        let lane = ctl.limiter.lane();
        let scale = if ctl.limiter.is_probing() {
            (limit as f64 / self.undipped.load(Relaxed).max(1) as f64).min(1.0)
        } else {
            self.undipped.store(limit, Relaxed);
            1.0
        };
        self.drain_scale.store(scale.to_bits(), Relaxed);
        self.ramping.store(ctl.limiter.ramping(), Relaxed);
        let baseline = ctl.limiter.baseline_rtt().unwrap_or_default();
        self.baseline_us.store(
            u64::try_from(baseline.as_micros()).unwrap_or(u64::MAX),
            Relaxed,
        );
        tracing::debug!(
            class = %self.config.name,
            samples,
            rtt_ms = sample.rtt_avg.as_secs_f64() * 1e3,
            max_inflight = sample.max_inflight,
            dropped = sample.dropped,
            limit,
            lane,
            baseline_ms = ctl.limiter.baseline_rtt().map(|d| d.as_secs_f64() * 1e3),
            "window closed"
        );
        drop(ctl);
        let before = self.limit.swap(limit, SeqCst);
        let lane_before = self.lane.swap(lane, SeqCst);
        let queued = self.queued.load(SeqCst) > 0;
        if queued || self.starved.load(Relaxed) != 0 {
            let mut st = self.lock();
            let leftovers = if queued && (limit > before || lane < lane_before) {
                self.dispatch(&mut st, now)
            } else {
                Vec::new()
            };
            let swept = self.sweep(&mut st, now);
            let starved = Priority::ALL
                .iter()
                .filter(|&&p| self.starved_now(&st, p, now))
                .fold(0u8, |bits, p| bits | 1 << p.index());
            self.starved.store(starved, Relaxed);
            drop(st);
            finish(leftovers);
            for e in swept {
                let _ = e.value.send(Err(Rejection::Shed));
            }
        }
    }
}

/// How long `needed` completions take at `rate` a second (`Duration::MAX` when the rate
/// leaves nothing).
fn estimated_wait(needed: usize, rate: f64) -> Duration {
    if rate > 0.0 {
        Duration::from_secs_f64((needed as f64 / rate).min(3600.0))
    } else {
        Duration::MAX
    }
}

/// Tells expired waiters found during dispatch that their time is up.
fn finish(expired: Vec<Entry<oneshot::Sender<Grant>>>) {
    for e in expired {
        let _ = e.value.send(Err(Rejection::QueueTimeout));
    }
}

/// Takes a waiter out of the queue if its future is dropped while waiting.
struct WaitGuard<'a> {
    gate: &'a Arc<Gate>,
    ticket: Ticket,
    active: bool,
}

impl WaitGuard<'_> {
    /// True if the waiter was still queued (and is now out).
    fn leave(&self) -> bool {
        let mut st = self.gate.lock();
        let removed = st.queue.remove(self.ticket);
        if removed.is_some() {
            self.gate.after_change(&mut st, Instant::now());
        }
        drop(st);
        removed.is_some()
    }
}

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        if self.active {
            self.leave();
        }
    }
}

/// A new spell this many `codel_interval`s after a standing one ended stands at once
/// (CoDel's memory of its last dropping state spans 16 intervals).
const REENTRY_INTERVALS: u32 = 16;

/// In a standing queue a non-critical arrival queues only if the estimated wait takes at
/// most this share of what it may wait (see [`Gate::predict`]).
const PREDICT_SLACK: f64 = 0.9;

/// A window that drained this many times the estimate replaces it outright (and so
/// does one whose arrivals at a priority were this many times their smoothed rate) ...
const DRAIN_JUMP: f64 = 1.5;
/// ... if it had at least this many of those arrivals: fewer are too noisy to believe
/// outright (at 5 a window, one in eight windows of random arrivals has 8).
const ARRIVAL_JUMP_MIN: u64 = 10;

/// Holds one of a class's concurrency slots; frees it on drop.
pub struct Permit {
    gate: Arc<Gate>,
    armed: bool,
}

impl std::fmt::Debug for Permit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Permit")
            .field("class", &self.gate.config.name)
            .finish()
    }
}

impl Permit {
    fn new(gate: Arc<Gate>) -> Permit {
        Permit { gate, armed: true }
    }

    /// Reports the app's latency to the response head for the adaptive limit;
    /// `overload` marks timeouts and the app's own 503s.
    pub fn record(&self, rtt: Duration, overload: bool) {
        self.gate.record(rtt, overload);
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if self.armed {
            self.gate.release();
        }
    }
}

#[cfg(test)]
mod tests;
