//! A Prometheus server (Debian's `prometheus` 2.42) on a free port, scraping given targets and evaluating given
//! rule files, with short intervals so that a test sees rules evaluated within seconds.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::Duration;

use crate::http::http;
use crate::process::{
    find_binary, free_port, fresh_dir, launch, remove_dir_unless_panicking, repo_root,
    start_with_retry, terminate, Launch, STOP_TIMEOUT,
};

const QUERY_TIMEOUT: Duration = Duration::from_secs(30);

/// What a [`Prometheus`] scrapes and evaluates.
#[derive(Debug, Clone)]
pub struct PrometheusOptions {
    /// Scrape jobs: the job name and its `host:port` targets (`/metrics` of each).
    pub scrape_jobs: Vec<(String, Vec<String>)>,
    /// Rule files (alerting and recording rules), by absolute path.
    pub rule_files: Vec<PathBuf>,
    /// The Alertmanager (`host:port`) firing alerts go to; none: alerts stay in Prometheus.
    pub alertmanager: Option<String>,
    /// The scrape interval and the rule evaluation interval (default 1 s).
    pub interval: Duration,
}

impl Default for PrometheusOptions {
    fn default() -> Self {
        Self {
            scrape_jobs: Vec::new(),
            rule_files: Vec::new(),
            alertmanager: None,
            interval: Duration::from_secs(1),
        }
    }
}

/// A Prometheus on a free port with a fresh TSDB, stopped (SIGTERM by pid) and removed on drop.
pub struct Prometheus {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl Prometheus {
    /// The binary: `RUM_LOCAL_PROMETHEUS_BIN`, else `/usr/bin/prometheus`, else on PATH.
    pub fn bin() -> PathBuf {
        find_binary(
            "RUM_LOCAL_PROMETHEUS_BIN",
            &[PathBuf::from("/usr/bin/prometheus")],
            "prometheus",
            "run ./deploy/local/install (apt package prometheus)",
        )
    }

    /// Start with the config of `options` rendered into a fresh dir, and wait until `/-/ready` answers. A rule file
    /// Prometheus cannot load stops it at start: the panic shows its log.
    pub fn start(options: &PrometheusOptions) -> Prometheus {
        let bin = Self::bin();
        let dir = fresh_dir("prometheus");
        let log = dir.join("prometheus.log");
        let config = dir.join("prometheus.yml");
        fs::write(&config, render_config(options)).expect("write prometheus.yml");
        start_with_retry("prometheus", || {
            let port = free_port();
            let args = vec![
                format!("--config.file={}", config.display()),
                format!("--storage.tsdb.path={}", dir.join("tsdb").display()),
                format!("--web.listen-address=127.0.0.1:{port}"),
            ];
            let ready = || {
                matches!(
                    http(port, "GET", "/-/ready", b"", Duration::from_secs(2)),
                    Ok((200, _))
                )
            };
            let spec = Launch {
                what: "prometheus",
                program: &bin,
                args: &args,
                cwd: &dir,
                log: &log,
                extra_logs: &[],
            };
            let child = launch(&spec, ready)?;
            Ok(Prometheus {
                url: format!("http://127.0.0.1:{port}"),
                port,
                dir: dir.clone(),
                child: Some(child),
            })
        })
    }

    /// `GET path` (with its query string, already encoded): the status and the body.
    pub fn get(&self, path: &str) -> Result<(u16, String), String> {
        http(self.port, "GET", path, b"", QUERY_TIMEOUT)
            .map(|(status, body)| (status, String::from_utf8_lossy(&body).into_owned()))
            .map_err(|e| format!("GET {}{path}: {e}", self.url))
    }

    /// The rule groups with each rule's health, last error and last evaluation (`GET /api/v1/rules`), as JSON text.
    pub fn rules_json(&self) -> String {
        match self.get("/api/v1/rules") {
            Ok((200, body)) => body,
            other => panic!("GET {}/api/v1/rules: {other:?}", self.url),
        }
    }

    /// An instant query (`GET /api/v1/query`) at the current time: the JSON answer, or the status and body of a
    /// refused query (a bad expression, an evaluation error).
    pub fn query_json(&self, promql: &str) -> Result<String, String> {
        let path = format!("/api/v1/query?query={}", url_encode(promql));
        match self.get(&path)? {
            (200, body) => Ok(body),
            (status, body) => Err(format!("HTTP {status}: {body}")),
        }
    }

    /// The rendered config.
    pub fn config_path(&self) -> PathBuf {
        self.dir.join("prometheus.yml")
    }

    /// Its log (stdout and stderr).
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("prometheus.log")
    }

    /// Stop it (SIGTERM, SIGKILL after 20 s) and wait. Idempotent.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child, STOP_TIMEOUT);
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        self.stop();
        remove_dir_unless_panicking(&self.dir, "prometheus");
    }
}

/// Every Prometheus rule file of the repository: `alerts/prometheus/*_rules.yml` (their promtool tests are
/// `*_rules_test.yml`), sorted.
pub fn alert_rule_files() -> Vec<PathBuf> {
    rule_files_in(&repo_root().join("alerts").join("prometheus"))
}

fn rule_files_in(dir: &Path) -> Vec<PathBuf> {
    let entries = fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display()));
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.ends_with("_rules.yml"))
        })
        .collect();
    files.sort();
    files
}

/// `prometheus.yml` for `options`: global intervals, the Alertmanager, the rule files and one static job a target
/// list.
fn render_config(options: &PrometheusOptions) -> String {
    let interval = format!("{}ms", options.interval.as_millis().max(1));
    let mut out = format!(
        "# Generated by rum-testkit.\nglobal:\n  scrape_interval: {interval}\n  scrape_timeout: {interval}\n  \
         evaluation_interval: {interval}\n"
    );
    if let Some(alertmanager) = &options.alertmanager {
        out.push_str(&format!(
            "alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: [{}]\n",
            yaml_quote(alertmanager)
        ));
    }
    if !options.rule_files.is_empty() {
        out.push_str("rule_files:\n");
        for file in &options.rule_files {
            out.push_str(&format!(
                "  - {}\n",
                yaml_quote(&file.display().to_string())
            ));
        }
    }
    out.push_str("scrape_configs:\n");
    if options.scrape_jobs.is_empty() {
        out.push_str("  []\n");
    }
    for (job, targets) in &options.scrape_jobs {
        let targets: Vec<String> = targets.iter().map(|t| yaml_quote(t)).collect();
        out.push_str(&format!(
            "  - job_name: {}\n    static_configs:\n      - targets: [{}]\n",
            yaml_quote(job),
            targets.join(", ")
        ));
    }
    out
}

/// A single-quoted YAML scalar.
fn yaml_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Percent-encodes everything but RFC 3986's unreserved characters (for a query string value).
fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for byte in s.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_jobs_rules_and_alertmanager() {
        let options = PrometheusOptions {
            scrape_jobs: vec![(
                "rum-ingest".into(),
                vec!["127.0.0.1:1".into(), "127.0.0.1:2".into()],
            )],
            rule_files: vec![PathBuf::from("/r/it's_rules.yml")],
            alertmanager: Some("127.0.0.1:3".into()),
            interval: Duration::from_millis(500),
        };
        let config = render_config(&options);
        assert!(config.contains("  scrape_interval: 500ms\n"), "{config}");
        assert!(
            config.contains("  evaluation_interval: 500ms\n"),
            "{config}"
        );
        assert!(config.contains("  - '/r/it''s_rules.yml'\n"), "{config}");
        assert!(
            config.contains("        - targets: ['127.0.0.1:3']\n"),
            "{config}"
        );
        assert!(
            config.contains(
                "  - job_name: 'rum-ingest'\n    static_configs:\n      - targets: ['127.0.0.1:1', '127.0.0.1:2']\n"
            ),
            "{config}"
        );
    }

    #[test]
    fn encodes_promql_for_a_query_string() {
        assert_eq!(
            url_encode(r#"sum by (site) (x{a=~"b|c"}[5m]) > 0"#),
            "sum%20by%20%28site%29%20%28x%7Ba%3D~%22b%7Cc%22%7D%5B5m%5D%29%20%3E%200"
        );
    }

    #[test]
    fn finds_the_repository_rule_files_but_not_their_tests() {
        let files = alert_rule_files();
        let names: Vec<&str> = files
            .iter()
            .filter_map(|f| f.file_name()?.to_str())
            .collect();
        assert!(names.contains(&"alert_rules.yml"), "{names:?}");
        assert!(names.iter().all(|n| n.ends_with("_rules.yml")), "{names:?}");
    }

    #[test]
    fn loads_the_rule_files_and_answers_queries() {
        let mut prometheus = Prometheus::start(&PrometheusOptions {
            rule_files: alert_rule_files(),
            ..PrometheusOptions::default()
        });
        let rules = prometheus.rules_json();
        assert!(rules.contains("WebVitalsBeaconsStopped"), "{rules}");
        let answer = prometheus.query_json("1 + 1").expect("a valid query");
        assert!(answer.contains(r#""2""#), "{answer}");
        let refused = prometheus.query_json("sum(").unwrap_err();
        assert!(refused.starts_with("HTTP 400"), "{refused}");
        prometheus.stop();
    }
}
