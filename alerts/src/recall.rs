//! What Alertmanager holds of ours: the firing alerts `rum alerts` (any replica) posted, read back
//! when the evaluator remembers none (at start, or nothing fired since) and ClickHouse cannot be
//! read, so that a restart during an outage keeps them alive instead of letting them expire.
//!
//! Ours are told by their `generatorURL` ([`GENERATOR_URL`]) and alert name (the p75 and
//! beacons-stopped alerts; the outage and truncation alerts are the evaluator's own bookkeeping).
//! Two replicas post identical alerts with the same `generatorURL`, so either one recalls both's,
//! which are the same. Bounded: one request with the notifier's timeout, a body of at most
//! [`MAX_BODY_BYTES`], at most `max` alerts.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::evaluate::{Alert, AlertState};
use crate::notify::{Notifier, GENERATOR_URL};

/// The largest `GET /api/v2/alerts` answer read (about 10,000 alerts of ours).
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// The alert names recalled: those decided from the stored data.
const RECALLED: [&str; 4] = [
    crate::LCP_P75_POOR,
    crate::INP_P75_POOR,
    crate::CLS_P75_POOR,
    crate::BEACONS_STOPPED,
];

/// Why the alerts could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum RecallError {
    /// The request failed or timed out.
    #[error("cannot read Alertmanager's alerts")]
    Request(#[from] reqwest::Error),
    /// Alertmanager answered with an error status.
    #[error("Alertmanager answered HTTP {0}")]
    Status(u16),
    /// The answer was larger than [`MAX_BODY_BYTES`].
    #[error("Alertmanager's alerts exceed {MAX_BODY_BYTES} bytes")]
    TooLarge,
    /// The answer was not the API's JSON.
    #[error("Alertmanager's alerts are not the API's JSON")]
    Json(#[from] serde_json::Error),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GettableAlert {
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    #[serde(default)]
    starts_at: String,
    #[serde(default, rename = "generatorURL")]
    generator_url: String,
}

/// The firing alerts of ours Alertmanager holds (silenced and inhibited ones too), at most `max`,
/// as firing [`Alert`]s ending at `ends_at`.
pub async fn firing(
    notifier: &Notifier,
    max: usize,
    ends_at: u32,
) -> Result<Vec<Alert>, RecallError> {
    let (http, url) = notifier.client();
    let mut response = http
        .get(url)
        .query(&[
            ("active", "true"),
            ("silenced", "true"),
            ("inhibited", "true"),
            ("unprocessed", "true"),
        ])
        .send()
        .await?;
    if !response.status().is_success() {
        return Err(RecallError::Status(response.status().as_u16()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(RecallError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(ours(&body, max, ends_at)?)
}

/// Our firing alerts in a `GET /api/v2/alerts` answer.
fn ours(body: &[u8], max: usize, ends_at: u32) -> Result<Vec<Alert>, serde_json::Error> {
    let held: Vec<GettableAlert> = serde_json::from_slice(body)?;
    let mut alerts: Vec<Alert> = held
        .into_iter()
        .filter(|a| a.generator_url == GENERATOR_URL)
        .filter(|a| {
            a.labels
                .get("alertname")
                .is_some_and(|n| RECALLED.contains(&n.as_str()))
        })
        .map(|a| Alert {
            starts_at: parse_rfc3339(&a.starts_at).unwrap_or(ends_at),
            labels: a.labels,
            annotations: a.annotations,
            ends_at,
            state: AlertState::Firing,
        })
        .collect();
    // The same ones on every replica whatever Alertmanager's order.
    alerts.sort_by(|a, b| a.labels.cmp(&b.labels));
    alerts.truncate(max);
    Ok(alerts)
}

/// Unix seconds of an RFC 3339 time (`2023-11-14T22:13:20.123Z`, `...+02:00`); fractions dropped.
fn parse_rfc3339(text: &str) -> Option<u32> {
    let b = text.as_bytes();
    let num = |from: usize, to: usize| -> Option<i64> { text.get(from..to)?.parse().ok() };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' {
        return None;
    }
    let (y, m, d) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (hh, mm, ss) = (num(11, 13)?, num(14, 16)?, num(17, 19)?);
    let mut rest = &text[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        rest = frac.trim_start_matches(|c: char| c.is_ascii_digit());
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let oh: i64 = rest.get(1..3)?.parse().ok()?;
            let om: i64 = rest.get(4..6)?.parse().ok()?;
            sign * (oh * 3600 + om * 60)
        }
    };
    // Howard Hinnant's days_from_civil.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u32::try_from(days * 86_400 + hh * 3600 + mm * 60 + ss - offset).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::rfc3339;

    #[test]
    fn parses_what_rfc3339_writes_and_alertmanagers_fractions() {
        for secs in [0, 951_782_400, 1_700_000_000, 1_709_251_199] {
            assert_eq!(parse_rfc3339(&rfc3339(secs)), Some(secs));
        }
        assert_eq!(
            parse_rfc3339("2023-11-14T22:13:20.123456789Z"),
            Some(1_700_000_000)
        );
        assert_eq!(
            parse_rfc3339("2023-11-15T00:13:20+02:00"),
            Some(1_700_000_000)
        );
        assert_eq!(parse_rfc3339("yesterday"), None);
    }

    #[test]
    fn keeps_only_our_firing_alerts_up_to_the_limit() {
        let alert = |name: &str, site: &str, generator: &str| {
            serde_json::json!({
                "labels": {"alertname": name, "site": site},
                "annotations": {"summary": "s"},
                "startsAt": "2023-11-14T22:13:20.5Z",
                "endsAt": "2023-11-14T23:13:20Z",
                "generatorURL": generator,
                "status": {"state": "active"}
            })
        };
        let body = serde_json::json!([
            alert("WebVitalsBeaconsStopped", "b", GENERATOR_URL),
            alert("WebVitalsLCPP75Poor", "a", GENERATOR_URL),
            // Prometheus' alert of the same name, another rule, the outage alert: not ours to keep.
            alert(
                "WebVitalsLCPP75Poor",
                "p",
                "http://prometheus:9090/graph?g0.expr=x"
            ),
            alert(
                "RumIngestErrorRatioHigh",
                "",
                "http://prometheus:9090/graph"
            ),
            alert("RumAlertsStoreUnavailable", "", GENERATOR_URL),
        ])
        .to_string();
        let got = ours(body.as_bytes(), 10, 2_000_000_000).unwrap();
        let names: Vec<(&str, &str)> = got.iter().map(|a| (a.name(), a.label("site"))).collect();
        assert_eq!(
            names,
            [
                ("WebVitalsBeaconsStopped", "b"),
                ("WebVitalsLCPP75Poor", "a")
            ]
        );
        assert_eq!(got[0].starts_at, 1_700_000_000);
        assert_eq!(got[0].ends_at, 2_000_000_000);
        assert_eq!(got[0].state, AlertState::Firing);
        assert_eq!(got[0].annotations["summary"], "s");
        assert_eq!(ours(body.as_bytes(), 1, 0).unwrap().len(), 1);
        assert!(ours(b"{not json", 1, 0).is_err());
    }
}
