//! Publishing to Kafka: mechanism only. The key and value are decided upstream.

use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rum_schemas::kafka::KafkaConfig;

use crate::IngestConfig;

/// Why a message was not acknowledged.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PublishError {
    /// The producer's in-memory queue is full: Kafka is slow or down.
    #[error("producer queue full")]
    QueueFull,
    /// Kafka did not acknowledge in time, or refused.
    #[error("kafka unavailable: {0}")]
    Unavailable(String),
}

/// An idempotent, acks=all producer to the beacons topic.
pub struct KafkaPublisher {
    producer: FutureProducer,
    topic: String,
    delivery_timeout: Duration,
}

impl KafkaPublisher {
    /// Creates the producer; it connects lazily.
    pub fn new(kafka: &KafkaConfig, ingest: &IngestConfig) -> Result<Self, KafkaError> {
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", &kafka.brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("compression.type", "lz4")
            .set("linger.ms", ingest.linger_ms.to_string())
            .set("message.timeout.ms", ingest.delivery_timeout_ms.to_string())
            .set(
                "queue.buffering.max.messages",
                ingest.queue_max_messages.to_string(),
            )
            .create()?;
        Ok(Self {
            producer,
            topic: kafka.topic.clone(),
            delivery_timeout: Duration::from_millis(ingest.delivery_timeout_ms),
        })
    }

    /// Enqueues without blocking and waits for Kafka's acknowledgement.
    pub async fn publish(&self, key: &str, payload: &[u8]) -> Result<(), PublishError> {
        let record = FutureRecord::to(&self.topic).key(key).payload(payload);
        let delivery = match self.producer.send_result(record) {
            Ok(delivery) => delivery,
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                return Err(PublishError::QueueFull)
            }
            Err((e, _)) => return Err(PublishError::Unavailable(e.to_string())),
        };
        // librdkafka times the message out itself (message.timeout.ms); this bound is a backstop.
        match tokio::time::timeout(self.delivery_timeout + Duration::from_secs(1), delivery).await {
            Ok(Ok(Ok(_))) => Ok(()),
            Ok(Ok(Err((e, _)))) => Err(PublishError::Unavailable(e.to_string())),
            Ok(Err(_canceled)) => Err(PublishError::Unavailable(
                "producer dropped the message".into(),
            )),
            Err(_elapsed) => Err(PublishError::Unavailable("delivery timed out".into())),
        }
    }

    /// Messages enqueued and not yet acknowledged.
    pub fn queue_depth(&self) -> i32 {
        self.producer.in_flight_count()
    }

    /// True when the broker answers a metadata request for the topic within `timeout`. Blocking.
    pub fn is_ready(&self, timeout: Duration) -> bool {
        self.producer
            .client()
            .fetch_metadata(Some(&self.topic), timeout)
            .is_ok_and(|md| {
                md.topics()
                    .iter()
                    .any(|t| t.error().is_none() && !t.partitions().is_empty())
            })
    }

    /// Waits up to `timeout` for every queued message to be acknowledged. Blocking.
    pub fn flush(&self, timeout: Duration) -> Result<(), PublishError> {
        self.producer
            .flush(timeout)
            .map_err(|e| PublishError::Unavailable(e.to_string()))
    }
}
