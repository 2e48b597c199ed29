//! `sluice demo`: a two-minute picture of what admission control buys, on loopback.
//!
//! Starts a simulated app with bounded capacity and drives it at twice that capacity
//! with four priorities, first directly and then through a sluice in front of a fresh
//! copy of the app, printing progress once a second and a table per priority at the
//! end. Everything runs in-process on `127.0.0.1` ephemeral ports and stops with the
//! demo; nothing here is on the request path of a real deployment.

use std::fmt::{self, Write as _};
use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use crate::config::Config;
use crate::priority::Priority;
use crate::sim::app::{Mode, SimApp, SimSettings};
use crate::sim::load::{self, Arrivals, LoadPlan, LoadReport, Stream, StreamReport};

/// The priorities the demo sends, highest first (each as its own stream).
pub const PRIORITIES: [Priority; 4] = [
    Priority::Critical,
    Priority::High,
    Priority::Normal,
    Priority::Low,
];

/// What to run.
#[derive(Clone, Debug)]
pub struct DemoSettings {
    /// Length of each of the two load runs.
    pub duration: Duration,
    /// Requests the simulated app serves at once.
    pub capacity: usize,
    /// Service time of each request.
    pub service_time: Duration,
    /// Before each run, this long at a quarter of capacity, not measured (see
    /// [`DEFAULT_WARM_UP`]); zero for none.
    pub warm_up: Duration,
}

impl Default for DemoSettings {
    fn default() -> Self {
        Self {
            duration: Duration::from_secs(10),
            capacity: 20,
            service_time: Duration::from_millis(50),
            warm_up: DEFAULT_WARM_UP,
        }
    }
}

impl DemoSettings {
    /// Requests a second the app can serve.
    pub fn capacity_rps(&self) -> f64 {
        self.capacity as f64 / self.service_time.as_secs_f64().max(1e-6)
    }
}

/// Why the demo could not run.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("capacity and service time must be at least 1")]
    Settings,
    #[error("cannot start the simulated app: {0}")]
    App(#[source] std::io::Error),
    #[error("invalid built-in configuration: {0}")]
    Config(#[from] crate::config::ConfigErrors),
    #[error("cannot start sluice: {0}")]
    Start(#[from] crate::app::StartError),
    #[error("cannot run the load: {0}")]
    Load(#[from] load::PlanError),
}

/// One priority's numbers from one load run.
#[derive(Clone, Debug, PartialEq)]
pub struct Served {
    pub sent: u64,
    pub successes: u64,
    /// Milliseconds, `None` without any success.
    pub ok_p50_ms: Option<f64>,
    pub ok_p99_ms: Option<f64>,
    /// Milliseconds, `None` without any refusal.
    pub refusal_p50_ms: Option<f64>,
    pub refusal_p99_ms: Option<f64>,
}

impl Served {
    fn from_report(s: &StreamReport) -> Served {
        let ms = |h: &crate::sim::histogram::Histogram, q| {
            (h.count() > 0).then(|| h.quantile(q) as f64 / 1000.0)
        };
        Served {
            sent: s.sent,
            successes: s.successes,
            ok_p50_ms: ms(&s.success_latency, 0.5),
            ok_p99_ms: ms(&s.success_latency, 0.99),
            refusal_p50_ms: ms(&s.refusal_latency, 0.5),
            refusal_p99_ms: ms(&s.refusal_latency, 0.99),
        }
    }

    /// Share of sends that succeeded, in percent (0 when nothing was sent).
    pub fn served_pct(&self) -> f64 {
        if self.sent == 0 {
            0.0
        } else {
            100.0 * self.successes as f64 / self.sent as f64
        }
    }
}

/// One row of the final table.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub priority: Priority,
    pub direct: Served,
    pub sluice: Served,
}

/// The demo's result: one row per priority, highest first.
#[derive(Clone, Debug, PartialEq)]
pub struct DemoTable {
    pub rows: Vec<Row>,
}

impl DemoTable {
    pub fn row(&self, priority: Priority) -> Option<&Row> {
        self.rows.iter().find(|r| r.priority == priority)
    }
}

impl fmt::Display for DemoTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let opt = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"));
        writeln!(
            f,
            "{:<9} {:<7} {:>8} {:>10} {:>10} {:>15} {:>15}",
            "priority",
            "via",
            "served %",
            "ok p50 ms",
            "ok p99 ms",
            "refusal p50 ms",
            "refusal p99 ms"
        )?;
        for r in &self.rows {
            for (via, s) in [("direct", &r.direct), ("sluice", &r.sluice)] {
                writeln!(
                    f,
                    "{:<9} {:<7} {:>8.1} {:>10} {:>10} {:>15} {:>15}",
                    r.priority.as_str(),
                    via,
                    s.served_pct(),
                    opt(s.ok_p50_ms),
                    opt(s.ok_p99_ms),
                    opt(s.refusal_p50_ms),
                    opt(s.refusal_p99_ms)
                )?;
            }
        }
        Ok(())
    }
}

/// Run the demo on the current tokio runtime, writing progress to `out`.
pub async fn run(settings: &DemoSettings, out: &mut dyn Write) -> Result<DemoTable, DemoError> {
    if settings.capacity == 0 || settings.service_time.is_zero() {
        return Err(DemoError::Settings);
    }
    let rate = settings.capacity_rps();
    let _ = writeln!(
        out,
        "app: capacity {} x {} ms = {rate:.0} req/s; load: 4 priorities x {:.0} req/s = 2x \
         capacity, {:.0} s per run",
        settings.capacity,
        settings.service_time.as_millis(),
        rate / 2.0,
        settings.duration.as_secs_f64()
    );

    let _ = writeln!(out, "\n== directly at the app ==");
    let app = start_app(settings).await?;
    let direct = match warm_up(settings, app.addr(), out).await {
        Ok(()) => drive(settings, app.addr(), out).await,
        Err(e) => Err(e),
    };
    app.shutdown().await;
    let direct = direct?;

    let _ = writeln!(out, "\n== through sluice ==");
    let app = start_app(settings).await?;
    let config =
        Config::from_toml_str(&demo_config(app.addr()), "built-in demo config", &|_| None)?;
    let sluice = crate::app::start(config).await?;
    let via = match warm_up(settings, sluice.addr, out).await {
        Ok(()) => drive(settings, sluice.addr, out).await,
        Err(e) => Err(e),
    };
    sluice.shutdown().await;
    app.shutdown().await;
    let via = via?;

    let rows = PRIORITIES
        .iter()
        .zip(direct.streams.iter().zip(&via.streams))
        .map(|(&priority, (d, s))| Row {
            priority,
            direct: Served::from_report(d),
            sluice: Served::from_report(s),
        })
        .collect();
    Ok(DemoTable { rows })
}

async fn start_app(settings: &DemoSettings) -> Result<SimApp, DemoError> {
    let sim = SimSettings {
        capacity: settings.capacity,
        service_time: settings.service_time,
        mode: Mode::Normal,
        queue_limit: 0,
        ..SimSettings::default()
    };
    SimApp::start(SocketAddr::from(([127, 0, 0, 1], 0)), sim)
        .await
        .map_err(DemoError::App)
}

/// Before each measured run: normal-priority requests at a quarter of the app's
/// capacity, not measured, the way a sidecar starts with its pod and meets an overload
/// already running (as in the benchmarks). sluice learns the app's latency meanwhile;
/// the direct run gets the same, so the two start alike. Cold (`--warm-up-s 0`), the
/// first 0.4 s of the overload go to slow start, and the waiters of that time are
/// refused only when it ends.
pub const DEFAULT_WARM_UP: Duration = Duration::from_secs(2);

async fn warm_up(
    settings: &DemoSettings,
    target: SocketAddr,
    out: &mut dyn Write,
) -> Result<(), DemoError> {
    if settings.warm_up.is_zero() {
        return Ok(());
    }
    let rate = settings.capacity_rps() / 4.0;
    let _ = writeln!(
        out,
        "warm-up: {:.1} s at {rate:.0} req/s (a quarter of capacity), not measured",
        settings.warm_up.as_secs_f64()
    );
    let plan = LoadPlan {
        target,
        streams: vec![Stream {
            name: "warm-up".to_owned(),
            rate_per_sec: rate,
            method: hyper::Method::GET,
            path: "/work".to_owned(),
            headers: Vec::new(),
        }],
        duration: settings.warm_up,
        max_connections: 4000,
        timeout: CLIENT_TIMEOUT,
        arrivals: Arrivals::Even,
    };
    load::run(plan).await?;
    Ok(())
}

/// Clients give up after this long (or the run's length, if shorter).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

async fn drive(
    settings: &DemoSettings,
    target: SocketAddr,
    out: &mut dyn Write,
) -> Result<LoadReport, DemoError> {
    let rate = settings.capacity_rps() / 2.0;
    let streams = PRIORITIES
        .iter()
        .map(|p| Stream {
            name: p.as_str().to_owned(),
            rate_per_sec: rate,
            method: hyper::Method::GET,
            path: "/work".to_owned(),
            headers: vec![("x-priority".to_owned(), p.as_str().to_owned())],
        })
        .collect();
    let plan = LoadPlan {
        target,
        streams,
        duration: settings.duration,
        max_connections: 4000,
        timeout: CLIENT_TIMEOUT.min(settings.duration),
        arrivals: Arrivals::Even,
    };
    let report = load::run_observed(plan, |elapsed, reports| {
        let _ = writeln!(out, "{}", progress_line(elapsed, reports));
    })
    .await?;
    Ok(report)
}

/// `t=3s  critical 120/118/0  high …` (answered / ok / refused per priority).
fn progress_line(elapsed: Duration, reports: &[StreamReport]) -> String {
    let mut line = format!("t={:>3.0}s  answered/ok/refused:", elapsed.as_secs_f64());
    for r in reports {
        let _ = write!(
            line,
            "  {} {}/{}/{}",
            r.name,
            r.sent,
            r.successes,
            r.refusals.total()
        );
    }
    line
}

/// sluice in front of `app`: one adaptive class (it has to find the app's capacity on
/// its own) and routes that take the priority from the `x-priority` header.
fn demo_config(app: SocketAddr) -> String {
    let mut routes = String::new();
    for p in [Priority::Critical, Priority::High, Priority::Low] {
        let _ = write!(
            routes,
            "[[routes]]\nname = \"{p}\"\nheaders = {{ \"x-priority\" = \"{p}\" }}\n\
             class = \"app\"\npriority = \"{p}\"\n\n",
            p = p.as_str()
        );
    }
    format!(
        "[listener]\naddr = \"127.0.0.1:0\"\nworkers = 1\nhttp2 = false\n\n\
         [observability]\naddr = \"\"\n\n\
         [upstream]\naddr = \"{app}\"\nrequest_timeout_ms = 10000\n\n\
         [classes.app]\nmax_concurrent = 100\nmin_concurrent = 4\nadaptive = true\n\
         queue_size = 200\nqueue_timeout_ms = 5000\n\n\
         {routes}[default_route]\nclass = \"app\"\npriority = \"normal\"\n\n\
         [health]\npath = \"\"\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_config_is_valid() {
        let addr = SocketAddr::from(([127, 0, 0, 1], 8000));
        let config = Config::from_toml_str(&demo_config(addr), "demo", &|_| None);
        assert!(config.is_ok(), "{:?}", config.err());
    }
}
