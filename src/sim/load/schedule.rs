//! The send schedule: one OS thread that emits each stream's intended send times.
//!
//! A thread rather than a tokio timer because tokio's timer wheel fires on millisecond
//! ticks: every send would start up to 1 ms late, and that lateness (which the report
//! rightly counts as latency) would swamp the sub-2 ms refusal latencies under test.
//! `std::thread::sleep` wakes within tens of microseconds. The thread never blocks on
//! the runtime: when the channel is full, the send is counted as dropped.
//!
//! Linux lets a sleep end up to the thread's timer slack late (50 µs by default) so
//! that wake-ups can be coalesced; the schedule thread asks for 1 ns instead (see
//! [`tighten_timer_slack`]). On the benchmark machine that took a 1.25 ms sleep's median
//! lateness from about 106 µs to 48 µs (a Python probe), and the generator's median send
//! lag from about 0.14 ms to 0.07-0.10 ms (bench/README.md, "Reading the tables").

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc::{self, error::TrySendError};
use tokio::time::Instant;

use super::Arrivals;

/// One intended send.
#[derive(Clone, Copy, Debug)]
pub(super) struct Tick {
    pub stream: usize,
    pub intended: Instant,
}

/// Sends dropped because the generator fell behind, one counter per stream.
pub(super) type Dropped = Arc<[AtomicU64]>;

/// Arrival times of one stream, relative to the start.
struct Arrival {
    rate: f64,
    /// Even spacing: where in its gap this stream sends, as a share of the gap.
    phase: f64,
    next: Option<Duration>,
    index: u64,
    rng: Option<XorShift>,
}

impl Arrival {
    /// Stream `stream` of `streams`. Evenly spaced streams are interleaved: stream `i`
    /// sends `i / streams` of a gap after stream 0, so streams of the same rate do not
    /// all send at the same instant (a burst no set of independent clients makes, which
    /// made the last of each burst wait for the others in the generator and the proxy).
    fn new(rate: f64, arrivals: Arrivals, stream: usize, streams: usize) -> Self {
        let rng = match arrivals {
            Arrivals::Even => None,
            Arrivals::Poisson { seed } => Some(XorShift::new(seed ^ (stream as u64 + 1))),
        };
        let mut a = Self {
            rate,
            phase: stream as f64 / streams.max(1) as f64,
            next: None,
            index: 0,
            rng,
        };
        a.next = (rate > 0.0).then(|| a.gap());
        a
    }

    /// Offset of the next send for even spacing, or a random gap for Poisson.
    fn gap(&mut self) -> Duration {
        match &mut self.rng {
            None => Duration::from_secs_f64((self.index as f64 + self.phase) / self.rate),
            Some(rng) => Duration::from_secs_f64(-(1.0 - rng.unit()).ln() / self.rate),
        }
    }

    fn advance(&mut self) {
        self.index += 1;
        self.next = match (self.next, self.rng.is_some()) {
            (Some(_), false) => Some(self.gap()),
            (Some(t), true) => Some(t + self.gap()),
            (None, _) => None,
        };
    }
}

/// Start the schedule thread. It ends after the last send before `start + duration`,
/// or as soon as the receiver is gone.
pub(super) fn spawn(
    start: Instant,
    duration: Duration,
    rates: &[f64],
    arrivals: Arrivals,
    tx: mpsc::Sender<Tick>,
    dropped: Dropped,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let mut streams: Vec<Arrival> = rates
        .iter()
        .enumerate()
        .map(|(i, &r)| Arrival::new(r, arrivals, i, rates.len()))
        .collect();
    std::thread::Builder::new()
        .name("sluice-bench-schedule".into())
        .spawn(move || {
            if let Err(e) = tighten_timer_slack() {
                eprintln!("sluice-bench: timer slack left as it was ({e}): sends may start later");
            }
            run(start, duration, &mut streams, &tx, &dropped);
        })
}

/// One pass of the schedule: sleep to each intended send, hand it to the runtime.
fn run(
    start: Instant,
    duration: Duration,
    streams: &mut [Arrival],
    tx: &mpsc::Sender<Tick>,
    dropped: &Dropped,
) {
    loop {
        let Some((stream, offset)) = streams
            .iter()
            .enumerate()
            .filter_map(|(i, a)| a.next.map(|t| (i, t)))
            .min_by_key(|&(_, t)| t)
        else {
            return;
        };
        if offset >= duration {
            return;
        }
        let intended = start + offset;
        let now = Instant::now();
        if intended > now {
            std::thread::sleep(intended - now);
        }
        match tx.try_send(Tick { stream, intended }) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                dropped[stream].fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Closed(_)) => return,
        }
        streams[stream].advance();
    }
}

/// Sets the calling thread's timer slack to 1 ns (`prctl` would need `unsafe`). A
/// thread may set its own without privilege.
fn tighten_timer_slack() -> std::io::Result<()> {
    std::fs::write(own_timer_slack_path()?, "1")
}

/// `/proc/<tid>/timerslack_ns` of the calling thread. `/proc/thread-self` names the
/// thread as `<pid>/task/<tid>`, a directory that has no `timerslack_ns` of its own.
fn own_timer_slack_path() -> std::io::Result<String> {
    let link = std::fs::read_link("/proc/thread-self")?;
    let tid = link
        .file_name()
        .and_then(|t| t.to_str())
        .filter(|t| t.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| std::io::Error::other(format!("unexpected /proc/thread-self: {link:?}")))?;
    Ok(format!("/proc/{tid}/timerslack_ns"))
}

/// A small xorshift64* generator: enough for seeded, reproducible arrival gaps.
#[derive(Clone, Debug)]
pub(super) struct XorShift(u64);

impl XorShift {
    pub(super) fn new(seed: u64) -> Self {
        // Zero is a fixed point of xorshift; mix the seed so 0 is usable too.
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [0, 1).
    pub(super) fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn own_timer_slack() -> String {
        let path = own_timer_slack_path().expect("the thread's /proc entry");
        std::fs::read_to_string(path).expect("timerslack_ns")
    }

    #[test]
    fn the_schedule_thread_tightens_only_its_own_timer_slack() {
        let before = own_timer_slack();
        assert_ne!(
            before.trim(),
            "1",
            "the test thread starts at the default slack"
        );
        let inside = std::thread::spawn(|| {
            tighten_timer_slack().expect("a thread may set its own timer slack");
            own_timer_slack()
        })
        .join()
        .expect("thread");
        assert_eq!(inside.trim(), "1");
        assert_eq!(own_timer_slack(), before, "other threads keep theirs");
    }

    #[test]
    fn even_spacing_has_exact_count() {
        let mut a = Arrival::new(100.0, Arrivals::Even, 3, 4);
        let mut n = 0;
        while a.next.is_some_and(|t| t < Duration::from_secs(2)) {
            n += 1;
            a.advance();
        }
        assert_eq!(n, 200);
    }

    #[test]
    fn even_streams_of_one_rate_are_interleaved_not_sent_at_once() {
        // Four streams at 100/s: one send every 2.5 ms in turn, not four every 10 ms.
        let firsts: Vec<Duration> = (0..4)
            .map(|i| {
                Arrival::new(100.0, Arrivals::Even, i, 4)
                    .next
                    .unwrap_or_default()
            })
            .collect();
        let ms = |m: f64| Duration::from_secs_f64(m / 1e3);
        assert_eq!(firsts, [ms(0.0), ms(2.5), ms(5.0), ms(7.5)]);
        let mut a = Arrival::new(100.0, Arrivals::Even, 2, 4);
        a.advance();
        assert_eq!(a.next, Some(ms(15.0)));
    }

    #[test]
    fn poisson_mean_gap_matches_rate_and_is_reproducible() {
        let count = |seed| {
            let mut a = Arrival::new(1000.0, Arrivals::Poisson { seed }, 0, 1);
            let mut n = 0u32;
            while a.next.is_some_and(|t| t < Duration::from_secs(20)) {
                n += 1;
                a.advance();
            }
            n
        };
        let n = count(7);
        assert!((19_400..20_600).contains(&n), "{n}");
        assert_eq!(n, count(7));
        assert_ne!(n, count(8));
    }
}
