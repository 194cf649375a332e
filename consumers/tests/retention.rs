//! Retention failures against a real ClickHouse 18.16: a partition the server refuses to drop
//! (`max_partition_size_to_drop`) is counted in `rum_consumer_retention_failures_total`, logged on
//! one line naming the setting, and its rows stay; a server that never answers is counted and
//! logged too, and the run returns.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rum_clickhouse::{
    migrate, ClickHouseConfig, DEFAULT_RETENTION_STATEMENT_TIMEOUT, MAX_PARTITION_SIZE_TO_DROP,
};
use rum_consumers::{run_retention, ConsumerMetrics};
use rum_testkit::{send_signal, ClickHouseOptions, ClickHouseServer};

/// The log lines written while a test runs.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<u8>>>);

impl Write for Log {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Log {
    fn lines(&self) -> Vec<String> {
        let bytes = self.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
        String::from_utf8_lossy(&bytes)
            .lines()
            .map(str::to_string)
            .collect()
    }
}

/// Captures the log lines of the test's (single-threaded) runtime.
fn capture_log() -> (Log, tracing::subscriber::DefaultGuard) {
    let log = Log::default();
    let writer = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    (log, tracing::subscriber::set_default(subscriber))
}

#[tokio::test]
async fn a_clickhouse_that_never_answers_is_counted_logged_and_the_run_returns() {
    let (log, _log) = capture_log();
    let server = ClickHouseServer::start();
    let config = ClickHouseConfig {
        url: server.url.clone(),
        ..ClickHouseConfig::default()
    };
    migrate(&config).await.unwrap();
    let metrics = ConsumerMetrics::new(10, Duration::from_secs(3_600)).unwrap();
    // Accepted by the kernel, never answered: a paused server, or a drop blocked behind a lock.
    let pid = server.pid().expect("clickhouse runs");
    send_signal(pid, "STOP");
    // kill(1) returns before the kernel has stopped every thread: a loaded machine let a first quick
    // query through. Wait until every thread of the process is stopped (state T).
    let all_stopped = || {
        std::fs::read_dir(format!("/proc/{pid}/task")).is_ok_and(|tasks| {
            tasks.flatten().all(|t| {
                std::fs::read_to_string(t.path().join("stat")).is_ok_and(|s| {
                    s.rsplit(')')
                        .next()
                        .is_some_and(|rest| rest.trim_start().starts_with('T'))
                })
            })
        })
    };
    let asked = std::time::Instant::now();
    while !all_stopped() {
        assert!(
            asked.elapsed() < Duration::from_secs(10),
            "ClickHouse did not stop"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let run = run_retention(&config, &metrics, 1_710_504_000, Duration::from_secs(1));
    // Far beyond the two statements' timeouts: a run that hangs fails here instead of forever.
    let report = tokio::time::timeout(Duration::from_secs(60), run).await;
    send_signal(pid, "CONT");
    let report = report.expect("the retention run returns while ClickHouse never answers");

    assert_eq!(report.failures.len(), 2, "{report:?}");
    let text = rum_telemetry::encode(&metrics.registry);
    for table in ["vitals_raw", "vitals_1m"] {
        let line = format!("rum_consumer_retention_failures_total{{table=\"{table}\"}} 1\n");
        assert!(text.contains(&line), "{text}");
    }
    let timed_out: Vec<String> = log
        .lines()
        .into_iter()
        .filter(|l| l.contains(" WARN ") && l.contains("did not answer within 1 s"))
        .collect();
    assert_eq!(timed_out.len(), 2, "{:?}", log.lines());
    assert!(
        timed_out[0].contains(
            "retention: cannot read the expired partitions of vitals_raw: ClickHouse did not \
             answer within 1 s (tried again in an hour)"
        ),
        "{}",
        timed_out[0]
    );
}

#[tokio::test]
async fn a_drop_refused_by_max_partition_size_to_drop_is_counted_logged_and_keeps_the_rows() {
    let (log, _log) = capture_log();

    let server = ClickHouseServer::start_with_settings(
        &ClickHouseOptions::default(),
        &[(MAX_PARTITION_SIZE_TO_DROP, "1")],
    );
    let config = ClickHouseConfig {
        url: server.url.clone(),
        ..ClickHouseConfig::default()
    };
    migrate(&config).await.unwrap();
    // With 30 days of raw rows kept, 2024-02-13 has expired on 2024-03-15; the month 2024-02 of
    // the rollup has not (400 days).
    for at in ["2024-02-13 10:00:00", "2024-03-15 10:00:00"] {
        server.query(&format!(
            "INSERT INTO rum.vitals_raw (received_at, site, route, device, nav_type, metric, value, \
             rating, metric_id, sample_rate, kafka_topic, kafka_partition, kafka_offset) \
             VALUES ('{at}', 'shop', 'root', 'mobile', 'navigate', 'LCP', 1200, 'good', 'id-{at}', 1, \
             'rum.beacons.v1', 0, 1)"
        ));
    }
    let now: u32 = server
        .query("SELECT toUInt32(toDateTime('2024-03-15 12:00:00'))")
        .trim()
        .parse()
        .unwrap();
    let metrics = ConsumerMetrics::new(10, Duration::from_secs(3_600)).unwrap();

    let report = run_retention(&config, &metrics, now, DEFAULT_RETENTION_STATEMENT_TIMEOUT).await;

    assert!(report.raw_dropped.is_empty() && report.rollup_dropped.is_empty());
    let text = rum_telemetry::encode(&metrics.registry);
    assert!(
        text.contains("rum_consumer_retention_failures_total{table=\"vitals_raw\"} 1\n")
            && text.contains("rum_consumer_retention_failures_total{table=\"vitals_1m\"} 0\n"),
        "{text}"
    );
    assert_eq!(server.query("SELECT count() FROM rum.vitals_raw"), "2\n");
    let refused: Vec<String> = log
        .lines()
        .into_iter()
        .filter(|l| l.contains("max_partition_size_to_drop"))
        .collect();
    assert_eq!(refused.len(), 1, "{:?}", log.lines());
    assert!(
        refused[0].contains(" WARN ")
            && refused[0].contains(
                "retention: ClickHouse refused to drop partition 20240213 of vitals_raw: it is \
                 larger than the server setting max_partition_size_to_drop (Size ("
            ),
        "{}",
        refused[0]
    );

    // Every run counts again until the setting is raised.
    let _ = run_retention(&config, &metrics, now, DEFAULT_RETENTION_STATEMENT_TIMEOUT).await;
    assert_eq!(
        metrics
            .retention_failures
            .with_label_values(&["vitals_raw"])
            .get(),
        2
    );
}
