//! The ingest against a real Apache Kafka broker: what it accepts lands in Kafka,
//! what it rejects is refused with the right status and counted with its reason.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use rum_ingest::{token, Ingest, IngestConfig, SiteConfig, BEACON_PATH};
use rum_schemas::kafka::KafkaConfig;
use rum_schemas::BeaconMessage;
use rum_testkit::{free_port, Kafka};
use tokio::sync::oneshot;

const PARTITIONS: i32 = 4;
const SECRET: &str = "a-secret-of-the-shop-site";

struct Harness {
    kafka: Kafka,
    base: String,
    http: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
}

impl Harness {
    async fn start(configure: impl FnOnce(&mut IngestConfig)) -> Harness {
        let broker = Kafka::start();
        broker.create_topic("rum.beacons.v1", PARTITIONS as u32);
        let mut config = IngestConfig {
            port: free_port(),
            // Room for a fresh broker to give the idempotent producer its id (seconds on a loaded machine);
            // tests of timeouts set their own.
            delivery_timeout_ms: 10_000,
            rate_limit_per_second: 0,
            // One client (127.0.0.1): a route keeps its label from the first beacon.
            route_min_clients: 1,
            ..IngestConfig::default()
        };
        configure(&mut config);
        config.validate().expect("test config is valid");
        let kafka = KafkaConfig {
            brokers: broker.brokers.clone(),
            ..KafkaConfig::default()
        };
        let ingest = Ingest::bind(&config, &kafka).await.expect("ingest binds");
        let base = format!("http://{}", ingest.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            ingest
                .run(async move {
                    let _ = stopped.await;
                })
                .await
                .expect("ingest runs");
        });
        let h = Harness {
            kafka: broker,
            base,
            http: reqwest::Client::new(),
            stop: Some(stop),
            server: Some(server),
        };
        h.wait_ready().await;
        h
    }

    async fn wait_ready(&self) {
        for _ in 0..100 {
            let ready = self.http.get(format!("{}/readyz", self.base)).send().await;
            if ready.is_ok_and(|r| r.status() == 200) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the ingest did not become ready");
    }

    fn endpoint(&self, query: &str) -> String {
        format!("{}{BEACON_PATH}{query}", self.base)
    }

    async fn post(
        &self,
        content_type: &str,
        query: &str,
        body: impl Into<reqwest::Body>,
    ) -> reqwest::Response {
        self.http
            .post(self.endpoint(query))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("POST")
    }

    async fn metrics(&self) -> HashMap<String, f64> {
        let text = self
            .http
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                l.rsplit_once(' ')
                    .map(|(k, v)| (k.to_string(), v.parse().unwrap()))
            })
            .collect()
    }

    /// POSTs the beacon with metric id `id` in a task of its own (for requests that wait on a hung broker).
    fn spawn_post(&self, id: String) -> tokio::task::JoinHandle<reqwest::StatusCode> {
        let (http, endpoint) = (self.http.clone(), self.endpoint(""));
        tokio::spawn(async move {
            http.post(endpoint)
                .header("content-type", "text/plain")
                .body(beacon(&id))
                .send()
                .await
                .unwrap()
                .status()
        })
    }

    /// POSTs beacons `{prefix}0`, `{prefix}1`, ... until one is accepted (for up to 10 s); returns its id.
    async fn post_until_accepted(&self, prefix: &str) -> Option<String> {
        for attempt in 0..50 {
            let id = format!("{prefix}{attempt}");
            if self.post("text/plain", "", beacon(&id)).await.status() == 204 {
                return Some(id);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        None
    }

    /// Every message on the beacons topic, read until `expected` are seen or the topic is quiet.
    fn messages(&self, expected: usize) -> Vec<(String, BeaconMessage)> {
        read_topic(&self.kafka.brokers, expected)
    }

    async fn shutdown(mut self) -> Kafka {
        let _ = self.stop.take().unwrap().send(());
        self.server.take().unwrap().await.expect("server task");
        self.kafka
    }
}

fn read_topic(brokers: &str, expected: usize) -> Vec<(String, BeaconMessage)> {
    rum_testkit::read_topic(brokers, "rum.beacons.v1", PARTITIONS, expected)
        .into_iter()
        .map(|record| {
            let message = BeaconMessage::decode(&record.value).expect("valid message");
            (String::from_utf8(record.key).unwrap(), message)
        })
        .collect()
}

fn beacon(id: &str) -> String {
    format!(
        r#"{{"site":"shop","route":"/product/{id}","device":"mobile","nav_type":"navigate","sample_rate":0.5,"metrics":[{{"name":"LCP","value":2100,"id":"{id}"}}]}}"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepts_both_content_types_and_publishes_normalized_messages() {
    let h = Harness::start(|_| {}).await;
    assert_eq!(
        h.post("text/plain;charset=UTF-8", "", beacon("1"))
            .await
            .status(),
        204
    );
    let bare = r#"{"name":"CLS","value":0.3,"id":"2","rating":"good","navigationType":"reload","route":"/Cart/?x=1"}"#;
    let r = h
        .http
        .post(h.endpoint("?site=shop"))
        .header("content-type", "application/json")
        .header(
            "user-agent",
            "Mozilla/5.0 (iPad; CPU OS 16_6 like Mac OS X)",
        )
        .body(bare)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let mut messages = h.messages(2);
    messages.sort_by(|a, b| a.1.metrics[0].id.cmp(&b.1.metrics[0].id));
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[0].0, "shop|product-id|mobile");
    assert_eq!(messages[1].0, "shop|cart|tablet");
    let cls = &messages[1].1;
    assert_eq!(
        (cls.nav_type.as_str(), cls.metrics[0].rating.as_str()),
        ("reload", "poor")
    );
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert!(
        cls.received_at <= now_ms && cls.received_at > now_ms - 60_000,
        "received_at stamped by the ingest"
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejects_bad_input_with_a_status_and_a_counted_reason() {
    let h = Harness::start(|_| {}).await;
    let deep = format!("{}1{}", "[".repeat(8_000), "]".repeat(8_000));
    let too_many = format!(
        r#"{{"site":"shop","route":"/","metrics":[{}]}}"#,
        vec![r#"{"name":"LCP","value":1}"#; 33].join(",")
    );
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (
            "application/xml",
            beacon("x").into_bytes(),
            415,
            "unsupported_media_type",
        ),
        (
            "text/plain",
            vec![b' '; 16 * 1024 + 1],
            413,
            "body_too_large",
        ),
        (
            "text/plain",
            beacon("x").as_bytes()[..40].to_vec(),
            400,
            "malformed_json",
        ),
        ("text/plain", deep.into_bytes(), 400, "malformed_json"),
        (
            "text/plain",
            b"{\"site\":\"shop\xff\xfe\",\"route\":\"/\"}".to_vec(),
            400,
            "malformed_json",
        ),
        (
            "text/plain",
            br#"{"site":"shop","route":"/","metrics":[{"name":"LCP","value":NaN}]}"#.to_vec(),
            400,
            "malformed_json",
        ),
        (
            "text/plain",
            br#"{"site":"shop","route":"/","metrics":[{"name":"LCP","value":Infinity}]}"#.to_vec(),
            400,
            "malformed_json",
        ),
        (
            "text/plain",
            br#"{"site":"shop","route":"/","metrics":[{"name":"LCP","value":-5}]}"#.to_vec(),
            400,
            "no_valid_metrics",
        ),
        (
            "text/plain",
            br#"{"site":"shop","route":"/","metrics":[{"name":"LCP","value":1e12}]}"#.to_vec(),
            400,
            "no_valid_metrics",
        ),
        (
            "text/plain",
            br#"{"route":"/","metrics":[{"name":"LCP","value":1}]}"#.to_vec(),
            400,
            "missing_site",
        ),
        (
            "text/plain",
            br#"{"site":"<b>","route":"/","metrics":[{"name":"LCP","value":1}]}"#.to_vec(),
            400,
            "invalid_site",
        ),
        (
            "text/plain",
            br#"{"site":"shop","metrics":[{"name":"LCP","value":1}]}"#.to_vec(),
            400,
            "missing_route",
        ),
        (
            "text/plain",
            br#"{"site":"shop","route":"/","sample_rate":2,"metrics":[{"name":"LCP","value":1}]}"#
                .to_vec(),
            400,
            "invalid_sample_rate",
        ),
        ("text/plain", too_many.into_bytes(), 400, "too_many_metrics"),
    ];
    for (content_type, body, status, reason) in &cases {
        let r = h.post(content_type, "", body.clone()).await;
        assert_eq!(r.status().as_u16(), *status, "{reason}");
        if *status == 400 {
            let json: serde_json::Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
            assert_eq!(json["error"], *reason);
        }
    }
    // One valid metric among invalid ones: accepted, the others dropped and counted.
    let mixed = r#"{"site":"shop","route":"/","metrics":[{"name":"LCP","value":1,"id":"ok"},{"name":"INP","value":-1,"id":"neg"},{"name":"XX","value":1,"id":"x"}]}"#;
    assert_eq!(h.post("text/plain", "", mixed).await.status(), 204);

    let m = h.metrics().await;
    let mut expected: HashMap<&str, f64> = HashMap::new();
    for (_, _, _, reason) in &cases {
        *expected.entry(reason).or_default() += 1.0;
    }
    for (reason, count) in &expected {
        assert_eq!(
            m[&format!("rum_beacons_rejected_total{{reason=\"{reason}\"}}")],
            *count,
            "{reason}"
        );
    }
    assert_eq!(m["rum_beacons_received_total"], cases.len() as f64 + 1.0);
    assert_eq!(m["rum_beacons_accepted_total"], 1.0);
    // Only the acknowledged beacon is timed, and its acknowledgement took some time.
    assert_eq!(m["rum_kafka_ack_duration_seconds_count"], 1.0);
    assert!(m["rum_kafka_ack_duration_seconds_sum"] > 0.0);
    assert_eq!(
        m["rum_metrics_dropped_total{reason=\"negative_value\"}"],
        1.0
    );
    assert_eq!(
        m["rum_metrics_dropped_total{reason=\"unknown_metric\"}"],
        1.0
    );
    let published = h.messages(1);
    assert_eq!(published.len(), 1, "only the valid beacon reached Kafka");
    assert_eq!(published[0].1.metrics.len(), 1);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_with_a_secret_needs_a_valid_unexpired_token() {
    let h = Harness::start(|c| {
        c.only_known_sites = true;
        c.sites.insert("blog".into(), SiteConfig::default());
        c.sites.insert(
            "shop".into(),
            SiteConfig {
                token_secret: Some(SECRET.into()),
                ..Default::default()
            },
        );
    })
    .await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let key = token::Key::new(None, SECRET.into());
    let valid = token::sign(&key, "shop", BEACON_PATH, now + 600);
    let expired = token::sign(&key, "shop", BEACON_PATH, now - 1);
    let other_key = token::Key::new(None, "not-the-secret-at-all".into());
    let forged = token::sign(&other_key, "shop", BEACON_PATH, now + 600);
    let wrong_path = token::sign(&key, "shop", "/other/path", now + 600);
    let cases = [
        (format!("?t={valid}&e={}", now + 600), 204, "accepted"),
        (String::new(), 403, "token_missing"),
        (format!("?t={expired}&e={}", now - 1), 403, "token_expired"),
        (format!("?t={forged}&e={}", now + 600), 403, "token_invalid"),
        (
            format!("?t={wrong_path}&e={}", now + 600),
            403,
            "token_invalid",
        ),
        (format!("?t={valid}&e={}", now + 6000), 403, "token_invalid"),
    ];
    for (query, status, why) in &cases {
        assert_eq!(
            h.post("text/plain", query, beacon("1"))
                .await
                .status()
                .as_u16(),
            *status,
            "{why}"
        );
    }
    let m = h.metrics().await;
    assert_eq!(
        m["rum_beacons_rejected_total{reason=\"token_invalid\"}"],
        3.0
    );
    assert_eq!(
        m["rum_beacons_rejected_total{reason=\"token_expired\"}"],
        1.0
    );
    // Known sites without a secret need no token; unknown sites are refused.
    let other = r#"{"site":"blog","route":"/","metrics":[{"name":"LCP","value":1}]}"#;
    assert_eq!(h.post("text/plain", "", other).await.status(), 204);
    let unknown = r#"{"site":"nope","route":"/","metrics":[{"name":"LCP","value":1}]}"#;
    assert_eq!(h.post("text/plain", "", unknown).await.status(), 403);
    assert_eq!(
        h.metrics().await["rum_beacons_rejected_total{reason=\"unknown_site\"}"],
        1.0
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_per_client_and_recovers() {
    let h = Harness::start(|c| {
        c.rate_limit_per_second = 2;
        c.rate_limit_burst = 3;
        c.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    let post_from = async |client: &str| {
        h.http
            .post(h.endpoint(""))
            .header("content-type", "text/plain")
            .header("x-forwarded-for", client)
            .body(beacon("1"))
            .send()
            .await
            .unwrap()
    };
    // Requests take time, and tokens refill meanwhile: the first 429 comes after the burst plus
    // at most the tokens refilled while sending.
    let started = std::time::Instant::now();
    let mut accepted = 0;
    let limited = loop {
        let r = post_from("198.51.100.1").await;
        if r.status() == 429 {
            break r;
        }
        assert_eq!(r.status(), 204);
        accepted += 1;
        assert!(accepted < 100, "never rate limited");
    };
    let refilled = (started.elapsed().as_secs_f64() * 2.0).ceil() as usize;
    assert!(
        (3..=3 + refilled).contains(&accepted),
        "{accepted} accepted before the first 429"
    );
    let retry_after: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry_after), "Retry-After {retry_after}");
    assert_eq!(
        post_from("198.51.100.2").await.status(),
        204,
        "another client behind the proxy has its own bucket"
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        post_from("198.51.100.1").await.status(),
        204,
        "recovered after the refill"
    );
    let m = h.metrics().await;
    assert_eq!(
        m["rum_beacons_rejected_total{reason=\"rate_limited\"}"],
        1.0
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drops_bots_quietly_and_answers_cors_preflights_for_allowed_origins() {
    let h = Harness::start(|c| {
        c.sites.insert(
            "shop".into(),
            SiteConfig {
                allowed_origins: vec!["https://shop.example".into()],
                ..Default::default()
            },
        );
    })
    .await;
    let bot = h
        .http
        .post(h.endpoint(""))
        .header("content-type", "text/plain")
        .header(
            "user-agent",
            "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
        )
        .body(beacon("1"))
        .send()
        .await
        .unwrap();
    assert_eq!(bot.status(), 204);
    let preflight = |origin: &'static str| {
        h.http
            .request(reqwest::Method::OPTIONS, h.endpoint("?site=shop"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type")
            .send()
    };
    let allowed = preflight("https://shop.example").await.unwrap();
    assert_eq!(allowed.status(), 204);
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://shop.example"
    );
    assert_eq!(
        allowed.headers()["access-control-allow-credentials"],
        "true"
    );
    let denied = preflight("https://evil.example").await.unwrap();
    assert_eq!(denied.status(), 403);
    assert!(!denied.headers().contains_key("access-control-allow-origin"));
    let json = h
        .http
        .post(h.endpoint("?site=shop"))
        .header("content-type", "application/json")
        .header("origin", "https://shop.example")
        .body(beacon("2"))
        .send()
        .await
        .unwrap();
    assert_eq!(json.status(), 204);
    assert_eq!(
        json.headers()["access-control-allow-origin"],
        "https://shop.example"
    );
    let m = h.metrics().await;
    assert_eq!(m["rum_beacons_rejected_total{reason=\"bot\"}"], 1.0);
    let published = h.messages(1);
    assert_eq!(published.len(), 1, "the bot's beacon was not published");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_503_while_kafka_hangs_and_loses_nothing_it_accepted() {
    let h = Harness::start(|c| c.delivery_timeout_ms = 1_000).await;
    // The first message also waits for the idempotent producer's id: on a loaded machine that can
    // take longer than the 1 s timeout, so "before" is the first beacon accepted.
    let before = h
        .post_until_accepted("before")
        .await
        .expect("the ingest accepts while Kafka is up");
    h.kafka.pause();
    let during = h.post("text/plain", "", beacon("during")).await;
    assert_eq!(during.status(), 503);
    assert!(during.headers().contains_key("retry-after"));
    // Kafka's trouble is not the ingest's overload: the connection stays open.
    assert!(!during.headers().contains_key("connection"));
    h.kafka.resume();
    let after = h
        .post_until_accepted("after")
        .await
        .expect("the ingest accepts again once Kafka is back");
    let ids: HashSet<String> = h
        .messages(2)
        .into_iter()
        .map(|(_, m)| m.metrics[0].id.clone())
        .collect();
    assert!(
        ids.contains(&before) && ids.contains(&after),
        "every accepted beacon is in Kafka: {ids:?}"
    );
    let m = h.metrics().await;
    assert!(m["rum_beacons_rejected_total{reason=\"kafka_unavailable\"}"] >= 1.0);
    assert!(m["rum_kafka_produce_errors_total"] >= 1.0);
    h.shutdown().await;
}

/// Waits until the ingest's gauge `name` reads `value` (it is sampled at scrape time).
async fn until_gauge(h: &Harness, name: &str, value: f64) {
    let mut seen = f64::NAN;
    for _ in 0..100 {
        seen = h.metrics().await[name];
        if seen == value {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{name} stayed {seen}, expected {value}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_producer_queue_refuses_with_503_instead_of_growing() {
    let h = Harness::start(|c| {
        c.queue_max_messages = 2;
        c.delivery_timeout_ms = 3_000;
    })
    .await;
    assert_eq!(h.post("text/plain", "", beacon("warm")).await.status(), 204);
    h.kafka.pause();
    // Two beacons wait in the producer's queue for the hung broker...
    let waiting: Vec<_> = (0..2).map(|i| h.spawn_post(format!("queued{i}"))).collect();
    until_gauge(&h, "rum_kafka_producer_queue_depth", 2.0).await;
    // ...so the next one is refused at once instead of queueing without bound.
    let full = h.post("text/plain", "", beacon("refused")).await;
    assert_eq!(full.status(), 503);
    assert!(full.headers().contains_key("retry-after"));
    // The reason proves the refusal came from the bounded queue, not from a delivery timeout.
    let m = h.metrics().await;
    assert_eq!(
        m["rum_beacons_rejected_total{reason=\"producer_queue_full\"}"],
        1.0
    );
    h.kafka.resume();
    for w in waiting {
        let status = w.await.unwrap();
        assert!(
            status == 204 || status == 503,
            "a queued beacon is either acknowledged or refused: {status}"
        );
    }
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sheds_requests_beyond_max_in_flight_with_503_overloaded() {
    let h = Harness::start(|c| {
        c.max_in_flight = 3;
        c.delivery_timeout_ms = 3_000;
    })
    .await;
    assert_eq!(h.post("text/plain", "", beacon("warm")).await.status(), 204);
    h.kafka.pause();
    // Three requests hold every permit while they wait for the hung broker...
    let waiting: Vec<_> = (0..3).map(|i| h.spawn_post(format!("held{i}"))).collect();
    until_gauge(&h, "rum_ingest_requests_in_flight", 3.0).await;
    // ...so the next ones are shed (the reason shows it was not a delivery timeout).
    for i in 0..2 {
        let shed = h.post("text/plain", "", beacon(&format!("shed{i}"))).await;
        assert_eq!(shed.status(), 503);
        assert!(shed.headers().contains_key("retry-after"));
        assert_eq!(
            shed.headers()["connection"],
            "close",
            "the connection is shed too"
        );
        let body: serde_json::Value = serde_json::from_slice(&shed.bytes().await.unwrap()).unwrap();
        assert_eq!(body["error"], "overloaded");
    }
    let m = h.metrics().await;
    assert_eq!(m["rum_beacons_rejected_total{reason=\"overloaded\"}"], 2.0);
    h.kafka.resume();
    let mut held_accepted = 0;
    for w in waiting {
        let status = w.await.unwrap();
        assert!(status == 204 || status == 503, "held: {status}");
        held_accepted += usize::from(status == 204);
    }
    // The permits are free again: the ingest accepts, and every 204 is in Kafka, no shed one is.
    assert!(
        h.post_until_accepted("after").await.is_some(),
        "the ingest accepts again once Kafka is back"
    );
    let ids: HashSet<String> = h
        .messages(2 + held_accepted)
        .into_iter()
        .map(|(_, m)| m.metrics[0].id.clone())
        .collect();
    assert!(ids.contains("warm"), "{ids:?}");
    assert!(!ids.iter().any(|id| id.starts_with("shed")), "{ids:?}");
    assert_eq!(
        ids.iter().filter(|id| id.starts_with("held")).count(),
        held_accepted,
        "{ids:?}"
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_line_a_busy_ingest_serves_waiting_requests_and_refuses_beyond_the_line() {
    let h = Harness::start(|c| {
        c.max_in_flight = 2;
        c.max_queued = 1;
        c.queue_timeout_ms = 3_000;
        c.delivery_timeout_ms = 10_000;
    })
    .await;
    assert_eq!(h.post("text/plain", "", beacon("warm")).await.status(), 204);

    // Kafka hangs: two requests hold both slots, a third waits in the line...
    h.kafka.pause();
    let held: Vec<_> = (0..2).map(|i| h.spawn_post(format!("held{i}"))).collect();
    until_gauge(&h, "rum_ingest_requests_in_flight", 2.0).await;
    let queued = h.spawn_post("queued".into());
    until_gauge(&h, "rum_ingest_requests_queued", 1.0).await;
    // ...and the line is full: the next one is refused at once, while the queued one still waits.
    let beyond = h.post("text/plain", "", beacon("shed-full")).await;
    assert_eq!(beyond.status(), 503);
    assert_eq!(beyond.headers()["connection"], "close");
    assert!(!queued.is_finished(), "the queued request is still waiting");
    // Kafka answers within the line's timeout: the held requests answer, the queued one gets a slot.
    h.kafka.resume();
    for w in held {
        assert_eq!(w.await.unwrap(), 204);
    }
    assert_eq!(queued.await.unwrap(), 204, "the queued request was served");
    until_gauge(&h, "rum_ingest_requests_queued", 0.0).await;

    // Kafka hangs longer than the line's timeout: the waiting request is refused when it is over.
    h.kafka.pause();
    let held: Vec<_> = (0..2).map(|i| h.spawn_post(format!("again{i}"))).collect();
    until_gauge(&h, "rum_ingest_requests_in_flight", 2.0).await;
    let waited = h.spawn_post("shed-timeout".into());
    assert_eq!(waited.await.unwrap(), 503, "refused after queue_timeout_ms");
    assert_eq!(h.metrics().await["rum_ingest_requests_queued"], 0.0);
    h.kafka.resume();
    for w in held {
        assert_eq!(w.await.unwrap(), 204);
    }

    let m = h.metrics().await;
    assert_eq!(m["rum_beacons_rejected_total{reason=\"overloaded\"}"], 2.0);
    // Every 204 is in Kafka, exactly once; no refused one is.
    let ids: Vec<String> = h
        .messages(6)
        .into_iter()
        .map(|(_, m)| m.metrics[0].id.clone())
        .collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        ["again0", "again1", "held0", "held1", "queued", "warm"],
        "{ids:?}"
    );
    h.shutdown().await;
}
