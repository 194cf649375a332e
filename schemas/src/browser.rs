//! The browser family and major version, read by the ingest from the `User-Agent` header: a small,
//! bounded set of labels (CrUX-style), never the raw header.

/// The families kept; a browser outside them is `other`, a missing or unreadable header `unknown`.
pub const BROWSER_FAMILIES: [&str; 8] = [
    "chrome", "edge", "firefox", "safari", "samsung", "opera", "other", "unknown",
];

/// The family of a message without one (and of an unreadable `User-Agent`).
pub const BROWSER_UNKNOWN: &str = "unknown";

/// The highest major version kept; a larger one is read as unknown (0).
pub const MAX_BROWSER_MAJOR: u16 = 999;

/// True for one of [`BROWSER_FAMILIES`].
pub fn is_browser_family(family: &str) -> bool {
    BROWSER_FAMILIES.contains(&family)
}
