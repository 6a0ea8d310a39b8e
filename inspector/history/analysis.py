"""Diff, trend and leak suspects: DuckDB SQL over snapshots, in-process.

Design.  Every question over time is a query over the snapshots' rows, run
by DuckDB inside this process (no server): :class:`Samples` puts N
snapshots -- Parquet files, read where they lie (a compacted file of a long
watch is the many samples it holds), or snapshots just taken in memory
(Arrow tables) -- behind two views: ``samples`` (one row per
snapshot: its number, time axis and metadata) and ``rows`` (every row of
every snapshot, with its ``sample`` number).  Snapshots of an older schema
are mapped onto the current columns by their SELECT (:func:`_columns`).

Stacks are matched by their handle when every snapshot comes from the same
boot (:func:`~inspector.history.snapshot.same_boot`): a stack depot handle
names one stack for the life of a boot.  Across boots, kernels or machines
the handle means nothing, and stacks are matched by their symbolized text.

The time axis of a trend is the target's own clock (local_clock(), as the
snapshots recorded it) when every snapshot has one from the same boot,
increasing; otherwise the host's wall clock.  The target's clock is what a
guest's workload runs by: it stands still while ``--pause`` holds the
guest, and while a dumped kernel is not running.

The leak-suspect rule (:data:`RULE`, one query in :meth:`Samples.trend`):
over at least ``min_samples`` samples, a stack is a suspect when

* its least-squares slope is at least ``min_rate`` pages per minute (a stack
  absent from a sample holds 0 pages there), and it grew by at least
  ``min_growth`` pages from the first sample to the last (over a short
  window a few pages make a steep slope),
* the straight line explains the series: R^2 >= ``min_r2``,
* it is monotonic enough: at least ``min_rising`` of the steps between
  consecutive samples do not go down, and all the drops together are at most
  ``max_drop`` of its net growth (last - first > 0).

A leak that pauses and resumes passes (flat steps are not drops); churn
that allocates and frees fails the monotonic test or the fit, and slow,
legitimate growth stays under the rate.  Suspects are ranked by slope.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Optional, Sequence, Union

import duckdb

from ..errors import UsageError
from .snapshot import ALLOCATOR_FRAMES, Snapshot, file_metas, function_of, same_boot, top_frame

RULE = {"min_samples": 3, "min_rate": 256.0, "min_growth": 256, "min_r2": 0.8, "min_rising": 0.8, "max_drop": 0.1}
BY = ("stack", "pid", "tgid", "comm")  # tgid: page_owner_sort's grouping of a process's threads


def _columns(meta: dict) -> str:
    """The SELECT list that maps a snapshot of ``meta["schema"]`` onto the
    current columns (schema 1 is the current one)."""
    return "*"


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


@dataclass
class Samples:
    """Snapshots, in the order given, behind the views ``samples`` and ``rows``
    (in ``con``, a DuckDB connection to reuse, else a new one)."""

    sources: Sequence[Union[str, Snapshot, tuple]]
    con: Optional[duckdb.DuckDBPyConnection] = None
    metas: list = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.con is None:
            self.con = duckdb.connect()
        selects = []
        for src in self.sources:
            i = len(self.metas)  # the number of this source's (first) sample
            if isinstance(src, Snapshot):
                metas, compacted, part = [src.meta], False, None
                self.con.register(f"snap_{i}", src.table)
                where = f"snap_{i}"
            else:  # a file: every snapshot it holds, or (file, index) one of a compacted file's
                path, part = src if isinstance(src, tuple) else (src, None)
                metas, compacted = file_metas(path)
                where = f"read_parquet({_quote(path)})"
            if not compacted:
                selects.append(f"SELECT {i} AS sample, {_columns(metas[0])} FROM {where}")
            elif part is not None:
                metas = [metas[part]]
                selects.append(f"SELECT {i} AS sample, {_columns(metas[0])} EXCLUDE (part) FROM {where} "
                               f"WHERE part = {int(part)}")
            else:
                selects.append(f"SELECT {i} + part AS sample, {_columns(metas[0])} EXCLUDE (part) FROM {where}")
            self.metas.extend(metas)
        if not selects:
            raise UsageError("no snapshots")
        self.con.execute("CREATE OR REPLACE VIEW rows AS " + " UNION ALL BY NAME ".join(selects))
        self.same_boot = all(same_boot(self.metas[0], m) for m in self.metas[1:])
        clocks = [m.get("clock_ns") for m in self.metas]
        if self.same_boot and None not in clocks and all(b > a for a, b in zip(clocks, clocks[1:])):
            self.axis, base = "target clock", clocks
        else:
            self.axis, base = "host clock", [m["time_ns"] for m in self.metas]
        self.con.execute("CREATE OR REPLACE TABLE samples (sample INTEGER, t_min DOUBLE, time_ns BIGINT, "
                         "clock_ns BIGINT)")
        self.con.executemany("INSERT INTO samples VALUES (?, ?, ?, ?)",
                             [(i, (t - base[0]) / 60e9, m["time_ns"], m.get("clock_ns"))
                              for i, (t, m) in enumerate(zip(base, self.metas))])
        # Stacks: by handle within one boot, else by their text.
        self.stack_key = "handle" if self.same_boot else "stack"

    def query(self, sql: str, params: Sequence = ()) -> list[dict]:
        cur = self.con.execute(sql, list(params))
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row)) for row in cur.fetchall()]

    @property
    def n(self) -> int:
        """How many samples."""
        return len(self.metas)

    def series(self, keys: Sequence) -> dict:
        """Per stack key (a handle within one boot, else the stack's text): its
        pages at every sample, 0 where absent."""
        out = {k: [0] * len(self.metas) for k in keys}
        for r in self.query(f"""SELECT sample, {self.stack_key} AS k, sum(pages) AS pages FROM rows
                                WHERE kind = 'stack' AND list_contains(?, {self.stack_key}) GROUP BY ALL""",
                            (list(keys),)):
            out[r["k"]][r["sample"]] = int(r["pages"])
        return out

    @property
    def minutes(self) -> float:
        return self.query("SELECT max(t_min) AS m FROM samples")[0]["m"] or 0.0

    # -- two moments ------------------------------------------------------------------------
    def diff(self, by: str = "stack", a: int = 0, b: int = 1) -> dict:
        """Per ``by`` (stack, pid, tgid, comm): pages and allocations in samples
        ``a`` and ``b`` and the change, sorted by growth; and the totals per node."""
        if by not in BY:
            raise UsageError(f"unknown --by {by!r} (one of: {', '.join(BY)})")
        kind = "stack" if by == "stack" else "task"
        key = self.stack_key if by == "stack" else by
        extra = {"stack": "arg_max(stack, sample) AS stack, arg_max(top_frame, sample) AS top_frame, "
                          "arg_max(handle, sample) AS handle",
                 "pid": "string_agg(DISTINCT comm, ',' ORDER BY comm) AS comm",
                 "tgid": "string_agg(DISTINCT comm, ',' ORDER BY comm) AS comm, count(DISTINCT pid) AS pids",
                 "comm": "count(DISTINCT pid) AS pids"}[by]
        rows = self.query(f"""
            WITH g AS (SELECT sample, {key} AS key, {extra}, sum(pages) AS pages, sum(allocations) AS allocations
                       FROM rows WHERE kind = ? AND sample IN (?, ?) GROUP BY sample, key),
                 a AS (SELECT * FROM g WHERE sample = ?), b AS (SELECT * FROM g WHERE sample = ?)
            SELECT coalesce(b.key, a.key) AS key, {', '.join(f'coalesce(b.{c}, a.{c}) AS {c}' for c in
                                                             _extra_names(by))},
                   coalesce(a.pages, 0) AS pages_a, coalesce(b.pages, 0) AS pages_b,
                   coalesce(b.pages, 0) - coalesce(a.pages, 0) AS delta_pages,
                   coalesce(a.allocations, 0) AS allocations_a, coalesce(b.allocations, 0) AS allocations_b,
                   coalesce(b.allocations, 0) - coalesce(a.allocations, 0) AS delta_allocations,
                   CASE WHEN a.key IS NULL THEN 'new' WHEN b.key IS NULL THEN 'vanished'
                        WHEN b.pages > a.pages OR (b.pages = a.pages AND b.allocations > a.allocations)
                        THEN 'grew' ELSE 'shrank' END AS status
            FROM a FULL OUTER JOIN b ON a.key = b.key
            WHERE coalesce(a.pages, 0) != coalesce(b.pages, 0)
               OR coalesce(a.allocations, 0) != coalesce(b.allocations, 0)
            ORDER BY delta_pages DESC, delta_allocations DESC, CAST(coalesce(b.key, a.key) AS VARCHAR)""",
                          (kind, a, b, a, b))
        nodes = self.query("""
            SELECT node, coalesce(sum(pages) FILTER (WHERE sample = ?), 0) AS pages_a,
                   coalesce(sum(pages) FILTER (WHERE sample = ?), 0) AS pages_b,
                   coalesce(sum(allocations) FILTER (WHERE sample = ?), 0) AS allocations_a,
                   coalesce(sum(allocations) FILTER (WHERE sample = ?), 0) AS allocations_b
            FROM rows WHERE kind = ? AND sample IN (?, ?) GROUP BY node ORDER BY node""",
                           (a, b, a, b, kind, a, b))
        for n in nodes:
            n["delta_pages"] = n["pages_b"] - n["pages_a"]
            n["delta_allocations"] = n["allocations_b"] - n["allocations_a"]
        for r in rows:
            if by == "stack":
                r["stack"] = r["stack"].split("\n")
        return {"rows": rows, "nodes": nodes,
                "new": _count(r for r in rows if r["status"] == "new"),
                "vanished": _count(r for r in rows if r["status"] == "vanished")}

    # -- many moments -----------------------------------------------------------------------
    def trend(self, rule: Optional[dict] = None) -> list[dict]:
        """Every stack's series over the samples, its fit and whether it is a
        leak suspect (see the module's documentation); suspects first, by slope."""
        r = dict(RULE, **(rule or {}))
        key = self.stack_key
        rows = self.query(f"""
            WITH per AS (SELECT sample, {key} AS k, sum(pages) AS pages FROM rows WHERE kind = 'stack'
                         GROUP BY ALL),
                 info AS (SELECT {key} AS k, arg_max(stack, sample) AS stack,
                                 arg_max(top_frame, sample) AS top_frame, arg_max(handle, sample) AS handle
                          FROM rows WHERE kind = 'stack' GROUP BY ALL),
                 grid AS (SELECT s.sample, s.t_min, i.k, coalesce(p.pages, 0) AS pages
                          FROM samples s CROSS JOIN info i LEFT JOIN per p ON p.sample = s.sample AND p.k = i.k),
                 steps AS (SELECT *, pages - lag(pages) OVER (PARTITION BY k ORDER BY sample) AS step FROM grid),
                 fit AS (SELECT k, count(*) AS n, regr_slope(pages, t_min) AS slope, regr_r2(pages, t_min) AS r2,
                                arg_min(pages, sample) AS first, arg_max(pages, sample) AS last,
                                count(step) AS steps, count(step) FILTER (WHERE step >= 0) AS rising,
                                coalesce(sum(-step) FILTER (WHERE step < 0), 0) AS dropped,
                                list(pages ORDER BY sample) AS series
                         FROM steps GROUP BY k)
            SELECT i.stack, i.top_frame, i.handle, f.*,
                   (f.n >= ? AND coalesce(f.slope, 0) >= ? AND f.last - f.first >= greatest(?, 1)
                    AND coalesce(f.r2, 0) >= ?
                    AND f.rising >= ? * f.steps AND f.dropped <= ? * (f.last - f.first)) AS suspect
            FROM fit f JOIN info i USING (k)
            ORDER BY suspect DESC, slope DESC NULLS LAST, last DESC, i.stack""",
                          (r["min_samples"], r["min_rate"], r["min_growth"], r["min_r2"], r["min_rising"],
                           r["max_drop"]))
        for row in rows:
            row.pop("k")
            row["stack"] = row["stack"].split("\n")
            row["growth"] = row["last"] - row["first"]
        return rows


def _extra_names(by: str) -> tuple[str, ...]:
    return {"stack": ("stack", "top_frame", "handle"), "pid": ("comm",), "tgid": ("comm", "pids"),
            "comm": ("pids",)}[by]


def _count(rows) -> dict:
    n = pages = 0
    for r in rows:
        n += 1
        pages += r["delta_pages"]
    return {"count": n, "pages": pages}


# -- labels ------------------------------------------------------------------------------------------

_SUFFIX = re.compile(r"(\.(constprop|isra|part|cold|llvm)(\.\d+)?)+$")


def _callers(frames: Sequence[str]) -> list[str]:
    """The functions from the top frame outside the allocator on, compiler suffixes removed."""
    names = [function_of(f) for f in frames]
    top = top_frame(frames)
    start = names.index(top) if top in names else 0
    return [_SUFFIX.sub("", n) for n in names[start:]] or ["?"]


def labels(stacks: Sequence[Sequence[str]]) -> list[str]:
    """A short readable label per stack, unique among ``stacks``: its top
    frame outside the allocator and its caller ("shmem_get_folio_gfp <
    shmem_fallocate"), followed by as many further callers as it takes to
    tell it from the others ("a < b < c", or "a < b < ... < f" when the first
    difference lies deeper); stacks whose functions are all the same get
    "#2", "#3", ..."""
    callers = [_callers(s) for s in stacks]
    prefixes: dict[tuple, int] = {}
    for c in callers:
        for d in range(1, len(c) + 1):
            prefixes[tuple(c[:d])] = prefixes.get(tuple(c[:d]), 0) + 1
    out, seen = [], {}
    for c in callers:
        shortest = min(2, len(c))  # functions all equal to another's: the shortest label, numbered
        d = next((d for d in range(shortest, len(c) + 1) if prefixes[tuple(c[:d])] == 1), shortest)
        text = " < ".join(c[:d]) if d <= 3 else f"{c[0]} < {c[1]} < ... < {c[d - 1]}"
        seen[text] = seen.get(text, 0) + 1
        out.append(text if seen[text] == 1 else f"{text} #{seen[text]}")
    return out


__all__ = ["ALLOCATOR_FRAMES", "BY", "RULE", "Samples", "labels"]
