//! The analyst queries of `clickhouse/queries/`, embedded, and a typed call for p75.
//!
//! Each file starts with a comment saying what it answers and its `?` placeholders in order; the
//! text runs as is in `clickhouse-client --database rum` once the placeholders are replaced by
//! literals, on ClickHouse 18.16 and on current releases. From Rust, [`AnalystQuery::sql`] gives
//! the text without its comments, ready for the `clickhouse` crate's client-side `?` binding.

use clickhouse::Row;
use serde::{Deserialize, Serialize};

use crate::StorageError;

/// One analyst query file.
#[derive(Debug, Clone, Copy)]
pub struct AnalystQuery {
    /// The file name without `.sql`.
    pub name: &'static str,
    /// The file's text, comments included.
    pub text: &'static str,
}

impl AnalystQuery {
    /// The text without its whole-line `--` comments (which may contain `?`), trimmed.
    pub fn sql(&self) -> String {
        strip_comments(self.text)
    }

    /// How many `?` placeholders the query takes.
    pub fn placeholders(&self) -> usize {
        self.sql().matches('?').count()
    }
}

/// p75, samples and rating shares per route, device and metric of a site over a window.
/// Placeholders: site, window start, window end.
pub const P75_BY_ROUTE_DEVICE: AnalystQuery = AnalystQuery {
    name: "p75_by_route_device",
    text: include_str!("../queries/p75_by_route_device.sql"),
};

/// The worst route/device pairs by p75 for a metric.
/// Placeholders: site, metric, window start, window end, min samples, limit.
pub const WORST_ROUTES: AnalystQuery = AnalystQuery {
    name: "worst_routes",
    text: include_str!("../queries/worst_routes.sql"),
};

/// Rating shares, sample counts and p75 per metric and device of a site.
/// Placeholders: site, window start, window end.
pub const RATING_SHARES: AnalystQuery = AnalystQuery {
    name: "rating_shares",
    text: include_str!("../queries/rating_shares.sql"),
};

/// p75 per hour and device of one metric (optionally one route).
/// Placeholders: site, metric, route ('' for all), the same route again, window start, window end.
pub const P75_TREND_HOURLY: AnalystQuery = AnalystQuery {
    name: "p75_trend_hourly",
    text: include_str!("../queries/p75_trend_hourly.sql"),
};

/// Every query file. `queries_list_matches_the_directory` keeps it in step with the files.
pub const QUERIES: &[AnalystQuery] = &[
    P75_BY_ROUTE_DEVICE,
    WORST_ROUTES,
    RATING_SHARES,
    P75_TREND_HOURLY,
];

/// Drops whole-line `--` comments and blank lines.
fn strip_comments(text: &str) -> String {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A row of `rating_shares.sql`, in its column order: per metric and device.
#[derive(Debug, Clone, PartialEq, Row, Serialize, Deserialize)]
pub struct RatingSharesRow {
    /// The metric name.
    pub metric: String,
    /// The device class.
    pub device: String,
    /// Samples in the window.
    pub samples: u64,
    /// Samples re-weighted by their sample rate: the page loads they stand for.
    pub estimated_page_loads: f64,
    /// The share (0..1) of samples rated good.
    pub good_share: f64,
    /// The share (0..1) of samples rated needs-improvement.
    pub needs_improvement_share: f64,
    /// The share (0..1) of samples rated poor.
    pub poor_share: f64,
    /// The p75 from the merged sketches.
    pub p75: f64,
}

/// A row of [`p75_by_route_device`] (and of `p75_by_route_device.sql`, in the same column order).
#[derive(Debug, Clone, PartialEq, Row, Serialize, Deserialize)]
pub struct P75Row {
    /// The site.
    pub site: String,
    /// The route slug.
    pub route: String,
    /// The device class.
    pub device: String,
    /// The metric name.
    pub metric: String,
    /// The p75 from the merged sketches: milliseconds, unitless for CLS.
    pub p75: f64,
    /// How many samples the p75 and the shares are taken over.
    pub samples: u64,
    /// The share (0..1) of samples rated good.
    pub good_share: f64,
    /// The share (0..1) of samples rated needs-improvement.
    pub needs_improvement_share: f64,
    /// The share (0..1) of samples rated poor.
    pub poor_share: f64,
}

/// p75, sample count and rating shares per route, device and metric of `site`, over the minutes
/// starting in `[since, until)` (unix seconds), optionally for one route and/or one device only.
/// Rows are ordered by route, device and metric.
pub async fn p75_by_route_device(
    client: &clickhouse::Client,
    site: &str,
    route: Option<&str>,
    device: Option<&str>,
    since: u32,
    until: u32,
) -> Result<Vec<P75Row>, StorageError> {
    // The file's query is kept whole (the file is the reference); the filters wrap it.
    let sql = format!(
        "SELECT site, route, device, metric, p75, samples, good_share, needs_improvement_share, poor_share \
         FROM ({}) WHERE (? = '' OR route = ?) AND (? = '' OR device = ?) \
         ORDER BY site, route, device, metric",
        P75_BY_ROUTE_DEVICE.sql()
    );
    let rows = by_route_device(client.query(&sql), site, route, device, since, until)
        .fetch_all::<P75Row>()
        .await?;
    Ok(rows)
}

/// Binds the placeholders the per route and device queries share: site, window start, window end,
/// route ('' for all) twice, device ('' for all) twice.
fn by_route_device(
    query: clickhouse::query::Query,
    site: &str,
    route: Option<&str>,
    device: Option<&str>,
    since: u32,
    until: u32,
) -> clickhouse::query::Query {
    let route = route.unwrap_or("");
    let device = device.unwrap_or("");
    query
        .bind(site)
        .bind(since)
        .bind(until)
        .bind(route)
        .bind(route)
        .bind(device)
        .bind(device)
}

/// The representative value of the bucket at 1-based index `idx` of the merged sketch `sk`: the
/// expression of the analyst queries (`2 * GAMMA^k / (GAMMA + 1)`, 0 for the zero bucket).
fn bucket_value_sql(idx: &str) -> String {
    use crate::sketch::{GAMMA_LITERAL, ZERO_BUCKET};
    format!(
        "toFloat64(if((sk.1)[{idx}] = {ZERO_BUCKET}, 0, 2 * pow({GAMMA_LITERAL}, (sk.1)[{idx}]) / ({GAMMA_LITERAL} + 1)))"
    )
}

/// The query of [`P75Row::with_percentiles`]: the columns of `p75_by_route_device.sql` (p75 with the
/// file's expression) and `percentiles`, an `Array(Float64)` holding the nearest-rank `p`-th percentile
/// of each `p` of `percentiles`, in that order. Placeholders: site, window start, window end, route
/// ('' for all), the same route, device ('' for all), the same device.
///
/// The `p`-th percentile is read like p75: the first bucket whose cumulative count `c` reaches
/// `p / 100 * n`, written `c * 100 >= p * n` in integers, so that the rank is exactly
/// `ceil(p * n / 100)` (`0.9 * n` in floating point can land just above an integer and take the next
/// rank). For p75 both forms agree (0.75 is exact in binary). As in `alerts`' `step_rows_sql`, the
/// bucket values are taken a level above the GROUP BY: over a cluster's `Distributed` `vitals_1m`,
/// ClickHouse 18.16 sends the grouping level to the shards as text and prints `(sk.1)[idx]` as
/// `sk.1[idx]`, which the shards cannot parse.
fn percentiles_sql(percentiles: &[u8]) -> String {
    let mut idx = String::new();
    let mut values = Vec::new();
    for p in percentiles {
        assert!((1..=99).contains(p), "percentile {p} is not in 1..=99");
        idx.push_str(&format!(
            ", arrayFirstIndex(c -> c * 100 >= {p} * n, arrayCumSum(sk.2)) AS idx_{p}"
        ));
        values.push(bucket_value_sql(&format!("idx_{p}")));
    }
    let percentiles = if values.is_empty() {
        "emptyArrayFloat64()".to_string()
    } else {
        format!("[{}]", values.join(", "))
    };
    format!(
        "SELECT site, route, device, metric, {p75} AS p75, toUInt64(n) AS samples, \
           toFloat64(n_good / n) AS good_share, \
           toFloat64(n_needs_improvement / n) AS needs_improvement_share, \
           toFloat64(n_poor / n) AS poor_share, \
           {percentiles} AS percentiles \
         FROM ( \
           SELECT site, route, device, metric, \
             countMerge(samples) AS n, \
             sumMerge(good) AS n_good, \
             sumMerge(needs_improvement) AS n_needs_improvement, \
             sumMerge(poor) AS n_poor, \
             sumMapMerge(sketch) AS sk, \
             arrayFirstIndex(c -> c >= 0.75 * n, arrayCumSum(sk.2)) AS idx{idx} \
           FROM vitals_1m \
           WHERE site = ? AND minute >= toDateTime(?) AND minute < toDateTime(?) \
             AND (? = '' OR route = ?) AND (? = '' OR device = ?) \
           GROUP BY site, route, device, metric \
         ) \
         ORDER BY site, route, device, metric",
        p75 = bucket_value_sql("idx"),
    )
}

/// A row of [`percentiles_sql`], in its column order.
#[derive(Row, Deserialize)]
struct PercentilesRow {
    site: String,
    route: String,
    device: String,
    metric: String,
    p75: f64,
    samples: u64,
    good_share: f64,
    needs_improvement_share: f64,
    poor_share: f64,
    percentiles: Vec<f64>,
}

impl P75Row {
    /// [`p75_by_route_device`] with more percentiles of the same merged sketches: each row comes with
    /// the nearest-rank `p`-th percentile (the `ceil(p * n / 100)`-th smallest sample, within 0.5%) of
    /// each `p` of `percentiles`, in that order. The sketch holds the samples unweighted, so these
    /// percentiles are of the samples, not re-weighted by their sample rate.
    ///
    /// Panics if a percentile is not in `1..=99` (callers validate their input).
    #[allow(clippy::too_many_arguments)]
    pub async fn with_percentiles(
        client: &clickhouse::Client,
        site: &str,
        route: Option<&str>,
        device: Option<&str>,
        since: u32,
        until: u32,
        percentiles: &[u8],
    ) -> Result<Vec<(P75Row, Vec<f64>)>, StorageError> {
        let sql = percentiles_sql(percentiles);
        let rows = by_route_device(client.query(&sql), site, route, device, since, until)
            .fetch_all::<PercentilesRow>()
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| {
                (
                    P75Row {
                        site: r.site,
                        route: r.route,
                        device: r.device,
                        metric: r.metric,
                        p75: r.p75,
                        samples: r.samples,
                        good_share: r.good_share,
                        needs_improvement_share: r.needs_improvement_share,
                        poor_share: r.poor_share,
                    },
                    r.percentiles,
                )
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_list_matches_the_directory() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/queries");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        files.sort();
        let mut listed: Vec<String> = QUERIES.iter().map(|q| format!("{}.sql", q.name)).collect();
        listed.sort();
        assert_eq!(
            files, listed,
            "every file in clickhouse/queries/ is listed in QUERIES"
        );
    }

    #[test]
    fn every_query_documents_its_placeholders_and_avoids_new_syntax() {
        for q in QUERIES {
            assert!(
                q.text.starts_with("-- "),
                "{}: starts with a header comment",
                q.name
            );
            let header = q.text.lines().take_while(|l| l.starts_with("--"));
            let documented = header
                .filter(|l| {
                    let l = l.trim_start_matches('-').trim_start();
                    l.split_once(". ").is_some_and(|(n, _)| {
                        !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())
                    })
                })
                .count();
            assert_eq!(
                documented,
                q.placeholders(),
                "{}: one numbered header line per ?",
                q.name
            );
            let sql = q.sql();
            assert!(
                !sql.contains("--"),
                "{}: comments only on whole lines",
                q.name
            );
            assert!(!sql.contains(';'), "{}: one statement, no `;`", q.name);
            let upper = sql.to_ascii_uppercase();
            for banned in [
                "WITH ",
                " OVER",
                "DATETIME64",
                "MAP(",
                "TOSTARTOFINTERVAL",
                "JSONEXTRACT",
                "FORMAT ",
            ] {
                assert!(
                    !upper.contains(banned),
                    "{}: `{banned}` does not run on 18.16",
                    q.name
                );
            }
        }
    }

    #[test]
    fn percentiles_sql_reads_each_rank_above_the_group_by() {
        let sql = percentiles_sql(&[50, 99]);
        assert_eq!(sql.matches('?').count(), 7, "{sql}");
        let (outer, inner) = sql.split_once("FROM (").unwrap();
        // Bucket values (`(sk.1)[...]`) only outside the grouping level, sent to shards as text.
        assert!(!inner.contains("(sk.1)"), "{inner}");
        for p in ["50", "99"] {
            assert!(
                inner.contains(&format!(
                    "arrayFirstIndex(c -> c * 100 >= {p} * n, arrayCumSum(sk.2)) AS idx_{p}"
                )),
                "{inner}"
            );
            assert!(
                outer.contains(&format!("pow(1.01005, (sk.1)[idx_{p}])")),
                "{outer}"
            );
        }
        // p75 with the file's own expressions.
        let file = P75_BY_ROUTE_DEVICE.sql();
        for expr in [
            "arrayFirstIndex(c -> c >= 0.75 * n, arrayCumSum(sk.2)) AS idx",
            "if((sk.1)[idx] = -32768, 0, 2 * pow(1.01005, (sk.1)[idx]) / (1.01005 + 1))",
        ] {
            assert!(file.contains(expr) && sql.contains(expr), "{expr}");
        }
        assert!(outer.find("idx_50").unwrap() < outer.find("idx_99").unwrap());
        assert!(percentiles_sql(&[]).contains("emptyArrayFloat64() AS percentiles"));
    }

    #[test]
    #[should_panic(expected = "percentile 100 is not in 1..=99")]
    fn percentiles_sql_refuses_100() {
        percentiles_sql(&[50, 100]);
    }

    #[test]
    fn strips_comments_only() {
        assert_eq!(
            strip_comments("-- a ?\n-- b\nSELECT 1\n\n  -- c ?\nFROM t\n"),
            "SELECT 1\nFROM t"
        );
        assert_eq!(P75_BY_ROUTE_DEVICE.placeholders(), 3);
        assert_eq!(WORST_ROUTES.placeholders(), 6);
        assert_eq!(RATING_SHARES.placeholders(), 3);
        assert_eq!(P75_TREND_HOURLY.placeholders(), 6);
    }
}
