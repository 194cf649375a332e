-- Exactly once without materialized views between the tables (issue 16). Until now one INSERT into
-- vitals_raw filled vitals_1m and kafka_offsets through views, but a view's failure does not undo the
-- source's insert: a batch could land in vitals_raw and not in vitals_1m, and be inserted again.
-- Now each table is written by its own INSERT and keeps its own record of what it holds:
--   vitals_raw  its rows carry the Kafka topic, topic id, partition and offset of their message;
--   vitals_1m   ledger rows, written in the same INSERT (the same part) as the rollup rows of a batch:
--               site = '' (never a real site), metric = the Kafka topic id ('' when unknown),
--               route = the Kafka topic, device = the partition, minute = the start of the batch's day,
--               ledger = the next offset to write (maxState). Every other aggregate of them is empty.
-- The consumer reads both back after any failure (see consumers/src/ownership.rs).
--
-- Stop the old consumers before running this migration: the seed below takes the floors of
-- kafka_offsets as they are when the views are dropped.
--
-- 18.16 has no ADD COLUMN IF NOT EXISTS: rum migrate skips an ADD COLUMN whose column exists.
ALTER TABLE vitals_raw ADD COLUMN kafka_topic_id String DEFAULT '' AFTER kafka_topic;
ALTER TABLE vitals_1m ADD COLUMN ledger AggregateFunction(max, UInt64);

-- The rollup's entry: rows written here are not stored (Null engine); the one view below turns each
-- INSERT into one block of vitals_1m (rollup rows and ledger rows together), or fails whole.
-- kafka_partition routes the rows to their shard in cluster mode.
CREATE TABLE IF NOT EXISTS vitals_1m_input
(
    received_at DateTime,
    site String,
    route String,
    device String,
    metric String,
    value Float64,
    rating String,
    sample_rate Float64,
    kafka_partition UInt32,
    ledger_next UInt64
)
ENGINE = Null;

-- The floors the old views kept, as the ledger of vitals_1m (max is idempotent: running this twice
-- changes nothing).
INSERT INTO vitals_1m (minute, site, route, device, metric, ledger)
SELECT toStartOfMonth(now()), '', kafka_topic, toString(kafka_partition), '', maxState(next)
FROM
(
    SELECT kafka_topic, kafka_partition, toUInt64(maxMerge(max_offset) + 1) AS next
    FROM kafka_offsets
    GROUP BY kafka_topic, kafka_partition
)
GROUP BY kafka_topic, kafka_partition;

DROP TABLE IF EXISTS kafka_offsets_mv;
DROP TABLE IF EXISTS vitals_1m_mv;

-- Rollup rows (site != '') count their samples; ledger rows (site = '') only carry ledger_next.
-- Keep the sketch's gamma in step with rum_clickhouse::sketch (002_vitals_1m.sql explains it).
CREATE MATERIALIZED VIEW IF NOT EXISTS vitals_1m_rollup TO vitals_1m AS
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
FROM vitals_1m_input
GROUP BY minute, site, route, device, metric;
