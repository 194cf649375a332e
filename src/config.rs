//! The process configuration: a TOML file (optional) overlaid by `RUM_<SECTION>_<KEY>` variables.
//!
//! Every bad value stops the process at start with one line naming the key; `main` exits with 2.
//! Unknown keys in a known section are errors too (a typo must not fall back to a default silently).

use std::path::Path;

use figment::providers::{Env, Format, Toml};
use figment::Figment;
use rum_alerts::AlertsConfig;
use rum_clickhouse::ClickHouseConfig;
use rum_consumers::ConsumerConfig;
use rum_ingest::IngestConfig;
use rum_schemas::kafka::KafkaConfig;
use serde::Deserialize;

/// The sections, also the first word of their environment variables.
const SECTIONS: [&str; 5] = ["kafka", "ingest", "consumer", "clickhouse", "alerts"];

/// Every setting of every subcommand.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `[kafka]`
    pub kafka: KafkaConfig,
    /// `[ingest]`
    pub ingest: IngestConfig,
    /// `[consumer]`
    pub consumer: ConsumerConfig,
    /// `[clickhouse]`
    pub clickhouse: ClickHouseConfig,
    /// `[alerts]`
    pub alerts: AlertsConfig,
}

/// The environment variable that sets a dotted key: `kafka.brokers` -> `RUM_KAFKA_BROKERS`.
pub fn env_name(key: &str) -> String {
    format!("RUM_{}", key.replace('.', "_").to_ascii_uppercase())
}

/// Loads the file (if given) and the environment, and checks every value.
/// The error is one line: `key (ENV_NAME): reason`.
pub fn load(file: Option<&Path>) -> Result<Config, String> {
    let mut figment = Figment::new();
    if let Some(path) = file {
        if !path.is_file() {
            return Err(format!("config file {}: not found", path.display()));
        }
        figment = figment.merge(Toml::file(path));
    }
    figment = figment.merge(
        Env::prefixed("RUM_")
            .filter_map(|key| {
                let (section, rest) = key.as_str().split_once('_')?;
                let section = section.to_ascii_lowercase();
                SECTIONS
                    .contains(&section.as_str())
                    .then(|| format!("{section}.{}", rest.to_ascii_lowercase()).into())
            })
            .lowercase(false),
    );
    let config: Config = figment.extract().map_err(|e| describe(&e))?;
    config
        .kafka
        .validate()
        .and_then(|()| config.ingest.validate())
        .and_then(|()| config.consumer.validate())
        .and_then(|()| config.clickhouse.validate())
        .and_then(|()| config.alerts.validate())
        .map_err(|e| format!("{} ({}): {}", e.key, env_name(&e.key), e.reason))?;
    Ok(config)
}

/// One line from figment's error: the key, where the value came from, and what is wrong.
fn describe(error: &figment::Error) -> String {
    let key = error.path.join(".");
    let source = error
        .metadata
        .as_ref()
        .map(|m| match &m.source {
            Some(figment::Source::File(path)) => format!("in {}", path.display()),
            _ if m.name.contains("environment") => format!("from {}", env_name(&key)),
            _ => m.name.to_string(),
        })
        .unwrap_or_default();
    let kind = error.kind.to_string().replace('\n', " ");
    match (key.is_empty(), source.is_empty()) {
        (true, _) => format!("config: {kind}"),
        (false, true) => format!("{key}: {kind}"),
        (false, false) => format!("{key} ({source}): {kind}"),
    }
}

#[cfg(test)]
// figment's Jail closures return figment::Error, which is large; that is fine in tests.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;
    use figment::Jail;

    #[test]
    fn defaults_load_without_file_or_environment() {
        Jail::expect_with(|_| {
            let c = load(None).unwrap();
            assert_eq!(c.ingest.port, 8080);
            assert_eq!(c.kafka.topic, "rum.beacons.v1");
            Ok(())
        });
    }

    #[test]
    fn environment_overrides_the_file() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "rum.toml",
                "[ingest]\nport = 9999\n[consumer]\nfetch_wait_max_ms = 7\n",
            )?;
            jail.set_env("RUM_INGEST_PORT", "8181");
            jail.set_env("RUM_KAFKA_BROKERS", "a:1,b:2");
            let c = load(Some(Path::new("rum.toml"))).unwrap();
            assert_eq!(c.ingest.port, 8181);
            assert_eq!(c.consumer.fetch_wait_max_ms, 7);
            assert_eq!(c.kafka.brokers, "a:1,b:2");
            Ok(())
        });
    }

    #[test]
    fn an_empty_broker_list_names_the_key() {
        Jail::expect_with(|jail| {
            jail.set_env("RUM_KAFKA_BROKERS", "");
            let err = load(None).unwrap_err();
            assert_eq!(err, "kafka.brokers (RUM_KAFKA_BROKERS): must not be empty");
            Ok(())
        });
    }

    #[test]
    fn an_unparsable_port_names_the_key_and_the_variable() {
        Jail::expect_with(|jail| {
            jail.set_env("RUM_INGEST_PORT", "eighty");
            let err = load(None).unwrap_err();
            assert!(
                err.starts_with("ingest.port (from RUM_INGEST_PORT):"),
                "{err}"
            );
            assert!(!err.contains('\n'));
            Ok(())
        });
    }

    #[test]
    fn a_typo_in_the_file_is_an_error() {
        Jail::expect_with(|jail| {
            jail.create_file("rum.toml", "[kafka]\nbroker = \"x:1\"\n")?;
            let err = load(Some(Path::new("rum.toml"))).unwrap_err();
            assert!(err.contains("kafka") && err.contains("broker"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn a_missing_file_is_an_error() {
        Jail::expect_with(|_| {
            assert_eq!(
                load(Some(Path::new("nope.toml"))).unwrap_err(),
                "config file nope.toml: not found"
            );
            Ok(())
        });
    }

    #[test]
    fn variables_of_other_tools_are_ignored() {
        Jail::expect_with(|jail| {
            jail.set_env("RUM_LOG", "debug");
            jail.set_env("RUM_LOCAL_KAFKA_PORT", "9092");
            assert!(load(None).is_ok());
            Ok(())
        });
    }
}
