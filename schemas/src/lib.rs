//! The contracts every other crate of `rum` relies on.
//!
//! - [`beacon`]: what browsers send (beacon v1, or a bare `web-vitals` Metric with a `route`).
//! - [`attribution`]: a metric's optional attribution (the element, resource and phases behind it).
//! - [`metric`]: the metric names, their validation ranges and Google's thresholds.
//! - [`limits`]: the bounds of a beacon (metrics, ids, site names, `sample_rate`, `page_id`,
//!   `release`, the `rtt` buckets, attribution strings), stated once.
//! - [`message`]: the normalized beacon that travels through Kafka.
//! - [`route`], [`device`] and [`browser`]: the bounded labels.
//! - [`kafka`]: topic names and the connection settings shared by producers and consumers.
//! - [`config`]: the error every configuration check reports.

pub mod attribution;
pub mod beacon;
pub mod browser;
pub mod config;
pub mod device;
pub mod kafka;
pub mod limits;
pub mod message;
pub mod metric;
pub mod route;

pub use attribution::Attribution;
pub use beacon::{parse_beacon, Beacon, BeaconError, RawMetric};
pub use config::ConfigError;
pub use device::Device;
pub use message::{BeaconMessage, MessageError, MetricSample, MAX_RECEIVED_AT_MS};
pub use metric::{MetricName, Rating};
pub use route::normalize_route;
