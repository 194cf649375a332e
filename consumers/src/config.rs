//! Section `[consumer]` of the config, env `RUM_CONSUMER_*`.

use std::time::Duration;

use rum_clickhouse::DEFAULT_RETENTION_STATEMENT_TIMEOUT;
use rum_schemas::config::{require_non_empty, require_positive, ConfigError};
use serde::Deserialize;

/// The largest `consumer.max_series`: at most ~15 GB of `/metrics`, already far beyond a scrape.
const MAX_SERIES_LIMIT: usize = 1_000_000;

/// The shortest `consumer.series_idle_secs`: idle label sets are looked for once a minute.
const SERIES_IDLE_MIN_SECS: u64 = 60;
/// The longest `consumer.series_idle_secs`: a week.
const SERIES_IDLE_MAX_SECS: u64 = 7 * 86_400;

/// The bounds of `consumer.dlq_timeout_ms`: librdkafka needs a message timeout above its linger
/// (5 ms), and 0 would mean never; five minutes is librdkafka's own default.
const DLQ_TIMEOUT_MIN_MS: u64 = 1_000;
const DLQ_TIMEOUT_MAX_MS: u64 = 300_000;

/// The consumer's settings, with production defaults.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsumerConfig {
    /// The address of `/metrics` and `/healthz`.
    pub host: String,
    /// The port of `/metrics` and `/healthz`.
    pub port: u16,
    /// The Kafka consumer group.
    pub group_id: String,
    /// A batch is written when it holds this many messages...
    pub batch_max_messages: usize,
    /// ...or when its first message waited this long.
    pub batch_max_wait_ms: u64,
    /// How long a broker may hold a fetch while no data is there (`fetch.wait.max.ms`). Kafka
    /// answers as soon as data arrives, so this does not delay messages: it only sets how often an
    /// idle consumer asks again.
    pub fetch_wait_max_ms: u64,
    /// The longest pause between ClickHouse retries.
    pub retry_max_backoff_ms: u64,
    /// How long the group waits for a silent member before giving its partitions to others.
    pub session_timeout_ms: u64,
    /// Metric ids whose stored value is remembered, so that a re-send replaces it without a read of
    /// `vitals_raw` (about 100 bytes each with the hash table's slack; see `crate::final_values`).
    pub dedup_capacity: usize,
    /// Which life of the topic this is. Set a new value after the topic was deleted and created
    /// again (its offsets start again at 0), and `rum standalone` sets one for its embedded broker:
    /// stored offsets are kept per `topic@incarnation`, so the new topic's offsets are not mistaken
    /// for ones already stored. `[a-z0-9._-]`, at most 64 characters.
    pub topic_incarnation: Option<String>,
    /// At most this many label sets (site, route, device) in the vitals histograms of `/metrics`,
    /// across the five families; later new ones are observed under `other` (see `histograms`).
    pub max_series: usize,
    /// A label set of the vitals histograms not observed for this long is removed and its place
    /// in `max_series` freed (see `histograms`).
    pub series_idle_secs: u64,
    /// Each retention statement (a read of the expired partitions, a `DROP PARTITION`) taking
    /// longer counts as a failed step, so that a server that never answers cannot hang retention.
    pub retention_statement_timeout_secs: u64,
    /// How long one dead-letter send may take (librdkafka's `message.timeout.ms` of the dead-letter
    /// producer is this too, so librdkafka gives up with it), and the start's check of the
    /// dead-letter topic. A send that fails is an error of its batch, which is retried.
    pub dlq_timeout_ms: u64,
    /// Whether `rum consume` creates `kafka.dlq_topic` at start when it does not exist (with the
    /// brokers' default partitions and replication). Off: a missing dead-letter topic stops the
    /// start (exit 2) naming `kafka.dlq_topic`, so that a typo cannot stall every partition behind
    /// the first poison message.
    pub dlq_create_topic: bool,
    /// The fence of the write path (see `ownership`): an INSERT is sent only within this long after
    /// the member last proved it owns its partitions, and a partition's new owner waits this long
    /// after its assignment before reading the partition's floor. Every member of a group must use
    /// the same value.
    pub fence_lease_ms: u64,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 8081,
            group_id: "rum-consumers".into(),
            batch_max_messages: 5_000,
            batch_max_wait_ms: 1_000,
            // librdkafka's and the Java client's default: an idle consumer fetches twice a second
            // per broker instead of 20 times (50 ms, needed by a broker that held every fetch).
            fetch_wait_max_ms: 500,
            retry_max_backoff_ms: 10_000,
            session_timeout_ms: 10_000,
            dedup_capacity: 250_000,
            topic_incarnation: None,
            max_series: 2_000,
            // An hour: a route with a few beacons an hour keeps its series (and no alert window,
            // 30 min, loses one), a one-off flood frees its places within the hour.
            series_idle_secs: 3_600,
            retention_statement_timeout_secs: DEFAULT_RETENTION_STATEMENT_TIMEOUT.as_secs(),
            dlq_timeout_ms: 10_000,
            dlq_create_topic: false,
            fence_lease_ms: 5_000,
        }
    }
}

impl ConsumerConfig {
    /// How long a label set of the vitals histograms keeps its series without a beacon.
    pub fn series_idle(&self) -> Duration {
        Duration::from_secs(self.series_idle_secs)
    }

    /// The timeout of each retention statement.
    pub fn retention_statement_timeout(&self) -> Duration {
        Duration::from_secs(self.retention_statement_timeout_secs)
    }

    /// The bound of one dead-letter send and of the start's check of the dead-letter topic.
    pub fn dlq_timeout(&self) -> Duration {
        Duration::from_millis(self.dlq_timeout_ms)
    }

    /// Checks every value; the error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.host.parse::<std::net::IpAddr>().is_err() {
            return Err(ConfigError::new(
                "consumer.host",
                "must be an IP address, e.g. 127.0.0.1",
            ));
        }
        require_non_empty("consumer.group_id", &self.group_id)?;
        require_positive(
            "consumer.batch_max_messages",
            self.batch_max_messages as u64,
        )?;
        require_positive("consumer.batch_max_wait_ms", self.batch_max_wait_ms)?;
        require_positive("consumer.fetch_wait_max_ms", self.fetch_wait_max_ms)?;
        require_positive("consumer.retry_max_backoff_ms", self.retry_max_backoff_ms)?;
        require_positive("consumer.dedup_capacity", self.dedup_capacity as u64)?;
        if !(1..=MAX_SERIES_LIMIT).contains(&self.max_series) {
            return Err(ConfigError::new(
                "consumer.max_series",
                "must be between 1 and 1000000",
            ));
        }
        if !(SERIES_IDLE_MIN_SECS..=SERIES_IDLE_MAX_SECS).contains(&self.series_idle_secs) {
            return Err(ConfigError::new(
                "consumer.series_idle_secs",
                "must be between 60 and 604800 (a week)",
            ));
        }
        if !(1..=3_600).contains(&self.retention_statement_timeout_secs) {
            return Err(ConfigError::new(
                "consumer.retention_statement_timeout_secs",
                "must be between 1 and 3600",
            ));
        }
        if let Some(incarnation) = &self.topic_incarnation {
            let valid = (1..=64).contains(&incarnation.len())
                && incarnation.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
                });
            if !valid {
                return Err(ConfigError::new(
                    "consumer.topic_incarnation",
                    "must be [a-z0-9._-], 1 to 64 characters",
                ));
            }
        }
        if !(DLQ_TIMEOUT_MIN_MS..=DLQ_TIMEOUT_MAX_MS).contains(&self.dlq_timeout_ms) {
            return Err(ConfigError::new(
                "consumer.dlq_timeout_ms",
                "must be between 1000 and 300000",
            ));
        }
        if !(1_000..=60_000).contains(&self.fence_lease_ms) {
            return Err(ConfigError::new(
                "consumer.fence_lease_ms",
                "must be between 1000 and 60000",
            ));
        }
        if !(1_000..=300_000).contains(&self.session_timeout_ms) {
            return Err(ConfigError::new(
                "consumer.session_timeout_ms",
                "must be between 1000 and 300000",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_zero_batches_are_not() {
        ConsumerConfig::default().validate().unwrap();
        let c = ConsumerConfig {
            batch_max_messages: 0,
            ..Default::default()
        };
        assert_eq!(c.validate().unwrap_err().key, "consumer.batch_max_messages");
        for bad in ["", "Two Words", &"x".repeat(65)] {
            let c = ConsumerConfig {
                topic_incarnation: Some(bad.to_string()),
                ..Default::default()
            };
            assert_eq!(c.validate().unwrap_err().key, "consumer.topic_incarnation");
        }
        let c = ConsumerConfig {
            topic_incarnation: Some("2026-11-28.b".into()),
            ..Default::default()
        };
        c.validate().unwrap();
        for bad in [0, 1_000_001] {
            let c = ConsumerConfig {
                max_series: bad,
                ..Default::default()
            };
            let err = c.validate().unwrap_err();
            assert_eq!(err.key, "consumer.max_series");
        }
        for bad in [0, 59, 604_801] {
            let c = ConsumerConfig {
                series_idle_secs: bad,
                ..Default::default()
            };
            let err = c.validate().unwrap_err();
            assert_eq!(err.key, "consumer.series_idle_secs");
        }
        for bad in [0, 3_601] {
            let c = ConsumerConfig {
                retention_statement_timeout_secs: bad,
                ..Default::default()
            };
            let err = c.validate().unwrap_err();
            assert_eq!(err.key, "consumer.retention_statement_timeout_secs");
        }
        for bad in [0, 999, 300_001] {
            let c = ConsumerConfig {
                dlq_timeout_ms: bad,
                ..Default::default()
            };
            let err = c.validate().unwrap_err();
            assert_eq!(err.key, "consumer.dlq_timeout_ms");
        }
    }
}
