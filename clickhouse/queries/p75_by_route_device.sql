-- p75 per route, device and metric of one site over a time window, with the sample count and the
-- shares of Google's ratings (good / needs-improvement / poor) among those samples.
-- Read from the per-minute rollup vitals_1m: p75 comes from the merged sketches (within 0.5% of the
-- exact nearest-rank p75; 0 when at least 75% of the samples are 0, e.g. CLS).
--
-- Parameters (the ? placeholders, in order):
--   1. site          String    'shop'
--   2. window start  DateTime  unix seconds, or 'YYYY-MM-DD hh:mm:ss' in the server's time zone (inclusive)
--   3. window end    DateTime  same (exclusive)
-- A minute counts when it starts inside [start, end).
--
-- Columns: site, route, device, metric, p75 Float64 (ms; unitless for CLS), samples UInt64,
-- good_share, needs_improvement_share, poor_share Float64 (0..1).
-- Runs on ClickHouse 18.16 and current releases (no CTE, no window function).
SELECT
    site,
    route,
    device,
    metric,
    toFloat64(if((sk.1)[idx] = -32768, 0, 2 * pow(1.01005, (sk.1)[idx]) / (1.01005 + 1))) AS p75,
    toUInt64(n) AS samples,
    toFloat64(n_good / n) AS good_share,
    toFloat64(n_needs_improvement / n) AS needs_improvement_share,
    toFloat64(n_poor / n) AS poor_share
FROM
(
    SELECT
        site,
        route,
        device,
        metric,
        countMerge(samples) AS n,
        sumMerge(good) AS n_good,
        sumMerge(needs_improvement) AS n_needs_improvement,
        sumMerge(poor) AS n_poor,
        sumMapMerge(sketch) AS sk,
        arrayFirstIndex(c -> c >= 0.75 * n, arrayCumSum(sk.2)) AS idx
    FROM vitals_1m
    WHERE site = ? AND minute >= toDateTime(?) AND minute < toDateTime(?)
    GROUP BY site, route, device, metric
)
ORDER BY site, route, device, metric
