//! The consume loop: batch, decode, dead-letter, insert exactly once, commit.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer as _, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use rum_clickhouse::ledger::{Tables, MAX_ROWS_PER_INSERT};
use rum_clickhouse::{ClickHouseConfig, VITALS_1M, VITALS_RAW};
use rum_kafka::{ClientKind, ClientProperties};
use rum_schemas::config::ConfigError;
use rum_schemas::kafka::KafkaConfig;
use rum_schemas::BeaconMessage;
use tokio::sync::watch;

use crate::dead_letter::DeadLetters;
use crate::lag::GroupLag;
use crate::ownership::{Ownership, OwnershipContext};
use crate::write::{
    blocking, days_of, plan_inserts, Consumed, Group, Poison, WriteError, WriteMetrics, Writer,
};
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
    /// A setting could not be used (a password file unreadable since the start).
    #[error("config: {0}")]
    Config(#[from] ConfigError),
    /// The metrics registry could not be built.
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// The consumer was asked to stop while a batch was being written.
struct Stopped;

/// Why an attempt did not finish the batch.
enum Attempt {
    /// Some messages wait for their partition's lease (see [`crate::ownership`]).
    Wait,
    /// A step failed.
    Failed(WriteError),
}

impl From<WriteError> for Attempt {
    fn from(e: WriteError) -> Self {
        Attempt::Failed(e)
    }
}

/// A consumer-group member writing to ClickHouse exactly once (see [`crate::ownership`]).
pub struct Consumer {
    consumer: StreamConsumer<OwnershipContext>,
    ownership: Arc<Mutex<Ownership>>,
    /// The dead-letter topic's producer (see [`crate::dead_letter`]).
    dead_letters: DeadLetters,
    /// The whole group's lag, refreshed by its own task (see [`crate::lag`]).
    lag: GroupLag,
    topic: String,
    writer: Writer,
    /// Bounds each Kafka request of the write path (topic id, watermarks): the session timeout,
    /// past which the member is out of the group anyway.
    kafka_timeout: Duration,
    /// `consumer.topic_incarnation` is set: the topic's id is not asked for.
    explicit_incarnation: bool,
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
        let context = OwnershipContext::new(&kafka.topic);
        let ownership = context.ownership.clone();
        let consumer: StreamConsumer<OwnershipContext> =
            consumer_config(kafka, config)?.create_with_context(context)?;
        let dead_letters = DeadLetters::new(kafka, config, metrics.clone())?;
        let lag = GroupLag::new(kafka, config, metrics.clone())?;
        let stored_topic = match &config.topic_incarnation {
            Some(incarnation) => format!("{}@{incarnation}", kafka.topic),
            None => kafka.topic.clone(),
        };
        let writer = Writer::new(
            clickhouse.client(),
            Tables::of(clickhouse),
            &stored_topic,
            &config.group_id,
            clickhouse.request_timeout(),
            Duration::from_millis(config.fence_lease_ms),
            WriteMetrics::new(&metrics.registry)?,
        )
        .remembering(config.dedup_capacity);
        Ok(Self {
            consumer,
            ownership,
            dead_letters,
            lag,
            topic: kafka.topic.clone(),
            writer,
            kafka_timeout: Duration::from_millis(config.session_timeout_ms),
            explicit_incarnation: config.topic_incarnation.is_some(),
            metrics,
            batch_max_messages: config.batch_max_messages,
            batch_max_wait: Duration::from_millis(config.batch_max_wait_ms),
            retry_max_backoff: Duration::from_millis(config.retry_max_backoff_ms),
        })
    }

    /// The whole group's lag reader, to run as its own task.
    pub fn lag(&self) -> &GroupLag {
        &self.lag
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
            self.lag.set_owned(self.ownership().partitions().len());
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
            self.commit();
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
        self.take(&mut batch, first);
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
                        self.take(&mut batch, decode(&msg));
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

    /// Adds a fetched message to the batch. A partition whose offsets went back within one assignment
    /// was deleted and created again under its name, or its log was truncated (librdkafka resets the
    /// position without a rebalance): the messages of it in hand are of the old log, which is gone, and
    /// would hide the new log's first messages; they are dropped (counted) and the partition's floor
    /// is read again (a new topic id makes it a new incarnation: crate::ownership, rule 5).
    fn take(&self, batch: &mut Vec<Consumed>, c: Consumed) {
        let went_back = self.ownership().observe_fetch(c.partition, c.offset);
        if let Some(last) = went_back {
            let before = batch.len();
            batch.retain(|old| old.partition != c.partition);
            let dropped = (before - batch.len()) as u64;
            self.metrics
                .messages_skipped
                .with_label_values(&["offsets_went_back"])
                .inc_by(dropped);
            self.writer.metrics.offset_resets.inc();
            tracing::warn!(
                partition = c.partition,
                offset = c.offset,
                last_fetched = last,
                dropped,
                "the partition's offsets went back (topic deleted and created again, or its log truncated): its floor is read again"
            );
        }
        batch.push(c);
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
                Err(Attempt::Wait) => {
                    // A partition's floor waits for the lease: poll meanwhile, without backoff.
                    backoff = Duration::from_millis(100);
                }
                Err(Attempt::Failed(e)) => {
                    self.writer.count(&e);
                    // Every failed ClickHouse step: nothing new is stored while they last
                    // (RumConsumerInsertErrors).
                    if !matches!(
                        e,
                        WriteError::Fenced(_) | WriteError::DeadLetter(_) | WriteError::Topic(_)
                    ) {
                        self.metrics.insert_errors.inc();
                    }
                    // Rule 1 of crate::ownership: after any failed step every floor is read again.
                    self.ownership().forget_floors();
                    tracing::warn!(step = e.step(), error = %e, retry_in_ms = backoff.as_millis() as u64, "batch not written");
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
                    received = self.receive(wait) => if let Some(c) = received {
                        self.take(batch, c);
                    },
                }
                self.lag.set_owned(self.ownership().partitions().len());
                // A rebalance resets pausing: pause what is owned now.
                self.set_paused(true);
            }
            backoff = (backoff * 2).min(self.retry_max_backoff);
        }
    }

    /// One attempt, step by step (see [`crate::write`]).
    async fn try_write(&self, batch: &mut Vec<Consumed>) -> Result<(), Attempt> {
        // 1. Learn the floors that are missing.
        let (ready, waiting) = self
            .ownership()
            .floors_missing(self.writer.lease(), Instant::now());
        if !ready.is_empty() {
            let decided = self.writer.learn_floors(&ready, self).await?;
            let mut ownership = self.ownership();
            for (partition, d) in decided {
                ownership.set_floor(partition, d.floor);
            }
        }
        // 2. Select what is owned and not stored. Messages of partitions still within the lease wait.
        let (keep, skipped) = self
            .ownership()
            .select(std::mem::take(batch), |c| (c.partition, c.offset));
        let (waits, skipped): (Vec<Consumed>, Vec<Consumed>) = skipped
            .into_iter()
            .partition(|c| waiting.contains(&c.partition));
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
        if let Err(e) = self.write_kept(batch).await {
            // The waiting messages stay in hand: the fetch positions of their partitions are past them.
            batch.extend(waits);
            return Err(e);
        }
        if !waits.is_empty() {
            // Written next time round, once their floors are known.
            *batch = waits;
            return Err(Attempt::Wait);
        }
        Ok(())
    }

    /// Steps 3 to 7 for the selected messages (see [`crate::write`]).
    async fn write_kept(&self, batch: &mut [Consumed]) -> Result<(), Attempt> {
        // 3. Dead-letter poison, once (counted by DeadLetters).
        for poison in batch
            .iter_mut()
            .filter_map(|c| c.decoded.as_mut().err())
            .filter(|p| !p.sent)
        {
            self.dead_letters
                .send(poison.key.as_deref(), &poison.payload, &poison.error)
                .await
                .map_err(|e| WriteError::DeadLetter(e.to_string()))?;
            poison.sent = true;
        }
        // 4. Final values: inside write_group, INSERT by INSERT (see crate::final_values).
        // 5. Plan the INSERTs; 6. write each; 7. advance (inside write_group).
        let today = {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as u32);
            now - now % 86_400
        };
        let window = days_of(batch, today);
        let mut not_first: Vec<(usize, usize)> = Vec::new();
        for plan in plan_inserts(batch, MAX_ROWS_PER_INSERT, today) {
            let written = self
                .writer
                .write_group(batch, &plan, window, &self.ownership, self)
                .await?;
            self.metrics.metrics_deduplicated.inc_by(written.unchanged);
            not_first.extend(written.not_first);
            self.metrics
                .rows_inserted
                .with_label_values(&[VITALS_RAW])
                .inc_by(written.raw_rows);
            self.metrics
                .rows_inserted
                .with_label_values(&[VITALS_1M])
                .inc_by(written.rollup_rows);
        }
        // The vitals histograms cannot take a sample out: they observe each id's first value.
        not_first.sort_unstable();
        let mut k = 0;
        for (i, c) in batch.iter_mut().enumerate() {
            let Ok(message) = c.decoded.as_mut() else {
                continue;
            };
            let mut j = 0;
            message.metrics.retain(|_| {
                let drop = not_first.get(k) == Some(&(i, j));
                if drop {
                    k += 1;
                }
                j += 1;
                !drop
            });
        }
        self.metrics
            .vitals
            .observe_all(batch.iter().filter_map(|c| c.decoded.as_ref().ok()));
        Ok(())
    }

    /// Pauses or resumes fetching of the partitions librdkafka has assigned now (its assignment,
    /// not the ownership map, which a rebalance in between may have changed).
    fn set_paused(&self, paused: bool) {
        let list = match self.consumer.assignment() {
            Ok(list) => list,
            Err(e) => {
                tracing::warn!(error = %e, paused, "cannot read the assignment");
                return;
            }
        };
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

    /// Commits the floors of the owned partitions: where reading restarts, and the proof of
    /// ownership for the next batch's INSERTs (see [`crate::ownership`]). ClickHouse's ledgers, not
    /// this, decide what is written.
    fn commit(&self) {
        let floors = self.ownership().known_floors();
        if floors.is_empty() {
            return;
        }
        let sent = Instant::now();
        match blocking(|| self.prove(&floors)) {
            Ok(()) => self.ownership().proven_at(sent),
            Err(e) => {
                // Typically a rebalance took a partition: its new owner resumes from ClickHouse.
                self.metrics.commit_errors.inc();
                tracing::warn!(error = %e, "offset commit failed");
            }
        }
    }
}

impl Group for Consumer {
    fn prove(&self, floors: &[(i32, i64)]) -> Result<(), String> {
        let mut list = TopicPartitionList::new();
        for &(partition, next) in floors {
            list.add_partition_offset(&self.topic, partition, Offset::Offset(next))
                .map_err(|e| e.to_string())?;
        }
        if list.count() == 0 {
            return Err("no partition with a known floor".into());
        }
        self.consumer
            .commit(&list, CommitMode::Sync)
            .map_err(|e| format!("commit refused: {e}"))
    }

    fn topic_id(&self) -> Result<Option<String>, String> {
        if self.explicit_incarnation {
            // `consumer.topic_incarnation` names the topic's life (`rum standalone`'s embedded broker,
            // which answers no DescribeTopics): the stored topic name carries it.
            return Ok(None);
        }
        rum_kafka::topic_id(self.consumer.client(), &self.topic, self.kafka_timeout)
            .map_err(|e| e.to_string())
    }

    fn high_watermark(&self, partition: i32) -> Result<i64, String> {
        self.consumer
            .fetch_watermarks(&self.topic, partition, self.kafka_timeout)
            .map(|(_, high)| high)
            .map_err(|e| format!("watermarks of partition {partition}: {e}"))
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
