//! What each table holds of the Kafka topic, and the two INSERTs that store a batch.
//!
//! `vitals_raw` and `vitals_1m` are written by separate INSERTs (no materialized view between them,
//! migration 004), each one block, so each lands whole or not at all and each can be asked what it
//! holds:
//! - `vitals_1m` keeps *ledger rows* (site `''`), written in the same block as a batch's rollup rows:
//!   per topic, topic id and partition, the next offset to write ([`read_ledgers`]);
//! - `vitals_raw` rows carry their message's topic, topic id, partition and offset: for a batch in
//!   hand, [`raw_stored_max`] tells which of its messages are already there, and [`raw_rollup_rows`]
//!   reads them back so that `vitals_1m` gets exactly the rows `vitals_raw` has.
//!
//! Every request carries a `query_id` given by the caller, so that a request whose answer was lost can
//! be found and killed ([`kill_queries`]) before anything is read again.

use std::collections::BTreeMap;
use std::time::Duration;

use clickhouse::Row;
use serde::{Deserialize, Serialize};

use crate::StorageError;

/// The rollup's entry table (Null engine; the view `vitals_1m_rollup` fills `vitals_1m`).
pub const VITALS_1M_INPUT: &str = "vitals_1m_input";

/// The most rows one INSERT may carry: ClickHouse 18.16 cuts HTTP input into blocks of
/// `max_insert_block_size` rows (1,048,576) and a view's GROUP BY output into blocks of
/// `max_block_size` (65,536); below both, an INSERT is one block, so one part.
pub const MAX_ROWS_PER_INSERT: usize = 65_536;

/// Where the consumer reads and writes: one server's tables, or a cluster's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tables {
    /// Read what `vitals_raw` holds (every replica in cluster mode).
    pub raw_read: String,
    /// Read the ledger rows of `vitals_1m` (every replica in cluster mode).
    pub rollup_read: String,
    /// INSERT target of the raw rows.
    pub raw_write: String,
    /// INSERT target of the rollup input.
    pub rollup_write: String,
    /// Where running queries are listed (`system.processes`, of every node in cluster mode).
    pub processes: String,
}

impl Tables {
    /// One server: the tables themselves.
    pub fn single() -> Self {
        Self {
            raw_read: crate::VITALS_RAW.into(),
            rollup_read: crate::VITALS_1M.into(),
            raw_write: crate::VITALS_RAW.into(),
            rollup_write: VITALS_1M_INPUT.into(),
            processes: "system.processes".into(),
        }
    }
}

/// One ledger of `vitals_1m`: everything below `next` of `partition` is stored in both tables.
#[derive(Debug, Clone, PartialEq, Eq, Row, Deserialize)]
pub struct LedgerEntry {
    /// The Kafka topic id the offsets belong to (`''`: written before ids were kept).
    pub topic_id: String,
    /// The Kafka partition.
    pub partition: u32,
    /// The next offset to write.
    pub next: u64,
}

/// The ledgers of `topic`, every topic id and partition.
pub async fn read_ledgers(
    client: &clickhouse::Client,
    tables: &Tables,
    topic: &str,
    query_id: &str,
    timeout: Duration,
) -> Result<Vec<LedgerEntry>, StorageError> {
    let sql = format!(
        "SELECT metric AS topic_id, toUInt32(device) AS partition, maxMerge(ledger) AS next \
         FROM {} WHERE site = '' AND route = ? GROUP BY metric, device ORDER BY partition, topic_id",
        tables.rollup_read
    );
    let query = client
        .query(&sql)
        .bind(topic)
        .with_setting("query_id", query_id);
    crate::bounded("reading the ledgers", timeout, query.fetch_all()).await
}

/// A range of one partition's offsets, `first..=last`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetRange {
    /// The partition.
    pub partition: u32,
    /// The first offset.
    pub first: u64,
    /// The last offset.
    pub last: u64,
}

/// Which messages of a batch `vitals_raw` holds.
#[derive(Debug, Clone)]
pub struct RawQuery<'a> {
    /// The topic.
    pub topic: &'a str,
    /// The topic ids its rows may carry.
    pub topic_ids: &'a [&'a str],
    /// `received_at` of every row is in `[from, to)` (unix seconds): the batch's UTC day.
    pub from: u32,
    /// End of the time range (exclusive).
    pub to: u32,
    /// The offsets asked about.
    pub ranges: &'a [OffsetRange],
}

impl RawQuery<'_> {
    fn filter(&self) -> String {
        let ids: Vec<String> = self.topic_ids.iter().map(|id| quote(id)).collect();
        let ranges: Vec<String> = self
            .ranges
            .iter()
            .map(|r| {
                format!(
                    "(kafka_partition = {} AND kafka_offset >= {} AND kafka_offset <= {})",
                    r.partition, r.first, r.last
                )
            })
            .collect();
        format!(
            "kafka_topic = {} AND kafka_topic_id IN ({}) AND received_at >= {} AND received_at < {} AND ({})",
            quote(self.topic),
            if ids.is_empty() { "''".to_string() } else { ids.join(", ") },
            self.from,
            self.to,
            if ranges.is_empty() { "0".to_string() } else { ranges.join(" OR ") },
        )
    }
}

#[derive(Debug, Row, Deserialize)]
struct PartitionMax {
    kafka_partition: u32,
    max_offset: u64,
}

/// The highest offset of each partition among the asked ranges that `vitals_raw` holds (partitions
/// with none are absent). Reads only the day's partition of the table.
pub async fn raw_stored_max(
    client: &clickhouse::Client,
    tables: &Tables,
    query: &RawQuery<'_>,
    query_id: &str,
    timeout: Duration,
) -> Result<BTreeMap<u32, u64>, StorageError> {
    if query.ranges.is_empty() {
        return Ok(BTreeMap::new());
    }
    let sql = format!(
        "SELECT kafka_partition, max(kafka_offset) AS max_offset FROM {} WHERE {} GROUP BY kafka_partition",
        tables.raw_read,
        query.filter()
    );
    let q = client.query(&sql).with_setting("query_id", query_id);
    let rows: Vec<PartitionMax> =
        crate::bounded("checking what vitals_raw holds", timeout, q.fetch_all()).await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.kafka_partition, r.max_offset))
        .collect())
}

/// A row of the rollup's input, owned: read back from `vitals_raw`.
#[derive(Debug, Clone, PartialEq, Row, Deserialize)]
pub struct RollupRow {
    /// Unix seconds.
    pub received_at: u32,
    /// The site.
    pub site: String,
    /// The route.
    pub route: String,
    /// The device.
    pub device: String,
    /// The metric.
    pub metric: String,
    /// The value.
    pub value: f64,
    /// The rating.
    pub rating: String,
    /// The sample rate.
    pub sample_rate: f64,
    /// The Kafka partition.
    pub kafka_partition: u32,
    /// The Kafka offset (not a column of the input; used to order and check).
    pub kafka_offset: u64,
}

/// The rows `vitals_raw` holds for the asked ranges, as rollup input.
pub async fn raw_rollup_rows(
    client: &clickhouse::Client,
    tables: &Tables,
    query: &RawQuery<'_>,
    query_id: &str,
    timeout: Duration,
) -> Result<Vec<RollupRow>, StorageError> {
    if query.ranges.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "SELECT received_at, site, route, device, metric, value, rating, sample_rate, kafka_partition, kafka_offset \
         FROM {} WHERE {}",
        tables.raw_read,
        query.filter()
    );
    let q = client.query(&sql).with_setting("query_id", query_id);
    crate::bounded("reading rows back from vitals_raw", timeout, q.fetch_all()).await
}

/// A row of `vitals_1m_input`, borrowed. A ledger row has an empty site and metric = the topic id.
#[derive(Debug, Clone, Copy, PartialEq, Row, Serialize)]
pub struct RollupInputRef<'a> {
    /// Unix seconds (a ledger row: the start of the batch's day).
    pub received_at: u32,
    /// The site (`''`: a ledger row).
    pub site: &'a str,
    /// The route (a ledger row: the topic).
    pub route: &'a str,
    /// The device (a ledger row: the partition, in decimal).
    pub device: &'a str,
    /// The metric (a ledger row: the topic id).
    pub metric: &'a str,
    /// The value.
    pub value: f64,
    /// The rating.
    pub rating: &'a str,
    /// The sample rate.
    pub sample_rate: f64,
    /// The Kafka partition (the shard in cluster mode).
    pub kafka_partition: u32,
    /// A ledger row: the next offset to write; 0 otherwise.
    pub ledger_next: u64,
}

impl<'a> RollupInputRef<'a> {
    /// The input of a row read back from `vitals_raw`.
    pub fn of(row: &'a RollupRow) -> Self {
        Self {
            received_at: row.received_at,
            site: &row.site,
            route: &row.route,
            device: &row.device,
            metric: &row.metric,
            value: row.value,
            rating: &row.rating,
            sample_rate: row.sample_rate,
            kafka_partition: row.kafka_partition,
            ledger_next: 0,
        }
    }

    /// The input of a raw row the consumer is writing.
    pub fn of_raw(row: &crate::VitalsRawRowRef<'a>) -> Self {
        Self {
            received_at: row.received_at,
            site: row.site,
            route: row.route,
            device: row.device,
            metric: row.metric,
            value: row.value,
            rating: row.rating,
            sample_rate: row.sample_rate,
            kafka_partition: row.kafka_partition,
            ledger_next: 0,
        }
    }
}

/// A ledger row's owned parts (its device is the partition in decimal).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerRow {
    /// Start of the batch's UTC day.
    pub day_start: u32,
    /// The topic.
    pub topic: String,
    /// The topic id.
    pub topic_id: String,
    /// The partition.
    pub partition: u32,
    /// Its decimal form (the row's device).
    pub partition_text: String,
    /// The next offset to write.
    pub next: u64,
}

impl LedgerRow {
    /// The ledger of `partition` after this batch.
    pub fn new(day_start: u32, topic: &str, topic_id: &str, partition: u32, next: u64) -> Self {
        Self {
            day_start,
            topic: topic.into(),
            topic_id: topic_id.into(),
            partition,
            partition_text: partition.to_string(),
            next,
        }
    }

    /// The input row.
    pub fn input(&self) -> RollupInputRef<'_> {
        RollupInputRef {
            received_at: self.day_start,
            site: "",
            route: &self.topic,
            device: &self.partition_text,
            metric: &self.topic_id,
            value: 0.0,
            rating: "",
            sample_rate: 1.0,
            kafka_partition: self.partition,
            ledger_next: self.next,
        }
    }
}

/// Sends one INSERT of `rows` into `table`, with `query_id`, bounded by `timeout` (sending and the
/// answer). Returns the rows sent.
pub async fn insert_rows<'a, T: clickhouse::RowWrite, I>(
    client: &clickhouse::Client,
    table: &str,
    rows: I,
    query_id: &str,
    timeout: Duration,
    what: &'static str,
) -> Result<u64, StorageError>
where
    I: IntoIterator<Item = T::Value<'a>>,
{
    let work = async {
        let mut insert = client
            .insert::<T>(table)
            .await?
            .with_setting("query_id", query_id)
            // Dedup of identical blocks (replicated tables) is harmless and no part of the argument.
            .with_timeouts(Some(timeout), Some(timeout));
        let mut n = 0u64;
        for row in rows {
            insert.write(&row).await?;
            n += 1;
        }
        if n == 0 {
            return Ok(0);
        }
        insert.end().await?;
        Ok::<u64, StorageError>(n)
    };
    crate::bounded(what, timeout, work).await
}

#[derive(Debug, Row, Deserialize)]
struct Running {
    query_id: String,
}

/// Kills every running query whose id starts with `prefix` and waits until none runs, or fails
/// (timeout): after it returns Ok, no INSERT of those ids can still commit.
pub async fn kill_queries(
    client: &clickhouse::Client,
    tables: &Tables,
    prefix: &str,
    query_id: &str,
    timeout: Duration,
) -> Result<usize, StorageError> {
    let work = async {
        let like = format!("{}%", like_escape(prefix));
        let list = format!(
            "SELECT query_id FROM {} WHERE query_id LIKE ?",
            tables.processes
        );
        let mut killed = 0usize;
        loop {
            let running: Vec<Running> = client
                .query(&list)
                .bind(&like)
                .with_setting("query_id", format!("{query_id}-list-{killed}"))
                .fetch_all()
                .await?;
            if running.is_empty() {
                return Ok::<usize, StorageError>(killed);
            }
            for r in &running {
                // ASYNC: the loop above waits for it to be gone (SYNC waits on one node only).
                client
                    .query("KILL QUERY WHERE query_id = ? ASYNC")
                    .bind(r.query_id.as_str())
                    .execute()
                    .await?;
            }
            killed += running.len();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    crate::bounded("killing unfinished inserts", timeout, work).await
}

fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

fn like_escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_raw_filter_names_the_day_and_each_range() {
        let ranges = [
            OffsetRange {
                partition: 1,
                first: 10,
                last: 20,
            },
            OffsetRange {
                partition: 3,
                first: 0,
                last: 0,
            },
        ];
        let q = RawQuery {
            topic: "rum.beacons.v1",
            topic_ids: &["", "abc"],
            from: 86_400,
            to: 172_800,
            ranges: &ranges,
        };
        assert_eq!(
            q.filter(),
            "kafka_topic = 'rum.beacons.v1' AND kafka_topic_id IN ('', 'abc') AND received_at >= 86400 \
             AND received_at < 172800 AND ((kafka_partition = 1 AND kafka_offset >= 10 AND kafka_offset <= 20) \
             OR (kafka_partition = 3 AND kafka_offset >= 0 AND kafka_offset <= 0))"
        );
    }

    #[test]
    fn quotes_and_like_patterns_are_escaped() {
        assert_eq!(quote("a'b\\c"), "'a\\'b\\\\c'");
        assert_eq!(like_escape("rum_1%"), "rum\\_1\\%");
    }

    #[test]
    fn a_ledger_row_is_keyed_by_topic_partition_and_id() {
        let l = LedgerRow::new(86_400, "t", "id", 7, 43);
        let r = l.input();
        assert_eq!(
            (r.site, r.route, r.device, r.metric, r.ledger_next, r.kafka_partition),
            ("", "t", "7", "id", 43, 7)
        );
    }
}
