"""Snapshots, diff, the leak-suspect rule and plot on hand-made snapshots (no kernel).

The snapshots here are written with the library's own writer from series
chosen by the test, so every expected number is the test's input: the
deltas of diff, which series the rule calls a leak, the points plot draws.
The VM tests (tests/test_vm_history.py) check the same commands against a
real kernel's own counters.  Also: the bad inputs (one line, exit 2,
nothing written), the recorded fixture snapshot that later versions must
keep reading, and the QMP client against a fake QEMU.
"""

from __future__ import annotations

import json
import os
import re
import socket
import threading
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import ROOT, inspect
from inspector.history import analysis, snapshot
from inspector.history.qmp import paused

FIXTURES = sorted((ROOT / "fixtures" / "history").glob("*.parquet"))
# Stacks as tuples of %pS frames.
ALLOC = ("post_alloc_hook+0x6f/0xcd", "get_page_from_freelist+0x656/0x7b2", "__alloc_pages_noprof+0xe7/0x199",
         "alloc_pages_mpol_noprof+0x79/0xcc", "folio_alloc_mpol_noprof+0x14/0x1d")
LEAK = ALLOC + ("shmem_get_folio_gfp.constprop.0.isra.0+0x1e7/0x65d", "shmem_fallocate+0x1c2/0x3f0",
                "vfs_fallocate+0x13a/0x1c0")
WRITE = ALLOC + ("shmem_get_folio_gfp.constprop.0.isra.0+0x1e7/0x65d", "shmem_write_begin+0x58/0x69",
                 "generic_perform_write+0xc9/0x1d0")
SLAB = ALLOC[:3] + ("alloc_slab_page+0x20/0x80", "new_slab+0x7a/0x2f0", "___slab_alloc+0x4a0/0x900",
                    "kmem_cache_alloc_noprof+0x10c/0x2b0", "xas_alloc+0x9b/0xc0", "xas_create+0x70/0x1a0")
PIPE = ALLOC[:3] + ("pipe_write+0x3a0/0x6b0", "vfs_write+0xed/0x14c")
PMD = ALLOC[:3] + ("__pmd_alloc+0x4f/0x1a0", "move_page_tables+0x8a/0x5c0")
HANDLES = {LEAK: 0x100001, WRITE: 0x100002, SLAB: 0x100003, PIPE: 0x100004, PMD: 0x100005}  # one boot's depot


# Made-up releases: a unit test needs a release string, never a real patch
# release (Debian moves those forward; issue 24).
RELEASE, OTHER_RELEASE = "6.12.0-unit", "6.1.0-unit"


def make(path: Path, stacks: dict, *, sample: int = 0, boot: str = "boot-1", release: str = RELEASE,
         tasks: dict | None = None, handles: dict | None = None, clock_s: float | None = None,
         missing: dict | None = None) -> Path:
    """A snapshot file: ``stacks`` {frames tuple: pages or {node: pages}}, ``tasks``
    {(pid, comm): pages}; one allocation per page; sample n taken at minute n."""
    rows = {c: [] for c in snapshot.SCHEMA.names}
    t_ns = 1_800_000_000_000_000_000 + sample * 60 * 10**9

    def add(**kw):
        for c in snapshot.SCHEMA.names[:11]:
            rows[c].append(kw.get(c))

    for frames, pages in stacks.items():
        per_node = pages if isinstance(pages, dict) else {0: pages}
        for node, p in per_node.items():
            if p:
                add(kind="stack", handle=(handles or HANDLES)[frames], stack="\n".join(frames),
                    top_frame=snapshot.top_frame(frames), node=node, migratetype="Movable", pages=p, allocations=p)
    for (pid, comm, *tgid), pages in (tasks or {}).items():
        add(kind="task", pid=pid, tgid=tgid[0] if tgid else pid, comm=comm, node=0, migratetype="Movable", pages=pages, allocations=pages)
    n = len(rows["kind"])
    rows["time"] = [t_ns // 1000] * n
    rows["machine"], rows["release"], rows["boot_id"] = ["vm"] * n, [release] * n, [boot] * n
    meta = {"format": snapshot.SNAPSHOT, "schema": snapshot.SCHEMA_VERSION, "tool_version": "test", "time_ns": t_ns,
            "time": str(t_ns), "target": {"kind": "vmcore", "path": f"core.{sample}"}, "release": release,
            "machine": "vm", "boot_id": boot, "boot_id_source": "sysctl_bootid", "boot_digest": None,
            "clock_ns": None if clock_s is None else int(clock_s * 1e9), "page_size": 4096,
            "missing": missing or {}}
    snapshot.write_table(pa.Table.from_pydict(rows, schema=snapshot.SCHEMA), meta, str(path))
    return path


def one_error_line(proc) -> str:
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


# -- snapshots and top frames ------------------------------------------------------------------------

def test_top_frame_skips_the_allocators_own_frames():
    assert snapshot.top_frame(LEAK) == "shmem_get_folio_gfp.constprop.0.isra.0"
    assert snapshot.top_frame(SLAB) == "xas_alloc"  # a slab page is named after who wanted the object
    assert snapshot.top_frame(["register_early_stack+0x28/0x43", "init_page_owner+0x33/0x2a0"]) == \
        "register_early_stack"
    assert snapshot.top_frame(["f+0x1/0x2 [mod]"]) == "f"


def test_labels_are_short_and_unique():
    labels = analysis.labels([LEAK, WRITE, SLAB, PIPE])
    assert labels == ["shmem_get_folio_gfp < shmem_fallocate", "shmem_get_folio_gfp < shmem_write_begin",
                      "xas_alloc < xas_create", "pipe_write < vfs_write"]
    assert analysis.labels([LEAK, LEAK]) == ["shmem_get_folio_gfp < shmem_fallocate",
                                             "shmem_get_folio_gfp < shmem_fallocate #2"]


def test_a_snapshot_reads_back_with_its_metadata(tmp_path):
    f = make(tmp_path / "a.parquet", {LEAK: 10, PIPE: 3}, tasks={(7, "leaker"): 13})
    snap = snapshot.load(str(f))
    assert snap.meta["schema"] == snapshot.SCHEMA_VERSION and snap.table.schema.equals(snapshot.SCHEMA)
    assert snap.table.num_rows == 3


# -- diff ----------------------------------------------------------------------------------------------

def test_diff_sorts_by_growth_and_counts_new_vanished_and_nodes(tmp_path):
    a = make(tmp_path / "a.parquet", {LEAK: {0: 100, 1: 50}, WRITE: 40, PIPE: 8},
             tasks={(7, "leaker"): 150, (9, "sh"): 48})
    b = make(tmp_path / "b.parquet", {LEAK: {0: 400, 1: 50}, WRITE: 30, SLAB: 5}, sample=1,
             tasks={(7, "leaker"): 450, (10, "sh"): 35})
    doc = json.loads(inspect("diff", str(a), str(b), "--json").stdout)
    assert doc["matched_by"] == "handle" and doc["by"] == "stack"
    got = [(r["label"], r["status"], r["pages_a"], r["pages_b"], r["delta_pages"]) for r in doc["rows"]]
    assert got == [("shmem_get_folio_gfp < shmem_fallocate", "grew", 150, 450, 300),
                   ("xas_alloc < xas_create", "new", 0, 5, 5),
                   ("pipe_write < vfs_write", "vanished", 8, 0, -8),
                   ("shmem_get_folio_gfp < shmem_write_begin", "shrank", 40, 30, -10)]
    assert doc["rows"][0]["stack"] == list(LEAK)
    assert doc["new"] == {"count": 1, "pages": 5} and doc["vanished"] == {"count": 1, "pages": -8}
    assert [(n["node"], n["pages_a"], n["pages_b"]) for n in doc["nodes"]] == [(0, 148, 435), (1, 50, 50)]
    assert doc["missing"]["records_hidden"] == 0
    pids = json.loads(inspect("diff", str(a), str(b), "--json", "--by", "pid").stdout)["rows"]
    assert [(r["key"], r["comm"], r["delta_pages"]) for r in pids] == [(7, "leaker", 300), (10, "sh", 35),
                                                                      (9, "sh", -48)]
    comms = json.loads(inspect("diff", str(a), str(b), "--json", "--by", "comm", "--limit", "1").stdout)["rows"]
    assert [(r["key"], r["delta_pages"]) for r in comms] == [("leaker", 300)]
    text = inspect("diff", str(a), str(b), "--limit", "2").stdout
    assert "+300" in text and "shmem_fallocate" in text and "4 changed" not in text and "(of 4;" in text


def test_diff_by_tgid_adds_up_a_process_threads(tmp_path):
    """diff --by tgid (issue 20): the threads of one process (pids 7 and 8 of
    tgid 7) counted together, as page_owner_sort --cull tgid groups them."""
    a = make(tmp_path / "a.parquet", {LEAK: 10}, tasks={(7, "leaker", 7): 10, (8, "worker", 7): 5, (9, "sh"): 4})
    b = make(tmp_path / "b.parquet", {LEAK: 30}, sample=1,
             tasks={(7, "leaker", 7): 20, (8, "worker", 7): 15, (9, "sh"): 2})
    rows = json.loads(inspect("diff", str(a), str(b), "--json", "--by", "tgid").stdout)["rows"]
    assert [(r["key"], r["comm"], r["pids"], r["pages_a"], r["pages_b"], r["delta_pages"]) for r in rows] == [
        (7, "leaker,worker", 2, 15, 35, 20), (9, "sh", 1, 4, 2, -2)]
    assert "7 (leaker,worker)" in inspect("diff", str(a), str(b), "--by", "tgid").stdout


def test_diff_matches_by_text_across_boots_and_warns_once_for_releases(tmp_path):
    # Another boot: the same stacks under other handles.
    a = make(tmp_path / "a.parquet", {LEAK: 100, PIPE: 5}, handles={LEAK: 1, PIPE: 2})
    b = make(tmp_path / "b.parquet", {LEAK: 120, PIPE: 5}, sample=1, boot="boot-2", handles={LEAK: 2, PIPE: 1})
    proc = inspect("diff", str(a), str(b), "--json")
    doc = json.loads(proc.stdout)
    assert doc["matched_by"] == "stack" and proc.stderr == ""
    assert [(r["stack"], r["delta_pages"]) for r in doc["rows"]] == [(list(LEAK), 20)]
    c = make(tmp_path / "c.parquet", {LEAK: 100}, sample=1, release=OTHER_RELEASE)
    proc = inspect("diff", str(a), str(c))
    assert RELEASE in one_error_line(proc) and OTHER_RELEASE in proc.stderr and "warning" in proc.stderr


def test_diff_of_partial_snapshots_is_partial(tmp_path):
    a = make(tmp_path / "a.parquet", {LEAK: 1})
    b = make(tmp_path / "b.parquet", {LEAK: 2}, sample=1, missing={"stack_handles": [0x1234], "records_hidden": 3})
    proc = inspect("diff", str(a), str(b), "--json", check_rc=3)
    assert [int(h, 16) for h in json.loads(proc.stdout)["missing"]["stack_handles"]] == [0x1234]
    assert "partial:" in proc.stderr


# -- the suspect rule ----------------------------------------------------------------------------------

SERIES = {
    LEAK: [100, 600, 1100, 1100, 1100, 1600, 2100, 2600],   # grows, pauses, resumes: a leak
    WRITE: [500, 900, 300, 800, 400, 900, 350, 700],        # churn
    PIPE: [0, 20, 40, 60, 80, 100, 120, 140],               # steady but slow: under 256 pages/min
    SLAB: [0, 0, 0, 0, 0, 0, 3000, 3000],                   # one late jump: the line does not fit
    PMD: [0, 8, 0, 8, 0, 8, 0, 8],                          # a little churn
}


def watch_dir(tmp_path: Path, series: dict = SERIES, seconds: float = 30) -> Path:
    d = tmp_path / "snaps"
    d.mkdir()
    n = len(next(iter(series.values())))
    for i in range(n):
        make(d / f"s{i}.parquet", {s: v[i] for s, v in series.items()}, sample=i, clock_s=seconds * i)
    return d


def test_the_rule_names_the_leak_and_only_it(tmp_path):
    d = watch_dir(tmp_path)
    s = analysis.Samples(sorted(str(p) for p in d.iterdir()))
    assert s.axis == "target clock" and abs(s.minutes - 3.5) < 1e-9  # 30 s apart on the target's clock
    rows = {tuple(r["stack"]): r for r in s.trend()}
    assert [tuple(r["stack"]) for r in s.trend() if r["suspect"]] == [LEAK]
    leak = rows[LEAK]
    assert leak["series"] == SERIES[LEAK] and leak["growth"] == 2500 and leak["rising"] == leak["steps"] == 7
    assert 600 < leak["slope"] < 800 and leak["r2"] > 0.9
    assert rows[PIPE]["slope"] == pytest.approx(40.0) and not rows[PIPE]["suspect"]
    assert rows[SLAB]["r2"] < 0.8
    # Lower floors make the slow steady grower a suspect too, ranked after the leak.
    assert [tuple(r["stack"]) for r in s.trend({"min_rate": 30, "min_growth": 100}) if r["suspect"]] == [LEAK, PIPE]
    # A stack absent from a sample holds 0 pages there.
    assert rows[SLAB]["series"][:6] == [0] * 6


def test_a_few_pages_in_a_short_window_are_no_leak(tmp_path):
    """10 pages a second is 600 pages/min, but 30 pages of growth are under the floor."""
    d = watch_dir(tmp_path, {PIPE: [10, 20, 30, 40]}, seconds=1)
    s = analysis.Samples(sorted(str(p) for p in d.iterdir()))
    (row,) = s.trend()
    assert row["slope"] == pytest.approx(600.0) and row["r2"] == pytest.approx(1.0) and not row["suspect"]
    assert s.trend({"min_growth": 30})[0]["suspect"]


def test_too_few_samples_give_no_suspect(tmp_path):
    d = watch_dir(tmp_path, {LEAK: [0, 5000]})
    assert not any(r["suspect"] for r in analysis.Samples(sorted(str(p) for p in d.iterdir())).trend())


# -- plot ----------------------------------------------------------------------------------------------

def test_plot_draws_one_point_per_sample_per_stack(tmp_path):
    d = watch_dir(tmp_path)
    png = tmp_path / "leak.png"
    doc = json.loads(inspect("plot", str(d), "-o", str(png), "--json", "--limit", "5").stdout)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20000
    assert doc["sample_count"] == 8 and len(doc["lines"]) == 5 and doc["missing"]["records_hidden"] == 0
    assert doc["lines"][0]["label"] == "shmem_get_folio_gfp < shmem_fallocate  [leak suspect]"
    assert doc["lines"][0]["y"] == SERIES[LEAK] and doc["lines"][0]["x"] == [i / 2 for i in range(8)]
    assert all(len(line["x"]) == len(line["y"]) == 8 for line in doc["lines"])
    # Then the most growth: the late jump (+3000), the churn (+200), the slow grower (+140), the little churn.
    assert [line["y"] for line in doc["lines"][1:]] == [SERIES[SLAB], SERIES[WRITE], SERIES[PIPE], SERIES[PMD]]
    # Every line is in the legend, "__pmd_alloc" too (matplotlib hides "_" labels from automatic legends).
    assert [line["legend"] for line in doc["lines"]] == [line["label"] for line in doc["lines"]]
    assert doc["lines"][-1]["label"] == "__pmd_alloc < move_page_tables"
    w, h = int.from_bytes(png.read_bytes()[16:20], "big"), int.from_bytes(png.read_bytes()[20:24], "big")
    assert (w, h) == (1100, 600)


# -- bad input: one line, exit 2, nothing written -------------------------------------------------------

def test_bad_inputs(tmp_path):
    good = make(tmp_path / "good.parquet", {LEAK: 1})
    text = tmp_path / "notes.txt"
    text.write_text("hello, world\n" * 10)
    foreign = tmp_path / "foreign.parquet"
    pq.write_table(pa.table({"x": [1, 2, 3]}), foreign)
    trunc = tmp_path / "trunc.parquet"
    trunc.write_bytes(good.read_bytes()[:200])
    newer = tmp_path / "newer.parquet"
    meta = json.loads(pq.read_metadata(good).metadata[snapshot.META_KEY])
    snapshot.write_table(pq.read_table(good), dict(meta, schema=snapshot.SCHEMA_VERSION + 1), str(newer))
    for bad, says in ((text, "nor is it a snapshot"), (foreign, "not a pageext-inspect snapshot"),
                      (trunc, "truncated or corrupt Parquet"), (newer, "newer pageext-inspect"),
                      (tmp_path / "absent.parquet", "no such file")):
        assert says in one_error_line(inspect("diff", str(good), str(bad), check_rc=2)), bad
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "out.png"
    assert "no snapshots" in one_error_line(inspect("plot", str(empty), "-o", str(out), check_rc=2))
    (empty / "x.parquet").write_bytes(foreign.read_bytes())
    assert "not a pageext-inspect snapshot" in one_error_line(inspect("plot", str(empty), "-o", str(out),
                                                                      check_rc=2))
    assert "format comes from its name" in one_error_line(inspect("plot", str(empty), "-o",
                                                                  str(tmp_path / "x.gif"), check_rc=2))
    assert not out.exists() and sorted(os.listdir(tmp_path / "empty")) == ["x.parquet"]
    assert "-o FILE.parquet" in one_error_line(inspect("snapshot", str(text), check_rc=2))
    assert "--interval" in one_error_line(inspect("watch", "--interval", "soon", check_rc=2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "foreign.parquet", "good.parquet",
                                                          "newer.parquet", "notes.txt", "trunc.parquet"]


def test_plot_refuses_a_fleet_unless_told_which_machine(tmp_path):
    d = watch_dir(tmp_path, {LEAK: [1, 2, 3]})
    f = make(d / "other.parquet", {LEAK: 5})
    t = pq.read_table(f)
    meta = json.loads(pq.read_metadata(f).metadata[snapshot.META_KEY])
    snapshot.write_table(t.set_column(t.schema.get_field_index("machine"), "machine",
                                      pa.array(["db-1"] * t.num_rows)), dict(meta, machine="db-1"), str(f))
    proc = inspect("plot", str(d), "-o", str(tmp_path / "p.png"), check_rc=2)
    assert "2 machines" in one_error_line(proc) and "--machine" in proc.stderr
    doc = json.loads(inspect("plot", str(d), "-o", str(tmp_path / "p.png"), "--machine", "vm", "--json").stdout)
    assert doc["sample_count"] == 3


# -- the recorded snapshot: what this version wrote, later ones must read --------------------------------

def test_the_recorded_fixture_snapshot_still_reads():
    """fixtures/history/*.parquet were written by pageext-inspect 0.2.0 (schema 1)
    from a 6.12 test-VM dump (``snapshot core.kdump -s vmlinux --range ...``)."""
    assert FIXTURES, "no recorded snapshot in fixtures/history"
    for f in FIXTURES:
        assert f.stat().st_size < 16384
        snap = snapshot.load(str(f))
        m = snap.meta
        # The fixture's kernel is a 6.12 test VM; its patch release is whatever
        # Debian served the day it was recorded, so only the series is pinned.
        assert m["schema"] == 1 and m["format"] == snapshot.SNAPSHOT and re.fullmatch(r"6\.12\.\d+", m["release"])
        rows = snap.table.to_pylist()
        stacks = [r for r in rows if r["kind"] == "stack"]
        tasks = [r for r in rows if r["kind"] == "task"]
        assert stacks and tasks and all(r["stack"] and r["top_frame"] for r in stacks)
        # The two roll-ups of one read agree, and with the totals the metadata recorded.
        for kind, rs in (("stack", stacks), ("task", tasks)):
            assert sum(r["pages"] for r in rs) == m["totals"][kind]["pages"]
            assert sum(r["allocations"] for r in rs) == m["totals"][kind]["allocations"]
        assert m["totals"]["stack"]["pages"] == m["totals"]["task"]["pages"]
        assert {r["boot_id"] for r in rows} == {m["boot_id"]} and {r["release"] for r in rows} == {m["release"]}
        # The commands read it: against itself nothing changed.
        doc = json.loads(inspect("diff", str(f), str(f), "--json").stdout)
        assert doc["rows"] == [] and doc["matched_by"] == "handle"
        assert sum(n["pages_a"] for n in doc["nodes"]) == m["totals"]["stack"]["pages"]


# -- the QMP client, against a fake QEMU ----------------------------------------------------------------

def fake_qemu(path: str, running: bool, log: list) -> threading.Thread:
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(path)
    srv.listen(1)

    def serve():
        conn, _ = srv.accept()
        f = conn.makefile("rwb")
        f.write(b'{"QMP": {"version": {}, "capabilities": []}}\n')
        f.flush()
        state = {"running": running}
        for line in f:
            cmd = json.loads(line)["execute"]
            log.append(cmd)
            if cmd == "stop":
                state["running"] = False
                f.write(b'{"event": "STOP", "timestamp": {}}\n')
            elif cmd == "cont":
                state["running"] = True
            ret = {"running": state["running"], "status": "running" if state["running"] else "paused"} \
                if cmd == "query-status" else {}
            f.write(json.dumps({"return": ret}).encode() + b"\n")
            f.flush()
        conn.close()
        srv.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return t


@pytest.mark.parametrize("running", [True, False])
def test_pause_stops_and_continues_a_running_guest_only(tmp_path, running):
    log: list = []
    t = fake_qemu(str(tmp_path / "ctl.sock"), running, log)
    with paused(str(tmp_path / "ctl.sock")):
        assert log[-1] == ("stop" if running else "query-status")
    t.join(5)
    assert log == (["qmp_capabilities", "query-status", "stop", "cont"] if running
                   else ["qmp_capabilities", "query-status"])


def test_help_and_other_commands_do_not_load_the_data_libraries():
    """pyarrow, duckdb and matplotlib are imported by the history commands only."""
    import subprocess
    import sys
    code = ("import sys\nfrom inspector import cli\ntry:\n    cli.main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('pyarrow', 'duckdb', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"
