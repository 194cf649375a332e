//! `rum ingest` and `rum consume` against Apache Kafka over TLS with SASL (SCRAM-SHA-256/512, PLAIN), with a CA of
//! the test's own: exact counts through the pipeline (with ClickHouse over HTTPS and a password too); a wrong password and an untrusted certificate are one clear
//! log line and `/readyz` 503, never a hang, a crash loop or the password in a log.

mod common;

use std::time::{Duration, Instant};

use common::{eventually, settled_counts, stored_ids, Pipeline, RumProcess};
use rum_testkit::{free_port, ClickHouseOptions, ClickHouseServer, Kafka, KafkaOptions, TestCa};

const USER: &str = "rum-pipeline";
const PASSWORD: &str = "pw-7f3a9c1e-never-logged";
const CLICKHOUSE_PASSWORD: &str = "ch-pw-41c0de";

fn beacon(id: &str) -> String {
    format!(
        r#"{{"site":"shop","route":"/cart","device":"desktop","nav_type":"navigate","sample_rate":1,"metrics":[{{"name":"INP","value":180,"id":"{id}","rating":"good"}}]}}"#
    )
}

fn secure_kafka(ca: &TestCa) -> Kafka {
    Kafka::start_with(KafkaOptions::default().with_sasl_ssl(ca, &[(USER, PASSWORD)]))
}

/// The `RUM_KAFKA_*` settings of a SASL_SSL client of `kafka`.
fn security_env(kafka: &Kafka, ca_file: &str, mechanism: &str) -> Vec<(&'static str, String)> {
    vec![
        ("RUM_KAFKA_BROKERS", kafka.secure_brokers()),
        ("RUM_KAFKA_SECURITY_PROTOCOL", "sasl_ssl".into()),
        ("RUM_KAFKA_SASL_MECHANISM", mechanism.into()),
        ("RUM_KAFKA_SASL_USERNAME", USER.into()),
        ("RUM_KAFKA_SSL_CA_FILE", ca_file.into()),
    ]
}

fn borrowed<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pipeline_over_tls_and_scram_stores_every_beacon_once() {
    let ca = TestCa::generate();
    let kafka = secure_kafka(&ca);
    let ca_file = ca.ca_pem().display().to_string();
    let dir = tempdir("tls-sasl");
    // The password from a file, as a secret mounted by an orchestrator would be.
    let password_file = dir.join("kafka-password");
    std::fs::write(&password_file, format!("{PASSWORD}\n")).unwrap();
    let mut env = security_env(&kafka, &ca_file, "SCRAM-SHA-256");
    env.push((
        "RUM_KAFKA_SASL_PASSWORD_FILE",
        password_file.display().to_string(),
    ));
    // ClickHouse over HTTPS with a password too: every link of the pipeline is secured.
    let clickhouse = ClickHouseServer::start_with(&ClickHouseOptions {
        tls: Some(&ca),
        users: vec![("rum".into(), CLICKHOUSE_PASSWORD.into())],
    });
    env.extend([
        ("RUM_CLICKHOUSE_URL", clickhouse.https_url()),
        ("RUM_CLICKHOUSE_USER", "rum".into()),
        ("RUM_CLICKHOUSE_PASSWORD", CLICKHOUSE_PASSWORD.into()),
        ("RUM_CLICKHOUSE_CA_FILE", ca_file.clone()),
    ]);
    let mut pipeline = Pipeline::start_with(kafka, clickhouse, &borrowed(&env)).await;

    let mut ids = Vec::new();
    for i in 0..200 {
        let id = format!("tls-{i}");
        assert_eq!(
            pipeline.post("text/plain", "", &beacon(&id)).await,
            204,
            "{id}"
        );
        ids.push(id);
    }
    let (raw, distinct, rollup) =
        settled_counts(&pipeline.clickhouse, 200, Duration::from_secs(60)).await;
    assert_eq!(
        (raw, distinct, rollup),
        (200, 200, 200),
        "(rows, ids, samples)"
    );
    let stored = stored_ids(&pipeline.clickhouse);
    assert!(ids.iter().all(|id| stored.contains(id)));
    pipeline.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sasl_mechanism_gets_the_ingest_ready() {
    let ca = TestCa::generate();
    let kafka = secure_kafka(&ca);
    kafka.create_pipeline_topics();
    let ca_file = ca.ca_pem().display().to_string();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    for mechanism in ["SCRAM-SHA-512", "PLAIN"] {
        let port = free_port().to_string();
        let mut env = security_env(&kafka, &ca_file, mechanism);
        env.push(("RUM_KAFKA_SASL_PASSWORD", PASSWORD.into()));
        env.push(("RUM_INGEST_PORT", port.clone()));
        let mut ingest = RumProcess::spawn(&["ingest"], &borrowed(&env));
        let base = format!("http://127.0.0.1:{port}");
        common::wait_until_ready(&http, &base).await;
        let status = http
            .post(format!("{base}/api/v1/observability/web-vitals"))
            .header("content-type", "text/plain")
            .body(beacon(&format!("mechanism-{mechanism}")))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 204, "{mechanism}");
        assert!(ingest.terminate(Duration::from_secs(20)).success());
    }
}

/// Starts `rum ingest` and `rum consume` with `env` (a Kafka that refuses them), lets librdkafka retry for a while,
/// and checks what an operator gets: the ingest alive but not ready, a beacon refused with 503 in bounded time,
/// both processes still running, each with the failure logged as one error line containing `needle`, and none of
/// `secrets` anywhere in their logs.
async fn assert_refused_clearly(env: Vec<(&'static str, String)>, needle: &str, secrets: &[&str]) {
    let dir = tempdir("refused");
    let (ingest_log, consumer_log) = (dir.join("ingest.log"), dir.join("consume.log"));
    let port = free_port().to_string();
    let mut env = env;
    env.push(("RUM_INGEST_PORT", port.clone()));
    env.push(("RUM_CONSUMER_PORT", free_port().to_string()));
    env.push(("RUM_INGEST_DELIVERY_TIMEOUT_MS", "2000".into()));
    // Never reached: the consumer cannot join its group without Kafka.
    env.push((
        "RUM_CLICKHOUSE_URL",
        format!("http://127.0.0.1:{}", free_port()),
    ));
    let mut ingest = RumProcess::spawn_logged(&["ingest"], &borrowed(&env), &ingest_log);
    let mut consumer = RumProcess::spawn_logged(&["consume"], &borrowed(&env), &consumer_log);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    // The ingest serves /healthz while Kafka refuses it: alive, not ready.
    eventually(
        "the ingest to listen",
        Duration::from_secs(30),
        async || {
            let r = http.get(format!("{base}/healthz")).send().await.ok()?;
            (r.status() == 200).then_some(())
        },
    )
    .await;
    // Let librdkafka try (and fail) for a while: its retries must not flood the log.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let ready = http.get(format!("{base}/readyz")).send().await.unwrap();
    let started = Instant::now();
    let post = http
        .post(format!("{base}/api/v1/observability/web-vitals"))
        .header("content-type", "text/plain")
        .body(beacon("refused"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        post.status(),
        503,
        "a beacon cannot be accepted without Kafka"
    );
    assert!(
        started.elapsed() < Duration::from_secs(9),
        "the 503 came after {:?}",
        started.elapsed()
    );
    for (name, process, log) in [
        ("rum ingest", &mut ingest, &ingest_log),
        ("rum consume", &mut consumer, &consumer_log),
    ] {
        let text = std::fs::read_to_string(log).unwrap();
        assert!(process.is_running(), "{name} crashed:\n{text}");
        let errors: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("ERROR") && l.to_lowercase().contains(needle))
            .collect();
        eprintln!("what an operator sees of {name}:\n{}", errors.join("\n"));
        assert!(
            !errors.is_empty(),
            "{name} logs the failure as an error:\n{text}"
        );
        assert!(
            errors.len() <= 2,
            "{name} logs it once, not at every retry:\n{text}"
        );
        for secret in secrets {
            assert!(!text.contains(secret), "{name} logged a password:\n{text}");
        }
        assert!(
            process.terminate(Duration::from_secs(20)).success(),
            "{name} stops on SIGTERM"
        );
    }
    assert_eq!(ready.status(), 503, "the ingest is not ready");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_one_clear_log_line_and_not_ready() {
    let ca = TestCa::generate();
    let kafka = secure_kafka(&ca);
    kafka.create_pipeline_topics();
    let ca_file = ca.ca_pem().display().to_string();
    let wrong = "wrong-pw-5d2e8b-not-in-logs";
    let mut env = security_env(&kafka, &ca_file, "SCRAM-SHA-512");
    env.push(("RUM_KAFKA_SASL_PASSWORD", wrong.into()));
    assert_refused_clearly(env, "authentication", &[wrong, PASSWORD]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_certificate_is_one_clear_log_line_and_not_ready() {
    let ca = TestCa::generate();
    let stranger = TestCa::other();
    let kafka = secure_kafka(&ca);
    kafka.create_pipeline_topics();
    let mut env = security_env(
        &kafka,
        &stranger.ca_pem().display().to_string(),
        "SCRAM-SHA-256",
    );
    env.push(("RUM_KAFKA_SASL_PASSWORD", PASSWORD.into()));
    assert_refused_clearly(env, "certificate", &[PASSWORD]).await;
}

/// A fresh directory under the repo's `.local/test` (removed by the next run's cleanup when left).
fn tempdir(name: &str) -> std::path::PathBuf {
    let dir =
        rum_testkit::test_dir().join(format!("{name}-{}-{}", std::process::id(), free_port()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
