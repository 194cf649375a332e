//! What the evaluator reads from ClickHouse: p75 and sample counts per step of `vitals_1m`, and
//! sample counts per site and minute for the beacons-stopped check.
//!
//! The result is bounded whatever the data holds. The public ingest lets anyone create sites,
//! routes and devices, so each query first picks its candidates in SQL (a subquery): the series
//! whose p75 condition holds now or held an interval ago (every step of the window above the
//! threshold, `min_samples` in it), and the sites silent now or an interval ago whose same minutes
//! a day earlier held `beacons_stopped.min_page_loads` page loads (the site's most frequent metric).
//! Each subquery is ordered the way the
//! evaluator ranks alerts and cut at `limit` (the alert cap + 1), and the read filters on the
//! candidates in its WHERE (before any sketch is merged), returning only their rows. So one evaluation reads at most `limit` series x the lookback's steps
//! (about 31 with the defaults) and `limit` sites x their metrics x the minutes of the two windows
//! and the lookback (about 190). When a subquery fills its limit, one `count()` over the same subquery
//! tells how many candidates were not read ([`StoredData::not_fetched`]).
//!
//! The SQL repeats the evaluator's conditions only to choose what to read; the decision itself is
//! [`evaluate`](crate::evaluate::evaluate)'s, over the rows read. Whether a step's p75 is above its
//! threshold is decided once, in SQL ([`above_sql`], see [`AboveBy`]): the candidates use it and each
//! row read carries it ([`StepStat::above`]), so the two cannot disagree on it; the rest (every step,
//! the samples) is the same comparisons on both sides, which `tests/storm.rs` checks on a real server.
//! ClickHouse 18.16: no window functions or CTEs, so the candidates are nested subqueries.

use std::collections::BTreeSet;
use std::future::Future;
use std::time::Duration;

use clickhouse::Row;
use rum_clickhouse::{GAMMA_LITERAL, ZERO_BUCKET};
use rum_schemas::MetricName;
use serde::Deserialize;

use crate::config::Weighting;
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
    /// The p75 from the step's merged sketches (within 0.5% of the exact nearest-rank p75; weighted,
    /// of the weighted nearest rank, from the weighted sketch where the step has one): what the alert
    /// shows.
    pub p75: f64,
    /// The samples of the step.
    pub samples: u64,
    /// Whether the step's p75 is above its rule's threshold, decided in SQL ([`above_sql`], a `UInt8`
    /// 0 or 1): exactly from the rating counts (weighted or not) at a metric's poor or good
    /// threshold, from the sketch's p75 at any other (see [`AboveBy`]).
    pub above: bool,
}

/// How "p75 above the threshold" is decided for one rule's metric and threshold.
///
/// p75 is the nearest-rank one: the `k`-th smallest of a step's `n` samples, `k = ceil(0.75 n)`
/// (`intDiv(3 n + 3, 4)`). It is above `T` exactly when fewer than `k` samples are at most `T`, that
/// is when at least `n - k + 1` samples are above `T`. `vitals_1m` counts those samples for two values
/// of `T`: the ratings are set when a beacon is read ([`MetricName::rate`]: good at most the good
/// threshold, poor above the poor threshold), so `poor` counts the samples above the poor threshold
/// and `needs_improvement + poor` those above the good one. At those two thresholds the decision is
/// exact; the sketch's p75 (0.5% relative error) decides wrongly near them: 600 LCP samples of
/// 2500 ms and 400 of 4000 ms have p75 4000, not above 4000, while the sketch says 4003.2. At any
/// other threshold (the rules file may set one) only the sketch can tell.
///
/// Weighted ([`Weighting::SampleRate`], the default), each sample weighs `w = 1 / sample_rate`
/// and p75 is the weighted nearest rank, as `rum query` reads it: the smallest value whose
/// cumulative weight `C` reaches three quarters of the total `W` (`100 C >= 75 W`). It is above `T`
/// exactly when `C(T) < 3 W / 4`, where `C(T) = W - A(T)` and `A(T)` is the weight above `T`: when
/// `4 A(T) > W`. `vitals_1m` keeps the weighted rating sums (migration 005), so at the poor threshold
/// `4 w_poor > W` and at the good one `4 (w_needs + w_poor) > W`, with `W = w_good + w_needs + w_poor`.
/// With unit weights this is the unweighted rule: `n_poor + k > n` is `n_poor > n - ceil(3n/4) =
/// floor(n/4)`, that is `4 n_poor > n`. The weights are sums of floats: a tie (`4 A = W` in exact
/// arithmetic, e.g. every sample at rate 0.3) can come out a few ulps either way, and differently
/// on two replicas merging in another order; so the decision is the very comparison `rum query`
/// reads its weighted p75 with: "above" when `100 C < 75 W (1 - t)`, `t` = [`WEIGHT_TIE_MARGIN`]
/// (1e-9: a millionth of a page load in a thousand; it is `4 A - W > 3 t W`), so that the alert and
/// the p75 `rum query` prints never disagree on a tie. A step without weighted sums (only rows written
/// before migration 005) is decided from its unweighted counts; a step straddling the upgrade, from
/// the weighted sums of its newer rows alone (as `rum query` reads it). `min_samples` counts samples
/// either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AboveBy {
    /// The threshold is the metric's poor threshold: `poor >= n - k + 1`.
    PoorCount,
    /// The threshold is the metric's good threshold: `needs_improvement + poor >= n - k + 1`.
    NotGoodCount,
    /// Any other threshold: the sketch's `p75 > threshold`, within the sketch's 0.5%.
    Sketch,
}

impl AboveBy {
    /// How a rule of `metric` with `threshold` decides (the thresholds of [`MetricName::thresholds`]).
    pub fn of(metric: MetricName, threshold: f64) -> AboveBy {
        let (good, poor) = metric.thresholds();
        if threshold == poor {
            AboveBy::PoorCount
        } else if threshold == good {
            AboveBy::NotGoodCount
        } else {
            AboveBy::Sketch
        }
    }
}

/// Relative tolerance of the weighted decision: "above" when `100 C < 75 W (1 - WEIGHT_TIE_MARGIN)`,
/// `rum query`'s rank (see [`AboveBy`]).
pub const WEIGHT_TIE_MARGIN: f64 = rum_clickhouse::WEIGHT_TIE_TOLERANCE;

/// The per-step decision "p75 above the rule's threshold", a `UInt8` 0 or 1 over the columns of
/// the step rows (`metric`, `n`, `n_needs`, `n_poor`, `p75`, and weighted `w_needs`, `w_poor`,
/// `w_total`): for each enabled rule, its [`AboveBy`]. Placeholders: the metrics and the
/// thresholds (arrays, in [`Rules::metric_rules`]' order) of the sketch's comparison, which every
/// rule deciding from counts skips.
///
/// `n - k + 1 <= c` is written `c + k > n`: no subtraction of unsigned counts.
pub fn above_sql(rules: &Rules, weighting: Weighting) -> String {
    let k = "intDiv(3 * n + 3, 4)";
    let mut branches = String::new();
    for (_, metric, rule) in rules.metric_rules() {
        let (counted, weighed) = match AboveBy::of(metric, rule.threshold) {
            AboveBy::PoorCount => ("n_poor", "w_poor"),
            AboveBy::NotGoodCount => ("n_needs + n_poor", "w_needs + w_poor"),
            AboveBy::Sketch => continue,
        };
        let by_count = format!("{counted} + {k} > n");
        let decision = match weighting {
            Weighting::Unweighted => by_count,
            Weighting::SampleRate => format!(
                "if(w_total > 0, (w_total - ({weighed})) * 100 < 75 * w_total * {reach}, {by_count})",
                reach = 1.0 - WEIGHT_TIE_MARGIN
            ),
        };
        branches.push_str(&format!("metric = '{}', {decision}, ", metric.as_str()));
    }
    let sketch = "p75 > transform(metric, ?, ?, toFloat64(0))";
    if branches.is_empty() {
        format!("toUInt8({sketch})")
    } else {
        format!("toUInt8(multiIf({branches}{sketch}))")
    }
}

/// Samples of one site and metric in one minute.
#[derive(Debug, Clone, PartialEq, Row, Deserialize)]
pub struct SiteMinute {
    /// The site.
    pub site: String,
    /// The metric name (page loads are counted per metric: see [`stopped_candidates_sql`]).
    pub metric: String,
    /// Unix seconds of the minute.
    pub minute: u32,
    /// Samples stored for that minute.
    pub samples: u64,
}

/// Everything one evaluation looks at; the evaluator is a pure function of this and `now`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StoredData {
    /// Per-step p75 of the candidate series, over the lookback.
    pub steps: Vec<StepStat>,
    /// Per-minute samples of each metric of the candidate sites, over the lookback and the same windows a day
    /// earlier.
    pub site_minutes: Vec<SiteMinute>,
    /// Candidates (series or sites, one alert each) beyond the read limit: counted, not read.
    pub not_fetched: u64,
    /// How [`steps`](Self::steps) were read and decided (`alerts.weighting`).
    pub weighting: Weighting,
}

/// Why an evaluation could not read ClickHouse.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A query failed (refused, an error answer, a broken connection); the cause is its source.
    #[error("cannot read ClickHouse")]
    Query(#[from] clickhouse::error::Error),
    /// ClickHouse did not answer in time (a server that accepts and never answers, or is too slow):
    /// one request within [`REQUEST_TIMEOUT_KEY`], or the evaluation's reads together within
    /// [`QUERY_TIMEOUT_KEY`]. Counted in `rum_alerts_clickhouse_timeouts_total`.
    #[error("ClickHouse did not answer within {after:?} ({key})")]
    Timeout {
        /// The bound that was reached.
        after: Duration,
        /// The setting of that bound.
        key: &'static str,
    },
}

/// The bound of every ClickHouse request.
pub const REQUEST_TIMEOUT_KEY: &str = "clickhouse.request_timeout_ms";
/// The bound of one evaluation's reads together.
pub const QUERY_TIMEOUT_KEY: &str = "alerts.query_timeout_secs";

/// One request, failed with [`StoreError::Timeout`] after `timeout` ([`REQUEST_TIMEOUT_KEY`]);
/// dropping it closes its connection.
pub(crate) async fn request<T>(
    timeout: Duration,
    work: impl Future<Output = Result<T, clickhouse::error::Error>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(timeout, work).await {
        Ok(answer) => Ok(answer?),
        Err(_) => Err(StoreError::Timeout {
            after: timeout,
            key: REQUEST_TIMEOUT_KEY,
        }),
    }
}

/// One day, the offset of the beacons-stopped comparison.
pub const DAY_SECS: u32 = 86_400;

/// The p75 expression over `sk = sumMapMerge(sketch)` and `idx`, the same text as the analyst
/// queries (pinned by a test against `p75_by_route_device.sql`).
pub fn p75_sql() -> String {
    format!(
        "if((sk.1)[idx] = {ZERO_BUCKET}, 0, 2 * pow({GAMMA_LITERAL}, (sk.1)[idx]) / ({GAMMA_LITERAL} + 1))"
    )
}

/// Per site, route, device, metric and step: `step_start`, `n` (samples), `n_needs` and `n_poor`
/// (samples rated needs-improvement and poor) and `p75`; weighted ([`Weighting::SampleRate`]) also
/// `w_needs`, `w_poor` and `w_total` (the weighted rating sums, 0 for rows written before migration
/// 005), and `p75` is read from the weighted sketch, or from the unweighted one where the step has no
/// weights (as `rum query`). Placeholders: metrics (array), start, end (unix seconds), then those of
/// `filter` (more conditions of the WHERE, e.g. the scope's arrays, see [`scope_sql`], and the
/// candidates: filtering on grouping keys there, not after the GROUP BY, spares merging the sketches
/// of every other series).
///
/// p75 is computed a level above the GROUP BY, as in the analyst queries: over a cluster's `Distributed`
/// `vitals_1m` (`clickhouse.cluster`) ClickHouse 18.16 sends the grouping level to the shards as text and
/// prints `(sk.1)[idx]` as `sk.1[idx]`, which the shards cannot parse (`Code: 62`). The decision of
/// [`above_sql`] is made a level above this one too. The counts' aliases are not the names of the
/// columns they merge (`sumMerge(poor) AS poor` would shadow the column). Weighted, the rank is
/// computed in the level that defines the weights it reads (`total`): 18.16 drops a column used only
/// inside a lambda of an outer level ("Unknown identifier").
fn step_rows_sql(step_secs: u32, filter: &str, weighting: Weighting) -> String {
    let group = format!(
        "SELECT site, route, device, metric, \
           toUInt32(intDiv(toUInt32(minute), {step_secs}) * {step_secs}) AS step_start, \
           countMerge(samples) AS n, \
           sumMerge(needs_improvement) AS n_needs, \
           sumMerge(poor) AS n_poor, \
           sumMapMerge(sketch) AS sk"
    );
    let from = format!(
        "FROM vitals_1m \
         WHERE has(?, metric) AND minute >= toDateTime(?) AND minute < toDateTime(?){filter} \
         GROUP BY site, route, device, metric, step_start"
    );
    match weighting {
        Weighting::Unweighted => format!(
            "SELECT site, route, device, metric, step_start, n, n_needs, n_poor, sk, idx, toFloat64({p75}) AS p75 \
             FROM ( \
               {group}, \
               arrayFirstIndex(c -> c >= 0.75 * n, arrayCumSum(sk.2)) AS idx \
               {from} \
             )",
            p75 = p75_sql()
        ),
        Weighting::SampleRate => format!(
            "SELECT site, route, device, metric, step_start, n, n_needs, n_poor, w_needs, w_poor, w_total, \
               toFloat64(if(bk[idx] = {ZERO_BUCKET}, 0, 2 * pow({GAMMA_LITERAL}, bk[idx]) / ({GAMMA_LITERAL} + 1))) AS p75 \
             FROM ( \
               SELECT site, route, device, metric, step_start, n, n_needs, n_poor, w_needs, w_poor, \
                 w_good + w_needs + w_poor AS w_total, \
                 {bk} AS bk, \
                 {bc} AS bc, \
                 arraySum(bc) AS total, \
                 arrayFirstIndex(c -> c * 100 >= 75 * {total}, arrayCumSum(bc)) AS idx \
               FROM ( \
                 {group}, \
                 sumMerge(weighted_good) AS w_good, \
                 sumMerge(weighted_needs_improvement) AS w_needs, \
                 sumMerge(weighted_poor) AS w_poor, \
                 sumMapMerge(weighted_sketch) AS wsk \
                 {from} \
               ) \
             )",
            // As `rum query` reads them: the same buckets, the same tolerance of the weighted rank.
            bk = Weighting::SampleRate.buckets_sql().0,
            bc = Weighting::SampleRate.buckets_sql().1,
            total = Weighting::SampleRate.rank_total_sql("total"),
        ),
    }
}

/// The per-step query of one series' investigation (an alert's `query` annotation), weighted as the
/// decision. Placeholders: metrics (array), window start, window end (unix seconds).
pub fn steps_sql(step_secs: u32, weighting: Weighting) -> String {
    format!(
        "SELECT site, route, device, metric, step_start, p75, toUInt64(n) AS samples FROM ({}) \
         ORDER BY site, route, device, metric, step_start",
        step_rows_sql(step_secs, "", weighting)
    )
}

/// ` AND has(?, site)` / ` AND has(?, route)` for a non-empty scope (an empty array literal has no
/// type on 18.16, so an empty scope adds nothing).
fn scope_sql(rules: &Rules) -> String {
    let mut sql = String::new();
    if !rules.sites.is_empty() {
        sql.push_str(" AND has(?, site)");
    }
    if !rules.routes.is_empty() {
        sql.push_str(" AND has(?, route)");
    }
    sql
}

/// The windows one evaluation at `now` decides on: the current one and the one an interval earlier
/// (whose alerts may have to be resolved).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spans {
    /// The end of the last complete step at `now` (exclusive).
    pub end: u32,
    /// The end of the last complete step at `now - interval` (at most `end`).
    pub previous_end: u32,
    /// The start of the data read (the lookback).
    pub start: u32,
}

/// How far back the evaluation at `now` reads: the window, one interval (for "was firing an
/// interval ago") and two hours more to find where a bad period started.
pub fn spans(rules: &Rules, now: u32, interval_secs: u32) -> Spans {
    let step = rules.step_minutes * 60;
    let end = now - now % step;
    let before = now.saturating_sub(interval_secs);
    let window = rules.for_minutes.max(rules.beacons_stopped.for_minutes) * 60;
    let lookback = window + interval_secs.div_ceil(step) * step + 2 * 3600;
    Spans {
        end,
        previous_end: before - before % step,
        start: end.saturating_sub(lookback),
    }
}

/// The p75 candidates: series whose every step of the window (now or an interval ago) has a p75
/// strictly above its metric's threshold ([`above_sql`]), with `min_samples` in the window. Ordered as the
/// evaluator ranks alerts (firing first, severity, samples descending, then the labels; the metric
/// orders as its alert name does). Placeholders: see [`P75Query::binds`].
fn p75_candidates_sql(rules: &Rules, scope: &str, weighting: Weighting) -> String {
    let step = rules.step_minutes * 60;
    let window_steps = rules.for_minutes / rules.step_minutes;
    let min_samples = rules.min_samples;
    format!(
        "SELECT site, route, device, metric, \
           countIf(bad AND step_start >= ? AND step_start < ?) AS bad_now, \
           sumIf(n, step_start >= ? AND step_start < ?) AS n_now, \
           countIf(bad AND step_start >= ? AND step_start < ?) AS bad_before, \
           sumIf(n, step_start >= ? AND step_start < ?) AS n_before, \
           bad_now = {window_steps} AND n_now >= {min_samples} AS holds_now, \
           bad_before = {window_steps} AND n_before >= {min_samples} AS holds_before \
         FROM ( \
           SELECT site, route, device, metric, step_start, n, {above} AS bad \
           FROM ({steps}) \
         ) \
         GROUP BY site, route, device, metric \
         HAVING holds_now OR holds_before",
        above = above_sql(rules, weighting),
        steps = step_rows_sql(step, scope, weighting)
    )
}

/// The beacons-stopped candidates: sites without samples in the window (now or an interval ago)
/// whose same minutes a day earlier held `beacons_stopped.min_page_loads` page loads: the samples of
/// the site's most frequent metric there (the max over metrics of per-metric sums, not their sum: a
/// beacon carries up to five metrics, one value each). Placeholders: see [`SitesQuery::binds`].
fn stopped_candidates_sql(rules: &Rules) -> String {
    let min = rules.beacons_stopped.min_page_loads;
    let site_scope = if rules.sites.is_empty() {
        ""
    } else {
        " AND has(?, site)"
    };
    // Aliases differ between levels: 18.16 mistakes `sum(x) AS x` for a cyclic alias.
    format!(
        "SELECT site, \
           sum(m_today_now) AS today_now, \
           max(m_yesterday_now) AS yesterday_now, \
           sum(m_today_before) AS today_before, \
           max(m_yesterday_before) AS yesterday_before, \
           today_now = 0 AND yesterday_now >= {min} AS holds_now, \
           today_before = 0 AND yesterday_before >= {min} AS holds_before \
         FROM ( \
           SELECT site, metric, \
             sumIf(n, at >= ? AND at < ?) AS m_today_now, \
             sumIf(n, at >= ? AND at < ?) AS m_yesterday_now, \
             sumIf(n, at >= ? AND at < ?) AS m_today_before, \
             sumIf(n, at >= ? AND at < ?) AS m_yesterday_before \
           FROM ( \
             SELECT site, metric, toUInt32(minute) AS at, countMerge(samples) AS n \
             FROM vitals_1m \
             WHERE ((minute >= toDateTime(?) AND minute < toDateTime(?)) \
                OR (minute >= toDateTime(?) AND minute < toDateTime(?))){site_scope} \
             GROUP BY site, metric, minute \
           ) \
           GROUP BY site, metric \
         ) \
         GROUP BY site \
         HAVING holds_now OR holds_before"
    )
}

/// The ranking of alerts as a number: `critical` first, then `warning`, then any other severity.
pub fn severity_rank(severity: &str) -> u8 {
    match severity {
        "critical" => 0,
        "warning" => 1,
        _ => 2,
    }
}

/// A query and its bound values, in placeholder order.
enum Bind {
    U32(u32),
    Strs(Vec<String>),
    F64s(Vec<f64>),
}

fn bound(sql: &str, binds: &[Bind], client: &clickhouse::Client) -> clickhouse::query::Query {
    let mut q = client.query(sql);
    for b in binds {
        q = match b {
            Bind::U32(v) => q.bind(*v),
            Bind::Strs(v) => q.bind(v),
            Bind::F64s(v) => q.bind(v),
        };
    }
    q
}

/// The p75 part of one evaluation: the candidates and the rows read for them.
struct P75Query<'a> {
    rules: &'a Rules,
    spans: Spans,
    weighting: Weighting,
}

impl P75Query<'_> {
    fn metrics(&self) -> Vec<String> {
        self.rules
            .metric_rules()
            .iter()
            .map(|(_, m, _)| m.as_str().to_string())
            .collect()
    }

    fn step_binds(&self, start: u32, end: u32) -> Vec<Bind> {
        let mut b = vec![Bind::Strs(self.metrics()), Bind::U32(start), Bind::U32(end)];
        if !self.rules.sites.is_empty() {
            b.push(Bind::Strs(self.rules.sites.clone()));
        }
        if !self.rules.routes.is_empty() {
            b.push(Bind::Strs(self.rules.routes.clone()));
        }
        b
    }

    /// The candidate subquery's binds.
    fn binds(&self) -> Vec<Bind> {
        let window = self.rules.for_minutes * 60;
        let Spans {
            end, previous_end, ..
        } = self.spans;
        let (now_from, before_from) = (
            end.saturating_sub(window),
            previous_end.saturating_sub(window),
        );
        let mut b = vec![
            Bind::U32(now_from),
            Bind::U32(end),
            Bind::U32(now_from),
            Bind::U32(end),
            Bind::U32(before_from),
            Bind::U32(previous_end),
            Bind::U32(before_from),
            Bind::U32(previous_end),
        ];
        b.extend(self.above_binds());
        b.extend(self.step_binds(before_from, end));
        b
    }

    /// [`above_sql`]'s binds: the metrics and their thresholds.
    fn above_binds(&self) -> [Bind; 2] {
        let rules = self.rules.metric_rules();
        [
            Bind::Strs(self.metrics()),
            Bind::F64s(rules.iter().map(|(_, _, r)| r.threshold).collect()),
        ]
    }

    /// The rows read: every step of the lookback of the (at most `limit`) candidates, with the
    /// decision of [`above_sql`]. Placeholders: see [`rows_binds`](Self::rows_binds).
    fn rows_sql(&self, limit: u32) -> String {
        // The candidates filter the inner read, before its GROUP BY merges any sketch.
        let filter = format!(
            "{} AND (site, route, device, metric) IN ({})",
            scope_sql(self.rules),
            self.candidates_sql(limit)
        );
        format!(
            "SELECT site, route, device, metric, step_start, p75, toUInt64(n) AS samples, \
               {} AS above \
             FROM ({}) \
             ORDER BY site, route, device, metric, step_start",
            above_sql(self.rules, self.weighting),
            step_rows_sql(self.rules.step_minutes * 60, &filter, self.weighting),
        )
    }

    fn rows_binds(&self) -> Vec<Bind> {
        let mut binds = Vec::from(self.above_binds());
        binds.extend(self.step_binds(self.spans.start, self.spans.end));
        binds.extend(self.binds());
        binds
    }

    fn candidates_sql(&self, limit: u32) -> String {
        let metrics = self.rules.metric_rules();
        let ranks: Vec<String> = metrics
            .iter()
            .map(|(_, _, r)| severity_rank(&r.severity).to_string())
            .collect();
        let names: Vec<String> = metrics
            .iter()
            .map(|(_, m, _)| format!("'{}'", m.as_str()))
            .collect();
        format!(
            "SELECT site, route, device, metric FROM ({}) \
             ORDER BY holds_now DESC, transform(metric, [{}], [{}], 9), \
               if(holds_now, n_now, n_before) DESC, metric, site, route, device \
             LIMIT {limit}",
            p75_candidates_sql(self.rules, &scope_sql(self.rules), self.weighting),
            names.join(", "),
            ranks.join(", "),
        )
    }

    async fn fetch(
        &self,
        client: &clickhouse::Client,
        limit: u32,
        timeout: Duration,
    ) -> Result<(Vec<StepStat>, u64), StoreError> {
        if self.rules.metric_rules().is_empty() {
            return Ok((Vec::new(), 0));
        }
        let scope = scope_sql(self.rules);
        let sql = self.rows_sql(limit);
        let binds = self.rows_binds();
        let steps = request(timeout, bound(&sql, &binds, client).fetch_all::<StepStat>()).await?;
        let fetched = steps
            .iter()
            .map(|s| (&s.site, &s.route, &s.device, &s.metric))
            .collect::<BTreeSet<_>>()
            .len() as u64;
        let mut not_fetched = 0;
        if fetched >= u64::from(limit) {
            let count = format!(
                "SELECT count() FROM ({})",
                p75_candidates_sql(self.rules, &scope, self.weighting)
            );
            let total = request(
                timeout,
                bound(&count, &self.binds(), client).fetch_one::<u64>(),
            )
            .await?;
            not_fetched = total.saturating_sub(fetched);
        }
        Ok((steps, not_fetched))
    }
}

/// The beacons-stopped part of one evaluation: the candidate sites and their minutes.
struct SitesQuery<'a> {
    rules: &'a Rules,
    spans: Spans,
}

impl SitesQuery<'_> {
    /// The candidate subquery's binds.
    fn binds(&self) -> Vec<Bind> {
        let window = self.rules.beacons_stopped.for_minutes * 60;
        let Spans {
            end, previous_end, ..
        } = self.spans;
        let now_from = end.saturating_sub(window);
        let before_from = previous_end.saturating_sub(window);
        let day = |t: u32| t.saturating_sub(DAY_SECS);
        let mut b: Vec<Bind> = [
            now_from,
            end,
            day(now_from),
            day(end),
            before_from,
            previous_end,
            day(before_from),
            day(previous_end),
            // The inner read: the windows of both days.
            day(before_from),
            day(end),
            before_from,
            end,
        ]
        .into_iter()
        .map(Bind::U32)
        .collect();
        if !self.rules.sites.is_empty() {
            b.push(Bind::Strs(self.rules.sites.clone()));
        }
        b
    }

    async fn fetch(
        &self,
        client: &clickhouse::Client,
        limit: u32,
        timeout: Duration,
    ) -> Result<(Vec<SiteMinute>, u64), StoreError> {
        if !self.rules.beacons_stopped.enabled {
            return Ok((Vec::new(), 0));
        }
        let candidates = format!(
            "SELECT site FROM ({}) \
             ORDER BY holds_now DESC, if(holds_now, yesterday_now, yesterday_before) DESC, site \
             LIMIT {limit}",
            stopped_candidates_sql(self.rules)
        );
        // The minutes the decision looks at: yesterday's windows, and today's lookback (where the
        // site was last seen).
        let sql = format!(
            "SELECT site, metric, toUInt32(minute) AS at, toUInt64(countMerge(samples)) AS n \
             FROM vitals_1m \
             WHERE site IN ({candidates}) \
               AND ((minute >= toDateTime(?) AND minute < toDateTime(?)) \
                 OR (minute >= toDateTime(?) AND minute < toDateTime(?))) \
             GROUP BY site, metric, minute \
             ORDER BY site, metric, at"
        );
        let window = self.rules.beacons_stopped.for_minutes * 60;
        let Spans {
            end,
            previous_end,
            start,
        } = self.spans;
        let mut binds = self.binds();
        binds.extend(
            [
                previous_end.saturating_sub(window + DAY_SECS),
                end.saturating_sub(DAY_SECS),
                start,
                end,
            ]
            .map(Bind::U32),
        );
        let minutes = request(
            timeout,
            bound(&sql, &binds, client).fetch_all::<SiteMinute>(),
        )
        .await?;
        let fetched = minutes
            .iter()
            .map(|m| &m.site)
            .collect::<BTreeSet<_>>()
            .len() as u64;
        let mut not_fetched = 0;
        if fetched >= u64::from(limit) {
            let count = format!(
                "SELECT count() FROM ({})",
                stopped_candidates_sql(self.rules)
            );
            let total = request(
                timeout,
                bound(&count, &self.binds(), client).fetch_one::<u64>(),
            )
            .await?;
            not_fetched = total.saturating_sub(fetched);
        }
        Ok((minutes, not_fetched))
    }
}

/// Reads what the evaluation at `now` needs: the rows of at most `limit` candidate series and
/// `limit` candidate sites (pass the alert cap + 1, so that a full cap is told from an overflow).
/// Each request (two to four) gets at most `request_timeout` (`clickhouse.request_timeout_ms`). The
/// p75 steps are read and decided as `weighting` says.
pub async fn fetch(
    client: &clickhouse::Client,
    rules: &Rules,
    now: u32,
    interval_secs: u32,
    limit: u32,
    request_timeout: Duration,
    weighting: Weighting,
) -> Result<StoredData, StoreError> {
    let spans = spans(rules, now, interval_secs);
    let (steps, p75_not_fetched) = P75Query {
        rules,
        spans,
        weighting,
    }
    .fetch(client, limit, request_timeout)
    .await?;
    let (site_minutes, sites_not_fetched) = SitesQuery { rules, spans }
        .fetch(client, limit, request_timeout)
        .await?;
    Ok(StoredData {
        steps,
        site_minutes,
        not_fetched: p75_not_fetched + sites_not_fetched,
        weighting,
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
        assert_eq!(s.previous_end, s.end, "60 s earlier is the same step");
        assert_eq!(spans(&rules, 1_000_000_123, 600).previous_end, s.end - 600);
    }

    /// Rules with these LCP, INP and CLS thresholds.
    fn thresholds(lcp: f64, inp: f64, cls: f64) -> Rules {
        let mut rules = Rules::default();
        rules.lcp.threshold = lcp;
        rules.inp.threshold = inp;
        rules.cls.threshold = cls;
        rules
    }

    #[test]
    fn above_is_decided_from_the_counts_at_the_metrics_thresholds_only() {
        use AboveBy::*;
        assert_eq!(AboveBy::of(MetricName::LCP, 4000.0), PoorCount);
        assert_eq!(AboveBy::of(MetricName::LCP, 2500.0), NotGoodCount);
        assert_eq!(AboveBy::of(MetricName::LCP, 3000.0), Sketch);
        assert_eq!(AboveBy::of(MetricName::LCP, 4000.5), Sketch);
        assert_eq!(AboveBy::of(MetricName::INP, 500.0), PoorCount);
        assert_eq!(AboveBy::of(MetricName::INP, 200.0), NotGoodCount);
        assert_eq!(AboveBy::of(MetricName::INP, 4000.0), Sketch);
        assert_eq!(AboveBy::of(MetricName::CLS, 0.25), PoorCount);
        assert_eq!(AboveBy::of(MetricName::CLS, 0.1), NotGoodCount);
        // The rules file's spelling of the thresholds is the same number.
        let rules = Rules::from_toml("[cls]\nthreshold = 0.1\n[inp]\nthreshold = 2e2\n").unwrap();
        assert_eq!(
            AboveBy::of(MetricName::CLS, rules.cls.threshold),
            NotGoodCount
        );
        assert_eq!(
            AboveBy::of(MetricName::INP, rules.inp.threshold),
            NotGoodCount
        );
    }

    /// The derivation of [`AboveBy`], against the exact weighted nearest rank of
    /// `rum_clickhouse::exact_weighted_percentile` (what `rum query` estimates): on many small sets of
    /// values at, just under and just over `T`, with weights whose sums are exact in binary (so that
    /// ties are real ties), "p75 > T" is `4 A > W`; with unit weights it is `n_poor + k > n`.
    #[test]
    fn above_by_weight_is_the_weighted_nearest_rank_above_the_threshold() {
        const T: f64 = 4000.0;
        let mut seed: u64 = 0x5eed;
        let mut next = move |m: u64| {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) % m
        };
        let (mut ties, mut above) = (0, 0);
        for case in 0..20_000 {
            let n = 1 + next(12) as usize;
            let unit = case % 2 == 0;
            let values: Vec<(f64, f64)> = (0..n)
                .map(|_| {
                    let v = [T - 1.0, T, T + 1.0][next(3) as usize];
                    let w = if unit {
                        1.0
                    } else {
                        [1.0, 2.0, 4.0, 10.0, 100.0][next(5) as usize]
                    };
                    (v, w)
                })
                .collect();
            let w_total: f64 = values.iter().map(|v| v.1).sum();
            let w_above: f64 = values.iter().filter(|v| v.0 > T).map(|v| v.1).sum();
            let exact = rum_clickhouse::exact_weighted_percentile(&values, 75).unwrap() > T;
            let by_weight =
                (w_total - w_above) * 100.0 < 75.0 * w_total * (1.0 - WEIGHT_TIE_MARGIN);
            assert_eq!(exact, by_weight, "{values:?}");
            if unit {
                let (n, poor) = (n as u64, w_above as u64);
                assert_eq!(exact, poor + (3 * n).div_ceil(4) > n, "{values:?}");
            }
            ties += u32::from(4.0 * w_above == w_total);
            above += u32::from(exact);
        }
        // The cases hold ties and both answers.
        assert!(
            ties > 100 && above > 1000 && above < 19_000,
            "{ties} {above}"
        );
    }

    #[test]
    fn above_sql_has_one_branch_a_rule_that_counts() {
        let k = "intDiv(3 * n + 3, 4) > n";
        let sql = above_sql(&Rules::default(), Weighting::Unweighted);
        for metric in ["LCP", "INP", "CLS"] {
            assert!(
                sql.contains(&format!("metric = '{metric}', n_poor + {k}")),
                "{sql}"
            );
        }
        let sql = above_sql(&thresholds(2500.0, 700.0, 0.25), Weighting::Unweighted);
        assert!(
            sql.contains(&format!("metric = 'LCP', n_needs + n_poor + {k}")),
            "{sql}"
        );
        assert!(!sql.contains("metric = 'INP'"), "the sketch decides: {sql}");
        assert!(
            sql.contains(&format!("metric = 'CLS', n_poor + {k}")),
            "{sql}"
        );
        // No rule counts: the sketch alone, as before.
        assert_eq!(
            above_sql(&thresholds(3000.0, 700.0, 0.3), Weighting::Unweighted),
            "toUInt8(p75 > transform(metric, ?, ?, toFloat64(0)))"
        );
        // Weighted: the weighted sums, falling back to the counts where a step has none.
        let sql = above_sql(&thresholds(2500.0, 500.0, 0.3), Weighting::SampleRate);
        assert!(
            sql.contains(&format!(
                "metric = 'LCP', if(w_total > 0, (w_total - (w_needs + w_poor)) * 100 < 75 * w_total * 0.999999999, n_needs + n_poor + {k})"
            )),
            "{sql}"
        );
        assert!(
            sql.contains(&format!(
                "metric = 'INP', if(w_total > 0, (w_total - (w_poor)) * 100 < 75 * w_total * 0.999999999, n_poor + {k})"
            )),
            "{sql}"
        );
        assert!(!sql.contains("metric = 'CLS'"), "the sketch decides: {sql}");
        // A disabled rule has no branch.
        let mut rules = Rules::default();
        rules.lcp.enabled = false;
        assert!(!above_sql(&rules, Weighting::Unweighted).contains("'LCP'"));
        assert!(!above_sql(&rules, Weighting::SampleRate).contains("'LCP'"));
    }

    #[test]
    fn every_placeholder_gets_a_value() {
        let spans = spans(&Rules::default(), 1_000_000_123, 60);
        for rules in [
            Rules::default(),
            Rules {
                sites: vec!["shop".into()],
                routes: vec!["root".into()],
                ..Default::default()
            },
            thresholds(2500.0, 700.0, 0.25),
            Rules {
                sites: vec!["shop".into()],
                ..thresholds(3000.0, 700.0, 0.3)
            },
        ] {
            for weighting in [Weighting::SampleRate, Weighting::Unweighted] {
                let p = P75Query {
                    rules: &rules,
                    spans,
                    weighting,
                };
                let candidates = p75_candidates_sql(&rules, &scope_sql(&rules), weighting);
                assert_eq!(candidates.matches('?').count(), p.binds().len());
                assert_eq!(p.rows_sql(501).matches('?').count(), p.rows_binds().len());
            }
            let s = SitesQuery {
                rules: &rules,
                spans,
            };
            assert_eq!(
                stopped_candidates_sql(&rules).matches('?').count(),
                s.binds().len()
            );
        }
    }

    #[test]
    fn severities_rank_critical_first() {
        assert!(severity_rank("critical") < severity_rank("warning"));
        assert!(severity_rank("warning") < severity_rank("page"));
    }
}
