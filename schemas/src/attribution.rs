//! What a metric's optional `attribution` says about its cause (the element, the resource, the
//! phases), as `web-vitals`' attribution build names it, and how the ingest normalizes it.
//!
//! Each metric reads its own fields and ignores the others (whatever their type): LCP `target`,
//! `url` and its four phases; INP `interactionTarget`, `interactionType`, its three phases,
//! `scriptUrl` and `scriptInvoker`; CLS `largestShiftTarget`. FCP, TTFB and FID read none. A field
//! of the metric that is present (not `null`) must be valid, or the metric is dropped as
//! `invalid_attribution`: strings hold no control character and are at most their length after
//! trimming ASCII whitespace (URLs: at most [`MAX_ATTRIBUTION_URL_IN_LEN`] as sent, kept without
//! query string and fragment, cut to [`MAX_ATTRIBUTION_URL_LEN`]); times are numbers from 0 to the
//! metric's own maximum ([`MetricName::max_value`]).

use serde::de::{IgnoredAny, MapAccess, SeqAccess};
use serde::{Deserialize, Serialize};

use crate::beacon::Text;
use crate::limits::{
    MAX_ATTRIBUTION_TARGET_LEN, MAX_ATTRIBUTION_URL_IN_LEN, MAX_ATTRIBUTION_URL_LEN,
    MAX_SCRIPT_INVOKER_LEN,
};
use crate::metric::MetricName;

/// The interaction types kept; anything else is `other`, to keep the value bounded.
pub const INTERACTION_TYPES: [&str; 3] = ["pointer", "keyboard", "other"];

/// A metric's normalized attribution, in the Kafka message. Only the fields of the metric are set;
/// an absent string is empty, an absent time `None`. Nothing is serialized for what is absent, so
/// a metric without attribution has no `attribution` key at all.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Attribution {
    /// LCP: the selector of the largest element.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub target: String,
    /// LCP: the URL of the largest element's resource, without query string and fragment.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub url: String,
    /// LCP: milliseconds from navigation to the first byte.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_to_first_byte: Option<f64>,
    /// LCP: milliseconds from the first byte to the start of the resource's load.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource_load_delay: Option<f64>,
    /// LCP: milliseconds the resource took to load.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource_load_duration: Option<f64>,
    /// LCP: milliseconds from the resource's load to the element's render.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub element_render_delay: Option<f64>,
    /// INP: the selector of the element interacted with.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub interaction_target: String,
    /// INP: `pointer`, `keyboard` or `other`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub interaction_type: String,
    /// INP: milliseconds from the input to its handlers' start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input_delay: Option<f64>,
    /// INP: milliseconds the handlers ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub processing_duration: Option<f64>,
    /// INP: milliseconds from the handlers' end to the next paint.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub presentation_delay: Option<f64>,
    /// INP: the URL of the longest script, without query string and fragment.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub script_url: String,
    /// INP: what invoked the longest script (e.g. `BUTTON#buy.onclick`).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub script_invoker: String,
    /// CLS: the selector of the element of the largest shift.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub largest_shift_target: String,
}

/// One attribution field as sent: a string, a number, or anything else (consumed without
/// allocating), so that a field of another metric never fails the parse of the beacon.
#[derive(Debug, Clone, PartialEq)]
pub enum Loose<'a> {
    /// A JSON string.
    Str(Text<'a>),
    /// A JSON number.
    Num(f64),
    /// A boolean, an array or an object.
    Other,
}

/// A metric's `attribution` as sent, before validation.
#[derive(Debug, Clone, PartialEq)]
pub enum RawAttribution<'a> {
    /// A JSON object: the fields any metric may read.
    Fields(Box<RawAttributionFields<'a>>),
    /// A string, number, boolean or array: invalid for every metric.
    NotAnObject,
}

/// The fields of an `attribution` object that some metric reads, as sent (`null` is absent).
/// Other fields are ignored.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
#[allow(missing_docs)]
pub struct RawAttributionFields<'a> {
    #[serde(default, borrow)]
    pub target: Option<Loose<'a>>,
    #[serde(default, borrow)]
    pub url: Option<Loose<'a>>,
    #[serde(default, borrow)]
    pub time_to_first_byte: Option<Loose<'a>>,
    #[serde(default, borrow)]
    pub resource_load_delay: Option<Loose<'a>>,
    #[serde(default, borrow)]
    pub resource_load_duration: Option<Loose<'a>>,
    #[serde(default, borrow)]
    pub element_render_delay: Option<Loose<'a>>,
    #[serde(default, borrow)]
    pub interaction_target: Option<Loose<'a>>,
    #[serde(default, borrow)]
    pub interaction_type: Option<Loose<'a>>,
    #[serde(default, borrow)]
    pub input_delay: Option<Loose<'a>>,
    #[serde(default, borrow)]
    pub processing_duration: Option<Loose<'a>>,
    #[serde(default, borrow)]
    pub presentation_delay: Option<Loose<'a>>,
    #[serde(default, borrow)]
    pub script_url: Option<Loose<'a>>,
    #[serde(default, borrow)]
    pub script_invoker: Option<Loose<'a>>,
    #[serde(default, borrow)]
    pub largest_shift_target: Option<Loose<'a>>,
}

/// Consumes an array or an object without keeping anything.
fn drain_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<(), A::Error> {
    while seq.next_element::<IgnoredAny>()?.is_some() {}
    Ok(())
}

fn drain_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<(), A::Error> {
    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
    Ok(())
}

impl<'de: 'a, 'a> Deserialize<'de> for Loose<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Loose<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Loose<'de>, E> {
                Ok(Loose::Str(Text(v.into())))
            }
            fn visit_str<E>(self, v: &str) -> Result<Loose<'de>, E> {
                Ok(Loose::Str(Text(v.to_owned().into())))
            }
            fn visit_string<E>(self, v: String) -> Result<Loose<'de>, E> {
                Ok(Loose::Str(Text(v.into())))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Loose<'de>, E> {
                Ok(Loose::Num(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Loose<'de>, E> {
                Ok(Loose::Num(v as f64))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Loose<'de>, E> {
                Ok(Loose::Num(v as f64))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Loose<'de>, E> {
                Ok(Loose::Other)
            }
            fn visit_unit<E>(self) -> Result<Loose<'de>, E> {
                Ok(Loose::Other)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Loose<'de>, A::Error> {
                drain_seq(seq).map(|()| Loose::Other)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Loose<'de>, A::Error> {
                drain_map(map).map(|()| Loose::Other)
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for RawAttribution<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = RawAttribution<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawAttribution<'de>, A::Error> {
                let fields = RawAttributionFields::deserialize(
                    serde::de::value::MapAccessDeserializer::new(map),
                )?;
                Ok(RawAttribution::Fields(Box::new(fields)))
            }
            fn visit_str<E>(self, _: &str) -> Result<RawAttribution<'de>, E> {
                Ok(RawAttribution::NotAnObject)
            }
            fn visit_f64<E>(self, _: f64) -> Result<RawAttribution<'de>, E> {
                Ok(RawAttribution::NotAnObject)
            }
            fn visit_i64<E>(self, _: i64) -> Result<RawAttribution<'de>, E> {
                Ok(RawAttribution::NotAnObject)
            }
            fn visit_u64<E>(self, _: u64) -> Result<RawAttribution<'de>, E> {
                Ok(RawAttribution::NotAnObject)
            }
            fn visit_bool<E>(self, _: bool) -> Result<RawAttribution<'de>, E> {
                Ok(RawAttribution::NotAnObject)
            }
            fn visit_unit<E>(self) -> Result<RawAttribution<'de>, E> {
                Ok(RawAttribution::NotAnObject)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<RawAttribution<'de>, A::Error> {
                drain_seq(seq).map(|()| RawAttribution::NotAnObject)
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// A field of the metric is present and invalid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidAttribution;

/// A selector or name: a string without control characters, at most `max` characters once trimmed.
fn text(field: &Option<Loose<'_>>, max: usize) -> Result<String, InvalidAttribution> {
    match field {
        None => Ok(String::new()),
        Some(Loose::Str(s)) => {
            // Controls are refused anywhere, also where trimming would remove them (`\n`, `\t`).
            let clean = !s.chars().any(char::is_control);
            let s = s.trim_ascii();
            if clean && is_clean_text(s, max) {
                Ok(s.to_string())
            } else {
                Err(InvalidAttribution)
            }
        }
        Some(_) => Err(InvalidAttribution),
    }
}

/// A URL: a string without control characters of at most [`MAX_ATTRIBUTION_URL_IN_LEN`]
/// characters, kept trimmed, without query string and fragment, cut to [`MAX_ATTRIBUTION_URL_LEN`].
/// `url` without query string, fragment and credentials (`scheme://user:password@host/...` keeps
/// `scheme://host/...`): what may hold personal data or secrets.
fn without_query_and_credentials(url: &str) -> String {
    let s = url.split(['?', '#']).next().unwrap_or_default();
    match s.split_once("://") {
        Some((scheme, rest)) => {
            let authority_end = rest.find('/').unwrap_or(rest.len());
            match rest[..authority_end].rfind('@') {
                Some(at) => format!("{scheme}://{}", &rest[at + 1..]),
                None => s.to_string(),
            }
        }
        None => s.to_string(),
    }
}

/// INP's `scriptInvoker`: a text, or (for a classic script) the script's URL, which loses its query
/// string, fragment and credentials like every URL (the collector strips them too; another client
/// may not).
fn invoker(field: &Option<Loose<'_>>) -> Result<String, InvalidAttribution> {
    let text = text(field, MAX_SCRIPT_INVOKER_LEN)?;
    Ok(if text.contains("://") {
        without_query_and_credentials(&text)
    } else {
        text
    })
}

fn url(field: &Option<Loose<'_>>) -> Result<String, InvalidAttribution> {
    match field {
        None => Ok(String::new()),
        Some(Loose::Str(s)) => {
            // An inline image or a blob (an LCP element can be either) is named by its scheme only:
            // its payload says nothing about where the time went, and can be megabytes.
            let trimmed = s.trim_ascii();
            for scheme in ["data:", "blob:"] {
                if trimmed
                    .get(..scheme.len())
                    .is_some_and(|p| p.eq_ignore_ascii_case(scheme))
                {
                    return Ok(scheme.to_string());
                }
            }
            if s.chars().count() > MAX_ATTRIBUTION_URL_IN_LEN || s.chars().any(char::is_control) {
                return Err(InvalidAttribution);
            }
            let s = without_query_and_credentials(trimmed);
            let end = s
                .char_indices()
                .nth(MAX_ATTRIBUTION_URL_LEN)
                .map_or(s.len(), |(i, _)| i);
            Ok(s[..end].to_string())
        }
        Some(_) => Err(InvalidAttribution),
    }
}

/// A time: a number from 0 to the metric's maximum.
fn time(field: &Option<Loose<'_>>, name: MetricName) -> Result<Option<f64>, InvalidAttribution> {
    match field {
        None => Ok(None),
        Some(Loose::Num(v)) if is_valid_time(*v, name) => Ok(Some(*v)),
        Some(_) => Err(InvalidAttribution),
    }
}

fn is_valid_time(v: f64, name: MetricName) -> bool {
    v.is_finite() && (0.0..=name.max_value()).contains(&v)
}

fn is_clean_text(s: &str, max: usize) -> bool {
    s.chars().count() <= max && !s.chars().any(char::is_control)
}

/// `pointer` and `keyboard` as sent, any other string `other`.
fn interaction_type(field: &Option<Loose<'_>>) -> Result<String, InvalidAttribution> {
    match field {
        None => Ok(String::new()),
        Some(Loose::Str(s)) => Ok(match &**s {
            t @ ("pointer" | "keyboard") => t.to_string(),
            _ => "other".to_string(),
        }),
        Some(_) => Err(InvalidAttribution),
    }
}

impl Attribution {
    /// The element behind the metric, whichever metric it is: LCP's `target`, INP's
    /// `interaction_target` or CLS's `largest_shift_target` (a metric has at most one of them).
    pub fn element(&self) -> &str {
        [
            &self.target,
            &self.interaction_target,
            &self.largest_shift_target,
        ]
        .into_iter()
        .find(|s| !s.is_empty())
        .map_or("", |s| s.as_str())
    }

    /// Validates and normalizes the fields of `name` in what was sent; ignores the others.
    pub fn normalize(
        name: MetricName,
        raw: Option<&RawAttribution<'_>>,
    ) -> Result<Attribution, InvalidAttribution> {
        let raw = match raw {
            None => return Ok(Attribution::default()),
            Some(RawAttribution::NotAnObject) => return Err(InvalidAttribution),
            Some(RawAttribution::Fields(fields)) => fields,
        };
        Ok(match name {
            MetricName::LCP => Attribution {
                target: text(&raw.target, MAX_ATTRIBUTION_TARGET_LEN)?,
                url: url(&raw.url)?,
                time_to_first_byte: time(&raw.time_to_first_byte, name)?,
                resource_load_delay: time(&raw.resource_load_delay, name)?,
                resource_load_duration: time(&raw.resource_load_duration, name)?,
                element_render_delay: time(&raw.element_render_delay, name)?,
                ..Attribution::default()
            },
            MetricName::INP => Attribution {
                interaction_target: text(&raw.interaction_target, MAX_ATTRIBUTION_TARGET_LEN)?,
                interaction_type: interaction_type(&raw.interaction_type)?,
                input_delay: time(&raw.input_delay, name)?,
                processing_duration: time(&raw.processing_duration, name)?,
                presentation_delay: time(&raw.presentation_delay, name)?,
                script_url: url(&raw.script_url)?,
                script_invoker: invoker(&raw.script_invoker)?,
                ..Attribution::default()
            },
            MetricName::CLS => Attribution {
                largest_shift_target: text(&raw.largest_shift_target, MAX_ATTRIBUTION_TARGET_LEN)?,
                ..Attribution::default()
            },
            MetricName::FCP | MetricName::TTFB | MetricName::FID => Attribution::default(),
        })
    }

    /// True when nothing is set (what a metric without attribution carries).
    pub fn is_empty(&self) -> bool {
        *self == Attribution::default()
    }

    /// True when this is what [`Attribution::normalize`] may give for `name`: only the metric's
    /// fields set, each within its bounds. Consumers check a decoded message with it.
    pub fn is_valid_for(&self, name: MetricName) -> bool {
        let texts = [
            (&self.target, MAX_ATTRIBUTION_TARGET_LEN, MetricName::LCP),
            (
                &self.interaction_target,
                MAX_ATTRIBUTION_TARGET_LEN,
                MetricName::INP,
            ),
            (
                &self.script_invoker,
                MAX_SCRIPT_INVOKER_LEN,
                MetricName::INP,
            ),
            (
                &self.largest_shift_target,
                MAX_ATTRIBUTION_TARGET_LEN,
                MetricName::CLS,
            ),
        ];
        let urls = [
            (&self.url, MetricName::LCP),
            (&self.script_url, MetricName::INP),
        ];
        let times = [
            (self.time_to_first_byte, MetricName::LCP),
            (self.resource_load_delay, MetricName::LCP),
            (self.resource_load_duration, MetricName::LCP),
            (self.element_render_delay, MetricName::LCP),
            (self.input_delay, MetricName::INP),
            (self.processing_duration, MetricName::INP),
            (self.presentation_delay, MetricName::INP),
        ];
        texts.iter().all(|(s, max, of)| {
            s.is_empty() || (*of == name && is_clean_text(s, *max) && s.trim_ascii() == s.as_str())
        }) && urls.iter().all(|(s, of)| {
            s.is_empty()
                || (*of == name
                    && is_clean_text(s, MAX_ATTRIBUTION_URL_LEN)
                    && !s.contains(['?', '#'])
                    && s.trim_ascii() == s.as_str())
        }) && times
            .iter()
            .all(|(t, of)| t.is_none_or(|t| *of == name && is_valid_time(t, name)))
            && (self.interaction_type.is_empty()
                || (name == MetricName::INP
                    && INTERACTION_TYPES.contains(&self.interaction_type.as_str())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn normalize(name: MetricName, json: &str) -> Result<Attribution, InvalidAttribution> {
        let raw: Option<RawAttribution> = serde_json::from_str(json).expect("parses");
        Attribution::normalize(name, raw.as_ref())
    }

    #[test]
    fn urls_lose_credentials_and_inline_payloads() {
        let url_of = |json: &str| normalize(MetricName::LCP, json).unwrap().url;
        assert_eq!(
            url_of(r#"{"url":"https://user:secret@cdn.example/a.jpg?t=1"}"#),
            "https://cdn.example/a.jpg"
        );
        assert_eq!(
            url_of(r#"{"url":"https://cdn.example/a@2x.jpg"}"#),
            "https://cdn.example/a@2x.jpg"
        );
        let huge = format!(
            r#"{{"url":"data:image/png;base64,{}"}}"#,
            "A".repeat(100_000)
        );
        assert_eq!(url_of(&huge), "data:");
        assert_eq!(url_of(r#"{"url":" BLOB:https://x/1"}"#), "blob:");
    }

    #[test]
    fn a_script_url_invoker_loses_its_query_and_credentials_a_text_one_is_kept() {
        let invoker_of = |v: &str| {
            normalize(
                MetricName::INP,
                &format!(
                    r#"{{"scriptInvoker":{}}}"#,
                    serde_json::to_string(v).unwrap()
                ),
            )
            .unwrap()
            .script_invoker
        };
        assert_eq!(
            invoker_of("https://u:pw@shop.example/app.js?session=abc#x"),
            "https://shop.example/app.js"
        );
        assert_eq!(invoker_of(" BUTTON#buy.onclick "), "BUTTON#buy.onclick");
        assert_eq!(invoker_of("Response.json.then"), "Response.json.then");
    }

    #[test]
    fn lcp_keeps_its_fields_and_normalizes_the_url() {
        let a = normalize(
            MetricName::LCP,
            r##"{"target":"  main > img.hero ","url":"https://cdn.example/hero.jpg?sig=secret#x",
                "timeToFirstByte":120.5,"resourceLoadDelay":0,"resourceLoadDuration":800,
                "elementRenderDelay":30,"interactionTarget":"#buy","largestShiftTarget":"div",
                "lcpEntry":{"size":1},"navigationEntry":null}"##,
        )
        .unwrap();
        assert_eq!(
            a,
            Attribution {
                target: "main > img.hero".into(),
                url: "https://cdn.example/hero.jpg".into(),
                time_to_first_byte: Some(120.5),
                resource_load_delay: Some(0.0),
                resource_load_duration: Some(800.0),
                element_render_delay: Some(30.0),
                ..Attribution::default()
            }
        );
        assert!(a.is_valid_for(MetricName::LCP));
        assert!(!a.is_valid_for(MetricName::INP), "LCP's fields on an INP");
    }

    #[test]
    fn inp_keeps_its_fields_and_bounds_the_interaction_type() {
        let a = normalize(
            MetricName::INP,
            r#"{"interactionTarget":"button#buy","interactionType":"pointer","inputDelay":8,
                "processingDuration":120,"presentationDelay":16.7,
                "scriptUrl":"https://shop.example/app.js#L1","scriptInvoker":"BUTTON#buy.onclick",
                "target":"ignored","url":7}"#,
        )
        .unwrap();
        assert_eq!(a.interaction_target, "button#buy");
        assert_eq!(a.interaction_type, "pointer");
        assert_eq!(
            (a.input_delay, a.processing_duration, a.presentation_delay),
            (Some(8.0), Some(120.0), Some(16.7))
        );
        assert_eq!(a.script_url, "https://shop.example/app.js");
        assert_eq!(a.script_invoker, "BUTTON#buy.onclick");
        assert_eq!((a.target.as_str(), a.url.as_str()), ("", ""));
        assert!(a.is_valid_for(MetricName::INP));
        for (sent, kept) in [("keyboard", "keyboard"), ("touch", "other"), ("", "other")] {
            let a = normalize(
                MetricName::INP,
                &format!(r#"{{"interactionType":"{sent}"}}"#),
            )
            .unwrap();
            assert_eq!(a.interaction_type, kept, "{sent}");
        }
    }

    #[test]
    fn cls_keeps_its_target_and_other_metrics_keep_nothing() {
        let a = normalize(
            MetricName::CLS,
            r##"{"largestShiftTarget":"#banner","target":"x"}"##,
        );
        assert_eq!(a.unwrap().largest_shift_target, "#banner");
        for name in [MetricName::FCP, MetricName::TTFB, MetricName::FID] {
            let a = normalize(
                name,
                r#"{"target":"x","timeToFirstByte":-5,"url":"\u0001"}"#,
            );
            assert!(a.unwrap().is_empty(), "{name:?}");
        }
        assert!(normalize(MetricName::LCP, "null").unwrap().is_empty());
        assert!(normalize(MetricName::LCP, "{}").unwrap().is_empty());
        assert!(
            normalize(MetricName::LCP, r#"{"target":null}"#)
                .unwrap()
                .is_empty(),
            "null is absent"
        );
    }

    #[test]
    fn rejects_invalid_fields_of_the_metric() {
        let long = |n: usize| format!("\"{}\"", "a".repeat(n));
        let cases = [
            (MetricName::LCP, r#"{"target":"div\u0000"}"#.to_string()),
            (MetricName::LCP, r#"{"target":"a\nb"}"#.to_string()),
            (MetricName::LCP, r#"{"target":"div\n"}"#.to_string()),
            (MetricName::LCP, r#"{"target":"a\u0085b"}"#.to_string()),
            (MetricName::LCP, format!(r#"{{"target":{}}}"#, long(257))),
            (MetricName::LCP, r#"{"target":5}"#.to_string()),
            (
                MetricName::LCP,
                r#"{"url":"https://a.example/\u001b"}"#.to_string(),
            ),
            (MetricName::LCP, format!(r#"{{"url":{}}}"#, long(2049))),
            (MetricName::LCP, r#"{"url":["a"]}"#.to_string()),
            (MetricName::LCP, r#"{"timeToFirstByte":-1}"#.to_string()),
            (
                MetricName::LCP,
                r#"{"resourceLoadDelay":600000.5}"#.to_string(),
            ),
            (
                MetricName::LCP,
                r#"{"elementRenderDelay":"12"}"#.to_string(),
            ),
            (
                MetricName::LCP,
                r#"{"resourceLoadDuration":true}"#.to_string(),
            ),
            (
                MetricName::INP,
                format!(r#"{{"scriptInvoker":{}}}"#, long(129)),
            ),
            (MetricName::INP, r#"{"interactionType":1}"#.to_string()),
            (MetricName::INP, r#"{"inputDelay":1e6}"#.to_string()),
            (MetricName::INP, r#"{"scriptUrl":"x\ty"}"#.to_string()),
            (
                MetricName::CLS,
                format!(r#"{{"largestShiftTarget":{}}}"#, long(257)),
            ),
            (MetricName::CLS, r#""not an object""#.to_string()),
            (MetricName::FCP, "[1]".to_string()),
            (MetricName::TTFB, "0".to_string()),
        ];
        for (name, json) in cases {
            assert_eq!(
                normalize(name, &json),
                Err(InvalidAttribution),
                "{name:?} {json}"
            );
        }
    }

    #[test]
    fn bounds_hold_at_their_edges() {
        let a = normalize(
            MetricName::LCP,
            &format!(
                r#"{{"target":"  {}  ","timeToFirstByte":600000}}"#,
                "t".repeat(256)
            ),
        )
        .unwrap();
        assert_eq!(a.target.len(), 256);
        assert_eq!(a.time_to_first_byte, Some(600_000.0));
        let url = format!("https://a.example/{}", "p".repeat(2048 - 18));
        assert_eq!(url.len(), 2048);
        let a = normalize(MetricName::LCP, &format!(r#"{{"url":"{url}"}}"#)).unwrap();
        assert_eq!(a.url, url[..512]);
        assert!(a.is_valid_for(MetricName::LCP));
        let multibyte = format!("https://a.example/{}?q", "é".repeat(600));
        let a = normalize(
            MetricName::INP,
            &format!(r#"{{"scriptUrl":"{multibyte}"}}"#),
        )
        .unwrap();
        assert_eq!(
            a.script_url.chars().count(),
            512,
            "cut on a character boundary"
        );
        let cls = normalize(MetricName::CLS, r#"{"largestShiftTarget":10}"#);
        assert_eq!(cls, Err(InvalidAttribution));
        assert_eq!(
            normalize(
                MetricName::CLS,
                r#"{"largestShiftTarget":"x","largestShiftValue":0.2}"#
            )
            .unwrap()
            .largest_shift_target,
            "x"
        );
    }

    #[test]
    fn a_time_is_bounded_by_the_metric_maximum() {
        // A CLS has no time fields, but the bound of a time is the metric's own: for LCP and INP,
        // ten minutes.
        assert!(is_valid_time(600_000.0, MetricName::INP));
        assert!(!is_valid_time(600_000.1, MetricName::INP));
        assert!(!is_valid_time(f64::NAN, MetricName::LCP));
        assert!(!is_valid_time(f64::INFINITY, MetricName::LCP));
    }

    #[test]
    fn serializes_nothing_when_empty_and_only_what_is_set_otherwise() {
        assert_eq!(
            serde_json::to_string(&Attribution::default()).unwrap(),
            "{}"
        );
        let a = Attribution {
            target: "img".into(),
            element_render_delay: Some(3.0),
            ..Attribution::default()
        };
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(json, r#"{"target":"img","element_render_delay":3.0}"#);
        assert_eq!(serde_json::from_str::<Attribution>(&json).unwrap(), a);
    }
}
