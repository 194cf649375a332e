//! Every analyst query of `clickhouse/queries/` against a real ClickHouse 18.16, on known data
//! inserted into `vitals_raw` (the materialized view fills `vitals_1m`).

use std::collections::{BTreeMap, BTreeSet};

use clickhouse::Row;
use rum_clickhouse::{
    exact_weighted_percentile, insert_raw_rows, migrate, p75_by_route_device, quantile, sketch_of,
    top_inp_targets, top_lcp_elements, weighted_percentile, weighted_sketch_of, AnalystQuery,
    ClickHouseConfig, Dimension, DimensionRow, InpTargetRow, LcpElementRow, P75Row,
    RatingSharesRow, VitalsRawRow, Weighting, P75_BY_DIMENSION, P75_BY_ROUTE_DEVICE,
    P75_TREND_HOURLY, QUERIES, RATING_SHARES, TOP_INP_TARGETS, TOP_LCP_ELEMENTS, WORST_ROUTES,
};
use rum_schemas::MetricName;
use rum_testkit::ClickHouseServer;
use serde::Deserialize;

/// The start of an hour (2023-11-14 22:00:00 UTC); the window is [T0, T0 + 2 h).
const T0: u32 = 1_699_999_200;
const END: u32 = T0 + 7200;

fn row(site: &str, route: &str, device: &str, metric: &str, value: f64, at: u32) -> VitalsRawRow {
    row_rate(site, route, device, metric, value, at, 1.0)
}

fn row_rate(
    site: &str,
    route: &str,
    device: &str,
    metric: &str,
    value: f64,
    at: u32,
    sample_rate: f64,
) -> VitalsRawRow {
    VitalsRawRow {
        metric_id: format!("v5-{at}-{value}"),
        sample_rate,
        ..VitalsRawRow::measured(
            site,
            route,
            device,
            MetricName::parse(metric).unwrap(),
            value,
            at,
        )
    }
}

/// The known data set: (site, route, device, metric) -> rows inside the window, plus rows outside it.
fn data() -> (Vec<VitalsRawRow>, Vec<VitalsRawRow>) {
    let mut inside = Vec::new();
    // shop/root/mobile LCP: 100, 200, ..., 6000 ms over 90 minutes (25 good, 15 needs-improvement, 20 poor).
    // Each with attribution (every third one's element is a heading, the others the hero image,
    // subparts 10/20/30/40% of the value), a browser, release and RTT bucket, and mixed sample rates.
    for i in 1..=60u32 {
        let v = f64::from(100 * i);
        let hero = i % 3 != 0;
        inside.push(VitalsRawRow {
            sample_rate: [1.0, 0.5, 0.25, 0.1][(i % 4) as usize],
            browser: ["chrome", "safari", "firefox"][(i % 3) as usize].into(),
            release: if i <= 30 { "v1" } else { "v2" }.into(),
            rtt: ["0-100", "100-300", "300-1000", "1000+"][(i % 4) as usize].into(),
            target: if hero { "#hero>img" } else { "h1.title" }.into(),
            resource_url: if hero {
                "https://cdn.example/hero.jpg"
            } else {
                ""
            }
            .into(),
            time_to_first_byte: Some(0.1 * v),
            resource_load_delay: Some(0.2 * v),
            resource_load_duration: Some(0.3 * v),
            element_render_delay: Some(0.4 * v),
            ..row("shop", "root", "mobile", "LCP", v, T0 + i * 90)
        });
    }
    // shop/product-id/desktop LCP: 500 + 37 i, one a minute.
    for i in 0..40u32 {
        inside.push(row(
            "shop",
            "product-id",
            "desktop",
            "LCP",
            f64::from(500 + 37 * i),
            T0 + i * 60 + 5,
        ));
    }
    // shop/product-id/mobile INP: 50, 100, ..., 1000 ms, all in one minute.
    // The first 12 clicks on the buy button (with its script), the others keys on the menu.
    for i in 1..=20u32 {
        let v = f64::from(50 * i);
        let buy = i <= 12;
        inside.push(VitalsRawRow {
            target: if buy { "button.buy" } else { "a.menu" }.into(),
            interaction_type: if buy { "pointer" } else { "keyboard" }.into(),
            input_delay: Some(0.2 * v),
            processing_duration: Some(0.5 * v),
            presentation_delay: Some(0.3 * v),
            script_url: if buy {
                "https://shop.example/app.js"
            } else {
                ""
            }
            .into(),
            script_invoker: if buy { "BUTTON.buy.onclick" } else { "" }.into(),
            ..row("shop", "product-id", "mobile", "INP", v, T0 + 300 + i)
        });
    }
    // shop/root/mobile CLS, sampled at 25%: ten 0, then 0.01 .. 0.10, then five 0.3.
    let cls = (0..10)
        .map(|_| 0.0)
        .chain((1..=10).map(|i| f64::from(i) / 100.0))
        .chain((0..5).map(|_| 0.3));
    for (i, v) in cls.enumerate() {
        inside.push(row_rate(
            "shop",
            "root",
            "mobile",
            "CLS",
            v,
            T0 + 3700 + i as u32 * 7,
            0.25,
        ));
    }
    // Another site in the same window.
    for i in 1..=5u32 {
        inside.push(row("other", "root", "mobile", "LCP", f64::from(i), T0 + i));
    }
    let outside = vec![
        row("shop", "root", "mobile", "LCP", 99_999.0, T0 - 60),
        row("shop", "root", "mobile", "LCP", 99_999.0, END),
        row("shop", "root", "mobile", "LCP", 99_999.0, END + 3600),
    ];
    (inside, outside)
}

type Key = (String, String, String, String);

fn groups<'a>(
    rows: impl IntoIterator<Item = &'a VitalsRawRow>,
) -> BTreeMap<Key, Vec<&'a VitalsRawRow>> {
    let mut out: BTreeMap<Key, Vec<&VitalsRawRow>> = BTreeMap::new();
    for r in rows {
        out.entry((
            r.site.clone(),
            r.route.clone(),
            r.device.clone(),
            r.metric.clone(),
        ))
        .or_default()
        .push(r);
    }
    out
}

/// p75 as the SQL computes it (the same sketch math, in Rust).
fn sketch_p75(rows: &[&VitalsRawRow]) -> f64 {
    quantile(&sketch_of(rows.iter().map(|r| r.value)), 0.75).unwrap()
}

fn share(rows: &[&VitalsRawRow], rating: &str) -> f64 {
    rows.iter().filter(|r| r.rating == rating).count() as f64 / rows.len() as f64
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * b.abs().max(1.0)
}

/// A ClickHouse 18.16 server with every migration applied, and its config.
async fn migrated_server() -> (ClickHouseServer, ClickHouseConfig) {
    let server = ClickHouseServer::start();
    let config = ClickHouseConfig {
        url: server.url.clone(),
        ..ClickHouseConfig::default()
    };
    migrate(&config).await.unwrap();
    (server, config)
}

async fn loaded_server() -> (ClickHouseServer, ClickHouseConfig, Vec<VitalsRawRow>) {
    let (server, config) = migrated_server().await;
    let (inside, outside) = data();
    let client = config.client();
    // Several inserts: several parts per table, merged by the queries.
    for chunk in inside.chunks(37) {
        insert_raw_rows(&client, chunk).await.unwrap();
    }
    insert_raw_rows(&client, &outside).await.unwrap();
    let stored = server.query("SELECT count() FROM rum.vitals_raw");
    assert_eq!(stored.trim(), (inside.len() + outside.len()).to_string());
    (server, config, inside)
}

#[derive(Debug, Row, Deserialize)]
struct WorstRow {
    route: String,
    device: String,
    p75: f64,
    samples: u64,
    poor_share: f64,
}

#[derive(Debug, Row, Deserialize)]
struct TrendRow {
    hour: u32,
    device: String,
    p75: f64,
    samples: u64,
}

/// Runs every file in clickhouse/queries/ (the directory, not only the list) and checks its answer.
#[tokio::test]
async fn every_query_file_answers_correctly_on_known_data() {
    let (_server, config, inside) = loaded_server().await;
    let client = config.client();
    let mut exercised = BTreeSet::new();
    let mut run = |q: &AnalystQuery| {
        exercised.insert(format!("{}.sql", q.name));
        client.query(&q.sql())
    };
    let shop: Vec<&VitalsRawRow> = inside.iter().filter(|r| r.site == "shop").collect();

    // p75_by_route_device.sql: site, start, end.
    let got: Vec<P75Row> = run(&P75_BY_ROUTE_DEVICE)
        .bind("shop")
        .bind(T0)
        .bind(END)
        .fetch_all()
        .await
        .unwrap();
    let expected = groups(shop.iter().copied());
    assert_eq!(got.len(), expected.len(), "{got:?}");
    for (r, ((site, route, device, metric), rows)) in got.iter().zip(&expected) {
        assert_eq!(
            (&r.site, &r.route, &r.device, &r.metric),
            (site, route, device, metric)
        );
        assert_eq!(r.samples, rows.len() as u64, "{r:?}");
        assert!(
            close(r.p75, sketch_p75(rows)),
            "{r:?} vs {}",
            sketch_p75(rows)
        );
        assert!(close(r.good_share, share(rows, "good")), "{r:?}");
        assert!(
            close(r.needs_improvement_share, share(rows, "needs-improvement")),
            "{r:?}"
        );
        assert!(close(r.poor_share, share(rows, "poor")), "{r:?}");
    }
    // Hand-checked values: LCP 100..6000 -> nearest-rank p75 4500, shares 25/15/20 of 60.
    let lcp = got
        .iter()
        .find(|r| r.route == "root" && r.metric == "LCP")
        .unwrap();
    assert!((lcp.p75 - 4500.0).abs() / 4500.0 < 0.005, "{lcp:?}");
    assert!(
        close(lcp.good_share, 25.0 / 60.0) && close(lcp.poor_share, 20.0 / 60.0),
        "{lcp:?}"
    );
    let cls = got.iter().find(|r| r.metric == "CLS").unwrap();
    assert!((cls.p75 - 0.09).abs() / 0.09 < 0.005, "{cls:?}");
    assert_eq!(cls.samples, 25);
    // Same query with the window as text (what an analyst types), in the server's time zone (UTC).
    let by_text: Vec<P75Row> = run(&P75_BY_ROUTE_DEVICE)
        .bind("shop")
        .bind("2023-11-14 22:00:00")
        .bind("2023-11-15 00:00:00")
        .fetch_all()
        .await
        .unwrap();
    assert_eq!(by_text, got);

    // worst_routes.sql: site, metric, start, end, min samples, limit.
    let worst: Vec<WorstRow> = run(&WORST_ROUTES)
        .bind("shop")
        .bind("LCP")
        .bind(T0)
        .bind(END)
        .bind(1u64)
        .bind(10u64)
        .fetch_all()
        .await
        .unwrap();
    let lcp_groups: Vec<(&Key, &Vec<&VitalsRawRow>)> =
        expected.iter().filter(|(k, _)| k.3 == "LCP").collect();
    assert_eq!(worst.len(), 2, "{worst:?}");
    assert_eq!(
        (worst[0].route.as_str(), worst[0].device.as_str()),
        ("root", "mobile")
    );
    assert_eq!(
        (worst[1].route.as_str(), worst[1].device.as_str()),
        ("product-id", "desktop")
    );
    assert!(worst[0].p75 > worst[1].p75);
    for w in &worst {
        let (_, rows) = lcp_groups
            .iter()
            .find(|(k, _)| k.1 == w.route && k.2 == w.device)
            .unwrap();
        assert_eq!(w.samples, rows.len() as u64);
        assert!(close(w.p75, sketch_p75(rows)), "{w:?}");
        assert!(close(w.poor_share, share(rows, "poor")), "{w:?}");
    }
    // min samples 41 leaves root/mobile (60) out of product-id/desktop (40); limit 1 keeps the worst.
    let few: Vec<WorstRow> = run(&WORST_ROUTES)
        .bind("shop")
        .bind("LCP")
        .bind(T0)
        .bind(END)
        .bind(41u64)
        .bind(10u64)
        .fetch_all()
        .await
        .unwrap();
    assert_eq!(few.len(), 1);
    assert_eq!(few[0].route, "root");
    let top: Vec<WorstRow> = run(&WORST_ROUTES)
        .bind("shop")
        .bind("LCP")
        .bind(T0)
        .bind(END)
        .bind(0u64)
        .bind(1u64)
        .fetch_all()
        .await
        .unwrap();
    assert_eq!(top.len(), 1);
    assert_eq!(top[0].route, "root");

    // rating_shares.sql: site, start, end.
    let shares: Vec<RatingSharesRow> = run(&RATING_SHARES)
        .bind("shop")
        .bind(T0)
        .bind(END)
        .fetch_all()
        .await
        .unwrap();
    let mut by_metric_device: BTreeMap<(String, String), Vec<&VitalsRawRow>> = BTreeMap::new();
    for r in &shop {
        by_metric_device
            .entry((r.metric.clone(), r.device.clone()))
            .or_default()
            .push(r);
    }
    assert_eq!(shares.len(), by_metric_device.len(), "{shares:?}");
    for (s, ((metric, device), rows)) in shares.iter().zip(&by_metric_device) {
        assert_eq!((&s.metric, &s.device), (metric, device));
        assert_eq!(s.samples, rows.len() as u64);
        let weighted: f64 = rows.iter().map(|r| 1.0 / r.sample_rate).sum();
        assert!(close(s.estimated_page_loads, weighted), "{s:?}");
        assert!(close(s.good_share, share(rows, "good")), "{s:?}");
        assert!(
            close(s.needs_improvement_share, share(rows, "needs-improvement")),
            "{s:?}"
        );
        assert!(close(s.poor_share, share(rows, "poor")), "{s:?}");
        assert!(close(s.p75, sketch_p75(rows)), "{s:?}");
    }
    let cls = shares.iter().find(|s| s.metric == "CLS").unwrap();
    assert!(
        close(cls.estimated_page_loads, 100.0),
        "25 samples at 25%: {cls:?}"
    );

    // p75_trend_hourly.sql: site, metric, route, route, start, end.
    for route in ["", "root"] {
        let trend: Vec<TrendRow> = run(&P75_TREND_HOURLY)
            .bind("shop")
            .bind("LCP")
            .bind(route)
            .bind(route)
            .bind(T0)
            .bind(END)
            .fetch_all()
            .await
            .unwrap();
        let mut by_hour_device: BTreeMap<(u32, String), Vec<&VitalsRawRow>> = BTreeMap::new();
        for r in shop
            .iter()
            .filter(|r| r.metric == "LCP" && (route.is_empty() || r.route == route))
        {
            by_hour_device
                .entry((r.received_at - r.received_at % 3600, r.device.clone()))
                .or_default()
                .push(r);
        }
        assert_eq!(
            trend.len(),
            by_hour_device.len(),
            "route '{route}': {trend:?}"
        );
        let expected_rows = if route.is_empty() { 3 } else { 2 };
        assert_eq!(trend.len(), expected_rows, "route '{route}': {trend:?}");
        for (t, ((hour, device), rows)) in trend.iter().zip(&by_hour_device) {
            assert_eq!((t.hour, &t.device), (*hour, device));
            assert_eq!(t.samples, rows.len() as u64);
            assert!(close(t.p75, sketch_p75(rows)), "{t:?}");
        }
    }

    // top_lcp_elements.sql: site, start, end, per route.
    let elements: Vec<LcpElementRow> = run(&TOP_LCP_ELEMENTS)
        .bind("shop")
        .bind(T0)
        .bind(END)
        .bind(5u64)
        .fetch_all()
        .await
        .unwrap();
    assert_eq!(
        elements
            .iter()
            .map(|e| (e.route.as_str(), e.target.as_str(), e.samples))
            .collect::<Vec<_>>(),
        [("root", "#hero>img", 40), ("root", "h1.title", 20)]
    );
    for e in &elements {
        let rows: Vec<&VitalsRawRow> = shop
            .iter()
            .copied()
            .filter(|r| r.metric == "LCP" && r.target == e.target)
            .collect();
        let values: Vec<f64> = rows.iter().map(|r| r.value).collect();
        let mean = |f: fn(&VitalsRawRow) -> Option<f64>| {
            Some(rows.iter().map(|r| f(r).unwrap()).sum::<f64>() / rows.len() as f64)
        };
        let sketch = weighted_sketch_of(rows.iter().map(|r| (r.value, 1.0 / r.sample_rate)));
        assert!(
            close(e.p75, weighted_percentile(&sketch, 75).unwrap()),
            "{e:?}"
        );
        assert!(
            (e.p75
                - exact_weighted_percentile(
                    &rows
                        .iter()
                        .map(|r| (r.value, 1.0 / r.sample_rate))
                        .collect::<Vec<_>>(),
                    75
                )
                .unwrap())
            .abs()
                <= 0.005 * e.p75,
            "{e:?}"
        );
        let weighted: f64 = rows.iter().map(|r| 1.0 / r.sample_rate).sum();
        assert!(close(e.estimated_page_loads, weighted), "{e:?}");
        for (got, want) in [
            (e.time_to_first_byte, mean(|r| r.time_to_first_byte)),
            (e.resource_load_delay, mean(|r| r.resource_load_delay)),
            (e.resource_load_duration, mean(|r| r.resource_load_duration)),
            (e.element_render_delay, mean(|r| r.element_render_delay)),
        ] {
            assert!(close(got.unwrap(), want.unwrap()), "{e:?}");
        }
        // The four subparts sum to the LCP value, so their means to the mean value.
        let parts = e.time_to_first_byte.unwrap()
            + e.resource_load_delay.unwrap()
            + e.resource_load_duration.unwrap()
            + e.element_render_delay.unwrap();
        assert!(close(
            parts,
            values.iter().sum::<f64>() / values.len() as f64
        ));
    }
    assert_eq!(elements[0].resource_url, "https://cdn.example/hero.jpg");
    assert_eq!(elements[1].resource_url, "");
    let one: Vec<LcpElementRow> = run(&TOP_LCP_ELEMENTS)
        .bind("shop")
        .bind(T0)
        .bind(END)
        .bind(1u64)
        .fetch_all()
        .await
        .unwrap();
    assert_eq!(one, elements[..1], "per route 1: the most frequent only");
    assert_eq!(
        top_lcp_elements(&client, "shop", T0, END, 5).await.unwrap(),
        elements
    );

    // top_inp_targets.sql: site, start, end, per route.
    let targets: Vec<InpTargetRow> = run(&TOP_INP_TARGETS)
        .bind("shop")
        .bind(T0)
        .bind(END)
        .bind(5u64)
        .fetch_all()
        .await
        .unwrap();
    assert_eq!(
        targets
            .iter()
            .map(|t| (
                t.route.as_str(),
                t.target.as_str(),
                t.interaction_type.as_str(),
                t.samples
            ))
            .collect::<Vec<_>>(),
        [
            ("product-id", "button.buy", "pointer", 12),
            ("product-id", "a.menu", "keyboard", 8)
        ]
    );
    assert_eq!(
        top_inp_targets(&client, "shop", T0, END, 5).await.unwrap(),
        targets
    );
    // button.buy: INP 50..600, p75 the 9th of 12 = 450; phases 20/50/30% of the mean 325.
    let buy = &targets[0];
    assert!((buy.p75 - 450.0).abs() / 450.0 < 0.005, "{buy:?}");
    assert!(close(buy.input_delay.unwrap(), 65.0), "{buy:?}");
    assert!(close(buy.processing_duration.unwrap(), 162.5), "{buy:?}");
    assert!(close(buy.presentation_delay.unwrap(), 97.5), "{buy:?}");
    assert_eq!(
        (buy.script_url.as_str(), buy.script_invoker.as_str()),
        ("https://shop.example/app.js", "BUTTON.buy.onclick")
    );
    // a.menu: 650..1000, p75 the 6th of 8 = 900.
    assert_eq!(targets[1].script_url, "");
    assert!(
        (targets[1].p75 - 900.0).abs() / 900.0 < 0.005,
        "{:?}",
        targets[1]
    );

    // p75_by_dimension.sql: dimension, site, metric, start, end.
    #[derive(Debug, Row, Deserialize)]
    struct ByDimension {
        value: String,
        p75: f64,
        p75_unweighted: f64,
        samples: u64,
        estimated_page_loads: f64,
        poor_share: f64,
    }
    let lcp_rows: Vec<&VitalsRawRow> = shop.iter().copied().filter(|r| r.metric == "LCP").collect();
    for (dimension, key) in [
        (
            "browser",
            (|r: &VitalsRawRow| r.browser.clone()) as fn(&VitalsRawRow) -> String,
        ),
        ("release", |r| r.release.clone()),
        ("rtt", |r| r.rtt.clone()),
        ("nav_type", |r| r.nav_type.clone()),
        ("device", |r| r.device.clone()),
        ("nope", |_| String::new()),
    ] {
        let got: Vec<ByDimension> = run(&P75_BY_DIMENSION)
            .bind(dimension)
            .bind("shop")
            .bind("LCP")
            .bind(T0)
            .bind(END)
            .fetch_all()
            .await
            .unwrap();
        let mut expected: BTreeMap<String, Vec<&VitalsRawRow>> = BTreeMap::new();
        for r in &lcp_rows {
            expected.entry(key(r)).or_default().push(r);
        }
        assert_eq!(got.len(), expected.len(), "{dimension}: {got:?}");
        for g in &got {
            let rows = &expected[&g.value];
            let weighted = weighted_sketch_of(rows.iter().map(|r| (r.value, 1.0 / r.sample_rate)));
            let w: f64 = rows.iter().map(|r| 1.0 / r.sample_rate).sum();
            assert_eq!(g.samples, rows.len() as u64, "{dimension}: {g:?}");
            assert!(close(g.estimated_page_loads, w), "{dimension}: {g:?}");
            assert!(
                close(g.p75, weighted_percentile(&weighted, 75).unwrap()),
                "{dimension}: {g:?}"
            );
            assert!(
                close(g.p75_unweighted, sketch_p75(rows)),
                "{dimension}: {g:?}"
            );
            let poor: f64 = rows
                .iter()
                .filter(|r| r.rating == "poor")
                .map(|r| 1.0 / r.sample_rate)
                .sum();
            assert!(close(g.poor_share, poor / w), "{dimension}: {g:?}");
        }
        // Most page loads first.
        assert!(got
            .windows(2)
            .all(|p| p[0].estimated_page_loads >= p[1].estimated_page_loads));
    }

    let mut files: BTreeSet<String> =
        std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/queries"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
    files.retain(|f| f.ends_with(".sql"));
    assert_eq!(exercised, files, "every query file is run by this test");
    assert_eq!(QUERIES.len(), files.len());
}

#[tokio::test]
async fn typed_p75_filters_by_route_and_device_and_window() {
    let (_server, config, inside) = loaded_server().await;
    let client = config.client();
    let all = p75_by_route_device(&client, "shop", None, None, T0, END)
        .await
        .unwrap();
    assert_eq!(all.len(), 4, "{all:?}");
    let file: Vec<P75Row> = client
        .query(&P75_BY_ROUTE_DEVICE.sql())
        .bind("shop")
        .bind(T0)
        .bind(END)
        .fetch_all()
        .await
        .unwrap();
    assert_eq!(all, file, "without filters it is the file's answer");

    let root = p75_by_route_device(&client, "shop", Some("root"), None, T0, END)
        .await
        .unwrap();
    assert_eq!(
        root.iter().map(|r| r.metric.as_str()).collect::<Vec<_>>(),
        ["CLS", "LCP"]
    );
    assert!(root.iter().all(|r| r.route == "root"));
    let desktop = p75_by_route_device(&client, "shop", None, Some("desktop"), T0, END)
        .await
        .unwrap();
    assert_eq!(desktop.len(), 1);
    assert_eq!(
        (desktop[0].route.as_str(), desktop[0].metric.as_str()),
        ("product-id", "LCP")
    );
    let both = p75_by_route_device(&client, "shop", Some("product-id"), Some("mobile"), T0, END)
        .await
        .unwrap();
    assert_eq!(both.len(), 1);
    assert_eq!(both[0].metric, "INP");
    // INP 50..1000: nearest-rank p75 is 750.
    assert!((both[0].p75 - 750.0).abs() / 750.0 < 0.005, "{both:?}");
    assert!(
        p75_by_route_device(&client, "shop", Some("nope"), None, T0, END)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(p75_by_route_device(&client, "nobody", None, None, T0, END)
        .await
        .unwrap()
        .is_empty());

    // The window: the first 30 minutes of shop/root/mobile LCP (minutes starting in [T0, T0 + 1800)).
    let early = p75_by_route_device(&client, "shop", Some("root"), Some("mobile"), T0, T0 + 1800)
        .await
        .unwrap();
    let rows: Vec<&VitalsRawRow> = inside
        .iter()
        .filter(|r| {
            r.site == "shop" && r.route == "root" && r.metric == "LCP" && r.received_at < T0 + 1800
        })
        .collect();
    assert_eq!(early.len(), 1, "{early:?}");
    assert_eq!(early[0].samples, rows.len() as u64);
    assert!(close(early[0].p75, sketch_p75(&rows)));
    // Rows outside [T0, END) (99999 ms) are never counted: they would be the p75's max.
    let wide = p75_by_route_device(
        &client,
        "shop",
        Some("root"),
        Some("mobile"),
        T0 - 3600,
        END + 7200,
    )
    .await
    .unwrap();
    let lcp = wide.iter().find(|r| r.metric == "LCP").unwrap();
    assert_eq!(lcp.samples, 63);

    // A quote in a bound value is escaped, not SQL.
    assert!(
        p75_by_route_device(&client, "x' OR 1 = 1 OR site = '", None, None, T0, END)
            .await
            .unwrap()
            .is_empty()
    );
}

/// The sketch stored by the materialized view is the one Rust computes, bucket for bucket.
#[tokio::test]
async fn stored_sketches_equal_the_rust_sketches() {
    let (server, _config, inside) = loaded_server().await;
    for ((site, route, device, metric), rows) in groups(&inside) {
        let text = server.query(&format!(
            "SELECT arrayStringConcat(arrayMap((k, c) -> concat(toString(k), ':', toString(c)), sk.1, sk.2), ',') \
             FROM (SELECT sumMapMerge(sketch) AS sk FROM rum.vitals_1m \
             WHERE site = '{site}' AND route = '{route}' AND device = '{device}' AND metric = '{metric}' \
             AND minute >= toDateTime({T0}) AND minute < toDateTime({END}))"
        ));
        let stored: Vec<(i16, u64)> = text
            .trim()
            .split(',')
            .map(|kc| {
                let (k, c) = kc.split_once(':').unwrap();
                (k.parse().unwrap(), c.parse().unwrap())
            })
            .collect();
        assert_eq!(
            stored,
            sketch_of(rows.iter().map(|r| r.value)),
            "{site}/{route}/{device}/{metric}"
        );
    }
}

/// `P75Row::with_percentiles` and `DimensionRow::with_percentiles`, weighted and not, against the
/// sketches Rust computes over the same rows.
#[tokio::test]
async fn weighted_and_unweighted_percentiles_by_route_device_and_by_dimension() {
    let (_server, config, inside) = loaded_server().await;
    let client = config.client();
    let shop: Vec<&VitalsRawRow> = inside.iter().filter(|r| r.site == "shop").collect();
    let check = |what: &str,
                 rows: &[&VitalsRawRow],
                 weighting: Weighting,
                 p75: f64,
                 extra: &[f64],
                 samples: u64,
                 shares: [f64; 3]| {
        let weight = |r: &VitalsRawRow| match weighting {
            Weighting::SampleRate => 1.0 / r.sample_rate,
            Weighting::Unweighted => 1.0,
        };
        let sketch = weighted_sketch_of(rows.iter().map(|r| (r.value, weight(r))));
        assert_eq!(samples, rows.len() as u64, "{what}");
        assert!(
            close(p75, weighted_percentile(&sketch, 75).unwrap()),
            "{what}: p75 {p75}"
        );
        for (p, got) in [50u8, 90, 99].into_iter().zip(extra) {
            assert!(
                close(*got, weighted_percentile(&sketch, p).unwrap()),
                "{what}: p{p} {got}"
            );
        }
        let total: f64 = rows.iter().map(|r| weight(r)).sum();
        for (rating, share) in ["good", "needs-improvement", "poor"]
            .into_iter()
            .zip(shares)
        {
            let w: f64 = rows
                .iter()
                .filter(|r| r.rating == rating)
                .map(|r| weight(r))
                .sum();
            assert!(close(share, w / total), "{what}: {rating} {share}");
        }
    };
    let groups = groups(shop.iter().copied());
    for weighting in [Weighting::SampleRate, Weighting::Unweighted] {
        let got = P75Row::with_percentiles(
            &client,
            "shop",
            None,
            None,
            T0,
            END,
            &[50, 90, 99],
            weighting,
        )
        .await
        .unwrap();
        assert_eq!(got.len(), groups.len());
        for ((row, extra), (key, rows)) in got.iter().zip(&groups) {
            assert_eq!(
                (&row.site, &row.route, &row.device, &row.metric),
                (&key.0, &key.1, &key.2, &key.3)
            );
            check(
                &format!("{weighting:?} {key:?}"),
                rows,
                weighting,
                row.p75,
                extra,
                row.samples,
                [row.good_share, row.needs_improvement_share, row.poor_share],
            );
        }
        for dimension in Dimension::ALL {
            let got = DimensionRow::with_percentiles(
                &client,
                dimension,
                "shop",
                Some("root"),
                None,
                T0,
                END,
                &[50, 90, 99],
                weighting,
            )
            .await
            .unwrap();
            let mut expected: BTreeMap<(String, String), Vec<&VitalsRawRow>> = BTreeMap::new();
            for r in shop.iter().filter(|r| r.route == "root") {
                let value = match dimension {
                    Dimension::Browser => &r.browser,
                    Dimension::Release => &r.release,
                    Dimension::Rtt => &r.rtt,
                    Dimension::NavType => &r.nav_type,
                };
                expected
                    .entry((value.clone(), r.metric.clone()))
                    .or_default()
                    .push(r);
            }
            assert_eq!(got.len(), expected.len(), "{dimension:?} {got:?}");
            for (row, ((value, metric), rows)) in got.iter().zip(&expected) {
                assert_eq!(
                    (&row.site, &row.value, &row.metric),
                    (&"shop".to_string(), value, metric)
                );
                check(
                    &format!("{weighting:?} {dimension:?} {value} {metric}"),
                    rows,
                    weighting,
                    row.p75,
                    &row.percentiles,
                    row.samples,
                    [row.good_share, row.needs_improvement_share, row.poor_share],
                );
            }
        }
    }
    // The weighting changes the answer here: LCP of root weighs its 25%- and 10%-sampled loads more.
    let weighted = P75Row::with_percentiles(
        &client,
        "shop",
        Some("root"),
        None,
        T0,
        END,
        &[],
        Weighting::SampleRate,
    )
    .await
    .unwrap();
    let unweighted = P75Row::with_percentiles(
        &client,
        "shop",
        Some("root"),
        None,
        T0,
        END,
        &[],
        Weighting::Unweighted,
    )
    .await
    .unwrap();
    let lcp = |rows: &[(P75Row, Vec<f64>)]| {
        rows.iter()
            .find(|(r, _)| r.metric == "LCP")
            .unwrap()
            .0
            .clone()
    };
    assert_ne!(lcp(&weighted).p75, lcp(&unweighted).p75);
    assert_ne!(lcp(&weighted).good_share, lcp(&unweighted).good_share);
}

/// Rows written before migration 005 have no weighted sketch: the weighted answer falls back to
/// their unweighted samples instead of a wrong rank.
#[tokio::test]
async fn weighted_percentiles_fall_back_on_rows_without_a_weighted_sketch() {
    let (server, config) = migrated_server().await;
    // What 004's view wrote: samples, weighted samples, ratings and sketch, no weighted states.
    server.query(&format!(
        "INSERT INTO rum.vitals_1m (minute, site, route, device, metric, samples, weighted_samples, good, needs_improvement, poor, sketch) \
         SELECT toStartOfMinute(toDateTime({T0})), 'old', 'root', 'mobile', 'LCP', countState(), sumState(2.0), \
           sumState(toUInt64(v <= 2500)), sumState(toUInt64(v > 2500 AND v <= 4000)), sumState(toUInt64(v > 4000)), \
           sumMapState([toInt16(ceil(log(v) / log(1.01005)))], [toUInt64(1)]) \
         FROM (SELECT toFloat64(100 * (number + 1)) AS v FROM system.numbers LIMIT 60)"
    ));
    let rows = P75Row::with_percentiles(
        &config.client(),
        "old",
        None,
        None,
        T0,
        END,
        &[],
        Weighting::SampleRate,
    )
    .await
    .unwrap();
    let unweighted = P75Row::with_percentiles(
        &config.client(),
        "old",
        None,
        None,
        T0,
        END,
        &[],
        Weighting::Unweighted,
    )
    .await
    .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows, unweighted);
    assert!((rows[0].0.p75 - 4500.0).abs() / 4500.0 < 0.005, "{rows:?}");
    assert!(close(rows[0].0.good_share, 25.0 / 60.0));
}

/// A metric sent again with a new value (migration 005): the rollup input row carries the previous
/// value and rating, and the stored rollup then holds one sample, in the new value's bucket, with the
/// new rating, weighted and not; the same minute's other samples are untouched.
#[tokio::test]
async fn a_replaced_value_moves_its_sample_to_the_new_bucket() {
    let (server, _config) = migrated_server().await;
    let insert = |value: f64, rating: &str, prev: Option<(f64, &str)>| {
        let (prev_value, prev_rating) = prev.unwrap_or((0.0, ""));
        server.query(&format!(
            "INSERT INTO rum.vitals_1m_input_v2 (received_at, site, route, device, metric, value, rating, sample_rate, \
             kafka_partition, ledger_next, prev_value, prev_rating) \
             VALUES ({T0}, 'shop', 'root', 'mobile', 'CLS', {value}, '{rating}', 0.5, 0, 0, {prev_value}, '{prev_rating}')"
        ))
    };
    insert(0.05, "good", None);
    insert(0.02, "good", None);
    insert(0.3, "poor", Some((0.05, "good")));
    for optimize in [false, true] {
        if optimize {
            server.query("OPTIMIZE TABLE rum.vitals_1m FINAL");
        }
        let got = server.query(
            "SELECT countMerge(samples), sumMerge(weighted_samples), sumMerge(good), sumMerge(needs_improvement), \
             sumMerge(poor), sumMerge(weighted_good), sumMerge(weighted_poor) FROM rum.vitals_1m WHERE site = 'shop'",
        );
        assert_eq!(got.trim(), "2\t4\t1\t0\t1\t2\t2", "optimized: {optimize}");
        let sketch = server.query(
            "SELECT arrayStringConcat(arrayMap((k, c) -> concat(toString(k), ':', toString(c)), sk.1, sk.2), ','), \
             arrayStringConcat(arrayMap((k, c) -> concat(toString(k), ':', toString(c)), wsk.1, wsk.2), ',') \
             FROM (SELECT sumMapMerge(sketch) AS sk, sumMapMerge(weighted_sketch) AS wsk FROM rum.vitals_1m WHERE site = 'shop')",
        );
        let (b02, b3) = (
            rum_clickhouse::bucket_of(0.02),
            rum_clickhouse::bucket_of(0.3),
        );
        assert_eq!(
            sketch.trim(),
            format!("{b02}:1,{b3}:1\t{b02}:2,{b3}:2"),
            "optimized: {optimize}"
        );
    }
}

/// Weights like 1 / 0.3 do not add up exactly in binary: 3k loads of 2 s and k of 5 s, all kept at
/// 30%, must read like their counts (p75 is the 3k-th: 2 s), not take the next bucket because the
/// float sum of the 3k weights fell a hair short of three quarters of the total (it does for k = 3
/// and 5, summed in order).
#[tokio::test]
async fn a_weighted_tie_reads_like_its_counts() {
    let (_server, config) = migrated_server().await;
    for k in [3u32, 5, 250] {
        let site = format!("tie{k}");
        let rows: Vec<VitalsRawRow> = (0..4 * k)
            .map(|i| VitalsRawRow {
                sample_rate: 0.3,
                ..row(
                    &site,
                    "root",
                    "mobile",
                    "LCP",
                    if i < 3 * k { 2000.0 } else { 5000.0 },
                    T0 + 60,
                )
            })
            .collect();
        insert_raw_rows(&config.client(), &rows).await.unwrap();
        for weighting in [Weighting::SampleRate, Weighting::Unweighted] {
            let got = P75Row::with_percentiles(
                &config.client(),
                &site,
                None,
                None,
                T0,
                END,
                &[],
                weighting,
            )
            .await
            .unwrap();
            assert_eq!(got.len(), 1);
            let p75 = got[0].0.p75;
            assert!(
                (p75 - 2000.0).abs() / 2000.0 < 0.005,
                "k = {k}, {weighting:?}: {p75}"
            );
            assert!((got[0].0.poor_share - 0.25).abs() < 1e-9, "{got:?}");
        }
    }
}

/// A dimension whose values the clients choose (a release string) answers its most frequent values
/// only: 120 releases, release `i` with `i + 1` samples: the 100 with 21 to 120 samples.
#[tokio::test]
async fn a_dimension_answers_its_most_frequent_values_only() {
    let (_server, config) = migrated_server().await;
    let mut rows = Vec::new();
    for i in 0..120u32 {
        for j in 0..=i {
            rows.push(VitalsRawRow {
                release: format!("r{i:03}"),
                metric_id: format!("{i}-{j}"),
                ..row("rel", "root", "mobile", "LCP", 1000.0, T0 + 60)
            });
        }
    }
    insert_raw_rows(&config.client(), &rows).await.unwrap();
    let got = DimensionRow::with_percentiles(
        &config.client(),
        Dimension::Release,
        "rel",
        None,
        None,
        T0,
        END,
        &[],
        Weighting::SampleRate,
    )
    .await
    .unwrap();
    assert_eq!(got.len(), rum_clickhouse::MAX_DIMENSION_VALUES);
    assert_eq!(
        got.first().map(|r| (r.value.as_str(), r.samples)),
        Some(("r020", 21))
    );
    assert_eq!(
        got.last().map(|r| (r.value.as_str(), r.samples)),
        Some(("r119", 120))
    );
}

/// The queries reading `vitals_raw` read it `FINAL` (migration 007): a metric id re-sent with a new
/// value counts once, with its final value, even before the parts are merged; rows without an id
/// from different messages all count.
#[tokio::test]
async fn raw_queries_read_the_final_value_of_each_metric_id() {
    let (_server, config) = migrated_server().await;
    let client = config.client();
    let at = T0 + 600;
    let lcp = |value: f64| VitalsRawRow {
        browser: "chrome".into(),
        target: "#hero>img".into(),
        ..row("final", "root", "mobile", "LCP", value, at)
    };
    let first = VitalsRawRow {
        metric_id: "v5-lcp-1".into(),
        kafka_offset: 1,
        ..lcp(1000.0)
    };
    let inp = |value: f64| VitalsRawRow {
        metric_id: "v5-inp-1".into(),
        target: "button.buy".into(),
        interaction_type: "pointer".into(),
        kafka_offset: 1,
        ..row("final", "root", "mobile", "INP", value, at)
    };
    // Each INSERT its own part: FINAL, not a merge, makes the answer.
    insert_raw_rows(&client, &[first.clone(), inp(100.0)])
        .await
        .unwrap();
    let replacement = VitalsRawRow {
        metric_id: first.metric_id.clone(),
        revision: 1,
        replaces_value: 1000.0,
        replaces_rating: "good".into(),
        kafka_offset: 7,
        ..lcp(5000.0)
    };
    let inp_replacement = VitalsRawRow {
        revision: 1,
        replaces_value: 100.0,
        replaces_rating: "good".into(),
        kafka_offset: 7,
        ..inp(700.0)
    };
    insert_raw_rows(&client, &[replacement, inp_replacement])
        .await
        .unwrap();
    // Two rows without an id, same values, from two messages.
    for offset in [2, 3] {
        let anonymous = VitalsRawRow {
            metric_id: String::new(),
            kafka_offset: offset,
            ..lcp(2000.0)
        };
        insert_raw_rows(&client, &[anonymous]).await.unwrap();
    }

    let elements: Vec<LcpElementRow> = client
        .query(&TOP_LCP_ELEMENTS.sql())
        .bind("final")
        .bind(T0)
        .bind(END)
        .bind(5u64)
        .fetch_all()
        .await
        .unwrap();
    assert_eq!(elements.len(), 1, "{elements:?}");
    // 5000 (final value of v5-lcp-1), 2000, 2000: nearest-rank p75 is 5000.
    assert_eq!(elements[0].samples, 3, "{elements:?}");
    assert!(
        (elements[0].p75 - 5000.0).abs() / 5000.0 < 0.005,
        "{elements:?}"
    );

    let targets: Vec<InpTargetRow> = client
        .query(&TOP_INP_TARGETS.sql())
        .bind("final")
        .bind(T0)
        .bind(END)
        .bind(5u64)
        .fetch_all()
        .await
        .unwrap();
    assert_eq!(targets.len(), 1, "{targets:?}");
    assert_eq!(targets[0].samples, 1, "{targets:?}");
    assert!(
        (targets[0].p75 - 700.0).abs() / 700.0 < 0.005,
        "{targets:?}"
    );

    #[derive(Debug, Row, Deserialize)]
    struct ByDimension {
        value: String,
        p75: f64,
        p75_unweighted: f64,
        samples: u64,
        estimated_page_loads: f64,
        poor_share: f64,
    }
    let by_browser: Vec<ByDimension> = client
        .query(&P75_BY_DIMENSION.sql())
        .bind("browser")
        .bind("final")
        .bind("LCP")
        .bind(T0)
        .bind(END)
        .fetch_all()
        .await
        .unwrap();
    assert_eq!(by_browser.len(), 1, "{by_browser:?}");
    assert_eq!(
        (by_browser[0].value.as_str(), by_browser[0].samples),
        ("chrome", 3)
    );
    let b = &by_browser[0];
    assert!((b.p75 - 5000.0).abs() / 5000.0 < 0.005, "{b:?}");
    assert!((b.p75_unweighted - 5000.0).abs() / 5000.0 < 0.005, "{b:?}");
    assert!(close(b.estimated_page_loads, 3.0), "{b:?}");
    assert!(close(b.poor_share, 1.0 / 3.0), "{b:?}");
}
