-- One row per metric of each accepted beacon, for analysts.
-- kafka_topic/kafka_partition/kafka_offset say which message a row came from: the consumer resumes
-- from them (exactly once), and analysts can audit replays.
-- Partitioned by day so retention is a cheap partition drop on every ClickHouse version.
CREATE TABLE IF NOT EXISTS vitals_raw
(
    received_at DateTime,
    site String,
    route String,
    device String,
    nav_type String,
    metric String,
    value Float64,
    rating String,
    metric_id String,
    sample_rate Float64,
    kafka_topic String,
    kafka_partition UInt32,
    kafka_offset UInt64
)
ENGINE = MergeTree()
PARTITION BY toYYYYMMDD(received_at)
ORDER BY (site, metric, route, device, received_at);
