//! The hostile-client suite: every attack on the public ingest that issue 15 names, played against
//! the real `rum` binary (and a real Kafka behind it), each with the defence it meets and the metric
//! that counts it. One module an attack surface; test names start with the attack.

#[path = "../common/mod.rs"]
mod common;

mod cardinality;
mod connections;
mod input;

use std::time::Duration;

use common::{wait_until_ready, RumProcess};
use rum_testkit::{free_port, Kafka};

/// A `rum ingest` on a free port in front of `kafka`, ready; rate limiting off unless `env` says.
pub struct Ingest {
    pub process: RumProcess,
    pub port: u16,
    pub base: String,
}

impl Ingest {
    pub async fn start(kafka: &Kafka, env: &[(&str, &str)]) -> Ingest {
        let port = free_port();
        let port_text = port.to_string();
        let mut all = vec![
            ("RUM_KAFKA_BROKERS", kafka.brokers.as_str()),
            ("RUM_INGEST_PORT", port_text.as_str()),
            ("RUM_INGEST_RATE_LIMIT_PER_SECOND", "0"),
        ];
        all.extend_from_slice(env);
        let process = RumProcess::spawn(&["ingest"], &all);
        let base = format!("http://127.0.0.1:{port}");
        wait_until_ready(&reqwest::Client::new(), &base).await;
        Ingest {
            process,
            port,
            base,
        }
    }

    /// The beacon endpoint's URL with `query` (`?site=...`, or "").
    pub fn endpoint(&self, query: &str) -> String {
        format!("{}{}{query}", self.base, rum_ingest::BEACON_PATH)
    }

    /// The value of one sample line of the ingest's `/metrics`, e.g.
    /// `rum_ingest_timeouts_total{kind="head"}`; 0 when absent.
    pub async fn metric(&self, sample: &str) -> f64 {
        metric_value(
            &common::exposition(&format!("{}/metrics", self.base)).await,
            sample,
        )
    }

    /// Posts one beacon body as `text/plain` with a 10 s bound; the status.
    pub async fn post(&self, query: &str, body: &str) -> u16 {
        reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap()
            .post(self.endpoint(query))
            .header("content-type", "text/plain")
            .body(body.to_string())
            .send()
            .await
            .map_or(0, |r| r.status().as_u16())
    }
}

/// The value of the sample line `sample` (name and labels exactly as exposed) in an exposition.
pub fn metric_value(exposition: &str, sample: &str) -> f64 {
    exposition
        .lines()
        .find_map(|line| line.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// A beacon of one LCP metric with the id `id`.
pub fn beacon(id: &str) -> String {
    format!(
        r#"{{"site":"shop","route":"/","metrics":[{{"name":"LCP","value":1200,"id":"{id}"}}]}}"#
    )
}
