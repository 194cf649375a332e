-- The worst routes of a site for one metric: p75 per route and device over a time window, highest
-- first, among the route/device pairs with at least a minimum number of samples (a p75 of a handful
-- of page loads is noise). Read from vitals_1m (p75 from the merged sketches, within 0.5%).
--
-- Parameters (the ? placeholders, in order):
--   1. site          String    'shop'
--   2. metric        String    'LCP', 'INP', 'CLS', 'FCP' or 'TTFB'
--   3. window start  DateTime  unix seconds, or 'YYYY-MM-DD hh:mm:ss' in the server's time zone (inclusive)
--   4. window end    DateTime  same (exclusive)
--   5. min samples   UInt64    e.g. 100
--   6. limit         UInt64    how many rows, e.g. 20
--
-- Columns: route, device, p75 Float64, samples UInt64, poor_share Float64 (0..1).
-- Runs on ClickHouse 18.16 and current releases (no CTE, no window function).
SELECT
    route,
    device,
    toFloat64(if((sk.1)[idx] = -32768, 0, 2 * pow(1.01005, (sk.1)[idx]) / (1.01005 + 1))) AS p75,
    toUInt64(n) AS samples,
    toFloat64(n_poor / n) AS poor_share
FROM
(
    SELECT
        route,
        device,
        countMerge(samples) AS n,
        sumMerge(poor) AS n_poor,
        sumMapMerge(sketch) AS sk,
        arrayFirstIndex(c -> c >= 0.75 * n, arrayCumSum(sk.2)) AS idx
    FROM vitals_1m
    WHERE site = ? AND metric = ? AND minute >= toDateTime(?) AND minute < toDateTime(?)
    GROUP BY route, device
    HAVING n >= ?
)
ORDER BY p75 DESC, samples DESC, route, device
LIMIT ?
