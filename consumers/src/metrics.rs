//! Every metric the consumer exports, registered in one place, and its small HTTP surface.

use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry,
};

use crate::histograms::VitalsHistograms;

/// The consumer's Prometheus metrics, in their own registry.
pub struct ConsumerMetrics {
    /// The registry `/metrics` encodes.
    pub registry: Registry,
    /// Kafka messages read.
    pub messages_consumed: IntCounter,
    /// Rows written to ClickHouse, by table.
    pub rows_inserted: IntCounterVec,
    /// Messages sent to the dead-letter topic, by reason.
    pub dead_lettered: IntCounterVec,
    /// Failed ClickHouse inserts (each is retried).
    pub insert_errors: IntCounter,
    /// Failed offset commits.
    pub commit_errors: IntCounter,
    /// Time from a batch's first message to its commit.
    pub batch_duration: Histogram,
    /// Messages not written because ClickHouse already holds them (replays after a crash), or
    /// because their partition was revoked before they were written.
    pub messages_skipped: IntCounterVec,
    /// Metrics dropped because their id was stored before (client re-sends).
    pub metrics_deduplicated: IntCounter,
    /// Messages behind the end of each owned partition.
    pub lag: IntGaugeVec,
    /// The vitals themselves, per site, route and device.
    pub vitals: VitalsHistograms,
}

impl ConsumerMetrics {
    /// Builds and registers every metric; a duplicate name is an error, not a panic.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let messages_consumed = IntCounter::new(
            "rum_consumer_messages_consumed_total",
            "Kafka messages read.",
        )?;
        let rows_inserted = IntCounterVec::new(
            Opts::new(
                "rum_consumer_rows_inserted_total",
                "Rows written to ClickHouse, by table.",
            ),
            &["table"],
        )?;
        let dead_lettered = IntCounterVec::new(
            Opts::new(
                "rum_consumer_dead_lettered_total",
                "Messages sent to the dead-letter topic, by reason.",
            ),
            &["reason"],
        )?;
        let insert_errors = IntCounter::new(
            "rum_consumer_insert_errors_total",
            "Failed ClickHouse inserts; each is retried with backoff.",
        )?;
        let commit_errors = IntCounter::new(
            "rum_consumer_commit_errors_total",
            "Failed Kafka offset commits.",
        )?;
        let batch_duration = Histogram::with_opts(
            HistogramOpts::new(
                "rum_consumer_batch_duration_seconds",
                "Time from a batch's first message to its offset commit.",
            )
            .buckets(vec![
                0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
            ]),
        )?;
        let messages_skipped = IntCounterVec::new(
            Opts::new(
                "rum_consumer_messages_skipped_total",
                "Messages not written: already stored (replay) or partition revoked, by reason.",
            ),
            &["reason"],
        )?;
        let lag = IntGaugeVec::new(
            Opts::new(
                "rum_consumer_lag_messages",
                "Messages behind the end of each owned partition.",
            ),
            &["partition"],
        )?;
        registry.register(Box::new(messages_consumed.clone()))?;
        let metrics_deduplicated = IntCounter::new(
            "rum_consumer_metrics_deduplicated_total",
            "Metrics dropped because a value with the same site and metric id was stored first.",
        )?;
        registry.register(Box::new(messages_skipped.clone()))?;
        registry.register(Box::new(metrics_deduplicated.clone()))?;
        registry.register(Box::new(lag.clone()))?;
        let vitals = VitalsHistograms::register(&registry)?;
        registry.register(Box::new(rows_inserted.clone()))?;
        registry.register(Box::new(dead_lettered.clone()))?;
        registry.register(Box::new(insert_errors.clone()))?;
        registry.register(Box::new(commit_errors.clone()))?;
        registry.register(Box::new(batch_duration.clone()))?;
        Ok(Self {
            registry,
            messages_consumed,
            rows_inserted,
            dead_lettered,
            insert_errors,
            commit_errors,
            batch_duration,
            messages_skipped,
            metrics_deduplicated,
            lag,
            vitals,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_the_full_registry_with_rum_names() {
        let m = ConsumerMetrics::new().expect("no duplicate metric names");
        m.rows_inserted.with_label_values(&["vitals_raw"]).inc();
        m.dead_lettered.with_label_values(&["undecodable"]).inc();
        m.batch_duration.observe(0.1);
        m.messages_skipped
            .with_label_values(&["already_stored"])
            .inc();
        m.lag.with_label_values(&["0"]).set(3);
        let msg: rum_schemas::BeaconMessage = serde_json::from_str(
            r#"{"site":"s","route":"r","device":"mobile","nav_type":"navigate","sample_rate":1,"received_at":1,
                "metrics":[{"name":"LCP","value":2500,"id":"a","rating":"good"},{"name":"INP","value":1,"id":"b","rating":"good"},
                {"name":"CLS","value":0,"id":"c","rating":"good"},{"name":"FCP","value":1,"id":"d","rating":"good"},
                {"name":"TTFB","value":1,"id":"e","rating":"good"}]}"#,
        )
        .unwrap();
        m.vitals.observe_all([&msg]);
        let families = m.registry.gather();
        assert_eq!(families.len(), 14);
        assert!(families.iter().all(|f| f.name().starts_with("rum_")));
    }
}
