//! What the report shows, read from ClickHouse: per metric the merged sketches per step and device
//! (`rum_clickhouse::report::sketch_steps`), from which the trend, the distribution and the per-device
//! p75 are read; the worst route/device pairs (`P75Row::with_percentiles`, `rum query`'s numbers); and
//! the top LCP elements and INP targets of the worst routes (the analyst queries).

use std::collections::BTreeMap;

use anyhow::Context;
use rum_clickhouse::report::{sketch_steps, SketchStep};
use rum_clickhouse::{ClickHouseConfig, InpTargetRow, LcpElementRow, P75Row, Weighting};
use rum_schemas::MetricName;

use super::charts::{self, TrendPoint};
use super::ReportArgs;

/// The metrics of the report, in order.
pub const METRICS: [MetricName; 5] = [
    MetricName::LCP,
    MetricName::INP,
    MetricName::CLS,
    MetricName::FCP,
    MetricName::TTFB,
];

/// The most points a trend has: the step grows with the window.
pub const MAX_POINTS: u64 = 200;

/// The steps a trend may have, in seconds, with their names.
const STEPS: [(u32, &str); 11] = [
    (60, "minute"),
    (300, "5 minutes"),
    (600, "10 minutes"),
    (900, "15 minutes"),
    (1800, "30 minutes"),
    (3600, "hour"),
    (10_800, "3 hours"),
    (21_600, "6 hours"),
    (43_200, "12 hours"),
    (86_400, "day"),
    (604_800, "week"),
];

/// The most devices a metric's device table lists (those with the most samples).
pub const MAX_DEVICES: usize = 8;

/// How many of the worst routes get their LCP elements and INP targets listed.
pub const ATTRIBUTION_ROUTES: usize = 3;

/// How many elements (targets) each of those routes lists.
pub const TARGETS_PER_ROUTE: u64 = 5;

/// Everything the page shows.
pub struct Report {
    /// The site.
    pub site: String,
    /// The ClickHouse database read.
    pub database: String,
    /// The window, in words.
    pub window: String,
    /// The trend's step, in words (`hour`).
    pub step_name: String,
    /// How the samples count.
    pub weighting: Weighting,
    /// The fewest samples of a ranked route/device pair.
    pub min_samples: u64,
    /// One section a metric.
    pub metrics: Vec<MetricReport>,
    /// The LCP elements and INP targets of the worst routes.
    pub attribution: Attribution,
}

/// One metric's section.
pub struct MetricReport {
    /// The metric.
    pub metric: MetricName,
    /// The metric over the window, all devices together (`None` without samples).
    pub all: Option<Summary>,
    /// The metric per device, in the order of the devices' names.
    pub devices: Vec<Summary>,
    /// The trend chart (SVG), empty without samples.
    pub trend_svg: String,
    /// The histogram (SVG), empty without samples.
    pub histogram_svg: String,
    /// The worst route/device pairs, worst first.
    pub worst_routes: Vec<P75Row>,
}

/// p75, samples and rating shares of a metric over the window.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// The device class, or `all`.
    pub device: String,
    /// The p75.
    pub p75: f64,
    /// Samples.
    pub samples: u64,
    /// The shares (0..1) of good, needs-improvement and poor.
    pub shares: [f64; 3],
}

/// The causes behind the worst routes: the most frequent LCP elements and INP targets.
pub struct Attribution {
    /// Top LCP elements of the worst LCP routes, worst route first.
    pub lcp: Vec<LcpElementRow>,
    /// Top INP targets of the worst INP routes, worst route first.
    pub inp: Vec<InpTargetRow>,
}

/// The smallest step that gives at most [`MAX_POINTS`] points over `span` seconds.
fn step_for(span: u64) -> (u32, &'static str) {
    STEPS
        .into_iter()
        .find(|&(step, _)| span.div_ceil(u64::from(step)) <= MAX_POINTS)
        .unwrap_or(STEPS[STEPS.len() - 1])
}

/// Reads everything from ClickHouse and draws the charts.
pub async fn gather(
    args: &ReportArgs,
    config: &ClickHouseConfig,
    since: u32,
    until: u32,
) -> anyhow::Result<Report> {
    let client = config.client();
    let timeout = config.request_timeout();
    let weighting = if args.unweighted {
        Weighting::Unweighted
    } else {
        Weighting::SampleRate
    };
    let (step, step_name) = step_for(u64::from(until - since));
    let at = |what: &str| format!("{what} (ClickHouse at {})", config.url);
    let total = METRICS.len() + 2;
    eprintln!("rum report: [1/{total}] p75 per route and device");
    let pairs = rum_clickhouse::bounded(
        "reading p75 per route and device",
        timeout,
        P75Row::with_percentiles(
            &client,
            &args.site,
            None,
            None,
            since,
            until,
            &[],
            weighting,
        ),
    )
    .await
    .with_context(|| at("reading p75 per route and device"))?;
    let pairs: Vec<P75Row> = pairs.into_iter().map(|(row, _)| row).collect();
    let mut metrics = Vec::new();
    for (i, metric) in METRICS.into_iter().enumerate() {
        let name = metric.as_str();
        eprintln!(
            "rum report: [{}/{total}] {name}: p75 per {step_name} and device, distribution",
            i + 2
        );
        let steps = rum_clickhouse::bounded(
            "reading the sketches",
            timeout,
            sketch_steps(&client, &args.site, name, since, until, step),
        )
        .await
        .with_context(|| at(&format!("reading the {name} sketches")))?;
        let worst = worst_routes(&pairs, metric, args.min_samples, args.routes as usize);
        metrics.push(metric_report(
            metric,
            &steps,
            weighting,
            worst,
            // The first step starts at or before `since` (steps are aligned on multiples of it).
            (
                i64::from(since - since % step),
                i64::from(until),
                i64::from(step),
            ),
        )?);
    }
    eprintln!("rum report: [{total}/{total}] LCP elements and INP targets of the worst routes");
    let attribution = attribution(&client, timeout, &args.site, &metrics, since, until)
        .await
        .with_context(|| at("reading the LCP elements and INP targets"))?;
    Ok(Report {
        site: args.site.clone(),
        database: config.database.clone(),
        window: window_words(since, until),
        step_name: step_name.to_string(),
        weighting,
        min_samples: args.min_samples,
        metrics,
        attribution,
    })
}

/// The `limit` route/device pairs of `metric` with the highest p75 among those with at least
/// `min_samples` samples, worst first (ties: more samples first, then by name).
fn worst_routes(
    pairs: &[P75Row],
    metric: MetricName,
    min_samples: u64,
    limit: usize,
) -> Vec<P75Row> {
    let mut rows: Vec<P75Row> = pairs
        .iter()
        .filter(|r| r.metric == metric.as_str() && r.samples >= min_samples)
        .cloned()
        .collect();
    rows.sort_by(|a, b| {
        b.p75
            .total_cmp(&a.p75)
            .then(b.samples.cmp(&a.samples))
            .then_with(|| (&a.route, &a.device).cmp(&(&b.route, &b.device)))
    });
    rows.truncate(limit);
    rows
}

/// Merged sketches and rating sums, from which a [`Summary`] is read.
#[derive(Default)]
struct Merged {
    sketch: BTreeMap<i16, f64>,
    ratings: [f64; 3],
    samples: u64,
}

impl Merged {
    fn add(&mut self, step: &SketchStep, weighting: Weighting) {
        for (bucket, w) in step.sketch(weighting) {
            *self.sketch.entry(bucket).or_default() += w;
        }
        for (sum, r) in self.ratings.iter_mut().zip(step.ratings(weighting)) {
            *sum += r;
        }
        self.samples += step.samples;
    }

    /// `(bucket, weight)` pairs sorted by bucket.
    fn sorted(&self) -> Vec<(i16, f64)> {
        self.sketch.iter().map(|(&k, &w)| (k, w)).collect()
    }

    fn summary(&self, device: &str) -> Option<Summary> {
        let p75 = rum_clickhouse::weighted_percentile(&self.sorted(), 75)?;
        let total: f64 = self.ratings.iter().sum();
        Some(Summary {
            device: device.to_string(),
            p75,
            samples: self.samples,
            shares: self
                .ratings
                .map(|r| if total > 0.0 { r / total } else { 0.0 }),
        })
    }
}

/// One metric's numbers and charts from its sketches per step and device.
fn metric_report(
    metric: MetricName,
    steps: &[SketchStep],
    weighting: Weighting,
    worst_routes: Vec<P75Row>,
    (since, until, step): (i64, i64, i64),
) -> anyhow::Result<MetricReport> {
    let mut all = Merged::default();
    let mut devices = BTreeMap::<&str, Merged>::new();
    let mut by_step = BTreeMap::<u32, Merged>::new();
    for s in steps {
        all.add(s, weighting);
        devices.entry(&s.device).or_default().add(s, weighting);
        by_step.entry(s.at).or_default().add(s, weighting);
    }
    let points: Vec<TrendPoint> = by_step
        .iter()
        .filter_map(|(&at, merged)| {
            let p75 = rum_clickhouse::weighted_percentile(&merged.sorted(), 75)?;
            Some(TrendPoint {
                at: i64::from(at),
                p75,
            })
        })
        .collect();
    let summary = all.summary("all");
    let (trend_svg, histogram_svg) = if summary.is_some() {
        let bins = charts::bins_of(metric, &all.sorted());
        (
            charts::trend_svg(metric, &points, since, until, step)?,
            charts::histogram_svg(metric, &bins)?,
        )
    } else {
        (String::new(), String::new())
    };
    // Devices are a bounded label (four values); the cap keeps a hand-filled table's page bounded too.
    let mut devices: Vec<Summary> = devices
        .iter()
        .filter_map(|(device, merged)| merged.summary(device))
        .collect();
    devices.sort_by(|a, b| {
        b.samples
            .cmp(&a.samples)
            .then_with(|| a.device.cmp(&b.device))
    });
    devices.truncate(MAX_DEVICES);
    devices.sort_by(|a, b| a.device.cmp(&b.device));
    Ok(MetricReport {
        metric,
        all: summary,
        devices,
        trend_svg,
        histogram_svg,
        worst_routes,
    })
}

/// The top LCP elements and INP targets of the [`ATTRIBUTION_ROUTES`] worst routes of each
/// (`top_lcp_elements.sql` and `top_inp_targets.sql`: [`TARGETS_PER_ROUTE`] a route).
async fn attribution(
    client: &rum_clickhouse::Client,
    timeout: std::time::Duration,
    site: &str,
    metrics: &[MetricReport],
    since: u32,
    until: u32,
) -> anyhow::Result<Attribution> {
    let worst = |metric: MetricName| -> Vec<String> {
        let mut routes: Vec<String> = Vec::new();
        for row in metrics
            .iter()
            .filter(|m| m.metric == metric)
            .flat_map(|m| &m.worst_routes)
        {
            if routes.len() < ATTRIBUTION_ROUTES && !routes.contains(&row.route) {
                routes.push(row.route.clone());
            }
        }
        routes
    };
    let (lcp_routes, inp_routes) = (worst(MetricName::LCP), worst(MetricName::INP));
    let mut lcp = Vec::new();
    if !lcp_routes.is_empty() {
        let rows = rum_clickhouse::bounded(
            "reading the top LCP elements",
            timeout,
            rum_clickhouse::top_lcp_elements(client, site, since, until, TARGETS_PER_ROUTE),
        )
        .await?;
        lcp = of_routes(rows, &lcp_routes, |r| &r.route);
    }
    let mut inp = Vec::new();
    if !inp_routes.is_empty() {
        let rows = rum_clickhouse::bounded(
            "reading the top INP targets",
            timeout,
            rum_clickhouse::top_inp_targets(client, site, since, until, TARGETS_PER_ROUTE),
        )
        .await?;
        inp = of_routes(rows, &inp_routes, |r| &r.route);
    }
    Ok(Attribution { lcp, inp })
}

/// The rows of `routes` only (each route's rows kept in order), in the order of `routes` (worst
/// first).
fn of_routes<T>(rows: Vec<T>, routes: &[String], route: impl Fn(&T) -> &String) -> Vec<T> {
    let mut rows: Vec<(usize, T)> = rows
        .into_iter()
        .filter_map(|r| Some((routes.iter().position(|x| x == route(&r))?, r)))
        .collect();
    rows.sort_by_key(|(i, _)| *i);
    rows.into_iter().map(|(_, r)| r).collect()
}

/// `26 Nov 2026 05:17 to 03 Dec 2026 05:17 UTC (7 days)`.
fn window_words(since: u32, until: u32) -> String {
    let date = |secs: u32| {
        let text = httpdate::fmt_http_date(
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(u64::from(secs)),
        );
        text[5..22].to_string()
    };
    let span = until - since;
    let length = if span.is_multiple_of(86_400) {
        format!("{} days", span / 86_400)
    } else if span.is_multiple_of(3600) {
        format!("{} hours", span / 3600)
    } else {
        format!("{} minutes", span.div_ceil(60))
    };
    format!("{} to {} UTC ({length})", date(since), date(until))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_step_grows_with_the_window() {
        assert_eq!(step_for(7 * 86_400), (3600, "hour"));
        assert_eq!(step_for(30 * 60), (60, "minute"));
        assert_eq!(step_for(86_400), (600, "10 minutes"));
        assert_eq!(step_for(30 * 86_400), (21_600, "6 hours"));
        assert_eq!(step_for(100 * 365 * 86_400), (604_800, "week"));
        for span in [1, 59, 3600, 12_000, 86_400 * 3, 86_400 * 90] {
            let (step, _) = step_for(span);
            assert!(span.div_ceil(u64::from(step)) <= MAX_POINTS, "{span}");
        }
    }

    #[test]
    fn the_window_in_words() {
        let until = 1_796_274_000;
        assert_eq!(
            window_words(until - 7 * 86_400, until),
            "26 Nov 2026 05:00 to 03 Dec 2026 05:00 UTC (7 days)"
        );
        assert_eq!(
            window_words(until - 1800, until),
            "03 Dec 2026 04:30 to 03 Dec 2026 05:00 UTC (30 minutes)"
        );
    }

    fn pair(route: &str, device: &str, metric: &str, p75: f64, samples: u64) -> P75Row {
        P75Row {
            site: "shop".into(),
            route: route.into(),
            device: device.into(),
            metric: metric.into(),
            p75,
            samples,
            good_share: 0.0,
            needs_improvement_share: 0.0,
            poor_share: 1.0,
        }
    }

    #[test]
    fn worst_routes_are_the_highest_p75_with_enough_samples() {
        let pairs = [
            pair("a", "mobile", "LCP", 3000.0, 50),
            pair("b", "mobile", "LCP", 9000.0, 5),
            pair("c", "desktop", "LCP", 4000.0, 20),
            pair("d", "mobile", "LCP", 3000.0, 80),
            pair("e", "mobile", "INP", 900.0, 80),
            pair("a", "desktop", "LCP", 3000.0, 50),
        ];
        let routes = |limit| -> Vec<String> {
            worst_routes(&pairs, MetricName::LCP, 20, limit)
                .iter()
                .map(|r| format!("{}/{}", r.route, r.device))
                .collect()
        };
        // b has too few samples; ties: more samples first, then by route and device.
        assert_eq!(
            routes(10),
            ["c/desktop", "d/mobile", "a/desktop", "a/mobile"]
        );
        assert_eq!(routes(2), ["c/desktop", "d/mobile"]);
    }

    fn step(at: u32, device: &str, values: &[f64]) -> SketchStep {
        let sketch = rum_clickhouse::sketch_of(values.iter().copied());
        let metric = MetricName::LCP;
        let count = |r| values.iter().filter(|v| metric.rate(**v) == r).count() as u64;
        SketchStep {
            at,
            device: device.into(),
            samples: values.len() as u64,
            ratings: vec![
                count(rum_schemas::Rating::Good),
                count(rum_schemas::Rating::NeedsImprovement),
                count(rum_schemas::Rating::Poor),
            ],
            weighted_ratings: vec![0.0; 3],
            buckets: sketch.iter().map(|b| b.0).collect(),
            counts: sketch.iter().map(|b| b.1).collect(),
            weighted_buckets: Vec::new(),
            weights: Vec::new(),
        }
    }

    #[test]
    fn a_metric_reads_its_trend_devices_and_shares_from_the_merged_sketches() {
        let steps = [
            step(0, "desktop", &[1000.0, 1000.0, 1000.0, 5000.0]),
            step(0, "mobile", &[3000.0; 4]),
            step(7200, "mobile", &[2000.0, 2000.0]),
        ];
        let m = metric_report(
            MetricName::LCP,
            &steps,
            Weighting::SampleRate,
            Vec::new(),
            (0, 10_800, 3600),
        )
        .unwrap();
        let value = |v: f64| rum_clickhouse::value_of_bucket(rum_clickhouse::bucket_of(v));
        let all = m.all.unwrap();
        // 1000 x3, 2000 x2, 3000 x4, 5000: the 8th of 10 is 3000.
        assert_eq!((all.p75, all.samples), (value(3000.0), 10));
        assert_eq!(all.shares, [0.5, 0.4, 0.1]);
        let devices: Vec<(&str, f64, u64)> = m
            .devices
            .iter()
            .map(|d| (d.device.as_str(), d.p75, d.samples))
            .collect();
        assert_eq!(
            devices,
            [("desktop", value(1000.0), 4), ("mobile", value(3000.0), 6)]
        );
        assert!(m.trend_svg.starts_with("<svg") && m.histogram_svg.starts_with("<svg"));
        // Two steps with samples: two points, not joined (the hour between is empty).
        assert_eq!(m.trend_svg.matches("<circle").count(), 2);
        assert_eq!(m.trend_svg.matches("stroke=\"#1A56DB\"").count(), 2);
        let empty = metric_report(
            MetricName::INP,
            &[],
            Weighting::SampleRate,
            Vec::new(),
            (0, 3600, 60),
        )
        .unwrap();
        assert!(empty.all.is_none() && empty.trend_svg.is_empty() && empty.devices.is_empty());
    }

    #[test]
    fn attribution_rows_follow_the_worst_routes() {
        let routes = vec!["b".to_string(), "a".to_string()];
        let rows = vec![("a", 1), ("c", 9), ("a", 2), ("b", 3)];
        let rows = rows
            .into_iter()
            .map(|(r, n)| (r.to_string(), n))
            .collect::<Vec<_>>();
        let ordered = of_routes(rows, &routes, |r| &r.0);
        let n: Vec<i32> = ordered.iter().map(|r| r.1).collect();
        assert_eq!(n, [3, 1, 2]);
    }
}
