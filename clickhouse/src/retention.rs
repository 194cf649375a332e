//! Retention: drop whole partitions that are entirely older than a limit.
//!
//! `vitals_raw` is partitioned by day (`toYYYYMMDD(received_at)`), `vitals_1m` by month
//! (`toYYYYMM(minute)`). A partition is dropped only when every row it can hold is older than
//! `now - days`: a day (or month) strictly before the day (or month) containing that cutoff.
//! So up to one partition's span more than the limit is kept, never less. Days and months are the
//! server's (its time zone), so the cutoff partition is computed by the server too.
//!
//! TTL would do this on current ClickHouse, but 18.16 has no TTL; `ALTER TABLE ... DROP PARTITION`
//! and `system.parts` work on both. Dropping a partition is cheap (files are unlinked). The ledger rows
//! of `vitals_1m` (where each Kafka partition is stored up to) go with their month: a partition written
//! within the rollup retention keeps a newer one.
//!
//! ClickHouse refuses to drop a partition larger than its server setting `max_partition_size_to_drop`
//! (default 50 GB, error 359): such a partition stays, is reported as
//! [`RetentionFailureCause::PartitionTooLarge`], and the other partitions still go.
//!
//! In cluster mode (`clickhouse.cluster`) the partitions are those of the replicated tables of
//! `<database>_local` on every node (read with `remote()`; a node that does not answer fails the
//! table's run), dropped with `ALTER TABLE <database>_local.TABLE ON CLUSTER NAME DROP PARTITION`: every
//! node runs it (each replicated drop is also replicated to the shard's other replica; a partition a
//! shard does not have is nothing to drop). A node that is down runs it from the DDL queue when it is
//! back, after the statement's timeout was reported.
//!
//! Every statement has a timeout (the client has only a connect timeout): a server that accepts
//! and never answers (paused, or a `DROP PARTITION` blocked behind a lock) is a
//! [`RetentionFailureCause::Timeout`] of that table, whose remaining statements are not sent, and
//! the run goes on with the other table. A run takes at most (2 + dropped partitions) timeouts a table.

use std::future::Future;
use std::time::Duration;

use clickhouse::Row;
use serde::Deserialize;

use crate::{ClickHouseConfig, StorageError, VITALS_RAW};

/// Days of `vitals_raw` kept by default.
pub const DEFAULT_RAW_DAYS: u32 = 30;
/// Days of `vitals_1m` kept by default.
pub const DEFAULT_ROLLUP_DAYS: u32 = 400;
/// The rollup table, partitioned by month.
pub const VITALS_1M: &str = "vitals_1m";
/// The ClickHouse server setting that refuses to drop larger partitions (default 50 GB; 0: no limit).
pub const MAX_PARTITION_SIZE_TO_DROP: &str = "max_partition_size_to_drop";
/// How long one retention statement may take by default: a drop unlinks files, a read of
/// `system.parts` is small; a minute without an answer is a server that is not answering.
pub const DEFAULT_RETENTION_STATEMENT_TIMEOUT: Duration = Duration::from_secs(60);
/// ClickHouse's error code for a drop refused by `max_[table/partition]_size_to_drop`.
const TABLE_SIZE_EXCEEDS_MAX_DROP_SIZE_LIMIT: u32 = 359;

/// What [`apply_retention`] dropped, and every step that failed (the other steps still ran).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[must_use = "a retention run reports its failures in the report"]
pub struct RetentionReport {
    /// Dropped `vitals_raw` partitions, `YYYYMMDD`, ascending.
    pub raw_dropped: Vec<u32>,
    /// Dropped `vitals_1m` partitions, `YYYYMM`, ascending.
    pub rollup_dropped: Vec<u32>,
    /// What could not be done, in order.
    pub failures: Vec<RetentionFailure>,
}

/// One step of retention that failed: a partition not dropped, or a table not looked at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionFailure {
    /// [`VITALS_RAW`] or [`VITALS_1M`].
    pub table: &'static str,
    /// The expired partition that is still there; `None` when the table's cutoff or partitions
    /// could not be read (nothing of it was dropped).
    pub partition: Option<u32>,
    /// Why.
    pub cause: RetentionFailureCause,
}

/// Why a step of retention failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetentionFailureCause {
    /// ClickHouse refused to drop the partition: it is larger than the server setting
    /// [`MAX_PARTITION_SIZE_TO_DROP`]. Retrying does not help until the setting is raised.
    PartitionTooLarge {
        /// The server's comparison, e.g. `Size (52.50 GB) is greater than
        /// max_[table/partition]_size_to_drop (50.00 GB)`, when its message has one.
        sizes: Option<String>,
    },
    /// ClickHouse did not answer the statement within this timeout (paused, overloaded, or a drop
    /// waiting for a lock); a drop may still finish on the server. The table's remaining statements
    /// were not sent.
    Timeout(Duration),
    /// Any other error (ClickHouse unreachable, a query refused), on one line.
    Error(String),
}

impl std::fmt::Display for RetentionFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let table = self.table;
        match (&self.cause, self.partition) {
            (RetentionFailureCause::PartitionTooLarge { sizes }, partition) => {
                let partition = partition.map_or(String::new(), |p| format!(" {p}"));
                write!(
                    f,
                    "ClickHouse refused to drop partition{partition} of {table}: it is larger than \
                     the server setting {MAX_PARTITION_SIZE_TO_DROP}"
                )?;
                if let Some(sizes) = sizes {
                    write!(f, " ({sizes})")?;
                }
                write!(
                    f,
                    "; raise {MAX_PARTITION_SIZE_TO_DROP} in the ClickHouse server's config \
                     (0 means no limit) and restart it, or drop the partition by hand \
                     (README: Retention)"
                )
            }
            (RetentionFailureCause::Timeout(after), Some(partition)) => write!(
                f,
                "cannot drop partition {partition} of {table}: ClickHouse did not answer within {} s \
                 (the drop may still finish on the server; the table's other expired partitions wait \
                 for the next run)",
                after.as_secs_f64()
            ),
            (RetentionFailureCause::Timeout(after), None) => write!(
                f,
                "cannot read the expired partitions of {table}: ClickHouse did not answer within {} s",
                after.as_secs_f64()
            ),
            (RetentionFailureCause::Error(error), Some(partition)) => {
                write!(f, "cannot drop partition {partition} of {table}: {error}")
            }
            (RetentionFailureCause::Error(error), None) => {
                write!(f, "cannot read the expired partitions of {table}: {error}")
            }
        }
    }
}

/// The client and each statement's timeout.
struct Statements {
    client: clickhouse::Client,
    timeout: Duration,
}

/// A statement that failed, or got no answer in time.
enum StatementError {
    Failed(StorageError),
    TimedOut(Duration),
}

impl Statements {
    /// Runs one statement within the timeout.
    async fn run<T, E: Into<StorageError>>(
        &self,
        statement: impl Future<Output = Result<T, E>>,
    ) -> Result<T, StatementError> {
        match tokio::time::timeout(self.timeout, statement).await {
            Ok(result) => result.map_err(|e| StatementError::Failed(e.into())),
            Err(_) => Err(StatementError::TimedOut(self.timeout)),
        }
    }
}

#[derive(Debug, Row, Deserialize)]
struct Partition {
    partition: String,
}

#[derive(Debug, Row, Deserialize)]
struct Cutoff {
    partition: u32,
}

/// Drops the `vitals_raw` days entirely older than `now - raw_days` and the `vitals_1m` months
/// entirely older than `now - rollup_days` (`now` in unix seconds). Days of 86400 seconds.
/// Running it again drops nothing more. A step that fails is reported and the others still run:
/// a partition ClickHouse refuses to drop does not keep the next ones, or the other table, from going.
/// Each statement gets at most `statement_timeout` (see the module's documentation).
pub async fn apply_retention(
    config: &ClickHouseConfig,
    raw_days: u32,
    rollup_days: u32,
    now: u32,
    statement_timeout: Duration,
) -> RetentionReport {
    let client = Statements {
        client: config.client(),
        timeout: statement_timeout,
    };
    let mut failures = Vec::new();
    let raw_cutoff = now.saturating_sub(raw_days.saturating_mul(86_400));
    let rollup_cutoff = now.saturating_sub(rollup_days.saturating_mul(86_400));
    let raw_dropped = drop_older(
        &client,
        config,
        VITALS_RAW,
        "toYYYYMMDD",
        raw_cutoff,
        &mut failures,
    )
    .await;
    let rollup_dropped = drop_older(
        &client,
        config,
        VITALS_1M,
        "toYYYYMM",
        rollup_cutoff,
        &mut failures,
    )
    .await;
    RetentionReport {
        raw_dropped,
        rollup_dropped,
        failures,
    }
}

/// The active partitions of a table, as numbers (`YYYYMMDD` or `YYYYMM`), ascending. In cluster mode,
/// of the replicated table on every node (a node that does not answer fails the read).
pub async fn active_partitions(
    client: &clickhouse::Client,
    config: &ClickHouseConfig,
    table: &str,
) -> Result<Vec<u32>, StorageError> {
    let (parts, database) = match config.cluster() {
        None => ("system.parts".to_string(), config.database.clone()),
        Some(cluster) => {
            let password = config
                .password()
                .map_err(|e| StorageError::Cluster(e.to_string()))?;
            let reads = crate::cluster::ReplicaReads::new(cluster, &config.user, password);
            let parts = reads
                .source(client, "system", "parts", config.request_timeout())
                .await?;
            (parts, crate::cluster::local_database(&config.database))
        }
    };
    let rows: Vec<Partition> = client
        .query(&format!(
            "SELECT DISTINCT partition FROM {parts} \
             WHERE database = ? AND table = ? AND active ORDER BY partition"
        ))
        .bind(database.as_str())
        .bind(table)
        .fetch_all()
        .await?;
    let mut out: Vec<u32> = rows
        .iter()
        .filter_map(|p| match parse_partition(&p.partition) {
            Some(n) => Some(n),
            None => {
                tracing::warn!(table, partition = %p.partition, "partition is not a number; retention skips it");
                None
            }
        })
        .collect();
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// `20240131` (or `'20240131'` from some versions) as a number.
fn parse_partition(text: &str) -> Option<u32> {
    let text = text.trim().trim_matches('\'');
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Drops the partitions of `table` entirely older than `cutoff`, whose partition (by the server's
/// calendar) is `partition_of(cutoff)`. Failures go into `failures`; what was dropped is returned.
async fn drop_older(
    client: &Statements,
    config: &ClickHouseConfig,
    table: &'static str,
    partition_of: &str,
    cutoff: u32,
    failures: &mut Vec<RetentionFailure>,
) -> Vec<u32> {
    let expired = async {
        let keep_from: Cutoff = client
            .run(
                client
                    .client
                    .query(&format!(
                        "SELECT toUInt32({partition_of}(toDateTime(?))) AS partition"
                    ))
                    .bind(cutoff)
                    .fetch_one(),
            )
            .await?;
        let partitions = client
            .run(active_partitions(&client.client, config, table))
            .await?;
        Ok::<_, StatementError>(
            partitions
                .into_iter()
                .filter(move |p| *p < keep_from.partition),
        )
    };
    let expired = match expired.await {
        Ok(expired) => expired,
        Err(e) => {
            failures.push(RetentionFailure {
                table,
                partition: None,
                cause: cause_of(&e),
            });
            return Vec::new();
        }
    };
    let mut dropped = Vec::new();
    for partition in expired {
        if table == VITALS_1M {
            // The ledger rows of the month (where each Kafka partition is stored up to) move to the
            // current month first: a partition idle since then keeps its floor. max is idempotent, so a
            // carry repeated after a failed drop changes nothing.
            if let Err(e) = client
                .run(carry_ledgers(&client.client, config, partition))
                .await
            {
                failures.push(RetentionFailure {
                    table,
                    partition: Some(partition),
                    cause: cause_of(&e),
                });
                continue;
            }
        }
        tracing::info!(table, partition, "retention: dropping partition");
        // A number, not bound text: the partition expression's value (UInt32), as ALTER expects.
        // Cluster mode: the replicated table of every shard (a replicated drop reaches the replicas).
        let statement = match config.cluster() {
            None => client
                .client
                .query(&format!("ALTER TABLE {table} DROP PARTITION {partition}")),
            Some(cluster) => client
                .client
                .query(&format!(
                    "ALTER TABLE {}.{table} ON CLUSTER {cluster} DROP PARTITION {partition}",
                    crate::cluster::local_database(&config.database)
                ))
                .with_setting("wait_end_of_query", "1"),
        };
        let result = client.run(statement.execute()).await;
        match result {
            Ok(()) => dropped.push(partition),
            Err(e) => {
                let timed_out = matches!(e, StatementError::TimedOut(_));
                failures.push(RetentionFailure {
                    table,
                    partition: Some(partition),
                    cause: cause_of(&e),
                });
                // A server that did not answer one drop is not sent the next.
                if timed_out {
                    break;
                }
            }
        }
    }
    dropped
}

/// Tells a timeout and a drop refused for its size from any other error.
/// Re-writes the ledger rows of month `partition` of `vitals_1m` into the current month, through
/// `vitals_1m_input` (in cluster mode its `Distributed` table, so each row reaches its partition's shard).
async fn carry_ledgers(
    client: &clickhouse::Client,
    config: &ClickHouseConfig,
    partition: u32,
) -> Result<(), StorageError> {
    let sql = format!(
        "INSERT INTO {db}.{input} (received_at, site, route, device, metric, value, rating, sample_rate, kafka_partition, ledger_next) \
         SELECT toStartOfMonth(now()), '', route, device, metric, 0, '', 1, toUInt32(device), maxMerge(ledger) \
         FROM {db}.{VITALS_1M} WHERE site = '' AND toYYYYMM(minute) = {partition} \
         GROUP BY route, device, metric",
        db = config.database,
        input = crate::ledger::VITALS_1M_INPUT,
    );
    let mut query = client.query(&sql);
    if config.cluster().is_some() {
        query = query.with_setting("insert_distributed_sync", "1");
    }
    query.execute().await?;
    Ok(())
}

fn cause_of(error: &StatementError) -> RetentionFailureCause {
    match error {
        StatementError::TimedOut(after) => RetentionFailureCause::Timeout(*after),
        StatementError::Failed(error) => cause_of_error(error),
    }
}

/// Tells a drop refused for its size from any other error.
fn cause_of_error(error: &StorageError) -> RetentionFailureCause {
    let StorageError::ClickHouse(clickhouse::error::Error::BadResponse(text)) = error else {
        return RetentionFailureCause::Error(one_line(&rum_telemetry::error_chain(error)));
    };
    if error_code(text) == Some(TABLE_SIZE_EXCEEDS_MAX_DROP_SIZE_LIMIT) {
        RetentionFailureCause::PartitionTooLarge {
            sizes: size_comparison(text),
        }
    } else {
        RetentionFailureCause::Error(one_line(&rum_telemetry::error_chain(error)))
    }
}

/// `Code: 359, e.displayText() = ...` (18.16) or `Code: 359. DB::Exception: ...` (current).
fn error_code(text: &str) -> Option<u32> {
    let rest = text.trim_start().strip_prefix("Code: ")?;
    let digits = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..digits].parse().ok()
}

/// `Size (438.00 B) is greater than max_[table/partition]_size_to_drop (1.00 B)` out of the
/// server's message.
fn size_comparison(text: &str) -> Option<String> {
    let start = text.find("Size (")?;
    let limit = start + text[start..].find("size_to_drop (")?;
    let end = limit + text[limit..].find(')')? + 1;
    Some(one_line(&text[start..end]))
}

/// Server messages span lines; a log line does not.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ClickHouse 18.16's answer to a drop over the limit, as the `clickhouse` crate reports it.
    const REFUSED_18_16: &str = "Code: 359, e.displayText() = DB::Exception: Table or Partition in rum.vitals_raw was not dropped.\nReason:\n1. Size (438.00 B) is greater than max_[table/partition]_size_to_drop (1.00 B)\n2. File '/var/lib/clickhouse/flags/force_drop_table' intended to force DROP doesn't exist\nHow to fix this:\n1. Either increase (or set to zero) max_[table/partition]_size_to_drop in server config and restart ClickHouse\n2. Either create forcing file /var/lib/clickhouse/flags/force_drop_table and make sure that ClickHouse has write permission for it.\nExample:\nsudo touch '/var/lib/clickhouse/flags/force_drop_table' && sudo chmod 666 '/var/lib/clickhouse/flags/force_drop_table', e.what() = DB::Exception\n";

    fn bad_response(text: &str) -> StorageError {
        StorageError::ClickHouse(clickhouse::error::Error::BadResponse(text.into()))
    }

    #[test]
    fn tells_a_drop_refused_for_its_size_from_other_errors() {
        let sizes = Some(
            "Size (438.00 B) is greater than max_[table/partition]_size_to_drop (1.00 B)".into(),
        );
        assert_eq!(
            cause_of_error(&bad_response(REFUSED_18_16)),
            RetentionFailureCause::PartitionTooLarge {
                sizes: sizes.clone()
            }
        );
        let current = "Code: 359. DB::Exception: Table or Partition in rum.vitals_raw was not dropped.\nReason:\n1. Size (52.50 GB) is greater than max_[table/partition]_size_to_drop (50.00 GB)\n2. File '/var/lib/clickhouse/flags/force_drop_table' intended to force DROP doesn't exist. (TABLE_SIZE_EXCEEDS_MAX_DROP_SIZE_LIMIT) (version 24.8.1.1)";
        assert_eq!(
            cause_of_error(&bad_response(current)),
            RetentionFailureCause::PartitionTooLarge {
                sizes: Some(
                    "Size (52.50 GB) is greater than max_[table/partition]_size_to_drop (50.00 GB)"
                        .into()
                )
            }
        );
        assert_eq!(
            cause_of_error(&bad_response("Code: 3590, e.displayText() = other\nlines")),
            RetentionFailureCause::Error(
                "clickhouse: bad response: Code: 3590, e.displayText() = other lines".into()
            )
        );
        assert_eq!(
            error_code("Code: 60. DB::Exception: Table rum.x doesn't exist"),
            Some(60)
        );
        assert_eq!(error_code("Connection refused"), None);
    }

    #[test]
    fn a_failure_reads_as_one_line_naming_the_setting() {
        let refused = RetentionFailure {
            table: VITALS_RAW,
            partition: Some(20_240_213),
            cause: cause_of_error(&bad_response(REFUSED_18_16)),
        };
        assert_eq!(
            refused.to_string(),
            "ClickHouse refused to drop partition 20240213 of vitals_raw: it is larger than the server \
             setting max_partition_size_to_drop (Size (438.00 B) is greater than \
             max_[table/partition]_size_to_drop (1.00 B)); raise max_partition_size_to_drop in the \
             ClickHouse server's config (0 means no limit) and restart it, or drop the partition by \
             hand (README: Retention)"
        );
        let down = RetentionFailure {
            table: VITALS_1M,
            partition: None,
            cause: RetentionFailureCause::Error("connection refused".into()),
        };
        assert_eq!(
            down.to_string(),
            "cannot read the expired partitions of vitals_1m: connection refused"
        );
        let blocked = RetentionFailure {
            table: VITALS_RAW,
            partition: Some(20_240_213),
            cause: RetentionFailureCause::Timeout(DEFAULT_RETENTION_STATEMENT_TIMEOUT),
        };
        assert_eq!(
            blocked.to_string(),
            "cannot drop partition 20240213 of vitals_raw: ClickHouse did not answer within 60 s \
             (the drop may still finish on the server; the table's other expired partitions wait \
             for the next run)"
        );
    }

    #[test]
    fn parses_partition_values() {
        assert_eq!(parse_partition("20240131"), Some(20_240_131));
        assert_eq!(parse_partition("'202401'"), Some(202_401));
        assert_eq!(parse_partition("tuple()"), None);
        assert_eq!(parse_partition(""), None);
        assert_eq!(parse_partition("-1"), None);
    }
}
