//! The pipeline on a three-broker Apache Kafka cluster (replication factor 3, `min.insync.replicas=2`) that loses
//! brokers: real processes (Kafka, ClickHouse, `rum ingest`, `rum consume`), data on disk, exact counts after.
//!
//! * a broker SIGKILLed while the ingest takes a steady load, then restarted;
//! * the broker that coordinates the consumer group SIGKILLed while two members consume, then a member leaves;
//! * all three brokers stopped and started again.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{eventually, exposition, metric_sum, settled_counts, stored_ids, Pipeline};
use rum_testkit::{free_port, ClickHouseServer, Kafka};

/// `ingest.delivery_timeout_ms` of these tests: the ingest answers every request by then.
const DELIVERY_TIMEOUT_MS: u64 = 3_000;
/// What a request may take at most as the test sees it: the ingest's deadline plus slack for the client and the
/// scheduler of a loaded 2-core machine (a JVM restarting beside the load).
const REQUEST_BOUND: Duration = Duration::from_millis(DELIVERY_TIMEOUT_MS + 3_000);
/// Longer than the brokers' `broker.session.timeout.ms` (9 s): the controller fences a dead broker and moves its
/// partitions' leadership only after that.
const FENCING: Duration = Duration::from_secs(30);

/// Three brokers and two ClickHouse-bound processes at once are a lot for two cores: one test at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn beacon(id: &str) -> String {
    format!(
        r#"{{"site":"shop","route":"/product/{n}","device":"mobile","nav_type":"navigate","sample_rate":1,"metrics":[{{"name":"LCP","value":2100,"id":"{id}","rating":"good"}}]}}"#,
        n = id.len() % 7
    )
}

/// What a steady load saw: ids answered 204, the number of 503s, other answers, and the slowest answer.
#[derive(Default)]
struct LoadReport {
    accepted: HashSet<String>,
    unavailable: u64,
    other: Vec<String>,
    slowest: Duration,
}

/// `workers` clients posting one-metric beacons back to back (ids `{prefix}-{worker}-{n}`) to the ingest at `base`
/// until `stop` is set.
fn steady_load(
    base: &str,
    prefix: &str,
    workers: usize,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<LoadReport> {
    let endpoint = format!("{base}/api/v1/observability/web-vitals");
    // A client-side bound far above the ingest's own: a request that hangs shows as an error, not a stuck test.
    let http = reqwest::Client::builder()
        .timeout(REQUEST_BOUND * 3)
        .build()
        .unwrap();
    let tasks: Vec<_> = (0..workers)
        .map(|w| {
            let (http, endpoint, stop, prefix) = (
                http.clone(),
                endpoint.clone(),
                stop.clone(),
                prefix.to_string(),
            );
            tokio::spawn(async move {
                let mut report = LoadReport::default();
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let id = format!("{prefix}-{w}-{n}");
                    n += 1;
                    let started = Instant::now();
                    let answer = http
                        .post(&endpoint)
                        .header("content-type", "text/plain")
                        .body(beacon(&id))
                        .send()
                        .await;
                    report.slowest = report.slowest.max(started.elapsed());
                    match answer.map(|r| r.status().as_u16()) {
                        Ok(204) => {
                            report.accepted.insert(id);
                        }
                        Ok(503) => {
                            report.unavailable += 1;
                            // A client backs off on 503 (Retry-After); so does this one, briefly.
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                        Ok(status) => report.other.push(format!("{id}: HTTP {status}")),
                        Err(e) => report.other.push(format!("{id}: {e}")),
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                report
            })
        })
        .collect();
    tokio::spawn(async move {
        let mut total = LoadReport::default();
        for task in tasks {
            let r = task.await.unwrap();
            total.accepted.extend(r.accepted);
            total.unavailable += r.unavailable;
            total.other.extend(r.other);
            total.slowest = total.slowest.max(r.slowest);
        }
        total
    })
}

/// Every id the ingest accepted is stored once, in `vitals_raw` and in `vitals_1m`'s sample counts.
async fn assert_accepted_stored_once(clickhouse: &ClickHouseServer, accepted: &HashSet<String>) {
    let expected = accepted.len() as u64;
    let (raw, distinct, rollup) =
        settled_counts(clickhouse, expected, Duration::from_secs(180)).await;
    let stored = stored_ids(clickhouse);
    let missing: Vec<_> = accepted.difference(&stored).take(10).collect();
    assert!(
        missing.is_empty(),
        "{} of {expected} accepted beacons are not in ClickHouse, e.g. {missing:?}",
        accepted.difference(&stored).count()
    );
    // A 503 may still have reached Kafka (its acknowledgement was lost): stored, but never twice.
    assert_eq!(raw, distinct, "no metric id is stored twice");
    assert_eq!(rollup, raw, "vitals_1m counts every stored row once");
}

fn cluster_env() -> Vec<(&'static str, String)> {
    vec![
        (
            "RUM_INGEST_DELIVERY_TIMEOUT_MS",
            DELIVERY_TIMEOUT_MS.to_string(),
        ),
        ("RUM_INGEST_RATE_LIMIT_PER_SECOND", "0".into()),
        ("RUM_CONSUMER_SESSION_TIMEOUT_MS", "6000".into()),
        ("RUM_CONSUMER_RETRY_MAX_BACKOFF_MS", "2000".into()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_killed_under_load_loses_no_accepted_beacon() {
    let _one = ONE_AT_A_TIME.lock().await;
    let env = cluster_env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut pipeline = Pipeline::start_on(Kafka::start_cluster(3), &env).await;

    let stop = Arc::new(AtomicBool::new(false));
    let load = steady_load(&pipeline.base, "kill", 8, stop.clone());
    tokio::time::sleep(Duration::from_secs(4)).await;
    // The broker that leads partition 0 of the beacons topic: its loss forces a leader election.
    let leader = pipeline.kafka.partition_leaders("rum.beacons.v1")[&0];
    let victim = pipeline.kafka.index_of(leader);
    eprintln!("SIGKILL kafka node {leader} under load");
    pipeline.kafka.kill_node(victim);
    // A leader election: partition 0 gets a new leader among the two brokers left, and takes beacons again.
    let kafka = &mut pipeline.kafka;
    tokio::task::block_in_place(|| kafka.wait_for_leaders("rum.beacons.v1", 4, FENCING));
    let new_leader = pipeline.kafka.partition_leaders("rum.beacons.v1")[&0];
    eprintln!("partition 0: leader {leader} -> {new_leader}");
    assert_ne!(new_leader, leader);
    tokio::time::sleep(Duration::from_secs(4)).await;
    eprintln!("starting kafka node {leader} again");
    let kafka = &mut pipeline.kafka;
    tokio::task::block_in_place(|| kafka.start_node(victim));
    tokio::time::sleep(Duration::from_secs(4)).await;
    stop.store(true, Ordering::Relaxed);
    let report = load.await.unwrap();
    eprintln!(
        "load: {} accepted, {} answered 503, slowest answer {:?}",
        report.accepted.len(),
        report.unavailable,
        report.slowest
    );

    assert!(
        report.other.is_empty(),
        "only 204 and 503 answers: {:?}",
        report.other
    );
    assert!(
        report.slowest <= REQUEST_BOUND,
        "a request waited {:?}, past the delivery timeout of {DELIVERY_TIMEOUT_MS} ms",
        report.slowest
    );
    assert!(
        report.accepted.len() > 100,
        "the ingest kept accepting: {}",
        report.accepted.len()
    );
    // Every 503 is counted with its reason.
    let metrics = exposition(&format!("{}/metrics", pipeline.base)).await;
    let counted = metric_sum(
        &metrics,
        "rum_beacons_rejected_total{reason=\"kafka_unavailable\"}",
    ) + metric_sum(
        &metrics,
        "rum_beacons_rejected_total{reason=\"producer_queue_full\"}",
    ) + metric_sum(
        &metrics,
        "rum_beacons_rejected_total{reason=\"overloaded\"}",
    );
    assert_eq!(
        counted, report.unavailable as f64,
        "503s counted by reason:\n{metrics}"
    );
    assert_accepted_stored_once(&pipeline.clickhouse, &report.accepted).await;
    assert_no_duplicates_dropped(&pipeline.consumer_metrics).await;
    pipeline.stop();
}

/// POSTs `n` beacons, each until one is accepted; returns the accepted ids. A retry after a 503 carries a new id
/// (`{prefix}-{i}-{attempt}`), so that a refused beacon that still reached Kafka is never a duplicate of an
/// accepted one: any metric the consumer drops as a duplicate is then a duplicate of the pipeline's own making.
async fn post_accepted(pipeline: &Pipeline, prefix: &str, n: usize) -> HashSet<String> {
    let mut accepted = HashSet::new();
    for i in 0..n {
        let deadline = Instant::now() + Duration::from_secs(90);
        let mut attempt = 0;
        loop {
            let id = format!("{prefix}-{i}-{attempt}");
            match pipeline.post("text/plain", "", &beacon(&id)).await {
                204 => {
                    accepted.insert(id);
                    break;
                }
                503 => {
                    assert!(
                        Instant::now() < deadline,
                        "beacon {prefix}-{i} not accepted within 90 s"
                    );
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                status => panic!("{id}: unexpected HTTP {status}"),
            }
        }
    }
    accepted
}

/// No metric was dropped as a duplicate by the consumer whose `/metrics` is at `url` (every beacon these tests
/// send has ids of its own).
async fn assert_no_duplicates_dropped(url: &str) {
    let metrics = exposition(url).await;
    assert_eq!(
        metric_sum(&metrics, "rum_consumer_metrics_deduplicated_total"),
        0.0,
        "the consumer dropped duplicates the pipeline made:\n{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_consumer_group_survives_losing_its_coordinator() {
    let _one = ONE_AT_A_TIME.lock().await;
    let env = cluster_env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut pipeline = Pipeline::start_on(Kafka::start_cluster(3), &env).await;
    let second_port = free_port();
    let second = pipeline.spawn_consumer(second_port);
    let second_metrics = format!("http://127.0.0.1:{second_port}/metrics");

    let mut accepted = post_accepted(&pipeline, "before", 300).await;
    let clickhouse = &pipeline.clickhouse;
    eventually(
        "the first beacons stored",
        Duration::from_secs(60),
        async || common::stored_counts(clickhouse).filter(|(raw, _, _)| *raw >= 300),
    )
    .await;

    let coordinator = eventually("a group coordinator", Duration::from_secs(30), async || {
        pipeline.kafka.group_coordinator("rum-consumers")
    })
    .await;
    let victim = pipeline.kafka.index_of(coordinator);
    eprintln!("SIGKILL kafka node {coordinator}, the coordinator of group rum-consumers");
    pipeline.kafka.kill_node(victim);
    accepted.extend(post_accepted(&pipeline, "coordinator-lost", 300).await);
    // The group moves to a new coordinator and goes on storing while the old one is down.
    let moved = eventually("a new group coordinator", FENCING, async || {
        pipeline
            .kafka
            .group_coordinator("rum-consumers")
            .filter(|c| *c != coordinator)
    })
    .await;
    eprintln!("group coordinator {coordinator} -> {moved}");
    let clickhouse = &pipeline.clickhouse;
    let stored_while_down = async |n: u64| {
        eventually(
            "beacons stored while the old coordinator is down",
            Duration::from_secs(90),
            async || common::stored_counts(clickhouse).filter(|(raw, _, _)| *raw >= n),
        )
        .await
    };
    stored_while_down(600).await;

    // A member leaves while the group has its new coordinator: the other one takes every partition.
    eprintln!("SIGKILL the first consumer");
    pipeline.consumer.kill();
    accepted.extend(post_accepted(&pipeline, "one-member", 300).await);
    stored_while_down(900).await;
    let kafka = &mut pipeline.kafka;
    tokio::task::block_in_place(|| kafka.start_node(victim));
    accepted.extend(post_accepted(&pipeline, "after", 100).await);

    assert_accepted_stored_once(&pipeline.clickhouse, &accepted).await;
    assert_no_duplicates_dropped(&second_metrics).await;
    drop(second);
    assert!(
        pipeline.ingest.terminate(Duration::from_secs(20)).success(),
        "ingest exits cleanly on SIGTERM"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_three_brokers_stopped_and_restarted_lose_nothing_and_double_nothing() {
    let _one = ONE_AT_A_TIME.lock().await;
    let env = cluster_env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut pipeline = Pipeline::start_on(Kafka::start_cluster(3), &env).await;

    let mut accepted = post_accepted(&pipeline, "before", 300).await;
    // Beacons in flight while the brokers go down: what got a 204 must survive.
    let stop = Arc::new(AtomicBool::new(false));
    let load = steady_load(&pipeline.base, "in-flight", 4, stop.clone());
    tokio::time::sleep(Duration::from_secs(2)).await;
    eprintln!("stopping all three brokers");
    let kafka = &mut pipeline.kafka;
    tokio::task::block_in_place(|| kafka.stop());
    // With no broker, beacons are refused with 503 in bounded time.
    tokio::time::sleep(Duration::from_secs(DELIVERY_TIMEOUT_MS / 1000 + 2)).await;
    let started = Instant::now();
    let status = pipeline.post("text/plain", "", &beacon("no-broker")).await;
    assert_eq!(status, 503, "no broker: 503");
    assert!(
        started.elapsed() <= REQUEST_BOUND,
        "the 503 took {:?}",
        started.elapsed()
    );
    stop.store(true, Ordering::Relaxed);
    let report = load.await.unwrap();
    assert!(
        report.other.is_empty(),
        "only 204 and 503 answers: {:?}",
        report.other
    );
    eprintln!(
        "in flight: {} accepted, {} answered 503; starting the brokers again",
        report.accepted.len(),
        report.unavailable
    );
    accepted.extend(report.accepted);
    let kafka = &mut pipeline.kafka;
    tokio::task::block_in_place(|| kafka.start_all());
    accepted.extend(post_accepted(&pipeline, "after", 300).await);

    assert_accepted_stored_once(&pipeline.clickhouse, &accepted).await;
    assert_no_duplicates_dropped(&pipeline.consumer_metrics).await;
    pipeline.stop();
}
