"""watch over a long run, without a kernel: the running trend against the SQL one (issue 26).

:class:`inspector.history.running.RunningTrend` keeps the leak-suspect
trend by running sums; :meth:`inspector.history.analysis.Samples.trend` is
the SQL query over every sample that defines the rule.  Here both judge the
same generated series -- leaks that pause, stacks that appear late, vanish
and come back, drops, churn, stacks split over nodes, a target clock that
goes missing, a reboot -- after every sample, as a watch does, and must name
the same suspects in the same order with the same fits.
"""

from __future__ import annotations

import json
import math
import os
import random

import pytest

from inspector.history import analysis, snapshot
from inspector.history.running import RunningTrend
from test_history_unit import ALLOC, make


def frames(k: int) -> tuple:
    return ALLOC + (f"caller_{k:03d}+0x{k:x}/0x200", f"syscall_{k % 7}+0x10/0x80")


def series_kinds(rng: random.Random, n: int) -> list[list]:
    """Per stack a series of n values (0: absent), of many shapes."""
    out = []

    def leak(start, rate, pause_p, drop_p):
        v, s = 0, []
        for i in range(n):
            if i >= start and rng.random() >= pause_p:
                v += rate + rng.randint(0, rate // 4)
            if v and rng.random() < drop_p:
                v -= rng.randint(1, max(1, v // 8))
            s.append(v)
        return s

    out.append(leak(0, 400, 0.2, 0.0))                                   # a leak that pauses
    out.append(leak(n // 3, 900, 0.1, 0.0))                              # a late leak
    out.append(leak(0, 500, 0.0, 0.15))                                  # a leak that sometimes drops
    out.append(leak(0, 300, 0.0, 0.5))                                   # drops too much
    out.append(leak(0, 20, 0.0, 0.0))                                    # slow and steady
    for _ in range(6):                                                   # churn, sometimes absent
        out.append([rng.choice([0, rng.randint(1, 3000)]) for _ in range(n)])
    k = rng.randint(1, n - 1)
    out.append([rng.randint(100, 200) if i < k else 0 for i in range(n)])  # vanishes
    out.append([0] * k + [rng.randint(1, 50)] * (n - k))                 # appears late, then flat
    out.append([5000 if i % 5 else 0 for i in range(n)])                 # vanishes and comes back
    j = rng.randint(1, n - 1)
    out.append([0] * j + [4000] * (n - j))                               # one jump
    return out


def write_series(d, rng, n, *, clock_gap=None, clock_still=None, reboot_at=None, nodes=False, twins=False):
    """Snapshot files of the generated series; their paths."""
    values = series_kinds(rng, n)
    stacks = [frames(k) for k in range(len(values))]
    handles = {f: 0x100000 + k for k, f in enumerate(stacks)}
    other = {f: 0x200000 + (len(stacks) - k) for k, f in enumerate(stacks)}  # the same stacks after a reboot
    paths, clock = [], 0.0
    for i in range(n):
        clock += 0.0 if i == clock_still else rng.choice([5.0, 10.0, 10.0, 31.5])
        per = {}
        for f, vs in zip(stacks, values):
            v = vs[i]
            per[f] = {0: v // 2, 1: v - v // 2} if nodes and v else v
        after = reboot_at is not None and i >= reboot_at
        clock_s = None if (clock_gap is not None and i == clock_gap) else clock
        paths.append(str(make(d / f"s{i:03d}.parquet", per, sample=i, clock_s=clock_s,
                              boot="boot-2" if after else "boot-1", handles=other if after else handles)))
    if twins:  # a second handle whose stack reads the same as the first's (text keys merge them)
        t = snapshot.load(paths[-1])
        rows = t.table.to_pylist()
        rows.append(dict(rows[0], handle=0x1fffff, pages=777))
        import pyarrow as pa
        snapshot.write_table(pa.Table.from_pylist(rows, schema=snapshot.SCHEMA), t.meta, paths[-1])
    return paths


def same(sql: list[dict], run: list[dict], window: int) -> None:
    assert [r["stack"] for r in run if r["suspect"]] == [r["stack"] for r in sql if r["suspect"]]
    # The same order, but where two slopes are equal: the exact sums tie them (and
    # the next key decides), DuckDB's doubles may differ in the last bits.
    for a, b in zip(sql, run):
        assert a["stack"] == b["stack"] or a["slope"] == pytest.approx(b["slope"], rel=1e-9), (a, b)
    by_key = {(r["handle"], tuple(r["stack"])): r for r in run}  # a handle in one boot, the text across
    assert len(by_key) == len(run) == len(sql)
    for a in sql:
        b = by_key[a["handle"], tuple(a["stack"])]
        for k in ("n", "first", "last", "steps", "rising", "dropped", "growth", "suspect", "handle", "top_frame"):
            assert a[k] == b[k], (k, a, b)
        if a["slope"] is None or (isinstance(a["slope"], float) and math.isnan(a["slope"])):
            assert math.isnan(b["slope"])
        else:
            assert b["slope"] == pytest.approx(a["slope"], rel=1e-9, abs=1e-6)
        if a["r2"] is None:
            assert b["r2"] is None
        else:
            assert b["r2"] == pytest.approx(a["r2"], rel=1e-9, abs=1e-9)
        assert b["series"] == a["series"][-window:]


RULES = [None, {"min_rate": 10, "min_growth": 50}, {"min_r2": 0.5, "min_rising": 0.6, "max_drop": 0.3}]


@pytest.mark.parametrize("case", [
    dict(seed=1),
    dict(seed=2, nodes=True),
    dict(seed=3, clock_gap=17),            # one sample without the target's clock: the host's, from then on
    dict(seed=7, clock_still=11),          # a clock that does not increase: the host's, from then on
    dict(seed=4, reboot_at=20),            # another boot: stacks by their text, the host's clock
    dict(seed=5, twins=True),
    dict(seed=6, reboot_at=25, twins=True),
])
def test_the_running_trend_names_the_same_suspects_as_the_sql(tmp_path, case):
    rng = random.Random(case.pop("seed"))
    n = 30
    paths = write_series(tmp_path, rng, n, **case)
    window = 8
    run = RunningTrend(window=window)
    suspects_seen = 0
    for i, p in enumerate(paths):
        snap = snapshot.load(p)
        run.add(snap.table, snap.meta)
        if i % 3 and i != n - 1 and i > 2:
            continue  # the SQL over every prefix would be slow; these prefixes suffice
        s = analysis.Samples(paths[:i + 1])
        assert (run.axis, run.stack_key, run.n) == (s.axis, s.stack_key, len(s.metas))
        assert run.minutes == pytest.approx(s.minutes, rel=1e-12, abs=1e-12)
        for rule in RULES:
            sql = s.trend(rule)
            same(sql, run.trend(rule), window)
            suspects_seen += sum(r["suspect"] for r in sql)
        s.con.close()
    assert suspects_seen > 0  # the series do make suspects


def test_edge_cases_of_the_fit(tmp_path):
    """One sample: no slope (NaN, as DuckDB's regr_slope) and no R^2; a flat stack's R^2 is 1."""
    a = make(tmp_path / "a.parquet", {frames(1): 10, frames(2): 7}, clock_s=1.0,
             handles={frames(1): 1, frames(2): 2})
    run = RunningTrend()
    snap = snapshot.load(str(a))
    run.add(snap.table, snap.meta)
    rows = run.trend()
    assert all(math.isnan(r["slope"]) and r["r2"] is None and r["steps"] == 0 for r in rows)
    b = make(tmp_path / "b.parquet", {frames(1): 10}, sample=1, clock_s=2.0, handles={frames(1): 1})
    snap = snapshot.load(str(b))
    run.add(snap.table, snap.meta)
    rows = {tuple(r["stack"]): r for r in run.trend()}
    assert rows[frames(1)]["slope"] == 0 and rows[frames(1)]["r2"] == 1.0
    gone = rows[frames(2)]
    assert gone["slope"] == pytest.approx(-7 / (1 / 60)) and gone["dropped"] == 7 and gone["rising"] == 0
    assert gone["series"] == [7, 0]


def test_a_watch_keeps_no_sample_in_memory_and_judges_as_the_files_do(tmp_path):
    """A Watcher over a synthetic leaking kernel: each sample on disk, the
    running verdict the SQL's over those files, the planted leak its only suspect."""
    from inspector.history.watch import Watcher
    from inspector.sim.watch import LEAK, Kernel, Session
    kernel = Kernel(steady=60, churn=10, transient=30, tasks=10, seed=3)
    w = Watcher(Session(), interval=0, count=25, outdir=str(tmp_path), take=kernel.take)
    for snap in w.samples():
        assert snap.path and os.path.exists(snap.path)
    assert not hasattr(w, "snapshots")
    files = w.files()
    assert len(files) == 25 == len(set(files)) and sorted(os.listdir(tmp_path)) == sorted(os.path.basename(f) for f in files)
    running = w.trend()
    sql = w.history().trend()
    assert [r["stack"] for r in running if r["suspect"]] == [list(LEAK)]
    same(sql, running, 30)
    listed = w.sample_list()
    assert [s["file"] for s in listed] == files and listed[1]["time_ns"] - listed[0]["time_ns"] == 10 * 10**9
    assert listed[-1]["clock_ns"] == snapshot.load(files[-1]).meta["clock_ns"]


def run_synthetic(outdir, samples: int, step_s: float, compaction: bool = True):
    """A watch of ``samples`` over a synthetic kernel; the Watcher and the leak's pages per sample."""
    from inspector.history.watch import Watcher
    from inspector.sim.watch import Kernel, Session
    kernel = Kernel(steady=40, churn=8, transient=20, tasks=8, step_s=step_s, seed=5)
    leak = []

    def take(pe):
        snap = kernel.take(pe)
        leak.append(kernel.leaked)
        return snap

    os.makedirs(outdir)
    w = Watcher(Session(), interval=0, count=samples, outdir=str(outdir), take=take, compaction=compaction)
    for _ in w.samples():
        pass
    return w, leak


def test_a_long_watch_compacts_its_hours_and_plot_and_diff_read_them(tmp_path):
    from conftest import inspect
    from inspector.sim.watch import LEAK
    # 30 samples 10 minutes apart: 5 hours, of which all but the last two are compacted.
    w, leak = run_synthetic(tmp_path / "w", 30, 600)
    names = sorted(os.listdir(tmp_path / "w"))
    hours = [n for n in names if n.endswith(".hour.parquet")]
    metas = {n: snapshot.file_metas(str(tmp_path / "w" / n)) for n in names}
    assert all(metas[n][1] for n in hours) and not any(metas[n][1] for n in names if n not in hours)
    assert sum(len(metas[n][0]) for n in names) == 30  # every sample once
    last_hour = max(m["time_ns"] for m, _ in [(ms[0][-1], 0) for ms in metas.values()]) // (3600 * 10**9)
    assert all(ms[0][-1]["time_ns"] // (3600 * 10**9) < last_hour - 1 for n, ms in metas.items() if n in hours)
    assert all(ms[0][0]["time_ns"] // (3600 * 10**9) >= last_hour - 1 for n, ms in metas.items() if n not in hours)
    assert len(hours) >= 3 and len(names) - len(hours) <= 12
    # The same bytes of history, uncompacted, take much more room.
    plain, _ = run_synthetic(tmp_path / "plain", 30, 600, compaction=False)
    size = sum(f.stat().st_size for f in (tmp_path / "w").iterdir())
    assert size < 0.6 * sum(f.stat().st_size for f in (tmp_path / "plain").iterdir())
    # plot reads the compacted history: every sample, the leak's series as the kernel made it.
    doc = json.loads(inspect("plot", str(tmp_path / "w"), "-o", str(tmp_path / "p.png"), "--json").stdout)
    assert doc["sample_count"] == 30 and doc["lines"][0]["stack"] == list(LEAK) and doc["lines"][0]["y"] == leak
    # A per-sample file left beside the compacted file that holds it is drawn once.
    first_hour = sorted(hours)[0]
    snapshot.write_table(*_part(tmp_path / "w" / first_hour, 0), str(tmp_path / "w" / "stray.parquet"))
    again = json.loads(inspect("plot", str(tmp_path / "w"), "-o", str(tmp_path / "p.png"), "--json").stdout)
    assert again["sample_count"] == 30
    # diff names one sample of a compacted file as FILE#N; the JSON list of samples says where each went.
    listed = w.sample_list()
    assert listed[0]["file"] == f"{tmp_path / 'w' / first_hour}#1" and listed[-1]["file"].endswith(".parquet")
    d = json.loads(inspect("diff", listed[0]["file"], listed[-1]["file"], "--json").stdout)
    top = d["rows"][0]
    assert top["stack"] == list(LEAK) and (top["pages_a"], top["pages_b"]) == (leak[0], leak[-1])
    d = json.loads(inspect("diff", listed[1]["file"], listed[7]["file"], "--json").stdout)
    assert next(r for r in d["rows"] if r["stack"] == list(LEAK))["delta_pages"] == leak[7] - leak[1]
    # The running verdict is still the SQL's over the files.
    same(w.history().trend(), w.trend(), 30)


def _part(path, j):
    metas, _ = snapshot.file_metas(str(path))
    import pyarrow.parquet as pq
    t = pq.read_table(str(path)).filter(pq.read_table(str(path)).column("part").to_numpy() == j)
    return t.drop_columns(["part"]), metas[j]


def test_compacted_files_refuse_what_is_not_one_sample(tmp_path):
    from conftest import inspect
    from test_history_unit import one_error_line
    w, _ = run_synthetic(tmp_path / "w", 20, 900)
    hour = next(p for p in w.files() if p.endswith(".hour.parquet"))
    n = len(snapshot.file_metas(hour)[0])
    last = w.files()[-1]
    for a, why in ((hour, f"{n} snapshots of a watch, compacted into one file; name one as"),
                   (f"{hour}#0", f"holds {n} snapshots; N goes from 1 to {n}"),
                   (f"{hour}#{n + 1}", "N goes from 1"), (f"{hour}#x", "N goes from 1")):
        proc = inspect("diff", a, last, check_rc=2)
        assert why in one_error_line(proc), proc.stderr
    with pytest.raises(Exception, match="compacted into one file"):
        snapshot.load(hour)


def test_the_full_series_watch_prints_come_from_the_files(tmp_path):
    """Samples.series (watch --json's full series): per stack key, pages at every sample, 0 where absent."""
    a, b = frames(1), frames(2)
    paths = [str(make(tmp_path / f"s{i}.parquet", {a: va, b: vb}, sample=i, clock_s=i * 10.0,
                      handles={a: 11, b: 12}))
             for i, (va, vb) in enumerate([(5, 0), (7, {0: 3, 1: 4}), (0, 9)])]
    s = analysis.Samples(paths)
    assert s.series([11, 12]) == {11: [5, 7, 0], 12: [0, 7, 9]}
    paths.append(str(make(tmp_path / "r.parquet", {a: 1}, sample=3, boot="boot-2", handles={a: 99})))
    s = analysis.Samples(paths)  # another boot: stacks by their text
    assert s.series(["\n".join(a)]) == {"\n".join(a): [5, 7, 0, 1]}
