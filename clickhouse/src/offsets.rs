//! Where each Kafka partition's data in ClickHouse ends: the consumer resumes from here.

use std::time::Duration;

use clickhouse::Row;
use serde::Deserialize;

use crate::StorageError;

#[derive(Debug, Row, Deserialize)]
struct PartitionOffset {
    kafka_partition: u32,
    max_offset: u64,
}

/// The highest offset stored per partition of `topic` (partitions with no rows are absent), read
/// within `timeout` (`clickhouse.request_timeout_ms`).
pub async fn stored_offsets(
    client: &clickhouse::Client,
    topic: &str,
    timeout: Duration,
) -> Result<Vec<(u32, u64)>, StorageError> {
    let query = client
        .query(
            "SELECT kafka_partition, maxMerge(max_offset) AS max_offset FROM kafka_offsets \
             WHERE kafka_topic = ? GROUP BY kafka_partition ORDER BY kafka_partition",
        )
        .bind(topic);
    let rows: Vec<PartitionOffset> =
        crate::bounded("reading the stored offsets", timeout, query.fetch_all()).await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.kafka_partition, r.max_offset))
        .collect())
}
