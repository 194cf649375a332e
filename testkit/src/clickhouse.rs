//! A ClickHouse server (Debian's 18.16) on free loopback ports, configured from the same templates as
//! `deploy/local/` (`deploy/local/clickhouse/`), and a replicated cluster of them with a ZooKeeper
//! ([`ClickHouseCluster`]).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::thread;
use std::time::{Duration, Instant};

use crate::http::http;
use crate::process::{
    find_binary, free_port, fresh_dir, kill, launch, remove_dir_unless_panicking, render_template,
    start_with_retry, tail, terminate, Launch, LaunchError, START_TIMEOUT, STOP_TIMEOUT,
};
use crate::tls::TestCa;
use crate::zookeeper::ZooKeeper;

const CLICKHOUSE_CONFIG_TEMPLATE: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../deploy/local/clickhouse/config.xml.in"
));
const CLICKHOUSE_USERS: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../deploy/local/clickhouse/users.xml"
));
const CLICKHOUSE_CLUSTER_TEMPLATE: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../deploy/local/clickhouse/cluster.xml.in"
));
const QUERY_TIMEOUT: Duration = Duration::from_secs(120);

/// A ClickHouse server (Debian's 18.16) on two free ports, configured from `deploy/local/clickhouse/`.
pub struct ClickHouseServer {
    /// `http://127.0.0.1:PORT` (the HTTP interface).
    pub url: String,
    pub http_port: u16,
    /// The native protocol port (`clickhouse-client --port`).
    pub tcp_port: u16,
    /// The HTTPS port, when started with [`ClickHouseOptions::tls`].
    pub https_port: Option<u16>,
    /// The interserver HTTP port (replicas fetch parts over it), for a node of a [`ClickHouseCluster`].
    pub interserver_port: Option<u16>,
    bin: PathBuf,
    dir: PathBuf,
    child: Option<Child>,
}

impl ClickHouseServer {
    /// The server binary: `RUM_LOCAL_CLICKHOUSE_BIN`, else `/usr/sbin/clickhouse-server`, else on PATH.
    pub fn bin() -> PathBuf {
        find_binary(
            "RUM_LOCAL_CLICKHOUSE_BIN",
            &[PathBuf::from("/usr/sbin/clickhouse-server")],
            "clickhouse-server",
            "run ./deploy/local/install (apt package clickhouse-server)",
        )
    }

    /// Start a server with a fresh data dir on free ports and wait until `GET /ping` answers.
    pub fn start() -> ClickHouseServer {
        Self::start_with(&ClickHouseOptions::default())
    }

    /// Start a server with HTTPS and users of `options` besides the defaults.
    pub fn start_with(options: &ClickHouseOptions<'_>) -> ClickHouseServer {
        Self::start_with_settings(options, &[])
    }

    /// Like [`start_with`](Self::start_with), with server settings (name, value) over the template's
    /// (`config.d/settings.xml`), e.g. `("max_partition_size_to_drop", "1")`.
    pub fn start_with_settings(
        options: &ClickHouseOptions<'_>,
        settings: &[(&str, &str)],
    ) -> ClickHouseServer {
        let bin = Self::bin();
        let dir = fresh_dir("clickhouse");
        start_with_retry("clickhouse-server", || {
            let http_port = free_port();
            let tcp_port = free_port();
            write_clickhouse_config(&dir, http_port, tcp_port);
            let https_port = options.tls.map(|ca| {
                let port = free_port();
                write_https_config(&dir, port, ca);
                port
            });
            write_users(&dir, &options.users);
            write_settings(&dir, settings);
            let child = launch_clickhouse(&bin, &dir, http_port)?;
            Ok(ClickHouseServer {
                url: format!("http://127.0.0.1:{http_port}"),
                http_port,
                tcp_port,
                https_port,
                interserver_port: None,
                bin: bin.clone(),
                dir: dir.clone(),
                child: Some(child),
            })
        })
    }

    /// Start the server again after [`stop`](Self::stop) or [`kill`](Self::kill): same ports, same data.
    pub fn start_again(&mut self) {
        assert!(
            !self.is_running(),
            "ClickHouseServer::start_again: the server is still running"
        );
        self.child = None;
        match launch_clickhouse(&self.bin, &self.dir, self.http_port) {
            Ok(child) => self.child = Some(child),
            Err(e) => panic!("{}", e.report),
        }
    }

    /// `https://127.0.0.1:PORT` (panics when started without [`ClickHouseOptions::tls`]).
    pub fn https_url(&self) -> String {
        let port = self
            .https_port
            .expect("started without ClickHouseOptions::tls");
        format!("https://127.0.0.1:{port}")
    }

    /// The data dir (config, data, logs).
    pub fn data_dir(&self) -> &Path {
        &self.dir
    }

    /// The server's error log (`<data dir>/log/clickhouse-server.err.log`).
    pub fn err_log_path(&self) -> PathBuf {
        self.dir.join("log").join("clickhouse-server.err.log")
    }

    /// Run one statement over HTTP (POST, body = SQL) and return the raw response body (TSV by default, with the
    /// trailing newline). Panics with the server's error text on a non-200 answer or a connection error.
    pub fn query(&self, sql: &str) -> String {
        self.try_query(sql)
            .unwrap_or_else(|e| panic!("ClickHouse query failed: {e}\nquery: {sql}"))
    }

    /// Like [`query`](Self::query), but returns the error (the server's error body, or the I/O error) instead of
    /// panicking: for tests that expect failures, e.g. while the server is stopped.
    pub fn try_query(&self, sql: &str) -> Result<String, String> {
        self.try_query_with_settings(sql, &[])
    }

    /// Like [`query`](Self::query), with settings of this query (name, value) in the URL, e.g.
    /// `("insert_distributed_sync", "1")`.
    pub fn query_with_settings(&self, sql: &str, settings: &[(&str, &str)]) -> String {
        self.try_query_with_settings(sql, settings)
            .unwrap_or_else(|e| panic!("ClickHouse query failed: {e}\nquery: {sql}"))
    }

    /// Like [`try_query`](Self::try_query), with settings of this query (name, value) in the URL.
    pub fn try_query_with_settings(
        &self,
        sql: &str,
        settings: &[(&str, &str)],
    ) -> Result<String, String> {
        let mut path = String::from("/");
        for (i, (name, value)) in settings.iter().enumerate() {
            assert!(
                !name.is_empty()
                    && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                    && value
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b)),
                "setting {name}={value}: a name of [A-Za-z0-9_] and a value of [A-Za-z0-9_.-]"
            );
            path.push(if i == 0 { '?' } else { '&' });
            path.push_str(&format!("{name}={value}"));
        }
        match http(self.http_port, "POST", &path, sql.as_bytes(), QUERY_TIMEOUT) {
            Ok((200, body)) => Ok(String::from_utf8_lossy(&body).into_owned()),
            Ok((status, body)) => Err(format!(
                "HTTP {status}: {}",
                String::from_utf8_lossy(&body).trim_end()
            )),
            Err(e) => Err(format!("{}: {e}", self.url)),
        }
    }

    /// The server's pid while it runs (e.g. to pause it with SIGSTOP: a server that accepts
    /// connections and never answers).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the server process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Stop the server gracefully (SIGTERM, SIGKILL after 20 s) and wait; the data stays for
    /// [`start_again`](Self::start_again). Idempotent.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child, STOP_TIMEOUT);
        }
    }

    /// Kill the server (SIGKILL, a crash) and wait; the data stays for [`start_again`](Self::start_again).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill(&mut child);
        }
    }
}

/// Render `deploy/local/clickhouse/{config.xml.in,users.xml}` into `dir` (as `deploy/local/lib.sh` does).
fn write_clickhouse_config(dir: &Path, http_port: u16, tcp_port: u16) {
    let dir_str = dir.to_str().expect("the data dir is not UTF-8");
    assert!(
        !dir_str.contains(['&', '<', '>', '"', '\'']),
        "the data dir {dir_str} contains XML special characters"
    );
    let config = render_template(
        CLICKHOUSE_CONFIG_TEMPLATE,
        &[
            ("DATA_DIR", dir_str.to_string()),
            ("HTTP_PORT", http_port.to_string()),
            ("TCP_PORT", tcp_port.to_string()),
        ],
        "deploy/local/clickhouse/config.xml.in",
    );
    for sub in ["log", "tmp", "user_files", "format_schemas"] {
        fs::create_dir_all(dir.join(sub)).expect("create the clickhouse data dirs");
    }
    fs::write(dir.join("config.xml"), config).expect("write config.xml");
    fs::write(dir.join("users.xml"), CLICKHOUSE_USERS).expect("write users.xml");
}

/// HTTPS on `port` with the server certificate of `ca` (`config.d/https.xml`, which ClickHouse merges into
/// `config.xml`). No DH parameters: TLS 1.3 and ECDHE suites need none.
fn write_https_config(dir: &Path, port: u16, ca: &TestCa) {
    let config = format!(
        "<yandex>\n    <https_port>{port}</https_port>\n    <openSSL><server>\n        \
         <certificateFile>{}</certificateFile>\n        <privateKeyFile>{}</privateKeyFile>\n        \
         <verificationMode>none</verificationMode>\n        <loadDefaultCAFile>false</loadDefaultCAFile>\n        \
         <cacheSessions>true</cacheSessions>\n        <disableProtocols>sslv2,sslv3</disableProtocols>\n        \
         <preferServerCiphers>true</preferServerCiphers>\n    </server></openSSL>\n</yandex>\n",
        ca.server_cert().display(),
        ca.server_key().display()
    );
    fs::create_dir_all(dir.join("config.d")).expect("create config.d");
    fs::write(dir.join("config.d").join("https.xml"), config).expect("write config.d/https.xml");
}

/// Users with passwords besides `default` (`users.d/test-users.xml`, merged into `users.xml`).
fn write_users(dir: &Path, users: &[(String, String)]) {
    let mut xml = String::from("<yandex>\n    <users>\n");
    for (name, password) in users {
        assert!(
            !format!("{name}{password}").contains(['&', '<', '>', '"', '\'']),
            "user {name}: XML special characters"
        );
        xml.push_str(&format!(
            "        <{name}>\n            <password>{password}</password>\n            \
             <networks><ip>127.0.0.1</ip><ip>::1</ip></networks>\n            \
             <profile>default</profile>\n            <quota>default</quota>\n        </{name}>\n"
        ));
    }
    xml.push_str("    </users>\n</yandex>\n");
    fs::create_dir_all(dir.join("users.d")).expect("create users.d");
    fs::write(dir.join("users.d").join("test-users.xml"), xml)
        .expect("write users.d/test-users.xml");
}

/// Server settings over the template's (`config.d/settings.xml`, which ClickHouse merges into `config.xml`).
fn write_settings(dir: &Path, settings: &[(&str, &str)]) {
    let mut xml = String::from("<yandex>\n");
    for (name, value) in settings {
        assert!(
            name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                && !value.contains(['&', '<', '>', '"', '\'']),
            "setting {name}: a name of [A-Za-z0-9_] and a value without XML special characters"
        );
        xml.push_str(&format!("    <{name}>{value}</{name}>\n"));
    }
    xml.push_str("</yandex>\n");
    fs::create_dir_all(dir.join("config.d")).expect("create config.d");
    fs::write(dir.join("config.d").join("settings.xml"), xml).expect("write config.d/settings.xml");
}

/// What [`ClickHouseServer::start_with`] adds to the default server.
#[derive(Default)]
pub struct ClickHouseOptions<'a> {
    /// Serve HTTPS too (on [`ClickHouseServer::https_port`]) with this CA's server certificate.
    pub tls: Option<&'a TestCa>,
    /// Users (name, plain password) besides the password-less `default`.
    pub users: Vec<(String, String)>,
}

/// Spawn clickhouse-server on the config in `dir` and wait for `/ping`; on failure the child is gone and the error
/// carries the tails of its logs.
fn launch_clickhouse(bin: &Path, dir: &Path, http_port: u16) -> Result<Child, LaunchError> {
    let args = vec![format!(
        "--config-file={}",
        dir.join("config.xml").display()
    )];
    let spec = Launch {
        what: "clickhouse-server",
        program: bin,
        args: &args,
        cwd: dir,
        log: &dir.join("stdout.log"),
        extra_logs: &[dir.join("log").join("clickhouse-server.err.log")],
    };
    launch(&spec, || {
        matches!(
            http(http_port, "GET", "/ping", b"", Duration::from_secs(2)),
            Ok((200, body)) if body.starts_with(b"Ok.")
        )
    })
}

impl Drop for ClickHouseServer {
    fn drop(&mut self) {
        self.kill();
        remove_dir_unless_panicking(&self.dir, "clickhouse");
    }
}

/// The default name of a [`ClickHouseCluster`]'s cluster (`<remote_servers>`, `ON CLUSTER rum`,
/// `Distributed(rum, ...)`, rum's `clickhouse.cluster`).
const CLUSTER_NAME: &str = "rum";

/// ClickHouse servers (Debian's 18.16) as one replicated cluster on free loopback ports, with a [`ZooKeeper`] of
/// their own, each node configured from `deploy/local/clickhouse/config.xml.in` plus
/// `deploy/local/clickhouse/cluster.xml.in` (as `config.d/cluster.xml`), as `./deploy/local/up --clickhouse
/// cluster` does:
///
/// * one cluster, [`cluster_name`](Self::cluster_name) (`rum` by default), of every shard and replica, with
///   `internal_replication` (a `Distributed` table writes one replica of a shard, replication copies it);
/// * macros `{shard}` = `01`, `02`, ... and `{replica}` = `s01r1`, `s01r2`, `s02r1`, ... (shard 01, replica 1:
///   unique in the cluster), so `ReplicatedMergeTree('/clickhouse/tables/{shard}/DB/TABLE', '{replica}')`;
/// * `ON CLUSTER` DDL through ZooKeeper (`/clickhouse/task_queue/ddl`), ZooKeeper sessions of 5 s (a killed replica
///   is active again ~10 s after its restart, not ~30 s).
///
/// Nodes are numbered from 1 like the macros: [`node(shard, replica)`](Self::node); [`nodes`](Self::nodes) lists
/// them shard by shard (s01r1, s01r2, s02r1, ...). Dropping the cluster kills every node, then ZooKeeper, and
/// removes their data.
pub struct ClickHouseCluster {
    /// Shard by shard: index `(shard - 1) * replicas + (replica - 1)`.
    nodes: Vec<ClickHouseServer>,
    shards: usize,
    replicas: usize,
    name: String,
    zookeeper: ZooKeeper,
    dir: PathBuf,
}

/// One node of a cluster before it starts.
struct NodePlan {
    shard: usize,
    replica: usize,
    http_port: u16,
    tcp_port: u16,
    interserver_port: u16,
    dir: PathBuf,
}

impl ClickHouseCluster {
    /// `shards` x `replicas` servers and a ZooKeeper, cluster [`CLUSTER_NAME`] (`rum`); returns when every node
    /// answers `/ping` and reads ZooKeeper. The nodes start in parallel.
    pub fn start(shards: usize, replicas: usize) -> ClickHouseCluster {
        Self::start_named(CLUSTER_NAME, shards, replicas)
    }

    /// Like [`start`](Self::start), with another cluster name.
    pub fn start_named(name: &str, shards: usize, replicas: usize) -> ClickHouseCluster {
        assert!(
            (1..=99).contains(&shards) && (1..=9).contains(&replicas),
            "a ClickHouseCluster has 1 to 99 shards of 1 to 9 replicas, not {shards} x {replicas}"
        );
        assert!(
            !name.is_empty()
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                && !name.as_bytes()[0].is_ascii_digit(),
            "cluster name {name:?}: [A-Za-z_][A-Za-z0-9_]* (an XML element name)"
        );
        let bin = ClickHouseServer::bin();
        let zookeeper = ZooKeeper::start();
        let dir = fresh_dir("clickhouse-cluster");
        let nodes = start_with_retry("clickhouse cluster", || {
            let plans: Vec<NodePlan> = (1..=shards)
                .flat_map(|shard| (1..=replicas).map(move |replica| (shard, replica)))
                .map(|(shard, replica)| NodePlan {
                    shard,
                    replica,
                    http_port: free_port(),
                    tcp_port: free_port(),
                    interserver_port: free_port(),
                    dir: dir.join(Self::replica_name(shard, replica)),
                })
                .collect();
            let shards_xml = shards_xml(&plans, shards);
            for plan in &plans {
                let _ = fs::remove_dir_all(&plan.dir);
                write_clickhouse_config(&plan.dir, plan.http_port, plan.tcp_port);
                write_cluster_config(plan, name, zookeeper.port(), &shards_xml);
            }
            // All at once: each is ready in ~0.2 s, four in a row would add up.
            let launched: Vec<Result<Child, LaunchError>> = thread::scope(|scope| {
                let handles: Vec<_> = plans
                    .iter()
                    .map(|plan| scope.spawn(|| launch_clickhouse(&bin, &plan.dir, plan.http_port)))
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().expect("a clickhouse launch thread panicked"))
                    .collect()
            });
            let mut nodes = Vec::new();
            let mut failure: Option<LaunchError> = None;
            for (plan, result) in plans.iter().zip(launched) {
                match result {
                    Ok(child) => nodes.push(ClickHouseServer {
                        url: format!("http://127.0.0.1:{}", plan.http_port),
                        http_port: plan.http_port,
                        tcp_port: plan.tcp_port,
                        https_port: None,
                        interserver_port: Some(plan.interserver_port),
                        bin: bin.clone(),
                        dir: plan.dir.clone(),
                        child: Some(child),
                    }),
                    // An exit (a port taken) is retried on fresh ports; keep that one over a timeout.
                    Err(e) if failure.as_ref().is_none_or(|f| !f.exited) => failure = Some(e),
                    Err(_) => {}
                }
            }
            match failure {
                None => Ok(nodes),
                Some(e) => {
                    for node in &mut nodes {
                        node.kill();
                    }
                    Err(e)
                }
            }
        });
        let cluster = ClickHouseCluster {
            nodes,
            shards,
            replicas,
            name: name.to_string(),
            zookeeper,
            dir,
        };
        for node in &cluster.nodes {
            cluster.wait_for_zookeeper(node);
        }
        cluster
    }

    /// The `{shard}` macro of shard `shard` (1-based): `01`, `02`, ...
    pub fn shard_name(shard: usize) -> String {
        format!("{shard:02}")
    }

    /// The `{replica}` macro of replica `replica` of shard `shard` (both 1-based): `s01r1`, `s01r2`, `s02r1`, ...
    pub fn replica_name(shard: usize, replica: usize) -> String {
        format!("s{shard:02}r{replica}")
    }

    /// The cluster's name (`ON CLUSTER`, `Distributed(NAME, ...)`, `clickhouse.cluster`).
    pub fn cluster_name(&self) -> &str {
        &self.name
    }

    /// The number of shards.
    pub fn shards(&self) -> usize {
        self.shards
    }

    /// The number of replicas of each shard.
    pub fn replicas(&self) -> usize {
        self.replicas
    }

    /// Every node, shard by shard: s01r1, s01r2, ..., s02r1, ...
    pub fn nodes(&self) -> &[ClickHouseServer] {
        &self.nodes
    }

    /// Every node, to kill, stop or start them again.
    pub fn nodes_mut(&mut self) -> &mut [ClickHouseServer] {
        &mut self.nodes
    }

    /// Replica `replica` of shard `shard`, both 1-based as in the macros (`node(2, 1)` is `s02r1`).
    pub fn node(&self, shard: usize, replica: usize) -> &ClickHouseServer {
        &self.nodes[self.index(shard, replica)]
    }

    /// Like [`node`](Self::node), to kill, stop or start it again.
    pub fn node_mut(&mut self, shard: usize, replica: usize) -> &mut ClickHouseServer {
        let i = self.index(shard, replica);
        &mut self.nodes[i]
    }

    /// The first node's `http://127.0.0.1:PORT` (s01r1; any node answers for the whole cluster through
    /// `Distributed` tables).
    pub fn url(&self) -> &str {
        &self.nodes[0].url
    }

    /// The cluster's ZooKeeper.
    pub fn zookeeper(&self) -> &ZooKeeper {
        &self.zookeeper
    }

    /// The cluster's ZooKeeper, to kill, stop or start it again.
    pub fn zookeeper_mut(&mut self) -> &mut ZooKeeper {
        &mut self.zookeeper
    }

    fn index(&self, shard: usize, replica: usize) -> usize {
        assert!(
            (1..=self.shards).contains(&shard) && (1..=self.replicas).contains(&replica),
            "no node ({shard}, {replica}): shards 1..={}, replicas 1..={} (1-based, as the macros)",
            self.shards,
            self.replicas
        );
        (shard - 1) * self.replicas + (replica - 1)
    }

    /// Waits until `node` reads ZooKeeper (its session is up: `ON CLUSTER` and replicated tables work).
    fn wait_for_zookeeper(&self, node: &ClickHouseServer) {
        let deadline = Instant::now() + START_TIMEOUT;
        let sql = "SELECT count() > 0 FROM system.zookeeper WHERE path = '/'";
        loop {
            let answer = node.try_query(sql);
            if answer.as_deref() == Ok("1\n") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "clickhouse {} does not read ZooKeeper {} after {START_TIMEOUT:?}: {answer:?}\n{}{}",
                node.url,
                self.zookeeper.address(),
                tail(&node.err_log_path(), 30),
                tail(&self.zookeeper.log_path(), 30)
            );
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for ClickHouseCluster {
    fn drop(&mut self) {
        // Every node first (each removes its own data), then ZooKeeper (its field, after this).
        for node in &mut self.nodes {
            node.kill();
        }
        self.nodes.clear();
        remove_dir_unless_panicking(&self.dir, "clickhouse cluster");
    }
}

/// The `<shard>` elements of `<remote_servers>`: every replica by its native port.
fn shards_xml(plans: &[NodePlan], shards: usize) -> String {
    let mut xml = String::new();
    for shard in 1..=shards {
        xml.push_str("            <shard>\n                <internal_replication>true</internal_replication>\n");
        for plan in plans.iter().filter(|p| p.shard == shard) {
            xml.push_str(&format!(
                "                <replica><host>127.0.0.1</host><port>{}</port></replica>\n",
                plan.tcp_port
            ));
        }
        xml.push_str("            </shard>\n");
    }
    xml.truncate(xml.trim_end().len());
    xml
}

/// Render `deploy/local/clickhouse/cluster.xml.in` into `<node dir>/config.d/cluster.xml` (as `deploy/local/lib.sh`
/// does).
fn write_cluster_config(plan: &NodePlan, cluster: &str, zookeeper_port: u16, shards_xml: &str) {
    let config = render_template(
        CLICKHOUSE_CLUSTER_TEMPLATE,
        &[
            ("INTERSERVER_PORT", plan.interserver_port.to_string()),
            ("ZOOKEEPER_PORT", zookeeper_port.to_string()),
            ("SHARD", ClickHouseCluster::shard_name(plan.shard)),
            (
                "REPLICA",
                ClickHouseCluster::replica_name(plan.shard, plan.replica),
            ),
            ("CLUSTER", cluster.to_string()),
            ("SHARDS", shards_xml.to_string()),
        ],
        "deploy/local/clickhouse/cluster.xml.in",
    );
    fs::create_dir_all(plan.dir.join("config.d")).expect("create config.d");
    fs::write(plan.dir.join("config.d").join("cluster.xml"), config)
        .expect("write config.d/cluster.xml");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::{find_placeholder, port_open};
    use crate::tls::TestCa;

    #[test]
    fn the_template_has_the_placeholders_testkit_fills() {
        assert_eq!(
            find_placeholder(CLICKHOUSE_CONFIG_TEMPLATE),
            Some("@DATA_DIR@")
        );
    }

    #[test]
    fn the_cluster_template_renders_every_shard_and_replica() {
        let plans: Vec<NodePlan> = [(1, 1), (1, 2), (2, 1), (2, 2)]
            .into_iter()
            .enumerate()
            .map(|(i, (shard, replica))| NodePlan {
                shard,
                replica,
                http_port: 1,
                tcp_port: 9001 + i as u16,
                interserver_port: 2,
                dir: PathBuf::from("/d"),
            })
            .collect();
        let shards = shards_xml(&plans, 2);
        assert_eq!(shards.matches("<shard>").count(), 2);
        assert_eq!(shards.matches("<internal_replication>true<").count(), 2);
        assert!(shards.find("<port>9002<").unwrap() < shards.find("</shard>").unwrap());
        assert!(shards.rfind("<port>9003<").unwrap() > shards.find("</shard>").unwrap());
        let config = render_template(
            CLICKHOUSE_CLUSTER_TEMPLATE,
            &[
                ("INTERSERVER_PORT", "2".into()),
                ("ZOOKEEPER_PORT", "3".into()),
                ("SHARD", ClickHouseCluster::shard_name(2)),
                ("REPLICA", ClickHouseCluster::replica_name(2, 1)),
                ("CLUSTER", "rum".into()),
                ("SHARDS", shards),
            ],
            "cluster.xml.in",
        );
        assert!(config
            .contains("<macros>\n        <shard>02</shard>\n        <replica>s02r1</replica>"));
        assert!(config.contains("<rum>\n            <shard>"), "{config}");
        // XML refuses `--` inside a comment (clickhouse-server then exits at start).
        let bare = config.replace("<!--", "").replace("-->", "");
        assert!(
            !bare.contains("--"),
            "`--` inside an XML comment:\n{config}"
        );
    }

    #[test]
    fn clickhouse_answers_and_survives_a_restart() {
        let mut ch = ClickHouseServer::start();
        assert_eq!(ch.url, format!("http://127.0.0.1:{}", ch.http_port));
        assert_eq!(ch.query("SELECT 1"), "1\n");
        // 18.16 names UTC "Etc/UTC" (and prints DateTime 0 as 0000-00-00); times must print in UTC.
        assert_eq!(
            ch.query("SELECT toString(toDateTime(3600))"),
            "1970-01-01 01:00:00\n"
        );
        let err = ch.try_query("SELECT nonsense(").unwrap_err();
        assert!(err.contains("Syntax error"), "{err}");

        ch.query("CREATE TABLE default.t (x UInt32) ENGINE = MergeTree ORDER BY x");
        ch.query("INSERT INTO default.t VALUES (1), (2), (3)");
        let dir = ch.data_dir().to_path_buf();
        assert!(dir.join("config.xml").is_file());

        ch.stop();
        assert!(!ch.is_running());
        assert!(ch.try_query("SELECT 1").is_err(), "stopped server answered");
        assert!(!port_open(ch.http_port) && !port_open(ch.tcp_port));

        ch.start_again();
        assert_eq!(ch.query("SELECT sum(x) FROM default.t"), "6\n");

        ch.kill();
        ch.start_again();
        assert_eq!(ch.query("SELECT count() FROM default.t"), "3\n");

        drop(ch);
        assert!(!dir.exists(), "the data dir is removed on drop");
    }

    #[test]
    fn serves_https_with_the_test_ca_and_password_users() {
        let ca = TestCa::generate();
        let ch = ClickHouseServer::start_with(&ClickHouseOptions {
            tls: Some(&ca),
            users: vec![("analyst".into(), "an4lyst-pw".into())],
        });
        let curl = |args: &[&str]| {
            let out = std::process::Command::new("curl")
                .args(["-sS", "--max-time", "10"])
                .args(args)
                .output()
                .expect("curl runs");
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
            )
        };
        let query = format!("{}/?query=SELECT%201", ch.https_url());
        let ca_file = ca.ca_pem().display().to_string();
        assert_eq!(
            curl(&["--cacert", &ca_file, "-u", "analyst:an4lyst-pw", &query]),
            (Some(0), "1\n".to_string())
        );
        // Untrusted without the CA (curl: 60, certificate problem); a wrong password is refused.
        assert_eq!(curl(&[&query]).0, Some(60));
        let (_, body) = curl(&["--cacert", &ca_file, "-u", "analyst:wrong", &query]);
        assert!(body.contains("Wrong password"), "{body}");
    }

    #[test]
    fn two_clickhouse_servers_run_side_by_side() {
        let a = ClickHouseServer::start();
        let b = ClickHouseServer::start();
        assert_ne!(a.http_port, b.http_port);
        assert_ne!(a.data_dir(), b.data_dir());
        a.query("CREATE TABLE default.only_a (x UInt8) ENGINE = Memory");
        assert_eq!(b.query("EXISTS TABLE default.only_a"), "0\n");
    }
}
