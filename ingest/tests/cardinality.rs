//! Bounded labels whatever clients send, in process: sites beyond `ingest.max_sites` are refused
//! (`site_limit`), and one client cannot fill a site's route places with made-up routes. What was
//! published is read from the test publisher's keys (`site|route|device`).

mod common;

use std::collections::HashSet;

use common::Served;
use rum_ingest::{SiteConfig, BEACON_PATH};

/// A client posting as `client` (an address in `X-Forwarded-For`, believed when the ingest trusts
/// 127.0.0.1) over one kept-alive connection pool.
struct Poster {
    http: reqwest::Client,
    url: String,
}

impl Poster {
    fn new(served: &Served) -> Poster {
        Poster {
            http: reqwest::Client::new(),
            url: format!("http://{}{BEACON_PATH}", served.addr),
        }
    }

    /// Posts one LCP beacon; the status and the `error` of a JSON answer.
    async fn post(&self, client: &str, site: &str, route: &str) -> (u16, String) {
        let body = format!(
            r#"{{"site":"{site}","route":"{route}","device":"mobile","metrics":[{{"name":"LCP","value":1200,"id":"v1"}}]}}"#
        );
        let response = self
            .http
            .post(&self.url)
            .header("content-type", "text/plain")
            .header("x-forwarded-for", client)
            .body(body)
            .send()
            .await
            .expect("the ingest answers");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        let error = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v["error"].as_str().map(String::from))
            .unwrap_or_default();
        (status, error)
    }
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

/// The routes published for `site`.
fn routes_of(served: &Served, site: &str) -> Vec<String> {
    served
        .published_keys()
        .iter()
        .filter_map(|key| {
            let mut parts = key.split('|');
            (parts.next() == Some(site)).then(|| parts.next().unwrap_or("").to_owned())
        })
        .collect()
}

fn trusting_localhost(c: &mut rum_ingest::IngestConfig) {
    c.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
}

#[tokio::test]
async fn a_new_site_beyond_max_sites_is_refused_while_listed_and_taken_sites_go_on() {
    let served = Served::start(|c| {
        c.max_sites = 3;
        c.route_min_clients = 1;
        c.sites.insert("shop".into(), SiteConfig::default());
    })
    .await;
    let poster = Poster::new(&served);
    let mut refused = 0;
    for i in 0..200 {
        let site = format!("random-{i}");
        match poster.post("198.51.100.1", &site, "/").await {
            (204, _) => assert!(i < 3, "site {i} taken beyond the cap"),
            (403, error) => {
                assert_eq!(error, "site_limit");
                refused += 1;
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(refused, 197);
    assert_eq!(served.count("rejected", "site_limit"), 197);
    // A listed site never counts against the cap; a taken one keeps going.
    assert_eq!(poster.post("198.51.100.1", "shop", "/").await.0, 204);
    assert_eq!(
        poster.post("198.51.100.1", "random-1", "/cart").await.0,
        204
    );
    let sites: HashSet<String> = served
        .published_keys()
        .iter()
        .map(|k| k.split('|').next().unwrap().to_owned())
        .collect();
    let expected: HashSet<String> = ["random-0", "random-1", "random-2", "shop"]
        .map(String::from)
        .into();
    assert_eq!(sites, expected, "no refused site was published");
    let metrics = reqwest::get(format!("http://{}/metrics", served.addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("\nrum_ingest_sites 4\n"), "{metrics}");
}

#[tokio::test]
async fn one_client_posting_ten_thousand_routes_leaves_the_real_routes_their_labels() {
    let served = Served::start(|c| {
        trusting_localhost(c);
        c.max_routes_per_site = 20;
    })
    .await;
    let poster = Poster::new(&served);
    let attacker = "203.0.113.66";
    for i in 0..10_000 {
        assert_eq!(
            poster.post(attacker, "shop", &made_up_route(i)).await.0,
            204
        );
    }
    assert!(
        routes_of(&served, "shop").iter().all(|r| r == "other"),
        "one client admits no route"
    );
    let metrics = served.state.metrics.clone();
    assert_eq!(
        metrics
            .routes_folded
            .with_label_values(&["unconfirmed"])
            .get(),
        10_000
    );
    // Real routes from real visitors: each is published as `other` until its third client.
    let real = [
        "/",
        "/cart",
        "/checkout",
        "/product/123",
        "/blog/web-vitals",
    ];
    let visitors = ["198.51.100.1", "198.51.100.2", "2001:db8:1:2::1"];
    for route in real {
        for (n, visitor) in visitors.iter().enumerate() {
            assert_eq!(poster.post(visitor, "shop", route).await.0, 204);
            let last = routes_of(&served, "shop").pop().unwrap();
            assert_eq!(last == "other", n < 2, "{route} from visitor {n}: {last}");
        }
    }
    // From then on for everyone, the attacker included.
    assert_eq!(poster.post(attacker, "shop", "/cart").await.0, 204);
    assert_eq!(routes_of(&served, "shop").pop().unwrap(), "cart");
    let own: HashSet<String> = routes_of(&served, "shop")
        .into_iter()
        .filter(|r| r != "other")
        .collect();
    let expected: HashSet<String> = ["root", "cart", "checkout", "product-id", "blog-web-vitals"]
        .map(String::from)
        .into();
    assert_eq!(own, expected);
    assert_eq!(
        metrics
            .routes_folded
            .with_label_values(&["route_limit"])
            .get(),
        0
    );
}

#[tokio::test]
async fn forwarded_addresses_count_as_clients_only_from_a_trusted_proxy() {
    let served = Served::start(|_| {}).await;
    let poster = Poster::new(&served);
    for n in 1..=5 {
        poster
            .post(&format!("198.51.100.{n}"), "shop", "/cart")
            .await;
    }
    assert_eq!(
        routes_of(&served, "shop"),
        vec!["other"; 5],
        "every beacon came from 127.0.0.1: one client"
    );
}

#[tokio::test]
async fn a_site_full_of_routes_folds_new_ones_as_route_limit() {
    let served = Served::start(|c| {
        c.max_routes_per_site = 2;
        c.route_min_clients = 1;
    })
    .await;
    let poster = Poster::new(&served);
    for route in ["/a", "/b", "/c", "/a"] {
        assert_eq!(poster.post("198.51.100.1", "shop", route).await.0, 204);
    }
    assert_eq!(routes_of(&served, "shop"), ["a", "b", "other", "a"]);
    let folded = &served.state.metrics.routes_folded;
    assert_eq!(folded.with_label_values(&["route_limit"]).get(), 1);
    assert_eq!(folded.with_label_values(&["unconfirmed"]).get(), 0);
}

#[tokio::test]
async fn a_beacon_for_other_does_not_take_a_new_site_beyond_max_sites() {
    let served = Served::start(|c| {
        c.max_sites = 3;
    })
    .await;
    let poster = Poster::new(&served);
    let mut taken = 0;
    for i in 0..200 {
        match poster
            .post("198.51.100.1", &format!("random-{i}"), "/other")
            .await
        {
            (204, _) => taken += 1,
            (403, error) => assert_eq!(error, "site_limit"),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(taken, 3);
    assert_eq!(served.count("rejected", "site_limit"), 197);
    assert_eq!(served.published(), 3, "no refused site was published");
}

#[tokio::test]
async fn the_slash_64s_of_one_slash_48_count_as_one_client_for_routes() {
    let served = Served::start(|c| {
        trusting_localhost(c);
        c.max_routes_per_site = 20;
    })
    .await;
    let poster = Poster::new(&served);
    let attacker = ["2001:db8:66:1::1", "2001:db8:66:2::1", "2001:db8:66:3::1"];
    for i in 0..20 {
        for address in attacker {
            assert_eq!(poster.post(address, "shop", &made_up_route(i)).await.0, 204);
        }
    }
    assert!(
        routes_of(&served, "shop").iter().all(|r| r == "other"),
        "three /64s of one /48 admit no route"
    );
    for visitor in ["198.51.100.1", "198.51.100.2", "2001:db8:1:2::1"] {
        poster.post(visitor, "shop", "/cart").await;
    }
    assert_eq!(routes_of(&served, "shop").pop().unwrap(), "cart");
}

#[tokio::test]
async fn candidates_churned_by_many_networks_leave_a_real_route_its_admission() {
    let served = Served::start(trusting_localhost).await;
    let poster = Poster::new(&served);
    let mut made_up = 0;
    let mut churn = async |poster: &Poster| {
        for _ in 0..300 {
            let network = format!("2001:db8:{:x}::1", 0x100 + made_up % 32);
            assert_eq!(
                poster
                    .post(&network, "shop", &made_up_route(made_up))
                    .await
                    .0,
                204
            );
            made_up += 1;
        }
    };
    let visitors = ["198.51.100.1", "198.51.100.2", "2001:db8:1:2::1"];
    for visitor in visitors {
        churn(&poster).await;
        poster.post(visitor, "shop", "/checkout").await;
    }
    assert_eq!(
        routes_of(&served, "shop").pop().unwrap(),
        "checkout",
        "admitted at its third network"
    );
    let metrics = reqwest::get(format!("http://{}/metrics", served.addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("\nrum_ingest_route_candidates 127\n"),
        "the table was full, checkout's place freed: {metrics}"
    );
}

#[tokio::test]
async fn one_network_takes_at_most_its_quota_of_new_sites() {
    let served = Served::start(|c| {
        trusting_localhost(c);
        c.max_sites = 50;
        c.max_new_sites_per_client = 10;
    })
    .await;
    let poster = Poster::new(&served);
    let mut taken = 0;
    for i in 0..100 {
        match poster
            .post("203.0.113.66", &format!("flood-{i}"), "/")
            .await
        {
            (204, _) => taken += 1,
            (403, error) => assert_eq!(error, "site_limit"),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(taken, 10);
    assert_eq!(served.count("rejected", "site_limit"), 90);
    // The /64s of one /48 are one network too.
    for i in 0..20 {
        let address = format!("2001:db8:66:{i:x}::1");
        poster.post(&address, &format!("v6-flood-{i}"), "/").await;
    }
    assert_eq!(served.count("rejected", "site_limit"), 100);
    // A real new site from another network is still taken.
    assert_eq!(poster.post("198.51.100.1", "blog", "/").await.0, 204);
}
