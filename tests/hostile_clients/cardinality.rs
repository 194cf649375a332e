//! Cardinality: beacons for 100,000 random sites, and one client posting 10,000 made-up routes for
//! a real site, through the whole pipeline (Apache Kafka, `rum ingest`, `rum consume`, ClickHouse).
//! The ingest refuses new sites beyond `ingest.max_sites` (`site_limit`) and admits a new route
//! only once `ingest.route_min_clients` distinct clients sent it, so neither ClickHouse nor the
//! consumer's `/metrics` grows with what one client invents.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;

use crate::common::{exposition, metric_sum, settled_counts, Pipeline};
use crate::metric_value;

/// Distinct client addresses the flood comes from (believed in `X-Forwarded-For` from 127.0.0.1).
const CLIENTS: [&str; 4] = [
    "198.51.100.1",
    "198.51.100.2",
    "203.0.113.7",
    "2001:db8:7::1",
];

/// A beacon of one LCP metric from a mobile device.
fn beacon(site: &str, route: &str, id: &str) -> String {
    format!(
        r#"{{"site":"{site}","route":"{route}","device":"mobile","metrics":[{{"name":"LCP","value":1800,"id":"{id}"}}]}}"#
    )
}

/// Posts every `(client, body)` over `workers` kept-alive connections side by side; the statuses.
async fn post_all(
    pipeline: &Pipeline,
    beacons: Vec<(&'static str, String)>,
    workers: usize,
) -> Vec<u16> {
    let url = format!("{}{}", pipeline.base, rum_ingest::BEACON_PATH);
    let beacons = Arc::new(beacons);
    let mut tasks = Vec::new();
    for worker in 0..workers {
        let (http, url, beacons) = (pipeline.http.clone(), url.clone(), beacons.clone());
        tasks.push(tokio::spawn(async move {
            let mut statuses = Vec::new();
            for (client, body) in beacons.iter().skip(worker).step_by(workers) {
                let response = http
                    .post(&url)
                    .header("content-type", "text/plain")
                    .header("x-forwarded-for", *client)
                    .body(body.clone())
                    .send()
                    .await;
                statuses.push(response.map_or(0, |r| r.status().as_u16()));
            }
            statuses
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("a sender task"));
    }
    all
}

/// One column of a ClickHouse answer, one value a line.
fn column(pipeline: &Pipeline, sql: &str) -> Vec<String> {
    pipeline
        .clickhouse
        .query(&format!("{sql} FORMAT TSV"))
        .lines()
        .map(str::to_owned)
        .collect()
}

const MAX_SITES: usize = 1_000;
const RANDOM_SITES: usize = 100_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_sites_by_the_hundred_thousand_stop_at_max_sites_in_clickhouse_and_metrics() {
    let max_sites = MAX_SITES.to_string();
    let mut pipeline = Pipeline::start(&[
        ("RUM_INGEST_RATE_LIMIT_PER_SECOND", "0"),
        ("RUM_INGEST_TRUSTED_PROXIES", "127.0.0.1"),
        ("RUM_INGEST_MAX_SITES", max_sites.as_str()),
        // Four clients take every place here; the per-network quota has its own in-process test.
        ("RUM_INGEST_MAX_NEW_SITES_PER_CLIENT", max_sites.as_str()),
        ("RUM_INGEST_ROUTE_MIN_CLIENTS", "3"),
        ("RUM_INGEST_SITES", "{shop={}}"),
    ])
    .await;
    // The listed site's producer id and first rows, before the flood.
    assert!(
        pipeline
            .post_until_accepted(&beacon("shop", "/", "shop-before"), Duration::from_secs(30))
            .await
    );

    let mut rng = rand::rng();
    let flood: Vec<(&str, String)> = (0..RANDOM_SITES)
        .map(|i| {
            let site = format!("r{:016x}", rng.random::<u64>());
            (
                CLIENTS[i % CLIENTS.len()],
                beacon(&site, "/", &format!("flood-{i}")),
            )
        })
        .collect();
    let started = Instant::now();
    let statuses = post_all(&pipeline, flood, 16).await;
    let took = started.elapsed();
    let accepted = statuses.iter().filter(|s| **s == 204).count();
    let refused = statuses.iter().filter(|s| **s == 403).count();
    println!(
        "{RANDOM_SITES} beacons for random sites in {took:?} ({:.0}/s): {accepted} accepted, {refused} refused",
        RANDOM_SITES as f64 / took.as_secs_f64()
    );
    assert_eq!(accepted, MAX_SITES, "the first max_sites sites are taken");
    let other: Vec<&u16> = statuses
        .iter()
        .filter(|s| ![204, 403].contains(*s))
        .collect();
    assert!(
        other.is_empty(),
        "{} other answers: {:?}",
        other.len(),
        &other[..other.len().min(20)]
    );
    assert_eq!(refused, RANDOM_SITES - MAX_SITES, "every later one refused");
    let ingest_metrics = exposition(&format!("{}/metrics", pipeline.base)).await;
    assert_eq!(
        metric_value(
            &ingest_metrics,
            r#"rum_beacons_rejected_total{reason="site_limit"}"#
        ),
        refused as f64
    );
    // The listed site is not affected.
    assert_eq!(
        pipeline
            .post("text/plain", "", &beacon("shop", "/", "shop-after"))
            .await,
        204
    );

    let expected = (accepted + 2) as u64;
    let (rows, ids, samples) =
        settled_counts(&pipeline.clickhouse, expected, Duration::from_secs(120)).await;
    assert_eq!(
        (rows, ids, samples),
        (expected, expected, expected),
        "each 204 stored once"
    );
    let sites = column(&pipeline, "SELECT uniqExact(site) FROM rum.vitals_raw");
    assert_eq!(
        sites,
        [(MAX_SITES + 1).to_string()],
        "max_sites and the listed one"
    );

    let consumer = exposition(&pipeline.consumer_metrics).await;
    let label_sets = metric_sum(&consumer, "rum_consumer_series_label_sets");
    // Each taken site has one label set (its route is `other`: no route of a random site was sent by
    // three clients), the listed one too.
    assert_eq!(label_sets, (MAX_SITES + 1) as f64);
    assert_eq!(
        metric_sum(&consumer, "rum_consumer_series_folded_total"),
        0.0
    );
    let bound = rum_consumers::max_exposition_bytes(MAX_SITES + 1, 64);
    println!(
        "consumer /metrics: {} bytes, {label_sets} label sets (bound {bound} bytes)",
        consumer.len()
    );
    assert!(consumer.len() <= bound, "{} bytes", consumer.len());
    pipeline.stop();
}

/// A route of letters only (digits would become `id`): 0 -> `/p/a`, 27 -> `/p/bb`.
fn made_up_route(mut i: usize) -> String {
    let mut word = String::new();
    loop {
        word.push((b'a' + (i % 26) as u8) as char);
        i /= 26;
        if i == 0 {
            break;
        }
    }
    format!("/p/{word}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_cap_poisoning_by_one_client_leaves_the_real_routes_their_labels() {
    let mut pipeline = Pipeline::start(&[
        ("RUM_INGEST_RATE_LIMIT_PER_SECOND", "0"),
        ("RUM_INGEST_TRUSTED_PROXIES", "127.0.0.1"),
        ("RUM_INGEST_ONLY_KNOWN_SITES", "true"),
        ("RUM_INGEST_SITES", "{shop={}}"),
        ("RUM_INGEST_MAX_ROUTES_PER_SITE", "50"),
        ("RUM_INGEST_ROUTE_MIN_CLIENTS", "3"),
    ])
    .await;
    assert!(
        pipeline
            .post_until_accepted(
                &beacon("shop", "/warm-up", "warm-up"),
                Duration::from_secs(30)
            )
            .await
    );
    let attack: Vec<(&str, String)> = (0..10_000)
        .map(|i| {
            (
                "203.0.113.66",
                beacon("shop", &made_up_route(i), &format!("attack-{i}")),
            )
        })
        .collect();
    let started = Instant::now();
    let statuses = post_all(&pipeline, attack, 8).await;
    println!(
        "10,000 made-up routes from one client in {:?}",
        started.elapsed()
    );
    assert!(statuses.iter().all(|s| *s == 204), "all kept, under other");

    // Real visitors, one after another: a route keeps its label from its third client on.
    let real = ["/", "/cart", "/checkout", "/product/42", "/search"];
    let visitors = ["198.51.100.1", "198.51.100.2", "2001:db8:1:2::1"];
    let mut sent = 0;
    for route in real {
        for visitor in visitors.iter().chain(&visitors[..1]) {
            sent += 1;
            let body = beacon("shop", route, &format!("real-{sent}"));
            let status = pipeline
                .http
                .post(format!("{}{}", pipeline.base, rum_ingest::BEACON_PATH))
                .header("content-type", "text/plain")
                .header("x-forwarded-for", *visitor)
                .body(body)
                .send()
                .await
                .expect("POST")
                .status();
            assert_eq!(status, 204);
        }
    }
    let expected = 1 + 10_000 + sent as u64;
    let (rows, _, _) =
        settled_counts(&pipeline.clickhouse, expected, Duration::from_secs(120)).await;
    assert_eq!(rows, expected, "each 204 stored once");
    let routes = column(
        &pipeline,
        "SELECT route, count() FROM rum.vitals_raw WHERE site = 'shop' GROUP BY route ORDER BY route",
    );
    assert_eq!(
        routes,
        [
            "cart\t2",
            "checkout\t2",
            // The warm-up (one client), the attack, and the first two visitors of each real route.
            &format!("other\t{}", 1 + 10_000 + 2 * real.len()),
            "product-id\t2",
            "root\t2",
            "search\t2",
        ]
    );
    let consumer = exposition(&pipeline.consumer_metrics).await;
    for route in ["root", "cart", "checkout", "product-id", "search"] {
        let sample = format!(
            r#"rum_web_vitals_lcp_seconds_count{{device="mobile",route="{route}",site="shop"}}"#
        );
        assert_eq!(metric_value(&consumer, &sample), 2.0, "{sample}");
    }
    assert_eq!(metric_sum(&consumer, "rum_consumer_series_label_sets"), 6.0);
    let ingest_metrics = exposition(&format!("{}/metrics", pipeline.base)).await;
    for (sample, value) in [
        ("rum_ingest_routes", 5.0),
        (
            r#"rum_ingest_routes_folded_total{reason="route_limit"}"#,
            0.0,
        ),
    ] {
        assert_eq!(metric_value(&ingest_metrics, sample), value, "{sample}");
    }
    println!(
        "ingest: {} route candidates held after the attack",
        metric_value(&ingest_metrics, "rum_ingest_route_candidates")
    );
    pipeline.stop();
}
