#!/usr/bin/env python3
"""bench/freshness.py: how long a beacon takes from its 204 at the ingest to being queryable in rum.vitals_1m.

Sends --probes probe beacons, one every --interval seconds, to a running `rum ingest` (while something else,
e.g. `rum loadgen --rate N`, keeps a steady load on the pipeline), and polls ClickHouse every --poll seconds
for the probes not yet seen. A probe's freshness is the time from the 204 (the response received) to the
start of the first poll whose answer contains it: an upper bound, coarse by at most one poll period plus
one query. Percentiles are nearest-rank over the probes found.

Each probe is one valid beacon v1 (text/plain;charset=UTF-8, as `navigator.sendBeacon` sends it) with one
LCP metric, site --site (default bench-fresh), device desktop and route /probe/<run>/<n>, where <run> is a
random 6-letter word (new each run) and <n> the probe number in letters (aaa, aab, ...). Letters only: the
route normalizer turns numeric and long hex tokens into `id`, so the slug probe-<run>-<n> (at most 32
characters) survives as is and is unique per run. The metric ids are unique per run too (the consumer drops
repeated ids). The ingest caps distinct routes per site (ingest.max_routes_per_site, default 500, per
process); later new routes become `other` and such probes are lost: a long-lived ingest takes at most
500 probes in total for one site (use --site to start afresh).

Usage:
  bench/freshness.py --ingest http://127.0.0.1:PORT --clickhouse http://127.0.0.1:PORT [--json]

Options:
  --ingest URL       the ingest's base URL (POST {URL}/api/v1/observability/web-vitals, GET {URL}/readyz)
  --clickhouse URL   ClickHouse's HTTP interface (database rum, table vitals_1m)
  --probes N         how many probes (default 60)
  --interval S       seconds between probes (default 0.5)
  --poll S           seconds between ClickHouse polls (default 0.1)
  --timeout S        a probe not seen this long after its 204 is lost (default 60)
  --site SITE        the probes' site (default bench-fresh)
  --json             print one JSON line instead of a human line:
                     {"probes", "found", "lost", "failed", "p50_s", "p99_s", "max_s", "min_s", "mean_s",
                      "failed_by_status", "poll_errors", "poll_s", "interval_s", "site", "route_prefix"}
                     (p50_s/p99_s/max_s are null when no probe was found)

Exit status: 0 when the run completed (lost and failed probes are reported, not fatal); 1 when the ingest or
ClickHouse is unreachable or not ready, rum.vitals_1m does not exist, or no probe at all was found;
2 for bad arguments.
"""

import argparse
import json
import random
import sys
import threading
import time
import urllib.error
import urllib.request

from benchlib import ClickHouse, nearest_rank, sql_string

BEACON_PATH = "/api/v1/observability/web-vitals"
# Browser-shaped: the ingest drops beacons of bots and of bare tool names like "name/1" (isbot's list).
USER_AGENT = "Mozilla/5.0 (X11; Linux x86_64) rum-bench-freshness/1"
HTTP_TIMEOUT = 10.0


def die(msg):
    print(f"freshness: error: {msg}", file=sys.stderr)
    sys.exit(1)


def letters(n, width):
    """n >= 0 as a fixed-width base-26 word of a..z."""
    out = []
    for _ in range(width):
        n, r = divmod(n, 26)
        out.append(chr(ord("a") + r))
    return "".join(reversed(out))


def post_probe(url, body):
    """POSTs one beacon; returns the HTTP status, or a string describing a transport error."""
    req = urllib.request.Request(
        url,
        data=body.encode(),
        method="POST",
        headers={"Content-Type": "text/plain;charset=UTF-8", "User-Agent": USER_AGENT},
    )
    try:
        with urllib.request.urlopen(req, timeout=HTTP_TIMEOUT) as resp:
            resp.read()
            return resp.status
    except urllib.error.HTTPError as e:
        e.read()
        return e.code
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        return f"error: {reason}"


def main():
    parser = argparse.ArgumentParser(
        prog="bench/freshness.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        usage=argparse.SUPPRESS,
        add_help=False,
    )
    parser.add_argument("-h", "--help", action="store_true")
    parser.add_argument("--ingest", required=False)
    parser.add_argument("--clickhouse", required=False)
    parser.add_argument("--probes", type=int, default=60)
    parser.add_argument("--interval", type=float, default=0.5)
    parser.add_argument("--poll", type=float, default=0.1)
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--site", default="bench-fresh")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.help:
        print(__doc__.strip())
        return 0
    if not args.ingest or not args.clickhouse:
        parser.error("--ingest and --clickhouse are required (try --help)")
    if args.probes < 1 or args.interval < 0 or args.poll <= 0 or args.timeout <= 0:
        parser.error("--probes must be >= 1, --interval >= 0, --poll and --timeout > 0")

    ingest = args.ingest.rstrip("/")
    ch = ClickHouse(args.clickhouse)

    # --- reachable and ready? -----------------------------------------------------------------------------
    try:
        with urllib.request.urlopen(ingest + "/readyz", timeout=HTTP_TIMEOUT) as resp:
            resp.read()
    except urllib.error.HTTPError as e:
        die(f"the ingest at {ingest} is not ready: GET /readyz answered {e.code}")
    except (urllib.error.URLError, OSError) as e:
        die(f"the ingest at {ingest} is unreachable: {getattr(e, 'reason', e)}")
    try:
        n = ch.query(
            "SELECT count() FROM system.tables WHERE database = 'rum' AND name = 'vitals_1m'"
        ).strip()
    except (urllib.error.URLError, OSError) as e:
        die(f"ClickHouse at {args.clickhouse} is unreachable: {getattr(e, 'reason', e)}")
    except RuntimeError as e:
        die(f"ClickHouse at {args.clickhouse} failed a query: {e}")
    if n != "1":
        die(f"ClickHouse at {args.clickhouse} has no table rum.vitals_1m (run `rum migrate`)")

    # --- probes -------------------------------------------------------------------------------------------
    run = "".join(random.SystemRandom().choice("abcdefghijklmnopqrstuvwxyz") for _ in range(6))
    width = 3
    while 26**width < args.probes:
        width += 1
    prefix = f"probe-{run}-"
    if len(prefix) + width > 32:
        parser.error("--probes too large for a 32-character route slug")
    beacon_url = ingest + BEACON_PATH

    lock = threading.Lock()
    pending = {}  # slug -> monotonic time of its 204
    found = {}  # slug -> seconds from the 204 to the first poll that saw it
    lost = []
    failed = {}  # status -> count
    poll_errors = [0, ""]
    sending_done = threading.Event()

    def poller():
        site = sql_string(args.site)
        while True:
            started = time.monotonic()
            with lock:
                for slug, t in list(pending.items()):
                    if started - t > args.timeout:
                        lost.append(slug)
                        del pending[slug]
                waiting = list(pending)
                if not waiting and sending_done.is_set():
                    return
            if waiting:
                sql = (
                    f"SELECT route FROM rum.vitals_1m WHERE site = {site} AND route IN "
                    f"({', '.join(sql_string(s) for s in waiting)}) GROUP BY route FORMAT TabSeparated"
                )
                try:
                    seen = ch.query(sql).split()
                except (RuntimeError, urllib.error.URLError, OSError) as e:
                    seen = []
                    with lock:
                        poll_errors[0] += 1
                        poll_errors[1] = str(getattr(e, "reason", e))
                with lock:
                    for slug in seen:
                        t = pending.pop(slug, None)
                        if t is not None:
                            found[slug] = started - t
            delay = args.poll - (time.monotonic() - started)
            if delay > 0:
                time.sleep(delay)

    thread = threading.Thread(target=poller, daemon=True)
    thread.start()
    t0 = time.monotonic()
    for i in range(args.probes):
        due = t0 + i * args.interval
        now = time.monotonic()
        if due > now:
            time.sleep(due - now)
        word = letters(i, width)
        body = json.dumps(
            {
                "site": args.site,
                "route": f"/probe/{run}/{word}",
                "device": "desktop",
                "nav_type": "navigate",
                "sample_rate": 1,
                "metrics": [{"name": "LCP", "value": 1000 + i, "id": f"fresh-{run}-{word}"}],
            },
            separators=(",", ":"),
        )
        status = post_probe(beacon_url, body)
        answered = time.monotonic()
        if status == 204:
            with lock:
                pending[prefix + word] = answered
        else:
            key = str(status)
            failed[key] = failed.get(key, 0) + 1
    sending_done.set()
    thread.join()

    # --- report -------------------------------------------------------------------------------------------
    times = sorted(found.values())
    n_failed = sum(failed.values())

    def r(v):
        return None if v is None else round(v, 4)

    result = {
        "probes": args.probes,
        "found": len(found),
        "lost": len(lost),
        "failed": n_failed,
        "p50_s": r(nearest_rank(times, 0.50)),
        "p99_s": r(nearest_rank(times, 0.99)),
        "max_s": r(times[-1] if times else None),
        "min_s": r(times[0] if times else None),
        "mean_s": r(sum(times) / len(times) if times else None),
        "failed_by_status": failed,
        "poll_errors": poll_errors[0],
        "poll_s": args.poll,
        "interval_s": args.interval,
        "site": args.site,
        "route_prefix": prefix,
    }
    if args.json:
        print(json.dumps(result, separators=(",", ":")))
    else:
        if times:
            lat = (
                f"p50 {result['p50_s']:.3f} s, p99 {result['p99_s']:.3f} s, max {result['max_s']:.3f} s"
            )
        else:
            lat = "no latency (nothing found)"
        extra = ""
        if failed:
            extra += ", not accepted: " + ", ".join(f"{k} x{v}" for k, v in sorted(failed.items()))
        if poll_errors[0]:
            extra += f", {poll_errors[0]} failed polls (last: {poll_errors[1]})"
        print(
            f"freshness: {len(found)}/{args.probes} probes queryable in rum.vitals_1m, {len(lost)} lost "
            f"(not seen within {args.timeout:g} s), {n_failed} not accepted (no 204); 204 -> queryable: "
            f"{lat} (poll every {args.poll:g} s){extra}"
        )
    if lost:
        print(
            f"freshness: lost probes (route slugs): {', '.join(sorted(lost)[:10])}"
            f"{' ...' if len(lost) > 10 else ''}",
            file=sys.stderr,
        )
    if not found:
        reason = f"; last poll error: {poll_errors[1]}" if poll_errors[0] else ""
        print(f"freshness: error: no probe was found in rum.vitals_1m{reason}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
