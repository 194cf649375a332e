//! ClickHouse storage for `rum`: connection settings (http or https with a CA file, see [`tls`]),
//! schema migrations, the row types, the quantile sketch of `vitals_1m`, the analyst queries
//! (`clickhouse/queries/`) and retention.
//!
//! Works against ClickHouse 18.16 (Debian's) and current releases: the client runs with
//! `with_validation(false)` because 18.16 lacks `RowBinaryWithNamesAndTypes`, and every
//! statement goes in its own request.

mod bounded;
pub mod cluster;
mod config;
pub mod ledger;
mod migrate;
mod offsets;
mod queries;
pub mod report;
mod retention;
mod rows;
mod sketch;
pub mod tls;

pub use bounded::bounded;
pub use clickhouse::Client;
pub use config::{ClickHouseConfig, DEFAULT_CONNECT_TIMEOUT, DEFAULT_REQUEST_TIMEOUT};
pub use migrate::{migrate, migrate_to, Migration, MigrationReport, MIGRATIONS};
pub use offsets::stored_offsets;
pub use queries::{
    p75_by_route_device, top_inp_targets, top_lcp_elements, AnalystQuery, Dimension, DimensionRow,
    InpTargetRow, LcpElementRow, P75Row, RatingSharesRow, Weighting, MAX_DIMENSION_VALUES,
    P75_BY_DIMENSION, P75_BY_ROUTE_DEVICE, P75_TREND_HOURLY, QUERIES, RATING_SHARES,
    TOP_INP_TARGETS, TOP_LCP_ELEMENTS, WORST_ROUTES,
};
pub use retention::{
    active_partitions, apply_retention, RetentionFailure, RetentionFailureCause, RetentionReport,
    DEFAULT_RAW_DAYS, DEFAULT_RETENTION_STATEMENT_TIMEOUT, DEFAULT_ROLLUP_DAYS,
    MAX_PARTITION_SIZE_TO_DROP, VITALS_1M,
};
pub use rows::{insert_raw_rows, raw_row_refs, VitalsRawRow, VitalsRawRowRef, VITALS_RAW};
pub use sketch::{
    bucket_of, bucket_sql, exact_quantile, exact_weighted_percentile, quantile, sketch_of,
    value_of_bucket, weighted_percentile, weighted_sketch_of, GAMMA, GAMMA_LITERAL, MAX_BUCKET,
    WEIGHT_TIE_TOLERANCE, ZERO_BUCKET,
};

/// Everything that can go wrong talking to ClickHouse.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The server answered with an error, or could not be reached.
    #[error("clickhouse: {0}")]
    ClickHouse(#[from] clickhouse::error::Error),
    /// An applied migration's file changed since it was applied.
    #[error("migration {version} ({name}) was changed after it was applied (checksum {applied} in the database, {current} in this binary)")]
    MigrationModified {
        /// The migration's number.
        version: u32,
        /// The migration's name.
        name: String,
        /// The checksum recorded when it was applied.
        applied: String,
        /// The checksum of the file in this binary.
        current: String,
    },
    /// The server's time zone is not UTC (`<timezone>UTC</timezone>` in its config.xml).
    #[error("clickhouse: the server's time zone is {0}, rum needs UTC (<timezone>UTC</timezone> in the server's config.xml): its days and months must be UTC ones for each INSERT to be one part")]
    ServerTimezone(String),
    /// A request took longer than its bound; it was dropped.
    #[error("clickhouse: {what}: no answer within {after:?}")]
    Timeout {
        /// What was being done.
        what: &'static str,
        /// The bound.
        after: std::time::Duration,
    },
    /// Cluster mode: the cluster is unknown to the server, a statement cannot be rendered for a
    /// cluster, or the database was migrated in the other mode.
    #[error("clickhouse cluster mode: {0}")]
    Cluster(String),
    /// A migration could not go on safely (it says why, and whether running it again helps).
    #[error("clickhouse migration: {0}")]
    Migration(String),
    /// The database has a migration this binary does not know: it was migrated by a newer `rum`.
    #[error("the database has migration {version} ({name}), which this binary does not know: it was migrated by a newer rum")]
    UnknownMigration {
        /// The migration's number.
        version: u32,
        /// The migration's name.
        name: String,
    },
}
