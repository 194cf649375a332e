//! The consume loop: batch, decode, dead-letter, insert exactly once, commit.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer as _, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use rum_clickhouse::{
    insert_raw_messages, stored_offsets, ClickHouseConfig, RawMessage, VITALS_RAW,
};
use rum_kafka::{ClientKind, ClientProperties, LoggingContext};
use rum_schemas::config::ConfigError;
use rum_schemas::kafka::{KafkaConfig, DLQ_REASON_HEADER};
use rum_schemas::{BeaconMessage, MessageError};
use tokio::sync::watch;

use crate::dedup::SeenMetricIds;
use crate::ownership::{Ownership, OwnershipContext};
use crate::{ConsumerConfig, ConsumerMetrics};

/// How often the lag gauges are refreshed.
const LAG_EVERY: Duration = Duration::from_secs(5);

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
    /// A setting could not be used (a password file unreadable since the start).
    #[error("config: {0}")]
    Config(#[from] ConfigError),
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
    /// Already in the dead-letter topic: a retried batch does not send it again.
    sent: bool,
}

/// The consumer was asked to stop while a batch was being written.
struct Stopped;

/// A consumer-group member writing to ClickHouse exactly once (see [`crate::ownership`]).
pub struct Consumer {
    consumer: StreamConsumer<OwnershipContext>,
    ownership: Arc<Mutex<Ownership>>,
    /// The dead-letter producer's settings, checked at start.
    dlq_config: ClientConfig,
    /// The dead-letter producer, created on the first dead letter: an idle producer's poll thread
    /// still costs CPU, and most runs never see poison.
    dlq: OnceLock<FutureProducer<LoggingContext>>,
    topic: String,
    /// The topic name stored with the rows and offsets: its offsets are the floors.
    stored_topic: String,
    dlq_topic: String,
    clickhouse: rum_clickhouse::Client,
    metrics: Arc<ConsumerMetrics>,
    batch_max_messages: usize,
    batch_max_wait: Duration,
    retry_max_backoff: Duration,
    lag_updated: Mutex<Option<Instant>>,
    seen: Mutex<SeenMetricIds>,
}

impl Consumer {
    /// Creates the Kafka clients; they connect lazily.
    pub fn new(
        config: &ConsumerConfig,
        kafka: &KafkaConfig,
        clickhouse: &ClickHouseConfig,
        metrics: Arc<ConsumerMetrics>,
    ) -> Result<Self, ConsumerError> {
        let context = OwnershipContext::new(&kafka.topic);
        let ownership = context.ownership.clone();
        let consumer: StreamConsumer<OwnershipContext> =
            consumer_config(kafka, config)?.create_with_context(context)?;
        let dlq_config = rum_kafka::client_config(kafka, &dlq_producer_properties())?;
        // A bad setting stops the start, as when the producer was created here.
        dlq_config.create_native_config()?;
        Ok(Self {
            consumer,
            ownership,
            dlq_config,
            dlq: OnceLock::new(),
            topic: kafka.topic.clone(),
            stored_topic: match &config.topic_incarnation {
                Some(incarnation) => format!("{}@{incarnation}", kafka.topic),
                None => kafka.topic.clone(),
            },
            dlq_topic: kafka.dlq_topic.clone(),
            clickhouse: clickhouse.client(),
            metrics,
            batch_max_messages: config.batch_max_messages,
            batch_max_wait: Duration::from_millis(config.batch_max_wait_ms),
            retry_max_backoff: Duration::from_millis(config.retry_max_backoff_ms),
            lag_updated: Mutex::new(None),
            seen: Mutex::new(SeenMetricIds::new(config.dedup_capacity)),
        })
    }

    fn ownership(&self) -> MutexGuard<'_, Ownership> {
        self.ownership.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Consumes until `stop` turns true. The batch in hand is finished first when possible.
    pub async fn run(self, mut stop: watch::Receiver<bool>) -> Result<(), ConsumerError> {
        self.consumer.subscribe(&[&self.topic])?;
        tracing::info!(topic = %self.topic, "consumer subscribed");
        while !*stop.borrow() {
            let (mut batch, started) = self.next_batch(&mut stop).await;
            self.update_lag();
            if batch.is_empty() {
                continue;
            }
            if let Err(Stopped) = self.write_batch(&mut batch, &mut stop).await {
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
        let idle_poll = Duration::from_millis(500);
        // The first message: no batch yet, so no deadline.
        let first = loop {
            if *stop.borrow() {
                return (batch, Instant::now());
            }
            tokio::select! {
                _ = stop.changed() => continue,
                received = self.receive(idle_poll) => match received {
                    None => continue,
                    Some(consumed) => break consumed,
                }
            }
        };
        let started = Instant::now();
        batch.push(first);
        // One deadline for the batch. Messages already fetched are taken without arming a timer
        // or reading the clock; the clock is read every 64 of them in case they never stop coming.
        let deadline = started + self.batch_max_wait;
        let timer = tokio::time::sleep_until(deadline.into());
        tokio::pin!(timer);
        while batch.len() < self.batch_max_messages && !*stop.borrow() {
            if timer.is_elapsed() || (batch.len() % 64 == 0 && Instant::now() >= deadline) {
                break;
            }
            tokio::select! {
                biased;
                received = self.consumer.recv() => match received {
                    Ok(msg) => {
                        self.metrics.messages_consumed.inc();
                        batch.push(decode(&msg));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "kafka receive error");
                        let pause = deadline.min(Instant::now() + Duration::from_millis(200));
                        tokio::time::sleep_until(pause.into()).await;
                        break;
                    }
                },
                _ = stop.changed() => {}
                _ = &mut timer => break,
            }
        }
        (batch, started)
    }

    /// Polls for up to `wait`: a message, or `None`. Rebalance callbacks run in here.
    async fn receive(&self, wait: Duration) -> Option<Consumed> {
        match tokio::time::timeout(wait, self.consumer.recv()).await {
            Err(_elapsed) => None,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "kafka receive error");
                tokio::time::sleep(Duration::from_millis(200).min(wait)).await;
                None
            }
            Ok(Ok(msg)) => {
                self.metrics.messages_consumed.inc();
                Some(decode(&msg))
            }
        }
    }

    /// Writes the batch exactly once, retrying with backoff until done or stopped. While ClickHouse
    /// cannot be written, the owned partitions are paused (no fetching, memory bounded) and the
    /// group is still served, so rebalances proceed and revoked partitions are dropped from the batch.
    async fn write_batch(
        &self,
        batch: &mut Vec<Consumed>,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<(), Stopped> {
        let mut backoff = Duration::from_millis(100);
        let mut paused = false;
        loop {
            match self.try_write(batch).await {
                Ok(()) => {
                    if paused {
                        self.set_paused(false);
                    }
                    return Ok(());
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "batch not written");
                }
            }
            self.set_paused(true);
            paused = true;
            let deadline = Instant::now() + backoff;
            while Instant::now() < deadline {
                if *stop.borrow() {
                    return Err(Stopped);
                }
                let wait = deadline.saturating_duration_since(Instant::now());
                tokio::select! {
                    _ = stop.changed() => {}
                    // Messages fetched before the pause took effect join this batch.
                    received = self.receive(wait) => batch.extend(received),
                }
                self.update_lag();
                // A rebalance resets pausing: pause what is owned now.
                self.set_paused(true);
            }
            backoff = (backoff * 2).min(self.retry_max_backoff);
        }
    }

    /// One attempt: learn missing floors, skip what is stored or not owned, dead-letter poison,
    /// and insert the rest in one INSERT.
    async fn try_write(&self, batch: &mut Vec<Consumed>) -> Result<(), String> {
        let missing = self.ownership().floors_missing();
        if !missing.is_empty() {
            let stored = stored_offsets(&self.clickhouse, &self.stored_topic)
                .await
                .map_err(|e| {
                    self.metrics.insert_errors.inc();
                    format!("reading stored offsets: {}", rum_telemetry::error_chain(&e))
                })?;
            let mut ownership = self.ownership();
            for partition in missing {
                let next = stored
                    .iter()
                    .find(|(p, _)| *p as i32 == partition)
                    .map_or(0, |(_, max)| *max as i64 + 1);
                tracing::info!(
                    partition,
                    resume_at = next,
                    "partition floor read from ClickHouse"
                );
                ownership.set_floor(partition, next);
            }
        }
        let (keep, skipped) = self
            .ownership()
            .select(std::mem::take(batch), |c| (c.partition, c.offset));
        for c in &skipped {
            let reason = if self.ownership().owns(c.partition) {
                "already_stored"
            } else {
                "partition_revoked"
            };
            self.metrics
                .messages_skipped
                .with_label_values(&[reason])
                .inc();
        }
        *batch = keep;
        let unsent = batch
            .iter_mut()
            .filter_map(|c| c.decoded.as_mut().err())
            .filter(|p| !p.sent);
        for poison in unsent {
            self.dead_letter(poison).await?;
            poison.sent = true;
            self.metrics
                .dead_lettered
                .with_label_values(&[poison.error.reason()])
                .inc();
        }
        // Client re-sends of a metric id: the first stored value wins (see crate::dedup).
        let metrics: usize = batch
            .iter()
            .filter_map(|c| c.decoded.as_ref().ok())
            .map(|m| m.metrics.len())
            .sum();
        let mut batch_ids = SeenMetricIds::batch_set(metrics);
        let mut duplicates = 0;
        {
            let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            for message in batch.iter_mut().filter_map(|c| c.decoded.as_mut().ok()) {
                duplicates += seen.drop_seen(message, &mut batch_ids);
            }
        }
        // Rows borrow from the batch and are serialized straight into the INSERT; a retry builds
        // them again from the messages.
        let messages: Vec<RawMessage<'_>> = batch
            .iter()
            .filter_map(|c| {
                Some((
                    c.decoded.as_ref().ok()?,
                    c.partition as u32,
                    c.offset as u64,
                ))
            })
            .collect();
        let inserted = insert_raw_messages(&self.clickhouse, &self.stored_topic, &messages)
            .await
            .map_err(|e| {
                self.metrics.insert_errors.inc();
                rum_telemetry::error_chain(&e)
            })?;
        self.metrics
            .rows_inserted
            .with_label_values(&[VITALS_RAW])
            .inc_by(inserted);
        self.metrics.metrics_deduplicated.inc_by(duplicates as u64);
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remember(batch_ids);
        let mut ownership = self.ownership();
        for c in batch.iter() {
            ownership.advance(c.partition, c.offset);
        }
        drop(ownership);
        self.metrics
            .vitals
            .observe_all(batch.iter().filter_map(|c| c.decoded.as_ref().ok()));
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
        self.dlq_producer()?
            .send(record, Duration::from_secs(10))
            .await
            .map(|_| ())
            .map_err(|(e, _)| format!("dead-letter: {e}"))
    }

    /// The dead-letter producer, created on first use. Failing to create it fails this attempt,
    /// which is retried like any other.
    fn dlq_producer(&self) -> Result<&FutureProducer<LoggingContext>, String> {
        if let Some(producer) = self.dlq.get() {
            return Ok(producer);
        }
        let producer: FutureProducer<LoggingContext> = self
            .dlq_config
            .create_with_context(LoggingContext::new("dead-letter producer"))
            .map_err(|e| format!("dead-letter producer: {e}"))?;
        Ok(self.dlq.get_or_init(|| producer))
    }

    fn owned_list(&self) -> TopicPartitionList {
        let mut list = TopicPartitionList::new();
        for p in self.ownership().partitions() {
            list.add_partition(&self.topic, p);
        }
        list
    }

    fn set_paused(&self, paused: bool) {
        let list = self.owned_list();
        if list.count() == 0 {
            return;
        }
        let result = if paused {
            self.consumer.pause(&list)
        } else {
            self.consumer.resume(&list)
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, paused, "cannot change the partitions' pause state");
        }
    }

    /// Commits, for each owned partition of the batch, the offset after its last message. The commit
    /// is where reading restarts; ClickHouse's stored offsets, not this, decide what is written.
    fn commit(&self, batch: &[Consumed]) {
        let mut next: BTreeMap<i32, i64> = BTreeMap::new();
        for c in batch {
            let e = next.entry(c.partition).or_insert(c.offset + 1);
            *e = (*e).max(c.offset + 1);
        }
        let mut list = TopicPartitionList::new();
        for (partition, offset) in next.into_iter().filter(|(p, _)| self.ownership().owns(*p)) {
            if let Err(e) =
                list.add_partition_offset(&self.topic, partition, Offset::Offset(offset))
            {
                tracing::error!(error = %e, partition, "cannot build the commit list");
            }
        }
        if list.count() == 0 {
            return;
        }
        if let Err(e) = self.consumer.commit(&list, CommitMode::Sync) {
            // Typically a rebalance took the partition: its new owner resumes from ClickHouse.
            self.metrics.commit_errors.inc();
            tracing::warn!(error = %e, "offset commit failed");
        }
    }

    /// Refreshes the lag gauges, at most every [`LAG_EVERY`].
    fn update_lag(&self) {
        {
            let mut last = self.lag_updated.lock().unwrap_or_else(|e| e.into_inner());
            if last.is_some_and(|t| t.elapsed() < LAG_EVERY) {
                return;
            }
            *last = Some(Instant::now());
        }
        let positions = match self.consumer.position() {
            Ok(positions) => positions,
            Err(e) => {
                tracing::debug!(error = %e, "no positions for the lag");
                return;
            }
        };
        self.metrics.lag.reset();
        for element in positions.elements_for_topic(&self.topic) {
            let partition = element.partition();
            let Offset::Offset(position) = element.offset() else {
                continue;
            };
            let fetch = || {
                self.consumer
                    .fetch_watermarks(&self.topic, partition, Duration::from_secs(1))
            };
            // A blocking network call: tell a multi-threaded runtime, which moves other tasks away.
            let watermarks = match tokio::runtime::Handle::current().runtime_flavor() {
                tokio::runtime::RuntimeFlavor::MultiThread => tokio::task::block_in_place(fetch),
                _ => fetch(),
            };
            if let Ok((_, high)) = watermarks {
                self.metrics
                    .lag
                    .with_label_values(&[&partition.to_string()])
                    .set((high - position).max(0));
            }
        }
    }
}

/// The consumer's librdkafka settings: the group, manual commits, and bounded prefetching. The
/// benchmark's floor consumer (`rum bench-floor --kafka`) uses the same.
pub fn consumer_config(
    kafka: &KafkaConfig,
    config: &ConsumerConfig,
) -> Result<ClientConfig, ConfigError> {
    rum_kafka::client_config(kafka, &consumer_properties(config))
}

/// The consumer's own librdkafka properties. `rum_kafka::check` builds the consumer from these at
/// start.
pub fn consumer_properties(config: &ConsumerConfig) -> ClientProperties {
    ClientProperties {
        client: "consumer",
        kind: ClientKind::Consumer,
        properties: vec![
            ("group.id", config.group_id.clone()),
            ("enable.auto.commit", "false".into()),
            ("auto.offset.reset", "earliest".into()),
            ("enable.partition.eof", "false".into()),
            ("session.timeout.ms", config.session_timeout_ms.to_string()),
            ("fetch.wait.max.ms", config.fetch_wait_max_ms.to_string()),
            // Bounds what is prefetched while ClickHouse is down and the partitions are paused.
            ("queued.max.messages.kbytes", "16384".into()),
            ("queued.min.messages", "20000".into()),
        ],
    }
}

/// The dead-letter producer's own librdkafka properties. Not idempotent: a fenced idempotent
/// producer is dead for good, and a dead letter written twice harms nobody.
pub fn dlq_producer_properties() -> ClientProperties {
    ClientProperties {
        client: "dead-letter producer",
        kind: ClientKind::Producer,
        properties: vec![("acks", "all".into())],
    }
}

fn decode(msg: &impl Message) -> Consumed {
    let payload = msg.payload().unwrap_or_default();
    let decoded = BeaconMessage::decode(payload).map_err(|error| Poison {
        error,
        key: msg.key().map(<[u8]>::to_vec),
        payload: payload.to_vec(),
        sent: false,
    });
    Consumed {
        partition: msg.partition(),
        offset: msg.offset(),
        decoded,
    }
}
