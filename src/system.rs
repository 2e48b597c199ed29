//! Resource readings of the process and its cgroup: CPU quota, usage and throttling,
//! memory (RSS, cgroup usage, working set, limit), file descriptors.
//!
//! - [`parse`] is pure text-in, number-out; garbage gives `None`.
//! - [`CgroupFs`] and [`ProcFs`] own every file read, rooted where tests point them.
//! - [`CpuMeter`] turns a cumulative CPU counter into a ratio; pure, caller's clock.
//! - [`SystemMonitor`] samples all of it on an interval ([`run`]) and keeps the latest
//!   [`SystemSnapshot`] for the JSON endpoint, metrics ([`SystemCollector`]) and signals.
//!
//! Nothing here guesses: a value that cannot be read is `None` and its metric is omitted.

mod cgroup;
mod collector;
mod meter;
mod monitor;
pub mod parse;
mod proc;
#[cfg(test)]
mod tests;

pub use cgroup::{CgroupFs, CgroupMemory, CpuSource, CpuUsage};
pub use collector::SystemCollector;
pub use meter::CpuMeter;
pub use monitor::{run, SystemMonitor, TaskCount, MIN_INTERVAL};
/// `VmRSS` of a `/proc/<pid>/status` text, in bytes (kept for `tests/streaming.rs`).
pub use parse::vm_rss as parse_vm_rss;
pub use proc::ProcFs;

use serde::Serialize;

/// One reading of everything. `None` means "could not be read here", never a guess.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct SystemSnapshot {
    /// CPUs this process may use: the cgroup quota rounded up, at least 1, at most
    /// `std::thread::available_parallelism`.
    pub cpu_count: usize,
    /// The cgroup CPU quota in cores, fractional (0.5 = half a core); `None` = no quota.
    pub cpu_quota_cores: Option<f64>,
    /// Share of the quota (or, without one, of the available cores) used since the
    /// previous sample. `None` on the first sample and after a counter reset.
    pub cpu_usage_ratio: Option<f64>,
    /// Cumulative CPU time of the cgroup (or of this process without one), seconds.
    pub cpu_usage_seconds_total: Option<f64>,
    /// Where `cpu_usage_seconds_total` came from.
    pub cpu_usage_source: Option<CpuSource>,
    /// CFS periods in which the cgroup was throttled.
    pub cpu_throttled_periods_total: Option<u64>,
    /// Time the cgroup spent throttled, seconds.
    pub cpu_throttled_seconds_total: Option<f64>,
    /// Resident set size of this process (`VmRSS`), bytes. The name predates the cgroup
    /// fields and is kept for `/api/v1/performance/concurrency`.
    pub memory_usage_bytes: Option<u64>,
    /// The cgroup's memory usage including page cache, bytes.
    pub memory_cgroup_usage_bytes: Option<u64>,
    /// Cgroup usage minus inactive file cache, bytes: the number kubelet evicts on.
    pub memory_working_set_bytes: Option<u64>,
    /// The cgroup memory limit, bytes; `None` when there is none.
    pub memory_limit_bytes: Option<u64>,
    /// File descriptors open in this process.
    pub open_fds: Option<u64>,
    /// The soft limit on open file descriptors; `None` when unlimited or unreadable.
    pub max_fds: Option<u64>,
    /// Live tokio tasks, from the count function given to the monitor, if any.
    pub tokio_tasks: Option<usize>,
}

impl SystemSnapshot {
    /// Memory in use over the limit: the working set when known, else RSS. `None`
    /// without a limit.
    pub fn memory_ratio(&self) -> Option<f64> {
        let used = self.memory_working_set_bytes.or(self.memory_usage_bytes)?;
        ratio(used, self.memory_limit_bytes?)
    }

    /// Open file descriptors over the soft limit.
    pub fn fd_ratio(&self) -> Option<f64> {
        ratio(self.open_fds?, self.max_fds?)
    }
}

fn ratio(used: u64, limit: u64) -> Option<f64> {
    (limit > 0).then(|| used as f64 / limit as f64)
}

/// Whole CPUs for a quota: rounded up, at least 1, at most `available`.
pub fn cpu_count(quota_cores: Option<f64>, available: usize) -> usize {
    let available = available.max(1);
    // `as` saturates: a huge quota gives usize::MAX, NaN gives 0; clamp fixes both.
    quota_cores.map_or(available, |q| (q.ceil() as usize).clamp(1, available))
}
