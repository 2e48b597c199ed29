//! Breaker and degradation state as Prometheus families, rendered at scrape time.

use super::{Breakers, State, TripReason};
use crate::degrade::{Degradation, Mode, Reason};
use crate::metrics::collector::{counter, family, gauge};
use crate::upstream::health::{UpstreamHealth, Verdict};
use prometheus::core::{Collector, Desc};
use prometheus::proto::{MetricFamily, MetricType};
use std::sync::Arc;
use tokio::time::Instant;

const FAMILIES: [(&str, &str, &[&str], MetricType); 8] = [
    (
        "sluice_circuit_state",
        "Circuit breaker state: 0 closed, 1 half-open, 2 open.",
        &["breaker"],
        MetricType::GAUGE,
    ),
    (
        "sluice_circuit_transitions_total",
        "Circuit breaker state changes, by the state entered.",
        &["breaker", "to"],
        MetricType::COUNTER,
    ),
    (
        "sluice_circuit_trips_total",
        "Times a circuit breaker opened, by reason.",
        &["breaker", "reason"],
        MetricType::COUNTER,
    ),
    (
        "sluice_degraded",
        "1 while sluice runs in degradation mode.",
        &[],
        MetricType::GAUGE,
    ),
    (
        "sluice_degraded_reason",
        "1 for each reason degradation mode is on now.",
        &["reason"],
        MetricType::GAUGE,
    ),
    (
        "sluice_degradation_mode",
        "1 for the current mode: auto, or an operator's force_on / force_off.",
        &["mode"],
        MetricType::GAUGE,
    ),
    (
        "sluice_degradation_transitions_total",
        "Times degradation mode was entered (to=\"degraded\") or left (to=\"normal\").",
        &["to"],
        MetricType::COUNTER,
    ),
    (
        "sluice_upstream_up",
        "1 while the app's health checks pass (always, without checks), 0 while it is down; absent until the first probe.",
        &[],
        MetricType::GAUGE,
    ),
];

pub struct ResilienceCollector {
    breakers: Option<Arc<Breakers>>,
    degradation: Arc<Degradation>,
    health: Arc<UpstreamHealth>,
    descs: Vec<Desc>,
}

impl ResilienceCollector {
    pub fn new(
        breakers: Option<Arc<Breakers>>,
        degradation: Arc<Degradation>,
        health: Arc<UpstreamHealth>,
    ) -> Self {
        let descs = FAMILIES
            .iter()
            .filter_map(|(name, help, l, _)| {
                let l = l.iter().map(|s| s.to_string()).collect();
                Desc::new(name.to_string(), help.to_string(), l, Default::default()).ok()
            })
            .collect();
        ResilienceCollector {
            breakers,
            degradation,
            health,
            descs,
        }
    }
}

impl Collector for ResilienceCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let now = Instant::now();
        let mut out: [Vec<_>; 8] = Default::default();
        for b in self.breakers.iter().flat_map(|b| b.all.iter()) {
            let name = b.name.as_str();
            let state = b.breaker.state(now);
            out[0].push(gauge(&[("breaker", name)], f64::from(state.code())));
            for s in State::ALL {
                let l = [("breaker", name), ("to", s.as_str())];
                out[1].push(counter(&l, b.transitions_to(s) as f64));
            }
            for r in TripReason::ALL {
                let l = [("breaker", name), ("reason", r.as_str())];
                out[2].push(counter(&l, b.trips(r) as f64));
            }
        }
        let d = &self.degradation;
        let view = d.view(now);
        let snap = &view.snapshot;
        out[3].push(gauge(&[], f64::from(u8::from(snap.degraded))));
        for r in Reason::ALL {
            let on = snap.degraded && snap.reasons.contains(&r);
            out[4].push(gauge(&[("reason", r.as_str())], f64::from(u8::from(on))));
        }
        for m in Mode::ALL {
            let on = snap.mode == m;
            out[5].push(gauge(&[("mode", m.as_str())], f64::from(u8::from(on))));
        }
        let entered = snap.entered_count;
        let left = entered.saturating_sub(u64::from(snap.degraded));
        out[6].push(counter(&[("to", "degraded")], entered as f64));
        out[6].push(counter(&[("to", "normal")], left as f64));
        match self.health.verdict() {
            Verdict::Up => out[7].push(gauge(&[], 1.0)),
            Verdict::Down => out[7].push(gauge(&[], 0.0)),
            Verdict::Unknown => {}
        }
        FAMILIES
            .iter()
            .zip(out)
            .filter(|(_, metrics)| !metrics.is_empty())
            .map(|((name, help, _, kind), metrics)| family(name, help, *kind, metrics))
            .collect()
    }
}
