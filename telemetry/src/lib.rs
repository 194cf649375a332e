//! What every `rum` process exposes the same way: its registry as Prometheus text on `/metrics`,
//! and `/healthz` answering while the process is alive.

use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus::Registry;

/// The text exposition of every metric in `registry`.
pub fn encode(registry: &Registry) -> String {
    prometheus::TextEncoder::new()
        .encode_to_string(&registry.gather())
        .unwrap_or_else(|e| format!("# encoding failed: {e}\n"))
}

/// A `/metrics` answer for `registry`.
pub fn metrics_response(registry: &Registry) -> Response {
    (
        [(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)],
        encode(registry),
    )
        .into_response()
}

/// `/metrics` for `registry` and `/healthz`.
pub fn router(registry: Registry) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/metrics",
            get(move || std::future::ready(metrics_response(&registry))),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_registered_metrics() {
        let registry = Registry::new();
        let counter = prometheus::IntCounter::new("rum_test_total", "A test counter.").unwrap();
        registry.register(Box::new(counter.clone())).unwrap();
        counter.inc_by(3);
        assert!(encode(&registry).contains("rum_test_total 3"));
    }
}
