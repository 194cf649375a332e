//! What the ingest adds to a beacon from the request, in process over real sockets: the route of
//! a bare `web-vitals` Metric from its page's `Referer`, the browser from the `User-Agent`, and the
//! attribution values capped per site and route. The published messages are read back as a
//! consumer decodes them.

mod common;

use std::time::Duration;

use common::Served;
use rum_ingest::BEACON_PATH;

/// Exactly what `onLCP(m => navigator.sendBeacon('/rum?site=shop', JSON.stringify(m)))` sends with
/// web-vitals 5 (its Metric object, the LCP entry serialized by its `toJSON`).
const BARE_LCP: &str = r#"{"name":"LCP","value":2484.2,"rating":"good","delta":2484.2,"entries":[{"name":"","entryType":"largest-contentful-paint","startTime":2484.2,"duration":0,"size":120000,"renderTime":2484.2,"loadTime":2301.5,"firstAnimatedFrameTime":0,"id":"hero","url":"https://shop.example/img/hero.jpg"}],"id":"v5-1700000000000-8216345112731","navigationType":"navigate"}"#;

const CHROME_ANDROID: &str = "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36";

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// Posts `body` to the beacon path with `?site=shop` and these headers, as `sendBeacon` does
/// (`text/plain;charset=UTF-8`); the status and the `error` of a JSON answer.
async fn send(served: &Served, body: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut request = http()
        .post(format!("http://{}{BEACON_PATH}?site=shop", served.addr))
        .header("content-type", "text/plain;charset=UTF-8")
        .body(body.to_owned());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    let error = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v["error"].as_str().map(String::from))
        .unwrap_or_default();
    (status, error)
}

/// A same-origin page's `sendBeacon`: its headers as Chrome sends them.
fn from_page(referer: &str) -> Vec<(&str, &str)> {
    vec![
        ("origin", "https://shop.example"),
        ("referer", referer),
        ("sec-fetch-site", "same-origin"),
        ("sec-fetch-mode", "no-cors"),
        ("sec-fetch-dest", "empty"),
        ("user-agent", CHROME_ANDROID),
    ]
}

#[tokio::test]
async fn a_bare_web_vitals_metric_takes_its_route_from_the_referer_and_its_browser_from_the_ua() {
    let served = Served::start(|c| c.route_min_clients = 1).await;
    let referer = "https://shop.example/product/8812345/reviews?email=jane%40example.com#top";
    assert_eq!(
        send(&served, BARE_LCP, &from_page(referer)).await,
        (204, String::new())
    );
    let messages = served.published_messages();
    assert_eq!(messages.len(), 1);
    let m = &messages[0];
    assert_eq!(
        (m.site.as_str(), m.route.as_str(), m.nav_type.as_str()),
        ("shop", "product-id-reviews", "navigate")
    );
    assert_eq!(
        (m.browser.as_str(), m.browser_major),
        ("chrome", 131),
        "from the User-Agent"
    );
    assert_eq!(m.device, rum_schemas::Device::Mobile);
    assert_eq!(m.metrics.len(), 1);
    assert_eq!(
        (m.metrics[0].value, m.metrics[0].id.as_str()),
        (2484.2, "v5-1700000000000-8216345112731")
    );
    assert_eq!(served.published_keys(), ["shop|product-id-reviews|mobile"]);
    let metrics = &served.state.metrics;
    assert_eq!(metrics.routes_from_referer.get(), 1);
    // Nothing of the Referer but the normalized path was published.
    let published = String::from_utf8(served.published.2.lock().unwrap()[0].clone()).unwrap();
    assert!(
        !published.contains("jane") && !published.contains("8812345"),
        "{published}"
    );
    // A route in the body wins over the Referer.
    let with_route = r#"{"name":"LCP","value":1000,"id":"v5-2","route":"/cart"}"#;
    assert_eq!(send(&served, with_route, &from_page(referer)).await.0, 204);
    assert_eq!(served.published_messages()[1].route, "cart");
    assert_eq!(metrics.routes_from_referer.get(), 1);
}

#[tokio::test]
async fn without_a_usable_referer_a_bare_metric_is_refused_as_missing_route_and_counted() {
    let served = Served::start(|_| {}).await;
    let ua = ("user-agent", CHROME_ANDROID);
    let cases: [(Vec<(&str, &str)>, &str); 4] = [
        (vec![ua], "absent"),
        (
            vec![ua, ("referer", "android-app://com.google.android.gm/")],
            "not_http",
        ),
        (vec![ua, ("referer", "/product/1")], "unparsable"),
        (
            vec![
                ua,
                ("referer", "https://shop.example/"),
                ("sec-fetch-site", "cross-site"),
            ],
            "cross_origin",
        ),
    ];
    for (headers, reason) in &cases {
        assert_eq!(
            send(&served, BARE_LCP, headers).await,
            (400, "missing_route".to_string()),
            "{reason}"
        );
    }
    let long = format!("https://shop.example/{}", "a".repeat(5_000));
    let (status, error) = send(&served, BARE_LCP, &from_page(&long)).await;
    assert_eq!((status, error.as_str()), (400, "missing_route"));
    assert_eq!(served.count("rejected", "missing_route"), 5);
    let ignored = &served.state.metrics.referers_ignored;
    for (_, reason) in &cases {
        assert_eq!(ignored.with_label_values(&[reason]).get(), 1, "{reason}");
    }
    assert_eq!(ignored.with_label_values(&["too_long"]).get(), 1);
    assert_eq!(served.state.metrics.routes_from_referer.get(), 0);
    assert_eq!(served.published(), 0);
    let exposition = reqwest::get(format!("http://{}/metrics", served.addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        exposition.contains(r#"rum_ingest_referers_ignored_total{reason="cross_origin"} 1"#),
        "{exposition}"
    );
}

/// An LCP beacon for `route` whose element is `target`.
fn lcp_with_target(route: &str, target: &str, n: usize) -> String {
    format!(
        r#"{{"site":"shop","route":"{route}","metrics":[{{"name":"LCP","value":1800,"id":"v5-{n}","attribution":{{"target":"{target}","url":"https://cdn.example/hero.jpg","timeToFirstByte":100}}}}]}}"#
    )
}

#[tokio::test]
async fn attribution_values_beyond_the_cap_of_a_route_are_published_as_other_and_counted() {
    let served = Served::start(|c| {
        c.route_min_clients = 1;
        c.max_attribution_values_per_route = 3;
    })
    .await;
    // A page that puts an id into its selector: a new target on every page load.
    for n in 0..10 {
        let body = lcp_with_target("/product/1", &format!("#hero-{n}"), n);
        assert_eq!(send(&served, &body, &[]).await.0, 204);
    }
    // Another route has its own places.
    let body = lcp_with_target("/cart", "#hero-9", 10);
    assert_eq!(send(&served, &body, &[]).await.0, 204);
    let targets: Vec<String> = served
        .published_messages()
        .iter()
        .map(|m| m.metrics[0].attribution.target.clone())
        .collect();
    assert_eq!(
        targets,
        [
            "#hero-0", "#hero-1", "#hero-2", "other", "other", "other", "other", "other", "other",
            "other", "#hero-9"
        ]
    );
    let messages = served.published_messages();
    assert!(
        messages.iter().all(
            |m| m.metrics[0].attribution.url == "https://cdn.example/hero.jpg"
                && m.metrics[0].attribution.time_to_first_byte == Some(100.0)
        ),
        "one url: never folded; the times are kept"
    );
    let folded = &served.state.metrics.attribution_values_folded;
    assert_eq!(
        folded.with_label_values(&["target", "value_limit"]).get(),
        7
    );
    assert_eq!(folded.with_label_values(&["url", "value_limit"]).get(), 0);
    assert_eq!(
        folded.with_label_values(&["target", "route_limit"]).get(),
        0
    );
    let exposition = reqwest::get(format!("http://{}/metrics", served.addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(exposition.contains(
        r#"rum_ingest_attribution_values_folded_total{field="target",reason="value_limit"} 7"#
    ));
    assert!(
        exposition.contains("rum_ingest_attribution_routes 2"),
        "{exposition}"
    );
}

#[tokio::test]
async fn an_invalid_attribution_costs_the_attribution_not_the_metric() {
    let served = Served::start(|_| {}).await;
    let body = r##"{"site":"shop","route":"/","metrics":[{"name":"LCP","value":3100,"id":"a","attribution":{"target":"img\u0007","timeToFirstByte":50}},{"name":"CLS","value":0.02,"id":"b","attribution":{"largestShiftTarget":"#ad"}}]}"##;
    assert_eq!(send(&served, body, &[]).await.0, 204);
    let m = &served.published_messages()[0];
    assert_eq!(m.metrics.len(), 2);
    assert_eq!(m.metrics[0].value, 3100.0);
    assert!(m.metrics[0].attribution.is_empty(), "dropped whole");
    assert_eq!(m.metrics[1].attribution.largest_shift_target, "#ad");
    let metrics = &served.state.metrics;
    assert_eq!(
        metrics
            .attributions_dropped
            .with_label_values(&["invalid_attribution"])
            .get(),
        1
    );
    assert_eq!(
        metrics
            .metrics_dropped
            .with_label_values(&["invalid_attribution"])
            .get(),
        0
    );
    assert_eq!(
        (m.browser.as_str(), m.browser_major),
        ("unknown", 0),
        "no User-Agent"
    );
}
