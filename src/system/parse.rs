//! Pure parsers for the text of cgroup and `/proc/self` files. Every function takes the
//! file's contents and returns `None` for anything it does not recognise: garbage in a
//! file is "unknown", never a panic and never a made-up number.

use std::time::Duration;

/// Clock ticks per second of `/proc/self/stat`'s `utime`/`stime`. `USER_HZ` is 100 on
/// every mainstream Linux architecture; reading the real value needs `sysconf`, which
/// needs libc, which sluice does not link. Only the no-cgroup fallback uses it.
pub const USER_HZ: u64 = 100;

/// v1 reports "no limit" as a page-rounded `i64::MAX`; anything this large is no limit.
const NO_LIMIT_SENTINEL: u64 = 1 << 62;

/// `VmRSS:   1234 kB` from `/proc/self/status`, in bytes.
pub fn vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kb.checked_mul(1024)
}

/// A memory limit: v2 `memory.max` or v1 `memory.limit_in_bytes`. "max" or v1's huge
/// sentinel mean no limit.
pub fn memory_limit(s: &str) -> Option<u64> {
    let s = s.trim();
    if s == "max" {
        return None;
    }
    s.parse::<u64>().ok().filter(|&v| v < NO_LIMIT_SENTINEL)
}

/// A single unsigned number, e.g. `memory.current` or `cpuacct.usage`.
pub fn number(s: &str) -> Option<u64> {
    s.trim().parse().ok()
}

/// v2 `cpu.max`: `"<quota> <period>"` in microseconds; `"max ..."` means no quota.
/// Returns the quota in cores, fractional as written ("50000 100000" is 0.5).
pub fn cpu_max(s: &str) -> Option<f64> {
    let mut fields = s.split_whitespace();
    let quota = fields.next()?;
    if quota == "max" {
        return None;
    }
    // The period may be omitted when it is the default 100 ms.
    let period = fields.next().unwrap_or("100000");
    cores(quota.parse().ok()?, period.parse().ok()?)
}

/// v1 `cpu.cfs_quota_us` and `cpu.cfs_period_us`; a quota of -1 means none.
pub fn cfs_quota(quota: &str, period: &str) -> Option<f64> {
    cores(quota.trim().parse().ok()?, period.trim().parse().ok()?)
}

fn cores(quota_us: i64, period_us: i64) -> Option<f64> {
    (quota_us > 0 && period_us > 0).then(|| quota_us as f64 / period_us as f64)
}

/// The value of `key` in a flat-keyed file (`cpu.stat`, `memory.stat`): lines of
/// `"<key> <u64>"`.
pub fn keyed(s: &str, key: &str) -> Option<u64> {
    s.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        (fields.next()? == key).then_some(())?;
        fields.next()?.parse().ok()
    })
}

/// CPU time (user + system) of this process from `/proc/self/stat` fields 14 and 15,
/// in clock ticks of [`USER_HZ`].
pub fn proc_stat_cpu(stat: &str) -> Option<Duration> {
    // Field 2, the command name, is in parentheses and may itself hold spaces or ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    // `rest` starts at field 3 (state), so field n is at index n - 3.
    let mut fields = rest.split_whitespace().skip(14 - 3);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    let ticks = utime.checked_add(stime)?;
    Some(Duration::from_nanos(
        ticks.checked_mul(1_000_000_000 / USER_HZ)?,
    ))
}

/// The soft limit of `Max open files` in `/proc/self/limits`; `None` if "unlimited".
pub fn max_open_files(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line["Max open files".len()..].split_whitespace().next()?;
    soft.parse().ok()
}

/// Which cgroups this process is in, from `/proc/self/cgroup`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Membership {
    /// The unified (v2) path from the `0::/path` line.
    pub unified: Option<String>,
    /// v1 `(controller, path)` pairs; "2:cpu,cpuacct:/x" gives one pair per controller.
    pub v1: Vec<(String, String)>,
}

impl Membership {
    /// The v1 path of `controller` (e.g. "memory"), if listed.
    pub fn v1_path(&self, controller: &str) -> Option<&str> {
        self.v1
            .iter()
            .find(|(c, _)| c == controller)
            .map(|(_, p)| p.as_str())
    }
}

/// Lines of `hierarchy-id:controllers:path`. Malformed lines are skipped.
pub fn membership(s: &str) -> Membership {
    let mut m = Membership::default();
    for line in s.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if !path.starts_with('/') {
            continue;
        }
        if id == "0" && controllers.is_empty() {
            m.unified = Some(path.to_string());
        } else {
            for c in controllers.split(',').filter(|c| !c.is_empty()) {
                m.v1.push((c.to_string(), path.to_string()));
            }
        }
    }
    m
}
