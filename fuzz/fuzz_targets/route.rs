//! `normalize_route` is total: any string gives a valid slug, and a slug normalizes to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rum_schemas::normalize_route;
use rum_schemas::route::{is_normalized_route, MAX_ROUTE_LEN};

fuzz_target!(|data: &[u8]| {
    // Routes arrive inside JSON strings, so they are always UTF-8; lossy keeps every input useful.
    let raw = String::from_utf8_lossy(data);
    let slug = normalize_route(&raw);
    assert!(
        is_normalized_route(&slug),
        "normalize_route({raw:?}) = {slug:?} is not a normalized route"
    );
    assert!(slug.len() <= MAX_ROUTE_LEN, "{slug:?} is too long");
    let again = normalize_route(&slug);
    assert_eq!(
        again, slug,
        "normalize_route is not idempotent: {raw:?} -> {slug:?} -> {again:?}"
    );
});
