//! ClickHouse (18.16's `https_port`) and Alertmanager (`--web.config.file` with TLS) over `https://`,
//! with a self-signed CA made for the test and given to `rum` as a CA file, and a ClickHouse user with
//! a password: `rum migrate`, `rum query`, `rum standalone` (the consumer's code) and `rum alerts`
//! work; without the CA, or with a wrong password, `rum` fails with one clear line.
//!
//! The servers are started here until `rum-testkit` offers TLS (see the note at [`HttpsServers`]).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use rum_clickhouse::{insert_raw_rows, ClickHouseConfig, VitalsRawRow};
use rum_schemas::config::Secret;
use rum_schemas::MetricName;
use rum_testkit::free_port;

const PASSWORD: &str = "pa55-0123-https";

/// A CA, a server certificate for 127.0.0.1 signed by it, a ClickHouse with an HTTPS port (and a
/// plain one for the test's own checks) whose user `rum` has [`PASSWORD`], and, when asked, an
/// Alertmanager over HTTPS. Killed by pid and removed on drop.
///
/// What `rum-testkit` should offer instead: `TestCa::generate()` (exists), and
/// `ClickHouseServer::start_with(ClickHouseOptions { tls: Some(&ca), users: &[("rum", PASSWORD)] })`
/// with `https_url`/`https_port`, and `Alertmanager::start_with_tls(webhook_url, &ca)`.
struct HttpsServers {
    dir: PathBuf,
    https_url: String,
    http_port: u16,
    children: Vec<Child>,
    alertmanager_url: Option<String>,
}

impl HttpsServers {
    fn start(with_alertmanager: bool) -> HttpsServers {
        let dir =
            rum_testkit::test_dir().join(format!("https-{}-{}", std::process::id(), free_port()));
        let _ = fs::remove_dir_all(&dir);
        for sub in ["tls", "log", "tmp", "user_files", "format_schemas", "am"] {
            fs::create_dir_all(dir.join(sub)).expect("create the test dirs");
        }
        make_certificates(&dir.join("tls"));
        let mut servers = HttpsServers {
            dir: dir.clone(),
            https_url: String::new(),
            http_port: 0,
            children: Vec::new(),
            alertmanager_url: None,
        };
        servers.start_clickhouse();
        if with_alertmanager {
            servers.start_alertmanager();
        }
        servers
    }

    fn ca_file(&self) -> PathBuf {
        self.dir.join("tls").join("ca.pem")
    }

    fn other_ca_file(&self) -> PathBuf {
        self.dir.join("tls").join("other-ca.pem")
    }

    fn start_clickhouse(&mut self) {
        let dir = self.dir.to_str().expect("a UTF-8 path");
        let (http_port, tcp_port, https_port) = (free_port(), free_port(), free_port());
        let template = include_str!("../deploy/local/clickhouse/config.xml.in");
        let tls = format!(
            "<https_port>{https_port}</https_port>\n<openSSL><server>\
             <certificateFile>{dir}/tls/server.crt</certificateFile>\
             <privateKeyFile>{dir}/tls/server.key</privateKeyFile>\
             <verificationMode>none</verificationMode><loadDefaultCAFile>false</loadDefaultCAFile>\
             <cacheSessions>true</cacheSessions><disableProtocols>sslv2,sslv3</disableProtocols>\
             <preferServerCiphers>true</preferServerCiphers></server></openSSL>\n</yandex>"
        );
        let config = template
            .replace("@DATA_DIR@", dir)
            .replace("@HTTP_PORT@", &http_port.to_string())
            .replace("@TCP_PORT@", &tcp_port.to_string())
            .replace("</yandex>", &tls);
        fs::write(self.dir.join("config.xml"), config).expect("write config.xml");
        let users = include_str!("../deploy/local/clickhouse/users.xml").replace(
            "    </users>",
            &format!(
                "        <rum><password>{PASSWORD}</password><networks><ip>127.0.0.1</ip></networks>\
                 <profile>default</profile><quota>default</quota></rum>\n    </users>"
            ),
        );
        fs::write(self.dir.join("users.xml"), users).expect("write users.xml");
        let child = Command::new("/usr/sbin/clickhouse-server")
            .arg(format!("--config-file={dir}/config.xml"))
            .current_dir(&self.dir)
            .stdout(log_file(&self.dir.join("clickhouse.out")))
            .stderr(Stdio::null())
            .spawn()
            .expect("start clickhouse-server (apt package clickhouse-server)");
        self.children.push(child);
        self.http_port = http_port;
        self.https_url = format!("https://127.0.0.1:{https_port}");
        wait_until("ClickHouse answers on its HTTP port", || {
            self.sql("SELECT 1").is_ok_and(|out| out == "1\n")
        });
    }

    fn start_alertmanager(&mut self) {
        let am = self.dir.join("am");
        let port = free_port();
        fs::write(
            am.join("alertmanager.yml"),
            "route:\n  receiver: nowhere\nreceivers:\n  - name: nowhere\n",
        )
        .expect("write alertmanager.yml");
        fs::write(
            am.join("web.yml"),
            format!(
                "tls_server_config:\n  cert_file: {0}/tls/server.crt\n  key_file: {0}/tls/server.key\n",
                self.dir.display()
            ),
        )
        .expect("write web.yml");
        let child = Command::new("prometheus-alertmanager")
            .arg(format!(
                "--config.file={}",
                am.join("alertmanager.yml").display()
            ))
            .arg(format!("--storage.path={}", am.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg(format!(
                "--web.config.file={}",
                am.join("web.yml").display()
            ))
            .arg("--cluster.listen-address=")
            .stdout(Stdio::null())
            .stderr(log_file(&am.join("alertmanager.log")))
            .spawn()
            .expect("start prometheus-alertmanager (apt package prometheus-alertmanager)");
        self.children.push(child);
        self.alertmanager_url = Some(format!("https://127.0.0.1:{port}"));
        wait_until("Alertmanager listens", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
    }

    /// One statement on the plain HTTP port, as `rum` (the test's own view of the data).
    fn sql(&self, sql: &str) -> Result<String, String> {
        let output = Command::new("curl")
            .args(["-sS", "--fail-with-body", "-u", &format!("rum:{PASSWORD}")])
            .arg("--data-binary")
            .arg(sql)
            .arg(format!("http://127.0.0.1:{}/", self.http_port))
            .output()
            .map_err(|e| e.to_string())?;
        let body = String::from_utf8_lossy(&output.stdout).into_owned();
        if output.status.success() {
            Ok(body)
        } else {
            Err(format!("{body}{}", String::from_utf8_lossy(&output.stderr)))
        }
    }

    /// The settings that reach this ClickHouse over https with the CA file.
    fn rum_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("RUM_CLICKHOUSE_URL", self.https_url.clone()),
            ("RUM_CLICKHOUSE_USER", "rum".into()),
            ("RUM_CLICKHOUSE_PASSWORD", PASSWORD.into()),
            ("RUM_CLICKHOUSE_CA_FILE", path_text(&self.ca_file())),
        ]
    }
}

impl Drop for HttpsServers {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        if !std::thread::panicking() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// A CA, a server certificate for 127.0.0.1 signed by it, and an unrelated second CA (the commands
/// of `notes-clickhouse-cluster.md`).
fn make_certificates(dir: &Path) {
    fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
    )
    .expect("write ext.cnf");
    let self_signed = |key: &str, pem: &str, cn: &str| {
        vec![
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", pem, "-days",
            "2", "-subj", cn,
        ]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>()
    };
    for args in [
        self_signed("ca.key", "ca.pem", "/CN=rum-test-ca"),
        self_signed("other-ca.key", "other-ca.pem", "/CN=rum-other-ca"),
        [
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ]
        .map(String::from)
        .to_vec(),
        [
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ]
        .map(String::from)
        .to_vec(),
    ] {
        let out = Command::new("openssl")
            .args(&args)
            .current_dir(dir)
            .output()
            .expect("run openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn log_file(path: &Path) -> Stdio {
    Stdio::from(fs::File::create(path).expect("create a log file"))
}

fn path_text(path: &Path) -> String {
    path.to_str().expect("a UTF-8 path").to_string()
}

fn wait_until(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ready() {
        assert!(Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `rum` with only the given `RUM_*` variables.
fn rum(args: &[&str], env: &[(&str, String)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rum"));
    for (key, _) in std::env::vars() {
        if key.starts_with("RUM_") {
            cmd.env_remove(key);
        }
    }
    cmd.args(args).env("RUM_LOG", "info");
    for (key, value) in env {
        cmd.env(key, value);
    }
    cmd
}

fn run(args: &[&str], env: &[(&str, String)]) -> Output {
    rum(args, env).output().expect("rum runs")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `env` with `key` replaced (or removed when `value` is None).
fn with(
    env: &[(&'static str, String)],
    key: &'static str,
    value: Option<&str>,
) -> Vec<(&'static str, String)> {
    let mut env: Vec<_> = env.iter().filter(|(k, _)| *k != key).cloned().collect();
    if let Some(value) = value {
        env.push((key, value.to_string()));
    }
    env
}

/// A `rum` process killed on drop.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn migrate_and_query_work_over_https_with_the_ca_file_and_a_password_file() {
    let servers = HttpsServers::start(false);
    let password_file = servers.dir.join("password");
    fs::write(&password_file, format!("{PASSWORD}\n")).unwrap();
    let env = with(&servers.rum_env(), "RUM_CLICKHOUSE_PASSWORD", None);
    let env = with(
        &env,
        "RUM_CLICKHOUSE_PASSWORD_FILE",
        Some(&path_text(&password_file)),
    );

    let out = run(&["migrate"], &env);
    assert!(out.status.success(), "{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("3 applied") && stdout.contains(&servers.https_url),
        "{stdout}"
    );
    assert_eq!(
        servers
            .sql("SELECT count() FROM rum.schema_migrations")
            .unwrap(),
        "3\n"
    );
    let again = run(&["migrate"], &env);
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("3 already applied"),
        "{}",
        stderr(&again)
    );

    let query = run(&["query", "p75", "--site", "shop"], &env);
    assert!(query.status.success(), "{}", stderr(&query));
    assert!(
        String::from_utf8_lossy(&query.stdout).starts_with("site"),
        "the table's header: {}",
        String::from_utf8_lossy(&query.stdout)
    );
    assert!(!stderr(&out).contains(PASSWORD) && !stderr(&query).contains(PASSWORD));
}

#[test]
fn https_without_the_servers_ca_fails_with_one_clear_line() {
    let servers = HttpsServers::start(false);
    let other_ca = path_text(&servers.other_ca_file());
    for env in [
        with(&servers.rum_env(), "RUM_CLICKHOUSE_CA_FILE", None),
        with(
            &servers.rum_env(),
            "RUM_CLICKHOUSE_CA_FILE",
            Some(&other_ca),
        ),
    ] {
        let out = run(&["migrate"], &env);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{err}");
        let last = err.lines().last().unwrap_or_default();
        assert!(
            last.starts_with("rum: clickhouse:")
                && last.contains("invalid peer certificate: UnknownIssuer"),
            "{err}"
        );
    }
}

#[test]
fn a_ca_file_that_is_missing_or_not_pem_stops_rum_at_start_naming_the_key() {
    let dir = rum_testkit::test_dir().join(format!("https-{}-{}", std::process::id(), free_port()));
    fs::create_dir_all(&dir).unwrap();
    let not_pem = dir.join("not-a-ca.pem");
    fs::write(&not_pem, "hello\n").unwrap();
    for (ca_file, reason) in [
        (
            "/nonexistent/ca.pem".to_string(),
            "cannot read /nonexistent/ca.pem: not found",
        ),
        (path_text(&not_pem), "holds no PEM certificate"),
    ] {
        let env = [
            ("RUM_CLICKHOUSE_URL", "https://127.0.0.1:8443".to_string()),
            ("RUM_CLICKHOUSE_CA_FILE", ca_file),
        ];
        for sub in ["migrate", "consume", "alerts", "standalone"] {
            let out = run(&[sub], &env);
            let err = stderr(&out);
            assert_eq!(out.status.code(), Some(2), "rum {sub}: {err}");
            assert_eq!(err.lines().count(), 1, "{err}");
            assert!(
                err.starts_with("rum: config error: clickhouse.ca_file (RUM_CLICKHOUSE_CA_FILE): ")
                    && err.contains(reason),
                "{err}"
            );
        }
    }
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_wrong_password_is_refused_without_showing_it() {
    let servers = HttpsServers::start(false);
    let env = with(
        &servers.rum_env(),
        "RUM_CLICKHOUSE_PASSWORD",
        Some("not-the-password-987"),
    );
    let out = run(&["migrate"], &env);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("Wrong password for user rum"), "{err}");
    assert!(!err.contains("not-the-password-987"), "{err}");
}

#[test]
fn standalone_consumes_beacons_into_clickhouse_over_https() {
    let servers = HttpsServers::start(false);
    let ingest_port = free_port();
    let mut env = servers.rum_env();
    env.push(("RUM_INGEST_PORT", ingest_port.to_string()));
    env.push(("RUM_CONSUMER_PORT", free_port().to_string()));
    let log = servers.dir.join("standalone.log");
    let _standalone = Running(
        rum(&["standalone"], &env)
            .stdout(Stdio::null())
            .stderr(log_file(&log))
            .spawn()
            .expect("rum standalone starts"),
    );
    let beacon = r#"{"site":"shop","route":"/product/1","device":"mobile","metrics":[{"name":"LCP","value":2310.5,"id":"v5-https-1"}]}"#;
    let post = || {
        Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "-H",
                "content-type: text/plain",
            ])
            .args(["--data-binary", beacon])
            .arg(format!(
                "http://127.0.0.1:{ingest_port}/api/v1/observability/web-vitals"
            ))
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    };
    wait_until("the ingest accepts a beacon", || post() == "204");
    wait_until("the consumer stored it in ClickHouse over https", || {
        servers
            .sql("SELECT count() FROM rum.vitals_raw WHERE metric_id = 'v5-https-1'")
            .is_ok_and(|n| n == "1\n")
    });
    let log = fs::read_to_string(&log).unwrap_or_default();
    assert!(!log.contains(PASSWORD), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn alerts_read_clickhouse_and_notify_alertmanager_over_https() {
    let servers = HttpsServers::start(true);
    let alertmanager_url = servers.alertmanager_url.clone().unwrap();
    let out = run(&["migrate"], &servers.rum_env());
    assert!(out.status.success(), "{}", stderr(&out));

    // 40 minutes of a poor LCP (5 s, 5 samples a minute), inserted over https as well.
    let config = ClickHouseConfig {
        url: servers.https_url.clone(),
        user: "rum".into(),
        password: Secret::new(PASSWORD),
        ca_file: Some(servers.ca_file()),
        ..ClickHouseConfig::default()
    };
    let now = rum_alerts::system_now();
    let rows: Vec<VitalsRawRow> = (0..40 * 5)
        .map(|i| VitalsRawRow {
            metric_id: format!("v5-poor-{i}"),
            kafka_offset: i,
            ..VitalsRawRow::measured(
                "shop",
                "checkout",
                "mobile",
                MetricName::LCP,
                5_000.0,
                now - 40 * 60 + (i as u32) * 12,
            )
        })
        .collect();
    insert_raw_rows(&config.client(), &rows).await.unwrap();

    let metrics_port = free_port();
    let mut env = servers.rum_env();
    env.push(("RUM_ALERTS_PORT", metrics_port.to_string()));
    env.push(("RUM_ALERTS_INTERVAL_SECS", "1".into()));
    env.push(("RUM_ALERTS_ALERTMANAGER_URL", alertmanager_url.clone()));
    env.push(("RUM_ALERTS_CA_FILE", path_text(&servers.ca_file())));
    let log = servers.dir.join("alerts.log");
    let _alerts = Running(
        rum(&["alerts"], &env)
            .stderr(log_file(&log))
            .spawn()
            .expect("rum alerts starts"),
    );
    let tls = rum_clickhouse::tls::client_tls_config("test", Some(&servers.ca_file())).unwrap();
    let http = reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let alerts = match http
            .get(format!("{alertmanager_url}/api/v2/alerts"))
            .send()
            .await
        {
            Ok(response) => response.text().await.unwrap_or_default(),
            Err(e) => e.to_string(),
        };
        if alerts.contains("WebVitalsLCPP75Poor") && alerts.contains("checkout") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no alert in Alertmanager: {alerts}\nrum alerts: {}",
            fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let metrics = http
        .get(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("rum_alerts_evaluation_errors_total 0")
            && metrics.contains("rum_alerts_notification_errors_total 0"),
        "{metrics}"
    );
}
