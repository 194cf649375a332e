//! p75 from the stored sketches (the SQL of `clickhouse/queries/`) against the exact nearest-rank
//! p75 computed in Rust, on a real ClickHouse 18.16, for generated distributions shaped like real web
//! vitals (fixed seed): within 1% relative error for single minutes, 30-minute merges and a 1-day merge.
//!
//! Run with `--nocapture` to see the worst errors.

use std::collections::BTreeMap;

use clickhouse::Row;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, LogNormal, Pareto};
use rum_clickhouse::{
    exact_quantile, insert_raw_rows, migrate, ClickHouseConfig, P75Row, RatingSharesRow,
    VitalsRawRow, GAMMA_LITERAL, P75_BY_ROUTE_DEVICE, RATING_SHARES, ZERO_BUCKET,
};
use rum_schemas::MetricName;
use rum_testkit::ClickHouseServer;
use serde::Deserialize;

/// 2023-11-15 00:00:00 UTC.
const DAY: u32 = 1_700_006_400;
const MINUTES: u32 = 1440;
const ROUTES: [&str; 2] = ["root", "product-id"];
const DEVICES: [&str; 2] = ["mobile", "desktop"];
const METRICS: [&str; 3] = ["LCP", "INP", "CLS"];
const SEED: u64 = 0x5eed_0075;
/// The bound the design promises; the sketch's own bound is (gamma - 1) / (gamma + 1) ≈ 0.5%.
const MAX_RELATIVE_ERROR: f64 = 0.01;

/// The generated distributions:
/// * LCP: log-normal, median 2.2 s, sigma 0.65 (p75 near 3.4 s);
/// * INP: Pareto (scale 40 ms, shape 1.1), heavy-tailed, whole milliseconds (ties), at most 10 min;
/// * CLS: half exactly 0, the rest log-normal (median 0.04, sigma 1.4), a long tail.
struct Generators {
    lcp: LogNormal<f64>,
    inp: Pareto<f64>,
    cls: LogNormal<f64>,
}

impl Generators {
    fn new() -> Self {
        Self {
            lcp: LogNormal::new(2200f64.ln(), 0.65).unwrap(),
            inp: Pareto::new(40.0, 1.1).unwrap(),
            cls: LogNormal::new(0.04f64.ln(), 1.4).unwrap(),
        }
    }

    fn sample(&self, metric: &str, rng: &mut StdRng) -> f64 {
        match metric {
            "LCP" => self.lcp.sample(rng).min(600_000.0),
            "INP" => self.inp.sample(rng).round().min(600_000.0),
            "CLS" => {
                if rng.random_bool(0.5) {
                    0.0
                } else {
                    self.cls.sample(rng).min(10.0)
                }
            }
            _ => unreachable!(),
        }
    }
}

/// (minute index, route, device, metric) -> values.
type Samples = BTreeMap<(u32, &'static str, &'static str, &'static str), Vec<f64>>;

fn generate() -> (Samples, Vec<VitalsRawRow>) {
    let mut rng = StdRng::seed_from_u64(SEED);
    let generators = Generators::new();
    let mut samples = Samples::new();
    let mut rows = Vec::new();
    for minute in 0..MINUTES {
        // Busier by day than by night: 3 to 40 samples a minute per route, device and metric.
        let hour = minute / 60;
        let busy = if (8..22).contains(&hour) { 40 } else { 12 };
        for route in ROUTES {
            for device in DEVICES {
                for metric in METRICS {
                    let n = rng.random_range(3..=busy);
                    let values = samples.entry((minute, route, device, metric)).or_default();
                    for _ in 0..n {
                        let value = generators.sample(metric, &mut rng);
                        let at = DAY + minute * 60 + rng.random_range(0..60);
                        values.push(value);
                        rows.push(VitalsRawRow {
                            metric_id: format!("v5-{}", rows.len()),
                            kafka_offset: rows.len() as u64,
                            ..VitalsRawRow::measured(
                                "shop",
                                route,
                                device,
                                MetricName::parse(metric).unwrap(),
                                value,
                                at,
                            )
                        });
                    }
                }
            }
        }
    }
    (samples, rows)
}

/// Worst relative error per metric, with where it happened.
#[derive(Default)]
struct Worst {
    by_metric: BTreeMap<String, (f64, String)>,
    checked: usize,
}

impl Worst {
    fn check(&mut self, metric: &str, estimate: f64, values: &[f64], what: &str) {
        let exact = exact_quantile(values, 0.75).unwrap();
        let error = if exact == 0.0 {
            assert_eq!(
                estimate, 0.0,
                "{what}: exact p75 is 0, the sketch says {estimate}"
            );
            0.0
        } else {
            (estimate - exact).abs() / exact
        };
        assert!(
            error <= MAX_RELATIVE_ERROR,
            "{what}: p75 {estimate} vs exact {exact} ({:.4}% off, n = {})",
            error * 100.0,
            values.len()
        );
        self.checked += 1;
        let entry = self
            .by_metric
            .entry(metric.to_string())
            .or_insert((0.0, String::new()));
        if error >= entry.0 {
            *entry = (
                error,
                format!("{what}: {estimate:.6} vs {exact:.6}, n = {}", values.len()),
            );
        }
    }

    fn print(&self, window: &str) {
        for (metric, (error, at)) in &self.by_metric {
            println!(
                "p75 worst relative error, {window:>16}, {metric:>4}: {:.4}% ({at})",
                error * 100.0
            );
        }
        println!("  ({} p75 values checked for {window})", self.checked);
    }

    fn overall(&self) -> f64 {
        self.by_metric.values().map(|(e, _)| *e).fold(0.0, f64::max)
    }
}

#[derive(Debug, Row, Deserialize)]
struct MinuteP75 {
    minute: u32,
    route: String,
    device: String,
    metric: String,
    samples: u64,
    p75: f64,
}

#[tokio::test]
async fn p75_from_sketches_is_within_one_percent_of_the_exact_p75() {
    let (samples, rows) = generate();
    let server = ClickHouseServer::start();
    let config = ClickHouseConfig {
        url: server.url.clone(),
        ..ClickHouseConfig::default()
    };
    migrate(&config).await.unwrap();
    let client = config.client();
    // Batches of about what a consumer writes: many parts, merged (or not yet) by the server.
    for chunk in rows.chunks(20_000) {
        insert_raw_rows(&client, chunk).await.unwrap();
    }
    println!(
        "{} rows over {MINUTES} minutes (seed {SEED:#x})",
        rows.len()
    );
    let mut summary = Vec::new();

    // Single minutes: every minute of every route, device and metric, in one query with the same
    // p75 expression as the query files.
    let per_minute: Vec<MinuteP75> = client
        .query(&format!(
            "SELECT toUInt32(minute) AS minute, route, device, metric, toUInt64(n) AS samples, \
             toFloat64(if((sk.1)[idx] = {ZERO_BUCKET}, 0, 2 * pow({GAMMA_LITERAL}, (sk.1)[idx]) / ({GAMMA_LITERAL} + 1))) AS p75 \
             FROM (SELECT minute, route, device, metric, countMerge(samples) AS n, sumMapMerge(sketch) AS sk, \
             arrayFirstIndex(c -> c >= 0.75 * n, arrayCumSum(sk.2)) AS idx \
             FROM vitals_1m WHERE site = ? GROUP BY minute, route, device, metric) \
             ORDER BY minute, route, device, metric"
        ))
        .bind("shop")
        .fetch_all()
        .await
        .unwrap();
    assert_eq!(per_minute.len(), samples.len());
    let mut worst = Worst::default();
    for r in &per_minute {
        let index = (r.minute - DAY) / 60;
        let label = |names: &[&'static str], name: &str| names.iter().copied().find(|n| *n == name);
        let key = (|| {
            Some((
                index,
                label(&ROUTES, &r.route)?,
                label(&DEVICES, &r.device)?,
                label(&METRICS, &r.metric)?,
            ))
        })();
        let values = key
            .and_then(|k| samples.get(&k))
            .unwrap_or_else(|| panic!("unexpected row {r:?}"));
        assert_eq!(r.samples, values.len() as u64, "{r:?}");
        worst.check(
            &r.metric,
            r.p75,
            values,
            &format!("minute {index} {}/{}", r.route, r.device),
        );
    }
    worst.print("single minutes");
    summary.push(("single minutes", worst.overall()));

    // 30-minute windows and the whole day, through clickhouse/queries/p75_by_route_device.sql.
    for (window, span) in [("30-minute merges", 30u32), ("1-day merge", MINUTES)] {
        let mut worst = Worst::default();
        for start in (0..MINUTES).step_by(span as usize) {
            let got: Vec<P75Row> = client
                .query(&P75_BY_ROUTE_DEVICE.sql())
                .bind("shop")
                .bind(DAY + start * 60)
                .bind(DAY + (start + span) * 60)
                .fetch_all()
                .await
                .unwrap();
            assert_eq!(got.len(), ROUTES.len() * DEVICES.len() * METRICS.len());
            for r in &got {
                let values: Vec<f64> = samples
                    .iter()
                    .filter(|(k, _)| {
                        (start..start + span).contains(&k.0)
                            && k.1 == r.route
                            && k.2 == r.device
                            && k.3 == r.metric
                    })
                    .flat_map(|(_, v)| v.iter().copied())
                    .collect();
                assert_eq!(r.samples, values.len() as u64, "{r:?}");
                worst.check(
                    &r.metric,
                    r.p75,
                    &values,
                    &format!("minutes {start}..{} {}/{}", start + span, r.route, r.device),
                );
            }
        }
        worst.print(window);
        summary.push((window, worst.overall()));
    }

    // The whole day with routes merged too (rating_shares.sql: per metric and device).
    let shares: Vec<RatingSharesRow> = client
        .query(&RATING_SHARES.sql())
        .bind("shop")
        .bind(DAY)
        .bind(DAY + MINUTES * 60)
        .fetch_all()
        .await
        .unwrap();
    assert_eq!(shares.len(), DEVICES.len() * METRICS.len());
    let mut worst = Worst::default();
    for s in &shares {
        let values: Vec<f64> = samples
            .iter()
            .filter(|(k, _)| k.2 == s.device && k.3 == s.metric)
            .flat_map(|(_, v)| v.iter().copied())
            .collect();
        assert_eq!(s.samples, values.len() as u64);
        assert_eq!(s.estimated_page_loads, values.len() as f64);
        let total = s.good_share + s.needs_improvement_share + s.poor_share;
        assert!((total - 1.0).abs() < 1e-9, "{s:?}");
        worst.check(
            &s.metric,
            s.p75,
            &values,
            &format!("day, all routes, {}", s.device),
        );
    }
    worst.print("1 day, all routes");
    summary.push(("1 day, all routes", worst.overall()));

    for (window, error) in summary {
        println!("worst p75 error over {window}: {:.4}%", error * 100.0);
    }
}
