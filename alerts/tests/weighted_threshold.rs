//! "p75 above the threshold" with each sample weighing `1 / sample_rate` (`alerts.weighting =
//! "sample_rate"`, the default), decided from the weighted rating sums of `vitals_1m` as `rum query`
//! reads its weighted p75: above the poor threshold exactly when `4 w_poor > W`, the good one when
//! `4 (w_needs + w_poor) > W`. Against a real ClickHouse 18.16, one server and a cluster of two
//! shards (each series split over both). With mixed sample rates the weighted and the unweighted
//! decisions differ; rows written before migration 005 (no weighted states) are decided from their
//! counts; `min_samples` counts samples, not weights.

mod common;

use std::collections::BTreeMap;

use common::{samples, MINUTE, STEP, T0};
use rum_alerts::{Alert, AlertState, Evaluator, Rules, Weighting};
use rum_clickhouse::{
    insert_raw_rows, migrate, ClickHouseConfig, P75Row, VitalsRawRow, Weighting as QueryWeighting,
};
use rum_testkit::{ClickHouseCluster, ClickHouseServer};

/// Six 5-minute steps of data in `[T0, END)`, evaluated at `END`.
const END: u32 = T0 + 30 * MINUTE;

/// LCP of `site`, `route`, mobile: in every step of the window, `count` samples of `value` sent at
/// `rate` for each `(value, count, rate)` of `mix`, spread over the step's minutes and over Kafka
/// partitions 0 to 3 (both shards of a cluster). The LCP element is `img.slow` above 4000 ms,
/// `img.fast` otherwise.
fn lcp(site: &str, route: &str, mix: &[(f64, u32, f64)]) -> Vec<VitalsRawRow> {
    let mut rows = Vec::new();
    for step in (T0..END).step_by(STEP as usize) {
        for &(value, count, rate) in mix {
            for j in 0..5 {
                let minute = step + j * MINUTE;
                let n = count / 5 + u32::from(j < count % 5);
                let mut part = samples(
                    site,
                    route,
                    "mobile",
                    "LCP",
                    value,
                    minute,
                    minute + MINUTE,
                    n,
                );
                for row in &mut part {
                    row.sample_rate = rate;
                    row.target = if value > 4000.0 {
                        "img.slow"
                    } else {
                        "img.fast"
                    }
                    .into();
                }
                rows.extend(part);
            }
        }
    }
    for (i, row) in rows.iter_mut().enumerate() {
        row.metric_id = format!("{site}-{route}-{i}");
        row.kafka_partition = i as u32 % 4;
    }
    rows
}

fn series() -> Vec<VitalsRawRow> {
    [
        // 700 good samples at rate 1 and 200 poor ones at 0.25 a step: 200 of 900 samples are poor
        // (4 x 200 <= 900: not above 4000), while they stand for 800 of 1500 page loads
        // (4 x 800 > 1500: above). Weighted p75 4500, unweighted 2500.
        lcp(
            "weighted",
            "rare-poor",
            &[(2500.0, 700, 1.0), (4500.0, 200, 0.25)],
        ),
        // The other way: 300 good at 0.1 (3000 page loads) and 200 poor at 1.
        lcp(
            "weighted",
            "rare-good",
            &[(2500.0, 300, 0.1), (4500.0, 200, 1.0)],
        ),
        // A weighted tie: W = 600 + 2 x 100 = 800 and 4 w_poor = 800: weighted p75 is 2500, not above.
        lcp("weighted", "tie", &[(2500.0, 600, 1.0), (4500.0, 100, 0.5)]),
        // One more poor sample at 0.5 a step: 4 x 202 > 802.
        lcp(
            "weighted",
            "tipped",
            &[(2500.0, 600, 1.0), (4500.0, 101, 0.5)],
        ),
        // A tie with weights that are not exact in binary (1 / 0.3): not above, as unweighted.
        lcp(
            "weighted",
            "same-rate",
            &[(2500.0, 750, 0.3), (4500.0, 250, 0.3)],
        ),
        // Poor and heavy (each sample 100 page loads), but 8 samples a step: 48 < min_samples 50.
        lcp("weighted", "thin", &[(4500.0, 8, 0.01)]),
        // At the good threshold (2500): 30 needs-improvement samples at 0.5 among 130 (4 x 30 <= 130),
        // 60 of 160 page loads (4 x 60 > 160).
        lcp(
            "weighted-good",
            "rare-needs",
            &[(2000.0, 100, 1.0), (3000.0, 30, 0.5)],
        ),
    ]
    .concat()
}

/// What migration 004's view wrote (no weighted rating sums, no weighted sketch): 100 LCP samples a
/// minute over the window, 70 of 2500 ms and 30 of 4500 ms (4 x 30 > 100: above 4000 by the counts),
/// stored as if sampled at 0.25.
fn old_rows_sql(table: &str) -> String {
    format!(
        "INSERT INTO {table} (minute, site, route, device, metric, samples, weighted_samples, good, \
           needs_improvement, poor, sketch) \
         SELECT toDateTime(m), 'old', 'root', 'mobile', 'LCP', countState(), sumState(4.0), \
           sumState(toUInt64(v <= 2500)), sumState(toUInt64(v > 2500 AND v <= 4000)), \
           sumState(toUInt64(v > 4000)), sumMapState([toInt16(ceil(log(v) / log(1.01005)))], [toUInt64(1)]) \
         FROM (SELECT {T0} + 60 * intDiv(number, 100) AS m, if(number % 100 < 70, 2500.0, 4500.0) AS v \
               FROM system.numbers LIMIT 3000) \
         GROUP BY m"
    )
}

/// Route and p75 annotation of each firing alert.
fn firing(alerts: &[Alert]) -> BTreeMap<String, f64> {
    alerts
        .iter()
        .filter(|a| a.state == AlertState::Firing)
        .map(|a| {
            assert_eq!(a.name(), "WebVitalsLCPP75Poor", "{a:?}");
            (
                a.label("route").to_string(),
                a.annotations["p75"].parse().unwrap(),
            )
        })
        .collect()
}

fn rules(site: &str, threshold: f64) -> Rules {
    let mut rules = Rules {
        sites: vec![site.into()],
        ..Default::default()
    };
    rules.lcp.threshold = threshold;
    rules.beacons_stopped.enabled = false;
    rules
}

async fn evaluate(
    config: &ClickHouseConfig,
    site: &str,
    threshold: f64,
    weighting: Weighting,
) -> Vec<Alert> {
    Evaluator::new(config, rules(site, threshold), MINUTE)
        .with_weighting(weighting)
        .evaluate_at(END)
        .await
        .unwrap()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() / b < 0.01
}

async fn decides_weighted(
    config: &ClickHouseConfig,
    writers: &[clickhouse::Client],
    old: (&ClickHouseServer, &str),
) {
    let rows = series();
    for (i, writer) in writers.iter().enumerate() {
        let part: Vec<VitalsRawRow> = rows
            .iter()
            .filter(|r| r.kafka_partition as usize % writers.len() == i)
            .cloned()
            .collect();
        insert_raw_rows(writer, &part)
            .await
            .expect("insert vitals_raw");
    }
    old.0.query(&old_rows_sql(old.1));

    // Weighted (the default): the rarely sampled poor samples weigh; the tie is not above.
    let weighted = evaluate(config, "weighted", 4000.0, Weighting::SampleRate).await;
    let fired = firing(&weighted);
    assert_eq!(
        fired.keys().collect::<Vec<_>>(),
        ["rare-poor", "tipped"],
        "{weighted:?}"
    );
    // The p75 shown is the weighted sketch's; the samples are counted, not weighed.
    assert!(close(fired["rare-poor"], 4500.0), "{fired:?}");
    let rare = weighted
        .iter()
        .find(|a| a.label("route") == "rare-poor")
        .unwrap();
    assert_eq!(rare.annotations["samples"], "5400");
    // Its top element, read from vitals_raw (through the Distributed table on a cluster): counted.
    assert_eq!(rare.annotations["top_target"], "img.fast");
    assert_eq!(rare.annotations["top_target_share"], "0.78");
    // The default evaluator weighs.
    let default = Evaluator::new(config, rules("weighted", 4000.0), MINUTE)
        .evaluate_at(END)
        .await
        .unwrap();
    assert_eq!(default, weighted);

    // Unweighted: the other way round.
    let unweighted = evaluate(config, "weighted", 4000.0, Weighting::Unweighted).await;
    assert_eq!(
        firing(&unweighted).keys().collect::<Vec<_>>(),
        ["rare-good"],
        "{unweighted:?}"
    );
    assert!(close(firing(&unweighted)["rare-good"], 4500.0));

    // The same decision as `rum query`'s weighted poor share above a quarter, and the same p75.
    let client = config.client();
    for route in [
        "rare-poor",
        "rare-good",
        "tie",
        "tipped",
        "same-rate",
        "thin",
    ] {
        let rows = P75Row::with_percentiles(
            &client,
            "weighted",
            Some(route),
            None,
            T0,
            END,
            &[],
            QueryWeighting::SampleRate,
        )
        .await
        .unwrap();
        let row = &rows[0].0;
        if route == "same-rate" {
            assert!((row.poor_share - 0.25).abs() < 1e-12, "{row:?}");
        } else if route != "thin" {
            assert_eq!(
                row.poor_share > 0.25,
                fired.contains_key(route),
                "{route}: {row:?}"
            );
        }
        if let Some(p75) = fired.get(route) {
            assert_eq!(*p75, row.p75, "{route}");
        }
    }

    // At the good threshold.
    let good = evaluate(config, "weighted-good", 2500.0, Weighting::SampleRate).await;
    assert_eq!(
        firing(&good).keys().collect::<Vec<_>>(),
        ["rare-needs"],
        "{good:?}"
    );
    assert!(
        evaluate(config, "weighted-good", 2500.0, Weighting::Unweighted)
            .await
            .is_empty()
    );

    // Rows without weighted states: decided from their counts, the p75 from their sketch, either way.
    for weighting in [Weighting::SampleRate, Weighting::Unweighted] {
        let alerts = evaluate(config, "old", 4000.0, weighting).await;
        let fired = firing(&alerts);
        assert_eq!(fired.keys().collect::<Vec<_>>(), ["root"], "{alerts:?}");
        assert!(close(fired["root"], 4500.0), "{fired:?}");
        assert_eq!(alerts[0].annotations["samples"], "3000");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn weighted_p75_is_decided_from_the_weighted_rating_sums() {
    let server = ClickHouseServer::start();
    let config = common::database(&server).await;
    decides_weighted(&config, &[config.client()], (&server, "rum.vitals_1m")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn weighted_p75_is_decided_from_the_weighted_rating_sums_on_a_cluster() {
    let cluster = ClickHouseCluster::start(2, 1);
    let config = ClickHouseConfig {
        url: cluster.url().to_string(),
        cluster: Some(cluster.cluster_name().to_string()),
        ..Default::default()
    };
    migrate(&config)
        .await
        .expect("migrations apply on the cluster");
    let writers: Vec<clickhouse::Client> = [1, 2]
        .map(|shard| {
            ClickHouseConfig {
                url: cluster.node(shard, 1).url.clone(),
                database: "rum_local".into(),
                ..Default::default()
            }
            .client()
        })
        .into();
    decides_weighted(
        &config,
        &writers,
        (cluster.node(2, 1), "rum_local.vitals_1m"),
    )
    .await;
    for shard in [1, 2] {
        let routes = cluster.node(shard, 1).query(
            "SELECT count() FROM (SELECT DISTINCT site, route FROM rum_local.vitals_1m WHERE site LIKE 'weighted%')",
        );
        assert_eq!(routes.trim(), "7", "shard {shard}");
    }
}
