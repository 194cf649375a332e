//! Publishing to Kafka: mechanism only. The key and value are decided upstream.
//!
//! Delivery reports are served on the ingest's own tokio runtime, not on a polling thread: librdkafka
//! writes a byte to a socket when its event queue becomes non-empty, and a task woken by that socket
//! serves the queue. A request's task is then woken from the runtime it runs on, without a
//! thread hop per batch of acknowledgements (see `bench/RESULTS.md` for what that saves).

use std::future::Future;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rdkafka::bindings as rdsys;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer as _, ProducerContext};
use rum_kafka::{ClientKind, ClientProperties, KafkaLog};
use rum_schemas::kafka::KafkaConfig;
use tokio::sync::oneshot;

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

/// Where accepted beacons go: Kafka ([`KafkaPublisher`]) in production. The HTTP layer knows
/// only this, so its policy (status codes, limits, timeouts) is tested without a broker.
pub trait Publisher: Send + Sync + 'static {
    /// Publishes one message and waits for its acknowledgement, within the publisher's own deadline.
    fn publish<'a>(
        &'a self,
        key: &'a str,
        payload: &'a [u8],
    ) -> Pin<Box<dyn Future<Output = Result<(), PublishError>> + Send + 'a>>;
    /// True when the destination takes messages now. Blocking, up to `timeout`.
    fn is_ready(&self, timeout: Duration) -> bool;
    /// Messages handed over and not yet acknowledged.
    fn queue_depth(&self) -> i32;
    /// Waits up to `timeout` for every message handed over to be acknowledged. Blocking.
    fn flush(&self, timeout: Duration) -> Result<(), PublishError>;
}

type Acknowledgement = oneshot::Sender<Result<(), KafkaError>>;

/// Hands each delivery report to the request waiting for it; logs librdkafka's errors.
struct DeliveryContext {
    log: KafkaLog,
}

rum_kafka::log_through!(DeliveryContext, log);

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = Box<Acknowledgement>;

    fn delivery(&self, result: &DeliveryResult<'_>, ack: Self::DeliveryOpaque) {
        // The request may have given up waiting (its client went away): nothing to tell then.
        let _ = ack.send(result.as_ref().map(|_| ()).map_err(|(e, _)| e.clone()));
    }
}

/// A producer and the socket librdkafka wakes its event task through.
struct Producer {
    /// librdkafka's main event queue (our reference to it), where delivery reports arrive. Declared
    /// first so it is dropped first: librdkafka wants queue references gone before the client.
    queue: EventQueue,
    inner: BaseProducer<DeliveryContext>,
    /// Written by librdkafka when the queue becomes non-empty; read by the event task.
    wake_rx: tokio::net::UnixStream,
    _wake_tx: std::os::unix::net::UnixStream,
    /// Set once a fresh producer replaced this one: its task ends when its last message is answered.
    retired: AtomicBool,
}

/// An owned reference to a librdkafka queue.
struct EventQueue(*mut rdsys::rd_kafka_queue_t);

// SAFETY: librdkafka queues are thread safe; the pointer is only used through librdkafka's API.
unsafe impl Send for EventQueue {}
// SAFETY: as above.
unsafe impl Sync for EventQueue {}

impl EventQueue {
    fn len(&self) -> usize {
        // SAFETY: the queue reference is valid until `drop`.
        unsafe { rdsys::rd_kafka_queue_length(self.0) }
    }
}

impl Drop for EventQueue {
    fn drop(&mut self) {
        // SAFETY: stop the wake-ups before the socket closes, then release our reference.
        unsafe {
            rdsys::rd_kafka_queue_io_event_enable(self.0, -1, std::ptr::null(), 0);
            rdsys::rd_kafka_queue_destroy(self.0);
        }
    }
}

impl Producer {
    /// Creates the producer and starts the task serving its events on the current tokio runtime.
    fn start(config: &ClientConfig) -> Result<Arc<Producer>, KafkaError> {
        let context = DeliveryContext {
            log: KafkaLog::new("ingest producer"),
        };
        let inner: BaseProducer<DeliveryContext> = config.create_with_context(context)?;
        let io = |e: std::io::Error| KafkaError::ClientCreation(format!("event socket: {e}"));
        let (wake_tx, wake_rx) = std::os::unix::net::UnixStream::pair().map_err(io)?;
        wake_tx.set_nonblocking(true).map_err(io)?;
        wake_rx.set_nonblocking(true).map_err(io)?;
        let wake_rx = tokio::net::UnixStream::from_std(wake_rx).map_err(io)?;
        // SAFETY: the client pointer is valid while `inner` lives; `queue` is dropped before `inner`
        // and `_wake_tx` (field order) and turns the wake-ups off first.
        let queue = unsafe {
            let queue = EventQueue(rdsys::rd_kafka_queue_get_main(inner.client().native_ptr()));
            rdsys::rd_kafka_queue_io_event_enable(
                queue.0,
                wake_tx.as_raw_fd(),
                b"!".as_ptr().cast(),
                1,
            );
            queue
        };
        let producer = Arc::new(Producer {
            queue,
            inner,
            wake_rx,
            _wake_tx: wake_tx,
            retired: AtomicBool::new(false),
        });
        tokio::spawn(serve_events(producer.clone()));
        Ok(producer)
    }
}

/// Serves the producer's events (delivery reports, errors, logs) whenever librdkafka signals some,
/// until the producer is retired and has nothing left in flight.
async fn serve_events(producer: Arc<Producer>) {
    let mut drain = [0u8; 256];
    // Set if the wake-up socket ever fails (it should not): events are then served on a timer.
    let mut on_timer = false;
    loop {
        // Read the wake-up bytes before serving: an event enqueued after the queue is seen empty
        // writes a new byte, so none is missed.
        while !on_timer {
            match producer.wake_rx.try_read(&mut drain) {
                Ok(n) if n > 0 => continue,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                failed => {
                    tracing::error!(result = ?failed, "kafka event socket failed: serving delivery reports every 5 ms instead");
                    on_timer = true;
                }
            }
        }
        // Bounded, so a queue that never empties cannot starve the runtime.
        for _ in 0..4096 {
            if producer.queue.len() == 0 {
                break;
            }
            producer.inner.poll(Duration::ZERO);
        }
        if producer.retired.load(Ordering::Relaxed) && producer.inner.in_flight_count() == 0 {
            // Dropping a producer purges, flushes (up to 500 ms) and joins librdkafka's threads:
            // blocking work, kept off the runtime's threads.
            tokio::task::spawn_blocking(move || drop(producer));
            return;
        }
        if producer.queue.len() > 0 {
            tokio::task::yield_now().await;
            continue;
        }
        if on_timer {
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        }
        // The timeout is a backstop (and how a retired producer notices it is done), not the pace.
        let _ = tokio::time::timeout(Duration::from_secs(1), producer.wake_rx.readable()).await;
    }
}

/// librdkafka's own `message.timeout.ms` for a request deadline of `ingest.delivery_timeout_ms`: shorter by a second
/// (by a quarter of a deadline under 4 s), since librdkafka scans for timed-out messages once a second, so that its
/// report (and the end of the message's life in the producer) usually comes before the request's deadline. Never 0
/// (librdkafka's "forever") and above `linger_ms` (librdkafka refuses less).
fn message_timeout_ms(delivery_timeout_ms: u64, linger_ms: u64) -> u64 {
    let scan_margin = (delivery_timeout_ms / 4).min(1_000);
    (delivery_timeout_ms - scan_margin).max(linger_ms + 1)
}

/// The ingest producer's own librdkafka properties: idempotent, acks=all, and the batching of
/// `[ingest]`. `rum_kafka::check` builds the producer from these at start.
pub fn producer_properties(ingest: &IngestConfig) -> ClientProperties {
    ClientProperties {
        client: "ingest producer",
        kind: ClientKind::Producer,
        properties: vec![
            ("enable.idempotence", "true".into()),
            ("acks", "all".into()),
            ("compression.type", "lz4".into()),
            ("socket.nagle.disable", "true".into()),
            ("linger.ms", ingest.linger_ms.to_string()),
            (
                "message.timeout.ms",
                message_timeout_ms(ingest.delivery_timeout_ms, ingest.linger_ms).to_string(),
            ),
            ("batch.num.messages", ingest.batch_max_messages.to_string()),
            (
                "queue.buffering.max.messages",
                ingest.queue_max_messages.to_string(),
            ),
        ],
    }
}

/// An idempotent, acks=all producer to the beacons topic.
///
/// An idempotent producer whose in-flight message timed out bumps its epoch; a broker without that
/// support (Kafka before 2.5, some Kafka-compatible brokers) answers `ProducerFenced`, and other
/// idempotence errors are fatal too: the producer would stay useless forever. The publisher then
/// replaces it with a new one (a new producer id). Messages of the old producer fail, their
/// requests were answered 503, so nothing accepted is lost.
pub struct KafkaPublisher {
    producer: RwLock<Arc<Producer>>,
    client_config: ClientConfig,
    topic: String,
    delivery_timeout: Duration,
}

impl KafkaPublisher {
    /// Creates the producer; it connects lazily. Must be called on a tokio runtime, which serves
    /// the producer's events.
    pub fn new(kafka: &KafkaConfig, ingest: &IngestConfig) -> Result<Self, KafkaError> {
        let client_config = rum_kafka::client_config(kafka, &producer_properties(ingest))
            // Only a password file that became unreadable since the start can fail here.
            .map_err(|e| KafkaError::ClientCreation(e.to_string()))?;
        Ok(Self {
            producer: RwLock::new(Producer::start(&client_config)?),
            client_config,
            topic: kafka.topic.clone(),
            delivery_timeout: Duration::from_millis(ingest.delivery_timeout_ms),
        })
    }

    /// Enqueues without blocking and waits for Kafka's acknowledgement.
    async fn publish_one(&self, key: &str, payload: &[u8]) -> Result<(), PublishError> {
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
            if fenced || producer.inner.client().fatal_error().is_some() {
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

    fn current(&self) -> Arc<Producer> {
        self.producer
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    async fn send(&self, producer: &Producer, key: &str, payload: &[u8]) -> Result<(), KafkaError> {
        let (ack, acknowledged) = oneshot::channel();
        let record = BaseRecord::with_opaque_to(&self.topic, Box::new(ack))
            .key(key)
            .payload(payload);
        producer.inner.send(record).map_err(|(e, _)| e)?;
        // The request's deadline is the contract (`ingest.delivery_timeout_ms`): librdkafka times the
        // message out a little earlier itself, but its report can come late (it scans once a second,
        // and in-flight requests to a broker that just died wait for the leader's election), and a
        // client must not wait for that. A message answered 503 here may still reach Kafka later:
        // the client's retry carries the same metric ids, which the consumer stores once.
        match tokio::time::timeout(self.delivery_timeout, acknowledged).await {
            Ok(Ok(result)) => result,
            Ok(Err(_dropped)) => Err(KafkaError::Canceled),
            // Not librdkafka's MessageTimedOut: no report came in time, which is worth telling apart.
            Err(_elapsed) => Err(KafkaError::MessageProduction(
                RDKafkaErrorCode::OperationTimedOut,
            )),
        }
    }

    /// Replaces `failed` with a new producer (unless another request already did).
    fn replace(&self, failed: &Arc<Producer>, error: &KafkaError) {
        let mut current = self.producer.write().unwrap_or_else(|e| e.into_inner());
        if !Arc::ptr_eq(&current, failed) {
            return;
        }
        match Producer::start(&self.client_config) {
            Ok(fresh) => {
                failed.retired.store(true, Ordering::Relaxed);
                *current = fresh;
                tracing::error!(%error, "kafka producer fenced or failed fatally: replaced it with a new one");
            }
            Err(e) => {
                tracing::error!(error = %e, "kafka producer hit a fatal error and a new one cannot be created")
            }
        }
    }
}

impl Publisher for KafkaPublisher {
    fn publish<'a>(
        &'a self,
        key: &'a str,
        payload: &'a [u8],
    ) -> Pin<Box<dyn Future<Output = Result<(), PublishError>> + Send + 'a>> {
        Box::pin(self.publish_one(key, payload))
    }

    /// Messages enqueued and not yet acknowledged.
    fn queue_depth(&self) -> i32 {
        self.current().inner.in_flight_count()
    }

    /// True when the broker answers a metadata request for the topic within `timeout`.
    fn is_ready(&self, timeout: Duration) -> bool {
        self.current()
            .inner
            .client()
            .fetch_metadata(Some(&self.topic), timeout)
            .is_ok_and(|md| {
                md.topics()
                    .iter()
                    .any(|t| t.error().is_none() && !t.partitions().is_empty())
            })
    }

    /// Waits up to `timeout` for every queued message to be acknowledged.
    fn flush(&self, timeout: Duration) -> Result<(), PublishError> {
        self.current()
            .inner
            .flush(timeout)
            .map_err(|e| PublishError::Unavailable(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::pin;
    use std::sync::Weak;
    use std::task::Poll;

    use super::*;

    /// Waits up to `within` for every strong reference to the producer to be gone.
    async fn dropped(producer: &Weak<Producer>, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        while producer.strong_count() > 0 {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }

    #[test]
    fn librdkafka_times_a_message_out_before_the_request_deadline() {
        assert_eq!(message_timeout_ms(5_000, 5), 4_000);
        assert_eq!(message_timeout_ms(1_000, 5), 750);
        assert_eq!(
            message_timeout_ms(1, 5),
            6,
            "never 0 (forever) and above linger.ms"
        );
    }

    #[tokio::test]
    async fn a_replaced_producer_answers_what_it_holds_then_its_task_ends() {
        // A "broker" that accepts connections and never answers: a message can only time out.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let kafka = KafkaConfig {
            brokers: silent.local_addr().expect("addr").to_string(),
            ..KafkaConfig::default()
        };
        let ingest = IngestConfig {
            delivery_timeout_ms: 1_000,
            ..IngestConfig::default()
        };
        let publisher = KafkaPublisher::new(&kafka, &ingest).expect("producer");
        let first = publisher.current();
        let retired = {
            let mut pending = pin!(publisher.send(&first, "site|/|mobile", b"{}"));
            // The first poll hands the message to the producer; then it waits for the report.
            std::future::poll_fn(|cx| {
                assert!(pending.as_mut().poll(cx).is_pending());
                Poll::Ready(())
            })
            .await;
            assert_eq!(first.inner.in_flight_count(), 1);

            publisher.replace(&first, &KafkaError::Canceled);
            assert!(
                !Arc::ptr_eq(&first, &publisher.current()),
                "a new producer took over"
            );

            // The request is answered by its deadline whatever the producer does.
            let report = tokio::time::timeout(Duration::from_secs(10), pending)
                .await
                .expect("the message the retired producer holds is answered");
            assert!(
                matches!(
                    report,
                    Err(KafkaError::MessageProduction(
                        RDKafkaErrorCode::MessageTimedOut | RDKafkaErrorCode::OperationTimedOut
                    ))
                ),
                "{report:?}"
            );
            Arc::downgrade(&first)
        };
        drop(first);
        // Only the retired producer's task serves its queue: librdkafka's timeout report takes the message
        // out of flight only when it is served, and with nothing left in flight the task ends and releases
        // the producer.
        assert!(
            dropped(&retired, Duration::from_secs(5)).await,
            "the retired producer's task ended"
        );
        // The new producer is still served: its task holds a reference besides the publisher's.
        assert_eq!(Arc::strong_count(&publisher.current()), 3);
    }
}
