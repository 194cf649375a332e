//! Exactly once into ClickHouse, with real processes: Apache Kafka, the ClickHouse server and `rum consume`,
//! through SIGKILLs at random moments, a rebalance between two members, and a ClickHouse outage.

mod common;

use std::time::Duration;

use common::stack::{Stack, METRICS_PER_BEACON};
use common::{exposition, metric_sum, stored_counts};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rum_testkit::{free_port, read_topic};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkills_at_random_moments_neither_lose_nor_double_count() {
    let stack = Stack::start();
    const N: u64 = 4_000;
    stack.produce(0..N).await;
    let mut rng = StdRng::seed_from_u64(7);
    for round in 0..4 {
        let mut consumer = stack.consumer(free_port());
        // Some kills land before the member owns partitions, most in the middle of inserting.
        let after = Duration::from_millis(rng.random_range(1_000..8_000));
        tokio::time::sleep(after).await;
        consumer.kill();
        eprintln!(
            "round {round}: SIGKILL after {after:?}, stored so far {:?}",
            stored_counts(&stack.clickhouse)
        );
    }
    let _last = stack.consumer(free_port());
    stack
        .assert_exactly(N * METRICS_PER_BEACON, Duration::from_secs(120))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebalance_between_two_members_neither_loses_nor_double_counts() {
    let stack = Stack::start();
    const N: u64 = 6_000;
    stack.produce(0..N / 2).await;
    let mut first = stack.consumer(free_port());
    tokio::time::sleep(Duration::from_secs(4)).await;
    let _second = stack.consumer(free_port());
    stack.produce(N / 2..N).await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    eprintln!(
        "before the SIGKILL of the first member: {:?}",
        stored_counts(&stack.clickhouse)
    );
    first.kill();
    stack
        .assert_exactly(N * METRICS_PER_BEACON, Duration::from_secs(120))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clickhouse_outage_of_a_minute_loses_nothing_and_drains_after() {
    let mut stack = Stack::start();
    const N: u64 = 4_000;
    let metrics_port = free_port();
    let _consumer = stack.consumer(metrics_port);
    stack.produce(0..N / 2).await;
    stack
        .assert_exactly(N / 2 * METRICS_PER_BEACON, Duration::from_secs(60))
        .await;

    stack.clickhouse.stop();
    stack.produce(N / 2..N).await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    let metrics_url = format!("http://127.0.0.1:{metrics_port}/metrics");
    let metrics = exposition(&metrics_url).await;
    assert!(
        metric_sum(&metrics, "rum_consumer_insert_errors_total") > 0.0,
        "the outage is visible:\n{metrics}"
    );
    assert!(
        metric_sum(&metrics, "rum_consumer_lag_messages") > 0.0,
        "the backlog is visible as lag:\n{metrics}"
    );

    stack.clickhouse.start_again();
    stack
        .assert_exactly(N * METRICS_PER_BEACON, Duration::from_secs(120))
        .await;

    // Prometheus saw every stored LCP once: the consumer lived through the outage.
    let metrics = exposition(&metrics_url).await;
    let lcp_count = metric_sum(&metrics, "rum_web_vitals_lcp_seconds_count");
    assert_eq!(lcp_count, N as f64, "one LCP observation per beacon");

    // The poison (one every 500 beacons) went to the dead-letter topic once, with its reason,
    // even though its batch was retried through the outage.
    let brokers = stack.kafka.brokers.clone();
    let dead =
        tokio::task::spawn_blocking(move || read_topic(&brokers, "rum.beacons.dlq.v1", 1, 8))
            .await
            .unwrap();
    assert_eq!(
        dead.len(),
        (N / 500) as usize,
        "one dead letter per poison message"
    );
    for record in &dead {
        assert_eq!(record.value, b"{not a beacon");
        let reason = record.headers.iter().find(|(k, _)| k == "rum-dlq-reason");
        let reason = reason.map(|(_, v)| String::from_utf8_lossy(v).into_owned());
        assert!(
            reason
                .as_deref()
                .is_some_and(|r| r.starts_with("undecodable")),
            "{:?}",
            record.headers
        );
    }
}
