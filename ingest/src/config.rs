//! Section `[ingest]` of the config, env `RUM_INGEST_*`.

use std::collections::HashMap;
use std::path::PathBuf;

use ipnet::IpNet;
use rum_schemas::beacon::is_valid_site;
use rum_schemas::config::{require_non_empty, require_positive, ConfigError, Secret};
use serde::{Deserialize, Deserializer};

/// Settings of one site: `[ingest.sites.NAME]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SiteConfig {
    /// When set, beacons need a signed token (`?t=...&e=...`, see `rum token` and `token.rs`),
    /// bound to this site. At least 16 characters. Never shown.
    pub token_secret: Option<Secret>,
    /// Instead of `token_secret`, keys with ids, for a rotation:
    /// `token_secrets = [{id = "k2", secret = "..."}, {id = "k1", secret = "..."}]`. The first
    /// signs (`rum token`), every one verifies a token that names it (`&k=k2`). Ids are
    /// `[A-Za-z0-9_-]`, at most 32 characters, distinct; secrets at least 16 characters.
    pub token_secrets: Vec<TokenSecret>,
    /// Origins allowed to send beacons for this site (`https://shop.example`; `*` for any), in
    /// addition to `ingest.allowed_origins`. When either list is set, a beacon whose `Origin`
    /// header is not on them is refused, 403 `origin_not_allowed`, whatever its content type: a
    /// `text/plain` beacon needs no CORS preflight, so the CORS headers alone would not stop it.
    /// A request without `Origin` (a server, curl, an older browser's same-origin request) is not
    /// checked; `Origin: null` (sandboxed frames, `file:` pages) is refused. Current browsers send
    /// `Origin` with every POST, same-origin ones too: list the site's own origin when its pages
    /// post to an ingest there.
    pub allowed_origins: Vec<String>,
}

/// One key of `token_secrets`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenSecret {
    /// The key id, sent in tokens as `k`.
    pub id: String,
    /// The secret. Never shown.
    pub secret: Secret,
}

/// The ingest's settings, with production defaults.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngestConfig {
    /// The address to listen on.
    pub host: String,
    /// The port to listen on.
    pub port: u16,
    /// When set, `/metrics` is served only on this port (with `/healthz` and `/readyz`, which the
    /// public port keeps too), and the public port answers 404 there. Unset: `/metrics` on the
    /// public port. The admin listener is bounded like the public one, with at most 64 connections.
    pub admin_port: Option<u16>,
    /// The address of the admin listener (an IP address); unset: `host`.
    pub admin_host: Option<String>,
    /// Bodies larger than this get 413. The contract says 16 KiB.
    pub max_body_bytes: usize,
    /// How long a request waits for Kafka's acknowledgement before it gets 503.
    pub delivery_timeout_ms: u64,
    /// The producer's batching delay (`linger.ms`).
    pub linger_ms: u64,
    /// Open client connections at most; a connection beyond it is closed at once (counted in
    /// `rum_ingest_connections_refused_total{reason="limit"}`). Each holds a file descriptor (the
    /// ingest raises its soft open-file limit to fit) and up to `max_head_bytes` + `max_body_bytes`
    /// of buffers.
    pub max_connections: usize,
    /// Open connections at most from one client address (IPv6: one /64), so that one host cannot
    /// take every place of `max_connections`; beyond it closed at once
    /// (`rum_ingest_connections_refused_total{reason="client_limit"}`). Addresses in
    /// `trusted_proxies` (the load balancer) are not limited. 0 turns it off.
    pub max_connections_per_client: usize,
    /// On SIGTERM, how long `/readyz` answers 503 `stopping` while everything is still served,
    /// before the listener closes: the time a load balancer needs to take the instance out (its
    /// health check interval x its unhealthy threshold), so that no new connection meets a closed
    /// port. 0 (the default) closes at once.
    pub shutdown_delay_ms: u64,
    /// How long a client may take to send a request's head: from the connection's accept, or from
    /// the first byte of a kept-alive connection's next request. Beyond it the connection is closed.
    pub header_timeout_ms: u64,
    /// How long a client may take to send a request's body once its head arrived; beyond it 408.
    pub body_timeout_ms: u64,
    /// How long a kept-alive connection may wait for its next request. Above the idle timeout of the
    /// load balancer in front (60 s on most), so that the balancer closes first and never sends a
    /// request on a connection the ingest is closing.
    pub idle_timeout_ms: u64,
    /// On SIGTERM: how long requests in flight have to finish before every connection still open
    /// is dropped; then the producer is flushed (`shutdown_flush_ms`).
    pub drain_timeout_ms: u64,
    /// The largest request head (request line and headers); larger gets 431.
    pub max_head_bytes: usize,
    /// The most messages the producer queues in memory; beyond it requests get 503.
    pub queue_max_messages: u32,
    /// The most messages in one produce batch (`batch.num.messages`).
    pub batch_max_messages: u32,
    /// How long shutdown waits for the producer to deliver what it holds.
    pub shutdown_flush_ms: u64,
    /// The `Retry-After` seconds sent with 503.
    pub retry_after_secs: u32,
    /// Beacon requests processed at once (each until Kafka has answered). Size it about
    /// 2 x peak beacons/s x Kafka's acknowledgement time (1,024 covers ~50k/s at 10 ms).
    pub max_in_flight: u32,
    /// Beacon requests that may wait for one of the `max_in_flight` slots; beyond it a request is
    /// answered 503 (`overloaded`) at once. 0 (the default): never wait, shed at once. Behind a
    /// load balancer with a bounded connection pool, the pool's size: overload then queues (up to
    /// `queue_timeout_ms`) instead of being refused, and the ingest keeps accepting at its capacity,
    /// at the cost of the waiting requests' memory (see `bench/RESULTS.md`).
    pub max_queued: u32,
    /// How long a request waits for a slot before it is answered 503 (`overloaded`).
    pub queue_timeout_ms: u64,
    /// Beacons a second per client address (IPv6: per /64); 0 turns rate limiting off.
    /// Generous by default: carrier-grade NAT puts many phones behind one address.
    pub rate_limit_per_second: u32,
    /// The burst a client may send at once.
    pub rate_limit_burst: u32,
    /// The most keys each level of the limiter remembers (bounds its memory).
    pub rate_limit_max_clients: usize,
    /// Beacons a second per network: an IPv6 /48 (all its /64 clients together: one routed /48 is
    /// 65,536 /64s), or a trusted proxy that wrote `unknown` for its client (see `client_ip.rs`).
    /// Unset: 16 x `rate_limit_per_second`; 0 turns this level off. At least
    /// `rate_limit_per_second`. Refusals count as `rate_limited_network`.
    pub rate_limit_network_per_second: Option<u32>,
    /// The burst of a network; unset: 16 x `rate_limit_burst`. At least `rate_limit_burst`.
    pub rate_limit_network_burst: Option<u32>,
    /// Proxies whose `X-Forwarded-For` is believed (IPs or CIDRs; a list, or one comma-separated string).
    #[serde(deserialize_with = "list_of_networks")]
    pub trusted_proxies: Vec<IpNet>,
    /// Drop beacons from known bots and synthetic monitors (counted as `bot`).
    pub drop_bots: bool,
    /// Distinct routes kept per site (at most 100000); later new routes are published as `other`
    /// (counted in `rum_ingest_routes_folded_total{reason="route_limit"}`).
    pub max_routes_per_site: usize,
    /// Sites not listed under `[ingest.sites]` that this process takes beacons for (with
    /// `only_known_sites` off; at most 1000000): a beacon for a new one beyond it is refused, 403
    /// `site_limit`. Per process: replicas and restarts may each take other sites, so the hard
    /// bound is `only_known_sites`.
    pub max_sites: usize,
    /// Of those `max_sites`, how many one network (the admission key of `route_min_clients`: an
    /// IPv6 /48, an IPv4 address) may hold opened; a new site beyond it from that network is
    /// refused, 403 `site_limit`, so one client cannot take every place. 1 to 1000000 (above
    /// `max_sites` it is `max_sites`); 10 by default. Behind a proxy, set `trusted_proxies`, or
    /// every site counts against one network.
    pub max_new_sites_per_client: usize,
    /// An unlisted site without a beacon this long (60 to 2592000 s; 86400 by default) is
    /// forgotten: its place and its opener's quota are free again, and it comes back as a new site.
    pub site_idle_secs: u64,
    /// An admitted route without a beacon this long (60 to 2592000 s; 86400 by default: a route
    /// visited daily keeps its place) is forgotten and its place freed; it comes back through
    /// admission (`route_min_clients`). A site filled with made-up routes recovers this long after
    /// they stop.
    pub route_idle_secs: u64,
    /// Accept only the sites listed under `[ingest.sites]` (others get 403 `unknown_site`). The
    /// production setting: the list, read at start, is the one bound on the sites (and so on the
    /// series and alerts downstream) that no client can move.
    pub only_known_sites: bool,
    /// Distinct networks (the rate limiter's network key: an IPv6 /48, or a proxy that could not
    /// name its client; else the client's IPv4 address) that must send a new route before it
    /// takes one of a site's `max_routes_per_site` places; until then its beacons
    /// are published as `other` (`rum_ingest_routes_folded_total{reason="unconfirmed"}`). 1 takes
    /// every new route at once; at most 16. Behind a proxy, set `trusted_proxies`, or every
    /// beacon comes from one client.
    pub route_min_clients: usize,
    /// New routes waiting for `route_min_clients` networks, per site (about 200 bytes each; at
    /// most 100000).
    pub max_route_candidates_per_site: usize,
    /// Of those, how many one network (as in `route_min_clients`) may have opened (at most
    /// `max_route_candidates_per_site`). On a full table a new candidate pushes out the oldest of
    /// the network holding the most: networks churning candidates, while fewer than the table's
    /// size, cannot push out a real route's.
    pub max_route_candidates_per_client: usize,
    /// Distinct values of each attribution string (LCP `target` and `url`, INP
    /// `interaction_target`, `script_url` and `script_invoker`, CLS `largest_shift_target`) one
    /// (site, route) keeps in a window of `route_idle_secs`; later new values are published as
    /// `other` (`rum_ingest_attribution_values_folded_total{reason="value_limit"}`). 1 to 10000;
    /// 100 by default. See `attribution_cap.rs` for the memory.
    pub max_attribution_values_per_route: usize,
    /// (site, route) pairs that hold a table of attribution values (about 4.7 KB each at the
    /// default `max_attribution_values_per_route`, 62 KB at 1000; 47 MB for the default 10000 pairs); a new pair beyond it has its
    /// values published as `other` (`reason="route_limit"`) until an idle pair is forgotten. 1 to
    /// 1000000; 10000 by default.
    pub max_attribution_routes: usize,
    /// Origins allowed for every site (in addition to each site's own).
    pub allowed_origins: Vec<String>,
    /// Per-site settings.
    pub sites: HashMap<String, SiteConfig>,
    /// The longest a token may still be valid when it arrives: one expiring later is refused
    /// (`token_ttl_too_long`), so a leaked token cannot live forever. 7 days by default; at most
    /// 366 days. `rum token --ttl` may not ask for more.
    pub token_max_ttl_secs: u64,
    /// The collector's script-tag bundle (`collector/dist/rum.iife.js`), served at `/rum.js`;
    /// unset, or a file that cannot be read, answers 404 there.
    pub collector_bundle: Option<PathBuf>,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 8080,
            admin_port: None,
            admin_host: None,
            max_body_bytes: 16 * 1024,
            delivery_timeout_ms: 5_000,
            linger_ms: 5,
            max_connections: 10_000,
            max_connections_per_client: 1_000,
            shutdown_delay_ms: 0,
            header_timeout_ms: 10_000,
            body_timeout_ms: 10_000,
            idle_timeout_ms: 75_000,
            drain_timeout_ms: 10_000,
            max_head_bytes: 16 * 1024,
            queue_max_messages: 100_000,
            batch_max_messages: 10_000,
            shutdown_flush_ms: 10_000,
            retry_after_secs: 5,
            max_in_flight: 1_024,
            max_queued: 0,
            queue_timeout_ms: 1_000,
            rate_limit_per_second: 100,
            rate_limit_burst: 200,
            rate_limit_max_clients: 200_000,
            rate_limit_network_per_second: None,
            rate_limit_network_burst: None,
            trusted_proxies: Vec::new(),
            drop_bots: true,
            max_routes_per_site: 500,
            max_sites: 1_000,
            max_new_sites_per_client: 10,
            site_idle_secs: 86_400,
            route_idle_secs: 86_400,
            only_known_sites: false,
            route_min_clients: 3,
            max_route_candidates_per_site: 128,
            max_route_candidates_per_client: 8,
            max_attribution_values_per_route: 100,
            max_attribution_routes: 10_000,
            allowed_origins: Vec::new(),
            sites: HashMap::new(),
            token_max_ttl_secs: 7 * 86_400,
            collector_bundle: None,
        }
    }
}

impl IngestConfig {
    /// Checks every value; the error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        require_non_empty("ingest.host", &self.host)?;
        if self.host.parse::<std::net::IpAddr>().is_err() {
            return Err(ConfigError::new(
                "ingest.host",
                "must be an IP address, e.g. 127.0.0.1",
            ));
        }
        require_positive("ingest.max_body_bytes", self.max_body_bytes as u64)?;
        if self.max_body_bytes > MAX_BODY_BYTES {
            return Err(ConfigError::new(
                "ingest.max_body_bytes",
                format!(
                    "must be at most {MAX_BODY_BYTES} (a beacon is a few hundred bytes; each \
                     connection may hold this much)"
                ),
            ));
        }
        check_trusted_proxies(&self.trusted_proxies)?;
        require_positive("ingest.delivery_timeout_ms", self.delivery_timeout_ms)?;
        require_positive(
            "ingest.queue_max_messages",
            u64::from(self.queue_max_messages),
        )?;
        require_positive("ingest.shutdown_flush_ms", self.shutdown_flush_ms)?;
        require_positive("ingest.max_in_flight", u64::from(self.max_in_flight))?;
        require_positive("ingest.max_connections", self.max_connections as u64)?;
        if self.max_connections > 1_000_000 {
            return Err(ConfigError::new(
                "ingest.max_connections",
                "must be at most 1000000",
            ));
        }
        if self.shutdown_delay_ms > 300_000 {
            return Err(ConfigError::new(
                "ingest.shutdown_delay_ms",
                "must be at most 300000 (5 minutes)",
            ));
        }
        for (key, value) in [
            ("ingest.header_timeout_ms", self.header_timeout_ms),
            ("ingest.body_timeout_ms", self.body_timeout_ms),
            ("ingest.idle_timeout_ms", self.idle_timeout_ms),
            ("ingest.drain_timeout_ms", self.drain_timeout_ms),
        ] {
            require_positive(key, value)?;
            if value > 3_600_000 {
                return Err(ConfigError::new(key, "must be at most 3600000 (an hour)"));
            }
        }
        if self.drain_timeout_ms < self.delivery_timeout_ms {
            return Err(ConfigError::new(
                "ingest.drain_timeout_ms",
                format!(
                    "must be at least ingest.delivery_timeout_ms ({}): a request waiting for Kafka \
                     on SIGTERM would be dropped unanswered",
                    self.delivery_timeout_ms
                ),
            ));
        }
        // hyper's read buffer cannot be smaller than 8 KiB.
        if !(8 * 1024..=1024 * 1024).contains(&self.max_head_bytes) {
            return Err(ConfigError::new(
                "ingest.max_head_bytes",
                "must be between 8192 and 1048576",
            ));
        }
        if self.max_queued > 0 {
            require_positive("ingest.queue_timeout_ms", self.queue_timeout_ms)?;
        }
        if self.queue_timeout_ms > 60_000 {
            return Err(ConfigError::new(
                "ingest.queue_timeout_ms",
                "must be at most 60000",
            ));
        }
        if self.linger_ms > 1_000 {
            return Err(ConfigError::new("ingest.linger_ms", "must be at most 1000"));
        }
        if self.rate_limit_per_second > 0 {
            require_positive("ingest.rate_limit_burst", u64::from(self.rate_limit_burst))?;
            require_positive(
                "ingest.rate_limit_max_clients",
                self.rate_limit_max_clients as u64,
            )?;
            self.check_network_budget()?;
        } else {
            // Rate limiting off: a network budget would be ignored. 0 (off) says the same: allowed.
            for (key, set) in [
                (
                    "ingest.rate_limit_network_per_second",
                    self.rate_limit_network_per_second.is_some_and(|v| v > 0),
                ),
                (
                    "ingest.rate_limit_network_burst",
                    self.rate_limit_network_burst.is_some(),
                ),
            ] {
                if set {
                    return Err(ConfigError::new(
                        key,
                        "is set but ingest.rate_limit_per_second is 0 (rate limiting off): it \
                         would be ignored; unset it, or set ingest.rate_limit_per_second",
                    ));
                }
            }
        }
        self.check_admin_listener()?;
        if !(1..=366 * 86_400).contains(&self.token_max_ttl_secs) {
            return Err(ConfigError::new(
                "ingest.token_max_ttl_secs",
                "must be between 1 and 31622400 (366 days)",
            ));
        }
        for (key, value, max) in [
            (
                "ingest.max_routes_per_site",
                self.max_routes_per_site,
                100_000,
            ),
            ("ingest.max_sites", self.max_sites, 1_000_000),
            (
                "ingest.max_new_sites_per_client",
                self.max_new_sites_per_client,
                1_000_000,
            ),
            ("ingest.route_min_clients", self.route_min_clients, 16),
            (
                "ingest.max_route_candidates_per_site",
                self.max_route_candidates_per_site,
                100_000,
            ),
            (
                "ingest.max_route_candidates_per_client",
                self.max_route_candidates_per_client,
                self.max_route_candidates_per_site,
            ),
            (
                "ingest.max_attribution_values_per_route",
                self.max_attribution_values_per_route,
                10_000,
            ),
            (
                "ingest.max_attribution_routes",
                self.max_attribution_routes,
                1_000_000,
            ),
        ] {
            if !(1..=max).contains(&value) {
                return Err(ConfigError::new(
                    key,
                    format!("must be between 1 and {max}"),
                ));
            }
        }
        for (key, value) in [
            ("ingest.site_idle_secs", self.site_idle_secs),
            ("ingest.route_idle_secs", self.route_idle_secs),
        ] {
            if !(60..=2_592_000).contains(&value) {
                return Err(ConfigError::new(key, "must be between 60 and 2592000"));
            }
        }
        check_origins("ingest.allowed_origins", &self.allowed_origins)?;
        for (name, site) in &self.sites {
            if !is_valid_site(name) {
                return Err(ConfigError::new(
                    format!("ingest.sites.{name}"),
                    "a site name is [a-z0-9._-], at most 64 characters",
                ));
            }
            check_token_secrets(name, site)?;
            check_origins(
                &format!("ingest.sites.{name}.allowed_origins"),
                &site.allowed_origins,
            )?;
        }
        if self
            .collector_bundle
            .as_ref()
            .is_some_and(|p| p.as_os_str().is_empty())
        {
            return Err(ConfigError::new(
                "ingest.collector_bundle",
                "is empty: a path to collector/dist/rum.iife.js, or unset",
            ));
        }
        if self.only_known_sites && self.sites.is_empty() {
            return Err(ConfigError::new(
                "ingest.only_known_sites",
                "is true but no site is configured under [ingest.sites]",
            ));
        }
        Ok(())
    }
}

impl IngestConfig {
    /// The per-network budget (beacons a second, burst), when that level is on.
    pub fn network_budget(&self) -> Option<(u32, u32)> {
        let per_second = self
            .rate_limit_network_per_second
            .unwrap_or(self.rate_limit_per_second.saturating_mul(16));
        let burst = self
            .rate_limit_network_burst
            .unwrap_or(self.rate_limit_burst.saturating_mul(16));
        (per_second > 0).then_some((per_second, burst))
    }

    fn check_network_budget(&self) -> Result<(), ConfigError> {
        let Some((per_second, burst)) = self.network_budget() else {
            return Ok(());
        };
        if per_second < self.rate_limit_per_second {
            return Err(ConfigError::new(
                "ingest.rate_limit_network_per_second",
                format!(
                    "must be 0 (off) or at least ingest.rate_limit_per_second ({}): a network \
                     holds many clients",
                    self.rate_limit_per_second
                ),
            ));
        }
        if burst < self.rate_limit_burst {
            return Err(ConfigError::new(
                "ingest.rate_limit_network_burst",
                format!(
                    "must be at least ingest.rate_limit_burst ({})",
                    self.rate_limit_burst
                ),
            ));
        }
        Ok(())
    }

    /// The admin listener's `host:port`, when `admin_port` is set.
    pub fn admin_addr(&self) -> Option<String> {
        let port = self.admin_port?;
        Some(format!(
            "{}:{port}",
            self.admin_host.as_deref().unwrap_or(&self.host)
        ))
    }

    fn check_admin_listener(&self) -> Result<(), ConfigError> {
        if let Some(host) = &self.admin_host {
            if host.parse::<std::net::IpAddr>().is_err() {
                return Err(ConfigError::new(
                    "ingest.admin_host",
                    "must be an IP address, e.g. 127.0.0.1",
                ));
            }
            if self.admin_port.is_none() {
                return Err(ConfigError::new(
                    "ingest.admin_host",
                    "is set but ingest.admin_port is not",
                ));
            }
        }
        if let Some(port) = self.admin_port {
            let public = self
                .host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| !ip.is_loopback());
            if self.admin_host.is_none() && public {
                return Err(ConfigError::new(
                    "ingest.admin_host",
                    format!(
                        "must be set when ingest.admin_port is and ingest.host ({}) is not a \
                         loopback address: set where /metrics listens: the public host exposes it \
                         to everyone",
                        self.host
                    ),
                ));
            }
            let same_host = self.admin_host.as_deref().unwrap_or(&self.host) == self.host;
            if port != 0 && port == self.port && same_host {
                return Err(ConfigError::new(
                    "ingest.admin_port",
                    "must differ from ingest.port (unset it to serve /metrics on the public port)",
                ));
            }
        }
        Ok(())
    }
}

/// A site's token keys: `token_secret` or `token_secrets`, not both; ids and secrets well formed.
fn check_token_secrets(name: &str, site: &SiteConfig) -> Result<(), ConfigError> {
    if let Some(secret) = &site.token_secret {
        if !site.token_secrets.is_empty() {
            return Err(ConfigError::new(
                format!("ingest.sites.{name}.token_secrets"),
                "set either token_secret or token_secrets, not both",
            ));
        }
        if secret.expose().len() < 16 {
            return Err(ConfigError::new(
                format!("ingest.sites.{name}.token_secret"),
                "must be at least 16 characters",
            ));
        }
    }
    let key = format!("ingest.sites.{name}.token_secrets");
    for (i, k) in site.token_secrets.iter().enumerate() {
        let valid_id = (1..=32).contains(&k.id.len())
            && k.id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !valid_id {
            return Err(ConfigError::new(
                &key,
                format!("key {i}: an id is [A-Za-z0-9_-], 1 to 32 characters"),
            ));
        }
        if site.token_secrets[..i].iter().any(|other| other.id == k.id) {
            return Err(ConfigError::new(
                &key,
                format!("key {i}: the id `{}` is used twice", k.id),
            ));
        }
        if k.secret.expose().len() < 16 {
            return Err(ConfigError::new(
                &key,
                format!(
                    "key {i} (`{}`): a secret must be at least 16 characters",
                    k.id
                ),
            ));
        }
    }
    Ok(())
}

/// The largest `ingest.max_body_bytes`.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Trusted proxies must be networks of proxies: a prefix shorter than /8 (IPv4) or /7 (IPv6, so
/// that `fc00::/7` passes) takes in much of the internet, whose every `X-Forwarded-For` would then
/// be believed.
fn check_trusted_proxies(nets: &[IpNet]) -> Result<(), ConfigError> {
    for net in nets {
        let shortest = match net {
            IpNet::V4(_) => 8,
            IpNet::V6(_) => 7,
        };
        if net.prefix_len() < shortest {
            return Err(ConfigError::new(
                "ingest.trusted_proxies",
                format!(
                    "`{net}` is wider than /{shortest}: every client in it could name itself in \
                     X-Forwarded-For; list the networks of your proxies"
                ),
            ));
        }
    }
    Ok(())
}

/// An origin is `*` or `scheme://host[:port]`, without a path, as browsers send it: in lower case,
/// without the default port, without spaces. Another spelling would never match: every beacon
/// would be refused.
fn check_origins(key: &str, origins: &[String]) -> Result<(), ConfigError> {
    for origin in origins {
        if origin == "*" {
            continue;
        }
        let invalid = |why: &str| {
            ConfigError::new(
                key,
                format!("`{origin}` is not an origin like https://shop.example: {why}"),
            )
        };
        if origin.chars().any(char::is_whitespace) {
            return Err(invalid("it has spaces"));
        }
        if origin.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(invalid("browsers send it in lower case"));
        }
        let (scheme, host) = if let Some(host) = origin.strip_prefix("https://") {
            ("https", host)
        } else if let Some(host) = origin.strip_prefix("http://") {
            ("http", host)
        } else {
            return Err(invalid("the scheme is https:// or http://"));
        };
        if host.is_empty() {
            return Err(invalid("no host"));
        }
        if host.contains('/') {
            return Err(invalid("no path, no trailing slash"));
        }
        let default_port = if scheme == "https" { ":443" } else { ":80" };
        if host.ends_with(default_port) {
            return Err(invalid(&format!(
                "browsers leave out the default port {}",
                &default_port[1..]
            )));
        }
    }
    Ok(())
}

/// Accepts `["10.0.0.0/8", "192.0.2.1"]` (TOML) or `"10.0.0.0/8,192.0.2.1"` (an environment variable).
fn list_of_networks<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<IpNet>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    let items = match OneOrMany::deserialize(deserializer)? {
        OneOrMany::One(s) => s
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect(),
        OneOrMany::Many(v) => v,
    };
    items
        .iter()
        .map(|item| {
            item.parse::<IpNet>()
                .or_else(|_| item.parse::<std::net::IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    serde::de::Error::custom(format!("`{item}` is not an IP address or CIDR"))
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        IngestConfig::default().validate().unwrap();
    }

    #[test]
    fn a_line_needs_a_bounded_positive_wait() {
        let line = |max_queued, queue_timeout_ms| IngestConfig {
            max_queued,
            queue_timeout_ms,
            ..Default::default()
        };
        line(4_096, 1_000).validate().unwrap();
        line(0, 0).validate().unwrap();
        assert_eq!(
            line(1, 0).validate().unwrap_err().key,
            "ingest.queue_timeout_ms"
        );
        assert_eq!(
            line(1, 60_001).validate().unwrap_err().key,
            "ingest.queue_timeout_ms"
        );
    }

    #[test]
    fn rejects_short_secrets_bad_origins_and_bad_site_names() {
        let mut c = IngestConfig::default();
        c.sites.insert(
            "shop".into(),
            SiteConfig {
                token_secret: Some("short".into()),
                ..Default::default()
            },
        );
        assert_eq!(
            c.validate().unwrap_err().key,
            "ingest.sites.shop.token_secret"
        );
        assert!(
            !format!("{c:?}").contains("short"),
            "a secret is never shown"
        );
        let mut c = IngestConfig::default();
        c.sites.insert(
            "shop".into(),
            SiteConfig {
                allowed_origins: vec!["https://a.example/path".into()],
                ..Default::default()
            },
        );
        assert_eq!(
            c.validate().unwrap_err().key,
            "ingest.sites.shop.allowed_origins"
        );
        let mut c = IngestConfig::default();
        c.sites.insert("Bad Name".into(), SiteConfig::default());
        assert_eq!(c.validate().unwrap_err().key, "ingest.sites.Bad Name");
    }

    #[test]
    fn reads_trusted_proxies_from_a_list_or_a_comma_separated_string() {
        let from_list: IngestConfig =
            serde_json::from_str(r#"{"trusted_proxies":["10.0.0.0/8","192.0.2.1"]}"#).unwrap();
        let from_string: IngestConfig =
            serde_json::from_str(r#"{"trusted_proxies":"10.0.0.0/8, 192.0.2.1"}"#).unwrap();
        assert_eq!(from_list.trusted_proxies, from_string.trusted_proxies);
        assert_eq!(from_list.trusted_proxies.len(), 2);
        assert!(serde_json::from_str::<IngestConfig>(r#"{"trusted_proxies":"nonsense"}"#).is_err());
    }

    #[test]
    fn bounds_the_label_caps() {
        for (configure, key) in [
            (
                (|c: &mut IngestConfig| c.max_sites = 0) as fn(&mut IngestConfig),
                "ingest.max_sites",
            ),
            (|c| c.route_min_clients = 17, "ingest.route_min_clients"),
            (|c| c.route_min_clients = 0, "ingest.route_min_clients"),
            (
                |c| c.max_route_candidates_per_site = 100_001,
                "ingest.max_route_candidates_per_site",
            ),
            (
                |c| c.max_route_candidates_per_client = 129,
                "ingest.max_route_candidates_per_client",
            ),
            (
                |c| c.max_new_sites_per_client = 1_000_001,
                "ingest.max_new_sites_per_client",
            ),
            (
                |c| c.max_new_sites_per_client = 0,
                "ingest.max_new_sites_per_client",
            ),
            (|c| c.site_idle_secs = 59, "ingest.site_idle_secs"),
            (
                |c| c.max_attribution_values_per_route = 0,
                "ingest.max_attribution_values_per_route",
            ),
            (
                |c| c.max_attribution_values_per_route = 10_001,
                "ingest.max_attribution_values_per_route",
            ),
            (
                |c| c.max_attribution_routes = 0,
                "ingest.max_attribution_routes",
            ),
            (
                |c| c.max_attribution_routes = 1_000_001,
                "ingest.max_attribution_routes",
            ),
            (|c| c.route_idle_secs = 2_592_001, "ingest.route_idle_secs"),
        ] {
            let mut c = IngestConfig::default();
            configure(&mut c);
            assert_eq!(c.validate().unwrap_err().key, key);
        }
    }

    #[test]
    fn rejects_an_empty_collector_bundle_path() {
        let c = IngestConfig {
            collector_bundle: Some(PathBuf::new()),
            ..Default::default()
        };
        assert_eq!(c.validate().unwrap_err().key, "ingest.collector_bundle");
    }

    #[test]
    fn checks_the_network_budget_the_admin_listener_and_the_token_lifetime() {
        let c = IngestConfig::default();
        assert_eq!(c.network_budget(), Some((1_600, 3_200)), "16 x by default");
        for (configure, key) in [
            (
                (|c: &mut IngestConfig| c.rate_limit_network_per_second = Some(99))
                    as fn(&mut IngestConfig),
                "ingest.rate_limit_network_per_second",
            ),
            (
                |c| c.rate_limit_network_burst = Some(1),
                "ingest.rate_limit_network_burst",
            ),
            (|c| c.admin_port = Some(8080), "ingest.admin_port"),
            (
                |c| c.admin_host = Some("0.0.0.0".into()),
                "ingest.admin_host",
            ),
            (
                |c| {
                    c.admin_port = Some(9090);
                    c.admin_host = Some("admin.local".into());
                },
                "ingest.admin_host",
            ),
            (|c| c.token_max_ttl_secs = 0, "ingest.token_max_ttl_secs"),
            (
                |c| c.token_max_ttl_secs = 367 * 86_400,
                "ingest.token_max_ttl_secs",
            ),
        ] {
            let mut c = IngestConfig::default();
            configure(&mut c);
            assert_eq!(c.validate().unwrap_err().key, key);
        }
        let off = IngestConfig {
            rate_limit_network_per_second: Some(0),
            ..Default::default()
        };
        off.validate().unwrap();
        assert_eq!(off.network_budget(), None);
        let admin = IngestConfig {
            admin_port: Some(9090),
            ..Default::default()
        };
        admin.validate().unwrap();
        assert_eq!(admin.admin_addr().as_deref(), Some("127.0.0.1:9090"));
        assert_eq!(IngestConfig::default().admin_addr(), None);
    }

    #[test]
    fn reads_rotating_token_secrets_and_checks_them() {
        let c: IngestConfig = serde_json::from_str(
            r#"{"sites":{"shop":{"token_secrets":[{"id":"k2","secret":"0123456789abcdef-new"},{"id":"k1","secret":"0123456789abcdef-old"}]}}}"#,
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.sites["shop"].token_secrets[0].id, "k2");
        assert!(!format!("{c:?}").contains("abcdef-new"), "never shown");
        let site = |json: &str| -> IngestConfig {
            serde_json::from_str(&format!(r#"{{"sites":{{"shop":{json}}}}}"#)).unwrap()
        };
        for bad in [
            r#"{"token_secret":"0123456789abcdef","token_secrets":[{"id":"k1","secret":"0123456789abcdef"}]}"#,
            r#"{"token_secrets":[{"id":"k 1","secret":"0123456789abcdef"}]}"#,
            r#"{"token_secrets":[{"id":"","secret":"0123456789abcdef"}]}"#,
            r#"{"token_secrets":[{"id":"k1","secret":"0123456789abcdef"},{"id":"k1","secret":"0123456789abcdeg"}]}"#,
            r#"{"token_secrets":[{"id":"k1","secret":"short"}]}"#,
        ] {
            let error = site(bad).validate().unwrap_err();
            assert_eq!(error.key, "ingest.sites.shop.token_secrets", "{bad}");
            assert!(!error.reason.contains("0123456789"), "{}", error.reason);
            assert!(!error.reason.contains("short"), "{}", error.reason);
        }
        assert!(
            serde_json::from_str::<IngestConfig>(
                r#"{"sites":{"shop":{"token_secrets":[{"id":"k1","secret":"0123456789abcdef","x":1}]}}}"#
            )
            .is_err(),
            "unknown fields refused"
        );
    }

    #[test]
    fn refuses_origins_a_browser_never_sends() {
        for bad in [
            "https://Shop.example",
            "HTTPS://shop.example",
            "https://shop.example:443",
            "http://shop.example:80",
            "https://shop.example ",
            " https://shop.example",
            "https://shop.example/",
            "https://",
        ] {
            let c = IngestConfig {
                allowed_origins: vec![bad.into()],
                ..Default::default()
            };
            let error = c.validate().unwrap_err();
            assert_eq!(error.key, "ingest.allowed_origins", "{bad:?}");
            let mut c = IngestConfig::default();
            c.sites.insert(
                "shop".into(),
                SiteConfig {
                    allowed_origins: vec![bad.into()],
                    ..Default::default()
                },
            );
            assert_eq!(
                c.validate().unwrap_err().key,
                "ingest.sites.shop.allowed_origins",
                "{bad:?}"
            );
        }
        for good in [
            "*",
            "https://shop.example",
            "https://shop.example:8443",
            "http://localhost:8080",
            "http://shop.example:443",
            "https://[2001:db8::1]",
        ] {
            let c = IngestConfig {
                allowed_origins: vec![good.into()],
                ..Default::default()
            };
            c.validate().unwrap_or_else(|e| panic!("{good}: {e}"));
        }
    }

    #[test]
    fn an_admin_port_on_a_public_host_needs_an_explicit_admin_host() {
        let public = IngestConfig {
            host: "0.0.0.0".into(),
            admin_port: Some(9102),
            ..Default::default()
        };
        let error = public.validate().unwrap_err();
        assert_eq!(error.key, "ingest.admin_host");
        assert!(error.reason.contains("/metrics"), "{}", error.reason);
        for admin_host in ["10.1.2.3", "127.0.0.1", "0.0.0.0"] {
            IngestConfig {
                admin_host: Some(admin_host.into()),
                ..public.clone()
            }
            .validate()
            .unwrap();
        }
        for host in ["127.0.0.1", "::1"] {
            IngestConfig {
                host: host.into(),
                ..public.clone()
            }
            .validate()
            .unwrap();
        }
        IngestConfig {
            host: "0.0.0.0".into(),
            ..Default::default()
        }
        .validate()
        .unwrap();
    }

    #[test]
    fn bounds_the_body_the_trusted_networks_and_refuses_network_budgets_without_a_limit() {
        let c = IngestConfig {
            max_body_bytes: 1024 * 1024 + 1,
            ..Default::default()
        };
        assert_eq!(c.validate().unwrap_err().key, "ingest.max_body_bytes");
        IngestConfig {
            max_body_bytes: 1024 * 1024,
            ..Default::default()
        }
        .validate()
        .unwrap();
        for everyone in ["0.0.0.0/0", "::/0", "128.0.0.0/1", "0.0.0.0/7", "2000::/3"] {
            let c = IngestConfig {
                trusted_proxies: vec![everyone.parse().unwrap()],
                ..Default::default()
            };
            assert_eq!(
                c.validate().unwrap_err().key,
                "ingest.trusted_proxies",
                "{everyone}"
            );
        }
        for private in ["10.0.0.0/8", "fc00::/7", "192.0.2.1/32", "2001:db8::/32"] {
            IngestConfig {
                trusted_proxies: vec![private.parse().unwrap()],
                ..Default::default()
            }
            .validate()
            .unwrap_or_else(|e| panic!("{private}: {e}"));
        }
        for (per_second, burst, key) in [
            (Some(50), None, "ingest.rate_limit_network_per_second"),
            (None, Some(50), "ingest.rate_limit_network_burst"),
        ] {
            let c = IngestConfig {
                rate_limit_per_second: 0,
                rate_limit_network_per_second: per_second,
                rate_limit_network_burst: burst,
                ..Default::default()
            };
            let error = c.validate().unwrap_err();
            assert_eq!(error.key, key);
            assert!(
                error.reason.contains("rate_limit_per_second"),
                "{}",
                error.reason
            );
        }
        IngestConfig {
            rate_limit_per_second: 0,
            rate_limit_network_per_second: Some(0),
            ..Default::default()
        }
        .validate()
        .unwrap();
    }

    #[test]
    fn rejects_a_host_name_and_zero_sizes() {
        let c = IngestConfig {
            host: "localhost".into(),
            ..Default::default()
        };
        assert_eq!(c.validate().unwrap_err().key, "ingest.host");
        let c = IngestConfig {
            max_body_bytes: 0,
            ..Default::default()
        };
        assert_eq!(c.validate().unwrap_err().key, "ingest.max_body_bytes");
    }
}
