//! Migration 007 against a real ClickHouse server (Debian's 18.16): `vitals_raw` rebuilt as a
//! `ReplacingMergeTree(revision)`. Every row of the old table reaches the new one, a metric id's
//! replacements read as one row with `FINAL`, rows without an id never collapse, a run interrupted
//! after the RENAME (or after the copy) and run again changes nothing, and an INSERT running during
//! the migration loses no row.

use std::time::Duration;

use rum_clickhouse::{insert_raw_rows, migrate, migrate_to, ClickHouseConfig, VitalsRawRow};
use rum_clickhouse::{MigrationReport, MIGRATIONS};
use rum_schemas::MetricName;
use rum_testkit::ClickHouseServer;

/// 2023-11-14 22:13:20 UTC; rows span this day and the next (two partitions).
const T0: u32 = 1_700_000_000;

/// Every column of `vitals_raw` after 006, in order.
const COLUMNS: &str = "received_at, site, route, device, nav_type, metric, value, rating, metric_id, \
     sample_rate, kafka_topic, kafka_topic_id, kafka_partition, kafka_offset, page_id, release, rtt, \
     browser, browser_major, target, resource_url, time_to_first_byte, resource_load_delay, \
     resource_load_duration, element_render_delay, interaction_type, input_delay, processing_duration, \
     presentation_delay, script_url, script_invoker, revision, replaces_value, replaces_rating";

fn config(server: &ClickHouseServer, database: &str) -> ClickHouseConfig {
    ClickHouseConfig {
        url: server.url.clone(),
        database: database.into(),
        ..ClickHouseConfig::default()
    }
}

/// Every row of `table` (every column, sorted): the table's content, compared whole.
fn dump(server: &ClickHouseServer, table: &str, filter: &str) -> String {
    server.query(&format!(
        "SELECT {COLUMNS} FROM {table} {filter} ORDER BY {COLUMNS} FORMAT TSV"
    ))
}

fn count(server: &ClickHouseServer, sql: &str) -> u64 {
    server.query(sql).trim().parse().unwrap()
}

fn tables(server: &ClickHouseServer, database: &str) -> Vec<String> {
    server
        .query(&format!(
            "SELECT name FROM system.tables WHERE database = '{database}' ORDER BY name"
        ))
        .lines()
        .map(str::to_string)
        .collect()
}

/// What consumers of 001..006 wrote: rows with ids, rows without an id sharing every other key column
/// (several messages), attribution with and without NULLs, two days, several INSERTs (parts), and one
/// metric id already replaced once (a 006 consumer: revision 1 beside its revision 0).
fn old_rows() -> Vec<VitalsRawRow> {
    let mut rows = Vec::new();
    for i in 0..240u32 {
        let metric = [MetricName::LCP, MetricName::INP, MetricName::CLS][(i % 3) as usize];
        let value = match metric {
            MetricName::CLS => f64::from(i % 40) / 100.0,
            _ => f64::from(100 + 37 * i),
        };
        let at = T0 + (i / 4) * 1500; // two rows of ids share a second, and days change at ~i = 180
        let mut row = VitalsRawRow::measured(
            ["shop", "blog"][(i % 2) as usize],
            ["root", "product-id"][(i / 2 % 2) as usize],
            "mobile",
            metric,
            value,
            at,
        );
        // The same ids on every call (the test finds a row again by calling this again).
        row.metric_id = format!("old-{i}");
        row.kafka_partition = i % 4;
        row.kafka_offset = u64::from(i);
        row.kafka_topic_id = "topic-id-1".into();
        row.browser = ["chrome", "safari"][(i % 2) as usize].into();
        row.time_to_first_byte = (i % 5 == 0).then_some(f64::from(i));
        row.input_delay = (i % 7 == 0).then_some(0.5 * f64::from(i));
        row.target = if i % 3 == 0 {
            "#hero>img".into()
        } else {
            String::new()
        };
        if i % 10 == 0 {
            row.metric_id = String::new();
        }
        rows.push(row);
    }
    // Six rows without an id, same site, metric, route, device and second, from six messages.
    for offset in 1000..1006u64 {
        let mut row =
            VitalsRawRow::measured("shop", "root", "desktop", MetricName::LCP, 2500.0, T0 + 7);
        row.metric_id = String::new();
        row.kafka_offset = offset;
        rows.push(row);
    }
    // One metric id and its replacement (same key, revision 1).
    let first = VitalsRawRow {
        metric_id: "chain".into(),
        kafka_offset: 2000,
        ..VitalsRawRow::measured("shop", "root", "mobile", MetricName::CLS, 0.05, T0 + 11)
    };
    let replacement = VitalsRawRow {
        value: 0.3,
        rating: "poor".into(),
        revision: 1,
        replaces_value: 0.05,
        replaces_rating: "good".into(),
        kafka_offset: 2001,
        ..first.clone()
    };
    rows.push(first);
    rows.push(replacement);
    rows
}

/// A database at 006 holding [`old_rows`]; their dump.
async fn at_006_with_rows(server: &ClickHouseServer, database: &str) -> String {
    let cfg = config(server, database);
    let report = migrate_to(&cfg, Some(6)).await.unwrap();
    assert_eq!(report.applied, [1, 2, 3, 4, 5, 6]);
    let client = cfg.client();
    for chunk in old_rows().chunks(50) {
        insert_raw_rows(&client, chunk).await.unwrap();
    }
    let stored = count(
        server,
        &format!("SELECT count() FROM {database}.vitals_raw"),
    );
    assert_eq!(stored, old_rows().len() as u64);
    dump(server, &format!("{database}.vitals_raw"), "")
}

/// After 007: the old table kept whole, the new one holding every old row (the superseded revision
/// of "chain" hidden by FINAL and gone after a merge), no staging table left.
fn assert_migrated(server: &ClickHouseServer, database: &str, before: &str) {
    let t = |name: &str| format!("{database}.{name}");
    let names = tables(server, database);
    assert!(
        names.iter().any(|n| n == "vitals_raw") && names.iter().any(|n| n == "vitals_raw_pre007"),
        "{names:?}"
    );
    assert!(!tables(server, database).contains(&"vitals_raw_new".to_string()));
    assert_eq!(
        dump(server, &t("vitals_raw_pre007"), ""),
        before,
        "old table kept"
    );
    let superseded = "WHERE NOT (metric_id = 'chain' AND revision = 0)";
    let expected = dump(server, &t("vitals_raw_pre007"), superseded);
    assert_eq!(
        dump(server, &format!("{} FINAL", t("vitals_raw")), ""),
        expected,
        "every row copied, every column equal"
    );
    server.query(&format!("OPTIMIZE TABLE {} FINAL", t("vitals_raw")));
    assert_eq!(dump(server, &t("vitals_raw"), ""), expected, "after merges");
    assert_eq!(
        server.query(&format!(
            "SELECT engine FROM system.tables WHERE database = '{database}' AND name = 'vitals_raw'"
        )),
        "ReplacingMergeTree\n"
    );
    // Same columns, types and defaults as before, in the same order.
    let columns = |table: &str| {
        server.query(&format!(
            "SELECT name, type, default_kind, default_expression FROM system.columns \
             WHERE database = '{database}' AND table = '{table}' FORMAT TSV"
        ))
    };
    assert_eq!(columns("vitals_raw"), columns("vitals_raw_pre007"));
}

fn recorded(server: &ClickHouseServer, database: &str) -> u64 {
    count(
        server,
        &format!("SELECT count() FROM {database}.schema_migrations FINAL WHERE version = 7"),
    )
}

#[tokio::test]
async fn migration_007_keeps_every_row_and_final_reads_one_row_per_metric_id() {
    let server = ClickHouseServer::start();
    let before = at_006_with_rows(&server, "rum").await;
    let cfg = config(&server, "rum");
    let report = migrate(&cfg).await.unwrap();
    assert_eq!(report.applied, [7]);
    assert_migrated(&server, "rum", &before);
    assert_eq!(
        dump(&server, "rum.vitals_raw FINAL", "WHERE metric_id = 'chain'")
            .split('\t')
            .nth(6),
        Some("0.3"),
        "the final value of the chain"
    );

    // A replacement written after the migration: same key and received_at, revision 1.
    let client = cfg.client();
    let original: VitalsRawRow = old_rows()
        .into_iter()
        .find(|r| r.metric == "LCP" && !r.metric_id.is_empty() && r.kafka_offset == 3)
        .unwrap();
    let replacement = VitalsRawRow {
        value: 9000.0,
        rating: "poor".into(),
        revision: 1,
        replaces_value: original.value,
        replaces_rating: original.rating.clone(),
        kafka_offset: 5000,
        ..original.clone()
    };
    insert_raw_rows(&client, &[replacement]).await.unwrap();
    let id = &original.metric_id;
    assert_eq!(
        server.query(&format!(
            "SELECT value, revision, replaces_value FROM rum.vitals_raw FINAL WHERE metric_id = '{id}' FORMAT TSV"
        )),
        format!("9000\t1\t{}\n", original.value)
    );
    assert_eq!(
        count(
            &server,
            &format!("SELECT count() FROM rum.vitals_raw WHERE metric_id = '{id}'")
        ),
        2,
        "both rows stored until a merge"
    );

    // Rows without an id: a replay of one (same message, offset 1003) collapses, the others never do.
    let replay = VitalsRawRow {
        metric_id: String::new(),
        kafka_offset: 1003,
        ..VitalsRawRow::measured("shop", "root", "desktop", MetricName::LCP, 2500.0, T0 + 7)
    };
    insert_raw_rows(&client, &[replay]).await.unwrap();
    let no_id = "SELECT count() FROM rum.vitals_raw WHERE metric_id = '' AND device = 'desktop'";
    assert_eq!(count(&server, no_id), 7, "before a merge");
    server.query("OPTIMIZE TABLE rum.vitals_raw FINAL");
    assert_eq!(count(&server, no_id), 6, "six messages, six rows");
    let all_without_id = old_rows().iter().filter(|r| r.metric_id.is_empty()).count() as u64;
    assert_eq!(
        count(
            &server,
            "SELECT count() FROM rum.vitals_raw WHERE metric_id = ''"
        ),
        all_without_id
    );
    assert_eq!(
        count(
            &server,
            &format!("SELECT count() FROM rum.vitals_raw WHERE metric_id = '{id}'")
        ),
        1,
        "merged to the final value"
    );
    // Nothing left to do.
    let again = migrate(&cfg).await.unwrap();
    assert!(again.applied.is_empty(), "{again:?}");
}

/// The run stopped after some of 007's statements (a crash, a timeout): `rum migrate` runs 007 again
/// and ends as an uninterrupted run does.
#[tokio::test]
async fn migration_007_run_again_after_an_interruption_changes_nothing() {
    let server = ClickHouseServer::start();
    let statements = MIGRATIONS
        .iter()
        .find(|m| m.version == 7)
        .unwrap()
        .statements();
    assert_eq!(statements.len(), 3, "CREATE, RENAME, copy");
    for (database, done) in [
        // After the CREATE.
        ("after_create", vec![statements[0].clone()]),
        // After the first pair of the RENAME (18.16 renames the pairs one after the other).
        (
            "after_half_rename",
            vec![
                statements[0].clone(),
                "RENAME TABLE vitals_raw TO vitals_raw_pre007".to_string(),
            ],
        ),
        // After the RENAME.
        ("after_rename", statements[..2].to_vec()),
        // After the copy, before the migration was recorded: the copy runs twice.
        ("after_copy", statements.clone()),
    ] {
        let before = at_006_with_rows(&server, database).await;
        for statement in &done {
            server.query_with_settings(statement, &[("database", database)]);
        }
        assert_eq!(recorded(&server, database), 0);
        let report: MigrationReport = migrate(&config(&server, database)).await.unwrap();
        assert_eq!(report.applied, [7], "{database}");
        assert_eq!(recorded(&server, database), 1);
        assert_migrated(&server, database, &before);
    }
}

/// An INSERT into vitals_raw running when the migration starts (a consumer's): 18.16's RENAME waits
/// for it, its rows land in the old table before the copy reads it, and reach the new one.
#[tokio::test]
async fn an_insert_running_through_migration_007_loses_no_row() {
    let server = ClickHouseServer::start();
    let before = at_006_with_rows(&server, "rum").await;
    let cfg = config(&server, "rum");
    // 8 blocks of 1 row, 0.5 s each: about 4 s.
    let slow = cfg.client().with_setting("max_block_size", "1");
    let insert = tokio::spawn(async move {
        slow.query(
            "INSERT INTO vitals_raw (received_at, site, route, device, metric, value, rating, metric_id, \
             kafka_topic, kafka_offset) \
             SELECT toDateTime(1700000000), 'slow', 'root', 'mobile', 'LCP', 1000, 'good', \
             concat('slow-', toString(number)), 'rum.beacons.v1', 9000 + number \
             FROM system.numbers WHERE sleep(0.5) = 0 LIMIT 8",
        )
        .execute()
        .await
    });
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(!insert.is_finished(), "the INSERT is still running");
    let migrating = {
        let cfg = cfg.clone();
        tokio::spawn(async move { migrate(&cfg).await })
    };
    // A second INSERT arrives while the RENAME waits for the first: it finds the old table, waits for
    // the RENAME's lock, then writes into the renamed table for about 4 s (seen on 18.16: after the copy,
    // had the migration not waited it out).
    tokio::time::sleep(Duration::from_millis(400)).await;
    let late = cfg.client().with_setting("max_block_size", "1");
    let late_insert = tokio::spawn(async move {
        late.query(
            "INSERT INTO vitals_raw (received_at, site, route, device, metric, value, rating, metric_id, \
             kafka_topic, kafka_offset) \
             SELECT toDateTime(1700000000), 'late', 'root', 'mobile', 'LCP', 1000, 'good', \
             concat('late-', toString(number)), 'rum.beacons.v1', 9100 + number \
             FROM system.numbers WHERE sleep(0.5) = 0 LIMIT 8",
        )
        .execute()
        .await
    });
    let report = migrating.await.unwrap().unwrap();
    assert_eq!(report.applied, [7]);
    insert.await.unwrap().unwrap();
    late_insert.await.unwrap().unwrap();
    for site in ["slow", "late"] {
        assert_eq!(
            count(
                &server,
                &format!("SELECT count() FROM rum.vitals_raw FINAL WHERE site = '{site}'")
            ),
            8,
            "every row of the {site} INSERT is in the new table"
        );
    }
    let old = dump(
        &server,
        "rum.vitals_raw_pre007",
        "WHERE site NOT IN ('slow', 'late')",
    );
    assert_eq!(old, before);
}
