//! The monitor over fixture trees, its collector, its sampling task, and one live read.

use super::super::*;
use super::Fixture;
use prometheus::Encoder;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// A v2 container: 2-core quota, 1 GiB limit, 512 MiB used of which 128 MiB inactive
/// cache; a process with 6 fds of 1000 and 64 MiB RSS.
fn container(name: &str) -> Fixture {
    let fx = Fixture::new(name);
    fx.v2("cg")
        .write("cg/cpu.max", "200000 100000\n")
        .write(
            "cg/cpu.stat",
            "usage_usec 1000000\nnr_throttled 2\nthrottled_usec 300000\n",
        )
        .write("cg/memory.current", "536870912\n")
        .write("cg/memory.max", "1073741824\n")
        .write("cg/memory.stat", "inactive_file 134217728\n")
        .write("proc/status", "Name:\tsluice\nVmRSS:\t65536 kB\n")
        .write("proc/limits", "Max open files  1000  4096  files\n");
    for fd in 0..6 {
        fx.write(&format!("proc/fd/{fd}"), "");
    }
    fx
}

fn monitor(fx: &Fixture, cores: usize) -> SystemMonitor {
    SystemMonitor::new(fx.cgroup("0::/\n"), ProcFs::new(fx.path("proc")), cores)
}

#[test]
fn sample_reads_everything_and_meters_cpu() {
    let fx = container("mon-sample");
    let mon = monitor(&fx, 4).with_tokio_tasks(|| 17);
    assert_eq!(
        mon.latest().cpu_count,
        4,
        "all unknown before the first sample"
    );
    assert_eq!(mon.memory_ratio(), None);

    let t0 = Instant::now();
    let first = mon.sample(t0);
    assert_eq!(first.cpu_count, 2);
    assert_eq!(first.cpu_quota_cores, Some(2.0));
    assert_eq!(first.cpu_usage_ratio, None, "one reading is not a rate");
    assert_eq!(first.cpu_usage_seconds_total, Some(1.0));
    assert_eq!(first.cpu_usage_source, Some(CpuSource::CgroupV2));
    assert_eq!(first.cpu_throttled_periods_total, Some(2));
    assert_eq!(first.cpu_throttled_seconds_total, Some(0.3));
    assert_eq!(first.memory_usage_bytes, Some(64 << 20));
    assert_eq!(first.memory_cgroup_usage_bytes, Some(512 << 20));
    assert_eq!(first.memory_working_set_bytes, Some(384 << 20));
    assert_eq!(first.memory_limit_bytes, Some(1 << 30));
    assert_eq!(first.open_fds, Some(6));
    assert_eq!(first.max_fds, Some(1000));
    assert_eq!(first.tokio_tasks, Some(17));
    assert_eq!(mon.latest(), first);
    assert_eq!(mon.memory_ratio(), Some(0.375));
    assert_eq!(mon.fd_ratio(), Some(0.006));

    // Half a core used over one second, of a 2-core quota.
    fx.write("cg/cpu.stat", "usage_usec 1500000\n");
    let second = mon.sample(t0 + Duration::from_secs(1));
    assert_eq!(second.cpu_usage_ratio, Some(0.25));
    assert_eq!(mon.cpu_ratio(), Some(0.25));
    assert_eq!(second.cpu_throttled_seconds_total, None);

    // The cgroup was recreated: its counter restarted.
    fx.write("cg/cpu.stat", "usage_usec 100\n");
    assert_eq!(
        mon.sample(t0 + Duration::from_secs(2)).cpu_usage_ratio,
        None
    );
    fx.write("cg/cpu.stat", "usage_usec 2000100\n");
    let r = mon.sample(t0 + Duration::from_secs(4)).cpu_usage_ratio;
    assert_eq!(r, Some(0.5));
}

#[test]
fn without_quota_the_ratio_is_of_available_cores_and_a_quota_is_capped_by_them() {
    let fx = container("mon-noquota");
    fx.write("cg/cpu.max", "max 100000\n");
    let mon = monitor(&fx, 4);
    let t0 = Instant::now();
    mon.sample(t0);
    fx.write("cg/cpu.stat", "usage_usec 3000000\n");
    let s = mon.sample(t0 + Duration::from_secs(1));
    assert_eq!((s.cpu_count, s.cpu_quota_cores), (4, None));
    assert_eq!(s.cpu_usage_ratio, Some(0.5));

    // A 4-core quota on a 2-core machine can use 2 cores at most.
    fx.write("cg/cpu.max", "400000 100000\n");
    let mon = monitor(&fx, 2);
    mon.sample(t0);
    fx.write("cg/cpu.stat", "usage_usec 5000000\n");
    let s = mon.sample(t0 + Duration::from_secs(1));
    assert_eq!((s.cpu_count, s.cpu_quota_cores), (2, Some(4.0)));
    assert_eq!(s.cpu_usage_ratio, Some(1.0));
}

#[test]
fn without_cgroup_cpu_falls_back_to_the_process_and_restarts_the_meter() {
    let fx = Fixture::new("mon-proc-cpu");
    fx.write("cg/cpuacct/cpuacct.usage", "900000000000\n")
        .write(
            "proc/stat",
            "7 (sluice) S 1 7 7 0 -1 0 0 0 0 0 100 100 0 0 20 0 4 0 9 0 0",
        );
    let mon = SystemMonitor::new(fx.cgroup(""), ProcFs::new(fx.path("proc")), 2);
    let t0 = Instant::now();
    let s = mon.sample(t0);
    assert_eq!(s.cpu_usage_source, Some(CpuSource::CgroupV1));
    assert_eq!(s.cpu_usage_seconds_total, Some(900.0));
    // The cgroup file vanishes: the process counter (2 s) is not compared with 900 s.
    fx.remove("cg/cpuacct/cpuacct.usage");
    let s = mon.sample(t0 + Duration::from_secs(1));
    assert_eq!(s.cpu_usage_source, Some(CpuSource::Process));
    assert_eq!(s.cpu_usage_seconds_total, Some(2.0));
    assert_eq!(s.cpu_usage_ratio, None);
    fx.write(
        "proc/stat",
        "7 (sluice) S 1 7 7 0 -1 0 0 0 0 0 150 150 0 0 20 0 4 0 9 0 0",
    );
    let s = mon.sample(t0 + Duration::from_secs(2));
    assert_eq!(
        s.cpu_usage_ratio,
        Some(0.5),
        "1 s of CPU over 1 s of 2 cores"
    );
}

fn scrape(registry: &prometheus::Registry) -> (String, BTreeMap<String, f64>) {
    let mut out = Vec::new();
    prometheus::TextEncoder::new()
        .encode(&registry.gather(), &mut out)
        .unwrap();
    let text = String::from_utf8(out).unwrap();
    let values = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            let (name, v) = l.split_once(' ').unwrap();
            (name.to_string(), v.parse().unwrap())
        })
        .collect();
    (text, values)
}

#[test]
fn collector_exports_known_values_in_base_units() {
    let fx = container("mon-collector");
    let mon = Arc::new(monitor(&fx, 4).with_tokio_tasks(|| 9));
    let registry = prometheus::Registry::new();
    registry
        .register(Box::new(SystemCollector::new(mon.clone())))
        .unwrap();
    let t0 = Instant::now();
    mon.sample(t0);
    fx.write(
        "cg/cpu.stat",
        "usage_usec 2000000\nnr_throttled 3\nthrottled_usec 450000\n",
    );
    mon.sample(t0 + Duration::from_secs(2));
    let (text, values) = scrape(&registry);
    let expected = [
        ("sluice_cpu_usage_ratio", 0.25),
        ("sluice_cpu_quota_cores", 2.0),
        ("sluice_cpu_throttled_seconds_total", 0.45),
        ("sluice_memory_working_set_bytes", (384u64 << 20) as f64),
        ("sluice_memory_limit_bytes", (1u64 << 30) as f64),
        ("sluice_memory_usage_ratio", 0.375),
        ("sluice_open_fds", 6.0),
        ("sluice_max_fds", 1000.0),
        ("sluice_tokio_tasks", 9.0),
    ];
    let expected: BTreeMap<String, f64> =
        expected.iter().map(|(n, v)| (n.to_string(), *v)).collect();
    assert_eq!(values, expected, "{text}");
    assert!(text.contains("# TYPE sluice_cpu_throttled_seconds_total counter"));
    assert!(text.contains("# TYPE sluice_memory_usage_ratio gauge"));
}

#[test]
fn collector_omits_unknown_values() {
    let fx = Fixture::new("mon-collector-bare");
    fx.write(
        "proc/limits",
        "Max open files  unlimited  unlimited  files\n",
    )
    .write("proc/status", "VmRSS:\t1024 kB\n");
    let mon = Arc::new(SystemMonitor::new(
        fx.cgroup(""),
        ProcFs::new(fx.path("proc")),
        2,
    ));
    let registry = prometheus::Registry::new();
    registry
        .register(Box::new(SystemCollector::new(mon.clone())))
        .unwrap();
    let (text, values) = scrape(&registry);
    assert!(values.is_empty(), "nothing sampled yet: {text}");
    mon.sample(Instant::now());
    let (text, values) = scrape(&registry);
    assert!(values.is_empty(), "no cgroup, fds or limits: {text}");
}

#[test]
fn monitor_is_shareable() {
    fn shareable<T: Send + Sync + 'static>() {}
    shareable::<SystemMonitor>();
    shareable::<SystemCollector>();
}

#[tokio::test(start_paused = true)]
async fn run_samples_every_interval_until_shutdown() {
    let fx = container("mon-run");
    let mon = Arc::new(monitor(&fx, 4));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(run(mon.clone(), Duration::from_secs(1), stopped));
    tokio::task::yield_now().await;
    assert_eq!(mon.latest().open_fds, Some(6), "sampled at once");
    assert_eq!(mon.cpu_ratio(), None);

    fx.write("cg/cpu.stat", "usage_usec 2000000\n");
    tokio::time::advance(Duration::from_secs(1)).await;
    tokio::task::yield_now().await;
    assert_eq!(
        mon.cpu_ratio(),
        Some(0.5),
        "1 core-second over 1 s of 2 cores"
    );

    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(1), task)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test(start_paused = true)]
async fn run_survives_a_zero_interval_and_an_early_shutdown() {
    let fx = container("mon-run-zero");
    let (_stop, stopped) = tokio::sync::watch::channel(true);
    let task = tokio::spawn(run(Arc::new(monitor(&fx, 1)), Duration::ZERO, stopped));
    tokio::time::timeout(Duration::from_secs(1), task)
        .await
        .unwrap()
        .unwrap();
}

#[test]
fn live_sample_has_memory_and_fds() {
    let mon = SystemMonitor::detect();
    let s = mon.sample(Instant::now());
    assert!(s.cpu_count >= 1);
    assert!(s.memory_usage_bytes.unwrap_or(0) > 0, "{s:?}");
    assert!(s.open_fds.unwrap_or(0) > 0, "{s:?}");
    assert!(s.max_fds.unwrap_or(0) > 0, "{s:?}");
    assert!(s.cpu_usage_seconds_total.is_some(), "{s:?}");
}
