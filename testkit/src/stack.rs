//! The versions and names shared with the scripts: `deploy/local/stack.env`, read at compile time.

const STACK_ENV: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../deploy/local/stack.env"
));

/// The value of `KEY=VALUE` in `deploy/local/stack.env`; panics naming the key when it is missing.
pub fn stack_value(key: &str) -> &'static str {
    STACK_ENV
        .lines()
        .map(str::trim)
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| line.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("{key} is not set in deploy/local/stack.env"))
}

/// The pinned Apache Kafka version (`RUM_KAFKA_VERSION`).
pub fn kafka_version() -> &'static str {
    stack_value("RUM_KAFKA_VERSION")
}

/// The beacons topic and its partitions.
pub fn beacons_topic() -> (&'static str, u32) {
    topic("RUM_KAFKA_TOPIC")
}

/// The dead-letter topic and its partitions.
pub fn dlq_topic() -> (&'static str, u32) {
    topic("RUM_KAFKA_DLQ_TOPIC")
}

fn topic(key: &str) -> (&'static str, u32) {
    let partitions_key = format!("{key}_PARTITIONS");
    let partitions = stack_value(&partitions_key)
        .parse()
        .unwrap_or_else(|e| panic!("{partitions_key} in deploy/local/stack.env: {e}"));
    (stack_value(key), partitions)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_pinned_versions_and_topics() {
        assert!(kafka_version().starts_with("4."), "{}", kafka_version());
        assert_eq!(beacons_topic(), ("rum.beacons.v1", 4));
        assert_eq!(dlq_topic(), ("rum.beacons.dlq.v1", 1));
    }

    #[test]
    #[should_panic(expected = "RUM_NOT_THERE is not set in deploy/local/stack.env")]
    fn a_missing_key_names_itself() {
        stack_value("RUM_NOT_THERE");
    }
}
