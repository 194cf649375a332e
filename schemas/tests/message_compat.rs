//! Beacons of today's collector (and the other forms accepted before beacon v1 grew optional fields)
//! must give byte for byte the Kafka message they gave before: consumers, dead letters and replays
//! compare them. The expected values are literal, captured before the new fields were added.

use rum_schemas::beacon::RequestContext;
use rum_schemas::{parse_beacon, BeaconMessage, Device};

const CTX: RequestContext<'static> = RequestContext {
    query_site: Some("from-query"),
    header_device: Device::Desktop,
    received_at_ms: 1_700_000_000_123,
    browser: rum_schemas::browser::Browser::UNKNOWN,
    referer_path: None,
};

/// (what a client sent, the message value the ingest published for it before the optional fields)
const PINNED: &[(&str, &str)] = &[
    (
        r#"{"site":"shop","route":"/product/123","device":"mobile","nav_type":"navigate","sample_rate":0.25,"metrics":[{"name":"LCP","value":2310.5,"id":"v5-1700-123","rating":"good"}]}"#,
        r#"{"site":"shop","route":"product-id","device":"mobile","nav_type":"navigate","sample_rate":0.25,"received_at":1700000000123,"metrics":[{"name":"LCP","value":2310.5,"id":"v5-1700-123","rating":"good"}]}"#,
    ),
    (
        r#"{"site":"shop","route":"product-id","device":"mobile","nav_type":"navigate","sample_rate":0.25,"metrics":[{"name":"TTFB","value":312.4000000000001,"id":"v5-1700000000000-1234567890123","rating":"good"},{"name":"FCP","value":1100,"id":"v5-1700000000000-1234567890124","rating":"good"},{"name":"LCP","value":2800.123456789,"id":"v5-1700000000000-1234567890125","rating":"needs-improvement"},{"name":"CLS","value":0.12345678901234,"id":"v5-1700000000000-1234567890126","rating":"needs-improvement"},{"name":"INP","value":48,"id":"v5-1700000000000-1234567890127","rating":"good"}]}"#,
        r#"{"site":"shop","route":"product-id","device":"mobile","nav_type":"navigate","sample_rate":0.25,"received_at":1700000000123,"metrics":[{"name":"TTFB","value":312.4000000000001,"id":"v5-1700000000000-1234567890123","rating":"good"},{"name":"FCP","value":1100.0,"id":"v5-1700000000000-1234567890124","rating":"good"},{"name":"LCP","value":2800.123456789,"id":"v5-1700000000000-1234567890125","rating":"needs-improvement"},{"name":"CLS","value":0.12345678901234,"id":"v5-1700000000000-1234567890126","rating":"needs-improvement"},{"name":"INP","value":48.0,"id":"v5-1700000000000-1234567890127","rating":"good"}]}"#,
    ),
    (
        r#"{"site":"blog","route":"root","nav_type":"back-forward-cache","sample_rate":1,"metrics":[{"name":"CLS","value":0,"id":"v5-1700000000000-1","rating":"good"}]}"#,
        r#"{"site":"blog","route":"root","device":"desktop","nav_type":"back-forward-cache","sample_rate":1.0,"received_at":1700000000123,"metrics":[{"name":"CLS","value":0.0,"id":"v5-1700000000000-1","rating":"good"}]}"#,
    ),
    (
        r#"{"site":"shop","route":"/","metrics":[{"name":"TTFB","value":120,"id":"a"},{"name":"FCP","value":900,"id":"b"},{"name":"LCP","value":1400,"id":"c"},{"name":"CLS","value":0,"id":"d"},{"name":"INP","value":88,"id":"e"}]}"#,
        r#"{"site":"shop","route":"root","device":"desktop","nav_type":"unknown","sample_rate":1.0,"received_at":1700000000123,"metrics":[{"name":"TTFB","value":120.0,"id":"a","rating":"good"},{"name":"FCP","value":900.0,"id":"b","rating":"good"},{"name":"LCP","value":1400.0,"id":"c","rating":"good"},{"name":"CLS","value":0.0,"id":"d","rating":"good"},{"name":"INP","value":88.0,"id":"e","rating":"good"}]}"#,
    ),
    (
        r#"{"route":"/cart","metrics":[{"name":"FID","value":12}],"unknown_field":{"ignored":true}}"#,
        r#"{"site":"from-query","route":"cart","device":"desktop","nav_type":"unknown","sample_rate":1.0,"received_at":1700000000123,"metrics":[{"name":"FID","value":12.0,"id":"","rating":"good"}]}"#,
    ),
    (
        r#"{"name":"INP","value":612,"rating":"poor","delta":612,"id":"v5-1700-125","navigationType":"reload","entries":[],"route":"/cart/","site":"blog"}"#,
        r#"{"site":"blog","route":"cart","device":"desktop","nav_type":"reload","sample_rate":1.0,"received_at":1700000000123,"metrics":[{"name":"INP","value":612.0,"id":"v5-1700-125","rating":"poor"}]}"#,
    ),
    (
        r#"{"name":"CLS","value":9.99,"id":"v5-2","route":"https://shop.example/a?b=c","device":"tablet","sample_rate":1}"#,
        r#"{"site":"from-query","route":"a","device":"tablet","nav_type":"unknown","sample_rate":1.0,"received_at":1700000000123,"metrics":[{"name":"CLS","value":9.99,"id":"v5-2","rating":"poor"}]}"#,
    ),
    (
        r#"{"site":"shop","route":"/","sample_rate":0.0001,"metrics":[{"name":"LCP","value":1}]}"#,
        r#"{"site":"shop","route":"root","device":"desktop","nav_type":"unknown","sample_rate":0.0001,"received_at":1700000000123,"metrics":[{"name":"LCP","value":1.0,"id":"","rating":"good"}]}"#,
    ),
    (
        r#"{"site":"s","route":"/","v":9,"extra":{"a":[1]},"metrics":[{"name":"CLS","value":0,"id":"a","attribution":{}}]}"#,
        r#"{"site":"s","route":"root","device":"desktop","nav_type":"unknown","sample_rate":1.0,"received_at":1700000000123,"metrics":[{"name":"CLS","value":0.0,"id":"a","rating":"good"}]}"#,
    ),
    (
        r#"{"site":"s","route":"/x","nav_type":"prerender","metrics":[{"name":"LCP","value":5000,"id":"a","rating":"good","attribution":null},{"name":"LCP","value":1,"id":"a"},{"name":"XYZ","value":1}]}"#,
        r#"{"site":"s","route":"x","device":"desktop","nav_type":"prerender","sample_rate":1.0,"received_at":1700000000123,"metrics":[{"name":"LCP","value":5000.0,"id":"a","rating":"poor"}]}"#,
    ),
];

fn message_of(body: &str) -> Vec<u8> {
    parse_beacon(body.as_bytes())
        .and_then(|b| b.validate(&CTX))
        .unwrap_or_else(|e| panic!("{body}: {e}"))
        .message
        .encode()
}

#[test]
fn old_beacons_give_the_same_message_byte_for_byte() {
    for (body, expected) in PINNED {
        let got = message_of(body);
        assert_eq!(
            String::from_utf8_lossy(&got),
            *expected,
            "the message of {body} changed"
        );
    }
}

#[test]
fn old_messages_still_decode_and_encode_to_the_same_bytes() {
    for (_, old) in PINNED {
        let decoded =
            BeaconMessage::decode(old.as_bytes()).unwrap_or_else(|e| panic!("{old}: {e}"));
        assert_eq!(String::from_utf8_lossy(&decoded.encode()), *old);
        assert_eq!(decoded.page_id, "");
        assert_eq!(decoded.release, "");
        assert_eq!(decoded.rtt, "unknown");
        assert!(decoded.metrics.iter().all(|m| m.attribution.is_empty()));
        assert!(
            decoded.metrics.iter().all(|m| !m.resend),
            "{old}: a message without resend is a first report"
        );
    }
}

/// The old consumer's view of a metric: what `MetricSample` read before `resend` existed.
#[derive(serde::Deserialize, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
struct OldMetric {
    name: String,
    value: f64,
    id: String,
    rating: String,
}

#[test]
fn a_first_report_gives_no_resend_key_and_old_consumers_read_it_unchanged() {
    for (_, old) in PINNED {
        let decoded = BeaconMessage::decode(old.as_bytes()).unwrap();
        assert!(decoded.metrics.iter().all(|m| !m.resend), "{old}");
        let encoded = String::from_utf8(decoded.encode()).unwrap();
        assert!(!encoded.contains("resend"), "{encoded}");
    }
    // Today's collector's first report, and web-vitals' own (delta == value): no key in the message.
    for body in [
        r#"{"site":"shop","route":"/","page_id":"pg_0123456789","metrics":[{"name":"CLS","value":0.1,"id":"v5-1","rating":"good"}]}"#,
        r#"{"name":"CLS","value":0.1,"rating":"good","delta":0.1,"id":"v5-1","navigationType":"navigate","entries":[],"route":"/","site":"shop"}"#,
        r#"{"site":"shop","route":"/","metrics":[{"name":"CLS","value":0.1,"id":"v5-1","resend":false}]}"#,
    ] {
        let message = String::from_utf8(message_of(body)).unwrap();
        assert!(!message.contains("resend"), "{body} gave {message}");
        let metrics = &serde_json::from_str::<serde_json::Value>(&message).unwrap()["metrics"];
        let old: Vec<OldMetric> = serde_json::from_value(metrics.clone())
            .unwrap_or_else(|e| panic!("an old consumer cannot read {message}: {e}"));
        assert_eq!(old[0].value, 0.1);
    }
}

#[test]
fn a_resend_is_one_key_in_the_message_and_survives_decode_and_encode() {
    for body in [
        r#"{"site":"shop","route":"/","metrics":[{"name":"CLS","value":0.2,"id":"v5-1","rating":"good","resend":true}]}"#,
        r#"{"name":"CLS","value":0.2,"rating":"good","delta":0.1,"id":"v5-1","navigationType":"navigate","entries":[],"route":"/","site":"shop"}"#,
    ] {
        let message = String::from_utf8(message_of(body)).unwrap();
        assert!(
            message.contains(r#""metrics":[{"name":"CLS","value":0.2,"id":"v5-1","rating":"needs-improvement","resend":true}]"#),
            "{body} gave {message}"
        );
        let decoded = BeaconMessage::decode(message.as_bytes()).unwrap();
        assert!(decoded.metrics[0].resend);
        assert_eq!(String::from_utf8(decoded.encode()).unwrap(), message);
    }
}
