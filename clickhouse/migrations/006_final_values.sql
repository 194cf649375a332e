-- Final values, not first values (issue 17): a page load re-sends a metric when its value changes
-- (CLS and INP grow while the page lives, LCP until the first input). The consumer stores the new value
-- as a replacement of the one before it:
--   revision         0 for a metric's first value, +1 for each replacement (a replacement row keeps
--                    the first row's received_at, route and device, so the chain stays in one minute)
--   replaces_value   the value this row replaces (0 when revision = 0)
--   replaces_rating  its rating ('' when revision = 0)
-- The current value of a metric id is its row with the highest revision:
--   argMax(value, revision) ... GROUP BY site, metric_id
-- The rollup took the replaced value out of vitals_1m when the replacement went in (prev_value and
-- prev_rating of vitals_1m_input_v2, migration 005): vitals_1m counts each page load's metric once.
ALTER TABLE vitals_raw ADD COLUMN revision UInt32 DEFAULT 0;
ALTER TABLE vitals_raw ADD COLUMN replaces_value Float64 DEFAULT 0;
ALTER TABLE vitals_raw ADD COLUMN replaces_rating String DEFAULT '';
