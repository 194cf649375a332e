//! Cluster mode (`clickhouse.cluster`) end to end, with real processes: Apache Kafka, a ClickHouse 18.16 cluster of
//! 2 shards x 2 replicas with its ZooKeeper, `rum migrate` and `rum consume`. Beacons flow while a replica is
//! SIGKILLed and started again; then the counts read through the `Distributed` tables are exact, every Kafka
//! partition (its rows and its ledger) is on exactly one shard, both replicas of each shard hold the same, and
//! `rum query p75` on the cluster prints what it prints on one server that stored the same messages.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::{exposition, metric_sum, rum_output, stored_counts, RumProcess};
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rum_schemas::{BeaconMessage, Device, MetricName, MetricSample};
use rum_testkit::{free_port, ClickHouseCluster, ClickHouseServer, Kafka};

/// Every beacon carries LCP, CLS and INP.
const METRICS_PER_BEACON: u64 = 3;
/// The partitions of `rum.beacons.v1` (`Kafka::create_pipeline_topics`).
const PARTITIONS: u64 = 4;

/// `rum migrate` with `env`; its stdout.
fn migrate(env: &[(&str, &str)]) -> String {
    let out = rum_output(&["migrate"], env);
    assert!(
        out.status.success(),
        "rum migrate: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A member of consumer group `group`, writing where `clickhouse` (the `RUM_CLICKHOUSE_*` settings) says.
fn consumer(
    kafka: &Kafka,
    clickhouse: &[(&str, &str)],
    group: &str,
    log: &std::path::Path,
) -> (RumProcess, u16) {
    let port = free_port();
    let port_text = port.to_string();
    let mut env = vec![
        ("RUM_KAFKA_BROKERS", kafka.brokers.as_str()),
        ("RUM_CONSUMER_GROUP_ID", group),
        ("RUM_CONSUMER_PORT", port_text.as_str()),
        ("RUM_CONSUMER_BATCH_MAX_MESSAGES", "200"),
        ("RUM_CONSUMER_BATCH_MAX_WAIT_MS", "50"),
        ("RUM_CONSUMER_SESSION_TIMEOUT_MS", "6000"),
        ("RUM_CONSUMER_RETRY_MAX_BACKOFF_MS", "1000"),
        ("RUM_CONSUMER_FENCE_LEASE_MS", "1000"),
    ];
    env.extend_from_slice(clickhouse);
    (RumProcess::spawn_logged(&["consume"], &env, log), port)
}

/// Beacon `i`: site shop, 7 routes x 3 devices, three metrics of varied values (so p75 means something).
fn beacon(i: u64, received_at: u64) -> BeaconMessage {
    let spread = (i * 7919) % 1000;
    BeaconMessage {
        site: "shop".into(),
        route: format!("route-{}", i % 7),
        device: [Device::Mobile, Device::Desktop, Device::Tablet][i as usize % 3],
        nav_type: "navigate".into(),
        sample_rate: 1.0,
        received_at,
        page_id: String::new(),
        release: String::new(),
        rtt: "unknown".into(),
        browser: "unknown".into(),
        browser_major: 0,
        metrics: [
            (MetricName::LCP, 800.0 + 4.0 * spread as f64),
            (MetricName::CLS, spread as f64 / 2000.0),
            (MetricName::INP, 40.0 + spread as f64 / 2.0),
        ]
        .into_iter()
        .map(|(name, value)| MetricSample {
            name,
            value,
            id: format!("{i}-{}", name.as_str()),
            rating: name.rate(value),
            resend: false,
            attribution: Default::default(),
        })
        .collect(),
    }
}

/// Publishes beacons `range` to partition `i % 4`, `chunk` at a time, `pause` between chunks.
async fn produce(brokers: String, range: std::ops::Range<u64>, chunk: u64, pause: Duration) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("enable.idempotence", "true")
        .set("linger.ms", "20")
        .create()
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let mut start = range.start;
    while start < range.end {
        let end = (start + chunk).min(range.end);
        let mut pending = Vec::new();
        for i in start..end {
            let message = beacon(i, now);
            let (key, value) = (message.key(), message.encode());
            let record = FutureRecord::<[u8], [u8]>::to("rum.beacons.v1")
                .key(key.as_bytes())
                .payload(&value)
                .partition((i % PARTITIONS) as i32);
            pending.push(
                producer
                    .send_result(record)
                    .map_err(|(e, _)| e)
                    .expect("enqueued"),
            );
        }
        for p in pending {
            p.await
                .expect("delivered")
                .map_err(|(e, _)| e)
                .expect("produced");
        }
        start = end;
        tokio::time::sleep(pause).await;
    }
}

/// Polls until `check` holds, at most `within`; panics naming `what` with the last value seen.
async fn wait_until<T: std::fmt::Debug>(
    what: &str,
    within: Duration,
    mut read: impl FnMut() -> T,
    check: impl Fn(&T) -> bool,
) -> T {
    let deadline = Instant::now() + within;
    loop {
        let value = read();
        if check(&value) {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}; last: {value:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One number from `node`.
fn number(node: &ClickHouseServer, sql: &str) -> Option<u64> {
    node.try_query(sql).ok()?.trim().parse().ok()
}

/// The distinct numbers of one column `node` answers.
fn numbers(node: &ClickHouseServer, sql: &str) -> BTreeSet<u64> {
    node.query(sql)
        .lines()
        .map(|l| l.trim().parse().expect("a number"))
        .collect()
}

/// `rum query p75` of site shop over the last hour, as JSON lines.
fn p75(clickhouse: &[(&str, &str)]) -> String {
    let out = rum_output(
        &[
            "query", "p75", "--site", "shop", "--since", "1h", "--format", "json",
        ],
        clickhouse,
    );
    assert!(
        out.status.success(),
        "rum query p75: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_stores_each_message_once_through_a_killed_replica_and_answers_like_one_server() {
    let started = Instant::now();
    let kafka = Kafka::start();
    kafka.create_pipeline_topics();
    let mut cluster = ClickHouseCluster::start(2, 2);
    let entry = cluster.node(1, 1).url.clone();
    let cluster_env = [
        ("RUM_CLICKHOUSE_URL", entry.as_str()),
        ("RUM_CLICKHOUSE_CLUSTER", "rum"),
    ];
    let versions: Vec<u32> = rum_clickhouse::MIGRATIONS
        .iter()
        .map(|m| m.version)
        .collect();
    let first = migrate(&cluster_env);
    assert!(
        first.contains(&format!("{} applied {versions:?}", versions.len())),
        "{first}"
    );
    let again = migrate(&cluster_env);
    assert!(
        again.contains(&format!("0 applied [], {} already applied", versions.len())),
        "a second run changes nothing: {again}"
    );
    eprintln!(
        "kafka, cluster and migrations ready in {:?}",
        started.elapsed()
    );

    let logs = std::env::temp_dir().join(format!("rum-cluster-test-{}", std::process::id()));
    std::fs::create_dir_all(&logs).unwrap();
    eprintln!("consumer logs in {}", logs.display());
    let (mut member, port) = consumer(
        &kafka,
        &cluster_env,
        "rum-cluster",
        &logs.join("cluster-consumer.log"),
    );

    // Beacons flow for a few seconds; a replica of shard 02 is SIGKILLed once rows arrive and started again
    // after the flow.
    const N: u64 = 4_000;
    let expected = N * METRICS_PER_BEACON;
    let flow = tokio::spawn(produce(
        kafka.brokers.clone(),
        0..N,
        100,
        Duration::from_millis(100),
    ));
    let entry_node = cluster.node(1, 1);
    let before_kill = wait_until(
        "the first rows",
        Duration::from_secs(60),
        || stored_counts(entry_node),
        |c| c.is_some_and(|(raw, _, _)| raw > 0),
    )
    .await;
    cluster.node_mut(2, 1).kill();
    let killed_at = Instant::now();
    eprintln!("s02r1 SIGKILLed with {before_kill:?} stored");
    flow.await.unwrap();
    let during = stored_counts(cluster.node(1, 1));
    cluster.node_mut(2, 1).start_again();
    eprintln!(
        "s02r1 started again after {:?} down; stored meanwhile {during:?}",
        killed_at.elapsed()
    );

    let entry_node = cluster.node(1, 1);
    let exact = wait_until(
        "exact counts through the Distributed tables",
        Duration::from_secs(180),
        || stored_counts(entry_node),
        |c| *c == Some((expected, expected, expected)),
    )
    .await;
    eprintln!(
        "exact counts {exact:?} {:?} after the start",
        started.elapsed()
    );

    // Both replicas of each shard hold the same rows and samples once replication caught up, and the shards
    // add up to the whole.
    let mut shard_partitions = Vec::new();
    let mut shard_rows = 0;
    for shard in 1..=2 {
        let (a, b) = (cluster.node(shard, 1), cluster.node(shard, 2));
        let local = |node: &ClickHouseServer| {
            (
                number(node, "SELECT count() FROM rum_local.vitals_raw"),
                number(node, "SELECT countMerge(samples) FROM rum_local.vitals_1m"),
            )
        };
        let (rows, samples) = wait_until(
            &format!("both replicas of shard {shard} to hold the same"),
            Duration::from_secs(90),
            || (local(a), local(b)),
            |(x, y)| x == y && x.0.is_some() && x.1.is_some(),
        )
        .await
        .0;
        let (rows, samples) = (rows.unwrap(), samples.unwrap());
        assert_eq!(
            rows, samples,
            "shard {shard}: the rollup has every raw row once"
        );
        shard_rows += rows;
        let raw = numbers(
            a,
            "SELECT DISTINCT kafka_partition FROM rum_local.vitals_raw",
        );
        let ledgers = numbers(
            a,
            "SELECT DISTINCT toUInt32(device) FROM rum_local.vitals_1m WHERE site = ''",
        );
        assert_eq!(
            raw, ledgers,
            "shard {shard}: a partition's ledger lives beside its rows"
        );
        eprintln!("shard {shard}: partitions {raw:?}, {rows} rows");
        shard_partitions.push(raw);
    }
    assert_eq!(shard_rows, expected, "the shards add up to the whole");
    assert!(
        shard_partitions[0].is_disjoint(&shard_partitions[1]),
        "each Kafka partition's rows are on exactly one shard: {shard_partitions:?}"
    );
    let all: BTreeSet<u64> = shard_partitions.iter().flatten().copied().collect();
    assert_eq!(all, (0..PARTITIONS).collect::<BTreeSet<u64>>());

    let metrics = exposition(&format!("http://127.0.0.1:{port}/metrics")).await;
    eprintln!(
        "cluster member: write errors {}, unfinished inserts waited for {}, rows repaired {}",
        metric_sum(&metrics, "rum_consumer_write_errors_total"),
        metric_sum(&metrics, "rum_consumer_unfinished_inserts_total"),
        metric_sum(&metrics, "rum_consumer_rollup_repaired_rows_total"),
    );
    assert!(member.terminate(Duration::from_secs(30)).success());

    // The same messages into one server, by a group of its own; then p75 from both.
    let single = ClickHouseServer::start();
    let single_env = [("RUM_CLICKHOUSE_URL", single.url.as_str())];
    migrate(&single_env);
    let (mut single_member, _) = consumer(
        &kafka,
        &single_env,
        "rum-single",
        &logs.join("single-consumer.log"),
    );
    wait_until(
        "exact counts on the single server",
        Duration::from_secs(120),
        || stored_counts(&single),
        |c| *c == Some((expected, expected, expected)),
    )
    .await;
    assert!(single_member.terminate(Duration::from_secs(30)).success());

    let on_cluster = p75(&cluster_env);
    let on_one = p75(&single_env);
    assert_eq!(on_cluster.lines().count(), 7 * 3 * 3, "{on_cluster}");
    assert_eq!(on_cluster, on_one, "rum query p75: cluster vs one server");
    eprintln!(
        "p75 identical on the cluster and one server ({} lines); {:?} in all",
        on_cluster.lines().count(),
        started.elapsed()
    );
    if std::env::var_os("KEEP_LOGS").is_none() {
        let _ = std::fs::remove_dir_all(&logs);
    }
}
