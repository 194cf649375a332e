//! The browser collector's script-tag bundle (`collector/dist/rum.iife.js`), so a site needs one
//! script tag. Read once at start from `ingest.collector_bundle` and served twice:
//!
//! - at a content-hashed path, `/rum.<first 16 hex digits of its SHA-256>.js`, cached for a year
//!   as immutable: a new collector has a new path, so no browser keeps an old one by mistake. This
//!   is the URL `rum snippet` prints, with the bundle's Subresource Integrity hash, so a browser
//!   runs exactly the bytes the site owner pinned (a compromised ingest cannot swap them);
//! - at `/rum.js`, the same bytes cached for 5 minutes ([`SHORT_CACHE`]) with an `ETag`, so a page
//!   embedding the plain path gets a fixed collector within minutes (a revalidation costs a 304).
//!   Served, not redirected: a redirect would add a round trip to every first page view.
//!
//! A path of another hash (a page still embedding the collector before a deploy) answers 404: its
//! integrity hash could not match the new bytes anyway. The 404 of a missing bundle names the
//! setting, never a server path.

use std::path::Path;
use std::sync::Arc;

use axum::body::Bytes;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use base64::Engine;
use sha2::{Digest, Sha256, Sha384};

/// The plain path, cached briefly.
pub const BUNDLE_PATH: &str = "/rum.js";

/// The `Cache-Control` of `/rum.js`: a browser asks again after 5 minutes.
pub const SHORT_CACHE: &str = "public, max-age=300";
/// The `Cache-Control` of the hashed path.
pub const IMMUTABLE_CACHE: &str = "public, max-age=31536000, immutable";

/// Hex digits of the SHA-256 in the hashed path (64 bits: no two collector builds collide).
const HASH_HEX_DIGITS: usize = 16;

/// The bundle in memory, or why there is none.
#[derive(Debug, Clone)]
pub enum CollectorBundle {
    /// The file's bytes, with their hashed path and integrity hash.
    Loaded(HashedBundle),
    /// Not configured or not readable: `/rum.js` answers 404 with this text.
    Unavailable(&'static str),
}

/// The bundle's bytes and the names derived from them.
#[derive(Debug, Clone)]
pub struct HashedBundle {
    bytes: Bytes,
    path: String,
    integrity: String,
    etag: HeaderValue,
}

const NOT_CONFIGURED: &str =
    "no collector bundle is served here (the ingest's setting ingest.collector_bundle is unset)\n";
const NOT_READABLE: &str =
    "the collector bundle named by ingest.collector_bundle could not be read at start; \
     the ingest's log says why\n";

impl HashedBundle {
    /// Hashes `bytes`.
    pub fn new(bytes: impl Into<Bytes>) -> HashedBundle {
        let bytes = bytes.into();
        let sha256 = Sha256::digest(&bytes);
        let hex: String = sha256[..HASH_HEX_DIGITS / 2]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let integrity = format!(
            "sha384-{}",
            base64::engine::general_purpose::STANDARD.encode(Sha384::digest(&bytes))
        );
        let etag = HeaderValue::from_str(&format!("\"{hex}\"")).expect("hex is a header value");
        HashedBundle {
            bytes,
            path: format!("/rum.{hex}.js"),
            integrity,
            etag,
        }
    }

    /// Reads and hashes the file at `path`.
    pub fn read(path: &Path) -> std::io::Result<HashedBundle> {
        std::fs::read(path).map(HashedBundle::new)
    }

    /// The content-hashed path, e.g. `/rum.3f2a9c0d1e4b5a67.js`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The Subresource Integrity value, `sha384-` and the base64 of the SHA-384 of the bytes.
    pub fn integrity(&self) -> &str {
        &self.integrity
    }

    /// The script tag for a page: `base_url` is where browsers reach the ingest
    /// (`https://rum.example`), `data` the collector's `data-*` attributes (names and values
    /// without quotes or `<`, `>`, `&`: checked by the caller).
    pub fn script_tag(&self, base_url: &str, data: &[(&str, &str)]) -> String {
        let mut tag = format!(
            r#"<script src="{}{}" integrity="{}" crossorigin="anonymous""#,
            base_url.trim_end_matches('/'),
            self.path,
            self.integrity
        );
        for (name, value) in data {
            tag.push_str(&format!(r#" data-{name}="{value}""#));
        }
        tag.push_str("></script>");
        tag
    }

    fn response(&self, cache_control: &'static str, request: &HeaderMap) -> Response {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static(cache_control),
        );
        headers.insert(header::ETAG, self.etag.clone());
        // `crossorigin="anonymous"` makes the browser check CORS before it checks the integrity.
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        );
        let revalidated = request
            .get_all(header::IF_NONE_MATCH)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|tag| {
                let tag = tag.trim();
                tag == "*" || tag.trim_start_matches("W/").as_bytes() == self.etag.as_bytes()
            });
        if revalidated {
            return (StatusCode::NOT_MODIFIED, headers).into_response();
        }
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/javascript; charset=utf-8"),
        );
        headers.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        (headers, self.bytes.clone()).into_response()
    }
}

impl CollectorBundle {
    /// Reads the bundle at `path` (`ingest.collector_bundle`); a missing file is logged, not fatal.
    pub fn load(path: Option<&Path>) -> CollectorBundle {
        let Some(path) = path else {
            return CollectorBundle::Unavailable(NOT_CONFIGURED);
        };
        match HashedBundle::read(path) {
            Ok(bundle) => {
                tracing::info!(
                    path = %path.display(),
                    bytes = bundle.bytes.len(),
                    "serving the collector at {} and {BUNDLE_PATH}",
                    bundle.path
                );
                CollectorBundle::Loaded(bundle)
            }
            Err(e) => {
                tracing::warn!(
                    "the collector bundle {} (ingest.collector_bundle) could not be read: {e}; \
                     build it with `npm ci && npm run build` in collector/; {BUNDLE_PATH} answers 404",
                    path.display()
                );
                CollectorBundle::Unavailable(NOT_READABLE)
            }
        }
    }

    /// The bundle, when loaded.
    pub fn loaded(&self) -> Option<&HashedBundle> {
        match self {
            CollectorBundle::Loaded(bundle) => Some(bundle),
            CollectorBundle::Unavailable(_) => None,
        }
    }

    /// The answer to `GET /rum.js`.
    pub fn response(&self, request: &HeaderMap) -> Response {
        match self {
            CollectorBundle::Loaded(bundle) => bundle.response(SHORT_CACHE, request),
            CollectorBundle::Unavailable(why) => (StatusCode::NOT_FOUND, *why).into_response(),
        }
    }

    /// The routes serving the bundle: `/rum.js` always, the hashed path when loaded.
    pub fn routes(self: Arc<Self>) -> Router {
        let plain = self.clone();
        let router = Router::new().route(
            BUNDLE_PATH,
            get(move |request: HeaderMap| async move { plain.response(&request) }),
        );
        let Some(path) = self.loaded().map(|b| b.path.clone()) else {
            return router;
        };
        router.route(
            &path,
            get(move |request: HeaderMap| async move {
                let bundle = self.loaded().expect("routed only when loaded");
                bundle.response(IMMUTABLE_CACHE, &request)
            }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_404_naming_the_setting_but_no_path() {
        for bundle in [
            CollectorBundle::load(None),
            CollectorBundle::load(Some(Path::new("/nonexistent/secret-dir/rum.iife.js"))),
        ] {
            let CollectorBundle::Unavailable(why) = &bundle else {
                panic!("{bundle:?} should be unavailable");
            };
            assert!(why.contains("ingest.collector_bundle"), "{why}");
            assert!(!why.contains('/'), "no path in {why}");
            let response = bundle.response(&HeaderMap::new());
            assert_eq!(response.status(), StatusCode::NOT_FOUND);
        }
    }

    #[test]
    fn names_the_bundle_by_its_hashes() {
        // `printf 'alert(1)' | sha256sum`, and `| openssl dgst -sha384 -binary | base64`.
        let bundle = HashedBundle::new(&b"alert(1)"[..]);
        assert_eq!(bundle.path(), "/rum.6e11c72f7cf6bc38.js");
        assert_eq!(
            bundle.integrity(),
            "sha384-HT2E9NfWiuQ/w1PRai+hTyqW16NIoCGA/m8VQDUopfAtcz6YQjtsMmQd5uRbVDpW"
        );
        assert_eq!(
            bundle.script_tag("https://rum.example/", &[("site", "shop")]),
            "<script src=\"https://rum.example/rum.6e11c72f7cf6bc38.js\" \
             integrity=\"sha384-HT2E9NfWiuQ/w1PRai+hTyqW16NIoCGA/m8VQDUopfAtcz6YQjtsMmQd5uRbVDpW\" \
             crossorigin=\"anonymous\" data-site=\"shop\"></script>"
        );
    }
}
