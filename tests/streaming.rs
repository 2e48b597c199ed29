//! Streaming large bodies through sluice with bounded memory. Alone in its own test
//! binary (its own process), so that no other test's allocations move the RSS it reads.

mod common;

use bytes::Bytes;
use common::harness::{base_config, start};
use common::{Http1Client, PatternBody, TestUpstream};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    sluice::system::parse_vm_rss(&status).unwrap_or(0)
}

#[tokio::test]
async fn large_bodies_stream_both_ways_with_bounded_memory() {
    const DOWN: u64 = 100 * 1024 * 1024;
    const UP: u64 = 50 * 1024 * 1024;
    let app = TestUpstream::start().await;
    let sluice = start(&base_config(app.addr())).await;
    let before = rss_bytes();

    let mut client = Http1Client::connect(sluice.addr).await.expect("connect");
    let resp = client
        .send(
            Request::get(format!("/bytes/{DOWN}"))
                .body(Full::new(Bytes::new()))
                .expect("req"),
        )
        .await
        .expect("response");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-length"], DOWN.to_string().as_str());
    let mut body = resp.into_body();
    let (mut received, mut offset_ok) = (0u64, true);
    while let Some(frame) = body.frame().await {
        let frame = frame.expect("body frame");
        if let Some(data) = frame.data_ref() {
            offset_ok &= data
                .iter()
                .enumerate()
                .all(|(i, &b)| b == common::pattern_byte(received + i as u64));
            received += data.len() as u64;
        }
    }
    assert_eq!(received, DOWN);
    assert!(offset_ok, "bytes arrive intact and in order");

    let resp = client
        .send_body(
            Request::post("/sink")
                .body(PatternBody::new(UP))
                .expect("req"),
        )
        .await
        .expect("upload response");
    assert_eq!(resp.status(), StatusCode::OK);
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(v["received"], UP);

    let grown = rss_bytes().saturating_sub(before);
    assert!(
        grown < 40 * 1024 * 1024,
        "150 MB passed through but resident memory grew by {} MiB",
        grown >> 20
    );
    sluice.shutdown().await;
}
