//! Every metric the consumer exports, registered in one place, and its small HTTP surface.

use std::time::Duration;

use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

use rum_clickhouse::{VITALS_1M, VITALS_RAW};

use crate::histograms::{worst_case_bytes_per_label_set, VitalsHistograms};

/// The most bytes of `/metrics` besides the vitals' label sets and the lag gauges: every family's
/// `# HELP` and `# TYPE` lines and the consumer's own counters and histogram (reasons are bounded).
pub const FIXED_EXPOSITION_BYTES: usize = 8 * 1024;
/// The most bytes the lag gauge adds for one Kafka partition of the topic (every member exports
/// every partition's lag).
pub const BYTES_PER_PARTITION: usize = 72;

/// The most bytes `/metrics` of a consumer can hold: its label-set budget at the worst case each,
/// its partitions' lag, and the fixed part.
pub fn max_exposition_bytes(max_series: usize, partitions: usize) -> usize {
    max_series * worst_case_bytes_per_label_set()
        + partitions * BYTES_PER_PARTITION
        + FIXED_EXPOSITION_BYTES
}

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
    /// Failed ClickHouse steps of the write path: reads of the ledgers and of vitals_raw, and inserts
    /// (each is retried).
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
    /// Messages behind the end of each partition of the topic, owned or not (see `lag`).
    pub lag: IntGaugeVec,
    /// Partitions of the topic this member owns (set by the consume loop).
    pub partitions_owned: IntGauge,
    /// Partitions the topic has (from Kafka's metadata, see `lag`).
    pub topic_partitions: IntGauge,
    /// Refreshes of the lag gauges that failed in part or whole (their gauges keep the last value).
    pub lag_refresh_errors: IntCounter,
    /// Dead-letter sends that failed, by reason (see `dead_letter`); the batch is retried.
    pub dead_letter_errors: IntCounterVec,
    /// Retention steps that failed (a partition not dropped, a table not read), by table.
    pub retention_failures: IntCounterVec,
    /// The vitals themselves, per site, route and device.
    pub vitals: VitalsHistograms,
}

impl ConsumerMetrics {
    /// Builds and registers every metric, with at most `max_series` label sets in the vitals
    /// histograms, each removed after `series_idle` without a beacon; a duplicate name is an
    /// error, not a panic.
    pub fn new(max_series: usize, series_idle: Duration) -> Result<Self, prometheus::Error> {
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
            "Failed ClickHouse steps of the write path (ledger and vitals_raw reads, inserts); each is retried with backoff.",
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
                "Messages behind the end of each partition of the topic, owned by this member or not: the high watermark minus the group's committed offset (the low watermark where the group committed none).",
            ),
            &["partition"],
        )?;
        let partitions_owned = IntGauge::new(
            "rum_consumer_partitions_owned",
            "Partitions of the topic this member owns; summed over the members it is the topic's partitions when none is unowned.",
        )?;
        let topic_partitions = IntGauge::new(
            "rum_consumer_topic_partitions",
            "Partitions the topic has, from Kafka's metadata (0 until first read).",
        )?;
        let lag_refresh_errors = IntCounter::new(
            "rum_consumer_lag_refresh_errors_total",
            "Refreshes of the lag gauges that failed in part or whole (Kafka did not answer in time); the gauges not refreshed keep their last value.",
        )?;
        let dead_letter_errors = IntCounterVec::new(
            Opts::new(
                "rum_consumer_dead_letter_errors_total",
                "Dead-letter sends that failed, by reason (topic_missing, timeout, broker, producer); the batch holding the message is retried.",
            ),
            &["reason"],
        )?;
        // Every reason exists from the start, so that increase() sees the first failure.
        for reason in crate::dead_letter::DeadLetterError::REASONS {
            dead_letter_errors.with_label_values(&[reason]);
        }
        let retention_failures = IntCounterVec::new(
            Opts::new(
                "rum_consumer_retention_failures_total",
                "Retention steps that failed, by table: an expired partition not dropped (e.g. larger than ClickHouse's max_partition_size_to_drop) or a table whose partitions could not be read.",
            ),
            &["table"],
        )?;
        // Both series exist from the start, so that increase() sees the first failure.
        for table in [VITALS_RAW, VITALS_1M] {
            retention_failures.with_label_values(&[table]);
        }
        registry.register(Box::new(messages_consumed.clone()))?;
        let metrics_deduplicated = IntCounter::new(
            "rum_consumer_metrics_deduplicated_total",
            "Metrics dropped because the same site, metric id and value was stored already (a re-send that changed nothing; a changed value replaces the stored one).",
        )?;
        registry.register(Box::new(messages_skipped.clone()))?;
        registry.register(Box::new(metrics_deduplicated.clone()))?;
        registry.register(Box::new(lag.clone()))?;
        registry.register(Box::new(partitions_owned.clone()))?;
        registry.register(Box::new(topic_partitions.clone()))?;
        registry.register(Box::new(lag_refresh_errors.clone()))?;
        registry.register(Box::new(dead_letter_errors.clone()))?;
        let vitals = VitalsHistograms::register(&registry, max_series, series_idle)?;
        registry.register(Box::new(rows_inserted.clone()))?;
        registry.register(Box::new(dead_lettered.clone()))?;
        registry.register(Box::new(insert_errors.clone()))?;
        registry.register(Box::new(commit_errors.clone()))?;
        registry.register(Box::new(batch_duration.clone()))?;
        registry.register(Box::new(retention_failures.clone()))?;
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
            partitions_owned,
            topic_partitions,
            lag_refresh_errors,
            dead_letter_errors,
            retention_failures,
            vitals,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_the_full_registry_with_rum_names() {
        let m = ConsumerMetrics::new(10, Duration::from_secs(3_600))
            .expect("no duplicate metric names");
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
        assert_eq!(families.len(), 22);
        assert!(families.iter().all(|f| f.name().starts_with("rum_")));
    }

    /// A small deterministic generator (xorshift): the same sites on every run.
    struct Xorshift(u64);

    impl Xorshift {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % n as u64) as usize
        }

        fn text(&mut self, alphabet: &[u8], max_len: usize) -> String {
            let len = 1 + self.below(max_len);
            (0..len)
                .map(|_| alphabet[self.below(alphabet.len())] as char)
                .collect()
        }
    }

    #[test]
    fn metrics_stay_under_the_stated_size_when_random_sites_flood_the_budget() {
        use rum_schemas::limits::MAX_SITE_LEN;
        use rum_schemas::route::MAX_ROUTE_LEN;
        use rum_schemas::{BeaconMessage, Device, MetricName, MetricSample, Rating};

        const SITE_CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789._-";
        let config = crate::ConsumerConfig::default();
        let budget = config.max_series;
        let m = ConsumerMetrics::new(budget, config.series_idle()).unwrap();
        let mut rng = Xorshift(0x2545_f491_4f6c_dd1d);
        let partitions = 64;
        for p in 0..partitions {
            m.lag.with_label_values(&[&p.to_string()]).set(i64::MAX);
        }
        for reason in [
            "undecodable",
            "invalid_site",
            "invalid_route",
            "invalid_sample_rate",
        ] {
            m.dead_lettered
                .with_label_values(&[reason])
                .inc_by(u64::MAX / 2);
        }
        let metrics: Vec<MetricSample> = MetricName::ALL
            .iter()
            .map(|&name| MetricSample {
                name,
                value: 1_234.567_890_123_4,
                id: String::new(),
                rating: Rating::Good,
                resend: false,
                attribution: Default::default(),
            })
            .collect();
        let mut batch = Vec::with_capacity(10_000);
        let mut first_sites = Vec::new();
        for i in 0..budget + 100_000 {
            // Distinct sites: the index, then random characters, at most the longest site.
            let mut site = format!("{i}.{}", rng.text(SITE_CHARS, MAX_SITE_LEN));
            site.truncate(MAX_SITE_LEN);
            if first_sites.len() < 300 {
                first_sites.push(site.clone());
            }
            batch.push(BeaconMessage {
                site,
                route: rng.text(b"abcdefghijklmnopqrstuvwxyz0123456789", MAX_ROUTE_LEN),
                device: Device::ALL[rng.below(Device::ALL.len())],
                nav_type: "navigate".into(),
                sample_rate: 1.0,
                received_at: i as u64,
                page_id: String::new(),
                release: String::new(),
                rtt: "unknown".into(),
                browser: "unknown".into(),
                browser_major: 0,
                metrics: metrics.clone(),
            });
            if batch.len() == 10_000 {
                m.vitals.observe_all(&batch);
                batch.clear();
            }
        }
        m.vitals.observe_all(&batch);
        // The first 1,799 sites have their own places, the rest are in site="other". A new label set
        // of 300 sites with places: 200 take the reserve as their sites' fold sets, 100 go to "other".
        let second: Vec<BeaconMessage> = first_sites
            .into_iter()
            .map(|site| BeaconMessage {
                site,
                route: "second".into(),
                device: Device::Desktop,
                nav_type: "navigate".into(),
                sample_rate: 1.0,
                received_at: 1,
                page_id: String::new(),
                release: String::new(),
                rtt: "unknown".into(),
                browser: "unknown".into(),
                browser_major: 0,
                metrics: metrics.clone(),
            })
            .collect();
        m.vitals.observe_all(&second);

        let text = rum_telemetry::encode(&m.registry);
        let folded = "device=\"other\",route=\"other\",site=\"other\"";
        assert!(text.contains(&format!(
            "rum_web_vitals_lcp_seconds_count{{{folded}}} 100301\n"
        )));
        let site_folds = text
            .lines()
            .filter(|l| {
                l.starts_with("rum_web_vitals_lcp_seconds_count{device=\"other\",route=\"other\",")
                    && !l.contains("site=\"other\"")
            })
            .count();
        assert_eq!(site_folds, crate::series_budget::fold_reserve(budget));
        assert!(text.contains(&format!("rum_consumer_series_label_sets {budget}\n")));
        assert!(text.contains("rum_consumer_series_folded_total 100501\n"));
        let label_sets = text
            .lines()
            .filter(|l| l.starts_with("rum_web_vitals_ttfb_seconds_count{"))
            .count();
        assert_eq!(label_sets, budget);
        let bound = max_exposition_bytes(budget, partitions);
        assert!(
            text.len() < bound,
            "{} bytes of /metrics, stated bound {bound}",
            text.len()
        );
        assert_eq!(
            max_exposition_bytes(budget, 0),
            27_662_192,
            "the README states this size"
        );
    }
}
