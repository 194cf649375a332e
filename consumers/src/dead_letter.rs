//! The dead-letter topic: messages that can never be decoded go there, once, with their reason.
//!
//! A dead-letter send is one step of a batch's write path, so it is bounded in time
//! (`consumer.dlq_timeout_ms`, librdkafka's `message.timeout.ms` set to the same, so librdkafka
//! gives the message up when the send does) and its failure is a typed error, counted in
//! `rum_consumer_dead_letter_errors_total{reason}` and logged on one line naming the topic (at most
//! one line every [`LOG_EVERY`], with the count: a failing send repeats at every retry of its
//! batch). The batch is retried; nothing is skipped.
//!
//! The topic is checked at `rum consume`'s start ([`check_dlq_topic`]): a dead-letter topic that
//! does not exist (a typo) would hold every partition behind its first poison message. The rule,
//! the same everywhere: `rum` never creates topics unless told to. The topics are created by
//! whoever sets Kafka up (`deploy/local`'s scripts, the tests' testkit, `rum standalone` for its
//! embedded broker; the local brokers run with `auto.create.topics.enable=false`), and the
//! dead-letter producer does not ask brokers to auto-create it. `consumer.dlq_create_topic = true`
//! lets `rum consume` create it at start.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use rdkafka::types::RDKafkaRespErr;
use rum_kafka::{ClientKind, ClientProperties, LoggingContext};
use rum_schemas::config::ConfigError;
use rum_schemas::kafka::{KafkaConfig, DLQ_REASON_HEADER};
use rum_schemas::MessageError;
use rum_telemetry::LogThrottle;

use crate::side_client::SideContext;
use crate::{ConsumerConfig, ConsumerMetrics};

/// At most one log line of failed dead-letter sends this often (each failure is counted).
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// The dead-letter producer's name in logs and in the start's check of the librdkafka options.
const CLIENT: &str = "dead-letter producer";

/// Why a dead letter was not stored. Its batch is retried.
#[derive(Debug, thiserror::Error)]
pub enum DeadLetterError {
    /// The brokers do not know the topic (deleted, or a typo that the start's check could not
    /// see because Kafka was unreachable then).
    #[error(
        "dead-letter topic `{topic}` does not exist: create it, or fix kafka.dlq_topic ({code})"
    )]
    TopicMissing {
        /// `kafka.dlq_topic`.
        topic: String,
        /// What the broker or librdkafka answered.
        code: RDKafkaErrorCode,
    },
    /// Not acknowledged within `consumer.dlq_timeout_ms`.
    #[error("dead letter to `{topic}` not acknowledged within {timeout_ms} ms (consumer.dlq_timeout_ms)")]
    Timeout {
        /// `kafka.dlq_topic`.
        topic: String,
        /// `consumer.dlq_timeout_ms`.
        timeout_ms: u64,
    },
    /// The brokers refused it (not authorized, too large, no leader, ...).
    #[error("dead letter to `{topic}` refused: {source}")]
    Broker {
        /// `kafka.dlq_topic`.
        topic: String,
        /// librdkafka's error.
        source: KafkaError,
    },
    /// The producer could not be created (its settings were checked at start: rare).
    #[error("cannot create the dead-letter producer for `{topic}`: {source}")]
    Producer {
        /// `kafka.dlq_topic`.
        topic: String,
        /// librdkafka's error.
        source: KafkaError,
    },
}

impl DeadLetterError {
    /// Every value of [`Self::reason`], the label of `rum_consumer_dead_letter_errors_total`.
    pub const REASONS: [&'static str; 4] = ["topic_missing", "timeout", "broker", "producer"];

    /// The short reason: the metric's label.
    pub fn reason(&self) -> &'static str {
        match self {
            DeadLetterError::TopicMissing { .. } => "topic_missing",
            DeadLetterError::Timeout { .. } => "timeout",
            DeadLetterError::Broker { .. } => "broker",
            DeadLetterError::Producer { .. } => "producer",
        }
    }

    /// The error of a failed delivery.
    fn of_delivery(topic: &str, timeout: Duration, error: KafkaError) -> Self {
        let topic = topic.to_string();
        match error.rdkafka_error_code() {
            Some(
                code @ (RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic),
            ) => DeadLetterError::TopicMissing { topic, code },
            Some(RDKafkaErrorCode::MessageTimedOut) => DeadLetterError::Timeout {
                topic,
                timeout_ms: timeout.as_millis() as u64,
            },
            _ => DeadLetterError::Broker {
                topic,
                source: error,
            },
        }
    }
}

/// The dead-letter producer's own librdkafka properties. Not idempotent: a fenced idempotent
/// producer is dead for good, and a dead letter written twice harms nobody.
pub fn dlq_producer_properties(config: &ConsumerConfig) -> ClientProperties {
    let timeout_ms = config.dlq_timeout_ms;
    ClientProperties {
        client: CLIENT,
        kind: ClientKind::Producer,
        properties: vec![
            ("acks", "all".into()),
            // librdkafka gives a message up when the send does: none waits in its queue after
            // the send's error (and none is sent behind the retry's copy much later).
            ("message.timeout.ms", timeout_ms.to_string()),
            // A topic the brokers do not know fails the send within its timeout as unknown,
            // instead of as a timeout after librdkafka's 30 s wait for a new topic to appear.
            (
                "topic.metadata.propagation.max.ms",
                (timeout_ms / 2).to_string(),
            ),
            // `rum` never creates a topic by producing to it (see the module's doc).
            ("allow.auto.create.topics", "false".into()),
        ],
    }
}

/// The dead-letter topic's producer: created on the first dead letter (an idle producer's poll
/// thread still costs CPU, and most runs never see poison), each send bounded in time, each
/// failure counted and logged.
pub struct DeadLetters {
    /// The producer's settings, checked when this was built.
    config: ClientConfig,
    producer: OnceLock<FutureProducer<LoggingContext>>,
    topic: String,
    timeout: Duration,
    metrics: Arc<ConsumerMetrics>,
    failures: LogThrottle,
}

impl DeadLetters {
    /// Checks the producer's settings (as at `rum`'s start: an error names the key); the producer
    /// itself is created on the first send.
    pub fn new(
        kafka: &KafkaConfig,
        config: &ConsumerConfig,
        metrics: Arc<ConsumerMetrics>,
    ) -> Result<Self, ConfigError> {
        let properties = dlq_producer_properties(config);
        rum_kafka::check(kafka, std::slice::from_ref(&properties))?;
        Ok(Self {
            config: rum_kafka::client_config(kafka, &properties)?,
            producer: OnceLock::new(),
            topic: kafka.dlq_topic.clone(),
            timeout: config.dlq_timeout(),
            metrics,
            failures: LogThrottle::new(LOG_EVERY),
        })
    }

    /// `kafka.dlq_topic`.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Sends one message to the dead-letter topic with `reason` in header `rum-dlq-reason`, and
    /// waits at most `consumer.dlq_timeout_ms` for Kafka's acknowledgement. Counts it in
    /// `rum_consumer_dead_lettered_total{reason}` once stored; a failure is counted in
    /// `rum_consumer_dead_letter_errors_total{reason}` and logged.
    pub async fn send(
        &self,
        key: Option<&[u8]>,
        payload: &[u8],
        reason: &MessageError,
    ) -> Result<(), DeadLetterError> {
        match self.try_send(key, payload, &reason.to_string()).await {
            Ok(()) => {
                self.metrics
                    .dead_lettered
                    .with_label_values(&[reason.reason()])
                    .inc();
                Ok(())
            }
            Err(error) => {
                self.metrics
                    .dead_letter_errors
                    .with_label_values(&[error.reason()])
                    .inc();
                if let Some(failures) = self.failures.admit() {
                    tracing::error!(
                        topic = %self.topic,
                        reason = error.reason(),
                        failures,
                        "dead-letter send failed, its batch is retried: {}",
                        rum_telemetry::error_chain(&error)
                    );
                }
                Err(error)
            }
        }
    }

    async fn try_send(
        &self,
        key: Option<&[u8]>,
        payload: &[u8],
        reason: &str,
    ) -> Result<(), DeadLetterError> {
        let headers = OwnedHeaders::new().insert(Header {
            key: DLQ_REASON_HEADER,
            value: Some(reason.as_bytes()),
        });
        let mut record = FutureRecord::<[u8], [u8]>::to(&self.topic)
            .payload(payload)
            .headers(headers);
        if let Some(key) = key {
            record = record.key(key);
        }
        // The enqueueing (librdkafka's queue full) and the acknowledgement share the bound.
        let sent = tokio::time::timeout(self.timeout, self.producer()?.send(record, self.timeout));
        match sent.await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err((error, _message))) => Err(DeadLetterError::of_delivery(
                &self.topic,
                self.timeout,
                error,
            )),
            Err(_elapsed) => Err(DeadLetterError::Timeout {
                topic: self.topic.clone(),
                timeout_ms: self.timeout.as_millis() as u64,
            }),
        }
    }

    /// The producer, created on first use. Failing to create it fails this send, whose batch is
    /// retried like any other.
    fn producer(&self) -> Result<&FutureProducer<LoggingContext>, DeadLetterError> {
        if let Some(producer) = self.producer.get() {
            return Ok(producer);
        }
        let producer: FutureProducer<LoggingContext> = self
            .config
            .create_with_context(LoggingContext::new(CLIENT))
            .map_err(|source| DeadLetterError::Producer {
                topic: self.topic.clone(),
                source,
            })?;
        Ok(self.producer.get_or_init(|| producer))
    }
}

/// What the start's check found of the dead-letter topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DlqTopic {
    /// The brokers know it.
    Exists,
    /// It did not exist; `consumer.dlq_create_topic` let the check create it.
    Created,
    /// Kafka did not answer within `consumer.dlq_timeout_ms` (down, or not reachable yet): not
    /// checked, logged. `rum consume` starts anyway and waits for Kafka as before; a dead letter
    /// to a missing topic is then an error of its batch (counted, logged), not a stop.
    NotChecked,
}

/// The start's check of `kafka.dlq_topic`: the brokers' metadata must list it. A topic the
/// brokers do not know is an error naming `kafka.dlq_topic` (`rum consume` exits 2), unless
/// `consumer.dlq_create_topic` is on: then it is created here (the brokers' default partitions and
/// replication). A topic the client may not describe is an error too. Kafka unreachable is not: see
/// [`DlqTopic::NotChecked`]. Asks with the dead-letter producer's settings (the ones checked at
/// start, which never ask a broker to auto-create a topic); takes at most about twice
/// `consumer.dlq_timeout_ms` (the metadata, then the creation).
pub async fn check_dlq_topic(
    kafka: &KafkaConfig,
    config: &ConsumerConfig,
) -> Result<DlqTopic, ConfigError> {
    let client_config = rum_kafka::client_config(kafka, &dlq_producer_properties(config))?;
    let topic = kafka.dlq_topic.clone();
    let timeout = config.dlq_timeout();
    // Dropping this future (a SIGTERM during the start) ends the blocking lookup within a step.
    let cancelled = Cancelled::default();
    let lookup = {
        let (client_config, topic) = (client_config.clone(), topic.clone());
        let cancelled = cancelled.0.clone();
        tokio::task::spawn_blocking(move || {
            lookup_topic(&client_config, &topic, timeout, &cancelled)
        })
    };
    let found = match lookup.await {
        Ok(found) => found,
        Err(join) => Lookup::Unreachable(format!("the metadata request did not finish: {join}")),
    };
    match found {
        Lookup::Exists => Ok(DlqTopic::Exists),
        Lookup::Unreachable(why) => {
            tracing::warn!(
                topic = %topic,
                "cannot check kafka.dlq_topic now, Kafka did not answer ({why}); starting anyway: a \
                 dead letter to a missing topic will fail its batch (rum_consumer_dead_letter_errors_total)"
            );
            Ok(DlqTopic::NotChecked)
        }
        Lookup::NotAuthorized => Err(ConfigError::new(
            "kafka.dlq_topic",
            format!(
                "the brokers refuse to describe topic `{topic}` to this user (TOPIC_AUTHORIZATION_FAILED): grant it DESCRIBE and WRITE on the topic"
            ),
        )),
        Lookup::Missing if !config.dlq_create_topic => Err(ConfigError::new(
            "kafka.dlq_topic",
            format!(
                "topic `{topic}` does not exist on the brokers ({}): create it, fix the name, or set consumer.dlq_create_topic = true to let rum consume create it",
                kafka.brokers
            ),
        )),
        Lookup::Missing => {
            create_topic(&client_config, &topic, timeout).await?;
            tracing::info!(topic = %topic, "dead-letter topic created (consumer.dlq_create_topic)");
            Ok(DlqTopic::Created)
        }
    }
}

/// Set when the check's future is dropped.
#[derive(Default)]
struct Cancelled(Arc<AtomicBool>);

impl Drop for Cancelled {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// One metadata request of the lookup: it asks again until its timeout, in steps this long, so
/// that it can stop early.
const LOOKUP_STEP: Duration = Duration::from_millis(250);

/// What the metadata says of the topic.
enum Lookup {
    Exists,
    Missing,
    NotAuthorized,
    Unreachable(String),
}

/// Asks the brokers about `topic` (blocking, at most `timeout`, less when `cancelled`).
fn lookup_topic(
    config: &ClientConfig,
    topic: &str,
    timeout: Duration,
    cancelled: &AtomicBool,
) -> Lookup {
    let context = SideContext::new("dead-letter topic check");
    let last_error = context.last_error();
    let client: FutureProducer<SideContext> = match config.create_with_context(context) {
        Ok(client) => client,
        Err(e) => return Lookup::Unreachable(format!("cannot create the client: {e}")),
    };
    let deadline = Instant::now() + timeout;
    let metadata = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        // The client keeps connecting between the steps: a slow handshake is not started again.
        let step = Instant::now();
        match client
            .client()
            .fetch_metadata(Some(topic), left.min(LOOKUP_STEP))
        {
            Ok(metadata) => break metadata,
            Err(e) if left <= LOOKUP_STEP || cancelled.load(Ordering::Relaxed) => {
                return Lookup::Unreachable(e.to_string());
            }
            // A refused password or certificate: the consumer's own client says so at once.
            Err(_) if last_error.refused() => {
                let why = last_error.get().map(|code| code.to_string());
                return Lookup::Unreachable(format!(
                    "the brokers refused the connection: {}",
                    why.unwrap_or_default()
                ));
            }
            // An answer at once (all brokers down) is not asked again at once.
            Err(_) => std::thread::sleep(LOOKUP_STEP.saturating_sub(step.elapsed())),
        }
    };
    let Some(found) = metadata.topics().iter().find(|t| t.name() == topic) else {
        return Lookup::Missing;
    };
    match found.error() {
        None => Lookup::Exists,
        Some(
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART
            | RDKafkaRespErr::RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC,
        ) => Lookup::Missing,
        Some(RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED) => Lookup::NotAuthorized,
        // Known to the brokers, in a passing state (a leader being elected).
        Some(_) => Lookup::Exists,
    }
}

/// Creates `topic` with the brokers' default partitions and replication; an error names
/// `kafka.dlq_topic`.
async fn create_topic(
    config: &ClientConfig,
    topic: &str,
    timeout: Duration,
) -> Result<(), ConfigError> {
    let failed = |why: String| {
        ConfigError::new(
            "kafka.dlq_topic",
            format!("topic `{topic}` does not exist and could not be created (consumer.dlq_create_topic): {why}"),
        )
    };
    let admin: AdminClient<SideContext> = config
        .create_with_context(SideContext::new("dead-letter topic check"))
        .map_err(|e| failed(e.to_string()))?;
    let new_topic = NewTopic::new(topic, -1, TopicReplication::Fixed(-1));
    let options = AdminOptions::new()
        .operation_timeout(Some(timeout))
        .request_timeout(Some(timeout));
    let created = tokio::time::timeout(timeout, admin.create_topics([&new_topic], &options))
        .await
        .map_err(|_| failed(format!("no answer within {} ms", timeout.as_millis())))?
        .map_err(|e| failed(e.to_string()))?;
    for result in created {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((_, code)) => return Err(failed(code.to_string())),
        }
    }
    // The admin client's drop joins librdkafka's threads: not on the runtime's workers.
    tokio::task::spawn_blocking(move || drop(admin));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivery_errors_are_sorted_by_reason() {
        let topic = "rum.beacons.dlq.v1";
        let timeout = Duration::from_secs(10);
        let of = |code| {
            DeadLetterError::of_delivery(topic, timeout, KafkaError::MessageProduction(code))
                .reason()
        };
        assert_eq!(
            of(RDKafkaErrorCode::UnknownTopicOrPartition),
            "topic_missing"
        );
        assert_eq!(of(RDKafkaErrorCode::UnknownTopic), "topic_missing");
        assert_eq!(of(RDKafkaErrorCode::MessageTimedOut), "timeout");
        assert_eq!(of(RDKafkaErrorCode::TopicAuthorizationFailed), "broker");
        assert_eq!(of(RDKafkaErrorCode::MessageSizeTooLarge), "broker");
        let missing = DeadLetterError::of_delivery(
            topic,
            timeout,
            KafkaError::MessageProduction(RDKafkaErrorCode::UnknownTopic),
        );
        assert!(missing.to_string().contains(topic), "{missing}");
        assert!(missing.to_string().contains("kafka.dlq_topic"), "{missing}");
        for error in [
            missing,
            DeadLetterError::Timeout {
                topic: topic.into(),
                timeout_ms: 10_000,
            },
        ] {
            assert!(DeadLetterError::REASONS.contains(&error.reason()));
        }
    }

    #[test]
    fn librdkafka_gives_a_dead_letter_up_when_the_send_does() {
        let config = ConsumerConfig {
            dlq_timeout_ms: 4_000,
            ..ConsumerConfig::default()
        };
        let properties = dlq_producer_properties(&config);
        let get = |name: &str| {
            properties
                .properties
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("message.timeout.ms"), Some("4000"));
        assert_eq!(get("topic.metadata.propagation.max.ms"), Some("2000"));
        assert_eq!(get("allow.auto.create.topics"), Some("false"));
        // librdkafka builds it, with the connection settings of the default config.
        rum_kafka::check(&KafkaConfig::default(), &[properties]).unwrap();
    }

    #[tokio::test]
    async fn a_kafka_that_does_not_answer_is_not_a_missing_topic() {
        // A port nothing listens on: connections are refused at once, the check gives up after
        // its timeout, and the start goes on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let kafka = KafkaConfig {
            brokers: format!("127.0.0.1:{port}"),
            ..KafkaConfig::default()
        };
        let config = ConsumerConfig {
            dlq_timeout_ms: 1_000,
            ..ConsumerConfig::default()
        };
        let started = std::time::Instant::now();
        assert_eq!(
            check_dlq_topic(&kafka, &config).await.unwrap(),
            DlqTopic::NotChecked
        );
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
