//! A ClickHouse server (Debian's 18.16) on free loopback ports, configured from the same templates as
//! `deploy/local/` (`deploy/local/clickhouse/`).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::Duration;

use crate::http::http;
use crate::process::{
    find_binary, free_port, fresh_dir, kill, launch, remove_dir_unless_panicking, render_template,
    start_with_retry, terminate, Launch, LaunchError, STOP_TIMEOUT,
};
use crate::tls::TestCa;

const CLICKHOUSE_CONFIG_TEMPLATE: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../deploy/local/clickhouse/config.xml.in"
));
const CLICKHOUSE_USERS: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../deploy/local/clickhouse/users.xml"
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
        match http(self.http_port, "POST", "/", sql.as_bytes(), QUERY_TIMEOUT) {
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
