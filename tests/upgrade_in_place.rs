//! Upgrade in place (issue 16): a database filled by the consumers of migrations 001-003 (one INSERT into
//! vitals_raw, views filling vitals_1m and kafka_offsets) upgrades to the ledgers of migration 004 and the new
//! write path without losing or doubling a row, with real processes: Apache Kafka, ClickHouse 18.16, `rum
//! migrate` and `rum consume`.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::stack::{Stack, METRICS_PER_BEACON};
use common::{exposition, metric_sum, rum_output};
use rum_schemas::BeaconMessage;
use rum_testkit::{free_port, read_topic};

const TOPIC: &str = "rum.beacons.v1";

fn sql_string(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_of_the_old_layout_upgrades_without_losing_or_doubling_a_row() {
    let stack = Stack::start_at_version(3).await;
    const N: u64 = 1_200;
    stack.produce(0..N).await;

    // The old consumer stored the first 60% of each partition, batch by batch, as it did: one INSERT into
    // vitals_raw per batch, the views filling vitals_1m and kafka_offsets.
    let brokers = stack.kafka.brokers.clone();
    let expected_records = (N + N / 500) as usize;
    let records =
        tokio::task::spawn_blocking(move || read_topic(&brokers, TOPIC, 4, expected_records))
            .await
            .unwrap();
    assert_eq!(records.len(), expected_records);
    let mut per_partition: BTreeMap<i32, Vec<&rum_testkit::KafkaRecord>> = BTreeMap::new();
    for r in &records {
        per_partition.entry(r.partition).or_default().push(r);
    }
    let mut old_rows = 0u64;
    for (partition, list) in &per_partition {
        let stored = list.len() * 6 / 10;
        for batch in list[..stored].chunks(50) {
            let mut values = Vec::new();
            for r in batch {
                let Ok(msg) = BeaconMessage::decode(&r.value) else {
                    continue; // poison: the old consumer dead-lettered it
                };
                for m in &msg.metrics {
                    values.push(format!(
                        "({}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {})",
                        msg.received_at / 1000,
                        sql_string(&msg.site),
                        sql_string(&msg.route),
                        sql_string(msg.device.as_str()),
                        sql_string(&msg.nav_type),
                        sql_string(m.name.as_str()),
                        m.value,
                        sql_string(m.rating.as_str()),
                        sql_string(&m.id),
                        msg.sample_rate,
                        sql_string(TOPIC),
                        partition,
                        r.offset
                    ));
                }
            }
            if values.is_empty() {
                continue;
            }
            old_rows += values.len() as u64;
            stack.clickhouse.query(&format!(
                "INSERT INTO rum.vitals_raw (received_at, site, route, device, nav_type, metric, value, rating, \
                 metric_id, sample_rate, kafka_topic, kafka_partition, kafka_offset) VALUES {}",
                values.join(", ")
            ));
        }
    }
    let rollup_before = stack
        .clickhouse
        .query("SELECT countMerge(samples) FROM rum.vitals_1m FORMAT TSV");
    assert_eq!(
        rollup_before.trim(),
        old_rows.to_string(),
        "the old views filled vitals_1m"
    );

    // The upgrade was interrupted once, after its first statement: running it again completes it.
    stack.clickhouse.query(
        "ALTER TABLE rum.vitals_raw ADD COLUMN kafka_topic_id String DEFAULT '' AFTER kafka_topic",
    );
    let out = rum_output(
        &["migrate"],
        &[("RUM_CLICKHOUSE_URL", stack.clickhouse.url.as_str())],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let views = stack.clickhouse.query(
        "SELECT name FROM system.tables WHERE database = 'rum' AND engine = 'MaterializedView' ORDER BY name FORMAT TSV",
    );
    assert_eq!(
        views.lines().collect::<Vec<_>>(),
        ["vitals_1m_rollup", "vitals_1m_rollup_v2"],
        "the old views are gone, the rollup's are there (004's, for consumers of the version before, and 005's)"
    );

    // The new consumer resumes after what the old one stored, and more beacons arrive.
    let port = free_port();
    let _consumer = stack.consumer(port);
    stack.produce(N..N + N / 2).await;
    let total = (N + N / 2) * METRICS_PER_BEACON;
    stack.assert_exactly(total, Duration::from_secs(90)).await;
    let m = exposition(&format!("http://127.0.0.1:{port}/metrics")).await;
    assert_eq!(
        metric_sum(&m, "rum_consumer_rows_inserted_total") as u64,
        2 * (total - old_rows),
        "the new consumer wrote only what the old one had not, to both tables:\n{m}"
    );
    assert_eq!(
        metric_sum(&m, "rum_consumer_topic_incarnations_total"),
        0.0,
        "the old floors were taken over, not mistaken for another topic's"
    );
}
