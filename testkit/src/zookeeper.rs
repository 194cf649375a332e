//! ZooKeeper 3.8 (Debian's `libzookeeper-java`), standalone, on a free loopback port: the coordination service of
//! ClickHouse's replicated tables ([`crate::ClickHouseCluster`]).
//!
//! Its `zoo.cfg` is rendered from `deploy/local/zookeeper/zoo.cfg.in`, as `deploy/local/lib.sh` does. The server is
//! `java -cp /usr/share/java/zookeeper.jar:/usr/share/java/slf4j-simple.jar QuorumPeerMain zoo.cfg` (the jar's
//! manifest names its other jars; slf4j-simple logs to stderr, which goes to `zookeeper.log` in its dir).

use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::Duration;

use crate::process::{
    find_binary, free_port, fresh_dir, kill, launch, remove_dir_unless_panicking, render_template,
    start_with_retry, terminate, Launch, LaunchError, STOP_TIMEOUT,
};

const ZOO_CFG_TEMPLATE: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../deploy/local/zookeeper/zoo.cfg.in"
));
/// The server and the jars its manifest names (package `libzookeeper-java`).
const ZOOKEEPER_JAR: &str = "/usr/share/java/zookeeper.jar";
/// slf4j's simple binding (package `libslf4j-java`, a dependency of `libzookeeper-java`): without a binding
/// ZooKeeper logs nothing at all.
const SLF4J_SIMPLE_JAR: &str = "/usr/share/java/slf4j-simple.jar";
/// A small heap, serial GC and the C1 compiler only: it starts in ~0.3 s and idles at ~60 MB RSS.
const JVM_OPTIONS: &[&str] = &[
    "-Xms32m",
    "-Xmx256m",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
    "-Dorg.slf4j.simpleLogger.showDateTime=true",
    "-Dorg.slf4j.simpleLogger.dateTimeFormat=yyyy-MM-dd'T'HH:mm:ss.SSSZ",
];
const MAIN_CLASS: &str = "org.apache.zookeeper.server.quorum.QuorumPeerMain";

/// A standalone ZooKeeper on a free 127.0.0.1 port, with its data under `.local/test/zookeeper-<pid>-<n>/`.
/// Dropping it kills it (SIGKILL) and removes its data.
pub struct ZooKeeper {
    port: u16,
    dir: PathBuf,
    java: PathBuf,
    child: Option<Child>,
}

impl ZooKeeper {
    /// The classpath of the server: `zookeeper.jar` and `slf4j-simple.jar` of `/usr/share/java`; panics naming
    /// `./deploy/local/install` when one is missing.
    pub fn classpath() -> String {
        for jar in [ZOOKEEPER_JAR, SLF4J_SIMPLE_JAR] {
            assert!(
                Path::new(jar).is_file(),
                "ZooKeeper: {jar} is missing; run ./deploy/local/install \
                 (apt packages libzookeeper-java and libslf4j-java)"
            );
        }
        format!("{ZOOKEEPER_JAR}:{SLF4J_SIMPLE_JAR}")
    }

    /// Start a fresh server on a free port and wait until it answers `ruok` with `imok` and serves (`srvr`).
    pub fn start() -> ZooKeeper {
        let classpath = Self::classpath();
        let java = java_bin();
        let dir = fresh_dir("zookeeper");
        start_with_retry("zookeeper", || {
            let port = free_port();
            write_zoo_cfg(&dir, port);
            let child = launch_zookeeper(&java, &classpath, &dir, port)?;
            Ok(ZooKeeper {
                port,
                dir: dir.clone(),
                java: java.clone(),
                child: Some(child),
            })
        })
    }

    /// The client port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:PORT`, a client's connect string.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The server's pid while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the server process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The data dir (`zoo.cfg`, `data/`, `zookeeper.log`).
    pub fn data_dir(&self) -> &Path {
        &self.dir
    }

    /// The server's log (slf4j-simple on stderr).
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("zookeeper.log")
    }

    /// Sends a four-letter word (`ruok`, `stat`, `srvr`, `mntr`) and returns the answer.
    pub fn four_letter_word(&self, word: &str) -> std::io::Result<String> {
        four_letter_word(self.port, word)
    }

    /// Kill the server (SIGKILL, a crash) and wait; the data stays for [`start_again`](Self::start_again).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill(&mut child);
        }
    }

    /// Stop the server (SIGTERM, SIGKILL after 20 s) and wait; the data stays. Idempotent.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child, STOP_TIMEOUT);
        }
    }

    /// Start the server again after [`stop`](Self::stop) or [`kill`](Self::kill): same port, same data.
    pub fn start_again(&mut self) {
        assert!(
            !self.is_running(),
            "ZooKeeper::start_again: the server is still running"
        );
        self.child = None;
        match launch_zookeeper(&self.java, &Self::classpath(), &self.dir, self.port) {
            Ok(child) => self.child = Some(child),
            Err(e) => panic!("{}", e.report),
        }
    }
}

impl Drop for ZooKeeper {
    fn drop(&mut self) {
        self.kill();
        remove_dir_unless_panicking(&self.dir, "zookeeper");
    }
}

/// `java` of `RUM_JAVA_BIN`, else `JAVA_HOME`, else PATH (as for Kafka).
fn java_bin() -> PathBuf {
    let mut candidates = Vec::new();
    if let Some(home) = std::env::var_os("JAVA_HOME").filter(|v| !v.is_empty()) {
        candidates.push(PathBuf::from(home).join("bin/java"));
    }
    find_binary(
        "RUM_JAVA_BIN",
        &candidates,
        "java",
        "ZooKeeper needs Java: run ./deploy/local/install",
    )
}

/// Writes `dir/zoo.cfg` from the template.
fn write_zoo_cfg(dir: &Path, port: u16) {
    let dir_str = dir.to_str().expect("the zookeeper data dir is not UTF-8");
    assert!(
        !dir_str.contains(['\\', '\n', ' ']),
        "the zookeeper data dir {dir_str} contains characters a properties file treats specially"
    );
    let cfg = render_template(
        ZOO_CFG_TEMPLATE,
        &[
            ("DATA_DIR", dir_str.to_string()),
            ("PORT", port.to_string()),
        ],
        "deploy/local/zookeeper/zoo.cfg.in",
    );
    fs::create_dir_all(dir.join("data")).expect("create the zookeeper data dir");
    fs::write(dir.join("zoo.cfg"), cfg).expect("write zoo.cfg");
}

/// Spawns the JVM on `dir/zoo.cfg` and waits until `ruok` answers `imok`.
fn launch_zookeeper(
    java: &Path,
    classpath: &str,
    dir: &Path,
    port: u16,
) -> Result<Child, LaunchError> {
    let mut args: Vec<String> = JVM_OPTIONS.iter().map(|s| s.to_string()).collect();
    args.extend([
        "-cp".to_string(),
        classpath.to_string(),
        MAIN_CLASS.to_string(),
        dir.join("zoo.cfg").display().to_string(),
    ]);
    let spec = Launch {
        what: "zookeeper",
        program: java,
        args: &args,
        cwd: dir,
        log: &dir.join("zookeeper.log"),
        extra_logs: &[],
    };
    launch(&spec, || is_serving(port))
}

/// `ruok` answers `imok` as soon as the process listens, a few milliseconds before it serves requests (`srvr` then
/// says "This ZooKeeper instance is not currently serving requests"): ready means both.
fn is_serving(port: u16) -> bool {
    four_letter_word(port, "ruok").is_ok_and(|answer| answer == "imok")
        && four_letter_word(port, "srvr").is_ok_and(|answer| answer.contains("\nMode: "))
}

/// One four-letter word over a fresh connection; the server closes it after answering.
fn four_letter_word(port: u16, word: &str) -> std::io::Result<String> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.set_write_timeout(Some(Duration::from_secs(2)))?;
    stream.write_all(word.as_bytes())?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::{find_placeholder, port_open};

    #[test]
    fn the_template_has_the_placeholders_testkit_fills() {
        let rendered = render_template(
            ZOO_CFG_TEMPLATE,
            &[("DATA_DIR", "/d".into()), ("PORT", "1".into())],
            "zoo.cfg.in",
        );
        assert_eq!(find_placeholder(&rendered), None);
        assert!(rendered.contains("\nclientPort=1\n"), "{rendered}");
        assert!(rendered.contains("\ndataDir=/d/data\n"), "{rendered}");
    }

    #[test]
    fn zookeeper_answers_and_survives_a_kill_and_a_stop() {
        let mut zk = ZooKeeper::start();
        assert_eq!(zk.four_letter_word("ruok").unwrap(), "imok");
        let srvr = zk.four_letter_word("srvr").unwrap();
        assert!(srvr.contains("Zookeeper version: 3.8"), "{srvr}");
        assert!(srvr.contains("Mode: standalone"), "{srvr}");
        assert!(zk.log_path().is_file());
        let dir = zk.data_dir().to_path_buf();

        zk.kill();
        assert!(!zk.is_running());
        assert!(zk.pid().is_none());
        assert!(!port_open(zk.port()), "a killed server still listens");
        zk.start_again();
        assert_eq!(zk.four_letter_word("ruok").unwrap(), "imok");
        let pid = zk.pid().expect("running");
        assert!(Path::new(&format!("/proc/{pid}")).exists());

        zk.stop();
        assert!(!port_open(zk.port()), "a stopped server still listens");
        zk.start_again();
        assert!(zk.four_letter_word("mntr").unwrap().contains("zk_version"));

        drop(zk);
        assert!(!dir.exists(), "the data dir is removed on drop");
    }
}
