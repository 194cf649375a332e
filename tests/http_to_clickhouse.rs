//! The first real path, end to end with real processes: an HTTP POST to `rum ingest`, through the
//! Apache Kafka broker, `rum consume`, into the ClickHouse server's `rum.vitals_raw`.

mod common;

use std::time::Duration;

use common::{eventually, Pipeline};

const BEACON: &str = r#"{"site":"shop","route":"/product/123","device":"mobile","nav_type":"navigate","sample_rate":0.25,"metrics":[{"name":"LCP","value":2310.5,"id":"v5-1700-123","rating":"good"},{"name":"CLS","value":0.31,"id":"v5-1700-124","rating":"good"}]}"#;
const BARE_METRIC: &str = r#"{"name":"INP","value":612,"rating":"poor","delta":612,"id":"v5-1700-125","navigationType":"reload","route":"/cart/"}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_posted_beacon_becomes_rows_in_clickhouse() {
    let mut pipeline = Pipeline::start(&[]).await;
    let (http, clickhouse, base) = (&pipeline.http, &pipeline.clickhouse, pipeline.base.clone());
    let post = async |content_type: &str, query: &str, body: &str| {
        pipeline.post(content_type, query, body).await
    };
    assert_eq!(post("text/plain;charset=UTF-8", "", BEACON).await, 204);
    assert_eq!(
        post("application/json", "?site=blog", BARE_METRIC).await,
        204
    );
    assert_eq!(post("text/plain", "", "{not json").await, 400);
    assert_eq!(post("application/xml", "", BEACON).await, 415);
    // The collector sends a metric again when its value changed (CLS grows); the first value wins.
    let resent = BEACON.replace(r#""value":0.31"#, r#""value":0.45"#);
    assert_ne!(resent, BEACON);
    assert_eq!(post("text/plain", "", &resent).await, 204);

    let rows = eventually(
        "3 rows in rum.vitals_raw",
        Duration::from_secs(30),
        async || {
            let rows = clickhouse.query(
            "SELECT site, route, device, nav_type, metric, value, rating, metric_id, sample_rate \
             FROM rum.vitals_raw ORDER BY metric_id FORMAT TSV",
        );
            (rows.lines().count() >= 3).then_some(rows)
        },
    )
    .await;
    assert_eq!(
        rows.lines().collect::<Vec<_>>(),
        [
            "shop\tproduct-id\tmobile\tnavigate\tLCP\t2310.5\tgood\tv5-1700-123\t0.25",
            "shop\tproduct-id\tmobile\tnavigate\tCLS\t0.31\tpoor\tv5-1700-124\t0.25",
            "blog\tcart\tunknown\treload\tINP\t612\tpoor\tv5-1700-125\t1",
        ]
    );

    let consumer_metrics = pipeline.consumer_metrics.clone();
    eventually(
        "the re-sent metrics to be dropped as duplicates",
        Duration::from_secs(30),
        async || {
            let text = http
                .get(&consumer_metrics)
                .send()
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            text.lines()
                .any(|l| l == "rum_consumer_metrics_deduplicated_total 2")
                .then_some(())
        },
    )
    .await;
    let stored = clickhouse
        .query("SELECT count(), sum(value) FROM rum.vitals_raw WHERE metric = 'CLS' FORMAT TSV");
    assert_eq!(stored.trim(), "1\t0.31", "one CLS row, the first value");

    // The ingest counted every request once, as accepted or rejected with a reason.
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "rum_beacons_received_total 5",
        "rum_beacons_accepted_total 3",
        "rum_beacons_rejected_total{reason=\"malformed_json\"} 1",
        "rum_beacons_rejected_total{reason=\"unsupported_media_type\"} 1",
        "rum_metrics_accepted_total{metric=\"LCP\"} 2",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "missing `{line}` in\n{metrics}"
        );
    }

    pipeline.stop();
}
