//! librdkafka's errors and log lines as `tracing` events, each distinct failure once.
//!
//! librdkafka retries a failing connection every `reconnect.backoff.ms` (100 ms at first) and
//! reports each failure: a wrong password or an untrusted certificate would fill the log with the
//! same line. Each kind of failure is logged once at error level, then again at most every
//! [`REPEAT_EVERY`] while it goes on, with the count of the repeats left out ("all brokers are
//! down", which follows the error that says why, is a warning). Events have the target `librdkafka`
//! (`RUM_LOG=info,librdkafka=debug` shows librdkafka's debug lines).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

// Public for `log_through!`.
pub use rdkafka::client::ClientContext;
pub use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::ConsumerContext;
pub use rdkafka::error::KafkaError;
use rdkafka::error::RDKafkaErrorCode;

/// How often a failure that goes on is logged again.
pub const REPEAT_EVERY: Duration = Duration::from_secs(60);

/// Logs one client's librdkafka events. Implement [`ClientContext::error`] and
/// [`ClientContext::log`] of a client's context with it, or use [`LoggingContext`].
#[derive(Debug)]
pub struct KafkaLog {
    /// Which client, in every event (`ingest producer`, `consumer`, ...).
    client: &'static str,
    seen: Mutex<HashMap<String, Seen>>,
}

/// When a kind of event was last logged, and how many were left out since.
#[derive(Debug, Clone, Copy)]
struct Seen {
    logged_at: Instant,
    left_out: u64,
}

impl KafkaLog {
    /// A log for the client named `client`.
    pub fn new(client: &'static str) -> Self {
        Self {
            client,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Some(count of the repeats left out since it was last logged) when the event of `kind`
    /// should be logged now; None when it is a repeat to leave out.
    fn due(&self, kind: &str, now: Instant) -> Option<u64> {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        match seen.get_mut(kind) {
            Some(last) if now.duration_since(last.logged_at) < REPEAT_EVERY => {
                last.left_out += 1;
                None
            }
            Some(last) => {
                let left_out = last.left_out;
                *last = Seen {
                    logged_at: now,
                    left_out: 0,
                };
                Some(left_out)
            }
            None => {
                seen.insert(
                    kind.to_string(),
                    Seen {
                        logged_at: now,
                        left_out: 0,
                    },
                );
                Some(0)
            }
        }
    }

    /// A client-wide error (librdkafka's `error_cb`): a broker unreachable, authentication or
    /// TLS failed, all brokers down. Logged at error level, once per kind of error.
    pub fn error(&self, error: &KafkaError, reason: &str) {
        let kind = match error {
            KafkaError::Global(code) => format!("{code:?}"),
            other => other.to_string(),
        };
        let Some(repeated) = self.due(&kind, Instant::now()) else {
            return;
        };
        let hint = hint(error);
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown) {
            // Follows the error that took the last broker down, which says why.
            tracing::warn!(target: "librdkafka", client = self.client, repeated, "kafka: {reason}");
            return;
        }
        tracing::error!(
            target: "librdkafka",
            client = self.client,
            error = %error,
            repeated,
            "kafka: {reason}{hint}"
        );
    }

    /// A log line of librdkafka. Errors also reach [`KafkaLog::error`], which logs them at error
    /// level: here they are warnings, each distinct message (its numbers aside) once like errors; a broker's failure
    /// (facility `FAIL`) is the same event as the error it reports, so it is a debug line.
    pub fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        let level = if facility == "FAIL" {
            RDKafkaLogLevel::Debug
        } else {
            level
        };
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error
            | RDKafkaLogLevel::Warning => {
                let kind = format!("{level:?} {facility} {}", without_numbers(message));
                if let Some(repeated) = self.due(&kind, Instant::now()) {
                    tracing::warn!(target: "librdkafka", client = self.client, facility, repeated, "{message}");
                }
            }
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "librdkafka", client = self.client, facility, "{message}")
            }
            RDKafkaLogLevel::Debug => {
                tracing::debug!(target: "librdkafka", client = self.client, facility, "{message}")
            }
        }
    }
}

/// A log line with its numbers (counts, milliseconds, ports) as `#`: what tells its repeats apart.
fn without_numbers(message: &str) -> String {
    let mut kind = String::with_capacity(message.len());
    for c in message.chars() {
        if !c.is_ascii_digit() {
            kind.push(c);
        } else if !kind.ends_with('#') {
            kind.push('#');
        }
    }
    kind
}

/// What to check, for the failures a setting of `rum` causes.
fn hint(error: &KafkaError) -> &'static str {
    match error.rdkafka_error_code() {
        Some(RDKafkaErrorCode::Authentication | RDKafkaErrorCode::SaslAuthenticationFailed) => {
            " (check kafka.sasl_mechanism, kafka.sasl_username and the password)"
        }
        Some(RDKafkaErrorCode::SSL) => {
            " (check kafka.ssl_ca_file, and that the broker's certificate names the host in kafka.brokers)"
        }
        _ => "",
    }
}

/// Implements [`ClientContext`] for a context type by handing librdkafka's log lines and errors to
/// its [`KafkaLog`] field: `rum_kafka::log_through!(DeliveryContext, log);`.
#[macro_export]
macro_rules! log_through {
    ($context:ty, $field:tt) => {
        impl $crate::logging::ClientContext for $context {
            fn log(&self, level: $crate::logging::RDKafkaLogLevel, facility: &str, message: &str) {
                self.$field.log(level, facility, message);
            }

            fn error(&self, error: $crate::logging::KafkaError, reason: &str) {
                self.$field.error(&error, reason);
            }
        }
    };
}

/// A context that only logs, for clients that need nothing else (the dead-letter producer, the
/// benchmark's floor consumer).
pub struct LoggingContext(pub KafkaLog);

impl LoggingContext {
    /// A context for the client named `client`.
    pub fn new(client: &'static str) -> Self {
        Self(KafkaLog::new(client))
    }
}

crate::log_through!(LoggingContext, 0);

impl ConsumerContext for LoggingContext {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_failure_is_logged_once_then_once_a_minute_with_its_count() {
        let log = KafkaLog::new("test");
        let start = Instant::now();
        assert_eq!(log.due("Authentication", start), Some(0));
        for i in 1..=600 {
            // Every 100 ms for a minute: librdkafka's reconnection pace.
            let at = start + Duration::from_millis(100 * i);
            if at.duration_since(start) < REPEAT_EVERY {
                assert_eq!(log.due("Authentication", at), None);
            }
        }
        assert_eq!(log.due("Authentication", start + REPEAT_EVERY), Some(599));
        assert_eq!(
            log.due("SSL", start + Duration::from_millis(50)),
            Some(0),
            "another kind of failure is logged at once"
        );
    }

    #[test]
    fn a_second_distinct_warning_of_a_facility_is_logged_and_a_repeat_is_not() {
        let log = KafkaLog::new("test");
        let captured = capture(|| {
            log.log(
                RDKafkaLogLevel::Warning,
                "CONFWARN",
                "Configuration property fetch.min.bytes is a consumer property and will be ignored",
            );
            log.log(
                RDKafkaLogLevel::Warning,
                "CONFWARN",
                "Configuration property queued.min.messages is a consumer property and will be ignored",
            );
            log.log(
                RDKafkaLogLevel::Warning,
                "REQTMOUT",
                "kafka-1:9092/1: Timed out 3 in-flight requests",
            );
            log.log(
                RDKafkaLogLevel::Warning,
                "REQTMOUT",
                "kafka-1:9092/1: Timed out 12 in-flight requests",
            );
        });
        assert!(captured.contains("fetch.min.bytes"), "{captured}");
        assert!(captured.contains("queued.min.messages"), "{captured}");
        assert_eq!(captured.matches("Timed out").count(), 1, "{captured}");
    }

    /// What `f` logs, as text.
    fn capture(f: impl FnOnce()) -> String {
        #[derive(Clone, Default)]
        struct Buffer(std::sync::Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buffer {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        let bytes = buffer.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn authentication_and_tls_failures_say_what_to_check() {
        let auth = KafkaError::Global(RDKafkaErrorCode::Authentication);
        assert!(hint(&auth).contains("kafka.sasl_username"));
        let tls = KafkaError::Global(RDKafkaErrorCode::SSL);
        assert!(hint(&tls).contains("kafka.ssl_ca_file"));
        assert_eq!(
            hint(&KafkaError::Global(RDKafkaErrorCode::AllBrokersDown)),
            ""
        );
    }
}
