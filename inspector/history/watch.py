"""``watch``: sample a live kernel again and again, keep each snapshot, name leak suspects.

Design.  :class:`Watcher` drives the samples: at each tick of the interval
it runs the user's ``--exec`` command (if any), stops a QEMU guest through
its control socket (``--pause``, :mod:`.qmp`), forgets everything the
session learnt from the target's memory (:meth:`PageExt.reset`: tables may
have come or gone) and takes a snapshot (:func:`.snapshot.take`), lets the
guest go, and writes the snapshot to the directory.  What each sample could
not read is merged into :attr:`Watcher.missing`.  The judgement after each
sample is :class:`.running.RunningTrend`: the rule of
:meth:`.analysis.Samples.trend` kept by running sums, so each sample costs
the same however long the watch has run, and nothing is kept in memory per
sample but a few numbers for ``--json`` (issue 26).  The snapshots
themselves are on disk only, where ``plot``, ``diff`` and the end of the
watch (its ``--plot``, the full series in ``--json``) read them with the
SQL of :mod:`.analysis`.  So that a week of samples stays small on disk,
each hour's per-sample files are folded into one file
(:func:`.snapshot.compact`) once the watch is two hours past it: the stack
texts, the same in every sample, are then stored once per file (about a
tenth of the bytes).  :func:`table` and :func:`spark` draw the live table
(rich).

On /proc/kcore the watcher is one of the processes it watches: its own
records (all of its tgid: its memory, its threads', the page cache its
reads brought in) are left out of every sample (:func:`.snapshot.take`).
It also loads all it will use (DuckDB; matplotlib with --plot) before the
first sample, so that between samples it does little but read.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import re
import subprocess
import time
from array import array
from typing import Callable, Iterator, Optional

from ..errors import UsageError
from ..model import Missing
from .analysis import RULE, Samples, labels
from .qmp import paused
from .running import RunningTrend
from .snapshot import Snapshot, compact, take

SPARKS = "▁▂▃▄▅▆▇█"


def spark(series) -> str:
    """A sparkline of a series, scaled between its own minimum and maximum."""
    lo, hi = min(series), max(series)
    if hi == lo:
        return SPARKS[0] * len(series)
    return "".join(SPARKS[round((v - lo) * (len(SPARKS) - 1) / (hi - lo))] for v in series)


def file_name(snap: Snapshot) -> str:
    """machine-YYYYmmddTHHMMSS.ffffffZ.parquet: sorted by name, sorted by time."""
    stamp = _dt.datetime.fromtimestamp(snap.meta["time_ns"] / 1e9, _dt.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    machine = re.sub(r"[^A-Za-z0-9_.-]+", "_", snap.meta.get("machine") or "kernel").strip("_.") or "kernel"
    return f"{machine}-{stamp}.parquet"


def _hour(time_ns: int) -> int:
    return time_ns // (3600 * 10**9)


class Watcher:
    """Samples of one live kernel (a :class:`~inspector.session.PageExt`)."""

    def __init__(self, pe, *, interval: float, count: int, outdir: str, pause: Optional[str] = None,
                 exec_cmd: Optional[str] = None, sleep: Callable[[float], None] = time.sleep,
                 take: Callable = take, compaction: bool = True, timeout: Optional[float] = None):
        self.pe = pe
        self.interval, self.count, self.outdir = interval, count, outdir
        self.pause, self.exec_cmd, self.sleep, self.take = pause, exec_cmd, sleep, take
        self.timeout = timeout  # --pause's QMP exchanges (None: qmp.TIMEOUT)
        self.paused_by_other = False  # --pause found the guest paused already (left so)
        self.running = RunningTrend()
        self.missing = Missing()
        self.corrupt_records = 0
        # Per sample, for --json: numbers only (a few bytes each, not a Snapshot).
        self.time_ns, self.clock_ns, self.pages = array("q"), array("q"), array("q")
        self.read_seconds = array("d")
        self.compaction = compaction
        # The files that hold this watch's samples: compacted ones (path, first
        # sample, count), one an hour, and the latest samples' own files (sample, path).
        self._compacted: list[tuple[str, int, int]] = []
        self._pending: list[tuple[int, str]] = []
        import duckdb
        with duckdb.connect() as con:  # loaded and used once before the first sample
            con.execute("SELECT regr_slope(y, x), regr_r2(y, x) FROM (VALUES (1.0, 2.0), (2.0, 3.0)) t(x, y)").fetchall()

    @property
    def taken(self) -> int:
        """How many samples were taken."""
        return self.running.n

    def _exec(self, n: int) -> None:
        env = dict(os.environ, PAGEEXT_SAMPLE=str(n), PAGEEXT_DIR=self.outdir)
        proc = subprocess.run(["sh", "-c", self.exec_cmd], env=env, stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace")
        if proc.returncode:
            last = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-1:] or [""]
            raise UsageError(f"--exec exited with status {proc.returncode} before sample {n}"
                             + (f": {last[0]}" if last[0] else ""))

    def samples(self) -> Iterator[Snapshot]:
        """Take the samples, each written to the directory and added to the
        running trend; yields each (the caller drops it: nothing keeps it)."""
        start = time.monotonic()
        n = 0
        while not self.count or n < self.count:
            n += 1
            due = start + (n - 1) * self.interval - time.monotonic()
            if due > 0:
                self.sleep(due)
            if self.exec_cmd:
                self._exec(n)
            with paused(self.pause, *(() if self.timeout is None else (self.timeout,))) if self.pause \
                    else contextlib.nullcontext() as ours:
                self.paused_by_other |= ours is False
                if n > 1:
                    self.pe.reset()  # a live kernel moved on: read everything afresh
                snap = self.take(self.pe)
            self.missing.merge(self.pe.missing)
            snap.write(os.path.join(self.outdir, file_name(snap)))
            self._record(snap)
            yield snap

    def _record(self, snap: Snapshot) -> None:
        m = snap.meta
        self.running.add(snap.table, m)
        self.corrupt_records += m["corrupt_records"]
        self.time_ns.append(m["time_ns"])
        self.clock_ns.append(-1 if m.get("clock_ns") is None else m["clock_ns"])
        self.pages.append(m["totals"]["stack"]["pages"])
        self.read_seconds.append(m["read_seconds"])
        self._pending.append((self.running.n - 1, snap.path))
        if self.compaction:
            self._compact_before(_hour(m["time_ns"]) - 1)

    def _compact_before(self, hour: int) -> None:
        """Fold the per-sample files of each hour before ``hour`` into one file
        (:func:`.snapshot.compact`).  The hour before the sample's own stays
        as it was written, so a short watch's files are all its own."""
        while self._pending and _hour(self.time_ns[self._pending[0][0]]) < hour:
            first = _hour(self.time_ns[self._pending[0][0]])
            group = [(i, p) for i, p in self._pending if _hour(self.time_ns[i]) == first]
            path = group[0][1][:-len(".parquet")] + ".hour.parquet"
            try:
                compact([p for _, p in group], path)
            finally:  # even if interrupted: once the hour's file is whole, it holds them
                if os.path.exists(path):
                    self._compacted.append((path, group[0][0], len(group)))
                    del self._pending[:len(group)]

    def trend(self, rule: Optional[dict] = None) -> list[dict]:
        """The trend over the samples so far (:class:`.running.RunningTrend`:
        constant work per sample)."""
        return self.running.trend(rule)

    def files(self) -> list[str]:
        """The files that hold this watch's samples, in time order."""
        return [p for p, _, _ in self._compacted] + [p for _, p in self._pending]

    def sample_list(self) -> list[dict]:
        """Per sample: its file (``FILE#N`` in a compacted one), time, target
        clock, read time and pages (``--json``)."""
        files = [f"{p}#{j + 1}" for p, _, count in self._compacted for j in range(count)] + \
            [p for _, p in self._pending]
        return [{"file": f, "time": _dt.datetime.fromtimestamp(t / 1e9, _dt.timezone.utc).isoformat(),
                 "time_ns": t, "clock_ns": None if c < 0 else c, "read_seconds": r, "pages": p}
                for f, t, c, r, p in zip(files, self.time_ns, self.clock_ns, self.read_seconds, self.pages)]

    def history(self) -> Samples:
        """The watch's samples as written (the files), for the SQL of :mod:`.analysis`."""
        return Samples(self.files())


def table(trend: list[dict], limit: int, title: str):
    """The live table: the fastest-growing stacks (suspects first)."""
    from rich.table import Table
    t = Table(title=title, title_justify="left", expand=False)
    for name, just in (("stack (top frame outside the allocator)", "left"), ("pages", "right"),
                       ("change", "right"), ("pages/min", "right"), ("trend", "left"), ("", "left")):
        t.add_column(name, justify=just, no_wrap=just == "right")
    rows = trend[:limit]
    for r, label in zip(rows, labels([r["stack"] for r in rows])):
        slope = "" if r["slope"] is None else f"{r['slope']:+.0f}"
        t.add_row(label, str(r["last"]), f"{r['growth']:+d}", slope, spark(r["series"]),
                  "SUSPECT" if r["suspect"] else "")
    return t


def verdict(samples, trend: list[dict], rule: dict) -> list[str]:
    """The verdict, in lines: the suspects (or none) and the rule; ``samples`` is
    a :class:`.running.RunningTrend` or an :class:`.analysis.Samples`."""
    n = samples.n
    span = f"{n} samples over {samples.minutes:.1f} min of the {samples.axis}"
    rule_text = (f"rule: over >= {rule['min_samples']} samples, slope >= {rule['min_rate']:g} pages/min, "
                 f"growth >= {rule['min_growth']:g} pages, R^2 >= {rule['min_r2']:g}, >= {rule['min_rising']:.0%} "
                 f"of steps not down, drops <= {rule['max_drop']:.0%} of the growth")
    if n < rule["min_samples"]:
        return [f"verdict: too few samples for a verdict ({span})", rule_text]
    suspects = [r for r in trend if r["suspect"]]
    if not suspects:
        return [f"verdict: no leak suspect ({span})", rule_text]
    lines = [f"verdict: {len(suspects)} leak suspect{'s' if len(suspects) > 1 else ''} ({span}):"]
    for r, label in zip(suspects, labels([r["stack"] for r in suspects])):
        lines.append(f"  {label}: {r['first']} -> {r['last']} pages ({r['growth']:+d}), {r['slope']:.0f} pages/min, "
                     f"R^2 {r['r2']:.2f}, {r['rising']}/{r['steps']} steps not down")
    return lines + [rule_text]


__all__ = ["RULE", "Watcher", "spark", "table", "verdict"]
