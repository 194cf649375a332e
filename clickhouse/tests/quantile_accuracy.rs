//! Every percentile `rum query` reads (p50, p75, p90, p95, p99), unweighted and weighted by
//! `1 / sample_rate`, from the stored sketches of a real ClickHouse 18.16 against the exact
//! (weighted) nearest rank computed in Rust, for generated web-vital-like values sampled at mixed
//! rates (1, 0.5, 0.25, 0.1 and 0.01, changing by route and hour): within the sketch's bound,
//! (gamma - 1) / (gamma + 1) = 0.49999%, over single minutes, 30-minute merges and the whole window.
//!
//! Run with `--nocapture` for the table of worst relative errors.

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, LogNormal, Pareto};
use rum_clickhouse::{
    exact_weighted_percentile, insert_raw_rows, migrate, ClickHouseConfig, P75Row, VitalsRawRow,
    Weighting, GAMMA,
};
use rum_schemas::MetricName;
use rum_testkit::ClickHouseServer;

/// 2023-11-15 00:00:00 UTC.
const START: u32 = 1_700_006_400;
const MINUTES: u32 = 240;
const ROUTES: [&str; 2] = ["root", "product-id"];
const METRICS: [&str; 3] = ["LCP", "INP", "CLS"];
/// Sample rates whose weights (1, 2, 4, 10, 100) add up exactly in binary, so ClickHouse and Rust
/// walk the same cumulative weights and the comparison is of the sketch alone.
const RATES: [f64; 5] = [1.0, 0.5, 0.25, 0.1, 0.01];
const PERCENTILES: [u8; 5] = [50, 75, 90, 95, 99];
const SEED: u64 = 0x9a11_0017;

/// (minute index, route, metric) -> (value, sample rate).
type Samples = BTreeMap<(u32, &'static str, &'static str), Vec<(f64, f64)>>;

fn generate() -> (Samples, Vec<VitalsRawRow>) {
    let mut rng = StdRng::seed_from_u64(SEED);
    let lcp: LogNormal<f64> = LogNormal::new(2200f64.ln(), 0.65).unwrap();
    let inp: Pareto<f64> = Pareto::new(40.0, 1.1).unwrap();
    let cls = LogNormal::new(0.04f64.ln(), 1.4).unwrap();
    let mut samples = Samples::new();
    let mut rows = Vec::new();
    for minute in 0..MINUTES {
        for (r, route) in ROUTES.into_iter().enumerate() {
            // The site changes its sampling per route every hour; within a minute, a few loads come
            // from another configuration (a cached old collector).
            let rate = RATES[(minute as usize / 60 + r * 2) % RATES.len()];
            for metric in METRICS {
                let n = rng.random_range(3..=30);
                let list = samples.entry((minute, route, metric)).or_default();
                for _ in 0..n {
                    let value = match metric {
                        "LCP" => lcp.sample(&mut rng).min(600_000.0),
                        "INP" => inp.sample(&mut rng).round().min(600_000.0),
                        _ if rng.random_bool(0.5) => 0.0,
                        _ => cls.sample(&mut rng).min(10.0),
                    };
                    let rate = if rng.random_bool(0.1) {
                        RATES[rng.random_range(0..RATES.len())]
                    } else {
                        rate
                    };
                    list.push((value, rate));
                    rows.push(VitalsRawRow {
                        metric_id: format!("q-{}", rows.len()),
                        kafka_offset: rows.len() as u64,
                        sample_rate: rate,
                        ..VitalsRawRow::measured(
                            "shop",
                            route,
                            "mobile",
                            MetricName::parse(metric).unwrap(),
                            value,
                            START + minute * 60 + rng.random_range(0..60),
                        )
                    });
                }
            }
        }
    }
    (samples, rows)
}

/// The worst relative error per percentile.
#[derive(Default, Clone, Copy)]
struct Worst([f64; PERCENTILES.len()], usize);

impl Worst {
    fn check(&mut self, what: &str, got: &[(u8, f64)], values: &[(f64, f64)]) {
        let alpha = (GAMMA - 1.0) / (GAMMA + 1.0);
        for (i, &(p, estimate)) in got.iter().enumerate() {
            let exact = exact_weighted_percentile(values, p).unwrap();
            let error = if exact == 0.0 {
                assert_eq!(estimate, 0.0, "{what} p{p}: exact 0, sketch {estimate}");
                0.0
            } else {
                (estimate - exact).abs() / exact
            };
            assert!(
                error <= alpha + 1e-12,
                "{what} p{p}: {estimate} vs exact {exact} ({:.5}%, n = {})",
                error * 100.0,
                values.len()
            );
            self.0[i] = self.0[i].max(error);
        }
        self.1 += 1;
    }
}

#[tokio::test]
async fn every_percentile_weighted_or_not_is_within_the_sketch_bound() {
    let (samples, rows) = generate();
    let server = ClickHouseServer::start();
    let config = ClickHouseConfig {
        url: server.url.clone(),
        ..ClickHouseConfig::default()
    };
    migrate(&config).await.unwrap();
    let client = config.client();
    for chunk in rows.chunks(5_000) {
        insert_raw_rows(&client, chunk).await.unwrap();
    }
    let extra: Vec<u8> = PERCENTILES.into_iter().filter(|&p| p != 75).collect();
    let mut table: Vec<(&str, Weighting, Worst)> = Vec::new();
    for weighting in [Weighting::Unweighted, Weighting::SampleRate] {
        for (window, span, step) in [
            ("single minutes", 1u32, 7usize),
            ("30-minute merges", 30, 30),
            ("4-hour merge", MINUTES, MINUTES as usize),
        ] {
            let mut worst = Worst::default();
            for start in (0..MINUTES).step_by(step) {
                let got = P75Row::with_percentiles(
                    &client,
                    "shop",
                    None,
                    None,
                    START + start * 60,
                    START + (start + span) * 60,
                    &extra,
                    weighting,
                )
                .await
                .unwrap();
                assert_eq!(got.len(), ROUTES.len() * METRICS.len());
                for (row, values) in &got {
                    let found: Vec<(f64, f64)> = samples
                        .iter()
                        .filter(|(k, _)| {
                            (start..start + span).contains(&k.0)
                                && k.1 == row.route
                                && k.2 == row.metric
                        })
                        .flat_map(|(_, v)| v.iter().copied())
                        .map(|(v, rate)| match weighting {
                            Weighting::SampleRate => (v, 1.0 / rate),
                            Weighting::Unweighted => (v, 1.0),
                        })
                        .collect();
                    assert_eq!(row.samples, found.len() as u64, "{row:?}");
                    let mut percentiles: Vec<(u8, f64)> =
                        extra.iter().copied().zip(values.iter().copied()).collect();
                    percentiles.push((75, row.p75));
                    percentiles.sort_unstable_by_key(|&(p, _)| p);
                    worst.check(
                        &format!(
                            "{weighting:?} {window} from minute {start} {}/{}",
                            row.route, row.metric
                        ),
                        &percentiles,
                        &found,
                    );
                }
            }
            table.push((window, weighting, worst));
        }
    }
    println!(
        "{} rows over {MINUTES} minutes, sample rates {RATES:?} (seed {SEED:#x}); worst relative error:",
        rows.len()
    );
    println!(
        "{:<12} {:<17} {:>7}  {}",
        "weighting",
        "window",
        "checked",
        PERCENTILES
            .map(|p| format!("{:>8}", format!("p{p}")))
            .join("")
    );
    for (window, weighting, worst) in &table {
        println!(
            "{:<12} {:<17} {:>7}  {}",
            format!("{weighting:?}"),
            window,
            worst.1,
            worst.0.map(|e| format!("{:>7.4}%", e * 100.0)).join("")
        );
    }
}
