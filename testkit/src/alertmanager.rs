//! An Alertmanager (Debian's `prometheus-alertmanager` 0.25) on a free port, over HTTP or HTTPS.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::http::http;
use crate::process::{
    find_binary, free_port, fresh_dir, launch, remove_dir_unless_panicking, start_with_retry,
    terminate, Launch, STOP_TIMEOUT,
};
use crate::tls::TestCa;

const QUERY_TIMEOUT: Duration = Duration::from_secs(30);

/// An Alertmanager on a free port, gossip off, with one webhook receiver (`send_resolved: true`, `group_wait: 1s`,
/// `group_interval: 1s`) that posts to the URL given to [`start`](Self::start).
pub struct Alertmanager {
    /// `http://127.0.0.1:PORT`, or `https://127.0.0.1:PORT` when started with [`start_with_tls`](Self::start_with_tls).
    pub url: String,
    pub port: u16,
    dir: PathBuf,
    /// The CA file clients trust, when it serves HTTPS.
    ca_pem: Option<PathBuf>,
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
        Self::start_inner(webhook_url, None)
    }

    /// Like [`start`](Self::start), serving HTTPS only (`--web.config.file`) with the server certificate of `ca`;
    /// readiness and [`alerts_json`](Self::alerts_json) go through `curl --cacert`.
    pub fn start_with_tls(webhook_url: &str, ca: &TestCa) -> Alertmanager {
        Self::start_inner(webhook_url, Some(ca))
    }

    fn start_inner(webhook_url: &str, tls: Option<&TestCa>) -> Alertmanager {
        let bin = Self::bin();
        let dir = fresh_dir("alertmanager");
        let log = dir.join("alertmanager.log");
        let config = format!(
            "route:\n  receiver: webhook\n  group_by: ['...']\n  group_wait: 1s\n  group_interval: 1s\n  repeat_interval: 1h\n\
             receivers:\n  - name: webhook\n    webhook_configs:\n      - url: '{webhook_url}'\n        send_resolved: true\n"
        );
        fs::write(dir.join("alertmanager.yml"), config).expect("write alertmanager.yml");
        let ca_pem = tls.map(|ca| write_web_config(&dir, ca));
        let (scheme, web_config) = match &ca_pem {
            Some(_) => (
                "https",
                vec![format!(
                    "--web.config.file={}",
                    dir.join("web.yml").display()
                )],
            ),
            None => ("http", Vec::new()),
        };
        start_with_retry("alertmanager", || {
            let port = free_port();
            let mut args = vec![
                format!("--config.file={}", dir.join("alertmanager.yml").display()),
                format!("--storage.path={}", dir.join("data").display()),
                format!("--web.listen-address=127.0.0.1:{port}"),
                "--cluster.listen-address=".to_string(),
            ];
            args.extend(web_config.iter().cloned());
            let ready = || {
                matches!(
                    get(port, ca_pem.as_deref(), "/-/ready", Duration::from_secs(2)),
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
                url: format!("{scheme}://127.0.0.1:{port}"),
                port,
                dir: dir.clone(),
                ca_pem: ca_pem.clone(),
                child: Some(child),
            })
        })
    }

    /// The alerts Alertmanager holds (`GET /api/v2/alerts`), as JSON text.
    pub fn alerts_json(&self) -> String {
        match get(
            self.port,
            self.ca_pem.as_deref(),
            "/api/v2/alerts",
            QUERY_TIMEOUT,
        ) {
            Ok((200, body)) => body,
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

/// Copies the CA's files into `dir/tls/` (Alertmanager reads the certificate again on each handshake, and the
/// [`TestCa`] may go first) and writes `dir/web.yml` serving them; returns the copied CA file.
fn write_web_config(dir: &Path, ca: &TestCa) -> PathBuf {
    let tls = dir.join("tls");
    fs::create_dir_all(&tls).expect("create the alertmanager tls dir");
    let copy = |from: PathBuf, name: &str| {
        let to = tls.join(name);
        fs::copy(&from, &to).unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
        to
    };
    let cert = copy(ca.server_cert(), "server.crt");
    let key = copy(ca.server_key(), "server.key");
    let ca_pem = copy(ca.ca_pem(), "ca.pem");
    fs::write(
        dir.join("web.yml"),
        format!(
            "tls_server_config:\n  cert_file: {}\n  key_file: {}\n",
            cert.display(),
            key.display()
        ),
    )
    .expect("write web.yml");
    ca_pem
}

/// `GET path` on 127.0.0.1:`port`: the status and body. Over HTTPS trusting `ca_pem` when given, with curl (the
/// testkit's own client speaks plain HTTP only).
fn get(
    port: u16,
    ca_pem: Option<&Path>,
    path: &str,
    timeout: Duration,
) -> Result<(u16, String), String> {
    let Some(ca_pem) = ca_pem else {
        return http(port, "GET", path, b"", timeout)
            .map(|(status, body)| (status, String::from_utf8_lossy(&body).into_owned()))
            .map_err(|e| e.to_string());
    };
    let output = Command::new("curl")
        .args(["-sS", "--max-time", &timeout.as_secs().max(1).to_string()])
        .arg("--cacert")
        .arg(ca_pem)
        .args(["--write-out", "\n%{http_code}"])
        .arg(format!("https://127.0.0.1:{port}{path}"))
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("run curl (apt package curl): {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "curl ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim_end()
        ));
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let (body, status) = text
        .rsplit_once('\n')
        .ok_or_else(|| format!("curl printed no status: {text}"))?;
    let status = status
        .parse()
        .map_err(|_| format!("curl printed no status: {text}"))?;
    Ok((status, body.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serves_https_with_the_test_ca_only() {
        let ca = TestCa::generate();
        let am = Alertmanager::start_with_tls("http://127.0.0.1:9/unused", &ca);
        assert_eq!(am.url, format!("https://127.0.0.1:{}", am.port));
        assert_eq!(am.alerts_json().trim(), "[]");

        // Another CA is not trusted, and plain HTTP gets no answer worth having.
        let other = TestCa::other();
        let err = get(am.port, Some(&other.ca_pem()), "/-/ready", QUERY_TIMEOUT).unwrap_err();
        assert!(err.contains("exit status: 60"), "{err}");
        assert!(!matches!(
            http(am.port, "GET", "/-/ready", b"", QUERY_TIMEOUT),
            Ok((200, _))
        ));
    }
}
