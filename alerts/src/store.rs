//! What the evaluator reads from ClickHouse: p75 and sample counts per step of `vitals_1m`, and
//! sample counts per site and minute for the beacons-stopped check. Two queries per evaluation.

use clickhouse::Row;
use rum_clickhouse::{GAMMA_LITERAL, ZERO_BUCKET};
use serde::Deserialize;

use crate::rules::Rules;

/// p75 and samples of one site, route, device and metric over one step.
#[derive(Debug, Clone, PartialEq, Row, Deserialize)]
pub struct StepStat {
    /// The site.
    pub site: String,
    /// The route slug.
    pub route: String,
    /// The device class.
    pub device: String,
    /// The metric name.
    pub metric: String,
    /// Unix seconds at which the step starts (a multiple of the step).
    pub step_start: u32,
    /// The p75 from the step's merged sketches.
    pub p75: f64,
    /// The samples of the step.
    pub samples: u64,
}

/// Samples of one site in one minute (any metric).
#[derive(Debug, Clone, PartialEq, Row, Deserialize)]
pub struct SiteMinute {
    /// The site.
    pub site: String,
    /// Unix seconds of the minute.
    pub minute: u32,
    /// Samples stored for that minute.
    pub samples: u64,
}

/// Everything one evaluation looks at; the evaluator is a pure function of this and `now`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StoredData {
    /// Per-step p75 of the enabled metrics, over the lookback.
    pub steps: Vec<StepStat>,
    /// Per-minute samples per site, over the lookback and the same span a day earlier.
    pub site_minutes: Vec<SiteMinute>,
}

/// The p75 expression over `sk = sumMapMerge(sketch)` and `idx`, the same text as the analyst
/// queries (pinned by a test against `p75_by_route_device.sql`).
pub fn p75_sql() -> String {
    format!(
        "if((sk.1)[idx] = {ZERO_BUCKET}, 0, 2 * pow({GAMMA_LITERAL}, (sk.1)[idx]) / ({GAMMA_LITERAL} + 1))"
    )
}

/// The per-step query. Placeholders: metrics (array), window start, window end (unix seconds).
pub fn steps_sql(step_secs: u32) -> String {
    format!(
        "SELECT site, route, device, metric, step_start, toFloat64({p75}) AS p75, toUInt64(n) AS samples \
         FROM ( \
           SELECT site, route, device, metric, \
             toUInt32(intDiv(toUInt32(minute), {step_secs}) * {step_secs}) AS step_start, \
             countMerge(samples) AS n, \
             sumMapMerge(sketch) AS sk, \
             arrayFirstIndex(c -> c >= 0.75 * n, arrayCumSum(sk.2)) AS idx \
           FROM vitals_1m \
           WHERE has(?, metric) AND minute >= toDateTime(?) AND minute < toDateTime(?) \
           GROUP BY site, route, device, metric, step_start \
         ) \
         ORDER BY site, route, device, metric, step_start",
        p75 = p75_sql()
    )
}

/// The per-site, per-minute query. Placeholders: two windows (start, end) in unix seconds.
pub const SITE_MINUTES_SQL: &str = "SELECT site, toUInt32(minute) AS at, toUInt64(countMerge(samples)) AS n \
     FROM vitals_1m \
     WHERE (minute >= toDateTime(?) AND minute < toDateTime(?)) OR (minute >= toDateTime(?) AND minute < toDateTime(?)) \
     GROUP BY site, minute \
     ORDER BY site, at";

/// The spans one evaluation at `now` (and the one an interval before it) needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spans {
    /// The end of the last complete step at `now` (exclusive).
    pub end: u32,
    /// The start of the data read (the lookback).
    pub start: u32,
}

/// One day, the offset of the beacons-stopped comparison.
pub const DAY_SECS: u32 = 86_400;

/// How far back the evaluation at `now` reads: the window, one interval (for "was firing an
/// interval ago") and two hours more to find where a bad period started.
pub fn spans(rules: &Rules, now: u32, interval_secs: u32) -> Spans {
    let step = rules.step_minutes * 60;
    let end = now - now % step;
    let window = rules.for_minutes.max(rules.beacons_stopped.for_minutes) * 60;
    let lookback = window + interval_secs.div_ceil(step) * step + 2 * 3600;
    Spans {
        end,
        start: end.saturating_sub(lookback),
    }
}

/// Reads what the evaluation at `now` needs.
pub async fn fetch(
    client: &clickhouse::Client,
    rules: &Rules,
    now: u32,
    interval_secs: u32,
) -> Result<StoredData, clickhouse::error::Error> {
    let Spans { start, end } = spans(rules, now, interval_secs);
    let metrics: Vec<&str> = rules
        .metric_rules()
        .iter()
        .map(|(_, metric, _)| metric.as_str())
        .collect();
    let steps = if metrics.is_empty() {
        Vec::new()
    } else {
        client
            .query(&steps_sql(rules.step_minutes * 60))
            .bind(metrics)
            .bind(start)
            .bind(end)
            .fetch_all::<StepStat>()
            .await?
    };
    let site_minutes = if rules.beacons_stopped.enabled {
        client
            .query(SITE_MINUTES_SQL)
            .bind(start.saturating_sub(DAY_SECS))
            .bind(end.saturating_sub(DAY_SECS))
            .bind(start)
            .bind(end)
            .fetch_all::<SiteMinute>()
            .await?
    } else {
        Vec::new()
    };
    Ok(StoredData {
        steps,
        site_minutes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn p75_expression_is_the_analyst_queries_one() {
        let text = rum_clickhouse::P75_BY_ROUTE_DEVICE.text;
        assert!(text.contains(&p75_sql()), "{}", p75_sql());
    }

    #[test]
    fn spans_end_at_the_last_complete_step() {
        let rules = Rules::default();
        let s = spans(&rules, 1_000_000_123, 60);
        assert_eq!(s.end % 300, 0);
        assert!(s.end <= 1_000_000_123 && 1_000_000_123 - s.end < 300);
        assert!(s.end - s.start >= 30 * 60 + 300);
    }
}
