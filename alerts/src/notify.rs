//! Alertmanager API v2: `POST /api/v2/alerts` with a JSON array, retried with backoff.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use crate::evaluate::Alert;
use crate::metrics::AlertsMetrics;

/// Attempts per notification before giving up until the next evaluation.
const ATTEMPTS: u32 = 4;
/// The first retry's delay; each next one doubles.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

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
}

/// The JSON body for a set of alerts.
pub fn payload(alerts: &[Alert]) -> String {
    let body: Vec<PostableAlert<'_>> = alerts
        .iter()
        .map(|a| PostableAlert {
            labels: &a.labels,
            annotations: &a.annotations,
            starts_at: rfc3339(a.starts_at),
            ends_at: rfc3339(a.ends_at),
        })
        .collect();
    serde_json::to_string(&body).unwrap_or_else(|_| "[]".into())
}

/// Why a notification failed (after every retry).
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// The request failed or Alertmanager answered with an error.
    #[error("alertmanager {url}: {reason}")]
    Failed {
        /// The URL posted to.
        url: String,
        /// The last failure.
        reason: String,
    },
}

/// Sends alerts to one Alertmanager.
#[derive(Debug, Clone)]
pub struct Notifier {
    http: reqwest::Client,
    url: String,
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
        })
    }

    /// Posts the alerts; every failed attempt is logged and counted, then retried with backoff.
    pub async fn send(&self, alerts: &[Alert], metrics: &AlertsMetrics) -> Result<(), NotifyError> {
        if alerts.is_empty() {
            return Ok(());
        }
        let body = payload(alerts);
        let mut backoff = FIRST_BACKOFF;
        let mut reason = String::new();
        for attempt in 1..=ATTEMPTS {
            let result = self
                .http
                .post(&self.url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.clone())
                .send()
                .await;
            reason = match result {
                Ok(response) if response.status().is_success() => {
                    metrics.notifications_sent.inc_by(alerts.len() as u64);
                    return Ok(());
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
            metrics.notification_errors.inc();
            tracing::warn!(url = %self.url, attempt, error = %reason, "alertmanager notification failed");
            if attempt < ATTEMPTS {
                tokio::time::sleep(backoff).await;
                backoff *= 2;
            }
        }
        Err(NotifyError::Failed {
            url: self.url.clone(),
            reason,
        })
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
    use crate::evaluate::AlertState;

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
    }
}
