//! Input edges: forwarded hops the proxy could not fill in, an IPv6 /48 sweep, long-lived and
//! cross-site tokens, a readiness flood, a disallowed origin and the public crawler list, each
//! against the real `rum ingest` in front of Apache Kafka, each with the counter that counts it.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use rum_testkit::{free_port, Kafka};

use crate::{beacon, metric_value, Ingest};

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// Posts `body` as `text/plain` to the ingest with these headers; the status (0: no answer).
async fn post_with(
    http: &reqwest::Client,
    ingest: &Ingest,
    query: &str,
    body: &str,
    headers: &[(&str, &str)],
) -> u16 {
    let mut request = http
        .post(ingest.endpoint(query))
        .header("content-type", "text/plain;charset=UTF-8")
        .body(body.to_string());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.map_or(0, |r| r.status().as_u16())
}

/// A config file for the ingest, removed on drop.
struct ConfigFile(PathBuf);

impl ConfigFile {
    fn new(name: &str, toml: &str) -> ConfigFile {
        let dir =
            std::env::temp_dir().join(format!("rum-hostile-input-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("rum.toml"), toml).unwrap();
        ConfigFile(dir)
    }

    fn path(&self) -> String {
        self.0.join("rum.toml").to_str().unwrap().to_string()
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const RATE_LIMITED: &str = "rum_beacons_rejected_total{reason=\"rate_limited\"}";
const NETWORK_LIMITED: &str = "rum_beacons_rejected_total{reason=\"rate_limited_network\"}";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_forwarded_hops_do_not_merge_the_clients_behind_a_proxy() {
    let kafka = Kafka::start();
    kafka.create_pipeline_topics();
    // 127.0.0.1 is the load balancer; each client may send 2 beacons at once.
    let ingest = Ingest::start(
        &kafka,
        &[
            ("RUM_INGEST_TRUSTED_PROXIES", "127.0.0.1"),
            ("RUM_INGEST_RATE_LIMIT_PER_SECOND", "1"),
            ("RUM_INGEST_RATE_LIMIT_BURST", "2"),
        ],
    )
    .await;
    let http = http();
    let warm_up = [("x-forwarded-for", "192.0.2.250")];
    assert_eq!(
        post_with(&http, &ingest, "", &beacon("warm-up"), &warm_up).await,
        204
    );
    // What proxies write: ports (Azure, some ingress controllers), brackets, and `unknown` (RFC
    // 7239, Squid) or garbage where they could not name the client.
    let clients = [
        "198.51.100.1:51234",
        "198.51.100.2:443",
        "[2001:db8:1:2::7]:443",
        "[2001:db8:5:6::7]",
        "198.51.100.7, unknown",
        "198.51.100.8, unknown",
        "198.51.100.9, _hidden",
    ];
    for xff in clients {
        let mut statuses = Vec::new();
        for id in ["a", "b", "c"] {
            let headers = [("x-forwarded-for", xff)];
            statuses.push(post_with(&http, &ingest, "", &beacon(id), &headers).await);
        }
        assert_eq!(statuses, [204, 204, 429], "{xff}: its own bucket of 2");
    }
    assert_eq!(
        ingest.metric(RATE_LIMITED).await,
        clients.len() as f64,
        "one refusal a client: no client paid for another"
    );
    assert_eq!(ingest.metric(NETWORK_LIMITED).await, 0.0);
    assert_eq!(
        ingest.metric("rum_ingest_clients_unidentified_total").await,
        9.0,
        "3 beacons each of the 3 clients behind an unknown hop"
    );
    assert_eq!(
        ingest.metric("rum_beacons_accepted_total").await,
        1.0 + 2.0 * clients.len() as f64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ipv6_slash_48_sweep_meets_the_network_budget() {
    let kafka = Kafka::start();
    kafka.create_pipeline_topics();
    let ingest = Ingest::start(
        &kafka,
        &[
            ("RUM_INGEST_TRUSTED_PROXIES", "127.0.0.1"),
            ("RUM_INGEST_RATE_LIMIT_PER_SECOND", "1"),
            ("RUM_INGEST_RATE_LIMIT_BURST", "2"),
            ("RUM_INGEST_RATE_LIMIT_NETWORK_PER_SECOND", "1"),
            ("RUM_INGEST_RATE_LIMIT_NETWORK_BURST", "32"),
        ],
    )
    .await;
    let http = http();
    assert_eq!(
        post_with(
            &http,
            &ingest,
            "",
            &beacon("warm-up"),
            &[("x-forwarded-for", "2001:db8:ffff::1")]
        )
        .await,
        204
    );
    // One routed /48, a fresh /64 each beacon: each is a new client to the /64 level.
    let sweep = 1_000;
    let mut accepted = 0;
    let started = Instant::now();
    for i in 0..sweep {
        let xff = format!("2001:db8:42:{i:x}::1");
        match post_with(
            &http,
            &ingest,
            "",
            &beacon("sweep"),
            &[("x-forwarded-for", &xff)],
        )
        .await
        {
            204 => accepted += 1,
            429 => {}
            other => panic!("beacon {i}: {other}"),
        }
    }
    let took = started.elapsed();
    println!("a sweep of {sweep} /64s of one /48 in {took:?}: {accepted} accepted");
    // The network's burst, and its refill of one a second while the sweep ran.
    let refilled = took.as_secs() as u32 + 1;
    assert!(
        (32..=32 + refilled).contains(&accepted),
        "the /48's burst of 32, not {sweep} bursts of 2: {accepted} in {took:?}"
    );
    assert_eq!(
        ingest.metric(NETWORK_LIMITED).await,
        f64::from(sweep - accepted)
    );
    assert_eq!(ingest.metric(RATE_LIMITED).await, 0.0);
    assert_eq!(
        post_with(
            &http,
            &ingest,
            "",
            &beacon("neighbour"),
            &[("x-forwarded-for", "2001:db8:43::1")]
        )
        .await,
        204,
        "another /48 is not affected"
    );
}

const TOKEN_SITES: &str = r#"
[ingest]
token_max_ttl_secs = 3600

[ingest.sites.shop]
token_secrets = [
  { id = "k2", secret = "0123456789abcdef-shop-new" },
  { id = "k1", secret = "0123456789abcdef-shop-old" },
]

[ingest.sites.blog]
token_secret = "0123456789abcdef-shop-new"
"#;

/// `rum token` for `site` with this config; the query string it prints.
fn rum_token(config: &str, site: &str, ttl: &str) -> String {
    let out = crate::common::rum_output(
        &["token", "--config", config, "--site", site, "--ttl", ttl],
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_lived_cross_site_and_unknown_key_tokens_are_refused() {
    let config = ConfigFile::new("tokens", TOKEN_SITES);
    let kafka = Kafka::start();
    kafka.create_pipeline_topics();
    let ingest = Ingest::start(&kafka, &[("RUM_CONFIG", &config.path())]).await;
    let http = http();
    let shop = rum_token(&config.path(), "shop", "10m");
    assert!(shop.ends_with("&k=k2"), "{shop}");
    assert_eq!(
        post_with(&http, &ingest, &format!("?{shop}"), &beacon("valid"), &[]).await,
        204
    );
    // The previous key, still configured during the rotation: signed with it by hand.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let key = |id: Option<&str>, secret: &str| {
        rum_ingest::token::Key::new(id.map(String::from), secret.into())
    };
    let sign = |k: &rum_ingest::token::Key, site: &str, expires: u64| {
        format!(
            "?{}",
            rum_ingest::token::query(k, site, rum_ingest::BEACON_PATH, expires)
        )
    };
    let old = key(Some("k1"), "0123456789abcdef-shop-old");
    let new = key(Some("k2"), "0123456789abcdef-shop-new");
    assert_eq!(
        post_with(
            &http,
            &ingest,
            &sign(&old, "shop", now + 600),
            &beacon("old"),
            &[]
        )
        .await,
        204
    );
    // A leaked signing key mints a token for a year: refused, whatever its signature.
    let year = sign(&new, "shop", now + 365 * 86_400);
    assert_eq!(
        post_with(&http, &ingest, &year, &beacon("year"), &[]).await,
        403
    );
    // blog's token (the same secret as shop's current key) posted for shop, with shop's key id.
    let blog = rum_token(&config.path(), "blog", "10m");
    let cross = format!("?{}&k=k2", blog.replace("site=blog", "site=shop"));
    assert_eq!(
        post_with(&http, &ingest, &cross, &beacon("cross"), &[]).await,
        403
    );
    let unknown_key = sign(
        &key(Some("k9"), "0123456789abcdef-shop-new"),
        "shop",
        now + 600,
    );
    assert_eq!(
        post_with(&http, &ingest, &unknown_key, &beacon("k9"), &[]).await,
        403
    );
    let rejected = |reason: &str| format!("rum_beacons_rejected_total{{reason=\"{reason}\"}}");
    assert_eq!(ingest.metric(&rejected("token_ttl_too_long")).await, 1.0);
    assert_eq!(ingest.metric(&rejected("token_invalid")).await, 1.0);
    assert_eq!(ingest.metric(&rejected("token_unknown_key")).await, 1.0);
    assert_eq!(ingest.metric("rum_beacons_accepted_total").await, 2.0);
    // `rum token` refuses to mint what the ingest would refuse.
    let out = crate::common::rum_output(
        &[
            "token",
            "--config",
            &config.path(),
            "--site",
            "shop",
            "--ttl",
            "2h",
        ],
        &[],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("ingest.token_max_ttl_secs"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_readiness_flood_costs_a_check_a_second_not_one_a_probe() {
    let kafka = Kafka::start();
    kafka.create_pipeline_topics();
    let admin_port = free_port();
    let ingest = Ingest::start(
        &kafka,
        &[("RUM_INGEST_ADMIN_PORT", admin_port.to_string().as_str())],
    )
    .await;
    let admin = format!("http://127.0.0.1:{admin_port}/metrics");
    let checks = async || {
        metric_value(
            &crate::common::exposition(&admin).await,
            "rum_ingest_readiness_checks_total{result=\"ready\"}",
        )
    };
    // The metrics are on the admin port only.
    let public = http()
        .get(format!("{}/metrics", ingest.base))
        .send()
        .await
        .unwrap();
    assert_eq!(public.status(), 404);
    let before = checks().await;
    assert!(before >= 1.0, "checked before it was ready");
    let started = Instant::now();
    let probes: Vec<_> = (0..20)
        .map(|_| {
            let (http, url) = (http(), format!("{}/readyz", ingest.base));
            tokio::spawn(async move {
                let mut ok = 0;
                for _ in 0..100 {
                    if http.get(&url).send().await.is_ok_and(|r| r.status() == 200) {
                        ok += 1;
                    }
                }
                ok
            })
        })
        .collect();
    let mut answered = 0;
    for probe in probes {
        answered += probe.await.unwrap();
    }
    let took = started.elapsed();
    let made = checks().await - before;
    println!("2,000 /readyz probes in {took:?}: {made} readiness checks (Kafka metadata requests)");
    assert_eq!(answered, 2_000);
    // One check a second, whatever the probes: the burst's seconds and one at either end.
    assert!(
        made <= took.as_secs_f64().ceil() + 2.0,
        "{made} checks in {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_text_plain_beacon_from_a_disallowed_origin_is_refused() {
    let config = ConfigFile::new(
        "origins",
        "[ingest.sites.shop]\nallowed_origins = [\"https://shop.example\"]\n",
    );
    let kafka = Kafka::start();
    kafka.create_pipeline_topics();
    let ingest = Ingest::start(&kafka, &[("RUM_CONFIG", &config.path())]).await;
    let http = http();
    assert_eq!(ingest.post("", &beacon("warm-up")).await, 204);
    // What a page on evil.example can make any visitor's browser send: no preflight for text/plain.
    let evil = http
        .post(ingest.endpoint(""))
        .header("content-type", "text/plain;charset=UTF-8")
        .header("origin", "https://evil.example")
        .body(beacon("evil"))
        .send()
        .await
        .unwrap();
    assert_eq!(evil.status(), 403);
    assert_eq!(evil.headers()["vary"], "Origin");
    assert!(!evil.headers().contains_key("access-control-allow-origin"));
    let own = http
        .post(ingest.endpoint(""))
        .header("content-type", "text/plain;charset=UTF-8")
        .header("origin", "https://shop.example")
        .body(beacon("own"))
        .send()
        .await
        .unwrap();
    assert_eq!(own.status(), 204);
    assert_eq!(own.headers()["vary"], "Origin");
    assert_eq!(
        own.headers()["access-control-allow-origin"],
        "https://shop.example"
    );
    assert_eq!(
        ingest
            .metric("rum_beacons_rejected_total{reason=\"origin_not_allowed\"}")
            .await,
        1.0
    );
    assert_eq!(ingest.metric("rum_beacons_accepted_total").await, 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crawler_user_agents_from_the_public_list_are_dropped_as_bots() {
    #[derive(serde::Deserialize)]
    struct Crawler {
        instances: Vec<String>,
    }
    let list = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/ingest/testdata/crawler-user-agents-1.60.0.json"
    );
    let crawlers: Vec<Crawler> =
        serde_json::from_str(&std::fs::read_to_string(list).unwrap()).unwrap();
    let examples: Vec<String> = crawlers.into_iter().flat_map(|c| c.instances).collect();
    let kafka = Kafka::start();
    kafka.create_pipeline_topics();
    let ingest = Ingest::start(&kafka, &[]).await;
    let http = http();
    assert_eq!(ingest.post("", &beacon("warm-up")).await, 204);
    for ua in &examples {
        let status = post_with(
            &http,
            &ingest,
            "",
            &beacon("crawler"),
            &[("user-agent", ua)],
        )
        .await;
        assert_eq!(
            status, 204,
            "answered 204 either way (a bot has nothing to retry): {ua}"
        );
    }
    let bots = ingest
        .metric("rum_beacons_rejected_total{reason=\"bot\"}")
        .await;
    let accepted = ingest.metric("rum_beacons_accepted_total").await - 1.0;
    println!(
        "crawler-user-agents 1.60.0: {bots} of {} examples dropped as bots, {accepted} published",
        examples.len()
    );
    // The 5 left through are people in in-app and editor browsers (see ingest/testdata/README.md).
    assert_eq!((bots, accepted), (2_113.0, 5.0));
    // Real browsers pass: the 100 most common user agents.
    let top = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/ingest/testdata/top-user-agents-2.1.138.json"
    );
    let browsers: Vec<String> =
        serde_json::from_str(&std::fs::read_to_string(top).unwrap()).unwrap();
    for ua in &browsers {
        post_with(&http, &ingest, "", &beacon("person"), &[("user-agent", ua)]).await;
    }
    assert_eq!(
        ingest
            .metric("rum_beacons_rejected_total{reason=\"bot\"}")
            .await,
        bots,
        "no real browser dropped"
    );
    assert_eq!(
        ingest.metric("rum_beacons_accepted_total").await,
        1.0 + accepted + browsers.len() as f64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiny_and_absurd_sample_rates_are_refused_with_their_reason() {
    let kafka = Kafka::start();
    kafka.create_pipeline_topics();
    let ingest = Ingest::start(&kafka, &[]).await;
    let http = http();
    let with_rate = |rate: &str| {
        format!(
            r#"{{"site":"shop","route":"/","sample_rate":{rate},"metrics":[{{"name":"LCP","value":1200,"id":"r-{rate}"}}]}}"#
        )
    };
    // 5e-324 made one beacon weigh as 2e323 page loads (infinite in the weighted estimate).
    let refused = ["5e-324", "0.00009999", "0", "-0.5", "1.0000001", "1e308"];
    for rate in refused {
        assert_eq!(
            post_with(&http, &ingest, "", &with_rate(rate), &[]).await,
            400,
            "sample_rate {rate}"
        );
    }
    for rate in ["0.0001", "0.25", "1"] {
        assert_eq!(
            post_with(&http, &ingest, "", &with_rate(rate), &[]).await,
            204,
            "sample_rate {rate}"
        );
    }
    let exposition = crate::common::exposition(&format!("{}/metrics", ingest.base)).await;
    assert_eq!(
        metric_value(
            &exposition,
            "rum_beacons_rejected_total{reason=\"invalid_sample_rate\"}"
        ),
        refused.len() as f64
    );
    assert_eq!(metric_value(&exposition, "rum_beacons_accepted_total"), 3.0);
}
