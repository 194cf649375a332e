//! What browsers send: beacon v1, or a bare `web-vitals` Metric object (with a `route`, or posted
//! from the page itself so that the ingest knows the route from the `Referer`).
//!
//! Parsing is lenient where the protocol may grow (unknown fields are ignored) and strict where
//! values matter: every metric is validated on its own and dropped with a reason, an invalid
//! attribution is dropped from its metric (which is kept) with a reason, and a beacon with nothing
//! valid left is rejected with a reason.

use std::borrow::Cow;

use serde::Deserialize;

use crate::attribution::{Attribution, RawAttribution};
use crate::browser::Browser;
use crate::device::Device;
use crate::limits::{
    is_valid_page_id, is_valid_rtt, is_valid_sample_rate, normalize_release, rtt_bucket,
    MAX_RELEASE_LEN, MAX_RTT_MS, MAX_SAMPLE_RATE, MIN_SAMPLE_RATE,
};
pub use crate::limits::{is_valid_site, MAX_METRICS_PER_BEACON, MAX_METRIC_ID_LEN, MAX_SITE_LEN};
use crate::message::{BeaconMessage, MetricSample};
use crate::metric::MetricName;
use crate::route::normalize_route;

/// One metric as sent, before validation. Strings borrow from the body unless JSON escapes
/// forced a copy.
#[derive(Debug, Clone, Deserialize)]
pub struct RawMetric<'a> {
    /// `LCP`, `INP`, `CLS`, `FCP`, `TTFB` or `FID`.
    #[serde(borrow)]
    pub name: Text<'a>,
    /// Milliseconds, or unitless for CLS.
    pub value: f64,
    /// The page-load-unique id `web-vitals` gives each metric; used to remove client duplicates.
    #[serde(default, borrow)]
    pub id: Text<'a>,
    /// The client's rating (must be a string when present); the server recomputes it from the thresholds.
    #[serde(default, borrow)]
    pub rating: Option<Text<'a>>,
    /// What caused the value (`web-vitals`' attribution build), see [`crate::attribution`]; `null`
    /// is absent.
    #[serde(default, borrow)]
    pub attribution: Option<RawAttribution<'a>>,
    /// The rum collector's flag: this metric id was sent before with another value (must be a
    /// boolean when present; `null` is absent).
    #[serde(default)]
    pub resend: Option<bool>,
    /// `web-vitals`' change since the metric id's previous report (must be a number when present;
    /// `null` is absent): the first report has `delta == value`, a later one of the same id not.
    #[serde(default)]
    pub delta: Option<f64>,
}

impl RawMetric<'_> {
    /// Whether the client sent this metric id before: the collector's `resend: true`, or a
    /// `web-vitals` `delta` that is not the value (a finite one: web-vitals' first report has
    /// `delta == value` exactly, and both are the same JSON number, so they parse equal).
    pub fn is_resend(&self) -> bool {
        self.resend == Some(true)
            || self
                .delta
                .is_some_and(|delta| delta.is_finite() && delta != self.value)
    }
}

/// A parsed beacon in either accepted form, before validation. Strings borrow from the body.
#[derive(Debug, Clone, Default)]
pub struct Beacon<'a> {
    /// The site; may also come from the query string.
    pub site: Option<Text<'a>>,
    /// The page path or URL, normalized into a slug.
    pub route: Option<Text<'a>>,
    /// A device hint from the collector.
    pub device: Option<Text<'a>>,
    /// The navigation type (`navigate`, `reload`, ...).
    pub nav_type: Option<Text<'a>>,
    /// The share of page loads the collector sampled, in [`MIN_SAMPLE_RATE`, `MAX_SAMPLE_RATE`].
    pub sample_rate: Option<f64>,
    /// A random id of the page load, joining its metrics across beacons.
    pub page_id: Option<Text<'a>>,
    /// The site's release (version, build) the page ran.
    pub release: Option<Text<'a>>,
    /// The network's round-trip time in milliseconds (`navigator.connection.rtt`).
    pub rtt: Option<f64>,
    /// The metrics, unvalidated.
    pub metrics: Vec<RawMetric<'a>>,
}

/// A JSON string that borrows from the body when it has no escapes (serde's own `Cow<str>` always
/// copies inside an `Option` or a `Vec`): parsing a beacon allocates for its metrics, not its strings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Text<'a>(pub Cow<'a, str>);

impl std::ops::Deref for Text<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

/// Both wire forms in one shape: beacon v1 has `metrics`, a bare Metric has `name` and `value`.
#[derive(Deserialize)]
struct WireBeacon<'a> {
    #[serde(borrow)]
    site: Option<Text<'a>>,
    #[serde(borrow)]
    route: Option<Text<'a>>,
    #[serde(borrow)]
    device: Option<Text<'a>>,
    #[serde(borrow)]
    nav_type: Option<Text<'a>>,
    #[serde(rename = "navigationType", borrow)]
    navigation_type: Option<Text<'a>>,
    sample_rate: Option<f64>,
    #[serde(borrow)]
    page_id: Option<Text<'a>>,
    #[serde(borrow)]
    release: Option<Text<'a>>,
    rtt: Option<f64>,
    #[serde(borrow)]
    metrics: Option<Vec<RawMetric<'a>>>,
    #[serde(borrow)]
    name: Option<Text<'a>>,
    value: Option<f64>,
    #[serde(borrow)]
    id: Option<Text<'a>>,
    #[serde(borrow)]
    rating: Option<Text<'a>>,
    #[serde(borrow)]
    attribution: Option<RawAttribution<'a>>,
    resend: Option<bool>,
    delta: Option<f64>,
}

/// Why a whole beacon was rejected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BeaconError {
    /// Not JSON, not an object, or a field of the wrong type.
    #[error("malformed beacon: {0}")]
    Malformed(String),
    /// Neither the body nor the query string names the site.
    #[error("missing site")]
    MissingSite,
    /// The site is not `[a-z0-9._-]`, 1 to 64 characters.
    #[error("invalid site: must be [a-z0-9._-], at most 64 characters")]
    InvalidSite,
    /// No `route`, and no usable `Referer` path (see [`RequestContext::referer_path`]).
    #[error(
        "missing route: send a route field, or post from the page (same origin) with its Referer"
    )]
    MissingRoute,
    /// `sample_rate` outside [`MIN_SAMPLE_RATE`, `MAX_SAMPLE_RATE`] (0.0001 to 1).
    #[error("invalid sample_rate: must be between {MIN_SAMPLE_RATE} and {MAX_SAMPLE_RATE}")]
    InvalidSampleRate,
    /// `page_id` is not 8 to 64 characters of `[A-Za-z0-9_-]`.
    #[error("invalid page_id: must be 8 to 64 characters of [A-Za-z0-9_-]")]
    InvalidPageId,
    /// `release`, trimmed, is not 1 to [`MAX_RELEASE_LEN`] printable ASCII characters.
    #[error("invalid release: must be 1 to {MAX_RELEASE_LEN} printable ASCII characters")]
    InvalidRelease,
    /// `rtt` is not a number of milliseconds from 0 to [`MAX_RTT_MS`].
    #[error("invalid rtt: must be a number of milliseconds between 0 and {MAX_RTT_MS}")]
    InvalidRtt,
    /// More than [`MAX_METRICS_PER_BEACON`] metrics.
    #[error("too many metrics: at most 32")]
    TooManyMetrics,
    /// Every metric was dropped (or there were none).
    #[error("no valid metrics")]
    NoValidMetrics,
}

impl BeaconError {
    /// The `reason` label of the rejection counter.
    pub fn reason(&self) -> &'static str {
        match self {
            BeaconError::Malformed(_) => "malformed_json",
            BeaconError::MissingSite => "missing_site",
            BeaconError::InvalidSite => "invalid_site",
            BeaconError::MissingRoute => "missing_route",
            BeaconError::InvalidSampleRate => "invalid_sample_rate",
            BeaconError::InvalidPageId => "invalid_page_id",
            BeaconError::InvalidRelease => "invalid_release",
            BeaconError::InvalidRtt => "invalid_rtt",
            BeaconError::TooManyMetrics => "too_many_metrics",
            BeaconError::NoValidMetrics => "no_valid_metrics",
        }
    }
}

/// Why one metric was dropped from an otherwise valid beacon.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MetricRejection {
    /// Not one of the known names.
    UnknownMetric,
    /// NaN or infinite.
    NonFiniteValue,
    /// Below zero.
    NegativeValue,
    /// Above the metric's maximum.
    ValueOutOfRange,
    /// Longer than [`MAX_METRIC_ID_LEN`].
    IdTooLong,
    /// The same id twice in one beacon.
    DuplicateId,
}

impl MetricRejection {
    /// The `reason` label of the dropped-metric counter.
    pub fn reason(self) -> &'static str {
        match self {
            MetricRejection::UnknownMetric => "unknown_metric",
            MetricRejection::NonFiniteValue => "non_finite_value",
            MetricRejection::NegativeValue => "negative_value",
            MetricRejection::ValueOutOfRange => "value_out_of_range",
            MetricRejection::IdTooLong => "id_too_long",
            MetricRejection::DuplicateId => "duplicate_id",
        }
    }
}

/// Why a metric's attribution was dropped (the metric and its value are kept, without attribution).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AttributionRejection {
    /// A field of the metric's `attribution` is invalid (or `attribution` is not an object).
    Invalid,
}

impl AttributionRejection {
    /// The `reason` label of the dropped-attribution counter.
    pub fn reason(self) -> &'static str {
        match self {
            AttributionRejection::Invalid => "invalid_attribution",
        }
    }
}

/// What the server knows besides the body.
#[derive(Debug, Clone, Copy)]
pub struct RequestContext<'a> {
    /// `site` from the query string, used when the body has none.
    pub query_site: Option<&'a str>,
    /// The device class from request headers, used when the body has no valid hint.
    pub header_device: Device,
    /// Unix milliseconds at which the ingest received the beacon.
    pub received_at_ms: u64,
    /// The browser from the `User-Agent` ([`Browser::from_user_agent`]).
    pub browser: Browser,
    /// The path of the page that sent the beacon (the `Referer`'s, without query string), used
    /// when the body has no `route`: `web-vitals`' README posts bare Metric objects, which have
    /// none. The ingest gives it only for a first-party request (same origin), where the browser
    /// sends the page's full URL; only the normalized route is kept.
    pub referer_path: Option<&'a str>,
}

/// A validated beacon and the metrics dropped from it.
#[derive(Debug, Clone)]
pub struct Validated {
    /// The normalized message to publish.
    pub message: BeaconMessage,
    /// One entry per dropped metric.
    pub dropped: Vec<MetricRejection>,
    /// One entry per attribution dropped from a kept metric.
    pub dropped_attributions: Vec<AttributionRejection>,
    /// True when the route came from [`RequestContext::referer_path`].
    pub route_from_referer: bool,
}

/// Parses a body in either wire form. Unknown fields are ignored.
pub fn parse_beacon(body: &[u8]) -> Result<Beacon<'_>, BeaconError> {
    let wire: WireBeacon =
        serde_json::from_slice(body).map_err(|e| BeaconError::Malformed(e.to_string()))?;
    let metrics = match (wire.metrics, wire.name, wire.value) {
        (Some(metrics), _, _) => metrics,
        (None, Some(name), Some(value)) => vec![RawMetric {
            name,
            value,
            id: wire.id.unwrap_or_default(),
            rating: wire.rating,
            attribution: wire.attribution,
            resend: wire.resend,
            delta: wire.delta,
        }],
        (None, _, _) => Vec::new(),
    };
    Ok(Beacon {
        site: wire.site,
        route: wire.route,
        device: wire.device,
        nav_type: wire.nav_type.or(wire.navigation_type),
        sample_rate: wire.sample_rate,
        page_id: wire.page_id,
        release: wire.release,
        rtt: wire.rtt,
        metrics,
    })
}

impl Beacon<'_> {
    /// Validates and normalizes into the message published to Kafka.
    pub fn validate(self, ctx: &RequestContext<'_>) -> Result<Validated, BeaconError> {
        let site = self
            .site
            .as_deref()
            .filter(|s| !s.is_empty())
            .or(ctx.query_site.filter(|s| !s.is_empty()))
            .ok_or(BeaconError::MissingSite)?;
        if !is_valid_site(site) {
            return Err(BeaconError::InvalidSite);
        }
        let (route, route_from_referer) = match (self.route.as_deref(), ctx.referer_path) {
            (Some(route), _) => (route, false),
            (None, Some(path)) => (path, true),
            (None, None) => return Err(BeaconError::MissingRoute),
        };
        let sample_rate = self.sample_rate.unwrap_or(MAX_SAMPLE_RATE);
        if !is_valid_sample_rate(sample_rate) {
            return Err(BeaconError::InvalidSampleRate);
        }
        let page_id = match self.page_id.as_deref() {
            None => "",
            Some(id) if is_valid_page_id(id) => id,
            Some(_) => return Err(BeaconError::InvalidPageId),
        };
        let release = match self.release.as_deref() {
            None => "",
            Some(release) => normalize_release(release).ok_or(BeaconError::InvalidRelease)?,
        };
        if self.rtt.is_some_and(|rtt| !is_valid_rtt(rtt)) {
            return Err(BeaconError::InvalidRtt);
        }
        if self.metrics.len() > MAX_METRICS_PER_BEACON {
            return Err(BeaconError::TooManyMetrics);
        }
        let mut dropped = Vec::new();
        let mut dropped_attributions = Vec::new();
        let mut metrics: Vec<MetricSample> = Vec::with_capacity(self.metrics.len());
        for raw in self.metrics {
            match validate_metric(raw) {
                Ok((sample, _))
                    if !sample.id.is_empty() && metrics.iter().any(|m| m.id == sample.id) =>
                {
                    dropped.push(MetricRejection::DuplicateId)
                }
                Ok((sample, attribution_dropped)) => {
                    dropped_attributions.extend(attribution_dropped);
                    metrics.push(sample);
                }
                Err(why) => dropped.push(why),
            }
        }
        if metrics.is_empty() {
            return Err(BeaconError::NoValidMetrics);
        }
        let device = self
            .device
            .as_deref()
            .and_then(Device::parse)
            .filter(|d| *d != Device::Unknown)
            .unwrap_or(ctx.header_device);
        Ok(Validated {
            message: BeaconMessage {
                site: site.to_string(),
                route: normalize_route(route),
                device,
                nav_type: normalize_nav_type(self.nav_type.as_deref()).to_string(),
                sample_rate,
                received_at: ctx.received_at_ms,
                metrics,
                page_id: page_id.to_string(),
                release: release.to_string(),
                rtt: rtt_bucket(self.rtt).to_string(),
                browser: ctx.browser.family.to_string(),
                browser_major: ctx.browser.major,
            },
            dropped,
            dropped_attributions,
            route_from_referer,
        })
    }
}

/// Checks one metric and recomputes its rating. An invalid attribution does not cost the metric:
/// it is kept without attribution, and the rejection returned beside it.
pub fn validate_metric(
    raw: RawMetric<'_>,
) -> Result<(MetricSample, Option<AttributionRejection>), MetricRejection> {
    let name = MetricName::parse(&raw.name).ok_or(MetricRejection::UnknownMetric)?;
    check_value(name, raw.value)?;
    if raw.id.len() > MAX_METRIC_ID_LEN {
        return Err(MetricRejection::IdTooLong);
    }
    let (attribution, attribution_dropped) =
        match Attribution::normalize(name, raw.attribution.as_ref()) {
            Ok(attribution) => (attribution, None),
            Err(_) => (Attribution::default(), Some(AttributionRejection::Invalid)),
        };
    let resend = raw.is_resend();
    let sample = MetricSample {
        name,
        value: raw.value,
        rating: name.rate(raw.value),
        id: raw.id.0.into_owned(),
        resend,
        attribution,
    };
    Ok((sample, attribution_dropped))
}

/// Checks a value against the metric's range.
pub fn check_value(name: MetricName, value: f64) -> Result<(), MetricRejection> {
    if !value.is_finite() {
        Err(MetricRejection::NonFiniteValue)
    } else if value < 0.0 {
        Err(MetricRejection::NegativeValue)
    } else if value > name.max_value() {
        Err(MetricRejection::ValueOutOfRange)
    } else {
        Ok(())
    }
}

/// The navigation types `web-vitals` reports; anything else is `other`, to keep the label bounded.
pub fn normalize_nav_type(nav_type: Option<&str>) -> &'static str {
    match nav_type {
        Some("navigate") => "navigate",
        Some("reload") => "reload",
        Some("back-forward") | Some("back_forward") => "back-forward",
        Some("back-forward-cache") => "back-forward-cache",
        Some("prerender") => "prerender",
        Some("restore") => "restore",
        // web-vitals' soft navigations (a single-page app's route change, reported as its own page
        // view); the collector sends the new route.
        Some("soft-navigation") => "soft-navigation",
        None | Some("") => "unknown",
        Some(_) => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metric::Rating;

    const CTX: RequestContext<'static> = RequestContext {
        query_site: None,
        header_device: Device::Desktop,
        received_at_ms: 1_700_000_000_000,
        browser: Browser::UNKNOWN,
        referer_path: None,
    };

    fn validate(body: &str) -> Result<Validated, BeaconError> {
        parse_beacon(body.as_bytes())?.validate(&CTX)
    }

    #[test]
    fn accepts_the_design_example() {
        let v = validate(r#"{"site":"shop","route":"/product/123","device":"mobile","nav_type":"navigate","sample_rate":0.25,"metrics":[{"name":"LCP","value":2310.5,"id":"v5-1700-123","rating":"good"}]}"#).unwrap();
        let m = v.message;
        assert_eq!(
            (m.site.as_str(), m.route.as_str(), m.device),
            ("shop", "product-id", Device::Mobile)
        );
        assert_eq!(m.sample_rate, 0.25);
        assert_eq!(m.received_at, 1_700_000_000_000);
        assert_eq!(m.metrics.len(), 1);
        assert_eq!(m.metrics[0].rating, Rating::Good);
        assert!(v.dropped.is_empty());
    }

    #[test]
    fn accepts_a_bare_web_vitals_metric_with_a_route() {
        let v = validate(r#"{"name":"INP","value":612,"rating":"poor","delta":612,"id":"v5-1","navigationType":"reload","entries":[],"route":"/cart","site":"shop"}"#).unwrap();
        assert_eq!(v.message.metrics[0].name, MetricName::INP);
        assert_eq!(v.message.nav_type, "reload");
        assert_eq!(
            v.message.device,
            Device::Desktop,
            "falls back to the header device"
        );
    }

    #[test]
    fn ignores_unknown_fields() {
        assert!(validate(r#"{"site":"s","route":"/","v":9,"extra":{"a":[1]},"metrics":[{"name":"CLS","value":0,"id":"a","attribution":{}}]}"#).is_ok());
    }

    #[test]
    fn takes_the_site_from_the_query_when_the_body_has_none() {
        let ctx = RequestContext {
            query_site: Some("blog"),
            ..CTX
        };
        let v = parse_beacon(br#"{"route":"/","metrics":[{"name":"LCP","value":1,"id":"a"}]}"#)
            .unwrap()
            .validate(&ctx)
            .unwrap();
        assert_eq!(v.message.site, "blog");
    }

    #[test]
    fn rejects_beacons_with_a_reason() {
        let cases = [
            ("not json", "malformed_json"),
            ("[1,2]", "malformed_json"),
            (
                r#"{"site":"s","route":"/","metrics":[{"name":"LCP","value":"fast"}]}"#,
                "malformed_json",
            ),
            (
                r#"{"route":"/","metrics":[{"name":"LCP","value":1}]}"#,
                "missing_site",
            ),
            (
                r#"{"site":"Shop Site","route":"/","metrics":[{"name":"LCP","value":1}]}"#,
                "invalid_site",
            ),
            (
                r#"{"site":"s","metrics":[{"name":"LCP","value":1}]}"#,
                "missing_route",
            ),
            (
                r#"{"site":"s","route":"/","sample_rate":0,"metrics":[{"name":"LCP","value":1}]}"#,
                "invalid_sample_rate",
            ),
            (
                r#"{"site":"s","route":"/","sample_rate":1.5,"metrics":[{"name":"LCP","value":1}]}"#,
                "invalid_sample_rate",
            ),
            (
                r#"{"site":"s","route":"/","sample_rate":5e-324,"metrics":[{"name":"LCP","value":1}]}"#,
                "invalid_sample_rate",
            ),
            (
                r#"{"site":"s","route":"/","sample_rate":0.00009,"metrics":[{"name":"LCP","value":1}]}"#,
                "invalid_sample_rate",
            ),
            (
                r#"{"site":"s","route":"/","sample_rate":-1,"metrics":[{"name":"LCP","value":1}]}"#,
                "invalid_sample_rate",
            ),
            (
                r#"{"site":"s","route":"/","metrics":[]}"#,
                "no_valid_metrics",
            ),
            (
                r#"{"site":"s","route":"/","metrics":[{"name":"XYZ","value":1}]}"#,
                "no_valid_metrics",
            ),
        ];
        for (body, reason) in cases {
            assert_eq!(validate(body).unwrap_err().reason(), reason, "body {body}");
        }
        let many = format!(
            r#"{{"site":"s","route":"/","metrics":[{}]}}"#,
            vec![r#"{"name":"LCP","value":1}"#; 33].join(",")
        );
        assert_eq!(validate(&many).unwrap_err().reason(), "too_many_metrics");
    }

    #[test]
    fn accepts_the_smallest_sample_rate_and_names_the_range_when_below_it() {
        let v = validate(
            r#"{"site":"s","route":"/","sample_rate":0.0001,"metrics":[{"name":"LCP","value":1}]}"#,
        )
        .unwrap();
        assert_eq!(v.message.sample_rate, MIN_SAMPLE_RATE);
        let absent =
            validate(r#"{"site":"s","route":"/","metrics":[{"name":"LCP","value":1}]}"#).unwrap();
        assert_eq!(absent.message.sample_rate, 1.0);
        assert_eq!(
            BeaconError::InvalidSampleRate.to_string(),
            "invalid sample_rate: must be between 0.0001 and 1"
        );
    }

    #[test]
    fn drops_invalid_metrics_one_by_one() {
        let long_id = "x".repeat(129);
        let body = format!(
            r#"{{"site":"s","route":"/","metrics":[
            {{"name":"LCP","value":1200,"id":"ok"}},
            {{"name":"FOO","value":1,"id":"a"}},
            {{"name":"INP","value":-1,"id":"b"}},
            {{"name":"TTFB","value":600001,"id":"c"}},
            {{"name":"CLS","value":10.5,"id":"d"}},
            {{"name":"FCP","value":1,"id":"{long_id}"}},
            {{"name":"FCP","value":1,"id":"ok"}}]}}"#
        );
        let v = validate(&body).unwrap();
        assert_eq!(v.message.metrics.len(), 1);
        let reasons: Vec<_> = v.dropped.iter().map(|r| r.reason()).collect();
        assert_eq!(
            reasons,
            [
                "unknown_metric",
                "negative_value",
                "value_out_of_range",
                "value_out_of_range",
                "id_too_long",
                "duplicate_id"
            ]
        );
    }

    #[test]
    fn rejects_non_finite_values() {
        assert_eq!(
            check_value(MetricName::LCP, f64::NAN),
            Err(MetricRejection::NonFiniteValue)
        );
        assert_eq!(
            check_value(MetricName::LCP, f64::INFINITY),
            Err(MetricRejection::NonFiniteValue)
        );
        // JSON itself has no NaN: such bodies are malformed.
        assert_eq!(
            validate(r#"{"site":"s","route":"/","metrics":[{"name":"LCP","value":NaN}]}"#)
                .unwrap_err()
                .reason(),
            "malformed_json"
        );
        assert_eq!(
            validate(r#"{"site":"s","route":"/","metrics":[{"name":"LCP","value":1e999}]}"#)
                .unwrap_err()
                .reason(),
            "malformed_json"
        );
    }

    #[test]
    fn recomputes_a_wrong_client_rating() {
        let v = validate(
            r#"{"site":"s","route":"/","metrics":[{"name":"LCP","value":5000,"rating":"good"}]}"#,
        )
        .unwrap();
        assert_eq!(v.message.metrics[0].rating, Rating::Poor);
    }

    #[test]
    fn accepts_and_normalizes_the_optional_fields() {
        let v = validate(
            r##"{"site":"shop","route":"/p/1","page_id":"pg_0123-ABCD","release":"  v2.4.1 (build 88) ","rtt":250,
            "metrics":[
              {"name":"LCP","value":3000,"id":"l","attribution":{"target":"img.hero","url":"https://cdn.example/a.jpg?w=1#x",
                "timeToFirstByte":200,"resourceLoadDelay":10,"resourceLoadDuration":900,"elementRenderDelay":5,
                "interactionType":{"not":"LCP's"},"lcpEntry":{}}},
              {"name":"INP","value":180,"id":"i","attribution":{"interactionTarget":"#buy","interactionType":"touch",
                "inputDelay":3,"processingDuration":100,"presentationDelay":77,"scriptUrl":"/app.js?v=3","scriptInvoker":"BUTTON.onclick"}},
              {"name":"CLS","value":0.05,"id":"c","attribution":{"largestShiftTarget":"#ad","largestShiftValue":0.04}},
              {"name":"TTFB","value":200,"id":"t","attribution":{"waitingDuration":1,"target":7}}]}"##,
        )
        .unwrap();
        assert!(v.dropped.is_empty(), "{:?}", v.dropped);
        let m = v.message;
        assert_eq!(m.page_id, "pg_0123-ABCD");
        assert_eq!(m.release, "v2.4.1 (build 88)");
        assert_eq!(m.rtt, "100-300");
        let a = &m.metrics[0].attribution;
        assert_eq!(
            (a.target.as_str(), a.url.as_str()),
            ("img.hero", "https://cdn.example/a.jpg")
        );
        assert_eq!(
            [
                a.time_to_first_byte,
                a.resource_load_delay,
                a.resource_load_duration,
                a.element_render_delay
            ],
            [Some(200.0), Some(10.0), Some(900.0), Some(5.0)]
        );
        assert_eq!(a.interaction_type, "", "INP's field on an LCP is ignored");
        let a = &m.metrics[1].attribution;
        assert_eq!(
            (
                a.interaction_target.as_str(),
                a.interaction_type.as_str(),
                a.script_url.as_str(),
                a.script_invoker.as_str()
            ),
            ("#buy", "other", "/app.js", "BUTTON.onclick")
        );
        assert_eq!(
            [a.input_delay, a.processing_duration, a.presentation_delay],
            [Some(3.0), Some(100.0), Some(77.0)]
        );
        assert_eq!(m.metrics[2].attribution.largest_shift_target, "#ad");
        assert!(m.metrics[3].attribution.is_empty());
        assert_eq!(BeaconMessage::decode(&m.encode()).unwrap(), m);
    }

    #[test]
    fn the_bare_metric_form_carries_the_optional_fields_too() {
        let v = validate(
            r#"{"name":"INP","value":90,"id":"v5-9","route":"/","site":"s","page_id":"abcdefgh","rtt":1000,
            "attribution":{"interactionType":"keyboard","inputDelay":1}}"#,
        )
        .unwrap();
        let m = v.message;
        assert_eq!((m.page_id.as_str(), m.rtt.as_str()), ("abcdefgh", "1000+"));
        assert_eq!(m.metrics[0].attribution.interaction_type, "keyboard");
        assert_eq!(m.metrics[0].attribution.input_delay, Some(1.0));
    }

    #[test]
    fn buckets_rtt_and_says_unknown_without_it() {
        for (rtt, bucket) in [
            ("0", "0-100"),
            ("99.9", "0-100"),
            ("100", "100-300"),
            ("300", "300-1000"),
            ("1000", "1000+"),
            ("60000", "1000+"),
        ] {
            let body = format!(
                r#"{{"site":"s","route":"/","rtt":{rtt},"metrics":[{{"name":"LCP","value":1}}]}}"#
            );
            assert_eq!(validate(&body).unwrap().message.rtt, bucket, "rtt {rtt}");
        }
        for body in [
            r#"{"site":"s","route":"/","metrics":[{"name":"LCP","value":1}]}"#,
            r#"{"site":"s","route":"/","rtt":null,"metrics":[{"name":"LCP","value":1}]}"#,
        ] {
            assert_eq!(validate(body).unwrap().message.rtt, "unknown", "{body}");
        }
    }

    #[test]
    fn rejects_invalid_optional_fields_with_a_reason_and_a_message() {
        let with = |field: &str| {
            format!(r#"{{"site":"s","route":"/",{field},"metrics":[{{"name":"LCP","value":1}}]}}"#)
        };
        let cases = [
            (r#""page_id":"abc1234""#.to_string(), "invalid_page_id"),
            (
                format!(r#""page_id":"{}""#, "a".repeat(65)),
                "invalid_page_id",
            ),
            (r#""page_id":"abcd 1234""#.to_string(), "invalid_page_id"),
            (r#""page_id":"abcd.1234""#.to_string(), "invalid_page_id"),
            (r#""page_id":"""#.to_string(), "invalid_page_id"),
            (r#""page_id":12345678"#.to_string(), "malformed_json"),
            (r#""release":"""#.to_string(), "invalid_release"),
            (r#""release":"   ""#.to_string(), "invalid_release"),
            (
                format!(r#""release":"{}""#, "r".repeat(65)),
                "invalid_release",
            ),
            (r#""release":"v1\tbeta""#.to_string(), "invalid_release"),
            (r#""release":"v1\u0000""#.to_string(), "invalid_release"),
            (r#""release":"versión""#.to_string(), "invalid_release"),
            (r#""rtt":-1"#.to_string(), "invalid_rtt"),
            (r#""rtt":60000.5"#.to_string(), "invalid_rtt"),
            (r#""rtt":"50""#.to_string(), "malformed_json"),
            (r#""rtt":1e999"#.to_string(), "malformed_json"),
        ];
        for (field, reason) in cases {
            let body = with(&field);
            assert_eq!(validate(&body).unwrap_err().reason(), reason, "{body}");
        }
        assert_eq!(
            BeaconError::InvalidPageId.to_string(),
            "invalid page_id: must be 8 to 64 characters of [A-Za-z0-9_-]"
        );
        assert_eq!(
            BeaconError::InvalidRelease.to_string(),
            "invalid release: must be 1 to 64 printable ASCII characters"
        );
        assert_eq!(
            BeaconError::InvalidRtt.to_string(),
            "invalid rtt: must be a number of milliseconds between 0 and 60000"
        );
        assert!(validate(&with(&format!(r#""page_id":"{}""#, "Z".repeat(64)))).is_ok());
        assert!(validate(&with(&format!(r#""release":"{}""#, "~".repeat(64)))).is_ok());
    }

    #[test]
    fn drops_an_invalid_attribution_and_keeps_its_metric_and_value() {
        let v = validate(
            r##"{"site":"s","route":"/","metrics":[
            {"name":"LCP","value":1,"id":"a","attribution":{"target":"img\u0007"}},
            {"name":"LCP","value":2,"id":"b","attribution":{"timeToFirstByte":-3}},
            {"name":"INP","value":3,"id":"c","attribution":{"presentationDelay":"slow"}},
            {"name":"CLS","value":0,"id":"d","attribution":"#ad"},
            {"name":"INP","value":5,"id":"e","attribution":{"scriptInvoker":"x","url":"\u0000 not INP's"}}]}"##,
        )
        .unwrap();
        assert!(v.dropped.is_empty(), "no metric dropped: {:?}", v.dropped);
        let reasons: Vec<_> = v.dropped_attributions.iter().map(|r| r.reason()).collect();
        assert_eq!(reasons, ["invalid_attribution"; 4]);
        let kept: Vec<_> = v
            .message
            .metrics
            .iter()
            .map(|m| (m.id.as_str(), m.value, m.attribution.is_empty()))
            .collect();
        assert_eq!(
            kept,
            [
                ("a", 1.0, true),
                ("b", 2.0, true),
                ("c", 3.0, true),
                ("d", 0.0, true),
                ("e", 5.0, false)
            ]
        );
        assert_eq!(v.message.metrics[4].attribution.script_invoker, "x");
        let only_invalid = r#"{"site":"s","route":"/","metrics":[{"name":"LCP","value":1,"attribution":{"url":7}}]}"#;
        let v = validate(only_invalid).unwrap();
        assert_eq!(v.message.metrics.len(), 1, "the value is kept");
        assert_eq!(v.dropped_attributions, [AttributionRejection::Invalid]);
    }

    /// The `resend` of each metric of a valid body.
    fn resends(body: &str) -> Vec<bool> {
        let v = validate(body).unwrap_or_else(|e| panic!("{body}: {e}"));
        assert!(v.dropped.is_empty(), "{body}: dropped {:?}", v.dropped);
        v.message.metrics.iter().map(|m| m.resend).collect()
    }

    #[test]
    fn flags_a_resend_from_the_collector_or_from_a_web_vitals_delta() {
        let v1 = |metric: &str| format!(r#"{{"site":"s","route":"/","metrics":[{metric}]}}"#);
        let bare = |fields: &str| format!(r#"{{"site":"s","route":"/",{fields}}}"#);
        let cases = [
            // The collector's first report of a metric id: no flag.
            (v1(r#"{"name":"CLS","value":0.1,"id":"c"}"#), false),
            // Its re-send of the same id with the grown value.
            (
                v1(r#"{"name":"CLS","value":0.35,"id":"c","resend":true}"#),
                true,
            ),
            (
                v1(r#"{"name":"CLS","value":0.35,"id":"c","resend":false}"#),
                false,
            ),
            (
                v1(r#"{"name":"CLS","value":0.35,"id":"c","resend":null}"#),
                false,
            ),
            // A bare web-vitals Metric: its first report has delta == value exactly.
            (
                bare(r#""name":"CLS","value":0.1,"delta":0.1,"id":"c""#),
                false,
            ),
            (
                bare(r#""name":"INP","value":612,"delta":612,"id":"i""#),
                false,
            ),
            (bare(r#""name":"LCP","value":0,"delta":0,"id":"l""#), false),
            // A later report of the same id: the change since the previous one.
            (
                bare(r#""name":"CLS","value":0.35,"delta":0.25,"id":"c""#),
                true,
            ),
            (
                bare(r#""name":"INP","value":200,"delta":-40,"id":"i""#),
                true,
            ),
            (
                bare(r#""name":"CLS","value":0.35,"delta":0.35,"id":"c","resend":true"#),
                true,
            ),
            (
                bare(r#""name":"CLS","value":0.35,"delta":null,"id":"c""#),
                false,
            ),
            (bare(r#""name":"CLS","value":0.35,"id":"c""#), false),
            // The same rules for a Metric object inside metrics: either says so.
            (
                v1(r#"{"name":"CLS","value":0.35,"delta":0.25,"id":"c"}"#),
                true,
            ),
            (
                v1(r#"{"name":"CLS","value":0.35,"delta":0.35,"id":"c","resend":true}"#),
                true,
            ),
            (
                v1(r#"{"name":"CLS","value":0.35,"delta":0.35,"id":"c","resend":false}"#),
                false,
            ),
            // Not seen: a re-send whose previous report was 0 (web-vitals' delta is value - 0 then).
            (
                bare(r#""name":"CLS","value":0.05,"delta":0.05,"id":"c""#),
                false,
            ),
        ];
        for (body, resend) in cases {
            assert_eq!(resends(&body), [resend], "{body}");
        }
        assert_eq!(
            resends(
                r#"{"site":"s","route":"/","metrics":[{"name":"LCP","value":900,"id":"l"},{"name":"CLS","value":0.2,"id":"c","resend":true}]}"#
            ),
            [false, true]
        );
        // What web-vitals' README snippet posts on the first report.
        let ctx = RequestContext {
            query_site: Some("shop"),
            referer_path: Some("/"),
            ..CTX
        };
        assert!(!validate_with(BARE_LCP, ctx).unwrap().message.metrics[0].resend);
    }

    #[test]
    fn the_message_says_resend_only_when_true() {
        let v = validate(
            r#"{"site":"s","route":"/","metrics":[{"name":"LCP","value":900,"id":"l"},{"name":"CLS","value":0.2,"id":"c","resend":true}]}"#,
        )
        .unwrap();
        let encoded = String::from_utf8(v.message.encode()).unwrap();
        assert!(
            encoded.contains(r#"{"name":"LCP","value":900.0,"id":"l","rating":"good"}"#),
            "{encoded}"
        );
        assert!(
            encoded.contains(
                r#"{"name":"CLS","value":0.2,"id":"c","rating":"needs-improvement","resend":true}"#
            ),
            "{encoded}"
        );
        assert_eq!(
            BeaconMessage::decode(encoded.as_bytes()).unwrap(),
            v.message
        );
    }

    #[test]
    fn a_resend_or_delta_of_the_wrong_type_is_malformed_like_any_field() {
        for field in [
            r#""resend":"true""#,
            r#""resend":1"#,
            r#""resend":0"#,
            r#""resend":{}"#,
            r#""resend":[true]"#,
            r#""delta":"0.25""#,
            r#""delta":true"#,
            r#""delta":{}"#,
            // JSON has no NaN or infinity; a number beyond f64 is no number either.
            r#""delta":NaN"#,
            r#""delta":Infinity"#,
            r#""delta":1e999"#,
            r#""delta":-1e999"#,
        ] {
            for body in [
                format!(
                    r#"{{"site":"s","route":"/","metrics":[{{"name":"CLS","value":0.3,"id":"c",{field}}}]}}"#
                ),
                format!(r#"{{"site":"s","route":"/","name":"CLS","value":0.3,"id":"c",{field}}}"#),
            ] {
                assert_eq!(
                    validate(&body).unwrap_err().reason(),
                    "malformed_json",
                    "{body}"
                );
            }
        }
        // Built in code (not from JSON), a non-finite delta says nothing.
        let raw = |delta: f64| RawMetric {
            name: Text("CLS".into()),
            value: 0.3,
            id: Text("c".into()),
            rating: None,
            attribution: None,
            resend: None,
            delta: Some(delta),
        };
        for delta in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            assert!(!raw(delta).is_resend(), "{delta}");
            assert!(!validate_metric(raw(delta)).unwrap().0.resend, "{delta}");
        }
        assert!(raw(0.1).is_resend());
        assert!(!raw(0.3).is_resend());
    }

    fn validate_with(body: &str, ctx: RequestContext<'_>) -> Result<Validated, BeaconError> {
        parse_beacon(body.as_bytes())?.validate(&ctx)
    }

    /// What `onLCP(m => navigator.sendBeacon(url, JSON.stringify(m)))` sends (web-vitals 4/5).
    const BARE_LCP: &str = r#"{"name":"LCP","value":2484.2,"rating":"good","delta":2484.2,"entries":[{"name":"","entryType":"largest-contentful-paint","startTime":2484.2,"duration":0,"size":120000,"renderTime":2484.2,"loadTime":2301.5,"firstAnimatedFrameTime":0,"id":"hero","url":"https://shop.example/hero.jpg"}],"id":"v4-1700000000000-1234567890123","navigationType":"navigate"}"#;

    #[test]
    fn a_bare_metric_without_route_takes_the_referer_path() {
        let ctx = RequestContext {
            query_site: Some("shop"),
            referer_path: Some("/product/123/reviews"),
            ..CTX
        };
        let v = validate_with(BARE_LCP, ctx).unwrap();
        assert_eq!(v.message.route, "product-id-reviews");
        assert!(v.route_from_referer);
        assert_eq!(v.message.nav_type, "navigate");
        assert_eq!(v.message.metrics[0].value, 2484.2);
        assert_eq!(v.message.metrics[0].id, "v4-1700000000000-1234567890123");
        // A route in the body wins over the Referer.
        let body = r#"{"site":"shop","route":"/cart","metrics":[{"name":"LCP","value":1}]}"#;
        let v = validate_with(body, ctx).unwrap();
        assert_eq!(v.message.route, "cart");
        assert!(!v.route_from_referer);
        // Neither: missing_route, as before.
        let ctx = RequestContext {
            referer_path: None,
            ..ctx
        };
        assert_eq!(
            validate_with(BARE_LCP, ctx).unwrap_err().reason(),
            "missing_route"
        );
    }

    #[test]
    fn carries_the_browser_of_the_context() {
        let ctx = RequestContext {
            browser: Browser {
                family: "firefox",
                major: 121,
            },
            ..CTX
        };
        let v = validate_with(
            r#"{"site":"s","route":"/","metrics":[{"name":"LCP","value":1}]}"#,
            ctx,
        )
        .unwrap();
        assert_eq!(
            (v.message.browser.as_str(), v.message.browser_major),
            ("firefox", 121)
        );
        assert_eq!(
            BeaconMessage::decode(&v.message.encode()).unwrap(),
            v.message
        );
        let v =
            validate(r#"{"site":"s","route":"/","metrics":[{"name":"LCP","value":1}]}"#).unwrap();
        assert_eq!(
            (v.message.browser.as_str(), v.message.browser_major),
            ("unknown", 0)
        );
    }

    #[test]
    fn bounds_the_nav_type_label() {
        assert_eq!(
            normalize_nav_type(Some("soft-navigation")),
            "soft-navigation"
        );
        assert_eq!(normalize_nav_type(Some("soft_navigation")), "other");
        assert_eq!(normalize_nav_type(Some("navigate")), "navigate");
        assert_eq!(normalize_nav_type(Some("<script>")), "other");
        assert_eq!(normalize_nav_type(None), "unknown");
    }
}
