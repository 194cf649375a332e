//! The route of a beacon that has none, from the page's own URL in the `Referer` header.
//!
//! `web-vitals`' README sends each metric with `navigator.sendBeacon(url, JSON.stringify(metric))`:
//! a bare Metric object, without the page's route. When such a beacon goes to a first-party
//! endpoint (the site's own origin, proxied to the ingest), the browser's `Referer` is the page's
//! full URL, and its path is the route. Only the path is taken (no query string, no fragment, which
//! may hold personal data); it is normalized like any route, and the header is never stored or
//! logged.
//!
//! A `Referer` is not used, and the reason counted (`rum_ingest_referers_ignored_total`), when it
//! is longer than [`MAX_REFERER_LEN`] bytes (Chrome sends no longer one), not a URL, not `http` or
//! `https` (`android-app://`, `file:`, ...), or when the browser says the request is not
//! same-origin (`Sec-Fetch-Site` other than `same-origin`): browsers' default referrer policy
//! (`strict-origin-when-cross-origin`) then sends the origin alone, and every page would become
//! `root`. A browser too old to send `Sec-Fetch-Site` is believed. A page whose own policy sends the
//! origin alone (`Referrer-Policy: origin`) is read as `root`: no header tells that apart from the
//! home page.

use axum::http::HeaderValue;

/// The longest `Referer` used (bytes). Chrome cuts a longer one to its origin; the request head
/// as a whole is bounded by `ingest.max_head_bytes`.
pub const MAX_REFERER_LEN: usize = 4096;

/// Why a `Referer` gave no route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ignored {
    /// No `Referer` (`Referrer-Policy: no-referrer`, a tool, a privacy extension).
    Absent,
    /// Longer than [`MAX_REFERER_LEN`].
    TooLong,
    /// Not a URL (or not ASCII).
    Unparsable,
    /// A URL, but not `http` or `https`.
    NotHttp,
    /// The request is not same-origin (`Sec-Fetch-Site`): the `Referer` is likely the origin alone.
    CrossOrigin,
}

impl Ignored {
    /// The `reason` label of `rum_ingest_referers_ignored_total`.
    pub fn label(self) -> &'static str {
        crate::metrics::REFERER_IGNORED_REASONS[self as usize]
    }
}

/// The path of the page in `referer` (percent-encoded as browsers send it, without query string
/// and fragment), for a same-origin request.
pub fn referer_path(
    referer: Option<&HeaderValue>,
    sec_fetch_site: Option<&HeaderValue>,
) -> Result<String, Ignored> {
    let referer = referer.ok_or(Ignored::Absent)?;
    if referer.len() > MAX_REFERER_LEN {
        return Err(Ignored::TooLong);
    }
    let text = referer.to_str().map_err(|_| Ignored::Unparsable)?;
    // WHATWG URL parsing, as the browser that wrote the header did.
    let url = url::Url::parse(text).map_err(|_| Ignored::Unparsable)?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(Ignored::NotHttp);
    }
    if sec_fetch_site.is_some_and(|site| site.as_bytes() != b"same-origin") {
        return Err(Ignored::CrossOrigin);
    }
    Ok(url.path().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(referer: &str, site: Option<&str>) -> Result<String, Ignored> {
        let referer = HeaderValue::from_str(referer).unwrap();
        let site = site.map(|s| HeaderValue::from_str(s).unwrap());
        referer_path(Some(&referer), site.as_ref())
    }

    #[test]
    fn takes_the_path_alone_of_a_same_origin_page() {
        let same = Some("same-origin");
        for (referer, expected) in [
            (
                "https://shop.example/product/123?email=a%40b.example#reviews",
                "/product/123",
            ),
            ("http://localhost:8080/cart", "/cart"),
            ("https://shop.example", "/"),
            ("HTTPS://Shop.Example/A/../B/./c?x", "/B/c"),
            ("https://user:pw@shop.example/p", "/p"),
            (
                "https://shop.example/caf%C3%A9/{x}|y",
                "/caf%C3%A9/%7Bx%7D|y",
            ),
        ] {
            assert_eq!(path(referer, same).as_deref(), Ok(expected), "{referer}");
        }
        assert_eq!(
            path("https://shop.example/old-browser", None).as_deref(),
            Ok("/old-browser"),
            "no Sec-Fetch-Site: believed"
        );
    }

    #[test]
    fn ignores_what_cannot_be_a_first_party_page_with_a_reason() {
        let same = Some("same-origin");
        assert_eq!(referer_path(None, None), Err(Ignored::Absent));
        let long = format!("https://shop.example/{}", "a".repeat(MAX_REFERER_LEN));
        assert_eq!(path(&long, same), Err(Ignored::TooLong));
        let longest = format!("https://shop.example/{}", "a".repeat(MAX_REFERER_LEN - 21));
        assert_eq!(longest.len(), MAX_REFERER_LEN);
        assert!(path(&longest, same).is_ok());
        for garbage in ["/relative/path", "not a url", "https://", "http://[::1/x"] {
            assert_eq!(path(garbage, same), Err(Ignored::Unparsable), "{garbage}");
        }
        let not_ascii = HeaderValue::from_bytes(b"https://shop.example/\xff").unwrap();
        assert_eq!(
            referer_path(Some(&not_ascii), None),
            Err(Ignored::Unparsable)
        );
        for other in [
            "android-app://com.google.android.gm/",
            "file:///home/me/page.html",
            "about:blank",
            "chrome-extension://abc/popup.html",
        ] {
            assert_eq!(path(other, same), Err(Ignored::NotHttp), "{other}");
        }
        for site in ["cross-site", "same-site", "none"] {
            assert_eq!(
                path("https://shop.example/", Some(site)),
                Err(Ignored::CrossOrigin),
                "{site}"
            );
        }
        assert_eq!(Ignored::CrossOrigin.label(), "cross_origin");
        assert_eq!(Ignored::Absent.label(), "absent");
    }
}
