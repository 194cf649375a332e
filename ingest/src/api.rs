//! The HTTP surface: the beacon endpoint, `/healthz`, `/readyz`, `/metrics`, the collector bundle.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use rum_schemas::beacon::RequestContext;
use rum_schemas::browser::Browser;
use rum_schemas::{parse_beacon, BeaconError, BeaconMessage, Device};

use crate::admission::Admission;
use crate::attribution_cap::{AttributionCap, AttributionLimits};
use crate::bots::is_bot;
use crate::bundle::CollectorBundle;
use crate::client_ip::ClientIpResolver;
use crate::config::SiteConfig;
use crate::events::Events;
use crate::limit::{Budget, ClientRateLimiter, OverBudget};
use crate::routes::{Labelled, RouteCap, RouteLimits, SiteLimit};
use crate::{token, IngestConfig, IngestError, IngestMetrics, Publisher};

/// The beacon endpoint's path (a contract).
pub const BEACON_PATH: &str = "/api/v1/observability/web-vitals";

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// Where accepted beacons go.
    pub publisher: Arc<dyn Publisher>,
    /// The metrics.
    pub metrics: Arc<IngestMetrics>,
    /// Counts and logs what happens (over `metrics`).
    pub events: Arc<Events>,
    /// Whether the publisher took messages at its last check (`/readyz`).
    pub readiness: Arc<Readiness>,
    /// The per-client rate limiter, when on.
    pub limiter: Option<Arc<ClientRateLimiter>>,
    /// The slots for beacon requests being processed, and the line waiting for them.
    admission: Arc<Admission>,
    policy: Arc<Policy>,
    bundle: Arc<CollectorBundle>,
}

/// Settings read on every request.
struct Policy {
    max_body_bytes: usize,
    body_timeout: Duration,
    retry_after_secs: u32,
    client_ip: ClientIpResolver,
    drop_bots: bool,
    route_cap: RouteCap,
    attribution_cap: AttributionCap,
    only_known_sites: bool,
    allowed_origins: Vec<String>,
    sites: HashMap<String, SiteConfig>,
    token_keys: HashMap<String, token::SiteKeys>,
    token_max_ttl_secs: u64,
    /// `/metrics` is served on the admin listener only (`ingest.admin_port`).
    metrics_on_admin_only: bool,
}

impl AppState {
    /// Builds the state from the config.
    pub fn new(
        config: &IngestConfig,
        publisher: Arc<dyn Publisher>,
        metrics: Arc<IngestMetrics>,
    ) -> Self {
        let budget = |per_second: u32, burst: u32| {
            let per_second = NonZeroU32::new(per_second)?;
            Some(Budget {
                per_second,
                burst: NonZeroU32::new(burst).unwrap_or(per_second),
            })
        };
        let limiter = budget(config.rate_limit_per_second, config.rate_limit_burst).map(|client| {
            let network = config
                .network_budget()
                .and_then(|(per_second, burst)| budget(per_second, burst));
            Arc::new(ClientRateLimiter::new(
                client,
                network,
                config.rate_limit_max_clients,
            ))
        });
        let events = Arc::new(Events::new(metrics.clone()));
        if config.drop_bots {
            crate::bots::warm_up();
        }
        Self {
            publisher,
            readiness: Arc::new(Readiness::new(events.clone())),
            events,
            metrics,
            limiter,
            admission: Arc::new(Admission::new(
                config.max_in_flight as usize,
                config.max_queued as usize,
                Duration::from_millis(config.queue_timeout_ms),
            )),
            policy: Arc::new(Policy {
                max_body_bytes: config.max_body_bytes,
                body_timeout: Duration::from_millis(config.body_timeout_ms),
                retry_after_secs: config.retry_after_secs,
                client_ip: ClientIpResolver::new(config.trusted_proxies.clone()),
                drop_bots: config.drop_bots,
                route_cap: RouteCap::new(
                    RouteLimits {
                        max_routes: config.max_routes_per_site,
                        max_sites: config.max_sites,
                        sites_per_client: config.max_new_sites_per_client,
                        route_idle_secs: config.route_idle_secs,
                        site_idle_secs: config.site_idle_secs,
                        min_clients: config.route_min_clients,
                        candidates_per_site: config.max_route_candidates_per_site,
                        candidates_per_client: config.max_route_candidates_per_client,
                    },
                    config.sites.keys().cloned(),
                ),
                attribution_cap: AttributionCap::new(AttributionLimits {
                    max_values: config.max_attribution_values_per_route,
                    max_routes: config.max_attribution_routes,
                    idle_secs: config.route_idle_secs,
                }),
                only_known_sites: config.only_known_sites,
                allowed_origins: config.allowed_origins.clone(),
                sites: config.sites.clone(),
                token_keys: config
                    .sites
                    .iter()
                    .filter_map(|(name, site)| Some((name.clone(), token::SiteKeys::of(site)?)))
                    .collect(),
                token_max_ttl_secs: config.token_max_ttl_secs,
                metrics_on_admin_only: config.admin_port.is_some(),
            }),
            bundle: Arc::new(CollectorBundle::load(config.collector_bundle.as_deref())),
        }
    }
}

impl Policy {
    /// True when `origin` may send CORS beacons for `site`.
    fn allows_origin(&self, site: Option<&str>, origin: &str) -> bool {
        let site_origins = site
            .and_then(|s| self.sites.get(s))
            .map(|s| s.allowed_origins.as_slice());
        self.allowed_origins
            .iter()
            .chain(site_origins.unwrap_or_default())
            .any(|allowed| allowed == "*" || allowed == origin)
    }

    /// True unless `site` has an origin allow-list (its own or `ingest.allowed_origins`) that
    /// `origin` is not on. A browser sends `Origin` with every cross-origin POST, `text/plain`
    /// ones too, which need no preflight: this is where such a beacon from another site's page
    /// stops, not at the CORS headers (which only hide the answer from the page).
    fn origin_passes(&self, site: &str, origin: &HeaderValue) -> bool {
        let has_list = !self.allowed_origins.is_empty()
            || self
                .sites
                .get(site)
                .is_some_and(|s| !s.allowed_origins.is_empty());
        !has_list
            || origin
                .to_str()
                .is_ok_and(|o| self.allows_origin(Some(site), o))
    }
}

/// The ingest's public routes; `/metrics` among them unless `ingest.admin_port` is set.
pub fn router(state: AppState) -> Router {
    let bundle = state.bundle.clone().routes();
    let mut routes = Router::new()
        .route(BEACON_PATH, post(post_beacon).options(preflight))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz));
    if !state.policy.metrics_on_admin_only {
        routes = routes.route("/metrics", get(metrics));
    }
    routes.with_state(state).merge(bundle)
}

/// The admin listener's routes (`ingest.admin_port`): `/metrics`, `/healthz`, `/readyz`.
pub fn admin_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(state)
}

async fn post_beacon(State(state): State<AppState>, request: Request) -> Response {
    let started = Instant::now();
    state.metrics.beacons_received.inc();
    let (parts, body) = request.into_parts();
    let query: Option<Query<HashMap<String, String>>> = Query::try_from_uri(&parts.uri).ok();
    // Only what the answer needs outlives the request's head: CORS is for browsers that sent an Origin.
    let cors = parts.headers.get(header::ORIGIN).map(|origin| {
        let query_site = query.as_ref().and_then(|q| q.get("site")).cloned();
        (origin.clone(), query_site)
    });
    let (site, mut response) = match accept(&state, parts, query, body).await {
        Ok(site) => {
            state.metrics.beacons_accepted.inc();
            (Some(site), StatusCode::NO_CONTENT.into_response())
        }
        Err(e) => {
            state.events.beacon_rejected(&e);
            (None, e.into_response())
        }
    };
    vary_on_origin(&mut response);
    if let Some((origin, query_site)) = cors {
        let site = site.as_deref().or(query_site.as_deref());
        add_cors_headers(&state.policy, site, &origin, &mut response);
    }
    state
        .metrics
        .request_duration
        .observe(started.elapsed().as_secs_f64());
    response
}

/// Validates and publishes one beacon; returns its site.
///
/// The order bounds what a client can hold: the rate limit is checked on the head, before the body
/// is read; the body must arrive within `ingest.body_timeout_ms`; a slot of `ingest.max_in_flight`
/// (or a place in the line for one) is taken only for a complete, valid beacon, and held until
/// Kafka has answered. A slow sender holds a connection, never a slot.
async fn accept(
    state: &AppState,
    parts: Parts,
    query: Option<Query<HashMap<String, String>>>,
    body: Body,
) -> Result<String, IngestError> {
    let policy = &state.policy;
    let message = validate(state, &parts, query.as_ref().map(|q| &q.0), body).await?;
    // The request's head is not needed while Kafka acknowledges: free it while it is warm in cache.
    drop((parts, query));
    let _slot = state
        .admission
        .enter()
        .await
        .map_err(|_| IngestError::Overloaded(policy.retry_after_secs))?;
    let handed = Instant::now();
    state
        .publisher
        .publish(&message.key(), &message.encode())
        .await
        .map_err(|e| IngestError::Publish(e, policy.retry_after_secs))?;
    state
        .metrics
        .kafka_ack_duration
        .observe(handed.elapsed().as_secs_f64());
    for m in &message.metrics {
        state.metrics.metric_accepted(m.name);
    }
    Ok(message.site)
}

/// Checks one request (rate limit, content type, bots, body, token, route cap) into the message to publish.
async fn validate(
    state: &AppState,
    parts: &Parts,
    query: Option<&HashMap<String, String>>,
    body: Body,
) -> Result<BeaconMessage, IngestError> {
    let policy = &state.policy;
    let headers = &parts.headers;
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    // The client's address, for the rate limit and the route cap only: never kept as such.
    let client = {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip());
        let forwarded = headers.get_all("x-forwarded-for").iter();
        policy
            .client_ip
            .resolve_header_values(peer, forwarded.map(HeaderValue::as_bytes))
    };
    if client.unidentified {
        state.events.client_unidentified();
    }
    if let Some(limiter) = &state.limiter {
        let secs = |wait: Duration| wait.as_secs_f64().ceil().max(1.0) as u32;
        limiter.check(&client).map_err(|limited| match limited {
            OverBudget::Client(wait) => IngestError::RateLimited(secs(wait)),
            OverBudget::Network(wait) => IngestError::NetworkRateLimited(secs(wait)),
        })?;
    }
    if !is_beacon_content_type(header("content-type")) {
        return Err(IngestError::UnsupportedMediaType);
    }
    let query = query.ok_or(IngestError::InvalidQuery)?;
    // On the bytes: a User-Agent that is not ASCII is matched too. None: not a bot (tools, tests).
    if policy.drop_bots && headers.get(header::USER_AGENT).is_some_and(is_bot) {
        return Err(IngestError::Bot);
    }
    let body = tokio::time::timeout(policy.body_timeout, read_body(body, policy.max_body_bytes))
        .await
        .map_err(|_| IngestError::BodyTimeout(policy.body_timeout.as_millis() as u64))??;
    // Lossy, as for bots: a User-Agent with a byte that is not ASCII still tells the device.
    let user_agent = headers
        .get(header::USER_AGENT)
        .map(|v| String::from_utf8_lossy(v.as_bytes()));
    let beacon = parse_beacon(&body)?;
    // Only a beacon without a route reads the Referer; only its normalized path is kept.
    let referer = beacon.route.is_none().then(|| {
        crate::referer::referer_path(headers.get(header::REFERER), headers.get("sec-fetch-site"))
    });
    let ctx = RequestContext {
        query_site: query.get("site").map(String::as_str),
        header_device: Device::from_headers(header("sec-ch-ua-mobile"), user_agent.as_deref()),
        received_at_ms: unix_millis(),
        browser: Browser::from_user_agent(headers.get(header::USER_AGENT).map(|v| v.as_bytes())),
        referer_path: referer.as_ref().and_then(|r| r.as_deref().ok()),
    };
    let validated = match beacon.validate(&ctx) {
        Err(BeaconError::MissingRoute) => {
            if let Some(Err(why)) = referer {
                state.events.referer_ignored(why);
            }
            return Err(BeaconError::MissingRoute.into());
        }
        other => other?,
    };
    let mut message = validated.message;
    if let Some(origin) = headers.get(header::ORIGIN) {
        if !policy.origin_passes(&message.site, origin) {
            return Err(IngestError::OriginNotAllowed);
        }
    }
    if policy.only_known_sites && !policy.sites.contains_key(&message.site) {
        return Err(IngestError::UnknownSite);
    }
    if let Some(keys) = policy.token_keys.get(&message.site) {
        let presented = token::Presented {
            token: query.get("t").map(String::as_str),
            expires: query.get("e").map(String::as_str),
            key_id: query.get("k").map(String::as_str),
        };
        token::verify(
            keys,
            &message.site,
            parts.uri.path(),
            presented,
            ctx.received_at_ms / 1000,
            policy.token_max_ttl_secs,
        )?;
    }
    for reason in &validated.dropped {
        state
            .metrics
            .metrics_dropped
            .with_label_values(&[reason.reason()])
            .inc();
    }
    for reason in &validated.dropped_attributions {
        state.events.attribution_dropped(*reason);
    }
    let client = policy.route_cap.client_key(&client);
    let route = std::mem::take(&mut message.route);
    message.route = match policy.route_cap.apply(&message.site, route, client) {
        Ok(Labelled::Own(route)) => route,
        Ok(Labelled::Folded(fold)) => {
            state.events.route_folded(fold);
            rum_schemas::route::OTHER_ROUTE.to_string()
        }
        Err(SiteLimit) => return Err(IngestError::SiteLimit),
    };
    policy.attribution_cap.apply(
        &message.site,
        &message.route,
        &mut message.metrics,
        |field, why| state.events.attribution_folded(field, why),
    );
    if validated.route_from_referer {
        state.events.route_from_referer();
    }
    Ok(message)
}

/// Answers a CORS preflight for `application/json` beacons: allowed origins get the headers
/// `fetch(..., {credentials: 'include'})` and `sendBeacon` with a JSON Blob need; others get 403.
async fn preflight(State(state): State<AppState>, uri: Uri, headers: HeaderMap) -> Response {
    let query: Option<Query<HashMap<String, String>>> = Query::try_from_uri(&uri).ok();
    let site = query
        .as_ref()
        .and_then(|q| q.get("site"))
        .map(String::as_str);
    match headers.get(header::ORIGIN) {
        Some(origin)
            if origin
                .to_str()
                .is_ok_and(|o| state.policy.allows_origin(site, o)) =>
        {
            let mut response = StatusCode::NO_CONTENT.into_response();
            add_cors_headers(&state.policy, site, origin, &mut response);
            let h = response.headers_mut();
            h.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static("POST"),
            );
            h.insert(
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static("content-type"),
            );
            h.insert(
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from_static("86400"),
            );
            vary_on_origin(&mut response);
            response
        }
        _ => {
            let mut response = (StatusCode::FORBIDDEN, "origin not allowed\n").into_response();
            vary_on_origin(&mut response);
            response
        }
    }
}

/// Every answer on the beacon path may depend on `Origin` (the allow-list, the CORS headers), with
/// or without one in the request: a cache in between must keep them apart.
fn vary_on_origin(response: &mut Response) {
    response
        .headers_mut()
        .insert(header::VARY, HeaderValue::from_static("Origin"));
}

/// Echoes an allowed `Origin` with credentials, as browsers require for credentialed CORS.
fn add_cors_headers(
    policy: &Policy,
    site: Option<&str>,
    origin: &HeaderValue,
    response: &mut Response,
) {
    let allowed = origin.to_str().is_ok_and(|o| policy.allows_origin(site, o));
    let h = response.headers_mut();
    if allowed {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        h.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
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

/// Whether the publisher took messages at its last check. `/readyz` answers from it, so a flood of
/// readiness probes costs no request to Kafka; [`Readiness::check`] runs once a second.
pub struct Readiness {
    state: AtomicU8,
    events: Arc<Events>,
}

const NOT_CHECKED: u8 = 0;
const READY: u8 = 1;
const UNREACHABLE: u8 = 2;
const STOPPING: u8 = 3;

impl Readiness {
    /// How long one check may take.
    pub const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

    /// Not checked yet; each check counted in `events` (`rum_ingest_readiness_checks_total`).
    pub fn new(events: Arc<Events>) -> Self {
        Self {
            state: AtomicU8::new(NOT_CHECKED),
            events,
        }
    }

    /// Asks the publisher (a metadata request to Kafka) and remembers the answer (not once stopping).
    pub async fn check(&self, publisher: &Arc<dyn Publisher>) {
        let publisher = publisher.clone();
        let ready = tokio::task::spawn_blocking(move || publisher.is_ready(Self::CHECK_TIMEOUT))
            .await
            .unwrap_or(false);
        self.events.readiness_checked(ready);
        let answer = if ready { READY } else { UNREACHABLE };
        let _ = self
            .state
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |now| {
                (now != STOPPING).then_some(answer)
            });
    }

    /// The process is stopping: `/readyz` answers 503 from now on, so load balancers take the
    /// instance out before its listener closes.
    pub fn stopping(&self) {
        self.state.store(STOPPING, Ordering::Relaxed);
    }

    fn answer(&self) -> Response {
        match self.state.load(Ordering::Relaxed) {
            READY => (StatusCode::OK, "ready\n").into_response(),
            NOT_CHECKED => (StatusCode::SERVICE_UNAVAILABLE, "starting\n").into_response(),
            STOPPING => (StatusCode::SERVICE_UNAVAILABLE, "stopping\n").into_response(),
            _ => (StatusCode::SERVICE_UNAVAILABLE, "kafka unreachable\n").into_response(),
        }
    }
}

async fn readyz(State(state): State<AppState>) -> Response {
    state.readiness.answer()
}

async fn metrics(State(state): State<AppState>) -> Response {
    state
        .metrics
        .producer_queue_depth
        .set(i64::from(state.publisher.queue_depth()));
    let admission = &state.admission;
    state
        .metrics
        .requests_in_flight
        .set(admission.in_flight() as i64);
    state.metrics.requests_queued.set(admission.queued() as i64);
    let held = state.policy.route_cap.held();
    state.metrics.sites.set(held.sites as i64);
    state.metrics.routes.set(held.routes as i64);
    state.metrics.route_candidates.set(held.candidates as i64);
    let attribution_routes = state.policy.attribution_cap.pairs();
    state
        .metrics
        .attribution_routes
        .set(attribution_routes as i64);
    rum_telemetry::metrics_response(&state.metrics.registry)
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
