//! STUB: replaced by the adaptive controller (branch `limit`).
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct LimitSettings {
    pub min: usize,
    pub max: usize,
}

#[derive(Clone, Debug, Default)]
pub struct WindowSample {
    pub samples: u64,
    pub rtt_avg: Duration,
    pub rtt_min: Duration,
    pub max_inflight: usize,
    pub dropped: u64,
    pub window: Duration,
}

pub struct GradientLimit {
    limit: usize,
}

impl GradientLimit {
    pub fn new(settings: LimitSettings) -> GradientLimit {
        GradientLimit {
            limit: settings.max,
        }
    }
    pub fn limit(&self) -> usize {
        self.limit
    }
    pub fn update(&mut self, _sample: &WindowSample) -> usize {
        self.limit
    }
    pub fn baseline_rtt(&self) -> Option<Duration> {
        None
    }
}

pub enum Limiter {
    Fixed(usize),
    Gradient(GradientLimit),
}

impl Limiter {
    pub fn limit(&self) -> usize {
        match self {
            Limiter::Fixed(n) => *n,
            Limiter::Gradient(g) => g.limit(),
        }
    }
    pub fn update(&mut self, sample: &WindowSample) -> usize {
        match self {
            Limiter::Fixed(n) => *n,
            Limiter::Gradient(g) => g.update(sample),
        }
    }
    pub fn baseline_rtt(&self) -> Option<Duration> {
        match self {
            Limiter::Fixed(_) => None,
            Limiter::Gradient(g) => g.baseline_rtt(),
        }
    }
}
