//! SIGTERM to `rum ingest` with beacons in flight: it stops accepting, answers what it holds and
//! flushes the producer, so every beacon it answered 204 is in Kafka.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{eventually, wait_until_ready, RumProcess};
use rum_schemas::BeaconMessage;
use rum_testkit::{free_port, read_topic, Kafka};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_beacon_answered_204_before_sigterm_is_in_kafka() {
    let kafka = Kafka::start();
    kafka.create_pipeline_topics();
    let port = free_port().to_string();
    let mut ingest = RumProcess::spawn(
        &["ingest"],
        &[
            ("RUM_KAFKA_BROKERS", kafka.brokers.as_str()),
            ("RUM_INGEST_PORT", port.as_str()),
            ("RUM_INGEST_RATE_LIMIT_PER_SECOND", "0"),
        ],
    );
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    wait_until_ready(&http, &base).await;

    let endpoint = format!("{base}/api/v1/observability/web-vitals");
    let answered_204 = Arc::new(AtomicUsize::new(0));
    let requests: Vec<_> = (0..400u64)
        .map(|i| {
            let (http, endpoint, answered_204) = (http.clone(), endpoint.clone(), answered_204.clone());
            tokio::spawn(async move {
                // Spread over 2 s: SIGTERM, sent after the first 10 are accepted, finds most still to come.
                tokio::time::sleep(Duration::from_millis(i * 5)).await;
                let body = format!(r#"{{"site":"shop","route":"/p/{i}","metrics":[{{"name":"LCP","value":1000,"id":"b{i}"}}]}}"#);
                let status = http.post(&endpoint).header("content-type", "text/plain").body(body).send().await;
                let status = status.map(|r| r.status().as_u16());
                if matches!(status, Ok(204)) {
                    answered_204.fetch_add(1, Ordering::SeqCst);
                }
                (i, status)
            })
        })
        .collect();
    // SIGTERM once traffic flows, whatever the machine's speed: most requests are still in flight.
    eventually(
        "the first accepted beacons",
        Duration::from_secs(30),
        async || (answered_204.load(Ordering::SeqCst) >= 10).then_some(()),
    )
    .await;
    let status = tokio::task::spawn_blocking(move || {
        let status = ingest.terminate(Duration::from_secs(30));
        (status, ingest)
    })
    .await
    .unwrap()
    .0;
    assert!(status.success(), "rum ingest exits 0 on SIGTERM: {status}");

    let mut accepted = HashSet::new();
    let mut refused = 0;
    for request in requests {
        match request.await.unwrap() {
            (i, Ok(204)) => {
                accepted.insert(format!("b{i}"));
            }
            _ => refused += 1,
        }
    }
    assert!(
        refused > 0,
        "SIGTERM came while beacons were still in flight"
    );
    let brokers = kafka.brokers.clone();
    let expected = accepted.len();
    let in_kafka: HashSet<String> =
        tokio::task::spawn_blocking(move || read_topic(&brokers, "rum.beacons.v1", 4, expected))
            .await
            .unwrap()
            .into_iter()
            .map(|record| {
                BeaconMessage::decode(&record.value).unwrap().metrics[0]
                    .id
                    .clone()
            })
            .collect();
    let missing: Vec<_> = accepted.difference(&in_kafka).collect();
    assert!(
        missing.is_empty(),
        "answered 204 but not in Kafka: {missing:?}"
    );
    eprintln!(
        "{} accepted and all in Kafka, {refused} refused or cut off by the shutdown",
        accepted.len()
    );
}
