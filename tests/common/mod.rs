//! Shared integration-test kit (independent of the `sluice` library).
//! Each test file does `mod common;` and picks what it needs.

#![allow(dead_code, unused_imports)]

pub mod client;
pub mod harness;
pub mod relay;
pub mod scripted;
pub mod upstream;

pub use client::{
    parse_response_head, raw_exchange, raw_response_head, websocket_upgrade, ClientBody, H2cClient,
    Http1Client, RawHeaders,
};
pub use relay::TcpRelay;
pub use upstream::{pattern_byte, PatternBody, RecordedRequest, TestUpstream};
