//! The Kafka message: one normalized, validated beacon, stamped with `received_at` by the ingest.
//!
//! Key: `site|route|device`. Value: this struct as JSON. Consumers decode with [`BeaconMessage::decode`],
//! which checks the invariants again, so a message from a buggy or foreign producer is dead-lettered
//! with a reason instead of poisoning the rollups.

use serde::{Deserialize, Serialize};

use crate::attribution::Attribution;
use crate::beacon::check_value;
use crate::browser::{is_browser_family, BROWSER_UNKNOWN, MAX_BROWSER_MAJOR};
use crate::device::Device;
use crate::limits::{
    is_rtt_bucket, is_valid_page_id, is_valid_release, is_valid_sample_rate, is_valid_site,
    MAX_METRICS_PER_BEACON, MAX_METRIC_ID_LEN, RTT_UNKNOWN,
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
    /// The client says it sent this metric id before with another value (web-vitals' `delta` differs
    /// from `value`): the consumer replaces the stored value (see `rum_consumers::final_values`).
    /// Absent from the JSON when false (as before it existed).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub resend: bool,
    /// The metric's normalized attribution; absent from the JSON when empty (as before it existed).
    #[serde(default, skip_serializing_if = "Attribution::is_empty")]
    pub attribution: Attribution,
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
    /// The page load's random id (empty when the beacon had none). The new fields are left out of
    /// the JSON when absent, so the message of a beacon without them is the one it was before they
    /// existed, and a message written before decodes.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub page_id: String,
    /// The site's release, trimmed (empty when the beacon had none).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub release: String,
    /// The bucket of the network's round-trip time, see [`crate::limits::RTT_BUCKETS`]; `unknown`
    /// without one.
    #[serde(default = "rtt_unknown", skip_serializing_if = "is_rtt_unknown")]
    pub rtt: String,
    /// The browser family from the `User-Agent` ([`crate::browser::BROWSER_FAMILIES`]); `unknown`
    /// without one.
    #[serde(
        default = "browser_unknown",
        skip_serializing_if = "is_browser_unknown"
    )]
    pub browser: String,
    /// The browser's major version, 1 to [`crate::browser::MAX_BROWSER_MAJOR`]; 0 when unknown.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub browser_major: u16,
}

fn browser_unknown() -> String {
    BROWSER_UNKNOWN.to_string()
}

fn is_browser_unknown(browser: &str) -> bool {
    browser == BROWSER_UNKNOWN
}

fn is_zero(n: &u16) -> bool {
    *n == 0
}

fn rtt_unknown() -> String {
    RTT_UNKNOWN.to_string()
}

fn is_rtt_unknown(rtt: &str) -> bool {
    rtt == RTT_UNKNOWN
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
        if !self.page_id.is_empty() && !is_valid_page_id(&self.page_id) {
            return Err(MessageError::Invalid("invalid_page_id"));
        }
        if !self.release.is_empty() && !is_valid_release(&self.release) {
            return Err(MessageError::Invalid("invalid_release"));
        }
        if !is_rtt_bucket(&self.rtt) {
            return Err(MessageError::Invalid("invalid_rtt"));
        }
        if !is_browser_family(&self.browser) || self.browser_major > MAX_BROWSER_MAJOR {
            return Err(MessageError::Invalid("invalid_browser"));
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
            if !m.attribution.is_valid_for(m.name) {
                return Err(MessageError::Invalid("invalid_attribution"));
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
                resend: false,
                attribution: Attribution::default(),
            }],
            page_id: String::new(),
            release: String::new(),
            rtt: RTT_UNKNOWN.into(),
            browser: BROWSER_UNKNOWN.into(),
            browser_major: 0,
        }
    }

    fn with_new_fields() -> BeaconMessage {
        let mut msg = sample();
        msg.page_id = "pg_0123-abcd".into();
        msg.release = "v1.2.3 (build 7)".into();
        msg.rtt = "100-300".into();
        msg.browser = "firefox".into();
        msg.browser_major = 133;
        msg.metrics[0].attribution.largest_shift_target = "#banner".into();
        msg
    }

    #[test]
    fn round_trips_through_json() {
        let msg = sample();
        assert_eq!(BeaconMessage::decode(&msg.encode()).unwrap(), msg);
        assert_eq!(msg.key(), "shop|product-id|mobile");
        let msg = with_new_fields();
        let encoded = msg.encode();
        assert_eq!(
            String::from_utf8_lossy(&encoded),
            r##"{"site":"shop","route":"product-id","device":"mobile","nav_type":"navigate","sample_rate":0.5,"received_at":1700000000123,"metrics":[{"name":"CLS","value":0.12,"id":"v5-1","rating":"needs-improvement","attribution":{"largest_shift_target":"#banner"}}],"page_id":"pg_0123-abcd","release":"v1.2.3 (build 7)","rtt":"100-300","browser":"firefox","browser_major":133}"##
        );
        assert_eq!(BeaconMessage::decode(&encoded).unwrap(), msg);
    }

    #[test]
    fn leaves_absent_new_fields_out_of_the_json() {
        let json = String::from_utf8(sample().encode()).unwrap();
        assert_eq!(
            json,
            r#"{"site":"shop","route":"product-id","device":"mobile","nav_type":"navigate","sample_rate":0.5,"received_at":1700000000123,"metrics":[{"name":"CLS","value":0.12,"id":"v5-1","rating":"needs-improvement"}]}"#
        );
    }

    #[test]
    fn dead_letters_new_fields_out_of_their_bounds() {
        let reason =
            |msg: BeaconMessage| BeaconMessage::decode(&msg.encode()).unwrap_err().reason();
        let mut msg = with_new_fields();
        msg.page_id = "short".into();
        assert_eq!(reason(msg), "invalid_page_id");
        let mut msg = with_new_fields();
        msg.release = " v1".into();
        assert_eq!(reason(msg), "invalid_release");
        let mut msg = with_new_fields();
        msg.browser = "netscape".into();
        assert_eq!(reason(msg), "invalid_browser");
        let mut msg = with_new_fields();
        msg.browser_major = 1000;
        assert_eq!(reason(msg), "invalid_browser");
        let mut msg = with_new_fields();
        msg.rtt = "42".into();
        assert_eq!(reason(msg), "invalid_rtt");
        let mut msg = with_new_fields();
        msg.rtt = String::new();
        assert_eq!(
            reason(msg),
            "invalid_rtt",
            "an explicit empty rtt is not absent"
        );
        let mut msg = with_new_fields();
        msg.metrics[0].attribution.target = "img".into();
        assert_eq!(reason(msg), "invalid_attribution", "LCP's field on a CLS");
        let mut msg = with_new_fields();
        msg.metrics[0].attribution.largest_shift_target = "a\u{7}".into();
        assert_eq!(reason(msg), "invalid_attribution");
        let mut msg = sample();
        msg.metrics[0].name = MetricName::INP;
        msg.metrics[0].attribution.interaction_type = "touch".into();
        assert_eq!(reason(msg), "invalid_attribution");
        let mut msg = sample();
        msg.metrics[0].name = MetricName::LCP;
        msg.metrics[0].attribution.url = "https://a.example/x?token=1".into();
        assert_eq!(reason(msg), "invalid_attribution");
        let mut msg = sample();
        msg.metrics[0].name = MetricName::INP;
        msg.metrics[0].attribution.input_delay = Some(-1.0);
        assert_eq!(reason(msg), "invalid_attribution");
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
