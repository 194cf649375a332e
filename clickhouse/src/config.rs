//! How to reach ClickHouse. Section `[clickhouse]` of the config, env `RUM_CLICKHOUSE_*`.

use std::path::PathBuf;
use std::time::Duration;

use rum_schemas::config::{require_non_empty, ConfigError, Secret};
use serde::Deserialize;

use crate::tls;

/// ClickHouse connection settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClickHouseConfig {
    /// The HTTP interface, e.g. `http://127.0.0.1:8123`, or `https://...:8443` (TLS).
    pub url: String,
    /// The database holding `rum`'s tables.
    pub database: String,
    /// The user.
    pub user: String,
    /// The password (empty for none; an empty value counts as unset next to `password_file`).
    pub password: Secret,
    /// A file holding the password instead (read at start, one trailing newline trimmed).
    pub password_file: Option<PathBuf>,
    /// PEM file of the CA certificates that sign the server's certificate (`https://` only);
    /// unset: Mozilla's roots.
    pub ca_file: Option<PathBuf>,
    /// Days of `vitals_raw` kept; older days are dropped whole by the consumers.
    pub raw_retention_days: u32,
    /// Days of `vitals_1m` kept; older months are dropped whole by the consumers.
    pub rollup_retention_days: u32,
    /// Milliseconds a TCP connection to ClickHouse may take to open (a host that drops packets fails
    /// after this, not after the OS's SYN retries of about two minutes).
    pub connect_timeout_ms: u64,
    /// Milliseconds one request may take as a whole: connecting (TLS included), sending, and reading
    /// the whole answer. Past it the request is dropped and fails with [`StorageError::Timeout`]
    /// (see [`bounded`]). A dropped INSERT may still be executed by ClickHouse.
    ///
    /// [`StorageError::Timeout`]: crate::StorageError::Timeout
    /// [`bounded`]: crate::bounded
    pub request_timeout_ms: u64,
    /// Cluster mode: the name of a cluster of the servers' `<remote_servers>`. `rum migrate` creates
    /// replicated tables on every node and `Distributed` tables over them (see [`crate::cluster`]);
    /// the consumer writes each Kafka partition to one shard and reads its floors from every replica.
    /// Unset: one server.
    pub cluster: Option<String>,
}

/// [`ClickHouseConfig::connect_timeout_ms`] by default: 10 s.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// [`ClickHouseConfig::request_timeout_ms`] by default: 30 s.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest `clickhouse.connect_timeout_ms`: 5 minutes.
const MAX_CONNECT_TIMEOUT_MS: u64 = 300_000;
/// The longest `clickhouse.request_timeout_ms`: 1 hour.
const MAX_REQUEST_TIMEOUT_MS: u64 = 3_600_000;

impl Default for ClickHouseConfig {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:8123".into(),
            database: "rum".into(),
            user: "default".into(),
            password: Secret::default(),
            password_file: None,
            ca_file: None,
            raw_retention_days: crate::retention::DEFAULT_RAW_DAYS,
            rollup_retention_days: crate::retention::DEFAULT_ROLLUP_DAYS,
            connect_timeout_ms: DEFAULT_CONNECT_TIMEOUT.as_millis() as u64,
            request_timeout_ms: DEFAULT_REQUEST_TIMEOUT.as_millis() as u64,
            cluster: None,
        }
    }
}

impl ClickHouseConfig {
    /// Checks every value; the error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        tls::check_link(
            "clickhouse.url",
            &self.url,
            "clickhouse.ca_file",
            self.ca_file.as_deref(),
            "put them in clickhouse.user and clickhouse.password",
        )?;
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
        if self.password_file.is_some() && !self.password.is_empty() {
            return Err(ConfigError::new(
                "clickhouse.password_file",
                "set together with clickhouse.password: set one of them",
            ));
        }
        self.password()?;
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
        for (key, value, max) in [
            (
                "clickhouse.connect_timeout_ms",
                self.connect_timeout_ms,
                MAX_CONNECT_TIMEOUT_MS,
            ),
            (
                "clickhouse.request_timeout_ms",
                self.request_timeout_ms,
                MAX_REQUEST_TIMEOUT_MS,
            ),
        ] {
            if !(1..=max).contains(&value) {
                return Err(ConfigError::new(
                    key,
                    format!("must be between 1 and {max} (milliseconds)"),
                ));
            }
        }
        if let Some(cluster) = &self.cluster {
            let ok = cluster
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
                && cluster
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !ok {
                return Err(ConfigError::new(
                    "clickhouse.cluster",
                    "must be the name of a cluster of the servers' <remote_servers>, [A-Za-z_][A-Za-z0-9_]* \
                     (leave it unset for one server)",
                ));
            }
        }
        Ok(())
    }

    /// The cluster of cluster mode (`None`: one server).
    pub fn cluster(&self) -> Option<&str> {
        self.cluster.as_deref()
    }

    /// How long a TCP connection may take to open (`clickhouse.connect_timeout_ms`).
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    /// How long one request may take as a whole (`clickhouse.request_timeout_ms`): the bound to give
    /// [`bounded`](crate::bounded) for every request made with [`client`](Self::client).
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    /// The password: the value, or the file's content (read now).
    pub fn password(&self) -> Result<Secret, ConfigError> {
        match &self.password_file {
            Some(path) => Secret::from_file("clickhouse.password_file", path),
            None => Ok(self.password.clone()),
        }
    }

    /// A client bound to the server, without a database (for `CREATE DATABASE`).
    ///
    /// The password file and the CA file were checked at start; should one have become unreadable
    /// since, the error is logged and requests fail (no password: 401; no trusted CA: the TLS
    /// handshake fails), rather than falling back to something weaker.
    pub fn server_client(&self) -> clickhouse::Client {
        let password = self.password().unwrap_or_else(|e| {
            tracing::error!(error = %e, "clickhouse: no password");
            Secret::default()
        });
        let tls = tls::client_tls_config("clickhouse.ca_file", self.ca_file.as_deref())
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "clickhouse: no trusted CA, https requests will fail");
                tls::untrusting_tls_config()
            });
        clickhouse::Client::with_http_client(tls::http_client(tls, self.connect_timeout()))
            .with_url(&self.url)
            .with_user(&self.user)
            .with_password(password.expose())
            .with_validation(false)
    }

    /// A client bound to the database. In cluster mode its queries run with
    /// `distributed_product_mode = 'global'`: an `IN (SELECT ... FROM vitals_1m)` over the `Distributed`
    /// tables (the alert evaluator's queries) reads the whole cluster once, as `GLOBAL IN`, instead of
    /// being refused (`Code: 288 ... Double-distributed IN/JOIN subqueries is denied`), so the SQL of
    /// single-server mode runs unchanged.
    pub fn client(&self) -> clickhouse::Client {
        let client = self.server_client().with_database(&self.database);
        match self.cluster {
            Some(_) => client.with_setting("distributed_product_mode", "global"),
            None => client,
        }
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

    #[test]
    fn a_cluster_is_a_name_or_unset() {
        assert_eq!(ClickHouseConfig::default().cluster(), None);
        for good in ["rum", "prod_2", "_c"] {
            let c = ClickHouseConfig {
                cluster: Some(good.into()),
                ..Default::default()
            };
            c.validate().unwrap();
            assert_eq!(c.cluster(), Some(good));
        }
        for bad in ["", "2shards", "rum; DROP", "a-b", "a.b"] {
            let c = ClickHouseConfig {
                cluster: Some(bad.into()),
                ..Default::default()
            };
            let err = c.validate().unwrap_err();
            assert_eq!(err.key, "clickhouse.cluster", "{bad:?}");
        }
    }

    #[test]
    fn timeouts_are_milliseconds_within_bounds() {
        let c = ClickHouseConfig::default();
        assert_eq!(c.connect_timeout(), Duration::from_secs(10));
        assert_eq!(c.request_timeout(), Duration::from_secs(30));
        for (connect_timeout_ms, request_timeout_ms, key) in [
            (0, 30_000, Some("clickhouse.connect_timeout_ms")),
            (300_001, 30_000, Some("clickhouse.connect_timeout_ms")),
            (10_000, 0, Some("clickhouse.request_timeout_ms")),
            (10_000, 3_600_001, Some("clickhouse.request_timeout_ms")),
            (1, 1, None),
            (300_000, 3_600_000, None),
        ] {
            let c = ClickHouseConfig {
                connect_timeout_ms,
                request_timeout_ms,
                ..Default::default()
            };
            assert_eq!(c.validate().err().map(|e| e.key), key.map(String::from));
        }
        let c = ClickHouseConfig {
            request_timeout_ms: 0,
            ..Default::default()
        };
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            "clickhouse.request_timeout_ms: must be between 1 and 3600000 (milliseconds)"
        );
    }

    #[test]
    fn a_ca_file_needs_https_and_must_exist() {
        let http_with_ca = ClickHouseConfig {
            ca_file: Some("/etc/hostname".into()),
            ..Default::default()
        };
        assert_eq!(
            http_with_ca.validate().unwrap_err().to_string(),
            "clickhouse.ca_file: is set but clickhouse.url is not https://"
        );
        let missing = ClickHouseConfig {
            url: "https://127.0.0.1:8443".into(),
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..Default::default()
        };
        assert_eq!(
            missing.validate().unwrap_err().to_string(),
            "clickhouse.ca_file: cannot read /nonexistent/ca.pem: not found"
        );
        let https = ClickHouseConfig {
            url: "https://clickhouse.example:8443".into(),
            ..Default::default()
        };
        https.validate().unwrap();
    }

    #[test]
    fn credentials_in_the_url_are_refused_without_echoing_them() {
        let c = ClickHouseConfig {
            url: "https://rum:pa55w0rd@clickhouse.example:8443".into(),
            ..Default::default()
        };
        let err = c.validate().unwrap_err();
        assert_eq!(err.key, "clickhouse.url");
        assert!(err.reason.contains("clickhouse.password"), "{err}");
        assert!(!err.to_string().contains("pa55w0rd"), "{err}");
    }

    #[test]
    fn the_password_comes_from_the_value_or_a_file_never_both_and_never_shows() {
        let both = ClickHouseConfig {
            password: Secret::new("pw-in-config"),
            password_file: Some("/nonexistent/pw".into()),
            ..Default::default()
        };
        let err = both.validate().unwrap_err();
        assert_eq!(err.key, "clickhouse.password_file");
        assert!(!format!("{both:?} {err}").contains("pw-in-config"));
        let missing = ClickHouseConfig {
            password_file: Some("/nonexistent/pw".into()),
            ..Default::default()
        };
        assert_eq!(
            missing.validate().unwrap_err().to_string(),
            "clickhouse.password_file: cannot read /nonexistent/pw: not found"
        );
    }
}
