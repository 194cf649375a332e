//! Signed ingest tokens: `?site=S&t=<token>&e=<expires>[&k=<key id>]`, where `expires` is unix
//! seconds and
//!
//! ```text
//! token = base64url_nopad(HMAC-SHA256(secret, "rum-token-v2\n" + site + "\n" + path + "\n" + expires + "\n" + key_id))
//! ```
//!
//! (`key_id` empty for a site's `token_secret`, which has none). A site with a secret accepts a
//! beacon only with a token that
//! * was signed for this site and this path: a token of site A is refused on site B, even when
//!   both share a secret;
//! * was signed with one of the site's keys: `k` names it, so a site can hold two during a
//!   rotation (`token_secrets`, the first signs, every one verifies; a `k` no key has is refused
//!   as `token_unknown_key`);
//! * has not expired, and expires at most `ingest.token_max_ttl_secs` (plus a minute of clock
//!   skew) from now: a leaked token cannot live forever, whatever the signer asked for.
//!
//! The page embedding the collector gets a fresh token from its own backend (or from `rum token`).
//! Tokens of the first format (`SHA-256(secret + path + expires)`, no site, no key id) are not
//! accepted any more: they did not bind the site.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use rum_schemas::config::Secret;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::config::SiteConfig;

/// How far past `ingest.token_max_ttl_secs` an expiry may lie: the signer's clock may run ahead.
pub const CLOCK_SKEW_SECS: u64 = 60;

/// Why a token was refused; each is a `reason` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// No `t` or no `e` in the query string.
    #[error("this site requires a signed token (?t=...&e=...)")]
    Missing,
    /// `e` is in the past.
    #[error("the token has expired")]
    Expired,
    /// `e` lies further ahead than `ingest.token_max_ttl_secs`.
    #[error("the token lives longer than this ingest allows")]
    TooLong,
    /// `k` names no key of the site.
    #[error("the token's key id is not one of this site's keys")]
    UnknownKey,
    /// The token does not match (forged, another site's, another path's, `e` not a number).
    #[error("the token is not valid for this site and path")]
    Invalid,
}

impl TokenError {
    /// The `reason` label of the rejection counter.
    pub fn reason(self) -> &'static str {
        match self {
            TokenError::Missing => "token_missing",
            TokenError::Expired => "token_expired",
            TokenError::TooLong => "token_ttl_too_long",
            TokenError::UnknownKey => "token_unknown_key",
            TokenError::Invalid => "token_invalid",
        }
    }
}

/// One signing key of a site.
#[derive(Clone)]
pub struct Key {
    /// Its id, sent as `k`; none for a `token_secret`.
    pub id: Option<String>,
    secret: Secret,
}

impl Key {
    /// A key with this id (`None` for a `token_secret`) and secret.
    pub fn new(id: Option<String>, secret: Secret) -> Self {
        Self { id, secret }
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Key")
            .field("id", &self.id)
            .field("secret", &self.secret)
            .finish()
    }
}

/// A site's keys: the first signs, every one verifies.
#[derive(Debug, Clone)]
pub struct SiteKeys(Vec<Key>);

impl SiteKeys {
    /// The keys of a site's config (`token_secret`, or `token_secrets` in order); `None` when the
    /// site needs no token.
    pub fn of(site: &SiteConfig) -> Option<SiteKeys> {
        let keys: Vec<Key> = site
            .token_secret
            .iter()
            .map(|secret| Key {
                id: None,
                secret: secret.clone(),
            })
            .chain(site.token_secrets.iter().map(|k| Key {
                id: Some(k.id.clone()),
                secret: k.secret.clone(),
            }))
            .collect();
        (!keys.is_empty()).then_some(SiteKeys(keys))
    }

    /// The key that signs new tokens.
    pub fn current(&self) -> &Key {
        &self.0[0]
    }

    fn find(&self, id: Option<&str>) -> Option<&Key> {
        self.0.iter().find(|k| k.id.as_deref() == id)
    }
}

/// What a request carries: `t`, `e` and `k` as they came in the query string.
#[derive(Debug, Clone, Copy, Default)]
pub struct Presented<'a> {
    /// `t`.
    pub token: Option<&'a str>,
    /// `e`.
    pub expires: Option<&'a str>,
    /// `k`.
    pub key_id: Option<&'a str>,
}

/// The token for `site` and `path` valid until `expires` (unix seconds), signed with `key`.
pub fn sign(key: &Key, site: &str, path: &str, expires: u64) -> String {
    let message = format!(
        "rum-token-v2\n{site}\n{path}\n{expires}\n{}",
        key.id.as_deref().unwrap_or("")
    );
    URL_SAFE_NO_PAD.encode(hmac_sha256(
        key.secret.expose().as_bytes(),
        message.as_bytes(),
    ))
}

/// The query string `rum token` prints: `site=S&t=...&e=...[&k=...]`.
pub fn query(key: &Key, site: &str, path: &str, expires: u64) -> String {
    let token = sign(key, site, path, expires);
    match &key.id {
        Some(id) => format!("site={site}&t={token}&e={expires}&k={id}"),
        None => format!("site={site}&t={token}&e={expires}"),
    }
}

/// Checks a presented token for `site` and `path` at `now` (unix seconds).
pub fn verify(
    keys: &SiteKeys,
    site: &str,
    path: &str,
    presented: Presented<'_>,
    now: u64,
    max_ttl_secs: u64,
) -> Result<(), TokenError> {
    let (Some(token), Some(expires)) = (presented.token, presented.expires) else {
        return Err(TokenError::Missing);
    };
    let expires: u64 = expires.parse().map_err(|_| TokenError::Invalid)?;
    if expires <= now {
        return Err(TokenError::Expired);
    }
    if expires - now > max_ttl_secs.saturating_add(CLOCK_SKEW_SECS) {
        return Err(TokenError::TooLong);
    }
    let key = keys.find(presented.key_id).ok_or(TokenError::UnknownKey)?;
    let expected = sign(key, site, path, expires);
    if bool::from(expected.as_bytes().ct_eq(token.as_bytes())) {
        Ok(())
    } else {
        Err(TokenError::Invalid)
    }
}

/// HMAC (RFC 2104) over SHA-256, RustCrypto's `hmac` (the vectors of RFC 4231 are tested below).
fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    // HMAC takes a key of any length (a longer one is hashed first): this never fails.
    let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(key) else {
        unreachable!("HMAC-SHA256 accepts keys of every length")
    };
    mac.update(message);
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TokenSecret;

    const SECRET: &str = "s3cret-key-of-the-shop";
    const PATH: &str = "/api/v1/observability/web-vitals";
    const DAY: u64 = 86_400;

    fn single(secret: &str) -> SiteKeys {
        SiteKeys::of(&SiteConfig {
            token_secret: Some(secret.into()),
            ..Default::default()
        })
        .unwrap()
    }

    fn rotating(ids: &[(&str, &str)]) -> SiteKeys {
        SiteKeys::of(&SiteConfig {
            token_secrets: ids
                .iter()
                .map(|(id, secret)| TokenSecret {
                    id: id.to_string(),
                    secret: (*secret).into(),
                })
                .collect(),
            ..Default::default()
        })
        .unwrap()
    }

    fn presented<'a>(t: &'a str, e: &'a str, k: Option<&'a str>) -> Presented<'a> {
        Presented {
            token: Some(t),
            expires: Some(e),
            key_id: k,
        }
    }

    #[test]
    fn a_signed_token_verifies_until_it_expires() {
        let keys = single(SECRET);
        let t = sign(keys.current(), "shop", PATH, 2_000);
        assert!(
            !t.contains('=') && !t.contains('+') && !t.contains('/'),
            "base64url without padding: {t}"
        );
        let check = |now| verify(&keys, "shop", PATH, presented(&t, "2000", None), now, DAY);
        assert_eq!(check(1_999), Ok(()));
        assert_eq!(check(2_000), Err(TokenError::Expired));
    }

    #[test]
    fn refuses_forged_tampered_cross_site_and_wrong_path_tokens() {
        let keys = single(SECRET);
        let t = sign(keys.current(), "shop", PATH, 2_000);
        let check = |keys: &SiteKeys, site: &str, path: &str, p: Presented<'_>| {
            verify(keys, site, path, p, 0, DAY)
        };
        assert_eq!(
            check(
                &single("other-secret-0123"),
                "shop",
                PATH,
                presented(&t, "2000", None)
            ),
            Err(TokenError::Invalid)
        );
        assert_eq!(
            check(&keys, "blog", PATH, presented(&t, "2000", None)),
            Err(TokenError::Invalid),
            "another site sharing the secret"
        );
        assert_eq!(
            check(&keys, "shop", PATH, presented(&t, "2001", None)),
            Err(TokenError::Invalid),
            "expiry extended"
        );
        assert_eq!(
            check(&keys, "shop", "/other", presented(&t, "2000", None)),
            Err(TokenError::Invalid)
        );
        assert_eq!(
            check(&keys, "shop", PATH, presented("AAAA", "2000", None)),
            Err(TokenError::Invalid)
        );
        assert_eq!(
            check(&keys, "shop", PATH, presented(&t, "soon", None)),
            Err(TokenError::Invalid)
        );
        fn missing<'a>(t: Option<&'a str>, e: Option<&'a str>) -> Presented<'a> {
            Presented {
                token: t,
                expires: e,
                key_id: None,
            }
        }
        assert_eq!(
            check(&keys, "shop", PATH, missing(None, Some("2000"))),
            Err(TokenError::Missing)
        );
        assert_eq!(
            check(&keys, "shop", PATH, missing(Some(&t), None)),
            Err(TokenError::Missing)
        );
    }

    #[test]
    fn refuses_an_expiry_beyond_the_maximum_lifetime() {
        let keys = single(SECRET);
        let now = 1_700_000_000;
        let week = 7 * DAY;
        let within = now + week + CLOCK_SKEW_SECS;
        let t = sign(keys.current(), "shop", PATH, within);
        let e = within.to_string();
        assert_eq!(
            verify(&keys, "shop", PATH, presented(&t, &e, None), now, week),
            Ok(())
        );
        let beyond = within + 1;
        let t = sign(keys.current(), "shop", PATH, beyond);
        let e = beyond.to_string();
        assert_eq!(
            verify(&keys, "shop", PATH, presented(&t, &e, None), now, week),
            Err(TokenError::TooLong)
        );
        let forever = u64::MAX.to_string();
        assert_eq!(
            verify(
                &keys,
                "shop",
                PATH,
                presented(&t, &forever, None),
                now,
                u64::MAX
            ),
            Err(TokenError::Invalid),
            "no overflow at the far end"
        );
    }

    #[test]
    fn both_keys_of_a_rotation_verify_and_the_first_signs() {
        let keys = rotating(&[("k2", "new-secret-0123456"), ("k1", "old-secret-0123456")]);
        assert_eq!(keys.current().id.as_deref(), Some("k2"));
        let old = rotating(&[("k1", "old-secret-0123456")]);
        let by_old = sign(old.current(), "shop", PATH, 2_000);
        let by_new = sign(keys.current(), "shop", PATH, 2_000);
        let check = |t: &str, k| verify(&keys, "shop", PATH, presented(t, "2000", k), 0, DAY);
        assert_eq!(check(&by_old, Some("k1")), Ok(()));
        assert_eq!(check(&by_new, Some("k2")), Ok(()));
        assert_eq!(
            check(&by_old, Some("k2")),
            Err(TokenError::Invalid),
            "the key id is signed"
        );
        assert_eq!(check(&by_new, Some("k0")), Err(TokenError::UnknownKey));
        assert_eq!(check(&by_new, None), Err(TokenError::UnknownKey));
        assert!(query(keys.current(), "shop", PATH, 2_000).ends_with("&e=2000&k=k2"));
        assert!(query(single(SECRET).current(), "shop", PATH, 2_000).ends_with("&e=2000"));
    }

    #[test]
    fn never_shows_a_secret() {
        let keys = rotating(&[("k2", "new-secret-0123456")]);
        assert!(!format!("{keys:?}").contains("new-secret"));
    }

    #[test]
    fn hmac_matches_rfc_4231() {
        // Test case 2 and test case 6 (a key longer than the block).
        let hex = |b: [u8; 32]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        assert_eq!(
            hex(hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(
            hex(hmac_sha256(
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            )),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn matches_a_known_vector() {
        // printf 'rum-token-v2\nshop\n/api/v1/observability/web-vitals\n1700000000\n' |
        //   openssl dgst -sha256 -hmac 's3cret-key-of-the-shop' -binary | base64 | tr '+/' '-_' | tr -d =
        assert_eq!(
            sign(single(SECRET).current(), "shop", PATH, 1_700_000_000),
            KNOWN
        );
    }

    const KNOWN: &str = "BzVYFlDVTd6CuQ5-Em11OI01066hpEc5yK11UYkl45E";
}
