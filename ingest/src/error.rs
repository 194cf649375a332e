//! Every way a beacon request fails, mapped to its status code and its counted reason.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use rum_schemas::BeaconError;

use crate::token::TokenError;
use crate::PublishError;

/// A rejected beacon request.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// Neither `text/plain` nor `application/json`.
    #[error("content type must be text/plain or application/json")]
    UnsupportedMediaType,
    /// Larger than `ingest.max_body_bytes`.
    #[error("body larger than {0} bytes")]
    BodyTooLarge(usize),
    /// The body did not arrive within `ingest.body_timeout_ms` (the value).
    #[error("body not received within {0} ms")]
    BodyTimeout(u64),
    /// The body could not be read (client went away, broken chunking).
    #[error("cannot read body: {0}")]
    BodyRead(String),
    /// The query string is not `key=value` pairs.
    #[error("invalid query string")]
    InvalidQuery,
    /// Every `ingest.max_in_flight` slot stayed taken (with the waiting line full, or for
    /// `ingest.queue_timeout_ms`); retry after the given seconds.
    #[error("overloaded: too many requests in flight")]
    Overloaded(u32),
    /// The client sent more than its share; retry after the given seconds.
    #[error("rate limit reached")]
    RateLimited(u32),
    /// The client's network (IPv6 /48, or a proxy that could not name it) sent more than its
    /// share (`ingest.rate_limit_network_per_second`); retry after the given seconds.
    #[error("rate limit of the network reached")]
    NetworkRateLimited(u32),
    /// The `Origin` is not on the site's allow-list (`allowed_origins`).
    #[error("origin not allowed for this site")]
    OriginNotAllowed,
    /// A known bot or synthetic monitor: answered 204 (nothing to retry) and counted, not published.
    #[error("bot")]
    Bot,
    /// The site is not configured and `ingest.only_known_sites` is on.
    #[error("unknown site")]
    UnknownSite,
    /// A new site, not listed, while `ingest.max_sites` unlisted sites are taken, or its network
    /// already opened `ingest.max_new_sites_per_client` of them (see `routes`).
    #[error(
        "site limit reached: this ingest takes no more new sites (list it under [ingest.sites])"
    )]
    SiteLimit,
    /// The site requires a signed token and this one is missing, expired or forged.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// The beacon is invalid.
    #[error(transparent)]
    Beacon(#[from] BeaconError),
    /// Kafka did not take the beacon; the client should retry after the given seconds.
    #[error("{0}")]
    Publish(PublishError, u32),
}

impl IngestError {
    /// The `reason` label of `rum_beacons_rejected_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            IngestError::UnsupportedMediaType => "unsupported_media_type",
            IngestError::BodyTooLarge(_) => "body_too_large",
            IngestError::BodyRead(_) => "body_read_error",
            IngestError::BodyTimeout(_) => "body_timeout",
            IngestError::InvalidQuery => "invalid_query",
            IngestError::Overloaded(_) => "overloaded",
            IngestError::RateLimited(_) => "rate_limited",
            IngestError::NetworkRateLimited(_) => "rate_limited_network",
            IngestError::OriginNotAllowed => "origin_not_allowed",
            IngestError::Bot => "bot",
            IngestError::UnknownSite => "unknown_site",
            IngestError::SiteLimit => "site_limit",
            IngestError::Token(e) => e.reason(),
            IngestError::Beacon(e) => e.reason(),
            IngestError::Publish(PublishError::QueueFull, _) => "producer_queue_full",
            IngestError::Publish(PublishError::Unavailable(_), _) => "kafka_unavailable",
        }
    }

    /// The status code of the answer.
    pub fn status(&self) -> StatusCode {
        match self {
            IngestError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            IngestError::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            IngestError::BodyRead(_) | IngestError::InvalidQuery | IngestError::Beacon(_) => {
                StatusCode::BAD_REQUEST
            }
            IngestError::Publish(..) | IngestError::Overloaded(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            IngestError::RateLimited(_) | IngestError::NetworkRateLimited(_) => {
                StatusCode::TOO_MANY_REQUESTS
            }
            IngestError::OriginNotAllowed => StatusCode::FORBIDDEN,
            IngestError::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            IngestError::Bot => StatusCode::NO_CONTENT,
            IngestError::UnknownSite | IngestError::SiteLimit | IngestError::Token(_) => {
                StatusCode::FORBIDDEN
            }
        }
    }
}

impl IntoResponse for IngestError {
    fn into_response(self) -> Response {
        if let IngestError::Bot = self {
            return StatusCode::NO_CONTENT.into_response();
        }
        // Parser messages can be long; the client needs the gist, the reason label is the contract.
        // Cut on a character boundary: the parser's messages quote the client's text.
        let message = self.to_string();
        let body = serde_json::json!({ "error": self.reason(), "message": cut(&message, 200) });
        let mut response = (self.status(), axum::Json(body)).into_response();
        if let IngestError::Overloaded(_) | IngestError::BodyTimeout(_) = self {
            // Shed the connection too (as Envoy's overload manager does): a client refused on a
            // kept-alive connection comes straight back on it, and the refusals then take the CPU
            // the accepted requests need to answer. One that must reconnect first comes back
            // slower. Under a 2x overload this took the ingest from ~6k to ~20k beacons/s
            // accepted, at about the same memory (bench/RESULTS.md). A body that timed out leaves
            // the rest of it unread on the connection: it cannot carry another request.
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if let IngestError::Publish(_, retry_after)
        | IngestError::RateLimited(retry_after)
        | IngestError::NetworkRateLimited(retry_after)
        | IngestError::Overloaded(retry_after) = self
        {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
        }
        response
    }
}

/// The longest start of `text` of at most `max` bytes that ends on a character boundary.
fn cut(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_message_is_cut_on_a_character_boundary() {
        for lead in ["", "x", "xy"] {
            let e = IngestError::BodyRead(format!("{lead}{}", "é".repeat(300)));
            let response = e.into_response();
            assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{lead:?}");
        }
        assert_eq!(cut("aé", 2), "a");
        assert_eq!(cut("aé", 3), "aé");
        assert_eq!(cut("abc", 200), "abc");
    }
}
