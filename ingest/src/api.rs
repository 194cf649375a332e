//! The HTTP surface: the beacon endpoint, `/healthz`, `/readyz`, `/metrics`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use rum_schemas::beacon::RequestContext;
use rum_schemas::{parse_beacon, Device};

use crate::{IngestConfig, IngestError, IngestMetrics, KafkaPublisher};

/// The beacon endpoint's path (a contract).
pub const BEACON_PATH: &str = "/api/v1/observability/web-vitals";

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The Kafka producer.
    pub publisher: Arc<KafkaPublisher>,
    /// The metrics.
    pub metrics: Arc<IngestMetrics>,
    max_body_bytes: usize,
    retry_after_secs: u32,
}

impl AppState {
    /// Builds the state from the config.
    pub fn new(
        config: &IngestConfig,
        publisher: Arc<KafkaPublisher>,
        metrics: Arc<IngestMetrics>,
    ) -> Self {
        Self {
            publisher,
            metrics,
            max_body_bytes: config.max_body_bytes,
            retry_after_secs: config.retry_after_secs,
        }
    }
}

/// The ingest's routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route(BEACON_PATH, post(post_beacon))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn post_beacon(
    State(state): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    state.metrics.beacons_received.inc();
    let response = match accept(&state, &uri, &headers, body).await {
        Ok(()) => {
            state.metrics.beacons_accepted.inc();
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => {
            state
                .metrics
                .beacons_rejected
                .with_label_values(&[e.reason()])
                .inc();
            if matches!(e, IngestError::Publish(..)) {
                state.metrics.kafka_produce_errors.inc();
                tracing::warn!(error = %e, "beacon not published");
            }
            e.into_response()
        }
    };
    state
        .metrics
        .request_duration
        .observe(started.elapsed().as_secs_f64());
    response
}

async fn accept(
    state: &AppState,
    uri: &Uri,
    headers: &HeaderMap,
    body: Body,
) -> Result<(), IngestError> {
    if !is_beacon_content_type(
        headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
    ) {
        return Err(IngestError::UnsupportedMediaType);
    }
    let query: Query<HashMap<String, String>> =
        Query::try_from_uri(uri).map_err(|_| IngestError::InvalidQuery)?;
    let body = read_body(body, state.max_body_bytes).await?;
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let ctx = RequestContext {
        query_site: query.get("site").map(String::as_str),
        header_device: Device::from_headers(header("sec-ch-ua-mobile"), header("user-agent")),
        received_at_ms: unix_millis(),
    };
    let validated = parse_beacon(&body)?.validate(&ctx)?;
    for reason in &validated.dropped {
        state
            .metrics
            .metrics_dropped
            .with_label_values(&[reason.reason()])
            .inc();
    }
    let message = validated.message;
    state
        .publisher
        .publish(&message.key(), &message.encode())
        .await
        .map_err(|e| IngestError::Publish(e, state.retry_after_secs))?;
    for m in &message.metrics {
        state
            .metrics
            .metrics_accepted
            .with_label_values(&[m.name.as_str()])
            .inc();
    }
    Ok(())
}

/// `text/plain` is what `navigator.sendBeacon` sends for a string; `application/json` is what `fetch` sends.
fn is_beacon_content_type(content_type: Option<&str>) -> bool {
    let Some(content_type) = content_type else {
        return false;
    };
    let essence = content_type.split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case("text/plain") || essence.eq_ignore_ascii_case("application/json")
}

async fn read_body(body: Body, limit: usize) -> Result<axum::body::Bytes, IngestError> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            Err(IngestError::BodyTooLarge(limit))
        }
        Err(e) => Err(IngestError::BodyRead(e.to_string())),
    }
}

fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

async fn readyz(State(state): State<AppState>) -> Response {
    let publisher = state.publisher.clone();
    let ready = tokio::task::spawn_blocking(move || publisher.is_ready(Duration::from_secs(2)))
        .await
        .unwrap_or(false);
    if ready {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "kafka unreachable\n").into_response()
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    state
        .metrics
        .producer_queue_depth
        .set(i64::from(state.publisher.queue_depth()));
    (
        [(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)],
        state.metrics.encode(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_beacon_content_types_only() {
        assert!(is_beacon_content_type(Some("text/plain;charset=UTF-8")));
        assert!(is_beacon_content_type(Some("application/json")));
        assert!(is_beacon_content_type(Some(
            "Application/JSON; charset=utf-8"
        )));
        assert!(!is_beacon_content_type(Some(
            "application/x-www-form-urlencoded"
        )));
        assert!(!is_beacon_content_type(Some("text/plainx")));
        assert!(!is_beacon_content_type(None));
    }
}
