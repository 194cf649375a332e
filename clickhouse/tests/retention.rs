//! Retention against a real ClickHouse 18.16: whole partitions older than the limits go, the rest stays.

use std::time::Duration;

use rum_clickhouse::{
    active_partitions, apply_retention, migrate, ClickHouseConfig, RetentionFailure,
    RetentionFailureCause, RetentionReport, DEFAULT_RAW_DAYS, DEFAULT_RETENTION_STATEMENT_TIMEOUT,
    DEFAULT_ROLLUP_DAYS, MAX_PARTITION_SIZE_TO_DROP,
};
use rum_testkit::{send_signal, ClickHouseOptions, ClickHouseServer};

fn config(server: &ClickHouseServer, database: &str) -> ClickHouseConfig {
    ClickHouseConfig {
        url: server.url.clone(),
        database: database.into(),
        ..ClickHouseConfig::default()
    }
}

/// Rows at these times (UTC, the server's time zone), one per time.
const TIMES: [&str; 7] = [
    "2022-12-31 12:00:00",
    "2023-01-31 23:59:59",
    "2023-02-01 00:00:00",
    "2024-02-13 23:59:59",
    "2024-02-14 00:00:00",
    "2024-03-15 08:00:00",
    "2024-03-15 11:59:00",
];
const NOW: &str = "2024-03-15 12:00:00";
/// Each retention statement's timeout while the server is paused.
const PAUSED_TIMEOUT: Duration = Duration::from_secs(2);

fn insert(server: &ClickHouseServer, database: &str) {
    for (i, at) in TIMES.iter().enumerate() {
        server.query(&format!(
            "INSERT INTO {database}.vitals_raw (received_at, site, route, device, nav_type, metric, value, \
             rating, metric_id, sample_rate, kafka_topic, kafka_topic_id, kafka_partition, kafka_offset) \
             VALUES ('{at}', 'shop', 'root', 'mobile', 'navigate', \
             'LCP', {}, 'good', 'id-{i}', 1, 'rum.beacons.v1', '', 0, {i})",
            1000 + i
        ));
        // The rollup has its own INSERT since migration 004 (no view from vitals_raw).
        server.query(&format!(
            "INSERT INTO {database}.vitals_1m_input_v2 (received_at, site, route, device, metric, value, rating, sample_rate, kafka_partition, ledger_next) VALUES ('{at}', 'shop', 'root', 'mobile', 'LCP', {}, \
             'good', 1, 0, 0)",
            1000 + i
        ));
    }
}

fn count(server: &ClickHouseServer, sql: &str) -> u64 {
    server.query(sql).trim().parse().unwrap()
}

#[tokio::test]
async fn drops_only_partitions_entirely_older_than_the_limits() {
    let server = ClickHouseServer::start();
    let rum = config(&server, "rum");
    let other = config(&server, "rum_other");
    migrate(&rum).await.unwrap();
    migrate(&other).await.unwrap();
    insert(&server, "rum");
    insert(&server, "rum_other");
    // Partition 3 of the topic was last written in December 2022: its ledger row lives in that month.
    server.query(
        "INSERT INTO rum.vitals_1m_input_v2 (received_at, site, route, device, metric, value, rating, \
         sample_rate, kafka_partition, ledger_next) VALUES ('2022-12-15 00:00:00', '', 'rum.beacons.v1', '3', 'id', \
         0, '', 1, 3, 77)",
    );
    let client = rum.client();
    assert_eq!(
        active_partitions(&client, &rum, "vitals_raw")
            .await
            .unwrap(),
        [20221231, 20230131, 20230201, 20240213, 20240214, 20240315]
    );
    assert_eq!(
        active_partitions(&client, &rum, "vitals_1m").await.unwrap(),
        [202212, 202301, 202302, 202402, 202403]
    );

    let now: u32 = server
        .query(&format!("SELECT toUInt32(toDateTime('{NOW}'))"))
        .trim()
        .parse()
        .unwrap();
    // raw: 30 days before now is 2024-02-14 12:00, so 2024-02-13 and older go, 2024-02-14 stays
    // (half of it is younger than the limit). rollup: 400 days before now is 2023-02-09 12:00, so
    // January 2023 and older go, February 2023 stays.
    let report = apply_retention(
        &rum,
        DEFAULT_RAW_DAYS,
        DEFAULT_ROLLUP_DAYS,
        now,
        DEFAULT_RETENTION_STATEMENT_TIMEOUT,
    )
    .await;
    assert_eq!(
        report,
        RetentionReport {
            raw_dropped: vec![20221231, 20230131, 20230201, 20240213],
            rollup_dropped: vec![202212, 202301],
            failures: vec![],
        }
    );
    assert_eq!(
        active_partitions(&client, &rum, "vitals_raw")
            .await
            .unwrap(),
        [20240214, 20240315]
    );
    // (and the current month: the ledger rows carried there)
    let this_month: u32 = count(&server, "SELECT toYYYYMM(now())") as u32;
    assert_eq!(
        active_partitions(&client, &rum, "vitals_1m").await.unwrap(),
        [202302, 202402, 202403, this_month]
    );
    assert_eq!(
        server.query("SELECT toString(min(received_at)), count() FROM rum.vitals_raw"),
        "2024-02-14 00:00:00\t3\n"
    );
    assert_eq!(
        server.query("SELECT toString(min(minute)), countMerge(samples) FROM rum.vitals_1m"),
        "2023-02-01 00:00:00\t5\n"
    );
    // The consumer's resume points are ledger rows of vitals_1m since migration 004: December 2022 went,
    // partition 3's floor moved to the current month first.
    assert_eq!(
        server.query(
            "SELECT device, metric, maxMerge(ledger) FROM rum.vitals_1m WHERE site = '' \
             GROUP BY device, metric FORMAT TSV"
        ),
        "3\tid\t77\n"
    );
    // Another database on the same server is not touched.
    assert_eq!(
        count(&server, "SELECT count() FROM rum_other.vitals_raw"),
        7
    );
    assert_eq!(
        count(
            &server,
            "SELECT countMerge(samples) FROM rum_other.vitals_1m"
        ),
        7
    );

    // A second run finds nothing more to drop.
    let again = apply_retention(
        &rum,
        DEFAULT_RAW_DAYS,
        DEFAULT_ROLLUP_DAYS,
        now,
        DEFAULT_RETENTION_STATEMENT_TIMEOUT,
    )
    .await;
    assert_eq!(again, RetentionReport::default());

    // A day later, 2024-02-14 is entirely older than 30 days.
    let later = apply_retention(
        &rum,
        DEFAULT_RAW_DAYS,
        DEFAULT_ROLLUP_DAYS,
        now + 86_400,
        DEFAULT_RETENTION_STATEMENT_TIMEOUT,
    )
    .await;
    assert_eq!(later.raw_dropped, [20240214]);
    assert!(later.rollup_dropped.is_empty());
    assert_eq!(count(&server, "SELECT count() FROM rum.vitals_raw"), 2);
}

#[tokio::test]
async fn an_empty_database_and_short_limits_work() {
    let server = ClickHouseServer::start();
    let rum = config(&server, "rum");
    migrate(&rum).await.unwrap();
    let report = apply_retention(
        &rum,
        1,
        1,
        1_710_504_000,
        DEFAULT_RETENTION_STATEMENT_TIMEOUT,
    )
    .await;
    assert_eq!(report, RetentionReport::default());

    insert(&server, "rum");
    // Limits of 0 days keep only the day (and month) of `now`.
    let now = count(&server, &format!("SELECT toUInt32(toDateTime('{NOW}'))")) as u32;
    let report = apply_retention(&rum, 0, 0, now, DEFAULT_RETENTION_STATEMENT_TIMEOUT).await;
    assert_eq!(report.raw_dropped.len(), 5);
    assert_eq!(report.rollup_dropped.len(), 4);
    assert_eq!(count(&server, "SELECT count() FROM rum.vitals_raw"), 2);
    assert_eq!(
        count(&server, "SELECT countMerge(samples) FROM rum.vitals_1m"),
        2
    );
}

fn unix(server: &ClickHouseServer, at: &str) -> u32 {
    count(server, &format!("SELECT toUInt32(toDateTime('{at}'))")) as u32
}

/// `rows` rows of `vitals_raw` at `at`, with distinct values and ids (so they do not compress away).
fn insert_rows(server: &ClickHouseServer, at: &str, rows: u64) {
    server.query(&format!(
        "INSERT INTO rum.vitals_raw (received_at, site, route, device, nav_type, metric, value, rating, \
             metric_id, sample_rate, kafka_topic, kafka_topic_id, kafka_partition, kafka_offset) SELECT toDateTime('{at}'), 'shop', 'root', 'mobile', 'navigate', \
         'LCP', toFloat64(number * 7919 % 100003), 'good', concat('id-', toString(cityHash64(number))), \
         1, 'rum.beacons.v1', '', 0, number FROM system.numbers LIMIT {rows}"
    ));
}

#[tokio::test]
async fn a_partition_over_max_partition_size_to_drop_stays_and_the_others_still_go() {
    // 1 row is under 10 KB on disk, 20,000 rows are over it.
    let server = ClickHouseServer::start_with_settings(
        &ClickHouseOptions::default(),
        &[(MAX_PARTITION_SIZE_TO_DROP, "10000")],
    );
    let rum = config(&server, "rum");
    migrate(&rum).await.unwrap();
    insert_rows(&server, "2024-02-01 10:00:00", 1);
    insert_rows(&server, "2024-02-02 10:00:00", 20_000);
    insert_rows(&server, "2024-02-03 10:00:00", 1);
    insert_rows(&server, "2024-03-15 10:00:00", 1);
    let bytes = |day: u32| {
        count(
            &server,
            &format!(
                "SELECT sum(bytes) FROM system.parts WHERE database = 'rum' \
                 AND table = 'vitals_raw' AND active AND partition = '{day}'"
            ),
        )
    };
    assert!(bytes(20240201) < 10_000 && bytes(20240202) > 10_000);

    let report = apply_retention(
        &rum,
        30,
        400,
        unix(&server, "2024-03-15 12:00:00"),
        DEFAULT_RETENTION_STATEMENT_TIMEOUT,
    )
    .await;
    assert_eq!(report.raw_dropped, [20240201, 20240203]);
    assert!(report.rollup_dropped.is_empty());
    let [failure] = report.failures.as_slice() else {
        panic!("one refused drop: {report:?}");
    };
    assert_eq!(
        (failure.table, failure.partition),
        ("vitals_raw", Some(20240202))
    );
    let RetentionFailureCause::PartitionTooLarge { sizes: Some(sizes) } = &failure.cause else {
        panic!("refused for its size: {failure:?}");
    };
    assert!(
        sizes.starts_with("Size (") && sizes.ends_with("_size_to_drop (10.00 KB)"),
        "{sizes}"
    );
    assert!(failure.to_string().contains("max_partition_size_to_drop"));
    // The refused partition's rows are all there; the next run tries again.
    assert_eq!(
        server.query("SELECT toString(toDate(received_at)) AS day, count() FROM rum.vitals_raw GROUP BY day ORDER BY day"),
        "2024-02-02\t20000\n2024-03-15\t1\n"
    );
    let again = apply_retention(
        &rum,
        30,
        400,
        unix(&server, "2024-03-15 12:00:00"),
        DEFAULT_RETENTION_STATEMENT_TIMEOUT,
    )
    .await;
    assert_eq!(again.failures, report.failures);
}

#[tokio::test]
async fn an_unreachable_server_is_one_failure_a_table() {
    let server = ClickHouseServer::start();
    let url = server.url.clone();
    drop(server);
    let gone = ClickHouseConfig {
        url,
        ..ClickHouseConfig::default()
    };
    let report = apply_retention(
        &gone,
        30,
        400,
        1_710_504_000,
        DEFAULT_RETENTION_STATEMENT_TIMEOUT,
    )
    .await;
    assert!(report.raw_dropped.is_empty() && report.rollup_dropped.is_empty());
    let tables: Vec<_> = report
        .failures
        .iter()
        .map(|f| (f.table, f.partition))
        .collect();
    assert_eq!(tables, [("vitals_raw", None), ("vitals_1m", None)]);
    for failure in &report.failures {
        let RetentionFailure {
            cause: RetentionFailureCause::Error(error),
            ..
        } = failure
        else {
            panic!("{failure:?}");
        };
        assert!(!error.contains('\n'), "{error}");
    }
}

#[tokio::test]
async fn a_server_that_never_answers_is_one_timed_out_failure_a_table_and_the_run_returns() {
    let server = ClickHouseServer::start();
    let rum = config(&server, "rum");
    migrate(&rum).await.unwrap();
    insert(&server, "rum");
    let now = unix(&server, NOW);
    // Connections are accepted (the kernel does), statements never answered.
    let pid = server.pid().expect("clickhouse runs");
    send_signal(pid, "STOP");
    let run = apply_retention(
        &rum,
        DEFAULT_RAW_DAYS,
        DEFAULT_ROLLUP_DAYS,
        now,
        PAUSED_TIMEOUT,
    );
    // Far beyond the two statements' timeouts: a run that hangs fails here instead of forever.
    let report = tokio::time::timeout(Duration::from_secs(60), run).await;
    send_signal(pid, "CONT");
    let report = report.expect("the retention run returns while ClickHouse never answers");
    assert!(report.raw_dropped.is_empty() && report.rollup_dropped.is_empty());
    let failures: Vec<_> = report
        .failures
        .iter()
        .map(|f| (f.table, f.partition, f.cause.clone()))
        .collect();
    let timeout = RetentionFailureCause::Timeout(PAUSED_TIMEOUT);
    assert_eq!(
        failures,
        [
            ("vitals_raw", None, timeout.clone()),
            ("vitals_1m", None, timeout)
        ]
    );
    assert_eq!(
        report.failures[0].to_string(),
        "cannot read the expired partitions of vitals_raw: ClickHouse did not answer within 2 s"
    );

    // Answering again: the next run drops what expired.
    let report = apply_retention(
        &rum,
        DEFAULT_RAW_DAYS,
        DEFAULT_ROLLUP_DAYS,
        now,
        DEFAULT_RETENTION_STATEMENT_TIMEOUT,
    )
    .await;
    assert_eq!(report.raw_dropped.len(), 4, "{report:?}");
    assert!(report.failures.is_empty(), "{report:?}");
}
