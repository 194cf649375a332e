#!/usr/bin/env python3
"""bench/accuracy.py: p75 from the stored sketches (what users get) against the exact p75, on the data in ClickHouse.

Run after a benchmark has filled rum.vitals_raw (and, through its materialized view, rum.vitals_1m). For every
site (or each --site), over the whole stored window of that site and over each single minute:

* the sketch p75: clickhouse/queries/p75_by_route_device.sql itself (its text, whole-line comments dropped,
  the three ? placeholders replaced by the site and the window [start, end) in unix seconds), run on
  vitals_1m: the merged sumMap sketch and `if((sk.1)[idx] = -32768, 0, 2 * pow(1.01005, (sk.1)[idx]) /
  (1.01005 + 1))`, as `rum query p75` and the analyst queries read it. Single minutes run the same file
  with one-minute windows.
* the exact p75 from vitals_raw, per (site, route, device, metric) and the same window: the nearest-rank
  p75, the ceil(0.75 * n)-th smallest value, as rum_clickhouse::exact_quantile (which
  clickhouse/tests/p75_accuracy.rs calls "exact"), computed in ClickHouse as
  `arraySort(groupArray(value))[toUInt64(ceil(0.75 * count()))]`. (Not quantileExact(0.75): ClickHouse's
  takes the floor(0.75 * n)-th element, 0-based, one rank higher when 4 divides n.)

Compared: groups with at least --min-samples samples in the whole window (default 1000) and, per minute, at
least --min-samples-minute (default 200). The relative error is |sketch - exact| / exact. When the exact p75
is 0 (at least 75% zeros, e.g. CLS), the rule of p75_accuracy.rs: the sketch must say 0 too, and that counts
as error 0; a sketch that does not is counted in `zero_mismatch` (its relative error is undefined) and
reported, not folded into the relative errors. A group whose sample count differs between vitals_1m and
vitals_raw (the data still being written, or a consistency bug) is counted in `count_mismatch` and skipped.
The median is the nearest-rank median (the lower of the two middle values).

Usage:
  bench/accuracy.py --clickhouse http://127.0.0.1:PORT [--json]

Options:
  --clickhouse URL          ClickHouse's HTTP interface (database rum)
  --site SITE               only this site (repeatable; default every site in vitals_1m)
  --min-samples N           smallest group compared over the whole window (default 1000)
  --min-samples-minute N    smallest group compared within a single minute (default 200)
  --json                    one JSON line instead of human lines:
    {"sites": [...], "min_samples": N, "min_samples_minute": N,
     "whole":   {"groups", "worst_rel_err", "median_rel_err", "worst_at", "by_metric": {"LCP": {"groups",
                 "worst_rel_err", "median_rel_err"}, ...}, "zero_exact", "zero_mismatch", "count_mismatch",
                 "windows"},
     "minutes": {the same, worst and median over groups x minutes; "windows" is the number of minutes}}
    errors are fractions (0.005 = 0.5%); worst_rel_err and median_rel_err are null when no group qualified.

Exit status: 0 when it compared something (whatever the errors: a benchmark, not a test); 1 when ClickHouse is
unreachable, a query fails, the tables are missing, or no group reached --min-samples; 2 for bad arguments.
"""

import argparse
import json
import os
import sys
import time
import urllib.error

from benchlib import ClickHouse, QueryError, nearest_rank, sql_string

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUERY_FILE = os.path.join(REPO, "clickhouse", "queries", "p75_by_route_device.sql")
HTTP_TIMEOUT = 600.0
# The exact nearest-rank p75 (rum_clickhouse::exact_quantile), per group.
EXACT_P75 = "arraySort(groupArray(value))[toUInt64(ceil(0.75 * count()))]"


def die(msg):
    print(f"accuracy: error: {msg}", file=sys.stderr)
    sys.exit(1)


def rows(ch, sql):
    """Runs sql (without a FORMAT clause) on ch; returns a list of dicts (JSONEachRow)."""
    try:
        text = ch.query(sql + "\nFORMAT JSONEachRow", timeout=HTTP_TIMEOUT)
    except QueryError as e:
        die(f"ClickHouse query failed (HTTP {e.code}): {e.detail[:600]}\n  query: {sql[:400]}")
    except (urllib.error.URLError, OSError) as e:
        die(f"ClickHouse at {ch.base} is unreachable: {getattr(e, 'reason', e)}")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def product_query():
    """p75_by_route_device.sql as AnalystQuery::sql gives it: whole-line comments and blank lines dropped."""
    try:
        text = open(QUERY_FILE, encoding="utf-8").read()
    except OSError as e:
        die(f"cannot read {QUERY_FILE}: {e}")
    sql = "\n".join(
        line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("--")
    )
    if sql.count("?") != 3:
        die(f"{QUERY_FILE}: expected 3 ? placeholders (site, start, end), found {sql.count('?')}")
    return sql


def bind(sql, *values):
    parts = sql.split("?")
    out = [parts[0]]
    for value, part in zip(values, parts[1:]):
        out.append(sql_string(value) if isinstance(value, str) else str(int(value)))
        out.append(part)
    return "".join(out)


class Tally:
    """Errors over compared groups, overall and per metric."""

    def __init__(self):
        self.errors = []
        self.by_metric = {}
        self.worst = (-1.0, None)
        self.zero_exact = 0
        self.zero_mismatch = []
        self.count_mismatch = 0
        self.windows = 0

    def add(self, where, metric, sketch_n, exact_n, sketch_p75, exact_p75):
        if sketch_n != exact_n:
            self.count_mismatch += 1
            return
        if exact_p75 == 0:
            if sketch_p75 != 0:
                self.zero_mismatch.append(f"{where}: sketch {sketch_p75} vs exact 0, n = {exact_n}")
                return
            self.zero_exact += 1
            error = 0.0
        else:
            error = abs(sketch_p75 - exact_p75) / exact_p75
        self.errors.append(error)
        self.by_metric.setdefault(metric, []).append(error)
        if error > self.worst[0]:
            self.worst = (error, f"{where}: sketch {sketch_p75:.6g} vs exact {exact_p75:.6g}, n = {exact_n}")

    def summary(self):
        def stats(errors):
            s = sorted(errors)
            return {
                "groups": len(s),
                "worst_rel_err": s[-1] if s else None,
                "median_rel_err": nearest_rank(s, 0.5),
            }

        out = stats(self.errors)
        out["worst_at"] = self.worst[1]
        out["by_metric"] = {m: stats(e) for m, e in sorted(self.by_metric.items())}
        out["zero_exact"] = self.zero_exact
        out["zero_mismatch"] = len(self.zero_mismatch)
        out["count_mismatch"] = self.count_mismatch
        out["windows"] = self.windows
        return out


def main():
    parser = argparse.ArgumentParser(prog="bench/accuracy.py", add_help=False, usage=argparse.SUPPRESS)
    parser.add_argument("-h", "--help", action="store_true")
    parser.add_argument("--clickhouse")
    parser.add_argument("--site", action="append")
    parser.add_argument("--min-samples", type=int, default=1000)
    parser.add_argument("--min-samples-minute", type=int, default=200)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.help:
        print(__doc__.strip())
        return 0
    if not args.clickhouse:
        parser.error("--clickhouse is required (try --help)")
    if args.min_samples < 1 or args.min_samples_minute < 1:
        parser.error("--min-samples and --min-samples-minute must be at least 1")

    ch = ClickHouse(args.clickhouse, database="rum")
    tables = {
        r["name"]
        for r in rows(ch, "SELECT name FROM system.tables WHERE database = 'rum'")
    }
    missing = {"vitals_raw", "vitals_1m"} - tables
    if missing:
        die(f"ClickHouse at {args.clickhouse} lacks rum.{', rum.'.join(sorted(missing))} (run `rum migrate`)")
    query = product_query()
    started = time.monotonic()

    spans = {
        r["site"]: (int(r["first"]), int(r["last"]))
        for r in rows(ch, 
            "SELECT site, toUInt32(min(minute)) AS first, toUInt32(max(minute)) AS last "
            "FROM vitals_1m GROUP BY site ORDER BY site"
        )
    }
    sites = args.site or sorted(spans)
    whole, minutes = Tally(), Tally()
    for site in sites:
        if site not in spans:
            print(f"accuracy: warning: site {site!r} has no rows in vitals_1m", file=sys.stderr)
            continue
        start, end = spans[site][0], spans[site][1] + 60

        # The whole stored window: one run of the product's query against one exact pass over vitals_raw.
        whole.windows += 1
        exact = {
            (r["route"], r["device"], r["metric"]): (int(r["n"]), float(r["p75"]))
            for r in rows(ch, 
                f"SELECT route, device, metric, count() AS n, {EXACT_P75} AS p75 FROM vitals_raw "
                f"WHERE site = {sql_string(site)} AND received_at >= toDateTime({start}) "
                f"AND received_at < toDateTime({end}) "
                f"GROUP BY route, device, metric HAVING n >= {args.min_samples}"
            )
        }
        for r in rows(ch, bind(query, site, start, end)):
            key = (r["route"], r["device"], r["metric"])
            if key in exact:
                n, p75 = exact.pop(key)
                whole.add(f"{site} {'/'.join(key)} (whole window)", r["metric"], int(r["samples"]), n,
                          float(r["p75"]), p75)
        whole.count_mismatch += len(exact)  # in vitals_raw, not in vitals_1m

        # Single minutes: the same query file once per stored minute, against one exact pass per minute.
        exact = {
            (int(r["m"]), r["route"], r["device"], r["metric"]): (int(r["n"]), float(r["p75"]))
            for r in rows(ch, 
                f"SELECT toUInt32(toStartOfMinute(received_at)) AS m, route, device, metric, count() AS n, "
                f"{EXACT_P75} AS p75 FROM vitals_raw "
                f"WHERE site = {sql_string(site)} AND received_at >= toDateTime({start}) "
                f"AND received_at < toDateTime({end}) "
                f"GROUP BY m, route, device, metric HAVING n >= {args.min_samples_minute}"
            )
        }
        for m in sorted({k[0] for k in exact}):
            minutes.windows += 1
            for r in rows(ch, bind(query, site, m, m + 60)):
                key = (m, r["route"], r["device"], r["metric"])
                if key in exact:
                    n, p75 = exact.pop(key)
                    at = time.strftime("%H:%M", time.gmtime(m))
                    minutes.add(f"{site} {'/'.join(key[1:])} minute {at} UTC", r["metric"],
                                int(r["samples"]), n, float(r["p75"]), p75)
        minutes.count_mismatch += len(exact)  # in vitals_raw, not in vitals_1m

    result = {
        "sites": sites,
        "min_samples": args.min_samples,
        "min_samples_minute": args.min_samples_minute,
        "whole": whole.summary(),
        "minutes": minutes.summary(),
        "seconds": round(time.monotonic() - started, 3),
    }
    for tally in (whole, minutes):
        for line in tally.zero_mismatch[:5]:
            print(f"accuracy: warning: exact p75 is 0 but the sketch's is not: {line}", file=sys.stderr)
    if whole.count_mismatch or minutes.count_mismatch:
        print(
            f"accuracy: warning: {whole.count_mismatch + minutes.count_mismatch} groups have different sample "
            "counts in vitals_1m and vitals_raw (skipped): is the consumer still writing?",
            file=sys.stderr,
        )

    if args.json:
        print(json.dumps(result, separators=(",", ":")))
    else:

        def pct(v):
            return "n/a" if v is None else f"{100 * v:.4f}%"

        for name, label, threshold in (
            ("whole", "whole window", args.min_samples),
            ("minutes", "single minutes", args.min_samples_minute),
        ):
            s = result[name]
            per_metric = ", ".join(f"{m} {pct(v['worst_rel_err'])}" for m, v in s["by_metric"].items())
            print(
                f"p75 sketch vs exact, {label} (groups with >= {threshold} samples): {s['groups']} "
                f"{'groups' if name == 'whole' else 'groups x minutes'} over {s['windows']} "
                f"{'site windows' if name == 'whole' else 'minutes'}, worst {pct(s['worst_rel_err'])}, "
                f"median {pct(s['median_rel_err'])}; worst per metric: {per_metric or 'n/a'}; "
                f"exact p75 = 0 (sketch 0 too, error 0): {s['zero_exact']}"
            )
            if s["worst_at"]:
                print(f"  worst: {s['worst_at']}")
    if not whole.errors:
        print(
            f"accuracy: error: no (site, route, device, metric) group has {args.min_samples} samples",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
