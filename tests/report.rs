//! `rum report` against a real ClickHouse 18.16: known rows inserted with `insert_raw_rows`, the real
//! binary writes the HTML, which must hold the charts, the worst route first and hostile text escaped,
//! and load nothing from a network; then Debian's Chromium (`collector/e2e/report-shot.mjs`, with
//! playwright-core) opens it, refuses every request but the file's, measures the charts and saves a
//! screenshot into the target dir (path printed).
//!
//! Needs `node`, `/usr/bin/chromium` (or `RUM_E2E_CHROMIUM`) and `collector/node_modules` (`npm ci` in
//! `collector/`); `./deploy/local/test` provides them. A missing one fails the test: it is never skipped.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::rum_output;
use rum_clickhouse::{ClickHouseConfig, VitalsRawRow};
use rum_schemas::MetricName;
use rum_testkit::{ClickHouseCluster, ClickHouseServer};
use serde_json::Value;

/// A selector the page must show as text, never run.
const HOSTILE_SELECTOR: &str = "div#hero > <script>alert(\"lcp\")</script>";
/// A route the page must show as text (stored routes are slugs; the report does not rely on it).
const HOSTILE_ROUTE: &str = "</td><script>alert(2)</script>";
/// The hours (back from now) that hold samples: one sample per route/device pair and metric each.
const HOURS: u32 = 48;

fn now() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as u32
}

/// The rows of the test: per hour of the last [`HOURS`], one LCP of each of checkout (mobile, the
/// worst: 5 s and more, with an LCP element whose selector is hostile), product-id (mobile and
/// desktop, 3 s) and root (desktop, 1.5 s); INP of cart (mobile, 600 ms, with a target), of
/// [`HOSTILE_ROUTE`] (desktop, 800 ms) and root (desktop, 100 ms); CLS, FCP and TTFB of root.
fn rows(now: u32) -> Vec<VitalsRawRow> {
    let mut rows = Vec::new();
    for h in 0..HOURS {
        // Ten minutes into each of the last hours: one hour step each.
        let at = now - h * 3600 - 600;
        let mut add = |route: &str, device: &str, metric: MetricName, value: f64| {
            let row = VitalsRawRow {
                metric_id: format!("{route}-{device}-{}-{h}", metric.as_str()),
                // Spread over the shards of a cluster (`Distributed` by partition).
                kafka_partition: h % 4,
                ..VitalsRawRow::measured("shop", route, device, metric, value, at)
            };
            rows.push(row);
        };
        add(
            "checkout",
            "mobile",
            MetricName::LCP,
            5000.0 + f64::from(h) * 10.0,
        );
        add("product-id", "mobile", MetricName::LCP, 3000.0);
        add("product-id", "desktop", MetricName::LCP, 3000.0);
        add("root", "desktop", MetricName::LCP, 1500.0);
        add("cart", "mobile", MetricName::INP, 600.0);
        add(HOSTILE_ROUTE, "desktop", MetricName::INP, 800.0);
        add("root", "desktop", MetricName::INP, 100.0);
        add(
            "root",
            "desktop",
            MetricName::CLS,
            0.05 + f64::from(h % 4) * 0.05,
        );
        add(
            "root",
            "desktop",
            MetricName::FCP,
            1200.0 + f64::from(h) * 20.0,
        );
        add(
            "root",
            "desktop",
            MetricName::TTFB,
            400.0 + f64::from(h) * 10.0,
        );
    }
    for row in &mut rows {
        match (row.route.as_str(), row.metric.as_str()) {
            ("checkout", "LCP") => {
                row.target = HOSTILE_SELECTOR.into();
                row.resource_url = "https://cdn.example/hero.jpg".into();
                row.time_to_first_byte = Some(500.0);
                row.resource_load_delay = Some(1000.0);
                row.resource_load_duration = Some(3000.0);
                row.element_render_delay = Some(row.value - 4500.0);
            }
            ("cart", "INP") => {
                row.target = "button#buy".into();
                row.interaction_type = "pointer".into();
                row.input_delay = Some(50.0);
                row.processing_duration = Some(500.0);
                row.presentation_delay = Some(50.0);
                row.script_url = "https://shop.example/app.js".into();
                row.script_invoker = "#buy.onclick".into();
            }
            _ => {}
        }
    }
    rows
}

/// Node, Chromium and playwright-core, or a panic that says how to get them.
fn browser_prerequisites() -> (PathBuf, String) {
    let collector = Path::new(env!("CARGO_MANIFEST_DIR")).join("collector");
    let node = Command::new("node").arg("--version").output();
    assert!(
        node.is_ok_and(|o| o.status.success()),
        "node is missing: install Node.js 20+ (./deploy/local/test does)"
    );
    let chromium = std::env::var("RUM_E2E_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).is_file(),
        "no Chromium at {chromium}: apt-get install -y chromium; never a downloaded browser"
    );
    assert!(
        collector.join("node_modules/playwright-core").is_dir(),
        "collector/node_modules is missing: run `npm ci` in collector/"
    );
    (collector, chromium)
}

/// The `<section>` of a metric.
fn section<'a>(html: &'a str, metric: &str) -> &'a str {
    let start = html
        .find(&format!("<section id=\"{metric}\">"))
        .unwrap_or_else(|| panic!("no section {metric}"));
    let end = html[start..].find("</section>").unwrap() + start;
    &html[start..end]
}

/// The texts of the first cells of the worst routes table of a section.
fn worst_routes(section: &str) -> Vec<String> {
    let Some(start) = section.find("<table class=\"worst\">") else {
        return Vec::new();
    };
    let table = &section[start..section[start..].find("</table>").unwrap() + start];
    table
        .split("<tr>")
        .skip(2)
        .map(|row| {
            let cell = row.split("<code>").nth(1).unwrap();
            cell[..cell.find("</code>").unwrap()].to_string()
        })
        .collect()
}

/// Every `http` inside a tag (an attribute: something a browser could load) rather than in text.
fn urls_in_tags(html: &str) -> Vec<String> {
    html.match_indices("http")
        .filter(|(i, _)| {
            let before = &html[..*i];
            before.rfind('<') > before.rfind('>')
        })
        .map(|(i, _)| html[i..(i + 60).min(html.len())].to_string())
        .collect()
}

#[test]
fn a_report_of_known_rows_shows_the_charts_and_escaped_text_in_chromium() {
    let (collector, chromium) = browser_prerequisites();
    let server = ClickHouseServer::start();
    let config = ClickHouseConfig {
        url: server.url.clone(),
        ..ClickHouseConfig::default()
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let rows = rows(now());
    runtime.block_on(async {
        rum_clickhouse::migrate(&config).await.unwrap();
        rum_clickhouse::insert_raw_rows(&config.client(), &rows)
            .await
            .unwrap();
    });
    // One folder, written again by each run: the last run's page and screenshot stay to look at.
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("report");
    std::fs::create_dir_all(&dir).unwrap();
    let out_path = dir.join("report.html");
    let out = out_path.to_str().unwrap();
    let env = [("RUM_CLICKHOUSE_URL", server.url.as_str())];

    let run = rum_output(
        &[
            "report",
            "--site",
            "shop",
            "--since",
            "7d",
            "--out",
            out,
            "--min-samples",
            "10",
        ],
        &env,
    );
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "rum report failed: {stderr}");
    assert!(
        stderr.contains("rum report: [1/7]"),
        "progress on stderr: {stderr}"
    );
    assert!(stderr.contains(&format!("wrote {out}")), "{stderr}");
    let html = std::fs::read_to_string(&out_path).unwrap();

    // One page, ten charts (a trend and a histogram per metric), each a plotters SVG.
    assert!(html.starts_with("<!doctype html>"), "{}", &html[..100]);
    assert_eq!(html.matches("<svg").count(), 10);
    for metric in ["LCP", "INP", "CLS", "FCP", "TTFB"] {
        let s = section(&html, metric);
        assert_eq!(s.matches("<svg").count(), 2, "{metric}");
        assert!(s.contains("data-chart=\"trend\"") && s.contains("data-chart=\"histogram\""));
    }
    // Nothing to load: no script, no stylesheet, no font, no URL in any tag.
    let lower = html.to_ascii_lowercase();
    for banned in [
        "<script",
        "<link",
        "<img",
        "<iframe",
        "@import",
        "url(",
        "@font-face",
    ] {
        assert!(!lower.contains(banned), "the page holds `{banned}`");
    }
    assert_eq!(urls_in_tags(&html), Vec::<String>::new());
    // Hostile text from the database is text.
    assert!(html.contains("div#hero &gt; &lt;script&gt;alert(&quot;lcp&quot;)&lt;/script&gt;"));
    assert!(html.contains("&lt;/td&gt;&lt;script&gt;alert(2)&lt;/script&gt;"));
    // The worst route first: checkout's LCP p75 is 5 s and more, product-id's 3 s, root's 1.5 s.
    let lcp = section(&html, "LCP");
    assert_eq!(
        worst_routes(lcp),
        ["checkout", "product-id", "product-id", "root"]
    );
    assert!(
        lcp.contains(&format!("over {} samples", 4 * HOURS)),
        "LCP samples"
    );
    let inp = section(&html, "INP");
    assert_eq!(
        worst_routes(inp),
        [
            "&lt;/td&gt;&lt;script&gt;alert(2)&lt;/script&gt;",
            "cart",
            "root"
        ]
    );
    // The causes of the worst routes: checkout's LCP element with its mean subparts, cart's INP target.
    assert!(lcp.contains("Top LCP elements of the worst routes"));
    assert!(lcp.contains("<code>https://cdn.example/hero.jpg</code>"));
    assert!(
        lcp.contains("<td class=\"num\">3000 ms</td>"),
        "mean load duration"
    );
    assert!(inp.contains("<code>button#buy</code>") && inp.contains("<code>pointer</code>"));
    assert!(
        inp.contains("<td class=\"num\">500 ms</td>"),
        "mean processing"
    );

    // Chromium: the charts rendered, with the data.
    let screenshot = dir.join("report.png");
    let shot = Command::new("node")
        .arg("e2e/report-shot.mjs")
        .current_dir(&collector)
        .env("RUM_REPORT_HTML", &out_path)
        .env("RUM_REPORT_SCREENSHOT", &screenshot)
        .env("RUM_E2E_CHROMIUM", &chromium)
        .output()
        .expect("node runs");
    assert!(
        shot.status.success(),
        "report-shot.mjs failed: {}",
        String::from_utf8_lossy(&shot.stderr)
    );
    let stdout = String::from_utf8_lossy(&shot.stdout);
    let seen: Value = serde_json::from_str(stdout.lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("report-shot.mjs printed no JSON ({e}): {stdout}"));
    println!("screenshot of the report: {}", screenshot.display());
    assert!(
        std::fs::metadata(&screenshot).unwrap().len() > 10_000,
        "a screenshot with something in it"
    );
    assert_eq!(
        seen["requests"],
        serde_json::json!([]),
        "nothing but the file was asked for"
    );
    assert_eq!(seen["scripts"], 0);
    let charts = seen["charts"].as_array().unwrap();
    assert_eq!(charts.len(), 10);
    for chart in charts {
        let (kind, metric) = (
            chart["chart"].as_str().unwrap(),
            chart["metric"].as_str().unwrap(),
        );
        assert!(
            chart["width"].as_f64().unwrap() >= 300.0 && chart["height"].as_f64().unwrap() >= 150.0,
            "{chart}"
        );
        assert!(
            chart["texts"].as_u64().unwrap() >= 5,
            "axis labels: {chart}"
        );
        if kind == "trend" {
            // One point per hour with samples, joined by one line (the hours are consecutive).
            assert_eq!(chart["circles"], HOURS, "{metric}: {chart}");
            assert_eq!(chart["lines"], 1, "{metric}: {chart}");
            assert_eq!(chart["points"], HOURS, "{metric}: {chart}");
        } else {
            let distinct: BTreeSet<String> = rows
                .iter()
                .filter(|r| r.metric == metric)
                .map(|r| r.value.to_string())
                .collect();
            // A bar per value, at most (several values may share one), at most 40.
            let bars = chart["bars"].as_u64().unwrap();
            assert!(bars >= 2, "{metric}: a histogram of bars: {chart}");
            assert!(
                bars <= 40 && bars as usize <= distinct.len(),
                "{metric}: {chart}"
            );
        }
    }
    let cells: Vec<&str> = seen["cells"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert!(
        cells.contains(&HOSTILE_SELECTOR),
        "shown as text: {cells:?}"
    );
    assert!(cells.contains(&HOSTILE_ROUTE), "shown as text: {cells:?}");
    assert_eq!(seen["worst"][0]["metric"], "LCP");
    assert_eq!(seen["worst"][0]["routes"][0], "checkout");

    // A site without samples: a page that says so, without charts.
    let empty_path = dir.join("empty.html");
    let run = rum_output(
        &[
            "report",
            "--site",
            "nobody",
            "--out",
            empty_path.to_str().unwrap(),
        ],
        &env,
    );
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let empty = std::fs::read_to_string(&empty_path).unwrap();
    assert_eq!(empty.matches("<svg").count(), 0);
    assert_eq!(empty.matches("No samples in the window.").count(), 5);
}

/// The page without its header (the window's times) and its charts' drawing (their x positions move
/// with the second the report ran): its numbers and tables.
fn tables(html: &str) -> String {
    let body = &html[html.find("</header>").expect("a header")..];
    let mut out = String::new();
    let mut rest = body;
    while let Some(start) = rest.find("<svg") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find("</svg>").expect("a closed svg") + start;
        let svg = &rest[start..end];
        // What the data drew: the points of the p75 line and the bars.
        out.push_str(&format!(
            "[svg: {} circles, {} rects]",
            svg.matches("<circle").count(),
            svg.matches("<rect").count()
        ));
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// Over a cluster's `Distributed` tables (18.16 sends the grouping level to the shards as text), the
/// same report as one server's.
#[test]
fn a_cluster_gives_the_report_of_one_server() {
    let rows = rows(now());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("report-cluster");
    std::fs::create_dir_all(&dir).unwrap();
    let report = |name: &str, env: &[(&str, &str)]| -> String {
        let path = dir.join(name);
        let run = rum_output(
            &[
                "report",
                "--site",
                "shop",
                "--min-samples",
                "10",
                "--out",
                path.to_str().unwrap(),
            ],
            env,
        );
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
        std::fs::read_to_string(path).unwrap()
    };

    let server = ClickHouseServer::start();
    let single = ClickHouseConfig {
        url: server.url.clone(),
        ..ClickHouseConfig::default()
    };
    runtime.block_on(async {
        rum_clickhouse::migrate(&single).await.unwrap();
        rum_clickhouse::insert_raw_rows(&single.client(), &rows)
            .await
            .unwrap();
    });
    let one = report("one.html", &[("RUM_CLICKHOUSE_URL", server.url.as_str())]);

    let cluster = ClickHouseCluster::start(2, 1);
    let config = ClickHouseConfig {
        url: cluster.url().to_string(),
        cluster: Some(cluster.cluster_name().to_string()),
        ..ClickHouseConfig::default()
    };
    runtime.block_on(async {
        rum_clickhouse::migrate(&config).await.unwrap();
        rum_clickhouse::insert_raw_rows(
            &config.client().with_setting("insert_distributed_sync", "1"),
            &rows,
        )
        .await
        .unwrap();
    });
    for node in cluster.nodes() {
        let stored: u64 = node
            .query("SELECT count() FROM rum_local.vitals_1m WHERE site = 'shop'")
            .trim()
            .parse()
            .unwrap();
        assert!(stored > 0, "{} holds no rollup row", node.url);
    }
    let many = report(
        "cluster.html",
        &[
            ("RUM_CLICKHOUSE_URL", cluster.url()),
            ("RUM_CLICKHOUSE_CLUSTER", cluster.cluster_name()),
        ],
    );
    assert_eq!(tables(&many), tables(&one));
    assert_eq!(tables(&one).matches(&format!("{HOURS} circles")).count(), 5);
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(
        one.contains("div#hero &gt; &lt;script&gt;"),
        "attribution on one server"
    );
}

/// Each sample weighs `1 / sample_rate` unless `--unweighted`: 30 LCPs of 1 s sampled at 1 and 10 of
/// 5 s sampled at 0.1 (each standing for ten page loads) have a p75 of 5 s weighted, 1 s unweighted.
#[test]
fn percentiles_and_shares_are_weighted_by_sample_rate_unless_unweighted() {
    let now = now();
    let mut rows = Vec::new();
    for i in 0..40u32 {
        let (value, rate) = if i < 30 { (1000.0, 1.0) } else { (5000.0, 0.1) };
        rows.push(VitalsRawRow {
            metric_id: format!("w-{i}"),
            sample_rate: rate,
            ..VitalsRawRow::measured(
                "w",
                "root",
                "desktop",
                MetricName::LCP,
                value,
                now - 600 - i,
            )
        });
    }
    let server = ClickHouseServer::start();
    let config = ClickHouseConfig {
        url: server.url.clone(),
        ..ClickHouseConfig::default()
    };
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        rum_clickhouse::migrate(&config).await.unwrap();
        rum_clickhouse::insert_raw_rows(&config.client(), &rows)
            .await
            .unwrap();
    });
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("report-weighted");
    std::fs::create_dir_all(&dir).unwrap();
    let lcp = |extra: &[&str]| -> String {
        let path = dir.join("w.html");
        let run = rum_output(
            &[
                &[
                    "report",
                    "--site",
                    "w",
                    "--since",
                    "1h",
                    "--out",
                    path.to_str().unwrap(),
                ],
                extra,
            ]
            .concat(),
            &[("RUM_CLICKHOUSE_URL", server.url.as_str())],
        );
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
        section(&std::fs::read_to_string(path).unwrap(), "LCP").to_string()
    };
    // The sketch's value of a bucket, as the page writes it (`2.51 s`, `997 ms`).
    let shown = |v: f64| {
        let v = rum_clickhouse::value_of_bucket(rum_clickhouse::bucket_of(v));
        if v >= 1000.0 {
            format!("{:.2} s", v / 1000.0)
        } else {
            format!("{v:.0} ms")
        }
    };
    let weighted = lcp(&[]);
    assert!(
        weighted.contains(&format!(
            "p75 <strong class=\"poor\">{}</strong> over 40 samples",
            shown(5000.0)
        )),
        "{weighted}"
    );
    // 30 good of 130 page loads; the worst routes table is rum query's weighted p75.
    assert!(
        weighted.contains("<td class=\"num\">23.1%</td>"),
        "{weighted}"
    );
    assert!(weighted.contains(&format!("<td class=\"num poor\">{}</td>", shown(5000.0))));
    let unweighted = lcp(&["--unweighted"]);
    assert!(
        unweighted.contains(&format!(
            "p75 <strong class=\"good\">{}</strong> over 40 samples",
            shown(1000.0)
        )),
        "{unweighted}"
    );
    assert!(
        unweighted.contains("<td class=\"num\">75.0%</td>"),
        "{unweighted}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_options_are_one_line_naming_the_flag_and_exit_2() {
    let missing = std::env::temp_dir().join("no-such-folder-for-rum-report/r.html");
    let missing = missing.to_str().unwrap();
    for (args, flag) in [
        (
            &["--site", "s", "--out", "r.html", "--since", "30x"][..],
            "--since",
        ),
        (&["--out", "r.html"], "--site"),
        (&["--site", "s"], "--out"),
        (
            &["--site", "s", "--out", "r.html", "--routes", "0"],
            "--routes",
        ),
        (&["--site", "s", "--out", missing], "--out"),
        (
            &[
                "--site", "s", "--out", "r.html", "--since", "1h", "--until", "2h",
            ],
            "--until",
        ),
        (&["--site", "s", "--out", "r.html", "--bogus"], "--bogus"),
    ] {
        // A server that is not there: the options are refused before any request.
        let out = rum_output(
            &[&["report"], args].concat(),
            &[("RUM_CLICKHOUSE_URL", "http://127.0.0.1:9")],
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: one line: {stderr}");
        assert!(
            stderr.starts_with("rum report: ") && stderr.contains(flag),
            "{args:?}: {stderr}"
        );
    }
    // An unreachable server is not a bad option: exit 1, naming it.
    let out = rum_output(
        &[
            "report",
            "--site",
            "s",
            "--out",
            std::env::temp_dir().join("rum-r.html").to_str().unwrap(),
        ],
        &[("RUM_CLICKHOUSE_URL", "http://127.0.0.1:9")],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("http://127.0.0.1:9"), "{stderr}");
}

/// A week of demo traffic, seeded: seven routes on three devices, more page loads by day than by
/// night, product-id's LCP regressing two days ago (a release), and the attribution build's causes.
fn demo_rows(now: u32) -> Vec<VitalsRawRow> {
    use rand::{Rng, SeedableRng};
    use rand_distr::Distribution;
    let mut rng = rand::rngs::StdRng::seed_from_u64(17);
    // Route, share of the traffic, LCP median (ms), INP median (ms), LCP element, its resource.
    let routes = [
        ("root", 0.25, 1900.0, 90.0, "main > section.hero > h1", ""),
        (
            "product-id",
            0.3,
            2300.0,
            160.0,
            "div.gallery > img.product-main",
            "https://shop.example/img/product.avif",
        ),
        (
            "category-id",
            0.15,
            2100.0,
            120.0,
            "ul.grid > li:nth-child(1) > img",
            "https://shop.example/img/tile.webp",
        ),
        ("search", 0.1, 1700.0, 230.0, "div.results > h2", ""),
        ("cart", 0.08, 1600.0, 140.0, "table.items", ""),
        (
            "checkout",
            0.07,
            2600.0,
            260.0,
            "form#payment > div.summary",
            "",
        ),
        (
            "account-orders-id",
            0.05,
            2900.0,
            110.0,
            "div.orders > table",
            "",
        ),
    ];
    let inp_targets = [
        (
            "button.add-to-cart",
            "pointer",
            "https://shop.example/js/cart.js",
            "button.add-to-cart.onclick",
        ),
        (
            "input#search",
            "keyboard",
            "https://shop.example/js/search.js",
            "input#search.oninput",
        ),
        (
            "nav > a.menu",
            "pointer",
            "https://shop.example/js/app.js",
            "a.menu.onclick",
        ),
    ];
    let devices = [
        ("mobile", 0.6, 1.35),
        ("desktop", 0.35, 1.0),
        ("tablet", 0.05, 1.15),
    ];
    let mut rows = Vec::new();
    let mut page = 0u64;
    for h in 0..(7 * 24u32) {
        let hour_start = (now - now % 3600) - (7 * 24 - 1 - h) * 3600;
        let hour_of_day = (hour_start / 3600) % 24;
        // Busy evenings, quiet nights (UTC).
        let loads = 25.0
            + 35.0 * (1.0 + ((f64::from(hour_of_day) - 20.0) / 24.0 * std::f64::consts::TAU).cos());
        for _ in 0..loads as u32 {
            page += 1;
            let at = hour_start + rng.random_range(0..3600);
            if at >= now {
                continue;
            }
            let pick = |rng: &mut rand::rngs::StdRng, weights: &[f64]| {
                let mut x = rng.random_range(0.0..weights.iter().sum::<f64>());
                weights
                    .iter()
                    .position(|w| {
                        x -= w;
                        x < 0.0
                    })
                    .unwrap_or(0)
            };
            let (route, _, lcp_median, inp_median, element, resource) =
                routes[pick(&mut rng, &routes.map(|r| r.1))];
            let (device, _, slower) = devices[pick(&mut rng, &devices.map(|d| d.1))];
            // The release two days ago made product-id's hero image late.
            let released = route == "product-id" && now - at < 2 * 86_400;
            let lcp_median = if released {
                lcp_median * 1.55
            } else {
                lcp_median
            } * slower;
            let sample = |rng: &mut rand::rngs::StdRng, median: f64, sigma: f64| {
                rand_distr::LogNormal::new(f64::ln(median), sigma)
                    .unwrap()
                    .sample(rng)
            };
            let row_of = |metric: MetricName, value: f64| VitalsRawRow {
                metric_id: format!("v5-{page}-{}", metric.as_str()),
                page_id: format!("{page:016x}"),
                ..VitalsRawRow::measured("demo", route, device, metric, value, at)
            };
            let ttfb = sample(&mut rng, 420.0 * slower, 0.5);
            let lcp = sample(&mut rng, lcp_median, 0.45).max(ttfb + 50.0);
            let mut lcp_row = row_of(MetricName::LCP, lcp);
            lcp_row.target = element.into();
            lcp_row.resource_url = resource.into();
            let rest = lcp - ttfb;
            let (delay, duration) = if resource.is_empty() {
                (0.0, 0.0)
            } else if released {
                (rest * 0.45, rest * 0.4)
            } else {
                (rest * 0.2, rest * 0.5)
            };
            lcp_row.time_to_first_byte = Some(ttfb);
            lcp_row.resource_load_delay = Some(delay);
            lcp_row.resource_load_duration = Some(duration);
            lcp_row.element_render_delay = Some(rest - delay - duration);
            rows.push(lcp_row);
            rows.push(row_of(MetricName::TTFB, ttfb));
            rows.push(row_of(
                MetricName::FCP,
                sample(&mut rng, 0.75 * lcp_median, 0.4).min(lcp),
            ));
            let shifted = rng.random_bool(0.35);
            rows.push(row_of(
                MetricName::CLS,
                if shifted {
                    sample(&mut rng, 0.08, 0.9)
                } else {
                    0.0
                },
            ));
            if rng.random_bool(0.7) {
                let inp = sample(&mut rng, inp_median * slower, 0.6);
                let (target, kind, script, invoker) = inp_targets[pick(&mut rng, &[0.5, 0.3, 0.2])];
                let mut row = row_of(MetricName::INP, inp);
                row.target = target.into();
                row.interaction_type = kind.into();
                row.input_delay = Some(inp * 0.15);
                row.processing_duration = Some(inp * 0.6);
                row.presentation_delay = Some(inp * 0.25);
                row.script_url = script.into();
                row.script_invoker = invoker.into();
                rows.push(row);
            }
        }
    }
    rows
}

/// Makes `docs/report.png` for the README from [`demo_rows`] (a week of seeded demo traffic):
/// `cargo test --test report -- --ignored docs_screenshot`. Not a check: run by hand.
#[test]
#[ignore = "writes docs/report.png; run by hand"]
fn docs_screenshot_of_a_week_of_demo_traffic() {
    let (collector, chromium) = browser_prerequisites();
    let server = ClickHouseServer::start();
    let config = ClickHouseConfig {
        url: server.url.clone(),
        ..ClickHouseConfig::default()
    };
    let rows = demo_rows(now());
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        rum_clickhouse::migrate(&config).await.unwrap();
        for chunk in rows.chunks(20_000) {
            rum_clickhouse::insert_raw_rows(&config.client(), chunk)
                .await
                .unwrap();
        }
    });
    let html = Path::new(env!("CARGO_TARGET_TMPDIR")).join("demo-report.html");
    let run = rum_output(
        &[
            "report",
            "--site",
            "demo",
            "--since",
            "7d",
            "--out",
            html.to_str().unwrap(),
        ],
        &[("RUM_CLICKHOUSE_URL", server.url.as_str())],
    );
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let png = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/report.png");
    std::fs::create_dir_all(png.parent().unwrap()).unwrap();
    let shot = Command::new("node")
        .arg("e2e/report-shot.mjs")
        .current_dir(&collector)
        .env("RUM_REPORT_HTML", &html)
        .env("RUM_REPORT_SCREENSHOT", &png)
        .env("RUM_E2E_CHROMIUM", &chromium)
        .env("RUM_REPORT_FULL_PAGE", "0")
        .env("RUM_REPORT_HEIGHT", "1480")
        .output()
        .expect("node runs");
    assert!(
        shot.status.success(),
        "{}",
        String::from_utf8_lossy(&shot.stderr)
    );
    println!(
        "{} rows; report {}; screenshot {}",
        rows.len(),
        html.display(),
        png.display()
    );
}
