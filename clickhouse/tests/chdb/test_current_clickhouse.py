"""The migrations and the analyst queries on a current ClickHouse (chdb-core: ClickHouse in-process).

The Rust tests run them on ClickHouse 18.16 (Debian's server); this proves the same files also run on a
current release. Every file of clickhouse/migrations/ is applied statement by statement (split like
rum_clickhouse::migrate: on `;` at the end of a line), sample rows go into vitals_raw (the materialized
view fills vitals_1m), and every file of clickhouse/queries/ runs with its `?` placeholders replaced by
literals. A query file without parameters below fails the test.

Run with clickhouse/tests/chdb/run (a venv under ~/.cache/rum with chdb-core and pytest), or
`python -m pytest` / `python -m unittest` where chdb is importable.
"""

import glob
import json
import math
import os
import re
import shutil
import tempfile
import unittest

from chdb import session

HERE = os.path.dirname(os.path.abspath(__file__))
CLICKHOUSE_DIR = os.path.normpath(os.path.join(HERE, "..", ".."))
MIGRATIONS = sorted(glob.glob(os.path.join(CLICKHOUSE_DIR, "migrations", "*.sql")))
QUERY_FILES = sorted(glob.glob(os.path.join(CLICKHOUSE_DIR, "queries", "*.sql")))

# The start of an hour (2023-11-14 22:00:00 UTC); the window is [T0, END).
T0 = 1_699_999_200
END = T0 + 7200
# The sketch's bound: (gamma - 1) / (gamma + 1) with gamma = 1.01005.
ALPHA = 0.01005 / 2.01005

# The ? placeholders of each query file, in order (see each file's header).
PARAMS = {
    "p75_by_route_device.sql": ["shop", T0, END],
    "worst_routes.sql": ["shop", "LCP", T0, END, 1, 10],
    "rating_shares.sql": ["shop", T0, END],
    "p75_trend_hourly.sql": ["shop", "LCP", "", "", T0, END],
    "top_lcp_elements.sql": ["shop", T0, END, 5],
    "top_inp_targets.sql": ["shop", T0, END, 5],
    "p75_by_dimension.sql": ["browser", "shop", "LCP", T0, END],
}

THRESHOLDS = {"LCP": (2500, 4000), "INP": (200, 500), "CLS": (0.1, 0.25)}


def rating(metric, value):
    good, poor = THRESHOLDS[metric]
    if value <= good:
        return "good"
    if value <= poor:
        return "needs-improvement"
    return "poor"


def split_statements(sql):
    """Like rum_clickhouse::migrate: split on `;` at line ends, drop comment-only pieces."""
    statements, current = [], []

    def push():
        code = [l for l in current if l.strip() and not l.strip().startswith("--")]
        if code:
            statements.append("\n".join(current).strip())
        current.clear()

    for line in sql.splitlines():
        line = line.rstrip()
        if line.endswith(";"):
            current.append(line[:-1])
            push()
        else:
            current.append(line)
    push()
    return statements


ADD_COLUMN = re.compile(r"^\s*ALTER\s+TABLE\s+(\w+)\s+ADD\s+COLUMN\s+(\w+)\s", re.IGNORECASE)


RENAME = re.compile(r"^\s*RENAME\s+TABLE\s+(.*)$", re.IGNORECASE | re.DOTALL)
CREATE_TABLE = re.compile(r"^\s*CREATE\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?(\w+)", re.IGNORECASE)


def code_of(statement):
    return "\n".join(l for l in statement.splitlines() if not l.strip().startswith("--"))


def rename_pairs(statement):
    """The (from, to) pairs of a RENAME TABLE a TO b, c TO d statement, or None."""
    m = RENAME.match(code_of(statement))
    if not m:
        return None
    pairs = [p.split() for p in m.group(1).split(",")]
    assert all(len(p) == 3 and p[1].upper() == "TO" for p in pairs), statement
    return [(p[0], p[2]) for p in pairs]


def table_exists(sess, name):
    return str(sess.query(
        f"SELECT count() FROM system.tables WHERE database = currentDatabase() AND name = '{name}'", "TSV"
    )).strip() != "0"


def apply_statement(sess, statement, renames=()):
    """Like rum_clickhouse::migrate: an ADD COLUMN whose column exists is skipped (18.16 has no IF NOT EXISTS);
    a RENAME whose first target exists runs only its pairs whose target is missing; a CREATE TABLE of a table
    that such a started RENAME moves away is skipped (migration 007)."""
    code = code_of(statement)
    m = ADD_COLUMN.match(code)
    if m:
        n = str(sess.query(
            f"SELECT count() FROM system.columns WHERE database = currentDatabase() "
            f"AND table = '{m.group(1)}' AND name = '{m.group(2)}'", "TSV")).strip()
        if n != "0":
            return
    pairs = rename_pairs(statement)
    if pairs and table_exists(sess, pairs[0][1]):
        left = [(f, t) for f, t in pairs[1:] if not table_exists(sess, t)]
        if not left:
            return
        statement = "RENAME TABLE " + ", ".join(f"{f} TO {t}" for f, t in left)
    m = CREATE_TABLE.match(code)
    if m and any(any(f == m.group(1) for f, _ in p) and table_exists(sess, p[0][1]) for p in renames):
        return
    sess.query(statement)


def literal(value):
    if isinstance(value, bool):
        raise TypeError("no booleans")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    raise TypeError(f"unsupported parameter {value!r}")


def bind(text, params):
    """The query without its whole-line comments, each ? replaced by the next parameter as a literal."""
    body = "\n".join(
        l for l in text.splitlines() if l.strip() and not l.strip().startswith("--")
    )
    pieces = body.split("?")
    if len(pieces) - 1 != len(params):
        raise AssertionError(f"{len(pieces) - 1} placeholders, {len(params)} parameters")
    out = pieces[0]
    for value, piece in zip(params, pieces[1:]):
        out += literal(value) + piece
    return out


def sample_rows():
    """(received_at, site, route, device, metric, value, sample_rate) of the known data set."""
    rows = []
    # shop/root/mobile LCP: 100, 200, ..., 6000 ms over 90 minutes: nearest-rank p75 4500.
    rows += [(T0 + i * 90, "shop", "root", "mobile", "LCP", 100.0 * i, 1.0) for i in range(1, 61)]
    # shop/product-id/desktop LCP: 500 + 37 i, one a minute.
    rows += [(T0 + i * 60 + 5, "shop", "product-id", "desktop", "LCP", 500.0 + 37 * i, 1.0) for i in range(40)]
    # shop/product-id/mobile INP: 50 .. 1000 ms: nearest-rank p75 750.
    rows += [(T0 + 300 + i, "shop", "product-id", "mobile", "INP", 50.0 * i, 1.0) for i in range(1, 21)]
    # shop/root/mobile CLS at 25%: ten 0, 0.01 .. 0.10, five 0.3: nearest-rank p75 0.09.
    cls = [0.0] * 10 + [i / 100 for i in range(1, 11)] + [0.3] * 5
    rows += [(T0 + 3700 + 7 * i, "shop", "root", "mobile", "CLS", v, 0.25) for i, v in enumerate(cls)]
    # Another site, and rows outside the window.
    rows += [(T0 + i, "other", "root", "mobile", "LCP", float(i), 1.0) for i in range(1, 6)]
    rows += [(t, "shop", "root", "mobile", "LCP", 99999.0, 1.0) for t in (T0 - 60, END, END + 3600)]
    return rows


def attribution(n, row):
    """(browser, release, target, ttfb, load_delay, load_duration, render_delay, interaction_type,
    input_delay, processing, presentation, script_url) of the n-th sample row, like the Rust test's."""
    t, site, route, device, metric, value, rate = row
    browser = ["chrome", "safari", "firefox"][n % 3]
    release = "v1" if n % 2 else "v2"
    if metric == "LCP" and site == "shop" and route == "root":
        target = "#hero>img" if n % 3 else "h1.title"
        return (browser, release, target, 0.1 * value, 0.2 * value, 0.3 * value, 0.4 * value, "", None, None, None, "")
    if metric == "INP":
        buy = value <= 600
        return (browser, release, "button.buy" if buy else "a.menu", None, None, None, None,
                "pointer" if buy else "keyboard", 0.2 * value, 0.5 * value, 0.3 * value,
                "https://shop.example/app.js" if buy else "")
    return (browser, release, "", None, None, None, None, "", None, None, None, "")


def sql_value(v):
    if v is None:
        return "NULL"
    if isinstance(v, str):
        return literal(v)
    return repr(float(v))


def weighted_nearest_rank(pairs, p=75):
    """The weighted nearest rank: the smallest value whose cumulative weight c has c * 100 >= p * total."""
    total = sum(w for _, w in pairs)
    c = 0.0
    for v, w in sorted(pairs):
        c += w
        if c * 100 >= p * total:
            return v
    raise AssertionError("no rank")


def nearest_rank(values, q=0.75):
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


def close_to(got, exact):
    if exact == 0:
        return got == 0
    return abs(got - exact) / exact <= ALPHA + 1e-9


class CurrentClickHouse(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="rum-chdb-")
        cls.session = session.Session(cls.dir)
        cls.session.query("SET session_timezone = 'UTC'")
        cls.version = cls.q1("SELECT version()")
        cls.session.query("CREATE DATABASE IF NOT EXISTS rum")
        cls.session.query("USE rum")
        # Twice: the statements are idempotent (IF NOT EXISTS), as rum migrate relies on.
        for _ in range(2):
            for path in MIGRATIONS:
                with open(path, encoding="utf-8") as f:
                    statements = split_statements(f.read())
                assert statements, f"{path}: no statements"
                renames = [p for p in map(rename_pairs, statements) if p]
                for statement in statements:
                    try:
                        apply_statement(cls.session, statement, renames)
                    except Exception as e:  # noqa: BLE001 - name the statement that failed
                        raise AssertionError(f"{os.path.basename(path)}: {e}\n{statement}") from e
        cls.rows = sample_rows()
        values = ",\n".join(
            "({}, {}, {}, {}, 'navigate', {}, {!r}, {}, {}, {!r}, 'rum.beacons.v1', 0, {}, {})".format(
                t, literal(site), literal(route), literal(device), literal(metric), value,
                literal(rating(metric, value)), literal(f"id-{n}"), rate, n,
                ", ".join(sql_value(v) for v in attribution(n, row)),
            )
            for n, row in enumerate(cls.rows)
            for (t, site, route, device, metric, value, rate) in [row]
        )
        cls.session.query(
            "INSERT INTO vitals_raw (received_at, site, route, device, nav_type, metric, value, rating, "
            "metric_id, sample_rate, kafka_topic, kafka_partition, kafka_offset, browser, release, target, "
            "time_to_first_byte, resource_load_delay, resource_load_duration, element_render_delay, "
            "interaction_type, input_delay, processing_duration, presentation_delay, script_url) VALUES " + values
        )
        # The rollup, as the consumer writes it (migration 004: no view between the tables; 005: its entry v2).
        rollup = ",\n".join(
            "({}, {}, {}, {}, {}, {!r}, {}, {}, 0, 0)".format(
                t, literal(site), literal(route), literal(device), literal(metric), value,
                literal(rating(metric, value)), rate,
            )
            for (t, site, route, device, metric, value, rate) in cls.rows
        )
        cls.session.query(
            "INSERT INTO vitals_1m_input_v2 (received_at, site, route, device, metric, value, rating, "
            "sample_rate, kafka_partition, ledger_next) VALUES " + rollup
        )

    @classmethod
    def tearDownClass(cls):
        cls.session.close()
        shutil.rmtree(cls.dir, ignore_errors=True)

    @classmethod
    def q1(cls, sql):
        return str(cls.session.query(sql, "TSV")).strip()

    def run_file(self, name):
        with open(os.path.join(CLICKHOUSE_DIR, "queries", name), encoding="utf-8") as f:
            sql = bind(f.read(), PARAMS[name])
        out = str(self.session.query(sql, "JSONEachRow"))
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def inside(self, **match):
        return [
            r for r in self.rows
            if T0 <= r[0] < END and all(r[("site", "route", "device", "metric").index(k) + 1] == v
                                        for k, v in match.items())
        ]

    def inside_numbered(self):
        """(n, row) of the rows inside the window, n the row's position (its attribution's seed)."""
        return [(n, r) for n, r in enumerate(self.rows) if T0 <= r[0] < END]

    def test_is_a_current_clickhouse(self):
        major = int(self.version.split(".")[0])
        self.assertGreaterEqual(major, 23, self.version)
        print(f"ClickHouse {self.version} (chdb)")

    def test_the_rollup_view_fills_vitals_1m(self):
        self.assertEqual(self.q1("SELECT count() FROM vitals_raw"), str(len(self.rows)))
        # (test_a_replaced_value_moves_its_sample writes site 'final', in any order of the tests)
        self.assertEqual(self.q1("SELECT countMerge(samples) FROM vitals_1m WHERE site != 'final'"), str(len(self.rows)))
        # A ledger row (site ''): one more row of vitals_1m, no sample, its next offset kept.
        self.session.query(
            "INSERT INTO vitals_1m_input_v2 (received_at, site, route, device, metric, value, rating, "
            "sample_rate, kafka_partition, ledger_next) VALUES (1700000000, '', 'rum.beacons.v1', '3', 'id', 0, '', 1, 3, 42)"
        )
        self.assertEqual(self.q1("SELECT countMerge(samples) FROM vitals_1m WHERE site != 'final'"), str(len(self.rows)))
        self.assertEqual(
            self.q1("SELECT maxMerge(ledger) FROM vitals_1m WHERE site = '' AND route = 'rum.beacons.v1' AND device = '3'"),
            "42",
        )
        # The stored sketch is the one rum_clickhouse::sketch computes: 0 in bucket -32768, v > 0 in
        # ceil(log(v) / log(1.01005)) (clamped to +-32000), bucket for bucket.
        for metric in ("LCP", "INP", "CLS"):
            expected = {}
            for x in self.rows:
                if x[4] == metric and x[1] == "shop":
                    k = -32768 if x[5] <= 0 else max(-32000, min(32000, math.ceil(math.log(x[5]) / math.log(1.01005))))
                    expected[k] = expected.get(k, 0) + 1
            got = self.q1(
                "SELECT arrayStringConcat(arrayMap((k, c) -> concat(toString(k), ':', toString(c)), sk.1, sk.2), ',') "
                f"FROM (SELECT sumMapMerge(sketch) AS sk FROM vitals_1m WHERE site = 'shop' AND metric = '{metric}')"
            )
            self.assertEqual(got, ",".join(f"{k}:{c}" for k, c in sorted(expected.items())), metric)

    def test_every_query_file_has_parameters(self):
        self.assertEqual(sorted(os.path.basename(p) for p in QUERY_FILES), sorted(PARAMS))

    def test_p75_by_route_device(self):
        rows = self.run_file("p75_by_route_device.sql")
        keys = [(r["route"], r["device"], r["metric"]) for r in rows]
        self.assertEqual(keys, sorted(keys))
        self.assertEqual(len(rows), 4, rows)
        for r in rows:
            self.assertEqual(r["site"], "shop")
            values = [x[5] for x in self.inside(site="shop", route=r["route"], device=r["device"], metric=r["metric"])]
            self.assertEqual(int(r["samples"]), len(values), r)
            self.assertTrue(close_to(r["p75"], nearest_rank(values)), (r, nearest_rank(values)))
            total = r["good_share"] + r["needs_improvement_share"] + r["poor_share"]
            self.assertAlmostEqual(total, 1.0, places=9)
        lcp = next(r for r in rows if r["route"] == "root" and r["metric"] == "LCP")
        self.assertTrue(close_to(lcp["p75"], 4500), lcp)
        self.assertAlmostEqual(lcp["good_share"], 25 / 60)
        self.assertAlmostEqual(lcp["poor_share"], 20 / 60)
        cls = next(r for r in rows if r["metric"] == "CLS")
        self.assertTrue(close_to(cls["p75"], 0.09), cls)

    def test_worst_routes(self):
        rows = self.run_file("worst_routes.sql")
        self.assertEqual([(r["route"], r["device"]) for r in rows], [("root", "mobile"), ("product-id", "desktop")])
        self.assertGreater(rows[0]["p75"], rows[1]["p75"])
        for r in rows:
            values = [x[5] for x in self.inside(site="shop", route=r["route"], device=r["device"], metric="LCP")]
            self.assertTrue(close_to(r["p75"], nearest_rank(values)), r)
            self.assertEqual(int(r["samples"]), len(values))

    def test_rating_shares(self):
        rows = self.run_file("rating_shares.sql")
        self.assertEqual([(r["metric"], r["device"]) for r in rows],
                         [("CLS", "mobile"), ("INP", "mobile"), ("LCP", "desktop"), ("LCP", "mobile")])
        for r in rows:
            found = self.inside(site="shop", device=r["device"], metric=r["metric"])
            self.assertEqual(int(r["samples"]), len(found))
            self.assertAlmostEqual(r["estimated_page_loads"], sum(1 / x[6] for x in found))
            self.assertTrue(close_to(r["p75"], nearest_rank([x[5] for x in found])), r)
            good = sum(1 for x in found if rating(x[4], x[5]) == "good") / len(found)
            self.assertAlmostEqual(r["good_share"], good)
        inp = next(r for r in rows if r["metric"] == "INP")
        self.assertTrue(close_to(inp["p75"], 750), inp)

    def test_p75_trend_hourly(self):
        rows = self.run_file("p75_trend_hourly.sql")
        self.assertEqual(
            [(r["hour"], r["device"]) for r in rows],
            [("2023-11-14 22:00:00", "desktop"), ("2023-11-14 22:00:00", "mobile"), ("2023-11-14 23:00:00", "mobile")],
        )
        for r in rows:
            hour = T0 if r["hour"].endswith("22:00:00") else T0 + 3600
            values = [x[5] for x in self.inside(site="shop", device=r["device"], metric="LCP") if hour <= x[0] < hour + 3600]
            self.assertEqual(int(r["samples"]), len(values))
            self.assertTrue(close_to(r["p75"], nearest_rank(values)), r)

    def test_top_lcp_elements(self):
        rows = self.run_file("top_lcp_elements.sql")
        groups = {}
        for n, r in self.inside_numbered():
            a = attribution(n, r)
            if r[1] == "shop" and r[4] == "LCP" and a[2]:
                groups.setdefault((r[2], a[2]), []).append((r, a))
        expected = sorted(groups, key=lambda k: (k[0], -len(groups[k]), k[1]))
        self.assertEqual([(r["route"], r["target"]) for r in rows], expected)
        for r in rows:
            found = groups[(r["route"], r["target"])]
            self.assertEqual(int(r["samples"]), len(found))
            pairs = [(x[5], 1 / x[6]) for x, _ in found]
            self.assertTrue(close_to(r["p75"], weighted_nearest_rank(pairs)), r)
            parts = r["time_to_first_byte"] + r["resource_load_delay"] + r["resource_load_duration"] + r["element_render_delay"]
            self.assertAlmostEqual(parts, sum(x[5] for x, _ in found) / len(found), places=6)

    def test_top_inp_targets(self):
        rows = self.run_file("top_inp_targets.sql")
        self.assertEqual(
            [(r["route"], r["target"], r["interaction_type"], int(r["samples"])) for r in rows],
            [("product-id", "button.buy", "pointer", 12), ("product-id", "a.menu", "keyboard", 8)],
        )
        self.assertTrue(close_to(rows[0]["p75"], 450), rows[0])
        self.assertAlmostEqual(rows[0]["processing_duration"], 162.5)
        self.assertEqual(rows[0]["script_url"], "https://shop.example/app.js")
        self.assertEqual(rows[1]["script_url"], "")

    def test_p75_by_dimension(self):
        rows = self.run_file("p75_by_dimension.sql")
        groups = {}
        for n, r in self.inside_numbered():
            if r[1] == "shop" and r[4] == "LCP":
                groups.setdefault(attribution(n, r)[0], []).append(r)
        self.assertEqual(sorted(r["value"] for r in rows), sorted(groups))
        for r in rows:
            found = groups[r["value"]]
            self.assertEqual(int(r["samples"]), len(found))
            self.assertAlmostEqual(r["estimated_page_loads"], sum(1 / x[6] for x in found))
            self.assertTrue(close_to(r["p75"], weighted_nearest_rank([(x[5], 1 / x[6]) for x in found])), r)
            self.assertTrue(close_to(r["p75_unweighted"], nearest_rank([x[5] for x in found])), r)

    def test_a_replaced_value_moves_its_sample(self):
        """Migration 005's rollup: a row with the previous value and rating takes it out of its bucket."""
        self.session.query(
            "INSERT INTO vitals_1m_input_v2 (received_at, site, route, device, metric, value, rating, sample_rate, "
            "kafka_partition, ledger_next, prev_value, prev_rating) VALUES "
            "(1700000000, 'final', 'root', 'mobile', 'CLS', 0.05, 'good', 0.5, 0, 0, 0, ''), "
            "(1700000000, 'final', 'root', 'mobile', 'CLS', 0.3, 'poor', 0.5, 0, 0, 0.05, 'good')"
        )
        got = self.q1(
            "SELECT countMerge(samples), sumMerge(good), sumMerge(poor), sumMerge(weighted_poor) "
            "FROM vitals_1m WHERE site = 'final'"
        )
        self.assertEqual(got.split("\t"), ["1", "0", "1", "2"])
        sk = self.q1(
            "SELECT arrayStringConcat(arrayMap((k, c) -> concat(toString(k), ':', toString(c)), sk.1, sk.2), ',') "
            "FROM (SELECT sumMapMerge(sketch) AS sk FROM vitals_1m WHERE site = 'final')"
        )
        self.assertEqual(sk, f"{math.ceil(math.log(0.3) / math.log(1.01005))}:1")


if __name__ == "__main__":
    unittest.main()


class RetentionOnCurrentClickHouse(unittest.TestCase):
    """The statements rum_clickhouse::retention sends (system.parts listing, DROP PARTITION <number>)."""

    def test_drops_whole_expired_partitions(self):
        d = tempfile.mkdtemp(prefix="rum-chdb-retention-")
        s = session.Session(d)
        try:
            s.query("SET session_timezone = 'UTC'")
            s.query("CREATE DATABASE IF NOT EXISTS rum")
            s.query("USE rum")
            for path in MIGRATIONS:
                with open(path, encoding="utf-8") as f:
                    for statement in split_statements(f.read()):
                        apply_statement(s, statement)
            now = 1_790_000_000
            for days_ago in (90, 45, 31, 2, 0):
                t = now - days_ago * 86400
                s.query(
                    "INSERT INTO vitals_raw (received_at, site, route, device, nav_type, metric, value, rating, "
                    "metric_id, sample_rate, kafka_topic, kafka_partition, kafka_offset) VALUES "
                    f"({t}, 'shop', 'root', 'mobile', 'navigate', 'LCP', 1000, 'good', 'id{days_ago}', 1, 't', 0, {days_ago})"
                )
                s.query(
                    "INSERT INTO vitals_1m_input (received_at, site, route, device, metric, value, rating, "
                    f"sample_rate, kafka_partition, ledger_next) VALUES ({t}, 'shop', 'root', 'mobile', 'LCP', 1000, 'good', 1, 0, 0)"
                )
            cutoff_day = int(str(s.query(f"SELECT toYYYYMMDD(toDateTime({now - 30 * 86400}))", "TSV")).strip())
            parts = str(s.query(
                "SELECT DISTINCT partition FROM system.parts WHERE database = 'rum' AND table = 'vitals_raw' "
                "AND active ORDER BY partition", "TSV")).split()
            self.assertEqual(len(parts), 5, parts)
            for p in parts:
                n = int(p.strip("'"))
                if n < cutoff_day:
                    s.query(f"ALTER TABLE vitals_raw DROP PARTITION {n}")
            left = str(s.query("SELECT metric_id FROM vitals_raw ORDER BY kafka_offset", "TSV")).split()
            self.assertEqual(left, ["id0", "id2"])
            # The rollups keep their rows: their retention is separate (months).
            self.assertEqual(str(s.query("SELECT countMerge(samples) FROM vitals_1m", "TSV")).strip(), "5")
        finally:
            s.close()
            shutil.rmtree(d, ignore_errors=True)


class UpgradeTo005OnCurrentClickHouse(unittest.TestCase):
    """Migration 005's backfill: minutes stored before it get weighted states (each sample weighs the
    minute's mean weight), once."""

    def test_minutes_stored_before_005_are_weighted(self):
        d = tempfile.mkdtemp(prefix="rum-chdb-upgrade-")
        s = session.Session(d)
        try:
            s.query("SET session_timezone = 'UTC'")
            s.query("CREATE DATABASE IF NOT EXISTS rum")
            s.query("USE rum")

            def apply(paths):
                for path in paths:
                    with open(path, encoding="utf-8") as f:
                        for statement in split_statements(f.read()):
                            apply_statement(s, statement)

            before = [p for p in MIGRATIONS if os.path.basename(p) < "005"]
            apply(before)
            rows = [(2000, "good", 0.25)] * 6 + [(5000, "poor", 0.25)] * 2
            s.query(
                "INSERT INTO vitals_1m_input (received_at, site, route, device, metric, value, rating, "
                "sample_rate, kafka_partition, ledger_next) VALUES "
                + ", ".join(f"(1700000040, 'shop', 'root', 'mobile', 'LCP', {v}, '{r}', {rate}, 0, 0)" for v, r, rate in rows)
            )
            # 005, twice (an interrupted run is run again): the second backfill adds nothing.
            apply([p for p in MIGRATIONS if os.path.basename(p) >= "005"] * 2)
            got = str(s.query(
                "SELECT countMerge(samples), sumMerge(weighted_good), sumMerge(weighted_poor), "
                "arraySum(tupleElement(sumMapMerge(weighted_sketch), 2)) FROM vitals_1m WHERE site = 'shop'",
                "TSV",
            )).strip()
            self.assertEqual(got.split("\t"), ["8", "24", "8", "32"])
        finally:
            s.close()
            shutil.rmtree(d, ignore_errors=True)
