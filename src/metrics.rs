//! Metrics: one `prometheus::Registry` built at start-up and the per-request statistics
//! that both `/metrics` and the JSON endpoints read.
//!
//! Per-request numbers live in [`RequestStats`]: plain atomics, one shard per worker
//! thread, so two cores never write the same cache line on the hot path. A custom
//! [`prometheus::core::Collector`] renders them at scrape time. Counters and histograms
//! can be reset by the admin endpoint; gauges (in-flight) never are.

pub(crate) mod collector;
mod histogram;
mod stats;

pub use histogram::{quantile_of, AtomicHistogram, HistogramSnapshot};

pub use stats::{
    quantile, ClassSnapshot, InflightGuard, Outcome, RequestStats, RouteSnapshot, StatsSnapshot,
    DURATION_BUCKETS,
};

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use std::sync::Arc;

/// Every metric sluice exports, registered once in one registry.
pub struct Metrics {
    registry: Registry,
    pub requests: Arc<RequestStats>,
    pub upstream_errors: UpstreamErrors,
    /// Client connections currently open on the main listener.
    pub downstream_connections: IntGauge,
    /// Upstream (app) connections currently open, pooled or busy.
    pub upstream_connections: IntGauge,
}

/// Pre-resolved `sluice_upstream_errors_total{kind}` children, one per kind.
pub struct UpstreamErrors {
    /// TCP connect refused or failed.
    pub connect: IntCounter,
    /// TCP connect did not finish within `connect_timeout_ms`.
    pub connect_timeout: IntCounter,
    /// No response head within the route's timeout.
    pub timeout: IntCounter,
    /// The upstream closed or reset the connection before a response head.
    pub closed: IntCounter,
    /// A malformed response or another HTTP-level failure.
    pub protocol: IntCounter,
    /// The response body failed after the head was sent to the client.
    pub body: IntCounter,
}

impl UpstreamErrors {
    fn all(&self) -> [&IntCounter; 6] {
        [
            &self.connect,
            &self.connect_timeout,
            &self.timeout,
            &self.closed,
            &self.protocol,
            &self.body,
        ]
    }
}

impl Metrics {
    /// Builds the registry. `routes` are `(route, class, priority)` label triples in route-id
    /// order; `classes` are the class names in class-id order; `shards` is the number of
    /// writer threads (workers plus one for everything else).
    pub fn new(
        routes: Vec<(String, usize, &'static str)>,
        classes: Vec<String>,
        shards: usize,
    ) -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let requests = Arc::new(RequestStats::new(routes, classes, shards));
        registry.register(Box::new(collector::RequestCollector::new(requests.clone())))?;

        let errors = IntCounterVec::new(
            Opts::new(
                "sluice_upstream_errors_total",
                "Failures talking to the upstream app, by kind.",
            ),
            &["kind"],
        )?;
        registry.register(Box::new(errors.clone()))?;
        let upstream_errors = UpstreamErrors {
            connect: errors.with_label_values(&["connect"]),
            connect_timeout: errors.with_label_values(&["connect_timeout"]),
            timeout: errors.with_label_values(&["timeout"]),
            closed: errors.with_label_values(&["closed"]),
            protocol: errors.with_label_values(&["protocol"]),
            body: errors.with_label_values(&["body"]),
        };

        let build_info = IntGauge::with_opts(
            Opts::new("sluice_build_info", "Always 1; labels name the build.")
                .const_label("version", env!("CARGO_PKG_VERSION")),
        )?;
        build_info.set(1);
        registry.register(Box::new(build_info))?;

        let downstream_connections = IntGauge::new(
            "sluice_downstream_connections",
            "Client connections currently open on the main listener.",
        )?;
        registry.register(Box::new(downstream_connections.clone()))?;
        let upstream_connections = IntGauge::new(
            "sluice_upstream_connections",
            "Connections to the upstream app currently open (idle or busy).",
        )?;
        registry.register(Box::new(upstream_connections.clone()))?;

        #[cfg(target_os = "linux")]
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;

        Ok(Metrics {
            registry,
            requests,
            upstream_errors,
            downstream_connections,
            upstream_connections,
        })
    }

    /// Registers another collector (e.g. admission state) in the one registry.
    pub fn register(
        &self,
        c: Box<dyn prometheus::core::Collector>,
    ) -> Result<(), prometheus::Error> {
        self.registry.register(c)
    }

    /// The Prometheus text exposition of every registered metric.
    pub fn render(&self) -> Result<Vec<u8>, prometheus::Error> {
        use prometheus::Encoder;
        let mut out = Vec::with_capacity(16 * 1024);
        prometheus::TextEncoder::new().encode(&self.registry.gather(), &mut out)?;
        Ok(out)
    }

    /// Resets counters and histograms (not gauges), for the admin reset endpoint.
    pub fn reset(&self) {
        self.requests.reset();
        for c in self.upstream_errors.all() {
            c.reset();
        }
    }
}
