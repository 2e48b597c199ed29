//! [`SystemMonitor`]: samples the readings, runs the CPU meter, keeps the latest
//! snapshot. [`run`] samples it on an interval until shutdown.

use super::{cpu_count, CgroupFs, CpuMeter, CpuSource, CpuUsage, ProcFs, SystemSnapshot};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};

/// A source of the live tokio task count, supplied by whoever owns the runtimes.
pub type TaskCount = Box<dyn Fn() -> usize + Send + Sync>;

/// Shared by the app: one sampler task writes, any number of readers read.
pub struct SystemMonitor {
    cgroup: CgroupFs,
    proc: ProcFs,
    cores_available: usize,
    tokio_tasks: Option<TaskCount>,
    /// The meter and the source of the counter it last saw; only `sample` locks it.
    meter: Mutex<(CpuMeter, Option<CpuSource>)>,
    latest: Mutex<SystemSnapshot>,
}

/// The shortest sampling interval [`run`] accepts.
pub const MIN_INTERVAL: Duration = Duration::from_millis(10);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded values are plain data, valid even if a holder panicked.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl SystemMonitor {
    /// A monitor reading `cgroup` and `proc`; `cores_available` is what
    /// `std::thread::available_parallelism` says (the ceiling for `cpu_count`).
    pub fn new(cgroup: CgroupFs, proc: ProcFs, cores_available: usize) -> SystemMonitor {
        let cores_available = cores_available.max(1);
        SystemMonitor {
            cgroup,
            proc,
            cores_available,
            tokio_tasks: None,
            meter: Mutex::new((CpuMeter::new(), None)),
            latest: Mutex::new(SystemSnapshot {
                cpu_count: cores_available,
                ..SystemSnapshot::default()
            }),
        }
    }

    /// This process: `/proc/self`, its cgroup under `/sys/fs/cgroup`.
    pub fn detect() -> SystemMonitor {
        let proc = ProcFs::current();
        let cgroup = CgroupFs::new("/sys/fs/cgroup", &proc.cgroup());
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        SystemMonitor::new(cgroup, proc, cores)
    }

    /// Fills `tokio_tasks` in every sample from `count`.
    pub fn with_tokio_tasks(
        mut self,
        count: impl Fn() -> usize + Send + Sync + 'static,
    ) -> SystemMonitor {
        self.tokio_tasks = Some(Box::new(count));
        self
    }

    /// Reads everything except the CPU ratio (that needs two readings); touches no state.
    fn read(&self) -> (SystemSnapshot, Option<CpuUsage>) {
        let quota = self.cgroup.cpu_quota_cores();
        let usage = self.cpu_usage();
        let memory = self.cgroup.memory();
        let snap = SystemSnapshot {
            cpu_count: cpu_count(quota, self.cores_available),
            cpu_quota_cores: quota,
            cpu_usage_ratio: None,
            cpu_usage_seconds_total: usage.map(|u| u.total.as_secs_f64()),
            cpu_usage_source: usage.map(|u| u.source),
            cpu_throttled_periods_total: usage.and_then(|u| u.nr_throttled),
            cpu_throttled_seconds_total: usage.and_then(|u| u.throttled).map(|t| t.as_secs_f64()),
            memory_usage_bytes: self.proc.rss_bytes(),
            memory_cgroup_usage_bytes: memory.usage_bytes,
            memory_working_set_bytes: memory.working_set_bytes,
            memory_limit_bytes: memory.limit_bytes,
            open_fds: self.proc.open_fds(),
            max_fds: self.proc.max_fds(),
            tokio_tasks: self.tokio_tasks.as_ref().map(|count| count()),
        };
        (snap, usage)
    }

    fn cpu_usage(&self) -> Option<CpuUsage> {
        self.cgroup.cpu_usage().or_else(|| {
            Some(CpuUsage {
                total: self.proc.cpu_time()?,
                source: CpuSource::Process,
                nr_throttled: None,
                throttled: None,
            })
        })
    }

    /// Reads everything at `now`, updates the CPU ratio, stores and returns the snapshot.
    pub fn sample(&self, now: Instant) -> SystemSnapshot {
        let (mut snap, usage) = self.read();
        // The ratio is of what the process can actually use: the quota, capped by CPUs.
        let available = self.cores_available as f64;
        let cores = snap.cpu_quota_cores.map_or(available, |q| q.min(available));
        if let Some(usage) = usage {
            let mut guard = lock(&self.meter);
            let (meter, source) = &mut *guard;
            // Counters from different sources are not comparable: start over.
            if *source != Some(usage.source) {
                meter.reset();
                *source = Some(usage.source);
            }
            snap.cpu_usage_ratio = meter.observe(usage.total, now, cores);
        }
        *lock(&self.latest) = snap.clone();
        snap
    }

    /// The snapshot of the last [`sample`](Self::sample); all unknown before the first.
    pub fn latest(&self) -> SystemSnapshot {
        lock(&self.latest).clone()
    }

    /// The latest CPU usage ratio (of the quota, else of the available cores).
    pub fn cpu_ratio(&self) -> Option<f64> {
        lock(&self.latest).cpu_usage_ratio
    }

    /// The latest memory ratio: working set (else RSS) over the limit.
    pub fn memory_ratio(&self) -> Option<f64> {
        lock(&self.latest).memory_ratio()
    }

    /// The latest open file descriptors over the soft limit.
    pub fn fd_ratio(&self) -> Option<f64> {
        lock(&self.latest).fd_ratio()
    }
}

/// Samples `monitor` now and then every `interval` (at least [`MIN_INTERVAL`]) until
/// `shutdown` turns true. Each sample is a handful of small `/proc` and `/sys` reads,
/// done inline: they are served from kernel memory and take microseconds.
pub async fn run(
    monitor: Arc<SystemMonitor>,
    interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut ticks = tokio::time::interval(interval.max(MIN_INTERVAL));
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            () = crate::listener::stopped(&mut shutdown) => return,
            at = ticks.tick() => {
                monitor.sample(at);
            }
        }
    }
}
