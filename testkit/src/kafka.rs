//! Apache Kafka (KRaft: every node is broker and controller) on free loopback ports: one broker, or a cluster of
//! three that tests can kill, stop, pause and restart node by node, with the log kept on disk in between.
//!
//! The jars come from `deploy/local/install` (Maven, `deploy/local/kafka/pom.xml`, the version pinned in
//! `deploy/local/stack.env`), in `$RUM_LOCAL_KAFKA_HOME/lib`, else `~/.cache/rum/kafka-VERSION/lib`. Each node's
//! `server.properties` is rendered from `deploy/local/kafka/server.properties.in`, as `deploy/local/lib.sh` does.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::Headers;
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::process::{
    find_binary, free_port, fresh_dir, kill, launch, port_open, remove_dir_unless_panicking,
    render_template, send_signal, start_with_retry, terminate, Launch, LaunchError, START_TIMEOUT,
};
use crate::stack;

const SERVER_PROPERTIES_TEMPLATE: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../deploy/local/kafka/server.properties.in"
));
const LOG4J2: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../deploy/local/kafka/log4j2.properties"
);
const TOOLS_LOG4J2: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../deploy/local/kafka/tools-log4j2.properties"
);
/// A broker's controlled shutdown moves its partition leaders first; past this it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Small heaps and the C1 compiler only: a broker of the tests starts in about half the time of the defaults
/// and needs no peak throughput.
const JVM_OPTIONS: &[&str] = &[
    "-Xms64m",
    "-Xmx384m",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-Djava.awt.headless=true",
];
/// Kafka's default `offsets.topic.num.partitions`: the group coordinator is the leader of one of them.
const OFFSETS_TOPIC_PARTITIONS: i32 = 50;

/// How to start a [`Kafka`].
#[derive(Debug, Clone)]
pub struct KafkaOptions {
    /// Nodes (each broker and controller). 3 gives replication factor 3 and `min.insync.replicas=2`.
    pub nodes: usize,
    /// `server.properties` lines appended for every node (they override the template's), with `@PORT@`,
    /// `@NODE_ID@` and `@EXTRA_PORT@` (a second free port of that node, for a TLS or SASL listener) filled in.
    pub extra_properties: Vec<String>,
    /// Arguments added to `kafka-storage format` (e.g. `--add-scram`, to create SCRAM users before the start).
    pub format_args: Vec<String>,
}

impl Default for KafkaOptions {
    fn default() -> Self {
        KafkaOptions {
            nodes: 1,
            extra_properties: Vec::new(),
            format_args: Vec::new(),
        }
    }
}

impl KafkaOptions {
    /// Adds a `SASL_SSL` listener on every node's extra port ([`Kafka::secure_brokers`]): TLS with the server
    /// certificate of `ca`, SASL with SCRAM-SHA-256, SCRAM-SHA-512 and PLAIN, each knowing `users` (name, password).
    /// The plaintext listener stays for the brokers' own traffic and the tests' admin client.
    pub fn with_sasl_ssl(mut self, ca: &crate::TestCa, users: &[(&str, &str)]) -> KafkaOptions {
        let plain_users: String = users
            .iter()
            .map(|(name, password)| format!(" user_{name}=\"{password}\""))
            .collect();
        self.extra_properties.extend([
            "listeners=PLAINTEXT://127.0.0.1:@PORT@,CONTROLLER://127.0.0.1:@CONTROLLER_PORT@,SASL_SSL://127.0.0.1:@EXTRA_PORT@".to_string(),
            "advertised.listeners=PLAINTEXT://127.0.0.1:@PORT@,SASL_SSL://127.0.0.1:@EXTRA_PORT@".to_string(),
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL".to_string(),
            "sasl.enabled.mechanisms=SCRAM-SHA-256,SCRAM-SHA-512,PLAIN".to_string(),
            "listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;".to_string(),
            "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;".to_string(),
            format!("listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required{plain_users};"),
            "listener.name.sasl_ssl.ssl.keystore.type=PEM".to_string(),
            format!("listener.name.sasl_ssl.ssl.keystore.location={}", ca.server_keystore_pem().display()),
        ]);
        for (name, password) in users {
            for mechanism in ["SCRAM-SHA-256", "SCRAM-SHA-512"] {
                self.format_args.push("--add-scram".to_string());
                self.format_args
                    .push(format!("{mechanism}=[name={name},password={password}]"));
            }
        }
        self
    }
}

/// One node of a [`Kafka`].
struct Node {
    id: u32,
    port: u16,
    controller_port: u16,
    extra_port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

/// Apache Kafka, one node or several, on free loopback ports. Dropping it kills every node and removes its data.
pub struct Kafka {
    /// Every node's `127.0.0.1:PORT`, comma-separated, for `bootstrap.servers`.
    pub brokers: String,
    nodes: Vec<Node>,
    dir: PathBuf,
    java: PathBuf,
    classpath: String,
}

impl Kafka {
    /// The Kafka jars: `$RUM_LOCAL_KAFKA_HOME/lib`, else `~/.cache/rum/kafka-VERSION/lib`; panics when missing.
    pub fn lib_dir() -> PathBuf {
        let home = std::env::var_os("RUM_LOCAL_KAFKA_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME").map(|home| {
                    PathBuf::from(home)
                        .join(".cache/rum")
                        .join(format!("kafka-{}", stack::kafka_version()))
                })
            })
            .expect("neither RUM_LOCAL_KAFKA_HOME nor HOME is set");
        let lib = home.join("lib");
        let has_broker = fs::read_dir(&lib).is_ok_and(|entries| {
            entries
                .flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with("kafka_2.13-"))
        });
        assert!(
            has_broker,
            "Apache Kafka {} is not installed in {} (RUM_LOCAL_KAFKA_HOME); run ./deploy/local/install",
            stack::kafka_version(),
            lib.display()
        );
        lib
    }

    /// One broker (combined KRaft mode) on free ports.
    pub fn start() -> Kafka {
        Self::start_with(KafkaOptions::default())
    }

    /// A cluster of `nodes` brokers (each also a controller).
    pub fn start_cluster(nodes: usize) -> Kafka {
        Self::start_with(KafkaOptions {
            nodes,
            ..KafkaOptions::default()
        })
    }

    /// Formats and starts every node, and waits until each one sees all of them.
    pub fn start_with(options: KafkaOptions) -> Kafka {
        assert!(options.nodes >= 1, "a Kafka needs at least one node");
        let java = java_bin();
        let classpath = format!("{}/*", Self::lib_dir().display());
        let dir = fresh_dir("kafka");
        let mut kafka = start_with_retry("kafka", || {
            let mut nodes: Vec<Node> = (1..=options.nodes as u32)
                .map(|id| Node {
                    id,
                    port: free_port(),
                    controller_port: free_port(),
                    extra_port: free_port(),
                    dir: dir.join(format!("node-{id}")),
                    child: None,
                })
                .collect();
            let voters: Vec<String> = nodes
                .iter()
                .map(|n| format!("{}@127.0.0.1:{}", n.id, n.controller_port))
                .collect();
            let cluster_id = cluster_id();
            for node in &nodes {
                let _ = fs::remove_dir_all(&node.dir);
                fs::create_dir_all(&node.dir).expect("create the kafka node dir");
                write_server_properties(node, &voters.join(","), &options);
            }
            // Formatting is a JVM start of its own (~1 s): all nodes at once.
            let formats: Vec<_> = nodes
                .iter()
                .map(|node| {
                    let mut cmd = Command::new(&java);
                    cmd.arg(format!("-Dlog4j2.configurationFile={TOOLS_LOG4J2}"))
                        .args(["-cp", &classpath, "kafka.tools.StorageTool", "format"])
                        .args(["-t", &cluster_id, "-c"])
                        .arg(node.dir.join("server.properties"))
                        .args(&options.format_args)
                        .stdin(Stdio::null());
                    (node.id, cmd.output())
                })
                .collect();
            for (id, output) in formats {
                let output = output.unwrap_or_else(|e| panic!("run {}: {e}", java.display()));
                assert!(
                    output.status.success(),
                    "kafka-storage format of node {id} failed ({}):\n{}{}",
                    output.status,
                    String::from_utf8_lossy(&output.stdout),
                    String::from_utf8_lossy(&output.stderr)
                );
            }
            for node in &mut nodes {
                let child = spawn_node(&java, &classpath, node)?;
                node.child = Some(child);
            }
            let brokers = nodes
                .iter()
                .map(|n| format!("127.0.0.1:{}", n.port))
                .collect::<Vec<_>>()
                .join(",");
            let mut kafka = Kafka {
                brokers,
                nodes,
                dir: dir.clone(),
                java: java.clone(),
                classpath: classpath.clone(),
            };
            for i in 0..kafka.nodes.len() {
                if let Err(e) = kafka.wait_node_ready(i) {
                    kafka.kill();
                    return Err(e);
                }
            }
            Ok(kafka)
        });
        kafka.dir = dir;
        kafka
    }

    /// Every node's `127.0.0.1:EXTRA_PORT`, comma-separated: the `SASL_SSL` listener of
    /// [`KafkaOptions::with_sasl_ssl`].
    pub fn secure_brokers(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.extra_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The number of nodes.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// The client port of node `i` (0-based).
    pub fn port(&self, i: usize) -> u16 {
        self.nodes[i].port
    }

    /// The second free port of node `i`, for a listener added with `@EXTRA_PORT@` in
    /// [`KafkaOptions::extra_properties`].
    pub fn extra_port(&self, i: usize) -> u16 {
        self.nodes[i].extra_port
    }

    /// Node `i`'s Kafka node id (`i + 1`).
    pub fn node_id(&self, i: usize) -> i32 {
        self.nodes[i].id as i32
    }

    /// The index of the node with Kafka node id `id`.
    pub fn index_of(&self, id: i32) -> usize {
        self.nodes
            .iter()
            .position(|n| n.id as i32 == id)
            .unwrap_or_else(|| panic!("no node with id {id}"))
    }

    /// Node `i`'s log (stdout and stderr of the JVM).
    pub fn log_path(&self, i: usize) -> PathBuf {
        self.nodes[i].dir.join("kafka.log")
    }

    /// Node `i`'s pid (panics when it is not running).
    pub fn pid(&self, i: usize) -> u32 {
        self.nodes[i]
            .child
            .as_ref()
            .unwrap_or_else(|| panic!("kafka node {} is not running", self.nodes[i].id))
            .id()
    }

    /// Whether node `i` is running.
    pub fn is_running(&mut self, i: usize) -> bool {
        self.nodes[i]
            .child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Creates a topic with replication factor min(nodes, 3) and `min.insync.replicas` 2 when that is 3 (else 1),
    /// and waits until every partition has a leader. A topic that already exists is fine.
    pub fn create_topic(&self, name: &str, partitions: u32) {
        let replication = self.nodes.len().min(3) as i32;
        let min_isr = if replication >= 3 { "2" } else { "1" };
        let admin: AdminClient<DefaultClientContext> =
            self.client_config().create().expect("kafka admin client");
        let topic = NewTopic::new(
            name,
            partitions as i32,
            TopicReplication::Fixed(replication),
        )
        .set("min.insync.replicas", min_isr);
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        let results = block_on(admin.create_topics([&topic], &options))
            .unwrap_or_else(|e| panic!("create topic {name}: {e}"));
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => panic!("create topic {topic}: {code}"),
            }
        }
        let nodes: Vec<i32> = self.nodes.iter().map(|n| n.id as i32).collect();
        self.wait_for_leaders_among(name, partitions as usize, Duration::from_secs(60), &nodes);
    }

    /// Deletes a topic and waits until the brokers no longer list it (a topic created again under the name is a new
    /// topic, with a new id, its offsets from 0).
    pub fn delete_topic(&self, name: &str) {
        let admin: AdminClient<DefaultClientContext> =
            self.client_config().create().expect("kafka admin client");
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        let results = block_on(admin.delete_topics(&[name], &options))
            .unwrap_or_else(|e| panic!("delete topic {name}: {e}"));
        for result in results {
            if let Err((topic, code)) = result {
                panic!("delete topic {topic}: {code}");
            }
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let listed = admin
                .inner()
                .fetch_metadata(None, Duration::from_secs(5))
                .map(|m| {
                    m.topics()
                        .iter()
                        .any(|t| t.name() == name && t.error().is_none())
                })
                .unwrap_or(true);
            if !listed {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "topic {name} still listed 60 s after its deletion"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Creates the pipeline's topics of `deploy/local/stack.env` (beacons and dead letters).
    pub fn create_pipeline_topics(&self) {
        for (name, partitions) in [stack::beacons_topic(), stack::dlq_topic()] {
            self.create_topic(name, partitions);
        }
    }

    /// Waits until all `partitions` of `topic` have a leader among the running nodes (right after a node died,
    /// the metadata still names it until the controller fences it).
    pub fn wait_for_leaders(&mut self, topic: &str, partitions: usize, timeout: Duration) {
        let running = self.running_ids();
        self.wait_for_leaders_among(topic, partitions, timeout, &running);
    }

    fn wait_for_leaders_among(
        &self,
        topic: &str,
        partitions: usize,
        timeout: Duration,
        nodes: &[i32],
    ) {
        let deadline = Instant::now() + timeout;
        loop {
            let led = self.partition_leaders(topic);
            if led.len() == partitions && led.values().all(|leader| nodes.contains(leader)) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{topic}: {} of {partitions} partitions have a leader among nodes {nodes:?} after {timeout:?}: {led:?}",
                led.values().filter(|l| nodes.contains(l)).count()
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// The node ids of the running nodes.
    pub fn running_ids(&mut self) -> Vec<i32> {
        let mut running = Vec::new();
        for node in &mut self.nodes {
            if node
                .child
                .as_mut()
                .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
            {
                running.push(node.id as i32);
            }
        }
        running
    }

    /// Partition -> leader node id (-1: none) of `topic`, from the cluster's metadata (empty when unreachable).
    pub fn partition_leaders(&self, topic: &str) -> HashMap<i32, i32> {
        let Ok(consumer) = self.client_config().create::<BaseConsumer>() else {
            return HashMap::new();
        };
        let Ok(metadata) = consumer.fetch_metadata(Some(topic), Duration::from_secs(5)) else {
            return HashMap::new();
        };
        metadata
            .topics()
            .iter()
            .filter(|t| t.name() == topic && t.error().is_none())
            .flat_map(|t| t.partitions().iter().map(|p| (p.id(), p.leader())))
            .collect()
    }

    /// The node id of `group`'s coordinator: the leader of its `__consumer_offsets` partition
    /// (`abs(group.hashCode()) % 50`, as the broker computes it). None while that partition has no leader.
    pub fn group_coordinator(&self, group: &str) -> Option<i32> {
        let partition = offsets_partition(group);
        self.partition_leaders("__consumer_offsets")
            .get(&partition)
            .copied()
            .filter(|leader| *leader >= 0)
    }

    /// A client config for this cluster (bootstrap servers, short timeouts).
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.brokers)
            .set("socket.timeout.ms", "10000")
            .set("log_level", "3");
        config
    }

    /// Freezes every node with SIGSTOP: ports stay open and nothing answers, like a hung broker.
    pub fn pause(&self) {
        for i in 0..self.nodes.len() {
            send_signal(self.pid(i), "STOP");
        }
    }

    /// Undoes [`pause`](Self::pause) with SIGCONT.
    pub fn resume(&self) {
        for i in 0..self.nodes.len() {
            send_signal(self.pid(i), "CONT");
        }
    }

    /// SIGSTOPs node `i` alone.
    pub fn pause_node(&self, i: usize) {
        send_signal(self.pid(i), "STOP");
    }

    /// SIGCONTs node `i`.
    pub fn resume_node(&self, i: usize) {
        send_signal(self.pid(i), "CONT");
    }

    /// SIGKILLs node `i` (a crash) and reaps it; its log stays on disk for [`start_node`](Self::start_node).
    pub fn kill_node(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            kill(&mut child);
        }
    }

    /// Stops node `i` with SIGTERM (a controlled shutdown; SIGKILL after 30 s); its log stays on disk.
    pub fn stop_node(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            terminate(&mut child, STOP_TIMEOUT);
        }
    }

    /// Starts node `i` again on its ports and its data, and waits until it sees every running node.
    pub fn start_node(&mut self, i: usize) {
        assert!(
            !self.is_running(i),
            "kafka node {} is still running",
            self.nodes[i].id
        );
        let child = spawn_node(&self.java, &self.classpath, &self.nodes[i])
            .unwrap_or_else(|e| panic!("{}", e.report));
        self.nodes[i].child = Some(child);
        if let Err(e) = self.wait_node_ready(i) {
            panic!("{}", e.report);
        }
    }

    /// Stops every node at once with SIGTERM (SIGKILL after 30 s) and waits; the logs stay on disk.
    pub fn stop(&mut self) {
        let children: Vec<Child> = self
            .nodes
            .iter_mut()
            .filter_map(|n| n.child.take())
            .collect();
        let handles: Vec<_> = children
            .into_iter()
            .map(|mut child| thread::spawn(move || terminate(&mut child, STOP_TIMEOUT)))
            .collect();
        for handle in handles {
            let _ = handle.join();
        }
    }

    /// Starts every stopped node again (all at once: a KRaft quorum needs a majority to elect a leader).
    pub fn start_all(&mut self) {
        let stopped: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| !self.is_running(i))
            .collect();
        for &i in &stopped {
            let child = spawn_node(&self.java, &self.classpath, &self.nodes[i])
                .unwrap_or_else(|e| panic!("{}", e.report));
            self.nodes[i].child = Some(child);
        }
        for &i in &stopped {
            if let Err(e) = self.wait_node_ready(i) {
                panic!("{}", e.report);
            }
        }
    }

    /// SIGKILLs every node. Idempotent.
    pub fn kill(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                kill(&mut child);
            }
        }
    }

    /// Waits until node `i` accepts connections and its metadata lists every running node.
    fn wait_node_ready(&mut self, i: usize) -> Result<(), LaunchError> {
        let deadline = Instant::now() + START_TIMEOUT;
        let port = self.nodes[i].port;
        loop {
            let running = self.running_ids();
            if port_open(port) && node_sees(port, &running) {
                return Ok(());
            }
            let node = &mut self.nodes[i];
            let exited = match node.child.as_mut().map(|c| c.try_wait()) {
                Some(Ok(Some(status))) => Some(format!("exited during startup ({status})")),
                None => Some("is not running".to_string()),
                _ => None,
            };
            let problem = match exited {
                Some(problem) => problem,
                None if Instant::now() >= deadline => {
                    if let Some(mut child) = node.child.take() {
                        kill(&mut child);
                    }
                    format!("did not list the running nodes {running:?} within {START_TIMEOUT:?}")
                }
                None => {
                    thread::sleep(Duration::from_millis(50));
                    continue;
                }
            };
            return Err(LaunchError {
                exited: problem.starts_with("exited"),
                report: format!(
                    "kafka node {} (port {port}) {problem}; dir {}\n{}",
                    node.id,
                    node.dir.display(),
                    crate::process::tail(&node.dir.join("kafka.log"), 40)
                ),
            });
        }
    }
}

impl Drop for Kafka {
    fn drop(&mut self) {
        self.kill();
        remove_dir_unless_panicking(&self.dir, "kafka");
    }
}

/// `java` of `JAVA_HOME`, else on PATH.
fn java_bin() -> PathBuf {
    let mut candidates = Vec::new();
    if let Some(home) = std::env::var_os("JAVA_HOME").filter(|v| !v.is_empty()) {
        candidates.push(PathBuf::from(home).join("bin/java"));
    }
    find_binary(
        "RUM_JAVA_BIN",
        &candidates,
        "java",
        "Apache Kafka needs Java 17 or newer: run ./deploy/local/install",
    )
}

/// Writes `server.properties` of `node` from the template, plus the extra lines.
fn write_server_properties(node: &Node, voters: &str, options: &KafkaOptions) {
    let replication = options.nodes.min(3);
    let min_isr = if replication >= 3 { 2 } else { 1 };
    let dir = node.dir.to_str().expect("the kafka data dir is not UTF-8");
    let fill = |text: &str| {
        render_template(
            text,
            &[
                ("NODE_ID", node.id.to_string()),
                ("VOTERS", voters.to_string()),
                ("PORT", node.port.to_string()),
                ("CONTROLLER_PORT", node.controller_port.to_string()),
                ("EXTRA_PORT", node.extra_port.to_string()),
                ("DATA_DIR", dir.to_string()),
                ("REPLICATION_FACTOR", replication.to_string()),
                ("MIN_ISR", min_isr.to_string()),
            ],
            "deploy/local/kafka/server.properties.in",
        )
    };
    let mut text = fill(SERVER_PROPERTIES_TEMPLATE);
    if !options.extra_properties.is_empty() {
        text.push_str("\n# Added by the test (rum-testkit KafkaOptions::extra_properties)\n");
        for line in &options.extra_properties {
            text.push_str(&fill(line));
            text.push('\n');
        }
    }
    fs::write(node.dir.join("server.properties"), text).expect("write server.properties");
}

/// Spawns node's JVM; returns once it runs (readiness is [`Kafka::wait_node_ready`]'s job).
fn spawn_node(java: &Path, classpath: &str, node: &Node) -> Result<Child, LaunchError> {
    let mut args: Vec<String> = JVM_OPTIONS.iter().map(|s| s.to_string()).collect();
    args.push(format!("-Dlog4j2.configurationFile={LOG4J2}"));
    args.extend([
        "-cp".to_string(),
        classpath.to_string(),
        "kafka.Kafka".to_string(),
    ]);
    args.push(node.dir.join("server.properties").display().to_string());
    let spec = Launch {
        what: "kafka",
        program: java,
        args: &args,
        cwd: &node.dir,
        log: &node.dir.join("kafka.log"),
        extra_logs: &[],
    };
    // Ready at once: the caller waits for the node to join (port_open alone says too little).
    launch(&spec, || true)
}

/// Whether the node on `port` answers a metadata request listing every node of `expected`.
fn node_sees(port: u16, expected: &[i32]) -> bool {
    let consumer: Result<BaseConsumer, _> = ClientConfig::new()
        .set("bootstrap.servers", format!("127.0.0.1:{port}"))
        .set("log_level", "0")
        .create();
    let Ok(consumer) = consumer else {
        return false;
    };
    let Ok(metadata) = consumer.fetch_metadata(None, Duration::from_secs(2)) else {
        return false;
    };
    let listed: Vec<i32> = metadata.brokers().iter().map(|b| b.id()).collect();
    expected.iter().all(|id| listed.contains(id))
}

/// A fresh KRaft cluster id: 16 bytes, URL-safe base64 without padding (22 characters), not starting with `-`
/// (kafka-storage's argument parser takes such an id for an option).
fn cluster_id() -> String {
    loop {
        let id = random_cluster_id();
        if !id.starts_with('-') {
            return id;
        }
    }
}

fn random_cluster_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut bytes = Vec::with_capacity(16);
    for salt in 0..2u64 {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(salt);
        hasher.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        bytes.extend_from_slice(&hasher.finish().to_le_bytes());
    }
    base64url(&bytes)
}

fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// The `__consumer_offsets` partition of `group`, as the group coordinator computes it:
/// `Utils.abs(groupId.hashCode()) % 50`, where `Utils.abs(Integer.MIN_VALUE)` is 0.
fn offsets_partition(group: &str) -> i32 {
    let hash = group
        .encode_utf16()
        .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c)));
    hash.checked_abs().unwrap_or(0) % OFFSETS_TOPIC_PARTITIONS
}

/// Runs an rdkafka future (admin calls) to completion on a small runtime of its own, on a thread of its own (the
/// caller may be a task of a test's runtime, where blocking on another runtime is refused).
fn block_on<F>(future: F) -> F::Output
where
    F: std::future::Future + Send,
    F::Output: Send,
{
    thread::scope(|scope| {
        scope
            .spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_time()
                    .build()
                    .expect("a tokio runtime for the kafka admin client")
                    .block_on(future)
            })
            .join()
            .expect("the kafka admin thread panicked")
    })
}

/// One message read back from Kafka.
#[derive(Debug, Clone)]
pub struct KafkaRecord {
    /// The partition it was read from.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// The key (empty when none).
    pub key: Vec<u8>,
    /// The value.
    pub value: Vec<u8>,
    /// The headers, in order.
    pub headers: Vec<(String, Vec<u8>)>,
}

/// Reads every message of `topic` (partitions `0..partitions`) from the beginning,
/// until `expected` were read and the topic stayed quiet for 1.5 s, or nothing came for 20 s.
pub fn read_topic(
    brokers: &str,
    topic: &str,
    partitions: i32,
    expected: usize,
) -> Vec<KafkaRecord> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "rum-testkit-reader")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "20")
        .create()
        .expect("kafka reader");
    let mut list = TopicPartitionList::new();
    for p in 0..partitions {
        list.add_partition_offset(topic, p, Offset::Beginning)
            .expect("partition offset");
    }
    consumer.assign(&list).expect("assign partitions");
    let mut out = Vec::new();
    let mut last = Instant::now();
    while out.len() < expected || last.elapsed() < Duration::from_millis(1500) {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(msg)) => {
                let headers = msg
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|h| (h.key.to_string(), h.value.unwrap_or_default().to_vec()))
                            .collect()
                    })
                    .unwrap_or_default();
                out.push(KafkaRecord {
                    partition: msg.partition(),
                    offset: msg.offset(),
                    key: msg.key().unwrap_or_default().to_vec(),
                    value: msg.payload().unwrap_or_default().to_vec(),
                    headers,
                });
                last = Instant::now();
            }
            Some(Err(e)) => panic!("reading {topic}: {e}"),
            None if last.elapsed() > Duration::from_secs(20) => break,
            None => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

    #[test]
    fn cluster_ids_are_22_url_safe_characters() {
        let id = cluster_id();
        assert_eq!(id.len(), 22, "{id}");
        assert!(id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_ne!(cluster_id(), id);
        assert_eq!(base64url(b"\xfb\xff"), "-_8");
        assert_eq!(base64url(b"Man"), "TWFu");
        assert!((0..200).all(|_| !cluster_id().starts_with('-')));
    }

    #[test]
    fn offsets_partition_matches_java_string_hash_code() {
        // Java's String.hashCode (jshell): "rum-consumers" -138775622, "rum-fault-group-é" -1965939091.
        assert_eq!(offsets_partition("rum-consumers"), 22);
        assert_eq!(offsets_partition("rum-fault-group-é"), 41);
        assert_eq!(offsets_partition(""), 0);
        assert_eq!(offsets_partition("a"), 97 % 50);
    }

    fn produce(kafka: &Kafka, topic: &str, n: usize) {
        let producer: ThreadedProducer<DefaultProducerContext> = kafka
            .client_config()
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .create()
            .expect("producer");
        for i in 0..n {
            let key = i.to_string();
            producer
                .send(BaseRecord::to(topic).key(&key).payload(&key))
                .expect("enqueue");
        }
        producer.flush(Duration::from_secs(30)).expect("flush");
    }

    #[test]
    fn one_broker_takes_topics_and_keeps_its_log_across_a_restart() {
        let mut kafka = Kafka::start();
        assert_eq!(kafka.brokers, format!("127.0.0.1:{}", kafka.port(0)));
        kafka.create_topic("rum.testkit.v1", 4);
        kafka.create_topic("rum.testkit.v1", 4); // already exists: fine
        assert_eq!(kafka.partition_leaders("rum.testkit.v1").len(), 4);
        produce(&kafka, "rum.testkit.v1", 100);
        kafka.stop_node(0);
        assert!(!kafka.is_running(0));
        assert!(!port_open(kafka.port(0)));
        kafka.start_node(0);
        assert_eq!(
            read_topic(&kafka.brokers, "rum.testkit.v1", 4, 100).len(),
            100
        );
        let log = kafka.log_path(0);
        assert!(log.is_file());
        drop(kafka);
        assert!(!log.exists(), "the kafka dir is removed on drop");
    }

    #[test]
    fn a_sasl_ssl_listener_takes_scram_and_plain_users_over_tls() {
        let ca = crate::TestCa::generate();
        let kafka =
            Kafka::start_with(KafkaOptions::default().with_sasl_ssl(&ca, &[("rum", "s3cret-pw")]));
        kafka.create_topic("rum.testkit.tls", 1);
        let ca_file = ca.ca_pem().display().to_string();
        let client = |mechanism: &str, password: &str| {
            let mut config = ClientConfig::new();
            config
                .set("bootstrap.servers", kafka.secure_brokers())
                .set("security.protocol", "SASL_SSL")
                .set("sasl.mechanism", mechanism)
                .set("sasl.username", "rum")
                .set("sasl.password", password)
                .set("ssl.ca.location", &ca_file)
                .set("log_level", "0");
            let consumer: BaseConsumer = config.create().expect("client");
            consumer
                .fetch_metadata(Some("rum.testkit.tls"), Duration::from_secs(10))
                .map(|m| m.topics().len())
        };
        for mechanism in ["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"] {
            assert_eq!(client(mechanism, "s3cret-pw").ok(), Some(1), "{mechanism}");
        }
        assert!(
            client("SCRAM-SHA-256", "wrong").is_err(),
            "a wrong password is refused"
        );
    }

    #[test]
    fn a_cluster_of_three_survives_a_killed_node() {
        let mut kafka = Kafka::start_cluster(3);
        assert_eq!(kafka.brokers.split(',').count(), 3);
        kafka.create_topic("rum.testkit.rf3", 2);
        produce(&kafka, "rum.testkit.rf3", 50);
        kafka.kill_node(1);
        // Leaders move to the two nodes left; min.insync.replicas=2 still takes acks=all writes.
        kafka.wait_for_leaders("rum.testkit.rf3", 2, Duration::from_secs(60));
        produce(&kafka, "rum.testkit.rf3", 50);
        kafka.start_node(1);
        assert_eq!(
            read_topic(&kafka.brokers, "rum.testkit.rf3", 2, 100).len(),
            100
        );
    }
}
