//! `schemas/beacon.v1.schema.json` documents the wire format; these tests keep it honest:
//! the examples it accepts are beacons the server keeps whole, the ones it refuses the server
//! rejects or trims.

use rum_schemas::beacon::RequestContext;
use rum_schemas::{parse_beacon, Device};
use serde_json::Value;

fn schema() -> jsonschema::Validator {
    let schema: Value =
        serde_json::from_str(include_str!("../beacon.v1.schema.json")).expect("schema is JSON");
    jsonschema::validator_for(&schema).expect("schema compiles")
}

fn examples() -> Value {
    serde_json::from_str(include_str!("../testdata/beacons.json")).expect("examples are JSON")
}

const CTX: RequestContext<'static> = RequestContext {
    query_site: Some("from-query"),
    header_device: Device::Desktop,
    received_at_ms: 1,
    browser: rum_schemas::browser::Browser::UNKNOWN,
    referer_path: None,
};

#[test]
fn valid_examples_pass_the_schema_and_the_server_keeps_every_metric() {
    let schema = schema();
    for example in examples()["valid"].as_array().unwrap() {
        let errors: Vec<String> = schema.iter_errors(example).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{example}: {errors:?}");
        let validated = parse_beacon(example.to_string().as_bytes())
            .and_then(|b| b.validate(&CTX))
            .unwrap_or_else(|e| panic!("{example}: {e}"));
        assert!(
            validated.dropped.is_empty(),
            "{example}: dropped {:?}",
            validated.dropped
        );
        assert!(
            validated.dropped_attributions.is_empty(),
            "{example}: attribution dropped {:?}",
            validated.dropped_attributions
        );
    }
}

#[test]
fn invalid_examples_fail_the_schema_and_the_server_rejects_or_trims_them_with_their_reason() {
    let schema = schema();
    for example in examples()["invalid"].as_array().unwrap() {
        let (why, body) = (&example["why"], &example["body"]);
        let reason = example["reason"]
            .as_str()
            .unwrap_or_else(|| panic!("{why}: no reason"));
        assert!(!schema.is_valid(body), "schema accepts {why}: {body}");
        let server = parse_beacon(body.to_string().as_bytes()).and_then(|b| b.validate(&CTX));
        match server {
            Err(e) => assert_eq!(e.reason(), reason, "{why}: {e}"),
            Ok(v) => {
                // A dropped metric, or an attribution dropped from a kept metric.
                let dropped: Vec<_> = v
                    .dropped
                    .iter()
                    .map(|r| r.reason())
                    .chain(v.dropped_attributions.iter().map(|r| r.reason()))
                    .collect();
                assert_eq!(dropped, [reason], "{why}: {body}");
            }
        }
    }
}

#[test]
fn valid_examples_carry_the_optional_fields_into_the_message() {
    let examples = examples();
    let with_everything = examples["valid"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["page_id"] == "pg_8fJ2-kQ91xZ")
        .expect("the example with every optional field");
    let message = parse_beacon(with_everything.to_string().as_bytes())
        .and_then(|b| b.validate(&CTX))
        .unwrap()
        .message;
    assert_eq!(
        (
            message.page_id.as_str(),
            message.release.as_str(),
            message.rtt.as_str()
        ),
        ("pg_8fJ2-kQ91xZ", "2024.05.1 (a1b2c3d)", "100-300")
    );
    assert_eq!(message.nav_type, "soft-navigation");
    let [lcp, inp, cls, ttfb, fcp] = &message.metrics[..] else {
        panic!("five metrics: {:?}", message.metrics);
    };
    assert_eq!(lcp.attribution.url, "https://cdn.example/hero.jpg");
    assert_eq!(lcp.attribution.element_render_delay, Some(12.0));
    assert_eq!(inp.attribution.script_url, "https://shop.example/app.js");
    assert_eq!(inp.attribution.interaction_type, "pointer");
    assert_eq!(cls.attribution.largest_shift_target, "div.banner");
    assert!(ttfb.attribution.is_empty() && fcp.attribution.is_empty());
}
