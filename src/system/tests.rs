//! Fixture-tree tests of the cgroup and /proc readers. Each test builds its own tree in
//! a uniquely named temp dir that is removed on drop.

mod monitor;

use super::parse::{self, Membership};
use super::*;
use std::path::PathBuf;
use std::time::Duration;
use tokio::time::Instant;

pub(super) struct Fixture {
    dir: PathBuf,
}

impl Fixture {
    pub(super) fn new(name: &str) -> Fixture {
        let dir = std::env::temp_dir().join(format!("sluice-sys-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Fixture { dir }
    }

    pub(super) fn write(&self, rel: &str, text: &str) -> &Fixture {
        let path = self.dir.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
        self
    }

    pub(super) fn remove(&self, rel: &str) {
        std::fs::remove_file(self.dir.join(rel)).unwrap();
    }

    pub(super) fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    /// A v2 cgroup directory: `rel` with `cgroup.controllers`.
    pub(super) fn v2(&self, rel: &str) -> &Fixture {
        self.write(&format!("{rel}/cgroup.controllers"), "cpu io memory pids\n")
    }

    pub(super) fn cgroup(&self, self_cgroup: &str) -> CgroupFs {
        CgroupFs::new(self.path("cg"), self_cgroup)
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn v2_cpu_quota_fractional_and_none() {
    let fx = Fixture::new("v2-quota");
    fx.v2("cg");
    let cases = [
        ("150000 100000\n", Some(1.5), 2),
        ("50000 100000\n", Some(0.5), 1),
        ("250000 100000\n", Some(2.5), 3),
        ("800000 100000\n", Some(8.0), 4),
        ("max 100000\n", None, 4),
    ];
    for (text, quota, count) in cases {
        fx.write("cg/cpu.max", text);
        let cg = fx.cgroup("0::/\n");
        assert_eq!(cg.cpu_quota_cores(), quota, "{text:?}");
        assert_eq!(cpu_count(quota, 4), count, "{text:?}");
    }
}

#[test]
fn cpu_count_bounds() {
    assert_eq!(cpu_count(None, 0), 1);
    assert_eq!(cpu_count(Some(0.01), 8), 1);
    assert_eq!(cpu_count(Some(1.0), 8), 1);
    assert_eq!(cpu_count(Some(1.01), 8), 2);
    assert_eq!(cpu_count(Some(1e300), 8), 8);
    assert_eq!(cpu_count(Some(f64::NAN), 8), 1);
}

#[test]
fn v1_cpu_quota_in_either_directory_name() {
    for dir in ["cpu", "cpu,cpuacct"] {
        let fx = Fixture::new(&format!("v1-quota-{dir}"));
        fx.write(&format!("cg/{dir}/cpu.cfs_period_us"), "100000\n")
            .write(&format!("cg/{dir}/cpu.cfs_quota_us"), "50000\n");
        assert_eq!(fx.cgroup("").cpu_quota_cores(), Some(0.5), "{dir}");
        fx.write(&format!("cg/{dir}/cpu.cfs_quota_us"), "-1\n");
        assert_eq!(fx.cgroup("").cpu_quota_cores(), None, "{dir}");
        fx.write(&format!("cg/{dir}/cpu.cfs_quota_us"), "300000\n");
        assert_eq!(fx.cgroup("").cpu_quota_cores(), Some(3.0), "{dir}");
    }
}

#[test]
fn v2_cpu_stat_usage_and_throttling() {
    let fx = Fixture::new("v2-cpustat");
    fx.v2("cg").write(
        "cg/cpu.stat",
        "usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\nnr_periods 40\n\
         nr_throttled 7\nthrottled_usec 1250000\nnr_bursts 0\nburst_usec 0\n",
    );
    let usage = fx.cgroup("0::/\n").cpu_usage().unwrap();
    assert_eq!(usage.total, Duration::from_millis(2500));
    assert_eq!(usage.source, CpuSource::CgroupV2);
    assert_eq!(usage.nr_throttled, Some(7));
    assert_eq!(usage.throttled, Some(Duration::from_millis(1250)));

    // No cpu controller: usage only.
    fx.write("cg/cpu.stat", "usage_usec 10\nuser_usec 5\nsystem_usec 5\n");
    let usage = fx.cgroup("0::/\n").cpu_usage().unwrap();
    assert_eq!(usage.total, Duration::from_micros(10));
    assert_eq!((usage.nr_throttled, usage.throttled), (None, None));
}

#[test]
fn v1_cpuacct_usage_and_throttling() {
    for (acct, cpu) in [("cpuacct", "cpu"), ("cpu,cpuacct", "cpu,cpuacct")] {
        let fx = Fixture::new(&format!("v1-acct-{acct}"));
        fx.write(&format!("cg/{acct}/cpuacct.usage"), "70283327920\n")
            .write(
                &format!("cg/{cpu}/cpu.stat"),
                "nr_periods 10\nnr_throttled 3\nthrottled_time 450000000\n",
            );
        let usage = fx.cgroup("").cpu_usage().unwrap();
        assert_eq!(usage.total, Duration::from_nanos(70_283_327_920));
        assert_eq!(usage.source, CpuSource::CgroupV1);
        assert_eq!(usage.nr_throttled, Some(3));
        assert_eq!(usage.throttled, Some(Duration::from_millis(450)));
    }
}

#[test]
fn v2_memory_working_set() {
    let fx = Fixture::new("v2-mem");
    fx.v2("cg")
        .write("cg/memory.current", "536870912\n")
        .write("cg/memory.max", "1073741824\n")
        .write(
            "cg/memory.stat",
            "anon 300000000\nfile 200000000\nactive_file 50000000\ninactive_file 134217728\n",
        );
    let m = fx.cgroup("0::/\n").memory();
    assert_eq!(m.usage_bytes, Some(512 << 20));
    assert_eq!(m.working_set_bytes, Some(384 << 20));
    assert_eq!(m.limit_bytes, Some(1 << 30));

    fx.write("cg/memory.max", "max\n");
    fx.write("cg/memory.stat", "inactive_file 999999999999\n");
    let m = fx.cgroup("0::/\n").memory();
    assert_eq!(m.limit_bytes, None);
    assert_eq!(m.working_set_bytes, Some(0), "saturates, never wraps");

    fx.remove("cg/memory.stat");
    assert_eq!(fx.cgroup("0::/\n").memory().working_set_bytes, None);
}

#[test]
fn v1_memory_usage_limit_and_sentinel() {
    let fx = Fixture::new("v1-mem");
    fx.write("cg/memory/memory.usage_in_bytes", "268435456\n")
        .write("cg/memory/memory.limit_in_bytes", "9223372036854771712\n")
        .write(
            "cg/memory/memory.stat",
            "cache 1\ninactive_file 5\ntotal_inactive_file 67108864\n",
        );
    let m = fx.cgroup("").memory();
    assert_eq!(m.usage_bytes, Some(256 << 20));
    assert_eq!(m.working_set_bytes, Some(192 << 20));
    assert_eq!(m.limit_bytes, None, "the v1 sentinel is no limit");
    fx.write("cg/memory/memory.limit_in_bytes", "536870912\n");
    assert_eq!(fx.cgroup("").memory().limit_bytes, Some(512 << 20));
}

#[test]
fn proc_limits_soft_open_files() {
    let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                  Max cpu time              unlimited            unlimited            seconds   \n\
                  Max open files            1048576              1048576              files     \n\
                  Max locked memory         8388608              8388608              bytes     \n";
    assert_eq!(parse::max_open_files(limits), Some(1_048_576));
    let split = "Max open files            1024                 524288               files\n";
    assert_eq!(parse::max_open_files(split), Some(1024));
    let unlimited = "Max open files            unlimited            unlimited            files\n";
    assert_eq!(parse::max_open_files(unlimited), None);
    assert_eq!(parse::max_open_files("Max cpu time 1 1 s\n"), None);
}

#[test]
fn proc_stat_cpu_time_survives_odd_command_names() {
    let stat = "4242 (sluice) S 1 4242 4242 0 -1 4194560 900 0 0 0 150 50 0 0 20 0 9 0 1234 \
                100000 500 18446744073709551615 1 1 0 0 0 0 0 4096 0 0 0 0 17 1 0 0 0 0 0";
    assert_eq!(parse::proc_stat_cpu(stat), Some(Duration::from_secs(2)));
    let odd = stat.replace("(sluice)", "(a b) c))");
    assert_eq!(parse::proc_stat_cpu(&odd), Some(Duration::from_secs(2)));
    assert_eq!(parse::proc_stat_cpu("4242 (sluice) S 1 2"), None);
}

#[test]
fn vm_rss_parses_kib() {
    let status = "Name:\tsluice\nVmPeak:\t  9000 kB\nVmRSS:\t    2048 kB\nThreads: 3\n";
    assert_eq!(parse::vm_rss(status), Some(2 * 1024 * 1024));
    assert_eq!(parse::vm_rss("Name: x\n"), None);
}

#[test]
fn self_cgroup_v2_and_v1_lines() {
    assert_eq!(
        parse::membership("0::/kubepods/pod1/abc\n"),
        Membership {
            unified: Some("/kubepods/pod1/abc".into()),
            v1: vec![],
        }
    );
    let v1 = "12:pids:/kubepods/pod1/abc\n\
              4:memory:/kubepods/pod1/abc\n\
              3:cpu,cpuacct:/kubepods/pod1/abc\n\
              1:name=systemd:/kubepods/pod1/abc\n\
              0::/\n\
              garbage line\n";
    let m = parse::membership(v1);
    assert_eq!(m.unified.as_deref(), Some("/"));
    assert_eq!(m.v1_path("memory"), Some("/kubepods/pod1/abc"));
    assert_eq!(m.v1_path("cpu"), Some("/kubepods/pod1/abc"));
    assert_eq!(m.v1_path("cpuacct"), Some("/kubepods/pod1/abc"));
    assert_eq!(m.v1_path("blkio"), None);
    assert_eq!(parse::membership(""), Membership::default());
}

#[test]
fn own_v2_cgroup_preferred_over_root() {
    let fx = Fixture::new("v2-own");
    fx.v2("cg").write("cg/cpu.max", "max 100000\n");
    fx.v2("cg/kubepods/pod1/abc")
        .write("cg/kubepods/pod1/abc/cpu.max", "150000 100000\n");
    let own = fx.cgroup("0::/kubepods/pod1/abc\n");
    assert_eq!(
        own.v2_dir(),
        Some(fx.path("cg/kubepods/pod1/abc").as_path())
    );
    assert_eq!(own.cpu_quota_cores(), Some(1.5));
    // Not visible from here (another namespace's path), or escaping the root: the root.
    for line in ["0::/kubepods/pod2/def\n", "0::/../../etc\n", "0::/\n", ""] {
        let cg = fx.cgroup(line);
        assert_eq!(cg.v2_dir(), Some(fx.path("cg").as_path()), "{line:?}");
        assert_eq!(cg.cpu_quota_cores(), None, "{line:?}");
    }
}

#[test]
fn own_v1_cgroup_preferred_over_controller_root() {
    let fx = Fixture::new("v1-own");
    fx.write("cg/memory/memory.limit_in_bytes", "9223372036854771712\n")
        .write("cg/memory/job/7/memory.limit_in_bytes", "104857600\n");
    let cg = fx.cgroup("4:memory:/job/7\n1:cpu:/\n0::/\n");
    assert_eq!(cg.v2_dir(), None);
    assert_eq!(cg.memory().limit_bytes, Some(100 << 20));
    assert_eq!(fx.cgroup("4:memory:/job/8\n").memory().limit_bytes, None);
}

#[test]
fn cpu_meter_ratio_of_cores() {
    let t0 = Instant::now();
    let sec = |s: f64| t0 + Duration::from_secs_f64(s);
    let mut m = CpuMeter::new();
    assert_eq!(m.observe(Duration::from_secs(10), t0, 2.0), None, "first");
    // 0.5 core-seconds in 1 s of a 2-core quota.
    let r = m.observe(Duration::from_millis(10_500), sec(1.0), 2.0);
    assert_eq!(r, Some(0.25));
    // Half a core of a 0.5-core quota: fully used.
    let r = m.observe(Duration::from_millis(11_500), sec(3.0), 0.5);
    assert_eq!(r, Some(1.0));
    // No time passed: the last ratio again, and the old baseline stays.
    assert_eq!(m.observe(Duration::from_secs(12), sec(3.0), 1.0), Some(1.0));
    assert_eq!(m.observe(Duration::from_secs(12), sec(4.0), 1.0), Some(0.5));
    // Counter went backwards (cgroup recreated): None, then measured from the new base.
    assert_eq!(m.observe(Duration::from_secs(1), sec(5.0), 1.0), None);
    assert_eq!(m.observe(Duration::from_secs(2), sec(7.0), 1.0), Some(0.5));
    // Nonsense core counts give nothing.
    assert_eq!(m.observe(Duration::from_secs(3), sec(8.0), 0.0), None);
    assert_eq!(m.observe(Duration::from_secs(4), sec(9.0), f64::NAN), None);
    m.reset();
    assert_eq!(m.observe(Duration::from_secs(5), sec(10.0), 1.0), None);
}

#[test]
fn garbage_gives_none_not_panic() {
    let junk = [
        "",
        "\n",
        "max",
        "-5",
        "1e9",
        "18446744073709551616",
        "abc def",
        "150000 0",
        "0 100000",
        "-100000 100000",
        ")))",
        "(",
        "\u{0}\u{ff}",
        "Max open files",
        "VmRSS: 18446744073709551615 kB",
    ];
    for j in junk {
        assert_eq!(parse::cpu_max(j), None, "{j:?}");
        assert_eq!(parse::cfs_quota(j, "100000"), None, "{j:?}");
        assert_eq!(parse::cfs_quota("100000", j), None, "{j:?}");
        assert_eq!(parse::keyed(j, "usage_usec"), None, "{j:?}");
        assert_eq!(parse::proc_stat_cpu(j), None, "{j:?}");
        assert_eq!(parse::max_open_files(j), None, "{j:?}");
        assert_eq!(parse::vm_rss(j), None, "{j:?}");
        assert_eq!(parse::memory_limit(j), None, "{j:?}");
        let _ = parse::membership(j);
    }
    assert_eq!(
        parse::keyed("usage_usec\nusage_usec x\n", "usage_usec"),
        None
    );

    let fx = Fixture::new("garbage");
    fx.v2("cg");
    for f in [
        "cpu.max",
        "cpu.stat",
        "memory.current",
        "memory.max",
        "memory.stat",
    ] {
        fx.write(&format!("cg/{f}"), "\u{0}garbage\nmore 12 ab\n");
    }
    for f in ["status", "stat", "limits"] {
        fx.write(&format!("proc/{f}"), "\u{0}garbage )\n");
    }
    let mon = SystemMonitor::new(fx.cgroup("0::/\n"), ProcFs::new(fx.path("proc")), 2);
    let s = mon.sample(Instant::now());
    assert_eq!(s.cpu_quota_cores, None);
    assert_eq!(s.cpu_usage_seconds_total, None);
    assert_eq!(s.memory_cgroup_usage_bytes, None);
    assert_eq!(s.memory_limit_bytes, None);
    assert_eq!(s.memory_usage_bytes, None);
    assert_eq!(s.max_fds, None);
    assert_eq!(s.open_fds, None, "no fd/ directory");
    assert_eq!(s.cpu_count, 2);
}
