//! The Kafka message: one normalized, validated beacon, stamped with `received_at` by the ingest.
//!
//! Key: `site|route|device`. Value: this struct as JSON. Consumers decode with [`BeaconMessage::decode`],
//! which checks the invariants again, so a message from a buggy or foreign producer is dead-lettered
//! with a reason instead of poisoning the rollups.

use serde::{Deserialize, Serialize};

use crate::beacon::check_value;
use crate::device::Device;
use crate::limits::{
    is_valid_sample_rate, is_valid_site, MAX_METRICS_PER_BEACON, MAX_METRIC_ID_LEN,
};
use crate::metric::{MetricName, Rating};
use crate::route::is_normalized_route;

/// One validated metric of a page load.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricSample {
    /// Which metric.
    pub name: MetricName,
    /// Milliseconds, or unitless for CLS.
    pub value: f64,
    /// The client's metric id (may be empty for clients that send none).
    pub id: String,
    /// Recomputed from the thresholds by the ingest.
    pub rating: Rating,
}

/// A normalized beacon: the value of a message on `rum.beacons.v1`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BeaconMessage {
    /// The site, `[a-z0-9._-]`.
    pub site: String,
    /// The route slug, see [`crate::route`].
    pub route: String,
    /// The device class.
    pub device: Device,
    /// The bounded navigation type.
    pub nav_type: String,
    /// The collector's sample rate, in [`crate::limits::MIN_SAMPLE_RATE`, 1].
    pub sample_rate: f64,
    /// Unix milliseconds at which the ingest received the beacon.
    pub received_at: u64,
    /// At least one metric.
    pub metrics: Vec<MetricSample>,
}

/// Why a Kafka message cannot be used. Its [`MessageError::reason`] goes into the dead letter's header.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MessageError {
    /// The value is not a JSON beacon message.
    #[error("undecodable: {0}")]
    Undecodable(String),
    /// The value decodes but breaks an invariant the ingest guarantees.
    #[error("invalid: {0}")]
    Invalid(&'static str),
}

impl MessageError {
    /// A short reason for counters and the dead-letter header.
    pub fn reason(&self) -> &'static str {
        match self {
            MessageError::Undecodable(_) => "undecodable",
            MessageError::Invalid(why) => why,
        }
    }
}

/// `received_at` must be below this (unix ms): 2^32 seconds, the end of ClickHouse's `DateTime`.
pub const MAX_RECEIVED_AT_MS: u64 = (u32::MAX as u64) * 1000;

impl BeaconMessage {
    /// The Kafka key: `site|route|device`, so one route's beacons stay on one partition.
    pub fn key(&self) -> String {
        let device = self.device.as_str();
        let mut key = String::with_capacity(self.site.len() + self.route.len() + device.len() + 2);
        key.push_str(&self.site);
        key.push('|');
        key.push_str(&self.route);
        key.push('|');
        key.push_str(device);
        key
    }

    /// Serializes to the message value.
    pub fn encode(&self) -> Vec<u8> {
        // Sized for a typical message up front: growing the buffer copied it three times.
        let mut out = Vec::with_capacity(160 + 96 * self.metrics.len());
        // A struct of strings, numbers and enums always serializes.
        serde_json::to_writer(&mut out, self).expect("BeaconMessage serializes");
        out
    }

    /// Decodes a message value and checks its invariants.
    pub fn decode(bytes: &[u8]) -> Result<BeaconMessage, MessageError> {
        let msg: BeaconMessage =
            serde_json::from_slice(bytes).map_err(|e| MessageError::Undecodable(e.to_string()))?;
        msg.check()?;
        Ok(msg)
    }

    fn check(&self) -> Result<(), MessageError> {
        if !is_valid_site(&self.site) {
            return Err(MessageError::Invalid("invalid_site"));
        }
        if !is_normalized_route(&self.route) {
            return Err(MessageError::Invalid("invalid_route"));
        }
        if !is_valid_sample_rate(self.sample_rate) {
            return Err(MessageError::Invalid("invalid_sample_rate"));
        }
        // ClickHouse's DateTime is u32 seconds: a later time could not be stored as itself (and a
        // clamped one would not be found again by the consumer's check of what is stored).
        if self.received_at >= MAX_RECEIVED_AT_MS {
            return Err(MessageError::Invalid("invalid_received_at"));
        }
        if self.metrics.is_empty() || self.metrics.len() > MAX_METRICS_PER_BEACON {
            return Err(MessageError::Invalid("invalid_metric_count"));
        }
        for m in &self.metrics {
            if check_value(m.name, m.value).is_err() {
                return Err(MessageError::Invalid("invalid_value"));
            }
            if m.id.len() > MAX_METRIC_ID_LEN {
                return Err(MessageError::Invalid("invalid_metric_id"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> BeaconMessage {
        BeaconMessage {
            site: "shop".into(),
            route: "product-id".into(),
            device: Device::Mobile,
            nav_type: "navigate".into(),
            sample_rate: 0.5,
            received_at: 1_700_000_000_123,
            metrics: vec![MetricSample {
                name: MetricName::CLS,
                value: 0.12,
                id: "v5-1".into(),
                rating: Rating::NeedsImprovement,
            }],
        }
    }

    #[test]
    fn round_trips_through_json() {
        let msg = sample();
        assert_eq!(BeaconMessage::decode(&msg.encode()).unwrap(), msg);
        assert_eq!(msg.key(), "shop|product-id|mobile");
    }

    #[test]
    fn rejects_garbage_and_broken_invariants_with_a_reason() {
        assert_eq!(
            BeaconMessage::decode(b"\xff\x00").unwrap_err().reason(),
            "undecodable"
        );
        let mut msg = sample();
        msg.route = "Not A Slug".into();
        assert_eq!(
            BeaconMessage::decode(&msg.encode()).unwrap_err().reason(),
            "invalid_route"
        );
        let mut msg = sample();
        msg.metrics[0].value = -3.0;
        assert_eq!(
            BeaconMessage::decode(&msg.encode()).unwrap_err().reason(),
            "invalid_value"
        );
        let mut msg = sample();
        msg.sample_rate = 5e-324;
        assert_eq!(
            BeaconMessage::decode(&msg.encode()).unwrap_err().reason(),
            "invalid_sample_rate"
        );
        let mut msg = sample();
        msg.metrics.clear();
        assert_eq!(
            BeaconMessage::decode(&msg.encode()).unwrap_err().reason(),
            "invalid_metric_count"
        );
        let mut msg = sample();
        msg.received_at = MAX_RECEIVED_AT_MS;
        assert_eq!(
            BeaconMessage::decode(&msg.encode()).unwrap_err().reason(),
            "invalid_received_at",
            "past ClickHouse's DateTime: dead-lettered, not clamped"
        );
        msg.received_at = MAX_RECEIVED_AT_MS - 1;
        assert!(BeaconMessage::decode(&msg.encode()).is_ok());
    }
}
