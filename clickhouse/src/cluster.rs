//! Cluster mode (`clickhouse.cluster = "NAME"`): the same tables on a ClickHouse cluster of shards and
//! replicas, from the same migration files.
//!
//! ## Layout
//! - `<database>_local` holds the real tables on every node, under the names of single-server mode:
//!   `vitals_raw`, `vitals_1m`, `kafka_offsets` as `Replicated*MergeTree` (ZooKeeper path
//!   `/clickhouse/tables/{shard}/<database>_local/<table>`, replica `{replica}`: the server's macros),
//!   `vitals_1m_input_v2` (Null) and the view `vitals_1m_rollup_v2` (each node rolls up what it receives).
//! - `<database>` holds a `Distributed` table of the same name over each of them, so every reader
//!   (`rum query`, the analyst queries of `clickhouse/queries/`, the alert evaluator, people) reads the
//!   whole cluster with the SQL of single-server mode. `vitals_raw` and the `vitals_1m_input` tables are sharded by
//!   `kafka_partition`: a Kafka partition's rows, its rollup and its ledger rows all live on one shard.
//! - `<database>.schema_migrations` is one `ReplicatedReplacingMergeTree` replicated to every node of the
//!   cluster (its ZooKeeper path has no `{shard}`): one record of the cluster's schema, readable from any
//!   node.
//!
//! ## Rendering
//! [`render`] turns a statement of a migration file into the statements of cluster mode: the tables the
//! migrations create are qualified with `<database>_local`, `ON CLUSTER NAME` follows the statement's
//! table, a `...MergeTree(args)` engine becomes `Replicated...MergeTree('path', '{replica}', args)`, and a
//! `CREATE TABLE` or `ALTER TABLE ... ADD COLUMN` of a table gets its `Distributed` twin in `<database>`.
//! The files are not edited (their checksums are the same in both modes).
//!
//! A table rebuilt by a migration (007: `vitals_raw` as a `ReplacingMergeTree`) is created under a
//! staging name, swapped in by `RENAME TABLE ... ON CLUSTER` of the local tables, and filled from the
//! old one ([`Step::CopyPerShard`]). The staging table and the old one get no twin; the twin of the
//! rebuilt table stays as it is: a `Distributed` table finds its local table by name, and the
//! rebuilt one has the same columns (a twin dropped and created again would fail the INSERTs of the
//! consumers running through the migration in between). The staging table keeps its ZooKeeper path
//! (`.../<table>_new`) after the RENAME, as a replicated table does.

use std::collections::BTreeSet;
use std::time::Duration;

use clickhouse::Row;
use rum_schemas::config::Secret;
use serde::Deserialize;

use crate::StorageError;

/// Tables sharded by a column (the others are read through `Distributed` tables only: a
/// `Distributed` table without a sharding key refuses INSERTs on a cluster of several shards).
pub const SHARDING_KEYS: &[(&str, &str)] = &[
    ("vitals_raw", "kafka_partition"),
    ("vitals_1m_input", "kafka_partition"),
    ("vitals_1m_input_v2", "kafka_partition"),
];

/// The ZooKeeper path of the cluster-wide `schema_migrations` (every node is a replica of it).
pub fn schema_migrations_path(database: &str) -> String {
    format!("/clickhouse/tables/cluster-wide/{database}/schema_migrations")
}

/// The database of the real (replicated) tables.
pub fn local_database(database: &str) -> String {
    format!("{database}_local")
}

/// The ZooKeeper path of a replicated table (the macro `{shard}` is the server's).
pub fn zookeeper_path(local_database: &str, table: &str) -> String {
    format!("/clickhouse/tables/{{shard}}/{local_database}/{table}")
}

/// One replica of the cluster, as `system.clusters` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Row, Deserialize)]
pub struct Replica {
    /// 1-based.
    pub shard_num: u32,
    /// 1-based.
    pub replica_num: u32,
    /// The resolved address.
    pub host_address: String,
    /// The native (TCP) port.
    pub port: u16,
}

impl Replica {
    /// `host:port` (`[v6]:port`), as `remote()` takes it.
    pub fn address(&self) -> String {
        if self.host_address.contains(':') {
            format!("[{}]:{}", self.host_address, self.port)
        } else {
            format!("{}:{}", self.host_address, self.port)
        }
    }
}

/// Every replica of `cluster` as the server behind `client` knows it, shard by shard; an error when the
/// server knows no such cluster.
pub async fn replicas(
    client: &clickhouse::Client,
    cluster: &str,
    timeout: Duration,
) -> Result<Vec<Replica>, StorageError> {
    let query = client
        .query(
            "SELECT shard_num, replica_num, host_address, port FROM system.clusters \
             WHERE cluster = ? ORDER BY shard_num, replica_num",
        )
        .bind(cluster);
    let replicas: Vec<Replica> =
        crate::bounded("reading system.clusters", timeout, query.fetch_all()).await?;
    if replicas.is_empty() {
        return Err(StorageError::Cluster(format!(
            "the ClickHouse server knows no cluster {cluster:?} (system.clusters; clickhouse.cluster \
             must name a cluster of its <remote_servers>)"
        )));
    }
    Ok(replicas)
}

/// How to read every replica of a cluster: `remote()` over all of them, each address its own shard, so
/// that every replica is read and one that does not answer fails the read.
#[derive(Clone, PartialEq, Eq)]
pub struct ReplicaReads {
    /// The cluster's name.
    pub cluster: String,
    /// The user and password `remote()` connects with (`None`: the server's `default` user, no password).
    credentials: Option<(String, Secret)>,
}

impl std::fmt::Debug for ReplicaReads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicaReads")
            .field("cluster", &self.cluster)
            .field("user", &self.credentials.as_ref().map(|c| c.0.as_str()))
            .finish()
    }
}

impl ReplicaReads {
    /// Reads of `cluster` as `user` with `password` (the user `default` without a password is left out
    /// of the SQL).
    pub fn new(cluster: &str, user: &str, password: Secret) -> Self {
        let credentials =
            (user != "default" || !password.is_empty()).then(|| (user.to_string(), password));
        Self {
            cluster: cluster.to_string(),
            credentials,
        }
    }

    /// `remote('a1,a2,...', database, table[, 'user', 'password'])` over every replica of the cluster.
    pub async fn source(
        &self,
        client: &clickhouse::Client,
        database: &str,
        table: &str,
        timeout: Duration,
    ) -> Result<String, StorageError> {
        let replicas = replicas(client, &self.cluster, timeout).await?;
        Ok(remote(
            &replicas,
            database,
            table,
            self.credentials.as_ref(),
        ))
    }

    /// `remote()` over `database.table` of `replica` alone.
    pub fn source_of(&self, replica: &Replica, database: &str, table: &str) -> String {
        remote(
            std::slice::from_ref(replica),
            database,
            table,
            self.credentials.as_ref(),
        )
    }

    /// The number of replicas of the cluster and `remote()` over `database.table` of every one of them.
    pub async fn source_and_count(
        &self,
        client: &clickhouse::Client,
        database: &str,
        table: &str,
        timeout: Duration,
    ) -> Result<(String, usize), StorageError> {
        let replicas = replicas(client, &self.cluster, timeout).await?;
        Ok((
            remote(&replicas, database, table, self.credentials.as_ref()),
            replicas.len(),
        ))
    }
}

/// `remote(...)` over `replicas`, each its own shard, for a query of the `clickhouse` crate (a `?` of
/// the password is doubled: the crate reads `?` as a placeholder and `??` as `?`).
pub fn remote(
    replicas: &[Replica],
    database: &str,
    table: &str,
    credentials: Option<&(String, Secret)>,
) -> String {
    let addresses: Vec<String> = replicas.iter().map(Replica::address).collect();
    let mut sql = format!(
        "remote({}, {database}, {table}",
        quote(&addresses.join(","))
    );
    if let Some((user, password)) = credentials {
        let literals = format!(", {}, {}", quote(user), quote(password.expose()));
        sql.push_str(&literals.replace('?', "??"));
    }
    sql.push(')');
    sql
}

/// A SQL string literal.
pub(crate) fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// Where the statements of cluster mode go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The cluster (`ON CLUSTER`, `Distributed(...)`).
    pub cluster: String,
    /// The database of the `Distributed` tables (`clickhouse.database`).
    pub database: String,
    /// The database of the real tables.
    pub local: String,
}

impl Layout {
    /// The layout of `database` on `cluster`.
    pub fn new(cluster: &str, database: &str) -> Self {
        Self {
            cluster: cluster.to_string(),
            database: database.to_string(),
            local: local_database(database),
        }
    }
}

/// One statement of cluster mode, and how to run it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Run as is (`ON CLUSTER`: on every node).
    Run(String),
    /// An `ALTER TABLE ... ADD COLUMN`, skipped when every node has the column (18.16 has no
    /// `ADD COLUMN IF NOT EXISTS`). On a `Distributed` twin it is a `DROP` and a `CREATE ... AS` the
    /// altered table: 18.16 refuses `ALTER ... ON CLUSTER` of a table that is not replicated on a
    /// cluster whose shards are (`Code: 371`), and a `Distributed` table holds no rows here (INSERTs
    /// are synchronous).
    AddColumn {
        /// The database of the table.
        database: String,
        /// The table.
        table: String,
        /// The column.
        column: String,
        /// The statements, in order.
        statements: Vec<String>,
    },
    /// An `INSERT ... SELECT` copying rows between the migrations' tables (an INSERT into
    /// `vitals_1m` reading only `vitals_1m` is a [`Step::Run`] instead: read through the `Distributed`
    /// table, written to the entry node's local one). Cluster mode has no place
    /// to run it (an INSERT has no `ON CLUSTER`; the shards' local tables would each need their own):
    /// it runs only when there is nothing to copy, i.e. it is skipped when every source table is empty
    /// (as it is on a cluster created by these migrations), and fails otherwise.
    CopyWhenSourcesEmpty {
        /// The `Distributed` tables read by the statement.
        sources: Vec<String>,
        /// The statement.
        sql: String,
    },
    /// An `INSERT ... SELECT` from a table a migration renamed away (its old rows, into the table
    /// that took its name), run once per shard: `before`, then `remote()` over one replica of the
    /// shard reading `source` of the local database, then `after`. It writes through the
    /// `Distributed` table, which sends each row to the shard of its sharding key: the shard it was
    /// read from when it got there by the same key (the consumers write through it), and in any case
    /// the shard where the later rows of its key go. Replication carries it to the other replicas.
    CopyPerShard {
        /// The local table read (the same name on every shard).
        source: String,
        /// The statement up to the table read.
        before: String,
        /// The statement after it.
        after: String,
    },
}

/// A piece of SQL text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Ident,
    Literal,
    Comment,
    Space,
    Other,
}

#[derive(Debug, Clone, Copy)]
struct Token<'a> {
    kind: Kind,
    text: &'a str,
}

/// Splits SQL into identifiers, literals (strings, backquoted names, numbers), comments, spaces and
/// single characters.
fn tokenize(sql: &str) -> Vec<Token<'_>> {
    let bytes = sql.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        let b = bytes[i];
        let kind = if b.is_ascii_whitespace() {
            while i < bytes.len() && bytes[i].is_ascii_whitespace() {
                i += 1;
            }
            Kind::Space
        } else if sql[i..].starts_with("--") {
            while i < bytes.len() && bytes[i] != b'\n' {
                i += 1;
            }
            Kind::Comment
        } else if sql[i..].starts_with("/*") {
            i = sql[i + 2..]
                .find("*/")
                .map_or(bytes.len(), |end| i + 2 + end + 2);
            Kind::Comment
        } else if b == b'\'' || b == b'`' || b == b'"' {
            i += 1;
            while i < bytes.len() && bytes[i] != b {
                if bytes[i] == b'\\' {
                    i += 1;
                }
                i += 1;
            }
            i = (i + 1).min(bytes.len());
            Kind::Literal
        } else if b.is_ascii_alphabetic() || b == b'_' {
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                i += 1;
            }
            Kind::Ident
        } else if b.is_ascii_digit() {
            while i < bytes.len()
                && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_' || bytes[i] == b'.')
            {
                i += 1;
            }
            Kind::Literal
        } else {
            // One character (UTF-8: the whole character).
            i += sql[i..].chars().next().map_or(1, char::len_utf8);
            Kind::Other
        };
        out.push(Token {
            kind,
            text: &sql[start..i],
        });
    }
    out
}

fn is_code(t: &Token<'_>) -> bool {
    !matches!(t.kind, Kind::Space | Kind::Comment)
}

/// The names of the migrations' tables and views, and what RENAMEs make of them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Names {
    /// Tables created (`CREATE TABLE`) or renamed to (`RENAME TABLE ... TO`).
    pub tables: BTreeSet<String>,
    /// Views created.
    pub views: BTreeSet<String>,
    /// Tables renamed away and never renamed to (created under a staging name): no twin.
    pub staging: BTreeSet<String>,
    /// Tables renamed to and never created nor renamed away (the old table a rebuild keeps): no
    /// twin; an `INSERT ... SELECT` from them is a [`Step::CopyPerShard`].
    pub retired: BTreeSet<String>,
}

impl Names {
    /// Whether `table` has a `Distributed` twin in the main database.
    fn has_twin(&self, table: &str) -> bool {
        self.tables.contains(table)
            && !self.staging.contains(table)
            && !self.retired.contains(table)
    }
}

/// The `(from, to)` pairs of a `RENAME TABLE a TO b[, c TO d ...]` statement, from its code tokens.
fn rename_pairs<'a>(code: &[&Token<'a>]) -> Option<Vec<(&'a str, &'a str)>> {
    let upper = |k: usize| code.get(k).map(|t| t.text.to_ascii_uppercase());
    if upper(0).as_deref() != Some("RENAME") || upper(1).as_deref() != Some("TABLE") {
        return None;
    }
    let mut pairs = Vec::new();
    let mut k = 2;
    loop {
        let from = code.get(k).filter(|t| t.kind == Kind::Ident)?;
        let to = code.get(k + 2).filter(|t| t.kind == Kind::Ident)?;
        if upper(k + 1).as_deref() != Some("TO") {
            return None;
        }
        pairs.push((from.text, to.text));
        match code.get(k + 3).map(|t| t.text) {
            None => return Some(pairs),
            Some(",") => k += 4,
            Some(_) => return None,
        }
    }
}

/// The names the migrations create and rename.
pub fn created_names(statements: &[String]) -> Names {
    let mut tables = BTreeSet::new();
    let mut views = BTreeSet::new();
    let mut created = BTreeSet::new();
    let mut renamed_from = BTreeSet::new();
    let mut renamed_to = BTreeSet::new();
    for statement in statements {
        let tokens = tokenize(statement);
        let code: Vec<&Token<'_>> = tokens.iter().filter(|t| is_code(t)).collect();
        if let Some(pairs) = rename_pairs(&code) {
            for (from, to) in pairs {
                renamed_from.insert(from.to_string());
                renamed_to.insert(to.to_string());
                tables.insert(to.to_string());
            }
            continue;
        }
        let words: Vec<String> = code.iter().map(|t| t.text.to_ascii_uppercase()).collect();
        let words: Vec<&str> = words.iter().map(String::as_str).collect();
        let (is_view, rest) = match words.as_slice() {
            ["CREATE", "TABLE", ..] => (false, 2),
            ["CREATE", "MATERIALIZED", "VIEW", ..] => (true, 3),
            ["CREATE", "VIEW", ..] => (true, 2),
            _ => continue,
        };
        let name_at = if words[rest..].starts_with(&["IF", "NOT", "EXISTS"]) {
            rest + 3
        } else {
            rest
        };
        if let Some(name) = code.get(name_at).filter(|t| t.kind == Kind::Ident) {
            if is_view {
                views.insert(name.text.to_string());
            } else {
                tables.insert(name.text.to_string());
                created.insert(name.text.to_string());
            }
        }
    }
    let staging = renamed_from.difference(&renamed_to).cloned().collect();
    let retired = renamed_to
        .iter()
        .filter(|t| !created.contains(*t) && !renamed_from.contains(*t))
        .cloned()
        .collect();
    Names {
        tables,
        views,
        staging,
        retired,
    }
}

/// The statements of cluster mode for one statement of a migration file. `names` are the names the
/// migrations create ([`created_names`]); only they are qualified.
pub fn render(statement: &str, layout: &Layout, names: &Names) -> Result<Vec<Step>, String> {
    let Names { tables, views, .. } = names;
    let tokens = tokenize(statement);
    let code_tokens: Vec<&Token<'_>> = tokens.iter().filter(|t| is_code(t)).collect();
    if let Some(pairs) = rename_pairs(&code_tokens) {
        return render_rename(&pairs, layout, names, statement);
    }
    let code: Vec<usize> = (0..tokens.len()).filter(|&i| is_code(&tokens[i])).collect();
    let mut position_in_code: Vec<Option<usize>> = vec![None; tokens.len()];
    for (k, &i) in code.iter().enumerate() {
        position_in_code[i] = Some(k);
    }
    let word = |k: usize| -> String {
        code.get(k)
            .map(|&i| tokens[i].text.to_ascii_uppercase())
            .unwrap_or_default()
    };
    let words: Vec<String> = (0..code.len().min(8)).map(word).collect();
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    let skip_if = |at: usize, guard: &[&str]| {
        if words.get(at..at + guard.len()) == Some(guard) {
            at + guard.len()
        } else {
            at
        }
    };
    // Index (into `code`) of the statement's object, and what the statement is.
    let (name_at, what) = match words.as_slice() {
        ["CREATE", "TABLE", ..] => (skip_if(2, &["IF", "NOT", "EXISTS"]), What::CreateTable),
        ["CREATE", "MATERIALIZED", "VIEW", ..] => {
            (skip_if(3, &["IF", "NOT", "EXISTS"]), What::CreateView)
        }
        ["ALTER", "TABLE", ..] => (2, What::Alter),
        ["DROP", "TABLE", ..] => (skip_if(2, &["IF", "EXISTS"]), What::Drop),
        ["INSERT", "INTO", ..] => (2, What::Insert),
        _ => {
            return Err(format!(
                "cluster mode cannot run this statement (only CREATE TABLE, CREATE MATERIALIZED VIEW, \
                 ALTER TABLE, DROP TABLE, RENAME TABLE and INSERT INTO are rendered): {}",
                first_line(statement)
            ));
        }
    };
    let name_token = code
        .get(name_at)
        .map(|&i| tokens[i])
        .filter(|t| t.kind == Kind::Ident)
        .ok_or_else(|| format!("no table name in: {}", first_line(statement)))?;
    let name = name_token.text.to_string();
    if !tables.contains(&name) && !views.contains(&name) {
        return Err(format!(
            "{name} is not a table or view the migrations create: {}",
            first_line(statement)
        ));
    }
    // The statement with its object in `database` (the others in the local database).
    let rewrite = |database: &str, replicate: bool| -> String {
        let mut out = String::with_capacity(statement.len() + 200);
        let mut engine_state = 0u8;
        for (i, t) in tokens.iter().enumerate() {
            let position = position_in_code[i];
            let prev = position
                .and_then(|p| p.checked_sub(1))
                .map(|p| tokens[code[p]].text);
            let next = position
                .and_then(|p| code.get(p + 1))
                .map(|&n| tokens[n].text);
            let known = t.kind == Kind::Ident
                && (tables.contains(t.text) || views.contains(t.text))
                && prev != Some(".")
                && next != Some(".");
            if position == Some(name_at) {
                out.push_str(&format!(
                    "{database}.{} ON CLUSTER {}",
                    t.text, layout.cluster
                ));
                continue;
            }
            // ENGINE = XMergeTree( -> ENGINE = ReplicatedXMergeTree('path', '{replica}'[, ...
            if replicate
                && what == What::CreateTable
                && t.kind != Kind::Space
                && t.kind != Kind::Comment
            {
                match (engine_state, t.text) {
                    (0, w) if w.eq_ignore_ascii_case("ENGINE") => engine_state = 1,
                    (1, "=") => engine_state = 2,
                    (2, w)
                        if t.kind == Kind::Ident
                            && w.ends_with("MergeTree")
                            && !w.starts_with("Replicated") =>
                    {
                        out.push_str("Replicated");
                        out.push_str(w);
                        engine_state = 3;
                        continue;
                    }
                    (2, _) => engine_state = 9,
                    (3, "(") => {
                        out.push('(');
                        out.push_str(&quote(&zookeeper_path(&layout.local, &name)));
                        out.push_str(", '{replica}'");
                        if next != Some(")") {
                            out.push_str(", ");
                        }
                        engine_state = 9;
                        continue;
                    }
                    _ => {}
                }
            }
            if known {
                out.push_str(&layout.local);
                out.push('.');
            }
            out.push_str(t.text);
        }
        out.trim().to_string()
    };
    let local = rewrite(&layout.local, true);
    let twin = names.has_twin(&name);
    let steps = match what {
        What::CreateTable if twin => {
            vec![Step::Run(local), Step::Run(create_twin(layout, &name))]
        }
        What::CreateTable => vec![Step::Run(local)],
        What::CreateView => vec![Step::Run(local)],
        What::Alter => {
            let column = match (word(name_at + 1).as_str(), word(name_at + 2).as_str()) {
                ("ADD", "COLUMN") => code
                    .get(name_at + 3)
                    .map(|&i| tokens[i].text.to_string())
                    .ok_or_else(|| format!("no column in: {}", first_line(statement)))?,
                _ => {
                    return Err(format!(
                        "cluster mode renders only ALTER TABLE ... ADD COLUMN: {}",
                        first_line(statement)
                    ));
                }
            };
            let mut steps = vec![Step::AddColumn {
                database: layout.local.clone(),
                table: name.clone(),
                column: column.clone(),
                statements: vec![local],
            }];
            if twin {
                steps.push(Step::AddColumn {
                    database: layout.database.clone(),
                    table: name.clone(),
                    column,
                    statements: vec![drop_twin(layout, &name), create_twin(layout, &name)],
                });
            }
            steps
        }
        What::Drop => {
            let mut steps = vec![Step::Run(local)];
            if twin {
                steps.push(Step::Run(drop_twin(layout, &name)));
            }
            steps
        }
        What::Insert => {
            let read: BTreeSet<&str> = code
                .iter()
                .enumerate()
                .filter(|(k, _)| *k != name_at)
                .map(|(_, &i)| tokens[i])
                .filter(|t| t.kind == Kind::Ident && tables.contains(t.text))
                .map(|t| t.text)
                .collect();
            let from_retired = !read.is_empty() && read.iter().all(|t| names.retired.contains(*t));
            if from_retired && twin {
                copy_per_shard(&tokens, &position_in_code, name_at, layout, &read)?
            } else if read.len() == 1 && read.contains(name.as_str()) && what_aggregates(&name) {
                // A table completing its own rows (rows added to an AggregatingMergeTree merge with
                // those of the same key, whichever shard holds them): read the whole cluster through
                // the Distributed table, write into the entry node's local table, once.
                let mut sql = String::with_capacity(statement.len() + 64);
                for (i, t) in tokens.iter().enumerate() {
                    let known = t.kind == Kind::Ident && t.text == name;
                    if position_in_code[i] == Some(name_at) {
                        sql.push_str(&format!("{}.{}", layout.local, t.text));
                    } else if known {
                        sql.push_str(&format!("{}.{}", layout.database, t.text));
                    } else {
                        sql.push_str(t.text);
                    }
                }
                vec![Step::Run(sql.trim().to_string())]
            } else {
                vec![Step::CopyWhenSourcesEmpty {
                    sources: read
                        .into_iter()
                        .map(|t| format!("{}.{t}", layout.database))
                        .collect(),
                    sql: statement.to_string(),
                }]
            }
        }
    };
    Ok(steps)
}

/// `RENAME TABLE` of the local tables on every node (their twins read them by name).
fn render_rename(
    pairs: &[(&str, &str)],
    layout: &Layout,
    names: &Names,
    statement: &str,
) -> Result<Vec<Step>, String> {
    let mut renames = Vec::new();
    for (from, to) in pairs {
        for table in [from, to] {
            if !names.tables.contains(*table) {
                return Err(format!(
                    "{table} is not a table the migrations create: {}",
                    first_line(statement)
                ));
            }
        }
        renames.push(format!("{l}.{from} TO {l}.{to}", l = layout.local));
    }
    Ok(vec![Step::Run(format!(
        "RENAME TABLE {} ON CLUSTER {}",
        renames.join(", "),
        layout.cluster
    ))])
}

/// The [`Step::CopyPerShard`] of an `INSERT INTO <table> ... SELECT ... FROM <retired table>`.
fn copy_per_shard(
    tokens: &[Token<'_>],
    position_in_code: &[Option<usize>],
    name_at: usize,
    layout: &Layout,
    read: &BTreeSet<&str>,
) -> Result<Vec<Step>, String> {
    let mut before = String::new();
    let mut after = String::new();
    let mut source = None;
    for (i, t) in tokens.iter().enumerate() {
        let out = if source.is_some() {
            &mut after
        } else {
            &mut before
        };
        if position_in_code[i] == Some(name_at) {
            out.push_str(&format!("{}.{}", layout.database, t.text));
        } else if t.kind == Kind::Ident && read.contains(t.text) {
            if source.is_some() {
                return Err(format!(
                    "a copy from a renamed table reads it once (FROM {}): {}",
                    t.text,
                    before.trim()
                ));
            }
            source = Some(t.text.to_string());
        } else {
            out.push_str(t.text);
        }
    }
    let source = source.ok_or("no table read by the copy")?;
    Ok(vec![Step::CopyPerShard {
        source,
        before: before.trim_start().to_string(),
        after: after.trim_end().to_string(),
    }])
}

/// Tables whose rows merge by key (AggregatingMergeTree): rows added for a key on any shard add
/// to those of the key, since every read merges the shards' states.
fn what_aggregates(table: &str) -> bool {
    table == "vitals_1m"
}

/// The `Distributed` table over `table` on every node, sharded as [`SHARDING_KEYS`] says.
fn create_twin(layout: &Layout, table: &str) -> String {
    let key = SHARDING_KEYS
        .iter()
        .find(|(t, _)| *t == table)
        .map(|(_, key)| format!(", {key}"))
        .unwrap_or_default();
    format!(
        "CREATE TABLE IF NOT EXISTS {db}.{table} ON CLUSTER {c} AS {local}.{table} \
         ENGINE = Distributed({c}, {local}, {table}{key})",
        db = layout.database,
        c = layout.cluster,
        local = layout.local,
    )
}

fn drop_twin(layout: &Layout, table: &str) -> String {
    format!(
        "DROP TABLE IF EXISTS {}.{table} ON CLUSTER {}",
        layout.database, layout.cluster
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum What {
    CreateTable,
    CreateView,
    Alter,
    Drop,
    Insert,
}

fn first_line(statement: &str) -> &str {
    statement
        .lines()
        .find(|l| !l.trim().is_empty() && !l.trim_start().starts_with("--"))
        .unwrap_or("")
        .trim()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MIGRATIONS;

    fn all_statements() -> Vec<String> {
        MIGRATIONS.iter().flat_map(|m| m.statements()).collect()
    }

    fn layout() -> Layout {
        Layout::new("rum", "rum")
    }

    fn render_all() -> Vec<Step> {
        let statements = all_statements();
        let names = created_names(&statements);
        statements
            .iter()
            .flat_map(|s| render(s, &layout(), &names).unwrap())
            .collect()
    }

    fn sql(step: &Step) -> &str {
        match step {
            Step::Run(sql) => sql,
            Step::AddColumn { statements, .. } => &statements[0],
            Step::CopyWhenSourcesEmpty { sql, .. } => sql,
            Step::CopyPerShard { before, .. } => before,
        }
    }

    /// The statement without its comment lines.
    fn code(sql: &str) -> String {
        sql.lines()
            .filter(|l| !l.trim_start().starts_with("--"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn finds_the_tables_and_views_of_the_migrations() {
        let names = created_names(&all_statements());
        assert_eq!(
            names.tables.into_iter().collect::<Vec<_>>(),
            [
                "kafka_offsets",
                "vitals_1m",
                "vitals_1m_input",
                "vitals_1m_input_v2",
                "vitals_raw",
                "vitals_raw_new",
                "vitals_raw_pre007"
            ]
        );
        assert_eq!(
            names.staging.into_iter().collect::<Vec<_>>(),
            ["vitals_raw_new"]
        );
        assert_eq!(
            names.retired.into_iter().collect::<Vec<_>>(),
            ["vitals_raw_pre007"]
        );
        assert_eq!(
            names.views.into_iter().collect::<Vec<_>>(),
            [
                "kafka_offsets_mv",
                "vitals_1m_mv",
                "vitals_1m_rollup",
                "vitals_1m_rollup_v2"
            ]
        );
    }

    #[test]
    fn a_merge_tree_becomes_replicated_with_its_distributed_twin() {
        let steps = render_all();
        let raw = sql(&steps[0]);
        assert!(
            raw.starts_with("-- One row per metric"),
            "comments stay: {raw}"
        );
        assert!(raw.contains("CREATE TABLE IF NOT EXISTS rum_local.vitals_raw ON CLUSTER rum\n("));
        assert!(raw.contains(
            "ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/rum_local/vitals_raw', '{replica}')\n"
        ));
        assert_eq!(
            sql(&steps[1]),
            "CREATE TABLE IF NOT EXISTS rum.vitals_raw ON CLUSTER rum AS rum_local.vitals_raw \
             ENGINE = Distributed(rum, rum_local, vitals_raw, kafka_partition)"
        );
        let rollup = sql(&steps[2]);
        assert!(rollup.contains(
            "ENGINE = ReplicatedAggregatingMergeTree('/clickhouse/tables/{shard}/rum_local/vitals_1m', '{replica}')"
        ));
        assert_eq!(
            sql(&steps[3]),
            "CREATE TABLE IF NOT EXISTS rum.vitals_1m ON CLUSTER rum AS rum_local.vitals_1m \
             ENGINE = Distributed(rum, rum_local, vitals_1m)"
        );
    }

    #[test]
    fn views_read_and_write_the_local_tables() {
        let steps = render_all();
        let mv = sql(&steps[4]);
        assert!(mv.contains(
            "CREATE MATERIALIZED VIEW IF NOT EXISTS rum_local.vitals_1m_mv ON CLUSTER rum TO rum_local.vitals_1m AS"
        ));
        assert!(mv.contains("FROM rum_local.vitals_raw\nGROUP BY"), "{mv}");
        // Not a table name: left alone (a column, a function, a string).
        assert!(mv.contains("countState() AS samples"));
        let rollup = steps
            .iter()
            .map(sql)
            .find(|s| s.contains("vitals_1m_rollup"))
            .unwrap();
        assert!(rollup.contains("FROM rum_local.vitals_1m_input\nGROUP BY"));
        let v2 = steps
            .iter()
            .map(sql)
            .find(|s| s.contains("vitals_1m_rollup_v2"))
            .unwrap();
        assert!(v2.contains(
            "CREATE MATERIALIZED VIEW IF NOT EXISTS rum_local.vitals_1m_rollup_v2 ON CLUSTER rum TO rum_local.vitals_1m AS"
        ));
        assert!(v2.contains("FROM rum_local.vitals_1m_input_v2\nGROUP BY"));
        assert!(rollup.contains("maxStateIf(ledger_next, site = '') AS ledger"));
    }

    #[test]
    fn the_null_input_table_is_sharded_by_partition_and_not_replicated() {
        let steps = render_all();
        let input: Vec<&str> = steps
            .iter()
            .map(sql)
            .filter(|s| s.contains("vitals_1m_input") && s.contains("CREATE TABLE"))
            .collect();
        // 004 creates it; 005 its successor, `vitals_1m_input_v2`, with two more columns.
        assert_eq!(input.len(), 4);
        let as_004 = |s: &str| {
            code(s)
                .replace("vitals_1m_input_v2", "vitals_1m_input")
                .replace(
                    ",\n    prev_value Float64 DEFAULT 0,\n    prev_rating String DEFAULT ''",
                    "",
                )
        };
        assert_eq!(
            code(input[0]),
            as_004(input[2]),
            "005 adds only two columns"
        );
        assert_eq!(input[1], as_004(input[3]));
        assert!(input[2].contains("prev_rating String DEFAULT ''"));
        assert_eq!(
            input[3],
            "CREATE TABLE IF NOT EXISTS rum.vitals_1m_input_v2 ON CLUSTER rum AS rum_local.vitals_1m_input_v2 \
             ENGINE = Distributed(rum, rum_local, vitals_1m_input_v2, kafka_partition)"
        );
        assert!(input[0]
            .contains("CREATE TABLE IF NOT EXISTS rum_local.vitals_1m_input ON CLUSTER rum\n("));
        assert!(input[0].ends_with("ENGINE = Null"));
        assert_eq!(
            input[1],
            "CREATE TABLE IF NOT EXISTS rum.vitals_1m_input ON CLUSTER rum AS rum_local.vitals_1m_input \
             ENGINE = Distributed(rum, rum_local, vitals_1m_input, kafka_partition)"
        );
    }

    #[test]
    fn add_column_alters_the_replicated_table_and_recreates_its_twin() {
        let steps = render_all();
        // Without the file's comments.
        let adds: Vec<Step> = steps
            .iter()
            .filter_map(|s| match s {
                Step::AddColumn {
                    database,
                    table,
                    column,
                    statements,
                } => Some(Step::AddColumn {
                    database: database.clone(),
                    table: table.clone(),
                    column: column.clone(),
                    statements: statements.iter().map(|s| code(s)).collect(),
                }),
                _ => None,
            })
            .collect();
        let twin = |table: &str| {
            vec![
                format!("DROP TABLE IF EXISTS rum.{table} ON CLUSTER rum"),
                format!(
                    "CREATE TABLE IF NOT EXISTS rum.{table} ON CLUSTER rum AS rum_local.{table} ENGINE = Distributed(rum, rum_local, {table}{})",
                    if table == "vitals_raw" {
                        ", kafka_partition"
                    } else {
                        ""
                    }
                ),
            ]
        };
        // 005 and 006: each column added on the local tables, each followed by the twin made again.
        let added: Vec<(&str, &str, &str)> = adds[4..]
            .iter()
            .map(|s| match s {
                Step::AddColumn {
                    database,
                    table,
                    column,
                    ..
                } => (database.as_str(), table.as_str(), column.as_str()),
                _ => unreachable!(),
            })
            .collect();
        let mut expected = Vec::new();
        for (table, columns) in [
            (
                "vitals_raw",
                &[
                    "page_id",
                    "release",
                    "rtt",
                    "browser",
                    "browser_major",
                    "target",
                    "resource_url",
                    "time_to_first_byte",
                    "resource_load_delay",
                    "resource_load_duration",
                    "element_render_delay",
                    "interaction_type",
                    "input_delay",
                    "processing_duration",
                    "presentation_delay",
                    "script_url",
                    "script_invoker",
                ][..],
            ),
            (
                "vitals_1m",
                &[
                    "weighted_good",
                    "weighted_needs_improvement",
                    "weighted_poor",
                    "weighted_sketch",
                ][..],
            ),
            // 006
            (
                "vitals_raw",
                &["revision", "replaces_value", "replaces_rating"][..],
            ),
        ] {
            for column in columns {
                expected.push(("rum_local", table, *column));
                expected.push(("rum", table, *column));
            }
        }
        assert_eq!(added, expected);
        assert_eq!(
            adds[..4],
            [
                Step::AddColumn {
                    database: "rum_local".into(),
                    table: "vitals_raw".into(),
                    column: "kafka_topic_id".into(),
                    statements: vec!["ALTER TABLE rum_local.vitals_raw ON CLUSTER rum ADD COLUMN kafka_topic_id String DEFAULT '' AFTER kafka_topic".into()],
                },
                Step::AddColumn {
                    database: "rum".into(),
                    table: "vitals_raw".into(),
                    column: "kafka_topic_id".into(),
                    statements: twin("vitals_raw"),
                },
                Step::AddColumn {
                    database: "rum_local".into(),
                    table: "vitals_1m".into(),
                    column: "ledger".into(),
                    statements: vec!["ALTER TABLE rum_local.vitals_1m ON CLUSTER rum ADD COLUMN ledger AggregateFunction(max, UInt64)".into()],
                },
                Step::AddColumn {
                    database: "rum".into(),
                    table: "vitals_1m".into(),
                    column: "ledger".into(),
                    statements: twin("vitals_1m"),
                },
            ]
        );
    }

    #[test]
    fn an_aggregating_table_completing_its_own_rows_runs_once_on_the_entry_node() {
        let steps = render_all();
        let backfill: Vec<&str> = steps
            .iter()
            .filter_map(|s| match s {
                Step::Run(sql) if sql.contains("INSERT INTO") => Some(sql.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(backfill.len(), 1, "{backfill:?}");
        let sql = code(backfill[0]);
        assert!(
            sql.starts_with("INSERT INTO rum_local.vitals_1m (minute,"),
            "{sql}"
        );
        assert!(sql.contains("FROM rum.vitals_1m\n"), "{sql}");
        assert!(!sql.contains("ON CLUSTER"), "{sql}");
    }

    #[test]
    fn drops_and_copies() {
        let steps = render_all();
        let drops: Vec<String> = steps
            .iter()
            .filter(|s| matches!(s, Step::Run(_)))
            .map(|s| code(sql(s)))
            .filter(|s| s.starts_with("DROP"))
            .collect();
        assert_eq!(
            drops,
            [
                "DROP TABLE IF EXISTS rum_local.kafka_offsets_mv ON CLUSTER rum",
                "DROP TABLE IF EXISTS rum_local.vitals_1m_mv ON CLUSTER rum"
            ]
        );
        let copy = steps
            .iter()
            .find(|s| matches!(s, Step::CopyWhenSourcesEmpty { .. }))
            .unwrap();
        let Step::CopyWhenSourcesEmpty { sources, .. } = copy else {
            unreachable!()
        };
        assert_eq!(sources, &["rum.kafka_offsets".to_string()]);
    }

    #[test]
    fn other_statements_and_unknown_tables_are_refused() {
        let names = created_names(&all_statements());
        let l = layout();
        assert!(render("SELECT 1", &l, &names).is_err());
        assert!(render("CREATE TABLE other (a UInt8) ENGINE = Memory", &l, &names).is_err());
        assert!(render("ALTER TABLE vitals_raw DROP COLUMN site", &l, &names).is_err());
        assert!(render("RENAME TABLE vitals_raw TO other", &l, &names).is_err());
        assert!(render(
            "INSERT INTO vitals_raw SELECT * FROM vitals_raw_pre007 UNION ALL SELECT * FROM vitals_raw_pre007",
            &l,
            &names
        )
        .is_err());
    }

    #[test]
    fn engine_arguments_are_kept_after_the_path() {
        let names = Names {
            tables: ["t".to_string()].into(),
            ..Names::default()
        };
        let steps = render(
            "CREATE TABLE IF NOT EXISTS t (a UInt8, v UInt64) ENGINE = ReplacingMergeTree(v) ORDER BY a",
            &Layout::new("c1", "db"),
            &names,
        )
        .unwrap();
        assert_eq!(
            sql(&steps[0]),
            "CREATE TABLE IF NOT EXISTS db_local.t ON CLUSTER c1 (a UInt8, v UInt64) ENGINE = \
             ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/db_local/t', '{replica}', v) ORDER BY a"
        );
    }

    /// Migration 007's steps: everything rendered for it.
    fn steps_of_007() -> Vec<Step> {
        let names = created_names(&all_statements());
        let m = MIGRATIONS.iter().find(|m| m.version == 7).unwrap();
        m.statements()
            .iter()
            .flat_map(|s| render(s, &layout(), &names).unwrap())
            .collect()
    }

    #[test]
    fn a_rebuilt_table_is_created_replicated_under_its_staging_name_without_a_twin() {
        let steps = steps_of_007();
        assert_eq!(steps.len(), 3, "{steps:#?}");
        let Step::Run(create) = &steps[0] else {
            panic!("{:?}", steps[0])
        };
        let create = code(create);
        assert!(
            create.starts_with(
                "CREATE TABLE IF NOT EXISTS rum_local.vitals_raw_new ON CLUSTER rum\n("
            ),
            "{create}"
        );
        assert!(create.contains(
            "ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/rum_local/vitals_raw_new', '{replica}', revision)\n"
        ), "{create}");
        assert!(create.contains("ORDER BY (site, metric, route, device, received_at, metric_id,"));
        assert!(
            !steps.iter().any(|s| code(sql(s)).contains("Distributed")),
            "the twin rum.vitals_raw stays (it reads rum_local.vitals_raw by name): {steps:#?}"
        );
    }

    #[test]
    fn a_rename_renames_the_local_tables_on_every_node() {
        let steps = steps_of_007();
        assert_eq!(
            steps[1],
            Step::Run(
                "RENAME TABLE rum_local.vitals_raw TO rum_local.vitals_raw_pre007, \
                 rum_local.vitals_raw_new TO rum_local.vitals_raw ON CLUSTER rum"
                    .into()
            )
        );
        // What the runner sends when the first pair was renamed before an interruption.
        let names = created_names(&all_statements());
        assert_eq!(
            render(
                "RENAME TABLE vitals_raw_new TO vitals_raw",
                &layout(),
                &names
            )
            .unwrap(),
            [Step::Run(
                "RENAME TABLE rum_local.vitals_raw_new TO rum_local.vitals_raw ON CLUSTER rum"
                    .into()
            )]
        );
    }

    #[test]
    fn the_copy_from_the_old_table_runs_per_shard_through_the_distributed_table() {
        let steps = steps_of_007();
        let Step::CopyPerShard {
            source,
            before,
            after,
        } = &steps[2]
        else {
            panic!("{:?}", steps[2])
        };
        assert_eq!(source, "vitals_raw_pre007");
        assert!(
            before.starts_with("INSERT INTO rum.vitals_raw (received_at, site,"),
            "{before}"
        );
        assert!(before.ends_with("replaces_rating\nFROM "), "{before}");
        assert!(!before.contains("rum_local"), "{before}");
        assert_eq!(after, "");
        // Every column copied, in the order of the INSERT's list.
        let list =
            |s: &str| -> Vec<String> { s.split(',').map(|c| c.trim().to_string()).collect() };
        let insert = &before[before.find('(').unwrap() + 1..before.find(')').unwrap()];
        let select = &before[before.find("SELECT ").unwrap() + 7..before.rfind("\nFROM").unwrap()];
        assert_eq!(list(insert), list(select));
        assert_eq!(list(insert).len(), 34);
    }

    #[test]
    fn remote_reads_every_replica_and_quotes() {
        let replicas = vec![
            Replica {
                shard_num: 1,
                replica_num: 1,
                host_address: "127.0.0.1".into(),
                port: 9001,
            },
            Replica {
                shard_num: 1,
                replica_num: 2,
                host_address: "::1".into(),
                port: 9002,
            },
        ];
        assert_eq!(
            remote(&replicas, "rum_local", "vitals_1m", None),
            "remote('127.0.0.1:9001,[::1]:9002', rum_local, vitals_1m)"
        );
        let creds = ("rum".to_string(), Secret::new("p'w?"));
        assert_eq!(
            remote(&replicas[..1], "system", "processes", Some(&creds)),
            "remote('127.0.0.1:9001', system, processes, 'rum', 'p\\'w??')"
        );
        let reads = ReplicaReads::new("rum", "default", Secret::default());
        assert!(reads.credentials.is_none());
        let reads = ReplicaReads::new("rum", "rum", Secret::new("secret"));
        assert!(!format!("{reads:?}").contains("secret"));
    }
}
