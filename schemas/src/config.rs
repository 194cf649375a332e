//! The one error shape of configuration checks (the key that is wrong and why), the checks shared by
//! every section, and [`Secret`], a password that is never shown.

/// A configuration value that cannot be used. Displayed as `key: reason`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct ConfigError {
    /// The dotted key as written in the TOML file, e.g. `kafka.brokers`.
    pub key: String,
    /// What is wrong with the value, in a few words.
    pub reason: String,
}

impl ConfigError {
    /// A new error for `key`.
    pub fn new(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

/// Fails with `key: must not be empty` when `value` is empty or blank.
pub fn require_non_empty(key: &str, value: &str) -> Result<(), ConfigError> {
    if value.trim().is_empty() {
        return Err(ConfigError::new(key, "must not be empty"));
    }
    Ok(())
}

/// Fails when `value` is zero.
pub fn require_positive(key: &str, value: u64) -> Result<(), ConfigError> {
    if value == 0 {
        return Err(ConfigError::new(key, "must be greater than 0"));
    }
    Ok(())
}

/// What [`Secret`]'s `Debug` and `Display` print instead of the value.
pub const REDACTED: &str = "[redacted]";

/// A password or other secret from the config: used, never shown. `Debug` and `Display` print
/// [`REDACTED`], and a value of the wrong type is refused without echoing it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value itself, for the one place that hands it to a client library.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// True for an empty secret (no password).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Reads a secret from a file at start: the whole file, one trailing newline (`\n` or `\r\n`)
    /// trimmed, as `echo secret > file` writes it. Errors name `key` and the path, never the content.
    pub fn from_file(key: &str, path: &std::path::Path) -> Result<Secret, ConfigError> {
        let mut value = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::new(
                key,
                format!("cannot read {}: {}", path.display(), io_reason(&e)),
            )
        })?;
        if value.ends_with('\n') {
            value.pop();
            if value.ends_with('\r') {
                value.pop();
            }
        }
        if value.is_empty() {
            return Err(ConfigError::new(
                key,
                format!("{} is empty", path.display()),
            ));
        }
        Ok(Secret(value))
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Secret(value.to_string())
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(REDACTED)
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(REDACTED)
    }
}

impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SecretVisitor;
        impl serde::de::Visitor<'_> for SecretVisitor {
            type Value = Secret;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Secret, E> {
                Ok(Secret(v.to_string()))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Secret, E> {
                Ok(Secret(v))
            }
            // serde's default message quotes the value ("found integer `1234`"): not for secrets.
            fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Secret, E> {
                Err(E::custom(NOT_A_STRING))
            }
            fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Secret, E> {
                Err(E::custom(NOT_A_STRING))
            }
            fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Secret, E> {
                Err(E::custom(NOT_A_STRING))
            }
            fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Secret, E> {
                Err(E::custom(NOT_A_STRING))
            }
        }
        // `any`, so that a number reaches the visitor (whose error does not quote it) rather than
        // the deserializer's own "invalid type" message, which would.
        deserializer.deserialize_any(SecretVisitor)
    }
}

const NOT_A_STRING: &str = "a secret must be a string (quote it in TOML)";

/// An I/O error's reason without the OS's error code, e.g. `No such file or directory`.
pub fn io_reason(error: &std::io::Error) -> String {
    match error.kind() {
        std::io::ErrorKind::NotFound => "not found".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => error.to_string(),
    }
}

/// Fails unless `path` is a file this process can read (read at start, so a missing or
/// unreadable file stops the process then, not at the first connection).
pub fn require_readable_file(key: &str, path: &std::path::Path) -> Result<(), ConfigError> {
    if path.as_os_str().is_empty() {
        return Err(ConfigError::new(key, "is empty: a path, or unset"));
    }
    std::fs::File::open(path)
        .and_then(|file| {
            if file.metadata()?.is_dir() {
                return Err(std::io::Error::other("is a directory"));
            }
            Ok(())
        })
        .map_err(|e| {
            ConfigError::new(
                key,
                format!("cannot read {}: {}", path.display(), io_reason(&e)),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_never_shows_its_value() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret:?}"), REDACTED);
        assert_eq!(secret.to_string(), REDACTED);
        assert_eq!(secret.expose(), "hunter2");
    }

    #[test]
    fn a_secret_of_the_wrong_type_is_refused_without_echoing_it() {
        let err = serde_json::from_str::<Secret>("918273645").unwrap_err();
        assert!(!err.to_string().contains("918273645"), "{err}");
        assert!(err.to_string().contains("must be a string"), "{err}");
        assert_eq!(
            serde_json::from_str::<Secret>("\"0123\"").unwrap().expose(),
            "0123"
        );
    }

    #[test]
    fn a_secret_file_loses_one_trailing_newline_only() {
        let dir = std::env::temp_dir().join(format!("rum-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("password");
        for (content, expected) in [
            ("s3cret\n", "s3cret"),
            ("s3cret\r\n", "s3cret"),
            ("s3cret", "s3cret"),
            (" s3cret \n\n", " s3cret \n"),
        ] {
            std::fs::write(&path, content).unwrap();
            assert_eq!(Secret::from_file("k", &path).unwrap().expose(), expected);
        }
        std::fs::write(&path, "\n").unwrap();
        let err = Secret::from_file("kafka.sasl_password_file", &path).unwrap_err();
        assert_eq!(err.key, "kafka.sasl_password_file");
        assert!(err.reason.ends_with("is empty"), "{err}");
        let err = Secret::from_file("k", &dir.join("missing")).unwrap_err();
        assert!(err.reason.ends_with("not found"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_readable_file_is_required_not_a_directory_or_a_missing_path() {
        let dir = std::env::temp_dir();
        let err = require_readable_file("kafka.ssl_ca_file", &dir).unwrap_err();
        assert_eq!(err.key, "kafka.ssl_ca_file");
        assert!(err.reason.contains("is a directory"), "{err}");
        let err = require_readable_file("k", &dir.join("rum-no-such-file.pem")).unwrap_err();
        assert!(err.reason.ends_with("not found"), "{err}");
        assert!(require_readable_file("k", std::path::Path::new("")).is_err());
    }
}
