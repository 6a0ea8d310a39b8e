"""The fleet's questions: each one SQL text, run as it is by DuckDB and by Spark.

Design.  Every question reads the view ``fleet`` (:mod:`.engines` builds
it: one row per snapshot row, with ``host``, ``kernel``, ``boot_id``,
``time``, ``stack_id``, ``frames``, ``top_frame``, ``pages``, ...) through
the same first steps, :data:`GROWTH`:

* ``s``: a stack's pages per host, boot and moment (a stack is its frames
  without offsets, ``stack_id`` the first 12 hex digits of their MD5, so
  one function path is one stack across builds and kernels);
* ``b``: each boot of each host, its first and last snapshot (``t0``,
  ``t1``) and how many it has;
* ``g``: per host and stack, its growth -- pages at the last snapshot of
  each boot minus pages at the first (a stack absent holds 0) -- summed over
  the host's boots of one kernel (a reboot starts a new series, so what a
  reboot freed is not counted as shrinking); hosts with one snapshot of a
  boot have no growth.

A host "grew" a stack when that growth is at least ``min_growth`` pages
(default 256: 1 MiB of 4 KiB pages, watch's own threshold).  The texts use
only SQL both engines parse alike: no ``GROUP BY ALL``, ``QUALIFY``,
``FILTER``, list or string aggregates, and ties are broken by
``stack_id`` and ``host`` so that both give the rows in one order.
Parameters are put into the text by :func:`sql` (integers as integers,
names as quoted literals, refused when they hold a quote or backslash,
which Spark and DuckDB read differently).
"""

from __future__ import annotations

import re

from ..errors import UsageError

GROWTH = """
s AS (SELECT host, kernel, boot_id, time, stack_id, max(top_frame) AS top_frame, sum(pages) AS pages
      FROM fleet WHERE kind = 'stack'
      GROUP BY host, kernel, boot_id, time, stack_id),
b AS (SELECT host, kernel, boot_id, min(time) AS t0, max(time) AS t1, count(DISTINCT time) AS snapshots
      FROM fleet GROUP BY host, kernel, boot_id),
g AS (SELECT s.host, s.kernel, s.stack_id, max(s.top_frame) AS top_frame,
             sum(CASE WHEN s.time = b.t1 THEN s.pages ELSE 0 END)
               - sum(CASE WHEN s.time = b.t0 THEN s.pages ELSE 0 END) AS growth,
             sum(CASE WHEN s.time = b.t1 THEN s.pages ELSE 0 END) AS pages_now
      FROM s JOIN b ON s.host = b.host AND s.kernel = b.kernel AND s.boot_id = b.boot_id
      WHERE b.snapshots >= 2
      GROUP BY s.host, s.kernel, s.stack_id)"""

QUESTIONS = {
    # The stacks that grew most, summed over every host.
    "top": ("top growing stacks across hosts", """
WITH {growth}
SELECT stack_id, max(top_frame) AS top_frame, sum(growth) AS growth,
       count(DISTINCT CASE WHEN growth >= {min_growth} THEN host END) AS hosts_grown,
       count(DISTINCT host) AS hosts,
       count(DISTINCT CASE WHEN growth >= {min_growth} THEN kernel END) AS kernels_grown,
       min(CASE WHEN growth >= {min_growth} THEN kernel END) AS kernel,
       max(growth) AS most_on_one_host, sum(pages_now) AS pages_now
FROM g GROUP BY stack_id
ORDER BY growth DESC, stack_id
LIMIT {limit}"""),
    # Stacks that grew on at least min_hosts hosts.
    "spread": ("stacks growing on at least --min-hosts hosts", """
WITH {growth}
SELECT stack_id, max(top_frame) AS top_frame, count(DISTINCT host) AS hosts_grown,
       count(DISTINCT kernel) AS kernels, min(kernel) AS kernel, max(kernel) AS last_kernel,
       sum(growth) AS growth, min(growth) AS least, max(growth) AS most
FROM g WHERE growth >= {min_growth}
GROUP BY stack_id HAVING count(DISTINCT host) >= {min_hosts}
ORDER BY growth DESC, stack_id
LIMIT {limit}"""),
    # Per kernel release, its stacks that grew most; growth_per_host over all its hosts.
    "kernels": ("growth per kernel release", """
WITH {growth},
k AS (SELECT kernel, stack_id, max(top_frame) AS top_frame, count(DISTINCT host) AS hosts,
             count(DISTINCT CASE WHEN growth >= {min_growth} THEN host END) AS hosts_grown, sum(growth) AS growth
      FROM g GROUP BY kernel, stack_id),
h AS (SELECT kernel, count(DISTINCT host) AS kernel_hosts FROM b GROUP BY kernel),
r AS (SELECT k.kernel, h.kernel_hosts, k.stack_id, k.top_frame, k.hosts, k.hosts_grown, k.growth,
             row_number() OVER (PARTITION BY k.kernel ORDER BY k.growth DESC, k.stack_id) AS rank
      FROM k JOIN h ON k.kernel = h.kernel)
SELECT kernel, kernel_hosts, rank, stack_id, top_frame, hosts, hosts_grown, growth,
       growth / kernel_hosts AS growth_per_host
FROM r WHERE rank <= {limit}
ORDER BY kernel, rank"""),
    # When each of the top growing stacks was first seen, and when it started growing (and where).
    "first-seen": ("first seen, and first growing", """
WITH {growth},
t AS (SELECT stack_id, max(top_frame) AS top_frame, sum(growth) AS growth FROM g GROUP BY stack_id),
f AS (SELECT stack_id, min(time) AS first_seen FROM s WHERE pages > 0 GROUP BY stack_id),
fh AS (SELECT s.stack_id, min(s.host) AS first_host
       FROM s JOIN f ON s.stack_id = f.stack_id AND s.time = f.first_seen WHERE s.pages > 0 GROUP BY s.stack_id),
base AS (SELECT s.host, s.kernel, s.boot_id, s.stack_id, s.pages
         FROM s JOIN b ON s.host = b.host AND s.kernel = b.kernel AND s.boot_id = b.boot_id AND s.time = b.t0),
up AS (SELECT s.stack_id, s.host, s.time
       FROM s LEFT JOIN base ON s.host = base.host AND s.kernel = base.kernel AND s.boot_id = base.boot_id
                             AND s.stack_id = base.stack_id
       WHERE s.pages - coalesce(base.pages, 0) >= {min_growth}),
st AS (SELECT stack_id, min(time) AS started, count(DISTINCT host) AS hosts_grown FROM up GROUP BY stack_id),
sh AS (SELECT up.stack_id, min(up.host) AS started_host
       FROM up JOIN st ON up.stack_id = st.stack_id AND up.time = st.started GROUP BY up.stack_id)
SELECT t.stack_id, t.top_frame, t.growth, f.first_seen, fh.first_host, st.started, sh.started_host,
       coalesce(st.hosts_grown, 0) AS hosts_grown
FROM t JOIN f ON t.stack_id = f.stack_id JOIN fh ON t.stack_id = fh.stack_id
     LEFT JOIN st ON t.stack_id = st.stack_id LEFT JOIN sh ON t.stack_id = sh.stack_id
ORDER BY t.growth DESC, t.stack_id
LIMIT {limit}"""),
    # One host: its stacks that grew most, at every snapshot.
    "host": ("one host's history (--host)", """
WITH {growth},
top AS (SELECT stack_id, growth, row_number() OVER (ORDER BY growth DESC, stack_id) AS rank
        FROM (SELECT stack_id, sum(growth) AS growth FROM g WHERE host = {host} GROUP BY stack_id) x)
SELECT s.time, s.kernel, s.boot_id, top.rank, s.stack_id, s.top_frame, s.pages, top.growth
FROM s JOIN top ON s.stack_id = top.stack_id
WHERE s.host = {host} AND top.rank <= {limit}
ORDER BY s.time, top.rank"""),
    # Hosts whose growth of a stack stands out from the other hosts of their kernel (z-score over
    # the hosts that hold it), among the hosts that grew it: for one stack (--stack), its hosts
    # by z; for all, each stack's most outlying host.
    "outlier": ("the outlier hosts of a stack (--stack), or of every stack", """
WITH {growth},
pick AS (SELECT stack_id FROM g
         WHERE {stack} = '' OR stack_id LIKE {stack_prefix} OR top_frame = {stack}
         GROUP BY stack_id),
st AS (SELECT kernel, stack_id, avg(growth) AS mean, stddev_samp(growth) AS sd, count(*) AS kernel_hosts
       FROM g GROUP BY kernel, stack_id),
z AS (SELECT g.host, g.kernel, g.stack_id, g.top_frame, g.growth, st.mean, st.sd, st.kernel_hosts,
             CASE WHEN st.sd > 0 THEN (g.growth - st.mean) / st.sd END AS z
      FROM g JOIN st ON g.kernel = st.kernel AND g.stack_id = st.stack_id
             JOIN pick ON g.stack_id = pick.stack_id),
r AS (SELECT z.*, row_number() OVER (PARTITION BY stack_id ORDER BY z DESC NULLS LAST, host) AS rank
      FROM z WHERE growth >= {min_growth})
SELECT stack_id, top_frame, host, kernel, growth, kernel_hosts, mean, sd, z
FROM r WHERE rank <= {per_stack}
ORDER BY z DESC NULLS LAST, stack_id, host
LIMIT {limit}"""),
    # fleet plot: one stack's pages per host over time (--stack, else the top growing stack),
    # for the hosts that grew it most.
    "series": ("one stack's pages per host over time (what fleet plot draws)", """
WITH {growth},
pick AS (SELECT stack_id, max(top_frame) AS top_frame FROM g
         WHERE {stack} = '' OR stack_id LIKE {stack_prefix} OR top_frame = {stack}
         GROUP BY stack_id ORDER BY sum(growth) DESC, stack_id LIMIT 1),
top AS (SELECT g.host, g.growth, row_number() OVER (ORDER BY g.growth DESC, g.host) AS rank
        FROM g JOIN pick ON g.stack_id = pick.stack_id)
SELECT pick.stack_id, pick.top_frame, top.rank, s.host, s.kernel, s.time, s.pages
FROM s JOIN pick ON s.stack_id = pick.stack_id JOIN top ON s.host = top.host
WHERE top.rank <= {limit}
ORDER BY top.rank, s.time"""),
}
ALL_ROWS = 2**31 - 1  # --limit 0 (Spark's LIMIT takes an int)


def _literal(text: str, what: str) -> str:
    if "'" in text or "\\" in text:
        raise UsageError(f"bad {what} {text!r}: a quote or backslash (host names, function names and stack "
                         "ids have none)")
    return f"'{text}'"


def sql(question: str, limit: int = 10, min_growth: int = 256, min_hosts: int = 2, host=None,
        stack: str = "") -> str:
    """The SQL text of ``question`` with its parameters in."""
    if question not in QUESTIONS:
        raise UsageError(f"unknown question {question!r} (one of: {', '.join(QUESTIONS)})")
    if question == "host" and not host:
        raise UsageError("the host question needs --host NAME")
    stack = stack or ""
    if stack and not re.fullmatch(r"[0-9a-f]{1,12}|[A-Za-z_.$][\w.$]*", stack):
        raise UsageError(f"bad --stack {stack!r}: a stack id (hex, as the questions print it) or a "
                         "function name (a stack's top frame)")
    limit = int(limit) or ALL_ROWS
    return QUESTIONS[question][1].format(
        growth=GROWTH, limit=limit, min_growth=int(min_growth), min_hosts=int(min_hosts),
        host=_literal(host or "", "--host"), stack=_literal(stack, "--stack"),
        stack_prefix=_literal(stack + "%", "--stack"), per_stack=limit if stack else 1)
