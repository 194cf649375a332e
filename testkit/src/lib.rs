//! Real services for integration tests, each on free loopback ports: Apache Kafka ([`Kafka`], one broker or a
//! cluster; feature `kafka`), a ClickHouse server ([`ClickHouseServer`], Debian's 18.16) or a replicated cluster of
//! them with a [`ZooKeeper`] (Debian's 3.8; [`ClickHouseCluster`]) and an [`Alertmanager`] (Debian's 0.25).
//!
//! * Data and logs live under `<repo>/.local/test/<kind>-<pid>-<n>/` and are removed on drop (kept, with a note on
//!   stderr, when the drop happens while a test panics; leftovers of dead test processes are removed by the next run).
//! * Children are stopped by their pid. They are spawned with `setpriv --pdeathsig KILL` from one long-lived thread,
//!   so they also die when the test process dies without running destructors (statics, `process::exit`, SIGKILL).
//! * Configs come from the same templates as `deploy/local/` (`deploy/local/clickhouse/`, `deploy/local/kafka/`), and
//!   versions and topic names from `deploy/local/stack.env`.
//!
//! Binaries: `RUM_LOCAL_KAFKA_HOME` (the Kafka jars, else `~/.cache/rum/kafka-VERSION`) with `java` from `JAVA_HOME` or
//! PATH, `RUM_LOCAL_CLICKHOUSE_BIN` (else `/usr/sbin/clickhouse-server`), `RUM_LOCAL_ALERTMANAGER_BIN`, ZooKeeper's
//! jars in `/usr/share/java`.
//! `./deploy/local/install` installs them all.

mod alertmanager;
mod clickhouse;
mod http;
#[cfg(feature = "kafka")]
mod kafka;
mod process;
mod prometheus;
pub mod proxy;
pub mod stack;
mod tls;
mod zookeeper;

pub use alertmanager::Alertmanager;
pub use clickhouse::{ClickHouseCluster, ClickHouseOptions, ClickHouseServer};
#[cfg(feature = "kafka")]
pub use kafka::{read_topic, Kafka, KafkaOptions, KafkaRecord};
pub use process::{
    free_port, guarded_command, port_open, repo_root, send_signal, spawn_guarded, test_dir,
};
pub use prometheus::{alert_rule_files, Prometheus, PrometheusOptions};
pub use proxy::{FaultProxy, Mode as ProxyMode};
pub use tls::TestCa;
pub use zookeeper::ZooKeeper;
