//! `rum query p75 --percentile N` and `--format csv` against a real ClickHouse 18.16 (one server, and a
//! cluster of 2 shards): known values inserted with `insert_raw_rows`; every percentile printed is the
//! bucket of the exact nearest-rank value (the `ceil(N * n / 100)`-th smallest), within
//! `(GAMMA - 1) / (GAMMA + 1)` of it; p75 is the analyst file's; bad `--percentile`s exit 2.

mod common;

use std::collections::BTreeMap;

use common::rum_output;
use rand::{Rng, SeedableRng};
use rand_distr::Distribution;
use rum_clickhouse::{bucket_of, value_of_bucket, ClickHouseConfig, VitalsRawRow, GAMMA};
use rum_schemas::MetricName;
use rum_testkit::{ClickHouseCluster, ClickHouseServer};
use serde_json::{Map, Value};

/// The largest relative error of a bucket's value: bucket `k` holds `(GAMMA^(k-1), GAMMA^k]` and stands
/// for `2 * GAMMA^k / (GAMMA + 1)`.
const ALPHA: f64 = (GAMMA - 1.0) / (GAMMA + 1.0);

/// One series: route, device, metric and its values.
struct Series {
    route: &'static str,
    device: &'static str,
    metric: MetricName,
    values: Vec<f64>,
}

fn series() -> Vec<Series> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(4);
    let lognormal = rand_distr::LogNormal::new(7.7, 0.5).unwrap();
    vec![
        // The two-point distribution: p60 is 2500, p61 4000.
        Series {
            route: "product-id",
            device: "mobile",
            metric: MetricName::LCP,
            values: [vec![2500.0; 600], vec![4000.0; 400]].concat(),
        },
        Series {
            route: "root",
            device: "desktop",
            metric: MetricName::LCP,
            values: (0..2000).map(|_| lognormal.sample(&mut rng)).collect(),
        },
        // 70% zeros: p50 is 0.
        Series {
            route: "root",
            device: "mobile",
            metric: MetricName::CLS,
            values: (0..1000)
                .map(|i| {
                    if i % 10 < 7 {
                        0.0
                    } else {
                        rng.random_range(0.01..0.4)
                    }
                })
                .collect(),
        },
        Series {
            route: "cart",
            device: "tablet",
            metric: MetricName::INP,
            values: (0..1500).map(|_| rng.random_range(16.0..800.0)).collect(),
        },
    ]
}

/// The rows of every series, received in the last 15 minutes before `now`.
fn raw_rows(series: &[Series], now: u32) -> Vec<VitalsRawRow> {
    let mut rows = Vec::new();
    for (s, serie) in series.iter().enumerate() {
        for (i, &value) in serie.values.iter().enumerate() {
            rows.push(VitalsRawRow {
                metric_id: format!("{s}-{i}"),
                kafka_offset: rows.len() as u64,
                // Spread over the shards of a cluster (`Distributed` by partition).
                kafka_partition: (i % 4) as u32,
                ..VitalsRawRow::measured(
                    "shop",
                    serie.route,
                    serie.device,
                    serie.metric,
                    value,
                    now - 900 + (i % 600) as u32,
                )
            });
        }
    }
    rows
}

/// The exact nearest-rank `p`-th percentile: the `ceil(p * n / 100)`-th smallest value.
fn exact_percentile(values: &[f64], p: u32) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_unstable_by(f64::total_cmp);
    let rank = (p as usize * sorted.len()).div_ceil(100);
    sorted[rank - 1]
}

fn now() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as u32
}

/// `rum query p75 --site shop --since 1h` and `args`: stdout, or a panic with stderr.
fn query(env: &[(&str, &str)], args: &[&str]) -> String {
    let out = rum_output(
        &[&["query", "p75", "--site", "shop", "--since", "1h"], args].concat(),
        env,
    );
    assert!(
        out.status.success(),
        "rum query {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// JSON lines by `route/device/metric`.
fn json_rows(text: &str) -> BTreeMap<String, Map<String, Value>> {
    text.lines()
        .map(|line| {
            let row: Map<String, Value> = serde_json::from_str(line).expect(line);
            let key =
                format!("{}/{}/{}", row["route"], row["device"], row["metric"]).replace('"', "");
            (key, row)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn percentiles_are_the_nearest_rank_buckets_in_json_csv_and_table() {
    let server = ClickHouseServer::start();
    let config = ClickHouseConfig {
        url: server.url.clone(),
        ..ClickHouseConfig::default()
    };
    rum_clickhouse::migrate(&config).await.unwrap();
    let series = series();
    let now = now();
    rum_clickhouse::insert_raw_rows(&config.client(), &raw_rows(&series, now))
        .await
        .unwrap();
    let env = [("RUM_CLICKHOUSE_URL", server.url.as_str())];

    let json = query(
        &env,
        &[
            "--percentile",
            "50",
            "--percentile",
            "99",
            "--format",
            "json",
        ],
    );
    let rows = json_rows(&json);
    assert_eq!(rows.len(), series.len(), "{json}");
    let mut worst: BTreeMap<u32, f64> = BTreeMap::new();
    for serie in &series {
        let key = format!("{}/{}/{}", serie.route, serie.device, serie.metric.as_str());
        let row = rows
            .get(&key)
            .unwrap_or_else(|| panic!("no {key} in {json}"));
        let keys: Vec<&str> = row.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "device",
                "good_share",
                "metric",
                "needs_improvement_share",
                "p50",
                "p75",
                "p99",
                "poor_share",
                "route",
                "samples",
                "site"
            ],
            "{key}"
        );
        assert_eq!(row["samples"], serie.values.len() as u64, "{key}");
        for p in [50, 75, 99] {
            let got = row[&format!("p{p}")].as_f64().unwrap();
            let exact = exact_percentile(&serie.values, p);
            // The value of the bucket holding the exact nearest-rank sample: what the SQL must pick.
            let bucket = value_of_bucket(bucket_of(exact));
            let err = if exact == 0.0 {
                assert_eq!(got, 0.0, "{key} p{p}");
                0.0
            } else {
                (got - exact).abs() / exact
            };
            assert!(
                err <= ALPHA + 1e-12,
                "{key} p{p}: {got}, exact {exact}: {err} above {ALPHA}"
            );
            assert!(
                (got - bucket).abs() <= bucket * 1e-9,
                "{key} p{p}: {got}, not the bucket of the rank ({bucket})"
            );
            let w = worst.entry(p).or_default();
            *w = w.max(err);
        }
    }
    for (p, err) in &worst {
        eprintln!("p{p}: worst relative error {:.4}%", err * 100.0);
    }

    // p75 is the analyst file's p75, unchanged.
    let file =
        rum_clickhouse::p75_by_route_device(&config.client(), "shop", None, None, 0, now + 60)
            .await
            .unwrap();
    assert_eq!(file.len(), series.len());
    for r in &file {
        let key = format!("{}/{}/{}", r.route, r.device, r.metric);
        assert_eq!(rows[&key]["p75"].as_f64(), Some(r.p75), "{key}");
        assert_eq!(
            rows[&key]["good_share"].as_f64(),
            Some(r.good_share),
            "{key}"
        );
    }

    // The rank exactly: 600 x 2500 + 400 x 4000 ms has its 600th sample (p60) at 2500, its 610th (p61) at 4000.
    let edge = json_rows(&query(
        &env,
        &[
            "--route",
            "product-id",
            "--percentile",
            "61",
            "--percentile",
            "60",
            "--percentile",
            "75",
            "--format",
            "json",
        ],
    ));
    let row = &edge["product-id/mobile/LCP"];
    assert_eq!(row.len(), 11, "p60, p61, p75 once: {row:?}");
    // ClickHouse's pow and Rust's powi differ in the last bits.
    let close = |name: &str, value: f64| {
        let got = row[name].as_f64().unwrap();
        assert!(
            (got - value).abs() <= value * 1e-9,
            "{name}: {got}, not {value}"
        );
    };
    close("p60", value_of_bucket(bucket_of(2500.0)));
    close("p61", value_of_bucket(bucket_of(4000.0)));
    close("p75", value_of_bucket(bucket_of(4000.0)));

    // Without --percentile: today's fields only.
    let plain = json_rows(&query(&env, &["--format", "json"]));
    for row in plain.values() {
        assert_eq!(row.len(), 9, "{row:?}");
        assert!(row.contains_key("p75"));
    }

    // CSV: a header, then the JSON's rows and numbers.
    let csv = query(
        &env,
        &[
            "--percentile",
            "99",
            "--percentile",
            "50",
            "--format",
            "csv",
        ],
    );
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "site,route,device,metric,p50,p75,p99,samples,good_share,needs_improvement_share,poor_share"
    );
    assert_eq!(lines.len(), 1 + series.len(), "{csv}");
    let header: Vec<&str> = lines[0].split(',').collect();
    for line in &lines[1..] {
        let cells: Vec<&str> = line.split(',').collect();
        assert_eq!(cells.len(), header.len(), "{line}");
        let key = format!("{}/{}/{}", cells[1], cells[2], cells[3]);
        let row = &rows[&key];
        assert_eq!(cells[0], "shop");
        for (name, cell) in header.iter().zip(&cells).skip(4) {
            assert_eq!(
                cell.parse::<f64>().ok(),
                row[*name].as_f64(),
                "{key} {name}"
            );
        }
    }

    // The table: a column per percentile.
    let table = query(&env, &["--percentile", "99", "--percentile", "50"]);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "site",
            "route",
            "device",
            "metric",
            "p50",
            "p75",
            "p99",
            "samples",
            "good",
            "needs_improvement",
            "poor"
        ]
    );
    assert_eq!(table.lines().count(), 1 + series.len(), "{table}");

    // Bad percentiles: one error naming the flag, exit 2, nothing on stdout.
    for bad in [
        &["--percentile", "100"][..],
        &["--percentile", "0"],
        &["--percentile", "abc"],
        &["--percentile", "50.5"],
        &["--percentile=-1"],
    ] {
        let out = rum_output(&[&["query", "p75", "--site", "shop"], bad].concat(), &env);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {stderr}");
        assert!(
            stderr.contains("--percentile") && stderr.contains("an integer from 1 to 99"),
            "{bad:?}: {stderr}"
        );
        assert!(out.stdout.is_empty());
    }
}

/// Over a cluster's `Distributed` `vitals_1m` (18.16 sends the grouping level to the shards as text),
/// the same answer as one server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_answers_like_one_server() {
    let series = series();
    let now = now();
    let rows = raw_rows(&series, now);
    let args = [
        "--percentile",
        "50",
        "--percentile",
        "90",
        "--percentile",
        "99",
        "--format",
        "csv",
    ];

    let server = ClickHouseServer::start();
    let single = ClickHouseConfig {
        url: server.url.clone(),
        ..ClickHouseConfig::default()
    };
    rum_clickhouse::migrate(&single).await.unwrap();
    rum_clickhouse::insert_raw_rows(&single.client(), &rows)
        .await
        .unwrap();
    let one = query(&[("RUM_CLICKHOUSE_URL", server.url.as_str())], &args);
    assert_eq!(one.lines().count(), 1 + series.len(), "{one}");

    let cluster = ClickHouseCluster::start(2, 1);
    let config = ClickHouseConfig {
        url: cluster.url().to_string(),
        cluster: Some(cluster.cluster_name().to_string()),
        ..ClickHouseConfig::default()
    };
    rum_clickhouse::migrate(&config).await.unwrap();
    rum_clickhouse::insert_raw_rows(
        &config.client().with_setting("insert_distributed_sync", "1"),
        &rows,
    )
    .await
    .unwrap();
    // Both shards hold part of the sketches.
    for node in cluster.nodes() {
        let stored: u64 = node
            .query("SELECT count() FROM rum_local.vitals_1m WHERE site = 'shop'")
            .trim()
            .parse()
            .unwrap();
        assert!(stored > 0, "{} holds no rollup row", node.url);
    }
    let env = [
        ("RUM_CLICKHOUSE_URL", cluster.url()),
        ("RUM_CLICKHOUSE_CLUSTER", cluster.cluster_name()),
    ];
    assert_eq!(query(&env, &args), one);
}
