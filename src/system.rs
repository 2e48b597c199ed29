//! Readings of the process and its cgroup: resident memory, the memory limit, CPUs
//! available, open file descriptors. Parsing is pure and tested on fixture text; only
//! [`SystemReading::read`] touches `/proc` and `/sys`.

use std::path::Path;

/// One reading. `None` means "could not be read here", never a guess.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SystemReading {
    /// CPUs this process may use (cgroup quota aware, rounded up).
    pub cpu_count: usize,
    /// Resident set size.
    pub memory_usage_bytes: Option<u64>,
    /// The cgroup memory limit; `None` when there is none or it cannot be read.
    pub memory_limit_bytes: Option<u64>,
    pub open_fds: Option<u64>,
}

impl SystemReading {
    pub fn read() -> SystemReading {
        let file = |p: &str| std::fs::read_to_string(p).ok();
        SystemReading {
            cpu_count: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory_usage_bytes: file("/proc/self/status").as_deref().and_then(parse_vm_rss),
            memory_limit_bytes: memory_limit(Path::new("/sys/fs/cgroup")),
            open_fds: std::fs::read_dir("/proc/self/fd")
                .ok()
                .map(|d| d.count() as u64),
        }
    }
}

/// `VmRSS:   1234 kB` from `/proc/self/status`, in bytes.
pub fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// The memory limit under a cgroup mount: v2 `memory.max`, else v1
/// `memory/memory.limit_in_bytes`. "max" or v1's huge sentinel mean no limit.
pub fn memory_limit(cgroup_root: &Path) -> Option<u64> {
    if let Ok(v2) = std::fs::read_to_string(cgroup_root.join("memory.max")) {
        return parse_limit(&v2);
    }
    std::fs::read_to_string(cgroup_root.join("memory/memory.limit_in_bytes"))
        .ok()
        .as_deref()
        .and_then(parse_limit)
}

fn parse_limit(s: &str) -> Option<u64> {
    let s = s.trim();
    if s == "max" {
        return None;
    }
    // cgroup v1 reports "no limit" as a page-rounded i64::MAX.
    s.parse::<u64>().ok().filter(|&v| v < (1 << 62))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_rss_parses_kib() {
        let status = "Name:\tsluice\nVmPeak:\t  9000 kB\nVmRSS:\t    2048 kB\nThreads: 3\n";
        assert_eq!(parse_vm_rss(status), Some(2 * 1024 * 1024));
        assert_eq!(parse_vm_rss("Name: x\n"), None);
    }

    #[test]
    fn cgroup_limits_from_fixture_trees() {
        let dir = std::env::temp_dir().join(format!("sluice-cg-{}", std::process::id()));
        let v2 = dir.join("v2");
        let v1 = dir.join("v1");
        std::fs::create_dir_all(&v2).unwrap_or_default();
        std::fs::create_dir_all(v1.join("memory")).unwrap_or_default();
        std::fs::write(v2.join("memory.max"), "536870912\n").unwrap_or_default();
        assert_eq!(memory_limit(&v2), Some(512 << 20));
        std::fs::write(v2.join("memory.max"), "max\n").unwrap_or_default();
        assert_eq!(memory_limit(&v2), None);
        std::fs::write(
            v1.join("memory/memory.limit_in_bytes"),
            "9223372036854771712\n",
        )
        .unwrap_or_default();
        assert_eq!(memory_limit(&v1), None);
        std::fs::write(v1.join("memory/memory.limit_in_bytes"), "268435456\n").unwrap_or_default();
        assert_eq!(memory_limit(&v1), Some(256 << 20));
        assert_eq!(memory_limit(&dir.join("absent")), None);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn live_reading_has_cpus_and_memory() {
        let r = SystemReading::read();
        assert!(r.cpu_count >= 1);
        assert!(r.memory_usage_bytes.unwrap_or(0) > 0);
    }
}
