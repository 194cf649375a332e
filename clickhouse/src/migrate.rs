//! Schema migrations: `clickhouse/migrations/NNN_name.sql`, applied in order, recorded in
//! `schema_migrations` with a checksum, so a second run changes nothing and an edited
//! migration is refused instead of silently diverging.
//!
//! A file may hold several statements, each ending with `;` at the end of a line; they are sent
//! one per request (ClickHouse 18.16 drops statements after the first otherwise). Statements use
//! `IF NOT EXISTS` forms so that a run interrupted half-way can simply be run again; 18.16 has no
//! `ADD COLUMN IF NOT EXISTS`, so an `ALTER TABLE t ADD COLUMN c ...` is skipped when `t` has `c`.

use clickhouse::Row;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{ClickHouseConfig, StorageError};

/// One migration file, embedded in the binary.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// The number in the file name; migrations apply in this order.
    pub version: u32,
    /// The rest of the file name, without `.sql`.
    pub name: &'static str,
    /// The file's text.
    pub sql: &'static str,
}

/// Every migration, in order. `migrations_list_matches_the_directory` keeps it in step with the files.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "vitals_raw",
        sql: include_str!("../migrations/001_vitals_raw.sql"),
    },
    Migration {
        version: 2,
        name: "vitals_1m",
        sql: include_str!("../migrations/002_vitals_1m.sql"),
    },
    Migration {
        version: 3,
        name: "kafka_offsets",
        sql: include_str!("../migrations/003_kafka_offsets.sql"),
    },
    Migration {
        version: 4,
        name: "ledgers",
        sql: include_str!("../migrations/004_ledgers.sql"),
    },
];

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MigrationReport {
    /// Versions applied by this run.
    pub applied: Vec<u32>,
    /// Versions that were already applied.
    pub already_applied: Vec<u32>,
}

#[derive(Debug, Row, Serialize, Deserialize)]
struct AppliedMigration {
    version: u32,
    name: String,
    checksum: String,
    applied_at: u32,
}

impl Migration {
    /// The SHA-256 of the file, hex.
    pub fn checksum(&self) -> String {
        Sha256::digest(self.sql.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// The file's statements, one per request.
    pub fn statements(&self) -> Vec<String> {
        split_statements(self.sql)
    }
}

/// Splits on `;` at the end of a line; drops pieces that hold only comments and blank lines.
fn split_statements(sql: &str) -> Vec<String> {
    let mut statements = Vec::new();
    let mut current = String::new();
    for line in sql.lines() {
        let trimmed = line.trim_end();
        if let Some(body) = trimmed.strip_suffix(';') {
            current.push_str(body);
            push_statement(&mut statements, &mut current);
        } else {
            current.push_str(trimmed);
            current.push('\n');
        }
    }
    push_statement(&mut statements, &mut current);
    statements
}

fn push_statement(statements: &mut Vec<String>, current: &mut String) {
    let has_code = current
        .lines()
        .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with("--"));
    if has_code {
        statements.push(current.trim().to_string());
    }
    current.clear();
}

/// Creates the database if needed and applies every pending migration in order.
pub async fn migrate(config: &ClickHouseConfig) -> Result<MigrationReport, StorageError> {
    migrate_to(config, None).await
}

/// Like [`migrate`], but stops after version `target` (to test upgrades from older schemas).
pub async fn migrate_to(
    config: &ClickHouseConfig,
    target: Option<u32>,
) -> Result<MigrationReport, StorageError> {
    config
        .server_client()
        .query(&format!(
            "CREATE DATABASE IF NOT EXISTS {}",
            config.database
        ))
        .execute()
        .await?;
    let client = config.client();
    client
        .query(
            "CREATE TABLE IF NOT EXISTS schema_migrations \
             (version UInt32, name String, checksum String, applied_at DateTime) \
             ENGINE = ReplacingMergeTree() ORDER BY version",
        )
        .execute()
        .await?;
    let applied: Vec<AppliedMigration> = client
        .query("SELECT version, name, checksum, toUInt32(applied_at) FROM schema_migrations FINAL ORDER BY version")
        .fetch_all()
        .await?;
    let mut report = MigrationReport::default();
    for row in &applied {
        let known = MIGRATIONS.iter().find(|m| m.version == row.version);
        let Some(known) = known else {
            return Err(StorageError::UnknownMigration {
                version: row.version,
                name: row.name.clone(),
            });
        };
        let current = known.checksum();
        if current != row.checksum {
            return Err(StorageError::MigrationModified {
                version: row.version,
                name: row.name.clone(),
                applied: row.checksum.clone(),
                current,
            });
        }
        report.already_applied.push(row.version);
    }
    for migration in MIGRATIONS
        .iter()
        .filter(|m| target.is_none_or(|t| m.version <= t))
    {
        if report.already_applied.contains(&migration.version) {
            continue;
        }
        tracing::info!(
            version = migration.version,
            name = migration.name,
            "applying migration"
        );
        for statement in migration.statements() {
            if let Some((table, column)) = added_column(&statement) {
                if column_exists(&client, &config.database, table, column).await? {
                    tracing::info!(table, column, "column exists, ADD COLUMN skipped");
                    continue;
                }
            }
            client.query(&statement).execute().await?;
        }
        let mut insert = client
            .insert::<AppliedMigration>("schema_migrations")
            .await?;
        insert
            .write(&AppliedMigration {
                version: migration.version,
                name: migration.name.to_string(),
                checksum: migration.checksum(),
                applied_at: unix_seconds(),
            })
            .await?;
        insert.end().await?;
        report.applied.push(migration.version);
    }
    Ok(report)
}

/// `(table, column)` of an `ALTER TABLE table ADD COLUMN column ...` statement.
fn added_column(statement: &str) -> Option<(&str, &str)> {
    let code = statement
        .lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .collect::<Vec<_>>();
    let first = code.first()?;
    let words: Vec<&str> = first.split_whitespace().collect();
    match words.as_slice() {
        [alter, table_kw, table, add, column_kw, column, ..]
            if alter.eq_ignore_ascii_case("ALTER")
                && table_kw.eq_ignore_ascii_case("TABLE")
                && add.eq_ignore_ascii_case("ADD")
                && column_kw.eq_ignore_ascii_case("COLUMN") =>
        {
            Some((table, column))
        }
        _ => None,
    }
}

async fn column_exists(
    client: &clickhouse::Client,
    database: &str,
    table: &str,
    column: &str,
) -> Result<bool, StorageError> {
    let n: u64 = client
        .query("SELECT count() FROM system.columns WHERE database = ? AND table = ? AND name = ?")
        .bind(database)
        .bind(table)
        .bind(column)
        .fetch_one()
        .await?;
    Ok(n > 0)
}

fn unix_seconds() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_list_matches_the_directory() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".sql"))
            .collect();
        files.sort();
        let listed: Vec<String> = MIGRATIONS
            .iter()
            .map(|m| format!("{:03}_{}.sql", m.version, m.name))
            .collect();
        assert_eq!(files, listed);
        let versions: Vec<u32> = MIGRATIONS.iter().map(|m| m.version).collect();
        let expected: Vec<u32> = (1..=MIGRATIONS.len() as u32).collect();
        assert_eq!(versions, expected, "versions are 1, 2, 3, ... without gaps");
    }

    #[test]
    fn splits_statements_at_line_ends_and_skips_comments() {
        let sql = "-- a comment\nCREATE TABLE a (x String DEFAULT ';')\nENGINE = Memory;\n\n-- only a comment;\nSELECT 1;\n-- trailing\n";
        assert_eq!(
            split_statements(sql),
            [
                "-- a comment\nCREATE TABLE a (x String DEFAULT ';')\nENGINE = Memory",
                "SELECT 1"
            ]
        );
    }

    #[test]
    fn finds_the_column_an_alter_adds() {
        assert_eq!(
            added_column("-- why\nALTER TABLE vitals_1m ADD COLUMN ledger AggregateFunction(max, UInt64)"),
            Some(("vitals_1m", "ledger"))
        );
        assert_eq!(added_column("alter table t add column c String AFTER b"), Some(("t", "c")));
        assert_eq!(added_column("ALTER TABLE t DROP COLUMN c"), None);
        assert_eq!(added_column("CREATE TABLE t (a UInt8) ENGINE = Memory"), None);
    }

    #[test]
    fn every_migration_has_statements() {
        for m in MIGRATIONS {
            assert!(
                !m.statements().is_empty(),
                "migration {} is empty",
                m.version
            );
            assert_eq!(m.checksum().len(), 64);
        }
    }
}
