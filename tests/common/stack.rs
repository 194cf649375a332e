//! Apache Kafka, the ClickHouse server (migrated) and `rum consume` members, for the exactly-once tests: beacons
//! produced straight to the topic (with a poison message every 500th), and exact counts after.

use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rum_schemas::{BeaconMessage, Device, MetricName, MetricSample};
use rum_testkit::{ClickHouseServer, Kafka};

use super::{rum_output, settled_counts, RumProcess};

/// Every produced beacon carries LCP, CLS and INP.
pub const METRICS_PER_BEACON: u64 = 3;

pub struct Stack {
    pub kafka: Kafka,
    pub clickhouse: ClickHouseServer,
    /// Where the members reach ClickHouse (the server, or a fault proxy in front of it).
    pub clickhouse_url: String,
}

impl Stack {
    pub fn start() -> Stack {
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
        let clickhouse_url = clickhouse.url.clone();
        Stack {
            kafka,
            clickhouse,
            clickhouse_url,
        }
    }

    /// Kafka and a ClickHouse server migrated up to `version` only (an older layout, to upgrade).
    pub async fn start_at_version(version: u32) -> Stack {
        let kafka = Kafka::start();
        kafka.create_pipeline_topics();
        let clickhouse = ClickHouseServer::start();
        let config = rum_clickhouse::ClickHouseConfig {
            url: clickhouse.url.clone(),
            ..Default::default()
        };
        rum_clickhouse::migrate_to(&config, Some(version))
            .await
            .expect("migrate to the old version");
        let clickhouse_url = clickhouse.url.clone();
        Stack {
            kafka,
            clickhouse,
            clickhouse_url,
        }
    }

    pub fn consumer(&self, metrics_port: u16) -> RumProcess {
        self.consumer_with(metrics_port, &[])
    }

    /// A member with `extra` settings over the tests' (small batches, 6 s sessions, 1 s lease).
    pub fn consumer_with(&self, metrics_port: u16, extra: &[(&str, &str)]) -> RumProcess {
        let port = metrics_port.to_string();
        let mut env = vec![
            ("RUM_KAFKA_BROKERS", self.kafka.brokers.as_str()),
            ("RUM_CLICKHOUSE_URL", self.clickhouse_url.as_str()),
            ("RUM_CONSUMER_PORT", port.as_str()),
            ("RUM_CONSUMER_BATCH_MAX_MESSAGES", "100"),
            ("RUM_CONSUMER_BATCH_MAX_WAIT_MS", "50"),
            ("RUM_CONSUMER_SESSION_TIMEOUT_MS", "6000"),
            ("RUM_CONSUMER_RETRY_MAX_BACKOFF_MS", "2000"),
            ("RUM_CONSUMER_FENCE_LEASE_MS", "1000"),
        ];
        env.extend_from_slice(extra);
        RumProcess::spawn(&["consume"], &env)
    }

    /// Publishes beacons `range` (3 metrics each, received now) and a poison message every 500th.
    pub async fn produce(&self, range: std::ops::Range<u64>) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        self.produce_at(range, |_| now).await;
    }

    /// Like [`produce`](Self::produce), beacon `i` received at `received_at(i)` (unix ms).
    pub async fn produce_at(&self, range: std::ops::Range<u64>, received_at: impl Fn(u64) -> u64) {
        self.produce_on(&self.producer(), range, received_at).await;
    }

    /// The producer of [`produce`](Self::produce), to keep for many calls of [`produce_on`](Self::produce_on).
    pub fn producer(&self) -> FutureProducer {
        // Batched as a production producer batches: the consumer resumes from committed offsets in the middle
        // of batches.
        ClientConfig::new()
            .set("bootstrap.servers", &self.kafka.brokers)
            .set("enable.idempotence", "true")
            .set("linger.ms", "20")
            .create()
            .unwrap()
    }

    /// Like [`produce_at`](Self::produce_at), on `producer` (from [`producer`](Self::producer)).
    pub async fn produce_on(
        &self,
        producer: &FutureProducer,
        range: std::ops::Range<u64>,
        received_at: impl Fn(u64) -> u64,
    ) {
        let mut pending = Vec::new();
        for i in range {
            let message = BeaconMessage {
                site: "shop".into(),
                route: format!("route-{}", i % 7),
                device: [Device::Mobile, Device::Desktop, Device::Tablet][i as usize % 3],
                nav_type: "navigate".into(),
                sample_rate: 1.0,
                received_at: received_at(i),
                page_id: String::new(),
                release: String::new(),
                rtt: "unknown".into(),
                browser: "unknown".into(),
                browser_major: 0,
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
                    resend: false,
                    attribution: Default::default(),
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

    /// Makes every rollup INSERT fail before it stores anything (vitals_1m renamed away, so the view of
    /// `vitals_1m_input_v2` has no target), while the raw INSERTs go on storing; [`Stack::restore_rollup`] undoes it.
    pub fn break_rollup(&self) {
        self.clickhouse
            .query("RENAME TABLE rum.vitals_1m TO rum.vitals_1m_away");
    }

    pub fn restore_rollup(&self) {
        self.clickhouse
            .query("RENAME TABLE rum.vitals_1m_away TO rum.vitals_1m");
    }

    /// Per partition: the group's committed offset and the high watermark, for diagnostics.
    pub fn kafka_positions(&self) -> Vec<(i32, String, i64)> {
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
    pub async fn assert_exactly(&self, expected: u64, within: Duration) {
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
