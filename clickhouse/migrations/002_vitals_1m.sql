-- Per minute (of the ingest's received_at), site, route, device and metric: sample counts, the
-- sample-rate-weighted count, Google's three ratings, and a mergeable quantile sketch.
--
-- The sketch is DDSketch's log-bucket map: a value v > 0 lands in bucket ceil(log(v) / log(gamma))
-- with gamma = 1.01005 (relative accuracy 0.5%); 0 lands in bucket -32768. Buckets merge by
-- adding counts (sumMap), so p75 over any window and grouping is one query (clickhouse/queries/),
-- within 0.5% of the exact nearest-rank p75. Keep gamma in step with rum_clickhouse::sketch.
--
-- Rows come only from the materialized view below, in the same INSERT as vitals_raw: a batch lands
-- in both tables or in neither.
CREATE TABLE IF NOT EXISTS vitals_1m
(
    minute DateTime,
    site String,
    route String,
    device String,
    metric String,
    samples AggregateFunction(count),
    weighted_samples AggregateFunction(sum, Float64),
    good AggregateFunction(sum, UInt64),
    needs_improvement AggregateFunction(sum, UInt64),
    poor AggregateFunction(sum, UInt64),
    sketch AggregateFunction(sumMap, Array(Int16), Array(UInt64))
)
ENGINE = AggregatingMergeTree()
PARTITION BY toYYYYMM(minute)
ORDER BY (site, metric, route, device, minute);

CREATE MATERIALIZED VIEW IF NOT EXISTS vitals_1m_mv TO vitals_1m AS
SELECT
    toStartOfMinute(received_at) AS minute,
    site,
    route,
    device,
    metric,
    countState() AS samples,
    sumState(1 / sample_rate) AS weighted_samples,
    sumState(toUInt64(rating = 'good')) AS good,
    sumState(toUInt64(rating = 'needs-improvement')) AS needs_improvement,
    sumState(toUInt64(rating = 'poor')) AS poor,
    sumMapState(
        [toInt16(if(value <= 0, -32768, greatest(-32000, least(32000, ceil(log(value) / log(1.01005))))))],
        [toUInt64(1)]
    ) AS sketch
FROM vitals_raw
GROUP BY minute, site, route, device, metric;
