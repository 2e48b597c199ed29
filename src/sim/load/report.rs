//! What a load run measured: counts by outcome, latency distributions and a per-second
//! series for each stream, as JSON or as a text table.
//!
//! Latencies are from the *intended* send time, so a late generator, a wait for a
//! connection or a slow connect all count (no coordinated omission).

use std::fmt::Write as _;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::time::Instant;

use super::request::{Done, Outcome};
use crate::sim::histogram::Histogram;

/// Most seconds kept in a per-second series (one hour); later seconds are not kept.
pub const MAX_SERIES_SECONDS: usize = 3600;

/// Precision of the per-second histograms: 5 bits, within 3 %, 5.6 KB each.
const SERIES_BITS: u32 = 5;

/// Refusals by status: answers that say "not now" rather than serve the request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Refusals {
    pub s503: u64,
    pub s429: u64,
    pub s502: u64,
    pub s504: u64,
    /// 500 and any other 5xx.
    pub other_5xx: u64,
}

impl Refusals {
    pub fn total(&self) -> u64 {
        self.s503 + self.s429 + self.s502 + self.s504 + self.other_5xx
    }
}

/// Sends that got no HTTP answer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientErrors {
    pub connect: u64,
    /// The connection broke mid-exchange (reset, early close, malformed response).
    pub reset: u64,
    /// No complete response within the plan's timeout from the intended send time.
    pub timeout: u64,
    /// Not sent: all `max_connections` busy, or the generator itself fell behind.
    pub saturated: u64,
}

impl ClientErrors {
    pub fn total(&self) -> u64 {
        self.connect + self.reset + self.timeout + self.saturated
    }
}

/// One second of one stream, by intended send time.
#[derive(Clone, Debug)]
pub struct Second {
    pub sent: u64,
    pub successes: u64,
    pub refusals: u64,
    pub errors: u64,
    pub success_latency: Histogram,
    pub refusal_latency: Histogram,
}

impl Default for Second {
    fn default() -> Self {
        Self {
            sent: 0,
            successes: 0,
            refusals: 0,
            errors: 0,
            success_latency: Histogram::with_bits(SERIES_BITS),
            refusal_latency: Histogram::with_bits(SERIES_BITS),
        }
    }
}

/// Everything measured for one stream. `sent` counts every scheduled send, and equals
/// `successes + refusals.total() + errors.total()`.
#[derive(Clone, Debug)]
pub struct StreamReport {
    pub name: String,
    pub rate_per_sec: f64,
    pub sent: u64,
    /// 2xx, 3xx, and 4xx other than 429.
    pub successes: u64,
    pub refusals: Refusals,
    pub errors: ClientErrors,
    /// Microseconds from intended send to complete response, for successes.
    pub success_latency: Histogram,
    /// Same, for refusals.
    pub refusal_latency: Histogram,
    /// Microseconds from the start of the send to the complete refusal: the refusal's
    /// latency without the generator's own lateness (`send_lag`), which on a busy
    /// machine can be most of it.
    pub refusal_from_send: Histogram,
    /// Microseconds from intended send to the start of the send: the generator's own
    /// lateness, already included in the latencies above.
    pub send_lag: Histogram,
    pub series: Vec<Second>,
}

impl StreamReport {
    pub(super) fn new(name: &str, rate_per_sec: f64) -> Self {
        Self {
            name: name.to_owned(),
            rate_per_sec,
            sent: 0,
            successes: 0,
            refusals: Refusals::default(),
            errors: ClientErrors::default(),
            success_latency: Histogram::new(),
            refusal_latency: Histogram::new(),
            refusal_from_send: Histogram::new(),
            send_lag: Histogram::new(),
            series: Vec::new(),
        }
    }

    fn second(&mut self, offset: Duration) -> Option<&mut Second> {
        let idx = usize::try_from(offset.as_secs()).ok()?;
        if idx >= MAX_SERIES_SECONDS {
            return None;
        }
        if self.series.len() <= idx {
            self.series.resize_with(idx + 1, Second::default);
        }
        self.series.get_mut(idx)
    }

    /// Count a send that never left (saturated), intended at `offset` from the start.
    pub(super) fn record_unsent(&mut self, offset: Duration) {
        self.sent += 1;
        self.errors.saturated += 1;
        if let Some(s) = self.second(offset) {
            s.sent += 1;
            s.errors += 1;
        }
    }

    /// Count a finished send.
    pub(super) fn record(&mut self, start: Instant, done: &Done) {
        self.sent += 1;
        let latency = done.finished.saturating_duration_since(done.intended);
        self.send_lag
            .record_duration(done.started.saturating_duration_since(done.intended));
        let offset = done.intended.saturating_duration_since(start);
        let kind = match done.outcome {
            Outcome::Status(429) => {
                self.refusals.s429 += 1;
                Kind::Refusal
            }
            Outcome::Status(s) if s >= 500 => {
                match s {
                    502 => self.refusals.s502 += 1,
                    503 => self.refusals.s503 += 1,
                    504 => self.refusals.s504 += 1,
                    _ => self.refusals.other_5xx += 1,
                }
                Kind::Refusal
            }
            Outcome::Status(_) => {
                self.successes += 1;
                Kind::Success
            }
            Outcome::Connect => self.error(|e| &mut e.connect),
            Outcome::Reset => self.error(|e| &mut e.reset),
            Outcome::Timeout => self.error(|e| &mut e.timeout),
        };
        match kind {
            Kind::Success => self.success_latency.record_duration(latency),
            Kind::Refusal => {
                self.refusal_latency.record_duration(latency);
                self.refusal_from_send
                    .record_duration(done.finished.saturating_duration_since(done.started));
            }
            Kind::Error => {}
        }
        if let Some(s) = self.second(offset) {
            s.sent += 1;
            match kind {
                Kind::Success => {
                    s.successes += 1;
                    s.success_latency.record_duration(latency);
                }
                Kind::Refusal => {
                    s.refusals += 1;
                    s.refusal_latency.record_duration(latency);
                }
                Kind::Error => s.errors += 1,
            }
        }
    }

    fn error(&mut self, field: impl FnOnce(&mut ClientErrors) -> &mut u64) -> Kind {
        *field(&mut self.errors) += 1;
        Kind::Error
    }

    /// Count sends the schedule dropped because the generator fell behind.
    pub(super) fn record_dropped(&mut self, n: u64) {
        self.sent += n;
        self.errors.saturated += n;
    }

    /// Count sends that were still outstanding when the run was cut off.
    pub(super) fn record_cut_off(&mut self, n: u64) {
        self.sent += n;
        self.errors.timeout += n;
    }

    fn to_json(&self) -> Value {
        let series: Vec<Value> = self
            .series
            .iter()
            .enumerate()
            .map(|(i, s)| {
                json!({
                    "second": i,
                    "sent": s.sent,
                    "successes": s.successes,
                    "refusals": s.refusals,
                    "errors": s.errors,
                    "success_p99_us": s.success_latency.quantile(0.99),
                    "refusal_p99_us": s.refusal_latency.quantile(0.99),
                    "refusal_max_us": s.refusal_latency.max(),
                })
            })
            .collect();
        json!({
            "name": self.name,
            "rate_per_sec": self.rate_per_sec,
            "sent": self.sent,
            "successes": self.successes,
            "refusals": {
                "total": self.refusals.total(),
                "503": self.refusals.s503,
                "429": self.refusals.s429,
                "502": self.refusals.s502,
                "504": self.refusals.s504,
                "other_5xx": self.refusals.other_5xx,
            },
            "client_errors": {
                "total": self.errors.total(),
                "connect": self.errors.connect,
                "reset": self.errors.reset,
                "timeout": self.errors.timeout,
                "client_saturated": self.errors.saturated,
            },
            "success_latency_us": latency_json(&self.success_latency),
            "refusal_latency_us": latency_json(&self.refusal_latency),
            "refusal_from_send_us": latency_json(&self.refusal_from_send),
            "send_lag_us": latency_json(&self.send_lag),
            "series": series,
        })
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Success,
    Refusal,
    Error,
}

/// The result of [`super::run`].
#[derive(Clone, Debug)]
pub struct LoadReport {
    /// The planned send window.
    pub planned: Duration,
    /// From the first intended send to the last response (or the cut-off).
    pub elapsed: Duration,
    pub streams: Vec<StreamReport>,
}

fn latency_json(h: &Histogram) -> Value {
    json!({
        "count": h.count(),
        "p50": h.quantile(0.5),
        "p90": h.quantile(0.9),
        "p99": h.quantile(0.99),
        "p999": h.quantile(0.999),
        "max": h.max(),
        "mean": (h.mean() * 10.0).round() / 10.0,
    })
}

fn ms(us: u64) -> String {
    format!("{:.2}", us as f64 / 1000.0)
}

impl LoadReport {
    /// The whole report as JSON; latencies in microseconds.
    pub fn to_json(&self) -> Value {
        json!({
            "planned_s": self.planned.as_secs_f64(),
            "elapsed_s": self.elapsed.as_secs_f64(),
            "streams": self.streams.iter().map(StreamReport::to_json).collect::<Vec<_>>(),
        })
    }

    /// A readable summary: counts, then latency percentiles in milliseconds.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        let _ = writeln!(
            out,
            "elapsed {:.2} s (planned {:.2} s)\n",
            self.elapsed.as_secs_f64(),
            self.planned.as_secs_f64()
        );
        let _ =
            writeln!(
            out,
            "{:<14} {:>8} {:>8} {:>8} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6} {:>7} {:>6} {:>9}",
            "stream", "rate/s", "sent", "ok", "503", "429", "502", "504", "5xx", "conn",
            "reset", "timeout", "sat", "ok/s"
        );
        for s in &self.streams {
            let (r, e) = (&s.refusals, &s.errors);
            let _ = writeln!(
                out,
                "{:<14} {:>8.1} {:>8} {:>8} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6} {:>7} {:>6} {:>9.1}",
                s.name, s.rate_per_sec, s.sent, s.successes, r.s503, r.s429, r.s502, r.s504,
                r.other_5xx, e.connect, e.reset, e.timeout, e.saturated,
                s.successes as f64 / secs
            );
        }
        let _ = writeln!(
            out,
            "\nlatency, ms from intended send time († from the actual send)"
        );
        let _ = writeln!(
            out,
            "{:<14} {:<8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
            "stream", "kind", "count", "p50", "p90", "p99", "p99.9", "max"
        );
        for s in &self.streams {
            for (kind, h) in [
                ("ok", &s.success_latency),
                ("refused", &s.refusal_latency),
                ("refused†", &s.refusal_from_send),
                ("send lag", &s.send_lag),
            ] {
                if h.count() == 0 {
                    continue;
                }
                let _ = writeln!(
                    out,
                    "{:<14} {:<8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
                    s.name,
                    kind,
                    h.count(),
                    ms(h.quantile(0.5)),
                    ms(h.quantile(0.9)),
                    ms(h.quantile(0.99)),
                    ms(h.quantile(0.999)),
                    ms(h.max())
                );
            }
        }
        out
    }
}
