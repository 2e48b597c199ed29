//! Benchmark tools: a simulated app with bounded capacity ([`app`]), an open-loop load
//! generator ([`load`]) and the histogram both report with ([`histogram`]).
//!
//! None of this is on sluice's request path; it exists so that the numbers in the design
//! brief ("What good means, in numbers") can be measured on one machine, side by side.
//! The `sluice-bench` binary is a thin CLI over these modules.

pub mod app;
pub mod control;
pub mod histogram;
pub mod load;
