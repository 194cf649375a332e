//! ClickHouse (18.16's `https_port`) and Alertmanager (`--web.config.file` with TLS) over `https://`,
//! with a CA made for the test and given to `rum` as a CA file, and a ClickHouse user with a password:
//! `rum migrate`, `rum query`, `rum standalone` (the consumer's code) and `rum alerts` work; without
//! the CA, or with a wrong password, `rum` fails with one clear line.

mod common;

use std::fs;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use common::{eventually, rum_output, RumProcess};
use rum_clickhouse::{insert_raw_rows, ClickHouseConfig, VitalsRawRow};
use rum_schemas::config::Secret;
use rum_schemas::MetricName;
use rum_testkit::{free_port, Alertmanager, ClickHouseOptions, ClickHouseServer, TestCa};

const USER: &str = "rum";
const PASSWORD: &str = "pa55-0123-https";

/// A test CA and a ClickHouse serving HTTPS with its certificate, where [`USER`] has [`PASSWORD`]
/// (the test's own checks use [`ClickHouseServer::query`]: plain HTTP as `default`).
struct HttpsClickHouse {
    // Declared first, so dropped first: the server stops before the CA's files go.
    clickhouse: ClickHouseServer,
    ca: TestCa,
    https_url: String,
    ca_file: String,
}

impl HttpsClickHouse {
    fn start() -> HttpsClickHouse {
        let ca = TestCa::generate();
        let clickhouse = ClickHouseServer::start_with(&ClickHouseOptions {
            tls: Some(&ca),
            users: vec![(USER.into(), PASSWORD.into())],
        });
        HttpsClickHouse {
            https_url: clickhouse.https_url(),
            ca_file: path_text(&ca.ca_pem()),
            clickhouse,
            ca,
        }
    }

    /// The settings that reach this ClickHouse over https with the CA file.
    fn rum_env(&self) -> Vec<(&str, &str)> {
        vec![
            ("RUM_CLICKHOUSE_URL", &self.https_url),
            ("RUM_CLICKHOUSE_USER", USER),
            ("RUM_CLICKHOUSE_PASSWORD", PASSWORD),
            ("RUM_CLICKHOUSE_CA_FILE", &self.ca_file),
        ]
    }

    /// A file for `rum`'s log or a secret, in ClickHouse's data dir: removed with it, kept when a test fails.
    fn file(&self, name: &str) -> String {
        path_text(&self.clickhouse.data_dir().join(name))
    }
}

fn path_text(path: &Path) -> String {
    path.to_str().expect("a UTF-8 path").to_string()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `env` with `key` replaced (or removed when `value` is None).
fn with<'a>(
    env: &[(&'a str, &'a str)],
    key: &'a str,
    value: Option<&'a str>,
) -> Vec<(&'a str, &'a str)> {
    let mut env: Vec<_> = env.iter().filter(|(k, _)| *k != key).copied().collect();
    env.extend(value.map(|value| (key, value)));
    env
}

#[test]
fn migrate_and_query_work_over_https_with_the_ca_file_and_a_password_file() {
    let https = HttpsClickHouse::start();
    let password_file = https.file("password");
    fs::write(&password_file, format!("{PASSWORD}\n")).unwrap();
    let env = with(&https.rum_env(), "RUM_CLICKHOUSE_PASSWORD", None);
    let env = with(&env, "RUM_CLICKHOUSE_PASSWORD_FILE", Some(&password_file));

    let out = rum_output(&["migrate"], &env);
    assert!(out.status.success(), "{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("{} applied", rum_clickhouse::MIGRATIONS.len()))
            && stdout.contains(&https.https_url),
        "{stdout}"
    );
    assert_eq!(
        https
            .clickhouse
            .query("SELECT count() FROM rum.schema_migrations"),
        format!("{}\n", rum_clickhouse::MIGRATIONS.len())
    );
    let again = rum_output(&["migrate"], &env);
    assert!(
        String::from_utf8_lossy(&again.stdout).contains(&format!(
            "{} already applied",
            rum_clickhouse::MIGRATIONS.len()
        )),
        "{}",
        stderr(&again)
    );

    let query = rum_output(&["query", "p75", "--site", "shop"], &env);
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
    let https = HttpsClickHouse::start();
    let other = TestCa::other();
    let other_ca = path_text(&other.ca_pem());
    for env in [
        with(&https.rum_env(), "RUM_CLICKHOUSE_CA_FILE", None),
        with(&https.rum_env(), "RUM_CLICKHOUSE_CA_FILE", Some(&other_ca)),
    ] {
        let out = rum_output(&["migrate"], &env);
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
            ("RUM_CLICKHOUSE_URL", "https://127.0.0.1:8443"),
            ("RUM_CLICKHOUSE_CA_FILE", ca_file.as_str()),
        ];
        for sub in ["migrate", "consume", "alerts", "standalone"] {
            let out = rum_output(&[sub], &env);
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
    let https = HttpsClickHouse::start();
    let env = with(
        &https.rum_env(),
        "RUM_CLICKHOUSE_PASSWORD",
        Some("not-the-password-987"),
    );
    let out = rum_output(&["migrate"], &env);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("Wrong password for user rum"), "{err}");
    assert!(!err.contains("not-the-password-987"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn standalone_consumes_beacons_into_clickhouse_over_https() {
    let https = HttpsClickHouse::start();
    let ingest_port = free_port().to_string();
    let consumer_port = free_port().to_string();
    let mut env = https.rum_env();
    env.push(("RUM_INGEST_PORT", &ingest_port));
    env.push(("RUM_CONSUMER_PORT", &consumer_port));
    let log = https.file("standalone.log");
    let _standalone = RumProcess::spawn_logged(&["standalone"], &env, Path::new(&log));

    let http = reqwest::Client::new();
    let beacon = r#"{"site":"shop","route":"/product/1","device":"mobile","metrics":[{"name":"LCP","value":2310.5,"id":"v5-https-1"}]}"#;
    let within = Duration::from_secs(30);
    eventually("the ingest to accept a beacon", within, async || {
        let response = http
            .post(format!(
                "http://127.0.0.1:{ingest_port}/api/v1/observability/web-vitals"
            ))
            .header("content-type", "text/plain")
            .body(beacon)
            .send()
            .await
            .ok()?;
        (response.status() == 204).then_some(())
    })
    .await;
    eventually(
        &format!("the consumer to store it in ClickHouse over https (log: {log})"),
        within,
        async || {
            https
                .clickhouse
                .try_query("SELECT count() FROM rum.vitals_raw WHERE metric_id = 'v5-https-1'")
                .is_ok_and(|n| n == "1\n")
                .then_some(())
        },
    )
    .await;
    let log = fs::read_to_string(&log).unwrap_or_default();
    assert!(!log.contains(PASSWORD), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn alerts_read_clickhouse_and_notify_alertmanager_over_https() {
    let https = HttpsClickHouse::start();
    // Nobody listens on the webhook: the test reads the alerts from Alertmanager itself.
    let alertmanager = Alertmanager::start_with_tls(
        &format!("http://127.0.0.1:{}/unused", free_port()),
        &https.ca,
    );
    let out = rum_output(&["migrate"], &https.rum_env());
    assert!(out.status.success(), "{}", stderr(&out));

    // 40 minutes of a poor LCP (5 s, 5 samples a minute), inserted over https as well.
    let config = ClickHouseConfig {
        url: https.https_url.clone(),
        user: USER.into(),
        password: Secret::new(PASSWORD),
        ca_file: Some(https.ca.ca_pem()),
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
    let metrics_port_text = metrics_port.to_string();
    let mut env = https.rum_env();
    env.push(("RUM_ALERTS_PORT", &metrics_port_text));
    env.push(("RUM_ALERTS_INTERVAL_SECS", "1"));
    env.push(("RUM_ALERTS_ALERTMANAGER_URL", &alertmanager.url));
    env.push(("RUM_ALERTS_CA_FILE", &https.ca_file));
    let log = https.file("alerts.log");
    let _alerts = RumProcess::spawn_logged(&["alerts"], &env, Path::new(&log));
    eventually(
        &format!("the alert in Alertmanager over https (rum alerts log: {log})"),
        Duration::from_secs(30),
        async || {
            let alerts = alertmanager.alerts_json();
            (alerts.contains("WebVitalsLCPP75Poor") && alerts.contains("checkout")).then_some(())
        },
    )
    .await;
    let metrics = common::exposition(&format!("http://127.0.0.1:{metrics_port}/metrics")).await;
    assert!(
        metrics.contains("rum_alerts_evaluation_errors_total 0")
            && metrics.contains("rum_alerts_notification_errors_total 0"),
        "{metrics}"
    );
}
