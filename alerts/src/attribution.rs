//! What to fix: each firing p75 alert names the element most often behind its metric on its route
//! and device in the alert's window, read from the attribution columns of `vitals_raw`
//! (migration 005): LCP's largest element, INP's interaction target, CLS's largest shift target,
//! all in the `target` column. Annotations:
//!
//! * `top_target`: the most frequent `target` among the series' samples received in the window
//!   `[end - for_minutes, end)` (the window the decision looked at), neither empty nor `other` (the
//!   ingest's cap folds a route's values past its limit into `other`, which names no element);
//! * `top_target_share`: its samples over the window's samples that name a target (two decimals;
//!   collectors without the attribution build send none, and `other` names none: both are left out of
//!   the share);
//! * INP only, when sent: `top_target_interaction_type` and `top_target_script_url`, the most
//!   frequent interaction type and longest-script URL among that target's samples.
//!
//! Counts are of samples, not weighted: integer counts rank the same on every replica, while float
//! sums of weights merged in another order may not. Ties go to the smaller string (bytes), so two
//! replicas send identical annotations for identical data.
//!
//! One query an evaluation, for all firing p75 alerts at once (at most `alerts.max_alerts`): one row
//! a series at most. It runs after the decision, within what is left of `alerts.query_timeout_secs`
//! and within `clickhouse.request_timeout_ms`; when it fails the alerts go out without these
//! annotations (logged, counted in `rum_alerts_attribution_errors_total`). The values are client
//! strings, bounded by the ingest (targets 256 characters, URLs 512, a cap of distinct values per
//! route); they are bound to the SQL as quoted literals, and cut again here to those bounds, control
//! characters dropped.

use std::collections::HashMap;
use std::time::Duration;

use clickhouse::Row;
use rum_schemas::limits::{MAX_ATTRIBUTION_TARGET_LEN, MAX_ATTRIBUTION_URL_LEN};
use serde::Deserialize;

use crate::evaluate::{Alert, AlertState};
use crate::store::{request, StoreError};
use crate::{CLS_P75_POOR, INP_P75_POOR, LCP_P75_POOR};

/// The top target of one series in the window, as the query answers it.
#[derive(Debug, Clone, PartialEq, Row, Deserialize)]
pub struct TopTarget {
    /// The site.
    pub site: String,
    /// The route slug.
    pub route: String,
    /// The device class.
    pub device: String,
    /// The metric name.
    pub metric: String,
    /// The window's samples of the series that name a target.
    pub attributed: u64,
    /// The most frequent target (ties: the smallest).
    pub target: String,
    /// Its samples.
    pub samples: u64,
    /// INP: the most frequent interaction type of its samples ('' when none was sent).
    pub interaction_type: String,
    /// INP: the most frequent longest-script URL of its samples ('' when none was sent).
    pub script_url: String,
}

/// A series: site, route, device, metric.
pub type Series = (String, String, String, String);

/// The series of the firing p75 alerts among `alerts`, in their order.
pub fn firing_series(alerts: &[Alert]) -> Vec<Series> {
    alerts
        .iter()
        .filter(|a| {
            a.state == AlertState::Firing
                && [LCP_P75_POOR, INP_P75_POOR, CLS_P75_POOR].contains(&a.name())
        })
        .map(|a| {
            (
                a.label("site").to_string(),
                a.label("route").to_string(),
                a.label("device").to_string(),
                a.label("metric").to_string(),
            )
        })
        .collect()
}

/// The query of [`top_targets`] for `series` series (at least 1). Placeholders: the window's start
/// and end (unix seconds), then one `(site, route, device, metric)` tuple per series (one series is
/// bound twice: `IN ((a, b, c, d))` would read as a set of four values).
///
/// The innermost level reads `vitals_raw` and groups (on a cluster it runs on the shards); an INP
/// row counts twice there, once for its interaction type and once for its script URL (`kind`), so
/// one scan ranks the three. The ranks are sorted arrays of `(count, value)`, the first taken: ClickHouse
/// 18.16 has no window functions, and `LIMIT 1 BY` would not break ties in a stated order.
pub fn top_targets_sql(series: usize) -> String {
    let keys = vec!["?"; series.max(2)].join(", ");
    format!(
        "SELECT site, route, device, metric, attributed, \
           tupleElement(top, 2) AS top_target, toUInt64(tupleElement(top, 1)) AS top_samples, \
           tupleElement(top, 3) AS top_interaction_type, tupleElement(top, 4) AS top_script_url \
         FROM ( \
           SELECT site, route, device, metric, toUInt64(sum(n_t)) AS attributed, \
             arrayElement(arraySort(x -> (-x.1, x.2), groupArray((n_t, target, top_type, top_script))), 1) AS top \
           FROM ( \
             SELECT site, route, device, metric, target, \
               sumIf(c, kind = 'type') AS n_t, \
               tupleElement(arrayElement(arraySort(x -> (-x.1, x.2), \
                 groupArrayIf((c, attr), kind = 'type' AND attr != '')), 1), 2) AS top_type, \
               tupleElement(arrayElement(arraySort(x -> (-x.1, x.2), \
                 groupArrayIf((c, attr), kind = 'script' AND attr != '')), 1), 2) AS top_script \
             FROM ( \
               SELECT site, route, device, metric, target, \
                 arrayJoin(if(metric = 'INP', ['type', 'script'], ['type'])) AS kind, \
                 if(kind = 'type', interaction_type, script_url) AS attr, \
                 count() AS c \
               FROM vitals_raw FINAL \
               WHERE received_at >= toDateTime(?) AND received_at < toDateTime(?) \
                 AND target != '' AND target != 'other' \
                 AND (site, route, device, metric) IN ({keys}) \
               GROUP BY site, route, device, metric, target, kind, attr \
             ) \
             GROUP BY site, route, device, metric, target \
           ) \
           GROUP BY site, route, device, metric \
         ) \
         ORDER BY site, route, device, metric"
    )
}

/// The top target of each of `series` among the samples received in `[from, to)`: at most one row a
/// series (none for a series whose samples name no target). One request, within `timeout`.
pub async fn top_targets(
    client: &clickhouse::Client,
    series: &[Series],
    from: u32,
    to: u32,
    timeout: Duration,
) -> Result<Vec<TopTarget>, StoreError> {
    if series.is_empty() {
        return Ok(Vec::new());
    }
    let sql = top_targets_sql(series.len());
    let mut query = client.query(&sql).bind(from).bind(to);
    for (site, route, device, metric) in
        series.iter().chain(series.iter()).take(series.len().max(2))
    {
        query = query.bind((site, route, device, metric));
    }
    // A few hundred series fit ClickHouse's default 256 KiB query; only a bigger alert cap needs more
    // (not asked otherwise: a user with readonly = 1 may not change settings).
    let size = sql.len() + series.len() * 200;
    if size > 200 * 1024 {
        query = query.with_setting("max_query_size", (size + 64 * 1024).to_string());
    }
    request(timeout, query.fetch_all::<TopTarget>()).await
}

/// Adds the annotations of `tops` (see the module header) to the firing p75 alerts they concern.
pub fn annotate(alerts: &mut [Alert], tops: &[TopTarget]) {
    let by_series: HashMap<(&str, &str, &str, &str), &TopTarget> = tops
        .iter()
        .filter(|t| !t.target.is_empty() && t.attributed > 0)
        .map(|t| {
            (
                (
                    t.site.as_str(),
                    t.route.as_str(),
                    t.device.as_str(),
                    t.metric.as_str(),
                ),
                t,
            )
        })
        .collect();
    for alert in alerts.iter_mut() {
        if alert.state != AlertState::Firing
            || ![LCP_P75_POOR, INP_P75_POOR, CLS_P75_POOR].contains(&alert.name())
        {
            continue;
        }
        let key = (
            alert.label("site"),
            alert.label("route"),
            alert.label("device"),
            alert.label("metric"),
        );
        let Some(top) = by_series.get(&key).copied() else {
            continue;
        };
        let mut add = |key: &str, value: String| {
            alert.annotations.insert(key.to_string(), value);
        };
        add(
            "top_target",
            bounded(&top.target, MAX_ATTRIBUTION_TARGET_LEN),
        );
        add(
            "top_target_share",
            format!("{:.2}", top.samples as f64 / top.attributed as f64),
        );
        if !top.interaction_type.is_empty() {
            add(
                "top_target_interaction_type",
                bounded(&top.interaction_type, 32),
            );
        }
        if !top.script_url.is_empty() {
            add(
                "top_target_script_url",
                bounded(&top.script_url, MAX_ATTRIBUTION_URL_LEN),
            );
        }
    }
}

/// `value` without control characters, cut to `max` characters.
fn bounded(value: &str, max: usize) -> String {
    value
        .chars()
        .filter(|c| !c.is_control())
        .take(max)
        .collect()
}

/// The `report` annotation of a p75 alert: the command writing the site's report of the last day
/// (`rum report` has no route filter; its worst routes and their top elements include this one).
/// None for a site name that is not one the ingest accepts (never for stored data).
pub fn report_command(site: &str) -> Option<String> {
    rum_schemas::limits::is_valid_site(site)
        .then(|| format!("rum report --site={site} --since 1d --out {site}-report.html"))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn alert(name: &str, route: &str, state: AlertState) -> Alert {
        Alert {
            labels: BTreeMap::from([
                ("alertname".to_string(), name.to_string()),
                ("site".into(), "shop".into()),
                ("route".into(), route.into()),
                ("device".into(), "mobile".into()),
                ("metric".into(), "INP".into()),
            ]),
            annotations: BTreeMap::new(),
            starts_at: 0,
            ends_at: 0,
            state,
        }
    }

    fn top(route: &str, target: &str, samples: u64, attributed: u64) -> TopTarget {
        TopTarget {
            site: "shop".into(),
            route: route.into(),
            device: "mobile".into(),
            metric: "INP".into(),
            attributed,
            target: target.into(),
            samples,
            interaction_type: String::new(),
            script_url: String::new(),
        }
    }

    #[test]
    fn annotates_only_firing_p75_alerts_of_the_same_series() {
        let mut alerts = vec![
            alert(INP_P75_POOR, "cart", AlertState::Firing),
            alert(INP_P75_POOR, "cart", AlertState::Resolved),
            alert(INP_P75_POOR, "home", AlertState::Firing),
            alert(crate::BEACONS_STOPPED, "cart", AlertState::Firing),
        ];
        assert_eq!(
            firing_series(&alerts),
            [
                (
                    "shop".to_string(),
                    "cart".to_string(),
                    "mobile".to_string(),
                    "INP".to_string()
                ),
                ("shop".into(), "home".into(), "mobile".into(), "INP".into())
            ]
        );
        let tops = [TopTarget {
            interaction_type: "pointer".into(),
            script_url: "https://shop.example/app.js".into(),
            ..top("cart", "button#buy", 31, 50)
        }];
        annotate(&mut alerts, &tops);
        assert_eq!(
            alerts[0].annotations,
            BTreeMap::from([
                ("top_target".to_string(), "button#buy".to_string()),
                ("top_target_share".into(), "0.62".into()),
                ("top_target_interaction_type".into(), "pointer".into()),
                (
                    "top_target_script_url".into(),
                    "https://shop.example/app.js".into()
                ),
            ])
        );
        for a in &alerts[1..] {
            assert!(a.annotations.is_empty(), "{a:?}");
        }
    }

    #[test]
    fn values_are_bounded_and_without_control_characters() {
        let mut alerts = vec![alert(INP_P75_POOR, "cart", AlertState::Firing)];
        let long = format!("div\n#x{}", "é".repeat(1000));
        annotate(&mut alerts, &[top("cart", &long, 1, 3)]);
        let got = &alerts[0].annotations["top_target"];
        assert_eq!(got.chars().count(), MAX_ATTRIBUTION_TARGET_LEN);
        assert!(got.starts_with("div#xé"), "{got}");
        assert_eq!(alerts[0].annotations["top_target_share"], "0.33");
    }

    #[test]
    fn the_report_command_names_the_site() {
        assert_eq!(
            report_command("shop").as_deref(),
            Some("rum report --site=shop --since 1d --out shop-report.html")
        );
        assert_eq!(report_command("a b;rm"), None);
    }

    #[test]
    fn the_query_has_a_placeholder_for_each_series_and_never_one_tuple_alone() {
        assert_eq!(top_targets_sql(1).matches('?').count(), 4);
        assert_eq!(top_targets_sql(2).matches('?').count(), 4);
        assert_eq!(top_targets_sql(500).matches('?').count(), 502);
    }
}
