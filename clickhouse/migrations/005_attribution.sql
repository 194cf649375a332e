-- What a page load says about its cause and its context (issue 17), and sample-rate-weighted rollups.
--
-- vitals_raw gains, per metric row (old rows keep the defaults):
--   page_id        the page load's random id (joins the metrics of one page view; '' when none)
--   release        the site's release string ('' when none)
--   rtt            the bucket of the network's round-trip time: 0-100, 100-300, 300-1000, 1000+, unknown
--   browser        the browser family from the User-Agent (chrome, edge, firefox, safari, samsung, opera,
--                  other, unknown) and browser_major its major version (0: unknown)
--   target         the element behind the metric: LCP its largest element, INP the element interacted
--                  with, CLS the element of the largest shift ('' when not sent)
--   resource_url   LCP: the largest element's resource, without query string and fragment
--   time_to_first_byte, resource_load_delay, resource_load_duration, element_render_delay
--                  LCP's four subparts in ms (they sum to the LCP value); NULL when not sent
--   interaction_type, input_delay, processing_duration, presentation_delay
--                  INP: pointer / keyboard / other, and its three phases in ms; NULL when not sent
--   script_url, script_invoker
--                  INP: the longest script of the interaction (URL without query) and what invoked it
-- The attribution strings are capped per site and route by the ingest (then 'other').
ALTER TABLE vitals_raw ADD COLUMN page_id String DEFAULT '';
ALTER TABLE vitals_raw ADD COLUMN release String DEFAULT '';
ALTER TABLE vitals_raw ADD COLUMN rtt String DEFAULT 'unknown';
ALTER TABLE vitals_raw ADD COLUMN browser String DEFAULT 'unknown';
ALTER TABLE vitals_raw ADD COLUMN browser_major UInt16 DEFAULT 0;
ALTER TABLE vitals_raw ADD COLUMN target String DEFAULT '';
ALTER TABLE vitals_raw ADD COLUMN resource_url String DEFAULT '';
ALTER TABLE vitals_raw ADD COLUMN time_to_first_byte Nullable(Float64) DEFAULT NULL;
ALTER TABLE vitals_raw ADD COLUMN resource_load_delay Nullable(Float64) DEFAULT NULL;
ALTER TABLE vitals_raw ADD COLUMN resource_load_duration Nullable(Float64) DEFAULT NULL;
ALTER TABLE vitals_raw ADD COLUMN element_render_delay Nullable(Float64) DEFAULT NULL;
ALTER TABLE vitals_raw ADD COLUMN interaction_type String DEFAULT '';
ALTER TABLE vitals_raw ADD COLUMN input_delay Nullable(Float64) DEFAULT NULL;
ALTER TABLE vitals_raw ADD COLUMN processing_duration Nullable(Float64) DEFAULT NULL;
ALTER TABLE vitals_raw ADD COLUMN presentation_delay Nullable(Float64) DEFAULT NULL;
ALTER TABLE vitals_raw ADD COLUMN script_url String DEFAULT '';
ALTER TABLE vitals_raw ADD COLUMN script_invoker String DEFAULT '';

-- vitals_1m gains the sample-rate-weighted twins of the rating counts and of the sketch: each sample
-- weighs 1 / sample_rate, so a site sampling its pages at different rates gets unbiased quantiles and
-- shares (weighted_samples existed already). Rows written before this migration get their weighted
-- states from the INSERT below; readers still read a group without any by its unweighted states.
ALTER TABLE vitals_1m ADD COLUMN weighted_good AggregateFunction(sum, Float64);
ALTER TABLE vitals_1m ADD COLUMN weighted_needs_improvement AggregateFunction(sum, Float64);
ALTER TABLE vitals_1m ADD COLUMN weighted_poor AggregateFunction(sum, Float64);
ALTER TABLE vitals_1m ADD COLUMN weighted_sketch AggregateFunction(sumMap, Array(Int16), Array(Float64));

-- Minutes stored before this migration get their weighted states from what they hold: each of their
-- samples weighs the minute's mean weight (weighted_samples / samples, kept since 002), exact when the
-- minute's samples share one sample rate. So a window across the upgrade is weighted throughout.
-- Only minutes without any weighted state are filled: running this again changes nothing.
INSERT INTO vitals_1m (minute, site, route, device, metric, weighted_good, weighted_needs_improvement, weighted_poor, weighted_sketch)
SELECT
    minute,
    site,
    route,
    device,
    metric,
    sumState(n_good * f),
    sumState(n_needs * f),
    sumState(n_poor * f),
    sumMapState(keys, arrayMap(c -> c * f, counts))
FROM
(
    SELECT
        minute,
        site,
        route,
        device,
        metric,
        sumMerge(weighted_samples) / countMerge(samples) AS f,
        toFloat64(sumMerge(good)) AS n_good,
        toFloat64(sumMerge(needs_improvement)) AS n_needs,
        toFloat64(sumMerge(poor)) AS n_poor,
        sumMapMerge(sketch) AS sk,
        tupleElement(sk, 1) AS keys,
        arrayMap(c -> toFloat64(c), tupleElement(sk, 2)) AS counts,
        sumMerge(weighted_good) + sumMerge(weighted_needs_improvement) + sumMerge(weighted_poor) AS w_rated,
        arraySum(tupleElement(sumMapMerge(weighted_sketch), 2)) AS w_sketched
    FROM vitals_1m
    WHERE site != ''
    GROUP BY minute, site, route, device, metric
    HAVING countMerge(samples) > 0 AND w_rated = 0 AND w_sketched = 0
)
GROUP BY minute, site, route, device, metric;

-- The rollup's new entry, vitals_1m_input_v2, beside 004's vitals_1m_input, which stays with its view:
-- a consumer of the version before writes there, and on 18.16 that view no longer fits vitals_1m
-- ("Expected column weighted_good"), so its INSERT fails whole and the consumer retries, storing
-- nothing half-way, until the new version replaces it (a dropped view would let that INSERT store
-- nothing and succeed: a rollup lost). The new entry has the same columns
-- and the previous value of a metric sent again with a new value (its final value replaces the first
-- one): a row with prev_rating != '' adds its value and takes prev_value out of the same group,
-- leaving the sample count as it is. The unweighted counts are UInt64 sums, so "taking out" adds
-- 2^64 - 1, which wraps to -1 in the merged sum (18.16 and current releases alike); sumMap drops a
-- bucket whose count comes back to 0. The writer must send the previous value's row in the same
-- group (minute, site, route, device, metric) as the one it replaces.
--
-- A new table rather than the old one dropped and created again: an INSERT into the old one between
-- the DROP of its view and the CREATE of the new one would have stored nothing. So consumers may run
-- through this migration: the old ones stall (loudly, losing nothing), the new ones write here.
CREATE TABLE IF NOT EXISTS vitals_1m_input_v2
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
    ledger_next UInt64,
    prev_value Float64 DEFAULT 0,
    prev_rating String DEFAULT ''
)
ENGINE = Null;

-- Rollup rows (site != '') count their samples; ledger rows (site = '') only carry ledger_next.
-- Keep the sketch's gamma in step with rum_clickhouse::sketch (002_vitals_1m.sql explains it).
CREATE MATERIALIZED VIEW IF NOT EXISTS vitals_1m_rollup_v2 TO vitals_1m AS
SELECT
    toStartOfMinute(received_at) AS minute,
    site,
    route,
    device,
    metric,
    countStateIf(site != '' AND prev_rating = '') AS samples,
    sumState(if(site = '' OR prev_rating != '', 0, 1 / sample_rate)) AS weighted_samples,
    sumState(toUInt64(toInt64(site != '' AND rating = 'good') - toInt64(prev_rating = 'good'))) AS good,
    sumState(toUInt64(toInt64(site != '' AND rating = 'needs-improvement') - toInt64(prev_rating = 'needs-improvement'))) AS needs_improvement,
    sumState(toUInt64(toInt64(site != '' AND rating = 'poor') - toInt64(prev_rating = 'poor'))) AS poor,
    sumState(if(site = '', 0, (toFloat64(rating = 'good') - toFloat64(prev_rating = 'good')) / sample_rate)) AS weighted_good,
    sumState(if(site = '', 0, (toFloat64(rating = 'needs-improvement') - toFloat64(prev_rating = 'needs-improvement')) / sample_rate)) AS weighted_needs_improvement,
    sumState(if(site = '', 0, (toFloat64(rating = 'poor') - toFloat64(prev_rating = 'poor')) / sample_rate)) AS weighted_poor,
    sumMapState(
        if(site = '', emptyArrayInt16(),
           if(prev_rating = '',
              [toInt16(if(value <= 0, -32768, greatest(-32000, least(32000, ceil(log(value) / log(1.01005))))))],
              [toInt16(if(value <= 0, -32768, greatest(-32000, least(32000, ceil(log(value) / log(1.01005)))))),
               toInt16(if(prev_value <= 0, -32768, greatest(-32000, least(32000, ceil(log(prev_value) / log(1.01005))))))])),
        if(site = '', emptyArrayUInt64(), if(prev_rating = '', [toUInt64(1)], [toUInt64(1), toUInt64(18446744073709551615)]))
    ) AS sketch,
    sumMapState(
        if(site = '', emptyArrayInt16(),
           if(prev_rating = '',
              [toInt16(if(value <= 0, -32768, greatest(-32000, least(32000, ceil(log(value) / log(1.01005))))))],
              [toInt16(if(value <= 0, -32768, greatest(-32000, least(32000, ceil(log(value) / log(1.01005)))))),
               toInt16(if(prev_value <= 0, -32768, greatest(-32000, least(32000, ceil(log(prev_value) / log(1.01005))))))])),
        if(site = '', emptyArrayFloat64(), if(prev_rating = '', [1 / sample_rate], [1 / sample_rate, -1 / sample_rate]))
    ) AS weighted_sketch,
    maxStateIf(ledger_next, site = '') AS ledger
FROM vitals_1m_input_v2
GROUP BY minute, site, route, device, metric;
