//! sluice: an admission-control sidecar that decides which requests reach the app,
//! in what order, and when.

pub mod config;
pub mod priority;
