//! Exactly once into ClickHouse, with real processes: Apache Kafka, the ClickHouse server and `rum consume`,
//! through SIGKILLs at random moments, a rebalance between two members, and a ClickHouse outage.

mod common;

use std::time::Duration;

use common::{exposition, metric_sum, rum_output, settled_counts, stored_counts, RumProcess};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rum_schemas::{BeaconMessage, Device, MetricName, MetricSample};
use rum_testkit::{free_port, read_topic, ClickHouseServer, Kafka};

const METRICS_PER_BEACON: u64 = 3;

struct Stack {
    kafka: Kafka,
    clickhouse: ClickHouseServer,
}

impl Stack {
    fn start() -> Stack {
        let kafka = Kafka::start();
        kafka.create_pipeline_topics();
        let clickhouse = ClickHouseServer::start();
        let out = rum_output(
            &["migrate"],
            &[("RUM_CLICKHOUSE_URL", clickhouse.url.as_str())],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Stack { kafka, clickhouse }
    }

    fn consumer(&self, metrics_port: u16) -> RumProcess {
        let port = metrics_port.to_string();
        RumProcess::spawn(
            &["consume"],
            &[
                ("RUM_KAFKA_BROKERS", self.kafka.brokers.as_str()),
                ("RUM_CLICKHOUSE_URL", self.clickhouse.url.as_str()),
                ("RUM_CONSUMER_PORT", port.as_str()),
                ("RUM_CONSUMER_BATCH_MAX_MESSAGES", "100"),
                ("RUM_CONSUMER_BATCH_MAX_WAIT_MS", "50"),
                ("RUM_CONSUMER_SESSION_TIMEOUT_MS", "6000"),
                ("RUM_CONSUMER_RETRY_MAX_BACKOFF_MS", "2000"),
            ],
        )
    }

    /// Publishes beacons `range` (3 metrics each) and a poison message every 500th.
    async fn produce(&self, range: std::ops::Range<u64>) {
        // Batched as a production producer batches: the consumer resumes from committed offsets in the middle
        // of batches.
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", &self.kafka.brokers)
            .set("enable.idempotence", "true")
            .set("linger.ms", "20")
            .create()
            .unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let mut pending = Vec::new();
        for i in range {
            let message = BeaconMessage {
                site: "shop".into(),
                route: format!("route-{}", i % 7),
                device: [Device::Mobile, Device::Desktop, Device::Tablet][i as usize % 3],
                nav_type: "navigate".into(),
                sample_rate: 1.0,
                received_at: now,
                metrics: [
                    (MetricName::LCP, 1800.0),
                    (MetricName::CLS, 0.05),
                    (MetricName::INP, 180.0),
                ]
                .into_iter()
                .map(|(name, value)| MetricSample {
                    name,
                    value,
                    id: format!("{i}-{}", name.as_str()),
                    rating: name.rate(value),
                })
                .collect(),
            };
            let (key, value) = (message.key(), message.encode());
            let record = FutureRecord::<[u8], [u8]>::to("rum.beacons.v1")
                .key(key.as_bytes())
                .payload(&value);
            pending.push(
                producer
                    .send_result(record)
                    .map_err(|(e, _)| e)
                    .expect("enqueued"),
            );
            if i % 500 == 499 {
                let poison = FutureRecord::<[u8], [u8]>::to("rum.beacons.v1")
                    .key(b"poison")
                    .payload(b"{not a beacon");
                pending.push(
                    producer
                        .send_result(poison)
                        .map_err(|(e, _)| e)
                        .expect("enqueued"),
                );
            }
        }
        for p in pending {
            p.await
                .expect("delivered")
                .map_err(|(e, _)| e)
                .expect("produced");
        }
    }

    /// Per partition: the group's committed offset and the high watermark, for diagnostics.
    fn kafka_positions(&self) -> Vec<(i32, String, i64)> {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        let probe: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.kafka.brokers)
            .set("group.id", "rum-consumers")
            .create()
            .unwrap();
        let mut list = rdkafka::TopicPartitionList::new();
        for p in 0..4 {
            list.add_partition("rum.beacons.v1", p);
        }
        let committed = probe
            .committed_offsets(list, Duration::from_secs(5))
            .unwrap();
        (0..4)
            .map(|p| {
                let c = committed
                    .find_partition("rum.beacons.v1", p)
                    .map(|e| format!("{:?}", e.offset()))
                    .unwrap_or_default();
                let high = probe
                    .fetch_watermarks("rum.beacons.v1", p, Duration::from_secs(5))
                    .map_or(-1, |w| w.1);
                (p, c, high)
            })
            .collect()
    }

    /// Waits until `expected` rows are stored, then checks nothing more arrives and nothing is doubled.
    async fn assert_exactly(&self, expected: u64, within: Duration) {
        let (raw, distinct, rollup) = settled_counts(&self.clickhouse, expected, within).await;
        let per_partition = self.clickhouse.query(
            "SELECT kafka_partition, min(kafka_offset), max(kafka_offset), uniqExact(kafka_offset), count() \
             FROM rum.vitals_raw GROUP BY kafka_partition ORDER BY kafka_partition FORMAT TSV",
        );
        eprintln!("partition, min offset, max offset, distinct offsets, rows:\n{per_partition}");
        eprintln!(
            "kafka (partition, committed, high watermark): {:?}",
            self.kafka_positions()
        );
        assert_eq!(raw, expected, "rows in vitals_raw");
        assert_eq!(distinct, expected, "every metric id once");
        assert_eq!(rollup, expected, "vitals_1m sample counts");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkills_at_random_moments_neither_lose_nor_double_count() {
    let stack = Stack::start();
    const N: u64 = 4_000;
    stack.produce(0..N).await;
    let mut rng = StdRng::seed_from_u64(7);
    for round in 0..4 {
        let mut consumer = stack.consumer(free_port());
        // Some kills land before the member owns partitions, most in the middle of inserting.
        let after = Duration::from_millis(rng.random_range(1_000..8_000));
        tokio::time::sleep(after).await;
        consumer.kill();
        eprintln!(
            "round {round}: SIGKILL after {after:?}, stored so far {:?}",
            stored_counts(&stack.clickhouse)
        );
    }
    let _last = stack.consumer(free_port());
    stack
        .assert_exactly(N * METRICS_PER_BEACON, Duration::from_secs(120))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebalance_between_two_members_neither_loses_nor_double_counts() {
    let stack = Stack::start();
    const N: u64 = 6_000;
    stack.produce(0..N / 2).await;
    let mut first = stack.consumer(free_port());
    tokio::time::sleep(Duration::from_secs(4)).await;
    let _second = stack.consumer(free_port());
    stack.produce(N / 2..N).await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    eprintln!(
        "before the SIGKILL of the first member: {:?}",
        stored_counts(&stack.clickhouse)
    );
    first.kill();
    stack
        .assert_exactly(N * METRICS_PER_BEACON, Duration::from_secs(120))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clickhouse_outage_of_a_minute_loses_nothing_and_drains_after() {
    let mut stack = Stack::start();
    const N: u64 = 4_000;
    let metrics_port = free_port();
    let _consumer = stack.consumer(metrics_port);
    stack.produce(0..N / 2).await;
    stack
        .assert_exactly(N / 2 * METRICS_PER_BEACON, Duration::from_secs(60))
        .await;

    stack.clickhouse.stop();
    stack.produce(N / 2..N).await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    let metrics_url = format!("http://127.0.0.1:{metrics_port}/metrics");
    let metrics = exposition(&metrics_url).await;
    assert!(
        metric_sum(&metrics, "rum_consumer_insert_errors_total") > 0.0,
        "the outage is visible:\n{metrics}"
    );
    assert!(
        metric_sum(&metrics, "rum_consumer_lag_messages") > 0.0,
        "the backlog is visible as lag:\n{metrics}"
    );

    stack.clickhouse.start_again();
    stack
        .assert_exactly(N * METRICS_PER_BEACON, Duration::from_secs(120))
        .await;

    // Prometheus saw every stored LCP once: the consumer lived through the outage.
    let metrics = exposition(&metrics_url).await;
    let lcp_count = metric_sum(&metrics, "rum_web_vitals_lcp_seconds_count");
    assert_eq!(lcp_count, N as f64, "one LCP observation per beacon");

    // The poison (one every 500 beacons) went to the dead-letter topic once, with its reason,
    // even though its batch was retried through the outage.
    let brokers = stack.kafka.brokers.clone();
    let dead =
        tokio::task::spawn_blocking(move || read_topic(&brokers, "rum.beacons.dlq.v1", 1, 8))
            .await
            .unwrap();
    assert_eq!(
        dead.len(),
        (N / 500) as usize,
        "one dead letter per poison message"
    );
    for record in &dead {
        assert_eq!(record.value, b"{not a beacon");
        let reason = record.headers.iter().find(|(k, _)| k == "rum-dlq-reason");
        let reason = reason.map(|(_, v)| String::from_utf8_lossy(v).into_owned());
        assert!(
            reason
                .as_deref()
                .is_some_and(|r| r.starts_with("undecodable")),
            "{:?}",
            record.headers
        );
    }
}
