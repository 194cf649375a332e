//! `rum loadgen`: realistic beacons from a fixed seed, for demos and benchmarks.
//!
//! Routes follow a long-tailed popularity with ids in their paths (the ingest folds them into
//! slugs), devices are mostly phones, each page load reports 3 to 6 metrics, and values are
//! log-normal around medians typical of real sites (phones slower than desktops).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1;
use hyper::{header, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, LogNormal};
use rum_ingest::BEACON_PATH;
use serde_json::json;
use tokio::net::TcpStream;

/// Options of `rum loadgen`.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// The ingest's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// How many beacons (page loads) to send (ignored with `--duration`).
    #[arg(long, default_value_t = 1000)]
    beacons: u64,
    /// Send for this many seconds instead of a fixed number of beacons.
    #[arg(long, conflicts_with = "beacons")]
    duration: Option<f64>,
    /// Open-loop pacing: start this many beacons a second, on schedule whether or not earlier
    /// requests have answered (latency counts from the scheduled start, or from the send when a
    /// request left up to a millisecond early, the timer's resolution). 0: as fast as the
    /// `--concurrency` connections allow (closed loop).
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Requests in flight at once (with `--rate`, the most in flight; a late schedule shows as latency).
    #[arg(long, default_value_t = 16)]
    concurrency: u64,
    /// The seed; the same seed sends the same beacons.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// The site the beacons belong to.
    #[arg(long, default_value = "demo")]
    site: String,
    /// Print the summary as one JSON line (rate, counts by status, latency percentiles).
    #[arg(long)]
    json: bool,
    /// Beacons of the collector's attribution build: each page load also sends a page id, a release,
    /// the network's RTT and a browser's User-Agent, and LCP, INP and CLS their attribution (the
    /// element, resource and phases; the phases add up to the value). Off by default, so benchmarks
    /// keep measuring the same beacons.
    #[arg(long)]
    attribution: bool,
}

/// User-Agents of the browsers an attribution run sends, most frequent first.
const USER_AGENTS: [&str; 6] = [
    "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0",
    "Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/26.0 Chrome/122.0.0.0 Mobile Safari/537.36",
];

/// LCP elements by page (its index in `PAGES`): the hero image most of the time, else text.
const LCP_ELEMENTS: [(&str, &str); 10] = [
    (
        "section.hero>img",
        "https://cdn.demo.example/img/home-hero.jpg",
    ),
    (
        "div.gallery>img.main",
        "https://cdn.demo.example/img/product.webp",
    ),
    (
        "ul.grid>li:nth-child(1)>img",
        "https://cdn.demo.example/img/shoes.webp",
    ),
    (
        "ul.grid>li:nth-child(1)>img",
        "https://cdn.demo.example/img/bags.webp",
    ),
    ("div.results>h2", ""),
    ("table.cart", ""),
    ("form#checkout>h1", ""),
    ("table.orders", ""),
    (
        "article>img.cover",
        "https://cdn.demo.example/img/blog-cover.jpg",
    ),
    ("main>h1", ""),
];

/// INP targets: (selector, interaction type, the longest script and its invoker).
const INP_TARGETS: [(&str, &str, &str, &str); 4] = [
    (
        "button#add-to-cart",
        "pointer",
        "https://demo.example/assets/app.js",
        "BUTTON#add-to-cart.onclick",
    ),
    (
        "input#search",
        "keyboard",
        "https://demo.example/assets/search.js",
        "INPUT#search.oninput",
    ),
    (
        "nav>a.menu",
        "pointer",
        "https://tags.example/analytics.js",
        "DIV.menu.onclick",
    ),
    (
        "button.accept-cookies",
        "pointer",
        "https://consent.example/banner.js",
        "BUTTON.accept-cookies.onclick",
    ),
];

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

/// One synthetic page load as a beacon v1 body, appended to `out`. `site_json` is the site as a
/// JSON string literal. Written directly rather than through `serde_json::Value`, so the generator
/// costs a fraction of what the server under test does. With `attribution`, the beacon of the
/// attribution build, and the User-Agent to send it with.
pub fn write_beacon(
    rng: &mut impl Rng,
    site_json: &str,
    attribution: bool,
    out: &mut String,
) -> Option<&'static str> {
    // Popularity falls off with the page's rank (a rough Zipf).
    let rank = ((rng.random::<f64>().powi(2)) * PAGES.len() as f64) as usize;
    let page = PAGES[rank.min(PAGES.len() - 1)];
    let id: u32 = rng.random_range(1..50_000);
    let device = match rng.random_range(0..100) {
        0..60 => "mobile",
        60..95 => "desktop",
        _ => "tablet",
    };
    let slow = if device == "mobile" { 1.5 } else { 1.0 };
    let id_base: u64 = rng.random();
    let _ = write!(out, r#"{{"site":{site_json},"route":""#);
    match page.split_once("{id}") {
        Some((before, after)) => {
            let _ = write!(out, "{before}{id}{after}");
        }
        None => out.push_str(page),
    }
    let _ = write!(out, r#"","device":"{device}","#);
    let nav_type = if rng.random_bool(0.9) {
        "navigate"
    } else {
        "reload"
    };
    let _ = write!(out, r#""nav_type":"{nav_type}","sample_rate":1.0,"#);
    let user_agent = if attribution {
        // A newer release on half the traffic; a quarter of the loads from a browser without
        // navigator.connection (no rtt).
        let release = if rng.random_bool(0.5) {
            "2026.11.3"
        } else {
            "2026.12.1"
        };
        let _ = write!(
            out,
            r#""page_id":"pl{id_base:016x}","release":"{release}","#
        );
        if rng.random_bool(0.75) {
            let _ = write!(
                out,
                r#""rtt":{},"#,
                (lognormal(rng, 120.0 * slow, 0.9)).round().min(3000.0)
            );
        }
        let ua = match rng.random_range(0..100) {
            0..45 => 0,
            45..65 => 1,
            65..80 => 2,
            80..88 => 3,
            88..95 => 4,
            _ => 5,
        };
        Some(USER_AGENTS[ua])
    } else {
        None
    };
    out.push_str(r#""metrics":["#);
    let mut first = true;
    let mut metric = |out: &mut String, name: &str, value: f64, attribution: Option<String>| {
        let comma = if std::mem::take(&mut first) { "" } else { "," };
        let _ = write!(
            out,
            r#"{comma}{{"name":"{name}","value":{value},"id":"v5-{id_base:x}-{name}""#
        );
        if let Some(a) = attribution {
            let _ = write!(out, r#","attribution":{{{a}}}"#);
        }
        out.push('}');
    };
    let ttfb = round(lognormal(rng, 350.0 * slow, 0.6));
    metric(out, "TTFB", ttfb, None);
    metric(out, "FCP", round(lognormal(rng, 1100.0 * slow, 0.5)), None);
    let lcp = round(lognormal(rng, 1900.0 * slow, 0.55)).max(ttfb + 1.0);
    let lcp_attribution = attribution.then(|| {
        let (element, url) = if rng.random_bool(0.8) {
            LCP_ELEMENTS[rank.min(LCP_ELEMENTS.len() - 1)]
        } else {
            ("main>h1", "")
        };
        // The four subparts add up to the value: the first byte, then the rest split at random.
        let rest = lcp - ttfb;
        let (a, b) = (rng.random::<f64>(), rng.random::<f64>());
        let (delay, duration) = if url.is_empty() {
            (0.0, 0.0)
        } else {
            (round(rest * a * 0.4), round(rest * b * 0.5))
        };
        let render = round(rest - delay - duration);
        let url = if url.is_empty() {
            String::new()
        } else {
            format!(r#","url":"{url}?w=1200""#)
        };
        format!(
            r#""target":"{element}"{url},"timeToFirstByte":{ttfb},"resourceLoadDelay":{delay},"resourceLoadDuration":{duration},"elementRenderDelay":{render}"#
        )
    });
    metric(out, "LCP", lcp, lcp_attribution);
    if rng.random_bool(0.8) {
        // CLS: most pages do not shift at all.
        let cls = if rng.random_bool(0.55) {
            0.0
        } else {
            lognormal(rng, 0.05, 1.0).min(5.0)
        };
        let cls_attribution = (attribution && cls > 0.0).then(|| {
            let target = if rng.random_bool(0.6) {
                "div.ad-slot"
            } else {
                "img.banner"
            };
            format!(r#""largestShiftTarget":"{target}""#)
        });
        metric(
            out,
            "CLS",
            (cls * 10_000.0).round() / 10_000.0,
            cls_attribution,
        );
    }
    if rng.random_bool(0.6) {
        let inp = round(lognormal(rng, 120.0 * slow, 0.8)).max(1.0);
        let inp_attribution = attribution.then(|| {
            let (target, kind, script, invoker) = INP_TARGETS[rng.random_range(0..INP_TARGETS.len())];
            let input = round(inp * rng.random_range(0.05..0.3));
            let processing = round((inp - input) * rng.random_range(0.3..0.8));
            let presentation = round(inp - input - processing);
            format!(
                r#""interactionTarget":"{target}","interactionType":"{kind}","inputDelay":{input},"processingDuration":{processing},"presentationDelay":{presentation},"scriptUrl":"{script}","scriptInvoker":"{invoker}""#
            )
        });
        metric(out, "INP", inp, inp_attribution);
    }
    if rng.random_bool(0.05) {
        metric(out, "FID", round(lognormal(rng, 20.0 * slow, 0.9)), None);
    }
    out.push_str("]}");
    user_agent
}

/// Beacon `n` of a seeded run: each beacon has its own random stream, so the output does not
/// depend on scheduling.
fn nth_beacon(
    seed: u64,
    n: u64,
    site_json: &str,
    attribution: bool,
    out: &mut String,
) -> Option<&'static str> {
    out.clear();
    let mut rng = StdRng::seed_from_u64(seed.wrapping_mul(1_000_003).wrapping_add(n));
    write_beacon(&mut rng, site_json, attribution, out)
}

fn lognormal(rng: &mut impl Rng, median: f64, sigma: f64) -> f64 {
    LogNormal::new(median.ln(), sigma).map_or(median, |d| d.sample(rng))
}

fn round(value: f64) -> f64 {
    (value.min(599_000.0) * 10.0).round() / 10.0
}

/// What one worker saw.
#[derive(Default)]
struct Tally {
    /// Latency of each 204, in microseconds.
    accepted_us: Vec<u32>,
    /// Latency of each 204 from the moment it was sent (differs from `accepted_us` when a paced
    /// generator falls behind its schedule: that lag is the generator's, not the server's).
    service_us: Vec<u32>,
    /// Connections opened (more than one a worker: the server closed some).
    connections: u64,
    /// Answers by HTTP status.
    by_status: BTreeMap<u16, u64>,
    /// Requests that got no HTTP answer.
    errors: u64,
}

/// The `q` quantile (0..=1) of sorted values, nearest rank.
fn quantile(sorted: &[u32], q: f64) -> Option<u32> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

fn micros(d: Duration) -> u32 {
    d.as_micros().min(u128::from(u32::MAX)) as u32
}

fn ms(us: Option<u32>) -> serde_json::Value {
    us.map_or(serde_json::Value::Null, |us| json!(f64::from(us) / 1000.0))
}

/// The target of the requests: where to connect and what to send as the request target and `Host`.
struct Target {
    addr: String,
    authority: String,
    path: String,
}

impl Target {
    fn parse(url: &str) -> anyhow::Result<Target> {
        let uri: Uri = url
            .parse()
            .with_context(|| format!("--url {url:?} is not a URL"))?;
        if uri.scheme_str() != Some("http") {
            bail!("--url {url:?}: only http:// is supported");
        }
        let authority = uri
            .authority()
            .with_context(|| format!("--url {url:?} has no host"))?;
        let port = authority.port_u16().unwrap_or(80);
        Ok(Target {
            addr: format!("{}:{port}", authority.host()),
            authority: authority.to_string(),
            path: format!("{}{BEACON_PATH}", uri.path().trim_end_matches('/')),
        })
    }
}

type Sender = http1::SendRequest<Full<Bytes>>;

/// One keep-alive HTTP/1.1 connection (hyper's low-level client: no pool, no per-request setup).
async fn connect(addr: &str) -> anyhow::Result<Sender> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let (sender, connection) = http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

/// POSTs one beacon on `conn` (connecting first when there is none) and reads the answer.
async fn post(
    conn: &mut Option<Sender>,
    target: &Target,
    body: Bytes,
    user_agent: Option<&str>,
    connections: &mut u64,
) -> anyhow::Result<StatusCode> {
    let reusable = match conn.take() {
        Some(mut s) => s.ready().await.is_ok().then_some(s),
        None => None,
    };
    let mut sender = match reusable {
        Some(s) => s,
        None => {
            *connections += 1;
            connect(&target.addr).await?
        }
    };
    let mut request = Request::post(target.path.as_str())
        .header(header::HOST, target.authority.as_str())
        .header(header::CONTENT_TYPE, "text/plain;charset=UTF-8");
    if let Some(ua) = user_agent {
        request = request.header(header::USER_AGENT, ua);
    }
    let request = request.body(Full::new(body))?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    // Read the (small) answer so the connection can carry the next request.
    response.into_body().collect().await?;
    *conn = Some(sender);
    Ok(status)
}

/// The resolution of tokio's timer.
const TIMER_TICK: Duration = Duration::from_millis(1);

/// How many beacons a run sends at most (with `--duration` and `--rate`, the schedule's count).
fn limit_of(args: &Args) -> u64 {
    match (args.duration, args.rate) {
        (Some(d), rate) if rate > 0 => (d * rate as f64).ceil() as u64,
        (Some(_), _) => u64::MAX,
        (None, _) => args.beacons,
    }
}

/// Sends the beacons and prints a one-line summary.
pub async fn run(args: Args) -> anyhow::Result<()> {
    if args.concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    if let Some(d) = args.duration {
        if !(d.is_finite() && d > 0.0) {
            bail!("--duration must be a positive number of seconds");
        }
    }
    let target = Arc::new(Target::parse(&args.url)?);
    let site_json: Arc<str> = serde_json::to_string(&args.site)?.into();
    let next = Arc::new(AtomicU64::new(0));
    let limit = limit_of(&args);
    let workers = args.concurrency.min(limit.max(1));
    // Every connection is opened before the clock starts: a storm of handshakes is the generator's
    // start-up, not the server's steady state (a paced run would count it as latency).
    let mut opened = Vec::with_capacity(workers as usize);
    for handshake in (0..workers)
        .map(|_| {
            let target = target.clone();
            tokio::spawn(async move { connect(&target.addr).await.ok() })
        })
        .collect::<Vec<_>>()
    {
        opened.push(handshake.await.ok().flatten());
    }
    let mut total = Tally {
        connections: opened.iter().filter(|c| c.is_some()).count() as u64,
        ..Tally::default()
    };
    let started = Instant::now();
    let deadline = args.duration.map(|d| started + Duration::from_secs_f64(d));
    let mut running = Vec::new();
    for conn in opened {
        let (target, site_json, next) = (target.clone(), site_json.clone(), next.clone());
        let (rate, seed, attribution) = (args.rate, args.seed, args.attribution);
        running.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            let mut conn = conn;
            let mut body = String::with_capacity(1024);
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= limit {
                    break;
                }
                let user_agent = nth_beacon(seed, n, &site_json, attribution, &mut body);
                // A run ends at its deadline even when a paced generator is behind its schedule
                // (what it could not send by then shows as the achieved rate, not as latency).
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    break;
                }
                let due = if rate > 0 {
                    let due = started + Duration::from_secs_f64(n as f64 / rate as f64);
                    // tokio's timer fires on the millisecond tick at or after its deadline: aim one
                    // tick early, so the generator's timer is not charged to the server.
                    let wake = due.checked_sub(TIMER_TICK).unwrap_or(due);
                    tokio::time::sleep_until(wake.into()).await;
                    due
                } else {
                    Instant::now()
                };
                let sent = Instant::now();
                // Latency counts from the schedule, or from the send when the early wake-up sent it
                // before its time.
                let due = due.min(sent);
                let body = Bytes::from(body.clone());
                match post(&mut conn, &target, body, user_agent, &mut tally.connections).await {
                    Ok(status) => {
                        if status == StatusCode::NO_CONTENT {
                            tally.accepted_us.push(micros(due.elapsed()));
                            tally.service_us.push(micros(sent.elapsed()));
                        } else {
                            tracing::debug!(%status, "beacon not accepted");
                        }
                        *tally.by_status.entry(status.as_u16()).or_default() += 1;
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "beacon not sent");
                        tally.errors += 1;
                        // A refused connection must not turn the closed loop into a busy loop.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            tally
        }));
    }
    for w in running {
        let tally = w.await.context("a loadgen worker panicked")?;
        total.accepted_us.extend(tally.accepted_us);
        total.service_us.extend(tally.service_us);
        total.connections += tally.connections;
        for (status, count) in tally.by_status {
            *total.by_status.entry(status).or_default() += count;
        }
        total.errors += tally.errors;
    }
    let secs = started.elapsed().as_secs_f64();
    total.accepted_us.sort_unstable();
    total.service_us.sort_unstable();
    let ok = total.accepted_us.len() as u64;
    let sent = total.by_status.values().sum::<u64>() + total.errors;
    let bad = sent - ok;
    let endpoint = format!("http://{}{}", target.authority, target.path);
    if args.json {
        let mut status: serde_json::Map<String, serde_json::Value> = total
            .by_status
            .iter()
            .map(|(s, c)| (s.to_string(), json!(c)))
            .collect();
        status.insert("error".into(), json!(total.errors));
        let a = &total.accepted_us;
        println!(
            "{}",
            json!({
                "url": endpoint,
                "target_rate": args.rate,
                "concurrency": args.concurrency,
                "seconds": secs,
                "sent": sent,
                "accepted": ok,
                "rate": sent as f64 / secs.max(1e-9),
                "accepted_rate": ok as f64 / secs.max(1e-9),
                "status": status,
                "p50_ms": ms(quantile(a, 0.50)),
                "p90_ms": ms(quantile(a, 0.90)),
                "p99_ms": ms(quantile(a, 0.99)),
                "p999_ms": ms(quantile(a, 0.999)),
                "max_ms": ms(a.last().copied()),
                "sent_p50_ms": ms(quantile(&total.service_us, 0.50)),
                "sent_p99_ms": ms(quantile(&total.service_us, 0.99)),
                "connections": total.connections,
            })
        );
    } else {
        println!(
            "loadgen: {ok} beacons accepted (204), {bad} not, in {secs:.2} s ({:.0} beacons/s) to {endpoint}",
            sent as f64 / secs.max(1e-9)
        );
    }
    if ok == 0 && sent > 0 {
        bail!("no beacon was accepted by {endpoint}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_beacon_and_every_beacon_is_valid() {
        let (mut a, mut b) = (String::new(), String::new());
        let mut ids = std::collections::HashSet::new();
        let mut browsers = std::collections::BTreeSet::new();
        for n in 0..1000u64 {
            let attribution = n >= 500;
            let ua_a = nth_beacon(42, n, r#""demo""#, attribution, &mut a);
            let ua_b = nth_beacon(42, n, r#""demo""#, attribution, &mut b);
            assert_eq!((&a, ua_a), (&b, ua_b));
            assert_eq!(ua_a.is_some(), attribution);
            let json: serde_json::Value = serde_json::from_str(&a).expect("valid JSON");
            assert_eq!(json["site"], "demo");
            let ctx = rum_schemas::beacon::RequestContext {
                query_site: None,
                header_device: rum_schemas::Device::Unknown,
                received_at_ms: 0,
                browser: ua_a.map_or(rum_schemas::browser::Browser::UNKNOWN, |ua| {
                    rum_schemas::browser::Browser::from_user_agent(Some(ua.as_bytes()))
                }),
                referer_path: None,
            };
            let v = rum_schemas::parse_beacon(a.as_bytes())
                .unwrap()
                .validate(&ctx)
                .unwrap();
            assert!(v.dropped.is_empty(), "{a}");
            assert!((3..=6).contains(&v.message.metrics.len()), "{a}");
            for m in &v.message.metrics {
                assert!(ids.insert(m.id.clone()), "metric ids are unique: {}", m.id);
                let a = &m.attribution;
                if !attribution {
                    assert!(a.is_empty(), "{a:?}");
                    continue;
                }
                match m.name {
                    rum_schemas::MetricName::LCP => {
                        let parts = [
                            a.time_to_first_byte,
                            a.resource_load_delay,
                            a.resource_load_duration,
                            a.element_render_delay,
                        ];
                        let sum: f64 = parts.iter().map(|p| p.unwrap()).sum();
                        assert!((sum - m.value).abs() < 0.05, "{a:?} vs {}", m.value);
                        assert!(!a.target.is_empty() && !a.url.contains('?'), "{a:?}");
                    }
                    rum_schemas::MetricName::INP => {
                        let sum = a.input_delay.unwrap()
                            + a.processing_duration.unwrap()
                            + a.presentation_delay.unwrap();
                        assert!((sum - m.value).abs() < 0.05, "{a:?} vs {}", m.value);
                        assert!(!a.interaction_target.is_empty() && !a.script_url.is_empty());
                    }
                    _ => {}
                }
            }
            if attribution {
                assert!(!v.message.page_id.is_empty() && !v.message.release.is_empty());
                browsers.insert(v.message.browser.clone());
            }
        }
        assert_eq!(
            browsers.into_iter().collect::<Vec<_>>(),
            ["chrome", "edge", "firefox", "safari", "samsung"]
        );
    }

    #[test]
    fn nearest_rank_quantiles() {
        let v: Vec<u32> = (1..=100).collect();
        assert_eq!(quantile(&v, 0.5), Some(50));
        assert_eq!(quantile(&v, 0.99), Some(99));
        assert_eq!(quantile(&v, 1.0), Some(100));
        assert_eq!(quantile(&v, 0.0), Some(1));
        assert_eq!(quantile(&[], 0.5), None);
    }
}
