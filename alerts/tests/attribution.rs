//! What to fix, in the alert: each firing p75 alert names the top LCP element (INP interaction
//! target, CLS shift target) of its route and device in the alert window, read from `vitals_raw`
//! of a real ClickHouse 18.16, and carries the report command; Alertmanager (a real 0.25) holds
//! those annotations. When the read fails or does not answer in time (a fault proxy in front of
//! ClickHouse), the alerts go out without them and the failure is counted.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{database, insert, samples, Webhook, MINUTE, STEP};
use rum_alerts::{Alert, AlertState, AlertsMetrics, Evaluator, Notifier, Rules};
use rum_clickhouse::{ClickHouseConfig, VitalsRawRow};
use rum_testkit::proxy::{FaultProxy, Mode};
use rum_testkit::{Alertmanager, ClickHouseServer};

/// `rows` with the attribution `set(i, row)` gives the `i`-th.
fn attributed(
    mut rows: Vec<VitalsRawRow>,
    set: impl Fn(usize, &mut VitalsRawRow),
) -> Vec<VitalsRawRow> {
    for (i, row) in rows.iter_mut().enumerate() {
        set(i, row);
    }
    rows
}

/// The annotations of the firing alert of `metric` on `route`.
fn annotations<'a>(alerts: &'a [Alert], route: &str, metric: &str) -> &'a BTreeMap<String, String> {
    &alerts
        .iter()
        .find(|a| {
            a.state == AlertState::Firing
                && a.label("route") == route
                && a.label("metric") == metric
        })
        .unwrap_or_else(|| panic!("no firing {metric} alert on {route}: {alerts:?}"))
        .annotations
}

const ATTRIBUTION_KEYS: [&str; 4] = [
    "top_target",
    "top_target_share",
    "top_target_interaction_type",
    "top_target_script_url",
];

#[tokio::test(flavor = "multi_thread")]
async fn firing_alerts_name_their_top_target_and_go_out_without_it_when_it_cannot_be_read() {
    let server = ClickHouseServer::start();
    let config = database(&server).await;
    let webhook = Webhook::start();
    let alertmanager = Alertmanager::start(&webhook.url);
    // Near the wall clock: Alertmanager compares endsAt with its own.
    let fire_at = rum_alerts::system_now() / STEP * STEP;
    let start = fire_at - 30 * MINUTE;

    // LCP of product-id on mobile, 3 samples a minute: the first names the hero image, the second the
    // hero image on even minutes and the title on odd ones, the third nothing (a collector without the
    // attribution build). In the window: 45 hero, 15 title of 60 attributed.
    insert(
        &config,
        attributed(
            samples(
                "shop",
                "product-id",
                "mobile",
                "LCP",
                6000.0,
                start,
                fire_at,
                3,
            ),
            |i, row| {
                let minute = (row.received_at - start) / MINUTE;
                row.target = match (i % 3, minute % 2) {
                    (0, _) | (1, 0) => "#hero>img".into(),
                    (1, _) => "h1.title".into(),
                    _ => String::new(),
                };
            },
        ),
    )
    .await;
    // The ingest's cap folded other elements of the route into `other`, more frequent than the hero
    // image (60): it names no element, and is neither the top target nor in the share.
    insert(
        &config,
        attributed(
            samples(
                "shop",
                "product-id",
                "mobile",
                "LCP",
                6000.0,
                start,
                fire_at,
                2,
            ),
            |_, row| row.target = "other".into(),
        ),
    )
    .await;
    // Before the window, a banner more frequent than all of them: not in the alert's window.
    insert(
        &config,
        attributed(
            samples(
                "shop",
                "product-id",
                "mobile",
                "LCP",
                6000.0,
                start - 10 * MINUTE,
                start,
                20,
            ),
            |_, row| row.target = "div.old-banner".into(),
        ),
    )
    .await;
    // The same route on desktop is fast and names another element: another series.
    insert(
        &config,
        attributed(
            samples(
                "shop",
                "product-id",
                "desktop",
                "LCP",
                1500.0,
                start,
                fire_at,
                5,
            ),
            |_, row| row.target = "#desktop-hero".into(),
        ),
    )
    .await;
    // A tie on cart: two elements, 30 samples each; the smaller name wins, on every replica.
    insert(
        &config,
        attributed(
            samples("shop", "cart", "mobile", "LCP", 5000.0, start, fire_at, 2),
            |i, row| row.target = if i % 2 == 0 { "p.b" } else { "p.a" }.into(),
        ),
    )
    .await;
    // INP of checkout on desktop: one button, mostly clicked (pointer), its longest script pay.js.
    insert(
        &config,
        attributed(
            samples(
                "shop", "checkout", "desktop", "INP", 700.0, start, fire_at, 3,
            ),
            |i, row| {
                row.target = "button#pay".into();
                row.interaction_type = if i % 3 == 2 { "keyboard" } else { "pointer" }.into();
                row.script_url = if i % 3 == 0 {
                    String::new()
                } else {
                    "https://shop.example/js/pay.js".into()
                };
            },
        ),
    )
    .await;
    // CLS of root without any attribution.
    insert(
        &config,
        samples("shop", "root", "mobile", "CLS", 0.4, start, fire_at, 3),
    )
    .await;

    let mut rules = Rules::default();
    rules.beacons_stopped.enabled = false;
    let metrics = AlertsMetrics::new().unwrap();
    let evaluator = Evaluator::new(&config, rules.clone(), STEP)
        .with_attribution_errors(metrics.attribution_errors.clone());
    let alerts = evaluator.evaluate_at(fire_at).await.unwrap();
    assert_eq!(alerts.len(), 4, "{alerts:?}");

    let lcp = annotations(&alerts, "product-id", "LCP");
    assert_eq!(lcp["top_target"], "#hero>img");
    assert_eq!(lcp["top_target_share"], "0.75");
    assert!(!lcp.contains_key("top_target_interaction_type"), "{lcp:?}");
    assert_eq!(
        lcp["report"],
        "rum report --site=shop --since 1d --out shop-report.html"
    );
    let cart = annotations(&alerts, "cart", "LCP");
    assert_eq!(
        (
            cart["top_target"].as_str(),
            cart["top_target_share"].as_str()
        ),
        ("p.a", "0.50")
    );
    let inp = annotations(&alerts, "checkout", "INP");
    assert_eq!(inp["top_target"], "button#pay");
    assert_eq!(inp["top_target_share"], "1.00");
    assert_eq!(inp["top_target_interaction_type"], "pointer");
    assert_eq!(
        inp["top_target_script_url"],
        "https://shop.example/js/pay.js"
    );
    let cls = annotations(&alerts, "root", "CLS");
    for key in ATTRIBUTION_KEYS {
        assert!(!cls.contains_key(key), "{cls:?}");
    }
    assert!(cls.contains_key("report"), "{cls:?}");
    assert_eq!(
        metrics
            .attribution_errors
            .with_label_values(&["query"])
            .get(),
        0
    );

    // A replica sends the same alerts, annotations included.
    let replica = Evaluator::new(&config, rules.clone(), STEP);
    assert_eq!(replica.evaluate_at(fire_at).await.unwrap(), alerts);

    // Alertmanager holds the annotations.
    let notifier = Notifier::new(&alertmanager.url).unwrap();
    notifier
        .send(&alerts, &metrics)
        .await
        .expect("alertmanager accepts");
    let held: serde_json::Value = serde_json::from_str(&alertmanager.alerts_json()).unwrap();
    let held_lcp = held
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["labels"]["route"] == "product-id")
        .unwrap_or_else(|| panic!("{held}"));
    assert_eq!(held_lcp["annotations"]["top_target"], "#hero>img");
    assert_eq!(held_lcp["annotations"]["top_target_share"], "0.75");
    assert_eq!(
        held_lcp["annotations"]["report"],
        "rum report --site=shop --since 1d --out shop-report.html"
    );
    webhook.wait_for("the firing notification", |alerts| {
        alerts
            .iter()
            .any(|(status, _, route, _)| status == "firing" && route == "checkout")
    });

    // The read of vitals_raw fails (its connection reset): the same alerts without the annotations,
    // the failure counted.
    let proxy = FaultProxy::start(std::net::SocketAddr::from((
        [127, 0, 0, 1],
        server.http_port,
    )));
    let through = ClickHouseConfig {
        url: proxy.url(),
        ..config.clone()
    };
    let faulty = Evaluator::new(&through, rules.clone(), STEP)
        .with_attribution_errors(metrics.attribution_errors.clone());
    proxy.set_mode(Mode::ResetAfterAnswer {
        matching: "FROM vitals_raw".into(),
        times: 1,
    });
    let without = faulty.evaluate_at(fire_at).await.unwrap();
    assert_eq!(proxy.resets(), 1);
    assert_eq!(
        metrics
            .attribution_errors
            .with_label_values(&["query"])
            .get(),
        1
    );
    let stripped: Vec<Alert> = alerts
        .iter()
        .cloned()
        .map(|mut a| {
            a.annotations
                .retain(|k, _| !ATTRIBUTION_KEYS.contains(&k.as_str()));
            a
        })
        .collect();
    assert_eq!(without, stripped);

    // It does not answer in time (vitals_raw behind a view that sleeps): given up within the
    // evaluation's query timeout, counted as a timeout; the decision, from vitals_1m, is not slowed.
    server.query("RENAME TABLE rum.vitals_raw TO rum.vitals_raw_fast");
    server.query(
        "CREATE VIEW rum.vitals_raw AS SELECT * FROM rum.vitals_raw_fast WHERE sleep(1.5) = 0",
    );
    let slow = Evaluator::new(&config, rules.clone(), STEP)
        .with_query_timeout(Duration::from_secs(2))
        .with_attribution_errors(metrics.attribution_errors.clone());
    let started = Instant::now();
    let without = slow.evaluate_at(fire_at).await.unwrap();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(4),
        "{took:?}"
    );
    assert_eq!(without, stripped);
    assert_eq!(
        metrics
            .attribution_errors
            .with_label_values(&["timeout"])
            .get(),
        1
    );
    let text = rum_telemetry::encode(&metrics.registry);
    assert!(
        text.contains("rum_alerts_attribution_errors_total{reason=\"timeout\"} 1"),
        "{text}"
    );
}
