//! The analyst queries of `clickhouse/queries/`, embedded, and a typed call for p75.
//!
//! Each file starts with a comment saying what it answers and its `?` placeholders in order; the
//! text runs as is in `clickhouse-client --database rum` once the placeholders are replaced by
//! literals, on ClickHouse 18.16 and on current releases. From Rust, [`AnalystQuery::sql`] gives
//! the text without its comments, ready for the `clickhouse` crate's client-side `?` binding.

use clickhouse::Row;
use serde::{Deserialize, Serialize};

use crate::StorageError;

/// One analyst query file.
#[derive(Debug, Clone, Copy)]
pub struct AnalystQuery {
    /// The file name without `.sql`.
    pub name: &'static str,
    /// The file's text, comments included.
    pub text: &'static str,
}

impl AnalystQuery {
    /// The text without its whole-line `--` comments (which may contain `?`), trimmed.
    pub fn sql(&self) -> String {
        strip_comments(self.text)
    }

    /// How many `?` placeholders the query takes.
    pub fn placeholders(&self) -> usize {
        self.sql().matches('?').count()
    }
}

/// p75, samples and rating shares per route, device and metric of a site over a window.
/// Placeholders: site, window start, window end.
pub const P75_BY_ROUTE_DEVICE: AnalystQuery = AnalystQuery {
    name: "p75_by_route_device",
    text: include_str!("../queries/p75_by_route_device.sql"),
};

/// The worst route/device pairs by p75 for a metric.
/// Placeholders: site, metric, window start, window end, min samples, limit.
pub const WORST_ROUTES: AnalystQuery = AnalystQuery {
    name: "worst_routes",
    text: include_str!("../queries/worst_routes.sql"),
};

/// Rating shares, sample counts and p75 per metric and device of a site.
/// Placeholders: site, window start, window end.
pub const RATING_SHARES: AnalystQuery = AnalystQuery {
    name: "rating_shares",
    text: include_str!("../queries/rating_shares.sql"),
};

/// p75 per hour and device of one metric (optionally one route).
/// Placeholders: site, metric, route ('' for all), the same route again, window start, window end.
pub const P75_TREND_HOURLY: AnalystQuery = AnalystQuery {
    name: "p75_trend_hourly",
    text: include_str!("../queries/p75_trend_hourly.sql"),
};

/// Every query file. `queries_list_matches_the_directory` keeps it in step with the files.
pub const QUERIES: &[AnalystQuery] = &[
    P75_BY_ROUTE_DEVICE,
    WORST_ROUTES,
    RATING_SHARES,
    P75_TREND_HOURLY,
];

/// Drops whole-line `--` comments and blank lines.
fn strip_comments(text: &str) -> String {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A row of `rating_shares.sql`, in its column order: per metric and device.
#[derive(Debug, Clone, PartialEq, Row, Serialize, Deserialize)]
pub struct RatingSharesRow {
    /// The metric name.
    pub metric: String,
    /// The device class.
    pub device: String,
    /// Samples in the window.
    pub samples: u64,
    /// Samples re-weighted by their sample rate: the page loads they stand for.
    pub estimated_page_loads: f64,
    /// The share (0..1) of samples rated good.
    pub good_share: f64,
    /// The share (0..1) of samples rated needs-improvement.
    pub needs_improvement_share: f64,
    /// The share (0..1) of samples rated poor.
    pub poor_share: f64,
    /// The p75 from the merged sketches.
    pub p75: f64,
}

/// A row of [`p75_by_route_device`] (and of `p75_by_route_device.sql`, in the same column order).
#[derive(Debug, Clone, PartialEq, Row, Serialize, Deserialize)]
pub struct P75Row {
    /// The site.
    pub site: String,
    /// The route slug.
    pub route: String,
    /// The device class.
    pub device: String,
    /// The metric name.
    pub metric: String,
    /// The p75 from the merged sketches: milliseconds, unitless for CLS.
    pub p75: f64,
    /// How many samples the p75 and the shares are taken over.
    pub samples: u64,
    /// The share (0..1) of samples rated good.
    pub good_share: f64,
    /// The share (0..1) of samples rated needs-improvement.
    pub needs_improvement_share: f64,
    /// The share (0..1) of samples rated poor.
    pub poor_share: f64,
}

/// p75, sample count and rating shares per route, device and metric of `site`, over the minutes
/// starting in `[since, until)` (unix seconds), optionally for one route and/or one device only.
/// Rows are ordered by route, device and metric.
pub async fn p75_by_route_device(
    client: &clickhouse::Client,
    site: &str,
    route: Option<&str>,
    device: Option<&str>,
    since: u32,
    until: u32,
) -> Result<Vec<P75Row>, StorageError> {
    // The file's query is kept whole (the file is the reference); the filters wrap it.
    let sql = format!(
        "SELECT site, route, device, metric, p75, samples, good_share, needs_improvement_share, poor_share \
         FROM ({}) WHERE (? = '' OR route = ?) AND (? = '' OR device = ?) \
         ORDER BY site, route, device, metric",
        P75_BY_ROUTE_DEVICE.sql()
    );
    let route = route.unwrap_or("");
    let device = device.unwrap_or("");
    let rows = client
        .query(&sql)
        .bind(site)
        .bind(since)
        .bind(until)
        .bind(route)
        .bind(route)
        .bind(device)
        .bind(device)
        .fetch_all::<P75Row>()
        .await?;
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_list_matches_the_directory() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/queries");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        files.sort();
        let mut listed: Vec<String> = QUERIES.iter().map(|q| format!("{}.sql", q.name)).collect();
        listed.sort();
        assert_eq!(
            files, listed,
            "every file in clickhouse/queries/ is listed in QUERIES"
        );
    }

    #[test]
    fn every_query_documents_its_placeholders_and_avoids_new_syntax() {
        for q in QUERIES {
            assert!(
                q.text.starts_with("-- "),
                "{}: starts with a header comment",
                q.name
            );
            let header = q.text.lines().take_while(|l| l.starts_with("--"));
            let documented = header
                .filter(|l| {
                    let l = l.trim_start_matches('-').trim_start();
                    l.split_once(". ").is_some_and(|(n, _)| {
                        !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())
                    })
                })
                .count();
            assert_eq!(
                documented,
                q.placeholders(),
                "{}: one numbered header line per ?",
                q.name
            );
            let sql = q.sql();
            assert!(
                !sql.contains("--"),
                "{}: comments only on whole lines",
                q.name
            );
            assert!(!sql.contains(';'), "{}: one statement, no `;`", q.name);
            let upper = sql.to_ascii_uppercase();
            for banned in [
                "WITH ",
                " OVER",
                "DATETIME64",
                "MAP(",
                "TOSTARTOFINTERVAL",
                "JSONEXTRACT",
                "FORMAT ",
            ] {
                assert!(
                    !upper.contains(banned),
                    "{}: `{banned}` does not run on 18.16",
                    q.name
                );
            }
        }
    }

    #[test]
    fn strips_comments_only() {
        assert_eq!(
            strip_comments("-- a ?\n-- b\nSELECT 1\n\n  -- c ?\nFROM t\n"),
            "SELECT 1\nFROM t"
        );
        assert_eq!(P75_BY_ROUTE_DEVICE.placeholders(), 3);
        assert_eq!(WORST_ROUTES.placeholders(), 6);
        assert_eq!(RATING_SHARES.placeholders(), 3);
        assert_eq!(P75_TREND_HOURLY.placeholders(), 6);
    }
}
