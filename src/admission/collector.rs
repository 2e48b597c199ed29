//! Renders admission state as Prometheus metric families at scrape time.

use super::{Admission, Rejection};
use crate::metrics::collector::{family, histogram, labels};
use crate::priority::Priority;
use prometheus::core::{Collector, Desc};
use prometheus::proto::{Counter, Gauge, Metric, MetricFamily, MetricType};
use std::sync::Arc;

const FAMILIES: [(&str, &str, &[&str]); 6] = [
    (
        "sluice_queue_depth",
        "Requests waiting for a concurrency slot, by class and priority.",
        &["class", "priority"],
    ),
    (
        "sluice_queue_wait_seconds",
        "Time admitted requests waited in the queue, by class and priority.",
        &["class", "priority"],
    ),
    (
        "sluice_upstream_response_seconds",
        "Time from sending a request to the app's response head, by class (admitted requests).",
        &["class"],
    ),
    (
        "sluice_concurrency_limit",
        "The current (adaptive) concurrency limit, by class.",
        &["class"],
    ),
    (
        "sluice_concurrency_critical_lane",
        "Slots at the top of the limit only critical requests may take, by class.",
        &["class"],
    ),
    (
        "sluice_rejections_total",
        "Requests refused by admission control, by class, priority and reason.",
        &["class", "priority", "reason"],
    ),
];

pub struct AdmissionCollector {
    admission: Arc<Admission>,
    descs: Vec<Desc>,
}

impl AdmissionCollector {
    pub fn new(admission: Arc<Admission>) -> AdmissionCollector {
        let descs = FAMILIES
            .iter()
            .filter_map(|(name, help, l)| {
                let l = l.iter().map(|s| s.to_string()).collect();
                Desc::new(name.to_string(), help.to_string(), l, Default::default()).ok()
            })
            .collect();
        AdmissionCollector { admission, descs }
    }
}

fn gauge(l: &[(&str, &str)], v: f64) -> Metric {
    let mut g = Gauge::default();
    g.set_value(v);
    let mut m = Metric::from_label(labels(l));
    m.set_gauge(g);
    m
}

impl Collector for AdmissionCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let (mut depth, mut waits, mut limits, mut rejections) = (vec![], vec![], vec![], vec![]);
        let (mut upstream, mut lanes) = (vec![], vec![]);
        for g in &self.admission.gates {
            let class = g.config.name.as_str();
            let u = g.stats.upstream.snapshot();
            upstream.push(histogram(
                &[("class", class)],
                u.bounds,
                &u.counts,
                u.sum_seconds,
            ));
            limits.push(gauge(&[("class", class)], g.limit() as f64));
            lanes.push(gauge(&[("class", class)], g.lane() as f64));
            let queued = g.queued_by_priority();
            for p in Priority::ALL {
                let l = [("class", class), ("priority", p.as_str())];
                depth.push(gauge(&l, queued[p.index()] as f64));
                let w = g.stats.waits[p.index()].snapshot();
                waits.push(histogram(&l, w.bounds, &w.counts, w.sum_seconds));
                for r in Rejection::ALL {
                    let mut c = Counter::default();
                    c.set_value(g.stats.rejected_count(p, r) as f64);
                    let mut m = Metric::from_label(labels(&[
                        ("class", class),
                        ("priority", p.as_str()),
                        ("reason", r.as_str()),
                    ]));
                    m.set_counter(c);
                    rejections.push(m);
                }
            }
        }
        let kinds = [
            MetricType::GAUGE,
            MetricType::HISTOGRAM,
            MetricType::HISTOGRAM,
            MetricType::GAUGE,
            MetricType::GAUGE,
            MetricType::COUNTER,
        ];
        FAMILIES
            .iter()
            .zip(kinds)
            .zip([depth, waits, upstream, limits, lanes, rejections])
            .map(|(((name, help, _), kind), metrics)| family(name, help, kind, metrics))
            .collect()
    }
}
