-- One raw row with the final value (issue 17, after 006): vitals_raw becomes a
-- ReplacingMergeTree(revision) whose sorting key ends with the metric id, so the chain of one metric
-- id (its first row and its replacements: same site, metric, route, device, received_at and
-- metric_id, revision 0, 1, 2, ...) collapses to its highest revision. Analysts read
-- `vitals_raw FINAL` (the queries of clickhouse/queries/ do): one row per metric id, with its final
-- value, also before the background merges have run.
-- Rows without an id (metric_id = '') never collapse with each other: their last key term is a hash of
-- their message (topic, topic id, partition, offset), and 0 for rows with an id. Rows that do collapse
-- are the same metric of the same message stored twice (a replay) and are identical: the table now
-- also absorbs replays, and a copy run twice.
--
-- 18.16 cannot change a table's engine or sorting key: a new table, swapped in by RENAME, then the old
-- rows copied into it. The order keeps every row written by consumers running through the migration:
--   1. RENAME first, both names in one statement: from then on every new INSERT lands in the new table.
--      An INSERT into the old table still running holds the RENAME until it ends (18.16 takes the
--      table's lock). One that arrived while the RENAME waited has already found the old table, and
--      writes into it after the RENAME (seen on 18.16). So rum migrate waits out every INSERT running
--      right after the RENAME (on a cluster: on every node) before the copy.
--   2. Then the copy of the old rows. Cut half-way, `rum migrate` runs it again: the rows copied twice
--      are identical (same key, same revision) and collapse. A copy still running on the server (its
--      client gave up) is waited out first, not doubled. On a cluster the replicas of each shard are
--      read until they hold as many rows, then one of them is copied.
-- Meanwhile a consumer may not find in vitals_raw the rows of a message it stored before the RENAME
-- and write them again (consumers/src/ownership.rs, rule 2): identical rows too, collapsing. Its
-- vitals_1m rollup is exact either way (the ledger of vitals_1m decides what is rolled up).
--
-- The old table stays, as vitals_raw_pre007, with its rows: a dropped table cannot come back, and on
-- a current ClickHouse (Atomic databases) a RENAME is not known to wait for running INSERTs (not
-- checked), so rows could reach the old table after the copy read it. Drop it by hand once nothing
-- is missing, e.g. when
--   SELECT count() FROM vitals_raw_pre007 WHERE (received_at, kafka_partition, kafka_offset, metric, metric_id)
--     NOT IN (SELECT received_at, kafka_partition, kafka_offset, metric, metric_id FROM vitals_raw)
-- gives 0, then DROP TABLE vitals_raw_pre007 (on a cluster: rum_local.vitals_raw_pre007 ON CLUSTER).
-- The copy takes time in proportion to the table (clickhouse.request_timeout_ms must cover it).
--
-- rum migrate runs this file again after an interruption: the CREATE is skipped once the RENAME has
-- run (vitals_raw_pre007 exists; IF NOT EXISTS alone would create an empty stray table again), the
-- RENAME is skipped once done, the copy runs again (see 2.). In cluster mode the tables are the local
-- ones of every node (the new one replicated under its own ZooKeeper path, .../vitals_raw_new, which
-- it keeps after the RENAME), rum.vitals_raw (Distributed, same columns) reads the new one by name
-- from the RENAME on, and the copy runs once per shard (see clickhouse/src/cluster.rs).
CREATE TABLE IF NOT EXISTS vitals_raw_new
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
    kafka_topic_id String DEFAULT '',
    kafka_partition UInt32,
    kafka_offset UInt64,
    page_id String DEFAULT '',
    release String DEFAULT '',
    rtt String DEFAULT 'unknown',
    browser String DEFAULT 'unknown',
    browser_major UInt16 DEFAULT 0,
    target String DEFAULT '',
    resource_url String DEFAULT '',
    time_to_first_byte Nullable(Float64) DEFAULT NULL,
    resource_load_delay Nullable(Float64) DEFAULT NULL,
    resource_load_duration Nullable(Float64) DEFAULT NULL,
    element_render_delay Nullable(Float64) DEFAULT NULL,
    interaction_type String DEFAULT '',
    input_delay Nullable(Float64) DEFAULT NULL,
    processing_duration Nullable(Float64) DEFAULT NULL,
    presentation_delay Nullable(Float64) DEFAULT NULL,
    script_url String DEFAULT '',
    script_invoker String DEFAULT '',
    revision UInt32 DEFAULT 0,
    replaces_value Float64 DEFAULT 0,
    replaces_rating String DEFAULT ''
)
ENGINE = ReplacingMergeTree(revision)
PARTITION BY toYYYYMMDD(received_at)
ORDER BY (site, metric, route, device, received_at, metric_id,
          if(metric_id = '', cityHash64(kafka_topic, kafka_topic_id, kafka_partition, kafka_offset), 0));

RENAME TABLE vitals_raw TO vitals_raw_pre007, vitals_raw_new TO vitals_raw;

INSERT INTO vitals_raw (received_at, site, route, device, nav_type, metric, value, rating, metric_id,
    sample_rate, kafka_topic, kafka_topic_id, kafka_partition, kafka_offset, page_id, release, rtt,
    browser, browser_major, target, resource_url, time_to_first_byte, resource_load_delay,
    resource_load_duration, element_render_delay, interaction_type, input_delay, processing_duration,
    presentation_delay, script_url, script_invoker, revision, replaces_value, replaces_rating)
SELECT received_at, site, route, device, nav_type, metric, value, rating, metric_id,
    sample_rate, kafka_topic, kafka_topic_id, kafka_partition, kafka_offset, page_id, release, rtt,
    browser, browser_major, target, resource_url, time_to_first_byte, resource_load_delay,
    resource_load_duration, element_render_delay, interaction_type, input_delay, processing_duration,
    presentation_delay, script_url, script_invoker, revision, replaces_value, replaces_rating
FROM vitals_raw_pre007;
