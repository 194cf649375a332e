//! rum-testkit's ClickHouse cluster: 2 shards x 2 replicas of Debian's ClickHouse 18.16 with Debian's ZooKeeper 3.8,
//! replicated tables created `ON CLUSTER`, a `Distributed` table over them, and a replica SIGKILLed, written around
//! and brought back.

use std::thread;
use std::time::{Duration, Instant};

use rum_testkit::{port_open, ClickHouseCluster, ClickHouseServer};

const SYNC: &[(&str, &str)] = &[("insert_distributed_sync", "1")];

/// Polls `node` with `sql` until it answers `expected` or `timeout` passes (then panics with the last answer).
fn wait_for_answer(node: &ClickHouseServer, sql: &str, expected: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let answer = node.try_query(sql);
        if answer.as_deref() == Ok(expected) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{}: {sql} answered {answer:?}, not {expected:?}, for {timeout:?}\n{}",
            node.url,
            std::fs::read_to_string(node.err_log_path())
                .map(|log| log.lines().rev().take(20).collect::<Vec<_>>().join("\n"))
                .unwrap_or_default()
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// Resident memory of `pid` in MB (0 when unknown).
fn rss_mb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .map_or(0, |kb| kb / 1024)
}

/// count(), sum(k) of the keys `range` with `k % 2 == parity` (the Distributed table's sharding: k % 2 picks the shard).
fn expected_shard(range: std::ops::Range<u64>, parity: u64) -> String {
    let keys: Vec<u64> = range.filter(|k| k % 2 == parity).collect();
    format!("{}\t{}\n", keys.len(), keys.iter().sum::<u64>())
}

#[test]
fn a_2x2_cluster_replicates_splits_and_catches_up_after_a_killed_replica() {
    let started = Instant::now();
    let mut cluster = ClickHouseCluster::start(2, 2);
    eprintln!(
        "2 x 2 cluster with ZooKeeper ready in {:?}",
        started.elapsed()
    );

    assert_eq!(cluster.cluster_name(), "rum");
    assert_eq!(cluster.nodes().len(), 4);
    assert_eq!(cluster.url(), cluster.node(1, 1).url);
    assert_eq!(
        cluster.zookeeper().four_letter_word("ruok").unwrap(),
        "imok"
    );
    // Every node knows the whole cluster.
    let tcp_ports: Vec<String> = cluster
        .nodes()
        .iter()
        .map(|n| n.tcp_port.to_string())
        .collect();
    for shard in 1..=2 {
        for replica in 1..=2 {
            let node = cluster.node(shard, replica);
            let members = node.query(
                "SELECT shard_num, replica_num, port, is_local FROM system.clusters \
                 WHERE cluster = 'rum' ORDER BY shard_num, replica_num",
            );
            // 18.16's is_local is the shard's: 1 on every replica of the node's own shard.
            let mut expected = String::new();
            for (i, port) in tcp_ports.iter().enumerate() {
                let local = u8::from(i / 2 + 1 == shard);
                expected.push_str(&format!("{}\t{}\t{port}\t{local}\n", i / 2 + 1, i % 2 + 1));
            }
            assert_eq!(members, expected, "{}", node.url);
        }
    }

    // Replicated tables on every node, ON CLUSTER, and a Distributed table sharding on k.
    let first = cluster.node(1, 1);
    first.query(
        "CREATE TABLE default.t ON CLUSTER rum (k UInt64, v String) \
         ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/default/t', '{replica}') ORDER BY k",
    );
    first.query(
        "CREATE TABLE default.t_dist ON CLUSTER rum AS default.t \
         ENGINE = Distributed(rum, default, t, k)",
    );
    // Each node's macros in its replica's path and name.
    for shard in 1..=2 {
        for replica in 1..=2 {
            let node = cluster.node(shard, replica);
            assert_eq!(
                node.query("EXISTS TABLE default.t_dist"),
                "1\n",
                "{}",
                node.url
            );
            assert_eq!(
                node.query(
                    "SELECT zookeeper_path, replica_name, total_replicas FROM system.replicas \
                     WHERE database = 'default' AND table = 't'"
                ),
                format!("/clickhouse/tables/0{shard}/default/t\ts0{shard}r{replica}\t2\n")
            );
        }
    }

    // 1000 rows through the Distributed table of the last node; synchronous: on their shards when it returns.
    cluster.node(2, 2).query_with_settings(
        "INSERT INTO default.t_dist SELECT number, toString(number) FROM system.numbers LIMIT 1000",
        SYNC,
    );
    let per_node = "SELECT count(), sum(k) FROM default.t";
    let wait = Duration::from_secs(30);
    for shard in 1..=2 {
        let want = expected_shard(0..1000, shard as u64 - 1);
        assert_eq!(
            want,
            format!("500\t{}\n", if shard == 1 { 249_500 } else { 250_000 })
        );
        for replica in 1..=2 {
            wait_for_answer(cluster.node(shard, replica), per_node, &want, wait);
        }
        // Both replicas hold the very same rows.
        let rows =
            "SELECT groupArray(k), groupArray(v) FROM (SELECT k, v FROM default.t ORDER BY k)";
        assert_eq!(
            cluster.node(shard, 1).query(rows),
            cluster.node(shard, 2).query(rows)
        );
    }
    for node in cluster.nodes() {
        assert_eq!(
            node.query("SELECT count(), sum(k), uniqExact(k) FROM default.t_dist"),
            "1000\t499500\t1000\n",
            "{}",
            node.url
        );
    }

    // SIGKILL s02r1; 1000 more rows go to shard 01 and to s02r2; s02r1 catches up after its restart.
    let killed = cluster.node(2, 1).pid().expect("running");
    cluster.node_mut(2, 1).kill();
    assert!(!std::path::Path::new(&format!("/proc/{killed}")).exists());
    assert!(!port_open(cluster.node(2, 1).http_port));
    cluster.node(1, 1).query_with_settings(
        "INSERT INTO default.t_dist SELECT number, toString(number) FROM system.numbers \
         WHERE number >= 1000 LIMIT 1000",
        SYNC,
    );
    wait_for_answer(
        cluster.node(2, 2),
        per_node,
        &expected_shard(0..2000, 1),
        wait,
    );
    for replica in 1..=2 {
        wait_for_answer(
            cluster.node(1, replica),
            per_node,
            &expected_shard(0..2000, 0),
            wait,
        );
    }
    // Reads through the Distributed table fail over to the live replica of shard 02.
    for (shard, replica) in [(1, 1), (1, 2), (2, 2)] {
        assert_eq!(
            cluster
                .node(shard, replica)
                .query("SELECT count(), sum(k) FROM default.t_dist"),
            "2000\t1999000\n"
        );
    }

    let restarted = Instant::now();
    cluster.node_mut(2, 1).start_again();
    // It is active again once its old ZooKeeper session expired (5 s), and fetches what it missed.
    wait_for_answer(
        cluster.node(2, 1),
        per_node,
        &expected_shard(0..2000, 1),
        Duration::from_secs(90),
    );
    eprintln!(
        "s02r1 caught up {:?} after its restart",
        restarted.elapsed()
    );
    let rss: Vec<String> = cluster
        .nodes()
        .iter()
        .filter_map(ClickHouseServer::pid)
        .chain(cluster.zookeeper().pid())
        .map(|pid| format!("{} MB", rss_mb(pid)))
        .collect();
    eprintln!(
        "RSS of s01r1, s01r2, s02r1, s02r2, zookeeper: {}",
        rss.join(", ")
    );
    for node in cluster.nodes() {
        assert_eq!(
            node.query("SELECT count(), sum(k), uniqExact(k) FROM default.t_dist"),
            "2000\t1999000\t2000\n",
            "{}",
            node.url
        );
        assert_eq!(
            node.query("SELECT count() FROM default.t"),
            "1000\n",
            "{}",
            node.url
        );
    }
}
