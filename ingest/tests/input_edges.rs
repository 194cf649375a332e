//! The input edges of the public ingest, in-process over real sockets: forwarded hops, IPv6
//! networks, tokens, origins, bots, readiness and the admin listener. Each test plays the hostile
//! client and checks the counter that counts it.

mod common;

use std::time::Duration;

use common::{Served, BEACON};
use rum_ingest::token::{self, Key};
use rum_ingest::{admin_router, serve, IngestConfig, ServerLimits, SiteConfig, BEACON_PATH};

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// Posts [`BEACON`] (site `shop`) with these headers and query; the answer.
async fn post(served: &Served, query: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut request = http()
        .post(format!("http://{}{BEACON_PATH}{query}", served.addr))
        .header("content-type", "text/plain;charset=UTF-8")
        .body(BEACON);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

async fn status(served: &Served, query: &str, headers: &[(&str, &str)]) -> u16 {
    post(served, query, headers).await.status().as_u16()
}

fn limited(c: &mut IngestConfig, burst: u32, network_burst: u32) {
    c.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    // One a second: nothing refills while a test runs.
    c.rate_limit_per_second = 1;
    c.rate_limit_burst = burst;
    c.rate_limit_network_per_second = Some(1);
    c.rate_limit_network_burst = Some(network_burst);
}

#[tokio::test]
async fn forwarded_hops_with_ports_brackets_or_unknown_keep_clients_apart() {
    let served = Served::start(|c| limited(c, 2, 1_000)).await;
    // Each client's burst is 2: the third beacon of each is refused, every other client unharmed.
    let clients = [
        "198.51.100.1:51234",
        "[2001:db8:1:2::7]:443",
        "[2001:db8:1:3::7]",
        // A proxy that could not name its client: the claim left of `unknown` keys it.
        "198.51.100.7, unknown",
        "198.51.100.8, unknown",
        "198.51.100.9, garbage",
    ];
    for xff in clients {
        for n in 0..3 {
            let got = status(&served, "", &[("x-forwarded-for", xff)]).await;
            assert_eq!(got, if n < 2 { 204 } else { 429 }, "{xff} beacon {n}");
        }
    }
    assert_eq!(
        served.count("rejected", "rate_limited"),
        clients.len() as u64
    );
    assert_eq!(served.count("rejected", "rate_limited_network"), 0);
    assert_eq!(
        served.state.metrics.clients_unidentified.get(),
        9,
        "3 requests each from the 3 clients behind unknown hops"
    );
    assert_eq!(served.published(), 2 * clients.len());
}

#[tokio::test]
async fn clients_behind_an_unknown_hop_share_the_proxy_network_budget() {
    let served = Served::start(|c| limited(c, 2, 10)).await;
    // A client that rotates its claim gets a fresh bucket each time, within the proxy's budget.
    let mut accepted = 0;
    for i in 0..40 {
        let xff = format!("203.0.113.{i}, unknown");
        match status(&served, "", &[("x-forwarded-for", &xff)]).await {
            204 => accepted += 1,
            429 => {}
            other => panic!("{other}"),
        }
    }
    assert_eq!(accepted, 10, "the network burst");
    assert_eq!(served.count("rejected", "rate_limited_network"), 30);
    // A client the proxy names is not behind the unknown hop: its own budget only.
    assert_eq!(
        status(&served, "", &[("x-forwarded-for", "203.0.113.200")]).await,
        204
    );
}

#[tokio::test]
async fn a_sweep_over_the_slash_64s_of_one_slash_48_meets_its_budget() {
    let served = Served::start(|c| limited(c, 2, 16)).await;
    let mut accepted = 0;
    for i in 0..256u32 {
        // One /48, a new /64 each time: each /64 is a fresh client.
        let xff = format!("2001:db8:42:{i:x}::1");
        match status(&served, "", &[("x-forwarded-for", &xff)]).await {
            204 => accepted += 1,
            429 => {}
            other => panic!("{other}"),
        }
    }
    assert_eq!(accepted, 16, "the /48's burst, not 256 x 2");
    assert_eq!(served.count("rejected", "rate_limited_network"), 240);
    assert_eq!(served.count("rejected", "rate_limited"), 0);
    assert_eq!(
        status(&served, "", &[("x-forwarded-for", "2001:db8:43::1")]).await,
        204,
        "another /48 is not affected"
    );
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

const SHOP_NEW: &str = "0123456789abcdef-shop-new";
const SHOP_OLD: &str = "0123456789abcdef-shop-old";

#[tokio::test]
async fn tokens_must_be_short_lived_of_their_site_and_of_a_key_the_site_has() {
    let served = Served::start(|c| {
        c.token_max_ttl_secs = 3_600;
        let rotating: SiteConfig = serde_json::from_str(&format!(
            r#"{{"token_secrets":[{{"id":"k2","secret":"{SHOP_NEW}"}},{{"id":"k1","secret":"{SHOP_OLD}"}}]}}"#
        ))
        .unwrap();
        c.sites.insert("shop".into(), rotating);
        // Another site with the very secret of shop's current key.
        c.sites.insert(
            "blog".into(),
            SiteConfig {
                token_secret: Some(SHOP_NEW.into()),
                ..Default::default()
            },
        );
    })
    .await;
    let new = Key::new(Some("k2".into()), SHOP_NEW.into());
    let old = Key::new(Some("k1".into()), SHOP_OLD.into());
    let blog = Key::new(None, SHOP_NEW.into());
    let soon = now() + 600;
    let q = |key: &Key, site: &str, expires: u64| {
        format!("?{}", token::query(key, site, BEACON_PATH, expires))
    };
    let cases = [
        (q(&new, "shop", soon), 204, "the current key"),
        (
            q(&old, "shop", soon),
            204,
            "the previous key, during the rotation",
        ),
        (
            q(&new, "shop", now() + 30 * 86_400),
            403,
            "token_ttl_too_long",
        ),
        (
            q(&blog, "blog", soon).replace("site=blog", "site=shop"),
            403,
            "token_unknown_key",
        ),
        (
            q(&blog, "blog", soon).replace("site=blog", "site=shop") + "&k=k2",
            403,
            "token_invalid: blog's token on shop, with shop's key id",
        ),
        (
            q(&Key::new(Some("k0".into()), SHOP_NEW.into()), "shop", soon),
            403,
            "token_unknown_key",
        ),
    ];
    for (query, expected, why) in &cases {
        // The beacon's site is shop; a query-string site of blog would not change it.
        assert_eq!(
            status(&served, query, &[]).await,
            *expected,
            "{why}: {query}"
        );
    }
    assert_eq!(served.count("rejected", "token_ttl_too_long"), 1);
    assert_eq!(served.count("rejected", "token_unknown_key"), 2);
    assert_eq!(served.count("rejected", "token_invalid"), 1);
    assert_eq!(served.published(), 2);
}

#[tokio::test]
async fn a_text_plain_beacon_from_a_disallowed_origin_is_refused_and_every_answer_varies_on_origin()
{
    let served = Served::start(|c| {
        c.sites.insert(
            "shop".into(),
            SiteConfig {
                allowed_origins: vec!["https://shop.example".into()],
                ..Default::default()
            },
        );
    })
    .await;
    let vary = |r: &reqwest::Response| {
        r.headers()
            .get("vary")
            .map(|v| v.to_str().unwrap().to_string())
    };
    // No preflight for text/plain: the browser posts straight away and only hides the answer.
    let evil = post(&served, "", &[("origin", "https://evil.example")]).await;
    assert_eq!(evil.status(), 403);
    assert_eq!(vary(&evil).as_deref(), Some("Origin"));
    assert!(!evil.headers().contains_key("access-control-allow-origin"));
    let null = post(&served, "", &[("origin", "null")]).await;
    assert_eq!(null.status(), 403, "sandboxed frames and file: pages");
    let allowed = post(&served, "", &[("origin", "https://shop.example")]).await;
    assert_eq!(allowed.status(), 204);
    assert_eq!(vary(&allowed).as_deref(), Some("Origin"));
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://shop.example"
    );
    // sendBeacon from a same-origin page, servers, curl: no Origin, not checked.
    let none = post(&served, "", &[]).await;
    assert_eq!(none.status(), 204);
    assert_eq!(
        vary(&none).as_deref(),
        Some("Origin"),
        "a cached 204 must not serve an Origin"
    );
    assert_eq!(served.count("rejected", "origin_not_allowed"), 2);
    assert_eq!(served.published(), 2);
    // Errors and preflights vary too.
    let bad = http()
        .post(format!("http://{}{BEACON_PATH}", served.addr))
        .header("content-type", "text/plain")
        .body("{")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    assert_eq!(vary(&bad).as_deref(), Some("Origin"));
    for (origin, expected) in [("https://shop.example", 204), ("https://evil.example", 403)] {
        let preflight = http()
            .request(
                reqwest::Method::OPTIONS,
                format!("http://{}{BEACON_PATH}?site=shop", served.addr),
            )
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .send()
            .await
            .unwrap();
        assert_eq!(preflight.status(), expected, "{origin}");
        assert_eq!(vary(&preflight).as_deref(), Some("Origin"), "{origin}");
    }
    // A site without a list (and no global list) takes any origin, as before.
    let other = http()
        .post(format!("http://{}{BEACON_PATH}", served.addr))
        .header("content-type", "text/plain")
        .header("origin", "https://evil.example")
        .body(BEACON.replace("\"shop\"", "\"blog\""))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 204);
}

#[tokio::test]
async fn headless_browsers_and_crawlers_are_dropped_as_bots_and_real_browsers_are_not() {
    let served = Served::start(|_| {}).await;
    for ua in [
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/156.0.0.0 Safari/537.36",
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
        "python-requests/2.32.3",
    ] {
        assert_eq!(status(&served, "", &[("user-agent", ua)]).await, 204, "{ua}");
    }
    assert_eq!(served.count("rejected", "bot"), 3);
    assert_eq!(served.published(), 0);
    let chrome = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36";
    assert_eq!(status(&served, "", &[("user-agent", chrome)]).await, 204);
    assert_eq!(served.published(), 1);
}

#[tokio::test]
async fn a_readiness_flood_is_answered_from_the_cached_state() {
    let served = Served::start(|_| {}).await;
    let checks = |result: &str| {
        served
            .state
            .metrics
            .readiness_checks
            .with_label_values(&[result])
            .get()
    };
    served.state.readiness.check(&served.state.publisher).await;
    let client = http();
    let url = format!("http://{}/readyz", served.addr);
    for _ in 0..2_000 {
        assert_eq!(client.get(&url).send().await.unwrap().status(), 200);
    }
    assert_eq!((checks("ready"), checks("unreachable")), (1, 0));
}

#[tokio::test]
async fn with_an_admin_port_metrics_leave_the_public_port() {
    let mut config = IngestConfig::default();
    let served = Served::start(|c| {
        c.admin_port = Some(0);
        config = c.clone();
    })
    .await;
    let client = http();
    let public = client
        .get(format!("http://{}/metrics", served.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(public.status(), 404);
    let listener = rum_ingest::listen("127.0.0.1:0").await.unwrap();
    let admin = listener.local_addr().unwrap();
    tokio::spawn(serve(
        listener,
        admin_router(served.state.clone()),
        ServerLimits {
            max_connections: rum_ingest::ADMIN_MAX_CONNECTIONS,
            ..ServerLimits::from_config(&config)
        },
        served.state.events.clone(),
        std::future::pending(),
    ));
    let scraped = client
        .get(format!("http://{admin}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(scraped.status(), 200);
    assert!(scraped
        .text()
        .await
        .unwrap()
        .contains("rum_ingest_readiness_checks_total"));
    for path in ["/healthz", "/readyz"] {
        let public = client
            .get(format!("http://{}{path}", served.addr))
            .send()
            .await
            .unwrap();
        assert_ne!(public.status(), 404, "{path} stays on the public port");
    }
}

/// Posts `body` (text/plain) with these raw header values; the status.
async fn post_raw(served: &Served, body: &str, headers: &[(&str, &[u8])]) -> u16 {
    let mut request = http()
        .post(format!("http://{}{BEACON_PATH}", served.addr))
        .header("content-type", "text/plain")
        .body(body.to_owned());
    for (name, value) in headers {
        request = request.header(
            *name,
            reqwest::header::HeaderValue::from_bytes(value).unwrap(),
        );
    }
    request.send().await.unwrap().status().as_u16()
}

#[tokio::test]
async fn a_parser_message_with_multibyte_text_is_cut_on_a_character_boundary() {
    let served = Served::start(|_| {}).await;
    // serde_json echoes the string in its message; the message is cut at 200 bytes. Both parities
    // of where the multibyte characters start.
    for lead in ["", "a", "ab"] {
        let value = format!("{lead}{}", "é".repeat(200));
        let body = BEACON.replace("1200", &format!("\"{value}\""));
        let answer = http()
            .post(format!("http://{}{BEACON_PATH}", served.addr))
            .header("content-type", "text/plain")
            .body(body)
            .send()
            .await
            .expect("an answer, not a reset connection");
        assert_eq!(answer.status(), 400, "lead {lead:?}");
        let json: serde_json::Value = serde_json::from_str(&answer.text().await.unwrap()).unwrap();
        assert!(json["message"].as_str().unwrap().len() <= 200);
    }
}

#[tokio::test]
async fn a_forwarded_for_value_that_is_not_text_is_an_unknown_hop_not_the_proxy() {
    let served = Served::start(|c| limited(c, 2, 1_000)).await;
    // The client sent a byte that is not text; the trusted proxy appended its real address.
    for client in ["198.51.100.1", "198.51.100.2"] {
        let mut xff = vec![0xff];
        xff.extend_from_slice(format!(", {client}").as_bytes());
        for n in 0..3 {
            let got = post_raw(&served, BEACON, &[("x-forwarded-for", &xff)]).await;
            assert_eq!(got, if n < 2 { 204 } else { 429 }, "{client} beacon {n}");
        }
    }
    assert_eq!(
        served.count("rejected", "rate_limited"),
        2,
        "each client its own bucket, not the proxy's"
    );
    // Nothing but bytes that are not text: an unknown hop written by the proxy.
    let got = post_raw(&served, BEACON, &[("x-forwarded-for", b"\xff\xfe")]).await;
    assert_eq!(got, 204);
    assert_eq!(served.state.metrics.clients_unidentified.get(), 1);
}

#[tokio::test]
async fn a_bot_user_agent_with_a_byte_that_is_not_ascii_is_still_a_bot() {
    let served = Served::start(|_| {}).await;
    let mut googlebot =
        b"Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html) ".to_vec();
    googlebot.extend_from_slice("é".as_bytes());
    assert_eq!(
        post_raw(&served, BEACON, &[("user-agent", &googlebot)]).await,
        204
    );
    let mut latin1 = b"curl/8.5.0 ".to_vec();
    latin1.push(0xe9);
    assert_eq!(
        post_raw(&served, BEACON, &[("user-agent", &latin1)]).await,
        204
    );
    assert_eq!(served.count("rejected", "bot"), 2);
    assert_eq!(served.published(), 0);
    // No User-Agent at all (tools, tests): not a bot.
    assert_eq!(post_raw(&served, BEACON, &[]).await, 204);
    assert_eq!(served.published(), 1);
}

#[tokio::test]
async fn a_user_agent_with_a_byte_that_is_not_ascii_still_tells_the_device() {
    use tokio::io::AsyncWriteExt;
    let served = Served::start(|c| c.route_min_clients = 1).await;
    let mut stream = served.connect().await;
    let mut request = format!(
        "POST {BEACON_PATH} HTTP/1.1\r\nHost: ingest\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nUser-Agent: Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) Caf",
        BEACON.len()
    )
    .into_bytes();
    // Latin-1 "é": not UTF-8, not ASCII.
    request.push(0xe9);
    request.extend_from_slice(b"\r\n\r\n");
    request.extend_from_slice(BEACON.as_bytes());
    stream.write_all(&request).await.unwrap();
    let answer = common::read_head(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 204"), "{answer}");
    assert_eq!(served.published_keys(), ["shop|root|mobile"]);
}
