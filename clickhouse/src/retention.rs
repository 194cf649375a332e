//! Retention: drop whole partitions that are entirely older than a limit.
//!
//! `vitals_raw` is partitioned by day (`toYYYYMMDD(received_at)`), `vitals_1m` by month
//! (`toYYYYMM(minute)`). A partition is dropped only when every row it can hold is older than
//! `now - days`: a day (or month) strictly before the day (or month) containing that cutoff.
//! So up to one partition's span more than the limit is kept, never less. Days and months are the
//! server's (its time zone), so the cutoff partition is computed by the server too.
//!
//! TTL would do this on current ClickHouse, but 18.16 has no TTL; `ALTER TABLE ... DROP PARTITION`
//! and `system.parts` work on both. Dropping a partition is cheap (files are unlinked), and
//! `kafka_offsets` is untouched, so the consumer still resumes where it stopped.

use clickhouse::Row;
use serde::Deserialize;

use crate::{ClickHouseConfig, StorageError};

/// Days of `vitals_raw` kept by default.
pub const DEFAULT_RAW_DAYS: u32 = 30;
/// Days of `vitals_1m` kept by default.
pub const DEFAULT_ROLLUP_DAYS: u32 = 400;

/// What [`apply_retention`] dropped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// Dropped `vitals_raw` partitions, `YYYYMMDD`, ascending.
    pub raw_dropped: Vec<u32>,
    /// Dropped `vitals_1m` partitions, `YYYYMM`, ascending.
    pub rollup_dropped: Vec<u32>,
}

#[derive(Debug, Row, Deserialize)]
struct Partition {
    partition: String,
}

#[derive(Debug, Row, Deserialize)]
struct Cutoffs {
    raw_day: u32,
    rollup_month: u32,
}

/// Drops the `vitals_raw` days entirely older than `now - raw_days` and the `vitals_1m` months
/// entirely older than `now - rollup_days` (`now` in unix seconds). Days of 86400 seconds.
/// Running it again drops nothing more.
pub async fn apply_retention(
    config: &ClickHouseConfig,
    raw_days: u32,
    rollup_days: u32,
    now: u32,
) -> Result<RetentionReport, StorageError> {
    let client = config.client();
    let raw_cutoff = now.saturating_sub(raw_days.saturating_mul(86_400));
    let rollup_cutoff = now.saturating_sub(rollup_days.saturating_mul(86_400));
    let cutoffs: Cutoffs = client
        .query(
            "SELECT toUInt32(toYYYYMMDD(toDateTime(?))) AS raw_day, \
             toUInt32(toYYYYMM(toDateTime(?))) AS rollup_month",
        )
        .bind(raw_cutoff)
        .bind(rollup_cutoff)
        .fetch_one()
        .await?;
    let raw_dropped = drop_older(&client, config, "vitals_raw", cutoffs.raw_day).await?;
    let rollup_dropped = drop_older(&client, config, "vitals_1m", cutoffs.rollup_month).await?;
    Ok(RetentionReport {
        raw_dropped,
        rollup_dropped,
    })
}

/// The active partitions of a table, as numbers (`YYYYMMDD` or `YYYYMM`), ascending.
pub async fn active_partitions(
    client: &clickhouse::Client,
    config: &ClickHouseConfig,
    table: &str,
) -> Result<Vec<u32>, StorageError> {
    let rows: Vec<Partition> = client
        .query(
            "SELECT DISTINCT partition FROM system.parts \
             WHERE database = ? AND table = ? AND active ORDER BY partition",
        )
        .bind(config.database.as_str())
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

async fn drop_older(
    client: &clickhouse::Client,
    config: &ClickHouseConfig,
    table: &str,
    keep_from: u32,
) -> Result<Vec<u32>, StorageError> {
    let mut dropped = Vec::new();
    for partition in active_partitions(client, config, table).await? {
        if partition >= keep_from {
            continue;
        }
        tracing::info!(table, partition, "retention: dropping partition");
        // A number, not bound text: the partition expression's value (UInt32), as ALTER expects.
        client
            .query(&format!("ALTER TABLE {table} DROP PARTITION {partition}"))
            .execute()
            .await?;
        dropped.push(partition);
    }
    Ok(dropped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_partition_values() {
        assert_eq!(parse_partition("20240131"), Some(20_240_131));
        assert_eq!(parse_partition("'202401'"), Some(202_401));
        assert_eq!(parse_partition("tuple()"), None);
        assert_eq!(parse_partition(""), None);
        assert_eq!(parse_partition("-1"), None);
    }
}
