//! Processes of the tests: free ports, data dirs, spawning children that die with the test process, stopping them
//! by pid, and one launch-and-retry helper that every service uses.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Mutex, Once, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

/// How long a service may take to become ready.
pub(crate) const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a service may take to stop after SIGTERM before it gets SIGKILL.
pub(crate) const STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// Attempts with fresh ports when a service cannot bind (another process took a port between pick and bind).
const START_ATTEMPTS: usize = 3;

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
pub(crate) fn fresh_dir(kind: &str) -> PathBuf {
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
pub(crate) fn remove_dir_unless_panicking(dir: &Path, what: &str) {
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

/// A command for `program` that dies with the test process: under `setpriv --pdeathsig KILL` when available, the
/// kernel kills it when its parent thread dies. Spawn it with [`spawn_guarded`], whose parent thread lives as long
/// as the process (a test's own threads, and tokio's blocking threads, end earlier).
pub fn guarded_command(program: &Path) -> Command {
    static SETPRIV: OnceLock<bool> = OnceLock::new();
    let setpriv = *SETPRIV.get_or_init(|| {
        Command::new("setpriv")
            .args(["--pdeathsig", "KILL", "--", "true"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    if setpriv {
        let mut cmd = Command::new("setpriv");
        cmd.args(["--pdeathsig", "KILL", "--"]).arg(program);
        cmd
    } else {
        Command::new(program)
    }
}

/// Spawns `cmd` (from [`guarded_command`]) from one thread that lives as long as the test process, so the child
/// dies with the process even when no destructor runs (a panic in a static, `process::exit`, SIGKILL).
pub fn spawn_guarded(cmd: Command) -> io::Result<Child> {
    static SPAWNER: OnceLock<mpsc::Sender<SpawnRequest>> = OnceLock::new();
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
    rx.recv().expect("rum-testkit spawner thread is gone")
}

/// Spawns a service: [`guarded_command`] with `args`, in `cwd`, stdout and stderr appended to `log`.
pub(crate) fn spawn(program: &Path, args: &[String], cwd: &Path, log: &Path) -> Child {
    let out = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap_or_else(|e| panic!("open {}: {e}", log.display()));
    let err = out
        .try_clone()
        .unwrap_or_else(|e| panic!("dup {}: {e}", log.display()));
    let mut cmd = guarded_command(program);
    cmd.args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    spawn_guarded(cmd).unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()))
}

/// SIGTERM the child (through `sh -c kill`, std has no signal API), wait up to `timeout`, then SIGKILL and reap it.
pub(crate) fn terminate(child: &mut Child, timeout: Duration) {
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
pub(crate) fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// The last `n` lines of a file (for panic messages).
pub(crate) fn tail(path: &Path, n: usize) -> String {
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

pub fn port_open(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

/// Find an executable: `$var` (must exist when set), then the candidates, then `name` on PATH.
pub(crate) fn find_binary(var: &str, candidates: &[PathBuf], name: &str, hint: &str) -> PathBuf {
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

pub fn send_signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args(["-s", signal, &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -s {signal} {pid} failed");
}

/// Why a child did not become ready.
#[derive(Debug)]
pub(crate) struct LaunchError {
    /// The child exited by itself (a port taken, a bad config), as opposed to not answering in time.
    pub exited: bool,
    /// What happened, with the tails of its logs.
    pub report: String,
}

/// A child to spawn and wait for: see [`launch`].
pub(crate) struct Launch<'a> {
    /// What it is, for messages (`"clickhouse-server"`).
    pub what: &'a str,
    pub program: &'a Path,
    pub args: &'a [String],
    /// Its working directory (its data dir).
    pub cwd: &'a Path,
    /// Where its stdout and stderr go.
    pub log: &'a Path,
    /// Other logs worth showing when it fails (a server's own error log).
    pub extra_logs: &'a [PathBuf],
}

/// Spawns the child and polls `ready` until it returns true. When the child exits first, or [`START_TIMEOUT`]
/// passes (the child is then killed), the error carries the last lines of its logs.
pub(crate) fn launch(
    spec: &Launch<'_>,
    mut ready: impl FnMut() -> bool,
) -> Result<Child, LaunchError> {
    let mut child = spawn(spec.program, spec.args, spec.cwd, spec.log);
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if ready() {
            return Ok(child);
        }
        let (exited, problem) = if let Ok(Some(status)) = child.try_wait() {
            (
                true,
                format!("{} exited during startup ({status})", spec.what),
            )
        } else if Instant::now() >= deadline {
            kill(&mut child);
            (
                false,
                format!("{} was not ready within {START_TIMEOUT:?}", spec.what),
            )
        } else {
            thread::sleep(Duration::from_millis(25));
            continue;
        };
        let mut report = format!(
            "{problem}; dir {}\n{}",
            spec.cwd.display(),
            tail(spec.log, 30)
        );
        for extra in spec.extra_logs {
            report.push_str(&tail(extra, 30));
        }
        return Err(LaunchError { exited, report });
    }
}

/// Runs `attempt` (which picks fresh ports each time) until it succeeds; a child that exited during startup is
/// retried up to 3 times in all (a port can be taken between [`free_port`] and the bind), anything else panics with
/// the report.
pub(crate) fn start_with_retry<T>(
    what: &str,
    mut attempt: impl FnMut() -> Result<T, LaunchError>,
) -> T {
    for n in 1..=START_ATTEMPTS {
        match attempt() {
            Ok(started) => return started,
            Err(e) if e.exited && n < START_ATTEMPTS => {
                eprintln!("rum-testkit: {what} exited during startup (attempt {n}), retrying on other ports");
            }
            Err(e) => panic!("{}", e.report),
        }
    }
    unreachable!("the last attempt returns or panics")
}

/// Renders a template: replaces each `@NAME@` of `values`, and panics naming `source` when a placeholder is left.
pub(crate) fn render_template(template: &str, values: &[(&str, String)], source: &str) -> String {
    let mut text = template.to_string();
    for (name, value) in values {
        text = text.replace(&format!("@{name}@"), value);
    }
    if let Some(name) = find_placeholder(&text) {
        panic!("unknown placeholder {name} in {source}");
    }
    text
}

/// The first `@NAME@` (upper case and `_`) left in a rendered template.
pub(crate) fn find_placeholder(text: &str) -> Option<&str> {
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
    }

    #[test]
    fn renders_every_placeholder() {
        let text = render_template(
            "a=@A@ b=@B_C@",
            &[("A", "1".into()), ("B_C", "x".into())],
            "t",
        );
        assert_eq!(text, "a=1 b=x");
    }

    #[test]
    #[should_panic(expected = "unknown placeholder @B@ in t")]
    fn a_leftover_placeholder_panics_naming_the_template() {
        render_template("a=@A@ b=@B@", &[("A", "1".into())], "t");
    }

    #[test]
    fn a_child_that_exits_during_startup_is_reported_with_its_log() {
        let dir = fresh_dir("process");
        let log = dir.join("out.log");
        let spec = Launch {
            what: "sh",
            program: Path::new("/bin/sh"),
            args: &["-c".into(), "echo bind failed; exit 3".into()],
            cwd: &dir,
            log: &log,
            extra_logs: &[],
        };
        let err = launch(&spec, || false).unwrap_err();
        assert!(err.exited);
        assert!(
            err.report.contains("sh exited during startup"),
            "{}",
            err.report
        );
        assert!(err.report.contains("| bind failed"), "{}", err.report);
        remove_dir_unless_panicking(&dir, "process");
    }
}
