//! The route label: a short, bounded slug of a URL path, the same in the browser and on the server.
//!
//! Rules, pinned by `schemas/testdata/routes.json` (the collector tests the same file):
//! 1. A full URL loses its scheme and host; query and fragment are dropped.
//! 2. The path is lower-cased and split on `/`; empty segments go.
//! 3. A segment that is an id becomes `id`: all digits, a UUID, or 16+ hex characters with a digit.
//! 4. Every other character than `[a-z0-9]` becomes `-`; runs of `-` collapse; `-` is trimmed at both ends.
//! 5. Segments are joined with `-`, cut to [`MAX_ROUTE_LEN`] characters (trailing `-` trimmed).
//! 6. Nothing left is `root`.

/// The longest route slug.
pub const MAX_ROUTE_LEN: usize = 32;
/// The slug of `/` and of paths with nothing left after normalization.
pub const ROOT_ROUTE: &str = "root";
/// The slug routes fold into once a site has too many distinct ones.
pub const OTHER_ROUTE: &str = "other";

/// Normalizes a path or URL into a route slug. Total: any input gives a valid slug.
pub fn normalize_route(raw: &str) -> String {
    let path = strip_origin(raw);
    let path = path.split(['?', '#']).next().unwrap_or("");
    let mut slug = String::with_capacity(MAX_ROUTE_LEN + 8);
    for segment in path.split('/').filter(|s| !s.is_empty()) {
        let segment = segment.to_ascii_lowercase();
        if is_id(&segment) {
            push_part(&mut slug, "id");
        } else {
            push_part(&mut slug, &segment);
        }
        if slug.len() > MAX_ROUTE_LEN {
            break;
        }
    }
    slug.truncate(MAX_ROUTE_LEN);
    while slug.ends_with('-') {
        slug.pop();
    }
    if slug.is_empty() {
        ROOT_ROUTE.to_string()
    } else {
        slug
    }
}

/// True when `route` is a slug [`normalize_route`] could have produced.
pub fn is_normalized_route(route: &str) -> bool {
    !route.is_empty()
        && route.len() <= MAX_ROUTE_LEN
        && route
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !route.starts_with('-')
        && !route.ends_with('-')
        && !route.contains("--")
}

fn strip_origin(raw: &str) -> &str {
    let raw = raw.trim();
    for scheme in ["https://", "http://", "//"] {
        let has_scheme = raw
            .get(..scheme.len())
            .is_some_and(|head| head.eq_ignore_ascii_case(scheme));
        if has_scheme {
            let rest = &raw[scheme.len()..];
            return rest.find(['/', '?', '#']).map_or("", |at| &rest[at..]);
        }
    }
    raw
}

/// Appends `part` mapped to `[a-z0-9-]`, separated by one `-`, without doubled dashes.
fn push_part(slug: &mut String, part: &str) {
    if !slug.is_empty() && !slug.ends_with('-') {
        slug.push('-');
    }
    for c in part.chars() {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            slug.push(c);
        } else if !slug.is_empty() && !slug.ends_with('-') {
            slug.push('-');
        }
    }
}

fn is_id(segment: &str) -> bool {
    let all_digits = segment.bytes().all(|b| b.is_ascii_digit());
    if all_digits {
        return true;
    }
    is_uuid(segment) || is_long_hex(segment)
}

fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

fn is_long_hex(s: &str) -> bool {
    s.len() >= 16
        && s.bytes().all(|b| b.is_ascii_hexdigit())
        && s.bytes().any(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize)]
    struct Vector {
        input: String,
        expected: String,
    }

    fn vectors() -> Vec<Vector> {
        serde_json::from_str(include_str!("../testdata/routes.json")).expect("routes.json parses")
    }

    #[test]
    fn matches_every_shared_vector() {
        let vectors = vectors();
        assert!(vectors.len() >= 20, "routes.json should pin the rules well");
        for v in vectors {
            assert_eq!(normalize_route(&v.input), v.expected, "input {:?}", v.input);
        }
    }

    #[test]
    fn every_output_is_a_valid_slug() {
        for v in vectors() {
            let slug = normalize_route(&v.input);
            assert!(is_normalized_route(&slug), "{slug:?} from {:?}", v.input);
            assert_eq!(
                normalize_route(&slug),
                slug,
                "normalization is idempotent on {slug:?}"
            );
        }
    }

    #[test]
    fn never_exceeds_the_length_bound_on_odd_input() {
        for input in [
            "/".repeat(10_000),
            "é/".repeat(500),
            "a-".repeat(100),
            "\u{0}\u{ffff}".into(),
        ] {
            let slug = normalize_route(&input);
            assert!(is_normalized_route(&slug), "{slug:?}");
        }
    }
}
