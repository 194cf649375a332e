//! The evaluator against a real ClickHouse 18.16 (rows written to `vitals_raw`, rolled up by the
//! materialized view into `vitals_1m`) and a real Alertmanager whose webhook receiver is a tiny
//! HTTP listener inside the test. The evaluator's clock is the `now` passed to `evaluate_at`.

mod common;

use std::time::Duration;

use common::{database, insert, samples, Webhook, DAY, MINUTE, STEP, T0};
use rum_alerts::{AlertState, AlertsMetrics, Evaluator, Notifier, Rules};
use rum_testkit::{free_port, Alertmanager, ClickHouseServer};

/// `(alertname, site, route, device, state)` of each alert, sorted.
fn summary(alerts: &[rum_alerts::Alert]) -> Vec<(String, String, String, String, AlertState)> {
    let mut out: Vec<_> = alerts
        .iter()
        .map(|a| {
            (
                a.name().to_string(),
                a.label("site").to_string(),
                a.label("route").to_string(),
                a.label("device").to_string(),
                a.state,
            )
        })
        .collect();
    out.sort_by(|a, b| format!("{a:?}").cmp(&format!("{b:?}")));
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_route_fires_after_30_minutes_and_resolves_through_alertmanager() {
    let server = ClickHouseServer::start();
    let config = database(&server).await;
    let webhook = Webhook::start();
    let alertmanager = Alertmanager::start(&webhook.url);

    // Times near the wall clock, so that Alertmanager (which compares endsAt with its own clock) agrees:
    // the firing evaluation ends 3 intervals after `fire_at` (in the future), the resolved one ends at
    // `resolve_at` (in the past).
    let interval = STEP;
    let resolve_at = rum_alerts::system_now() / STEP * STEP;
    let fire_at = resolve_at - STEP;
    let start = fire_at - 30 * MINUTE;
    // 30 minutes of slow LCP on product-id/mobile, 3 samples a minute (90 in the window), then a good step.
    insert(
        &config,
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
    )
    .await;
    insert(
        &config,
        samples(
            "shop",
            "product-id",
            "mobile",
            "LCP",
            1200.0,
            fire_at,
            resolve_at,
            3,
        ),
    )
    .await;
    // The same route on desktop is fast; another route is fast; a slow route is too thin (30 samples).
    insert(
        &config,
        samples(
            "shop",
            "product-id",
            "desktop",
            "LCP",
            1500.0,
            start,
            resolve_at,
            3,
        ),
    )
    .await;
    insert(
        &config,
        samples(
            "shop", "root", "mobile", "LCP", 1800.0, start, resolve_at, 3,
        ),
    )
    .await;
    insert(
        &config,
        samples(
            "shop", "thin", "mobile", "LCP", 9000.0, start, resolve_at, 1,
        ),
    )
    .await;
    // INP and CLS of the slow route are fine.
    insert(
        &config,
        samples(
            "shop",
            "product-id",
            "mobile",
            "INP",
            120.0,
            start,
            resolve_at,
            3,
        ),
    )
    .await;
    insert(
        &config,
        samples(
            "shop",
            "product-id",
            "mobile",
            "CLS",
            0.02,
            start,
            resolve_at,
            3,
        ),
    )
    .await;

    let mut rules = Rules::default();
    rules.beacons_stopped.enabled = false;
    let evaluator = Evaluator::new(&config, rules, interval);
    let metrics = AlertsMetrics::new().unwrap();
    let notifier = Notifier::new(&alertmanager.url).unwrap();

    // 29 minutes of data: nothing yet.
    let at_29 = evaluator.evaluate_at(fire_at - MINUTE).await.unwrap();
    assert!(at_29.is_empty(), "{at_29:?}");

    // 30 minutes: exactly product-id/mobile, LCP.
    let at_30 = evaluator.evaluate_at(fire_at).await.unwrap();
    assert_eq!(
        summary(&at_30),
        [(
            "WebVitalsLCPP75Poor".into(),
            "shop".into(),
            "product-id".into(),
            "mobile".into(),
            AlertState::Firing
        )]
    );
    let alert = &at_30[0];
    assert_eq!(alert.starts_at, start);
    assert_eq!(alert.ends_at, fire_at + 3 * interval);
    assert_eq!(alert.label("metric"), "LCP");
    assert_eq!(alert.label("severity"), "warning");
    assert_eq!(alert.annotations["samples"], "90");
    assert!(
        alert.annotations["summary"].contains("above 4000 ms"),
        "{:?}",
        alert.annotations
    );
    let p75: f64 = alert.annotations["p75"].parse().unwrap();
    assert!((p75 - 6000.0).abs() / 6000.0 < 0.01, "p75 {p75}");
    // The investigation query runs as is.
    let investigate = alert.annotations["query"].replace("FROM vitals_1m", "FROM rum.vitals_1m");
    let rows = server.query(&investigate);
    assert_eq!(rows.lines().count(), 6, "{rows}");

    notifier
        .send(&at_30, &metrics)
        .await
        .expect("alertmanager accepts");
    webhook.wait_for("firing notification", |alerts| {
        alerts.iter().any(|(status, name, route, device)| {
            status == "firing"
                && name == "WebVitalsLCPP75Poor"
                && route == "product-id"
                && device == "mobile"
        })
    });
    assert!(alertmanager.alerts_json().contains("\"product-id\""));

    // The good step: sent once as resolved, ending now.
    let recovered = evaluator.evaluate_at(resolve_at).await.unwrap();
    assert_eq!(recovered.len(), 1, "{recovered:?}");
    assert_eq!(recovered[0].state, AlertState::Resolved);
    assert_eq!(recovered[0].ends_at, resolve_at);
    notifier
        .send(&recovered, &metrics)
        .await
        .expect("alertmanager accepts");
    webhook.wait_for("resolved notification", |alerts| {
        alerts.iter().any(|(status, name, route, device)| {
            status == "resolved"
                && name == "WebVitalsLCPP75Poor"
                && route == "product-id"
                && device == "mobile"
        })
    });
    // Resolved is sent once: the next evaluation (an interval later) sends nothing.
    assert!(evaluator
        .evaluate_at(resolve_at + interval)
        .await
        .unwrap()
        .is_empty());

    // Only that route and device ever reached Alertmanager.
    for (_, name, route, device) in webhook.alerts() {
        assert_eq!(
            (name.as_str(), route.as_str(), device.as_str()),
            ("WebVitalsLCPP75Poor", "product-id", "mobile")
        );
    }
    assert_eq!(metrics.notification_errors.get(), 0);
    assert_eq!(metrics.notifications_sent.get(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_route_under_the_minimum_samples_never_fires() {
    let server = ClickHouseServer::start();
    let config = database(&server).await;
    // One very slow sample a minute for an hour: 30 in any window, under the default 50.
    insert(
        &config,
        samples(
            "shop",
            "thin",
            "mobile",
            "INP",
            2000.0,
            T0,
            T0 + 60 * MINUTE,
            1,
        ),
    )
    .await;
    let evaluator = Evaluator::new(&config, Rules::default(), MINUTE);
    for minute in 0..=70 {
        let alerts = evaluator.evaluate_at(T0 + minute * MINUTE).await.unwrap();
        assert!(alerts.is_empty(), "minute {minute}: {alerts:?}");
    }
    // With a lower minimum the same data fires: the minimum is what kept it quiet.
    let rules = Rules {
        min_samples: 30,
        ..Default::default()
    };
    let alerts = Evaluator::new(&config, rules, MINUTE)
        .evaluate_at(T0 + 30 * MINUTE)
        .await
        .unwrap();
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0].name(), "WebVitalsINPP75Poor");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_mid_pending_does_not_delay_the_alert() {
    let server = ClickHouseServer::start();
    let config = database(&server).await;
    insert(
        &config,
        samples(
            "shop",
            "checkout",
            "tablet",
            "CLS",
            0.4,
            T0,
            T0 + 40 * MINUTE,
            2,
        ),
    )
    .await;
    let first = Evaluator::new(&config, Rules::default(), MINUTE);
    for minute in [5, 10, 15, 20] {
        assert!(first
            .evaluate_at(T0 + minute * MINUTE)
            .await
            .unwrap()
            .is_empty());
    }
    drop(first);
    // A new process (and a replica started at another moment) decides from the data alone.
    let restarted = Evaluator::new(&config, Rules::default(), MINUTE);
    assert!(restarted
        .evaluate_at(T0 + 29 * MINUTE)
        .await
        .unwrap()
        .is_empty());
    let fired = restarted.evaluate_at(T0 + 30 * MINUTE).await.unwrap();
    assert_eq!(
        summary(&fired),
        [(
            "WebVitalsCLSP75Poor".into(),
            "shop".into(),
            "checkout".into(),
            "tablet".into(),
            AlertState::Firing
        )]
    );
    assert_eq!(fired[0].starts_at, T0);
    let replica = Evaluator::new(&config, Rules::default(), MINUTE);
    assert_eq!(replica.evaluate_at(T0 + 30 * MINUTE).await.unwrap(), fired);
}

#[tokio::test(flavor = "multi_thread")]
async fn beacons_stopped_fires_for_a_silent_site_only_when_yesterday_had_traffic() {
    let server = ClickHouseServer::start();
    let config = database(&server).await;
    let now = T0 + DAY;
    // Yesterday, around the same time: "quiet" and "steady" had beacons (120 samples in the window,
    // over the minimum of 100), "new" did not exist.
    for site in ["quiet", "steady"] {
        insert(
            &config,
            samples(
                site,
                "root",
                "mobile",
                "LCP",
                1000.0,
                T0 - 60 * MINUTE,
                T0,
                4,
            ),
        )
        .await;
    }
    // Today: all three had beacons an hour ago; only "steady" still has them.
    for site in ["quiet", "steady", "new"] {
        insert(
            &config,
            samples(
                site,
                "root",
                "mobile",
                "LCP",
                1000.0,
                now - 60 * MINUTE,
                now - 45 * MINUTE,
                2,
            ),
        )
        .await;
    }
    insert(
        &config,
        samples(
            "steady",
            "root",
            "mobile",
            "LCP",
            1000.0,
            now - 45 * MINUTE,
            now,
            2,
        ),
    )
    .await;

    let evaluator = Evaluator::new(&config, Rules::default(), MINUTE);
    let alerts = evaluator.evaluate_at(now).await.unwrap();
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    let alert = &alerts[0];
    assert_eq!(alert.name(), "WebVitalsBeaconsStopped");
    assert_eq!(alert.label("site"), "quiet");
    assert_eq!(alert.label("severity"), "critical");
    assert_eq!(alert.state, AlertState::Firing);
    assert_eq!(alert.starts_at, now - 45 * MINUTE);
    // 15 minutes of silence is not enough.
    assert!(evaluator
        .evaluate_at(now - 30 * MINUTE)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn run_notifies_alertmanager_on_the_wall_clock_and_reports_metrics() {
    let server = ClickHouseServer::start();
    let clickhouse = database(&server).await;
    let webhook = Webhook::start();
    let alertmanager = Alertmanager::start(&webhook.url);
    let now = rum_alerts::system_now();
    let step_end = now / STEP * STEP;
    insert(
        &clickhouse,
        samples(
            "shop",
            "cart",
            "mobile",
            "LCP",
            7000.0,
            step_end - 40 * MINUTE,
            step_end,
            3,
        ),
    )
    .await;

    let port = free_port();
    let config = rum_alerts::AlertsConfig {
        port,
        interval_secs: 1,
        alertmanager_url: alertmanager.url.clone(),
        ..Default::default()
    };
    config.validate().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(async move {
        rum_alerts::run(&config, &clickhouse, async {
            let _ = stop_rx.await;
        })
        .await
    });
    tokio::task::spawn_blocking(move || {
        webhook.wait_for("firing notification from rum_alerts::run", |alerts| {
            alerts.iter().any(|(status, name, route, device)| {
                status == "firing"
                    && name == "WebVitalsLCPP75Poor"
                    && route == "cart"
                    && device == "mobile"
            })
        })
    })
    .await
    .unwrap();
    let metrics = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("rum_alerts_firing{alertname=\"WebVitalsLCPP75Poor\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("rum_alerts_notification_errors_total 0"),
        "{metrics}"
    );
    stop_tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("run stops on shutdown")
        .unwrap()
        .unwrap();
}
