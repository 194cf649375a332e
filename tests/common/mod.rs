//! Running the `rum` binary in tests: a child process stopped by its pid.

#![allow(dead_code)]

pub mod stack;

use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

/// The `rum` binary built for this test run.
pub fn rum() -> Command {
    // Dies with the test process, even when a test is killed before its destructors run.
    let mut cmd = rum_testkit::guarded_command(std::path::Path::new(env!("CARGO_BIN_EXE_rum")));
    // Only what the test sets: no stray RUM_* of the developer's shell.
    for (key, _) in std::env::vars() {
        if key.starts_with("RUM_") {
            cmd.env_remove(key);
        }
    }
    cmd.env("RUM_LOG", "info,rdkafka=warn");
    cmd
}

/// Runs `rum` to completion.
pub fn rum_output(args: &[&str], env: &[(&str, &str)]) -> Output {
    rum()
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("rum runs")
}

/// A long-running `rum` subcommand, SIGKILLed on drop if still running.
pub struct RumProcess {
    pub name: String,
    child: Child,
}

impl RumProcess {
    pub fn spawn(args: &[&str], env: &[(&str, &str)]) -> RumProcess {
        Self::spawn_with(args, env, Stdio::inherit(), Stdio::inherit())
    }

    /// Like [`spawn`](Self::spawn), with stdout and stderr written to `log` (to read what it logged).
    pub fn spawn_logged(args: &[&str], env: &[(&str, &str)], log: &std::path::Path) -> RumProcess {
        let file = std::fs::File::create(log).expect("create the log file");
        let out = file.try_clone().expect("dup the log file");
        Self::spawn_with(args, env, out.into(), file.into())
    }

    fn spawn_with(args: &[&str], env: &[(&str, &str)], stdout: Stdio, stderr: Stdio) -> RumProcess {
        let mut cmd = rum();
        cmd.args(args)
            .envs(env.iter().copied())
            .stdout(stdout)
            .stderr(stderr);
        RumProcess {
            name: args.join(" "),
            child: rum_testkit::spawn_guarded(cmd).expect("rum starts"),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends SIGTERM and waits for the exit, at most `timeout`.
    pub fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        rum_testkit::send_signal(self.pid(), "TERM");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "rum {} did not exit within {timeout:?} of SIGTERM",
                self.name
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RumProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.kill();
        }
    }
}

/// The whole pipeline as real processes: Apache Kafka (topics created), the ClickHouse server (migrated),
/// `rum ingest` and `rum consume`, ready to take beacons.
pub struct Pipeline {
    pub kafka: rum_testkit::Kafka,
    pub clickhouse: rum_testkit::ClickHouseServer,
    pub ingest: RumProcess,
    pub consumer: RumProcess,
    pub http: reqwest::Client,
    /// `http://127.0.0.1:PORT` of the ingest.
    pub base: String,
    /// The consumer's `/metrics`.
    pub consumer_metrics: String,
    /// The `RUM_*` environment both processes run with (to start more members like them).
    pub env: Vec<(String, String)>,
}

impl Pipeline {
    /// Starts everything on one Kafka broker; `extra_env` adds or overrides `RUM_*` settings of both processes.
    pub async fn start(extra_env: &[(&str, &str)]) -> Pipeline {
        Self::start_on(rum_testkit::Kafka::start(), extra_env).await
    }

    /// Starts everything on `kafka` (one broker or a cluster), creating the pipeline's topics there.
    pub async fn start_on(kafka: rum_testkit::Kafka, extra_env: &[(&str, &str)]) -> Pipeline {
        Self::start_with(kafka, rum_testkit::ClickHouseServer::start(), extra_env).await
    }

    /// Starts the pipeline's processes on `kafka` (creating its topics) and `clickhouse` (migrating it).
    pub async fn start_with(
        kafka: rum_testkit::Kafka,
        clickhouse: rum_testkit::ClickHouseServer,
        extra_env: &[(&str, &str)],
    ) -> Pipeline {
        kafka.create_pipeline_topics();
        let ingest_port = rum_testkit::free_port().to_string();
        let consumer_port = rum_testkit::free_port().to_string();
        let mut env = vec![
            ("RUM_KAFKA_BROKERS", kafka.brokers.as_str()),
            ("RUM_CLICKHOUSE_URL", clickhouse.url.as_str()),
            ("RUM_INGEST_PORT", ingest_port.as_str()),
            ("RUM_CONSUMER_PORT", consumer_port.as_str()),
            ("RUM_CONSUMER_BATCH_MAX_WAIT_MS", "200"),
            // Room for a fresh broker to give the idempotent producer its id (seconds on a loaded machine).
            ("RUM_INGEST_DELIVERY_TIMEOUT_MS", "10000"),
            // Every test beacon comes from 127.0.0.1: a route keeps its label from the first one
            // (tests/hostile_clients/cardinality.rs sets the default of 3 back).
            ("RUM_INGEST_ROUTE_MIN_CLIENTS", "1"),
        ];
        env.extend_from_slice(extra_env);
        let migrated = rum_output(&["migrate"], &env);
        assert!(
            migrated.status.success(),
            "{}",
            String::from_utf8_lossy(&migrated.stderr)
        );
        let ingest = RumProcess::spawn(&["ingest"], &env);
        let consumer = RumProcess::spawn(&["consume"], &env);
        // Bounded: a hung ingest fails the test instead of hanging it.
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("http client");
        let base = format!("http://127.0.0.1:{ingest_port}");
        wait_until_ready(&http, &base).await;
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Pipeline {
            consumer_metrics: format!("http://127.0.0.1:{consumer_port}/metrics"),
            env,
            kafka,
            clickhouse,
            ingest,
            consumer,
            http,
            base,
        }
    }

    /// POSTs `body` to the beacon endpoint; the status code.
    pub async fn post(&self, content_type: &str, query: &str, body: &str) -> u16 {
        self.http
            .post(format!(
                "{}/api/v1/observability/web-vitals{query}",
                self.base
            ))
            .header("content-type", content_type)
            .body(body.to_string())
            .send()
            .await
            .expect("POST")
            .status()
            .as_u16()
    }

    /// Starts another `rum consume` like the pipeline's (same group), with its metrics on `port`.
    pub fn spawn_consumer(&self, port: u16) -> RumProcess {
        let port = port.to_string();
        let mut env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        env.push(("RUM_CONSUMER_PORT", port.as_str()));
        RumProcess::spawn(&["consume"], &env)
    }

    /// POSTs a text/plain beacon until it is accepted (204), backing off on 503, for at most `within`.
    pub async fn post_until_accepted(&self, body: &str, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            match self.post("text/plain", "", body).await {
                204 => return true,
                503 => tokio::time::sleep(Duration::from_millis(250)).await,
                status => panic!("unexpected HTTP {status} for {body}"),
            }
        }
        false
    }

    /// SIGTERM to the ingest, then the consumer: both must exit 0.
    pub fn stop(&mut self) {
        assert!(
            self.ingest.terminate(Duration::from_secs(20)).success(),
            "ingest exits cleanly on SIGTERM"
        );
        assert!(
            self.consumer.terminate(Duration::from_secs(20)).success(),
            "consumer exits cleanly on SIGTERM"
        );
    }
}

/// Waits until the ingest at `base` answers `/readyz` with 200 (Kafka reachable).
pub async fn wait_until_ready(http: &reqwest::Client, base: &str) {
    eventually(
        "the ingest to be ready",
        Duration::from_secs(30),
        async || {
            let r = http.get(format!("{base}/readyz")).send().await.ok()?;
            (r.status() == 200).then_some(())
        },
    )
    .await;
}

/// Polls `check` until it returns `Some`, or panics with `what` after `timeout`.
pub async fn eventually<T>(
    what: &str,
    timeout: Duration,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What ClickHouse holds: rows in `vitals_raw`, distinct metric ids there, samples summed over `vitals_1m`.
/// None while ClickHouse does not answer.
pub fn stored_counts(clickhouse: &rum_testkit::ClickHouseServer) -> Option<(u64, u64, u64)> {
    let raw = clickhouse
        .try_query("SELECT count(), uniqExact(metric_id) FROM rum.vitals_raw FORMAT TSV")
        .ok()?;
    let rollup = clickhouse
        .try_query("SELECT countMerge(samples) FROM rum.vitals_1m FORMAT TSV")
        .ok()?;
    let mut raw = raw.split_whitespace().map(|v| v.parse::<u64>().ok());
    Some((raw.next()??, raw.next()??, rollup.trim().parse().ok()?))
}

/// Waits (at most `within`) until `vitals_raw` holds at least `expected` rows and `vitals_1m` as many samples
/// (the two tables are written by two INSERTs: a member killed between them leaves the rollup to its
/// successor, after the session timeout), then 2 s more for stragglers; returns the counts of [`stored_counts`].
pub async fn settled_counts(
    clickhouse: &rum_testkit::ClickHouseServer,
    expected: u64,
    within: Duration,
) -> (u64, u64, u64) {
    let deadline = Instant::now() + within;
    while stored_counts(clickhouse)
        .is_none_or(|(raw, _, rollup)| raw < expected || rollup < expected)
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    stored_counts(clickhouse).expect("ClickHouse answers")
}

/// The metric ids stored in `vitals_raw`.
pub fn stored_ids(clickhouse: &rum_testkit::ClickHouseServer) -> std::collections::HashSet<String> {
    clickhouse
        .query("SELECT metric_id FROM rum.vitals_raw FORMAT TSV")
        .lines()
        .map(str::to_string)
        .collect()
}

/// The Prometheus text exposition at `url` (a `/metrics`), with a bounded wait.
pub async fn exposition(url: &str) -> String {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("http client");
    let response = http.get(url).send().await;
    let response = response.unwrap_or_else(|e| panic!("GET {url}: {e}"));
    response
        .text()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

/// The sum of `name` over the label sets that contain `label` (e.g. `step="raw_insert"`).
pub fn labelled(exposition: &str, name: &str, label: &str) -> f64 {
    exposition
        .lines()
        .filter(|l| l.starts_with(name) && l.contains(label))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// Waits until the consumer whose metrics are on `port` (maybe still starting) counted at least one
/// failed write `step` (`rum_consumer_write_errors_total{step}`).
pub async fn wait_for_failed_step(port: u16, step: &str, within: Duration) {
    let label = format!("step=\"{step}\"");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("http client");
    let url = format!("http://127.0.0.1:{port}/metrics");
    eventually(&format!("a failed {step}"), within, async || {
        let m = http.get(&url).send().await.ok()?.text().await.ok()?;
        (labelled(&m, "rum_consumer_write_errors_total", &label) > 0.0).then_some(())
    })
    .await;
}

/// The sum of every sample of `name` (all label sets) in a Prometheus text exposition.
pub fn metric_sum(exposition: &str, name: &str) -> f64 {
    exposition
        .lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}
