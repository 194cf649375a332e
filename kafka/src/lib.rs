//! How `rum`'s Kafka clients are set up.
//!
//! - [`client_config`](client_config::client_config): the one librdkafka configuration every client
//!   is built from (brokers, TLS, SASL, the client's own properties, then `kafka.librdkafka_options`),
//!   and [`check`](client_config::check), which asks librdkafka itself about it at start.
//! - [`logging`]: librdkafka's errors and log lines as `tracing` events, each failure once, not once
//!   every reconnection.

pub mod client_config;
pub mod logging;
pub mod topic_id;

pub use client_config::{check, client_config, ClientKind, ClientProperties, ALIASES, OWNED};
pub use logging::{KafkaLog, LoggingContext};
pub use topic_id::{topic_id, TopicIdError};
