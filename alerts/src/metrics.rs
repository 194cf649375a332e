//! The evaluator's Prometheus metrics, in their own registry, and the `/metrics` router.

use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

use crate::evaluate::{Alert, AlertState};

/// The evaluator's metrics.
pub struct AlertsMetrics {
    /// The registry `/metrics` encodes.
    pub registry: Registry,
    /// Evaluations run (failed ones included).
    pub evaluations: IntCounter,
    /// Evaluations that could not read ClickHouse.
    pub evaluation_errors: IntCounter,
    /// Evaluations failed because ClickHouse did not answer in time (`clickhouse.request_timeout_ms`
    /// for one request, `alerts.query_timeout_secs` for an evaluation's reads); counted in
    /// `evaluation_errors` too.
    pub clickhouse_timeouts: IntCounter,
    /// Alerts firing after the last evaluation, by alert name.
    pub firing: IntGaugeVec,
    /// Alerts delivered to Alertmanager (firing and resolved).
    pub notifications_sent: IntCounter,
    /// Failed posts to Alertmanager (each retry counts).
    pub notification_errors: IntCounter,
    /// Alerts of batches that failed every attempt (sent again next evaluation if still firing).
    pub notifications_failed: IntCounter,
    /// Evaluations in a row that could not read ClickHouse; 0 after one that could.
    pub store_consecutive_failures: IntGauge,
    /// Alerts left out by `alerts.max_alerts` at the last evaluation.
    pub omitted: IntGauge,
    /// Time of one evaluation (query and decision), notification excluded.
    pub evaluation_duration: Histogram,
    /// Failed reads of the firing alerts Alertmanager holds (after a restart, during an outage).
    pub recall_errors: IntCounter,
    /// Evaluations whose alerts went out without their top-target annotations, by `reason`:
    /// `timeout` or `query` (see [`crate::attribution`]).
    pub attribution_errors: IntCounterVec,
}

/// The `reason`s of `rum_alerts_attribution_errors_total`.
pub const ATTRIBUTION_ERROR_REASONS: [&str; 2] = ["timeout", "query"];

/// A fresh `rum_alerts_attribution_errors_total`, not registered.
pub fn attribution_errors_counter() -> Result<IntCounterVec, prometheus::Error> {
    let counter = IntCounterVec::new(
        Opts::new(
            "rum_alerts_attribution_errors_total",
            "Evaluations whose firing p75 alerts went out without their top-target annotations: the vitals_raw query failed (reason query) or did not answer in time (reason timeout).",
        ),
        &["reason"],
    )?;
    for reason in ATTRIBUTION_ERROR_REASONS {
        counter.with_label_values(&[reason]).reset();
    }
    Ok(counter)
}

impl AlertsMetrics {
    /// Builds and registers every metric; a duplicate name is an error, not a panic.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let evaluations = IntCounter::new("rum_alerts_evaluations_total", "Evaluations run.")?;
        let evaluation_errors = IntCounter::new(
            "rum_alerts_evaluation_errors_total",
            "Evaluations that could not read ClickHouse.",
        )?;
        let clickhouse_timeouts = IntCounter::new(
            "rum_alerts_clickhouse_timeouts_total",
            "Evaluations failed because ClickHouse did not answer in time (clickhouse.request_timeout_ms for a request, alerts.query_timeout_secs for an evaluation's reads); also counted in rum_alerts_evaluation_errors_total.",
        )?;
        let firing = IntGaugeVec::new(
            Opts::new(
                "rum_alerts_firing",
                "Alerts firing after the last evaluation, by alert name.",
            ),
            &["alertname"],
        )?;
        let notifications_sent = IntCounter::new(
            "rum_alerts_notifications_sent_total",
            "Alerts delivered to Alertmanager (firing and resolved).",
        )?;
        let notification_errors = IntCounter::new(
            "rum_alerts_notification_errors_total",
            "Failed posts to Alertmanager; each retry counts.",
        )?;
        let notifications_failed = IntCounter::new(
            "rum_alerts_notifications_failed_total",
            "Alerts of notification batches that failed every attempt.",
        )?;
        let store_consecutive_failures = IntGauge::new(
            "rum_alerts_store_consecutive_failures",
            "Evaluations in a row that could not read ClickHouse (0 after one that could).",
        )?;
        let omitted = IntGauge::new(
            "rum_alerts_omitted",
            "Alerts left out by alerts.max_alerts at the last evaluation (counted in RumAlertsTruncated).",
        )?;
        let evaluation_duration = Histogram::with_opts(
            HistogramOpts::new(
                "rum_alerts_evaluation_duration_seconds",
                "Time of one evaluation (ClickHouse queries and the decision).",
            )
            .buckets(vec![0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
        )?;
        let recall_errors = IntCounter::new(
            "rum_alerts_recall_errors_total",
            "Failed reads of the firing alerts Alertmanager holds from this evaluator (done when none is remembered and ClickHouse cannot be read).",
        )?;
        let attribution_errors = attribution_errors_counter()?;
        registry.register(Box::new(attribution_errors.clone()))?;
        registry.register(Box::new(recall_errors.clone()))?;
        registry.register(Box::new(evaluations.clone()))?;
        registry.register(Box::new(evaluation_errors.clone()))?;
        registry.register(Box::new(clickhouse_timeouts.clone()))?;
        registry.register(Box::new(firing.clone()))?;
        registry.register(Box::new(notifications_sent.clone()))?;
        registry.register(Box::new(notification_errors.clone()))?;
        registry.register(Box::new(notifications_failed.clone()))?;
        registry.register(Box::new(store_consecutive_failures.clone()))?;
        registry.register(Box::new(omitted.clone()))?;
        registry.register(Box::new(evaluation_duration.clone()))?;
        for name in crate::ALERT_NAMES {
            firing.with_label_values(&[name]).set(0);
        }
        Ok(Self {
            registry,
            evaluations,
            evaluation_errors,
            clickhouse_timeouts,
            firing,
            notifications_sent,
            notification_errors,
            notifications_failed,
            store_consecutive_failures,
            omitted,
            evaluation_duration,
            recall_errors,
            attribution_errors,
        })
    }

    /// Sets `rum_alerts_firing` and `rum_alerts_omitted` from the alerts one evaluation sends.
    pub fn record_firing(&self, alerts: &[Alert]) {
        for name in crate::ALERT_NAMES {
            let n = alerts
                .iter()
                .filter(|a| a.state == AlertState::Firing && a.name() == name)
                .count();
            self.firing.with_label_values(&[name]).set(n as i64);
        }
        let omitted = alerts
            .iter()
            .find(|a| a.state == AlertState::Firing && a.name() == crate::TRUNCATED)
            .and_then(|a| a.annotations.get("omitted")?.parse().ok())
            .unwrap_or(0);
        self.omitted.set(omitted);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_the_full_registry_with_rum_names() {
        let m = AlertsMetrics::new().expect("no duplicate metric names");
        m.evaluations.inc();
        m.evaluation_errors.inc();
        m.notifications_sent.inc();
        m.notification_errors.inc();
        m.evaluation_duration.observe(0.2);
        m.record_firing(&[]);
        let text = rum_telemetry::encode(&m.registry);
        for name in [
            "rum_alerts_evaluations_total",
            "rum_alerts_evaluation_errors_total",
            "rum_alerts_notifications_sent_total",
            "rum_alerts_notification_errors_total",
            "rum_alerts_evaluation_duration_seconds_bucket",
            "rum_alerts_firing{alertname=\"WebVitalsLCPP75Poor\"} 0",
            "rum_alerts_firing{alertname=\"WebVitalsBeaconsStopped\"} 0",
            "rum_alerts_firing{alertname=\"RumAlertsStoreUnavailable\"} 0",
            "rum_alerts_firing{alertname=\"RumAlertsTruncated\"} 0",
            "rum_alerts_notifications_failed_total 0",
            "rum_alerts_store_consecutive_failures 0",
            "rum_alerts_omitted 0",
            "rum_alerts_recall_errors_total 0",
            "rum_alerts_clickhouse_timeouts_total 0",
            "rum_alerts_attribution_errors_total{reason=\"timeout\"} 0",
            "rum_alerts_attribution_errors_total{reason=\"query\"} 0",
        ] {
            assert!(text.contains(name), "{name} missing in\n{text}");
        }
        for family in m.registry.gather() {
            assert!(
                family.name().starts_with("rum_alerts_"),
                "{}",
                family.name()
            );
        }
    }
}
