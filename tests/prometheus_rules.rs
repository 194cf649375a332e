//! Every Prometheus rule file of `alerts/prometheus/` loaded into a real Prometheus (Debian's 2.42) that scrapes
//! the stack's own processes — Apache Kafka, ClickHouse, `rum ingest`, `rum consume`, `rum alerts` — after beacons
//! carrying several vitals for one site, route and device went through it: every rule must evaluate with health
//! `ok`. `promtool test rules` runs the rules over series written by hand; this runs them over the series the
//! processes really export, where `WebVitalsBeaconsStopped` once failed ("vector cannot contain metrics with the
//! same labelset") and so could never fire. It also checks that every `rum_*` metric a rule file names (in an
//! expression or a summary) is one the processes export, so a misspelt name cannot pass as an empty, healthy rule.
//! A rule's `offset 1d` half (yesterday's volume of `WebVitalsBeaconsStopped`) reads nothing in a fresh Prometheus, so
//! it is healthy whatever it holds: every rule's expression is also run with every `offset <duration>` removed, as
//! an instant query, and must succeed over the same series.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{eventually, exposition, metric_sum, Pipeline, RumProcess};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rum_testkit::{alert_rule_files, Alertmanager, Prometheus, PrometheusOptions};
use serde_json::Value;

/// The vitals' histograms, as `rum consume` exports them.
const VITAL_COUNTS: [&str; 5] = [
    "rum_web_vitals_lcp_seconds_count",
    "rum_web_vitals_inp_seconds_count",
    "rum_web_vitals_cls_count",
    "rum_web_vitals_fcp_seconds_count",
    "rum_web_vitals_ttfb_seconds_count",
];

/// The old `WebVitalsBeaconsStopped` selector under increase(): a canary that the series of this test are the ones
/// that broke it (several vitals of one site, route and device). It must be reported `err`; and the same selector
/// only in an `offset 1d` half (healthy in a fresh Prometheus) must fail once its offset is removed.
const CANARY_RULES: &str = r#"groups:
  - name: canary
    rules:
      - alert: CanaryNameRegexUnderIncrease
        expr: |
          sum by (site) (increase({__name__=~"rum_web_vitals_(lcp|inp|cls|fcp|ttfb)(_seconds)?_count"}[30m])) > 0
      - alert: CanaryNameRegexUnderIncreaseOffset
        expr: |
          sum by (site) (increase({__name__=~"rum_web_vitals_(lcp|inp|cls|fcp|ttfb)(_seconds)?_count"}[30m] offset 1d)) > 0
          unless on (site)
          sum by (site) (increase(rum_web_vitals_lcp_seconds_count[30m])) > 0
"#;

/// Never evaluated yet, in Prometheus' rules API.
const NEVER: &str = "0001-01-01T00:00:00Z";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rule_file_evaluates_healthy_over_the_stacks_own_series() {
    let pipeline = Pipeline::start(&[]).await;
    let alertmanager = Alertmanager::start("http://127.0.0.1:9/unused");
    let alerts_port = rum_testkit::free_port().to_string();
    let mut alerts_env: Vec<(&str, &str)> = pipeline
        .env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    alerts_env.extend([
        ("RUM_ALERTS_PORT", alerts_port.as_str()),
        ("RUM_ALERTS_INTERVAL_SECS", "1"),
        ("RUM_ALERTS_ALERTMANAGER_URL", alertmanager.url.as_str()),
    ]);
    let _alerts = RumProcess::spawn(&["alerts"], &alerts_env);
    let alerts_metrics = format!("http://127.0.0.1:{alerts_port}/metrics");

    // Three page loads of one site, route and device, each with all five vitals, and one of another site.
    for (n, (site, route, device)) in [
        ("shop", "/product/1", "mobile"),
        ("shop", "/product/2", "mobile"),
        ("shop", "/product/3", "mobile"),
        ("blog", "/", "desktop"),
    ]
    .into_iter()
    .enumerate()
    {
        let body = beacon(n, site, route, device);
        assert!(
            pipeline
                .post_until_accepted(&body, Duration::from_secs(30))
                .await,
            "the ingest accepts {body}"
        );
    }
    // Series that exist only after their first event: a rejected beacon, a dead-lettered message.
    assert_eq!(pipeline.post("text/plain", "", "{not json").await, 400);
    let producer: FutureProducer = pipeline.kafka.client_config().create().expect("a producer");
    let poison = FutureRecord::<[u8], [u8]>::to(rum_testkit::stack::beacons_topic().0)
        .key(b"poison")
        .payload(b"{not a beacon");
    producer
        .send(poison, Duration::from_secs(30))
        .await
        .map_err(|(e, _)| e)
        .expect("the poison message is produced");
    eventually(
        "the consumer to export every vital of the 4 beacons",
        Duration::from_secs(60),
        async || {
            let text = exposition(&pipeline.consumer_metrics).await;
            VITAL_COUNTS
                .iter()
                .all(|name| metric_sum(&text, name) >= 4.0)
                .then_some(())
        },
    )
    .await;
    eventually(
        "rum alerts to have evaluated",
        Duration::from_secs(60),
        async || {
            let text = exposition(&alerts_metrics).await;
            (metric_sum(&text, "rum_alerts_evaluations_total") >= 1.0).then_some(())
        },
    )
    .await;

    let canary = CanaryFile::write();
    let mut rule_files = alert_rule_files();
    assert!(
        rule_files.len() >= 2,
        "alert_rules.yml and pipeline_rules.yml at least: {rule_files:?}"
    );
    rule_files.push(canary.path.clone());
    let target = |url: &str| {
        let rest = url.strip_prefix("http://").unwrap_or(url);
        rest.split('/').next().unwrap_or(rest).to_string()
    };
    let jobs = [
        ("rum-ingest", target(&pipeline.base)),
        ("rum-consume", target(&pipeline.consumer_metrics)),
        ("rum-alerts", target(&alerts_metrics)),
    ];
    let prometheus = Prometheus::start(&PrometheusOptions {
        scrape_jobs: jobs
            .iter()
            .map(|(job, target)| (job.to_string(), vec![target.clone()]))
            .collect(),
        rule_files: rule_files.clone(),
        alertmanager: Some(target(&alertmanager.url)),
        ..PrometheusOptions::default()
    });

    // Every target up, and at least two scrapes of each vital's series (increase() needs two samples).
    wait_for_scrapes(&prometheus, &jobs.map(|(job, _)| job)).await;

    // Every rule evaluated after that point: its lastEvaluation changed (or was set for the first time).
    let before = rules(&prometheus);
    let evaluated = eventually(
        "every rule to be evaluated again after the series were scraped twice",
        Duration::from_secs(60),
        async || {
            let now = rules(&prometheus);
            let all_again = now.len() == before.len()
                && now.iter().zip(&before).all(|(rule, old)| {
                    rule.last_evaluation != NEVER && rule.last_evaluation != old.last_evaluation
                });
            all_again.then_some(now)
        },
    )
    .await;

    wait_for_metric_names(&prometheus, &rule_files[..rule_files.len() - 1]).await;

    // Every file was loaded with all its rules.
    for file in &rule_files {
        let loaded = evaluated
            .iter()
            .filter(|r| Path::new(&r.file) == file.as_path())
            .count();
        assert_eq!(
            loaded,
            rules_in_file(file),
            "rules of {} loaded by Prometheus (config {})",
            file.display(),
            prometheus.config_path().display()
        );
    }

    // The canary shows these series are the ones that broke the old rule.
    let canary_rule = evaluated
        .iter()
        .find(|r| r.name == "CanaryNameRegexUnderIncrease")
        .expect("the canary rule is loaded");
    assert_eq!(canary_rule.health, "err", "{canary_rule:?}");
    assert!(
        canary_rule.last_error.contains("same labelset"),
        "{canary_rule:?}"
    );

    // The offset canary is healthy as a rule (yesterday is empty) and fails without its offset.
    let offset_canary = evaluated
        .iter()
        .find(|r| r.name == "CanaryNameRegexUnderIncreaseOffset")
        .expect("the offset canary rule is loaded");
    assert_eq!(offset_canary.health, "ok", "{offset_canary:?}");
    let refused = without_offsets_fails(&prometheus, &offset_canary.query)
        .expect("the offset canary fails without its offset");
    assert!(refused.contains("same labelset"), "{refused}");

    // Every rule's expression with its offsets removed evaluates over today's series.
    let failing_without_offsets: Vec<String> = evaluated
        .iter()
        .filter(|r| r.file != canary.path.display().to_string())
        .filter_map(|r| {
            let error = without_offsets_fails(&prometheus, &r.query)?;
            Some(format!("{} ({}): {error}", r.name, r.file))
        })
        .collect();
    assert!(
        failing_without_offsets.is_empty(),
        "rules whose expression, offsets removed, Prometheus cannot evaluate over the stack's series:\n{}",
        failing_without_offsets.join("\n")
    );

    let failing: Vec<String> = evaluated
        .iter()
        .filter(|r| r.file != canary.path.display().to_string() && r.health != "ok")
        .map(|r| {
            format!(
                "{} (group {}, {}): health {}, lastError: {}",
                r.name, r.group, r.file, r.health, r.last_error
            )
        })
        .collect();
    assert!(
        failing.is_empty(),
        "rules Prometheus cannot evaluate over the stack's series (log {}):\n{}",
        prometheus.log_path().display(),
        failing.join("\n")
    );
    let names: Vec<&str> = evaluated.iter().map(|r| r.name.as_str()).collect();
    for expected in ["WebVitalsBeaconsStopped", "RumIngestErrorRatioHigh"] {
        assert!(names.contains(&expected), "{expected} in {names:?}");
    }
}

/// A beacon of page load `n`: the five vitals, with ids unique to the page load.
fn beacon(n: usize, site: &str, route: &str, device: &str) -> String {
    format!(
        r#"{{"site":"{site}","route":"{route}","device":"{device}","nav_type":"navigate","sample_rate":1,"metrics":[
            {{"name":"LCP","value":2310.5,"id":"v5-{n}-lcp"}},{{"name":"INP","value":180,"id":"v5-{n}-inp"}},
            {{"name":"CLS","value":0.05,"id":"v5-{n}-cls"}},{{"name":"FCP","value":1200,"id":"v5-{n}-fcp"}},
            {{"name":"TTFB","value":300,"id":"v5-{n}-ttfb"}}]}}"#
    )
}

/// One rule of `GET /api/v1/rules`.
#[derive(Debug)]
struct RuleState {
    file: String,
    group: String,
    name: String,
    health: String,
    last_error: String,
    last_evaluation: String,
    query: String,
}

/// `expr` with every `offset <duration>` removed (`x[30m] offset 1d` reads today's `x[30m]`).
fn without_offsets(expr: &str) -> String {
    let mut out = String::with_capacity(expr.len());
    let mut rest = expr;
    while let Some(at) = rest.find("offset") {
        let before_ok = rest[..at]
            .chars()
            .next_back()
            .is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '_'));
        let after = rest[at + "offset".len()..].trim_start();
        let duration_len = after
            .find(|c: char| !c.is_ascii_alphanumeric())
            .unwrap_or(after.len());
        let is_offset = before_ok
            && after.len() < rest.len() - at - "offset".len()
            && after[..duration_len].starts_with(|c: char| c.is_ascii_digit());
        if is_offset {
            out.push_str(&rest[..at]);
            rest = &after[duration_len..];
        } else {
            out.push_str(&rest[..at + "offset".len()]);
            rest = &rest[at + "offset".len()..];
        }
    }
    out.push_str(rest);
    out
}

/// Runs `expr` with its offsets removed as an instant query: `None` when Prometheus answers success without an error,
/// else what it answered.
fn without_offsets_fails(prometheus: &Prometheus, expr: &str) -> Option<String> {
    let promql = without_offsets(expr);
    match prometheus.query_json(&promql) {
        Ok(body) => {
            let json: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            let ok = json["status"] == "success" && json.get("error").is_none();
            (!ok).then(|| format!("{promql}: {body}"))
        }
        Err(e) => Some(format!("{promql}: {e}")),
    }
}

#[test]
fn offsets_are_removed_and_nothing_else() {
    assert_eq!(
        without_offsets(
            "increase(x[30m] offset 1d) or increase(y[5m]  offset 1h30m) or rate(offset_total[5m])"
        ),
        "increase(x[30m] ) or increase(y[5m]  ) or rate(offset_total[5m])"
    );
}

/// Every rule Prometheus holds, in the API's order.
fn rules(prometheus: &Prometheus) -> Vec<RuleState> {
    let body = prometheus.rules_json();
    let json: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    let text = |v: &Value, key: &str| v[key].as_str().unwrap_or_default().to_string();
    let mut out = Vec::new();
    for group in json["data"]["groups"].as_array().into_iter().flatten() {
        for rule in group["rules"].as_array().into_iter().flatten() {
            out.push(RuleState {
                file: text(group, "file"),
                group: text(group, "name"),
                name: text(rule, "name"),
                health: text(rule, "health"),
                last_error: text(rule, "lastError"),
                last_evaluation: text(rule, "lastEvaluation"),
                query: text(rule, "query"),
            });
        }
    }
    out
}

/// The rules a file declares: its `- alert:` and `- record:` lines.
fn rules_in_file(file: &Path) -> usize {
    let text =
        std::fs::read_to_string(file).unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
    text.lines()
        .map(str::trim_start)
        .filter(|l| l.starts_with("- alert:") || l.starts_with("- record:"))
        .count()
}

/// The `rum_*` names a file mentions: in expressions, and in summaries that tell on-call what to look at.
fn metric_names_in(file: &Path) -> BTreeSet<String> {
    let text =
        std::fs::read_to_string(file).unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
    let mut names = BTreeSet::new();
    let mut rest = text.as_str();
    while let Some(start) = rest.find("rum_") {
        let tail = &rest[start..];
        let len = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..len].to_string());
        rest = &tail[len..];
    }
    names
}

/// Waits until Prometheus knows every `rum_*` name the rule files mention (a histogram by its `_count`); panics
/// with the missing ones.
async fn wait_for_metric_names(prometheus: &Prometheus, rule_files: &[PathBuf]) {
    let wanted: BTreeSet<String> = rule_files.iter().flat_map(|f| metric_names_in(f)).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let known: BTreeSet<String> = match prometheus.get("/api/v1/label/__name__/values") {
            Ok((200, body)) => serde_json::from_str::<Value>(&body)
                .ok()
                .and_then(|json| json["data"].as_array().cloned())
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
            _ => BTreeSet::new(),
        };
        let missing: Vec<&String> = wanted
            .iter()
            .filter(|name| !known.contains(*name) && !known.contains(&format!("{name}_count")))
            .collect();
        if missing.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "metrics named in {rule_files:?} that no process exports (misspelt, or gone): {missing:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Waits until `up` is 1 for every job and Prometheus holds two samples or more of each vital's series.
async fn wait_for_scrapes(prometheus: &Prometheus, jobs: &[&str]) {
    let query = |promql: &str| -> Option<Value> {
        let body = prometheus.query_json(promql).ok()?;
        let json: Value = serde_json::from_str(&body).ok()?;
        Some(json["data"]["result"].clone())
    };
    let started = Instant::now();
    eventually(
        "every target up and two scrapes of every vital",
        Duration::from_secs(60),
        async || {
            let up = query("up")?;
            let all_up = jobs.iter().all(|job| {
                up.as_array()
                    .into_iter()
                    .flatten()
                    .any(|s| s["metric"]["job"] == *job && s["value"][1] == "1")
            });
            // A range selector as an instant query: the raw samples, names kept.
            let samples = query(r#"{__name__=~"rum_web_vitals_.+_count"}[1m]"#)?;
            let scraped_twice = VITAL_COUNTS.iter().all(|name| {
                samples.as_array().into_iter().flatten().any(|s| {
                    s["metric"]["__name__"] == *name
                        && s["metric"]["site"] == "shop"
                        && s["values"].as_array().is_some_and(|v| v.len() >= 2)
                })
            });
            (all_up && scraped_twice).then_some(())
        },
    )
    .await;
    eprintln!(
        "prometheus_rules: targets up and scraped twice after {:?}",
        started.elapsed()
    );
}

/// The canary rule file, removed on drop.
struct CanaryFile {
    path: PathBuf,
}

impl CanaryFile {
    fn write() -> CanaryFile {
        let dir = rum_testkit::test_dir();
        std::fs::create_dir_all(&dir).expect("create the test dir");
        let path = dir.join(format!("canary-rules-{}.yml", std::process::id()));
        std::fs::write(&path, CANARY_RULES).expect("write the canary rule file");
        CanaryFile { path }
    }
}

impl Drop for CanaryFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
