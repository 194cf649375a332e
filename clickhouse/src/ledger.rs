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
//!
//! ## Cluster mode ([`Tables::cluster`])
//! - INSERTs go through the `Distributed` tables of `<database>` with `insert_distributed_sync = 1`: the
//!   INSERT returns when every shard it touched stored its rows, each shard's rows as one block (so one
//!   part), and both `Distributed` tables are sharded by `kafka_partition`: a partition's rows, rollup and
//!   ledger rows are on one shard, in one block per INSERT, as on one server.
//! - Reads (ledgers, what `vitals_raw` holds, rows read back) go to EVERY replica of every shard:
//!   `remote('r1,r2,...', <database>_local, table)` with each replica as its own shard, addresses from
//!   `system.clusters`. A replica that took an INSERT is always read, even when the others have not
//!   fetched its part yet; a replica that does not answer fails the read, so a member that cannot read
//!   every replica learns no floor and writes nothing. Maxima (ledgers, highest stored offset) are the
//!   same over copies; rows read back are taken once (`DISTINCT` over the whole row and its metric id).
//! - Unfinished INSERTs: on ClickHouse 18.16 the shard's part of a `Distributed` INSERT runs under a
//!   query id of its own and does not carry ours as `initial_query_id` (it is an initial query of
//!   its node). It does carry our INSERT's settings, so every INSERT sets `format_schema` (a setting
//!   only schema-based formats read; ours is RowBinary) to its query id: [`kill_queries`] finds our
//!   INSERTs on every node by `query_id`, `initial_query_id` or that setting. 18.16 cannot kill a
//!   running INSERT (`Code: 380 ... unkillable stages`), with or without `KILL QUERY ... ON CLUSTER`
//!   (which exists); so it waits until none is left: two listings in a row that find nothing (a shard's
//!   part is listed on its node before it can receive rows, so a part that can still commit was
//!   running when its initiator was last seen, and the second listing sees it or it is done).

use std::collections::BTreeMap;
use std::time::Duration;

use clickhouse::Row;
use serde::{Deserialize, Serialize};

use crate::cluster::quote;
use crate::StorageError;

/// The rollup's entry table (Null engine; the view `vitals_1m_rollup_v2` fills `vitals_1m`). Migration
/// 005 made it beside 004's `vitals_1m_input`, which consumers of the version before keep writing.
pub const VITALS_1M_INPUT: &str = "vitals_1m_input_v2";

/// The most rows one INSERT may carry: ClickHouse 18.16 cuts HTTP input into blocks of
/// `max_insert_block_size` rows (1,048,576) and a view's GROUP BY output into blocks of
/// `max_block_size` (65,536); below both, an INSERT is one block, so one part.
pub const MAX_ROWS_PER_INSERT: usize = 65_536;

/// The setting that carries an INSERT's query id to the shards of a `Distributed` INSERT (cluster mode;
/// see the module's documentation).
pub const INSERT_MARKER_SETTING: &str = "format_schema";

/// Where the consumer reads and writes: one server's tables, or a cluster's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tables {
    /// Read what `vitals_raw` holds (cluster mode: `<database>_local.vitals_raw`, read on every replica).
    pub raw_read: String,
    /// Read the ledger rows of `vitals_1m` (cluster mode: `<database>_local.vitals_1m`, every replica).
    pub rollup_read: String,
    /// INSERT target of the raw rows (cluster mode: the `Distributed` table).
    pub raw_write: String,
    /// INSERT target of the rollup input (cluster mode: the `Distributed` table).
    pub rollup_write: String,
    /// Where running queries are listed (`system.processes`; of every node in cluster mode).
    pub processes: String,
    /// Cluster mode: the reads above are of every replica of this cluster.
    pub replicas: Option<crate::cluster::ReplicaReads>,
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
            replicas: None,
        }
    }

    /// A cluster (see the module's documentation): writes through the `Distributed` tables of
    /// `database` (the client's database), reads of `<database>_local` on every replica of
    /// `reads.cluster`.
    pub fn cluster(database: &str, reads: crate::cluster::ReplicaReads) -> Self {
        let local = crate::cluster::local_database(database);
        Self {
            raw_read: format!("{local}.{}", crate::VITALS_RAW),
            rollup_read: format!("{local}.{}", crate::VITALS_1M),
            // The `Distributed` tables of `database`, the client's database (the `clickhouse` crate
            // quotes an INSERT's table name whole, so it takes no database).
            raw_write: crate::VITALS_RAW.into(),
            rollup_write: VITALS_1M_INPUT.into(),
            processes: "system.processes".into(),
            replicas: Some(reads),
        }
    }

    /// The tables of `config`: [`Tables::cluster`] when `clickhouse.cluster` is set, else
    /// [`Tables::single`].
    pub fn of(config: &crate::ClickHouseConfig) -> Self {
        match config.cluster() {
            None => Self::single(),
            Some(cluster) => {
                let password = config.password().unwrap_or_else(|e| {
                    tracing::error!(error = %e, "clickhouse: no password");
                    Default::default()
                });
                Self::cluster(
                    &config.database,
                    crate::cluster::ReplicaReads::new(cluster, &config.user, password),
                )
            }
        }
    }

    /// What to read `table` (`database.table` in cluster mode) from: the table, or `remote()` over
    /// every replica of the cluster.
    async fn source(
        &self,
        client: &clickhouse::Client,
        table: &str,
        timeout: Duration,
    ) -> Result<String, StorageError> {
        match (&self.replicas, table.split_once('.')) {
            (Some(reads), Some((database, table))) => {
                reads.source(client, database, table, timeout).await
            }
            _ => Ok(table.to_string()),
        }
    }

    /// The settings of an INSERT with `query_id`: in cluster mode, synchronous `Distributed` INSERTs
    /// and the query id in [`INSERT_MARKER_SETTING`].
    pub fn insert_settings(&self, query_id: &str) -> Vec<(&'static str, String)> {
        match self.replicas {
            None => Vec::new(),
            Some(_) => vec![
                ("insert_distributed_sync", "1".to_string()),
                (INSERT_MARKER_SETTING, query_id.to_string()),
            ],
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
        tables.source(client, &tables.rollup_read, timeout).await?
    );
    let query = client
        .query(&sql)
        .bind(topic)
        .with_setting("query_id", query_id);
    crate::bounded("reading the ledgers", timeout, query.fetch_all()).await
}

/// The last migration whose tables and columns the consumer's write path uses (006: `vitals_raw`'s
/// `revision`, `replaces_value`, `replaces_rating`).
pub const WRITE_PATH_SCHEMA: u32 = 6;

/// The highest migration applied to the database (`schema_migrations`, on every node of a cluster).
pub async fn schema_version(
    client: &clickhouse::Client,
    query_id: &str,
    timeout: Duration,
) -> Result<u32, StorageError> {
    let query = client
        .query("SELECT toUInt32(max(version)) FROM schema_migrations")
        .with_setting("query_id", query_id);
    crate::bounded("reading the schema version", timeout, query.fetch_one()).await
}

/// Checks that the server's time zone is UTC: a UTC day of `vitals_raw` (and a UTC month of
/// `vitals_1m`) is one partition of the table only then, so that each INSERT of the write path is one
/// part. Another time zone cuts a UTC day in two parts, committed one after the other.
pub async fn check_utc(client: &clickhouse::Client, timeout: Duration) -> Result<(), StorageError> {
    let tz: String = crate::bounded(
        "reading the server's time zone",
        timeout,
        client.query("SELECT timezone()").fetch_one(),
    )
    .await?;
    if tz == "UTC" || tz == "Etc/UTC" || tz == "UCT" || tz == "Etc/UCT" {
        Ok(())
    } else {
        Err(StorageError::ServerTimezone(tz))
    }
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
            if ids.is_empty() {
                "''".to_string()
            } else {
                ids.join(", ")
            },
            self.from,
            self.to,
            if ranges.is_empty() {
                "0".to_string()
            } else {
                ranges.join(" OR ")
            },
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
        tables.source(client, &tables.raw_read, timeout).await?,
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
    /// The client's metric id (not a column of the input: the consumer remembers the row's value).
    pub metric_id: String,
    /// 0 for a metric id's first value, +1 for each replacement.
    pub revision: u32,
    /// The value this row replaces (a replacement's rollup takes it out).
    pub replaces_value: f64,
    /// Its rating (`''`: the row replaces nothing).
    pub replaces_rating: String,
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
    const COLUMNS: &str = "received_at, site, route, device, metric, value, rating, sample_rate, kafka_partition, kafka_offset, metric_id, revision, replaces_value, replaces_rating";
    let source = tables.source(client, &tables.raw_read, timeout).await?;
    let sql = match tables.replicas {
        None => format!("SELECT {COLUMNS} FROM {source} WHERE {}", query.filter()),
        // Every replica's copy: each row once.
        Some(_) => format!(
            "SELECT {COLUMNS} FROM (SELECT DISTINCT {COLUMNS} FROM {source} WHERE {})",
            query.filter()
        ),
    };
    let q = client.query(&sql).with_setting("query_id", query_id);
    crate::bounded("reading rows back from vitals_raw", timeout, q.fetch_all()).await
}

/// Metric ids whose current value a re-send replaces, asked of `vitals_raw`.
#[derive(Debug, Clone)]
pub struct CurrentQuery<'a> {
    /// `received_at` of the rows is in `[from, to)` (unix seconds): the re-sends' UTC day.
    pub from: u32,
    /// End of the time range (exclusive).
    pub to: u32,
    /// `(site, metric, route, device, metric id)` of each re-send. The first four are the sorting
    /// key's prefix, so a read touches only their granules of the day.
    pub items: &'a [(&'a str, &'a str, &'a str, &'a str, &'a str)],
}

/// The most ids asked in one read.
pub const CURRENT_IDS_PER_READ: usize = 1_000;

/// The most bytes of quoted ids and places in one read: its SQL stays well under ClickHouse's
/// `max_query_size` (256 KiB) whatever the ids hold (a quote or backslash takes two bytes quoted).
const CURRENT_SQL_BYTES_PER_READ: usize = 128 * 1024;

/// A chain of rows of one metric id in one place (site, metric, route, device) and second: the rows of
/// a first value and its replacements. An id has more than one chain only when a re-send was stored as
/// a first value (its value before forgotten).
#[derive(Debug, Clone, PartialEq, Row, Deserialize)]
pub struct CurrentRow {
    /// The site.
    pub site: String,
    /// The metric.
    pub metric: String,
    /// The metric id.
    pub metric_id: String,
    /// The route.
    pub route: String,
    /// The device.
    pub device: String,
    /// The chain's `received_at` (every row of a chain has its first row's).
    pub chain_received_at: u32,
    /// The value of the chain's highest revision.
    pub current_value: f64,
    /// Its rating.
    pub current_rating: String,
    /// The chain's highest revision.
    pub top_revision: u32,
    /// The chain's sample rate (its first row's; replacements keep it).
    pub chain_sample_rate: f64,
}

/// The chains of the asked metric ids (ids `vitals_raw` does not hold are absent), in reads of at most
/// [`CURRENT_IDS_PER_READ`] ids and [`CURRENT_SQL_BYTES_PER_READ`] bytes, each bounded by `timeout`.
/// The SQL is sent as it is (`query_raw`): an id may hold a `?`.
pub async fn raw_current_values(
    client: &clickhouse::Client,
    tables: &Tables,
    query: &CurrentQuery<'_>,
    query_id: &str,
    timeout: Duration,
) -> Result<Vec<CurrentRow>, StorageError> {
    if query.items.is_empty() {
        return Ok(Vec::new());
    }
    let source = tables.source(client, &tables.raw_read, timeout).await?;
    let mut found = Vec::new();
    let mut rest = query.items;
    let mut n = 0;
    while !rest.is_empty() {
        let mut places: Vec<String> = Vec::new();
        let mut ids: Vec<String> = Vec::new();
        let mut bytes = 0;
        let mut taken = 0;
        for (site, metric, route, device, id) in rest {
            let place = format!(
                "({}, {}, {}, {})",
                quote(site),
                quote(metric),
                quote(route),
                quote(device)
            );
            let id = quote(id);
            if taken > 0
                && (taken == CURRENT_IDS_PER_READ
                    || bytes + place.len() + id.len() > CURRENT_SQL_BYTES_PER_READ)
            {
                break;
            }
            bytes += place.len() + id.len() + 4;
            places.push(place);
            ids.push(id);
            taken += 1;
        }
        rest = &rest[taken..];
        places.sort();
        places.dedup();
        let sql = format!(
            "SELECT site, metric, metric_id, route, device, received_at AS chain_received_at, \
             argMax(value, revision) AS current_value, argMax(rating, revision) AS current_rating, \
             max(revision) AS top_revision, any(sample_rate) AS chain_sample_rate \
             FROM {source} WHERE received_at >= {} AND received_at < {} \
             AND (site, metric, route, device) IN ({}) AND metric_id IN ({}) \
             GROUP BY site, metric, metric_id, route, device, received_at",
            query.from,
            query.to,
            places.join(", "),
            ids.join(", ")
        );
        let q = client
            .query_raw(&sql)
            .with_setting("query_id", format!("{query_id}-{n}"));
        let rows: Vec<CurrentRow> = crate::bounded(
            "reading the current values of re-sent metrics from vitals_raw",
            timeout,
            q.fetch_all(),
        )
        .await?;
        found.extend(rows);
        n += 1;
    }
    Ok(found)
}

/// A row of `vitals_1m_input_v2`, borrowed. A ledger row has an empty site and metric = the topic id.
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
    /// A replacement: the value it replaces, taken out of the same group (0 otherwise).
    pub prev_value: f64,
    /// A replacement: the rating of the value it replaces (`''`: not a replacement).
    pub prev_rating: &'a str,
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
            prev_value: row.replaces_value,
            prev_rating: &row.replaces_rating,
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
            prev_value: row.replaces_value,
            prev_rating: row.replaces_rating,
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
            prev_value: 0.0,
            prev_rating: "",
        }
    }
}

/// Sends one INSERT of `rows` into `table`, with `query_id`, bounded by `timeout` (sending and the
/// answer). Returns the rows sent.
pub async fn insert_rows<'a, T: clickhouse::RowWrite, I>(
    client: &clickhouse::Client,
    tables: &Tables,
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
            // Refused at once rather than queued out of sight of system.processes when the server
            // runs max_concurrent_queries already (an INSERT waiting there could commit after the
            // partition's next owner looked for unfinished ones).
            .with_setting("queue_max_wait_ms", "0")
            // Dedup of identical blocks (replicated tables) is harmless and no part of the argument.
            .with_timeouts(Some(timeout), Some(timeout));
        for (name, value) in tables.insert_settings(query_id) {
            insert = insert.with_setting(name, value);
        }
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

/// The ids of the running queries whose id starts with `prefix` (`%` in it matches any run of
/// characters, see [`kill_queries`]): in cluster mode on
/// every node, with the shards' parts of our `Distributed` INSERTs (found by their
/// `initial_query_id` or by [`INSERT_MARKER_SETTING`]); a node that does not answer fails the call.
pub async fn running_queries(
    client: &clickhouse::Client,
    tables: &Tables,
    prefix: &str,
    query_id: &str,
    timeout: Duration,
) -> Result<Vec<String>, StorageError> {
    let like = like_prefix(prefix);
    let processes = tables.source(client, &tables.processes, timeout).await?;
    let query = match tables.replicas {
        None => client
            .query(&format!(
                "SELECT query_id FROM {processes} WHERE query_id LIKE ?"
            ))
            .bind(&like),
        Some(_) => client
            .query(&format!(
                "SELECT query_id FROM {processes} WHERE query_id LIKE ? OR initial_query_id LIKE ? \
                 OR Settings.Values[indexOf(Settings.Names, '{INSERT_MARKER_SETTING}')] LIKE ?"
            ))
            .bind(&like)
            .bind(&like)
            .bind(&like),
    };
    let running: Vec<Running> = crate::bounded(
        "listing unfinished inserts",
        timeout,
        query.with_setting("query_id", query_id).fetch_all(),
    )
    .await?;
    Ok(running.into_iter().map(|r| r.query_id).collect())
}

/// Kills every running query whose id starts with `prefix` (`%` in it matches any run of characters,
/// e.g. `rum:GROUP:TOPIC:%,3,` for the INSERTs of partition 3) and waits until none runs, or fails
/// (timeout); returns how many queries were found. After it returns Ok, no INSERT of those ids can
/// still commit. In cluster mode, on every
/// node, the shards' parts of our `Distributed` INSERTs included, and only after two listings in a row
/// found none (see the module's documentation).
pub async fn kill_queries(
    client: &clickhouse::Client,
    tables: &Tables,
    prefix: &str,
    query_id: &str,
    timeout: Duration,
) -> Result<usize, StorageError> {
    let work = async {
        // Two listings in a row that find none: a request in flight while the first ran (a shard's part
        // of a Distributed INSERT, a request still reaching the server) is listed by the second.
        let empty_needed = 2;
        let mut empty = 0;
        // Each query is asked to stop once (in cluster mode each KILL is a task of the DDL queue).
        let mut killed = std::collections::BTreeSet::new();
        let mut round = 0usize;
        loop {
            let running = running_queries(
                client,
                tables,
                prefix,
                &format!("{query_id}-list-{round}"),
                timeout,
            )
            .await?;
            round += 1;
            if running.is_empty() {
                empty += 1;
                if empty >= empty_needed {
                    return Ok::<usize, StorageError>(killed.len());
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            empty = 0;
            for id in running {
                if !killed.insert(id.clone()) {
                    continue;
                }
                // ASYNC: the loop above waits for it to be gone (SYNC waits on one node only).
                let kill = match &tables.replicas {
                    None => client.query("KILL QUERY WHERE query_id = ? ASYNC"),
                    Some(reads) => client
                        .query(&format!(
                            "KILL QUERY ON CLUSTER {} WHERE query_id = ? ASYNC",
                            reads.cluster
                        ))
                        .with_setting("wait_end_of_query", "1"),
                };
                match kill.bind(id.as_str()).execute().await {
                    Ok(()) => {}
                    // 18.16 cannot kill a running INSERT: it is waited for.
                    Err(e) if is_unkillable(&e) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    crate::bounded("killing unfinished inserts", timeout, work).await
}

/// `Code: 380 ... Can't kill query ... it consits of unkillable stages` (an INSERT, on 18.16).
fn is_unkillable(error: &clickhouse::error::Error) -> bool {
    matches!(error, clickhouse::error::Error::BadResponse(text) if text.trim_start().starts_with("Code: 380"))
}

/// The LIKE pattern of the ids that start with `prefix`, in which `%` matches any run of characters
/// (the callers' prefixes skip the partitions before theirs that way) and everything else is itself.
fn like_prefix(prefix: &str) -> String {
    format!("{}%", prefix.replace('\\', "\\\\").replace('_', "\\_"))
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
        assert_eq!(
            like_prefix("rum:rum_consumers:t:%,1,"),
            "rum:rum\\_consumers:t:%,1,%"
        );
        assert_eq!(like_prefix("a\\b"), "a\\\\b%");
    }

    #[test]
    fn a_ledger_row_is_keyed_by_topic_partition_and_id() {
        let l = LedgerRow::new(86_400, "t", "id", 7, 43);
        let r = l.input();
        assert_eq!(
            (
                r.site,
                r.route,
                r.device,
                r.metric,
                r.ledger_next,
                r.kafka_partition
            ),
            ("", "t", "7", "id", 43, 7)
        );
    }
}
