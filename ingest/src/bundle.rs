//! `GET /rum.js`: the browser collector's script-tag bundle (`collector/dist/rum.iife.js`), so a
//! site needs one script tag. Read once at start from `ingest.collector_bundle`.

use std::path::Path;

use axum::body::Bytes;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// The path the bundle is served at.
pub const BUNDLE_PATH: &str = "/rum.js";

/// The bundle in memory, or why there is none.
#[derive(Debug, Clone)]
pub enum CollectorBundle {
    /// The file's bytes.
    Loaded(Bytes),
    /// Not configured or not readable: `/rum.js` answers 404 with this text.
    Unavailable(String),
}

impl CollectorBundle {
    /// Reads the bundle at `path` (`ingest.collector_bundle`); a missing file is logged, not fatal.
    pub fn load(path: Option<&Path>) -> CollectorBundle {
        let Some(path) = path else {
            return CollectorBundle::Unavailable(
                "the collector bundle is not served here: set ingest.collector_bundle \
                 (RUM_INGEST_COLLECTOR_BUNDLE) to collector/dist/rum.iife.js\n"
                    .into(),
            );
        };
        match std::fs::read(path) {
            Ok(bytes) => {
                tracing::info!(path = %path.display(), bytes = bytes.len(), "serving the collector at {BUNDLE_PATH}");
                CollectorBundle::Loaded(Bytes::from(bytes))
            }
            Err(e) => {
                let why = format!(
                    "the collector bundle {} (ingest.collector_bundle) could not be read: {e}; \
                     build it with `npm ci && npm run build` in collector/\n",
                    path.display()
                );
                tracing::warn!("{}", why.trim_end());
                CollectorBundle::Unavailable(why)
            }
        }
    }

    /// The answer to `GET /rum.js`.
    pub fn response(&self) -> Response {
        match self {
            CollectorBundle::Loaded(bytes) => (
                [
                    (
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("text/javascript; charset=utf-8"),
                    ),
                    // Immutable: a new collector ships under a new URL (or after the cache expires).
                    (
                        header::CACHE_CONTROL,
                        HeaderValue::from_static("public, max-age=31536000, immutable"),
                    ),
                    (
                        header::ACCESS_CONTROL_ALLOW_ORIGIN,
                        HeaderValue::from_static("*"),
                    ),
                ],
                bytes.clone(),
            )
                .into_response(),
            CollectorBundle::Unavailable(why) => {
                (StatusCode::NOT_FOUND, why.clone()).into_response()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_404_with_the_reason_when_unset_or_missing() {
        for bundle in [
            CollectorBundle::load(None),
            CollectorBundle::load(Some(Path::new("/nonexistent/rum.iife.js"))),
        ] {
            let CollectorBundle::Unavailable(why) = &bundle else {
                panic!("{bundle:?} should be unavailable");
            };
            assert!(why.contains("ingest.collector_bundle"), "{why}");
            assert_eq!(bundle.response().status(), StatusCode::NOT_FOUND);
        }
    }
}
