//! Where this process's cgroup files are, and what they say about CPU and memory.
//!
//! [`CgroupFs`] resolves directories once, at construction, from a cgroup mount root
//! (`/sys/fs/cgroup`, or a fixture tree in tests) and the text of `/proc/self/cgroup`:
//! - v2: the process's own cgroup (`root` + the `0::/path` line) if that directory is a
//!   v2 cgroup, else `root` itself (a container with its own cgroup namespace sees its
//!   cgroup there). A v2 cgroup is a directory with `cgroup.controllers`.
//! - v1: per controller, `root/<controller dir>/<path from /proc/self/cgroup>` if it
//!   exists, else `root/<controller dir>`; `cpu,cpuacct` directory names are tried too.
//!
//! When both exist a v2 file wins over the v1 one. Limits set on ancestor cgroups are
//! not walked up to: in a container the nearest cgroup carries the container's limits.

use super::parse;
use serde::Serialize;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

/// The cgroup files this process can see.
#[derive(Clone, Debug)]
pub struct CgroupFs {
    root: PathBuf,
    v2: Option<PathBuf>,
    v1_cpu: Option<PathBuf>,
    v1_cpuacct: Option<PathBuf>,
    v1_memory: Option<PathBuf>,
}

/// Where a CPU usage counter came from. Counters from different sources are not
/// comparable, so the CPU meter restarts when the source changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CpuSource {
    /// v2 `cpu.stat` `usage_usec`: every process in the cgroup.
    CgroupV2,
    /// v1 `cpuacct.usage`: every process in the cgroup.
    CgroupV1,
    /// `/proc/self/stat` utime + stime: this process only.
    Process,
}

/// A cumulative CPU reading.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CpuUsage {
    /// CPU time used since the counter started.
    pub total: Duration,
    pub source: CpuSource,
    /// Periods in which the cgroup was throttled (v2 `nr_throttled`, v1 `nr_throttled`).
    pub nr_throttled: Option<u64>,
    /// Time throttled (v2 `throttled_usec`, v1 `throttled_time`).
    pub throttled: Option<Duration>,
}

/// Memory of the cgroup, in bytes; `None` where a file is absent or unreadable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CgroupMemory {
    /// v2 `memory.current`, v1 `memory.usage_in_bytes`: includes page cache.
    pub usage_bytes: Option<u64>,
    /// Usage minus inactive file cache (v2 `inactive_file`, v1 `total_inactive_file`):
    /// what kubelet compares to the limit when it evicts.
    pub working_set_bytes: Option<u64>,
    /// v2 `memory.max`, v1 `memory.limit_in_bytes`; `None` when unlimited.
    pub limit_bytes: Option<u64>,
}

const V1_CPU: [&str; 3] = ["cpu", "cpu,cpuacct", "cpuacct,cpu"];
const V1_CPUACCT: [&str; 3] = ["cpuacct", "cpu,cpuacct", "cpuacct,cpu"];

impl CgroupFs {
    /// Resolves the directories under `root` for a process whose `/proc/self/cgroup`
    /// reads `self_cgroup` (pass "" when unknown: only `root` is then tried).
    pub fn new(root: impl Into<PathBuf>, self_cgroup: &str) -> CgroupFs {
        let root = root.into();
        let member = parse::membership(self_cgroup);
        let own_v2 = member.unified.as_deref().and_then(|p| under(&root, p));
        let v2 = own_v2
            .into_iter()
            .chain([root.clone()])
            .find(|d| d.join("cgroup.controllers").is_file());
        let v1 = |names: &[&str], controller: &str| {
            names
                .iter()
                .map(|n| root.join(n))
                .find(|d| d.is_dir())
                .map(|base| {
                    member
                        .v1_path(controller)
                        .and_then(|p| under(&base, p))
                        .filter(|d| d.is_dir())
                        .unwrap_or(base)
                })
        };
        CgroupFs {
            v1_cpu: v1(&V1_CPU, "cpu"),
            v1_cpuacct: v1(&V1_CPUACCT, "cpuacct"),
            v1_memory: v1(&["memory"], "memory"),
            v2,
            root,
        }
    }

    /// The mount root this was resolved from.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The v2 cgroup directory read, if any.
    pub fn v2_dir(&self) -> Option<&Path> {
        self.v2.as_deref()
    }

    /// The CPU quota in cores (fractional), `None` when there is none.
    pub fn cpu_quota_cores(&self) -> Option<f64> {
        if let Some(max) = read(&self.v2, "cpu.max") {
            return parse::cpu_max(&max);
        }
        let quota = read(&self.v1_cpu, "cpu.cfs_quota_us")?;
        let period = read(&self.v1_cpu, "cpu.cfs_period_us")?;
        parse::cfs_quota(&quota, &period)
    }

    /// The cgroup's cumulative CPU usage and throttling, v2 else v1.
    pub fn cpu_usage(&self) -> Option<CpuUsage> {
        if let Some(stat) = read(&self.v2, "cpu.stat") {
            if let Some(usec) = parse::keyed(&stat, "usage_usec") {
                return Some(CpuUsage {
                    total: Duration::from_micros(usec),
                    source: CpuSource::CgroupV2,
                    nr_throttled: parse::keyed(&stat, "nr_throttled"),
                    throttled: parse::keyed(&stat, "throttled_usec").map(Duration::from_micros),
                });
            }
        }
        let ns = parse::number(&read(&self.v1_cpuacct, "cpuacct.usage")?)?;
        let stat = read(&self.v1_cpu, "cpu.stat").unwrap_or_default();
        Some(CpuUsage {
            total: Duration::from_nanos(ns),
            source: CpuSource::CgroupV1,
            nr_throttled: parse::keyed(&stat, "nr_throttled"),
            throttled: parse::keyed(&stat, "throttled_time").map(Duration::from_nanos),
        })
    }

    /// The cgroup's memory usage, working set and limit, v2 else v1.
    pub fn memory(&self) -> CgroupMemory {
        let (dir, usage, inactive, limit) = match read(&self.v2, "memory.current") {
            Some(_) => (&self.v2, "memory.current", "inactive_file", "memory.max"),
            None => (
                &self.v1_memory,
                "memory.usage_in_bytes",
                "total_inactive_file",
                "memory.limit_in_bytes",
            ),
        };
        let usage_bytes = read(dir, usage).as_deref().and_then(parse::number);
        let inactive = read(dir, "memory.stat").and_then(|s| parse::keyed(&s, inactive));
        CgroupMemory {
            usage_bytes,
            working_set_bytes: usage_bytes.zip(inactive).map(|(u, i)| u.saturating_sub(i)),
            limit_bytes: read(dir, limit).as_deref().and_then(parse::memory_limit),
        }
    }
}

fn read(dir: &Option<PathBuf>, file: &str) -> Option<String> {
    std::fs::read_to_string(dir.as_ref()?.join(file)).ok()
}

/// `base` joined with an absolute cgroup path, or `None` if the path would leave `base`
/// (a process outside our cgroup namespace shows up as "/../..").
fn under(base: &Path, cgroup_path: &str) -> Option<PathBuf> {
    let rel = Path::new(cgroup_path.trim_start_matches('/'));
    let inside = rel.components().all(|c| matches!(c, Component::Normal(_)));
    match rel.as_os_str().is_empty() {
        true => Some(base.to_path_buf()),
        false => inside.then(|| base.join(rel)),
    }
}
