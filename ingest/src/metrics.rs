//! Every metric the ingest exports, registered in one place.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use rum_schemas::MetricName;

/// The ingest's Prometheus metrics, in their own registry.
pub struct IngestMetrics {
    /// The registry `/metrics` encodes.
    pub registry: Registry,
    /// Every request to the beacon path.
    pub beacons_received: IntCounter,
    /// Beacons acknowledged by Kafka (answered 204).
    pub beacons_accepted: IntCounter,
    /// Beacons rejected, by reason.
    pub beacons_rejected: IntCounterVec,
    /// Metrics published, by metric name.
    pub metrics_accepted: IntCounterVec,
    /// The children of `metrics_accepted`, one per metric in `MetricName::ALL` order (a label
    /// lookup hashes and locks; these are plain atomics on the hot path).
    metrics_accepted_by_name: [IntCounter; MetricName::ALL.len()],
    /// Metrics dropped from otherwise valid beacons, by reason.
    pub metrics_dropped: IntCounterVec,
    /// Messages Kafka did not acknowledge.
    pub kafka_produce_errors: IntCounter,
    /// Messages in the producer's queue, sampled at scrape time.
    pub producer_queue_depth: IntGauge,
    /// Beacon requests being processed, sampled at scrape time (bounded by `ingest.max_in_flight`).
    pub requests_in_flight: IntGauge,
    /// Beacon requests waiting for a slot, sampled at scrape time (bounded by `ingest.max_queued`).
    pub requests_queued: IntGauge,
    /// Time from request to answer on the beacon path.
    pub request_duration: Histogram,
    /// Time from handing a beacon to the producer to Kafka's acknowledgement (acknowledged only).
    pub kafka_ack_duration: Histogram,
    /// Client addresses the rate limiter remembers.
    pub ratelimit_clients: IntGauge,
    /// Times the rate limiter's table was over its bound and was reset.
    pub ratelimit_resets: IntCounter,
    /// Beacon requests from a trusted proxy that could not name the client (`unknown` or an
    /// unparsable `X-Forwarded-For` hop).
    pub clients_unidentified: IntCounter,
    /// Readiness checks made (each a metadata request to Kafka), by result (`ready`, `unreachable`).
    pub readiness_checks: IntCounterVec,
    /// Client connections open now.
    pub connections: IntGauge,
    /// Client connections accepted (and served).
    pub connections_accepted: IntCounter,
    /// Client connections closed at once, by reason (`limit`, `client_limit`, `h2c`).
    pub connections_refused: IntCounterVec,
    /// `accept` failures of the listener (out of file descriptors, ...).
    pub accept_errors: IntCounter,
    /// Connections closed and requests answered 408 for taking too long, by kind (`head`, `body`,
    /// `idle`, `drain`).
    pub timeouts: IntCounterVec,
    /// Connections that ended in a protocol or I/O error, by kind (`parse`, `head_too_large`, `io`).
    pub connection_errors: IntCounterVec,
    /// Beacons published under route `other` instead of their own, by reason (`route_limit`,
    /// `unconfirmed`).
    pub routes_folded: IntCounterVec,
    /// Sites with a route table, sampled at scrape time.
    pub sites: IntGauge,
    /// Routes with their own label over every site, sampled at scrape time.
    pub routes: IntGauge,
    /// New routes waiting for `ingest.route_min_clients` clients, sampled at scrape time.
    pub route_candidates: IntGauge,
    /// Attributions dropped from kept metrics, by reason (`invalid_attribution`).
    pub attributions_dropped: IntCounterVec,
    /// Beacons without a route whose route was taken from the `Referer`.
    pub routes_from_referer: IntCounter,
    /// `Referer` headers not used for a beacon without a route, by reason ([`REFERER_IGNORED_REASONS`]).
    pub referers_ignored: IntCounterVec,
    /// Attribution values published as `other`, by field and reason
    /// ([`crate::attribution_cap::FIELDS`], [`crate::attribution_cap::Fold::LABELS`]).
    pub attribution_values_folded: IntCounterVec,
    /// (site, route) pairs with a table of attribution values, sampled at scrape time.
    pub attribution_routes: IntGauge,
}

/// The `result` labels of `rum_ingest_readiness_checks_total`.
pub const READINESS_RESULTS: [&str; 2] = ["ready", "unreachable"];
/// The `reason` labels of `rum_ingest_connections_refused_total`.
pub const REFUSED_REASONS: [&str; 3] = ["limit", "client_limit", "h2c"];
/// The `kind` labels of `rum_ingest_timeouts_total`.
pub const TIMEOUT_KINDS: [&str; 4] = ["head", "body", "idle", "drain"];
/// The `kind` labels of `rum_ingest_connection_errors_total`.
pub const CONNECTION_ERROR_KINDS: [&str; 3] = ["parse", "head_too_large", "io"];
/// The `reason` labels of `rum_ingest_referers_ignored_total`, in [`crate::referer::Ignored`] order.
pub const REFERER_IGNORED_REASONS: [&str; 5] = [
    "absent",
    "too_long",
    "unparsable",
    "not_http",
    "cross_origin",
];

impl IngestMetrics {
    /// Builds and registers every metric; a duplicate name is an error, not a panic.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let beacons_received = IntCounter::new(
            "rum_beacons_received_total",
            "Requests to the beacon endpoint.",
        )?;
        let beacons_accepted = IntCounter::new(
            "rum_beacons_accepted_total",
            "Beacons acknowledged by Kafka and answered 204.",
        )?;
        let beacons_rejected = IntCounterVec::new(
            Opts::new("rum_beacons_rejected_total", "Beacons rejected, by reason."),
            &["reason"],
        )?;
        let metrics_accepted = IntCounterVec::new(
            Opts::new(
                "rum_metrics_accepted_total",
                "Metrics published to Kafka, by metric.",
            ),
            &["metric"],
        )?;
        let metrics_dropped = IntCounterVec::new(
            Opts::new(
                "rum_metrics_dropped_total",
                "Invalid metrics dropped from otherwise valid beacons, by reason.",
            ),
            &["reason"],
        )?;
        let kafka_produce_errors = IntCounter::new(
            "rum_kafka_produce_errors_total",
            "Messages Kafka did not acknowledge (queue full, timeout, refusal).",
        )?;
        let producer_queue_depth = IntGauge::new(
            "rum_kafka_producer_queue_depth",
            "Messages enqueued in the producer and not yet acknowledged.",
        )?;
        let requests_in_flight = IntGauge::new(
            "rum_ingest_requests_in_flight",
            "Beacon requests being processed (at most ingest.max_in_flight).",
        )?;
        let requests_queued = IntGauge::new(
            "rum_ingest_requests_queued",
            "Beacon requests waiting for a slot (at most ingest.max_queued, each up to \
             ingest.queue_timeout_ms; beyond either 503 overloaded).",
        )?;
        // Latency buckets around the producer's linger (5 ms by default) and the 10 ms objective.
        let latency_buckets = vec![
            0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0,
        ];
        let request_duration = Histogram::with_opts(
            HistogramOpts::new(
                "rum_ingest_request_duration_seconds",
                "Time from request to answer on the beacon endpoint.",
            )
            .buckets(latency_buckets.clone()),
        )?;
        let kafka_ack_duration = Histogram::with_opts(
            HistogramOpts::new(
                "rum_kafka_ack_duration_seconds",
                "Time from handing a beacon to the producer to Kafka's acknowledgement (linger \
                 included; acknowledged beacons only).",
            )
            .buckets(latency_buckets),
        )?;
        let ratelimit_clients = IntGauge::new(
            "rum_ratelimit_clients",
            "Client addresses the rate limiter remembers.",
        )?;
        let ratelimit_resets = IntCounter::new(
            "rum_ratelimit_resets_total",
            "Times the rate limiter's table exceeded ingest.rate_limit_max_clients and was reset.",
        )?;
        let clients_unidentified = IntCounter::new(
            "rum_ingest_clients_unidentified_total",
            "Beacon requests from a trusted proxy whose X-Forwarded-For had `unknown` or an \
             unparsable hop where the client's address would be: limited by the address left of \
             it under the proxy's network budget.",
        )?;
        let readiness_checks = IntCounterVec::new(
            Opts::new(
                "rum_ingest_readiness_checks_total",
                "Readiness checks made (a metadata request to Kafka each, at most one a second \
                 however often /readyz is asked), by result.",
            ),
            &["result"],
        )?;
        for result in READINESS_RESULTS {
            readiness_checks.with_label_values(&[result]);
        }
        let connections = IntGauge::new(
            "rum_ingest_connections",
            "Client connections open now (at most ingest.max_connections).",
        )?;
        let connections_accepted = IntCounter::new(
            "rum_ingest_connections_accepted_total",
            "Client connections accepted.",
        )?;
        let connections_refused = IntCounterVec::new(
            Opts::new(
                "rum_ingest_connections_refused_total",
                "Client connections closed at once: over ingest.max_connections (limit) or \
                 ingest.max_connections_per_client from one address (client_limit), never served; \
                 or accepted and then found speaking HTTP/2 cleartext (h2c, answered GOAWAY \
                 HTTP_1_1_REQUIRED; also in rum_ingest_connections_accepted_total).",
            ),
            &["reason"],
        )?;
        let accept_errors = IntCounter::new(
            "rum_ingest_accept_errors_total",
            "Times accepting a connection failed (out of file descriptors, ...); the listener \
             pauses 50 ms each time.",
        )?;
        let timeouts = IntCounterVec::new(
            Opts::new(
                "rum_ingest_timeouts_total",
                "Clients too slow: a request head over ingest.header_timeout_ms (head), a body over \
                 ingest.body_timeout_ms (body, answered 408), a kept-alive connection idle over \
                 ingest.idle_timeout_ms (idle), a connection still open at the end of \
                 ingest.drain_timeout_ms on shutdown (drain).",
            ),
            &["kind"],
        )?;
        let connection_errors = IntCounterVec::new(
            Opts::new(
                "rum_ingest_connection_errors_total",
                "Connections that ended in an error: a malformed request (parse), a head over \
                 ingest.max_head_bytes (head_too_large), a socket error (io).",
            ),
            &["kind"],
        )?;
        let routes_folded = IntCounterVec::new(
            Opts::new(
                "rum_ingest_routes_folded_total",
                "Beacons published under route \"other\": the site has ingest.max_routes_per_site \
                 routes (route_limit), or the route was not yet sent by ingest.route_min_clients \
                 distinct clients (unconfirmed).",
            ),
            &["reason"],
        )?;
        let sites = IntGauge::new(
            "rum_ingest_sites",
            "Sites the ingest took beacons for (listed ones, and at most ingest.max_sites others).",
        )?;
        let routes = IntGauge::new(
            "rum_ingest_routes",
            "Routes with their own label, over every site (at most ingest.max_routes_per_site each).",
        )?;
        let route_candidates = IntGauge::new(
            "rum_ingest_route_candidates",
            "New routes waiting for ingest.route_min_clients distinct clients, over every site (at \
             most ingest.max_route_candidates_per_site each).",
        )?;
        for reason in crate::routes::Fold::LABELS {
            routes_folded.with_label_values(&[reason]);
        }
        let attributions_dropped = IntCounterVec::new(
            Opts::new(
                "rum_attributions_dropped_total",
                "Attributions dropped from metrics that were kept (their value published without \
                 attribution), by reason: a field of the metric's attribution is invalid \
                 (invalid_attribution).",
            ),
            &["reason"],
        )?;
        attributions_dropped.with_label_values(&["invalid_attribution"]);
        let routes_from_referer = IntCounter::new(
            "rum_ingest_routes_from_referer_total",
            "Beacons without a route (a bare web-vitals Metric) published with the route of the \
             page's path in the Referer header.",
        )?;
        let referers_ignored = IntCounterVec::new(
            Opts::new(
                "rum_ingest_referers_ignored_total",
                "Beacons without a route whose Referer could not give one (each then refused as \
                 missing_route), by reason: no Referer (absent), longer than 4096 bytes (too_long), \
                 not a URL (unparsable), not http or https (not_http), a cross-origin request, \
                 whose Referer is the origin alone under browsers' default policy (cross_origin).",
            ),
            &["reason"],
        )?;
        for reason in REFERER_IGNORED_REASONS {
            referers_ignored.with_label_values(&[reason]);
        }
        let attribution_values_folded = IntCounterVec::new(
            Opts::new(
                "rum_ingest_attribution_values_folded_total",
                "Attribution values published as \"other\", by field and reason: the (site, \
                 route) has ingest.max_attribution_values_per_route other values of the field \
                 (value_limit), or ingest.max_attribution_routes (site, route) pairs have tables \
                 (route_limit).",
            ),
            &["field", "reason"],
        )?;
        for field in crate::attribution_cap::FIELDS {
            for reason in crate::attribution_cap::Fold::LABELS {
                attribution_values_folded.with_label_values(&[field, reason]);
            }
        }
        let attribution_routes = IntGauge::new(
            "rum_ingest_attribution_routes",
            "(site, route) pairs holding a table of attribution values (at most \
             ingest.max_attribution_routes).",
        )?;
        for reason in REFUSED_REASONS {
            connections_refused.with_label_values(&[reason]);
        }
        for kind in TIMEOUT_KINDS {
            timeouts.with_label_values(&[kind]);
        }
        for kind in CONNECTION_ERROR_KINDS {
            connection_errors.with_label_values(&[kind]);
        }
        let metrics_accepted_by_name =
            MetricName::ALL.map(|m| metrics_accepted.with_label_values(&[m.as_str()]));
        registry.register(Box::new(beacons_received.clone()))?;
        registry.register(Box::new(beacons_accepted.clone()))?;
        registry.register(Box::new(beacons_rejected.clone()))?;
        registry.register(Box::new(metrics_accepted.clone()))?;
        registry.register(Box::new(metrics_dropped.clone()))?;
        registry.register(Box::new(kafka_produce_errors.clone()))?;
        registry.register(Box::new(producer_queue_depth.clone()))?;
        registry.register(Box::new(requests_in_flight.clone()))?;
        registry.register(Box::new(requests_queued.clone()))?;
        registry.register(Box::new(request_duration.clone()))?;
        registry.register(Box::new(kafka_ack_duration.clone()))?;
        registry.register(Box::new(ratelimit_clients.clone()))?;
        registry.register(Box::new(ratelimit_resets.clone()))?;
        registry.register(Box::new(clients_unidentified.clone()))?;
        registry.register(Box::new(readiness_checks.clone()))?;
        registry.register(Box::new(connections.clone()))?;
        registry.register(Box::new(connections_accepted.clone()))?;
        registry.register(Box::new(connections_refused.clone()))?;
        registry.register(Box::new(timeouts.clone()))?;
        registry.register(Box::new(connection_errors.clone()))?;
        registry.register(Box::new(accept_errors.clone()))?;
        registry.register(Box::new(routes_folded.clone()))?;
        registry.register(Box::new(sites.clone()))?;
        registry.register(Box::new(routes.clone()))?;
        registry.register(Box::new(route_candidates.clone()))?;
        registry.register(Box::new(attributions_dropped.clone()))?;
        registry.register(Box::new(routes_from_referer.clone()))?;
        registry.register(Box::new(referers_ignored.clone()))?;
        registry.register(Box::new(attribution_values_folded.clone()))?;
        registry.register(Box::new(attribution_routes.clone()))?;
        Ok(Self {
            registry,
            beacons_received,
            beacons_accepted,
            beacons_rejected,
            metrics_accepted,
            metrics_accepted_by_name,
            metrics_dropped,
            kafka_produce_errors,
            producer_queue_depth,
            requests_in_flight,
            requests_queued,
            request_duration,
            kafka_ack_duration,
            ratelimit_clients,
            ratelimit_resets,
            clients_unidentified,
            readiness_checks,
            connections,
            connections_accepted,
            connections_refused,
            timeouts,
            connection_errors,
            accept_errors,
            routes_folded,
            sites,
            routes,
            route_candidates,
            attributions_dropped,
            routes_from_referer,
            referers_ignored,
            attribution_values_folded,
            attribution_routes,
        })
    }

    /// Counts one published metric.
    pub fn metric_accepted(&self, name: MetricName) {
        self.metrics_accepted_by_name[name as usize].inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_the_full_registry_with_rum_names() {
        let m = IngestMetrics::new().expect("no duplicate metric names");
        m.beacons_rejected
            .with_label_values(&["malformed_json"])
            .inc();
        m.metrics_accepted.with_label_values(&["LCP"]).inc();
        m.metric_accepted(MetricName::LCP);
        m.metric_accepted(MetricName::FID);
        assert_eq!(m.metrics_accepted.with_label_values(&["LCP"]).get(), 2);
        for name in MetricName::ALL {
            let before = m.metrics_accepted.with_label_values(&[name.as_str()]).get();
            m.metric_accepted(name);
            let after = m.metrics_accepted.with_label_values(&[name.as_str()]).get();
            assert_eq!(after, before + 1, "{name:?} counts under its own label");
        }
        m.metrics_dropped
            .with_label_values(&["negative_value"])
            .inc();
        m.request_duration.observe(0.001);
        m.kafka_ack_duration.observe(0.001);
        let families = m.registry.gather();
        assert_eq!(families.len(), 30);
        assert!(families.iter().all(|f| f.name().starts_with("rum_")));
    }
}
