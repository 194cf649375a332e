//! Exactly once against ClickHouse's real failure modes (issue 16), with real processes: Apache Kafka, the
//! ClickHouse server 18.16, `rum consume`, and a fault-injecting proxy in front of ClickHouse. Each test ends with
//! exact counts in `vitals_raw` (rows, distinct metric ids) and `vitals_1m` (samples), and the ledgers of
//! `vitals_1m` at the end of every partition.

mod common;

use std::time::{Duration, Instant};

use common::stack::{Stack, METRICS_PER_BEACON};
use common::{
    eventually, exposition, labelled, metric_sum, stored_counts, wait_for_failed_step, RumProcess,
};
use rum_testkit::{free_port, send_signal, FaultProxy, ProxyMode};

const TOPIC: &str = "rum.beacons.v1";

async fn metrics_of(port: u16) -> String {
    exposition(&format!("http://127.0.0.1:{port}/metrics")).await
}

impl Stack {
    /// Every partition's ledger in `vitals_1m` is at its high watermark (all written, none beyond).
    fn assert_ledgers_at_the_end(&self) {
        let ledgers = self.clickhouse.query(&format!(
            "SELECT toUInt32(device) AS p, maxMerge(ledger) FROM rum.vitals_1m \
             WHERE site = '' AND route = '{TOPIC}' GROUP BY p ORDER BY p FORMAT TSV"
        ));
        let stored: Vec<(i32, i64)> = ledgers
            .lines()
            .map(|l| {
                let mut f = l.split('\t').map(|v| v.parse::<i64>().unwrap());
                (f.next().unwrap() as i32, f.next().unwrap())
            })
            .collect();
        let highs: Vec<(i32, i64)> = self
            .kafka_positions()
            .into_iter()
            .map(|(p, _, high)| (p, high))
            .filter(|(_, high)| *high > 0)
            .collect();
        assert_eq!(stored, highs, "ledger = high watermark of every partition");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_insert_stored_whose_answer_is_lost_is_not_stored_again() {
    let mut stack = Stack::start();
    let proxy = FaultProxy::start(std::net::SocketAddr::from((
        [127, 0, 0, 1],
        stack.clickhouse.http_port,
    )));
    stack.clickhouse_url = proxy.url();
    const N: u64 = 600;
    let port = free_port();
    let _consumer = stack.consumer(port);
    // The first three INSERTs into each table are executed by ClickHouse and their answers lost.
    proxy.set_mode(ProxyMode::ResetAfterAnswer {
        matching: "INSERT INTO vitals_raw".into(),
        times: 3,
    });
    stack.produce(0..N / 2).await;
    eventually(
        "three lost answers of vitals_raw",
        Duration::from_secs(60),
        async || (proxy.resets() >= 3).then_some(()),
    )
    .await;
    proxy.set_mode(ProxyMode::ResetAfterAnswer {
        matching: "INSERT INTO vitals_1m_input_v2".into(),
        times: 3,
    });
    stack.produce(N / 2..N).await;
    eventually(
        "three lost answers of vitals_1m",
        Duration::from_secs(60),
        async || (proxy.resets() >= 6).then_some(()),
    )
    .await;
    stack
        .assert_exactly(N * METRICS_PER_BEACON, Duration::from_secs(60))
        .await;
    stack.assert_ledgers_at_the_end();
    let m = metrics_of(port).await;
    assert!(
        labelled(&m, "rum_consumer_write_errors_total", "step=\"raw_insert\"") >= 3.0,
        "{m}"
    );
    assert!(
        labelled(
            &m,
            "rum_consumer_write_errors_total",
            "step=\"rollup_insert\""
        ) >= 3.0,
        "{m}"
    );
    assert!(
        metric_sum(&m, "rum_consumer_rollup_repaired_rows_total") > 0.0,
        "the raw rows whose INSERT lost its answer were rolled up from vitals_raw:\n{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_insert_stored_but_answered_with_an_error_is_not_stored_again() {
    // A view that throws stands for a failure after the table took its part (too many parts, a memory limit in a
    // view): ClickHouse keeps the rows and answers with an error. One on vitals_raw, then one on vitals_1m.
    let stack = Stack::start();
    const N: u64 = 400;
    let port = free_port();
    let _consumer = stack.consumer(port);
    // A column in the condition: a constant one throws when the view is created. 18.16 pushes a block to a
    // table's views in the order of their names, after the table itself, and does not cascade to the views of a
    // view's target: `zz_fault` on vitals_1m_input_v2 runs after vitals_1m_rollup_v2 stored the rollup.
    for (view, table, condition, step, range) in [
        (
            "fault",
            "vitals_raw",
            "kafka_offset >= 0",
            "raw_insert",
            0..N / 2,
        ),
        (
            "zz_fault",
            "vitals_1m_input_v2",
            "ledger_next >= 0",
            "rollup_insert",
            N / 2..N,
        ),
    ] {
        stack.clickhouse.query(&format!(
            "CREATE MATERIALIZED VIEW rum.{view} ENGINE = Memory AS SELECT throwIf({condition}) AS x FROM rum.{table}"
        ));
        stack.produce(range).await;
        wait_for_failed_step(port, step, Duration::from_secs(60)).await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        stack.clickhouse.query(&format!("DROP TABLE rum.{view}"));
    }
    stack
        .assert_exactly(N * METRICS_PER_BEACON, Duration::from_secs(60))
        .await;
    stack.assert_ledgers_at_the_end();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rollup_failing_after_the_raw_write_is_repaired_from_vitals_raw() {
    // The rollup INSERT fails before storing anything, after vitals_raw took the batch.
    let stack = Stack::start();
    const N: u64 = 500;
    let port = free_port();
    let _consumer = stack.consumer(port);
    stack.produce(0..N / 2).await;
    stack
        .assert_exactly(N / 2 * METRICS_PER_BEACON, Duration::from_secs(60))
        .await;
    stack.break_rollup();
    stack.produce(N / 2..N).await;
    wait_for_failed_step(port, "rollup_insert", Duration::from_secs(60)).await;
    // Nothing more is written while the ledgers cannot be read: vitals_raw holds what it took alone.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let raw_alone = stack
        .clickhouse
        .query("SELECT count() FROM rum.vitals_raw FORMAT TSV")
        .trim()
        .parse::<u64>()
        .unwrap()
        - N / 2 * METRICS_PER_BEACON;
    assert!(raw_alone > 0, "a batch reached vitals_raw only");
    stack.restore_rollup();
    stack
        .assert_exactly(N * METRICS_PER_BEACON, Duration::from_secs(60))
        .await;
    stack.assert_ledgers_at_the_end();
    let m = metrics_of(port).await;
    assert_eq!(
        metric_sum(&m, "rum_consumer_rollup_repaired_rows_total"),
        raw_alone as f64,
        "exactly the rows vitals_raw took alone were rolled up from it:\n{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_across_midnight_with_a_failure_between_the_days() {
    let stack = Stack::start();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let midnight_ms = now_ms - now_ms % 86_400_000;
    // Blocks of 40 beacons: 23:59:59 of yesterday, 00:00:00 of today, yesterday again (late), ...
    let received_at = move |i: u64| {
        if (i / 40).is_multiple_of(2) {
            midnight_ms - 1_000 + i % 40
        } else {
            midnight_ms + i % 40
        }
    };
    // Today's rows fail after vitals_raw stored them, once.
    stack.clickhouse.query(&format!(
        "CREATE MATERIALIZED VIEW rum.fault ENGINE = Memory AS \
         SELECT throwIf(received_at >= toDateTime({})) AS x FROM rum.vitals_raw",
        midnight_ms / 1000
    ));
    const N: u64 = 400;
    stack.produce_at(0..N, received_at).await;
    let port = free_port();
    // One batch holds all of it, both days.
    let _consumer = stack.consumer_with(
        port,
        &[
            ("RUM_CONSUMER_BATCH_MAX_MESSAGES", "1000"),
            ("RUM_CONSUMER_BATCH_MAX_WAIT_MS", "2000"),
        ],
    );
    wait_for_failed_step(port, "raw_insert", Duration::from_secs(60)).await;
    stack.clickhouse.query("DROP TABLE rum.fault");
    stack
        .assert_exactly(N * METRICS_PER_BEACON, Duration::from_secs(60))
        .await;
    stack.assert_ledgers_at_the_end();
    let per_day = stack.clickhouse.query(
        "SELECT toDate(received_at) AS d, count() FROM rum.vitals_raw GROUP BY d ORDER BY d FORMAT TSV",
    );
    let counts: Vec<u64> = per_day
        .lines()
        .map(|l| l.split('\t').nth(1).unwrap().parse().unwrap())
        .collect();
    assert_eq!(
        counts,
        vec![N / 2 * METRICS_PER_BEACON, N / 2 * METRICS_PER_BEACON],
        "{per_day}"
    );
    let parts = stack.clickhouse.query(
        "SELECT count() FROM system.parts WHERE database = 'rum' AND table = 'vitals_raw' \
         AND active AND toDate(min_time) != toDate(max_time) FORMAT TSV",
    );
    assert_eq!(parts.trim(), "0", "no part of vitals_raw spans two days");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clickhouse_that_accepts_connections_and_never_answers() {
    let mut stack = Stack::start();
    let proxy = FaultProxy::start(std::net::SocketAddr::from((
        [127, 0, 0, 1],
        stack.clickhouse.http_port,
    )));
    stack.clickhouse_url = proxy.url();
    const N: u64 = 600;
    let port = free_port();
    let _consumer = stack.consumer_with(port, &[("RUM_CLICKHOUSE_REQUEST_TIMEOUT_MS", "2000")]);
    stack.produce(0..N / 3).await;
    stack
        .assert_exactly(N / 3 * METRICS_PER_BEACON, Duration::from_secs(60))
        .await;
    proxy.set_mode(ProxyMode::Blackhole);
    let started = Instant::now();
    stack.produce(N / 3..N).await;
    let mut timeouts_seen = 0.0;
    while started.elapsed() < Duration::from_secs(60) {
        // The member answers its own /metrics all along: nothing hangs.
        let m = metrics_of(port).await;
        timeouts_seen = metric_sum(&m, "rum_consumer_clickhouse_timeouts_total");
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    assert!(
        timeouts_seen >= 3.0,
        "timeouts are counted while ClickHouse does not answer: {timeouts_seen}"
    );
    let m = metrics_of(port).await;
    assert!(
        metric_sum(&m, "rum_consumer_write_errors_total") >= 3.0,
        "{m}"
    );
    proxy.set_mode(ProxyMode::Pass);
    stack
        .assert_exactly(N * METRICS_PER_BEACON, Duration::from_secs(90))
        .await;
    stack.assert_ledgers_at_the_end();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_deleted_and_created_again_is_written_from_its_start() {
    let stack = Stack::start();
    const N: u64 = 500;
    let port = free_port();
    let mut consumer = stack.consumer(port);
    stack.produce(0..N).await;
    stack
        .assert_exactly(N * METRICS_PER_BEACON, Duration::from_secs(60))
        .await;
    assert!(consumer.terminate(Duration::from_secs(30)).success());
    // What `./deploy/local/down` + `up` did to a broker that keeps nothing: same name, offsets from 0.
    stack.kafka.delete_topic(TOPIC);
    stack.kafka.create_pipeline_topics();
    stack.produce(N..N + N / 2).await;
    let port = free_port();
    let _consumer = stack.consumer(port);
    stack
        .assert_exactly((N + N / 2) * METRICS_PER_BEACON, Duration::from_secs(60))
        .await;
    let m = metrics_of(port).await;
    let partitions_written = stack.clickhouse.query(&format!(
        "SELECT uniqExact(kafka_partition) FROM rum.vitals_raw WHERE kafka_topic = '{TOPIC}' FORMAT TSV"
    ));
    assert_eq!(
        metric_sum(&m, "rum_consumer_topic_incarnations_total"),
        partitions_written.trim().parse::<f64>().unwrap(),
        "every partition written before is a new incarnation, counted:\n{m}"
    );
    assert!(
        metric_sum(&m, "rum_consumer_messages_skipped_total") == 0.0,
        "nothing of the new topic skipped as stored:\n{m}"
    );
    let ids = stack
        .clickhouse
        .query("SELECT uniqExact(kafka_topic_id) FROM rum.vitals_raw FORMAT TSV");
    assert_eq!(
        ids.trim(),
        "2",
        "rows carry the id of the topic they came from"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_stopped_past_its_session_does_not_write_after_its_successor() {
    let stack = Stack::start();
    let (port_a, port_b) = (free_port(), free_port());
    let mut members = [stack.consumer(port_a), stack.consumer(port_b)];
    const ROUNDS: u64 = 20;
    const PER_ROUND: u64 = 150;
    let mut rng_state = 0x9e37_79b9_u64;
    for round in 0..ROUNDS {
        stack
            .produce(round * PER_ROUND..(round + 1) * PER_ROUND)
            .await;
        // SIGSTOP one member at a moment somewhere in its write path, past the session timeout (6 s).
        rng_state = rng_state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let victim = (rng_state >> 33) as usize % 2;
        let after = Duration::from_millis(50 + (rng_state >> 40) % 400);
        tokio::time::sleep(after).await;
        let pid = members[victim].pid();
        send_signal(pid, "STOP");
        tokio::time::sleep(Duration::from_millis(8_000)).await;
        send_signal(pid, "CONT");
        eprintln!(
            "round {round}: member {victim} stopped after {after:?} for 8 s; stored {:?}",
            stored_counts(&stack.clickhouse)
        );
    }
    stack
        .assert_exactly(
            ROUNDS * PER_ROUND * METRICS_PER_BEACON,
            Duration::from_secs(120),
        )
        .await;
    stack.assert_ledgers_at_the_end();
    let mut fenced = 0.0;
    for port in [port_a, port_b] {
        let m = metrics_of(port).await;
        fenced += labelled(&m, "rum_consumer_write_errors_total", "step=\"fence\"");
    }
    eprintln!("refused proofs of ownership: {fenced}");
    for m in &mut members {
        assert!(m.is_running());
    }
    let _: &mut [RumProcess; 2] = &mut members;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_created_again_while_its_member_runs_is_written_from_its_start() {
    let stack = Stack::start();
    const N: u64 = 400;
    let port = free_port();
    let _consumer = stack.consumer(port);
    stack.produce(0..N).await;
    stack
        .assert_exactly(N * METRICS_PER_BEACON, Duration::from_secs(60))
        .await;
    // librdkafka resets the member's positions to the new log's start, with no rebalance.
    stack.kafka.delete_topic(TOPIC);
    stack.kafka.create_pipeline_topics();
    stack.produce(N..N + N / 2).await;
    stack
        .assert_exactly((N + N / 2) * METRICS_PER_BEACON, Duration::from_secs(90))
        .await;
    let m = metrics_of(port).await;
    assert_eq!(
        labelled(
            &m,
            "rum_consumer_messages_skipped_total",
            "reason=\"already_stored\""
        ),
        0.0,
        "nothing of the new log skipped as stored:\n{m}"
    );
    let ids = stack
        .clickhouse
        .query("SELECT uniqExact(kafka_topic_id) FROM rum.vitals_raw FORMAT TSV");
    assert_eq!(ids.trim(), "2", "the new log's rows carry the new topic id");
}
