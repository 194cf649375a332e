//! One librdkafka configuration for every client of `rum`, built from `[kafka]`, and its check at start.
//!
//! Order: the connection (`kafka.brokers`, TLS, SASL), then the client's own properties (the ingest's
//! producer, the consumer, ...), then `kafka.librdkafka_options`, last. Properties that `rum` owns
//! (they carry its guarantees, or have a key of their own) are refused in the options rather than
//! silently overridden: see [`OWNED`]. The other properties `rum` sets are tuning (`compression.type`,
//! `socket.nagle.disable`, `queued.*`) and the options may override them.

use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::BaseConsumer;
use rdkafka::error::KafkaError;
use rdkafka::producer::BaseProducer;
use rdkafka::types::RDKafkaConfRes;
use rum_schemas::config::{ConfigError, REDACTED};
use rum_schemas::kafka::{KafkaConfig, LibrdkafkaOptions};

/// librdkafka properties `rum` sets itself, with what to use instead. Aliases included.
pub const OWNED: [(&str, &str); 25] = [
    ("bootstrap.servers", "use kafka.brokers"),
    ("metadata.broker.list", "use kafka.brokers"),
    ("security.protocol", "use kafka.security_protocol"),
    ("sasl.mechanism", "use kafka.sasl_mechanism"),
    ("sasl.mechanisms", "use kafka.sasl_mechanism"),
    ("sasl.username", "use kafka.sasl_username"),
    (
        "sasl.password",
        "use kafka.sasl_password or kafka.sasl_password_file",
    ),
    ("ssl.ca.location", "use kafka.ssl_ca_file"),
    (
        "enable.idempotence",
        "rum's 204 means stored once: the ingest's producer is idempotent",
    ),
    (
        "acks",
        "rum's 204 means durable: the ingest's producer waits for acks=all",
    ),
    (
        "request.required.acks",
        "rum's 204 means durable: the ingest's producer waits for acks=all",
    ),
    ("transactional.id", "rum does not use transactions"),
    ("message.timeout.ms", "use ingest.delivery_timeout_ms"),
    ("delivery.timeout.ms", "use ingest.delivery_timeout_ms"),
    ("linger.ms", "use ingest.linger_ms"),
    ("queue.buffering.max.ms", "use ingest.linger_ms"),
    ("batch.num.messages", "use ingest.batch_max_messages"),
    (
        "queue.buffering.max.messages",
        "use ingest.queue_max_messages",
    ),
    ("group.id", "use consumer.group_id"),
    (
        "enable.auto.commit",
        "the consumer commits after ClickHouse holds the rows",
    ),
    (
        "auto.commit.enable",
        "the consumer commits after ClickHouse holds the rows",
    ),
    (
        "auto.offset.reset",
        "a new consumer group reads the topic from its beginning",
    ),
    (
        "enable.partition.eof",
        "the consume loop does not expect end-of-partition events",
    ),
    ("session.timeout.ms", "use consumer.session_timeout_ms"),
    ("fetch.wait.max.ms", "use consumer.fetch_wait_max_ms"),
];

/// The config key of an option, as errors name it: `kafka.librdkafka_options.client.rack`.
pub fn option_key(name: &str) -> String {
    format!("kafka.librdkafka_options.{name}")
}

/// The configuration of one client: the connection settings of `kafka`, then `properties` (the
/// client's own), then `kafka.librdkafka_options`. Reads the password file; errors name the key.
/// Every rdkafka client of `rum` is built from this.
pub fn client_config(
    kafka: &KafkaConfig,
    properties: &[(&str, &str)],
) -> Result<ClientConfig, ConfigError> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &kafka.brokers)
        .set("security.protocol", kafka.security_protocol.as_str())
        // What librdkafka logs at all; `logging` decides what reaches the log.
        .set_log_level(
            if tracing::enabled!(target: "librdkafka", tracing::Level::DEBUG) {
                RDKafkaLogLevel::Debug
            } else {
                RDKafkaLogLevel::Warning
            },
        );
    if let Some(mechanism) = kafka.sasl_mechanism {
        config.set("sasl.mechanism", mechanism.as_str());
    }
    if let Some(username) = &kafka.sasl_username {
        config.set("sasl.username", username);
    }
    if let Some(password) = kafka.sasl_password()? {
        config.set("sasl.password", password.expose());
    }
    if let Some(ca_file) = &kafka.ssl_ca_file {
        config.set("ssl.ca.location", ca_file.to_string_lossy());
    }
    for (name, value) in properties {
        config.set(*name, *value);
    }
    for (name, value) in kafka.librdkafka_options.iter() {
        config.set(name, value);
    }
    Ok(config)
}

/// Checks `kafka.librdkafka_options` and the whole client configuration with librdkafka itself, at
/// start: an owned or unknown property, a value librdkafka refuses, or settings it cannot build a
/// client from (a CA file that is not PEM, SCRAM without TLS support) are errors naming the key.
/// Creates a producer and a consumer without brokers (nothing connects) and drops them.
pub fn check(kafka: &KafkaConfig) -> Result<(), ConfigError> {
    for (name, value) in kafka.librdkafka_options.iter() {
        check_option(name, value)?;
    }
    let mut config = client_config(kafka, &[])?;
    // No broker: librdkafka builds the client (TLS context included) and connects to nothing.
    config.remove("bootstrap.servers");
    let producer: Result<BaseProducer, KafkaError> = config.create();
    producer.map_err(|e| creation_error(kafka, &e))?;
    let consumer: Result<BaseConsumer, KafkaError> = config.create();
    consumer.map_err(|e| creation_error(kafka, &e))?;
    Ok(())
}

/// One option alone: not owned, known to librdkafka, a value it accepts.
fn check_option(name: &str, value: &str) -> Result<(), ConfigError> {
    if let Some((_, instead)) = OWNED.iter().find(|(owned, _)| *owned == name) {
        return Err(ConfigError::new(
            option_key(name),
            format!("set by rum, not an option: {instead}"),
        ));
    }
    let mut alone = ClientConfig::new();
    alone.set(name, value);
    match alone.create_native_config() {
        Ok(_) => Ok(()),
        Err(KafkaError::ClientConfig(RDKafkaConfRes::RD_KAFKA_CONF_UNKNOWN, ..)) => Err(
            ConfigError::new(option_key(name), "unknown librdkafka property"),
        ),
        Err(KafkaError::ClientConfig(_, reason, ..)) => Err(ConfigError::new(
            option_key(name),
            hide_value(name, value, &reason),
        )),
        // A NUL byte in the name or the value.
        Err(_) => Err(ConfigError::new(
            option_key(name),
            "the name and the value must not contain NUL characters",
        )),
    }
}

/// librdkafka's reason, without the value when the property holds a secret.
fn hide_value(name: &str, value: &str, reason: &str) -> String {
    if LibrdkafkaOptions::is_sensitive(name) && !value.is_empty() {
        reason.replace(value, REDACTED)
    } else {
        reason.to_string()
    }
}

/// The key a client-creation error is about: an option it names, the CA file, or the protocol.
fn creation_error(kafka: &KafkaConfig, error: &KafkaError) -> ConfigError {
    let reason = match error {
        KafkaError::ClientCreation(reason) => reason.clone(),
        other => other.to_string(),
    };
    // The password is never in librdkafka's reasons, but a sensitive option's value could be.
    let reason = kafka
        .librdkafka_options
        .iter()
        .fold(reason, |reason, (name, value)| {
            hide_value(name, value, &reason)
        });
    let key = if let Some((name, _)) = kafka
        .librdkafka_options
        .iter()
        .find(|(name, _)| reason.contains(name))
    {
        option_key(name)
    } else if reason.contains("ssl.ca") && kafka.ssl_ca_file.is_some() {
        "kafka.ssl_ca_file".to_string()
    } else if reason.contains("sasl") {
        "kafka.sasl_mechanism".to_string()
    } else {
        "kafka.security_protocol".to_string()
    };
    ConfigError::new(key, format!("librdkafka refuses it: {reason}"))
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use rum_schemas::config::Secret;
    use rum_schemas::kafka::{SaslMechanism, SecurityProtocol};

    use super::*;

    fn with_options(options: &[(&str, &str)]) -> KafkaConfig {
        KafkaConfig {
            librdkafka_options: LibrdkafkaOptions(
                options
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..KafkaConfig::default()
        }
    }

    fn scram() -> KafkaConfig {
        KafkaConfig {
            security_protocol: SecurityProtocol::SaslSsl,
            sasl_mechanism: Some(SaslMechanism::ScramSha512),
            sasl_username: Some("rum".into()),
            sasl_password: Some(Secret::new("pa55-w0rd-xyz")),
            ..KafkaConfig::default()
        }
    }

    #[test]
    fn the_defaults_and_known_options_pass() {
        check(&KafkaConfig::default()).unwrap();
        check(&with_options(&[
            ("client.rack", "eu-1a"),
            ("socket.keepalive.enable", "true"),
            ("compression.type", "gzip"),
        ]))
        .unwrap();
    }

    #[test]
    fn tls_and_scram_build_a_client() {
        check(&scram()).unwrap();
    }

    #[test]
    fn an_unknown_property_is_refused_naming_it() {
        let err = check(&with_options(&[("client.rack", "a"), ("foo.bar", "1")])).unwrap_err();
        assert_eq!(err.key, "kafka.librdkafka_options.foo.bar");
        assert_eq!(err.reason, "unknown librdkafka property");
    }

    #[test]
    fn a_value_librdkafka_refuses_is_refused_naming_the_property() {
        let err = check(&with_options(&[("socket.keepalive.enable", "maybe")])).unwrap_err();
        assert_eq!(err.key, "kafka.librdkafka_options.socket.keepalive.enable");
        assert!(err.reason.contains("Expected bool"), "{err}");
    }

    #[test]
    fn an_owned_property_is_refused_with_what_to_use_instead() {
        for (name, instead) in [
            ("bootstrap.servers", "kafka.brokers"),
            ("sasl.password", "kafka.sasl_password"),
            ("enable.idempotence", "idempotent"),
            ("acks", "acks=all"),
            ("group.id", "consumer.group_id"),
        ] {
            let err = check(&with_options(&[(name, "x")])).unwrap_err();
            assert_eq!(err.key, option_key(name));
            assert!(err.reason.contains(instead), "{err}");
        }
    }

    #[test]
    fn a_ca_file_that_is_not_pem_is_refused_naming_the_key() {
        let path: PathBuf =
            std::env::temp_dir().join(format!("rum-not-a-ca-{}.pem", std::process::id()));
        std::fs::write(&path, "not a certificate\n").unwrap();
        let kafka = KafkaConfig {
            ssl_ca_file: Some(path.clone()),
            ..scram()
        };
        let err = check(&kafka).unwrap_err();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(err.key, "kafka.ssl_ca_file", "{err}");
    }

    #[test]
    fn the_password_is_in_the_client_config_and_never_in_its_debug_or_errors() {
        let kafka = scram();
        let config = client_config(&kafka, &[("linger.ms", "5")]).unwrap();
        assert_eq!(config.get("sasl.password"), Some("pa55-w0rd-xyz"));
        assert_eq!(config.get("sasl.mechanism"), Some("SCRAM-SHA-512"));
        assert_eq!(config.get("security.protocol"), Some("sasl_ssl"));
        assert!(!format!("{config:?}").contains("pa55-w0rd-xyz"));
        assert!(!format!("{kafka:?}").contains("pa55-w0rd-xyz"));
        let bad = KafkaConfig {
            librdkafka_options: with_options(&[("nope", "1")]).librdkafka_options,
            ..scram()
        };
        assert!(!check(&bad)
            .unwrap_err()
            .to_string()
            .contains("pa55-w0rd-xyz"));
    }

    #[test]
    fn options_come_last_and_may_override_tuning() {
        let kafka = with_options(&[("compression.type", "gzip")]);
        let config = client_config(&kafka, &[("compression.type", "lz4")]).unwrap();
        assert_eq!(config.get("compression.type"), Some("gzip"));
    }

    #[test]
    fn a_sensitive_options_value_is_hidden_in_librdkafkas_reason() {
        let reason = hide_value(
            "ssl.key.password",
            "hunter2",
            r#"Invalid value "hunter2" for configuration property "ssl.key.password""#,
        );
        assert!(
            !reason.contains("hunter2") && reason.contains(REDACTED),
            "{reason}"
        );
    }
}
