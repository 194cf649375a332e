"""What bench/freshness.py and bench/accuracy.py share (python3 standard library only).

Importing it makes urllib connect directly: an http_proxy in the environment must not capture 127.0.0.1.
"""

import math
import urllib.error
import urllib.parse
import urllib.request

urllib.request.install_opener(urllib.request.build_opener(urllib.request.ProxyHandler({})))


def nearest_rank(sorted_values, q):
    """The q quantile (0..1) of sorted values, nearest rank; None when there are none."""
    if not sorted_values:
        return None
    rank = min(max(math.ceil(q * len(sorted_values)), 1), len(sorted_values))
    return sorted_values[rank - 1]


def sql_string(s):
    """s as a ClickHouse string literal."""
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


class QueryError(RuntimeError):
    """ClickHouse answered an HTTP error; str() is `HTTP code: first line`, .detail the whole answer."""

    def __init__(self, code, detail):
        lines = detail.strip().splitlines()
        super().__init__(f"HTTP {code}: {lines[0] if lines else ''}")
        self.code = code
        self.detail = detail.strip()


class ClickHouse:
    """ClickHouse's HTTP interface at url (optionally with a default database)."""

    def __init__(self, url, database=None):
        self.base = url
        self.url = url.rstrip("/") + "/"
        if database:
            self.url += "?" + urllib.parse.urlencode({"database": database})

    def query(self, sql, timeout=10.0):
        """Runs sql; returns the answer's text. QueryError on an HTTP error; URLError/OSError when unreachable."""
        req = urllib.request.Request(self.url, data=sql.encode(), method="POST")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.read().decode()
        except urllib.error.HTTPError as e:
            raise QueryError(e.code, e.read().decode(errors="replace")) from None
