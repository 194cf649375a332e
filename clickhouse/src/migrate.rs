//! Schema migrations: `clickhouse/migrations/NNN_name.sql`, applied in order, recorded in
//! `schema_migrations` with a checksum, so a second run changes nothing and an edited
//! migration is refused instead of silently diverging.
//!
//! A file may hold several statements, each ending with `;` at the end of a line; they are sent
//! one per request (ClickHouse 18.16 drops statements after the first otherwise). Statements use
//! `IF NOT EXISTS` forms so that a run interrupted half-way can simply be run again; 18.16 has no
//! `ADD COLUMN IF NOT EXISTS`, so an `ALTER TABLE t ADD COLUMN c ...` is skipped when `t` has `c`.
//!
//! A table rebuilt by a migration (007) is created under a staging name, swapped in by one
//! `RENAME TABLE old TO kept, staging TO old` and filled from `kept`. Run again, such a file skips what
//! was done: the RENAME has started when its first target (`kept`) exists, and then only its pairs
//! whose target is missing run (18.16 renames the pairs one after the other); the CREATE of a table
//! that a started RENAME moved away is skipped (`IF NOT EXISTS` would create an empty one again). The
//! copy runs again: it must be written so that rows copied twice collapse (007's ReplacingMergeTree).

use clickhouse::Row;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{cluster, ClickHouseConfig, StorageError};

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
    Migration {
        version: 5,
        name: "attribution",
        sql: include_str!("../migrations/005_attribution.sql"),
    },
    Migration {
        version: 6,
        name: "final_values",
        sql: include_str!("../migrations/006_final_values.sql"),
    },
    Migration {
        version: 7,
        name: "vitals_raw_replacing",
        sql: include_str!("../migrations/007_vitals_raw_replacing.sql"),
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
///
/// In cluster mode (`clickhouse.cluster`) the same files are rendered for the cluster
/// ([`crate::cluster::render`]) and `schema_migrations` is one table replicated to every node.
pub async fn migrate_to(
    config: &ClickHouseConfig,
    target: Option<u32>,
) -> Result<MigrationReport, StorageError> {
    // Every request is bounded (a server that accepts connections and never answers fails the run).
    let timeout = config.request_timeout();
    crate::ledger::check_utc(&config.server_client(), timeout).await?;
    let cluster = match config.cluster() {
        None => {
            let create = config.server_client();
            let create = create.query(&format!(
                "CREATE DATABASE IF NOT EXISTS {}",
                config.database
            ));
            crate::bounded("creating the database", timeout, create.execute()).await?;
            crate::bounded(
                "checking the database's mode",
                timeout,
                check_mode(&config.client(), config, false),
            )
            .await?;
            let client = config.client();
            let create = client.query(
                "CREATE TABLE IF NOT EXISTS schema_migrations \
                 (version UInt32, name String, checksum String, applied_at DateTime) \
                 ENGINE = ReplacingMergeTree() ORDER BY version",
            );
            crate::bounded("creating schema_migrations", timeout, create.execute()).await?;
            None
        }
        Some(name) => Some(ClusterMigration::prepare(config, name).await?),
    };
    let client = config.client();
    let applied = client.query(
        "SELECT version, name, checksum, toUInt32(applied_at) FROM schema_migrations FINAL ORDER BY version",
    );
    let applied: Vec<AppliedMigration> =
        crate::bounded("reading schema_migrations", timeout, applied.fetch_all()).await?;
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
            cluster = config.cluster().unwrap_or(""),
            "applying migration"
        );
        let run_on = match &cluster {
            Some(cluster) => Target::Cluster(cluster),
            None => Target::Server {
                client: &client,
                database: &config.database,
                timeout,
            },
        };
        let statements = migration.statements();
        let renames: Vec<Vec<(String, String)>> =
            statements.iter().filter_map(|s| rename_pairs(s)).collect();
        for statement in &statements {
            let Some(statement) = still_to_run(statement, &renames, &run_on).await? else {
                continue;
            };
            // INSERTs that began before a RENAME ended may still write into the renamed table (one that
            // waited for the RENAME's lock found the old table first): the copy after it waits them out.
            let renames_tables = rename_pairs(&statement).is_some();
            // A copy of an earlier run may still be running on the server (its client gave up after
            // the request timeout; 18.16 goes on, and cannot kill an INSERT): not a second one beside it.
            if let Some(table) = inserted_table(&statement) {
                let filter = format!(
                    "positionCaseInsensitive(query, 'INSERT') > 0 \
                     AND positionCaseInsensitive(query, 'SELECT') > 0 \
                     AND position(query, {}) > 0",
                    cluster::quote(table)
                );
                run_on
                    .wait_out(&filter, "copies of an earlier run", timeout)
                    .await?;
            }
            match &cluster {
                Some(cluster) => cluster.apply(migration, &statement).await?,
                None => {
                    if let Some((table, column)) = added_column(&statement) {
                        let exists = column_exists(&client, &config.database, table, column);
                        if crate::bounded("reading system.columns", timeout, exists).await? {
                            tracing::info!(table, column, "column exists, ADD COLUMN skipped");
                            continue;
                        }
                    }
                    let run = client.query(&statement);
                    crate::bounded("applying a migration", timeout, run.execute()).await?;
                }
            }
            if renames_tables {
                run_on.wait_out_inserts(timeout).await?;
            }
        }
        let record = async {
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
            insert.end().await
        };
        crate::bounded("recording the migration", timeout, record).await?;
        report.applied.push(migration.version);
    }
    Ok(report)
}

/// Refuses a database migrated in the other mode: `schema_migrations` is replicated in cluster mode
/// only.
async fn check_mode(
    client: &clickhouse::Client,
    config: &ClickHouseConfig,
    cluster: bool,
) -> Result<(), StorageError> {
    let engines: Vec<String> = client
        .query("SELECT engine FROM system.tables WHERE database = ? AND name = 'schema_migrations'")
        .bind(config.database.as_str())
        .fetch_all()
        .await?;
    let Some(engine) = engines.first() else {
        return Ok(());
    };
    match (cluster, engine.starts_with("Replicated")) {
        (false, true) => Err(StorageError::Cluster(format!(
            "database {} was migrated in cluster mode ({}.schema_migrations is {engine}): set \
             clickhouse.cluster to its cluster",
            config.database, config.database
        ))),
        (true, false) => Err(StorageError::Cluster(format!(
            "database {} on {} was migrated as a single server ({}.schema_migrations is {engine}): \
             cluster mode needs a database of its own (clickhouse.database); rows are not moved",
            config.database, config.url, config.database
        ))),
        _ => Ok(()),
    }
}

/// `rum migrate` on a cluster: DDL with `ON CLUSTER` (answered when every node ran it).
struct ClusterMigration {
    /// Runs DDL; `wait_end_of_query`, so that an error on any node is the request's error.
    ddl: clickhouse::Client,
    layout: cluster::Layout,
    reads: cluster::ReplicaReads,
    names: cluster::Names,
    timeout: std::time::Duration,
}

impl ClusterMigration {
    /// Checks the cluster and the mode; creates both databases and `schema_migrations` on every node
    /// unless every node has them.
    async fn prepare(config: &ClickHouseConfig, name: &str) -> Result<Self, StorageError> {
        let server = config.server_client();
        let timeout = config.request_timeout();
        let replicas = cluster::replicas(&server, name, timeout).await?;
        let layout = cluster::Layout::new(name, &config.database);
        let password = config
            .password()
            .map_err(|e| StorageError::Cluster(e.to_string()))?;
        let reads = cluster::ReplicaReads::new(name, &config.user, password);
        let ddl = server.clone().with_setting("wait_end_of_query", "1");
        check_mode(&server, config, true).await?;
        let statements: Vec<String> = MIGRATIONS.iter().flat_map(|m| m.statements()).collect();
        let names = cluster::created_names(&statements);
        let migration = Self {
            ddl,
            layout,
            reads,
            names,
            timeout,
        };
        let (databases, n) = migration
            .reads
            .source_and_count(&server, "system", "databases", timeout)
            .await?;
        let have: u64 = server
            .query(&format!(
                "SELECT count() FROM {databases} WHERE name IN (?, ?)"
            ))
            .bind(migration.layout.database.as_str())
            .bind(migration.layout.local.as_str())
            .fetch_one()
            .await?;
        let (tables_source, _) = migration
            .reads
            .source_and_count(&server, "system", "tables", timeout)
            .await?;
        let have_table: u64 = server
            .query(&format!(
                "SELECT count() FROM {tables_source} WHERE database = ? AND name = 'schema_migrations'"
            ))
            .bind(migration.layout.database.as_str())
            .fetch_one()
            .await?;
        tracing::info!(
            cluster = name,
            replicas = replicas.len(),
            "migrating a cluster: tables in {} on every node, Distributed tables in {}",
            migration.layout.local,
            migration.layout.database
        );
        if have != 2 * n as u64 || have_table != n as u64 {
            let Self { ddl, layout, .. } = &migration;
            for database in [&layout.database, &layout.local] {
                ddl.query(&format!(
                    "CREATE DATABASE IF NOT EXISTS {database} ON CLUSTER {}",
                    layout.cluster
                ))
                .execute()
                .await?;
            }
            ddl.query(&format!(
                "CREATE TABLE IF NOT EXISTS {db}.schema_migrations ON CLUSTER {c} \
                 (version UInt32, name String, checksum String, applied_at DateTime) \
                 ENGINE = ReplicatedReplacingMergeTree({path}, '{{replica}}') ORDER BY version",
                db = layout.database,
                c = layout.cluster,
                path = cluster::quote(&cluster::schema_migrations_path(&layout.database)),
            ))
            .execute()
            .await?;
        }
        Ok(migration)
    }

    /// Applies one statement of `migration`, rendered for the cluster.
    async fn apply(&self, migration: &Migration, statement: &str) -> Result<(), StorageError> {
        let steps = cluster::render(statement, &self.layout, &self.names).map_err(|e| {
            StorageError::Cluster(format!(
                "migration {} ({}): {e}",
                migration.version, migration.name
            ))
        })?;
        for step in steps {
            match step {
                cluster::Step::Run(sql) => self.ddl.query(&sql).execute().await?,
                cluster::Step::AddColumn {
                    database,
                    table,
                    column,
                    statements,
                } => {
                    let (columns, n) = self
                        .reads
                        .source_and_count(&self.ddl, "system", "columns", self.timeout)
                        .await?;
                    let have: u64 = self
                        .ddl
                        .query(&format!(
                            "SELECT count() FROM {columns} WHERE database = ? AND table = ? AND name = ?"
                        ))
                        .bind(database.as_str())
                        .bind(table.as_str())
                        .bind(column.as_str())
                        .fetch_one()
                        .await?;
                    if have == n as u64 {
                        tracing::info!(%database, %table, %column, "column exists on every node, ADD COLUMN skipped");
                        continue;
                    }
                    for sql in statements {
                        self.ddl.query(&sql).execute().await?;
                    }
                }
                cluster::Step::CopyWhenSourcesEmpty { sources, .. } => {
                    for source in &sources {
                        let rows: u64 = self
                            .ddl
                            .query(&format!("SELECT count() FROM {source}"))
                            .fetch_one()
                            .await?;
                        if rows > 0 {
                            return Err(StorageError::Cluster(format!(
                                "migration {} ({}) copies the rows of {source} ({rows} rows): an \
                                 INSERT ... SELECT cannot run on a cluster; this migration expects an \
                                 empty {source} there",
                                migration.version, migration.name
                            )));
                        }
                    }
                    tracing::info!(
                        version = migration.version,
                        ?sources,
                        "nothing to copy (the sources are empty on every shard): INSERT ... SELECT skipped"
                    );
                }
                cluster::Step::CopyPerShard {
                    source,
                    before,
                    after,
                } => self.copy_per_shard(&source, &before, &after).await?,
            }
        }
        Ok(())
    }

    /// A [`cluster::Step::CopyPerShard`]: for each shard, its rows of `source` read on one replica
    /// and written through the `Distributed` table (synchronously, so the statement ends when every
    /// shard stored them); a shard without rows is skipped. The replicas of a shard are read first
    /// until they hold as many rows (an INSERT that reached one replica's table before the RENAME
    /// reaches the other by replication), at most the request timeout: a shard whose replicas still
    /// differ, or one that does not answer, stops the migration, to be run again.
    async fn copy_per_shard(
        &self,
        source: &str,
        before: &str,
        after: &str,
    ) -> Result<(), StorageError> {
        let replicas = cluster::replicas(&self.ddl, &self.reads.cluster, self.timeout).await?;
        let copy = self
            .ddl
            .clone()
            .with_setting("insert_distributed_sync", "1");
        let mut shards: std::collections::BTreeMap<u32, Vec<&cluster::Replica>> =
            std::collections::BTreeMap::new();
        for replica in &replicas {
            shards.entry(replica.shard_num).or_default().push(replica);
        }
        for (shard, members) in shards {
            let deadline = std::time::Instant::now() + self.timeout;
            let rows = loop {
                let mut counts = Vec::with_capacity(members.len());
                for replica in &members {
                    let from = self.reads.source_of(replica, &self.layout.local, source);
                    let count = self.ddl.query(&format!("SELECT count() FROM {from}"));
                    let n: u64 = crate::bounded(
                        "counting the rows to copy",
                        self.timeout,
                        count.fetch_one(),
                    )
                    .await?;
                    counts.push(n);
                }
                if counts.windows(2).all(|w| w[0] == w[1]) {
                    break counts[0];
                }
                if std::time::Instant::now() >= deadline {
                    return Err(StorageError::Migration(format!(
                        "the replicas of shard {shard} hold {counts:?} rows of {source} after {:?}: \
                         run rum migrate again once replication caught up",
                        self.timeout
                    )));
                }
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            };
            if rows == 0 {
                tracing::info!(shard, source, "nothing to copy on this shard");
                continue;
            }
            let replica = members[0];
            tracing::info!(
                shard,
                replica = %replica.address(),
                source,
                rows,
                "copying the shard's rows"
            );
            let from = self.reads.source_of(replica, &self.layout.local, source);
            let insert = copy.query(&format!("{before}{from}{after}"));
            crate::bounded("copying a shard's rows", self.timeout, insert.execute()).await?;
        }
        Ok(())
    }

    /// Whether `table` exists in the local database of every node (false: of none; an error when
    /// only some have it: an `ON CLUSTER` statement has not run everywhere yet).
    async fn has_table(&self, table: &str) -> Result<bool, StorageError> {
        let (tables, n) = self
            .reads
            .source_and_count(&self.ddl, "system", "tables", self.timeout)
            .await?;
        let count = self
            .ddl
            .query(&format!(
                "SELECT count() FROM {tables} WHERE database = ? AND name = ?"
            ))
            .bind(self.layout.local.as_str())
            .bind(table);
        let have: u64 =
            crate::bounded("reading system.tables", self.timeout, count.fetch_one()).await?;
        match have {
            0 => Ok(false),
            h if h == n as u64 => Ok(true),
            h => Err(StorageError::Cluster(format!(
                "{}.{table} exists on {h} of the {n} nodes of cluster {}: a RENAME ... ON CLUSTER has \
                 not run everywhere yet (a node down?); run rum migrate again when every node has \
                 run its distributed DDL queue",
                self.layout.local, self.layout.cluster
            ))),
        }
    }
}

/// Where a migration's statements run, as their guards ask.
enum Target<'a> {
    Server {
        client: &'a clickhouse::Client,
        database: &'a str,
        timeout: std::time::Duration,
    },
    Cluster(&'a ClusterMigration),
}

impl Target<'_> {
    /// Waits until the INSERTs running now (on a cluster: on every node) have ended, at most
    /// `timeout`; an error names them when they have not. Run right after a RENAME, so that the copy
    /// after it reads every row written into the renamed table: an INSERT that waited for the RENAME's
    /// lock resolved the old table (18.16 checked: it ended in the renamed table after the RENAME).
    async fn wait_out_inserts(&self, timeout: std::time::Duration) -> Result<(), StorageError> {
        self.wait_out(
            "positionCaseInsensitive(query, 'INSERT') > 0",
            "INSERT(s) that began before the RENAME",
            timeout,
        )
        .await
    }

    /// Waits until the queries matching `filter` (SQL over `system.processes`) running now (on a
    /// cluster: on every node) have ended, at most `timeout`; an error names `what` when they have not.
    async fn wait_out(
        &self,
        filter: &str,
        what: &str,
        timeout: std::time::Duration,
    ) -> Result<(), StorageError> {
        let (client, source) = match self {
            Target::Server { client, .. } => ((*client).clone(), "system.processes".to_string()),
            Target::Cluster(cluster) => {
                let (source, _) = cluster
                    .reads
                    .source_and_count(&cluster.ddl, "system", "processes", cluster.timeout)
                    .await?;
                (cluster.ddl.clone(), source)
            }
        };
        let running = format!(
            "SELECT query_id FROM {source} WHERE ({filter}) \
             AND positionCaseInsensitive(query, 'system.processes') = 0"
        );
        let ids: Vec<String> = crate::bounded(
            "listing the running INSERTs",
            timeout,
            client.query(&running).fetch_all(),
        )
        .await?;
        if ids.is_empty() {
            return Ok(());
        }
        tracing::info!(queries = ids.len(), "waiting for the {what} to end");
        // Sent through the crate's query(), which reads `?` as a placeholder: doubled.
        let list: Vec<String> = ids
            .iter()
            .map(|id| cluster::quote(id).replace('?', "??"))
            .collect();
        let still = format!(
            "SELECT count() FROM {source} WHERE query_id IN ({})",
            list.join(", ")
        );
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let n: u64 = crate::bounded(
                "waiting for the running INSERTs",
                timeout,
                client.query(&still).fetch_one(),
            )
            .await?;
            if n == 0 {
                return Ok(());
            }
            if std::time::Instant::now() >= deadline {
                return Err(StorageError::Migration(format!(
                    "{n} {what} still running after {timeout:?}: run rum migrate again once they ended"
                )));
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }

    /// Whether the migrations' `table` exists (on a cluster: in the local database of every node).
    async fn has_table(&self, table: &str) -> Result<bool, StorageError> {
        match self {
            Target::Server {
                client,
                database,
                timeout,
            } => {
                let count = client
                    .query("SELECT count() FROM system.tables WHERE database = ? AND name = ?")
                    .bind(*database)
                    .bind(table);
                let n: u64 =
                    crate::bounded("reading system.tables", *timeout, count.fetch_one()).await?;
                Ok(n > 0)
            }
            Target::Cluster(cluster) => cluster.has_table(table).await,
        }
    }
}

/// The table an `INSERT INTO table ...` statement writes (comments skipped), or `None`.
fn inserted_table(statement: &str) -> Option<&str> {
    let code = statement
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with("--"))?;
    let mut words = code.split_whitespace();
    let (insert, into, table) = (words.next()?, words.next()?, words.next()?);
    (insert.eq_ignore_ascii_case("INSERT") && into.eq_ignore_ascii_case("INTO"))
        .then(|| table.split('(').next().unwrap_or(table))
}

/// What is left to run of `statement` when its migration runs, maybe again after an interruption;
/// `None` to skip it. `renames` are the `(from, to)` pairs of the migration's RENAMEs.
/// - A RENAME has started when its first target exists: then only its pairs whose target is missing
///   run, and none when every one is there.
/// - A `CREATE TABLE` of a table that a RENAME of the migration moves away is skipped once that
///   RENAME has started.
async fn still_to_run(
    statement: &str,
    renames: &[Vec<(String, String)>],
    target: &Target<'_>,
) -> Result<Option<String>, StorageError> {
    if let Some(pairs) = rename_pairs(statement) {
        if !target.has_table(&pairs[0].1).await? {
            return Ok(Some(statement.to_string()));
        }
        let mut left = Vec::new();
        for (from, to) in &pairs[1..] {
            if !target.has_table(to).await? {
                left.push(format!("{from} TO {to}"));
            }
        }
        if left.is_empty() {
            tracing::info!(table = %pairs[0].0, "RENAME done before, skipped");
            return Ok(None);
        }
        tracing::info!(left = ?left, "RENAME done in part before, the rest runs");
        return Ok(Some(format!("RENAME TABLE {}", left.join(", "))));
    }
    if let Some(table) = created_table(statement) {
        let renamed_by = renames
            .iter()
            .find(|pairs| pairs.iter().any(|(from, _)| *from == table));
        if let Some(pairs) = renamed_by {
            if target.has_table(&pairs[0].1).await? {
                tracing::info!(
                    table,
                    renamed_to = %pairs[0].1,
                    "the RENAME that moves this table away ran before: CREATE skipped"
                );
                return Ok(None);
            }
        }
    }
    Ok(Some(statement.to_string()))
}

/// The statement's words, without its comment lines; `,` and `(` are words of their own.
fn code_words(statement: &str) -> Vec<String> {
    statement
        .lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .flat_map(|l| {
            l.replace(',', " , ")
                .replace('(', " ( ")
                .split_whitespace()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The `(from, to)` pairs of a `RENAME TABLE a TO b[, c TO d ...]` statement.
fn rename_pairs(statement: &str) -> Option<Vec<(String, String)>> {
    let words = code_words(statement);
    let [rename, table, rest @ ..] = words.as_slice() else {
        return None;
    };
    if !rename.eq_ignore_ascii_case("RENAME") || !table.eq_ignore_ascii_case("TABLE") {
        return None;
    }
    let mut pairs = Vec::new();
    for piece in rest.split(|w| w == ",") {
        match piece {
            [from, to_kw, to] if to_kw.eq_ignore_ascii_case("TO") => {
                pairs.push((from.clone(), to.clone()))
            }
            _ => return None,
        }
    }
    Some(pairs)
}

/// The table of a `CREATE TABLE [IF NOT EXISTS] name ...` statement.
fn created_table(statement: &str) -> Option<String> {
    let words = code_words(statement);
    let upper: Vec<String> = words
        .iter()
        .take(5)
        .map(|w| w.to_ascii_uppercase())
        .collect();
    let at = match upper
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["CREATE", "TABLE", "IF", "NOT", "EXISTS", ..] => 5,
        ["CREATE", "TABLE", ..] => 2,
        _ => return None,
    };
    words.get(at).filter(|w| *w != "(").cloned()
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
    fn finds_the_table_an_insert_writes() {
        assert_eq!(
            inserted_table("-- a copy\nINSERT INTO vitals_raw (a, b)\nSELECT a, b FROM old"),
            Some("vitals_raw")
        );
        assert_eq!(inserted_table("insert into t(a) SELECT 1"), Some("t"));
        assert_eq!(inserted_table("ALTER TABLE t ADD COLUMN c UInt8"), None);
        assert_eq!(inserted_table("-- only a comment"), None);
    }

    #[test]
    fn finds_the_column_an_alter_adds() {
        assert_eq!(
            added_column(
                "-- why\nALTER TABLE vitals_1m ADD COLUMN ledger AggregateFunction(max, UInt64)"
            ),
            Some(("vitals_1m", "ledger"))
        );
        assert_eq!(
            added_column("alter table t add column c String AFTER b"),
            Some(("t", "c"))
        );
        assert_eq!(added_column("ALTER TABLE t DROP COLUMN c"), None);
        assert_eq!(
            added_column("CREATE TABLE t (a UInt8) ENGINE = Memory"),
            None
        );
    }

    #[test]
    fn finds_the_pairs_a_rename_renames_and_the_table_a_create_creates() {
        assert_eq!(
            rename_pairs("-- why\nRENAME TABLE a TO b,\n  c to a"),
            Some(vec![
                ("a".to_string(), "b".to_string()),
                ("c".to_string(), "a".to_string())
            ])
        );
        assert_eq!(rename_pairs("RENAME TABLE a b"), None);
        assert_eq!(rename_pairs("CREATE TABLE a (x UInt8)"), None);
        assert_eq!(
            created_table("-- x\nCREATE TABLE IF NOT EXISTS vitals_raw_new\n(\n  a UInt8\n)"),
            Some("vitals_raw_new".to_string())
        );
        assert_eq!(
            created_table("create table t(a UInt8) ENGINE = Memory"),
            Some("t".to_string())
        );
        assert_eq!(
            created_table("CREATE MATERIALIZED VIEW v TO t AS SELECT 1"),
            None
        );
        let m = MIGRATIONS.iter().find(|m| m.version == 7).unwrap();
        let renames: Vec<_> = m
            .statements()
            .iter()
            .filter_map(|s| rename_pairs(s))
            .collect();
        assert_eq!(
            renames,
            [vec![
                ("vitals_raw".to_string(), "vitals_raw_pre007".to_string()),
                ("vitals_raw_new".to_string(), "vitals_raw".to_string())
            ]]
        );
        assert_eq!(
            created_table(&m.statements()[0]).as_deref(),
            Some("vitals_raw_new")
        );
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
