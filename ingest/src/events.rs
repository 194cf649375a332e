//! What happens to connections and requests, each event counted and logged in one place (as
//! Vector's internal events do): a reader of the code finds every counter's meaning and every log
//! line of an event together, and an event cannot be counted without its line or the reverse.
//!
//! Events a client can cause on every request are logged at `debug` (a hostile client must not
//! fill the log) or through a [`LogThrottle`] (one line an interval, with the count).

use std::sync::Arc;
use std::time::Duration;

use rum_telemetry::LogThrottle;

use crate::metrics::{CONNECTION_ERROR_KINDS, REFUSED_REASONS, TIMEOUT_KINDS};
use crate::{IngestError, IngestMetrics};

/// Why a connection was closed at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// `ingest.max_connections` were open.
    Limit,
    /// `ingest.max_connections_per_client` were open from the same address (IPv6: /64).
    ClientLimit,
    /// The client spoke HTTP/2 cleartext (answered GOAWAY `HTTP_1_1_REQUIRED`).
    H2c,
}

/// Which of a client's time bounds ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timeout {
    /// The request head did not arrive within `ingest.header_timeout_ms`.
    Head,
    /// The body did not arrive within `ingest.body_timeout_ms`.
    Body,
    /// A kept-alive connection sent no request within `ingest.idle_timeout_ms`.
    Idle,
    /// The connection was still open when the shutdown's `ingest.drain_timeout_ms` ended.
    Drain,
}

/// How a connection ended in an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionError {
    /// A malformed request (answered 400 by the HTTP layer, or closed).
    Parse,
    /// A request head over `ingest.max_head_bytes` (answered 431).
    HeadTooLarge,
    /// A socket error (reset by the client, ...).
    Io,
}

impl Refused {
    fn label(self) -> &'static str {
        REFUSED_REASONS[self as usize]
    }
}

impl Timeout {
    fn label(self) -> &'static str {
        TIMEOUT_KINDS[self as usize]
    }
}

impl ConnectionError {
    fn label(self) -> &'static str {
        CONNECTION_ERROR_KINDS[self as usize]
    }
}

/// The ingest's events: each method counts its event and logs it.
pub struct Events {
    metrics: Arc<IngestMetrics>,
    publish_failed: LogThrottle,
    accept_failed: LogThrottle,
    refused_limit: LogThrottle,
}

impl Events {
    /// Events counted in `metrics`, warnings at most once every 10 s each.
    pub fn new(metrics: Arc<IngestMetrics>) -> Self {
        let every = Duration::from_secs(10);
        Self {
            metrics,
            publish_failed: LogThrottle::new(every),
            accept_failed: LogThrottle::new(every),
            refused_limit: LogThrottle::new(every),
        }
    }

    /// The metrics the events are counted in.
    pub fn metrics(&self) -> &IngestMetrics {
        &self.metrics
    }

    /// A connection was accepted and is served.
    pub fn connection_opened(&self) {
        self.metrics.connections_accepted.inc();
        self.metrics.connections.inc();
    }

    /// A served connection ended, however.
    pub fn connection_closed(&self) {
        self.metrics.connections.dec();
    }

    /// A connection was closed at once.
    pub fn connection_refused(&self, reason: Refused) {
        self.metrics
            .connections_refused
            .with_label_values(&[reason.label()])
            .inc();
        match reason {
            Refused::Limit => {
                if let Some(n) = self.refused_limit.admit() {
                    tracing::warn!(
                        refused = n,
                        "connections refused: ingest.max_connections are open (counted in \
                         rum_ingest_connections_refused_total{{reason=\"limit\"}})"
                    );
                }
            }
            // One address over its share: its own doing, not worth a line each.
            Refused::ClientLimit => tracing::debug!(
                "connection refused: ingest.max_connections_per_client from one address"
            ),
            Refused::H2c => tracing::debug!("h2c connection refused with GOAWAY HTTP_1_1_REQUIRED"),
        }
    }

    /// A client's time bound ran out: its connection is closed (or its request answered 408).
    pub fn timed_out(&self, kind: Timeout) {
        self.metrics
            .timeouts
            .with_label_values(&[kind.label()])
            .inc();
        tracing::debug!(kind = kind.label(), "client too slow: connection closed");
    }

    /// A connection ended in an error.
    pub fn connection_failed(&self, kind: ConnectionError, error: &dyn std::error::Error) {
        self.metrics
            .connection_errors
            .with_label_values(&[kind.label()])
            .inc();
        tracing::debug!(kind = kind.label(), %error, "connection error");
    }

    /// `accept` failed (out of file descriptors, ...): the listener pauses briefly.
    pub fn accept_failed(&self, error: &std::io::Error) {
        self.metrics.accept_errors.inc();
        if let Some(n) = self.accept_failed.admit() {
            tracing::warn!(%error, failures = n, "cannot accept connections; pausing 50 ms each time");
        }
    }

    /// A beacon is published under route `other` instead of its own (a client chooses routes:
    /// not logged).
    pub fn route_folded(&self, fold: crate::routes::Fold) {
        self.metrics
            .routes_folded
            .with_label_values(&[fold.label()])
            .inc();
    }

    /// An attribution value is published as `other` (a client chooses them: not logged).
    pub fn attribution_folded(&self, field: &'static str, why: crate::attribution_cap::Fold) {
        self.metrics
            .attribution_values_folded
            .with_label_values(&[field, why.label()])
            .inc();
    }

    /// A metric's invalid attribution was dropped, the metric kept (a client's doing: not logged).
    pub fn attribution_dropped(&self, why: rum_schemas::beacon::AttributionRejection) {
        self.metrics
            .attributions_dropped
            .with_label_values(&[why.reason()])
            .inc();
    }

    /// A beacon without a route got the route of its page's `Referer`.
    pub fn route_from_referer(&self) {
        self.metrics.routes_from_referer.inc();
    }

    /// A beacon without a route was refused (`missing_route`), and its `Referer` could not give
    /// one, for this reason (the header is never logged: it may hold personal data).
    pub fn referer_ignored(&self, why: crate::referer::Ignored) {
        self.metrics
            .referers_ignored
            .with_label_values(&[why.label()])
            .inc();
    }

    /// A trusted proxy could not name a request's client (a client may cause it on every
    /// request: not logged).
    pub fn client_unidentified(&self) {
        self.metrics.clients_unidentified.inc();
    }

    /// `/readyz`'s state was checked against Kafka.
    pub fn readiness_checked(&self, ready: bool) {
        let result = crate::metrics::READINESS_RESULTS[usize::from(!ready)];
        self.metrics
            .readiness_checks
            .with_label_values(&[result])
            .inc();
    }

    /// A beacon request was rejected: counted by reason; Kafka's refusals also in
    /// `rum_kafka_produce_errors_total` with one warning an interval.
    pub fn beacon_rejected(&self, error: &IngestError) {
        self.metrics
            .beacons_rejected
            .with_label_values(&[error.reason()])
            .inc();
        match error {
            IngestError::Publish(..) => {
                self.metrics.kafka_produce_errors.inc();
                if let Some(n) = self.publish_failed.admit() {
                    tracing::warn!(error = %error, failed = n, "beacons not published (answered 503)");
                }
            }
            IngestError::BodyTimeout(_) => self.timed_out(Timeout::Body),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PublishError;

    #[test]
    fn counts_each_event_under_its_own_label() {
        let events = Events::new(Arc::new(IngestMetrics::new().unwrap()));
        let m = events.metrics();
        events.connection_opened();
        events.connection_opened();
        events.connection_closed();
        assert_eq!((m.connections.get(), m.connections_accepted.get()), (1, 2));
        events.connection_refused(Refused::H2c);
        events.timed_out(Timeout::Idle);
        events.beacon_rejected(&IngestError::BodyTimeout(10));
        events.beacon_rejected(&IngestError::Publish(PublishError::QueueFull, 5));
        let count = |v: &prometheus::IntCounterVec, l: &str| v.with_label_values(&[l]).get();
        assert_eq!(count(&m.connections_refused, "h2c"), 1);
        assert_eq!(count(&m.connections_refused, "limit"), 0);
        assert_eq!(count(&m.timeouts, "idle"), 1);
        assert_eq!(count(&m.timeouts, "body"), 1);
        assert_eq!(count(&m.beacons_rejected, "body_timeout"), 1);
        assert_eq!(count(&m.beacons_rejected, "producer_queue_full"), 1);
        assert_eq!(m.kafka_produce_errors.get(), 1);
    }
}
