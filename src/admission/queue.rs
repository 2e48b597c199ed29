//! The bounded priority queue of one class. Pure: no clock, no locks, no I/O.
//!
//! Five levels, highest priority served first. Inside a level, waiters are grouped by a
//! fairness key (a client address or a header value; one shared key when the class has
//! none) and keys take turns round-robin, each key FIFO, so one heavy user cannot hold
//! the head of the line. When the queue is full, an arrival displaces the newest waiter
//! of the heaviest key at the lowest priority below its own; at its own priority it may
//! displace only a key holding at least two more waiters than the arrival's key does.
//! Otherwise the arrival is refused. Every operation is O(levels + waiters of one key).

use crate::priority::Priority;
use std::collections::{HashMap, HashSet, VecDeque};
use tokio::time::Instant;

/// Identifies a waiter so it can leave the queue (client gone, deadline passed).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ticket {
    pub id: u64,
    pub priority: Priority,
    pub key: u64,
}

/// One waiter.
#[derive(Debug)]
pub struct Entry<T> {
    pub ticket: Ticket,
    pub enqueued: Instant,
    pub deadline: Instant,
    pub value: T,
}

#[derive(Debug)]
struct Level<T> {
    /// Keys with waiters, in round-robin order.
    turns: VecDeque<u64>,
    by_key: HashMap<u64, VecDeque<Entry<T>>>,
    len: usize,
}

impl<T> Default for Level<T> {
    fn default() -> Self {
        Level {
            turns: VecDeque::new(),
            by_key: HashMap::new(),
            len: 0,
        }
    }
}

impl<T> Level<T> {
    fn push(&mut self, e: Entry<T>) {
        let key = e.ticket.key;
        let q = self.by_key.entry(key).or_default();
        if q.is_empty() {
            self.turns.push_back(key);
        }
        q.push_back(e);
        self.len += 1;
    }

    fn pop(&mut self) -> Option<Entry<T>> {
        let key = self.turns.pop_front()?;
        let q = self.by_key.get_mut(&key)?;
        let e = q.pop_front();
        if q.is_empty() {
            self.by_key.remove(&key);
        } else {
            self.turns.push_back(key);
        }
        if e.is_some() {
            self.len -= 1;
        }
        e
    }

    fn count(&self, key: u64) -> usize {
        self.by_key.get(&key).map_or(0, VecDeque::len)
    }

    /// The key holding the most waiters (ties: the one whose turn is furthest away).
    fn heaviest(&self) -> Option<(u64, usize)> {
        // max_by_key keeps the last of equals: the key whose turn comes last.
        self.turns
            .iter()
            .map(|&k| (k, self.count(k)))
            .max_by_key(|&(_, n)| n)
    }

    fn remove_newest(&mut self, key: u64) -> Option<Entry<T>> {
        let q = self.by_key.get_mut(&key)?;
        let e = q.pop_back();
        if q.is_empty() {
            self.by_key.remove(&key);
            self.turns.retain(|&k| k != key);
        }
        if e.is_some() {
            self.len -= 1;
        }
        e
    }

    /// Moves the waiters whose ids are in `ids` to `out`, the rest keeping their order.
    fn take(&mut self, ids: &HashSet<u64>, out: &mut Vec<Entry<T>>) {
        let before = out.len();
        for q in self.by_key.values_mut() {
            let (gone, kept): (VecDeque<_>, VecDeque<_>) =
                q.drain(..).partition(|e| ids.contains(&e.ticket.id));
            *q = kept;
            out.extend(gone);
        }
        self.by_key.retain(|_, q| !q.is_empty());
        let by_key = &self.by_key;
        self.turns.retain(|k| by_key.contains_key(k));
        self.len -= out.len() - before;
    }

    fn remove(&mut self, ticket: Ticket) -> Option<Entry<T>> {
        let q = self.by_key.get_mut(&ticket.key)?;
        let at = q.iter().position(|e| e.ticket.id == ticket.id)?;
        let e = q.remove(at);
        if q.is_empty() {
            self.by_key.remove(&ticket.key);
            self.turns.retain(|&k| k != ticket.key);
        }
        if e.is_some() {
            self.len -= 1;
        }
        e
    }
}

/// What happened to an arrival.
#[derive(Debug)]
pub enum Pushed<T> {
    /// Queued; `displaced` is the waiter evicted to make room, if any.
    Queued {
        ticket: Ticket,
        displaced: Option<Entry<T>>,
    },
    /// Full, and nobody it may displace: the value comes back.
    Full(T),
}

/// A bounded priority queue with per-key fairness inside each priority.
#[derive(Debug)]
pub struct PriorityQueue<T> {
    capacity: usize,
    levels: [Level<T>; 5],
    len: usize,
    next_id: u64,
}

impl<T> PriorityQueue<T> {
    pub fn new(capacity: usize) -> PriorityQueue<T> {
        PriorityQueue {
            capacity,
            levels: Default::default(),
            len: 0,
            next_id: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Waiters at exactly `p`.
    pub fn len_at(&self, p: Priority) -> usize {
        self.levels[p.index()].len
    }

    /// Waiters that would be served before a new arrival at `p` (all at `p` or above).
    pub fn ahead_of(&self, p: Priority) -> usize {
        self.levels[p.index()..].iter().map(|l| l.len).sum()
    }

    /// Adds a waiter, displacing a lower-priority (or much heavier same-priority) one
    /// when full.
    pub fn push(
        &mut self,
        priority: Priority,
        key: u64,
        enqueued: Instant,
        deadline: Instant,
        value: T,
    ) -> Pushed<T> {
        let mut displaced = None;
        if self.len >= self.capacity {
            displaced = self.victim_for(priority, key);
            if displaced.is_none() {
                return Pushed::Full(value);
            }
            self.len -= 1;
        }
        self.next_id = self.next_id.wrapping_add(1);
        let ticket = Ticket {
            id: self.next_id,
            priority,
            key,
        };
        self.levels[priority.index()].push(Entry {
            ticket,
            enqueued,
            deadline,
            value,
        });
        self.len += 1;
        Pushed::Queued { ticket, displaced }
    }

    fn victim_for(&mut self, priority: Priority, key: u64) -> Option<Entry<T>> {
        for level in &mut self.levels[..priority.index()] {
            if let Some((heavy, _)) = level.heaviest() {
                return level.remove_newest(heavy);
            }
        }
        let level = &mut self.levels[priority.index()];
        let mine = level.count(key);
        match level.heaviest() {
            Some((heavy, n)) if heavy != key && n >= mine + 2 => level.remove_newest(heavy),
            _ => None,
        }
    }

    /// The priority of the waiter [`PriorityQueue::pop`] would return.
    pub fn top_priority(&self) -> Option<Priority> {
        Priority::ALL
            .into_iter()
            .filter(|p| self.levels[p.index()].len > 0)
            .max()
    }

    /// The next waiter to serve: highest priority, keys in turn, FIFO per key.
    pub fn pop(&mut self) -> Option<Entry<T>> {
        let e = self.levels.iter_mut().rev().find_map(Level::pop)?;
        self.len -= 1;
        Some(e)
    }

    /// Takes a waiter out (it gave up). `None` if it already left (served or displaced).
    pub fn remove(&mut self, ticket: Ticket) -> Option<Entry<T>> {
        let e = self.levels[ticket.priority.index()].remove(ticket)?;
        self.len -= 1;
        Some(e)
    }

    /// Takes out every waiter `keep` refuses, and returns them. `keep` sees each waiter
    /// in the order [`PriorityQueue::pop`] would serve them, with its place in that
    /// line: the waiters before it that were kept (0: served next). O(waiters).
    pub fn take_unless(&mut self, mut keep: impl FnMut(usize, &Entry<T>) -> bool) -> Vec<Entry<T>> {
        let mut place = 0;
        let mut out: [HashSet<u64>; 5] = Default::default();
        for (level, out) in self.levels.iter().zip(&mut out).rev() {
            // Round-robin over keys, FIFO per key: round r serves each key's r-th waiter,
            // keys in turn order. Keys run out one by one; each is dropped once it has.
            let mut alive: Vec<&VecDeque<Entry<T>>> = level
                .turns
                .iter()
                .filter_map(|k| level.by_key.get(k))
                .collect();
            let mut round = 0;
            while !alive.is_empty() {
                for q in &alive {
                    if let Some(e) = q.get(round) {
                        if keep(place, e) {
                            place += 1;
                        } else {
                            out.insert(e.ticket.id);
                        }
                    }
                }
                round += 1;
                alive.retain(|q| q.len() > round);
            }
        }
        let mut taken = Vec::new();
        for (level, ids) in self.levels.iter_mut().zip(&out) {
            if !ids.is_empty() {
                level.take(ids, &mut taken);
            }
        }
        self.len -= taken.len();
        taken
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use Priority::*;

    fn q(cap: usize) -> PriorityQueue<&'static str> {
        PriorityQueue::new(cap)
    }

    fn push(
        q: &mut PriorityQueue<&'static str>,
        p: Priority,
        key: u64,
        v: &'static str,
    ) -> Option<&'static str> {
        let now = Instant::now();
        match q.push(p, key, now, now + Duration::from_secs(1), v) {
            Pushed::Queued { displaced, .. } => displaced.map(|e| e.value).or(Some("")),
            Pushed::Full(_) => None,
        }
    }

    fn drain(q: &mut PriorityQueue<&'static str>) -> Vec<&'static str> {
        std::iter::from_fn(|| q.pop().map(|e| e.value)).collect()
    }

    #[test]
    fn highest_priority_first_fifo_within() {
        let mut q = q(10);
        push(&mut q, Low, 0, "low1");
        push(&mut q, Critical, 0, "crit1");
        push(&mut q, Normal, 0, "norm1");
        push(&mut q, Critical, 0, "crit2");
        push(&mut q, Background, 0, "bg");
        push(&mut q, Low, 0, "low2");
        assert_eq!(q.ahead_of(Normal), 3);
        assert_eq!(
            drain(&mut q),
            ["crit1", "crit2", "norm1", "low1", "low2", "bg"]
        );
        assert!(q.is_empty());
    }

    #[test]
    fn full_queue_displaces_newest_lowest_priority_waiter() {
        let mut q = q(3);
        push(&mut q, Low, 0, "low-old");
        push(&mut q, Low, 0, "low-new");
        push(&mut q, Normal, 0, "norm");
        assert_eq!(push(&mut q, Critical, 0, "crit"), Some("low-new"));
        assert_eq!(q.len(), 3);
        assert_eq!(push(&mut q, High, 0, "high"), Some("low-old"));
        // Nothing lower than normal left to displace for a normal arrival.
        assert_eq!(push(&mut q, Normal, 0, "norm2"), None);
        assert_eq!(push(&mut q, Background, 0, "bg"), None);
        assert_eq!(drain(&mut q), ["crit", "high", "norm"]);
    }

    #[test]
    fn keys_take_turns_within_a_priority() {
        let mut q = q(10);
        for v in ["a1", "a2", "a3", "a4"] {
            push(&mut q, Normal, 1, v);
        }
        push(&mut q, Normal, 2, "b1");
        push(&mut q, Normal, 3, "c1");
        push(&mut q, Normal, 2, "b2");
        assert_eq!(drain(&mut q), ["a1", "b1", "c1", "a2", "b2", "a3", "a4"]);
    }

    #[test]
    fn a_heavy_key_cannot_fill_the_queue_against_others() {
        let mut q = q(4);
        for v in ["a1", "a2", "a3", "a4"] {
            push(&mut q, Normal, 1, v);
        }
        // Same priority, a light key: the heavy key's newest waiter makes room.
        assert_eq!(push(&mut q, Normal, 2, "b1"), Some("a4"));
        assert_eq!(push(&mut q, Normal, 2, "b2"), Some("a3"));
        // Now 2 vs 2: no more displacement at the same priority.
        assert_eq!(push(&mut q, Normal, 2, "b3"), None);
        // The heavy key itself is refused rather than displacing another.
        assert_eq!(push(&mut q, Normal, 1, "a5"), None);
        assert_eq!(drain(&mut q), ["a1", "b1", "a2", "b2"]);
    }

    #[test]
    fn removal_by_ticket_and_counts_stay_right() {
        let mut q = q(5);
        let now = Instant::now();
        let t = match q.push(High, 7, now, now, "x") {
            Pushed::Queued { ticket, .. } => ticket,
            Pushed::Full(_) => unreachable!(),
        };
        push(&mut q, High, 7, "y");
        push(&mut q, Low, 0, "z");
        assert_eq!(q.remove(t).map(|e| e.value), Some("x"));
        assert_eq!(q.remove(t).map(|e| e.value), None, "already gone");
        assert_eq!((q.len(), q.len_at(High), q.len_at(Low)), (2, 1, 1));
        assert_eq!(drain(&mut q), ["y", "z"]);
    }

    #[test]
    fn zero_capacity_refuses_everything() {
        let mut q = q(0);
        assert_eq!(push(&mut q, Critical, 0, "c"), None);
    }

    #[test]
    fn take_unless_sees_waiters_in_serving_order_and_takes_only_the_refused() {
        let mut q = q(20);
        push(&mut q, Normal, 1, "n1a");
        push(&mut q, Normal, 1, "n1b");
        push(&mut q, Normal, 1, "n1c");
        push(&mut q, Normal, 2, "n2a");
        push(&mut q, Critical, 0, "crit");
        push(&mut q, Low, 0, "low");
        push(&mut q, Normal, 3, "n3a");
        push(&mut q, Normal, 3, "n3b");
        let mut seen = vec![];
        let taken = q.take_unless(|place, e| {
            seen.push((place, e.value));
            // Refuse key 3's first waiter and the low one.
            !matches!(e.value, "n3a" | "low")
        });
        // Serving order is n1a n2a n3a n1b n3b n1c (keys in turn); places count the kept
        // waiters ahead only, so n3a and n1b share place 3.
        assert_eq!(
            seen,
            [
                (0, "crit"),
                (1, "n1a"),
                (2, "n2a"),
                (3, "n3a"),
                (3, "n1b"),
                (4, "n3b"),
                (5, "n1c"),
                (6, "low"),
            ]
        );
        let mut taken: Vec<_> = taken.into_iter().map(|e| e.value).collect();
        taken.sort_unstable();
        assert_eq!(taken, ["low", "n3a"]);
        assert_eq!(q.len(), 6);
        assert_eq!(q.len_at(Low), 0);
        // Key 3 keeps its turn: n3b is served where n3a would have been.
        assert_eq!(drain(&mut q), ["crit", "n1a", "n2a", "n3b", "n1b", "n1c"]);
        assert!(q.is_empty());
        // Nothing refused: nothing taken, nothing moved.
        push(&mut q, High, 0, "h");
        assert!(q.take_unless(|_, _| true).is_empty());
        assert_eq!(q.len(), 1);
    }
}
