//! `rum loadgen`: realistic beacons from a fixed seed, for demos and benchmarks.
//!
//! Routes follow a long-tailed popularity with ids in their paths (the ingest folds them into
//! slugs), devices are mostly phones, each page load reports 3 to 6 metrics, and values are
//! log-normal around medians typical of real sites (phones slower than desktops).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, LogNormal};
use serde_json::json;

/// Options of `rum loadgen`.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// The ingest's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// How many beacons (page loads) to send.
    #[arg(long, default_value_t = 1000)]
    beacons: u64,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 16)]
    concurrency: u64,
    /// The seed; the same seed sends the same beacons.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// The site the beacons belong to.
    #[arg(long, default_value = "demo")]
    site: String,
}

const PAGES: [&str; 10] = [
    "/",
    "/product/{id}",
    "/category/shoes",
    "/category/bags",
    "/search?q=boots",
    "/cart",
    "/checkout",
    "/account/orders/{id}",
    "/blog/{id}/comments",
    "/help/shipping",
];

/// One synthetic page load as a beacon v1 body.
pub fn beacon(rng: &mut impl Rng, site: &str) -> serde_json::Value {
    // Popularity falls off with the page's rank (a rough Zipf).
    let rank = ((rng.random::<f64>().powi(2)) * PAGES.len() as f64) as usize;
    let route = PAGES[rank.min(PAGES.len() - 1)]
        .replace("{id}", &rng.random_range(1..50_000u32).to_string());
    let device = match rng.random_range(0..100) {
        0..60 => "mobile",
        60..95 => "desktop",
        _ => "tablet",
    };
    let slow = if device == "mobile" { 1.5 } else { 1.0 };
    let id_base: u64 = rng.random();
    let metric = |name: &str, value: f64| json!({ "name": name, "value": value, "id": format!("v5-{id_base:x}-{name}") });
    let mut metrics = vec![
        metric("TTFB", round(lognormal(rng, 350.0 * slow, 0.6))),
        metric("FCP", round(lognormal(rng, 1100.0 * slow, 0.5))),
        metric("LCP", round(lognormal(rng, 1900.0 * slow, 0.55))),
    ];
    if rng.random_bool(0.8) {
        // CLS: most pages do not shift at all.
        let cls = if rng.random_bool(0.55) {
            0.0
        } else {
            lognormal(rng, 0.05, 1.0).min(5.0)
        };
        metrics.push(metric("CLS", (cls * 10_000.0).round() / 10_000.0));
    }
    if rng.random_bool(0.6) {
        metrics.push(metric("INP", round(lognormal(rng, 120.0 * slow, 0.8))));
    }
    if rng.random_bool(0.05) {
        metrics.push(metric("FID", round(lognormal(rng, 20.0 * slow, 0.9))));
    }
    json!({
        "site": site,
        "route": route,
        "device": device,
        "nav_type": if rng.random_bool(0.9) { "navigate" } else { "reload" },
        "sample_rate": 1.0,
        "metrics": metrics,
    })
}

fn lognormal(rng: &mut impl Rng, median: f64, sigma: f64) -> f64 {
    LogNormal::new(median.ln(), sigma).map_or(median, |d| d.sample(rng))
}

fn round(value: f64) -> f64 {
    (value.min(599_000.0) * 10.0).round() / 10.0
}

/// Sends the beacons and prints a one-line summary.
pub async fn run(args: Args) -> anyhow::Result<()> {
    if args.concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    let endpoint = format!(
        "{}/api/v1/observability/web-vitals",
        args.url.trim_end_matches('/')
    );
    let client = reqwest::Client::builder()
        .build()
        .context("cannot build the HTTP client")?;
    let next = Arc::new(AtomicU64::new(0));
    let accepted = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..args.concurrency.min(args.beacons.max(1)) {
        let (client, endpoint, args) = (client.clone(), endpoint.clone(), args.clone());
        let (next, accepted, failed) = (next.clone(), accepted.clone(), failed.clone());
        workers.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= args.beacons {
                    break;
                }
                // Each beacon has its own stream, so the output does not depend on scheduling.
                let mut rng =
                    StdRng::seed_from_u64(args.seed.wrapping_mul(1_000_003).wrapping_add(n));
                let body = beacon(&mut rng, &args.site).to_string();
                let sent = client
                    .post(&endpoint)
                    .header("content-type", "text/plain;charset=UTF-8")
                    .body(body)
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status() == reqwest::StatusCode::NO_CONTENT => {
                        accepted.fetch_add(1, Ordering::Relaxed)
                    }
                    Ok(r) => {
                        tracing::debug!(status = %r.status(), "beacon not accepted");
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "beacon not sent");
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        }));
    }
    for w in workers {
        w.await.context("a loadgen worker panicked")?;
    }
    let secs = started.elapsed().as_secs_f64();
    let (ok, bad) = (
        accepted.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
    );
    println!(
        "loadgen: {ok} beacons accepted (204), {bad} not, in {secs:.2} s ({:.0} beacons/s) to {endpoint}",
        (ok + bad) as f64 / secs.max(1e-9)
    );
    if ok == 0 && args.beacons > 0 {
        bail!("no beacon was accepted by {endpoint}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_beacon_and_every_beacon_is_valid() {
        for n in 0..500u64 {
            let a = beacon(&mut StdRng::seed_from_u64(n), "demo");
            let b = beacon(&mut StdRng::seed_from_u64(n), "demo");
            assert_eq!(a, b);
            let ctx = rum_schemas::beacon::RequestContext {
                query_site: None,
                header_device: rum_schemas::Device::Unknown,
                received_at_ms: 0,
            };
            let v = rum_schemas::parse_beacon(a.to_string().as_bytes())
                .unwrap()
                .validate(&ctx)
                .unwrap();
            assert!(v.dropped.is_empty(), "{a}");
            assert!((3..=6).contains(&v.message.metrics.len()), "{a}");
        }
    }
}
