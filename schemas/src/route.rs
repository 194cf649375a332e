//! The route label: a short, bounded slug of a URL path, the same in the browser and on the server.
//!
//! Rules, pinned by `schemas/testdata/routes.json` (the collector tests the same file):
//! 1. A full URL loses its scheme and host; query and fragment are dropped; the rest is lower-cased.
//! 2. A path segment that may hold personal data or a secret becomes the token `id` as a whole:
//!    - a UUID;
//!    - an e-mail address (or a handle): the segment contains an at sign, `@` or a look-alike
//!      (fullwidth `＠` U+FF20, small `﹫` U+FE6B), raw or percent-encoded up to [`MAX_DECODES`] times
//!      (`%40`, a double-encoded `%2540`, `%EF%BC%A0`);
//!    - a phone number: only digits and `+ - ( ) .` (also `%20`, `%2B`, `%28`, `%29`), at least 7 digits
//!      (dates such as `2024-01-15` are phone-shaped and become `id` too).
//! 3. Otherwise a segment splits at `.` into parts, and a part into tokens at every character that
//!    is not `[a-z0-9]`. A token is a secret (base64, base64url, a JWT part, long hex, a random code)
//!    when it has 16+ characters with both letters and digits, or 8+ characters in which letters and
//!    digits alternate at least 3 times. A part holding a secret becomes `id` as a whole, so that no
//!    fragment split off at `-`, `_`, `+`, `%`, `=` stays.
//! 4. Otherwise a token of digits only, or of letters then [`MIN_PREFIXED_DIGITS`]+ digits (a per-user
//!    or per-order number such as `u8812345`), becomes `id`.
//!    Slugs of words stay: their tokens are words, numbers or short model names
//!    (`understanding-web-vitals`, `galaxy-s24-ultra-256gb`, `rtx4090-vs-rx7900xtx`). Not recognized:
//!    secrets of letters only, and secrets cut by separators into tokens shorter than 8.
//! 5. Tokens are joined with `-`, taking whole tokens while the slug stays within [`MAX_ROUTE_LEN`]
//!    characters; only a first token longer than that is cut (and checked for an id again).
//! 6. Nothing left is `root`.
//!
//! Whole tokens and a final id check make the slug a fixed point: normalizing a slug gives itself
//! (a slug has no `@`, `%`, `.` and no token that rules 2 to 4 turn into `id`).

/// The longest route slug.
pub const MAX_ROUTE_LEN: usize = 32;
/// The slug of `/` and of paths with nothing left after normalization.
pub const ROOT_ROUTE: &str = "root";
/// The slug routes fold into once a site has too many distinct ones.
pub const OTHER_ROUTE: &str = "other";
/// The token that replaces ids, secrets and personal data.
pub const ID_TOKEN: &str = "id";
/// A token at least this long with both letters and digits is a secret or an id.
pub const MIN_SECRET_LEN: usize = 16;
/// A token at least this long in which letters and digits alternate [`MIN_ALTERNATIONS`] times is
/// a secret too (`qm7kx2pw9`; not `rx7900xtx`, `1000xm5`, `mp4h264`).
pub const MIN_MIXED_LEN: usize = 8;
/// See [`MIN_MIXED_LEN`].
pub const MIN_ALTERNATIONS: usize = 3;
/// A segment of phone characters with at least this many digits is a phone number.
pub const MIN_PHONE_DIGITS: usize = 7;
/// A token of letters followed by at least this many digits is an id (`u8812345`; not `b12345`,
/// `rtx4090`).
pub const MIN_PREFIXED_DIGITS: usize = 6;
/// A segment is percent-decoded this many times when looking for an at sign: a double-encoded
/// `%2540` is a common bug of single-page apps, a third level covers one more.
pub const MAX_DECODES: usize = 3;
/// At signs as UTF-8 bytes: `@`, fullwidth `＠` (U+FF20) and small `﹫` (U+FE6B).
const AT_SIGNS: [&[u8]; 3] = [b"@", "\u{ff20}".as_bytes(), "\u{fe6b}".as_bytes()];

/// Normalizes a path or URL into a route slug. Total: any input gives a valid slug.
pub fn normalize_route(raw: &str) -> String {
    let path = strip_origin(raw);
    let path = path
        .split(['?', '#'])
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    let mut slug = Slug::default();
    for segment in path.split('/').filter(|s| !s.is_empty()) {
        if is_personal_segment(segment) {
            if !slug.push(ID_TOKEN) {
                break;
            }
            continue;
        }
        for part in segment.split('.') {
            let mut tokens = part
                .split(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit()))
                .filter(|t| !t.is_empty());
            let fits = if tokens.clone().any(is_secret_token) {
                slug.push(ID_TOKEN)
            } else {
                tokens.all(|token| slug.push(if is_id_token(token) { ID_TOKEN } else { token }))
            };
            if !fits {
                return slug.finish();
            }
        }
    }
    slug.finish()
}

/// The slug being built: whole tokens joined with `-`, within [`MAX_ROUTE_LEN`].
#[derive(Default)]
struct Slug(String);

impl Slug {
    /// Appends a token; false when it does not fit (the slug is complete).
    fn push(&mut self, token: &str) -> bool {
        if self.0.is_empty() {
            // Only a first token can be too long on its own: cut it, then check it again.
            let cut = &token[..token.len().min(MAX_ROUTE_LEN)];
            self.0
                .push_str(if is_id_token(cut) { ID_TOKEN } else { cut });
            true
        } else if self.0.len() + 1 + token.len() <= MAX_ROUTE_LEN {
            self.0.push('-');
            self.0.push_str(token);
            true
        } else {
            false
        }
    }

    fn finish(self) -> String {
        if self.0.is_empty() {
            ROOT_ROUTE.to_string()
        } else {
            self.0
        }
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

/// All digits, letters then [`MIN_PREFIXED_DIGITS`]+ digits, or a secret (tokens are `[a-z0-9]`).
fn is_id_token(token: &str) -> bool {
    let digits = token.trim_start_matches(|c: char| c.is_ascii_lowercase());
    !token.is_empty()
        && (token.bytes().all(|b| b.is_ascii_digit())
            || (digits.len() >= MIN_PREFIXED_DIGITS && digits.bytes().all(|b| b.is_ascii_digit()))
            || is_secret_token(token))
}

/// [`MIN_SECRET_LEN`]+ characters with both letters and digits (long hex included), or
/// [`MIN_MIXED_LEN`]+ characters in which letters and digits alternate [`MIN_ALTERNATIONS`]+ times.
/// A property of the token alone, so that joining tokens into a slug cannot make a new secret.
fn is_secret_token(token: &str) -> bool {
    let b = token.as_bytes();
    let digits = b.iter().filter(|c| c.is_ascii_digit()).count();
    let alternations = b
        .windows(2)
        .filter(|w| w[0].is_ascii_digit() != w[1].is_ascii_digit())
        .count();
    (b.len() >= MIN_SECRET_LEN && digits > 0 && digits < b.len())
        || (b.len() >= MIN_MIXED_LEN && alternations >= MIN_ALTERNATIONS)
}

/// A UUID, an e-mail address or handle, or a phone number: the whole segment is `id`.
fn is_personal_segment(segment: &str) -> bool {
    is_uuid(segment) || has_at_sign(segment) || is_phone(segment)
}

/// An at sign in the segment's UTF-8 bytes once percent-decoded up to [`MAX_DECODES`] times (the
/// segment is lower-cased: escapes are `%[0-9a-f]{2}`; decoding never removes an at sign).
fn has_at_sign(segment: &str) -> bool {
    let mut bytes = segment.as_bytes().to_vec();
    for _ in 0..MAX_DECODES {
        if !bytes.contains(&b'%') {
            break;
        }
        bytes = percent_decode(&bytes);
    }
    AT_SIGNS
        .iter()
        .any(|at| bytes.windows(at.len()).any(|w| w == *at))
}

/// One left-to-right pass: each `%` and two lower-case hex digits becomes that byte.
fn percent_decode(bytes: &[u8]) -> Vec<u8> {
    let hex = |b: u8| match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    };
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escape = match bytes.get(i..i + 3) {
            Some([b'%', hi, lo]) => hex(*hi).zip(hex(*lo)).map(|(hi, lo)| (hi << 4) | lo),
            _ => None,
        };
        match escape {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    out
}

fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// Digits and `+-().` (or `%20`, `%2b`, `%28`, `%29`) only, with at least [`MIN_PHONE_DIGITS`] digits.
fn is_phone(segment: &str) -> bool {
    let b = segment.as_bytes();
    let (mut i, mut digits) = (0, 0);
    while i < b.len() {
        match b[i] {
            b'0'..=b'9' => digits += 1,
            b'+' | b'-' | b'(' | b')' | b'.' => {}
            b'%' if matches!(b.get(i + 1..i + 3), Some(b"20" | b"2b" | b"28" | b"29")) => i += 2,
            _ => return false,
        }
        i += 1;
    }
    digits >= MIN_PHONE_DIGITS
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

    /// A small deterministic generator (xorshift): the same inputs on every run.
    struct Xorshift(u64);

    impl Xorshift {
        fn pick(&mut self, alphabet: &[u8]) -> u8 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            alphabet[(self.0 % alphabet.len() as u64) as usize]
        }

        fn text(&mut self, alphabet: &[u8], len: usize) -> String {
            (0..len).map(|_| self.pick(alphabet) as char).collect()
        }
    }

    const BASE64URL: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

    #[test]
    fn is_a_fixed_point_on_generated_paths_of_tricky_characters() {
        let mut rng = Xorshift(0x9e37_79b9_7f4a_7c15);
        let alphabet = b"aZk0917/-_.@%+()4bQ2xX ";
        for _ in 0..50_000 {
            let len = (rng.pick(b"0123456789") - b'0') as usize * 6;
            let input = rng.text(alphabet, len);
            let slug = normalize_route(&input);
            assert!(is_normalized_route(&slug), "{input:?} -> {slug:?}");
            assert_eq!(normalize_route(&slug), slug, "{input:?}");
        }
    }

    #[test]
    fn hides_every_e_mail_address_and_phone_number() {
        let mut rng = Xorshift(42);
        for _ in 0..2_000 {
            let local = rng.text(b"abcdefghijklmnopqrstuvwxyz0123456789._+-", 12);
            let ats = [
                "@",
                "%40",
                "%2540",
                "%252540",
                "\u{ff20}",
                "%EF%BC%A0",
                "%25ef%25bc%25a0",
                "\u{fe6b}",
                "%ef%b9%ab",
            ];
            let at = ats[(rng.pick(b"012345678") - b'0') as usize];
            let path = format!("/u/{local}{at}example.com/orders");
            assert_eq!(normalize_route(&path), "u-id-orders", "{path}");
            let phone = rng.text(b"0123456789", 10);
            let (a, b, c) = (&phone[..3], &phone[3..6], &phone[6..]);
            for path in [
                format!("/call/+1-{a}-{b}-{c}"),
                format!("/call/({a})%20{b}-{c}"),
                format!("/call/%2B1.{a}.{b}.{c}"),
            ] {
                assert_eq!(normalize_route(&path), "call-id", "{path}");
            }
        }
    }

    #[test]
    fn hides_letters_then_six_digits_and_keeps_shorter_model_numbers() {
        let mut rng = Xorshift(3);
        for i in 0..2_000 {
            let prefix = rng.text(b"abcdefghijklmnopqrstuvwxyz", 1 + i % 4);
            let digits = rng.text(b"0123456789", 1 + i % 9);
            let path = format!("/profile/{prefix}{digits}");
            let expected = if digits.len() >= MIN_PREFIXED_DIGITS {
                "profile-id".to_string()
            } else {
                format!("profile-{prefix}{digits}")
            };
            assert_eq!(normalize_route(&path), expected, "{path}");
        }
    }

    #[test]
    fn a_percent_sign_alone_is_no_at_sign() {
        for segment in ["100%25-off", "%25", "%2", "%4", "%%40x", "%e2%82%ac5"] {
            let at = segment.contains("%40");
            assert_eq!(has_at_sign(segment), at, "{segment}");
        }
    }

    #[test]
    fn hides_every_long_token_without_separators_that_has_a_digit() {
        let mut rng = Xorshift(7);
        let alphanumeric = &BASE64URL[..62];
        let mut hidden = 0;
        for i in 0..5_000 {
            let hex = rng.text(b"0123456789abcdef", 16 + i % 48);
            let token = rng.text(alphanumeric, 16 + i % 48);
            let has_digit = token.bytes().any(|b| b.is_ascii_digit());
            for (token, has_digit) in [(hex.as_str(), true), (token.as_str(), has_digit)] {
                let mixed = has_digit && !token.bytes().all(|b| b.is_ascii_digit());
                if mixed {
                    assert_eq!(normalize_route(&format!("/r/{token}")), "r-id", "{token}");
                    hidden += 1;
                }
            }
        }
        assert!(hidden > 9_000, "the generator makes mixed tokens: {hidden}");
    }

    #[test]
    fn hides_most_random_base64url_tokens_of_22_characters_or_more() {
        // Separators cut a base64url token into shorter tokens, recognized only when long or when
        // letters and digits alternate often; letters-only tokens stay. Deterministic: this
        // generator hides 866, 960 and 986 of 1000.
        let mut rng = Xorshift(11);
        for (len, at_least_hidden) in [(22, 850), (32, 950), (43, 980)] {
            let hidden = (0..1_000)
                .filter(|_| {
                    let token = rng.text(BASE64URL, len);
                    normalize_route(&format!("/reset/{token}")) == "reset-id"
                })
                .count();
            assert!(
                hidden >= at_least_hidden,
                "{len} characters: {hidden} of 1000 hidden"
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
