//! The evaluator's settings. Section `[alerts]` of the config, env `RUM_ALERTS_*`.

use std::path::PathBuf;

use rum_schemas::config::{require_non_empty, require_positive, ConfigError};
use serde::Deserialize;

use crate::rules::Rules;

/// Settings of `rum alerts`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertsConfig {
    /// The address of `/metrics` and `/healthz`.
    pub host: String,
    /// The port of `/metrics` and `/healthz`.
    pub port: u16,
    /// Seconds between evaluations; firing alerts are re-sent this often and end 3 intervals later
    /// unless re-sent.
    pub interval_secs: u64,
    /// Alertmanager's base URL; alerts go to `<url>/api/v2/alerts`. `https://` uses TLS.
    pub alertmanager_url: String,
    /// PEM file of the CA certificates that sign Alertmanager's certificate (`https://` only);
    /// unset: Mozilla's roots.
    pub ca_file: Option<PathBuf>,
    /// The rules file (TOML); without one the built-in defaults apply (see [`Rules`]).
    pub rules_file: Option<PathBuf>,
    /// Alerts sent at most an evaluation (firing and resolved, ranked most severe and biggest
    /// first); the rest are counted in one `RumAlertsTruncated` alert. Also bounds what an
    /// evaluation reads from ClickHouse.
    pub max_alerts: usize,
    /// Alerts at most in one `POST /api/v2/alerts`; batches are sent and retried each on its own.
    pub max_alerts_per_post: usize,
    /// Failed evaluations in a row (ClickHouse unreadable) after which `RumAlertsStoreUnavailable`
    /// fires; firing alerts are re-sent meanwhile, never resolved.
    pub store_unavailable_after: u32,
    /// Seconds one evaluation's ClickHouse reads (two to four requests) may take together; longer
    /// counts as a failed evaluation (a server that accepts connections and never answers). The read
    /// of the firing alerts' top targets gets what is left of it, and failing it fails nothing (the
    /// alerts go out without those annotations, see [`crate::attribution`]). Each
    /// request is bounded by `clickhouse.request_timeout_ms` too, whichever comes first; this one
    /// also sets how long firing alerts live in Alertmanager ([`crate::firing_lifetime_secs`]).
    pub query_timeout_secs: u64,
    /// How the samples of a p75 decision count: `sample_rate` (each weighs `1 / sample_rate`, as
    /// `rum query` answers by default) or `unweighted` (each counts once). See [`Weighting`].
    pub weighting: Weighting,
}

/// How the samples of the p75 decision and of the p75 shown count (`alerts.weighting`), as `rum
/// query` counts them: `sample_rate` (the default: each sample weighs `1 / sample_rate`; the decision
/// reads the weighted rating sums and the p75 shown the weighted sketch of `vitals_1m`, a step without
/// weighted states its unweighted counts and sketch; `min_samples` still counts samples) or
/// `unweighted` (`rum query --unweighted`).
pub use rum_clickhouse::Weighting;

impl Default for AlertsConfig {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 8082,
            interval_secs: 60,
            alertmanager_url: "http://127.0.0.1:9093".into(),
            ca_file: None,
            rules_file: None,
            max_alerts: 500,
            max_alerts_per_post: crate::notify::DEFAULT_MAX_ALERTS_PER_POST,
            store_unavailable_after: 3,
            query_timeout_secs: 30,
            weighting: Weighting::SampleRate,
        }
    }
}

impl AlertsConfig {
    /// Checks every value, including the rules file (read and checked here, so that a bad file
    /// stops the process at start); the error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        require_non_empty("alerts.host", &self.host)?;
        if self.port == 0 {
            return Err(ConfigError::new("alerts.port", "must be greater than 0"));
        }
        require_positive("alerts.interval_secs", self.interval_secs)?;
        if self.interval_secs > 86_400 {
            return Err(ConfigError::new(
                "alerts.interval_secs",
                "must be at most 86400 (one day)",
            ));
        }
        if !(1..=100_000).contains(&self.max_alerts) {
            return Err(ConfigError::new(
                "alerts.max_alerts",
                "must be between 1 and 100000",
            ));
        }
        if !(1..=10_000).contains(&self.max_alerts_per_post) {
            return Err(ConfigError::new(
                "alerts.max_alerts_per_post",
                "must be between 1 and 10000",
            ));
        }
        require_positive(
            "alerts.store_unavailable_after",
            u64::from(self.store_unavailable_after),
        )?;
        require_positive("alerts.query_timeout_secs", self.query_timeout_secs)?;
        if self.query_timeout_secs > 3600 {
            return Err(ConfigError::new(
                "alerts.query_timeout_secs",
                "must be at most 3600",
            ));
        }
        self.tls()?;
        self.rules()?;
        Ok(())
    }

    /// Checks `alertmanager_url` and `ca_file`, and builds the TLS settings of the link to
    /// Alertmanager: the CA file's certificates, or Mozilla's roots.
    pub fn tls(&self) -> Result<rustls::ClientConfig, ConfigError> {
        let tls = rum_clickhouse::tls::check_link(
            "alerts.alertmanager_url",
            &self.alertmanager_url,
            "alerts.ca_file",
            self.ca_file.as_deref(),
            "rum has no option for Alertmanager credentials",
        )?;
        // http://: not used.
        Ok(tls.unwrap_or_else(rum_clickhouse::tls::public_roots_tls_config))
    }

    /// The rules: the file's, or the defaults. Errors name `alerts.rules_file`, and the reason names
    /// the key inside the file.
    pub fn rules(&self) -> Result<Rules, ConfigError> {
        match &self.rules_file {
            None => Ok(Rules::default()),
            Some(path) => Rules::load(path).map_err(|reason| {
                ConfigError::new("alerts.rules_file", format!("{}: {reason}", path.display()))
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let c = AlertsConfig::default();
        c.validate().unwrap();
        assert_eq!(c.port, 8082);
        assert_eq!(c.interval_secs, 60);
        assert_eq!(
            (
                c.max_alerts,
                c.max_alerts_per_post,
                c.store_unavailable_after,
                c.query_timeout_secs
            ),
            (500, 100, 3, 30)
        );
    }

    #[test]
    fn rejects_bad_values_naming_the_key() {
        let bad = AlertsConfig {
            interval_secs: 0,
            ..Default::default()
        };
        assert_eq!(bad.validate().unwrap_err().key, "alerts.interval_secs");
        let bad = AlertsConfig {
            alertmanager_url: "127.0.0.1:9093".into(),
            ..Default::default()
        };
        assert_eq!(bad.validate().unwrap_err().key, "alerts.alertmanager_url");
        let bad = AlertsConfig {
            rules_file: Some("/nonexistent/rules.toml".into()),
            ..Default::default()
        };
        let err = bad.validate().unwrap_err();
        assert_eq!(err.key, "alerts.rules_file");
        assert!(err.reason.contains("not found"), "{err}");
        let bad = AlertsConfig {
            max_alerts: 0,
            ..Default::default()
        };
        assert_eq!(bad.validate().unwrap_err().key, "alerts.max_alerts");
        let bad = AlertsConfig {
            max_alerts_per_post: 0,
            ..Default::default()
        };
        assert_eq!(
            bad.validate().unwrap_err().key,
            "alerts.max_alerts_per_post"
        );
        let bad = AlertsConfig {
            store_unavailable_after: 0,
            ..Default::default()
        };
        assert_eq!(
            bad.validate().unwrap_err().key,
            "alerts.store_unavailable_after"
        );
        let bad = AlertsConfig {
            query_timeout_secs: 0,
            ..Default::default()
        };
        assert_eq!(bad.validate().unwrap_err().key, "alerts.query_timeout_secs");
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail closures return figment::Error, fine in tests.
    fn weighting_is_sample_rate_unless_set_and_a_bad_value_names_the_key() {
        use figment::providers::Env;
        use figment::{Figment, Jail};
        assert_eq!(AlertsConfig::default().weighting, Weighting::SampleRate);
        let read = || Figment::from(Env::prefixed("RUM_ALERTS_")).extract::<AlertsConfig>();
        Jail::expect_with(|jail| {
            jail.set_env("RUM_ALERTS_WEIGHTING", "unweighted");
            assert_eq!(read().unwrap().weighting, Weighting::Unweighted);
            jail.set_env("RUM_ALERTS_WEIGHTING", "sample_rate");
            assert_eq!(read().unwrap().weighting, Weighting::SampleRate);
            jail.set_env("RUM_ALERTS_WEIGHTING", "weighted");
            let err = read().unwrap_err();
            assert_eq!(err.path, ["weighting"]);
            let kind = err.kind.to_string();
            assert!(
                kind.contains("sample_rate") && kind.contains("unweighted"),
                "{kind}"
            );
            Ok(())
        });
    }

    #[test]
    fn credentials_in_the_url_are_refused_without_echoing_them() {
        let c = AlertsConfig {
            alertmanager_url: "https://admin:s3cret@alertmanager.example".into(),
            ..Default::default()
        };
        let err = c.validate().unwrap_err();
        assert_eq!(err.key, "alerts.alertmanager_url");
        assert!(
            err.reason
                .contains("no option for Alertmanager credentials"),
            "{err}"
        );
        assert!(!err.to_string().contains("s3cret"), "{err}");
    }

    #[test]
    fn a_ca_file_needs_https_and_must_exist() {
        let http_with_ca = AlertsConfig {
            ca_file: Some("/etc/hostname".into()),
            ..Default::default()
        };
        assert_eq!(http_with_ca.validate().unwrap_err().key, "alerts.ca_file");
        let missing = AlertsConfig {
            alertmanager_url: "https://127.0.0.1:9093".into(),
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..Default::default()
        };
        assert_eq!(
            missing.validate().unwrap_err().to_string(),
            "alerts.ca_file: cannot read /nonexistent/ca.pem: not found"
        );
        let https = AlertsConfig {
            alertmanager_url: "https://alertmanager.example".into(),
            ..Default::default()
        };
        https.validate().unwrap();
    }
}
