-- Fences in the server (issue 16). A member that lost its partitions while its INSERT was on the way
-- (paused past the session timeout between its last proof of ownership and the INSERT reaching
-- ClickHouse) must not store what the partition's next owner stored meanwhile. Each row of the write
-- path now carries `fence`: the ledger of its partition that its writer read (the next offset to write,
-- as vitals_1m's ledger rows kept it). Both tables are filled through a Null input table and one view
-- that reads the current ledger of the row's topic, topic id and partition in the same INSERT, and keeps
-- the row only when the ledger has not moved past its fence. A late INSERT finds the ledger its
-- successor advanced and stores nothing; a writer's own next INSERT carries the ledger it wrote.
--
-- Each input table has one view, so each INSERT is still one block of one table (stored whole or not at
-- all). The ledger is read on the server that takes the INSERT (cluster mode: the replica of the
-- partition's shard that takes it).
--
-- The new input tables have new names, so that a consumer of migration 004 still running during the
-- upgrade fails its INSERTs (the old input table is gone) instead of losing them in a Null table
-- without a view.
CREATE TABLE IF NOT EXISTS vitals_raw_input
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
    kafka_topic_id String,
    kafka_partition UInt32,
    kafka_offset UInt64,
    fence UInt64
)
ENGINE = Null;

-- The ledger as the views read it: a partition without one reads 0 (ANY LEFT JOIN's default).
CREATE MATERIALIZED VIEW IF NOT EXISTS vitals_raw_fence TO vitals_raw AS
SELECT
    received_at,
    site,
    route,
    device,
    nav_type,
    metric,
    value,
    rating,
    metric_id,
    sample_rate,
    kafka_topic,
    kafka_topic_id,
    kafka_partition,
    kafka_offset
FROM vitals_raw_input
ANY LEFT JOIN
(
    SELECT route AS kafka_topic, metric AS kafka_topic_id, toUInt32(device) AS kafka_partition, maxMerge(ledger) AS stored_next
    FROM vitals_1m
    WHERE site = ''
    GROUP BY route, metric, device
) AS ledgers USING (kafka_topic, kafka_topic_id, kafka_partition)
WHERE fence >= stored_next;

-- The rollup's input: vitals_1m_input's columns, with the ledger key and the fence of each row.
CREATE TABLE IF NOT EXISTS vitals_1m_fenced_input
(
    received_at DateTime,
    site String,
    route String,
    device String,
    metric String,
    value Float64,
    rating String,
    sample_rate Float64,
    kafka_topic String,
    kafka_topic_id String,
    kafka_partition UInt32,
    fence UInt64,
    ledger_next UInt64
)
ENGINE = Null;

-- vitals_1m_rollup of migration 004, behind the fence. Keep the sketch's gamma in step with
-- rum_clickhouse::sketch (002_vitals_1m.sql explains it).
CREATE MATERIALIZED VIEW IF NOT EXISTS vitals_1m_fence TO vitals_1m AS
SELECT
    toStartOfMinute(received_at) AS minute,
    site,
    route,
    device,
    metric,
    countStateIf(site != '') AS samples,
    sumState(if(site = '', 0, 1 / sample_rate)) AS weighted_samples,
    sumState(toUInt64(site != '' AND rating = 'good')) AS good,
    sumState(toUInt64(site != '' AND rating = 'needs-improvement')) AS needs_improvement,
    sumState(toUInt64(site != '' AND rating = 'poor')) AS poor,
    sumMapState(
        if(site = '', emptyArrayInt16(), [toInt16(if(value <= 0, -32768, greatest(-32000, least(32000, ceil(log(value) / log(1.01005))))))]),
        if(site = '', emptyArrayUInt64(), [toUInt64(1)])
    ) AS sketch,
    maxStateIf(ledger_next, site = '') AS ledger
FROM vitals_1m_fenced_input
ANY LEFT JOIN
(
    SELECT route AS kafka_topic, metric AS kafka_topic_id, toUInt32(device) AS kafka_partition, maxMerge(ledger) AS stored_next
    FROM vitals_1m
    WHERE site = ''
    GROUP BY route, metric, device
) AS ledgers USING (kafka_topic, kafka_topic_id, kafka_partition)
WHERE fence >= stored_next
GROUP BY minute, site, route, device, metric;

DROP TABLE IF EXISTS vitals_1m_input;
DROP TABLE IF EXISTS vitals_1m_rollup;
