-- The largest elements behind a site's LCP, per route: for each route, its most frequent LCP elements
-- (the attribution build's CSS selector) with their sample count, the page loads they stand for,
-- their p75 LCP and the mean of LCP's four subparts (which sum to the LCP value): where the time goes
-- for that element (server, waiting to start the resource, loading it, rendering it). Read from
-- vitals_raw (rows sent with attribution only: target != '').
--
-- Parameters (the ? placeholders, in order):
--   1. site          String    'shop'
--   2. window start  DateTime  unix seconds, or 'YYYY-MM-DD hh:mm:ss' in the server's time zone (inclusive)
--   3. window end    DateTime  same (exclusive)
--   4. per route     UInt64    how many elements per route, e.g. 5
--
-- Columns: route, target, samples UInt64, estimated_page_loads Float64, p75 Float64 (ms; each sample
-- weighs 1 / its sample rate, read from a sketch built on the fly: within 0.5%), resource_url (the most frequent; '' for a text element),
-- time_to_first_byte, resource_load_delay, resource_load_duration, element_render_delay
-- Nullable(Float64) (mean ms; NULL when no row sent them). Routes in order, each route's elements
-- by samples, most first.
-- Reads vitals_raw FINAL: one row per metric id, with its final value (migration 007).
-- Runs on ClickHouse 18.16 and current releases (no CTE, no window function).
SELECT
    route,
    target,
    samples,
    estimated_page_loads,
    toFloat64(if((sk.1)[idx] = -32768, 0, 2 * pow(1.01005, (sk.1)[idx]) / (1.01005 + 1))) AS p75,
    resource_url,
    time_to_first_byte,
    resource_load_delay,
    resource_load_duration,
    element_render_delay
FROM
(
    SELECT
        route,
        target,
        count() AS samples,
        sum(1 / sample_rate) AS estimated_page_loads,
        sumMap([bucket], [1 / sample_rate]) AS sk,
        arrayFirstIndex(c -> c >= 0.75 * estimated_page_loads * 0.999999999, arrayCumSum(sk.2)) AS idx,
        arrayElement(topK(1)(resource_url), 1) AS resource_url,
        avg(time_to_first_byte) AS time_to_first_byte,
        avg(resource_load_delay) AS resource_load_delay,
        avg(resource_load_duration) AS resource_load_duration,
        avg(element_render_delay) AS element_render_delay
    FROM
    (
        SELECT
            route, target, sample_rate, resource_url,
            time_to_first_byte, resource_load_delay, resource_load_duration, element_render_delay,
            toInt16(if(value <= 0, -32768, greatest(-32000, least(32000, ceil(log(value) / log(1.01005)))))) AS bucket
        FROM vitals_raw FINAL
        WHERE site = ? AND metric = 'LCP' AND target != ''
            AND received_at >= toDateTime(?) AND received_at < toDateTime(?)
    )
    GROUP BY route, target
)
ORDER BY route, samples DESC, target
LIMIT ? BY route
