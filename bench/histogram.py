#!/usr/bin/env python3
"""bench/histogram.py: the ingest's own view of one benchmark phase, from two scrapes of its /metrics.

Usage:
  bench/histogram.py BEFORE AFTER

BEFORE and AFTER are Prometheus text scrapes of the ingest taken before and after a phase. For each latency
histogram of the ingest (`rum_ingest_request_duration_seconds`: request to answer, measured by the server;
`rum_kafka_ack_duration_seconds`: handed to the producer to Kafka's acknowledgement), the phase's own
observations (AFTER minus BEFORE, bucket by bucket) give:

* p50 and p99, estimated like Prometheus' histogram_quantile: linear inside the bucket the rank falls in
  (the ingest's buckets are 0.5, 1, 2.5, 5, 7.5, 10, 15, 25, 50 ms and up, so an estimate is good to a
  bucket's width);
* the share of observations over 10 ms, exact (10 ms is a bucket bound): the p99 is at most 10 ms exactly
  when this share is at most 1%.

Prints one JSON object: {"server": {...}, "kafka_ack": {...}}, each with count, p50_ms, p99_ms and
over_10ms_pct (null when the phase observed nothing, or the histogram is absent: not an ingest).
"""

import json
import math
import re
import sys

HISTOGRAMS = {
    "server": "rum_ingest_request_duration_seconds",
    "kafka_ack": "rum_kafka_ack_duration_seconds",
}
BUCKET = re.compile(r'^(\w+)_bucket\{le="([^"]+)"\} (\S+)$')


def buckets(text, name):
    """{upper bound in seconds: cumulative count} of histogram `name` (no labels besides le) in a scrape."""
    out = {}
    for line in text.splitlines():
        m = BUCKET.match(line)
        if m and m.group(1) == name:
            out[math.inf if m.group(2) == "+Inf" else float(m.group(2))] = float(m.group(3))
    return out


def quantile(q, bounds, cumulative):
    """Prometheus' histogram_quantile over sorted bounds and their cumulative counts, in seconds."""
    total = cumulative[-1]
    rank = q * total
    lower, below = 0.0, 0.0
    for bound, count in zip(bounds, cumulative):
        if count >= rank:
            if math.isinf(bound):
                return lower  # beyond the last finite bound: its value is the best estimate
            inside = count - below
            return lower + (bound - lower) * ((rank - below) / inside if inside else 1.0)
        lower, below = bound, count
    return lower


def phase(before, after, name):
    b, a = buckets(before, name), buckets(after, name)
    if not a:
        return None
    bounds = sorted(a)
    cumulative = [a[x] - b.get(x, 0.0) for x in bounds]
    total = cumulative[-1]
    if total <= 0:
        return None
    at_10ms = next((c for x, c in zip(bounds, cumulative) if abs(x - 0.01) < 1e-12), None)
    return {
        "count": int(total),
        "p50_ms": 1000 * quantile(0.50, bounds, cumulative),
        "p99_ms": 1000 * quantile(0.99, bounds, cumulative),
        "over_10ms_pct": None if at_10ms is None else 100 * (total - at_10ms) / total,
    }


def main(argv):
    if len(argv) != 3 or argv[1] in ("-h", "--help"):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    texts = []
    for path in argv[1:]:
        try:
            with open(path, encoding="utf-8") as f:
                texts.append(f.read())
        except OSError as e:
            print(f"bench/histogram.py: cannot read {path}: {e.strerror}", file=sys.stderr)
            return 2
    print(json.dumps({key: phase(texts[0], texts[1], name) for key, name in HISTOGRAMS.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
