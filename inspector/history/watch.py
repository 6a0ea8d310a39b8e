"""``watch``: sample a live kernel again and again, keep each snapshot, name leak suspects.

Design.  :class:`Watcher` drives the samples: at each tick of the interval
it runs the user's ``--exec`` command (if any), stops a QEMU guest through
its control socket (``--pause``, :mod:`.qmp`), forgets everything the
session learnt from the target's memory (:meth:`PageExt.reset`: tables may
have come or gone) and takes a snapshot (:func:`.snapshot.take`), lets the
guest go, and writes the snapshot to the directory.  What each sample could
not read is merged into :attr:`Watcher.missing`.  The judgement is
:meth:`.analysis.Samples.trend` over the snapshots so far -- the same SQL
whether it runs after each sample for the live table or at the end for the
verdict.  :func:`table` and :func:`spark` draw the live table (rich).

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
from typing import Callable, Iterator, Optional

from ..errors import UsageError
from ..model import Missing
from .analysis import RULE, Samples, labels
from .qmp import paused
from .snapshot import Snapshot, take

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


class Watcher:
    """Samples of one live kernel (a :class:`~inspector.session.PageExt`)."""

    def __init__(self, pe, *, interval: float, count: int, outdir: str, pause: Optional[str] = None,
                 exec_cmd: Optional[str] = None, sleep: Callable[[float], None] = time.sleep,
                 timeout: Optional[float] = None):
        self.pe = pe
        self.interval, self.count, self.outdir = interval, count, outdir
        self.pause, self.exec_cmd, self.sleep = pause, exec_cmd, sleep
        self.timeout = timeout  # --pause's QMP exchanges (None: qmp.TIMEOUT)
        self.paused_by_other = False  # --pause found the guest paused already (left so)
        self.snapshots: list[Snapshot] = []
        self.missing = Missing()
        import duckdb
        with duckdb.connect() as con:  # loaded and used once before the first sample
            con.execute("SELECT regr_slope(y, x), regr_r2(y, x) FROM (VALUES (1.0, 2.0), (2.0, 3.0)) t(x, y)").fetchall()
        self._last: Optional[Samples] = None

    def _exec(self, n: int) -> None:
        env = dict(os.environ, PAGEEXT_SAMPLE=str(n), PAGEEXT_DIR=self.outdir)
        proc = subprocess.run(["sh", "-c", self.exec_cmd], env=env, stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace")
        if proc.returncode:
            last = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-1:] or [""]
            raise UsageError(f"--exec exited with status {proc.returncode} before sample {n}"
                             + (f": {last[0]}" if last[0] else ""))

    def samples(self) -> Iterator[Snapshot]:
        """Take the samples, each written to the directory; yields each."""
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
                snap = take(self.pe)
            self.missing.merge(self.pe.missing)
            snap.write(os.path.join(self.outdir, file_name(snap)))
            self.snapshots.append(snap)
            yield snap

    def trend(self, rule: Optional[dict] = None) -> tuple[Samples, list[dict]]:
        """The trend over the samples so far (a new DuckDB connection each time,
        the last one closed: one kept for all grows with every sample)."""
        if self._last is not None:
            self._last.con.close()
        self._last = Samples(self.snapshots)
        return self._last, self._last.trend(rule)


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


def verdict(samples: Samples, trend: list[dict], rule: dict) -> list[str]:
    """The verdict, in lines: the suspects (or none) and the rule."""
    n = len(samples.metas)
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
