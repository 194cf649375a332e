//! How to reach ClickHouse. Section `[clickhouse]` of the config, env `RUM_CLICKHOUSE_*`.

use rum_schemas::config::{require_non_empty, ConfigError};
use serde::Deserialize;

/// ClickHouse connection settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClickHouseConfig {
    /// The HTTP interface, e.g. `http://127.0.0.1:8123`.
    pub url: String,
    /// The database holding `rum`'s tables.
    pub database: String,
    /// The user.
    pub user: String,
    /// The password (empty for none).
    pub password: String,
    /// Days of `vitals_raw` kept; older days are dropped whole by the consumers.
    pub raw_retention_days: u32,
    /// Days of `vitals_1m` kept; older months are dropped whole by the consumers.
    pub rollup_retention_days: u32,
}

impl Default for ClickHouseConfig {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:8123".into(),
            database: "rum".into(),
            user: "default".into(),
            password: String::new(),
            raw_retention_days: crate::retention::DEFAULT_RAW_DAYS,
            rollup_retention_days: crate::retention::DEFAULT_ROLLUP_DAYS,
        }
    }
}

impl ClickHouseConfig {
    /// Checks every value; the error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        require_non_empty("clickhouse.url", &self.url)?;
        let rest = self
            .url
            .strip_prefix("http://")
            .or_else(|| self.url.strip_prefix("https://"))
            .ok_or_else(|| {
                ConfigError::new("clickhouse.url", "must start with http:// or https://")
            })?;
        if rest.is_empty() || rest.starts_with('/') {
            return Err(ConfigError::new("clickhouse.url", "has no host"));
        }
        let db_ok = !self.database.is_empty()
            && self
                .database
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !db_ok {
            return Err(ConfigError::new(
                "clickhouse.database",
                "must be [A-Za-z0-9_], not empty",
            ));
        }
        require_non_empty("clickhouse.user", &self.user)?;
        if self.raw_retention_days == 0 {
            return Err(ConfigError::new(
                "clickhouse.raw_retention_days",
                "must be at least 1",
            ));
        }
        if self.rollup_retention_days < self.raw_retention_days {
            return Err(ConfigError::new(
                "clickhouse.rollup_retention_days",
                "must be at least clickhouse.raw_retention_days",
            ));
        }
        Ok(())
    }

    /// A client bound to the server, without a database (for `CREATE DATABASE`).
    pub fn server_client(&self) -> clickhouse::Client {
        clickhouse::Client::default()
            .with_url(&self.url)
            .with_user(&self.user)
            .with_password(&self.password)
            .with_validation(false)
    }

    /// A client bound to the database.
    pub fn client(&self) -> clickhouse::Client {
        self.server_client().with_database(&self.database)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        ClickHouseConfig::default().validate().unwrap();
    }

    #[test]
    fn rejects_bad_values_naming_the_key() {
        let bad_url = ClickHouseConfig {
            url: "127.0.0.1:8123".into(),
            ..Default::default()
        };
        assert_eq!(bad_url.validate().unwrap_err().key, "clickhouse.url");
        let bad_db = ClickHouseConfig {
            database: "rum; DROP".into(),
            ..Default::default()
        };
        assert_eq!(bad_db.validate().unwrap_err().key, "clickhouse.database");
    }
}
