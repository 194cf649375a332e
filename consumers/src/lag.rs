//! Every member's view of the whole group, so that a stalled group is never silent.
//!
//! A member used to report the lag of the partitions it owned only: a member assigned nothing (a
//! group that did not settle after restarts) reported nothing, and every lag gauge read 0 while no
//! partition was consumed. Here every member reads, every [`LAG_EVERY`], for EVERY partition of the
//! topic the group's committed offset and the high watermark, and exports:
//! - `rum_consumer_lag_messages{partition}`: the high watermark minus the committed offset (a
//!   partition where the group committed nothing, or whose committed offset retention deleted:
//!   from the low watermark), the same on every member;
//! - `rum_consumer_topic_partitions`: the topic's partitions, from the metadata;
//! - `rum_consumer_partitions_owned`: this member's own count, given by the consume loop.
//!
//! Summed over the members the owned partitions make the topic's count; when they make fewer, a
//! partition is consumed by nobody (Prometheus' `RumConsumerPartitionsUnowned`).
//!
//! The reads run on a client of their own (the consumer's settings, never subscribed, so it is
//! not a member and takes no partition; its connection errors are warnings, the consumer's client
//! reports them as errors) on tokio's blocking pool, from a task of their own: a
//! consume loop stuck in its write path still reports lag, and the reads never hold a runtime
//! worker. Each refresh is bounded by [`LAG_EVERY`] in all (each watermark request by
//! [`WATERMARK_TIMEOUT`]); a refresh that fails in part or whole is counted in
//! `rum_consumer_lag_refresh_errors_total` and logged (throttled), and the gauges it could not
//! read keep their last value.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{Offset, TopicPartitionList};
use rum_schemas::config::ConfigError;
use rum_schemas::kafka::KafkaConfig;
use rum_telemetry::LogThrottle;
use tokio::sync::watch;

use crate::side_client::SideContext;
use crate::{ConsumerConfig, ConsumerMetrics};

/// How often the lag is read, and the bound of one read.
pub const LAG_EVERY: Duration = Duration::from_secs(5);
/// The bound of one partition's watermark request (a partition without a leader must not take
/// the whole refresh).
pub const WATERMARK_TIMEOUT: Duration = Duration::from_secs(1);
/// At most one log line of failed refreshes this often.
const LOG_EVERY: Duration = Duration::from_secs(60);

/// The lag of one partition: `high` minus the committed offset, or minus `low` where the group
/// committed nothing or retention deleted what it committed. Never negative.
pub fn partition_lag(committed: Option<i64>, low: i64, high: i64) -> i64 {
    let from = committed.map_or(low, |c| c.max(low));
    (high - from).max(0)
}

/// One partition as read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionLag {
    /// The partition.
    pub partition: i32,
    /// The group's committed offset (the next message it reads); `None` when it committed none.
    pub committed: Option<i64>,
    /// The low watermark (the oldest offset retention kept).
    pub low: i64,
    /// The high watermark (the next offset to be written).
    pub high: i64,
    /// [`partition_lag`] of the above.
    pub lag: i64,
}

/// One refresh: the topic's partitions, and those read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicLag {
    /// The partitions the topic has.
    pub partitions: usize,
    /// The partitions whose lag was read, by partition.
    pub read: Vec<PartitionLag>,
}

/// Why a refresh failed, in part or whole.
#[derive(Debug, thiserror::Error)]
pub enum LagError {
    /// No metadata of the topic.
    #[error("no metadata of topic `{topic}`: {source}")]
    Metadata {
        /// `kafka.topic`.
        topic: String,
        /// librdkafka's error.
        source: KafkaError,
    },
    /// The metadata lists the topic with an error (unknown, not authorized).
    #[error("topic `{topic}` in the metadata: {code:?}")]
    Topic {
        /// `kafka.topic`.
        topic: String,
        /// The broker's error.
        code: RDKafkaRespErr,
    },
    /// The group's committed offsets could not be read.
    #[error("committed offsets of group `{group}`: {source}")]
    Committed {
        /// `consumer.group_id`.
        group: String,
        /// librdkafka's error.
        source: KafkaError,
    },
    /// Some partitions' offsets could not be read; the others were exported.
    #[error(
        "{failed} of {partitions} partitions not read (first: partition {partition}: {source})"
    )]
    Partitions {
        /// How many were not read.
        failed: usize,
        /// The topic's partitions.
        partitions: usize,
        /// The first one not read.
        partition: i32,
        /// Why.
        source: KafkaError,
    },
    /// The refresh ran out of its time before every partition was read.
    #[error("{unread} of {partitions} partitions not read within {LAG_EVERY:?}")]
    Deadline {
        /// How many were not read.
        unread: usize,
        /// The topic's partitions.
        partitions: usize,
    },
    /// The blocking task died.
    #[error("the lag read did not finish: {0}")]
    Task(String),
}

/// Reads the whole group's lag and exports it (see the module's doc). Cheap to clone.
#[derive(Clone)]
pub struct GroupLag {
    inner: Arc<Inner>,
}

struct Inner {
    /// Not subscribed: reads offsets, never takes partitions.
    client: BaseConsumer<SideContext>,
    topic: String,
    group: String,
    metrics: Arc<ConsumerMetrics>,
    /// Partitions with a lag series, to remove those the topic no longer has.
    exported: Mutex<BTreeSet<i32>>,
    failures: LogThrottle,
}

impl GroupLag {
    /// Builds the reading client from the consumer's settings (`consumer_config`, checked at
    /// start); it connects lazily.
    pub fn new(
        kafka: &KafkaConfig,
        config: &ConsumerConfig,
        metrics: Arc<ConsumerMetrics>,
    ) -> Result<Self, ConfigError> {
        let client_config: ClientConfig = crate::consumer_config(kafka, config)?;
        let client = client_config
            .create_with_context(SideContext::new("lag reader"))
            .map_err(|e| {
                ConfigError::new(
                    "kafka.librdkafka_options",
                    format!("librdkafka cannot build the lag reader: {e}"),
                )
            })?;
        Ok(Self {
            inner: Arc::new(Inner {
                client,
                topic: kafka.topic.clone(),
                group: config.group_id.clone(),
                metrics,
                exported: Mutex::new(BTreeSet::new()),
                failures: LogThrottle::new(LOG_EVERY),
            }),
        })
    }

    /// Sets `rum_consumer_partitions_owned`: call it whenever this member's assignment may have
    /// changed (after each poll or rebalance; it is a gauge store).
    pub fn set_owned(&self, partitions: usize) {
        self.inner.metrics.partitions_owned.set(partitions as i64);
    }

    /// Reads every partition's lag once (at most [`LAG_EVERY`], on the blocking pool) and exports
    /// what was read. An error is counted and logged here; what was read is exported anyway.
    pub async fn refresh(&self) -> Result<TopicLag, LagError> {
        let inner = self.inner.clone();
        let read = tokio::task::spawn_blocking(move || inner.read())
            .await
            .unwrap_or_else(|e| (None, Some(LagError::Task(e.to_string()))));
        let (lag, error) = read;
        if let Some(lag) = &lag {
            self.inner.export(lag);
        }
        match error {
            None => Ok(lag.unwrap_or_default()),
            Some(error) => {
                self.inner.metrics.lag_refresh_errors.inc();
                if let Some(failures) = self.inner.failures.admit() {
                    tracing::warn!(
                        topic = %self.inner.topic,
                        failures,
                        "consumer lag not refreshed, the gauges keep their last values \
                         (rum_consumer_lag_refresh_errors_total): {}",
                        rum_telemetry::error_chain(&error)
                    );
                }
                Err(error)
            }
        }
    }

    /// Refreshes every [`LAG_EVERY`] until `stop` turns true (or its sender is gone). Spawn it
    /// beside the consume loop: it never waits on it.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        while !*stop.borrow() {
            let _ = self.refresh().await;
            tokio::select! {
                changed = stop.changed() => if changed.is_err() { break },
                _ = tokio::time::sleep(LAG_EVERY) => {}
            }
        }
        // The client's drop joins librdkafka's threads: not on a runtime worker.
        let _ = tokio::task::spawn_blocking(move || drop(self)).await;
    }
}

impl Inner {
    /// The blocking read: what was read, and the error that stopped or spoiled it.
    fn read(&self) -> (Option<TopicLag>, Option<LagError>) {
        let deadline = Instant::now() + LAG_EVERY;
        let left = || deadline.saturating_duration_since(Instant::now());
        self.drain_events();
        let metadata = match self.client.fetch_metadata(Some(&self.topic), left()) {
            Ok(metadata) => metadata,
            Err(source) => {
                let topic = self.topic.clone();
                return (None, Some(LagError::Metadata { topic, source }));
            }
        };
        let partitions: Vec<i32> = match metadata.topics().iter().find(|t| t.name() == self.topic) {
            Some(topic) => match topic.error() {
                None => topic.partitions().iter().map(|p| p.id()).collect(),
                Some(code) => {
                    let topic = self.topic.clone();
                    return (None, Some(LagError::Topic { topic, code }));
                }
            },
            None => {
                let topic = self.topic.clone();
                let code = RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART;
                return (None, Some(LagError::Topic { topic, code }));
            }
        };
        let mut wanted = TopicPartitionList::new();
        for &partition in &partitions {
            wanted.add_partition(&self.topic, partition);
        }
        let committed = match self.client.committed_offsets(wanted, left()) {
            Ok(committed) => committed,
            Err(source) => {
                let lag = TopicLag {
                    partitions: partitions.len(),
                    read: Vec::new(),
                };
                let group = self.group.clone();
                return (Some(lag), Some(LagError::Committed { group, source }));
            }
        };
        let mut lag = TopicLag {
            partitions: partitions.len(),
            read: Vec::with_capacity(partitions.len()),
        };
        // How many partitions were not read, the first of them and why.
        let mut failed: Option<(usize, i32, KafkaError)> = None;
        let mut fail = |partition: i32, source: KafkaError| match &mut failed {
            Some((count, _, _)) => *count += 1,
            None => failed = Some((1, partition, source)),
        };
        for (i, &partition) in partitions.iter().enumerate() {
            let wait = left().min(WATERMARK_TIMEOUT);
            if wait.is_zero() {
                let unread = partitions.len() - i;
                let error = LagError::Deadline {
                    unread,
                    partitions: partitions.len(),
                };
                return (Some(lag), Some(error));
            }
            // A partition missing from the answer, or with an error of its own, is not known.
            let committed = match committed.find_partition(&self.topic, partition) {
                None => {
                    fail(
                        partition,
                        KafkaError::OffsetFetch(RDKafkaErrorCode::UnknownPartition),
                    );
                    continue;
                }
                Some(element) => match element.error() {
                    Err(source) => {
                        fail(partition, source);
                        continue;
                    }
                    Ok(()) => match element.offset() {
                        Offset::Offset(offset) => Some(offset),
                        _ => None,
                    },
                },
            };
            match self.client.fetch_watermarks(&self.topic, partition, wait) {
                Ok((low, high)) => lag.read.push(PartitionLag {
                    partition,
                    committed,
                    low,
                    high,
                    lag: partition_lag(committed, low, high),
                }),
                Err(source) => fail(partition, source),
            }
        }
        let error = failed.map(|(failed, partition, source)| LagError::Partitions {
            failed,
            partitions: partitions.len(),
            partition,
            source,
        });
        (Some(lag), error)
    }

    /// Serves librdkafka's queued events (errors are logged through the context): the client is
    /// never polled otherwise, and its queue must not grow while Kafka is down.
    fn drain_events(&self) {
        for _ in 0..1_000 {
            if self.client.poll(Duration::ZERO).is_none() {
                break;
            }
        }
    }

    /// Sets the gauges of what was read; removes the series of partitions the topic lost.
    fn export(&self, lag: &TopicLag) {
        let metrics = &self.metrics;
        if lag.partitions > 0 {
            metrics.topic_partitions.set(lag.partitions as i64);
        }
        for p in &lag.read {
            metrics
                .lag
                .with_label_values(&[&p.partition.to_string()])
                .set(p.lag);
        }
        if lag.partitions == 0 {
            return;
        }
        let mut exported = self.exported.lock().unwrap_or_else(|e| e.into_inner());
        exported.extend(lag.read.iter().map(|p| p.partition));
        let gone: Vec<i32> = exported
            .iter()
            .copied()
            .filter(|&p| p < 0 || p as usize >= lag.partitions)
            .collect();
        for partition in gone {
            let _ = metrics.lag.remove_label_values(&[&partition.to_string()]);
            exported.remove(&partition);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_is_measured_from_the_commit_or_from_the_oldest_kept_message() {
        // Committed: the messages after it.
        assert_eq!(partition_lag(Some(40), 0, 100), 60);
        assert_eq!(partition_lag(Some(100), 0, 100), 0);
        // Nothing committed: every message the partition keeps.
        assert_eq!(partition_lag(None, 0, 100), 100);
        assert_eq!(partition_lag(None, 30, 100), 70);
        assert_eq!(partition_lag(None, 0, 0), 0);
        // A commit retention deleted: the group resumes at the oldest kept message.
        assert_eq!(partition_lag(Some(10), 30, 100), 70);
        // A commit beyond the end (a topic re-created under the same name): never negative.
        assert_eq!(partition_lag(Some(500), 0, 100), 0);
    }

    fn metrics() -> Arc<ConsumerMetrics> {
        Arc::new(ConsumerMetrics::new(10, Duration::from_secs(3_600)).unwrap())
    }

    fn inner(metrics: Arc<ConsumerMetrics>) -> Inner {
        let kafka = KafkaConfig::default();
        let config = ConsumerConfig::default();
        let client = crate::consumer_config(&kafka, &config)
            .unwrap()
            .create_with_context(SideContext::new("lag reader"))
            .unwrap();
        Inner {
            client,
            topic: kafka.topic,
            group: config.group_id,
            metrics,
            exported: Mutex::new(BTreeSet::new()),
            failures: LogThrottle::new(LOG_EVERY),
        }
    }

    fn read(partition: i32, committed: Option<i64>, low: i64, high: i64) -> PartitionLag {
        PartitionLag {
            partition,
            committed,
            low,
            high,
            lag: partition_lag(committed, low, high),
        }
    }

    #[test]
    fn every_partition_read_is_exported_and_a_partition_the_topic_lost_is_removed() {
        let metrics = metrics();
        let inner = inner(metrics.clone());
        inner.export(&TopicLag {
            partitions: 3,
            read: vec![
                read(0, Some(5), 0, 10),
                read(1, None, 2, 7),
                read(2, Some(9), 0, 9),
            ],
        });
        let gauge = |p: &str| metrics.lag.with_label_values(&[p]).get();
        assert_eq!((gauge("0"), gauge("1"), gauge("2")), (5, 5, 0));
        assert_eq!(metrics.topic_partitions.get(), 3);
        // Partition 1 not read this time: its last value stays. The topic now has 2 partitions
        // (re-created smaller): partition 2's series goes.
        inner.export(&TopicLag {
            partitions: 2,
            read: vec![read(0, Some(8), 0, 10)],
        });
        let text = rum_telemetry::encode(&metrics.registry);
        assert!(
            text.contains("rum_consumer_lag_messages{partition=\"0\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("rum_consumer_lag_messages{partition=\"1\"} 5\n"),
            "{text}"
        );
        assert!(!text.contains("partition=\"2\""), "{text}");
        assert!(text.contains("rum_consumer_topic_partitions 2\n"), "{text}");
        // Nothing read at all (no metadata): the last values stay.
        inner.export(&TopicLag::default());
        assert_eq!(metrics.topic_partitions.get(), 2);
        assert_eq!(gauge("1"), 5);
    }

    #[tokio::test]
    async fn a_kafka_that_does_not_answer_fails_the_refresh_within_its_bound_and_counts_it() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let kafka = KafkaConfig {
            brokers: format!("127.0.0.1:{port}"),
            ..KafkaConfig::default()
        };
        let metrics = metrics();
        let lag = GroupLag::new(&kafka, &ConsumerConfig::default(), metrics.clone()).unwrap();
        lag.set_owned(2);
        let started = Instant::now();
        let error = lag.refresh().await.unwrap_err();
        assert!(matches!(error, LagError::Metadata { .. }), "{error}");
        assert!(started.elapsed() < LAG_EVERY + Duration::from_secs(1));
        assert_eq!(metrics.lag_refresh_errors.get(), 1);
        assert_eq!(metrics.partitions_owned.get(), 2);
        assert_eq!(metrics.topic_partitions.get(), 0);
    }
}
