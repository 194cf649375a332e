//! `rum ingest`: the public HTTP endpoint browsers send beacons to.
//!
//! A request is parsed, validated and normalized (rules in `rum-schemas`), then published to Kafka.
//! The answer is 204 only once Kafka has acknowledged the message (acks=all, idempotent producer),
//! so a 204 means the beacon is durable. Every request to the beacon path is counted exactly once,
//! as accepted or as rejected with a reason.

mod admission;
mod api;
mod attribution_cap;
mod bots;
mod bundle;
mod client_ip;
mod config;
mod error;
mod events;
mod limit;
mod metrics;
mod publish;
mod referer;
mod routes;
mod server;
pub mod token;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub use api::{admin_router, router, AppState, Readiness, BEACON_PATH};
pub use bundle::{CollectorBundle, HashedBundle, BUNDLE_PATH};
pub use config::{IngestConfig, SiteConfig};
pub use error::IngestError;
pub use metrics::IngestMetrics;
pub use publish::{producer_properties, KafkaPublisher, PublishError, Publisher};
use rum_schemas::config::ConfigError;
use rum_schemas::kafka::KafkaConfig;
pub use server::{serve, ServerLimits};

/// Why the ingest could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The Kafka producer could not be created.
    #[error("kafka producer: {0}")]
    Producer(#[from] rdkafka::error::KafkaError),
    /// The metrics registry could not be built.
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The HTTP server failed.
    #[error("http server: {0}")]
    Io(#[from] std::io::Error),
}

/// The listen backlog: connections the kernel completes before the server accepts them. tokio's
/// default (1024) overflows when a burst of clients connects at once (a load balancer's pool
/// refilling, a benchmark's 1,024 connections), and a dropped SYN costs its client a 1 s
/// retransmit. The kernel caps it at `net.core.somaxconn` (4096 on current Linux).
pub const LISTEN_BACKLOG: u32 = 4096;

/// Binds a TCP listener on `addr` (`host:port`) with [`LISTEN_BACKLOG`].
pub async fn listen(addr: &str) -> std::io::Result<tokio::net::TcpListener> {
    let mut last_error = None;
    for resolved in tokio::net::lookup_host(addr).await? {
        let socket = if resolved.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        match socket
            .bind(resolved)
            .and_then(|()| socket.listen(LISTEN_BACKLOG))
        {
            Ok(listener) => return Ok(listener),
            Err(e) => last_error = Some(e),
        }
    }
    Err(last_error.unwrap_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "no address to listen on")
    }))
}

/// File descriptors the process keeps for itself besides client connections (Kafka's sockets,
/// librdkafka's pipes, the log).
const OWN_FILES: u64 = 256;

/// Raises the soft open-file limit to fit `ingest.max_connections` (each connection is a file
/// descriptor; most systems start processes at 1,024). Fails, naming the key, when the hard limit
/// is too low: `ulimit -Hn`, `LimitNOFILE=` of a systemd unit.
pub fn fit_open_files(config: &IngestConfig) -> Result<(), ConfigError> {
    let needed = config.max_connections as u64 + OWN_FILES;
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return Ok(());
        }
        if limit.rlim_cur >= needed {
            return Ok(());
        }
        if limit.rlim_max < needed {
            return Err(ConfigError::new(
                "ingest.max_connections",
                format!(
                    "{} connections need {needed} open files, and this process may open at most {} \
                     (ulimit -Hn): lower it or raise the limit",
                    config.max_connections, limit.rlim_max
                ),
            ));
        }
        limit.rlim_cur = needed;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
            return Err(ConfigError::new(
                "ingest.max_connections",
                format!(
                    "cannot raise the open-file limit to {needed}: {}",
                    std::io::Error::last_os_error()
                ),
            ));
        }
    }
    Ok(())
}

/// Connections the admin listener (`ingest.admin_port`) keeps open at most: scrapers and probes.
pub const ADMIN_MAX_CONNECTIONS: usize = 64;

/// A bound, ready-to-run ingest.
pub struct Ingest {
    listener: tokio::net::TcpListener,
    /// `ingest.admin_port`'s listener, when set.
    admin: Option<tokio::net::TcpListener>,
    state: AppState,
    limits: ServerLimits,
    shutdown_delay: Duration,
    flush_timeout: Duration,
}

impl Ingest {
    /// Creates the producer and binds the listener.
    pub async fn bind(config: &IngestConfig, kafka: &KafkaConfig) -> Result<Ingest, ServeError> {
        let metrics = Arc::new(IngestMetrics::new()?);
        let publisher = KafkaPublisher::new(kafka, config)?;
        let addr = format!("{}:{}", config.host, config.port);
        let listener = listen(&addr)
            .await
            .map_err(|source| ServeError::Bind { addr, source })?;
        let admin = match config.admin_addr() {
            Some(addr) => Some(
                listen(&addr)
                    .await
                    .map_err(|source| ServeError::Bind { addr, source })?,
            ),
            None => None,
        };
        Ok(Ingest {
            listener,
            admin,
            state: AppState::new(config, Arc::new(publisher), metrics),
            limits: ServerLimits::from_config(config),
            shutdown_delay: Duration::from_millis(config.shutdown_delay_ms),
            flush_timeout: Duration::from_millis(config.shutdown_flush_ms),
        })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The admin listener's address, when `ingest.admin_port` is set.
    pub fn admin_addr(&self) -> Option<std::io::Result<SocketAddr>> {
        self.admin.as_ref().map(|l| l.local_addr())
    }

    /// Serves until `shutdown` completes, then stops accepting, finishes requests in flight (for up
    /// to `ingest.drain_timeout_ms`, then drops what is still open) and flushes the producer (for
    /// up to `ingest.shutdown_flush_ms`).
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let addr = self.local_addr()?;
        tracing::info!(%addr, path = BEACON_PATH, "ingest listening");
        let publisher = self.state.publisher.clone();
        let housekeeping = self.state.limiter.clone().map(|limiter| {
            let metrics = self.state.metrics.clone();
            tokio::spawn(async move {
                let mut every = tokio::time::interval(Duration::from_secs(1));
                loop {
                    every.tick().await;
                    if limiter.housekeep() {
                        metrics.ratelimit_resets.inc();
                        tracing::warn!(
                            "rate limiter over ingest.rate_limit_max_clients: table reset"
                        );
                    }
                    metrics.ratelimit_clients.set(limiter.len() as i64);
                }
            })
        });
        let readiness = {
            let (readiness, publisher) = (self.state.readiness.clone(), publisher.clone());
            tokio::spawn(async move {
                let mut every = tokio::time::interval(Duration::from_secs(1));
                every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    every.tick().await;
                    readiness.check(&publisher).await;
                }
            })
        };
        let events = self.state.events.clone();
        // Both listeners stop together.
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let admin = self.admin.map(|listener| {
            let limits = ServerLimits {
                max_connections: ADMIN_MAX_CONNECTIONS,
                ..self.limits.clone()
            };
            if let Ok(addr) = listener.local_addr() {
                tracing::info!(%addr, "admin listener: /metrics, /healthz, /readyz");
            }
            let mut stopped = stopped.clone();
            // Its connections are not the public port's: counted apart, in no exported metric.
            let admin_events = IngestMetrics::new()
                .map(|m| Arc::new(events::Events::new(Arc::new(m))))
                .unwrap_or_else(|_| events.clone());
            tokio::spawn(serve(
                listener,
                admin_router(self.state.clone()),
                limits,
                admin_events,
                async move {
                    let _ = stopped.wait_for(|s| *s).await;
                },
            ))
        });
        let (readiness_state, delay) = (self.state.readiness.clone(), self.shutdown_delay);
        serve(
            self.listener,
            router(self.state),
            self.limits,
            events,
            async move {
                shutdown.await;
                // Out of the balancer first, then closed: no new connection meets a closed port.
                readiness_state.stopping();
                if !delay.is_zero() {
                    tracing::info!(
                        shutdown_delay_ms = delay.as_millis() as u64,
                        "ingest stopping: /readyz answers 503, still serving until the delay is over"
                    );
                    tokio::time::sleep(delay).await;
                }
                stop.send_replace(true);
            },
        )
        .await;
        if let Some(admin) = admin {
            let _ = admin.await;
        }
        readiness.abort();
        if let Some(task) = housekeeping {
            task.abort();
        }
        let flush_timeout = self.flush_timeout;
        let flushed = tokio::task::spawn_blocking(move || publisher.flush(flush_timeout))
            .await
            .unwrap_or_else(|e| Err(PublishError::Unavailable(e.to_string())));
        match flushed {
            Ok(()) => tracing::info!("ingest stopped, producer flushed"),
            Err(e) => tracing::error!(error = %e, "ingest stopped, producer flush incomplete"),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn listens_on_a_resolved_address_and_names_what_failed() {
        let listener = listen("127.0.0.1:0").await.expect("binds a free port");
        let addr = listener.local_addr().unwrap();
        assert!(addr.ip().is_loopback() && addr.port() != 0);
        // The same port again is taken: the OS error comes back, not a panic.
        let taken = listen(&addr.to_string()).await.unwrap_err();
        assert_eq!(taken.kind(), std::io::ErrorKind::AddrInUse);
        // No port: refused before any lookup.
        assert!(listen("127.0.0.1").await.is_err());
    }
}
