//! Every analyst query of `clickhouse/queries/` against a real ClickHouse 18.16, on known data
//! inserted into `vitals_raw` (the materialized view fills `vitals_1m`).

use std::collections::{BTreeMap, BTreeSet};

use clickhouse::Row;
use rum_clickhouse::{
    insert_raw_rows, migrate, p75_by_route_device, quantile, sketch_of, AnalystQuery,
    ClickHouseConfig, P75Row, RatingSharesRow, VitalsRawRow, P75_BY_ROUTE_DEVICE, P75_TREND_HOURLY,
    QUERIES, RATING_SHARES, WORST_ROUTES,
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
    for i in 1..=60u32 {
        inside.push(row(
            "shop",
            "root",
            "mobile",
            "LCP",
            f64::from(100 * i),
            T0 + i * 90,
        ));
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
    for i in 1..=20u32 {
        inside.push(row(
            "shop",
            "product-id",
            "mobile",
            "INP",
            f64::from(50 * i),
            T0 + 300 + i,
        ));
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

async fn loaded_server() -> (ClickHouseServer, ClickHouseConfig, Vec<VitalsRawRow>) {
    let server = ClickHouseServer::start();
    let config = ClickHouseConfig {
        url: server.url.clone(),
        ..ClickHouseConfig::default()
    };
    migrate(&config).await.unwrap();
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
