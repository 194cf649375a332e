//! A topic's id: Kafka (2.8 and later) gives every topic a UUID when it is created, so a topic deleted
//! and created again under the same name, or a broker whose log was wiped, shows a new id. rdkafka
//! 0.39 has no binding for librdkafka's `DescribeTopics`, so this calls it through `rdkafka::bindings`.

use std::ffi::{CStr, CString};
use std::os::raw::c_char;
use std::time::Duration;

use rdkafka::bindings as rd;
use rdkafka::client::{Client, ClientContext};

/// Why the id could not be read.
#[derive(Debug, thiserror::Error)]
pub enum TopicIdError {
    /// The broker answered with an error (e.g. the topic does not exist).
    #[error("describing topic {topic}: {message}")]
    Broker {
        /// The topic.
        topic: String,
        /// librdkafka's message.
        message: String,
    },
    /// No answer in time.
    #[error("describing topic {topic}: no answer within {after:?}")]
    Timeout {
        /// The topic.
        topic: String,
        /// The bound.
        after: Duration,
    },
}

/// The topic's id in base64 (Kafka's own form), or `None` when the brokers keep no ids (before
/// Kafka 2.8, or a mock cluster: the all-zero id). Blocks for at most about `timeout`.
pub fn topic_id<C: ClientContext>(
    client: &Client<C>,
    topic: &str,
    timeout: Duration,
) -> Result<Option<String>, TopicIdError> {
    let name = CString::new(topic).map_err(|_| TopicIdError::Broker {
        topic: topic.into(),
        message: "the name holds a NUL byte".into(),
    })?;
    let timeout_ms = i32::try_from(timeout.as_millis())
        .unwrap_or(i32::MAX)
        .max(1);
    let rk = client.native_ptr();
    // SAFETY: every pointer below is created here, checked for null, used while alive and destroyed
    // once, in reverse order, on every path (the guards). The strings read from the result are copied
    // before the event that owns them is destroyed.
    unsafe {
        let queue = Guard(rd::rd_kafka_queue_new(rk), rd::rd_kafka_queue_destroy);
        let mut names: [*const c_char; 1] = [name.as_ptr()];
        let topics = Guard(
            rd::rd_kafka_TopicCollection_of_topic_names(names.as_mut_ptr(), 1),
            rd::rd_kafka_TopicCollection_destroy,
        );
        let options = Guard(
            rd::rd_kafka_AdminOptions_new(
                rk,
                rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_DESCRIBETOPICS,
            ),
            rd::rd_kafka_AdminOptions_destroy,
        );
        if queue.0.is_null() || topics.0.is_null() || options.0.is_null() {
            return Err(TopicIdError::Broker {
                topic: topic.into(),
                message: "librdkafka could not allocate the request".into(),
            });
        }
        let mut errstr = [0 as c_char; 256];
        rd::rd_kafka_AdminOptions_set_request_timeout(
            options.0,
            timeout_ms,
            errstr.as_mut_ptr(),
            errstr.len(),
        );
        rd::rd_kafka_DescribeTopics(rk, topics.0, options.0, queue.0);
        // The request's own timeout answers first; the extra second only guards against a lost event.
        let event = Guard(
            rd::rd_kafka_queue_poll(queue.0, timeout_ms.saturating_add(1000)),
            rd::rd_kafka_event_destroy,
        );
        if event.0.is_null() {
            return Err(TopicIdError::Timeout {
                topic: topic.into(),
                after: timeout,
            });
        }
        if rd::rd_kafka_event_error(event.0) != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
        {
            return Err(TopicIdError::Broker {
                topic: topic.into(),
                message: text(rd::rd_kafka_event_error_string(event.0)),
            });
        }
        let result = rd::rd_kafka_event_DescribeTopics_result(event.0);
        if result.is_null() {
            return Err(TopicIdError::Broker {
                topic: topic.into(),
                message: "unexpected answer".into(),
            });
        }
        let mut count = 0usize;
        let descriptions = rd::rd_kafka_DescribeTopics_result_topics(result, &mut count);
        if descriptions.is_null() || count == 0 {
            return Err(TopicIdError::Broker {
                topic: topic.into(),
                message: "no description in the answer".into(),
            });
        }
        let description = *descriptions;
        let error = rd::rd_kafka_TopicDescription_error(description);
        if !error.is_null()
            && rd::rd_kafka_error_code(error) != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
        {
            return Err(TopicIdError::Broker {
                topic: topic.into(),
                message: text(rd::rd_kafka_error_string(error)),
            });
        }
        let id = rd::rd_kafka_TopicDescription_topic_id(description);
        if id.is_null()
            || (rd::rd_kafka_Uuid_most_significant_bits(id) == 0
                && rd::rd_kafka_Uuid_least_significant_bits(id) == 0)
        {
            return Ok(None);
        }
        Ok(Some(text(rd::rd_kafka_Uuid_base64str(id))))
    }
}

/// Destroys a librdkafka object when dropped.
struct Guard<T>(*mut T, unsafe extern "C" fn(*mut T));

impl<T> Drop for Guard<T> {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: created by the matching librdkafka constructor and destroyed only here.
            unsafe { (self.1)(self.0) }
        }
    }
}

/// Copies a C string owned by librdkafka.
unsafe fn text(ptr: *const c_char) -> String {
    if ptr.is_null() {
        return String::new();
    }
    // SAFETY: librdkafka returns NUL-terminated strings that live as long as their object.
    unsafe { CStr::from_ptr(ptr) }
        .to_string_lossy()
        .into_owned()
}
