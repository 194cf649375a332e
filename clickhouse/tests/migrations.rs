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
