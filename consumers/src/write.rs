//! The write path, as named steps (the argument for why they store each message exactly once is in
//! [`crate::ownership`]):
//!
//! 1. [`Writer::learn_floors`]: for partitions whose floor is unknown (newly assigned, or after any
//!    failed write), stop and wait for this group's unfinished INSERTs of them, read the ledgers of `vitals_1m` and decide
//!    the floor and the topic incarnation ([`decide_floor`]);
//! 2. select owned: [`crate::ownership::Ownership::select`] drops what is stored or not ours;
//! 3. dead-letter poison (the consume loop, [`crate::dead_letter`]);
//! 4. final values ([`crate::final_values`]): a re-sent metric replaces its stored value, inside
//!    [`Writer::write_group`], INSERT by INSERT;
//! 5. [`plan_inserts`]: cut the batch into INSERTs of one UTC day and at most
//!    [`MAX_ROWS_PER_INSERT`] rows, each partition's messages in offset order;
//! 6. for each planned INSERT, [`Writer::write_group`]: check what `vitals_raw` already holds of it
//!    and roll that up alone first, resolve the final values of the rest, insert it into
//!    `vitals_raw`, then its rollup rows plus the ledger rows into `vitals_1m` (through
//!    `vitals_1m_input_v2`), each only while the member's ownership is proven;
//! 7. advance: the floors move past the INSERT ([`crate::ownership::Ownership::advance`]).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use prometheus::{IntCounter, IntCounterVec, Opts, Registry};
use rum_clickhouse::ledger::{
    insert_rows, kill_queries, raw_current_values, raw_rollup_rows, raw_stored_max, read_ledgers,
    schema_version, CurrentQuery, LedgerEntry, LedgerRow, OffsetRange, RawQuery, RollupInputRef,
    RollupRow, Tables, WRITE_PATH_SCHEMA,
};
use rum_clickhouse::{raw_row_refs, StorageError, VitalsRawRowRef, VITALS_1M, VITALS_RAW};
use rum_schemas::{BeaconMessage, MessageError, Rating};

use crate::final_values::{self, Current, Fate, FinalValues, KeyMap, Occurrence};
use crate::ownership::{Floor, Ownership};

const DAY: u32 = 86_400;

/// One consumed message, decoded or not.
pub struct Consumed {
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// The beacon, or why it is poison.
    pub decoded: Result<BeaconMessage, Poison>,
}

impl Consumed {
    /// The UTC day (unix seconds of its start) of its rows; `None` when it has none.
    fn day(&self) -> Option<u32> {
        let msg = self.decoded.as_ref().ok()?;
        if msg.metrics.is_empty() {
            return None;
        }
        let secs = u32::try_from(msg.received_at / 1000).unwrap_or(u32::MAX);
        Some(secs - secs % DAY)
    }

    fn rows(&self) -> usize {
        self.decoded.as_ref().map_or(0, |m| m.metrics.len())
    }
}

/// A message that can never be decoded, kept whole for the dead-letter topic.
pub struct Poison {
    /// Why.
    pub error: MessageError,
    /// The message key.
    pub key: Option<Vec<u8>>,
    /// The message value.
    pub payload: Vec<u8>,
    /// Already in the dead-letter topic: a retried batch does not send it again.
    pub sent: bool,
}

/// Why a write attempt stopped. Every variant leaves the floors to be learnt again.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// Reading the ledgers or killing unfinished INSERTs failed.
    #[error("learning the floors: {0}")]
    LearnFloors(String),
    /// The topic's id or a partition's watermarks could not be read.
    #[error("reading the topic from Kafka: {0}")]
    Topic(String),
    /// This member could not prove it still owns its partitions (a rebalance, or it was fenced).
    #[error("ownership not proven: {0}")]
    Fenced(String),
    /// A message could not be sent to the dead-letter topic.
    #[error("dead-letter: {0}")]
    DeadLetter(String),
    /// Asking `vitals_raw` what it holds failed.
    #[error("checking what vitals_raw holds: {0}")]
    RawCheck(StorageError),
    /// The INSERT into `vitals_raw` failed (it may still have been stored: the check finds out).
    #[error("inserting into vitals_raw: {0}")]
    RawInsert(StorageError),
    /// Reading back rows of `vitals_raw` for the rollup failed.
    #[error("reading rows back from vitals_raw: {0}")]
    RawReadBack(StorageError),
    /// Reading the stored values of re-sent metrics failed.
    #[error("reading the stored values of re-sent metrics: {0}")]
    Lookup(StorageError),
    /// The INSERT into `vitals_1m` failed (it may still have been stored: the ledger finds out).
    #[error("inserting into vitals_1m: {0}")]
    RollupInsert(StorageError),
}

impl WriteError {
    /// The step, as a metric label.
    pub fn step(&self) -> &'static str {
        match self {
            WriteError::LearnFloors(_) => "learn_floors",
            WriteError::Topic(_) => "topic",
            WriteError::Fenced(_) => "fence",
            WriteError::DeadLetter(_) => "dead_letter",
            WriteError::RawCheck(_) => "raw_check",
            WriteError::RawInsert(_) => "raw_insert",
            WriteError::RawReadBack(_) => "raw_read_back",
            WriteError::Lookup(_) => "final_value_lookup",
            WriteError::RollupInsert(_) => "rollup_insert",
        }
    }

    /// True when a ClickHouse request of the step ran out of time.
    pub fn is_timeout(&self) -> bool {
        matches!(
            self,
            WriteError::RawCheck(StorageError::Timeout { .. })
                | WriteError::RawInsert(StorageError::Timeout { .. })
                | WriteError::RawReadBack(StorageError::Timeout { .. })
                | WriteError::Lookup(StorageError::Timeout { .. })
                | WriteError::RollupInsert(StorageError::Timeout { .. })
        ) || matches!(self, WriteError::LearnFloors(e) if e.contains("no answer within"))
    }
}

/// What the write path needs from Kafka. Implemented by the consume loop over its consumer; calls
/// block (each bounded by its own timeout).
pub trait Group {
    /// Commits `floors` (partition, next offset) for the group: succeeds only while this member is in
    /// the group's current generation, so a success proves it owned them when the commit was sent.
    fn prove(&self, floors: &[(i32, i64)]) -> Result<(), String>;
    /// The topic's id (`None`: the brokers keep none).
    fn topic_id(&self) -> Result<Option<String>, String>;
    /// A partition's high watermark.
    fn high_watermark(&self, partition: i32) -> Result<i64, String>;
}

/// The write path's own metrics.
pub struct WriteMetrics {
    /// Failed write steps, by step.
    pub errors: IntCounterVec,
    /// ClickHouse requests of the write path that ran out of time, by step.
    pub timeouts: IntCounterVec,
    /// New incarnations of a partition (the topic deleted and created again, or its log wiped).
    pub incarnations: IntCounter,
    /// Unfinished INSERTs of this group found before floors were read (asked to stop, and waited for:
    /// ClickHouse 18.16 cannot kill a running INSERT).
    pub unfinished_inserts: IntCounter,
    /// Rollup rows read back from `vitals_raw` (the rollup of an INSERT that reached only `vitals_raw`).
    pub repaired_rows: IntCounter,
    /// Partitions whose offsets went back while assigned (topic created again, log truncated).
    pub offset_resets: IntCounter,
    /// Re-sent metrics whose value replaced the one stored before.
    pub replaced: IntCounter,
    /// Re-sent metrics dropped, by reason (`other_day`, `other_place`).
    pub resends_dropped: IntCounterVec,
    /// Metric ids whose stored value was read from `vitals_raw`, by result (`found`, `not_found`).
    pub lookups: IntCounterVec,
}

impl WriteMetrics {
    /// Registers the metrics in `registry`.
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let errors = IntCounterVec::new(
            Opts::new(
                "rum_consumer_write_errors_total",
                "Failed steps of the write path, by step (each attempt is retried after the floors are read again).",
            ),
            &["step"],
        )?;
        let timeouts = IntCounterVec::new(
            Opts::new(
                "rum_consumer_clickhouse_timeouts_total",
                "ClickHouse requests of the write path that got no answer in clickhouse.request_timeout_ms, by step.",
            ),
            &["step"],
        )?;
        let incarnations = IntCounter::new(
            "rum_consumer_topic_incarnations_total",
            "Partitions found to be a new incarnation (topic deleted and created again, or log wiped): written from their start under the new topic id.",
        )?;
        let unfinished_inserts = IntCounter::new(
            "rum_consumer_unfinished_inserts_total",
            "Unfinished INSERTs of the partitions whose floors were being read, asked to stop and waited for first.",
        )?;
        let offset_resets = IntCounter::new(
            "rum_consumer_offset_resets_total",
            "Partitions whose offsets went back while assigned (the topic deleted and created again, or its log truncated): their floors were read again.",
        )?;
        let repaired_rows = IntCounter::new(
            "rum_consumer_rollup_repaired_rows_total",
            "Rows of vitals_raw whose rollup was missing (an INSERT that reached vitals_raw only), rolled up from vitals_raw.",
        )?;
        let replaced = IntCounter::new(
            "rum_consumer_metrics_replaced_total",
            "Re-sent metrics (same site and metric id, another value) whose value replaced the one stored before, in vitals_raw and vitals_1m.",
        )?;
        let resends_dropped = IntCounterVec::new(
            Opts::new(
                "rum_consumer_resends_dropped_total",
                "Re-sent metrics dropped, by reason: other_day (the first value was received on another UTC day), other_place (another route or device than the first value).",
            ),
            &["reason"],
        )?;
        let lookups = IntCounterVec::new(
            Opts::new(
                "rum_consumer_final_value_lookups_total",
                "Re-sent metric ids whose stored value this consumer did not remember, read from vitals_raw, by result (found, not_found; skipped: beyond the limit of one INSERT, stored as first values). Counted on each attempt.",
            ),
            &["result"],
        )?;
        for reason in ["other_day", "other_place"] {
            resends_dropped.with_label_values(&[reason]);
        }
        for result in ["found", "not_found", "skipped"] {
            lookups.with_label_values(&[result]);
        }
        registry.register(Box::new(replaced.clone()))?;
        registry.register(Box::new(resends_dropped.clone()))?;
        registry.register(Box::new(lookups.clone()))?;
        registry.register(Box::new(errors.clone()))?;
        registry.register(Box::new(timeouts.clone()))?;
        registry.register(Box::new(incarnations.clone()))?;
        registry.register(Box::new(unfinished_inserts.clone()))?;
        registry.register(Box::new(repaired_rows.clone()))?;
        registry.register(Box::new(offset_resets.clone()))?;
        for step in [
            "learn_floors",
            "topic",
            "fence",
            "dead_letter",
            "raw_check",
            "raw_insert",
            "raw_read_back",
            "final_value_lookup",
            "rollup_insert",
        ] {
            errors.with_label_values(&[step]);
            timeouts.with_label_values(&[step]);
        }
        Ok(Self {
            errors,
            timeouts,
            incarnations,
            unfinished_inserts,
            offset_resets,
            repaired_rows,
            replaced,
            resends_dropped,
            lookups,
        })
    }
}

/// The floor decided for one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decided {
    /// The floor.
    pub floor: Floor,
    /// True when this is a new incarnation of the partition (logged and counted by the caller).
    pub new_incarnation: bool,
}

/// Decides where `partition` resumes, from the ledgers of the topic and what Kafka says now:
/// - the ledger of the current incarnation (the topic id, or a derived one, see below) is the floor;
/// - a ledger written before ids were kept (`''`) is taken over when the topic keeps ids;
/// - ledgers of other ids only: the topic was deleted and created again: a new incarnation, from 0;
/// - a floor above the high watermark under the same id: the log lost what was stored (a wiped
///   broker without topic ids, an unclean leader election): a new incarnation `ID@FLOOR`, from 0.
///   Every member derives the same name from the same ledger, and the longest chain is the current.
pub fn decide_floor(
    ledgers: &[LedgerEntry],
    partition: u32,
    topic_id: &str,
    high_watermark: i64,
) -> Decided {
    let mine: Vec<&LedgerEntry> = ledgers
        .iter()
        .filter(|l| l.partition == partition)
        .collect();
    let chained = |id: &str| id == topic_id || id.starts_with(&format!("{topic_id}@"));
    // The current incarnation: the longest chain of this id.
    let current = mine
        .iter()
        .filter(|l| chained(&l.topic_id))
        .max_by_key(|l| (l.topic_id.matches('@').count(), l.next));
    let is_legacy = |id: &str| id.is_empty() || id.starts_with('@');
    // Taken over only when no other topic id wrote the partition since (that would be a topic
    // created again after the upgrade).
    let others = mine
        .iter()
        .any(|l| !is_legacy(&l.topic_id) && !chained(&l.topic_id));
    let legacy = (!topic_id.is_empty() && !others)
        .then(|| {
            mine.iter()
                .filter(|l| is_legacy(&l.topic_id))
                .max_by_key(|l| (l.topic_id.matches('@').count(), l.next))
        })
        .flatten();
    let (incarnation, next, raw_ids, adopted) = match (current, legacy) {
        (Some(l), _) => (l.topic_id.clone(), l.next, vec![l.topic_id.clone()], false),
        // Written before ids were kept: the same topic unless the floor says otherwise (below).
        (None, Some(l)) => (
            topic_id.to_string(),
            l.next,
            vec![topic_id.to_string(), l.topic_id.clone()],
            true,
        ),
        (None, None) => {
            let new = !mine.is_empty();
            return Decided {
                floor: Floor::new(topic_id.to_string(), 0, vec![topic_id.to_string()]),
                new_incarnation: new,
            };
        }
    };
    let next = i64::try_from(next).unwrap_or(i64::MAX);
    if next > high_watermark.max(0) {
        let base = if adopted {
            topic_id.to_string()
        } else {
            incarnation
        };
        let derived = format!("{base}@{next}");
        return Decided {
            floor: Floor::new(derived.clone(), 0, vec![derived]),
            new_incarnation: true,
        };
    }
    Decided {
        floor: Floor::new(incarnation, next, raw_ids),
        new_incarnation: false,
    }
}

/// One planned INSERT: messages of one UTC day (and messages without rows), each partition's in
/// offset order, at most [`MAX_ROWS_PER_INSERT`] rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    /// Start of the UTC day of its rows.
    pub day: u32,
    /// Indexes into the batch.
    pub messages: Vec<usize>,
}

/// Where `vitals_raw` may hold messages of the batch's partitions above their floors, as received-at
/// seconds `[from, to)`: from the day before the batch's first day to the day after today (or its last
/// day). Messages of the batch are in it; so are later ones a member killed before its rollup stored
/// beyond what is in hand (received after the batch's first, by ingests whose clocks may be a day off).
pub fn days_of(batch: &[Consumed], today: u32) -> (u32, u32) {
    let days = batch.iter().filter_map(Consumed::day);
    let (first, last) = days.fold((today, today), |(lo, hi), d| (lo.min(d), hi.max(d)));
    (first.saturating_sub(DAY), last.saturating_add(2 * DAY))
}

/// Cuts `batch` (already selected: owned, above the floors, each partition in offset order) into
/// INSERTs. Day after day: the earliest day among the partitions' next messages goes first, and each
/// partition contributes its messages of that day up to its first message of another day, so every
/// INSERT extends each partition's stored prefix. Messages without rows (poison, all duplicates)
/// ride with their partition's neighbours; `today` is the day of a plan with no rows at all.
pub fn plan_inserts(batch: &[Consumed], max_rows: usize, today: u32) -> Vec<Planned> {
    let mut queues: BTreeMap<i32, std::collections::VecDeque<usize>> = BTreeMap::new();
    for (i, c) in batch.iter().enumerate() {
        queues.entry(c.partition).or_default().push_back(i);
    }
    let mut plans = Vec::new();
    loop {
        // The day of each partition's next message with rows.
        let day = queues
            .values()
            .filter_map(|q| q.iter().find_map(|&i| batch[i].day()))
            .min();
        if queues.values().all(|q| q.is_empty()) {
            break;
        }
        let day = day.unwrap_or(today);
        let mut plan = Planned {
            day,
            messages: Vec::new(),
        };
        let mut rows = 0usize;
        for q in queues.values_mut() {
            while let Some(&i) = q.front() {
                let c = &batch[i];
                let same_day = c.day().is_none_or(|d| d == day);
                let fits = rows + c.rows() <= max_rows || plan.messages.is_empty();
                if !same_day || !fits {
                    break;
                }
                rows += c.rows();
                plan.messages.push(i);
                q.pop_front();
            }
        }
        if plan.messages.is_empty() {
            // Cannot happen (the earliest day's partition always gives one); never loop for ever.
            break;
        }
        plans.push(plan);
    }
    plans
}

/// The ClickHouse side of the write path.
pub struct Writer {
    client: rum_clickhouse::Client,
    tables: Tables,
    /// The topic name stored with the rows and ledgers.
    stored_topic: String,
    /// Every query id of this consumer group's writes starts with this.
    query_prefix: String,
    timeout: Duration,
    /// A write is sent only within this long after ownership was proven; a partition's new owner
    /// waits as long before reading its floor.
    lease: Duration,
    /// The write path's metrics.
    pub metrics: WriteMetrics,
    /// The stored values of recent metric ids (see [`crate::final_values`]).
    finals: std::sync::Mutex<FinalValues>,
    /// The database was found migrated far enough for this write path.
    schema_checked: std::sync::atomic::AtomicBool,
}

/// What one planned INSERT wrote.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Written {
    /// Rows inserted into `vitals_raw`.
    pub raw_rows: u64,
    /// Rollup input rows (samples) inserted into `vitals_1m`, ledger rows excluded.
    pub rollup_rows: u64,
    /// Metrics dropped because their stored value was sent again.
    pub unchanged: u64,
    /// Metrics of the INSERT that are not a first value (replacements, dropped re-sends), as
    /// (message index, metric index): the vitals histograms, which cannot take a sample out,
    /// observe first values only.
    pub not_first: Vec<(usize, usize)>,
}

impl Writer {
    /// A writer of `stored_topic` for the consumer group `group`.
    pub fn new(
        client: rum_clickhouse::Client,
        tables: Tables,
        stored_topic: &str,
        group: &str,
        timeout: Duration,
        lease: Duration,
        metrics: WriteMetrics,
    ) -> Self {
        Self {
            client,
            tables,
            stored_topic: stored_topic.to_string(),
            query_prefix: format!("rum:{group}:{stored_topic}:"),
            timeout,
            lease,
            metrics,
            finals: std::sync::Mutex::new(FinalValues::new(DEFAULT_REMEMBERED_IDS)),
            schema_checked: false.into(),
        }
    }

    /// Remembers the stored values of at most `ids` metric ids (`consumer.dedup_capacity`).
    pub fn remembering(self, ids: usize) -> Self {
        Self {
            finals: std::sync::Mutex::new(FinalValues::new(ids)),
            ..self
        }
    }

    fn finals(&self) -> std::sync::MutexGuard<'_, FinalValues> {
        self.finals.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The lease (see [`crate::ownership`]).
    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// The id of an INSERT of `partitions`: `rum:GROUP:TOPIC:,P1,P2,:RANDOM`, found by the prefix.
    fn query_id(&self, partitions: &[i32]) -> String {
        let list: Vec<String> = partitions.iter().map(i32::to_string).collect();
        format!(
            "{},{},:{:016x}",
            self.query_prefix,
            list.join(","),
            rand::random::<u64>()
        )
    }

    /// The id of a read: never matched by the prefix of the INSERTs.
    fn read_id(&self) -> String {
        format!("rum-read:{:016x}", rand::random::<u64>())
    }

    /// Counts a failed step.
    pub fn count(&self, error: &WriteError) {
        self.metrics.errors.with_label_values(&[error.step()]).inc();
        if error.is_timeout() {
            self.metrics
                .timeouts
                .with_label_values(&[error.step()])
                .inc();
        }
    }

    /// Refuses to write into a database migrated short of [`WRITE_PATH_SCHEMA`] (a consumer upgraded
    /// before `rum migrate` ran), with an error that says so; checked until it passes once.
    async fn check_schema(&self) -> Result<(), WriteError> {
        use std::sync::atomic::Ordering;
        if self.schema_checked.load(Ordering::Relaxed) {
            return Ok(());
        }
        let version = schema_version(&self.client, &self.read_id(), self.timeout)
            .await
            .map_err(|e| {
                let error = rum_telemetry::error_chain(&e);
                // Code 60: no schema_migrations table, a database never migrated.
                let hint = if error.contains("Code: 60") {
                    " (a database never migrated: run `rum migrate`)"
                } else {
                    ""
                };
                WriteError::LearnFloors(format!(
                    "reading the schema version (schema_migrations): {error}{hint}"
                ))
            })?;
        if version < WRITE_PATH_SCHEMA {
            return Err(WriteError::LearnFloors(format!(
                "the database is at migration {version}, this consumer writes the tables of migration \
                 {WRITE_PATH_SCHEMA}: run `rum migrate` (this consumer waits and retries)"
            )));
        }
        self.schema_checked.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// Step 1: learns the floors of `partitions` (assigned at least a lease ago): waits out this group's
    /// unfinished INSERTs of them, reads the ledgers, and decides each floor.
    pub async fn learn_floors(
        &self,
        partitions: &[i32],
        group: &(impl Group + Sync),
    ) -> Result<Vec<(i32, Decided)>, WriteError> {
        if partitions.is_empty() {
            return Ok(Vec::new());
        }
        self.check_schema().await?;
        {
            // Another member may have written them since this one did.
            let mut finals = self.finals();
            for &p in partitions {
                finals.forget_partition(p);
            }
        }
        // One wait for all of them (and the group's other INSERTs of the topic, short ones): a request
        // a partition would add up over many partitions without a poll in between.
        let prefix = format!("{}%", self.query_prefix);
        let killed = kill_queries(
            &self.client,
            &self.tables,
            &prefix,
            &self.read_id(),
            self.timeout,
        )
        .await
        .map_err(|e| WriteError::LearnFloors(rum_telemetry::error_chain(&e)))?;
        if killed > 0 {
            tracing::warn!(
                ?partitions,
                inserts = killed,
                "waited for unfinished inserts before reading the floors"
            );
            self.metrics.unfinished_inserts.inc_by(killed as u64);
        }
        let ledgers = read_ledgers(
            &self.client,
            &self.tables,
            &self.stored_topic,
            &self.read_id(),
            self.timeout,
        )
        .await
        .map_err(|e| WriteError::LearnFloors(rum_telemetry::error_chain(&e)))?;
        let topic_id = blocking(|| group.topic_id())
            .map_err(WriteError::Topic)?
            .unwrap_or_default();
        if topic_id.is_empty() {
            // The brokers answered without an id (a broker without ids in a rolling upgrade): the
            // ledgers written under an id cannot be told from another topic's. Wait for an id.
            if let Some(l) = ledgers
                .iter()
                .find(|l| !l.topic_id.is_empty() && !l.topic_id.starts_with('@'))
            {
                return Err(WriteError::Topic(format!(
                    "the brokers gave no id for the topic, but its ledgers carry one ({}): not writing until they do",
                    l.topic_id
                )));
            }
        }
        let mut decided = Vec::with_capacity(partitions.len());
        for &p in partitions {
            let high = blocking(|| group.high_watermark(p)).map_err(WriteError::Topic)?;
            let d = decide_floor(&ledgers, p as u32, &topic_id, high);
            if d.new_incarnation {
                self.metrics.incarnations.inc();
                tracing::warn!(
                    partition = p,
                    incarnation = %d.floor.incarnation,
                    high_watermark = high,
                    "new incarnation of the partition (topic deleted and created again, or its log lost): written from its start"
                );
            }
            tracing::info!(partition = p, resume_at = d.floor.next, incarnation = %d.floor.incarnation, "partition floor read from ClickHouse");
            decided.push((p, d));
        }
        Ok(decided)
    }

    /// Step 6: writes one planned INSERT: what `vitals_raw` lacks of it, then its rollup and ledger
    /// rows. `ownership` gives the floors and proves ownership before each INSERT.
    pub async fn write_group(
        &self,
        batch: &[Consumed],
        plan: &Planned,
        window: (u32, u32),
        ownership: &std::sync::Mutex<Ownership>,
        group: &(impl Group + Sync),
    ) -> Result<Written, WriteError> {
        // Per partition: the first and last offset of this INSERT, and the floor it extends.
        let mut ranges: BTreeMap<i32, (i64, i64)> = BTreeMap::new();
        for &i in &plan.messages {
            let c = &batch[i];
            let r = ranges.entry(c.partition).or_insert((c.offset, c.offset));
            r.0 = r.0.min(c.offset);
            r.1 = r.1.max(c.offset);
        }
        let floors: BTreeMap<i32, Floor> = {
            let o = lock(ownership);
            ranges
                .keys()
                .filter_map(|p| o.floor(*p).map(|f| (*p, f.clone())))
                .collect()
        };
        if floors.len() != ranges.len() {
            return Err(WriteError::Fenced(
                "a partition of the batch is no longer owned".into(),
            ));
        }
        // What vitals_raw holds above each unchecked partition's floor: a prefix of the partition's messages,
        // which may run past this INSERT (written by a member that cut its batches otherwise and was killed
        // before its rollup): asked without an upper bound, so that the rest is not inserted again either.
        let insert_last = |p: u32| ranges.get(&(p as i32)).map_or(0, |r| r.1.max(0) as u64);
        let unchecked: Vec<OffsetRange> = ranges
            .iter()
            .filter(|(p, _)| !floors[p].raw_checked)
            .map(|(p, _)| OffsetRange {
                partition: *p as u32,
                first: floors[p].next.max(0) as u64,
                last: i64::MAX as u64,
            })
            .filter(|r| r.first <= insert_last(r.partition))
            .collect();
        let ids = raw_ids(&floors);
        let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        let stored: BTreeMap<u32, u64> = if unchecked.is_empty() {
            BTreeMap::new()
        } else {
            // Over every day of the batch: what vitals_raw holds above the floor may be of another day
            // than this INSERT's (a message without rows rides with any day).
            let query = self.raw_query(&id_refs, window, &unchecked);
            raw_stored_max(
                &self.client,
                &self.tables,
                &query,
                &self.read_id(),
                self.timeout,
            )
            .await
            .map_err(WriteError::RawCheck)?
        };
        let raw_stored = |c: &Consumed| {
            stored
                .get(&(c.partition as u32))
                .is_some_and(|max| c.offset as u64 <= *max)
        };
        // Rows vitals_raw holds already: read back, so that vitals_1m gets exactly them.
        let held: Vec<OffsetRange> = unchecked
            .iter()
            .filter_map(|r| {
                let max = *stored.get(&r.partition)?;
                (max >= r.first).then_some(OffsetRange {
                    partition: r.partition,
                    first: r.first,
                    last: max.min(insert_last(r.partition)),
                })
            })
            .collect();
        let read_back: Vec<RollupRow> = if held.is_empty() {
            Vec::new()
        } else {
            // Held messages of this INSERT: rows of its day only.
            let query = self.raw_query(&id_refs, (plan.day, plan.day.saturating_add(DAY)), &held);
            raw_rollup_rows(
                &self.client,
                &self.tables,
                &query,
                &self.read_id(),
                self.timeout,
            )
            .await
            .map_err(WriteError::RawReadBack)?
        };
        let partitions: Vec<i32> = ranges.keys().copied().collect();
        let mut read_back = read_back;
        let repaired = read_back.len() as u64;
        if !read_back.is_empty() {
            // Rows a killed writer left without their rollup: rolled up alone, before anything else of
            // these partitions is written, so that no id ever has two rows without their rollup (a
            // replacement read back then retracts a value that was rolled up; see crate::final_values).
            let ledgers: Vec<LedgerRow> = held
                .iter()
                .map(|r| {
                    LedgerRow::new(
                        plan.day,
                        &self.stored_topic,
                        &floors[&(r.partition as i32)].incarnation,
                        r.partition,
                        r.last + 1,
                    )
                })
                .collect();
            let mut rollup: Vec<RollupInputRef<'_>> =
                Vec::with_capacity(read_back.len() + ledgers.len());
            rollup.extend(read_back.iter().map(RollupInputRef::of));
            rollup.extend(ledgers.iter().map(|l| l.input()));
            self.insert_rollup(rollup, &partitions, ownership, group)
                .await?;
            self.metrics.repaired_rows.inc_by(read_back.len() as u64);
            tracing::warn!(
                rows = read_back.len(),
                "rolled up rows vitals_raw held without their rollup (an earlier INSERT reached vitals_raw only)"
            );
            {
                let mut o = lock(ownership);
                for r in &held {
                    let held_above = stored.get(&r.partition).is_some_and(|max| *max > r.last);
                    o.advance(r.partition as i32, r.last as i64 + 1, held_above);
                }
            }
            read_back.sort_by_key(|r| (r.kafka_partition, r.kafka_offset, r.revision));
            let mut finals = self.finals();
            for row in read_back.iter().filter(|r| !r.metric_id.is_empty()) {
                let Some(rating) = Rating::parse(&row.rating) else {
                    continue;
                };
                finals.remember(
                    final_values::metric_key(&row.site, &row.metric, &row.metric_id),
                    row.kafka_partition as i32,
                    Current {
                        value: row.value,
                        rating,
                        revision: row.revision,
                        received_at: row.received_at,
                        place: final_values::place(&row.route, &row.device),
                        sample_rate: row.sample_rate,
                    },
                );
            }
        }
        // Step 4: the final values of the messages vitals_raw does not hold (offset order).
        let fresh_messages: Vec<usize> = plan
            .messages
            .iter()
            .copied()
            .filter(|&i| !raw_stored(&batch[i]))
            .collect();
        let occurrences = occurrences(batch, &fresh_messages);
        let looked_up = self.look_up(batch, plan.day, &occurrences).await?;
        let resolved = {
            let finals = self.finals();
            final_values::resolve(&occurrences, plan.day, |o| {
                finals
                    .get(o.key, o.partition)
                    .or_else(|| looked_up.get(&o.key).copied())
            })
        };
        let mut fresh: Vec<VitalsRawRowRef<'_>> = Vec::new();
        for &i in &fresh_messages {
            let c = &batch[i];
            let Ok(msg) = c.decoded.as_ref() else {
                continue;
            };
            let id = floors[&c.partition].incarnation.as_str();
            let rows = raw_row_refs(
                msg,
                &self.stored_topic,
                id,
                c.partition as u32,
                c.offset as u64,
            );
            for (j, mut row) in rows.enumerate() {
                match resolved.fates.get(&(i, j)) {
                    // No id: always a first value.
                    None => {}
                    Some(Fate::Drop(_)) => continue,
                    Some(Fate::Keep {
                        received_at,
                        sample_rate,
                        revision,
                        replaces,
                    }) => {
                        row.received_at = *received_at;
                        row.sample_rate = *sample_rate;
                        row.revision = *revision;
                        if let Some((value, rating)) = replaces {
                            row.replaces_value = *value;
                            row.replaces_rating = rating.as_str();
                        }
                    }
                }
                fresh.push(row);
            }
        }
        let mut written = Written::default();
        if !fresh.is_empty() {
            self.fence(ownership, group)?;
            written.raw_rows = insert_rows::<VitalsRawRowRef<'_>, _>(
                &self.client,
                &self.tables,
                &self.tables.raw_write,
                fresh.clone(),
                &self.query_id(&partitions),
                self.timeout,
                "inserting into vitals_raw",
            )
            .await
            .map_err(WriteError::RawInsert)?;
        }
        // Ledger rows: each partition's next offset after this INSERT, under its incarnation.
        let ledgers: Vec<LedgerRow> = ranges
            .iter()
            .map(|(p, (_, last))| {
                LedgerRow::new(
                    plan.day,
                    &self.stored_topic,
                    &floors[p].incarnation,
                    *p as u32,
                    (*last + 1) as u64,
                )
            })
            .collect();
        // Collected (not a lazy chain): the future must stay Send across the await.
        let mut rollup: Vec<RollupInputRef<'_>> = Vec::with_capacity(fresh.len() + ledgers.len());
        rollup.extend(fresh.iter().map(RollupInputRef::of_raw));
        rollup.extend(ledgers.iter().map(|l| l.input()));
        let sent = self
            .insert_rollup(rollup, &partitions, ownership, group)
            .await?;
        // The held rows' rollup counts too, as when it went in with the rest.
        written.rollup_rows = sent - ledgers.len() as u64 + repaired;
        // Step 7: advance.
        {
            let mut o = lock(ownership);
            for (p, (_, last)) in &ranges {
                // vitals_raw holds more of the partition than this INSERT: the next one checks again.
                let held_above = stored
                    .get(&(*p as u32))
                    .is_some_and(|max| *max > (*last).max(0) as u64);
                o.advance(*p, *last + 1, held_above);
            }
        }
        {
            let mut finals = self.finals();
            for (key, partition, current) in &resolved.current {
                finals.remember(*key, *partition, *current);
            }
        }
        let counts = resolved.counts;
        self.metrics.replaced.inc_by(counts.replaced);
        self.metrics
            .resends_dropped
            .with_label_values(&["other_day"])
            .inc_by(counts.other_day);
        self.metrics
            .resends_dropped
            .with_label_values(&["other_place"])
            .inc_by(counts.other_place);
        if counts.other_day + counts.other_place > 0 {
            tracing::debug!(
                other_day = counts.other_day,
                other_place = counts.other_place,
                "re-sent metrics dropped: their first value has another UTC day, route or device"
            );
        }
        written.unchanged = counts.unchanged;
        written.not_first = resolved
            .fates
            .iter()
            .filter(|(_, f)| !matches!(f, Fate::Keep { replaces: None, .. }))
            .map(|(at, _)| *at)
            .collect();
        Ok(written)
    }

    /// One INSERT of rollup and ledger rows into `vitals_1m`, sent while ownership is proven; the rows
    /// sent.
    async fn insert_rollup(
        &self,
        rows: Vec<RollupInputRef<'_>>,
        partitions: &[i32],
        ownership: &std::sync::Mutex<Ownership>,
        group: &(impl Group + Sync),
    ) -> Result<u64, WriteError> {
        self.fence(ownership, group)?;
        insert_rows::<RollupInputRef<'_>, _>(
            &self.client,
            &self.tables,
            &self.tables.rollup_write,
            rows,
            &self.query_id(partitions),
            self.timeout,
            "inserting into vitals_1m",
        )
        .await
        .map_err(WriteError::RollupInsert)
    }

    /// The stored values of the re-sent metrics (`resend`) among `occurrences` that this consumer does
    /// not remember, read from `vitals_raw`: first the last [`RECENT_RESEND_SECS`] before the earliest
    /// of them, then the day before that for the ids not found there (a first value of the day before
    /// is found, and its re-send dropped as of another day). At most [`LOOKUPS_PER_INSERT`] ids.
    async fn look_up(
        &self,
        batch: &[Consumed],
        day: u32,
        occurrences: &[Occurrence],
    ) -> Result<KeyMap<Current>, WriteError> {
        type Item<'b> = (&'b str, &'b str, &'b str, &'b str, &'b str);
        let mut wanted: KeyMap<(Item<'_>, u64)> = KeyMap::default();
        let mut seen: KeyMap<()> = KeyMap::default();
        let mut skipped = 0u64;
        let mut earliest = u32::MAX;
        {
            let finals = self.finals();
            for o in occurrences {
                let Ok(msg) = batch[o.at.0].decoded.as_ref() else {
                    continue;
                };
                let m = &msg.metrics[o.at.1];
                // Only an id's first metric in the INSERT needs the value before it.
                if seen.insert(o.key, ()).is_some()
                    || !m.resend
                    || finals.get(o.key, o.partition).is_some()
                {
                    continue;
                }
                if wanted.len() == LOOKUPS_PER_INSERT {
                    skipped += 1;
                    continue;
                }
                earliest = earliest.min(o.received_at);
                let item = (
                    msg.site.as_str(),
                    m.name.as_str(),
                    msg.route.as_str(),
                    msg.device.as_str(),
                    m.id.as_str(),
                );
                wanted.insert(o.key, (item, o.place));
            }
        }
        if skipped > 0 {
            self.metrics
                .lookups
                .with_label_values(&["skipped"])
                .inc_by(skipped);
            tracing::warn!(
                skipped,
                limit = LOOKUPS_PER_INSERT,
                "re-sent metrics not looked up in vitals_raw (more than the limit in one INSERT): stored as first values unless remembered"
            );
        }
        // The chain each id's re-send replaces: in its own place if it has one there, else the latest.
        let mut found: KeyMap<(Current, bool)> = KeyMap::default();
        if wanted.is_empty() {
            return Ok(KeyMap::default());
        }
        let end = day.saturating_add(DAY);
        let recent = earliest.saturating_sub(RECENT_RESEND_SECS);
        for (from, to) in [(recent, end), (earliest.saturating_sub(DAY), recent)] {
            let items: Vec<Item<'_>> = wanted
                .iter()
                .filter(|(key, _)| !found.contains_key(*key))
                .map(|(_, (item, _))| *item)
                .collect();
            if items.is_empty() || from >= to {
                continue;
            }
            let query = CurrentQuery {
                from,
                to,
                items: &items,
            };
            let rows = raw_current_values(
                &self.client,
                &self.tables,
                &query,
                &self.read_id(),
                self.timeout,
            )
            .await
            .map_err(WriteError::Lookup)?;
            for row in rows {
                let key = final_values::metric_key(&row.site, &row.metric, &row.metric_id);
                // The IN lists match every pairing of the asked places and ids.
                let Some((_, place)) = wanted.get(&key) else {
                    continue;
                };
                let Some(rating) = Rating::parse(&row.current_rating) else {
                    continue;
                };
                let chain = Current {
                    value: row.current_value,
                    rating,
                    revision: row.top_revision,
                    received_at: row.chain_received_at,
                    place: final_values::place(&row.route, &row.device),
                    sample_rate: row.chain_sample_rate,
                };
                let here = chain.place == *place;
                let better = |(old, old_here): &(Current, bool)| {
                    (here, chain.received_at, chain.revision)
                        > (*old_here, old.received_at, old.revision)
                };
                if found.get(&key).is_none_or(better) {
                    found.insert(key, (chain, here));
                }
            }
        }
        self.metrics
            .lookups
            .with_label_values(&["found"])
            .inc_by(found.len() as u64);
        self.metrics
            .lookups
            .with_label_values(&["not_found"])
            .inc_by(wanted.len().saturating_sub(found.len()) as u64);
        Ok(found.into_iter().map(|(k, (c, _))| (k, c)).collect())
    }

    /// What `vitals_raw` holds of `ranges`, among its rows received in `[from, to)` (unix seconds).
    fn raw_query<'q>(
        &'q self,
        topic_ids: &'q [&'q str],
        (from, to): (u32, u32),
        ranges: &'q [OffsetRange],
    ) -> RawQuery<'q> {
        RawQuery {
            topic: &self.stored_topic,
            topic_ids,
            from,
            to,
            ranges,
        }
    }

    /// Proves ownership unless a proof younger than the lease is at hand: commits the floors of every
    /// owned partition (a fenced member's commit is refused by the group coordinator).
    fn fence(
        &self,
        ownership: &std::sync::Mutex<Ownership>,
        group: &(impl Group + Sync),
    ) -> Result<(), WriteError> {
        let floors = {
            let o = lock(ownership);
            if o.proven_within(self.lease, Instant::now()) {
                return Ok(());
            }
            o.known_floors()
        };
        let sent = Instant::now();
        blocking(|| group.prove(&floors)).map_err(WriteError::Fenced)?;
        lock(ownership).proven_at(sent);
        Ok(())
    }
}

/// Metric ids a [`Writer`] remembers unless told otherwise ([`Writer::remembering`]).
pub const DEFAULT_REMEMBERED_IDS: usize = 100_000;

/// A re-send is looked for in `vitals_raw` first this long before the earliest one of an INSERT (most
/// re-sends follow their first value within minutes), then in the day before that.
pub const RECENT_RESEND_SECS: u32 = 900;

/// At most this many re-sent ids of one INSERT are looked up in `vitals_raw` (a read of their places'
/// rows of a day when not found, so bounded against a client that marks every metric a re-send); the
/// others are stored as first values unless remembered (`rum_consumer_final_value_lookups_total{result="skipped"}`).
pub const LOOKUPS_PER_INSERT: usize = 5_000;

/// The metrics with ids of `messages` (indexes into `batch`, each partition's in offset order).
fn occurrences(batch: &[Consumed], messages: &[usize]) -> Vec<Occurrence> {
    let mut out = Vec::new();
    for &i in messages {
        let Ok(msg) = batch[i].decoded.as_ref() else {
            continue;
        };
        let received_at = u32::try_from(msg.received_at / 1000).unwrap_or(u32::MAX);
        let place = final_values::place(&msg.route, msg.device.as_str());
        for (j, m) in msg.metrics.iter().enumerate() {
            if m.id.is_empty() {
                continue;
            }
            out.push(Occurrence {
                key: final_values::metric_key(&msg.site, m.name.as_str(), &m.id),
                place,
                partition: batch[i].partition,
                received_at,
                value: m.value,
                rating: m.rating,
                sample_rate: msg.sample_rate,
                at: (i, j),
            });
        }
    }
    out
}

/// The topic ids the raw rows of these partitions may carry.
fn raw_ids(floors: &BTreeMap<i32, Floor>) -> Vec<String> {
    let mut ids: Vec<String> = floors
        .values()
        .flat_map(|f| f.raw_ids.iter().cloned())
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

fn lock(m: &std::sync::Mutex<Ownership>) -> std::sync::MutexGuard<'_, Ownership> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs a blocking call; on a multi-threaded runtime other tasks are moved away first.
pub fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// The tables the write path writes, for the rows-inserted counter.
pub const TABLES: [&str; 2] = [VITALS_RAW, VITALS_1M];

#[cfg(test)]
mod tests {
    use super::*;
    use rum_schemas::{Device, MetricName, MetricSample, Rating};

    fn msg(partition: i32, offset: i64, day: u32, metrics: usize) -> Consumed {
        Consumed {
            partition,
            offset,
            decoded: Ok(BeaconMessage {
                site: "s".into(),
                route: "r".into(),
                device: Device::Mobile,
                nav_type: "navigate".into(),
                sample_rate: 1.0,
                received_at: (u64::from(day) * u64::from(DAY) + 3600) * 1000,
                page_id: String::new(),
                release: String::new(),
                rtt: "unknown".into(),
                browser: "unknown".into(),
                browser_major: 0,
                metrics: (0..metrics)
                    .map(|i| MetricSample {
                        name: MetricName::LCP,
                        value: 1.0,
                        id: format!("{partition}-{offset}-{i}"),
                        rating: Rating::Good,
                        resend: false,
                        attribution: Default::default(),
                    })
                    .collect(),
            }),
        }
    }

    fn poison(partition: i32, offset: i64) -> Consumed {
        Consumed {
            partition,
            offset,
            decoded: Err(Poison {
                error: MessageError::Invalid("invalid_site"),
                key: None,
                payload: vec![],
                sent: false,
            }),
        }
    }

    fn ids(batch: &[Consumed], plan: &Planned) -> Vec<(i32, i64)> {
        plan.messages
            .iter()
            .map(|&i| (batch[i].partition, batch[i].offset))
            .collect()
    }

    #[test]
    fn one_insert_when_everything_is_one_day() {
        let batch = vec![msg(0, 1, 10, 2), msg(1, 5, 10, 1), msg(0, 2, 10, 1)];
        let plans = plan_inserts(&batch, 100, 0);
        assert_eq!(plans.len(), 1);
        assert_eq!(plans[0].day, 10 * DAY);
        assert_eq!(ids(&batch, &plans[0]), vec![(0, 1), (0, 2), (1, 5)]);
    }

    #[test]
    fn a_batch_across_midnight_is_cut_per_day_keeping_offset_order() {
        // Partition 0 goes 10, 11, 10 (a late message): three INSERTs for it, never out of order.
        let batch = vec![
            msg(0, 1, 10, 1),
            msg(0, 2, 11, 1),
            msg(0, 3, 10, 1),
            msg(1, 7, 11, 1),
        ];
        let plans = plan_inserts(&batch, 100, 0);
        let got: Vec<(u32, Vec<(i32, i64)>)> = plans
            .iter()
            .map(|p| (p.day / DAY, ids(&batch, p)))
            .collect();
        assert_eq!(
            got,
            vec![
                (10, vec![(0, 1)]),
                (11, vec![(0, 2), (1, 7)]),
                (10, vec![(0, 3)]),
            ]
        );
    }

    #[test]
    fn inserts_hold_at_most_max_rows_and_messages_without_rows_ride_along() {
        let batch = vec![
            poison(0, 0),
            msg(0, 1, 10, 3),
            msg(0, 2, 10, 3),
            poison(0, 3),
            msg(0, 4, 10, 3),
        ];
        let plans = plan_inserts(&batch, 6, 0);
        let got: Vec<Vec<(i32, i64)>> = plans.iter().map(|p| ids(&batch, p)).collect();
        assert_eq!(
            got,
            vec![vec![(0, 0), (0, 1), (0, 2), (0, 3)], vec![(0, 4)]]
        );
        // Only poison: one insert of today, for the ledger.
        let only = vec![poison(2, 9)];
        let plans = plan_inserts(&only, 6, 42 * DAY);
        assert_eq!(
            plans,
            vec![Planned {
                day: 42 * DAY,
                messages: vec![0]
            }]
        );
    }

    #[test]
    fn the_raw_check_covers_every_day_of_the_batch_and_up_to_today() {
        let batch = vec![poison(0, 10), msg(0, 11, 12, 1), msg(1, 5, 10, 2)];
        assert_eq!(days_of(&batch, 20 * DAY), (9 * DAY, 22 * DAY));
        assert_eq!(days_of(&[poison(0, 1)], 7 * DAY), (6 * DAY, 9 * DAY));
    }

    fn entry(id: &str, partition: u32, next: u64) -> LedgerEntry {
        LedgerEntry {
            topic_id: id.into(),
            partition,
            next,
        }
    }

    #[test]
    fn the_floor_is_the_ledger_of_the_current_topic_id() {
        let ledgers = [entry("A", 0, 100), entry("B", 0, 7), entry("B", 1, 3)];
        let d = decide_floor(&ledgers, 0, "B", 50);
        assert_eq!(d.floor.next, 7);
        assert_eq!(d.floor.incarnation, "B");
        assert!(!d.new_incarnation);
    }

    #[test]
    fn a_recreated_topic_is_a_new_incarnation_from_zero() {
        let ledgers = [entry("A", 0, 500)];
        let d = decide_floor(&ledgers, 0, "B", 20);
        assert_eq!((d.floor.next, d.floor.incarnation.as_str()), (0, "B"));
        assert!(
            d.new_incarnation,
            "logged and counted, never skipped silently"
        );
        // A partition never written: from 0, not counted.
        let d = decide_floor(&ledgers, 1, "B", 20);
        assert!(!d.new_incarnation && d.floor.next == 0);
    }

    #[test]
    fn a_ledger_from_before_topic_ids_is_taken_over_unless_above_the_log() {
        let ledgers = [entry("", 0, 40)];
        let d = decide_floor(&ledgers, 0, "B", 45);
        assert_eq!((d.floor.next, d.floor.incarnation.as_str()), (40, "B"));
        assert_eq!(d.floor.raw_ids, vec!["B".to_string(), String::new()]);
        assert!(!d.new_incarnation);
        // The log is shorter than what was stored: it was lost.
        let d = decide_floor(&ledgers, 0, "B", 10);
        assert_eq!((d.floor.next, d.floor.incarnation.as_str()), (0, "B@40"));
        assert!(d.new_incarnation);
    }

    #[test]
    fn a_legacy_ledger_is_not_taken_over_after_another_id_wrote() {
        let ledgers = [entry("", 0, 40), entry("A", 0, 9)];
        let d = decide_floor(&ledgers, 0, "B", 45);
        assert_eq!((d.floor.next, d.floor.incarnation.as_str()), (0, "B"));
        assert!(d.new_incarnation);
    }

    #[test]
    fn a_wiped_log_without_topic_ids_chains_incarnations() {
        // No ids: the floor above the high watermark starts "@500"; next time that chain is current.
        let d = decide_floor(&[entry("", 0, 500)], 0, "", 3);
        assert_eq!((d.floor.next, d.floor.incarnation.as_str()), (0, "@500"));
        let ledgers = [entry("", 0, 500), entry("@500", 0, 4)];
        let d = decide_floor(&ledgers, 0, "", 10);
        assert_eq!((d.floor.next, d.floor.incarnation.as_str()), (4, "@500"));
        assert!(!d.new_incarnation);
    }

    /// A group whose coordinator accepts or refuses commits, counting them.
    struct Coordinator {
        accepts: std::sync::atomic::AtomicBool,
        commits: std::sync::atomic::AtomicUsize,
    }

    impl Group for Coordinator {
        fn prove(&self, floors: &[(i32, i64)]) -> Result<(), String> {
            assert!(!floors.is_empty(), "a proof commits the known floors");
            self.commits
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            if self.accepts.load(std::sync::atomic::Ordering::SeqCst) {
                Ok(())
            } else {
                Err("UnknownMemberId".into())
            }
        }
        fn topic_id(&self) -> Result<Option<String>, String> {
            Ok(None)
        }
        fn high_watermark(&self, _: i32) -> Result<i64, String> {
            Ok(0)
        }
    }

    #[test]
    fn a_write_is_sent_only_within_a_lease_of_an_accepted_proof() {
        let lease = Duration::from_millis(200);
        let writer = Writer::new(
            rum_clickhouse::Client::default(),
            Tables::single(),
            "t",
            "g",
            Duration::from_secs(1),
            lease,
            WriteMetrics::new(&Registry::new()).unwrap(),
        );
        let group = Coordinator {
            accepts: true.into(),
            commits: 0.into(),
        };
        let ownership = std::sync::Mutex::new(Ownership::default());
        {
            let mut o = lock(&ownership);
            o.assign_for_tests(&[0]);
            o.set_floor(0, Floor::new("id".into(), 5, vec!["id".into()]));
        }
        writer.fence(&ownership, &group).expect("proven");
        writer.fence(&ownership, &group).expect("still proven");
        assert_eq!(
            group.commits.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "one proof per lease"
        );
        std::thread::sleep(lease);
        group
            .accepts
            .store(false, std::sync::atomic::Ordering::SeqCst);
        let refused = writer.fence(&ownership, &group).unwrap_err();
        assert_eq!(refused.step(), "fence");
        assert_eq!(
            group.commits.load(std::sync::atomic::Ordering::SeqCst),
            2,
            "the lease ran out: proven again"
        );
        assert!(
            writer.fence(&ownership, &group).is_err(),
            "no write without a new proof"
        );
    }

    #[test]
    fn errors_name_their_step() {
        let e = WriteError::RawInsert(StorageError::Timeout {
            what: "x",
            after: Duration::from_secs(1),
        });
        assert_eq!(e.step(), "raw_insert");
        assert!(e.is_timeout());
        assert!(!WriteError::Fenced("rebalance".into()).is_timeout());
    }
}
