//! Final values, not first values (issue 17), with real processes: Apache Kafka, the ClickHouse server 18.16
//! and `rum consume` members killed and started again. A page load re-sends its CLS as it grows; the last
//! value is the one in `vitals_raw` (highest revision), in `vitals_1m` (one sample, in the last value's
//! bucket) and in `rum query`, through a restart (the value before read back from ClickHouse), a member killed
//! between the raw and the rollup INSERT, and first value and re-send in one batch.

mod common;

use std::time::Duration;

use common::stack::Stack;
use common::{eventually, exposition, labelled, metric_sum, rum_output};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rum_schemas::{BeaconMessage, Device, MetricName, MetricSample};
use rum_testkit::{free_port, FaultProxy, ProxyMode};

/// One beacon of the page load `id` with its CLS.
fn cls(id: &str, value: f64, resend: bool, received_at: u32) -> BeaconMessage {
    BeaconMessage {
        site: "shop".into(),
        route: "cart".into(),
        device: Device::Mobile,
        nav_type: "navigate".into(),
        sample_rate: 1.0,
        received_at: u64::from(received_at) * 1000 + 250,
        page_id: String::new(),
        release: String::new(),
        rtt: "unknown".into(),
        browser: "unknown".into(),
        browser_major: 0,
        metrics: vec![MetricSample {
            name: MetricName::CLS,
            value,
            id: id.into(),
            rating: MetricName::CLS.rate(value),
            resend,
            attribution: Default::default(),
        }],
    }
}

async fn produce(producer: &FutureProducer, messages: &[BeaconMessage]) {
    for message in messages {
        let (key, value) = (message.key(), message.encode());
        producer
            .send(
                FutureRecord::<[u8], [u8]>::to("rum.beacons.v1")
                    .key(key.as_bytes())
                    .payload(&value),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .expect("produced");
    }
}

/// Per metric id: the current value (highest revision), the highest revision, the rows read `FINAL` (one:
/// `vitals_raw` is a ReplacingMergeTree by revision) and the distinct `received_at` of its rows (every
/// replacement keeps its first row's). Each holds whether or not the rows were merged yet.
fn raw(stack: &Stack) -> String {
    stack.clickhouse.query(RAW)
}

const RAW: &str = "SELECT metric_id, v, r, c, u FROM \
     (SELECT metric_id, argMax(value, revision) AS v, max(revision) AS r, uniqExact(received_at) AS u \
      FROM rum.vitals_raw GROUP BY metric_id) \
     ANY LEFT JOIN (SELECT metric_id, count() AS c FROM rum.vitals_raw FINAL GROUP BY metric_id) \
     USING metric_id ORDER BY metric_id FORMAT TSV";

/// CLS in vitals_1m: samples, good, needs improvement, poor, the sketch's buckets, and the minutes.
fn rollup(stack: &Stack) -> String {
    stack.clickhouse.query(
        "SELECT countMerge(samples), sumMerge(good), sumMerge(needs_improvement), sumMerge(poor), \
         sumMapMerge(sketch), uniqExact(minute) \
         FROM rum.vitals_1m WHERE site = 'shop' AND metric = 'CLS' FORMAT TSV",
    )
}

async fn wait_for_raw(stack: &Stack, expected: &str) {
    eventually(
        &format!("vitals_raw holding\n{expected}"),
        Duration::from_secs(90),
        async || (raw(stack) == expected).then_some(()),
    )
    .await;
}

async fn wait_for_rollup(stack: &Stack, expected: &str) {
    eventually(
        &format!("vitals_1m holding {expected}"),
        Duration::from_secs(90),
        async || (rollup(stack).trim() == expected).then_some(()),
    )
    .await;
}

fn sketch(values: &[f64]) -> String {
    let buckets = rum_clickhouse::sketch_of(values.iter().copied());
    let keys: Vec<String> = buckets.iter().map(|(k, _)| k.to_string()).collect();
    let counts: Vec<String> = buckets.iter().map(|(_, c)| c.to_string()).collect();
    format!("([{}],[{}])", keys.join(","), counts.join(","))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resent_metric_replaces_its_value_once_through_restarts_and_a_lost_rollup() {
    let mut stack = Stack::start();
    let producer = stack.producer();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as u32;
    // Ten minutes ago, in today's UTC day (a re-send of another day's first value is dropped).
    let t = (now - 600).max(now - now % 86_400 + 1);

    // 1. The first value of page load a: CLS 0.05.
    let port = free_port();
    let mut first = stack.consumer(port);
    produce(&producer, &[cls("load-a", 0.05, false, t)]).await;
    wait_for_raw(&stack, "load-a\t0.05\t0\t1\t1\n").await;
    wait_for_rollup(&stack, &format!("1\t1\t0\t0\t{}\t1", sketch(&[0.05]))).await;
    first.kill();

    // 2. A new member (nothing remembered) gets the re-send, two minutes later: 0.3, read back from vitals_raw's
    // 0.05. It is killed between the raw and the rollup INSERT: a proxy in front of ClickHouse holds the rollup.
    let direct = stack.clickhouse_url.clone();
    let proxy = FaultProxy::start(std::net::SocketAddr::from((
        [127, 0, 0, 1],
        stack.clickhouse.http_port,
    )));
    proxy.set_mode(ProxyMode::Hold {
        matching: "INSERT INTO vitals_1m_input_v2".into(),
    });
    stack.clickhouse_url = proxy.url();
    let port = free_port();
    let mut second = stack.consumer(port);
    stack.clickhouse_url = direct;
    produce(&producer, &[cls("load-a", 0.3, true, t + 120)]).await;
    eventually(
        "the rollup INSERT held",
        Duration::from_secs(90),
        async || proxy.holding().then_some(()),
    )
    .await;
    let metrics = exposition(&format!("http://127.0.0.1:{port}/metrics")).await;
    assert_eq!(
        labelled(
            &metrics,
            "rum_consumer_final_value_lookups_total",
            "result=\"found\""
        ),
        1.0,
        "the value before was read from vitals_raw"
    );
    // The replacement row: revision 1, in the first value's second (so in its minute).
    wait_for_raw(&stack, "load-a\t0.3\t1\t1\t1\n").await;
    second.kill();
    drop(proxy);
    // vitals_1m still holds the first value only.
    assert_eq!(
        rollup(&stack).trim(),
        format!("1\t1\t0\t0\t{}\t1", sketch(&[0.05]))
    );

    // 3. While no member runs: a third value of a (0.42), and page load b's first value and re-send, which
    // one batch then holds. b's id holds a `?` and a quote (read back in step 4 by a query sent as it is).
    produce(
        &producer,
        &[
            cls("load-a", 0.42, true, t + 180),
            cls("load-b?'", 0.05, false, t + 60),
            cls("load-b?'", 0.3, true, t + 65),
        ],
    )
    .await;
    let port = free_port();
    let mut third = stack.consumer(port);
    // The held replacement is rolled up alone first (0.05 out, 0.3 in), then 0.42 replaces 0.3; b is one row.
    wait_for_raw(&stack, "load-a\t0.42\t2\t1\t1\nload-b?\\'\t0.3\t0\t1\t1\n").await;
    wait_for_rollup(&stack, &format!("2\t0\t0\t2\t{}\t2", sketch(&[0.42, 0.3]))).await;
    let metrics = exposition(&format!("http://127.0.0.1:{port}/metrics")).await;
    assert_eq!(
        metric_sum(&metrics, "rum_consumer_rollup_repaired_rows_total"),
        1.0
    );
    assert_eq!(
        metric_sum(&metrics, "rum_consumer_metrics_replaced_total"),
        2.0,
        "0.42 replaced 0.3; b's 0.3 replaced its 0.05 in the batch"
    );
    assert_eq!(
        metric_sum(&metrics, "rum_consumer_final_value_lookups_total"),
        0.0,
        "the read-back row was remembered"
    );
    third.kill();

    // 4. After a restart: a's 0.5 replaces 0.42 (read from vitals_raw); b's 0.3 again is a duplicate.
    let port = free_port();
    let _fourth = stack.consumer(port);
    produce(
        &producer,
        &[
            cls("load-a", 0.5, true, t + 240),
            cls("load-b?'", 0.3, true, t + 250),
        ],
    )
    .await;
    wait_for_raw(&stack, "load-a\t0.5\t3\t1\t1\nload-b?\\'\t0.3\t0\t1\t1\n").await;
    wait_for_rollup(&stack, &format!("2\t0\t0\t2\t{}\t2", sketch(&[0.5, 0.3]))).await;
    let metrics = exposition(&format!("http://127.0.0.1:{port}/metrics")).await;
    assert_eq!(
        labelled(
            &metrics,
            "rum_consumer_final_value_lookups_total",
            "result=\"found\""
        ),
        2.0
    );
    eventually(
        "b's unchanged re-send counted",
        Duration::from_secs(30),
        async || {
            let m = exposition(&format!("http://127.0.0.1:{port}/metrics")).await;
            (metric_sum(&m, "rum_consumer_metrics_deduplicated_total") == 1.0).then_some(())
        },
    )
    .await;

    // 5. rum query agrees: two page loads, p75 = the larger final value's bucket, both poor.
    let out = rum_output(
        &[
            "query", "p75", "--site", "shop", "--since", "1h", "--format", "json",
        ],
        &[("RUM_CLICKHOUSE_URL", stack.clickhouse.url.as_str())],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let row: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(row["metric"], "CLS", "{text}");
    assert_eq!(row["samples"], 2, "{text}");
    assert_eq!(row["poor_share"], 1.0, "{text}");
    let p75 = row["p75"].as_f64().unwrap();
    assert!(
        (p75 - 0.5).abs() / 0.5 <= 0.005,
        "p75 {p75} is the sketch's value of 0.5 (within its 0.5 % bound): {text}"
    );
}

/// Cluster mode (2 shards x 2 replicas, `Distributed` tables): a member that remembers nothing reads the value
/// before through the cluster, and the replacement lands once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resend_replaces_its_value_once_on_a_cluster() {
    let kafka = rum_testkit::Kafka::start();
    kafka.create_pipeline_topics();
    let cluster = rum_testkit::ClickHouseCluster::start(2, 2);
    let entry = cluster.node(1, 1);
    let env = [
        ("RUM_CLICKHOUSE_URL", entry.url.as_str()),
        ("RUM_CLICKHOUSE_CLUSTER", "rum"),
    ];
    let out = rum_output(&["migrate"], &env);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let member = || {
        let port = free_port();
        let port_text = port.to_string();
        let mut member_env = vec![
            ("RUM_KAFKA_BROKERS", kafka.brokers.as_str()),
            ("RUM_CONSUMER_PORT", port_text.as_str()),
            ("RUM_CONSUMER_BATCH_MAX_WAIT_MS", "50"),
            ("RUM_CONSUMER_FENCE_LEASE_MS", "1000"),
        ];
        member_env.extend_from_slice(&env);
        (common::RumProcess::spawn(&["consume"], &member_env), port)
    };
    let producer: FutureProducer = rdkafka::config::ClientConfig::new()
        .set("bootstrap.servers", &kafka.brokers)
        .create()
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as u32;
    let t = (now - 600).max(now - now % 86_400 + 1);
    let raw = || entry.query(RAW);
    let rollup = || {
        entry.query(
            "SELECT countMerge(samples), sumMerge(good), sumMerge(poor), sumMapMerge(sketch) \
             FROM rum.vitals_1m WHERE site = 'shop' AND metric = 'CLS' FORMAT TSV",
        )
    };

    let (mut first, _) = member();
    produce(&producer, &[cls("load-c", 0.05, false, t)]).await;
    eventually("the first value", Duration::from_secs(120), async || {
        (raw() == "load-c\t0.05\t0\t1\t1\n").then_some(())
    })
    .await;
    first.kill();

    let (_second, port) = member();
    produce(&producer, &[cls("load-c", 0.3, true, t + 120)]).await;
    eventually("the replacement", Duration::from_secs(120), async || {
        (raw() == "load-c\t0.3\t1\t1\t1\n").then_some(())
    })
    .await;
    let expected = format!("1\t0\t1\t{}", sketch(&[0.3]));
    eventually("its rollup", Duration::from_secs(60), async || {
        (rollup().trim() == expected).then_some(())
    })
    .await;
    let metrics = exposition(&format!("http://127.0.0.1:{port}/metrics")).await;
    assert_eq!(
        labelled(
            &metrics,
            "rum_consumer_final_value_lookups_total",
            "result=\"found\""
        ),
        1.0,
        "read through the cluster"
    );
}

/// A consumer started before `rum migrate` (the database at migration 005, without 006's columns) writes nothing
/// and says why; once the migration ran it writes what waited, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_ahead_of_the_database_waits_for_rum_migrate() {
    let stack = Stack::start_at_version(5).await;
    let producer = stack.producer();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as u32;
    let log = std::env::temp_dir().join(format!("rum-final-values-{}.log", std::process::id()));
    let port = free_port();
    let port_text = port.to_string();
    let _member = common::RumProcess::spawn_logged(
        &["consume"],
        &[
            ("RUM_KAFKA_BROKERS", stack.kafka.brokers.as_str()),
            ("RUM_CLICKHOUSE_URL", stack.clickhouse.url.as_str()),
            ("RUM_CONSUMER_PORT", port_text.as_str()),
            ("RUM_CONSUMER_RETRY_MAX_BACKOFF_MS", "500"),
        ],
        &log,
    );
    produce(&producer, &[cls("load-m", 0.05, false, now)]).await;
    common::wait_for_failed_step(port, "learn_floors", Duration::from_secs(60)).await;
    let said = std::fs::read_to_string(&log).unwrap();
    assert!(
        said.contains(
            "the database is at migration 5, this consumer writes the tables of migration 6: run `rum migrate`"
        ),
        "{said}"
    );
    assert_eq!(
        stack
            .clickhouse
            .query("SELECT count() FROM rum.vitals_raw FORMAT TSV")
            .trim(),
        "0",
        "nothing written"
    );
    let out = rum_output(
        &["migrate"],
        &[("RUM_CLICKHOUSE_URL", stack.clickhouse.url.as_str())],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for_raw(&stack, "load-m\t0.05\t0\t1\t1\n").await;
    let _ = std::fs::remove_file(&log);
}
