//! Admission control: which requests reach the app, in what order, and when.

pub mod limit;
