//! Alertmanager API v2: `POST /api/v2/alerts` with a JSON array, in batches of at most
//! `alerts.max_alerts_per_post` alerts sent side by side, each retried with backoff on its own: a
//! batch that fails (a timeout, a 5xx) does not hold back or drop the others.
//!
//! `endsAt` is stamped when each attempt is sent, not when the evaluation started (see
//! [`Notifier::with_firing_lifetime`]): an evaluation may take `alerts.query_timeout_secs` and a
//! notification [`NOTIFY_BUDGET`], so an `endsAt` from the evaluation's start could arrive expired
//! and Alertmanager would resolve a firing alert.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use crate::evaluate::{Alert, AlertState};
use crate::metrics::AlertsMetrics;

/// Attempts per notification before giving up until the next evaluation.
pub const ATTEMPTS: u32 = 4;
/// The first retry's delay; each next one doubles.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest one notification can take: `ATTEMPTS` requests of `REQUEST_TIMEOUT` and the backoffs
/// between them (20 s + 1.75 s, rounded up).
pub const NOTIFY_BUDGET: Duration = Duration::from_secs(22);
/// The `generatorURL` of every alert `rum alerts` sends: how it tells its own alerts (any replica's)
/// among those Alertmanager holds, e.g. Prometheus' alerts of the same names and labels.
pub const GENERATOR_URL: &str = "rum://alerts/evaluator";

/// One alert of the v2 API's array.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PostableAlert<'a> {
    /// The labels.
    pub labels: &'a BTreeMap<String, String>,
    /// The annotations.
    pub annotations: &'a BTreeMap<String, String>,
    /// RFC 3339.
    pub starts_at: String,
    /// RFC 3339.
    pub ends_at: String,
    /// [`GENERATOR_URL`].
    #[serde(rename = "generatorURL")]
    pub generator_url: &'static str,
}

/// The JSON body for a set of alerts, each ending at its own `ends_at`.
pub fn payload(alerts: &[Alert]) -> String {
    payload_at(alerts, None)
}

/// The JSON body for a set of alerts; with `stamp = Some((sent_at, lifetime))` a firing alert ends
/// `lifetime` seconds after `sent_at` and a resolved one at `sent_at`, whatever its `ends_at`.
pub fn payload_at(alerts: &[Alert], stamp: Option<(u32, u32)>) -> String {
    let body: Vec<PostableAlert<'_>> = alerts
        .iter()
        .map(|a| {
            let ends_at = match (stamp, a.state) {
                (None, _) => a.ends_at,
                (Some((sent_at, lifetime)), AlertState::Firing) => sent_at.saturating_add(lifetime),
                (Some((sent_at, _)), AlertState::Resolved) => sent_at,
            };
            PostableAlert {
                labels: &a.labels,
                annotations: &a.annotations,
                starts_at: rfc3339(a.starts_at),
                ends_at: rfc3339(ends_at),
                generator_url: GENERATOR_URL,
            }
        })
        .collect();
    serde_json::to_string(&body).unwrap_or_else(|_| "[]".into())
}

/// Why a notification failed (after every retry).
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// Some batches were not delivered: their requests failed or Alertmanager answered with an
    /// error on every attempt. The other batches were delivered.
    #[error("alertmanager {url}: {failed} of {batches} batches ({alerts} alerts) not delivered: {reason}")]
    Failed {
        /// The URL posted to.
        url: String,
        /// Batches not delivered.
        failed: usize,
        /// Batches sent.
        batches: usize,
        /// Alerts in the batches not delivered.
        alerts: usize,
        /// The last failure.
        reason: String,
    },
}

/// The default of `alerts.max_alerts_per_post`.
pub const DEFAULT_MAX_ALERTS_PER_POST: usize = 100;

/// Sends alerts to one Alertmanager.
#[derive(Debug, Clone)]
pub struct Notifier {
    http: reqwest::Client,
    url: String,
    max_per_post: usize,
    firing_lifetime: Option<u32>,
}

/// What posting one batch came to.
struct BatchOutcome {
    alerts: usize,
    failed_attempts: u64,
    result: Result<(), String>,
}

impl Notifier {
    /// A notifier for the Alertmanager at `base_url` (e.g. `http://127.0.0.1:9093`); an
    /// `https://` one is trusted on Mozilla's roots.
    pub fn new(base_url: &str) -> Result<Self, reqwest::Error> {
        Self::with_tls(base_url, rum_clickhouse::tls::public_roots_tls_config())
    }

    /// A notifier trusting `tls` for an `https://` Alertmanager (see [`AlertsConfig::tls`]).
    ///
    /// [`AlertsConfig::tls`]: crate::AlertsConfig::tls
    pub fn with_tls(base_url: &str, tls: rustls::ClientConfig) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .timeout(REQUEST_TIMEOUT)
            .build()?;
        Ok(Self {
            http,
            url: format!("{}/api/v2/alerts", base_url.trim_end_matches('/')),
            max_per_post: DEFAULT_MAX_ALERTS_PER_POST,
            firing_lifetime: None,
        })
    }

    /// Stamps `endsAt` at each attempt: a firing alert ends `secs` after the moment it is posted, a
    /// resolved one at that moment (see [`crate::firing_lifetime_secs`]). Without it each alert
    /// ends at its own `ends_at`.
    pub fn with_firing_lifetime(mut self, secs: u32) -> Self {
        self.firing_lifetime = Some(secs);
        self
    }

    /// The client and the `/api/v2/alerts` URL (for reading what Alertmanager holds).
    pub(crate) fn client(&self) -> (&reqwest::Client, &str) {
        (&self.http, &self.url)
    }

    /// Posts at most `n` alerts a request (at least 1).
    pub fn with_max_alerts_per_post(mut self, n: usize) -> Self {
        self.max_per_post = n.max(1);
        self
    }

    /// Posts the alerts in batches, side by side; every failed attempt is logged and counted in
    /// `rum_alerts_notification_errors_total`, then retried with backoff. Delivered alerts count in
    /// `rum_alerts_notifications_sent_total`, those of batches that failed every attempt in
    /// `rum_alerts_notifications_failed_total`.
    pub async fn send(&self, alerts: &[Alert], metrics: &AlertsMetrics) -> Result<(), NotifyError> {
        let mut posts = tokio::task::JoinSet::new();
        for batch in alerts.chunks(self.max_per_post) {
            let notifier = self.clone();
            let batch = batch.to_vec();
            posts.spawn(async move { notifier.post(&batch).await });
        }
        let batches = posts.len();
        let (mut failed, mut failed_alerts, mut reason) = (0, 0, String::new());
        while let Some(joined) = posts.join_next().await {
            let outcome = joined.unwrap_or_else(|e| BatchOutcome {
                alerts: 0,
                failed_attempts: 0,
                result: Err(format!("the batch's task failed: {e}")),
            });
            metrics.notification_errors.inc_by(outcome.failed_attempts);
            match outcome.result {
                Ok(()) => metrics.notifications_sent.inc_by(outcome.alerts as u64),
                Err(last) => {
                    metrics.notifications_failed.inc_by(outcome.alerts as u64);
                    failed += 1;
                    failed_alerts += outcome.alerts;
                    reason = last;
                }
            }
        }
        if failed == 0 {
            return Ok(());
        }
        Err(NotifyError::Failed {
            url: self.url.clone(),
            failed,
            batches,
            alerts: failed_alerts,
            reason,
        })
    }

    /// Posts one batch: every attempt times out after `REQUEST_TIMEOUT`; a failed one is logged
    /// and retried after a backoff, `ATTEMPTS` times in all.
    async fn post(&self, batch: &[Alert]) -> BatchOutcome {
        let alerts = batch.len();
        let mut backoff = FIRST_BACKOFF;
        let mut reason = String::new();
        for attempt in 1..=ATTEMPTS {
            let stamp = self
                .firing_lifetime
                .map(|lifetime| (crate::system_now(), lifetime));
            let result = self
                .http
                .post(&self.url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(payload_at(batch, stamp))
                .send()
                .await;
            reason = match result {
                Ok(response) if response.status().is_success() => {
                    return BatchOutcome {
                        alerts,
                        failed_attempts: u64::from(attempt - 1),
                        result: Ok(()),
                    };
                }
                Ok(response) => {
                    let status = response.status();
                    let text = response.text().await.unwrap_or_default();
                    format!("HTTP {status}: {}", text.trim())
                }
                // reqwest's own message stops at "error sending request": the cause (refused,
                // an untrusted certificate) is in its sources. The URL is in the log line once.
                Err(e) => rum_telemetry::error_chain(&e.without_url()),
            };
            tracing::warn!(url = %self.url, attempt, alerts, error = %reason, "alertmanager notification failed");
            if attempt < ATTEMPTS {
                tokio::time::sleep(backoff).await;
                backoff *= 2;
            }
        }
        BatchOutcome {
            alerts,
            failed_attempts: u64::from(ATTEMPTS),
            result: Err(reason),
        }
    }
}

/// Unix seconds as RFC 3339 in UTC, e.g. `2023-11-14T22:13:20Z`.
pub fn rfc3339(secs: u32) -> String {
    let days = i64::from(secs / 86_400);
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn formats_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(1_709_251_199), "2024-02-29T23:59:59Z");
    }

    #[test]
    fn payload_is_a_json_array_of_alerts() {
        let labels: BTreeMap<String, String> = [("alertname".to_string(), "X".to_string())].into();
        let alert = Alert {
            labels,
            annotations: BTreeMap::new(),
            starts_at: 0,
            ends_at: 60,
            state: AlertState::Firing,
        };
        let v: serde_json::Value = serde_json::from_str(&payload(&[alert])).unwrap();
        assert_eq!(v[0]["labels"]["alertname"], "X");
        assert_eq!(v[0]["startsAt"], "1970-01-01T00:00:00Z");
        assert_eq!(v[0]["endsAt"], "1970-01-01T00:01:00Z");
        assert_eq!(v[0]["generatorURL"], GENERATOR_URL);
    }

    #[test]
    fn a_stamped_payload_ends_from_the_send_time() {
        let alert = |state| Alert {
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            starts_at: 0,
            ends_at: 60,
            state,
        };
        let alerts = [alert(AlertState::Firing), alert(AlertState::Resolved)];
        let v: serde_json::Value =
            serde_json::from_str(&payload_at(&alerts, Some((1000, 300)))).unwrap();
        assert_eq!(v[0]["endsAt"], rfc3339(1300));
        assert_eq!(v[1]["endsAt"], rfc3339(1000));
    }

    #[test]
    fn the_budget_covers_every_attempt_and_backoff() {
        let backoffs: Duration = (0..ATTEMPTS - 1).map(|i| FIRST_BACKOFF * 2u32.pow(i)).sum();
        assert!(REQUEST_TIMEOUT * ATTEMPTS + backoffs <= NOTIFY_BUDGET);
    }

    #[tokio::test]
    async fn an_unreachable_alertmanager_is_retried_counted_and_not_fatal() {
        let metrics = AlertsMetrics::new().unwrap();
        let port = rum_testkit::free_port();
        let notifier = Notifier::new(&format!("http://127.0.0.1:{port}")).unwrap();
        let alert = Alert {
            labels: [("alertname".to_string(), "X".to_string())].into(),
            annotations: BTreeMap::new(),
            starts_at: 0,
            ends_at: 60,
            state: AlertState::Firing,
        };
        let err = notifier.send(&[alert], &metrics).await.unwrap_err();
        assert!(err.to_string().contains("/api/v2/alerts"), "{err}");
        let NotifyError::Failed { reason, .. } = err;
        assert!(
            !reason.contains("127.0.0.1"),
            "the URL once, not in reqwest's text too: {reason}"
        );
        assert_eq!(metrics.notification_errors.get(), u64::from(ATTEMPTS));
        assert_eq!(metrics.notifications_failed.get(), 1);
    }

    fn numbered(n: usize) -> Vec<Alert> {
        (0..n)
            .map(|i| Alert {
                labels: [("alertname".to_string(), format!("A{i}"))].into(),
                annotations: BTreeMap::new(),
                starts_at: 0,
                ends_at: 60,
                state: AlertState::Firing,
            })
            .collect()
    }

    /// A listener answering each request with `status`, recording the alert names of each body.
    async fn recording_listener(status: u16) -> (String, Arc<Mutex<Vec<Vec<String>>>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let sink = bodies.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let sink = sink.clone();
                tokio::spawn(async move {
                    let mut data = Vec::new();
                    let mut buf = [0u8; 8192];
                    loop {
                        let Ok(n) = stream.read(&mut buf).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        data.extend_from_slice(&buf[..n]);
                        let text = String::from_utf8_lossy(&data).to_string();
                        let Some((head, body)) = text.split_once("\r\n\r\n") else {
                            continue;
                        };
                        let length: usize = head
                            .to_ascii_lowercase()
                            .lines()
                            .find_map(|l| {
                                l.strip_prefix("content-length:")
                                    .map(|v| v.trim().to_string())
                            })
                            .and_then(|v| v.parse().ok())
                            .unwrap_or(0);
                        if body.len() < length {
                            continue;
                        }
                        let json: serde_json::Value = serde_json::from_str(body).unwrap();
                        let names = json
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|a| a["labels"]["alertname"].as_str().unwrap().to_string())
                            .collect();
                        sink.lock().unwrap().push(names);
                        let answer = format!(
                            "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                        );
                        let _ = stream.write_all(answer.as_bytes()).await;
                        return;
                    }
                });
            }
        });
        (url, bodies)
    }

    #[tokio::test]
    async fn alerts_go_in_batches_of_at_most_the_limit() {
        let (url, bodies) = recording_listener(200).await;
        let metrics = AlertsMetrics::new().unwrap();
        let notifier = Notifier::new(&url).unwrap().with_max_alerts_per_post(3);
        notifier.send(&numbered(8), &metrics).await.unwrap();
        let mut got = bodies.lock().unwrap().clone();
        got.sort();
        assert_eq!(
            got,
            [
                vec!["A0", "A1", "A2"],
                vec!["A3", "A4", "A5"],
                vec!["A6", "A7"]
            ]
        );
        assert_eq!(metrics.notifications_sent.get(), 8);
        assert_eq!(metrics.notification_errors.get(), 0);
        // Nothing to send: no request.
        notifier.send(&[], &metrics).await.unwrap();
        assert_eq!(bodies.lock().unwrap().len(), 3);
    }

    #[tokio::test]
    async fn every_failed_batch_is_retried_and_counted_on_its_own() {
        let (url, bodies) = recording_listener(503).await;
        let metrics = AlertsMetrics::new().unwrap();
        let notifier = Notifier::new(&url).unwrap().with_max_alerts_per_post(2);
        let err = notifier.send(&numbered(3), &metrics).await.unwrap_err();
        let NotifyError::Failed {
            failed,
            batches,
            alerts,
            reason,
            ..
        } = err;
        assert_eq!((failed, batches, alerts), (2, 2, 3));
        assert!(reason.contains("503"), "{reason}");
        assert_eq!(bodies.lock().unwrap().len(), 2 * ATTEMPTS as usize);
        assert_eq!(metrics.notification_errors.get(), 2 * u64::from(ATTEMPTS));
        assert_eq!(metrics.notifications_failed.get(), 3);
        assert_eq!(metrics.notifications_sent.get(), 0);
    }
}
