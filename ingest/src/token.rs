//! Signed ingest tokens: `?t=<token>&e=<expires>` where
//! `token = base64url_nopad(SHA-256(secret + path + expires))` and `expires` is unix seconds.
//!
//! A site with a `token_secret` accepts a beacon only with a valid token for the request's path
//! that has not expired. The page embedding the collector gets a fresh token from its own backend
//! (or from `rum token`), so a scraped token stops working when it expires.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Why a token was refused; each is a `reason` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// No `t` or no `e` in the query string.
    #[error("this site requires a signed token (?t=...&e=...)")]
    Missing,
    /// `e` is in the past (or not a number).
    #[error("the token has expired")]
    Expired,
    /// The token does not match.
    #[error("the token is not valid for this site and path")]
    Invalid,
}

impl TokenError {
    /// The `reason` label of the rejection counter.
    pub fn reason(self) -> &'static str {
        match self {
            TokenError::Missing => "token_missing",
            TokenError::Expired => "token_expired",
            TokenError::Invalid => "token_invalid",
        }
    }
}

/// The token for `path` valid until `expires` (unix seconds).
pub fn sign(secret: &str, path: &str, expires: u64) -> String {
    let mut hash = Sha256::new();
    hash.update(secret.as_bytes());
    hash.update(path.as_bytes());
    hash.update(expires.to_string().as_bytes());
    URL_SAFE_NO_PAD.encode(hash.finalize())
}

/// Checks `token` and `expires` as they came in the query string, at `now` (unix seconds).
pub fn verify(
    secret: &str,
    path: &str,
    token: Option<&str>,
    expires: Option<&str>,
    now: u64,
) -> Result<(), TokenError> {
    let (Some(token), Some(expires)) = (token, expires) else {
        return Err(TokenError::Missing);
    };
    let expires: u64 = expires.parse().map_err(|_| TokenError::Invalid)?;
    if expires <= now {
        return Err(TokenError::Expired);
    }
    let expected = sign(secret, path, expires);
    if bool::from(expected.as_bytes().ct_eq(token.as_bytes())) {
        Ok(())
    } else {
        Err(TokenError::Invalid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "s3cret-key-of-the-shop";
    const PATH: &str = "/api/v1/observability/web-vitals";

    #[test]
    fn a_signed_token_verifies_until_it_expires() {
        let t = sign(SECRET, PATH, 2_000);
        assert!(
            !t.contains('=') && !t.contains('+') && !t.contains('/'),
            "base64url without padding: {t}"
        );
        assert_eq!(verify(SECRET, PATH, Some(&t), Some("2000"), 1_999), Ok(()));
        assert_eq!(
            verify(SECRET, PATH, Some(&t), Some("2000"), 2_000),
            Err(TokenError::Expired)
        );
    }

    #[test]
    fn refuses_forged_tampered_and_wrong_path_tokens() {
        let t = sign(SECRET, PATH, 2_000);
        assert_eq!(
            verify("other-secret", PATH, Some(&t), Some("2000"), 0),
            Err(TokenError::Invalid)
        );
        assert_eq!(
            verify(SECRET, PATH, Some(&t), Some("2001"), 0),
            Err(TokenError::Invalid),
            "expiry extended"
        );
        assert_eq!(
            verify(SECRET, "/other", Some(&t), Some("2000"), 0),
            Err(TokenError::Invalid)
        );
        assert_eq!(
            verify(SECRET, PATH, Some("AAAA"), Some("2000"), 0),
            Err(TokenError::Invalid)
        );
        assert_eq!(
            verify(SECRET, PATH, Some(&t), Some("soon"), 0),
            Err(TokenError::Invalid)
        );
        assert_eq!(
            verify(SECRET, PATH, None, Some("2000"), 0),
            Err(TokenError::Missing)
        );
        assert_eq!(
            verify(SECRET, PATH, Some(&t), None, 0),
            Err(TokenError::Missing)
        );
    }

    #[test]
    fn matches_a_known_vector() {
        // echo -n 's3cret-key-of-the-shop/api/v1/observability/web-vitals1700000000' | sha256sum | xxd -r -p | base64 | tr '+/' '-_' | tr -d =
        assert_eq!(sign(SECRET, PATH, 1_700_000_000), KNOWN);
    }

    const KNOWN: &str = "A--UsGv2N0uVxhNAw12PcDjR8GsmMHE88iXHamHbiTo";
}
