//! `rum standalone` keeps storing after a restart: its embedded broker starts empty each time, and
//! the offsets it stored before must not be taken for the new broker's.

mod common;

use std::time::Duration;

use common::{eventually, wait_until_ready, RumProcess};
use rum_testkit::{free_port, ClickHouseServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stores_beacons_again_after_a_restart() {
    let clickhouse = ClickHouseServer::start();
    let http = reqwest::Client::new();
    for run in 1..=2u32 {
        let (ingest_port, consumer_port) = (free_port().to_string(), free_port().to_string());
        let mut standalone = RumProcess::spawn(
            &["standalone"],
            &[
                ("RUM_CLICKHOUSE_URL", clickhouse.url.as_str()),
                ("RUM_INGEST_PORT", ingest_port.as_str()),
                ("RUM_CONSUMER_PORT", consumer_port.as_str()),
                ("RUM_CONSUMER_BATCH_MAX_WAIT_MS", "100"),
            ],
        );
        let base = format!("http://127.0.0.1:{ingest_port}");
        wait_until_ready(&http, &base).await;
        for i in 0..3 {
            let body = format!(
                r#"{{"site":"s","route":"/r","metrics":[{{"name":"LCP","value":1000,"id":"run{run}-{i}"}}]}}"#
            );
            let status = http
                .post(format!("{base}/api/v1/observability/web-vitals"))
                .header("content-type", "text/plain")
                .body(body)
                .send()
                .await
                .unwrap()
                .status();
            assert_eq!(status, 204);
        }
        let expected = (3 * run).to_string();
        eventually(
            &format!("{expected} rows after run {run}"),
            Duration::from_secs(30),
            async || {
                let n = clickhouse.query("SELECT count() FROM rum.vitals_raw");
                (n.trim() == expected).then_some(())
            },
        )
        .await;
        assert!(standalone.terminate(Duration::from_secs(20)).success());
    }
}
