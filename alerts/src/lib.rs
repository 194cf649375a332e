//! `rum alerts`: evaluates the stored percentiles of `rum.vitals_1m` every interval and notifies
//! Alertmanager (API v2).
//!
//! * [`rules`]: the rules file (thresholds, window, minimum samples, severities, scope).
//! * [`store`]: the ClickHouse queries one evaluation reads, bounded by the alert cap whatever the
//!   data holds (the ingest is public: anyone can create sites).
//! * [`attribution`]: what to fix: the top LCP element (INP interaction target, CLS shift target)
//!   of each firing p75 alert's series, from `vitals_raw`, added to its annotations after the
//!   decision; best effort (without it the alerts still go out).
//! * [`evaluate`]: the decision, a pure function of the stored data and `now` — no state, so a restart
//!   does not reset a pending alert and replicas send identical alerts (Alertmanager deduplicates);
//!   at most `alerts.max_alerts` an evaluation, ranked the same way on every replica.
//! * [`outage`]: the one thing kept in memory: while ClickHouse cannot be read, the last firing
//!   alerts are re-sent (never resolved) and `RumAlertsStoreUnavailable` fires.
//! * [`recall`]: after a restart, the firing alerts of ours Alertmanager holds, re-sent during an
//!   outage like remembered ones.
//! * [`notify`]: `POST /api/v2/alerts` in bounded batches, each retried with backoff, counted, never
//!   fatal; `endsAt` stamped at each post.
//! * [`metrics`]: `/metrics` of the evaluator.

pub mod attribution;
pub mod config;
pub mod evaluate;
pub mod metrics;
pub mod notify;
pub mod outage;
pub mod recall;
pub mod rules;
pub mod store;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub use config::{AlertsConfig, Weighting};
pub use evaluate::{evaluate, Alert, AlertState};
pub use metrics::AlertsMetrics;
pub use notify::{Notifier, NotifyError};
pub use outage::StoreOutage;
pub use rules::Rules;
use rum_clickhouse::ClickHouseConfig;
pub use store::{StoreError, StoredData, QUERY_TIMEOUT_KEY, REQUEST_TIMEOUT_KEY};

/// p75 LCP above its threshold for the window.
pub const LCP_P75_POOR: &str = "WebVitalsLCPP75Poor";
/// p75 INP above its threshold for the window.
pub const INP_P75_POOR: &str = "WebVitalsINPP75Poor";
/// p75 CLS above its threshold for the window.
pub const CLS_P75_POOR: &str = "WebVitalsCLSP75Poor";
/// No beacons from a site for the window while the same window a day earlier had some.
pub const BEACONS_STOPPED: &str = "WebVitalsBeaconsStopped";
/// The `metric` label of [`BEACONS_STOPPED`] (it concerns every metric of a site).
pub const BEACONS_METRIC: &str = "beacons";
/// More alerts held than `alerts.max_alerts`: how many were left out (annotation `omitted`).
pub const TRUNCATED: &str = "RumAlertsTruncated";
/// ClickHouse could not be read for `alerts.store_unavailable_after` evaluations in a row.
pub const STORE_UNAVAILABLE: &str = "RumAlertsStoreUnavailable";
/// Every alert name.
pub const ALERT_NAMES: [&str; 6] = [
    LCP_P75_POOR,
    INP_P75_POOR,
    CLS_P75_POOR,
    BEACONS_STOPPED,
    TRUNCATED,
    STORE_UNAVAILABLE,
];

/// Why `rum alerts` could not start.
#[derive(Debug, thiserror::Error)]
pub enum AlertsError {
    /// A configuration value (or the rules file) is unusable.
    #[error("config: {0}")]
    Config(#[from] rum_schemas::config::ConfigError),
    /// The `/metrics` address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// host:port.
        addr: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The metrics registry could not be built.
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The HTTP client could not be built.
    #[error("http client: {0}")]
    Http(#[from] reqwest::Error),
}

/// The wall clock in unix seconds.
pub fn system_now() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX))
}

/// Seconds a firing alert lives in Alertmanager after it was posted unless posted again:
/// `3 x interval + query_timeout + 2 x NOTIFY_BUDGET`. Two posts of one alert are at most one
/// interval plus one evaluation (`query_timeout`) plus one notification apart, and when an evaluation
/// and its notification overrun the interval, at most `query_timeout + 2 x NOTIFY_BUDGET` (one
/// batch delivered at its first attempt, another retried to the end, then the next round); the
/// 3 intervals keep the margin of two missed posts. `endsAt` is stamped at each post
/// ([`Notifier::with_firing_lifetime`]). The cost: an evaluator that dies leaves its alerts in
/// Alertmanager this long (`RumTargetDown` and `RumAlertsNotEvaluating` fire meanwhile).
pub fn firing_lifetime_secs(interval_secs: u32, query_timeout_secs: u64) -> u32 {
    let extra = query_timeout_secs + 2 * notify::NOTIFY_BUDGET.as_secs();
    interval_secs
        .saturating_mul(3)
        .saturating_add(u32::try_from(extra).unwrap_or(u32::MAX))
}

/// Reads the stored data and decides; the clock is the caller's (`now`, unix seconds).
#[derive(Clone)]
pub struct Evaluator {
    client: clickhouse::Client,
    rules: Rules,
    interval_secs: u32,
    max_alerts: usize,
    query_timeout: Duration,
    request_timeout: Duration,
    weighting: Weighting,
    attribution_errors: prometheus::IntCounterVec,
}

impl Evaluator {
    /// An evaluator over the database of `clickhouse`, evaluating every `interval_secs`, with the
    /// defaults of `alerts.max_alerts` (500), `alerts.query_timeout_secs` (30) and
    /// `alerts.weighting` (`sample_rate`); each ClickHouse request is bounded by
    /// `clickhouse.request_timeout_ms` ([`ClickHouseConfig::request_timeout`]).
    pub fn new(clickhouse: &ClickHouseConfig, rules: Rules, interval_secs: u32) -> Self {
        let defaults = AlertsConfig::default();
        Self {
            client: clickhouse.client(),
            rules,
            interval_secs,
            max_alerts: defaults.max_alerts,
            query_timeout: Duration::from_secs(defaults.query_timeout_secs),
            request_timeout: clickhouse.request_timeout(),
            weighting: defaults.weighting,
            attribution_errors: metrics::attribution_errors_counter()
                .expect("a valid metric definition"),
        }
    }

    /// Reads and decides the p75 steps as `weighting` says (`alerts.weighting`).
    pub fn with_weighting(mut self, weighting: Weighting) -> Self {
        self.weighting = weighting;
        self
    }

    /// Counts failed attribution reads in `counter` (`rum_alerts_attribution_errors_total` of
    /// [`AlertsMetrics`]) instead of a counter of its own.
    pub fn with_attribution_errors(mut self, counter: prometheus::IntCounterVec) -> Self {
        self.attribution_errors = counter;
        self
    }

    /// Failed attribution reads so far, by reason (`timeout`, `query`).
    pub fn attribution_errors(&self) -> &prometheus::IntCounterVec {
        &self.attribution_errors
    }

    /// Gives up one evaluation's reads, all together, after `timeout` (`alerts.query_timeout_secs`).
    pub fn with_query_timeout(mut self, timeout: Duration) -> Self {
        self.query_timeout = timeout;
        self
    }

    /// Gives up each ClickHouse request after `timeout` (`clickhouse.request_timeout_ms`).
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Sends at most `n` alerts an evaluation (at least 1), plus the summary of the rest.
    pub fn with_max_alerts(mut self, n: usize) -> Self {
        self.max_alerts = n.max(1);
        self
    }

    /// What the evaluation at `now` reads: the rows of at most `max_alerts + 1` candidates of each
    /// kind (one more than the cap tells a full cap from an overflow), each request within the
    /// request timeout and all of them within the query timeout.
    pub async fn fetch_at(&self, now: u32) -> Result<StoredData, StoreError> {
        let limit = u32::try_from(self.max_alerts + 1).unwrap_or(u32::MAX);
        let read = store::fetch(
            &self.client,
            &self.rules,
            now,
            self.interval_secs,
            limit,
            self.request_timeout,
            self.weighting,
        );
        match tokio::time::timeout(self.query_timeout, read).await {
            Ok(data) => data,
            Err(_) => Err(StoreError::Timeout {
                after: self.query_timeout,
                key: QUERY_TIMEOUT_KEY,
            }),
        }
    }

    /// The alerts to send at `now`: firing, and resolved since `now - interval`, at most
    /// `max_alerts` plus a [`TRUNCATED`] summary; the firing p75 ones annotated with their top
    /// target ([`attribution`]) when it can be read in the rest of the query timeout (a failure is
    /// logged and counted, and leaves the alerts as decided).
    pub async fn evaluate_at(&self, now: u32) -> Result<Vec<Alert>, StoreError> {
        let started = Instant::now();
        let data = self.fetch_at(now).await?;
        let mut alerts = evaluate(&self.rules, &data, now, self.interval_secs, self.max_alerts);
        let left = self.query_timeout.saturating_sub(started.elapsed());
        if let Err(e) = self.attribute(&mut alerts, now, left).await {
            let reason = if matches!(e, StoreError::Timeout { .. }) {
                "timeout"
            } else {
                "query"
            };
            self.attribution_errors.with_label_values(&[reason]).inc();
            tracing::warn!(
                error = %rum_telemetry::error_chain(&e),
                reason,
                "cannot read the top targets of the firing alerts; they are sent without them"
            );
        }
        Ok(alerts)
    }

    /// Adds the top-target annotations to the firing p75 alerts among `alerts`: one read of
    /// `vitals_raw` over the decision's window, within `left` and the request timeout.
    async fn attribute(
        &self,
        alerts: &mut [Alert],
        now: u32,
        left: Duration,
    ) -> Result<(), StoreError> {
        let series = attribution::firing_series(alerts);
        if series.is_empty() {
            return Ok(());
        }
        let end = store::spans(&self.rules, now, self.interval_secs).end;
        let from = end.saturating_sub(self.rules.for_minutes * 60);
        let read = attribution::top_targets(&self.client, &series, from, end, self.request_timeout);
        let tops = match tokio::time::timeout(left, read).await {
            Ok(tops) => tops?,
            Err(_) => {
                return Err(StoreError::Timeout {
                    after: self.query_timeout,
                    key: QUERY_TIMEOUT_KEY,
                })
            }
        };
        attribution::annotate(alerts, &tops);
        Ok(())
    }
}

/// Runs the evaluator and its `/metrics` server until `shutdown` completes.
pub async fn run(
    config: &AlertsConfig,
    clickhouse: &ClickHouseConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), AlertsError> {
    let rules = config.rules()?;
    let interval_secs = u32::try_from(config.interval_secs).unwrap_or(86_400);
    let metrics = Arc::new(AlertsMetrics::new()?);
    let notifier = Notifier::with_tls(&config.alertmanager_url, config.tls()?)?
        .with_max_alerts_per_post(config.max_alerts_per_post)
        .with_firing_lifetime(firing_lifetime_secs(
            interval_secs,
            config.query_timeout_secs,
        ));
    let evaluator = Evaluator::new(clickhouse, rules, interval_secs)
        .with_max_alerts(config.max_alerts)
        .with_query_timeout(Duration::from_secs(config.query_timeout_secs))
        .with_weighting(config.weighting)
        .with_attribution_errors(metrics.attribution_errors.clone());
    let mut outage = StoreOutage::new(config.store_unavailable_after);
    let addr = format!("{}:{}", config.host, config.port);
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(|source| AlertsError::Bind { addr, source })?;
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let mut http_stop = stop_rx.clone();
    let app = rum_telemetry::router(metrics.registry.clone());
    let http = tokio::spawn(async move {
        let stopped = async move {
            let _ = http_stop.wait_for(|s| *s).await;
        };
        axum::serve(listener, app)
            .with_graceful_shutdown(stopped)
            .await
    });
    tracing::info!(
        interval_secs,
        firing_lifetime_secs = firing_lifetime_secs(interval_secs, config.query_timeout_secs),
        alertmanager = %config.alertmanager_url,
        "alerts evaluator started"
    );
    let mut ticker = tokio::time::interval(Duration::from_secs(u64::from(interval_secs)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop_rx.wait_for(|s| *s) => break,
        }
        let started = Instant::now();
        let now = system_now();
        let result = tokio::select! {
            result = evaluator.evaluate_at(now) => result,
            _ = stop_rx.wait_for(|s| *s) => break,
        };
        metrics.evaluations.inc();
        metrics
            .evaluation_duration
            .observe(started.elapsed().as_secs_f64());
        let alerts = match result {
            Ok(alerts) => outage.succeeded(alerts, now),
            Err(e) => {
                metrics.evaluation_errors.inc();
                if matches!(e, StoreError::Timeout { .. }) {
                    metrics.clickhouse_timeouts.inc();
                }
                let failures = outage.failures() + 1;
                tracing::warn!(error = %rum_telemetry::error_chain(&e), failures, "evaluation failed; the last firing alerts are re-sent");
                if outage.remembers_nothing() {
                    tokio::select! {
                        () = recall_firing(&notifier, config.max_alerts, now, &mut outage, &metrics) => {}
                        _ = stop_rx.wait_for(|s| *s) => break,
                    }
                }
                outage.failed(now, interval_secs)
            }
        };
        metrics
            .store_consecutive_failures
            .set(i64::from(outage.failures()));
        metrics.record_firing(&alerts);
        tokio::select! {
            sent = notifier.send(&alerts, &metrics) => {
                if let Err(e) = sent {
                    tracing::error!(error = %e, "alerts not delivered; the firing ones are sent again next interval");
                }
            }
            _ = stop_rx.wait_for(|s| *s) => break,
        }
    }
    let _ = http.await;
    tracing::info!("alerts evaluator stopped");
    Ok(())
}

/// Reads back the firing alerts of ours Alertmanager holds into `outage` (see [`recall`]); a failure
/// is counted in `rum_alerts_recall_errors_total` and logged, and leaves nothing remembered.
async fn recall_firing(
    notifier: &Notifier,
    max_alerts: usize,
    now: u32,
    outage: &mut StoreOutage,
    metrics: &AlertsMetrics,
) {
    match recall::firing(notifier, max_alerts, now).await {
        Ok(alerts) => {
            if !alerts.is_empty() {
                tracing::info!(
                    alerts = alerts.len(),
                    "read back the firing alerts Alertmanager holds from this evaluator; re-sent while ClickHouse cannot be read"
                );
            }
            outage.remember(alerts);
        }
        Err(e) => {
            metrics.recall_errors.inc();
            tracing::warn!(error = %rum_telemetry::error_chain(&e), "cannot read back the firing alerts from Alertmanager; those of a previous run may expire during this outage");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_server_that_never_answers_fails_the_evaluation_after_the_timeout() {
        // Accepts connections (the kernel's backlog) and never answers, as a paused ClickHouse.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let clickhouse = ClickHouseConfig {
            url: format!("http://{}", listener.local_addr().unwrap()),
            ..Default::default()
        };
        let evaluator = Evaluator::new(&clickhouse, Rules::default(), 60)
            .with_query_timeout(Duration::from_millis(300));
        let err = evaluator.evaluate_at(1_800_000_000).await.unwrap_err();
        assert!(
            matches!(err, StoreError::Timeout { after, key: QUERY_TIMEOUT_KEY } if after == Duration::from_millis(300)),
            "{err}"
        );
        assert_eq!(
            err.to_string(),
            "ClickHouse did not answer within 300ms (alerts.query_timeout_secs)"
        );
        // One request's bound, shorter than the evaluation's, from clickhouse.request_timeout_ms.
        let short_requests = ClickHouseConfig {
            request_timeout_ms: 200,
            ..clickhouse.clone()
        };
        let started = std::time::Instant::now();
        let err = Evaluator::new(&short_requests, Rules::default(), 60)
            .with_query_timeout(Duration::from_secs(5))
            .evaluate_at(1_800_000_000)
            .await
            .unwrap_err();
        assert!(
            matches!(err, StoreError::Timeout { after, key: REQUEST_TIMEOUT_KEY } if after == Duration::from_millis(200)),
            "{err}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        drop(listener);
        // Refused: a query error, with its cause in the chain.
        let err = evaluator.evaluate_at(1_800_000_000).await.unwrap_err();
        assert!(matches!(err, StoreError::Query(_)), "{err}");
        let chain = rum_telemetry::error_chain(&err);
        assert!(chain.starts_with("cannot read ClickHouse: "), "{chain}");
    }
}
