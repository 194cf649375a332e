-- The highest Kafka offset stored per topic and partition, filled by the same INSERT as vitals_raw.
-- The consumer resumes each partition from here (not from Kafka's committed offset), so a crash
-- between its ClickHouse insert and its Kafka commit replays nothing twice.
CREATE TABLE IF NOT EXISTS kafka_offsets
(
    kafka_topic String,
    kafka_partition UInt32,
    max_offset AggregateFunction(max, UInt64)
)
ENGINE = AggregatingMergeTree()
ORDER BY (kafka_topic, kafka_partition);

CREATE MATERIALIZED VIEW IF NOT EXISTS kafka_offsets_mv TO kafka_offsets AS
SELECT kafka_topic, kafka_partition, maxState(kafka_offset) AS max_offset
FROM vitals_raw
GROUP BY kafka_topic, kafka_partition;
