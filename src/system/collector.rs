//! Renders the monitor's latest [`SystemSnapshot`](super::SystemSnapshot) as Prometheus
//! families at scrape time, in base units. A value that is unknown is left out, never
//! exported as 0. Scrapes read the stored snapshot; they do no file I/O.

use super::SystemMonitor;
use crate::metrics::collector::family;
use prometheus::core::{Collector, Desc};
use prometheus::proto::{Counter, Gauge, Metric, MetricFamily, MetricType};
use std::sync::Arc;

const CPU_USAGE: &str = "sluice_cpu_usage_ratio";
const CPU_QUOTA: &str = "sluice_cpu_quota_cores";
const CPU_THROTTLED: &str = "sluice_cpu_throttled_seconds_total";
const MEM_WORKING_SET: &str = "sluice_memory_working_set_bytes";
const MEM_LIMIT: &str = "sluice_memory_limit_bytes";
const MEM_USAGE: &str = "sluice_memory_usage_ratio";
const OPEN_FDS: &str = "sluice_open_fds";
const MAX_FDS: &str = "sluice_max_fds";
const TOKIO_TASKS: &str = "sluice_tokio_tasks";

/// `(name, help)` of every family, in exposition order.
const FAMILIES: [(&str, &str); 9] = [
    (
        CPU_USAGE,
        "CPU used over the last sampling interval as a share of the cgroup quota (of the available cores without one).",
    ),
    (CPU_QUOTA, "The cgroup CPU quota in cores; absent when there is none."),
    (
        CPU_THROTTLED,
        "Time the cgroup spent throttled by its CPU quota.",
    ),
    (
        MEM_WORKING_SET,
        "Cgroup memory usage minus inactive file cache: what kubelet evicts on.",
    ),
    (MEM_LIMIT, "The cgroup memory limit; absent when there is none."),
    (
        MEM_USAGE,
        "Memory working set (RSS without a cgroup) as a share of the memory limit.",
    ),
    (OPEN_FDS, "File descriptors open in the sluice process."),
    (MAX_FDS, "The soft limit on open file descriptors."),
    (TOKIO_TASKS, "Live tokio tasks across sluice's runtimes."),
];

/// Exposes [`SystemMonitor::latest`]; register it once in the app's registry.
pub struct SystemCollector {
    monitor: Arc<SystemMonitor>,
    descs: Vec<Desc>,
}

impl SystemCollector {
    pub fn new(monitor: Arc<SystemMonitor>) -> SystemCollector {
        let descs = FAMILIES
            .iter()
            .filter_map(|(name, help)| {
                Desc::new(
                    name.to_string(),
                    help.to_string(),
                    vec![],
                    Default::default(),
                )
                .ok()
            })
            .collect();
        SystemCollector { monitor, descs }
    }
}

fn gauge(v: f64) -> Metric {
    let mut g = Gauge::default();
    g.set_value(v);
    let mut m = Metric::default();
    m.set_gauge(g);
    m
}

fn counter(v: f64) -> Metric {
    let mut c = Counter::default();
    c.set_value(v);
    let mut m = Metric::default();
    m.set_counter(c);
    m
}

impl Collector for SystemCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let s = self.monitor.latest();
        let values = [
            s.cpu_usage_ratio.map(gauge),
            s.cpu_quota_cores.map(gauge),
            s.cpu_throttled_seconds_total.map(counter),
            s.memory_working_set_bytes.map(|v| gauge(v as f64)),
            s.memory_limit_bytes.map(|v| gauge(v as f64)),
            s.memory_ratio().map(gauge),
            s.open_fds.map(|v| gauge(v as f64)),
            s.max_fds.map(|v| gauge(v as f64)),
            s.tokio_tasks.map(|v| gauge(v as f64)),
        ];
        FAMILIES
            .iter()
            .zip(values)
            .filter_map(|((name, help), metric)| {
                let kind = if *name == CPU_THROTTLED {
                    MetricType::COUNTER
                } else {
                    MetricType::GAUGE
                };
                Some(family(name, help, kind, vec![metric?]))
            })
            .collect()
    }
}
