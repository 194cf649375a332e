//! The first real path, end to end with real processes: an HTTP POST to `rum ingest`, through the
//! Apache Kafka broker, `rum consume`, into the ClickHouse server's `rum.vitals_raw`.

mod common;

use std::time::Duration;

use common::{eventually, Pipeline};

const BEACON: &str = r#"{"site":"shop","route":"/product/123","device":"mobile","nav_type":"navigate","sample_rate":0.25,"metrics":[{"name":"LCP","value":2310.5,"id":"v5-1700-123","rating":"good"},{"name":"CLS","value":0.31,"id":"v5-1700-124","rating":"good"}]}"#;
const BARE_METRIC: &str = r#"{"name":"INP","value":612,"rating":"poor","delta":612,"id":"v5-1700-125","navigationType":"reload","route":"/cart/"}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_posted_beacon_becomes_rows_in_clickhouse() {
    let mut pipeline = Pipeline::start(&[]).await;
    let (http, clickhouse, base) = (&pipeline.http, &pipeline.clickhouse, pipeline.base.clone());
    let post = async |content_type: &str, query: &str, body: &str| {
        pipeline.post(content_type, query, body).await
    };
    assert_eq!(post("text/plain;charset=UTF-8", "", BEACON).await, 204);
    assert_eq!(
        post("application/json", "?site=blog", BARE_METRIC).await,
        204
    );
    assert_eq!(post("text/plain", "", "{not json").await, 400);
    assert_eq!(post("application/xml", "", BEACON).await, 415);
    // Each metric id's current value: its row with the highest revision.
    let final_rows = || {
        clickhouse.query(
            "SELECT site, route, device, nav_type, metric, argMax(value, revision), argMax(rating, revision), \
             metric_id, sample_rate FROM rum.vitals_raw \
             GROUP BY site, route, device, nav_type, metric, metric_id, sample_rate ORDER BY metric_id FORMAT TSV",
        )
    };
    let rows = eventually(
        "3 rows in rum.vitals_raw",
        Duration::from_secs(30),
        async || {
            let rows = final_rows();
            (rows.lines().count() >= 3).then_some(rows)
        },
    )
    .await;
    assert_eq!(
        rows.lines().collect::<Vec<_>>(),
        [
            "shop\tproduct-id\tmobile\tnavigate\tLCP\t2310.5\tgood\tv5-1700-123\t0.25",
            "shop\tproduct-id\tmobile\tnavigate\tCLS\t0.31\tpoor\tv5-1700-124\t0.25",
            "blog\tcart\tunknown\treload\tINP\t612\tpoor\tv5-1700-125\t1",
        ]
    );
    // The collector sends a metric again when its value changed (CLS grows): the final value replaces the
    // first one; the LCP sent again unchanged is a duplicate.
    let resent = BEACON.replace(r#""value":0.31"#, r#""value":0.45"#);
    assert_ne!(resent, BEACON);
    assert_eq!(post("text/plain", "", &resent).await, 204);
    eventually(
        "the re-sent CLS to replace the first value",
        Duration::from_secs(30),
        async || final_rows().contains("CLS\t0.45\tpoor").then_some(()),
    )
    .await;

    let consumer_metrics = pipeline.consumer_metrics.clone();
    eventually(
        "the unchanged LCP to be dropped as a duplicate",
        Duration::from_secs(30),
        async || {
            let text = http
                .get(&consumer_metrics)
                .send()
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            text.lines()
                .any(|l| l == "rum_consumer_metrics_deduplicated_total 1")
                .then_some(())
        },
    )
    .await;
    // One row for the metric id (ReplacingMergeTree, read FINAL): the final value, replacing the first.
    let stored = clickhouse.query(
        "SELECT value, revision, replaces_value, replaces_rating FROM rum.vitals_raw FINAL \
         WHERE metric = 'CLS' FORMAT TSV",
    );
    assert_eq!(
        stored.trim(),
        "0.45\t1\t0.31\tpoor",
        "one CLS row, the final value"
    );
    let rollup = eventually(
        "the replacement rolled up",
        Duration::from_secs(30),
        async || {
            let r = clickhouse.query(
                "SELECT countMerge(samples), sumMerge(poor), sumMapMerge(sketch) FROM rum.vitals_1m \
                 WHERE site = 'shop' AND metric = 'CLS' FORMAT TSV",
            );
            r.contains(&format!("[{}]", rum_clickhouse::bucket_of(0.45)))
                .then_some(r)
        },
    )
    .await;
    assert_eq!(
        rollup.trim(),
        format!("1\t1\t([{}],[1])", rum_clickhouse::bucket_of(0.45)),
        "one sample, in the final value's bucket"
    );

    // The ingest counted every request once, as accepted or rejected with a reason.
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "rum_beacons_received_total 5",
        "rum_beacons_accepted_total 3",
        "rum_beacons_rejected_total{reason=\"malformed_json\"} 1",
        "rum_beacons_rejected_total{reason=\"unsupported_media_type\"} 1",
        "rum_metrics_accepted_total{metric=\"LCP\"} 2",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "missing `{line}` in\n{metrics}"
        );
    }

    pipeline.stop();
}

/// Issue 17 through the real path (ingest, Kafka, consumer, ClickHouse 18.16): a beacon of today's
/// collector is stored with exactly the columns it had before (the new ones at their defaults); a
/// beacon of the attribution build lands with its page id, release, RTT bucket, the browser read from
/// the User-Agent and each metric's attribution in its own columns; a bare web-vitals Metric with no
/// route takes its route from the Referer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attribution_and_context_land_in_vitals_raw_and_old_beacons_are_stored_as_before() {
    const CHROME: &str = "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36";
    let mut pipeline = Pipeline::start(&[]).await;
    let endpoint = format!("{}/api/v1/observability/web-vitals", pipeline.base);
    let post = async |headers: &[(&str, &str)], query: &str, body: &str| {
        let mut request = pipeline
            .http
            .post(format!("{endpoint}{query}"))
            .header("content-type", "text/plain;charset=UTF-8")
            .body(body.to_string());
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send().await.expect("POST").status().as_u16()
    };
    // Today's collector, no User-Agent (a script): what it stored before issue 17.
    assert_eq!(post(&[], "", BEACON).await, 204);
    let attributed = r##"{"site":"shop","route":"/product/9","nav_type":"navigate","sample_rate":0.5,
        "page_id":"pl_0123456789abcdef","release":"2026.12.1","rtt":150,
        "metrics":[
          {"name":"LCP","value":3100,"id":"v5-2-1","rating":"needs-improvement","attribution":{
             "target":"main>img.hero","url":"https://cdn.example/hero.jpg?w=800#x",
             "timeToFirstByte":400,"resourceLoadDelay":700,"resourceLoadDuration":1500,"elementRenderDelay":500}},
          {"name":"INP","value":350,"id":"v5-2-2","rating":"needs-improvement","attribution":{
             "interactionTarget":"button#buy","interactionType":"pointer","inputDelay":20,
             "processingDuration":290,"presentationDelay":40,
             "scriptUrl":"https://shop.example/app.js?v=3","scriptInvoker":"BUTTON#buy.onclick"}},
          {"name":"CLS","value":0.3,"id":"v5-2-3","rating":"poor","attribution":{"largestShiftTarget":"div.ad"}}]}"##;
    assert_eq!(post(&[("user-agent", CHROME)], "", attributed).await, 204);
    // Google's README: sendBeacon(url, JSON.stringify(metric)), no route; the page's URL in Referer.
    let bare = r#"{"name":"TTFB","value":420,"rating":"good","delta":420,"id":"v5-3-1","navigationType":"navigate","entries":[]}"#;
    assert_eq!(
        post(
            &[(
                "referer",
                "https://blog.example/posts/2024/hello-world?utm=x"
            )],
            "?site=blog",
            bare
        )
        .await,
        204
    );
    let clickhouse = &pipeline.clickhouse;
    let columns = "site, route, device, nav_type, metric, value, rating, metric_id, sample_rate, \
                   page_id, release, rtt, browser, browser_major, target, resource_url, \
                   time_to_first_byte, resource_load_delay, resource_load_duration, element_render_delay, \
                   interaction_type, input_delay, processing_duration, presentation_delay, script_url, script_invoker";
    let rows = eventually(
        "6 rows in rum.vitals_raw",
        Duration::from_secs(30),
        async || {
            let rows = clickhouse.query(&format!(
                "SELECT {columns} FROM rum.vitals_raw ORDER BY metric_id FORMAT TSV"
            ));
            (rows.lines().count() >= 6).then_some(rows)
        },
    )
    .await;
    assert_eq!(
        rows.lines().collect::<Vec<_>>(),
        [
            "shop\tproduct-id\tmobile\tnavigate\tLCP\t2310.5\tgood\tv5-1700-123\t0.25\t\t\tunknown\tunknown\t0\t\t\t\\N\t\\N\t\\N\t\\N\t\t\\N\t\\N\t\\N\t\t",
            "shop\tproduct-id\tmobile\tnavigate\tCLS\t0.31\tpoor\tv5-1700-124\t0.25\t\t\tunknown\tunknown\t0\t\t\t\\N\t\\N\t\\N\t\\N\t\t\\N\t\\N\t\\N\t\t",
            "shop\tproduct-id\tmobile\tnavigate\tLCP\t3100\tneeds-improvement\tv5-2-1\t0.5\tpl_0123456789abcdef\t2026.12.1\t100-300\tchrome\t131\tmain>img.hero\thttps://cdn.example/hero.jpg\t400\t700\t1500\t500\t\t\\N\t\\N\t\\N\t\t",
            "shop\tproduct-id\tmobile\tnavigate\tINP\t350\tneeds-improvement\tv5-2-2\t0.5\tpl_0123456789abcdef\t2026.12.1\t100-300\tchrome\t131\tbutton#buy\t\t\\N\t\\N\t\\N\t\\N\tpointer\t20\t290\t40\thttps://shop.example/app.js\tBUTTON#buy.onclick",
            "shop\tproduct-id\tmobile\tnavigate\tCLS\t0.3\tpoor\tv5-2-3\t0.5\tpl_0123456789abcdef\t2026.12.1\t100-300\tchrome\t131\tdiv.ad\t\t\\N\t\\N\t\\N\t\\N\t\t\\N\t\\N\t\\N\t\t",
            "blog\tposts-id-hello-world\tunknown\tnavigate\tTTFB\t420\tgood\tv5-3-1\t1\t\t\tunknown\tunknown\t0\t\t\t\\N\t\\N\t\\N\t\\N\t\t\\N\t\\N\t\\N\t\t",
        ]
    );
    // The rollup counts them once each, weighted by 1 / sample rate (its INSERT follows the raw one:
    // waited for).
    let rollup = eventually("6 samples in rum.vitals_1m", Duration::from_secs(30), async || {
        let rollup = clickhouse.query(
            "SELECT metric, countMerge(samples), sumMerge(weighted_samples), sumMerge(weighted_poor) \
             FROM rum.vitals_1m WHERE site != '' GROUP BY metric ORDER BY metric FORMAT TSV",
        );
        let samples: u64 = rollup
            .lines()
            .filter_map(|l| l.split('\t').nth(1)?.parse::<u64>().ok())
            .sum();
        (samples >= 6).then_some(rollup)
    })
    .await;
    assert_eq!(
        rollup.lines().collect::<Vec<_>>(),
        [
            "CLS\t2\t6\t6",
            "INP\t1\t2\t0",
            "LCP\t2\t6\t0",
            "TTFB\t1\t1\t0"
        ]
    );
    pipeline.stop();
}
