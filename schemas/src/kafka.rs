//! Kafka topics and the connection settings shared by the producer (ingest) and the consumers:
//! brokers, TLS, SASL and raw librdkafka properties.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::str::FromStr;

use serde::Deserialize;

use crate::config::{require_non_empty, require_readable_file, ConfigError, Secret};

/// The topic of normalized beacons, one message per page load.
pub const BEACONS_TOPIC: &str = "rum.beacons.v1";
/// The topic of messages the consumers could not decode; the reason is in [`DLQ_REASON_HEADER`].
pub const DLQ_TOPIC: &str = "rum.beacons.dlq.v1";
/// The header of a dead letter that says why it was dead-lettered.
pub const DLQ_REASON_HEADER: &str = "rum-dlq-reason";

/// How to reach Kafka. Section `[kafka]` of the config, env `RUM_KAFKA_*`.
///
/// `rum-kafka` turns it into librdkafka's settings (one function for every client), and checks
/// [`KafkaConfig::librdkafka_options`] against librdkafka itself at start.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap servers, comma-separated `host:port`.
    pub brokers: String,
    /// The topic beacons are published to and consumed from.
    pub topic: String,
    /// The dead-letter topic.
    pub dlq_topic: String,
    /// TLS and SASL on the connections to the brokers (`security.protocol`).
    pub security_protocol: SecurityProtocol,
    /// The SASL mechanism; required with `sasl_plaintext` and `sasl_ssl`.
    pub sasl_mechanism: Option<SaslMechanism>,
    /// The SASL user; required with SASL.
    pub sasl_username: Option<String>,
    /// The SASL password; with SASL, exactly one of this and [`Self::sasl_password_file`] (an empty
    /// value counts as unset).
    pub sasl_password: Option<Secret>,
    /// A file holding the SASL password (read at start, one trailing newline trimmed).
    pub sasl_password_file: Option<PathBuf>,
    /// PEM file of the CA certificates that sign the brokers' certificates (`ssl.ca.location`);
    /// unset: the system's trust store. Only with `ssl` or `sasl_ssl`.
    pub ssl_ca_file: Option<PathBuf>,
    /// Raw librdkafka properties for everything else (`[kafka.librdkafka_options]`, e.g.
    /// `"client.rack" = "eu-1a"`), applied last; checked by librdkafka at start. Properties `rum`
    /// sets itself are refused (see `rum-kafka`).
    pub librdkafka_options: LibrdkafkaOptions,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:9092".into(),
            topic: BEACONS_TOPIC.into(),
            dlq_topic: DLQ_TOPIC.into(),
            security_protocol: SecurityProtocol::Plaintext,
            sasl_mechanism: None,
            sasl_username: None,
            sasl_password: None,
            sasl_password_file: None,
            ssl_ca_file: None,
            librdkafka_options: LibrdkafkaOptions::default(),
        }
    }
}

impl KafkaConfig {
    /// Checks every value (and reads the password file and the CA file); the error names the key.
    /// The librdkafka options are checked by `rum-kafka`, which links librdkafka.
    pub fn validate(&self) -> Result<(), ConfigError> {
        require_non_empty("kafka.brokers", &self.brokers)?;
        for broker in self.brokers.split(',') {
            let broker = broker.trim();
            let port_ok = broker.rsplit_once(':').is_some_and(|(host, port)| {
                !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
            });
            if !port_ok {
                return Err(ConfigError::new(
                    "kafka.brokers",
                    format!("`{broker}` is not host:port"),
                ));
            }
        }
        require_non_empty("kafka.topic", &self.topic)?;
        require_non_empty("kafka.dlq_topic", &self.dlq_topic)?;
        if self.topic == self.dlq_topic {
            return Err(ConfigError::new(
                "kafka.dlq_topic",
                "must differ from kafka.topic",
            ));
        }
        self.validate_security()?;
        self.sasl_password()?;
        Ok(())
    }

    /// The SASL settings are all there with SASL, and none is set without it (a setting that
    /// would be ignored is an error); the CA file only with TLS, and readable.
    fn validate_security(&self) -> Result<(), ConfigError> {
        let protocol = self.security_protocol;
        let without = |key: &str, what: &str| {
            ConfigError::new(
                key,
                format!("is set but kafka.security_protocol is {protocol}, without {what}"),
            )
        };
        if protocol.uses_sasl() {
            if self.sasl_mechanism.is_none() {
                return Err(ConfigError::new(
                    "kafka.sasl_mechanism",
                    format!(
                        "required with kafka.security_protocol {protocol}: one of {}",
                        SaslMechanism::NAMES.join(", ")
                    ),
                ));
            }
            match &self.sasl_username {
                None => {
                    return Err(ConfigError::new(
                        "kafka.sasl_username",
                        format!("required with kafka.security_protocol {protocol}"),
                    ))
                }
                Some(user) => require_non_empty("kafka.sasl_username", user)?,
            }
            match (self.sasl_password_value(), &self.sasl_password_file) {
                (Some(_), Some(_)) => {
                    return Err(ConfigError::new(
                        "kafka.sasl_password_file",
                        "set together with kafka.sasl_password: set one of them",
                    ))
                }
                (None, None) => {
                    return Err(ConfigError::new(
                        "kafka.sasl_password",
                        format!("required with kafka.security_protocol {protocol} (or kafka.sasl_password_file)"),
                    ))
                }
                _ => {}
            }
        } else {
            let sasl_keys = [
                ("kafka.sasl_mechanism", self.sasl_mechanism.is_some()),
                ("kafka.sasl_username", self.sasl_username.is_some()),
                ("kafka.sasl_password", self.sasl_password_value().is_some()),
                (
                    "kafka.sasl_password_file",
                    self.sasl_password_file.is_some(),
                ),
            ];
            if let Some((key, _)) = sasl_keys.iter().find(|(_, set)| *set) {
                return Err(without(key, "SASL"));
            }
        }
        if let Some(ca_file) = &self.ssl_ca_file {
            if !protocol.uses_tls() {
                return Err(without("kafka.ssl_ca_file", "TLS"));
            }
            require_readable_file("kafka.ssl_ca_file", ca_file)?;
        }
        Ok(())
    }

    /// `kafka.sasl_password` unless empty: an empty value counts as unset (as
    /// `clickhouse.password`), so that `RUM_KAFKA_SASL_PASSWORD=` leaves the file in charge.
    fn sasl_password_value(&self) -> Option<&Secret> {
        self.sasl_password.as_ref().filter(|p| !p.is_empty())
    }

    /// The SASL password: the value, or the file's content (read now). `None` without SASL.
    pub fn sasl_password(&self) -> Result<Option<Secret>, ConfigError> {
        if !self.security_protocol.uses_sasl() {
            return Ok(None);
        }
        match (self.sasl_password_value(), &self.sasl_password_file) {
            (Some(password), _) => Ok(Some(password.clone())),
            (None, Some(path)) => Secret::from_file("kafka.sasl_password_file", path).map(Some),
            (None, None) => Ok(None),
        }
    }
}

/// The names of an enum of the config, which are also librdkafka's: `NAMES`, `as_str`, `Display`,
/// and `FromStr`/`Deserialize` in any case (as librdkafka: `SASL_SSL` works too), an unknown name
/// listing the choices.
macro_rules! librdkafka_names {
    ($type:ident { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl $type {
            /// The config's names, which are also librdkafka's.
            pub const NAMES: &'static [&'static str] = &[$($name),+];

            /// librdkafka's value.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($type::$variant => $name),+
                }
            }
        }

        impl std::fmt::Display for $type {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $type {
            type Err = String;

            fn from_str(s: &str) -> Result<Self, String> {
                [$($type::$variant),+]
                    .into_iter()
                    .find(|value| value.as_str().eq_ignore_ascii_case(s.trim()))
                    .ok_or_else(|| format!("`{s}` is not one of {}", Self::NAMES.join(", ")))
            }
        }

        impl<'de> Deserialize<'de> for $type {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                String::deserialize(deserializer)?
                    .parse()
                    .map_err(serde::de::Error::custom)
            }
        }
    };
}

/// `kafka.security_protocol`: whether the connections use TLS, SASL, both or neither.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SecurityProtocol {
    /// No TLS, no authentication (a broker on a private network, the local stack).
    #[default]
    Plaintext,
    /// TLS, no SASL (the broker may still ask for a client certificate: see the librdkafka options).
    Ssl,
    /// SASL without TLS: a PLAIN password crosses the network in clear.
    SaslPlaintext,
    /// SASL over TLS: what managed Kafka services require.
    SaslSsl,
}

librdkafka_names!(SecurityProtocol {
    Plaintext => "plaintext",
    Ssl => "ssl",
    SaslPlaintext => "sasl_plaintext",
    SaslSsl => "sasl_ssl",
});

impl SecurityProtocol {
    /// True for `sasl_plaintext` and `sasl_ssl`.
    pub fn uses_sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }

    /// True for `ssl` and `sasl_ssl`.
    pub fn uses_tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }
}

/// `kafka.sasl_mechanism`: how the SASL user proves who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaslMechanism {
    /// The password itself is sent (use it over TLS only).
    Plain,
    /// Salted challenge-response (RFC 7677); the password never crosses the network.
    ScramSha256,
    /// As SCRAM-SHA-256, with SHA-512.
    ScramSha512,
}

librdkafka_names!(SaslMechanism {
    Plain => "PLAIN",
    ScramSha256 => "SCRAM-SHA-256",
    ScramSha512 => "SCRAM-SHA-512",
});

/// Raw librdkafka properties (`[kafka.librdkafka_options]`), by name. Values may be written as
/// strings, numbers or booleans; librdkafka gets their text. `Debug` hides the values of
/// properties that hold secrets (passwords, keys, tokens).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct LibrdkafkaOptions(pub BTreeMap<String, String>);

impl LibrdkafkaOptions {
    /// The properties in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// True when no property is set.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// True for a property whose value must not be shown (librdkafka's `_RK_SENSITIVE` ones and
    /// anything named like a secret).
    pub fn is_sensitive(name: &str) -> bool {
        [
            "password",
            "secret",
            "key",
            "pem",
            "oauthbearer.config",
            "username",
        ]
        .iter()
        .any(|part| name.contains(part))
    }
}

impl std::fmt::Debug for LibrdkafkaOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.iter().map(|(k, v)| {
                (
                    k,
                    if Self::is_sensitive(k) {
                        crate::config::REDACTED
                    } else {
                        v
                    },
                )
            }))
            .finish()
    }
}

impl<'de> Deserialize<'de> for LibrdkafkaOptions {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Scalar {
            Text(String),
            Integer(i64),
            Float(f64),
            Flag(bool),
        }
        let raw = BTreeMap::<String, Scalar>::deserialize(deserializer)?;
        Ok(LibrdkafkaOptions(
            raw.into_iter()
                .map(|(k, v)| {
                    let text = match v {
                        Scalar::Text(s) => s,
                        Scalar::Integer(n) => n.to_string(),
                        Scalar::Float(x) => x.to_string(),
                        Scalar::Flag(b) => b.to_string(),
                    };
                    (k, text)
                })
                .collect(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_brokers(brokers: &str) -> KafkaConfig {
        KafkaConfig {
            brokers: brokers.into(),
            ..KafkaConfig::default()
        }
    }

    #[test]
    fn accepts_a_list_of_brokers() {
        assert!(with_brokers("127.0.0.1:9092, kafka-2:9093")
            .validate()
            .is_ok());
    }

    #[test]
    fn rejects_empty_brokers_naming_the_key() {
        let err = with_brokers(" ").validate().unwrap_err();
        assert_eq!(err.to_string(), "kafka.brokers: must not be empty");
    }

    #[test]
    fn rejects_a_broker_without_a_port() {
        let err = with_brokers("localhost").validate().unwrap_err();
        assert_eq!(err.key, "kafka.brokers");
        let err = with_brokers("localhost:99999").validate().unwrap_err();
        assert_eq!(err.key, "kafka.brokers");
    }
    fn sasl_ssl() -> KafkaConfig {
        KafkaConfig {
            security_protocol: SecurityProtocol::SaslSsl,
            sasl_mechanism: Some(SaslMechanism::ScramSha256),
            sasl_username: Some("rum".into()),
            sasl_password: Some(Secret::new("s3cret-pw")),
            ..KafkaConfig::default()
        }
    }

    fn temp_file(name: &str, content: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("rum-kafka-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, content).unwrap();
        path
    }

    #[test]
    fn reads_protocols_and_mechanisms_in_any_case_and_names_the_choices() {
        let c: KafkaConfig = serde_json::from_str(
            r#"{"security_protocol":"SASL_SSL","sasl_mechanism":"scram-sha-512"}"#,
        )
        .unwrap();
        assert_eq!(c.security_protocol, SecurityProtocol::SaslSsl);
        assert_eq!(c.sasl_mechanism, Some(SaslMechanism::ScramSha512));
        let err = serde_json::from_str::<KafkaConfig>(r#"{"security_protocol":"tls"}"#)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`tls` is not one of plaintext, ssl, sasl_plaintext, sasl_ssl"),
            "{err}"
        );
        let err = serde_json::from_str::<KafkaConfig>(r#"{"sasl_mechanism":"GSSAPI"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("PLAIN, SCRAM-SHA-256, SCRAM-SHA-512"), "{err}");
    }

    #[test]
    fn sasl_needs_a_mechanism_a_user_and_exactly_one_password() {
        sasl_ssl().validate().unwrap();
        let no_mechanism = KafkaConfig {
            sasl_mechanism: None,
            ..sasl_ssl()
        };
        assert_eq!(
            no_mechanism.validate().unwrap_err().key,
            "kafka.sasl_mechanism"
        );
        let no_user = KafkaConfig {
            sasl_username: None,
            ..sasl_ssl()
        };
        assert_eq!(no_user.validate().unwrap_err().key, "kafka.sasl_username");
        let no_password = KafkaConfig {
            sasl_password: None,
            ..sasl_ssl()
        };
        assert_eq!(
            no_password.validate().unwrap_err().key,
            "kafka.sasl_password"
        );
        let both = KafkaConfig {
            sasl_password_file: Some(temp_file("both", "pw\n")),
            ..sasl_ssl()
        };
        let err = both.validate().unwrap_err();
        assert_eq!(err.key, "kafka.sasl_password_file");
        assert!(err.reason.contains("one of them"), "{err}");
    }

    #[test]
    fn an_empty_password_counts_as_unset() {
        let empty_and_file = KafkaConfig {
            sasl_password: Some(Secret::new("")),
            sasl_password_file: Some(temp_file("empty-and-file", "from-file\n")),
            ..sasl_ssl()
        };
        empty_and_file.validate().unwrap();
        assert_eq!(
            empty_and_file.sasl_password().unwrap().unwrap().expose(),
            "from-file"
        );
        let empty_alone = KafkaConfig {
            sasl_password: Some(Secret::new("")),
            ..sasl_ssl()
        };
        let err = empty_alone.validate().unwrap_err();
        assert_eq!(err.key, "kafka.sasl_password");
        assert!(err.reason.starts_with("required"), "{err}");
        let empty_without_sasl = KafkaConfig {
            security_protocol: SecurityProtocol::Ssl,
            sasl_mechanism: None,
            sasl_username: None,
            sasl_password: Some(Secret::new("")),
            ..sasl_ssl()
        };
        empty_without_sasl.validate().unwrap();
    }

    #[test]
    fn the_password_file_is_read_at_start_without_its_newline() {
        let from_file = KafkaConfig {
            sasl_password: None,
            sasl_password_file: Some(temp_file("password", "from-file\n")),
            ..sasl_ssl()
        };
        from_file.validate().unwrap();
        assert_eq!(
            from_file.sasl_password().unwrap().unwrap().expose(),
            "from-file"
        );
        let missing = KafkaConfig {
            sasl_password: None,
            sasl_password_file: Some("/nonexistent/rum-password".into()),
            ..sasl_ssl()
        };
        let err = missing.validate().unwrap_err();
        assert_eq!(
            err.to_string(),
            "kafka.sasl_password_file: cannot read /nonexistent/rum-password: not found"
        );
    }

    #[test]
    fn a_setting_that_the_protocol_would_ignore_is_an_error() {
        let sasl_on_plaintext = KafkaConfig {
            security_protocol: SecurityProtocol::Plaintext,
            ..sasl_ssl()
        };
        let err = sasl_on_plaintext.validate().unwrap_err();
        assert_eq!(err.key, "kafka.sasl_mechanism");
        assert!(err.reason.contains("plaintext, without SASL"), "{err}");
        let ca_without_tls = KafkaConfig {
            security_protocol: SecurityProtocol::SaslPlaintext,
            ssl_ca_file: Some(temp_file("ca.pem", "x")),
            ..sasl_ssl()
        };
        assert_eq!(
            ca_without_tls.validate().unwrap_err().key,
            "kafka.ssl_ca_file"
        );
    }

    #[test]
    fn a_missing_ca_file_names_the_key() {
        let c = KafkaConfig {
            ssl_ca_file: Some("/nonexistent/ca.pem".into()),
            ..sasl_ssl()
        };
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            "kafka.ssl_ca_file: cannot read /nonexistent/ca.pem: not found"
        );
    }

    #[test]
    fn the_password_never_shows_in_debug_or_errors() {
        let c = sasl_ssl();
        assert!(!format!("{c:?}").contains("s3cret-pw"));
        let bad = KafkaConfig {
            sasl_username: Some(" ".into()),
            ..sasl_ssl()
        };
        assert!(!bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("s3cret-pw"));
        let options: LibrdkafkaOptions = serde_json::from_str(
            r#"{"ssl.key.password":"k3y-pw","client.rack":"eu-1a","fetch.min.bytes":1,"socket.keepalive.enable":true}"#,
        )
        .unwrap();
        let shown = format!("{options:?}");
        assert!(
            !shown.contains("k3y-pw") && shown.contains("eu-1a"),
            "{shown}"
        );
        assert_eq!(options.0["fetch.min.bytes"], "1");
        assert_eq!(options.0["socket.keepalive.enable"], "true");
    }
}
