//! Retention in the consumer: expired partitions are dropped at start and every hour (idempotent,
//! so every replica may do it). Every step that fails is counted in
//! `rum_consumer_retention_failures_total{table}` and logged on one line; a partition ClickHouse
//! refuses to drop for its size (`max_partition_size_to_drop`) is one of them, and stays until the
//! setting is raised. Each statement has a timeout (`consumer.retention_statement_timeout_secs`): a
//! ClickHouse that accepts and never answers is a counted failure too, and the run returns.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rum_clickhouse::{apply_retention, ClickHouseConfig, RetentionReport};
use tokio::sync::watch;

use crate::ConsumerMetrics;

/// How often retention runs.
const EVERY: Duration = Duration::from_secs(3600);

/// Runs retention at start and every hour until `stop` turns true, each statement within
/// `statement_timeout`.
pub(crate) async fn enforce_retention(
    config: ClickHouseConfig,
    statement_timeout: Duration,
    metrics: std::sync::Arc<ConsumerMetrics>,
    mut stop: watch::Receiver<bool>,
) {
    let mut every = tokio::time::interval(EVERY);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as u32);
        let _ = run_retention(&config, &metrics, now, statement_timeout).await;
    }
}

/// One retention run at `now` (unix seconds) with the configured limits, each statement within
/// `statement_timeout`, counted and logged.
pub async fn run_retention(
    config: &ClickHouseConfig,
    metrics: &ConsumerMetrics,
    now: u32,
    statement_timeout: Duration,
) -> RetentionReport {
    let report = apply_retention(
        config,
        config.raw_retention_days,
        config.rollup_retention_days,
        now,
        statement_timeout,
    )
    .await;
    record(&report, metrics);
    report
}

/// Counts and logs what a run did: one line for what was dropped, one line for each failure.
fn record(report: &RetentionReport, metrics: &ConsumerMetrics) {
    if !report.raw_dropped.is_empty() || !report.rollup_dropped.is_empty() {
        tracing::info!(
            vitals_raw = ?report.raw_dropped,
            vitals_1m = ?report.rollup_dropped,
            "retention: dropped expired partitions"
        );
    }
    for failure in &report.failures {
        metrics
            .retention_failures
            .with_label_values(&[failure.table])
            .inc();
        tracing::warn!("retention: {failure} (tried again in an hour)");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rum_clickhouse::{RetentionFailure, RetentionFailureCause, VITALS_1M, VITALS_RAW};

    #[test]
    fn counts_every_failure_by_table() {
        let metrics = ConsumerMetrics::new(10, Duration::from_secs(3_600)).unwrap();
        let failure = |table, partition| RetentionFailure {
            table,
            partition,
            cause: RetentionFailureCause::PartitionTooLarge { sizes: None },
        };
        let report = RetentionReport {
            raw_dropped: vec![20240101],
            rollup_dropped: vec![],
            failures: vec![
                failure(VITALS_RAW, Some(20240102)),
                failure(VITALS_RAW, Some(20240103)),
                failure(VITALS_1M, None),
            ],
        };
        record(&report, &metrics);
        record(&RetentionReport::default(), &metrics);
        let count = |table| metrics.retention_failures.with_label_values(&[table]).get();
        assert_eq!((count(VITALS_RAW), count(VITALS_1M)), (2, 1));
    }

    #[test]
    fn both_tables_are_exposed_at_zero_before_any_failure() {
        let metrics = ConsumerMetrics::new(10, Duration::from_secs(3_600)).unwrap();
        let text = rum_telemetry::encode(&metrics.registry);
        for table in [VITALS_RAW, VITALS_1M] {
            let line = format!("rum_consumer_retention_failures_total{{table=\"{table}\"}} 0\n");
            assert!(text.contains(&line), "{text}");
        }
    }
}
