//! `sluice demo` end to end with small numbers: the table has a row per priority and
//! sluice serves critical requests at a higher rate than the app alone does.

use std::time::Duration;

use sluice::demo::{self, DemoSettings, PRIORITIES};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_table_shows_sluice_serving_critical_better_than_direct() {
    // 4 × 20 ms = 200 req/s capacity, driven at 400 req/s for 2 s per run.
    let settings = DemoSettings {
        duration: Duration::from_secs(2),
        capacity: 4,
        service_time: Duration::from_millis(20),
        warm_up: Duration::from_millis(500),
    };
    let mut progress = Vec::new();
    let table = demo::run(&settings, &mut progress).await.unwrap();
    let text = table.to_string();
    println!("{}\n{text}", String::from_utf8_lossy(&progress));

    assert_eq!(table.rows.len(), PRIORITIES.len());
    for p in PRIORITIES {
        let row = table.row(p).unwrap();
        assert!(row.direct.sent > 0 && row.sluice.sent > 0, "{row:?}");
        assert!(text.contains(p.as_str()), "{text}");
    }
    let progress = String::from_utf8_lossy(&progress);
    assert!(progress.contains("t=  1s"), "{progress}");
    assert!(
        progress.contains("warm-up: 0.5 s at 50 req/s"),
        "{progress}"
    );

    let critical = table.row(sluice::priority::Priority::Critical).unwrap();
    assert!(
        critical.sluice.served_pct() > critical.direct.served_pct(),
        "critical served {:.1} % through sluice, {:.1} % direct\n{text}",
        critical.sluice.served_pct(),
        critical.direct.served_pct()
    );
}
