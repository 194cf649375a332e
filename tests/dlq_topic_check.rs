//! `rum consume` checks the dead-letter topic at start, against a real Apache Kafka: a missing one (a
//! typo) stops it with one line naming `kafka.dlq_topic` and the topic, exit 2;
//! `consumer.dlq_create_topic = true` creates it and starts. A Kafka that does not answer at start is
//! not a missing topic: `rum consume` starts and waits for it, as it always did.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{rum_output, RumProcess};
use rum_testkit::{free_port, Kafka};

const TYPO: &str = "rum.beacons.dlq.typo";

/// Waits until `path` holds `needle`, at most `within`.
fn wait_for_log(path: &Path, needle: &str, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(needle) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "no {needle:?} in {} within {within:?}:\n{text}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_missing_dead_letter_topic_stops_rum_consume_and_a_kafka_that_is_down_does_not() {
    let dir = rum_testkit::test_dir().join(format!("dlq-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("test dir");
    let consumer_port = free_port().to_string();
    // Never reached: the consumer has no batch to write.
    let clickhouse_url = format!("http://127.0.0.1:{}", free_port());
    let base = [
        ("RUM_CONSUMER_PORT", consumer_port.as_str()),
        ("RUM_CLICKHOUSE_URL", clickhouse_url.as_str()),
        ("RUM_CONSUMER_DLQ_TIMEOUT_MS", "2000"),
    ];

    // Kafka down at start: rum consume starts anyway (the check says why it could not look), and
    // stops cleanly on SIGTERM.
    let nowhere = format!("127.0.0.1:{}", free_port());
    let mut env = base.to_vec();
    env.push(("RUM_KAFKA_BROKERS", nowhere.as_str()));
    let log = dir.join("kafka-down.log");
    let mut consumer = RumProcess::spawn_logged(&["consume"], &env, &log);
    wait_for_log(
        &log,
        "cannot check kafka.dlq_topic now",
        Duration::from_secs(20),
    );
    wait_for_log(&log, "consumer subscribed", Duration::from_secs(20));
    assert!(
        consumer.is_running(),
        "{}",
        std::fs::read_to_string(&log).unwrap()
    );
    assert!(consumer.terminate(Duration::from_secs(20)).success());
    // SIGTERM while the check waits for Kafka: a clean stop, not a kill.
    let mut env = env.clone();
    env.push(("RUM_CONSUMER_DLQ_TIMEOUT_MS", "10000"));
    let log = dir.join("kafka-down-sigterm.log");
    let mut consumer = RumProcess::spawn_logged(&["consume"], &env, &log);
    wait_for_log(&log, "dead-letter topic check", Duration::from_secs(20));
    let started = Instant::now();
    assert!(consumer.terminate(Duration::from_secs(20)).success());
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains("consumer subscribed"), "{text}");
    eprintln!(
        "dlq_topic_check: stopped {:?} after SIGTERM during the check",
        started.elapsed()
    );

    // Kafka up, the dead-letter topic missing: one line, exit 2.
    let broker = Kafka::start();
    broker.create_topic(rum_testkit::stack::beacons_topic().0, 2);
    let mut env = base.to_vec();
    env.extend([
        ("RUM_KAFKA_BROKERS", broker.brokers.as_str()),
        ("RUM_KAFKA_DLQ_TOPIC", TYPO),
    ]);
    let out = rum_output(&["consume"], &env);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.starts_with("rum: config error: kafka.dlq_topic (RUM_KAFKA_DLQ_TOPIC): ")
            && stderr.contains(&format!("`{TYPO}` does not exist"))
            && stderr.contains("consumer.dlq_create_topic"),
        "{stderr}"
    );
    assert!(broker.partition_leaders(TYPO).is_empty(), "nothing created");

    // Allowed to create it: created, and rum consume runs.
    env.push(("RUM_CONSUMER_DLQ_CREATE_TOPIC", "true"));
    let log = dir.join("create.log");
    let mut consumer = RumProcess::spawn_logged(&["consume"], &env, &log);
    wait_for_log(&log, "dead-letter topic created", Duration::from_secs(30));
    wait_for_log(&log, "consumer subscribed", Duration::from_secs(30));
    assert!(
        !broker.partition_leaders(TYPO).is_empty(),
        "the topic exists"
    );
    assert!(consumer.terminate(Duration::from_secs(20)).success());
    let _ = std::fs::remove_dir_all(&dir);
}
