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

/// The most frequent LCP elements per route, with their p75 and mean subparts.
/// Placeholders: site, window start, window end, elements per route.
pub const TOP_LCP_ELEMENTS: AnalystQuery = AnalystQuery {
    name: "top_lcp_elements",
    text: include_str!("../queries/top_lcp_elements.sql"),
};

/// The most frequent INP targets per route, with their p75, mean phases and longest script.
/// Placeholders: site, window start, window end, targets per route.
pub const TOP_INP_TARGETS: AnalystQuery = AnalystQuery {
    name: "top_inp_targets",
    text: include_str!("../queries/top_inp_targets.sql"),
};

/// p75 (sample-rate weighted and not) of one metric by browser, release, RTT bucket, navigation
/// type or device. Placeholders: dimension, site, metric, window start, window end.
pub const P75_BY_DIMENSION: AnalystQuery = AnalystQuery {
    name: "p75_by_dimension",
    text: include_str!("../queries/p75_by_dimension.sql"),
};

/// Every query file. `queries_list_matches_the_directory` keeps it in step with the files.
pub const QUERIES: &[AnalystQuery] = &[
    P75_BY_ROUTE_DEVICE,
    WORST_ROUTES,
    RATING_SHARES,
    P75_TREND_HOURLY,
    TOP_LCP_ELEMENTS,
    TOP_INP_TARGETS,
    P75_BY_DIMENSION,
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

/// How the samples of a percentile or a share count (`rum query`, and `alerts.weighting`:
/// `sample_rate`, the default, or `unweighted`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Weighting {
    /// Each sample weighs `1 / sample_rate`: the page loads it stands for. A site that samples its
    /// pages at different rates (per route, per release, over time) gets an unbiased estimate. Over
    /// `vitals_1m`, read from the weighted sketch and rating sums of migration 005; a group with none
    /// of them (only rows written before it) falls back to its unweighted samples.
    #[default]
    SampleRate,
    /// Each sample counts once: the raw view of what was collected.
    Unweighted,
}

impl Weighting {
    /// The SQL of a merged sketch's bucket keys and counts (`Array(Float64)`), over the columns `sk`
    /// (`sumMapMerge(sketch)`) and `wsk` (`sumMapMerge(weighted_sketch)`): weighted, the weighted
    /// sketch, or the unweighted one for a group without any (only rows written before migration 005).
    pub fn buckets_sql(self) -> (&'static str, &'static str) {
        match self {
            Weighting::SampleRate => (
                "if(arraySum(wsk.2) > 0, wsk.1, sk.1)",
                "if(arraySum(wsk.2) > 0, wsk.2, arrayMap(c -> toFloat64(c), sk.2))",
            ),
            Weighting::Unweighted => ("sk.1", "arrayMap(c -> toFloat64(c), sk.2)"),
        }
    }

    /// The SQL of the total a rank is compared with, `total` as it is: weighted sums are not exact
    /// in binary, so a rank within `sketch::WEIGHT_TIE_TOLERANCE` of them counts as reached;
    /// counts are exact, and keep the exact rank.
    pub fn rank_total_sql(self, total: &str) -> String {
        match self {
            Weighting::SampleRate => {
                format!("{total} * {}", 1.0 - crate::sketch::WEIGHT_TIE_TOLERANCE)
            }
            Weighting::Unweighted => total.to_string(),
        }
    }
}

/// The outer level of every percentile query: over `inner`, a grouping level with the columns
/// `keys` and `n` (samples), `n_good`, `n_needs_improvement`, `n_poor`, `w_good`,
/// `w_needs_improvement`, `w_poor` (the weighted rating sums), `sk` (the sketch, UInt64 counts) and
/// `wsk` (the weighted sketch), it gives `keys`, `p75`, `samples`, the three rating shares and
/// `percentiles`, an `Array(Float64)` with the nearest-rank `p`-th percentile of each `p` of
/// `percentiles`, in that order.
///
/// The `p`-th percentile is the first bucket whose cumulative count `c` reaches `p / 100` of the
/// total, written `c * 100 >= p * total`: with integer counts the rank is then exactly
/// `ceil(p * n / 100)` (`0.9 * n` in floating point can land just above an integer and take the next
/// rank). Weighted, the counts are the weights and the rank the weighted nearest rank. The buckets'
/// values are taken above the GROUP BY: over a cluster's `Distributed` `vitals_1m`, ClickHouse 18.16
/// sends the grouping level to the shards as text and prints `(sk.1)[idx]` as `sk.1[idx]`, which the
/// shards cannot parse (as in `alerts`' `step_rows_sql`).
fn stats_sql(keys: &str, inner: &str, percentiles: &[u8], weighting: Weighting) -> String {
    use crate::sketch::{GAMMA_LITERAL, ZERO_BUCKET};
    let value = |p: u8| {
        format!(
            "toFloat64(if(bk[idx_{p}] = {ZERO_BUCKET}, 0, 2 * pow({GAMMA_LITERAL}, bk[idx_{p}]) / ({GAMMA_LITERAL} + 1)))"
        )
    };
    let mut ranks: Vec<u8> = percentiles.to_vec();
    ranks.push(75);
    ranks.sort_unstable();
    ranks.dedup();
    let total = weighting.rank_total_sql("total");
    let mut idx = String::new();
    for &p in &ranks {
        assert!((1..=99).contains(&p), "percentile {p} is not in 1..=99");
        // In the level that defines `total`: 18.16 does not see a column used only inside a lambda
        // as needed from the level below, and drops it ("Unknown identifier").
        idx.push_str(&format!(
            ", arrayFirstIndex(c -> c * 100 >= {p} * {total}, arrayCumSum(bc)) AS idx_{p}"
        ));
    }
    let values: Vec<String> = percentiles.iter().map(|&p| value(p)).collect();
    let percentiles = if values.is_empty() {
        "emptyArrayFloat64()".to_string()
    } else {
        format!("[{}]", values.join(", "))
    };
    let (bk, bc) = weighting.buckets_sql();
    let shares = match weighting {
        Weighting::SampleRate => {
            "if(w_good + w_needs_improvement + w_poor > 0, \
               [w_good, w_needs_improvement, w_poor], \
               [toFloat64(n_good), toFloat64(n_needs_improvement), toFloat64(n_poor)])"
        }
        Weighting::Unweighted => {
            "[toFloat64(n_good), toFloat64(n_needs_improvement), toFloat64(n_poor)]"
        }
    };
    format!(
        "SELECT {keys}, {p75} AS p75, toUInt64(n) AS samples, \
           toFloat64(rs[1] / arraySum(rs)) AS good_share, \
           toFloat64(rs[2] / arraySum(rs)) AS needs_improvement_share, \
           toFloat64(rs[3] / arraySum(rs)) AS poor_share, \
           {percentiles} AS percentiles \
         FROM ( \
           SELECT {keys}, n, {bk} AS bk, {bc} AS bc, arraySum(bc) AS total, {shares} AS rs{idx} \
           FROM ({inner}) \
         ) \
         ORDER BY {keys}",
        p75 = value(75),
    )
}

/// The grouping level of [`stats_sql`] over `vitals_1m`, per site, route, device and metric.
/// Placeholders: site, window start, window end, route ('' for all), the same route, device ('' for
/// all), the same device.
const ROLLUP_STATS_INNER: &str = "SELECT site, route, device, metric, \
     countMerge(samples) AS n, \
     sumMerge(good) AS n_good, \
     sumMerge(needs_improvement) AS n_needs_improvement, \
     sumMerge(poor) AS n_poor, \
     sumMerge(weighted_good) AS w_good, \
     sumMerge(weighted_needs_improvement) AS w_needs_improvement, \
     sumMerge(weighted_poor) AS w_poor, \
     sumMapMerge(sketch) AS sk, \
     sumMapMerge(weighted_sketch) AS wsk \
   FROM vitals_1m \
   WHERE site = ? AND minute >= toDateTime(?) AND minute < toDateTime(?) \
     AND (? = '' OR route = ?) AND (? = '' OR device = ?) \
   GROUP BY site, route, device, metric";

/// The query of [`P75Row::with_percentiles`].
fn percentiles_sql(percentiles: &[u8], weighting: Weighting) -> String {
    stats_sql(
        "site, route, device, metric",
        ROLLUP_STATS_INNER,
        percentiles,
        weighting,
    )
}

/// A dimension of the page loads that `vitals_raw` holds and `vitals_1m` does not: percentiles by it
/// are read from the raw rows ([`DimensionRow::with_percentiles`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dimension {
    /// The browser family (`chrome`, `safari`, ...).
    Browser,
    /// The site's release string.
    Release,
    /// The round-trip time's bucket.
    Rtt,
    /// The navigation type (`navigate`, `reload`, `back-forward`, `soft-navigation`, ...).
    NavType,
}

impl Dimension {
    /// Every dimension, in the order of [`Dimension::name`]s documented to users.
    pub const ALL: [Dimension; 4] = [
        Dimension::Browser,
        Dimension::Release,
        Dimension::Rtt,
        Dimension::NavType,
    ];

    /// The column of `vitals_raw` (and the name users give).
    pub fn name(self) -> &'static str {
        match self {
            Dimension::Browser => "browser",
            Dimension::Release => "release",
            Dimension::Rtt => "rtt",
            Dimension::NavType => "nav_type",
        }
    }

    /// The dimension named `name`.
    pub fn parse(name: &str) -> Option<Dimension> {
        Dimension::ALL.into_iter().find(|d| d.name() == name)
    }
}

/// The query of [`DimensionRow::with_percentiles`]: [`stats_sql`] over the raw rows grouped by site,
/// the dimension's value and metric, with the sketch of `vitals_1m` built on the fly (the same
/// buckets as `vitals_1m_rollup`). Placeholders as [`ROLLUP_STATS_INNER`].
fn dimension_sql(dimension: Dimension, percentiles: &[u8], weighting: Weighting) -> String {
    let bucket = crate::sketch::bucket_sql("value");
    let inner = format!(
        "SELECT site, dimension_value AS value, metric, count() AS n, \
           countIf(rating = 'good') AS n_good, \
           countIf(rating = 'needs-improvement') AS n_needs_improvement, \
           countIf(rating = 'poor') AS n_poor, \
           sumIf(1 / sample_rate, rating = 'good') AS w_good, \
           sumIf(1 / sample_rate, rating = 'needs-improvement') AS w_needs_improvement, \
           sumIf(1 / sample_rate, rating = 'poor') AS w_poor, \
           sumMap([bucket], [toUInt64(1)]) AS sk, \
           sumMap([bucket], [1 / sample_rate]) AS wsk \
         FROM ( \
           SELECT site, {column} AS dimension_value, metric, rating, sample_rate, {bucket} AS bucket \
           FROM vitals_raw FINAL \
           WHERE site = ? AND received_at >= toDateTime(?) AND received_at < toDateTime(?) \
             AND (? = '' OR route = ?) AND (? = '' OR device = ?) \
         ) \
         GROUP BY site, value, metric",
        column = dimension.name(),
    );
    // A client-chosen dimension (a release string) has as many values as clients send: the
    // MAX_DIMENSION_VALUES with the most samples per metric, in a bounded answer.
    format!(
        "SELECT site, value, metric, p75, samples, good_share, needs_improvement_share, poor_share, \
           percentiles \
         FROM ( \
           SELECT * FROM ({stats}) \
           ORDER BY site, metric, samples DESC, value \
           LIMIT {MAX_DIMENSION_VALUES} BY site, metric \
         ) \
         ORDER BY site, value, metric",
        stats = stats_sql("site, value, metric", &inner, percentiles, weighting)
    )
}

/// The most values of a [`Dimension`] [`DimensionRow::with_percentiles`] answers per metric: those
/// with the most samples.
pub const MAX_DIMENSION_VALUES: usize = 100;

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
    /// [`p75_by_route_device`] with more percentiles of the same merged sketches, weighted as
    /// `weighting` says: each row comes with the nearest-rank `p`-th percentile (unweighted: the
    /// `ceil(p * n / 100)`-th smallest sample, within 0.5%) of each `p` of `percentiles`, in that
    /// order; p75 and the rating shares are weighted the same way.
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
        weighting: Weighting,
    ) -> Result<Vec<(P75Row, Vec<f64>)>, StorageError> {
        let sql = percentiles_sql(percentiles, weighting);
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

/// Percentiles of one value of a [`Dimension`] and one metric: the columns of [`P75Row`] with the
/// dimension's value in place of route and device.
#[derive(Debug, Clone, PartialEq, Row, Serialize, Deserialize)]
pub struct DimensionRow {
    /// The site.
    pub site: String,
    /// The dimension's value (`chrome`, `v1.2.3`, `100-300`, `soft-navigation`, ...).
    pub value: String,
    /// The metric name.
    pub metric: String,
    /// p75: milliseconds, unitless for CLS.
    pub p75: f64,
    /// How many samples.
    pub samples: u64,
    /// The share (0..1) of good samples.
    pub good_share: f64,
    /// The share (0..1) of needs-improvement samples.
    pub needs_improvement_share: f64,
    /// The share (0..1) of poor samples.
    pub poor_share: f64,
    /// The `percentiles` asked, in their order.
    pub percentiles: Vec<f64>,
}

impl DimensionRow {
    /// Percentiles per value of `dimension` and metric of `site` over the samples received in
    /// `[since, until)` (unix seconds), optionally of one route and/or device, weighted as
    /// `weighting` says. Read from `vitals_raw` (a scan of the site's rows in the window; the sketch is
    /// built on the fly, so the percentiles are within 0.5% like those of `vitals_1m`). At most
    /// [`MAX_DIMENSION_VALUES`] values per metric, those with the most samples. Rows by site, value and
    /// metric.
    ///
    /// Panics if a percentile is not in `1..=99` (callers validate their input).
    #[allow(clippy::too_many_arguments)]
    pub async fn with_percentiles(
        client: &clickhouse::Client,
        dimension: Dimension,
        site: &str,
        route: Option<&str>,
        device: Option<&str>,
        since: u32,
        until: u32,
        percentiles: &[u8],
        weighting: Weighting,
    ) -> Result<Vec<DimensionRow>, StorageError> {
        let sql = dimension_sql(dimension, percentiles, weighting);
        Ok(
            by_route_device(client.query(&sql), site, route, device, since, until)
                .fetch_all::<DimensionRow>()
                .await?,
        )
    }
}

/// A row of `top_lcp_elements.sql`, in its column order.
#[derive(Debug, Clone, PartialEq, Row, Serialize, Deserialize)]
pub struct LcpElementRow {
    /// The route slug.
    pub route: String,
    /// The element's CSS selector, as the attribution build gives it (capped per route by the ingest).
    pub target: String,
    /// Samples with this element.
    pub samples: u64,
    /// The page loads they stand for (each sample weighs `1 / sample_rate`).
    pub estimated_page_loads: f64,
    /// Their p75 LCP in ms (exact nearest rank of the samples).
    pub p75: f64,
    /// The element's most frequent resource URL (`''` for a text element).
    pub resource_url: String,
    /// Mean ms from navigation to the first byte.
    pub time_to_first_byte: Option<f64>,
    /// Mean ms from the first byte to the resource's load start.
    pub resource_load_delay: Option<f64>,
    /// Mean ms the resource took to load.
    pub resource_load_duration: Option<f64>,
    /// Mean ms from the resource's load to the element's render.
    pub element_render_delay: Option<f64>,
}

/// A row of `top_inp_targets.sql`, in its column order.
#[derive(Debug, Clone, PartialEq, Row, Serialize, Deserialize)]
pub struct InpTargetRow {
    /// The route slug.
    pub route: String,
    /// The CSS selector of the element interacted with.
    pub target: String,
    /// `pointer`, `keyboard` or `other`.
    pub interaction_type: String,
    /// Samples with this target and type.
    pub samples: u64,
    /// The page loads they stand for.
    pub estimated_page_loads: f64,
    /// Their p75 INP in ms (exact nearest rank of the samples).
    pub p75: f64,
    /// Mean ms from the input to its handlers' start.
    pub input_delay: Option<f64>,
    /// Mean ms the handlers ran.
    pub processing_duration: Option<f64>,
    /// Mean ms from the handlers' end to the next paint.
    pub presentation_delay: Option<f64>,
    /// The most frequent longest script's URL (`''` when none was sent).
    pub script_url: String,
    /// What invoked it.
    pub script_invoker: String,
}

/// `top_lcp_elements.sql`: the `per_route` most frequent LCP elements of each route of `site`,
/// received in `[since, until)` (unix seconds).
pub async fn top_lcp_elements(
    client: &clickhouse::Client,
    site: &str,
    since: u32,
    until: u32,
    per_route: u64,
) -> Result<Vec<LcpElementRow>, StorageError> {
    Ok(client
        .query(&TOP_LCP_ELEMENTS.sql())
        .bind(site)
        .bind(since)
        .bind(until)
        .bind(per_route)
        .fetch_all::<LcpElementRow>()
        .await?)
}

/// `top_inp_targets.sql`: the `per_route` most frequent INP targets of each route of `site`,
/// received in `[since, until)` (unix seconds).
pub async fn top_inp_targets(
    client: &clickhouse::Client,
    site: &str,
    since: u32,
    until: u32,
    per_route: u64,
) -> Result<Vec<InpTargetRow>, StorageError> {
    Ok(client
        .query(&TOP_INP_TARGETS.sql())
        .bind(site)
        .bind(since)
        .bind(until)
        .bind(per_route)
        .fetch_all::<InpTargetRow>()
        .await?)
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
                // A word of its own: `sumMap(` is not `Map(`.
                let found = upper.match_indices(banned).any(|(at, _)| {
                    !upper[..at]
                        .chars()
                        .next_back()
                        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
                });
                assert!(!found, "{}: `{banned}` does not run on 18.16", q.name);
            }
        }
    }

    #[test]
    fn percentiles_sql_reads_each_rank_above_the_group_by() {
        for weighting in [Weighting::SampleRate, Weighting::Unweighted] {
            let sql = percentiles_sql(&[50, 99], weighting);
            assert_eq!(sql.matches('?').count(), 7, "{sql}");
            let (outer, inner) = sql.rsplit_once("FROM (SELECT").unwrap();
            // Bucket values and ranks only outside the grouping level, sent to shards as text.
            assert!(
                !inner.contains("bk[") && !inner.contains("arrayFirstIndex"),
                "{inner}"
            );
            let total = match weighting {
                Weighting::SampleRate => "total * 0.999999999",
                Weighting::Unweighted => "total",
            };
            for p in ["50", "75", "99"] {
                assert!(
                    outer.contains(&format!(
                        "arrayFirstIndex(c -> c * 100 >= {p} * {total}, arrayCumSum(bc)) AS idx_{p}"
                    )),
                    "{outer}"
                );
            }
            assert!(outer.find(">= 50 *").unwrap() < outer.find(">= 99 *").unwrap());
            assert_eq!(
                outer.contains("wsk"),
                weighting == Weighting::SampleRate,
                "{outer}"
            );
        }
        assert!(percentiles_sql(&[], Weighting::Unweighted)
            .contains("emptyArrayFloat64() AS percentiles"));
    }

    #[test]
    fn dimension_sql_groups_the_raw_rows_by_the_column() {
        for d in Dimension::ALL {
            assert_eq!(Dimension::parse(d.name()), Some(d));
            let sql = dimension_sql(d, &[90], Weighting::SampleRate);
            assert!(
                sql.contains(&format!(
                    "SELECT site, {} AS dimension_value, metric",
                    d.name()
                )),
                "{sql}"
            );
            assert!(
                sql.contains("FROM vitals_raw FINAL"),
                "one row per metric id: {sql}"
            );
            assert_eq!(sql.matches('?').count(), 7, "{sql}");
        }
        assert_eq!(Dimension::parse("route"), None);
    }

    #[test]
    #[should_panic(expected = "percentile 100 is not in 1..=99")]
    fn percentiles_sql_refuses_100() {
        percentiles_sql(&[50, 100], Weighting::Unweighted);
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
        assert_eq!(TOP_LCP_ELEMENTS.placeholders(), 4);
        assert_eq!(TOP_INP_TARGETS.placeholders(), 4);
        assert_eq!(P75_BY_DIMENSION.placeholders(), 5);
    }
}
