//! The dead-letter topic against a real Apache Kafka (testkit, `auto.create.topics.enable=false` as
//! deployed): a missing topic is refused at start naming `kafka.dlq_topic`; a send to it fails as
//! `topic_missing` within `consumer.dlq_timeout_ms`, counted every time and logged once (throttled);
//! `consumer.dlq_create_topic` creates it, and the same producer then delivers, reason header and
//! all; a Kafka that does not answer fails the send as `timeout`, within its bound.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rum_consumers::{check_dlq_topic, ConsumerConfig, ConsumerMetrics, DeadLetters, DlqTopic};
use rum_schemas::kafka::{KafkaConfig, DLQ_REASON_HEADER};
use rum_schemas::MessageError;
use rum_testkit::{free_port, read_topic, Kafka};

/// The log lines written while a test runs.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<u8>>>);

impl Write for Log {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Log {
    fn lines_with(&self, needle: &str) -> Vec<String> {
        let bytes = self.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
        String::from_utf8_lossy(&bytes)
            .lines()
            .filter(|l| l.contains(needle))
            .map(str::to_string)
            .collect()
    }
}

fn metrics() -> Arc<ConsumerMetrics> {
    Arc::new(ConsumerMetrics::new(10, Duration::from_secs(3_600)).expect("metrics"))
}

fn errors(metrics: &ConsumerMetrics, reason: &str) -> u64 {
    metrics
        .dead_letter_errors
        .with_label_values(&[reason])
        .get()
}

// One thread: the captured log is the test thread's (tracing's default subscriber is per thread).
#[tokio::test(flavor = "current_thread")]
async fn a_missing_dead_letter_topic_stops_the_start_fails_sends_and_is_created_when_allowed() {
    let log = Log::default();
    let writer = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _log = tracing::subscriber::set_default(subscriber);

    let broker = Kafka::start();
    broker.create_topic("rum.beacons.v1", 2);
    let typo = "rum.beacons.dlq.typo";
    let kafka = KafkaConfig {
        brokers: broker.brokers.clone(),
        dlq_topic: typo.into(),
        ..KafkaConfig::default()
    };
    let config = ConsumerConfig {
        dlq_timeout_ms: 3_000,
        ..ConsumerConfig::default()
    };

    // The start's check: one error naming the key and the topic.
    let refused = check_dlq_topic(&kafka, &config)
        .await
        .expect_err("a missing dead-letter topic is refused");
    assert_eq!(refused.key, "kafka.dlq_topic", "{refused}");
    assert!(
        refused.reason.contains(typo) && refused.reason.contains("consumer.dlq_create_topic"),
        "{refused}"
    );

    // Sends to it (a batch retried three times): each fails as topic_missing within its bound,
    // each is counted, one line is logged.
    let metrics = metrics();
    let dead_letters = DeadLetters::new(&kafka, &config, metrics.clone()).expect("settings");
    let poison = MessageError::Undecodable("expected value at line 1 column 1".into());
    for attempt in 1..=3 {
        let started = Instant::now();
        let error = dead_letters
            .send(Some(b"shop|root|mobile"), b"{not json", &poison)
            .await
            .expect_err("no topic, no dead letter");
        let took = started.elapsed();
        assert_eq!(
            error.reason(),
            "topic_missing",
            "attempt {attempt}: {error}"
        );
        assert!(error.to_string().contains(typo), "{error}");
        assert!(
            took < Duration::from_millis(3_500),
            "attempt {attempt} took {took:?}, over consumer.dlq_timeout_ms"
        );
        eprintln!("dead_letter: attempt {attempt} failed in {took:?}: {error}");
    }
    assert_eq!(errors(&metrics, "topic_missing"), 3);
    assert_eq!(
        metrics
            .dead_lettered
            .with_label_values(&[poison.reason()])
            .get(),
        0
    );
    let lines = log.lines_with("dead-letter send failed");
    assert_eq!(lines.len(), 1, "one line while it repeats: {lines:?}");
    assert!(
        lines[0].contains(typo) && lines[0].contains("topic_missing"),
        "{lines:?}"
    );

    // Allowed to create it: created at start, then found.
    let create = ConsumerConfig {
        dlq_create_topic: true,
        ..config.clone()
    };
    assert_eq!(
        check_dlq_topic(&kafka, &create).await.expect("created"),
        DlqTopic::Created
    );
    assert_eq!(
        check_dlq_topic(&kafka, &config).await.expect("found"),
        DlqTopic::Exists
    );

    // The producer that failed learns the new topic: the retried batch's dead letter goes through.
    let started = Instant::now();
    loop {
        match dead_letters
            .send(Some(b"shop|root|mobile"), b"{not json", &poison)
            .await
        {
            Ok(()) => break,
            Err(e) => {
                assert!(
                    started.elapsed() < Duration::from_secs(60),
                    "still failing {:?} after the topic was created: {e}",
                    started.elapsed()
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    eprintln!(
        "dead_letter: delivered {:?} after the topic was created",
        started.elapsed()
    );
    assert_eq!(
        metrics
            .dead_lettered
            .with_label_values(&[poison.reason()])
            .get(),
        1
    );
    let brokers = broker.brokers.clone();
    // Created with the brokers' defaults: 4 partitions here (deploy/local/kafka/server.properties.in).
    let records = tokio::task::spawn_blocking(move || read_topic(&brokers, typo, 4, 1))
        .await
        .expect("read the dead letters");
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0].value, b"{not json");
    assert_eq!(records[0].key, b"shop|root|mobile");
    let reason = records[0]
        .headers
        .iter()
        .find(|(k, _)| k == DLQ_REASON_HEADER)
        .map(|(_, v)| String::from_utf8_lossy(v).to_string());
    assert_eq!(reason.as_deref(), Some(poison.to_string().as_str()));

    // A Kafka that does not answer (nothing listens on the port): a timeout, within the bound.
    let nowhere = KafkaConfig {
        brokers: format!("127.0.0.1:{}", free_port()),
        ..kafka.clone()
    };
    let dead_letters = DeadLetters::new(&nowhere, &config, metrics.clone()).expect("settings");
    let started = Instant::now();
    let error = dead_letters
        .send(None, b"{not json", &poison)
        .await
        .expect_err("nothing to send to");
    assert_eq!(error.reason(), "timeout", "{error}");
    let took = started.elapsed();
    assert!(
        (Duration::from_millis(2_500)..Duration::from_millis(4_000)).contains(&took),
        "{took:?}"
    );
    assert_eq!(errors(&metrics, "timeout"), 1);
}
