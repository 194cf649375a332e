//! What every `rum` process exposes the same way: its registry as Prometheus text on `/metrics`,
//! and `/healthz` answering while the process is alive.

use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus::Registry;

mod throttle;
pub use throttle::LogThrottle;

/// An error and its causes on one line, each cause once (an error's message often holds its
/// source's already): `clickhouse: network error: client error (Connect): invalid peer certificate:
/// UnknownIssuer`, where the error's own message stops at `(Connect)`.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut line = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = cause.source();
    }
    line
}

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

    #[test]
    fn an_error_chain_names_each_cause_once() {
        #[derive(Debug)]
        struct Layer(&'static str, Option<Box<Layer>>);
        impl std::fmt::Display for Layer {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.0)
            }
        }
        impl std::error::Error for Layer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                self.1.as_deref().map(|l| l as _)
            }
        }
        let tls = Layer("invalid peer certificate: UnknownIssuer", None);
        let connect = Layer("client error (Connect)", Some(Box::new(tls)));
        let network = Layer(
            "network error: client error (Connect)",
            Some(Box::new(connect)),
        );
        assert_eq!(
            error_chain(&network),
            "network error: client error (Connect): invalid peer certificate: UnknownIssuer"
        );
    }
}
