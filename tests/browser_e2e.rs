//! The whole pipeline from a real browser: Debian's Chromium (driven by `collector/e2e/run.mjs`
//! with playwright-core) loads a page that embeds the collector from `rum ingest` (`/rum.js`),
//! shifts its layout, takes a slow click and closes; the page load's metrics must then be in
//! `rum.vitals_raw` once each, with the route slug and device, and counted in `rum.vitals_1m`.
//!
//! Needs `node`, `/usr/bin/chromium` (or `RUM_E2E_CHROMIUM`) and a built collector
//! (`npm ci && npm run build` in `collector/`); `./deploy/local/test` provides all three. A missing
//! one fails the test: it is never skipped.

mod common;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{eventually, Pipeline};
use rum_testkit::free_port;

const SITE: &str = "e2e";

struct Prerequisites {
    collector: PathBuf,
    bundle: PathBuf,
    chromium: String,
}

/// Everything the browser half needs, or a panic that says how to get it.
fn prerequisites() -> Prerequisites {
    let collector = Path::new(env!("CARGO_MANIFEST_DIR")).join("collector");
    let node = Command::new("node").arg("--version").output();
    assert!(
        node.is_ok_and(|o| o.status.success()),
        "node is missing: install Node.js 20+ (./deploy/local/test does)"
    );
    let chromium = std::env::var("RUM_E2E_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).is_file(),
        "no Chromium at {chromium}: apt-get install -y chromium (./deploy/local/test does); never a downloaded browser"
    );
    assert!(
        collector.join("node_modules/playwright-core").is_dir(),
        "collector/node_modules is missing: run `npm ci` in collector/"
    );
    let bundle = collector.join("dist/rum.iife.js");
    assert!(
        bundle.is_file(),
        "{} is missing: run `npm run build` in collector/",
        bundle.display()
    );
    Prerequisites {
        collector,
        bundle,
        chromium,
    }
}

/// Runs `command` (stderr shown as it goes) and returns its stdout; panics on failure or timeout.
fn run_with_timeout(mut command: Command, timeout: Duration) -> String {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node starts");
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("collector/e2e/run.mjs did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .expect("piped")
        .read_to_string(&mut stdout)
        .expect("read stdout");
    assert!(
        status.success(),
        "collector/e2e/run.mjs failed ({status}); stdout:\n{stdout}"
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_load_in_chromium_becomes_one_row_per_metric_in_clickhouse() {
    let pre = prerequisites();
    let bundle = pre.bundle.to_str().expect("a UTF-8 path");
    let mut pipeline = Pipeline::start(&[("RUM_INGEST_COLLECTOR_BUNDLE", bundle)]).await;
    let (http, clickhouse, base) = (&pipeline.http, &pipeline.clickhouse, pipeline.base.clone());
    let script = http.get(format!("{base}/rum.js")).send().await.unwrap();
    assert_eq!(script.status(), 200, "the ingest serves the collector");

    // The browser half: a page load that ends with a real close.
    let page_port = free_port().to_string();
    let mut node = Command::new("node");
    node.arg("e2e/run.mjs")
        .current_dir(&pre.collector)
        .env("RUM_E2E_INGEST", &base)
        .env("RUM_E2E_PAGE_PORT", &page_port)
        .env("RUM_E2E_CHROMIUM", &pre.chromium)
        .env("RUM_E2E_SITE", SITE);
    let stdout =
        tokio::task::spawn_blocking(move || run_with_timeout(node, Duration::from_secs(120)))
            .await
            .unwrap();
    let seen: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("run.mjs printed no JSON result ({e}):\n{stdout}"));
    assert!(
        seen["layout_shift"].as_f64().unwrap_or(0.0) > 0.0,
        "the page saw no layout shift: {seen}"
    );
    eprintln!("the page observed: {seen}");
    let device = seen["device"].as_str().unwrap_or("unknown").to_string();
    let mut expected = vec!["CLS", "FCP", "LCP", "TTFB"];
    if seen["interaction"] == true {
        expected.push("INP");
    }
    expected.sort_unstable();

    let query = format!(
        "SELECT metric, count(), any(route), any(device), any(nav_type), max(value), any(sample_rate) \
         FROM rum.vitals_raw WHERE site = '{SITE}' GROUP BY metric ORDER BY metric FORMAT TSV"
    );
    let rows_by_metric = |tsv: String| -> BTreeMap<String, Vec<String>> {
        tsv.lines()
            .map(|line| {
                let mut fields = line.split('\t').map(String::from);
                (fields.next().unwrap(), fields.collect())
            })
            .collect()
    };
    eventually(
        "the page load's metrics in rum.vitals_raw",
        Duration::from_secs(30),
        async || {
            let rows = rows_by_metric(clickhouse.query(&query));
            expected.iter().all(|m| rows.contains_key(*m)).then_some(())
        },
    )
    .await;
    // Time for a duplicate (a second beacon from the second flush event) to arrive, if there were one.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rows = rows_by_metric(clickhouse.query(&query));
    eprintln!("rum.vitals_raw: {rows:?}");
    let metrics: Vec<&str> = rows.keys().map(String::as_str).collect();
    assert!(
        expected.iter().all(|m| metrics.contains(m)),
        "expected {expected:?}, stored {metrics:?}"
    );
    for (metric, fields) in &rows {
        let [count, route, stored_device, nav_type, _value, sample_rate] = fields.as_slice() else {
            panic!("unexpected row {fields:?}");
        };
        assert_eq!(count, "1", "{metric}: exactly one row for the page load");
        assert_eq!(route, "product-id-reviews", "{metric}");
        assert_eq!(stored_device, &device, "{metric}");
        assert_eq!(nav_type, "navigate", "{metric}");
        assert_eq!(sample_rate, "1", "{metric}");
    }
    let cls: f64 = rows["CLS"][4].parse().unwrap();
    assert!(cls > 0.0, "CLS {cls} > 0 after the forced layout shift");
    if let Some(inp) = rows.get("INP") {
        let inp: f64 = inp[4].parse().unwrap();
        assert!(inp >= 100.0, "INP {inp} ms reflects the 150 ms handler");
    }

    // The per-minute rollup counted the same samples.
    let rollup = clickhouse.query(&format!(
        "SELECT metric, countMerge(samples) FROM rum.vitals_1m \
         WHERE site = '{SITE}' AND route = 'product-id-reviews' GROUP BY metric ORDER BY metric FORMAT TSV"
    ));
    let rollup: Vec<String> = rollup.lines().map(String::from).collect();
    let want: Vec<String> = rows.keys().map(|m| format!("{m}\t1")).collect();
    assert_eq!(rollup, want, "vitals_1m has one sample per metric");

    pipeline.stop();
}
