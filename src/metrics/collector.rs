//! Renders [`RequestStats`] as Prometheus metric families at scrape time.

use super::stats::{Outcome, RequestStats, DURATION_BUCKETS};
use prometheus::core::{Collector, Desc};
use prometheus::proto::{
    Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType,
};
use std::sync::Arc;

const REQUESTS: &str = "sluice_requests_total";
const DURATION: &str = "sluice_request_duration_seconds";
const INFLIGHT: &str = "sluice_inflight_requests";
const REQUESTS_HELP: &str = "Requests handled, by route, class, priority and outcome.";
const DURATION_HELP: &str = "Time from request head to response head, by route and class.";
const INFLIGHT_HELP: &str = "Requests currently being served, by class.";

pub(crate) struct RequestCollector {
    stats: Arc<RequestStats>,
    descs: Vec<Desc>,
}

impl RequestCollector {
    pub(crate) fn new(stats: Arc<RequestStats>) -> RequestCollector {
        let desc = |name: &str, help: &str, labels: &[&str]| {
            Desc::new(
                name.to_string(),
                help.to_string(),
                labels.iter().map(|l| l.to_string()).collect(),
                Default::default(),
            )
        };
        let descs = [
            desc(
                REQUESTS,
                REQUESTS_HELP,
                &["route", "class", "priority", "outcome"],
            ),
            desc(DURATION, DURATION_HELP, &["route", "class"]),
            desc(INFLIGHT, INFLIGHT_HELP, &["class"]),
        ]
        .into_iter()
        .collect::<Result<Vec<_>, _>>()
        .unwrap_or_default();
        RequestCollector { stats, descs }
    }
}

pub(crate) fn labels(pairs: &[(&str, &str)]) -> Vec<LabelPair> {
    pairs
        .iter()
        .map(|(n, v)| {
            let mut l = LabelPair::default();
            l.set_name(n.to_string());
            l.set_value(v.to_string());
            l
        })
        .collect()
}

/// A histogram sample from per-bucket (not cumulative) counts; the last count is +Inf.
pub(crate) fn histogram(l: &[(&str, &str)], bounds: &[f64], counts: &[u64], sum: f64) -> Metric {
    let mut cumulative = 0u64;
    let buckets = bounds
        .iter()
        .zip(counts)
        .map(|(&bound, &n)| {
            cumulative += n;
            let mut b = Bucket::default();
            b.set_upper_bound(bound);
            b.set_cumulative_count(cumulative);
            b
        })
        .collect();
    let mut h = Histogram::default();
    h.set_bucket(buckets);
    h.set_sample_count(counts.iter().sum());
    h.set_sample_sum(sum);
    let mut m = Metric::from_label(labels(l));
    m.set_histogram(h);
    m
}

/// A gauge sample with these labels.
pub(crate) fn gauge(l: &[(&str, &str)], v: f64) -> Metric {
    let mut g = prometheus::proto::Gauge::default();
    g.set_value(v);
    let mut m = Metric::from_label(labels(l));
    m.set_gauge(g);
    m
}

/// A counter sample with these labels.
pub(crate) fn counter(l: &[(&str, &str)], v: f64) -> Metric {
    let mut c = prometheus::proto::Counter::default();
    c.set_value(v);
    let mut m = Metric::from_label(labels(l));
    m.set_counter(c);
    m
}

pub(crate) fn family(
    name: &str,
    help: &str,
    kind: MetricType,
    metrics: Vec<Metric>,
) -> MetricFamily {
    let mut f = MetricFamily::default();
    f.set_name(name.to_string());
    f.set_help(help.to_string());
    f.set_field_type(kind);
    f.set_metric(metrics);
    f
}

impl Collector for RequestCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let snap = self.stats.snapshot();
        let class_name = |c: usize| self.stats.classes.get(c).map_or("", String::as_str);
        let mut requests = Vec::new();
        let mut durations = Vec::new();
        for (labels_of, rs) in self.stats.routes.iter().zip(&snap.routes) {
            let class = class_name(labels_of.class);
            for o in Outcome::ALL {
                let mut counter = Counter::default();
                counter.set_value(rs.count(o) as f64);
                let mut m = Metric::from_label(labels(&[
                    ("route", &labels_of.name),
                    ("class", class),
                    ("priority", labels_of.priority),
                    ("outcome", o.as_str()),
                ]));
                m.set_counter(counter);
                requests.push(m);
            }
            durations.push(histogram(
                &[("route", &labels_of.name), ("class", class)],
                &DURATION_BUCKETS,
                &rs.buckets,
                rs.sum_seconds,
            ));
        }
        let inflight = snap
            .classes
            .iter()
            .enumerate()
            .map(|(c, cs)| {
                let mut g = Gauge::default();
                g.set_value(cs.inflight as f64);
                let mut m = Metric::from_label(labels(&[("class", class_name(c))]));
                m.set_gauge(g);
                m
            })
            .collect();
        vec![
            family(REQUESTS, REQUESTS_HELP, MetricType::COUNTER, requests),
            family(DURATION, DURATION_HELP, MetricType::HISTOGRAM, durations),
            family(INFLIGHT, INFLIGHT_HELP, MetricType::GAUGE, inflight),
        ]
    }
}
