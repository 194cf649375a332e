//! Cluster mode against real ClickHouse 18.16 servers (2 shards x 2 replicas) and ZooKeeper: `migrate` twice, retention
//! on every node, and the unfinished INSERTs of the consumer found and waited for on every node, the shard's part of
//! a `Distributed` INSERT included.

use std::time::{Duration, Instant};

use rum_clickhouse::ledger::{insert_rows, kill_queries, running_queries, Tables};
use rum_clickhouse::{apply_retention, migrate, ClickHouseConfig, RetentionFailure, MIGRATIONS};
use rum_testkit::{ClickHouseCluster, ClickHouseServer};

const SYNC: &[(&str, &str)] = &[("insert_distributed_sync", "1")];

fn config(cluster: &ClickHouseCluster) -> ClickHouseConfig {
    ClickHouseConfig {
        url: cluster.url().to_string(),
        cluster: Some(cluster.cluster_name().to_string()),
        ..ClickHouseConfig::default()
    }
}

/// The sorted distinct answers (one value a line) of `sql` on `node`.
fn lines(node: &ClickHouseServer, sql: &str) -> Vec<String> {
    node.query(sql).lines().map(str::to_string).collect()
}

fn strings(values: &[&str]) -> Vec<String> {
    values.iter().map(|v| v.to_string()).collect()
}

/// Polls `read` until it returns `expected`, at most `within`.
async fn eventually<T: PartialEq + std::fmt::Debug>(
    what: &str,
    within: Duration,
    expected: T,
    mut read: impl FnMut() -> T,
) {
    let deadline = Instant::now() + within;
    loop {
        let got = read();
        if got == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {got:?}, not {expected:?}, after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[derive(clickhouse::Row, serde::Serialize)]
struct Slow {
    kafka_partition: u32,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_retention_and_unfinished_inserts_on_every_node() {
    let mut cluster = ClickHouseCluster::start(2, 2);
    let config = config(&cluster);

    // Migrations: every table on every node; a second run changes nothing.
    let all: Vec<u32> = MIGRATIONS.iter().map(|m| m.version).collect();
    let first = migrate(&config).await.unwrap();
    assert_eq!(first.applied, all);
    let again = migrate(&config).await.unwrap();
    assert!(again.applied.is_empty());
    assert_eq!(again.already_applied, all);
    for node in cluster.nodes() {
        assert_eq!(
            lines(
                node,
                "SELECT database || '.' || name || ' ' || engine FROM system.tables \
                 WHERE database IN ('rum', 'rum_local') ORDER BY database, name"
            ),
            [
                "rum.kafka_offsets Distributed",
                "rum.schema_migrations ReplicatedReplacingMergeTree",
                "rum.vitals_1m Distributed",
                "rum.vitals_1m_input Distributed",
                "rum.vitals_1m_input_v2 Distributed",
                "rum.vitals_raw Distributed",
                "rum_local.kafka_offsets ReplicatedAggregatingMergeTree",
                "rum_local.vitals_1m ReplicatedAggregatingMergeTree",
                "rum_local.vitals_1m_input Null",
                "rum_local.vitals_1m_input_v2 Null",
                "rum_local.vitals_1m_rollup MaterializedView",
                "rum_local.vitals_1m_rollup_v2 MaterializedView",
                "rum_local.vitals_raw ReplicatedReplacingMergeTree",
                "rum_local.vitals_raw_pre007 ReplicatedMergeTree",
            ],
            "{}",
            node.url
        );
        // Replicated to every node (each fetches the records in the background).
        eventually(
            &format!("migrations recorded on {}", node.url),
            Duration::from_secs(30),
            all.len().to_string(),
            || {
                node.query("SELECT count() FROM rum.schema_migrations FINAL")
                    .trim()
                    .to_string()
            },
        )
        .await;
    }
    // One server's migrate refuses the cluster's database.
    let single = ClickHouseConfig {
        cluster: None,
        ..config.clone()
    };
    let refused = migrate(&single).await.unwrap_err().to_string();
    assert!(refused.contains("set clickhouse.cluster"), "{refused}");

    // Retention: old days and months of every shard go, from both replicas.
    for partition in 0..4 {
        for at in [
            "2024-01-01 10:00:00",
            "2024-01-02 10:00:00",
            "2024-03-15 10:00:00",
        ] {
            cluster.node(1, 1).query_with_settings(
                &format!(
                    "INSERT INTO rum.vitals_raw (received_at, site, kafka_partition, kafka_offset) \
                     VALUES ('{at}', 'shop', {partition}, 1)"
                ),
                SYNC,
            );
        }
        for at in ["2023-01-15 10:00:00", "2024-03-15 10:00:00"] {
            cluster.node(1, 1).query_with_settings(
                &format!(
                    "INSERT INTO rum.vitals_1m_input_v2 (received_at, site, route, device, metric, value, rating, \
                     sample_rate, kafka_partition, ledger_next) \
                     VALUES ('{at}', 'shop', 'root', 'mobile', 'LCP', 1, 'good', 1, {partition}, 0)"
                ),
                SYNC,
            );
        }
    }
    let partitions = |node: &ClickHouseServer, table: &str| {
        lines(
            node,
            &format!(
                "SELECT DISTINCT partition FROM system.parts WHERE database = 'rum_local' \
                 AND table = '{table}' AND active ORDER BY partition"
            ),
        )
    };
    for node in cluster.nodes() {
        eventually(
            "replicated days",
            Duration::from_secs(30),
            strings(&["20240101", "20240102", "20240315"]),
            || partitions(node, "vitals_raw"),
        )
        .await;
        eventually(
            "replicated months",
            Duration::from_secs(30),
            strings(&["202301", "202403"]),
            || partitions(node, "vitals_1m"),
        )
        .await;
    }
    let now = 1_710_504_000; // 2024-03-15 12:00:00 UTC
    let report = apply_retention(&config, 30, 400, now, Duration::from_secs(60)).await;
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    assert_eq!(report.raw_dropped, [20_240_101, 20_240_102]);
    assert_eq!(report.rollup_dropped, [202_301]);
    for node in cluster.nodes() {
        eventually(
            "days left",
            Duration::from_secs(30),
            strings(&["20240315"]),
            || partitions(node, "vitals_raw"),
        )
        .await;
        eventually(
            "months left",
            Duration::from_secs(30),
            strings(&["202403"]),
            || partitions(node, "vitals_1m"),
        )
        .await;
    }
    let report = apply_retention(&config, 30, 400, now, Duration::from_secs(60)).await;
    assert!(
        report.raw_dropped.is_empty()
            && report.rollup_dropped.is_empty()
            && report.failures.is_empty()
    );
    assert_eq!(
        cluster
            .node(2, 2)
            .query("SELECT count() FROM rum.vitals_raw")
            .trim(),
        "4",
        "the day kept, all four partitions"
    );
    // A node that does not answer: nothing is read or dropped, and both tables say why.
    cluster.node_mut(2, 2).kill();
    let report = apply_retention(&config, 30, 400, now, Duration::from_secs(60)).await;
    let failed: Vec<(&str, Option<u32>)> = report
        .failures
        .iter()
        .map(|f: &RetentionFailure| (f.table, f.partition))
        .collect();
    assert_eq!(
        failed,
        [("vitals_raw", None), ("vitals_1m", None)],
        "{:?}",
        report.failures
    );
    cluster.node_mut(2, 2).start_again();

    // Unfinished INSERTs: a Distributed INSERT whose shard part is slow (a view that sleeps 2 s).
    let node = cluster.node(1, 1);
    for statement in [
        "CREATE TABLE rum_local.slow ON CLUSTER rum (kafka_partition UInt32) ENGINE = Null",
        "CREATE TABLE rum_local.slow_sink ON CLUSTER rum (kafka_partition UInt32, slept UInt8) \
         ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/rum_local/slow_sink', '{replica}') ORDER BY kafka_partition",
        "CREATE MATERIALIZED VIEW rum_local.slow_view ON CLUSTER rum TO rum_local.slow_sink AS \
         SELECT kafka_partition, sleep(2) AS slept FROM rum_local.slow",
        "CREATE TABLE rum.slow ON CLUSTER rum AS rum_local.slow ENGINE = Distributed(rum, rum_local, slow, kafka_partition)",
    ] {
        node.query(statement);
    }
    let tables = Tables::of(&config);
    assert_eq!(
        tables.raw_write, "vitals_raw",
        "written through the Distributed table"
    );
    let client = config.client();
    let insert = {
        let (client, tables) = (client.clone(), tables.clone());
        tokio::spawn(async move {
            // Partition 1: shard 02, a remote part for the node the client talks to (shard 01).
            insert_rows::<Slow, _>(
                &client,
                &tables,
                "slow",
                [Slow { kafka_partition: 1 }],
                "rum:g:t:,1,:0000000000000001",
                Duration::from_secs(30),
                "slow insert",
            )
            .await
        })
    };
    let prefix = "rum:g:t:%,1,";
    let started = Instant::now();
    let listed = loop {
        let listed = running_queries(
            &client,
            &tables,
            prefix,
            "rum:g:t:,,:list",
            Duration::from_secs(10),
        )
        .await
        .unwrap();
        if listed.len() == 2 || started.elapsed() > Duration::from_secs(10) {
            break listed;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        listed.contains(&"rum:g:t:,1,:0000000000000001".to_string()) && listed.len() == 2,
        "the INSERT and its shard's part (its own query id, found by the marker): {listed:?}"
    );
    assert!(
        listed.iter().any(|id| !id.starts_with("rum:")),
        "on 18.16 the shard's part runs under a query id of its own: {listed:?}"
    );
    let found = kill_queries(
        &client,
        &tables,
        prefix,
        "rum:g:t:,,:kill",
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    assert_eq!(found, 2);
    // 18.16 cannot kill a running INSERT: it was waited for, so it has committed when kill_queries returns.
    let stored: u64 = [cluster.node(2, 1), cluster.node(2, 2)]
        .iter()
        .map(|n| {
            n.query("SELECT count() FROM rum_local.slow_sink")
                .trim()
                .parse::<u64>()
                .unwrap()
        })
        .max()
        .unwrap();
    assert_eq!(stored, 1, "the shard's part had finished");
    assert!(running_queries(
        &client,
        &tables,
        prefix,
        "rum:g:t:,,:after",
        Duration::from_secs(10)
    )
    .await
    .unwrap()
    .is_empty());
    assert_eq!(insert.await.unwrap().unwrap(), 1);
    // A prefix of another partition finds nothing.
    assert_eq!(
        kill_queries(
            &client,
            &tables,
            "rum:g:t:%,2,",
            "rum:g:t:,,:none",
            Duration::from_secs(10)
        )
        .await
        .unwrap(),
        0
    );
}

/// Migration 005 on a cluster that holds data: the minutes stored before it get their weighted
/// states (its backfill reads the whole cluster through the Distributed table and writes the entry
/// node's shard), and a weighted read through the Distributed table sees every shard's samples.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migration_005_weighs_the_minutes_a_cluster_stored_before_it() {
    let cluster = ClickHouseCluster::start(2, 2);
    let config = config(&cluster);
    rum_clickhouse::migrate_to(&config, Some(4)).await.unwrap();
    // What 004's consumers wrote, partitions 0 and 1 (one per shard): four 2 s loads kept at 50%
    // and four 5 s at 100%, one group of each on each shard.
    let t0 = 1_700_000_040u32;
    let mut values = Vec::new();
    for partition in 0..2 {
        for (value, rating, rate) in [(2000, "good", 0.5), (5000, "poor", 1.0)] {
            for _ in 0..2 {
                values.push(format!(
                    "({t0}, 'shop', 'root', 'mobile', 'LCP', {value}, '{rating}', {rate}, {partition}, 0)"
                ));
            }
        }
    }
    cluster.node(1, 1).query_with_settings(
        &format!(
            "INSERT INTO rum.vitals_1m_input (received_at, site, route, device, metric, value, rating, \
             sample_rate, kafka_partition, ledger_next) VALUES {}",
            values.join(", ")
        ),
        SYNC,
    );
    let report = rum_clickhouse::migrate_to(&config, Some(5)).await.unwrap();
    assert_eq!(report.applied, [5]);
    // Per shard, the minute's mean weight: (2 x 2 + 2 x 1) / 4 = 1.5 for each of its 4 samples.
    let read = || {
        cluster.node(2, 2).query(
            "SELECT countMerge(samples), sumMerge(weighted_samples), sumMerge(weighted_good), \
             sumMerge(weighted_poor), arraySum(tupleElement(sumMapMerge(weighted_sketch), 2)) \
             FROM rum.vitals_1m WHERE site = 'shop'",
        )
    };
    eventually(
        "the backfill read through every replica",
        Duration::from_secs(30),
        "8\t12\t6\t6\t12".to_string(),
        || read().trim().to_string(),
    )
    .await;
    let again = rum_clickhouse::migrate_to(&config, Some(5)).await.unwrap();
    assert!(again.applied.is_empty());
}
