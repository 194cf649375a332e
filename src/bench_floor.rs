//! `rum bench-floor` (hidden): the machine's floor for the ingest benchmark.
//!
//! A bare axum handler on the beacon path that reads the whole body and answers 204, with the
//! same runtime as `rum ingest`. `bench/run` drives it with the same load generator, so the
//! ratio ingest/floor shows what validation, normalization and Kafka publishing cost.
//!
//! With `--kafka BROKERS`, the consumer's floor instead: an rdkafka consumer with the settings of
//! `rum consume` (`[kafka]` of the config included: TLS, SASL, librdkafka options) that reads
//! `--messages N` from the topic, discards them and prints one JSON line.

use anyhow::Context;
use axum::body::Bytes;
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use rum_consumers::ConsumerConfig;
use tokio::sync::watch;

use crate::config::Config;

/// Options of `rum bench-floor`.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Listen address.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Listen port.
    #[arg(long, default_value_t = 8090)]
    port: u16,
    /// Read and discard from this Kafka instead of serving HTTP.
    #[arg(long)]
    kafka: Option<String>,
    /// The topic to read (with `--kafka`).
    #[arg(long, default_value = "rum.beacons.v1")]
    topic: String,
    /// Stop after this many messages (with `--kafka`).
    #[arg(long, default_value_t = 1000)]
    messages: u64,
    /// Also stop once no message has come for this many seconds (with `--kafka`; 0: wait for
    /// `--messages`). With a large `--messages`, this counts what the topic holds.
    #[arg(long, default_value_t = 0.0)]
    idle_secs: f64,
    /// `fetch.wait.max.ms` (with `--kafka`; default: `consumer.fetch_wait_max_ms` of the config).
    #[arg(long)]
    fetch_wait_max_ms: Option<u64>,
}

async fn accept(body: Bytes) -> StatusCode {
    std::hint::black_box(body.len());
    StatusCode::NO_CONTENT
}

/// Reads `args.messages` messages and discards them; prints rate and timing as one JSON line.
fn read_and_discard(config: &Config, args: &Args) -> anyhow::Result<()> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rum_kafka::LoggingContext;
    use std::time::{Duration, Instant};
    let started = Instant::now();
    let consumer_config = ConsumerConfig {
        group_id: format!("rum-bench-floor-{}", std::process::id()),
        fetch_wait_max_ms: args
            .fetch_wait_max_ms
            .unwrap_or(config.consumer.fetch_wait_max_ms),
        ..config.consumer.clone()
    };
    let consumer: BaseConsumer<LoggingContext> =
        rum_consumers::consumer_config(&config.kafka, &consumer_config)?
            .create_with_context(LoggingContext::new("bench floor consumer"))
            .context("cannot create the Kafka consumer")?;
    consumer
        .subscribe(&[&args.topic])
        .context("cannot subscribe")?;
    let (mut count, mut bytes, mut first) = (0u64, 0u64, None);
    let idle = (args.idle_secs > 0.0).then(|| Duration::from_secs_f64(args.idle_secs));
    let mut last = Instant::now();
    // Before the first message the group is still joining: allow it 30 s more.
    let quiet_too_long = |idle: Duration, last: Instant, seen: bool| {
        last.elapsed()
            >= if seen {
                idle
            } else {
                idle + Duration::from_secs(30)
            }
    };
    while count < args.messages
        && !idle.is_some_and(|idle| quiet_too_long(idle, last, first.is_some()))
    {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                last = Instant::now();
                first.get_or_insert(last);
                count += 1;
                bytes += rdkafka::Message::payload(&m).map_or(0, |p| p.len() as u64);
            }
            Some(Err(e)) => tracing::warn!(error = %e, "kafka error"),
            None => {}
        }
    }
    let secs = first.map_or(0.0, |f| last.duration_since(f).as_secs_f64());
    println!(
        "{}",
        serde_json::json!({
            "messages": count,
            "bytes": bytes,
            "seconds_from_first_message": secs,
            "seconds_from_start": started.elapsed().as_secs_f64(),
            "rate": count as f64 / secs.max(1e-9),
        })
    );
    Ok(())
}

/// Serves until SIGINT or SIGTERM (or, with `--kafka`, reads and discards).
pub async fn run(
    args: Args,
    mut config: Config,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    if let Some(brokers) = args.kafka.clone() {
        config.kafka.brokers = brokers;
        return tokio::task::spawn_blocking(move || read_and_discard(&config, &args))
            .await
            .context("the floor consumer panicked")?;
    }
    let app = Router::new().route(rum_ingest::BEACON_PATH, post(accept));
    // The same backlog as the ingest's, so both see the same connection bursts.
    let listener = rum_ingest::listen(&format!("{}:{}", args.host, args.port))
        .await
        .with_context(|| format!("cannot listen on {}:{}", args.host, args.port))?;
    tracing::info!(addr = %listener.local_addr()?, "bench floor listening");
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await
        .context("bench floor server failed")
}
