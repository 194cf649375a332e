-- The interactions behind a site's INP, per route: for each route, its most frequent INP targets (the
-- element interacted with, as the attribution build's CSS selector) and interaction types, with their
-- sample count, the page loads they stand for, their p75 INP, the mean of INP's three phases (input
-- delay, processing, presentation delay: they sum to the INP value) and the most frequent longest
-- script (its URL without query string, and what invoked it). Read from vitals_raw (rows sent with
-- attribution only: target != '').
--
-- Parameters (the ? placeholders, in order):
--   1. site          String    'shop'
--   2. window start  DateTime  unix seconds, or 'YYYY-MM-DD hh:mm:ss' in the server's time zone (inclusive)
--   3. window end    DateTime  same (exclusive)
--   4. per route     UInt64    how many targets per route, e.g. 5
--
-- Columns: route, target, interaction_type ('pointer', 'keyboard' or 'other'), samples UInt64,
-- estimated_page_loads Float64, p75 Float64 (ms; each sample weighs 1 / its sample rate, read from a
-- sketch built on the fly: within 0.5%), input_delay,
-- processing_duration, presentation_delay Nullable(Float64) (mean ms; NULL when no row sent them),
-- script_url, script_invoker String (the most frequent; '' when none was sent). Routes in order,
-- each route's targets by samples, most first.
-- Reads vitals_raw FINAL: one row per metric id, with its final value (migration 007).
-- Runs on ClickHouse 18.16 and current releases (no CTE, no window function).
SELECT
    route,
    target,
    interaction_type,
    samples,
    estimated_page_loads,
    toFloat64(if((sk.1)[idx] = -32768, 0, 2 * pow(1.01005, (sk.1)[idx]) / (1.01005 + 1))) AS p75,
    input_delay,
    processing_duration,
    presentation_delay,
    script_url,
    script_invoker
FROM
(
    SELECT
        route,
        target,
        interaction_type,
        count() AS samples,
        sum(1 / sample_rate) AS estimated_page_loads,
        sumMap([bucket], [1 / sample_rate]) AS sk,
        arrayFirstIndex(c -> c >= 0.75 * estimated_page_loads * 0.999999999, arrayCumSum(sk.2)) AS idx,
        avg(input_delay) AS input_delay,
        avg(processing_duration) AS processing_duration,
        avg(presentation_delay) AS presentation_delay,
        arrayElement(topK(1)(script_url), 1) AS script_url,
        arrayElement(topK(1)(script_invoker), 1) AS script_invoker
    FROM
    (
        SELECT
            route, target, interaction_type, sample_rate, script_url, script_invoker,
            input_delay, processing_duration, presentation_delay,
            toInt16(if(value <= 0, -32768, greatest(-32000, least(32000, ceil(log(value) / log(1.01005)))))) AS bucket
        FROM vitals_raw FINAL
        WHERE site = ? AND metric = 'INP' AND target != ''
            AND received_at >= toDateTime(?) AND received_at < toDateTime(?)
    )
    GROUP BY route, target, interaction_type
)
ORDER BY route, samples DESC, target, interaction_type
LIMIT ? BY route
