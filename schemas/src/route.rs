//! The route label: a short, bounded slug of a URL path, the same in the browser and on the server.
//!
//! Rules, pinned by `schemas/testdata/routes.json` (the collector tests the same file):
//! 1. A full URL loses its scheme and host; query and fragment are dropped; the rest is lower-cased.
//! 2. A path segment that is a UUID becomes the token `id`.
//! 3. Otherwise segments split into tokens at every character that is not `[a-z0-9]`.
//! 4. A token that is an id becomes `id`: all digits, or 16+ hex characters with a digit.
//! 5. Tokens are joined with `-`, taking whole tokens while the slug stays within [`MAX_ROUTE_LEN`]
//!    characters; only a first token longer than that is cut (and checked for an id again).
//! 6. Nothing left is `root`.
//!
//! Whole tokens and a final id check make the slug a fixed point: normalizing a slug gives itself.

/// The longest route slug.
pub const MAX_ROUTE_LEN: usize = 32;
/// The slug of `/` and of paths with nothing left after normalization.
pub const ROOT_ROUTE: &str = "root";
/// The slug routes fold into once a site has too many distinct ones.
pub const OTHER_ROUTE: &str = "other";

/// Normalizes a path or URL into a route slug. Total: any input gives a valid slug.
pub fn normalize_route(raw: &str) -> String {
    let path = strip_origin(raw);
    let path = path
        .split(['?', '#'])
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    let mut slug = String::with_capacity(MAX_ROUTE_LEN);
    'segments: for segment in path.split('/').filter(|s| !s.is_empty()) {
        let uuid = is_uuid(segment);
        let tokens = segment
            .split(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit()))
            .filter(|t| !t.is_empty());
        for token in std::iter::once("id")
            .filter(|_| uuid)
            .chain(tokens.filter(|_| !uuid))
        {
            let token = if is_id_token(token) { "id" } else { token };
            if slug.is_empty() {
                // Only a first token can be too long on its own: cut it, then check it again.
                let cut = &token[..token.len().min(MAX_ROUTE_LEN)];
                slug.push_str(if is_id_token(cut) { "id" } else { cut });
            } else if slug.len() + 1 + token.len() <= MAX_ROUTE_LEN {
                slug.push('-');
                slug.push_str(token);
            } else {
                break 'segments;
            }
        }
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

/// All digits, or 16+ hex characters with at least one digit (tokens are `[a-z0-9]`).
fn is_id_token(token: &str) -> bool {
    !token.is_empty() && (token.bytes().all(|b| b.is_ascii_digit()) || is_long_hex(token))
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
    fn is_a_fixed_point_on_inputs_the_fuzzer_found() {
        let inputs = [
            "/1.",
            "/12345.",
            "/d41d8cd98f00b204e9800998ecf8427e.png",
            " \0\0\0\0\0\0\0\x000\0\0\0--  ",
            "/abc/1234x",
            "/abcdefghijklmnopqrstuvwxyz0123456789",
        ];
        for input in inputs {
            let slug = normalize_route(input);
            assert!(is_normalized_route(&slug), "{input:?} -> {slug:?}");
            assert_eq!(normalize_route(&slug), slug, "{input:?}");
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
