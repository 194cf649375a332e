//! Row types and inserts.

use clickhouse::Row;
use rum_schemas::browser::BROWSER_UNKNOWN;
use rum_schemas::kafka::BEACONS_TOPIC;
use rum_schemas::limits::RTT_UNKNOWN;
use rum_schemas::{BeaconMessage, MetricName};
use serde::{Deserialize, Serialize};

use crate::StorageError;

/// The raw table: one row per metric.
pub const VITALS_RAW: &str = "vitals_raw";

/// A row of `vitals_raw`. Field order and names match the table.
#[derive(Debug, Clone, PartialEq, Row, Serialize, Deserialize)]
pub struct VitalsRawRow {
    /// Unix seconds (ClickHouse `DateTime`) at which the ingest received the beacon.
    pub received_at: u32,
    /// The site.
    pub site: String,
    /// The route slug.
    pub route: String,
    /// The device class.
    pub device: String,
    /// The navigation type.
    pub nav_type: String,
    /// The metric name.
    pub metric: String,
    /// Milliseconds, or unitless for CLS.
    pub value: f64,
    /// good, needs-improvement or poor.
    pub rating: String,
    /// The client's metric id.
    pub metric_id: String,
    /// The collector's sample rate.
    pub sample_rate: f64,
    /// The Kafka topic of the message.
    pub kafka_topic: String,
    /// The Kafka topic's id (a topic deleted and created again has a new one; `''` when unknown).
    pub kafka_topic_id: String,
    /// The Kafka partition of the message.
    pub kafka_partition: u32,
    /// The Kafka offset of the message.
    pub kafka_offset: u64,
    /// The page load's random id (`''` when the beacon had none).
    pub page_id: String,
    /// The site's release (`''` when none).
    pub release: String,
    /// The round-trip time's bucket.
    pub rtt: String,
    /// The browser family.
    pub browser: String,
    /// The browser's major version (0: unknown).
    pub browser_major: u16,
    /// The element behind the metric: LCP's largest element, INP's interaction target, CLS's
    /// largest shift target (`''` when not sent).
    pub target: String,
    /// LCP: the largest element's resource URL, without query string.
    pub resource_url: String,
    /// LCP: milliseconds from navigation to the first byte.
    pub time_to_first_byte: Option<f64>,
    /// LCP: milliseconds from the first byte to the resource's load start.
    pub resource_load_delay: Option<f64>,
    /// LCP: milliseconds the resource took to load.
    pub resource_load_duration: Option<f64>,
    /// LCP: milliseconds from the resource's load to the element's render.
    pub element_render_delay: Option<f64>,
    /// INP: `pointer`, `keyboard` or `other` (`''` when not sent).
    pub interaction_type: String,
    /// INP: milliseconds from the input to its handlers' start.
    pub input_delay: Option<f64>,
    /// INP: milliseconds the handlers ran.
    pub processing_duration: Option<f64>,
    /// INP: milliseconds from the handlers' end to the next paint.
    pub presentation_delay: Option<f64>,
    /// INP: the longest script's URL, without query string.
    pub script_url: String,
    /// INP: what invoked the longest script.
    pub script_invoker: String,
    /// 0 for a metric id's first value, +1 for each replacement of it.
    pub revision: u32,
    /// The value this row replaces (0 when `revision` is 0).
    pub replaces_value: f64,
    /// The rating of the value it replaces (`''` when `revision` is 0).
    pub replaces_rating: String,
}

/// Numbers the rows [`VitalsRawRow::measured`] makes.
static MEASURED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl VitalsRawRow {
    /// A row for one metric measured outside a Kafka message (tests, backfills): rating from the
    /// thresholds, navigation `navigate`, sample rate 1, topic `rum.beacons.v1`, partition and offset 0,
    /// and an id made of the inputs and a number of its own. Change any field with struct update syntax.
    pub fn measured(
        site: &str,
        route: &str,
        device: &str,
        metric: MetricName,
        value: f64,
        received_at: u32,
    ) -> Self {
        VitalsRawRow {
            received_at,
            site: site.into(),
            route: route.into(),
            device: device.into(),
            nav_type: "navigate".into(),
            metric: metric.as_str().into(),
            value,
            rating: metric.rate(value).as_str().into(),
            // Unique per row made: vitals_raw (a ReplacingMergeTree since 007) keeps one row of a metric
            // id in a place and second.
            metric_id: format!(
                "{site}-{route}-{device}-{}-{received_at}-{value}-{}",
                metric.as_str(),
                MEASURED.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            ),
            sample_rate: 1.0,
            kafka_topic: BEACONS_TOPIC.into(),
            kafka_topic_id: String::new(),
            kafka_partition: 0,
            kafka_offset: 0,
            page_id: String::new(),
            release: String::new(),
            rtt: RTT_UNKNOWN.into(),
            browser: BROWSER_UNKNOWN.into(),
            browser_major: 0,
            target: String::new(),
            resource_url: String::new(),
            time_to_first_byte: None,
            resource_load_delay: None,
            resource_load_duration: None,
            element_render_delay: None,
            interaction_type: String::new(),
            input_delay: None,
            processing_duration: None,
            presentation_delay: None,
            script_url: String::new(),
            script_invoker: String::new(),
            revision: 0,
            replaces_value: 0.0,
            replaces_rating: String::new(),
        }
    }
}

/// A row of `vitals_raw` that borrows its strings from the message: what the consumer writes, with
/// no allocation per row. The same columns in the same order as [`VitalsRawRow`].
#[derive(Debug, Clone, Copy, PartialEq, Row, Serialize)]
pub struct VitalsRawRowRef<'a> {
    /// Unix seconds (ClickHouse `DateTime`) at which the ingest received the beacon.
    pub received_at: u32,
    /// The site.
    pub site: &'a str,
    /// The route slug.
    pub route: &'a str,
    /// The device class.
    pub device: &'a str,
    /// The navigation type.
    pub nav_type: &'a str,
    /// The metric name.
    pub metric: &'a str,
    /// Milliseconds, or unitless for CLS.
    pub value: f64,
    /// good, needs-improvement or poor.
    pub rating: &'a str,
    /// The client's metric id.
    pub metric_id: &'a str,
    /// The collector's sample rate.
    pub sample_rate: f64,
    /// The Kafka topic of the message.
    pub kafka_topic: &'a str,
    /// The Kafka topic's id (`''` when unknown).
    pub kafka_topic_id: &'a str,
    /// The Kafka partition of the message.
    pub kafka_partition: u32,
    /// The Kafka offset of the message.
    pub kafka_offset: u64,
    /// The page load's random id (`''` when the beacon had none).
    pub page_id: &'a str,
    /// The site's release (`''` when none).
    pub release: &'a str,
    /// The round-trip time's bucket.
    pub rtt: &'a str,
    /// The browser family.
    pub browser: &'a str,
    /// The browser's major version (0: unknown).
    pub browser_major: u16,
    /// The element behind the metric: LCP's largest element, INP's interaction target, CLS's
    /// largest shift target (`''` when not sent).
    pub target: &'a str,
    /// LCP: the largest element's resource URL, without query string.
    pub resource_url: &'a str,
    /// LCP: milliseconds from navigation to the first byte.
    pub time_to_first_byte: Option<f64>,
    /// LCP: milliseconds from the first byte to the resource's load start.
    pub resource_load_delay: Option<f64>,
    /// LCP: milliseconds the resource took to load.
    pub resource_load_duration: Option<f64>,
    /// LCP: milliseconds from the resource's load to the element's render.
    pub element_render_delay: Option<f64>,
    /// INP: `pointer`, `keyboard` or `other` (`''` when not sent).
    pub interaction_type: &'a str,
    /// INP: milliseconds from the input to its handlers' start.
    pub input_delay: Option<f64>,
    /// INP: milliseconds the handlers ran.
    pub processing_duration: Option<f64>,
    /// INP: milliseconds from the handlers' end to the next paint.
    pub presentation_delay: Option<f64>,
    /// INP: the longest script's URL, without query string.
    pub script_url: &'a str,
    /// INP: what invoked the longest script.
    pub script_invoker: &'a str,
    /// 0 for a metric id's first value, +1 for each replacement of it.
    pub revision: u32,
    /// The value this row replaces (0 when `revision` is 0).
    pub replaces_value: f64,
    /// The rating of the value it replaces (`''` when `revision` is 0).
    pub replaces_rating: &'a str,
}

/// The rows of one Kafka message, one per metric, borrowing from it.
pub fn raw_row_refs<'a>(
    msg: &'a BeaconMessage,
    topic: &'a str,
    topic_id: &'a str,
    partition: u32,
    offset: u64,
) -> impl Iterator<Item = VitalsRawRowRef<'a>> + 'a {
    let received_at = u32::try_from(msg.received_at / 1000).unwrap_or(u32::MAX);
    msg.metrics.iter().map(move |metric| {
        let a = &metric.attribution;
        VitalsRawRowRef {
            received_at,
            site: &msg.site,
            route: &msg.route,
            device: msg.device.as_str(),
            nav_type: &msg.nav_type,
            metric: metric.name.as_str(),
            value: metric.value,
            rating: metric.rating.as_str(),
            metric_id: &metric.id,
            sample_rate: msg.sample_rate,
            kafka_topic: topic,
            kafka_topic_id: topic_id,
            kafka_partition: partition,
            kafka_offset: offset,
            page_id: &msg.page_id,
            release: &msg.release,
            rtt: &msg.rtt,
            browser: &msg.browser,
            browser_major: msg.browser_major,
            target: a.element(),
            resource_url: &a.url,
            time_to_first_byte: a.time_to_first_byte,
            resource_load_delay: a.resource_load_delay,
            resource_load_duration: a.resource_load_duration,
            element_render_delay: a.element_render_delay,
            interaction_type: &a.interaction_type,
            input_delay: a.input_delay,
            processing_duration: a.processing_duration,
            presentation_delay: a.presentation_delay,
            script_url: &a.script_url,
            script_invoker: &a.script_invoker,
            revision: 0,
            replaces_value: 0.0,
            replaces_rating: "",
        }
    })
}

/// Inserts rows measured outside Kafka (tests, backfills) into `vitals_raw`, then their rollup into
/// `vitals_1m`: two requests, with no ledger and no exactly-once (the consumer's path is
/// `rum_consumers`' write steps).
pub async fn insert_raw_rows(
    client: &clickhouse::Client,
    rows: &[VitalsRawRow],
) -> Result<(), StorageError> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut insert = client.insert::<VitalsRawRow>(VITALS_RAW).await?;
    for row in rows {
        insert.write(row).await?;
    }
    insert.end().await?;
    let mut rollup = client
        .insert::<crate::ledger::RollupInputRef<'_>>(crate::ledger::VITALS_1M_INPUT)
        .await?;
    for row in rows {
        rollup
            .write(&crate::ledger::RollupInputRef {
                received_at: row.received_at,
                site: &row.site,
                route: &row.route,
                device: &row.device,
                metric: &row.metric,
                value: row.value,
                rating: &row.rating,
                sample_rate: row.sample_rate,
                kafka_partition: row.kafka_partition,
                ledger_next: 0,
                prev_value: row.replaces_value,
                prev_rating: &row.replaces_rating,
            })
            .await?;
    }
    rollup.end().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rum_schemas::{Device, MetricSample, Rating};

    #[test]
    fn one_row_per_metric_with_the_message_position() {
        let msg = BeaconMessage {
            site: "shop".into(),
            route: "cart".into(),
            device: Device::Tablet,
            nav_type: "reload".into(),
            sample_rate: 0.25,
            received_at: 1_700_000_000_999,
            page_id: String::new(),
            release: String::new(),
            rtt: "unknown".into(),
            browser: "unknown".into(),
            browser_major: 0,
            metrics: vec![
                MetricSample {
                    name: MetricName::LCP,
                    value: 1.0,
                    id: "a".into(),
                    rating: Rating::Good,
                    resend: false,
                    attribution: Default::default(),
                },
                MetricSample {
                    name: MetricName::CLS,
                    value: 0.3,
                    id: "b".into(),
                    rating: Rating::Poor,
                    resend: false,
                    attribution: Default::default(),
                },
            ],
        };
        let rows: Vec<_> = raw_row_refs(&msg, "rum.beacons.v1", "id", 3, 42).collect();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].received_at, 1_700_000_000);
        assert_eq!((rows[1].metric, rows[1].rating), ("CLS", "poor"));
        assert_eq!((rows[1].kafka_partition, rows[1].kafka_offset), (3, 42));
        assert_eq!(rows[0].device, "tablet");
        assert_eq!((rows[0].metric_id, rows[1].metric_id), ("a", "b"));
    }

    #[test]
    fn borrowed_and_owned_rows_have_the_same_columns() {
        assert_eq!(
            <VitalsRawRowRef<'_> as Row>::COLUMN_NAMES,
            <VitalsRawRow as Row>::COLUMN_NAMES
        );
    }
}
