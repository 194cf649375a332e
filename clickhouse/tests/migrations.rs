//! Migrations against a real ClickHouse server (Debian's 18.16).

use rum_clickhouse::{migrate, migrate_to, ClickHouseConfig, StorageError, MIGRATIONS};
use rum_testkit::ClickHouseServer;

fn config(server: &ClickHouseServer, database: &str) -> ClickHouseConfig {
    ClickHouseConfig {
        url: server.url.clone(),
        database: database.into(),
        ..ClickHouseConfig::default()
    }
}

/// Every table's `CREATE` statement, with the database name taken out so two databases compare.
fn schema(server: &ClickHouseServer, database: &str) -> Vec<String> {
    let tables = server.query(&format!(
        "SELECT name FROM system.tables WHERE database = '{database}' ORDER BY name"
    ));
    tables
        .lines()
        .map(|table| {
            server
                .query(&format!("SHOW CREATE TABLE {database}.{table}"))
                .replace(&format!("{database}."), "DB.")
        })
        .collect()
}

#[tokio::test]
async fn applies_once_and_a_second_run_changes_nothing() {
    let server = ClickHouseServer::start();
    let cfg = config(&server, "rum");
    let first = migrate(&cfg).await.unwrap();
    assert_eq!(
        first.applied,
        MIGRATIONS.iter().map(|m| m.version).collect::<Vec<_>>()
    );
    let before = schema(&server, "rum");
    assert!(
        before.iter().any(|t| t.contains("vitals_raw")),
        "{before:?}"
    );
    let second = migrate(&cfg).await.unwrap();
    assert!(second.applied.is_empty());
    assert_eq!(second.already_applied, first.applied);
    assert_eq!(schema(&server, "rum"), before);
    let recorded = server.query("SELECT count() FROM rum.schema_migrations FINAL");
    assert_eq!(recorded.trim(), MIGRATIONS.len().to_string());
}

#[tokio::test]
async fn an_upgraded_database_ends_with_the_same_schema_as_a_fresh_one() {
    let server = ClickHouseServer::start();
    migrate(&config(&server, "fresh")).await.unwrap();
    let fresh = schema(&server, "fresh");
    for stop_at in 0..MIGRATIONS.len() as u32 {
        let db = format!("upgraded_from_{stop_at}");
        let old = migrate_to(&config(&server, &db), Some(stop_at))
            .await
            .unwrap();
        assert_eq!(old.applied.len(), stop_at as usize);
        let upgrade = migrate(&config(&server, &db)).await.unwrap();
        assert_eq!(upgrade.applied.len(), MIGRATIONS.len() - stop_at as usize);
        assert_eq!(
            schema(&server, &db),
            fresh,
            "upgrade from version {stop_at}"
        );
    }
}

#[tokio::test]
async fn refuses_a_migration_changed_after_it_was_applied() {
    let server = ClickHouseServer::start();
    let cfg = config(&server, "rum");
    migrate(&cfg).await.unwrap();
    server.query("ALTER TABLE rum.schema_migrations UPDATE checksum = 'edited' WHERE version = 1");
    // Mutations are asynchronous on 18.16: wait until it is done.
    for _ in 0..100 {
        if server
            .query("SELECT count() FROM system.mutations WHERE database = 'rum' AND is_done = 0")
            .trim()
            == "0"
        {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    match migrate(&cfg).await {
        Err(StorageError::MigrationModified { version: 1, .. }) => {}
        other => panic!("expected MigrationModified, got {other:?}"),
    }
}

#[tokio::test]
async fn refuses_a_database_migrated_by_a_newer_binary() {
    let server = ClickHouseServer::start();
    let cfg = config(&server, "rum");
    migrate(&cfg).await.unwrap();
    server.query("INSERT INTO rum.schema_migrations VALUES (999, 'from_the_future', 'x', now())");
    match migrate(&cfg).await {
        Err(StorageError::UnknownMigration { version: 999, .. }) => {}
        other => panic!("expected UnknownMigration, got {other:?}"),
    }
}

#[tokio::test]
async fn refuses_a_server_whose_time_zone_is_not_utc() {
    // A UTC day of vitals_raw would be two partitions of the table there: an INSERT two parts.
    let server = ClickHouseServer::start_with_settings(
        &rum_testkit::ClickHouseOptions::default(),
        &[("timezone", "Europe/Berlin")],
    );
    let err = migrate(&config(&server, "rum")).await.unwrap_err();
    assert!(
        matches!(&err, StorageError::ServerTimezone(tz) if tz == "Europe/Berlin"),
        "{err}"
    );
    assert!(
        err.to_string().contains("<timezone>UTC</timezone>"),
        "{err}"
    );
    assert_eq!(
        server.query("SELECT count() FROM system.databases WHERE name = 'rum'"),
        "0\n",
        "nothing created"
    );
}

/// Per minute of `rum.vitals_1m` (rollup rows): samples, the three weighted rating sums and the
/// weighted sketch as `bucket:weight,...`.
const WEIGHTED_BY_MINUTE: &str = "SELECT toUInt32(minute), countMerge(samples), sumMerge(weighted_good), \
     sumMerge(weighted_needs_improvement), sumMerge(weighted_poor), \
     arrayStringConcat(arrayMap((k, c) -> concat(toString(k), ':', toString(c)), \
       tupleElement(sumMapMerge(weighted_sketch), 1), tupleElement(sumMapMerge(weighted_sketch), 2)), ',') \
     FROM rum.vitals_1m WHERE site != '' GROUP BY minute ORDER BY minute FORMAT TSV";

/// Migration 005 gives the minutes stored before it weighted states: each sample weighs its minute's
/// mean weight (`weighted_samples / samples`), so a weighted read across the upgrade sees every
/// sample; running its backfill again changes nothing.
#[tokio::test]
async fn migration_005_weighs_the_minutes_stored_before_it() {
    let server = ClickHouseServer::start();
    let cfg = config(&server, "rum");
    migrate_to(&cfg, Some(4)).await.unwrap();
    // What 004's consumers wrote: minute 1 kept at 25% (six 2 s, two 5 s), minute 2 at 100% (two 1 s).
    let t0 = 1_700_000_040u32;
    let mut values = Vec::new();
    for (at, value, rating, rate) in [
        (t0, 2000, "good", 0.25),
        (t0, 5000, "poor", 0.25),
        (t0 + 60, 1000, "good", 1.0),
    ] {
        let n = if value == 2000 { 6 } else { 2 };
        for _ in 0..n {
            values.push(format!(
                "({at}, 'shop', 'root', 'mobile', 'LCP', {value}, '{rating}', {rate}, 0, 0)"
            ));
        }
    }
    server.query(&format!(
        "INSERT INTO rum.vitals_1m_input (received_at, site, route, device, metric, value, rating, \
         sample_rate, kafka_partition, ledger_next) VALUES {}",
        values.join(", ")
    ));
    // A ledger row (site ''): never weighted.
    server.query(
        "INSERT INTO rum.vitals_1m_input (received_at, site, route, device, metric, value, rating, \
         sample_rate, kafka_partition, ledger_next) VALUES (1700000000, '', 'rum.beacons.v1', '0', '', 0, '', 1, 0, 7)",
    );
    let report = migrate_to(&cfg, Some(5)).await.unwrap();
    assert_eq!(report.applied, [5]);
    let text = server.query(WEIGHTED_BY_MINUTE);
    let b = |v: f64| rum_clickhouse::bucket_of(v);
    assert_eq!(
        text.lines().collect::<Vec<_>>(),
        [
            format!("{t0}\t8\t24\t0\t8\t{}:24,{}:8", b(2000.0), b(5000.0)),
            format!("{}\t2\t2\t0\t0\t{}:2", t0 + 60, b(1000.0)),
        ]
    );
    // The backfill again (an interrupted run is run again): minutes with weighted states are skipped.
    let backfill = MIGRATIONS[4]
        .statements()
        .into_iter()
        .find(|s| s.contains("INSERT INTO vitals_1m"))
        .unwrap();
    server.query(
        &backfill
            .replace("INSERT INTO vitals_1m ", "INSERT INTO rum.vitals_1m ")
            .replace("FROM vitals_1m", "FROM rum.vitals_1m"),
    );
    let again = server.query(WEIGHTED_BY_MINUTE);
    assert_eq!(again, text);
    let ledger = server.query(
        "SELECT maxMerge(ledger), countMerge(samples), sumMerge(weighted_good) FROM rum.vitals_1m WHERE site = ''",
    );
    assert_eq!(ledger.trim(), "7\t0\t0");
    // A consumer of the version before still writes 004's entry: on 18.16 its view no longer fits
    // vitals_1m, so the INSERT fails whole (the consumer retries; nothing half-stored, nothing lost).
    let old = server.try_query(
        "INSERT INTO rum.vitals_1m_input (received_at, site, route, device, metric, value, rating, \
         sample_rate, kafka_partition, ledger_next) VALUES (1700000040, 'shop', 'root', 'mobile', 'LCP', 1, 'good', 1, 0, 0)",
    );
    assert!(
        old.as_ref().is_err_and(|e| e.contains("weighted_good")),
        "{old:?}"
    );
    assert_eq!(server.query(WEIGHTED_BY_MINUTE), text);
}
