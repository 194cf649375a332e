-- The p75 of one metric of a site, hour by hour and per device, over a time window: is it getting
-- better or worse? Optionally for one route only. Read from vitals_1m (p75 from the merged sketches,
-- within 0.5%); hours with no samples are absent.
--
-- Parameters (the ? placeholders, in order):
--   1. site          String    'shop'
--   2. metric        String    'LCP', 'INP', 'CLS', 'FCP' or 'TTFB'
--   3. route         String    a route slug such as 'product-id', or '' for every route
--   4. route         String    the same value again
--   5. window start  DateTime  unix seconds, or 'YYYY-MM-DD hh:mm:ss' in the server's time zone (inclusive)
--   6. window end    DateTime  same (exclusive)
--
-- Columns: hour DateTime (start of the hour, server time zone), device, p75 Float64, samples UInt64.
-- Runs on ClickHouse 18.16 and current releases (no CTE, no window function, no toStartOfInterval).
SELECT
    hour,
    device,
    toFloat64(if((sk.1)[idx] = -32768, 0, 2 * pow(1.01005, (sk.1)[idx]) / (1.01005 + 1))) AS p75,
    toUInt64(n) AS samples
FROM
(
    SELECT
        toStartOfHour(minute) AS hour,
        device,
        countMerge(samples) AS n,
        sumMapMerge(sketch) AS sk,
        arrayFirstIndex(c -> c >= 0.75 * n, arrayCumSum(sk.2)) AS idx
    FROM vitals_1m
    WHERE site = ? AND metric = ? AND (? = '' OR route = ?)
        AND minute >= toDateTime(?) AND minute < toDateTime(?)
    GROUP BY hour, device
)
ORDER BY hour, device
