//! A request body through everything `rum-schemas` does with it: `parse_beacon`, `Beacon::validate`,
//! `BeaconMessage::encode`/`decode`. Nothing may panic; a validated beacon is a message consumers
//! accept unchanged; a message consumers accept survives re-encoding unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rum_schemas::beacon::{is_valid_site, RequestContext, MAX_METRICS_PER_BEACON};
use rum_schemas::browser::Browser;
use rum_schemas::route::is_normalized_route;
use rum_schemas::{parse_beacon, BeaconMessage, Device};

/// What the ingest may know besides the body: no query site or one, an unknown or a known header device.
const CONTEXTS: [RequestContext<'static>; 2] = [
    RequestContext {
        query_site: None,
        header_device: Device::Unknown,
        received_at_ms: 1_700_000_000_000,
        browser: Browser::UNKNOWN,
        referer_path: None,
    },
    RequestContext {
        query_site: Some("query-site"),
        header_device: Device::Tablet,
        // The latest a message may carry (ClickHouse's DateTime ends at 2^32 s; later is dead-lettered
        // as invalid_received_at: the ingest stamps its own clock, never that far).
        received_at_ms: rum_schemas::MAX_RECEIVED_AT_MS - 1,
        // A known browser, and a page path for a body without a route (a bare Metric's Referer).
        browser: Browser {
            family: "safari",
            major: 26,
        },
        referer_path: Some("/product/123?q=ignored"),
    },
];

fuzz_target!(|data: &[u8]| {
    // The consumer side: arbitrary bytes from Kafka.
    if let Ok(msg) = BeaconMessage::decode(data) {
        let encoded = msg.encode();
        match BeaconMessage::decode(&encoded) {
            Ok(again) => assert_eq!(again, msg, "decode(encode(msg)) != msg"),
            Err(e) => panic!("an accepted message fails to decode after re-encoding: {e}"),
        }
    }

    // The ingest side: arbitrary request bodies.
    let beacon = match parse_beacon(data) {
        Ok(beacon) => beacon,
        Err(e) => {
            let _ = (e.reason(), e.to_string());
            return;
        }
    };
    for ctx in &CONTEXTS {
        let sent = beacon.metrics.len();
        let validated = match beacon.clone().validate(ctx) {
            Ok(v) => v,
            Err(e) => {
                let _ = (e.reason(), e.to_string());
                continue;
            }
        };
        let msg = &validated.message;
        assert_eq!(
            msg.metrics.len() + validated.dropped.len(),
            sent,
            "every metric is kept or dropped with a reason"
        );
        assert!(!msg.metrics.is_empty() && msg.metrics.len() <= MAX_METRICS_PER_BEACON);
        assert!(is_valid_site(&msg.site), "invalid site {:?}", msg.site);
        assert!(is_normalized_route(&msg.route), "invalid route {:?}", msg.route);
        assert!(msg.sample_rate > 0.0 && msg.sample_rate <= 1.0);
        assert_eq!(msg.received_at, ctx.received_at_ms);
        for why in &validated.dropped {
            let _ = why.reason();
        }
        for why in &validated.dropped_attributions {
            let _ = why.reason();
        }
        assert!(
            validated.dropped_attributions.len() <= msg.metrics.len(),
            "an attribution is dropped only from a kept metric"
        );
        assert_eq!(
            validated.route_from_referer,
            beacon.route.is_none(),
            "a body without a route takes the Referer's"
        );
        assert_eq!(
            (msg.browser.as_str(), msg.browser_major),
            (ctx.browser.family, ctx.browser.major)
        );
        let _ = msg.key();

        let encoded = msg.encode();
        match BeaconMessage::decode(&encoded) {
            Ok(decoded) => assert_eq!(&decoded, msg, "a validated beacon does not round-trip"),
            Err(e) => panic!(
                "a validated beacon is rejected by the consumer: {e}\nencoded: {}",
                String::from_utf8_lossy(&encoded)
            ),
        }
    }
});
