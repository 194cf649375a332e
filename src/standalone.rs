//! `rum standalone`: ingest and consumer in one process over an embedded Kafka.
//!
//! The broker is librdkafka's own mock cluster (in memory, on a loopback port): nothing to install,
//! nothing survives a restart. It exists so a newcomer sees the pipeline work in seconds; production
//! runs `rum ingest` and `rum consume` against a real Kafka.

use anyhow::Context;
use rdkafka::mocking::MockCluster;
use rum_schemas::kafka::SecurityProtocol;
use tokio::sync::watch;

use crate::config::Config;
use crate::stopped;

/// Partitions of the embedded beacons topic, as a real deployment would have.
const PARTITIONS: i32 = 4;

/// Runs the embedded broker, migrations, ingest and consumer until `stop` turns true.
pub async fn run(mut config: Config, stop: watch::Receiver<bool>) -> anyhow::Result<()> {
    if config.kafka.security_protocol != SecurityProtocol::Plaintext {
        anyhow::bail!(
            "kafka.security_protocol is {}: rum standalone's embedded Kafka speaks plaintext only (a secured Kafka is for rum ingest and rum consume)",
            config.kafka.security_protocol
        );
    }
    let cluster = MockCluster::new(1).context("cannot start the embedded Kafka")?;
    cluster
        .create_topic(&config.kafka.topic, PARTITIONS, 1)
        .context("cannot create the beacons topic")?;
    cluster
        .create_topic(&config.kafka.dlq_topic, 1, 1)
        .context("cannot create the dead-letter topic")?;
    config.kafka.brokers = cluster.bootstrap_servers();
    // The embedded broker starts empty every time: its offsets begin again at 0.
    let started_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    config.consumer.topic_incarnation = Some(format!("embedded-{started_ms}"));
    tracing::info!(brokers = %config.kafka.brokers, "embedded Kafka started (in memory; production uses a real Kafka)");

    let report = rum_clickhouse::migrate(&config.clickhouse)
        .await
        .with_context(|| format!("cannot migrate ClickHouse at {}", config.clickhouse.url))?;
    tracing::info!(applied = ?report.applied, "migrations done");

    let ingest = rum_ingest::Ingest::bind(&config.ingest, &config.kafka).await?;
    // One stop for both halves: the signal, or the consumer ending on its own (an error).
    let (stop_all, stop_rx) = watch::channel(false);
    let consumer = {
        let (consumer, kafka, clickhouse) = (
            config.consumer.clone(),
            config.kafka.clone(),
            config.clickhouse.clone(),
        );
        let (stop_rx, stop_all) = (stop_rx.clone(), stop_all.clone());
        tokio::spawn(async move {
            let result = rum_consumers::run(&consumer, &kafka, &clickhouse, stopped(stop_rx)).await;
            let _ = stop_all.send(true);
            result
        })
    };
    tokio::spawn(async move {
        stopped(stop).await;
        let _ = stop_all.send(true);
    });
    let ingest_result = ingest.run(stopped(stop_rx)).await;
    let consumer_result = consumer.await.context("consumer task panicked")?;
    // The cluster must outlive both clients, and the ingest producer's event task holds its producer
    // until the runtime stops, after this returns: the cluster stays until the process exits (else
    // the producer logs "all brokers are down" on every clean stop).
    std::mem::forget(cluster);
    ingest_result?;
    consumer_result?;
    Ok(())
}
