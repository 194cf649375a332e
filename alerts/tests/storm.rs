//! Hostile data cannot storm: the evaluator against a real ClickHouse 18.16 holding 100,000 sites
//! with random names (what anyone can post to the public ingest), with an injected clock.

mod common;

use std::collections::BTreeSet;
use std::time::Instant;

use common::{database, insert, samples, DAY, MINUTE, T0};
use rum_alerts::{AlertState, Evaluator, Rules};
use rum_clickhouse::VitalsRawRow;
use rum_schemas::MetricName;
use rum_testkit::ClickHouseServer;

const RANDOM_SITES: u32 = 100_000;
/// Sites with 99 samples yesterday: one under the default minimum of 100.
const NEAR_SITES: u32 = 99;
/// Sites of 20 page loads yesterday, each with all five vitals: 100 samples, 20 page loads.
const FIVE_VITAL_SITES: u32 = 50;

/// One LCP sample for each of `RANDOM_SITES` random site names, spread over `[from, from + 30 min)`.
fn random_sites(from: u32) -> Vec<VitalsRawRow> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..RANDOM_SITES)
        .map(|i| {
            // xorshift64: names no one chose, as a script posting beacons would make them.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            VitalsRawRow {
                metric_id: format!("v5-random-{i}"),
                kafka_offset: u64::from(i),
                ..VitalsRawRow::measured(
                    &format!("r{x:016x}"),
                    "root",
                    "mobile",
                    MetricName::LCP,
                    1000.0,
                    from + i % (30 * MINUTE),
                )
            }
        })
        .collect()
}

/// Yesterday's windows: the random sites, the near-minimum sites and "shop" (4 samples a minute,
/// 120 in the window); today "shop" stopped 40 minutes before `now`.
async fn hostile_yesterday(config: &rum_clickhouse::ClickHouseConfig, now: u32) {
    let window_yesterday = now - DAY - 30 * MINUTE;
    let started = Instant::now();
    insert(config, random_sites(window_yesterday)).await;
    let mut near = Vec::new();
    for i in 0..NEAR_SITES {
        // 99 samples over the window: 3 a minute for 33 minutes, ending with it.
        near.extend(samples(
            &format!("near-{i:02}"),
            "root",
            "mobile",
            "LCP",
            1000.0,
            now - DAY - 33 * MINUTE,
            now - DAY,
            3,
        ));
    }
    insert(config, near).await;
    // One client posting 20 beacons of five vitals for each of many sites: 100 samples a site, but
    // 20 page loads, under the minimum of 100 page loads.
    let mut five_vitals = Vec::new();
    for i in 0..FIVE_VITAL_SITES {
        for metric in ["LCP", "INP", "CLS", "FCP", "TTFB"] {
            five_vitals.extend(samples(
                &format!("five-{i:02}"),
                "root",
                "mobile",
                metric,
                1.0,
                now - DAY - 20 * MINUTE,
                now - DAY,
                1,
            ));
        }
    }
    insert(config, five_vitals).await;
    eprintln!(
        "inserted {} random-site rows and {} near-minimum sites in {:?}",
        RANDOM_SITES,
        NEAR_SITES,
        started.elapsed()
    );
    insert(
        config,
        samples(
            "shop",
            "root",
            "mobile",
            "LCP",
            1000.0,
            now - DAY - 60 * MINUTE,
            now - DAY,
            4,
        ),
    )
    .await;
    insert(
        config,
        samples(
            "shop",
            "root",
            "mobile",
            "LCP",
            1000.0,
            now - 90 * MINUTE,
            now - 40 * MINUTE,
            4,
        ),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn random_sites_seen_yesterday_do_not_alert_a_day_later() {
    let server = ClickHouseServer::start();
    let config = database(&server).await;
    let now = T0 + DAY;
    hostile_yesterday(&config, now).await;
    assert_eq!(
        server.query("SELECT uniqExact(site) FROM rum.vitals_1m"),
        format!("{}\n", RANDOM_SITES + NEAR_SITES + FIVE_VITAL_SITES + 1)
    );

    let evaluator = Evaluator::new(&config, Rules::default(), MINUTE);
    let started = Instant::now();
    let alerts = evaluator.evaluate_at(now).await.unwrap();
    eprintln!(
        "one evaluation over {} sites: {:?}",
        RANDOM_SITES + NEAR_SITES + FIVE_VITAL_SITES + 1,
        started.elapsed()
    );
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    let alert = &alerts[0];
    assert_eq!(
        (alert.name(), alert.label("site"), alert.state),
        ("WebVitalsBeaconsStopped", "shop", AlertState::Firing)
    );
    assert_eq!(alert.annotations["page_loads_yesterday"], "120");
    assert_eq!(alert.starts_at, now - 40 * MINUTE);

    // What the evaluation read: the one candidate's minutes, nothing of the other 100,099 sites.
    let data = evaluator.fetch_at(now).await.unwrap();
    let sites: BTreeSet<&str> = data.site_minutes.iter().map(|m| m.site.as_str()).collect();
    assert_eq!(sites, BTreeSet::from(["shop"]));
    assert_eq!(data.not_fetched, 0);
    assert!(data.steps.is_empty(), "no p75 candidate: {:?}", data.steps);
}

#[tokio::test(flavor = "multi_thread")]
async fn more_candidates_than_the_cap_send_the_cap_and_one_summary() {
    let server = ClickHouseServer::start();
    let config = database(&server).await;
    let now = T0 + DAY;
    hostile_yesterday(&config, now).await;

    // A minimum of 1 page load makes every site a candidate: 100,150 of them.
    let mut rules = Rules::default();
    rules.beacons_stopped.min_page_loads = 1;
    let evaluator = Evaluator::new(&config, rules, MINUTE);
    let started = Instant::now();
    let alerts = evaluator.evaluate_at(now).await.unwrap();
    eprintln!(
        "one evaluation with 100,150 candidates (cap 500): {:?}",
        started.elapsed()
    );
    assert_eq!(alerts.len(), 501);
    let summary = &alerts[0];
    assert_eq!(summary.name(), "RumAlertsTruncated");
    assert_eq!(summary.label("severity"), "warning");
    assert_eq!(summary.annotations["omitted"], "99650");
    assert_eq!(summary.annotations["max_alerts"], "500");
    // The biggest first: "shop" (120 page loads), the near-minimum sites (99 each, by name), the
    // five-vital sites (20 each), then random sites (1 each, by name).
    let kept: Vec<&str> = alerts[1..].iter().map(|a| a.label("site")).collect();
    assert_eq!(kept[0], "shop");
    let near: Vec<String> = (0..NEAR_SITES).map(|i| format!("near-{i:02}")).collect();
    assert_eq!(kept[1..100], near);
    let five: Vec<String> = (0..FIVE_VITAL_SITES)
        .map(|i| format!("five-{i:02}"))
        .collect();
    assert_eq!(kept[100..150], five);
    let random = &kept[150..];
    assert!(random.iter().all(|s| s.starts_with('r')), "{random:?}");
    let mut sorted = random.to_vec();
    sorted.sort_unstable();
    assert_eq!(random, sorted);
    let smallest: Vec<String> = server
        .query(
            "SELECT DISTINCT site FROM rum.vitals_1m WHERE site LIKE 'r%' ORDER BY site LIMIT 350",
        )
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(random, smallest);

    // The read was bounded: 501 sites (cap + 1), the rest counted.
    let data = evaluator.fetch_at(now).await.unwrap();
    let sites: BTreeSet<&str> = data.site_minutes.iter().map(|m| m.site.as_str()).collect();
    assert_eq!(sites.len(), 501);
    assert_eq!(data.not_fetched, 100_150 - 501);
    // A replica reading the same data sends the same alerts.
    let replica = evaluator.clone();
    assert_eq!(replica.evaluate_at(now).await.unwrap(), alerts);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cap_keeps_what_the_uncapped_ranking_puts_first() {
    let server = ClickHouseServer::start();
    let config = database(&server).await;
    let end = T0 + 30 * MINUTE;
    // 12 slow LCP routes with 2 to 5 samples a minute (ties broken by name), 3 slow INP routes
    // (critical in these rules), and 2 sites that stopped (critical, by their volume yesterday).
    for i in 0..12u32 {
        let route = format!("slow-{:02}", (i * 7) % 12);
        insert(
            &config,
            samples("shop", &route, "mobile", "LCP", 6000.0, T0, end, 2 + i % 4),
        )
        .await;
    }
    for i in 0..3u32 {
        insert(
            &config,
            samples(
                "shop",
                &format!("inp-{i}"),
                "desktop",
                "INP",
                900.0,
                T0,
                end,
                2 + i,
            ),
        )
        .await;
    }
    for (site, per_minute) in [("gone-a", 4), ("gone-b", 5)] {
        insert(
            &config,
            samples(
                site,
                "root",
                "mobile",
                "LCP",
                1000.0,
                end - DAY - 30 * MINUTE,
                end - DAY,
                per_minute,
            ),
        )
        .await;
    }
    let mut rules = Rules::default();
    rules.inp.severity = "critical".into();
    let all = Evaluator::new(&config, rules.clone(), MINUTE)
        .evaluate_at(end)
        .await
        .unwrap();
    assert_eq!(all.len(), 17, "{all:?}");
    assert!(all.iter().all(|a| a.name() != "RumAlertsTruncated"));
    let order: Vec<(&str, &str, &str)> = all
        .iter()
        .take(5)
        .map(|a| (a.name(), a.label("site"), a.label("route")))
        .collect();
    assert_eq!(
        order,
        [
            ("WebVitalsBeaconsStopped", "gone-b", ""),
            // 120 samples each: the alert name breaks the tie.
            ("WebVitalsBeaconsStopped", "gone-a", ""),
            ("WebVitalsINPP75Poor", "shop", "inp-2"),
            ("WebVitalsINPP75Poor", "shop", "inp-1"),
            ("WebVitalsINPP75Poor", "shop", "inp-0"),
        ]
    );
    // Every cap keeps exactly the head of the uncapped ranking: the SQL limit reads the same
    // candidates the evaluator ranks first.
    for cap in 1..17 {
        let capped = Evaluator::new(&config, rules.clone(), MINUTE)
            .with_max_alerts(cap)
            .evaluate_at(end)
            .await
            .unwrap();
        assert_eq!(capped.len(), cap + 1, "cap {cap}");
        assert_eq!(capped[0].name(), "RumAlertsTruncated");
        assert_eq!(capped[0].annotations["omitted"], (17 - cap).to_string());
        assert_eq!(capped[1..], all[..cap], "cap {cap}");
    }
}
