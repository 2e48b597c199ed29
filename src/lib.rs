//! sluice: an admission-control sidecar. A reverse proxy in front of one web application
//! that decides which requests reach it, in what order, and when.
//!
//! The request path reads top to bottom in [`proxy`]; [`app`] builds and owns every part.

pub mod admission;
pub mod api;
pub mod app;
pub mod breaker;
pub mod classify;
pub mod config;
pub mod degrade;
pub mod demo;
pub mod fallback;
pub mod forward;
pub mod h1;
pub mod listener;
pub mod metrics;
pub mod priority;
pub mod proxy;
pub mod rejection;
pub mod sim;
pub mod system;
pub mod upstream;
