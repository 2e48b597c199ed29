//! The `sluice` command: parse arguments, load the config, run until a signal.

use clap::{Parser, Subcommand};
use sluice::config::{Config, LogFormat};
use std::path::PathBuf;
use std::process::ExitCode;

/// jemalloc, with its background thread purging freed pages (10 s decay): with glibc's
/// malloc each idle keep-alive connection cost 12.6 KB of RSS against 9.9 KB, and none of
/// it came back after the connections closed (see docs/benchmarks.md). The one `static`
/// in sluice: Rust only takes a global allocator this way.
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Admission-control sidecar: a reverse proxy that decides which requests reach the app,
/// in what order, and when.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    /// Run with this configuration file.
    #[arg(long, value_name = "PATH", default_value = "config.toml")]
    config: PathBuf,
    /// Validate this configuration file (and the environment overrides), print every
    /// problem with its line number, and exit: 0 when valid, 2 when not.
    #[arg(long, value_name = "PATH", conflicts_with = "config")]
    check_config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Show admission control at work: a simulated app driven at twice its capacity
    /// with four priorities, directly and then through sluice (loopback only).
    Demo {
        /// Seconds of load in each of the two runs.
        #[arg(long, default_value_t = 10.0)]
        duration_s: f64,
        /// Requests the simulated app serves at once.
        #[arg(long, default_value_t = 20)]
        capacity: usize,
        /// Service time of each request, in milliseconds.
        #[arg(long, default_value_t = 50)]
        service_ms: u64,
        /// Seconds at a quarter of capacity before each run, not measured (0: start
        /// cold, into the overload).
        #[arg(long, default_value_t = 2.0)]
        warm_up_s: f64,
    },
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Demo {
        duration_s,
        capacity,
        service_ms,
        warm_up_s,
    }) = cli.command
    {
        return demo(duration_s, capacity, service_ms, warm_up_s);
    }
    if let Some(path) = cli.check_config {
        return match Config::load(&path, &env) {
            Ok(_) => {
                println!("{}: configuration is valid", path.display());
                ExitCode::SUCCESS
            }
            Err(errors) => {
                eprintln!("{errors}");
                eprintln!("{}: {} problem(s) found", path.display(), errors.0.len());
                ExitCode::from(2)
            }
        };
    }
    let config = match Config::load(&cli.config, &env) {
        Ok(c) => c,
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!(
                "sluice: not started: {} configuration problem(s)",
                errors.0.len()
            );
            return ExitCode::from(2);
        }
    };
    init_logging(&config);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_name("sluice-control")
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sluice: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(config))
}

async fn run(config: Config) -> ExitCode {
    let running = match sluice::app::start(config).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "sluice could not start");
            eprintln!("sluice: {e}");
            return ExitCode::FAILURE;
        }
    };
    let signal = sluice::app::wait_for_signal().await;
    tracing::info!(
        signal,
        "draining: no new connections, finishing in-flight requests"
    );
    running.begin_drain();
    running.shutdown().await;
    tracing::info!("stopped");
    ExitCode::SUCCESS
}

fn init_logging(config: &Config) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("SLUICE_LOG")
        .or_else(|_| EnvFilter::try_new(&config.observability.log_level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.observability.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn demo(duration_s: f64, capacity: usize, service_ms: u64, warm_up_s: f64) -> ExitCode {
    let Ok(duration) = std::time::Duration::try_from_secs_f64(duration_s) else {
        eprintln!("sluice demo: --duration-s {duration_s}: not a duration");
        return ExitCode::from(2);
    };
    let Ok(warm_up) = std::time::Duration::try_from_secs_f64(warm_up_s) else {
        eprintln!("sluice demo: --warm-up-s {warm_up_s}: not a duration");
        return ExitCode::from(2);
    };
    let settings = sluice::demo::DemoSettings {
        duration,
        capacity,
        service_time: std::time::Duration::from_millis(service_ms),
        warm_up,
    };
    // Quiet unless asked: `SLUICE_LOG=sluice=debug sluice demo` shows the gate's
    // decisions (windows closed, waiters swept) on stderr.
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_env("SLUICE_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sluice demo: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut out = std::io::stdout();
    match runtime.block_on(sluice::demo::run(&settings, &mut out)) {
        Ok(table) => {
            println!("\n{table}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sluice demo: {e}");
            ExitCode::FAILURE
        }
    }
}
