-- p75 of one metric of a site by one dimension of the page loads: the browser family, the release, the
-- network's round-trip time bucket, the navigation type, or the device. Each sample weighs 1 / its
-- sample rate, so a site that samples its pages at different rates gets an unbiased p75 (p75) beside
-- the plain p75 of the samples (p75_unweighted). Read from vitals_raw with the sketch of vitals_1m
-- built on the fly (within 0.5% of the weighted nearest rank; 0 when 75% of the weight is on 0).
--
-- Parameters (the ? placeholders, in order):
--   1. dimension     String    'browser', 'release', 'rtt', 'nav_type' or 'device' (another: one row, '')
--   2. site          String    'shop'
--   3. metric        String    'LCP', 'INP', 'CLS', 'FCP' or 'TTFB'
--   4. window start  DateTime  unix seconds, or 'YYYY-MM-DD hh:mm:ss' in the server's time zone (inclusive)
--   5. window end    DateTime  same (exclusive)
--
-- Columns: value (the dimension's value: 'chrome', 'v1.2.3', '100-300', ...), p75 Float64 (weighted),
-- p75_unweighted Float64, samples UInt64, estimated_page_loads Float64, poor_share Float64 (0..1,
-- weighted). By estimated page loads, most first.
-- Reads vitals_raw FINAL: one row per metric id, with its final value (migration 007).
-- Runs on ClickHouse 18.16 and current releases (no CTE, no window function).
SELECT
    value,
    toFloat64(if((wsk.1)[widx] = -32768, 0, 2 * pow(1.01005, (wsk.1)[widx]) / (1.01005 + 1))) AS p75,
    toFloat64(if((sk.1)[idx] = -32768, 0, 2 * pow(1.01005, (sk.1)[idx]) / (1.01005 + 1))) AS p75_unweighted,
    toUInt64(n) AS samples,
    toFloat64(w) AS estimated_page_loads,
    toFloat64(w_poor / w) AS poor_share
FROM
(
    SELECT
        value,
        n,
        w,
        w_poor,
        sk,
        wsk,
        arrayFirstIndex(c -> c >= 0.75 * n, arrayCumSum(sk.2)) AS idx,
        arrayFirstIndex(c -> c >= 0.75 * w * 0.999999999, arrayCumSum(wsk.2)) AS widx
    FROM
    (
        SELECT
            ['', browser, release, rtt, nav_type, device][1 + indexOf(['browser', 'release', 'rtt', 'nav_type', 'device'], ?)] AS value,
            count() AS n,
            sum(1 / sample_rate) AS w,
            sum(if(rating = 'poor', 1 / sample_rate, 0)) AS w_poor,
            sumMap([bucket], [toUInt64(1)]) AS sk,
            sumMap([bucket], [1 / sample_rate]) AS wsk
        FROM
        (
            SELECT
                browser, release, rtt, nav_type, device, rating, sample_rate,
                toInt16(if(value <= 0, -32768, greatest(-32000, least(32000, ceil(log(value) / log(1.01005)))))) AS bucket
            FROM vitals_raw FINAL
            WHERE site = ? AND metric = ? AND received_at >= toDateTime(?) AND received_at < toDateTime(?)
        )
        GROUP BY value
    )
)
ORDER BY estimated_page_loads DESC, value
