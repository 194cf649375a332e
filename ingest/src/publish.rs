//! Publishing to Kafka: mechanism only. The key and value are decided upstream.

use std::sync::{Arc, RwLock};
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
///
/// An idempotent producer whose in-flight message timed out bumps its epoch, and brokers without
/// that support (tansu, older Kafka) answer `ProducerFenced`: a fatal error that would leave the
/// producer useless forever. The publisher then replaces it with a new one (a new producer id).
/// Messages of the old producer fail, their requests were answered 503, so nothing accepted is lost.
pub struct KafkaPublisher {
    producer: RwLock<Arc<FutureProducer>>,
    client_config: ClientConfig,
    topic: String,
    delivery_timeout: Duration,
}

impl KafkaPublisher {
    /// Creates the producer; it connects lazily.
    pub fn new(kafka: &KafkaConfig, ingest: &IngestConfig) -> Result<Self, KafkaError> {
        let client_config = ClientConfig::new()
            .set("bootstrap.servers", &kafka.brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("compression.type", "lz4")
            .set("linger.ms", ingest.linger_ms.to_string())
            .set("message.timeout.ms", ingest.delivery_timeout_ms.to_string())
            .set("batch.num.messages", ingest.batch_max_messages.to_string())
            .set(
                "queue.buffering.max.messages",
                ingest.queue_max_messages.to_string(),
            )
            .clone();
        let producer: FutureProducer = client_config.create()?;
        Ok(Self {
            producer: RwLock::new(Arc::new(producer)),
            client_config,
            topic: kafka.topic.clone(),
            delivery_timeout: Duration::from_millis(ingest.delivery_timeout_ms),
        })
    }

    /// Enqueues without blocking and waits for Kafka's acknowledgement.
    pub async fn publish(&self, key: &str, payload: &[u8]) -> Result<(), PublishError> {
        let producer = self.current();
        self.send(&producer, key, payload).await.map_err(|e| {
            let fenced = matches!(
                e,
                KafkaError::MessageProduction(
                    RDKafkaErrorCode::ProducerFenced
                        | RDKafkaErrorCode::InvalidProducerEpoch
                        | RDKafkaErrorCode::UnknownProducerId
                        | RDKafkaErrorCode::OutOfOrderSequenceNumber
                )
            );
            if fenced || producer.client().fatal_error().is_some() {
                self.replace(&producer, &e);
            }
            match e {
                KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull) => {
                    PublishError::QueueFull
                }
                e => PublishError::Unavailable(e.to_string()),
            }
        })
    }

    fn current(&self) -> Arc<FutureProducer> {
        self.producer
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    async fn send(
        &self,
        producer: &FutureProducer,
        key: &str,
        payload: &[u8],
    ) -> Result<(), KafkaError> {
        let record = FutureRecord::to(&self.topic).key(key).payload(payload);
        let delivery = producer.send_result(record).map_err(|(e, _)| e)?;
        // librdkafka times the message out itself (message.timeout.ms); this bound is a backstop.
        match tokio::time::timeout(self.delivery_timeout + Duration::from_secs(1), delivery).await {
            Ok(Ok(Ok(_))) => Ok(()),
            Ok(Ok(Err((e, _)))) => Err(e),
            Ok(Err(_canceled)) => Err(KafkaError::Canceled),
            Err(_elapsed) => Err(KafkaError::MessageProduction(
                RDKafkaErrorCode::MessageTimedOut,
            )),
        }
    }

    /// Replaces `failed` with a new producer (unless another request already did).
    fn replace(&self, failed: &Arc<FutureProducer>, error: &KafkaError) {
        let mut current = self.producer.write().unwrap_or_else(|e| e.into_inner());
        if !Arc::ptr_eq(&current, failed) {
            return;
        }
        match self.client_config.create::<FutureProducer>() {
            Ok(fresh) => {
                *current = Arc::new(fresh);
                tracing::error!(%error, "kafka producer fenced or failed fatally: replaced it with a new one");
            }
            Err(e) => {
                tracing::error!(error = %e, "kafka producer hit a fatal error and a new one cannot be created")
            }
        }
    }

    /// Messages enqueued and not yet acknowledged.
    pub fn queue_depth(&self) -> i32 {
        self.current().in_flight_count()
    }

    /// True when the broker answers a metadata request for the topic within `timeout`. Blocking.
    pub fn is_ready(&self, timeout: Duration) -> bool {
        self.current()
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
        self.current()
            .flush(timeout)
            .map_err(|e| PublishError::Unavailable(e.to_string()))
    }
}
