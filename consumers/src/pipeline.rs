//! The consume loop: batch, decode, dead-letter, insert, commit.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer as _, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use rum_clickhouse::{insert_raw_rows, raw_rows, ClickHouseConfig, VitalsRawRow, VITALS_RAW};
use rum_schemas::kafka::{KafkaConfig, DLQ_REASON_HEADER};
use rum_schemas::{BeaconMessage, MessageError};
use tokio::sync::watch;

use crate::{ConsumerConfig, ConsumerMetrics};

/// Why the consumer could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum ConsumerError {
    /// The metrics address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// Kafka refused the configuration or the subscription.
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    /// The metrics registry could not be built.
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// One consumed message, decoded or not.
struct Consumed {
    partition: i32,
    offset: i64,
    decoded: Result<BeaconMessage, Poison>,
}

/// A message that can never be decoded, kept whole for the dead-letter topic.
struct Poison {
    error: MessageError,
    key: Option<Vec<u8>>,
    payload: Vec<u8>,
}

/// A consumer-group member writing to ClickHouse.
pub struct Consumer {
    consumer: StreamConsumer,
    dlq: FutureProducer,
    topic: String,
    dlq_topic: String,
    clickhouse: rum_clickhouse::Client,
    metrics: Arc<ConsumerMetrics>,
    batch_max_messages: usize,
    batch_max_wait: Duration,
    retry_max_backoff: Duration,
}

impl Consumer {
    /// Creates the Kafka clients; they connect lazily.
    pub fn new(
        config: &ConsumerConfig,
        kafka: &KafkaConfig,
        clickhouse: &ClickHouseConfig,
        metrics: Arc<ConsumerMetrics>,
    ) -> Result<Self, ConsumerError> {
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", &kafka.brokers)
            .set("group.id", &config.group_id)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false")
            .set("session.timeout.ms", "10000")
            .set("fetch.wait.max.ms", config.fetch_wait_max_ms.to_string())
            .create()?;
        // Not idempotent: a fenced idempotent producer is dead for good, and a dead letter
        // written twice harms nobody.
        let dlq: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", &kafka.brokers)
            .set("acks", "all")
            .create()?;
        Ok(Self {
            consumer,
            dlq,
            topic: kafka.topic.clone(),
            dlq_topic: kafka.dlq_topic.clone(),
            clickhouse: clickhouse.client(),
            metrics,
            batch_max_messages: config.batch_max_messages,
            batch_max_wait: Duration::from_millis(config.batch_max_wait_ms),
            retry_max_backoff: Duration::from_millis(config.retry_max_backoff_ms),
        })
    }

    /// Consumes until `stop` turns true. The batch in hand is finished first when possible.
    pub async fn run(self, mut stop: watch::Receiver<bool>) -> Result<(), ConsumerError> {
        self.consumer.subscribe(&[&self.topic])?;
        tracing::info!(topic = %self.topic, "consumer subscribed");
        while !*stop.borrow() {
            let (batch, started) = self.next_batch(&mut stop).await;
            if batch.is_empty() {
                continue;
            }
            if let Err(Stopped) = self.write_batch(&batch, &mut stop).await {
                tracing::warn!(
                    messages = batch.len(),
                    "stopped before the batch was written; it will be replayed"
                );
                break;
            }
            self.commit(&batch);
            self.metrics
                .batch_duration
                .observe(started.elapsed().as_secs_f64());
        }
        tracing::info!("consumer stopped");
        Ok(())
    }

    /// Collects messages until the batch is full, its first message waited long enough, or stop.
    async fn next_batch(&self, stop: &mut watch::Receiver<bool>) -> (Vec<Consumed>, Instant) {
        let mut batch = Vec::new();
        let mut started = Instant::now();
        let idle_poll = Duration::from_millis(500);
        loop {
            if *stop.borrow() {
                break;
            }
            let wait = if batch.is_empty() {
                idle_poll
            } else {
                self.batch_max_wait.saturating_sub(started.elapsed())
            };
            if wait.is_zero() {
                break;
            }
            tokio::select! {
                _ = stop.changed() => continue,
                received = tokio::time::timeout(wait, self.consumer.recv()) => match received {
                    Err(_elapsed) if batch.is_empty() => continue,
                    Err(_elapsed) => break,
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "kafka receive error");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    Ok(Ok(msg)) => {
                        if batch.is_empty() {
                            started = Instant::now();
                        }
                        self.metrics.messages_consumed.inc();
                        batch.push(decode(&msg));
                        if batch.len() >= self.batch_max_messages {
                            break;
                        }
                    }
                }
            }
        }
        (batch, started)
    }

    /// Dead-letters the poison and inserts the rows, retrying until done or stopped.
    async fn write_batch(
        &self,
        batch: &[Consumed],
        stop: &mut watch::Receiver<bool>,
    ) -> Result<(), Stopped> {
        for poison in batch.iter().filter_map(|c| c.decoded.as_ref().err()) {
            self.retry("dead-letter", stop, || self.dead_letter(poison))
                .await?;
            self.metrics
                .dead_lettered
                .with_label_values(&[poison.error.reason()])
                .inc();
        }
        let rows: Vec<VitalsRawRow> = batch
            .iter()
            .filter_map(|c| Some((c, c.decoded.as_ref().ok()?)))
            .flat_map(|(c, msg)| raw_rows(msg, &self.topic, c.partition as u32, c.offset as u64))
            .collect();
        self.retry("clickhouse insert", stop, || async {
            insert_raw_rows(&self.clickhouse, &rows).await.map_err(|e| {
                self.metrics.insert_errors.inc();
                e.to_string()
            })
        })
        .await?;
        self.metrics
            .rows_inserted
            .with_label_values(&[VITALS_RAW])
            .inc_by(rows.len() as u64);
        Ok(())
    }

    async fn dead_letter(&self, poison: &Poison) -> Result<(), String> {
        let headers = OwnedHeaders::new().insert(Header {
            key: DLQ_REASON_HEADER,
            value: Some(poison.error.to_string().as_bytes()),
        });
        let mut record = FutureRecord::<[u8], [u8]>::to(&self.dlq_topic)
            .payload(&poison.payload)
            .headers(headers);
        if let Some(key) = &poison.key {
            record = record.key(key);
        }
        self.dlq
            .send(record, Duration::from_secs(10))
            .await
            .map(|_| ())
            .map_err(|(e, _)| e.to_string())
    }

    /// Runs `attempt` until it succeeds, backing off exponentially; gives up only when stopped.
    async fn retry<F, Fut>(
        &self,
        what: &str,
        stop: &mut watch::Receiver<bool>,
        attempt: F,
    ) -> Result<(), Stopped>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<(), String>>,
    {
        let mut backoff = Duration::from_millis(100);
        loop {
            match attempt().await {
                Ok(()) => return Ok(()),
                Err(e) => {
                    tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "{what} failed")
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = stop.wait_for(|s| *s) => return Err(Stopped),
            }
            backoff = (backoff * 2).min(self.retry_max_backoff);
        }
    }

    /// Commits the offset after the last message of each partition in the batch.
    fn commit(&self, batch: &[Consumed]) {
        let mut next: std::collections::BTreeMap<i32, i64> = std::collections::BTreeMap::new();
        for c in batch {
            let e = next.entry(c.partition).or_insert(c.offset + 1);
            *e = (*e).max(c.offset + 1);
        }
        let mut list = TopicPartitionList::new();
        for (partition, offset) in next {
            if let Err(e) =
                list.add_partition_offset(&self.topic, partition, Offset::Offset(offset))
            {
                tracing::error!(error = %e, partition, "cannot build the commit list");
            }
        }
        if let Err(e) = self.consumer.commit(&list, CommitMode::Sync) {
            // Typically a rebalance took the partition: its new owner replays from the last commit.
            self.metrics.commit_errors.inc();
            tracing::warn!(error = %e, "offset commit failed");
        }
    }
}

/// The consumer was asked to stop while a batch was being written.
struct Stopped;

fn decode(msg: &impl Message) -> Consumed {
    let payload = msg.payload().unwrap_or_default();
    let decoded = BeaconMessage::decode(payload).map_err(|error| Poison {
        error,
        key: msg.key().map(<[u8]>::to_vec),
        payload: payload.to_vec(),
    });
    Consumed {
        partition: msg.partition(),
        offset: msg.offset(),
        decoded,
    }
}
