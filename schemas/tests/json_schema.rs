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
    }
}

#[test]
fn invalid_examples_fail_the_schema_and_the_server_rejects_or_trims_them() {
    let schema = schema();
    for example in examples()["invalid"].as_array().unwrap() {
        let (why, body) = (&example["why"], &example["body"]);
        assert!(!schema.is_valid(body), "schema accepts {why}: {body}");
        let server = parse_beacon(body.to_string().as_bytes()).and_then(|b| b.validate(&CTX));
        match server {
            Err(_) => {}
            Ok(v) => assert!(!v.dropped.is_empty(), "server keeps {why} whole: {body}"),
        }
    }
}
