-- How page loads of a site are rated, per metric and device over a time window (all routes together):
-- the shares of good / needs-improvement / poor samples, the sample count, the estimated number of
-- page loads behind them (each sample weighs 1 / sample_rate), and the p75 (from the merged sketches,
-- within 0.5%). Read from vitals_1m.
--
-- Parameters (the ? placeholders, in order):
--   1. site          String    'shop'
--   2. window start  DateTime  unix seconds, or 'YYYY-MM-DD hh:mm:ss' in the server's time zone (inclusive)
--   3. window end    DateTime  same (exclusive)
--
-- Columns: metric, device, samples UInt64, estimated_page_loads Float64, good_share,
-- needs_improvement_share, poor_share Float64 (0..1), p75 Float64.
-- Runs on ClickHouse 18.16 and current releases (no CTE, no window function).
SELECT
    metric,
    device,
    toUInt64(n) AS samples,
    toFloat64(weighted) AS estimated_page_loads,
    toFloat64(n_good / n) AS good_share,
    toFloat64(n_needs_improvement / n) AS needs_improvement_share,
    toFloat64(n_poor / n) AS poor_share,
    toFloat64(if((sk.1)[idx] = -32768, 0, 2 * pow(1.01005, (sk.1)[idx]) / (1.01005 + 1))) AS p75
FROM
(
    SELECT
        metric,
        device,
        countMerge(samples) AS n,
        sumMerge(weighted_samples) AS weighted,
        sumMerge(good) AS n_good,
        sumMerge(needs_improvement) AS n_needs_improvement,
        sumMerge(poor) AS n_poor,
        sumMapMerge(sketch) AS sk,
        arrayFirstIndex(c -> c >= 0.75 * n, arrayCumSum(sk.2)) AS idx
    FROM vitals_1m
    WHERE site = ? AND minute >= toDateTime(?) AND minute < toDateTime(?)
    GROUP BY metric, device
)
ORDER BY metric, device
