//! ClickHouse accepting connections and never answering (issue 16): a real ClickHouse 18.16 behind
//! testkit's [`FaultProxy`] in [`ProxyMode::Blackhole`] for 60 s while `rum alerts` runs with
//! Alertmanager. Every ClickHouse request of the evaluator is bounded by
//! `clickhouse.request_timeout_ms`: it keeps evaluating every interval, each evaluation fails after
//! the timeout and is counted (`rum_alerts_evaluation_errors_total`,
//! `rum_alerts_clickhouse_timeouts_total`), `/metrics` keeps answering, and once the proxy passes
//! again the evaluations succeed again. The password never shows in its log.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{eventually, metric_sum, rum_output, RumProcess};
use rum_testkit::{
    free_port, Alertmanager, ClickHouseOptions, ClickHouseServer, FaultProxy, ProxyMode,
};

const USER: &str = "rum";
const PASSWORD: &str = "pw-unresponsive-0123";
/// How long ClickHouse does not answer.
const BLACKHOLE: Duration = Duration::from_secs(60);

/// The evaluator's counters at one moment.
#[derive(Debug, Clone, Copy)]
struct Counters {
    evaluations: f64,
    errors: f64,
    timeouts: f64,
    consecutive_failures: f64,
}

/// Reads `/metrics` with a 2 s bound: an evaluator whose HTTP server hangs fails the test.
async fn counters(http: &reqwest::Client, url: &str) -> Counters {
    try_counters(http, url)
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

async fn try_counters(http: &reqwest::Client, url: &str) -> Result<Counters, reqwest::Error> {
    let text = http.get(url).send().await?.text().await?;
    Ok(Counters {
        evaluations: metric_sum(&text, "rum_alerts_evaluations_total"),
        errors: metric_sum(&text, "rum_alerts_evaluation_errors_total"),
        timeouts: metric_sum(&text, "rum_alerts_clickhouse_timeouts_total"),
        consecutive_failures: metric_sum(&text, "rum_alerts_store_consecutive_failures"),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_evaluator_keeps_evaluating_and_counts_timeouts_while_clickhouse_never_answers() {
    let clickhouse = ClickHouseServer::start_with(&ClickHouseOptions {
        tls: None,
        users: vec![(USER.into(), PASSWORD.into())],
    });
    let proxy = FaultProxy::start(SocketAddr::from(([127, 0, 0, 1], clickhouse.http_port)));
    // Nobody listens on the webhook: Alertmanager only has to take the alerts.
    let alertmanager = Alertmanager::start(&format!("http://127.0.0.1:{}/unused", free_port()));
    let credentials = [
        ("RUM_CLICKHOUSE_USER", USER),
        ("RUM_CLICKHOUSE_PASSWORD", PASSWORD),
    ];
    let mut migrate_env = credentials.to_vec();
    migrate_env.push(("RUM_CLICKHOUSE_URL", clickhouse.url.as_str()));
    let migrated = rum_output(&["migrate"], &migrate_env);
    assert!(
        migrated.status.success(),
        "{}",
        String::from_utf8_lossy(&migrated.stderr)
    );

    let port = free_port().to_string();
    let proxy_url = proxy.url();
    let mut env = credentials.to_vec();
    env.extend([
        ("RUM_CLICKHOUSE_URL", proxy_url.as_str()),
        // Each request gives up after 1 s; an evaluation's reads together after 5 s.
        ("RUM_CLICKHOUSE_REQUEST_TIMEOUT_MS", "1000"),
        ("RUM_ALERTS_QUERY_TIMEOUT_SECS", "5"),
        ("RUM_ALERTS_INTERVAL_SECS", "1"),
        ("RUM_ALERTS_PORT", port.as_str()),
        ("RUM_ALERTS_ALERTMANAGER_URL", alertmanager.url.as_str()),
    ]);
    let log = clickhouse.data_dir().join("alerts.log");
    let mut alerts = RumProcess::spawn_logged(&["alerts"], &env, &log);
    let metrics = format!("http://127.0.0.1:{port}/metrics");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .expect("http client");

    let healthy = eventually(
        "rum alerts to evaluate twice through the proxy",
        Duration::from_secs(30),
        async || {
            let c = try_counters(&http, &metrics).await.ok()?;
            (c.evaluations >= 2.0).then_some(c)
        },
    )
    .await;
    assert_eq!(
        (healthy.errors, healthy.timeouts),
        (0.0, 0.0),
        "{healthy:?}"
    );

    proxy.set_mode(ProxyMode::Blackhole);
    let start = counters(&http, &metrics).await;
    let began = Instant::now();
    let mut last = start;
    let mut last_progress = Instant::now();
    let mut longest_stall = Duration::ZERO;
    while began.elapsed() < BLACKHOLE {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = counters(&http, &metrics).await;
        if now.evaluations > last.evaluations {
            longest_stall = longest_stall.max(last_progress.elapsed());
            last_progress = Instant::now();
        }
        assert!(
            last_progress.elapsed() < Duration::from_secs(5),
            "no evaluation for 5 s while ClickHouse does not answer: {now:?} (log: {})",
            log.display()
        );
        last = now;
    }
    let end = counters(&http, &metrics).await;
    let (evaluations, errors, timeouts) = (
        end.evaluations - start.evaluations,
        end.errors - start.errors,
        end.timeouts - start.timeouts,
    );
    eprintln!(
        "ClickHouse blackholed for {BLACKHOLE:?}: {evaluations} evaluations, {errors} failed, \
         {timeouts} timeouts, longest wait between evaluations {longest_stall:?}, {} connections \
         through the proxy",
        proxy.connections()
    );
    // About one evaluation a second (each fails after 1 s, and the next tick is then due): at least 20.
    assert!(errors >= 20.0, "{start:?} -> {end:?}");
    assert_eq!(
        timeouts, errors,
        "every failure is a timeout: {start:?} -> {end:?}"
    );
    // The evaluation running when the proxy switched may have read in time.
    assert!(evaluations - errors <= 1.0, "{start:?} -> {end:?}");
    assert!(end.consecutive_failures >= 20.0, "{end:?}");

    proxy.set_mode(ProxyMode::Pass);
    let recovered = eventually(
        "an evaluation that reads ClickHouse again",
        Duration::from_secs(30),
        async || {
            let c = counters(&http, &metrics).await;
            (c.consecutive_failures == 0.0).then_some(c)
        },
    )
    .await;
    let later = eventually(
        "two more evaluations",
        Duration::from_secs(30),
        async || {
            let c = counters(&http, &metrics).await;
            (c.evaluations >= recovered.evaluations + 2.0).then_some(c)
        },
    )
    .await;
    assert_eq!(
        (later.errors, later.timeouts),
        (recovered.errors, recovered.timeouts),
        "evaluations succeed again: {recovered:?} -> {later:?}"
    );

    let stopped = Instant::now();
    assert!(alerts.terminate(Duration::from_secs(10)).success());
    eprintln!("rum alerts stopped {:?} after SIGTERM", stopped.elapsed());
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        log_text.contains("ClickHouse did not answer within 1s (clickhouse.request_timeout_ms)"),
        "{log_text}"
    );
    assert!(!log_text.contains(PASSWORD), "{log_text}");
}
