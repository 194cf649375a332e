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
    /// When set, beacons need a signed token (`?t=...&e=...`, see `rum token`). Never shown.
    pub token_secret: Option<Secret>,
    /// Origins allowed to send `application/json` beacons with CORS (`https://shop.example`; `*` for any).
    pub allowed_origins: Vec<String>,
}

/// The ingest's settings, with production defaults.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngestConfig {
    /// The address to listen on.
    pub host: String,
    /// The port to listen on.
    pub port: u16,
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
    /// The most client addresses the limiter remembers (bounds its memory).
    pub rate_limit_max_clients: usize,
    /// Proxies whose `X-Forwarded-For` is believed (IPs or CIDRs; a list, or one comma-separated string).
    #[serde(deserialize_with = "list_of_networks")]
    pub trusted_proxies: Vec<IpNet>,
    /// Drop beacons from known bots and synthetic monitors (counted as `bot`).
    pub drop_bots: bool,
    /// Distinct routes kept per site; later new routes become `other`.
    pub max_routes_per_site: usize,
    /// Distinct sites tracked; beacons of later new sites get route `other`.
    pub max_sites: usize,
    /// Accept only the sites listed under `[ingest.sites]`.
    pub only_known_sites: bool,
    /// Origins allowed for every site (in addition to each site's own).
    pub allowed_origins: Vec<String>,
    /// Per-site settings.
    pub sites: HashMap<String, SiteConfig>,
    /// The collector's script-tag bundle (`collector/dist/rum.iife.js`), served at `/rum.js`;
    /// unset, or a file that cannot be read, answers 404 there.
    pub collector_bundle: Option<PathBuf>,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 8080,
            max_body_bytes: 16 * 1024,
            delivery_timeout_ms: 5_000,
            linger_ms: 5,
            max_connections: 10_000,
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
            trusted_proxies: Vec::new(),
            drop_bots: true,
            max_routes_per_site: 500,
            max_sites: 10_000,
            only_known_sites: false,
            allowed_origins: Vec::new(),
            sites: HashMap::new(),
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
        require_positive("ingest.delivery_timeout_ms", self.delivery_timeout_ms)?;
        require_positive(
            "ingest.queue_max_messages",
            u64::from(self.queue_max_messages),
        )?;
        require_positive("ingest.shutdown_flush_ms", self.shutdown_flush_ms)?;
        require_positive("ingest.max_in_flight", u64::from(self.max_in_flight))?;
        require_positive("ingest.max_connections", self.max_connections as u64)?;
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
        }
        require_positive(
            "ingest.max_routes_per_site",
            self.max_routes_per_site as u64,
        )?;
        require_positive("ingest.max_sites", self.max_sites as u64)?;
        check_origins("ingest.allowed_origins", &self.allowed_origins)?;
        for (name, site) in &self.sites {
            if !is_valid_site(name) {
                return Err(ConfigError::new(
                    format!("ingest.sites.{name}"),
                    "a site name is [a-z0-9._-], at most 64 characters",
                ));
            }
            if let Some(secret) = &site.token_secret {
                if secret.expose().len() < 16 {
                    return Err(ConfigError::new(
                        format!("ingest.sites.{name}.token_secret"),
                        "must be at least 16 characters",
                    ));
                }
            }
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

/// An origin is `*` or `scheme://host[:port]`, without a path.
fn check_origins(key: &str, origins: &[String]) -> Result<(), ConfigError> {
    for origin in origins {
        let valid = origin == "*"
            || origin
                .strip_prefix("https://")
                .or_else(|| origin.strip_prefix("http://"))
                .is_some_and(|host| !host.is_empty() && !host.contains('/'));
        if !valid {
            return Err(ConfigError::new(
                key,
                format!("`{origin}` is not an origin like https://shop.example"),
            ));
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
    fn rejects_an_empty_collector_bundle_path() {
        let c = IngestConfig {
            collector_bundle: Some(PathBuf::new()),
            ..Default::default()
        };
        assert_eq!(c.validate().unwrap_err().key, "ingest.collector_bundle");
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
