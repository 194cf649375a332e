//! ClickHouse storage for `rum`: connection settings, schema migrations and the row types.
//!
//! Works against ClickHouse 18.16 (Debian's) and current releases: the client runs with
//! `with_validation(false)` because 18.16 lacks `RowBinaryWithNamesAndTypes`, and every
//! statement goes in its own request.

mod config;
mod migrate;
mod offsets;
mod rows;

pub use clickhouse::Client;
pub use config::ClickHouseConfig;
pub use migrate::{migrate, migrate_to, Migration, MigrationReport, MIGRATIONS};
pub use offsets::stored_offsets;
pub use rows::{insert_raw_rows, raw_rows, VitalsRawRow, VITALS_RAW};

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
    /// The database has a migration this binary does not know: it was migrated by a newer `rum`.
    #[error("the database has migration {version} ({name}), which this binary does not know: it was migrated by a newer rum")]
    UnknownMigration {
        /// The migration's number.
        version: u32,
        /// The migration's name.
        name: String,
    },
}
