//! Real services for integration tests: a Kafka-compatible broker ([`Tansu`]), a ClickHouse server
//! ([`ClickHouseServer`], Debian's 18.16) and an [`Alertmanager`] (Debian's 0.25), each on free loopback ports.
//!
//! * Data and logs live under `<repo>/.local/test/<kind>-<pid>-<n>/` and are removed on drop (kept, with a note on
//!   stderr, when the drop happens while a test panics; leftovers of dead test processes are removed by the next run).
//! * Children are stopped by their pid. They are spawned with `setpriv --pdeathsig KILL` from one long-lived thread,
//!   so they also die when the test process dies without running destructors (statics, `process::exit`, SIGKILL).
//! * The ClickHouse config comes from the same templates as `deploy/local/` (`deploy/local/clickhouse/`).
//!
//! Binaries: `RUM_TANSU_BIN` (else `$RUM_TANSU_ROOT/bin/tansu`, `$HOME/.cache/rum/tansu-0.6.0/bin/tansu`, `tansu` on
//! `PATH`) and `RUM_LOCAL_CLICKHOUSE_BIN` (else `/usr/sbin/clickhouse-server`). `./deploy/local/install --with-tansu`
//! installs both.

use std::collections::HashSet;
use std::fs;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Mutex, Once, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

const CLICKHOUSE_CONFIG_TEMPLATE: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../deploy/local/clickhouse/config.xml.in"
));
const CLICKHOUSE_USERS: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../deploy/local/clickhouse/users.xml"
));

const TANSU_VERSION: &str = "0.6.0";
const START_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(20);
const QUERY_TIMEOUT: Duration = Duration::from_secs(120);
/// Attempts with fresh ports when a service cannot bind (another process took a port between pick and bind).
const START_ATTEMPTS: usize = 3;

// ---------------------------------------------------------------------------------------------------------------------
// Ports, paths, processes

/// A free TCP port on 127.0.0.1, never the same twice in one process.
///
/// Picked at random *below* the kernel's ephemeral range (`/proc/sys/net/ipv4/ip_local_port_range`) and checked by
/// binding it: the kernel hands ephemeral ports to outgoing connections, so a port from `bind(0)` can be taken by
/// a client socket before the service binds it. Falls back to `bind(0)` when that range is too small.
pub fn free_port() -> u16 {
    struct State {
        given: HashSet<u16>,
        rng: u64,
    }
    static STATE: Mutex<Option<State>> = Mutex::new(None);
    const LOWEST: u16 = 15000;
    let mut state = STATE.lock().unwrap_or_else(|e| e.into_inner());
    let state = state.get_or_insert_with(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        State {
            given: HashSet::new(),
            rng: (nanos ^ (u64::from(std::process::id()) << 32)) | 1,
        }
    });
    let ephemeral_start = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let below_ephemeral = ephemeral_start.saturating_sub(LOWEST) >= 2000;
    for _ in 0..1000 {
        let port = if below_ephemeral {
            // xorshift64
            state.rng ^= state.rng << 13;
            state.rng ^= state.rng >> 7;
            state.rng ^= state.rng << 17;
            LOWEST + (state.rng % u64::from(ephemeral_start - LOWEST)) as u16
        } else {
            match TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).and_then(|l| l.local_addr()) {
                Ok(addr) => addr.port(),
                Err(_) => continue,
            }
        };
        if state.given.contains(&port) {
            continue;
        }
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            state.given.insert(port);
            return port;
        }
    }
    panic!("no free port on 127.0.0.1 after 1000 tries");
}

/// The repository root (the workspace of this crate).
pub fn repo_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    fs::canonicalize(&root).unwrap_or(root)
}

/// `<repo>/.local/test`, where the services of the tests keep their data and logs.
pub fn test_dir() -> PathBuf {
    repo_root().join(".local").join("test")
}

/// A fresh directory `<repo>/.local/test/<kind>-<pid>-<n>`.
fn fresh_dir(kind: &str) -> PathBuf {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    static CLEANUP: Once = Once::new();
    CLEANUP.call_once(remove_dirs_of_dead_processes);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let dir = test_dir().join(format!("{kind}-{}-{n}", std::process::id()));
    if dir.exists() {
        let _ = fs::remove_dir_all(&dir);
    }
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    dir
}

/// Directories `<kind>-<pid>-<n>` whose test process no longer exists are leftovers: remove them.
fn remove_dirs_of_dead_processes() {
    let Ok(entries) = fs::read_dir(test_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let mut parts = name.rsplitn(3, '-');
        let (Some(_n), Some(pid), Some(_kind)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let Ok(pid) = pid.parse::<u32>() else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// Remove a service directory, unless a test is panicking (then keep it for the post-mortem).
fn remove_dir_unless_panicking(dir: &Path, what: &str) {
    if thread::panicking() {
        eprintln!(
            "rum-testkit: keeping the {what} data and logs in {}",
            dir.display()
        );
    } else {
        let _ = fs::remove_dir_all(dir);
    }
}

type SpawnRequest = (Command, mpsc::Sender<io::Result<Child>>);

/// Spawn a child from one thread that lives as long as the process, under `setpriv --pdeathsig KILL` when available:
/// the kernel kills the child when that thread (so the test process) dies, even without destructors running.
fn spawn(program: &Path, args: &[String], cwd: &Path, log: &Path) -> Child {
    static SPAWNER: OnceLock<mpsc::Sender<SpawnRequest>> = OnceLock::new();
    static SETPRIV: OnceLock<Option<PathBuf>> = OnceLock::new();
    let setpriv = SETPRIV.get_or_init(|| {
        let ok = Command::new("setpriv")
            .args(["--pdeathsig", "KILL", "--", "true"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| PathBuf::from("setpriv"))
    });
    let mut cmd = match setpriv {
        Some(setpriv) => {
            let mut cmd = Command::new(setpriv);
            cmd.args(["--pdeathsig", "KILL", "--"]).arg(program);
            cmd
        }
        None => Command::new(program),
    };
    let out = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap_or_else(|e| panic!("open {}: {e}", log.display()));
    let err = out
        .try_clone()
        .unwrap_or_else(|e| panic!("dup {}: {e}", log.display()));
    cmd.args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        thread::Builder::new()
            .name("rum-testkit-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("start the rum-testkit spawner thread");
        tx
    });
    let (tx, rx) = mpsc::channel();
    spawner
        .send((cmd, tx))
        .expect("rum-testkit spawner thread is gone");
    rx.recv()
        .expect("rum-testkit spawner thread is gone")
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()))
}

/// SIGTERM the child (through `sh -c kill`, std has no signal API), wait up to `timeout`, then SIGKILL and reap it.
fn terminate(child: &mut Child, timeout: Duration) {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return;
    }
    let pid = child.id().to_string();
    let sent = Command::new("/bin/sh")
        .args(["-c", "kill -TERM \"$1\"", "sh", &pid])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if sent {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if matches!(child.try_wait(), Ok(Some(_))) {
                return;
            }
            thread::sleep(Duration::from_millis(25));
        }
        eprintln!(
            "rum-testkit: pid {pid} still running {timeout:?} after SIGTERM, sending SIGKILL"
        );
    }
    kill(child);
}

/// SIGKILL the child and reap it.
fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// The last `n` lines of a file (for panic messages).
fn tail(path: &Path, n: usize) -> String {
    match fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            let start = lines.len().saturating_sub(n);
            if lines.is_empty() {
                return format!("--- {} is empty ---\n", path.display());
            }
            let mut out = format!("--- last lines of {} ---\n", path.display());
            for line in &lines[start..] {
                out.push_str("| ");
                out.push_str(line);
                out.push('\n');
            }
            out
        }
        Err(e) => format!("--- {}: {e} ---\n", path.display()),
    }
}

fn port_open(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

/// Find an executable: `$var` (must exist when set), then the candidates, then `name` on PATH.
fn find_binary(var: &str, candidates: &[PathBuf], name: &str, hint: &str) -> PathBuf {
    if let Some(value) = std::env::var_os(var).filter(|v| !v.is_empty()) {
        let path = PathBuf::from(value);
        assert!(
            path.is_file(),
            "{var}={} does not exist; {hint}",
            path.display()
        );
        return path;
    }
    if let Some(found) = candidates.iter().find(|p| p.is_file()) {
        return found.clone();
    }
    if let Some(paths) = std::env::var_os("PATH") {
        if let Some(found) = std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
        {
            return found;
        }
    }
    let looked: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
    panic!(
        "{name} not found ({var} is not set; looked in {} and on PATH); {hint}",
        looked.join(", ")
    );
}

// ---------------------------------------------------------------------------------------------------------------------
// HTTP (HTTP/1.0 over std::net, enough for ClickHouse)

/// One HTTP/1.0 request to 127.0.0.1:port; returns the status code and the body.
fn http(
    port: u16,
    method: &str,
    path: &str,
    body: &[u8],
    timeout: Duration,
) -> io::Result<(u16, Vec<u8>)> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&addr, timeout.min(Duration::from_secs(5)))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let head = format!(
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nContent-Type: text/plain; charset=UTF-8\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    stream.flush()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("HTTP response without a header end"))?;
    let headers = String::from_utf8_lossy(&response[..split]).into_owned();
    let status = headers
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(|| bad("HTTP response without a status code"))?;
    let mut body = response[split + 4..].to_vec();
    let chunked = headers.lines().any(|line| {
        let line = line.to_ascii_lowercase();
        line.starts_with("transfer-encoding:") && line.contains("chunked")
    });
    if chunked {
        body = dechunk(&body).ok_or_else(|| bad("bad chunked HTTP body"))?;
    }
    Ok((status, body))
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = data.windows(2).position(|w| w == b"\r\n")?;
        let size = std::str::from_utf8(&data[..eol]).ok()?;
        let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        data = &data[eol + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

// ---------------------------------------------------------------------------------------------------------------------
// Kafka: tansu

/// A tansu broker (Kafka-compatible) with memory storage on a free port. Stopping it loses all data.
pub struct Tansu {
    /// `127.0.0.1:PORT`, for `bootstrap.servers`.
    pub brokers: String,
    pub port: u16,
    bin: PathBuf,
    dir: PathBuf,
    child: Option<Child>,
}

impl Tansu {
    /// The tansu binary: `RUM_TANSU_BIN`, else `$RUM_TANSU_ROOT/bin/tansu`, else
    /// `$HOME/.cache/rum/tansu-0.6.0/bin/tansu`, else `tansu` on PATH; panics when none exists.
    pub fn bin() -> PathBuf {
        let mut candidates = Vec::new();
        if let Some(root) = std::env::var_os("RUM_TANSU_ROOT").filter(|v| !v.is_empty()) {
            candidates.push(PathBuf::from(root).join("bin").join("tansu"));
        }
        if let Some(home) = std::env::var_os("HOME").filter(|v| !v.is_empty()) {
            candidates.push(
                PathBuf::from(home)
                    .join(".cache/rum")
                    .join(format!("tansu-{TANSU_VERSION}"))
                    .join("bin/tansu"),
            );
        }
        find_binary(
            "RUM_TANSU_BIN",
            &candidates,
            "tansu",
            "run ./deploy/local/install --with-tansu (builds tansu once, ~13 min)",
        )
    }

    /// Start a broker on a free port and wait until it accepts connections.
    pub fn start() -> Tansu {
        let bin = Self::bin();
        let dir = fresh_dir("tansu");
        let log = dir.join("tansu.log");
        for attempt in 1..=START_ATTEMPTS {
            let port = free_port();
            let url = format!("tcp://127.0.0.1:{port}");
            let args: Vec<String> = [
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
                "--storage-engine",
                "memory://tansu/",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            // cwd is the service dir: tansu reads a .env file from its working directory.
            let mut child = spawn(&bin, &args, &dir, &log);
            let deadline = Instant::now() + START_TIMEOUT;
            loop {
                if port_open(port) {
                    return Tansu {
                        brokers: format!("127.0.0.1:{port}"),
                        port,
                        bin,
                        dir,
                        child: Some(child),
                    };
                }
                if let Ok(Some(status)) = child.try_wait() {
                    if attempt < START_ATTEMPTS {
                        eprintln!("rum-testkit: tansu on port {port} exited ({status}), retrying on another port");
                        break;
                    }
                    panic!(
                        "tansu exited during startup ({status}); log {}\n{}",
                        log.display(),
                        tail(&log, 30)
                    );
                }
                if Instant::now() >= deadline {
                    kill(&mut child);
                    panic!(
                        "tansu did not accept connections on {url} within {START_TIMEOUT:?}; log {}\n{}",
                        log.display(),
                        tail(&log, 30)
                    );
                }
                thread::sleep(Duration::from_millis(20));
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    /// `tcp://127.0.0.1:PORT`, the form the tansu CLI wants.
    pub fn broker_url(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.port)
    }

    /// The broker's log (its stdout and stderr).
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("tansu.log")
    }

    /// Create a topic with `tansu topic create`; a topic that already exists is fine. Panics on any other error.
    pub fn create_topic(&self, name: &str, partitions: u32) {
        let output = Command::new(&self.bin)
            .args(["topic", "create", "--broker", &self.broker_url()])
            .args(["--partitions", &partitions.to_string(), name])
            .current_dir(&self.dir)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("run {} topic create: {e}", self.bin.display()));
        if output.status.success() {
            return;
        }
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        if text.contains("already exists") || text.contains("TopicAlreadyExists") {
            return;
        }
        panic!(
            "tansu topic create {name} ({partitions} partitions) failed ({}):\n{text}",
            output.status
        );
    }

    /// The topics of the broker, as the JSON that `tansu topic list` prints.
    pub fn list_topics_json(&self) -> String {
        let output = Command::new(&self.bin)
            .args(["topic", "list", "--broker", &self.broker_url()])
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("run {} topic list: {e}", self.bin.display()));
        assert!(
            output.status.success(),
            "tansu topic list failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Whether the broker process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The broker's pid (panics after [`stop`](Self::stop)).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("tansu is running").id()
    }

    /// Freezes the broker with SIGSTOP: its port stays open and nothing answers, like a hung broker.
    /// Its data is kept; [`resume`](Self::resume) brings it back.
    pub fn pause(&self) {
        send_signal(self.pid(), "STOP");
    }

    /// Undoes [`pause`](Self::pause) with SIGCONT.
    pub fn resume(&self) {
        send_signal(self.pid(), "CONT");
    }

    /// Stop the broker (SIGKILL: memory storage has nothing to save) and wait until it is gone. Idempotent.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill(&mut child);
        }
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        self.stop();
        remove_dir_unless_panicking(&self.dir, "tansu");
    }
}

/// Sends `signal` (a name like `TERM`, `STOP`) to `pid` with kill(1); panics when that fails.
pub fn send_signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args(["-s", signal, &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -s {signal} {pid} failed");
}

// ---------------------------------------------------------------------------------------------------------------------
// ClickHouse

/// A ClickHouse server (Debian's 18.16) on two free ports, configured from `deploy/local/clickhouse/`.
pub struct ClickHouseServer {
    /// `http://127.0.0.1:PORT` (the HTTP interface).
    pub url: String,
    pub http_port: u16,
    /// The native protocol port (`clickhouse-client --port`).
    pub tcp_port: u16,
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
        let bin = Self::bin();
        let dir = fresh_dir("clickhouse");
        for attempt in 1..=START_ATTEMPTS {
            let http_port = free_port();
            let tcp_port = free_port();
            write_clickhouse_config(&dir, http_port, tcp_port);
            match launch_clickhouse(&bin, &dir, http_port) {
                Ok(child) => {
                    return ClickHouseServer {
                        url: format!("http://127.0.0.1:{http_port}"),
                        http_port,
                        tcp_port,
                        bin,
                        dir,
                        child: Some(child),
                    }
                }
                Err(report)
                    if attempt < START_ATTEMPTS && report.contains("Address already in use") =>
                {
                    eprintln!("rum-testkit: clickhouse could not bind port {http_port} or {tcp_port}, retrying on others");
                }
                Err(report) => panic!("{report}"),
            }
        }
        unreachable!("the last attempt returns or panics")
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
            Err(report) => panic!("{report}"),
        }
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
        match http(self.http_port, "POST", "/", sql.as_bytes(), QUERY_TIMEOUT) {
            Ok((200, body)) => Ok(String::from_utf8_lossy(&body).into_owned()),
            Ok((status, body)) => Err(format!(
                "HTTP {status}: {}",
                String::from_utf8_lossy(&body).trim_end()
            )),
            Err(e) => Err(format!("{}: {e}", self.url)),
        }
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
    let config = CLICKHOUSE_CONFIG_TEMPLATE
        .replace("@DATA_DIR@", dir_str)
        .replace("@HTTP_PORT@", &http_port.to_string())
        .replace("@TCP_PORT@", &tcp_port.to_string());
    if let Some(name) = find_placeholder(&config) {
        panic!("unknown placeholder {name} in deploy/local/clickhouse/config.xml.in");
    }
    for sub in ["log", "tmp", "user_files", "format_schemas"] {
        fs::create_dir_all(dir.join(sub)).expect("create the clickhouse data dirs");
    }
    fs::write(dir.join("config.xml"), config).expect("write config.xml");
    fs::write(dir.join("users.xml"), CLICKHOUSE_USERS).expect("write users.xml");
}

/// The first `@NAME@` (upper case and `_`) left in a rendered template.
fn find_placeholder(text: &str) -> Option<&str> {
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(offset) = text[i..].find('@') {
        let start = i + offset;
        let len = bytes[start + 1..]
            .iter()
            .take_while(|b| b.is_ascii_uppercase() || **b == b'_')
            .count();
        if len > 0 && bytes.get(start + 1 + len) == Some(&b'@') {
            return Some(&text[start..start + len + 2]);
        }
        i = start + 1;
    }
    None
}

/// Spawn clickhouse-server on the config in `dir` and wait for `/ping`; on failure the child is gone and the error
/// carries the tails of its logs.
fn launch_clickhouse(bin: &Path, dir: &Path, http_port: u16) -> Result<Child, String> {
    let stdout_log = dir.join("stdout.log");
    let err_log = dir.join("log").join("clickhouse-server.err.log");
    let args = vec![format!(
        "--config-file={}",
        dir.join("config.xml").display()
    )];
    let mut child = spawn(bin, &args, dir, &stdout_log);
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Ok((200, body)) = http(http_port, "GET", "/ping", b"", Duration::from_secs(2)) {
            if body.starts_with(b"Ok.") {
                return Ok(child);
            }
        }
        let problem = if let Ok(Some(status)) = child.try_wait() {
            format!("clickhouse-server exited during startup ({status})")
        } else if Instant::now() >= deadline {
            kill(&mut child);
            format!("clickhouse-server did not answer GET http://127.0.0.1:{http_port}/ping within {START_TIMEOUT:?}")
        } else {
            thread::sleep(Duration::from_millis(25));
            continue;
        };
        return Err(format!(
            "{problem}; data dir {}\n{}{}",
            dir.display(),
            tail(&stdout_log, 10),
            tail(&err_log, 30)
        ));
    }
}

impl Drop for ClickHouseServer {
    fn drop(&mut self) {
        self.kill();
        remove_dir_unless_panicking(&self.dir, "clickhouse");
    }
}

// ---------------------------------------------------------------------------------------------------------------------
// Alertmanager

/// An Alertmanager (Debian's `prometheus-alertmanager` 0.25) on a free port, gossip off, with one webhook receiver
/// (`send_resolved: true`, `group_wait: 1s`, `group_interval: 1s`) that posts to the URL given to
/// [`start`](Self::start).
pub struct Alertmanager {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl Alertmanager {
    /// The binary: `RUM_LOCAL_ALERTMANAGER_BIN`, else `/usr/bin/prometheus-alertmanager`, else on PATH.
    pub fn bin() -> PathBuf {
        find_binary(
            "RUM_LOCAL_ALERTMANAGER_BIN",
            &[PathBuf::from("/usr/bin/prometheus-alertmanager")],
            "prometheus-alertmanager",
            "run ./deploy/local/install (apt package prometheus-alertmanager)",
        )
    }

    /// Start with a fresh data dir on a free port, notifying `webhook_url`, and wait until `/-/ready` answers.
    pub fn start(webhook_url: &str) -> Alertmanager {
        let bin = Self::bin();
        let dir = fresh_dir("alertmanager");
        let log = dir.join("alertmanager.log");
        let config = format!(
            "route:\n  receiver: webhook\n  group_by: ['...']\n  group_wait: 1s\n  group_interval: 1s\n  repeat_interval: 1h\n\
             receivers:\n  - name: webhook\n    webhook_configs:\n      - url: '{webhook_url}'\n        send_resolved: true\n"
        );
        fs::write(dir.join("alertmanager.yml"), config).expect("write alertmanager.yml");
        for attempt in 1..=START_ATTEMPTS {
            let port = free_port();
            let args = vec![
                format!("--config.file={}", dir.join("alertmanager.yml").display()),
                format!("--storage.path={}", dir.join("data").display()),
                format!("--web.listen-address=127.0.0.1:{port}"),
                "--cluster.listen-address=".to_string(),
            ];
            let mut child = spawn(&bin, &args, &dir, &log);
            let deadline = Instant::now() + START_TIMEOUT;
            loop {
                if let Ok((200, _)) = http(port, "GET", "/-/ready", b"", Duration::from_secs(2)) {
                    return Alertmanager {
                        url: format!("http://127.0.0.1:{port}"),
                        port,
                        dir,
                        child: Some(child),
                    };
                }
                if let Ok(Some(status)) = child.try_wait() {
                    if attempt < START_ATTEMPTS {
                        eprintln!("rum-testkit: alertmanager on port {port} exited ({status}), retrying on another port");
                        break;
                    }
                    panic!(
                        "alertmanager exited during startup ({status}); log {}\n{}",
                        log.display(),
                        tail(&log, 30)
                    );
                }
                if Instant::now() >= deadline {
                    kill(&mut child);
                    panic!(
                        "alertmanager did not answer /-/ready on port {port} within {START_TIMEOUT:?}; log {}\n{}",
                        log.display(),
                        tail(&log, 30)
                    );
                }
                thread::sleep(Duration::from_millis(20));
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    /// The alerts Alertmanager holds (`GET /api/v2/alerts`), as JSON text.
    pub fn alerts_json(&self) -> String {
        match http(self.port, "GET", "/api/v2/alerts", b"", QUERY_TIMEOUT) {
            Ok((200, body)) => String::from_utf8_lossy(&body).into_owned(),
            other => panic!("GET {}/api/v2/alerts: {other:?}", self.url),
        }
    }

    /// Its log (stdout and stderr).
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("alertmanager.log")
    }

    /// Stop it (SIGTERM, SIGKILL after 20 s) and wait. Idempotent.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child, STOP_TIMEOUT);
        }
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        self.stop();
        remove_dir_unless_panicking(&self.dir, "alertmanager");
    }
}

// ---------------------------------------------------------------------------------------------------------------------
// Reading Kafka back

/// One message read back from Kafka.
#[cfg(feature = "kafka")]
#[derive(Debug, Clone)]
pub struct KafkaRecord {
    /// The key (empty when none).
    pub key: Vec<u8>,
    /// The value.
    pub value: Vec<u8>,
    /// The headers, in order.
    pub headers: Vec<(String, Vec<u8>)>,
}

/// Reads every message of `topic` (partitions `0..partitions`) from the beginning,
/// until `expected` were read and the topic stayed quiet for 1.5 s, or nothing came for 20 s.
#[cfg(feature = "kafka")]
pub fn read_topic(
    brokers: &str,
    topic: &str,
    partitions: i32,
    expected: usize,
) -> Vec<KafkaRecord> {
    use rdkafka::config::ClientConfig;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Headers;
    use rdkafka::{Message, Offset, TopicPartitionList};

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

    #[test]
    fn free_ports_are_distinct_and_bindable() {
        let ports: Vec<u16> = (0..20).map(|_| free_port()).collect();
        let unique: HashSet<u16> = ports.iter().copied().collect();
        assert_eq!(unique.len(), ports.len());
        for port in ports {
            TcpListener::bind((Ipv4Addr::LOCALHOST, port)).expect("the port is free");
        }
    }

    #[test]
    fn finds_leftover_placeholders() {
        assert_eq!(find_placeholder("a @DATA_DIR@ b"), Some("@DATA_DIR@"));
        assert_eq!(find_placeholder("user@example.com @ 1@2"), None);
        assert_eq!(
            find_placeholder(CLICKHOUSE_CONFIG_TEMPLATE),
            Some("@DATA_DIR@")
        );
    }

    #[test]
    fn dechunk_decodes_chunked_bodies() {
        assert_eq!(
            dechunk(b"3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n").as_deref(),
            Some(&b"abcde"[..])
        );
        assert_eq!(dechunk(b"5\r\nab"), None);
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
    fn two_clickhouse_servers_run_side_by_side() {
        let a = ClickHouseServer::start();
        let b = ClickHouseServer::start();
        assert_ne!(a.http_port, b.http_port);
        assert_ne!(a.data_dir(), b.data_dir());
        a.query("CREATE TABLE default.only_a (x UInt8) ENGINE = Memory");
        assert_eq!(b.query("EXISTS TABLE default.only_a"), "0\n");
    }

    #[test]
    fn tansu_accepts_connections_and_creates_topics() {
        let mut kafka = Tansu::start();
        assert_eq!(kafka.brokers, format!("127.0.0.1:{}", kafka.port));
        assert!(port_open(kafka.port));
        kafka.create_topic("rum.testkit.v1", 4);
        kafka.create_topic("rum.testkit.v1", 4); // already exists: fine
        let topics = kafka.list_topics_json();
        assert!(topics.contains("\"rum.testkit.v1\""), "{topics}");
        assert_eq!(topics.matches("partition_index").count(), 4, "{topics}");

        let log = kafka.log_path();
        assert!(log.is_file());
        kafka.stop();
        assert!(!kafka.is_running());
        assert!(!port_open(kafka.port));
        drop(kafka);
        assert!(!log.exists(), "the tansu dir is removed on drop");
    }
}
