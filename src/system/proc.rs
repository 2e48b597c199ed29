//! What `/proc/self` says about this process: resident memory, CPU time, file
//! descriptors and its cgroups. [`ProcFs`] points at `/proc/self` or a fixture tree.

use super::parse;
use std::path::PathBuf;
use std::time::Duration;

/// A `/proc/<pid>`-shaped directory.
#[derive(Clone, Debug)]
pub struct ProcFs {
    dir: PathBuf,
}

impl ProcFs {
    /// This process: `/proc/self`.
    pub fn current() -> ProcFs {
        ProcFs::new("/proc/self")
    }

    pub fn new(dir: impl Into<PathBuf>) -> ProcFs {
        ProcFs { dir: dir.into() }
    }

    fn read(&self, file: &str) -> Option<String> {
        std::fs::read_to_string(self.dir.join(file)).ok()
    }

    /// Resident set size (`status` `VmRSS`), in bytes.
    pub fn rss_bytes(&self) -> Option<u64> {
        parse::vm_rss(&self.read("status")?)
    }

    /// User + system CPU time of this process (`stat` fields 14 and 15).
    pub fn cpu_time(&self) -> Option<Duration> {
        parse::proc_stat_cpu(&self.read("stat")?)
    }

    /// Open file descriptors: entries of `fd/` (counting the one used to list it).
    pub fn open_fds(&self) -> Option<u64> {
        std::fs::read_dir(self.dir.join("fd"))
            .ok()
            .map(|d| d.count() as u64)
    }

    /// The soft `Max open files` limit; `None` when unlimited or unreadable.
    pub fn max_fds(&self) -> Option<u64> {
        parse::max_open_files(&self.read("limits")?)
    }

    /// The text of `cgroup`, for [`super::CgroupFs::new`]; empty when unreadable.
    pub fn cgroup(&self) -> String {
        self.read("cgroup").unwrap_or_default()
    }
}
