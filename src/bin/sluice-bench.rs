//! `sluice-bench`: the simulated app, the open-loop load generator, and the control
//! client that scripts use to change the app mid-run. A thin shell over `sluice::sim`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use sluice::sim::app::{check_spread, Mode, SimApp, SimSettings};
use sluice::sim::load::{self, Arrivals, LoadPlan, Stream};

#[derive(Parser, Debug)]
#[command(name = "sluice-bench", version, about = "Benchmark tools for sluice")]
struct Cli {
    /// Runtime worker threads (default: one per core). On a small machine shared with
    /// the proxy and the app, fewer threads mean fewer scheduler stalls.
    #[arg(long, global = true)]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the simulated app until SIGINT or SIGTERM.
    App {
        #[arg(long, default_value = "127.0.0.1:8000")]
        addr: SocketAddr,
        /// Requests served at once.
        #[arg(long, default_value_t = 20)]
        capacity: usize,
        /// Service time of each request, in milliseconds.
        #[arg(long, default_value_t = 50)]
        service_ms: u64,
        /// normal | fast | fail500 | reset | hang
        #[arg(long, default_value = "normal")]
        mode: Mode,
        /// Most requests waiting for capacity before the app answers 503 (0: unbounded).
        #[arg(long, default_value_t = 0)]
        queue_limit: usize,
        /// Service times spread uniformly over service-ms × [1 - F, 1 + F] (0 to 1).
        #[arg(long, default_value_t = 0.0, value_parser = parse_spread)]
        spread: f64,
    },
    /// Send open-loop load and print what happened.
    Load {
        #[arg(long, default_value = "127.0.0.1:8080")]
        target: SocketAddr,
        #[arg(long, default_value_t = 10.0)]
        duration_s: f64,
        /// name=N,rate=R,path=/p,method=M,header=K:V (repeat for several streams).
        #[arg(long = "stream", required = true)]
        streams: Vec<Stream>,
        /// Also write the report as JSON to this file.
        #[arg(long)]
        json: Option<PathBuf>,
        #[arg(long, default_value_t = 2000)]
        max_connections: usize,
        /// Per-request timeout from the intended send time, in seconds.
        #[arg(long, default_value_t = 20.0)]
        timeout_s: f64,
        /// Poisson arrivals from this seed. Without it, each stream's sends are evenly
        /// spaced, and streams interleaved (stream i of n sends i/n of a gap later).
        #[arg(long)]
        poisson_seed: Option<u64>,
    },
    /// POST a JSON settings change to the simulated app's /_control.
    Control {
        #[arg(long, default_value = "127.0.0.1:8000")]
        target: SocketAddr,
        /// e.g. '{"capacity":7}' or '{"mode":"fail500"}'
        json: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = cli.threads {
        builder.worker_threads(n.max(1));
    }
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sluice-bench: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Run on a worker rather than on this thread, so the load generator's loop and its
    // request tasks share threads instead of waking each other across them.
    let result = runtime.block_on(async {
        tokio::spawn(run(cli.command))
            .await
            .unwrap_or_else(|e| Err(format!("crashed: {e}")))
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sluice-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> Result<(), String> {
    match command {
        Command::App {
            addr,
            capacity,
            service_ms,
            mode,
            queue_limit,
            spread,
        } => {
            let settings = SimSettings {
                capacity,
                service_time: Duration::from_millis(service_ms),
                mode,
                queue_limit,
                spread,
            };
            let app = SimApp::start(addr, settings)
                .await
                .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
            println!("sim app listening on {}", app.addr());
            let signal = sluice::app::wait_for_signal().await;
            println!("{signal}: stopping; {}", stats_line(&app));
            app.shutdown().await;
            Ok(())
        }
        Command::Load {
            target,
            duration_s,
            streams,
            json,
            max_connections,
            timeout_s,
            poisson_seed,
        } => {
            let plan = LoadPlan {
                target,
                streams,
                duration: secs("--duration-s", duration_s)?,
                max_connections,
                timeout: secs("--timeout-s", timeout_s)?,
                arrivals: poisson_seed.map_or(Arrivals::Even, |seed| Arrivals::Poisson { seed }),
            };
            let report = load::run(plan).await.map_err(|e| e.to_string())?;
            print!("{}", report.table());
            if let Some(path) = json {
                let text = serde_json::to_string_pretty(&report.to_json())
                    .map_err(|e| format!("cannot encode the report: {e}"))?;
                std::fs::write(&path, text)
                    .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            }
            Ok(())
        }
        Command::Control { target, json } => {
            let (status, body) = sluice::sim::control::control(target, &json)
                .await
                .map_err(|e| format!("{target}: {e}"))?;
            println!("{body}");
            if status == 200 {
                Ok(())
            } else {
                Err(format!("/_control answered {status}"))
            }
        }
    }
}

fn secs(flag: &str, s: f64) -> Result<Duration, String> {
    Duration::try_from_secs_f64(s).map_err(|_| format!("{flag} {s}: not a duration"))
}

fn stats_line(app: &SimApp) -> String {
    serde_json::to_string(&app.stats()).unwrap_or_default()
}

fn parse_spread(text: &str) -> Result<f64, String> {
    let spread: f64 = text
        .parse()
        .map_err(|e| format!("not a number: {text:?} ({e})"))?;
    check_spread(spread)
}
