//! Kafka topics and the connection settings shared by the producer (ingest) and the consumers.

use serde::Deserialize;

use crate::config::{require_non_empty, ConfigError};

/// The topic of normalized beacons, one message per page load.
pub const BEACONS_TOPIC: &str = "rum.beacons.v1";
/// The topic of messages the consumers could not decode; the reason is in [`DLQ_REASON_HEADER`].
pub const DLQ_TOPIC: &str = "rum.beacons.dlq.v1";
/// The header of a dead letter that says why it was dead-lettered.
pub const DLQ_REASON_HEADER: &str = "rum-dlq-reason";

/// How to reach Kafka. Section `[kafka]` of the config, env `RUM_KAFKA_*`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap servers, comma-separated `host:port`.
    pub brokers: String,
    /// The topic beacons are published to and consumed from.
    pub topic: String,
    /// The dead-letter topic.
    pub dlq_topic: String,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:9092".into(),
            topic: BEACONS_TOPIC.into(),
            dlq_topic: DLQ_TOPIC.into(),
        }
    }
}

impl KafkaConfig {
    /// Checks every value; the error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        require_non_empty("kafka.brokers", &self.brokers)?;
        for broker in self.brokers.split(',') {
            let broker = broker.trim();
            let port_ok = broker.rsplit_once(':').is_some_and(|(host, port)| {
                !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
            });
            if !port_ok {
                return Err(ConfigError::new(
                    "kafka.brokers",
                    format!("`{broker}` is not host:port"),
                ));
            }
        }
        require_non_empty("kafka.topic", &self.topic)?;
        require_non_empty("kafka.dlq_topic", &self.dlq_topic)?;
        if self.topic == self.dlq_topic {
            return Err(ConfigError::new(
                "kafka.dlq_topic",
                "must differ from kafka.topic",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_brokers(brokers: &str) -> KafkaConfig {
        KafkaConfig {
            brokers: brokers.into(),
            ..KafkaConfig::default()
        }
    }

    #[test]
    fn accepts_a_list_of_brokers() {
        assert!(with_brokers("127.0.0.1:9092, kafka-2:9093")
            .validate()
            .is_ok());
    }

    #[test]
    fn rejects_empty_brokers_naming_the_key() {
        let err = with_brokers(" ").validate().unwrap_err();
        assert_eq!(err.to_string(), "kafka.brokers: must not be empty");
    }

    #[test]
    fn rejects_a_broker_without_a_port() {
        let err = with_brokers("localhost").validate().unwrap_err();
        assert_eq!(err.key, "kafka.brokers");
        let err = with_brokers("localhost:99999").validate().unwrap_err();
        assert_eq!(err.key, "kafka.brokers");
    }
}
