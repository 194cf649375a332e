//! Section `[ingest]` of the config, env `RUM_INGEST_*`.

use rum_schemas::config::{require_non_empty, require_positive, ConfigError};
use serde::Deserialize;

/// The ingest's settings, with production defaults.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngestConfig {
    /// The address to listen on.
    pub host: String,
    /// The port to listen on.
    pub port: u16,
    /// Bodies larger than this get 413. The contract says 16 KiB.
    pub max_body_bytes: usize,
    /// How long a request waits for Kafka's acknowledgement before it gets 503.
    pub delivery_timeout_ms: u64,
    /// The producer's batching delay (`linger.ms`).
    pub linger_ms: u64,
    /// The most messages the producer queues in memory; beyond it requests get 503.
    pub queue_max_messages: u32,
    /// How long shutdown waits for the producer to deliver what it holds.
    pub shutdown_flush_ms: u64,
    /// The `Retry-After` seconds sent with 503.
    pub retry_after_secs: u32,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 8080,
            max_body_bytes: 16 * 1024,
            delivery_timeout_ms: 5_000,
            linger_ms: 5,
            queue_max_messages: 100_000,
            shutdown_flush_ms: 10_000,
            retry_after_secs: 5,
        }
    }
}

impl IngestConfig {
    /// Checks every value; the error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        require_non_empty("ingest.host", &self.host)?;
        if self.host.parse::<std::net::IpAddr>().is_err() {
            return Err(ConfigError::new(
                "ingest.host",
                "must be an IP address, e.g. 127.0.0.1",
            ));
        }
        require_positive("ingest.max_body_bytes", self.max_body_bytes as u64)?;
        require_positive("ingest.delivery_timeout_ms", self.delivery_timeout_ms)?;
        require_positive(
            "ingest.queue_max_messages",
            u64::from(self.queue_max_messages),
        )?;
        require_positive("ingest.shutdown_flush_ms", self.shutdown_flush_ms)?;
        if self.linger_ms > 1_000 {
            return Err(ConfigError::new("ingest.linger_ms", "must be at most 1000"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        IngestConfig::default().validate().unwrap();
    }

    #[test]
    fn rejects_a_host_name_and_zero_sizes() {
        let c = IngestConfig {
            host: "localhost".into(),
            ..Default::default()
        };
        assert_eq!(c.validate().unwrap_err().key, "ingest.host");
        let c = IngestConfig {
            max_body_bytes: 0,
            ..Default::default()
        };
        assert_eq!(c.validate().unwrap_err().key, "ingest.max_body_bytes");
    }
}
