//! Retention against a real ClickHouse 18.16: whole partitions older than the limits go, the rest stays.

use rum_clickhouse::{
    active_partitions, apply_retention, migrate, ClickHouseConfig, RetentionReport,
    DEFAULT_RAW_DAYS, DEFAULT_ROLLUP_DAYS,
};
use rum_testkit::ClickHouseServer;

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

fn insert(server: &ClickHouseServer, database: &str) {
    for (i, at) in TIMES.iter().enumerate() {
        server.query(&format!(
            "INSERT INTO {database}.vitals_raw VALUES ('{at}', 'shop', 'root', 'mobile', 'navigate', \
             'LCP', {}, 'good', 'id-{i}', 1, 'rum.beacons.v1', 0, {i})",
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
    let report = apply_retention(&rum, DEFAULT_RAW_DAYS, DEFAULT_ROLLUP_DAYS, now)
        .await
        .unwrap();
    assert_eq!(
        report,
        RetentionReport {
            raw_dropped: vec![20221231, 20230131, 20230201, 20240213],
            rollup_dropped: vec![202212, 202301],
        }
    );
    assert_eq!(
        active_partitions(&client, &rum, "vitals_raw")
            .await
            .unwrap(),
        [20240214, 20240315]
    );
    assert_eq!(
        active_partitions(&client, &rum, "vitals_1m").await.unwrap(),
        [202302, 202402, 202403]
    );
    assert_eq!(
        server.query("SELECT toString(min(received_at)), count() FROM rum.vitals_raw"),
        "2024-02-14 00:00:00\t3\n"
    );
    assert_eq!(
        server.query("SELECT toString(min(minute)), countMerge(samples) FROM rum.vitals_1m"),
        "2023-02-01 00:00:00\t5\n"
    );
    // The consumer's resume points are not partitioned data: untouched.
    assert_eq!(
        count(
            &server,
            "SELECT maxMerge(max_offset) FROM rum.kafka_offsets"
        ),
        6
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
    let again = apply_retention(&rum, DEFAULT_RAW_DAYS, DEFAULT_ROLLUP_DAYS, now)
        .await
        .unwrap();
    assert_eq!(again, RetentionReport::default());

    // A day later, 2024-02-14 is entirely older than 30 days.
    let later = apply_retention(&rum, DEFAULT_RAW_DAYS, DEFAULT_ROLLUP_DAYS, now + 86_400)
        .await
        .unwrap();
    assert_eq!(later.raw_dropped, [20240214]);
    assert!(later.rollup_dropped.is_empty());
    assert_eq!(count(&server, "SELECT count() FROM rum.vitals_raw"), 2);
}

#[tokio::test]
async fn an_empty_database_and_short_limits_work() {
    let server = ClickHouseServer::start();
    let rum = config(&server, "rum");
    migrate(&rum).await.unwrap();
    let report = apply_retention(&rum, 1, 1, 1_710_504_000).await.unwrap();
    assert_eq!(report, RetentionReport::default());

    insert(&server, "rum");
    // Limits of 0 days keep only the day (and month) of `now`.
    let now = count(&server, &format!("SELECT toUInt32(toDateTime('{NOW}'))")) as u32;
    let report = apply_retention(&rum, 0, 0, now).await.unwrap();
    assert_eq!(report.raw_dropped.len(), 5);
    assert_eq!(report.rollup_dropped.len(), 4);
    assert_eq!(count(&server, "SELECT count() FROM rum.vitals_raw"), 2);
    assert_eq!(
        count(&server, "SELECT countMerge(samples) FROM rum.vitals_1m"),
        2
    );
}
