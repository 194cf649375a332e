//! `rum consume`: the Kafka consumer group that moves beacons into ClickHouse.
//!
//! One loop per process: fetch a batch, decode each message (poison goes to the dead-letter topic
//! with its reason, once), insert the rows into ClickHouse in one INSERT (retrying with backoff
//! while ClickHouse is down, with the partitions paused so memory stays bounded and lag shows), and
//! only then commit the offsets. Each beacon is stored exactly once: the argument is in
//! [`ownership`](crate::ownership) — batches are atomic, each partition resumes from the offsets
//! stored in ClickHouse, and a member writes only the partitions it owns.
//!
//! The consumer also exports the vitals as Prometheus histograms on Google's thresholds, and
//! enforces retention (whole partitions dropped hourly).

mod config;
pub mod dead_letter;
pub mod final_values;
mod histograms;
pub mod lag;
mod metrics;
pub mod ownership;
mod pipeline;
mod retention;
mod series_budget;
mod side_client;
pub mod write;

use std::future::Future;
use std::sync::Arc;

pub use config::ConsumerConfig;
pub use dead_letter::{
    check_dlq_topic, dlq_producer_properties, DeadLetterError, DeadLetters, DlqTopic,
};
pub use histograms::worst_case_bytes_per_label_set;
pub use lag::GroupLag;
pub use metrics::{max_exposition_bytes, ConsumerMetrics};
pub use pipeline::{consumer_config, consumer_properties, Consumer, ConsumerError};
pub use retention::run_retention;
use rum_clickhouse::ClickHouseConfig;
use rum_schemas::kafka::KafkaConfig;

/// Runs the consumer and its `/metrics` server until `shutdown` completes.
/// The batch in hand is written and committed before returning.
pub async fn run(
    config: &ConsumerConfig,
    kafka: &KafkaConfig,
    clickhouse: &ClickHouseConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ConsumerError> {
    let metrics = Arc::new(ConsumerMetrics::new(
        config.max_series,
        config.series_idle(),
    )?);
    let addr = format!("{}:{}", config.host, config.port);
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(|source| ConsumerError::Bind { addr, source })?;
    let consumer = Consumer::new(config, kafka, clickhouse, metrics.clone())?;
    let retention_metrics = metrics.clone();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let mut http_stop = stop_rx.clone();
    let http = tokio::spawn(async move {
        let app = rum_telemetry::router(metrics.registry.clone());
        let stopped = async move {
            let _ = http_stop.wait_for(|s| *s).await;
        };
        axum::serve(listener, app)
            .with_graceful_shutdown(stopped)
            .await
    });
    let retention = tokio::spawn(retention::enforce_retention(
        clickhouse.clone(),
        config.retention_statement_timeout(),
        retention_metrics,
        stop_rx.clone(),
    ));
    // Its own task: a member stuck in its write path still reports the group's lag.
    let lag = tokio::spawn(consumer.lag().clone().run(stop_rx.clone()));
    let result = consumer.run(stop_rx).await;
    let _ = lag.await;
    let _ = http.await;
    retention.abort();
    result
}
