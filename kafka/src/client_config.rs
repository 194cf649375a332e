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

/// librdkafka properties `rum` sets itself, with what to use instead. An alias of one of them (see
/// [`ALIASES`]) is refused too.
pub const OWNED: [(&str, &str); 20] = [
    ("bootstrap.servers", "use kafka.brokers"),
    ("security.protocol", "use kafka.security_protocol"),
    ("sasl.mechanism", "use kafka.sasl_mechanism"),
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
    ("transactional.id", "rum does not use transactions"),
    ("message.timeout.ms", "use ingest.delivery_timeout_ms"),
    ("linger.ms", "use ingest.linger_ms"),
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

/// librdkafka's aliases (`rdkafka_conf.c`, `_RK_C_ALIAS`), alias first: two names of one property.
/// (`enable.auto.commit` is a client property of its own, `auto.commit.enable` a topic one: both owned.)
/// rdkafka's `ClientConfig` is a map by name, so both names set would leave it to chance which
/// value librdkafka gets: a name is always set in place of its other spellings.
pub const ALIASES: [(&str, &str); 11] = [
    ("bootstrap.servers", "metadata.broker.list"),
    ("max.in.flight", "max.in.flight.requests.per.connection"),
    ("sasl.mechanism", "sasl.mechanisms"),
    (
        "sasl.oauthbearer.client.credentials.client.id",
        "sasl.oauthbearer.client.id",
    ),
    (
        "sasl.oauthbearer.client.credentials.client.secret",
        "sasl.oauthbearer.client.secret",
    ),
    ("max.partition.fetch.bytes", "fetch.message.max.bytes"),
    ("linger.ms", "queue.buffering.max.ms"),
    ("retries", "message.send.max.retries"),
    ("compression.type", "compression.codec"),
    ("acks", "request.required.acks"),
    ("delivery.timeout.ms", "message.timeout.ms"),
];

/// The property a name sets: the name itself, or the property it is an alias of.
pub fn canonical(name: &str) -> &str {
    ALIASES
        .iter()
        .find(|(alias, _)| *alias == name)
        .map_or(name, |(_, property)| property)
}

/// Sets `name` in `config`, in place of any other spelling of the same property.
fn set(config: &mut ClientConfig, name: &str, value: &str) {
    let property = canonical(name);
    for (alias, target) in ALIASES {
        if target == property {
            config.remove(alias);
        }
    }
    config.remove(property);
    config.set(name, value);
}

/// Whether a client produces or consumes: what [`check`] builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientKind {
    /// A producer (the ingest's, the dead-letter producer).
    Producer,
    /// A consumer.
    Consumer,
}

/// One of `rum`'s Kafka clients: its name in logs and errors, its kind, and its own librdkafka
/// properties (set after the connection, before `kafka.librdkafka_options`). Defined by the crate
/// that runs the client, so that [`check`] builds the very configuration the client will use.
#[derive(Debug, Clone)]
pub struct ClientProperties {
    /// `ingest producer`, `consumer`, ...
    pub client: &'static str,
    /// A producer or a consumer.
    pub kind: ClientKind,
    /// The properties, by librdkafka name.
    pub properties: Vec<(&'static str, String)>,
}

/// The config key of an option, as errors name it: `kafka.librdkafka_options.client.rack`.
pub fn option_key(name: &str) -> String {
    format!("kafka.librdkafka_options.{name}")
}

/// The configuration of one client: the connection settings of `kafka`, then the client's own
/// properties, then `kafka.librdkafka_options`. Reads the password file; errors name the key.
/// Every rdkafka client of `rum` is built from this.
pub fn client_config(
    kafka: &KafkaConfig,
    client: &ClientProperties,
) -> Result<ClientConfig, ConfigError> {
    let mut config = connection_and_properties(kafka, client)?;
    for (name, value) in kafka.librdkafka_options.iter() {
        set(&mut config, name, value);
    }
    Ok(config)
}

/// [`client_config`] without `kafka.librdkafka_options`.
fn connection_and_properties(
    kafka: &KafkaConfig,
    client: &ClientProperties,
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
    for (name, value) in &client.properties {
        set(&mut config, name, value);
    }
    Ok(config)
}

/// Checks `kafka.librdkafka_options` and the configuration of each of `clients` with librdkafka
/// itself, at start: an owned or unknown property, a value librdkafka refuses, or settings it
/// cannot build the client from (an option at odds with a property `rum` sets, a CA file that is
/// not PEM, SCRAM without TLS support) are errors naming the key. Builds each client without
/// brokers (nothing connects) and drops it.
pub fn check(kafka: &KafkaConfig, clients: &[ClientProperties]) -> Result<(), ConfigError> {
    for (name, value) in kafka.librdkafka_options.iter() {
        check_option(name, value)?;
    }
    check_spelled_once(&kafka.librdkafka_options)?;
    for client in clients {
        let Err(whole) = build(kafka, client, &client_config(kafka, client)?) else {
            continue;
        };
        // Which option breaks it: the connection and the client's own properties alone, then
        // the options added one at a time.
        let mut config = connection_and_properties(kafka, client)?;
        build(kafka, client, &config)?;
        for (name, value) in kafka.librdkafka_options.iter() {
            set(&mut config, name, value);
            build(kafka, client, &config).map_err(|e| ConfigError {
                key: option_key(name),
                ..e
            })?;
        }
        return Err(whole);
    }
    Ok(())
}

/// Creates the client of `config` without brokers; the error names a connection key.
fn build(
    kafka: &KafkaConfig,
    client: &ClientProperties,
    config: &ClientConfig,
) -> Result<(), ConfigError> {
    let mut config = config.clone();
    // No broker: librdkafka builds the client (TLS context included) and connects to nothing.
    config.remove("bootstrap.servers");
    let created = match client.kind {
        ClientKind::Producer => config.create::<BaseProducer>().map(drop),
        ClientKind::Consumer => config.create::<BaseConsumer>().map(drop),
    };
    created.map_err(|e| creation_error(kafka, client, &e))
}

/// Two options that are spellings of one property (`compression.codec` and `compression.type`).
fn check_spelled_once(options: &LibrdkafkaOptions) -> Result<(), ConfigError> {
    let mut seen = std::collections::HashMap::new();
    for (name, _) in options.iter() {
        if let Some(other) = seen.insert(canonical(name), name) {
            return Err(ConfigError::new(
                option_key(name),
                format!(
                    "the same librdkafka property as {}: set one of them",
                    option_key(other)
                ),
            ));
        }
    }
    Ok(())
}

/// One option alone: not owned, known to librdkafka, a value it accepts.
fn check_option(name: &str, value: &str) -> Result<(), ConfigError> {
    if let Some((owned, instead)) = OWNED
        .iter()
        .find(|(owned, _)| canonical(owned) == canonical(name))
    {
        let alias = if *owned == name {
            String::new()
        } else {
            format!(" (an alias of {owned})")
        };
        return Err(ConfigError::new(
            option_key(name),
            format!("set by rum, not an option{alias}: {instead}"),
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

/// The key a client-creation error is about, without options (see [`check`]): the CA file, the
/// SASL mechanism, or the protocol.
fn creation_error(
    kafka: &KafkaConfig,
    client: &ClientProperties,
    error: &KafkaError,
) -> ConfigError {
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
    let key = if reason.contains("ssl.ca") && kafka.ssl_ca_file.is_some() {
        "kafka.ssl_ca_file"
    } else if reason.contains("sasl") {
        "kafka.sasl_mechanism"
    } else {
        "kafka.security_protocol"
    };
    ConfigError::new(
        key,
        format!(
            "librdkafka cannot build the {} with it: {reason}",
            client.client
        ),
    )
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

    fn client(
        client: &'static str,
        kind: ClientKind,
        properties: &[(&'static str, &str)],
    ) -> ClientProperties {
        ClientProperties {
            client,
            kind,
            properties: properties
                .iter()
                .map(|(k, v)| (*k, v.to_string()))
                .collect(),
        }
    }

    /// Clients like rum's (theirs are defined by rum-ingest and rum-consumers, and checked
    /// through `rum`'s config tests).
    fn rums_clients() -> Vec<ClientProperties> {
        vec![
            client(
                "ingest producer",
                ClientKind::Producer,
                &[
                    ("enable.idempotence", "true"),
                    ("acks", "all"),
                    ("compression.type", "lz4"),
                    ("linger.ms", "5"),
                    ("message.timeout.ms", "4000"),
                ],
            ),
            client(
                "consumer",
                ClientKind::Consumer,
                &[
                    ("group.id", "rum"),
                    ("enable.auto.commit", "false"),
                    ("session.timeout.ms", "10000"),
                ],
            ),
            client(
                "dead-letter producer",
                ClientKind::Producer,
                &[("acks", "all")],
            ),
        ]
    }

    fn check_rums(kafka: &KafkaConfig) -> Result<(), ConfigError> {
        check(kafka, &rums_clients())
    }

    #[test]
    fn the_defaults_and_known_options_pass() {
        check_rums(&KafkaConfig::default()).unwrap();
        check_rums(&with_options(&[
            ("client.rack", "eu-1a"),
            ("socket.keepalive.enable", "true"),
            ("compression.type", "gzip"),
        ]))
        .unwrap();
    }

    #[test]
    fn tls_and_scram_build_a_client() {
        check_rums(&scram()).unwrap();
    }

    #[test]
    fn an_unknown_property_is_refused_naming_it() {
        let err = check_rums(&with_options(&[("client.rack", "a"), ("foo.bar", "1")])).unwrap_err();
        assert_eq!(err.key, "kafka.librdkafka_options.foo.bar");
        assert_eq!(err.reason, "unknown librdkafka property");
    }

    #[test]
    fn a_value_librdkafka_refuses_is_refused_naming_the_property() {
        let err = check_rums(&with_options(&[("socket.keepalive.enable", "maybe")])).unwrap_err();
        assert_eq!(err.key, "kafka.librdkafka_options.socket.keepalive.enable");
        assert!(err.reason.contains("Expected bool"), "{err}");
    }

    #[test]
    fn an_option_the_clients_own_properties_forbid_is_refused_naming_it_and_the_client() {
        for (name, value, client) in [
            (
                "max.in.flight.requests.per.connection",
                "10",
                "ingest producer",
            ),
            ("retries", "0", "ingest producer"),
            ("queuing.strategy", "lifo", "ingest producer"),
            ("group.protocol", "consumer", "consumer"),
        ] {
            let kafka = with_options(&[("client.rack", "eu-1a"), (name, value)]);
            let err = check_rums(&kafka).unwrap_err();
            assert_eq!(err.key, option_key(name), "{err}");
            assert!(err.reason.contains(client), "{err}");
        }
    }

    #[test]
    fn an_option_the_clients_own_properties_allow_passes() {
        // librdkafka wants max.poll.interval.ms >= session.timeout.ms: rum's is 10000, not 45000.
        check_rums(&with_options(&[("max.poll.interval.ms", "20000")])).unwrap();
    }

    #[test]
    fn an_owned_property_or_its_alias_is_refused_with_what_to_use_instead() {
        for (name, instead) in [
            ("bootstrap.servers", "kafka.brokers"),
            ("metadata.broker.list", "kafka.brokers"),
            ("sasl.password", "kafka.sasl_password"),
            ("enable.idempotence", "idempotent"),
            ("acks", "acks=all"),
            ("request.required.acks", "acks=all"),
            ("queue.buffering.max.ms", "ingest.linger_ms"),
            ("delivery.timeout.ms", "ingest.delivery_timeout_ms"),
            ("auto.commit.enable", "commits after ClickHouse"),
            ("group.id", "consumer.group_id"),
        ] {
            let err = check_rums(&with_options(&[(name, "x")])).unwrap_err();
            assert_eq!(err.key, option_key(name));
            assert!(err.reason.contains(instead), "{err}");
        }
        let err = check_rums(&with_options(&[("queue.buffering.max.ms", "1")])).unwrap_err();
        assert!(err.reason.contains("an alias of linger.ms"), "{err}");
    }

    #[test]
    fn two_spellings_of_one_property_are_refused() {
        let kafka = with_options(&[("compression.codec", "gzip"), ("compression.type", "zstd")]);
        let err = check_rums(&kafka).unwrap_err();
        assert_eq!(err.key, option_key("compression.type"));
        assert!(err.reason.contains("compression.codec"), "{err}");
    }

    #[test]
    fn an_alias_of_a_tuning_property_overrides_rums_value() {
        let kafka = with_options(&[("compression.codec", "gzip")]);
        let producer = client("p", ClientKind::Producer, &[("compression.type", "lz4")]);
        let config = client_config(&kafka, &producer).unwrap();
        assert_eq!(config.get("compression.codec"), Some("gzip"));
        assert_eq!(config.get("compression.type"), None);
        let native = config.create_native_config().unwrap();
        assert_eq!(native.get("compression.codec").unwrap(), "gzip");
    }

    #[test]
    fn every_alias_names_the_property_librdkafka_sets() {
        // The OAuth ones need libcurl, which this build of librdkafka lacks.
        for (alias, property) in ALIASES.iter().filter(|(a, _)| !a.contains("oauthbearer")) {
            let value = match *alias {
                "bootstrap.servers" => "kafka-1:9092",
                "sasl.mechanism" => "PLAIN",
                "compression.type" => "gzip",
                _ => "3",
            };
            let mut config = ClientConfig::new();
            config.set(*alias, value);
            let native = config.create_native_config().unwrap();
            assert_eq!(native.get(property).unwrap(), value, "{alias}");
            assert_eq!(canonical(alias), *property);
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
        let err = check_rums(&kafka).unwrap_err();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(err.key, "kafka.ssl_ca_file", "{err}");
    }

    #[test]
    fn the_password_is_in_the_client_config_and_never_in_its_debug_or_errors() {
        let kafka = scram();
        let producer = client("p", ClientKind::Producer, &[("linger.ms", "5")]);
        let config = client_config(&kafka, &producer).unwrap();
        assert_eq!(config.get("sasl.password"), Some("pa55-w0rd-xyz"));
        assert_eq!(config.get("sasl.mechanism"), Some("SCRAM-SHA-512"));
        assert_eq!(config.get("security.protocol"), Some("sasl_ssl"));
        assert!(!format!("{config:?}").contains("pa55-w0rd-xyz"));
        assert!(!format!("{kafka:?}").contains("pa55-w0rd-xyz"));
        let bad = KafkaConfig {
            librdkafka_options: with_options(&[("nope", "1")]).librdkafka_options,
            ..scram()
        };
        assert!(!check_rums(&bad)
            .unwrap_err()
            .to_string()
            .contains("pa55-w0rd-xyz"));
    }

    #[test]
    fn options_come_last_and_may_override_tuning() {
        let kafka = with_options(&[("compression.type", "gzip")]);
        let producer = client("p", ClientKind::Producer, &[("compression.type", "lz4")]);
        let config = client_config(&kafka, &producer).unwrap();
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
