//! The process configuration: a TOML file (optional) overlaid by `RUM_<SECTION>_<KEY>` variables.
//!
//! Every bad value stops the process at start with one line naming the key; `main` exits with 2.
//! Unknown keys in a known section are errors too (a typo must not fall back to a default silently).

use std::path::Path;

use figment::providers::{Env, Format, Serialized, Toml};
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

/// Keys whose environment variable is taken as written: figment would read `0123` as the number
/// 123 and unquote `"..."`, which would change a password.
const RAW_KEYS: [&str; 2] = ["kafka.sasl_password", "clickhouse.password"];

/// The environment variable that sets a dotted key: `kafka.brokers` -> `RUM_KAFKA_BROKERS`. A key
/// inside a table (`kafka.librdkafka_options.client.rack`) is set by its table's variable.
pub fn env_name(key: &str) -> String {
    let section_and_key = key.splitn(3, '.').take(2).collect::<Vec<_>>().join("_");
    format!("RUM_{}", section_and_key.to_ascii_uppercase())
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
                let key = format!("{section}.{}", rest.to_ascii_lowercase());
                (SECTIONS.contains(&section.as_str()) && !RAW_KEYS.contains(&key.as_str()))
                    .then(|| key.into())
            })
            .lowercase(false),
    );
    for key in RAW_KEYS {
        if let Some(value) = std::env::var_os(env_name(key)) {
            let value = value
                .into_string()
                .map_err(|_| format!("{key} (from {}): not UTF-8", env_name(key)))?;
            figment = figment.merge(Serialized::default(key, value));
        }
    }
    let config: Config = figment.extract().map_err(|e| describe(&e))?;
    config
        .kafka
        .validate()
        .and_then(|()| config.ingest.validate())
        .and_then(|()| config.consumer.validate())
        // The very clients `rum` runs, built from the settings checked above.
        .and_then(|()| {
            rum_kafka::check(
                &config.kafka,
                &[
                    rum_ingest::producer_properties(&config.ingest),
                    rum_consumers::consumer_properties(&config.consumer),
                    rum_consumers::dlq_producer_properties(&config.consumer),
                ],
            )
        })
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
    let kind = if may_hold_secret(&key) {
        without_value(&error.kind)
    } else {
        error.kind.to_string()
    };
    let kind = kind.replace('\n', " ");
    match (key.is_empty(), source.is_empty()) {
        (true, _) => format!("config: {kind}"),
        (false, true) => format!("{key}: {kind}"),
        (false, false) => format!("{key} ({source}): {kind}"),
    }
}

/// Keys whose value is, or may hold, a secret: never echoed in an error. A section (or the whole
/// config) holds its keys, and a malformed table given as one variable
/// (`RUM_KAFKA_LIBRDKAFKA_OPTIONS`, `RUM_INGEST_SITES`) is a string holding all of its values.
fn may_hold_secret(key: &str) -> bool {
    !key.contains('.')
        || key.starts_with("kafka.librdkafka_options")
        || key.starts_with("ingest.sites")
        || ["password", "secret", "token"]
            .iter()
            .any(|word| key.contains(word))
}

/// figment's reason without the value it quotes (`found string "..."` becomes `found a string`).
fn without_value(kind: &figment::error::Kind) -> String {
    use figment::error::{Actual, Kind};
    let what = |actual: &Actual| match actual {
        Actual::Bool(_) => "a boolean".to_string(),
        Actual::Unsigned(_) | Actual::Signed(_) => "an integer".to_string(),
        Actual::Float(_) => "a number".to_string(),
        Actual::Char(_) | Actual::Str(_) => "a string".to_string(),
        Actual::Bytes(_) => "bytes".to_string(),
        Actual::Other(_) => "a value".to_string(),
        // The rest name a shape, not a value: "map", "sequence", ...
        shape => shape.to_string(),
    };
    match kind {
        Kind::InvalidType(actual, expected) => {
            format!("invalid type: found {}, expected {expected}", what(actual))
        }
        Kind::InvalidValue(actual, expected) => {
            format!("invalid value: found {}, expected {expected}", what(actual))
        }
        Kind::ISizeOutOfRange(_) | Kind::USizeOutOfRange(_) => "integer out of range".into(),
        other => other.to_string(),
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
    #[test]
    fn an_unknown_librdkafka_option_names_the_option() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "rum.toml",
                "[kafka.librdkafka_options]\n\"client.rack\" = \"eu-1a\"\n\"foo.bar\" = 1\n",
            )?;
            let err = load(Some(Path::new("rum.toml"))).unwrap_err();
            assert_eq!(
                err,
                "kafka.librdkafka_options.foo.bar (RUM_KAFKA_LIBRDKAFKA_OPTIONS): unknown librdkafka property"
            );
            Ok(())
        });
    }

    #[test]
    fn librdkafka_options_come_from_the_file_or_one_variable() {
        Jail::expect_with(|jail| {
            jail.set_env(
                "RUM_KAFKA_LIBRDKAFKA_OPTIONS",
                r#"{"client.rack"="eu-1a","socket.keepalive.enable"=true}"#,
            );
            let c = load(None).unwrap();
            assert_eq!(c.kafka.librdkafka_options.0["client.rack"], "eu-1a");
            assert_eq!(
                c.kafka.librdkafka_options.0["socket.keepalive.enable"],
                "true"
            );
            Ok(())
        });
    }

    #[test]
    fn a_malformed_table_variable_is_refused_without_echoing_its_values() {
        Jail::expect_with(|jail| {
            jail.set_env(
                "RUM_KAFKA_LIBRDKAFKA_OPTIONS",
                r#"{"ssl.key.password"="hunter2", "client.rack"="eu"#,
            );
            let err = load(None).unwrap_err();
            assert!(
                err.starts_with("kafka.librdkafka_options (from RUM_KAFKA_LIBRDKAFKA_OPTIONS): invalid type: found a string, expected"),
                "{err}"
            );
            assert!(!err.contains("hunter2"), "{err}");
            jail.clear_env();
            jail.set_env("RUM_INGEST_SITES", r#"{shop={token_secret="s3cr3t-t0ken""#);
            let err = load(None).unwrap_err();
            assert!(
                err.starts_with(
                    "ingest.sites (from RUM_INGEST_SITES): invalid type: found a string"
                ),
                "{err}"
            );
            assert!(!err.contains("s3cr3t-t0ken"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn a_value_of_another_key_is_still_quoted() {
        Jail::expect_with(|jail| {
            jail.set_env("RUM_INGEST_PORT", "eighty");
            let err = load(None).unwrap_err();
            assert!(err.contains("\"eighty\""), "{err}");
            Ok(())
        });
    }

    #[test]
    fn a_librdkafka_option_is_checked_against_the_clients_rum_runs() {
        Jail::expect_with(|jail| {
            jail.set_env(
                "RUM_KAFKA_LIBRDKAFKA_OPTIONS",
                r#"{"max.in.flight.requests.per.connection"=10}"#,
            );
            let err = load(None).unwrap_err();
            assert!(
                err.starts_with("kafka.librdkafka_options.max.in.flight.requests.per.connection (RUM_KAFKA_LIBRDKAFKA_OPTIONS): librdkafka cannot build the ingest producer with it"),
                "{err}"
            );
            jail.set_env(
                "RUM_KAFKA_LIBRDKAFKA_OPTIONS",
                r#"{"group.protocol"="consumer"}"#,
            );
            let err = load(None).unwrap_err();
            assert!(
                err.starts_with("kafka.librdkafka_options.group.protocol (RUM_KAFKA_LIBRDKAFKA_OPTIONS): librdkafka cannot build the consumer with it"),
                "{err}"
            );
            // Above consumer.session_timeout_ms (10 s), below librdkafka's default (45 s).
            jail.set_env(
                "RUM_KAFKA_LIBRDKAFKA_OPTIONS",
                r#"{"max.poll.interval.ms"=20000}"#,
            );
            load(None).unwrap();
            Ok(())
        });
    }

    #[test]
    fn a_password_from_the_environment_is_taken_as_written_and_never_shown() {
        Jail::expect_with(|jail| {
            jail.set_env("RUM_KAFKA_SECURITY_PROTOCOL", "sasl_ssl");
            jail.set_env("RUM_KAFKA_SASL_MECHANISM", "SCRAM-SHA-256");
            jail.set_env("RUM_KAFKA_SASL_USERNAME", "rum");
            jail.set_env("RUM_KAFKA_SASL_PASSWORD", "0123");
            jail.set_env("RUM_CLICKHOUSE_PASSWORD", r#""quoted""#);
            let c = load(None).unwrap();
            let password = c.kafka.sasl_password().unwrap().unwrap();
            assert_eq!(password.expose(), "0123");
            assert_eq!(c.clickhouse.password.expose(), r#""quoted""#);
            let shown = format!("{c:?}");
            assert!(
                !shown.contains("0123") && !shown.contains("quoted"),
                "{shown}"
            );
            // An error elsewhere does not show it either.
            jail.set_env("RUM_KAFKA_SASL_MECHANISM", "MD5");
            let err = load(None).unwrap_err();
            assert!(
                err.starts_with(
                    "kafka.sasl_mechanism (from RUM_KAFKA_SASL_MECHANISM): `MD5` is not one of"
                ),
                "{err}"
            );
            Ok(())
        });
    }

    #[test]
    fn sasl_without_a_password_names_both_ways_to_give_one() {
        Jail::expect_with(|jail| {
            jail.set_env("RUM_KAFKA_SECURITY_PROTOCOL", "sasl_ssl");
            jail.set_env("RUM_KAFKA_SASL_MECHANISM", "PLAIN");
            jail.set_env("RUM_KAFKA_SASL_USERNAME", "rum");
            let err = load(None).unwrap_err();
            assert_eq!(err, "kafka.sasl_password (RUM_KAFKA_SASL_PASSWORD): required with kafka.security_protocol sasl_ssl (or kafka.sasl_password_file)");
            jail.create_file("password", "from-a-file\n")?;
            jail.set_env("RUM_KAFKA_SASL_PASSWORD_FILE", "password");
            let c = load(None).unwrap();
            assert_eq!(
                c.kafka.sasl_password().unwrap().unwrap().expose(),
                "from-a-file"
            );
            Ok(())
        });
    }
}
