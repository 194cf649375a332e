//! The librdkafka context of the consumer's side clients: the start's check of the dead-letter
//! topic and the lag reader. They talk to the same brokers as the consumer, whose own client
//! reports a broker that is down, a wrong password or an untrusted certificate at error level
//! (once, then once a minute): the side clients' reports of the same failure are warnings, so an
//! operator reads each failure once as an error. Their last error is kept for a caller that stops
//! on it (the check does not wait out its timeout on a refused password).

use std::sync::{Arc, Mutex};

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rum_kafka::KafkaLog;

/// Logs like `rum_kafka::LoggingContext`, errors as warnings; remembers the last error.
pub(crate) struct SideContext {
    log: KafkaLog,
    last_error: LastError,
}

impl SideContext {
    /// A context for the side client named `client`.
    pub(crate) fn new(client: &'static str) -> Self {
        Self {
            log: KafkaLog::new(client),
            last_error: LastError::default(),
        }
    }

    /// A handle on the last error, which stays readable once the context is inside a client.
    pub(crate) fn last_error(&self) -> LastError {
        self.last_error.clone()
    }
}

impl ClientContext for SideContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        self.log.log(level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if let Some(code) = error.rdkafka_error_code() {
            self.last_error.set(code);
        }
        // A warning, each distinct failure once (then once a minute), as librdkafka's warnings.
        self.log.log(
            RDKafkaLogLevel::Warning,
            "ERR",
            &format!("kafka: {reason} ({error})"),
        );
    }
}

impl ConsumerContext for SideContext {}

/// The last client-wide error librdkafka reported to a [`SideContext`].
#[derive(Clone, Default)]
pub(crate) struct LastError(Arc<Mutex<Option<RDKafkaErrorCode>>>);

impl LastError {
    /// The error's code, if any came.
    pub(crate) fn get(&self) -> Option<RDKafkaErrorCode> {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps `code`, unless it is "all brokers down", which follows the error that says why.
    fn set(&self, code: RDKafkaErrorCode) {
        if code != RDKafkaErrorCode::AllBrokersDown {
            *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(code);
        }
    }

    /// True for an error that retrying does not cure: the credentials or the certificate.
    pub(crate) fn refused(&self) -> bool {
        matches!(
            self.get(),
            Some(
                RDKafkaErrorCode::Authentication
                    | RDKafkaErrorCode::SaslAuthenticationFailed
                    | RDKafkaErrorCode::SSL
            )
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_the_last_error_and_whether_retrying_cures_it() {
        let context = SideContext::new("test");
        let last = context.last_error();
        assert_eq!(last.get(), None);
        context.error(
            KafkaError::Global(RDKafkaErrorCode::BrokerTransportFailure),
            "connection refused",
        );
        assert!(!last.refused());
        context.error(
            KafkaError::Global(RDKafkaErrorCode::Authentication),
            "SASL authentication error",
        );
        context.error(
            KafkaError::Global(RDKafkaErrorCode::AllBrokersDown),
            "1/1 brokers are down",
        );
        assert!(last.refused(), "all brokers down follows the refusal");
        assert_eq!(last.get(), Some(RDKafkaErrorCode::Authentication));
    }
}
