//! An Alertmanager (Debian's `prometheus-alertmanager` 0.25) on a free port.

use std::fs;
use std::path::PathBuf;
use std::process::Child;
use std::time::Duration;

use crate::http::http;
use crate::process::{
    find_binary, free_port, fresh_dir, launch, remove_dir_unless_panicking, start_with_retry,
    terminate, Launch, STOP_TIMEOUT,
};

const QUERY_TIMEOUT: Duration = Duration::from_secs(30);

/// An Alertmanager on a free port, gossip off, with one webhook receiver (`send_resolved: true`, `group_wait: 1s`,
/// `group_interval: 1s`) that posts to the URL given to [`start`](Self::start).
pub struct Alertmanager {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl Alertmanager {
    /// The binary: `RUM_LOCAL_ALERTMANAGER_BIN`, else `/usr/bin/prometheus-alertmanager`, else on PATH.
    pub fn bin() -> PathBuf {
        find_binary(
            "RUM_LOCAL_ALERTMANAGER_BIN",
            &[PathBuf::from("/usr/bin/prometheus-alertmanager")],
            "prometheus-alertmanager",
            "run ./deploy/local/install (apt package prometheus-alertmanager)",
        )
    }

    /// Start with a fresh data dir on a free port, notifying `webhook_url`, and wait until `/-/ready` answers.
    pub fn start(webhook_url: &str) -> Alertmanager {
        let bin = Self::bin();
        let dir = fresh_dir("alertmanager");
        let log = dir.join("alertmanager.log");
        let config = format!(
            "route:\n  receiver: webhook\n  group_by: ['...']\n  group_wait: 1s\n  group_interval: 1s\n  repeat_interval: 1h\n\
             receivers:\n  - name: webhook\n    webhook_configs:\n      - url: '{webhook_url}'\n        send_resolved: true\n"
        );
        fs::write(dir.join("alertmanager.yml"), config).expect("write alertmanager.yml");
        start_with_retry("alertmanager", || {
            let port = free_port();
            let args = vec![
                format!("--config.file={}", dir.join("alertmanager.yml").display()),
                format!("--storage.path={}", dir.join("data").display()),
                format!("--web.listen-address=127.0.0.1:{port}"),
                "--cluster.listen-address=".to_string(),
            ];
            let ready = || {
                matches!(
                    http(port, "GET", "/-/ready", b"", Duration::from_secs(2)),
                    Ok((200, _))
                )
            };
            let spec = Launch {
                what: "alertmanager",
                program: &bin,
                args: &args,
                cwd: &dir,
                log: &log,
                extra_logs: &[],
            };
            let child = launch(&spec, ready)?;
            Ok(Alertmanager {
                url: format!("http://127.0.0.1:{port}"),
                port,
                dir: dir.clone(),
                child: Some(child),
            })
        })
    }

    /// The alerts Alertmanager holds (`GET /api/v2/alerts`), as JSON text.
    pub fn alerts_json(&self) -> String {
        match http(self.port, "GET", "/api/v2/alerts", b"", QUERY_TIMEOUT) {
            Ok((200, body)) => String::from_utf8_lossy(&body).into_owned(),
            other => panic!("GET {}/api/v2/alerts: {other:?}", self.url),
        }
    }

    /// Its log (stdout and stderr).
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("alertmanager.log")
    }

    /// Stop it (SIGTERM, SIGKILL after 20 s) and wait. Idempotent.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child, STOP_TIMEOUT);
        }
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        self.stop();
        remove_dir_unless_panicking(&self.dir, "alertmanager");
    }
}
