//! Delivery to a real Alertmanager (Debian's 0.25) with a webhook receiver inside the test: batches
//! that fail on their own, and a ClickHouse outage (a real 18.16, paused with SIGSTOP) that resolves
//! nothing and raises its own alert.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::{database, insert, metric, metrics_text, samples, FaultProxy, Webhook, MINUTE, STEP};
use rum_alerts::notify::ATTEMPTS;
use rum_alerts::{Alert, AlertState, AlertsConfig, AlertsMetrics, Notifier, NotifyError};
use rum_testkit::{free_port, send_signal, Alertmanager, ClickHouseServer};

fn stopped(site: &str, now: u32) -> Alert {
    Alert {
        labels: BTreeMap::from([
            (
                "alertname".to_string(),
                "WebVitalsBeaconsStopped".to_string(),
            ),
            ("site".into(), site.into()),
            ("metric".into(), "beacons".into()),
            ("severity".into(), "critical".into()),
        ]),
        annotations: BTreeMap::from([("summary".to_string(), format!("{site} stopped"))]),
        starts_at: now - 60,
        ends_at: now + 600,
        state: AlertState::Firing,
    }
}

/// The `site` labels of the alerts Alertmanager holds.
fn sites_held(alertmanager: &Alertmanager) -> BTreeSet<String> {
    let held: serde_json::Value = serde_json::from_str(&alertmanager.alerts_json()).unwrap();
    held.as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["labels"]["site"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_batch_does_not_drop_the_others() {
    let webhook = Webhook::start();
    let alertmanager = Alertmanager::start(&webhook.url);
    // Every POST carrying site-017 fails (it is in the second batch of 10).
    let proxy = FaultProxy::start(alertmanager.port, "\"site-017\"");
    let metrics = AlertsMetrics::new().unwrap();
    let notifier = Notifier::new(&proxy.url)
        .unwrap()
        .with_max_alerts_per_post(10);
    let now = rum_alerts::system_now();
    let alerts: Vec<Alert> = (0..35)
        .map(|i| stopped(&format!("site-{i:03}"), now))
        .collect();

    let err = notifier.send(&alerts, &metrics).await.unwrap_err();
    let NotifyError::Failed {
        failed,
        batches,
        alerts: lost,
        reason,
        ..
    } = err;
    assert_eq!((failed, batches, lost), (1, 4, 10));
    assert!(
        reason.contains("503") && reason.contains("injected"),
        "{reason}"
    );
    assert_eq!(proxy.refused.load(Ordering::SeqCst), u64::from(ATTEMPTS));
    assert_eq!(proxy.forwarded.load(Ordering::SeqCst), 3);
    assert_eq!(metrics.notification_errors.get(), u64::from(ATTEMPTS));
    assert_eq!(metrics.notifications_sent.get(), 25);
    assert_eq!(metrics.notifications_failed.get(), 10);

    // The three other batches arrived: Alertmanager holds their 25 alerts and notifies them.
    let expected: BTreeSet<String> = (0..35)
        .filter(|i| !(10..20).contains(i))
        .map(|i| format!("site-{i:03}"))
        .collect();
    assert_eq!(sites_held(&alertmanager), expected);
    common::wait_until(
        "the webhook to get the 25 delivered alerts",
        Duration::from_secs(60),
        || {
            let notified: BTreeSet<String> = webhook
                .notified()
                .iter()
                .map(|n| n.label("site").to_string())
                .collect();
            notified == expected
        },
    );
}

/// Polls `/metrics` of the evaluator until `done` holds on it (at most 60 s).
async fn wait_for_metrics(port: u16, what: &str, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = metrics_text(port).await;
        if done(&text) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within 60 s; /metrics:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn wait_for_webhook(webhook: &Webhook, alertname: &str, status: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !webhook
        .notified()
        .iter()
        .any(|n| n.label("alertname") == alertname && n.status == status)
    {
        assert!(
            Instant::now() < deadline,
            "webhook: no {alertname} {status} within 60 s; got {:?}",
            webhook.notified()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_clickhouse_outage_resolves_nothing_and_raises_its_own_alert() {
    let server = ClickHouseServer::start();
    let clickhouse = database(&server).await;
    let webhook = Webhook::start();
    let alertmanager = Alertmanager::start(&webhook.url);
    // Slow LCP on cart/mobile from 40 minutes ago to 10 minutes ahead: it holds however long the
    // test runs (the wall clock may cross a step boundary).
    let step_end = rum_alerts::system_now() / STEP * STEP;
    insert(
        &clickhouse,
        samples(
            "shop",
            "cart",
            "mobile",
            "LCP",
            7000.0,
            step_end - 40 * MINUTE,
            step_end + 10 * MINUTE,
            3,
        ),
    )
    .await;

    let port = free_port();
    let config = AlertsConfig {
        port,
        interval_secs: 1,
        alertmanager_url: alertmanager.url.clone(),
        store_unavailable_after: 3,
        query_timeout_secs: 1,
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
    wait_for_webhook(&webhook, "WebVitalsLCPP75Poor", "firing").await;

    // ClickHouse stops answering: connections are accepted, queries never return.
    let pid = server.pid().expect("clickhouse runs");
    send_signal(pid, "STOP");
    let text = wait_for_metrics(port, "6 failed evaluations and the outage alert", |t| {
        metric(t, "rum_alerts_evaluation_errors_total") >= 6.0
            && t.contains("rum_alerts_firing{alertname=\"RumAlertsStoreUnavailable\"} 1")
    })
    .await;
    wait_for_webhook(&webhook, "RumAlertsStoreUnavailable", "firing").await;
    // Six intervals without data: the slow route was never resolved, and Alertmanager still holds
    // it. (An alert lives 3 intervals + query timeout + 2 x the notification budget after each
    // post, 48 s here; a_restart_during_an_outage_keeps_the_firing_alerts_alive waits past that.)
    let resolved_lcp = |webhook: &Webhook| {
        webhook
            .notified()
            .iter()
            .filter(|n| n.label("alertname") == "WebVitalsLCPP75Poor" && n.status == "resolved")
            .count()
    };
    assert_eq!(resolved_lcp(&webhook), 0, "{:?}", webhook.notified());
    let held = alertmanager.alerts_json();
    assert!(
        held.contains("\"WebVitalsLCPP75Poor\"") && held.contains("\"RumAlertsStoreUnavailable\""),
        "{held}"
    );
    assert!(
        metric(&text, "rum_alerts_store_consecutive_failures") >= 6.0,
        "{text}"
    );
    assert!(
        text.contains("rum_alerts_firing{alertname=\"WebVitalsLCPP75Poor\"} 1"),
        "{text}"
    );

    // Back: the outage alert is resolved, the slow route still fires.
    send_signal(pid, "CONT");
    wait_for_webhook(&webhook, "RumAlertsStoreUnavailable", "resolved").await;
    let text = wait_for_metrics(port, "the store to count as back", |t| {
        metric(t, "rum_alerts_store_consecutive_failures") == 0.0
    })
    .await;
    assert!(
        text.contains("rum_alerts_firing{alertname=\"RumAlertsStoreUnavailable\"} 0")
            && text.contains("rum_alerts_firing{alertname=\"WebVitalsLCPP75Poor\"} 1"),
        "{text}"
    );
    assert_eq!(metric(&text, "rum_alerts_notification_errors_total"), 0.0);
    assert_eq!(resolved_lcp(&webhook), 0, "{:?}", webhook.notified());

    stop_tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("run stops on shutdown")
        .unwrap()
        .unwrap();
}

/// Slow route data on `shop cart mobile` holding however long a test runs, and an evaluator config
/// (interval 1 s) posting to `alertmanager_url`.
async fn slow_route_and_config(
    clickhouse: &rum_clickhouse::ClickHouseConfig,
    alertmanager_url: &str,
) -> AlertsConfig {
    let step_end = rum_alerts::system_now() / STEP * STEP;
    insert(
        clickhouse,
        samples(
            "shop",
            "cart",
            "mobile",
            "LCP",
            7000.0,
            step_end - 40 * MINUTE,
            step_end + 10 * MINUTE,
            3,
        ),
    )
    .await;
    let config = AlertsConfig {
        port: free_port(),
        interval_secs: 1,
        alertmanager_url: alertmanager_url.to_string(),
        store_unavailable_after: 3,
        query_timeout_secs: 1,
        ..Default::default()
    };
    config.validate().unwrap();
    config
}

/// `rum alerts` running until the returned sender is used.
fn spawn_evaluator(
    config: AlertsConfig,
    clickhouse: rum_clickhouse::ClickHouseConfig,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), rum_alerts::AlertsError>>,
) {
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(async move {
        rum_alerts::run(&config, &clickhouse, async {
            let _ = stop_rx.await;
        })
        .await
    });
    (stop_tx, running)
}

async fn stop_evaluator(
    (stop_tx, running): (
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<Result<(), rum_alerts::AlertsError>>,
    ),
) {
    stop_tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(30), running)
        .await
        .expect("run stops on shutdown")
        .unwrap()
        .unwrap();
}

/// `(state, endsAt)` of the alerts named `alertname` Alertmanager holds.
fn held(alertmanager: &Alertmanager, alertname: &str) -> Vec<(String, String)> {
    let held: serde_json::Value = serde_json::from_str(&alertmanager.alerts_json()).unwrap();
    held.as_array()
        .unwrap()
        .iter()
        .filter(|a| a["labels"]["alertname"] == alertname)
        .map(|a| {
            (
                a["status"]["state"].as_str().unwrap_or("").to_string(),
                a["endsAt"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn alerts_posted_slower_than_their_interval_arrive_alive() {
    let server = ClickHouseServer::start();
    let clickhouse = database(&server).await;
    let webhook = Webhook::start();
    let alertmanager = Alertmanager::start(&webhook.url);
    // Every post reaches Alertmanager 4 s after it was sent (under the 5 s request timeout), longer
    // than 3 intervals of 1 s: an endsAt from the evaluation's start arrives already past.
    let proxy = FaultProxy::start_delayed(alertmanager.port, "\"never\"", Duration::from_secs(4));
    let config = slow_route_and_config(&clickhouse, &proxy.url).await;
    let evaluator = spawn_evaluator(config, clickhouse);
    wait_for_webhook(&webhook, "WebVitalsLCPP75Poor", "firing").await;
    common::wait_until("three posts forwarded", Duration::from_secs(60), || {
        proxy.forwarded.load(Ordering::SeqCst) >= 3
    });
    let now = rum_alerts::notify::rfc3339(rum_alerts::system_now());
    let lcp = held(&alertmanager, "WebVitalsLCPP75Poor");
    assert_eq!(lcp.len(), 1, "{lcp:?}");
    assert_eq!(lcp[0].0, "active", "{lcp:?}");
    assert!(lcp[0].1 > now, "ends in the future: {lcp:?} at {now}");
    let resolved = webhook
        .notified()
        .iter()
        .filter(|n| n.status == "resolved")
        .count();
    assert_eq!(resolved, 0, "{:?}", webhook.notified());
    stop_evaluator(evaluator).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_during_an_outage_keeps_the_firing_alerts_alive() {
    let server = ClickHouseServer::start();
    let clickhouse = database(&server).await;
    let webhook = Webhook::start();
    let alertmanager = Alertmanager::start(&webhook.url);
    let config = slow_route_and_config(&clickhouse, &alertmanager.url).await;
    let first = spawn_evaluator(config.clone(), clickhouse.clone());
    wait_for_webhook(&webhook, "WebVitalsLCPP75Poor", "firing").await;
    stop_evaluator(first).await;
    // The last endsAt the stopped evaluator gave its alert: Alertmanager resolves it then unless
    // someone posts it again.
    let lcp = held(&alertmanager, "WebVitalsLCPP75Poor");
    assert_eq!(lcp.len(), 1, "{lcp:?}");
    let last_ends_at = lcp[0].1.clone();

    // ClickHouse stops answering, and a new evaluator starts: it cannot read anything.
    let pid = server.pid().expect("clickhouse runs");
    send_signal(pid, "STOP");
    let second_config = AlertsConfig {
        port: free_port(),
        ..config
    };
    let second_port = second_config.port;
    let second = spawn_evaluator(second_config, clickhouse.clone());
    // Past the old endsAt, and 5 intervals more.
    common::wait_until(
        "the stopped evaluator's endsAt and 5 intervals to pass",
        Duration::from_secs(120),
        || rum_alerts::notify::rfc3339(rum_alerts::system_now().saturating_sub(5)) > last_ends_at,
    );
    let text = metrics_text(second_port).await;
    assert!(
        metric(&text, "rum_alerts_evaluation_errors_total") >= 5.0,
        "{text}"
    );
    let resolved: Vec<_> = webhook
        .notified()
        .into_iter()
        .filter(|n| n.status == "resolved")
        .collect();
    assert!(resolved.is_empty(), "{resolved:?}");
    let lcp = held(&alertmanager, "WebVitalsLCPP75Poor");
    assert_eq!(lcp.len(), 1, "{lcp:?}");
    assert_eq!(lcp[0].0, "active", "{lcp:?}");
    assert!(lcp[0].1 > last_ends_at, "re-sent: {lcp:?}");
    assert!(
        text.contains("rum_alerts_firing{alertname=\"WebVitalsLCPP75Poor\"} 1"),
        "{text}"
    );

    send_signal(pid, "CONT");
    stop_evaluator(second).await;
}
