"""The leak-suspect trend kept as it goes: constant work per sample (issue 26).

Design.  :meth:`.analysis.Samples.trend` answers the rule with one SQL
query over every sample; run after each sample of a ``watch`` its cost grows
with the history, and a watch's total cost is quadratic.  :class:`RunningTrend`
gives the same answer from sums it updates as each sample comes, so the work
per sample follows the stacks in that sample and the memory the stacks ever
seen, never the number of samples.  What the query computes, and how it is
kept here:

* Every stack has a value at every sample: a stack absent from a sample
  holds 0 pages there, and a stack first seen at sample k held 0 at the k
  samples before.  So n, Σt and Σt² are the same for every stack (kept once),
  and a stack's Σy, Σty and Σy² change only in the samples that hold it.
  Least squares: slope = Sxy/Sxx and R² = Sxy²/(Sxx·Syy), with
  Sxx = nΣt² - (Σt)², Sxy = nΣty - ΣtΣy, Syy = nΣy² - (Σy)².  t is in
  integer nanoseconds since the axis's first sample and y in pages, so the
  sums are exact Python integers (the query's doubles are near-identical).
  DuckDB's edge cases are kept: Sxx = 0 gives a NaN slope (which compares
  above every number) and no R²; Syy = 0 gives R² = 1.
* The monotonic checks: the previous value (a stack that vanishes steps down
  to 0), the number of steps down and the pages they dropped; steps = n - 1
  for every stack.  first is the value at sample 0, last the latest.
* The axis (:mod:`.analysis`): the target's clock while every sample is of
  the first sample's boot with a clock that increases, else the host's wall
  clock -- for good, once either fails, as in the query.  So Σt, Σt² and
  Σty are kept for both axes from the first sample on.  Stacks are matched by handle within
  one boot and by their text across boots; sums are kept by both keys until
  a sample of another boot drops the handles.
* For the live table's sparklines each stack keeps its last ``window``
  values (a stack's full series stays on disk, for ``plot`` and ``diff``).

:meth:`RunningTrend.trend` returns the rows :meth:`.analysis.Samples.trend`
returns, in the same order, with ``series`` cut to the window.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Optional

from .analysis import RULE
from .snapshot import same_boot

AXES = ("target clock", "host clock")
WINDOW = 30


class _Stack:
    """One stack's running sums (see the module's documentation)."""

    __slots__ = ("sy", "syy", "sty", "first", "last", "drops", "dropped", "info", "recent")

    def __init__(self, first_sample: bool, axes: int, window: int):
        self.sy = self.syy = 0
        self.sty = [0] * axes
        self.first = None if first_sample else 0  # seen later: it held 0 at sample 0
        self.last = 0
        self.drops = self.dropped = 0
        self.info = None  # (stack, top_frame, handle) of the latest sample that held it
        self.recent: deque = deque(maxlen=window)  # (sample, pages) of the latest samples that held it


class _Keyed:
    """The stacks under one key (handle or stack text)."""

    def __init__(self, axes: int, window: int):
        self.axes, self.window = axes, window
        self.stacks: dict = {}
        self.held: set = set()  # keys the previous sample held


class RunningTrend:
    """The trend of a series of snapshots, updated by :meth:`add` one snapshot at a time."""

    def __init__(self, window: int = WINDOW):
        self.window = window
        self.n = 0
        self.first_meta: Optional[dict] = None
        self.same_boot = True
        self.target_axis = True  # the target's clock still serves as the axis
        self._origin = [0, 0]  # ns of sample 0 on each axis
        self._prev_clock: Optional[int] = None
        self._st = [0, 0]  # Σt, Σt² per axis: [axis] -> int
        self._stt = [0, 0]
        self._tmax = [0, 0]
        self._keys = {"handle": _Keyed(2, window), "stack": _Keyed(2, window)}

    @property
    def axis(self) -> str:
        return AXES[0] if self.target_axis else AXES[1]

    @property
    def stack_key(self) -> str:
        return "handle" if self.same_boot else "stack"

    @property
    def minutes(self) -> float:
        """The span of the samples so far on the axis, minutes (0 for one sample)."""
        return self._tmax[self._axis()] / 60e9 if self.n else 0.0

    def _axis(self) -> int:
        return 0 if self.target_axis else 1

    def add(self, table, meta: dict) -> None:
        """One more snapshot: its rows (a pyarrow Table in the snapshot schema) and metadata."""
        i = self.n
        clock = meta.get("clock_ns")
        if i == 0:
            self.first_meta = meta
            self.target_axis = clock is not None
            self._origin = [clock or 0, meta["time_ns"]]
        else:
            if self.same_boot and not same_boot(self.first_meta, meta):
                self.same_boot = False
                self._keys.pop("handle", None)
            if self.target_axis and (not self.same_boot or clock is None or clock <= self._prev_clock):
                self.target_axis = False
        self._prev_clock = clock
        t = [(clock - self._origin[0]) if self.target_axis else 0, meta["time_ns"] - self._origin[1]]
        for a in (0, 1):
            self._st[a] += t[a]
            self._stt[a] += t[a] * t[a]
            self._tmax[a] = max(self._tmax[a], t[a])
        cols = table.select(["kind", "handle", "stack", "top_frame", "pages"]).to_pydict()
        per = {"handle": {}, "stack": {}}
        info = {"handle": {}, "stack": {}}
        for kind, handle, stack, top, pages in zip(cols["kind"], cols["handle"], cols["stack"], cols["top_frame"],
                                                   cols["pages"]):
            if kind != "stack":
                continue
            for name, key in (("handle", handle), ("stack", stack)):
                per[name][key] = per[name].get(key, 0) + pages
                info[name].setdefault(key, (stack, top, handle))  # the first row, as arg_max keeps it
        for name, keyed in self._keys.items():
            self._update(keyed, i, t, per[name], info[name])
        self.n += 1

    @staticmethod
    def _update(keyed: _Keyed, i: int, t: list, values: dict, info: dict) -> None:
        for key, y in values.items():
            s = keyed.stacks.get(key)
            if s is None:
                s = keyed.stacks[key] = _Stack(i == 0, keyed.axes, keyed.window)
            if s.first is None:
                s.first = y
            elif y < s.last:
                s.drops += 1
                s.dropped += s.last - y
            s.last = y
            s.sy += y
            s.syy += y * y
            for a in range(keyed.axes):
                s.sty[a] += t[a] * y
            s.info = info[key]
            s.recent.append((i, y))
        for key in keyed.held.difference(values):
            s = keyed.stacks[key]  # vanished: a step down to 0
            if s.last > 0:
                s.drops += 1
                s.dropped += s.last
            s.last = 0
        keyed.held = set(values)

    def trend(self, rule: Optional[dict] = None) -> list[dict]:
        """Every stack's fit and whether it is a suspect, as :meth:`.analysis.Samples.trend`
        (same keys, same order); ``series`` holds the last ``window`` samples only."""
        r = dict(RULE, **(rule or {}))
        n, a = self.n, self._axis()
        st, stt = self._st[a], self._stt[a]
        sxx = n * stt - st * st
        lo = max(0, n - self.window)
        rows = []
        for s in self._keys[self.stack_key].stacks.values():
            sxy = n * s.sty[a] - st * s.sy
            syy = n * s.syy - s.sy * s.sy
            if sxx == 0:
                slope, r2 = math.nan, None
            else:
                slope = sxy / sxx * 60e9
                r2 = 1.0 if syy == 0 else (sxy * sxy) / (sxx * syy)
            first, last = s.first, s.last
            steps = n - 1
            rising = steps - s.drops
            growth = last - first
            suspect = (n >= r["min_samples"] and (math.isnan(slope) or slope >= r["min_rate"])
                       and growth >= max(r["min_growth"], 1) and (r2 or 0) >= r["min_r2"]
                       and rising >= r["min_rising"] * steps and s.dropped <= r["max_drop"] * growth)
            held = dict(s.recent)
            stack, top, handle = s.info
            rows.append({"stack": stack.split("\n"), "top_frame": top, "handle": handle, "n": n, "slope": slope,
                         "r2": r2, "first": first, "last": last, "steps": steps, "rising": rising,
                         "dropped": s.dropped, "series": [held.get(j, 0) for j in range(lo, n)],
                         "suspect": suspect, "growth": growth, "_text": stack})
        # ORDER BY suspect DESC, slope DESC NULLS LAST (NaN above all), last DESC, stack
        rows.sort(key=lambda row: (not row["suspect"], not math.isnan(row["slope"]),
                                   -row["slope"] if not math.isnan(row["slope"]) else 0, -row["last"],
                                   row["_text"]))
        for row in rows:
            del row["_text"]
        return rows


__all__ = ["RunningTrend", "WINDOW"]
