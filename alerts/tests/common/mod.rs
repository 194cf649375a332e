//! Helpers of the evaluator's tests: rows for a real ClickHouse, a webhook receiver for a real
//! Alertmanager, a fault-injecting proxy in front of it, and bounded waits.

#![allow(dead_code)] // Each test binary uses a part.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use rum_clickhouse::{insert_raw_rows, migrate, ClickHouseConfig, VitalsRawRow};
use rum_schemas::MetricName;
use rum_testkit::{free_port, ClickHouseServer};

pub const STEP: u32 = 300;
pub const MINUTE: u32 = 60;
pub const DAY: u32 = 86_400;
/// A fixed past time, a multiple of the step.
pub const T0: u32 = 1_790_000_000 / STEP * STEP;

pub async fn database(server: &ClickHouseServer) -> ClickHouseConfig {
    let config = ClickHouseConfig {
        url: server.url.clone(),
        ..Default::default()
    };
    migrate(&config).await.expect("migrations apply");
    config
}

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// `per_minute` samples of `value` in every minute of `[from, to)`, each with a metric id of its own.
#[allow(clippy::too_many_arguments)]
pub fn samples(
    site: &str,
    route: &str,
    device: &str,
    metric: &str,
    value: f64,
    from: u32,
    to: u32,
    per_minute: u32,
) -> Vec<VitalsRawRow> {
    let mut rows = Vec::new();
    for minute in (from..to).step_by(MINUTE as usize) {
        for i in 0..per_minute {
            rows.push(VitalsRawRow {
                // Unique across calls: vitals_raw (a ReplacingMergeTree since 007) keeps one row of a
                // metric id in a place and second.
                metric_id: format!(
                    "v5-{minute}-{i}-{}",
                    NEXT_ID.fetch_add(1, Ordering::Relaxed)
                ),
                kafka_offset: u64::from(minute) * 100 + u64::from(i),
                ..VitalsRawRow::measured(
                    site,
                    route,
                    device,
                    MetricName::parse(metric).expect("a metric name"),
                    value,
                    minute + i % MINUTE,
                )
            });
        }
    }
    rows
}

pub async fn insert(config: &ClickHouseConfig, rows: Vec<VitalsRawRow>) {
    insert_raw_rows(&config.client(), &rows)
        .await
        .expect("insert vitals_raw");
}

/// Reads one HTTP/1.1 request (head and `Content-Length` body) from `stream`.
fn read_request(stream: &mut TcpStream) -> Option<(String, Vec<u8>)> {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut data = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let n = stream.read(&mut buf).ok()?;
        if n == 0 {
            return None;
        }
        data.extend_from_slice(&buf[..n]);
        let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&data[..end]).into_owned();
        let length: usize = head
            .to_ascii_lowercase()
            .lines()
            .find_map(|l| l.strip_prefix("content-length:").map(str::to_string))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        if data.len() >= end + 4 + length {
            return Some((head, data[end + 4..end + 4 + length].to_vec()));
        }
    }
}

/// One alert of a webhook notification: its status and labels.
#[derive(Debug, Clone, PartialEq)]
pub struct Notified {
    pub status: String,
    pub labels: BTreeMap<String, String>,
}

impl Notified {
    pub fn label(&self, key: &str) -> &str {
        self.labels.get(key).map_or("", String::as_str)
    }
}

/// A webhook receiver: records the JSON body of every POST.
pub struct Webhook {
    pub url: String,
    received: Arc<Mutex<Vec<serde_json::Value>>>,
}

impl Webhook {
    pub fn start() -> Webhook {
        let port = free_port();
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind the webhook");
        let received = Arc::new(Mutex::new(Vec::new()));
        let sink = received.clone();
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let body = read_request(&mut stream).map(|(_, body)| body);
                let _ = stream.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
                if let Some(json) = body.and_then(|b| serde_json::from_slice(&b).ok()) {
                    sink.lock().unwrap().push(json);
                }
            }
        });
        Webhook {
            url: format!("http://127.0.0.1:{port}/hook"),
            received,
        }
    }

    /// Every alert of every notification so far.
    pub fn notified(&self) -> Vec<Notified> {
        let received = self.received.lock().unwrap();
        let mut out = Vec::new();
        for notification in received.iter() {
            for alert in notification["alerts"].as_array().into_iter().flatten() {
                let labels = alert["labels"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                    .collect();
                out.push(Notified {
                    status: alert["status"].as_str().unwrap_or("").to_string(),
                    labels,
                });
            }
        }
        out
    }

    /// The `(status, alertname, route, device)` of every alert of every notification so far.
    pub fn alerts(&self) -> Vec<(String, String, String, String)> {
        self.notified()
            .into_iter()
            .map(|n| {
                (
                    n.status.clone(),
                    n.label("alertname").to_string(),
                    n.label("route").to_string(),
                    n.label("device").to_string(),
                )
            })
            .collect()
    }

    pub fn wait_for(&self, what: &str, done: impl Fn(&[(String, String, String, String)]) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if done(&self.alerts()) {
                return;
            }
            thread::sleep(Duration::from_millis(100));
        }
        panic!("webhook: no {what} within 30 s; got {:?}", self.alerts());
    }

    /// Waits (at most 60 s) until an alert named `alertname` was notified with `status`.
    pub fn wait_for_status(&self, alertname: &str, status: &str) {
        wait_until(
            &format!("webhook: {alertname} {status}"),
            Duration::from_secs(60),
            || {
                self.notified()
                    .iter()
                    .any(|n| n.label("alertname") == alertname && n.status == status)
            },
        );
    }
}

/// Polls `done` every 100 ms until it holds; panics naming `what` after `limit`.
pub fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if done() {
            return;
        }
        thread::sleep(Duration::from_millis(100));
    }
    panic!("{what}: not within {limit:?}");
}

/// An HTTP proxy in front of `upstream` (host:port) that answers 503 to every request whose body
/// contains `poison`, and forwards the others (one request a connection), each after `delay`.
pub struct FaultProxy {
    pub url: String,
    pub refused: Arc<AtomicU64>,
    pub forwarded: Arc<AtomicU64>,
}

impl FaultProxy {
    pub fn start(upstream: u16, poison: &str) -> FaultProxy {
        Self::start_delayed(upstream, poison, Duration::ZERO)
    }

    /// Like [`start`](Self::start), holding every forwarded request `delay` first (a slow link or
    /// a busy Alertmanager).
    pub fn start_delayed(upstream: u16, poison: &str, delay: Duration) -> FaultProxy {
        let port = free_port();
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind the proxy");
        let refused = Arc::new(AtomicU64::new(0));
        let forwarded = Arc::new(AtomicU64::new(0));
        let (r, f, poison) = (
            refused.clone(),
            forwarded.clone(),
            poison.as_bytes().to_vec(),
        );
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut client) = stream else { continue };
                let (r, f, poison) = (r.clone(), f.clone(), poison.clone());
                thread::spawn(move || {
                    let Some((head, body)) = read_request(&mut client) else {
                        return;
                    };
                    if body.windows(poison.len()).any(|w| w == poison) {
                        r.fetch_add(1, Ordering::SeqCst);
                        let _ = client.write_all(
                            b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 8\r\nConnection: close\r\n\r\ninjected",
                        );
                        return;
                    }
                    let mut request: Vec<u8> = head
                        .lines()
                        .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
                        .flat_map(|l| format!("{l}\r\n").into_bytes())
                        .collect();
                    request.extend_from_slice(b"Connection: close\r\n\r\n");
                    request.extend_from_slice(&body);
                    thread::sleep(delay);
                    let Ok(mut server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                        return;
                    };
                    let _ = server.set_read_timeout(Some(Duration::from_secs(10)));
                    let mut answer = Vec::new();
                    if server.write_all(&request).is_ok() && server.read_to_end(&mut answer).is_ok()
                    {
                        f.fetch_add(1, Ordering::SeqCst);
                        let _ = client.write_all(&answer);
                    }
                });
            }
        });
        FaultProxy {
            url: format!("http://127.0.0.1:{port}"),
            refused,
            forwarded,
        }
    }
}

/// `GET http://127.0.0.1:port/metrics` (10 s timeout).
pub async fn metrics_text(port: u16) -> String {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    client
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("the /metrics body")
}

/// The value of an unlabelled metric line (`name value`), 0 when absent.
pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0)
}
