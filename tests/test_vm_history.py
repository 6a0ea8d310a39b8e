"""Leak hunting over time (issue 13) against the 6.12 test kernel's own counters.

One guest: the 6.12 test kernel (it has page_owner_stacks/show_stacks),
page_owner=on, the memory controller off (6.12 from 6.12.115 on, with the
90f095b816e2 backport, oopses in its own page_owner text on charged pages,
see test_vm_owner.NO_MEMCG), the host's root
at /host.  It runs test_vm_kdump's churn (shells named churn-* writing
tmpfs and ramfs files in rings, growing and dropping strings, filling a
pipe drained by cat) and scripts/leaker.c (comm ``leaker``) growing a tmpfs
file by fallocate() at LEAK_RATE MiB/s -- only while the test lets it:
``leaker -p HOLD`` takes no step while HOLD exists, and HOLD.held says it
stands still.  Then, in order:

1. vmcore A: the churn stopped (SIGSTOP) and the leak held, the kernel's own
   /sys/kernel/debug/page_owner read onto the share, the guest paused and
   dumped, then resumed.  The guest then reads its boot_id (the kernel fills
   ``sysctl_bootid`` on that first read).
2. ``watch --qemu qmp.sock --pause ctl.sock --exec HOOK`` over SAMPLES
   samples.  Before each sample watch runs HOOK, which lets the leak grow
   for GROW[n] seconds (grow, stop for a while, resume), holds it, and reads
   the kernel's show_stacks in the guest: from that read until the sample
   the leak's stack stands still.
3. vmcore B, as A.
4. In the guest, chrooted into the host root, ``watch /proc/kcore`` while a
   second, slower leaker runs freely.

The oracles are the kernel's: show_stacks (per sample, the leak's count,
with show_stacks' threshold: a stack it does not list holds no page), the
debugfs text of A and B (its per-stack sums; records on one side only are
explained by their timestamps as in test_vm_owner.compare_with_kernel),
/proc/sys/kernel/random/boot_id, uname, and which stacks the churn's comms
hold in the kernel's own text.  Figures and times are printed (pytest -s).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import pytest

from conftest import CLIENTS_ON, ROOT, inspect, kernel_for, loads, module_kernels, vmlinux_release
from test_json_conventions import validate
from test_vm_kdump import CHURN
from test_vm_owner import NO_MEMCG, compare_with_kernel, fields, local_clock, parse_debugfs
from test_vm_owner_sort import parse_show_stacks
from testvm import CHROOT_SHARE, TestVM, helper

pytestmark = pytest.mark.vm

WORK = Path(tempfile.gettempdir()) / "pageext-history-tests"
STACKS = "/sys/kernel/debug/page_owner_stacks/show_stacks"
LEAK_FRAME = "shmem_fallocate+"
LEAK_RATE = 4  # MiB/s while the leak may grow: 1 MiB steps, about 1024 pages a second
GROW = [0, 1, 1, 1, 0, 0, 1, 1]  # seconds of growth before each sample: grows, stops, resumes
SAMPLES = len(GROW)
DRGN_SAMPLES = 3  # %pageext_watch in a drgn session
CHURN_COMMS = ("churn-tmpfs", "churn-anon", "churn-file", "churn-pipe")
KCORE_SAMPLES = 6
KCORE_LEAK_RATE = 0.25  # MiB/s, running freely through the in-guest watch (about 3 minutes)
HOLD = "/tmp/leak.hold"

# The hook watch runs before each sample (on the host): through the share,
# the guest lets the leak grow GROW[n - 1] seconds, holds it, waits until it
# stands still, then notes its clock and reads show_stacks.
HOOK = """#!/bin/sh
set -e
g=$(echo {grow} | cut -d, -f$PAGEEXT_SAMPLE)
exec {python} {testvm} run {vm_dir} "
if [ $g != 0 ]; then rm -f {hold}; sleep $g; touch {hold}; fi
while [ ! -e {hold}.held ]; do sleep 0.02; done
mkdir -p /share/oracle
grep -m1 exec_start /proc/self/sched > /share/oracle/$PAGEEXT_SAMPLE.clock
cat {stacks} > /share/oracle/$PAGEEXT_SAMPLE.txt"
"""

SIGNAL_CHURN = "for p in /proc/[0-9]*; do case $(cat $p/comm 2>/dev/null) in churn-*) kill -{sig} ${{p#/proc/}};; esac; done"


def held_dump(vm: TestVM, work: Path, name: str) -> dict:
    """Churn stopped, leak held: the kernel's page_owner text, then pause and dump."""
    vm.run(SIGNAL_CHURN.format(sig="STOP") + f"; touch {HOLD}; while [ ! -e {HOLD}.held ]; do sleep 0.02; done").check()
    vm.run(f"grep -m1 exec_start /proc/self/sched > /share/{name}.clock; cat /sys/kernel/debug/page_owner | "
           f"dd bs=1M iflag=fullblock of=/share/{name}.txt 2>/dev/null; "
           f"grep -m1 exec_start /proc/self/sched > /share/{name}.clock2").check()
    vm.pause()
    core = vm.dump(str(work / f"{name}.kdump"), "kdump-zlib")
    vm.resume()
    vm.run(SIGNAL_CHURN.format(sig="CONT")).check()
    return {"core": core, "kernel": (vm.share / f"{name}.txt").read_bytes().decode("latin-1"),
            "start": local_clock(vm.share / f"{name}.clock"), "end": local_clock(vm.share / f"{name}.clock2"),
            "version": "6.12"}


# The oracles: the comm page_owner records tells the workloads apart (v5.18,
# 865ed6a32786), and watch's samples are checked against the kernel's own
# page_owner_stacks/show_stacks (v6.9, 765973a09803): an older kernel of the
# matrix skips the module.
@pytest.fixture(scope="module", params=module_kernels(
    "6.12", since=(6, 9), why="the watch samples' oracle is page_owner_stacks/show_stacks, 765973a09803"))
def hist(request):
    """6.12 in CI; each kernel of the run in the matrix."""
    kernel612 = kernel_for(request.param)
    vmlinux = str(kernel612 / "vmlinux")
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    times = {}
    t0 = time.time()
    with TestVM(kernel612, cmdline=CLIENTS_ON + NO_MEMCG.get(request.param, ""), host_root=True,
                workdir=str(WORK / "vm")) as vm:
        times["boot"] = time.time() - t0
        shutil.copy(helper("leaker"), vm.share / "leaker")
        vm.run(f"mkdir -p /leak && mount -t tmpfs -o size=0 leak /leak && touch {HOLD}\n"
               f"/share/leaker -f /leak/leak -r {LEAK_RATE} -p {HOLD} > /dev/null 2>&1 &\n"
               f"echo $! > /tmp/leaker.pid; while [ ! -e {HOLD}.held ]; do sleep 0.02; done").check()
        vm.run(CHURN).check()
        # Some leak before A, so the leak's stack is in both dumps.
        vm.run(f"rm {HOLD}; sleep 1; touch {HOLD}").check()
        uname = vm.run("uname -r; uname -n").check().out.split()
        t = time.time()
        a = held_dump(vm, WORK, "A")
        boot_id = vm.run("cat /proc/sys/kernel/random/boot_id").check().out.strip()
        times["dump A"] = time.time() - t

        # The watch, with the guest paused for each sample through ctl.sock.
        vm.write_vm_json()
        hook = WORK / "hook.sh"
        hook.write_text(HOOK.format(grow=",".join(map(str, GROW)), python=sys.executable,
                                    testvm=ROOT / "scripts" / "testvm.py", vm_dir=vm.dir, hold=HOLD, stacks=STACKS))
        hook.chmod(0o755)
        snaps, png = WORK / "snaps", WORK / "watch.png"
        t = time.time()
        with vm.ctl_released() as ctl:
            proc = inspect("watch", "--qemu", vm.qmp_path, "-s", vmlinux, "--pause", ctl, "--exec", str(hook),
                           "--interval", "3", "--count", str(SAMPLES), "-o", str(snaps), "--plot", str(png),
                           "--json", "--no-progress")
        times["watch --qemu"] = time.time() - t
        validate("watch", json.loads(proc.stdout))  # the shipped JSON Schema, on the printed text
        watch = loads(proc.stdout)
        oracle = [(vm.share / "oracle" / f"{n}.txt").read_bytes().decode("latin-1") for n in range(1, SAMPLES + 1)]

        t = time.time()
        b = held_dump(vm, WORK, "B")
        times["dump B"] = time.time() - t

        # In the guest, on /proc/kcore, a slower leak running freely.
        vm.run(f"kill $(cat /tmp/leaker.pid) && rm {HOLD} && "
               f"(/share/leaker -f /leak/leak2 -r {KCORE_LEAK_RATE} > /dev/null 2>&1 &)").check()
        t = time.time()
        res = vm.run(f"chroot /host {Path(sys.executable).parent / 'pageext-inspect'} watch /proc/kcore -s {vmlinux} --interval 5 --count {KCORE_SAMPLES} "
                     f"-o {CHROOT_SHARE}/kcore --json --no-progress > /share/kcore.json 2> /share/kcore.err",
                     timeout=1800)
        times["watch /proc/kcore in the guest"] = time.time() - t
        kcore = {"rc": res.rc, "err": (vm.share / "kcore.err").read_text(),
                 "json": (vm.share / "kcore.json").read_text(), "snaps": vm.share / "kcore"}

        # %pageext_watch in a drgn session on the same guest (drgn --qemu, its
        # own QMP socket), while the guest's slower leak goes on.
        t = time.time()
        dsnaps = WORK / "drgn-snaps"
        code = ("from drgn.commands import run_command\n"
                f"run_command(prog, 'pageext_watch --interval 2 --count {DRGN_SAMPLES} -o {dsnaps} --json')")
        dproc = subprocess.run([str(Path(sys.executable).parent / "drgn"), "--qemu", vm.qmp_path, "-s", vmlinux,
                                "-q", "-e", code], capture_output=True, text=True, timeout=900)
        times["%pageext_watch in drgn"] = time.time() - t
        drgn_watch = {"rc": dproc.returncode, "out": dproc.stdout, "err": dproc.stderr, "snaps": dsnaps}
    times["all"] = time.time() - t0
    print("\n[history] times (s): " + ", ".join(f"{k} {v:.0f}" for k, v in times.items()))
    return {"vmlinux": vmlinux, "a": a, "b": b, "watch": watch, "watch_stderr": proc.stderr, "oracle": oracle,
            "snaps": snaps, "png": png, "kcore": kcore, "drgn_watch": drgn_watch, "boot_id": boot_id, "release": uname[0],
            "machine": uname[1]}


def leak_stack(hist) -> tuple[str, ...]:
    """The leak's page allocations as the kernel printed them: of the stacks
    through shmem_fallocate in the last show_stacks, the one with the most
    pages (the others allocate the file's xarray nodes)."""
    pages = dict(parse_show_stacks(hist["oracle"][-1]))
    through = {s: n for s, n in pages.items() if any(f.startswith(LEAK_FRAME) for f in s)}
    assert through, "no stack through shmem_fallocate in the kernel's show_stacks"
    return max(through, key=through.get)


def churn_stacks(hist) -> set[tuple[str, ...]]:
    """The stacks the churn's tasks hold pages under, in the kernel's own page_owner text of A and B."""
    out = set()
    for d in (hist["a"], hist["b"]):
        for block in parse_debugfs(d["kernel"]).values():
            f = fields(block)
            if f["comm"] in CHURN_COMMS:
                out.add(f["stack"])
    return out


def test_watch_names_the_leak_the_top_suspect_and_no_churn_stack(hist):
    w = hist["watch"]
    leak = leak_stack(hist)
    suspects = [s for s in w["stacks"] if s["suspect"]]
    churn = churn_stacks(hist)
    print(f"\n[history] watch --qemu --pause: {len(w['samples'])} samples over {w['t_min'][-1]:.2f} min of the "
          f"{w['time_axis']}; {w['verdict']}; suspects {w['suspects']}; churn's own stacks (kernel's text): "
          f"{len(churn)}; read times {[s['read_seconds'] for s in w['samples']]}")
    assert len(w["samples"]) == SAMPLES >= 6 and w["time_axis"] == "target clock"
    assert suspects and tuple(suspects[0]["stack"]) == leak
    assert suspects[0]["label"].startswith("shmem_get_folio_gfp < shmem_fallocate")
    assert len(churn) >= 4 and not [s["label"] for s in suspects if tuple(s["stack"]) in churn]
    assert w["verdict"].startswith("verdict: ") and "leak suspect" in w["verdict"]
    assert w["missing"]["records_hidden"] == 0 and not w["missing"]["stack_handles"]


def test_each_sample_holds_the_leak_show_stacks_counted(hist):
    """At each sample the leak's stack holds exactly what the kernel's
    show_stacks counted for it, read in the guest while the leak stood
    still until the guest was paused for the sample; a stack show_stacks
    leaves out holds no page (count - 1 < 1)."""
    from inspector.history.snapshot import load
    leak = leak_stack(hist)
    files = [s["file"] for s in hist["watch"]["samples"]]
    assert len(files) == SAMPLES and all(Path(f).parent == hist["snaps"] for f in files)
    ours, kernel = [], []
    for f, text in zip(files, hist["oracle"]):
        rows = load(f).table.to_pylist()
        ours.append(sum(r["pages"] for r in rows if r["kind"] == "stack" and tuple(r["stack"].split("\n")) == leak))
        kernel.append(dict(parse_show_stacks(text)).get(leak, 0))
    print(f"\n[history] leak stack per sample: ours {ours}, the kernel's show_stacks {kernel}")
    assert ours == kernel
    # It grew, stood still where the test held it, and grew again.
    steps = [b - a for a, b in zip(ours, ours[1:])]
    assert all((d > 0) == bool(g) for d, g in zip(steps, GROW[1:])), (steps, GROW)
    assert ours[0] > 0  # the leak had begun before the watch
    # The watch's own series for the leak is the same.
    top = next(s for s in hist["watch"]["stacks"] if tuple(s["stack"]) == leak)
    assert top["series"] == ours


def kernel_sums(d: dict) -> dict:
    """Per stack (pages, allocations) in the records the dump holds: the
    kernel's text, less its records explained as gone after the read began,
    plus those explained as new (test_vm_owner.compare_with_kernel)."""
    cmp = compare_with_kernel(d)
    assert not cmp["unexplained"], cmp["unexplained"][:3]
    gone = set(cmp["kernel_only"])
    recs = {k: b for k, b in cmp["kernel"].items() if k not in gone}
    recs.update({k: cmp["ours"][k] for k in cmp["ours_only"]})
    sums = defaultdict(lambda: [0, 0])
    comms = defaultdict(int)
    for block in recs.values():
        f = fields(block)
        sums[f["stack"]][0] += 1 << f["order"]
        sums[f["stack"]][1] += 1
        comms[f["comm"]] += 1 << f["order"]
    raw = defaultdict(lambda: [0, 0])
    for block in cmp["kernel"].values():
        f = fields(block)
        raw[f["stack"]][0] += 1 << f["order"]
        raw[f["stack"]][1] += 1
    return {"sums": sums, "comms": comms, "raw": raw, "adjusted": len(cmp["kernel_only"]) + len(cmp["ours_only"]),
            "records": len(cmp["kernel"])}


def test_diff_of_two_vmcores_is_the_difference_of_the_kernels_own_sums(hist, tmp_path):
    vmlinux = hist["vmlinux"]
    a, b = ({**hist[k], "vmlinux": vmlinux} for k in ("a", "b"))
    doc = loads(inspect("diff", a["core"], b["core"], "-s", vmlinux, "--json").stdout)
    ka, kb = kernel_sums(a), kernel_sums(b)
    expected = {}
    for s in set(ka["sums"]) | set(kb["sums"]):
        pa, aa = ka["sums"].get(s, (0, 0))
        pb, ab = kb["sums"].get(s, (0, 0))
        if (pa, aa) != (pb, ab):
            expected[s] = (pb - pa, ab - aa)
    got = {tuple(r["stack"]): (r["delta_pages"], r["delta_allocations"]) for r in doc["rows"]}
    leak = leak_stack(hist)
    raw_leak = kb["raw"][leak][0] - ka["raw"][leak][0]
    print(f"\n[history] diff A B: {len(got)} stacks changed ({doc['new']['count']} new, {doc['vanished']['count']} "
          f"vanished), matched by {doc['matched_by']}; the kernel's texts: {ka['records']} and {kb['records']} "
          f"records, {ka['adjusted']} and {kb['adjusted']} explained by timestamps; leak {got[leak][0]:+d} pages "
          f"(the kernel's raw texts {raw_leak:+d})")
    assert got == expected
    assert got[leak][0] == raw_leak > 1000  # the leak stood still while each text was read and dumped
    assert doc["matched_by"] == "handle"  # one boot, though boot_id was filled in between
    assert doc["rows"] == sorted(doc["rows"], key=lambda r: (-r["delta_pages"], -r["delta_allocations"]))
    assert ka["adjusted"] <= 0.05 * ka["records"] and kb["adjusted"] <= 0.05 * kb["records"]
    # Totals per node add up to the change of all stacks.
    assert sum(n["delta_pages"] for n in doc["nodes"]) == sum(d[0] for d in expected.values())
    # The same diff from snapshot files.
    fa, fb = tmp_path / "a.parquet", tmp_path / "b.parquet"
    validate("snapshot", json.loads(inspect("snapshot", a["core"], "-s", vmlinux, "-o", str(fa), "--json").stdout))
    inspect("snapshot", b["core"], "-s", vmlinux, "-o", str(fb))
    files = loads(inspect("diff", str(fa), str(fb), "--json").stdout)
    assert files["rows"] == doc["rows"] and files["nodes"] == doc["nodes"]
    assert fa.stat().st_size < 100_000
    # By comm: the leaker's pages (its leak, the file's xarray nodes, its slab and page-table pages), as
    # in the kernel's texts less the records explained by timestamps: a page the leaker allocated can be
    # freed by another task between the text and the dump (CI, 6.12: 2 pages of 6,400).
    comms = {r["key"]: r["delta_pages"] for r in loads(
        inspect("diff", str(fa), str(fb), "--json", "--by", "comm").stdout)["rows"]}
    assert comms["leaker"] == kb["comms"]["leaker"] - ka["comms"]["leaker"] >= raw_leak


def test_snapshots_name_their_kernel_boot_and_clock(hist, tmp_path):
    """release and machine as uname says; the boot's identity: a digest
    before the kernel filled its boot_id, then the boot_id the guest read,
    one boot all along; the target's clock within the guest's own clock
    readings around the dump."""
    from inspector.history.snapshot import load, same_boot
    vmlinux = hist["vmlinux"]
    metas = {}
    for k in ("a", "b"):
        f = tmp_path / f"{k}.parquet"
        inspect("snapshot", hist[k]["core"], "-s", vmlinux, "-o", str(f))
        metas[k] = load(str(f)).meta
    a, b = metas["a"], metas["b"]
    samples = [load(s["file"]).meta for s in hist["watch"]["samples"]]
    assert a["release"] == b["release"] == hist["release"] == vmlinux_release(vmlinux)
    assert a["machine"] == hist["machine"]
    assert a["boot_id_source"] == "digest" and a["boot_id"].startswith("digest:")
    assert b["boot_id_source"] == "sysctl_bootid" and b["boot_id"] == hist["boot_id"]
    assert all(m["boot_id"] == hist["boot_id"] and m["target"]["kind"] == "qemu" for m in samples)
    assert a["boot_digest"] == b["boot_digest"] and same_boot(a, b) and all(same_boot(a, m) for m in samples)
    for m, d in ((a, hist["a"]), (b, hist["b"])):
        # local_clock() lower bounds (less 10 ms) from before and after the kernel read its text.
        assert d["end"] <= m["clock_ns"] <= d["end"] + 60 * 10**9, (m["clock_ns"], d["start"], d["end"])
    clocks = [m["clock_ns"] for m in samples]
    assert clocks == sorted(clocks) and a["clock_ns"] < clocks[0] and clocks[-1] < b["clock_ns"]


def test_the_plot_draws_each_stack_at_every_sample(hist, tmp_path):
    png = hist["png"]
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 30_000
    assert (int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")) == (1100, 600)
    drawn = hist["watch"]["plot"]
    assert len(drawn) == 8 and drawn[0]["suspect"] and tuple(drawn[0]["stack"]) == leak_stack(hist)
    assert all(len(line["x"]) == len(line["y"]) == SAMPLES for line in drawn)
    assert len({line["label"] for line in drawn}) == len(drawn)
    assert [line["legend"] for line in drawn] == [line["label"] for line in drawn]  # each labelled
    # plot on the directory draws the same lines.
    out = tmp_path / "again.png"
    doc = loads(inspect("plot", str(hist["snaps"]), "-o", str(out), "--json").stdout)
    assert doc["sample_count"] == SAMPLES and [(d["label"], d["y"]) for d in doc["lines"]] == \
        [(d["label"], d["y"]) for d in drawn]
    # A real picture: many colours, not a blank canvas.
    import matplotlib.image
    pixels = matplotlib.image.imread(str(out))
    assert len({tuple(p) for p in pixels.reshape(-1, pixels.shape[-1])[::97].tolist()}) > 20


def test_watch_in_the_guest_on_proc_kcore(hist):
    k = hist["kcore"]
    assert k["rc"] == 0, k["err"]
    w = loads(k["json"])
    leak = leak_stack(hist)
    suspects = [s for s in w["stacks"] if s["suspect"]]
    churn = churn_stacks(hist)
    print(f"\n[history] watch /proc/kcore in the guest: {len(w['samples'])} samples over {w['t_min'][-1]:.2f} min; "
          f"read times {[s['read_seconds'] for s in w['samples']]}; {w['verdict']}; suspects {w['suspects']}")
    assert len(w["samples"]) == KCORE_SAMPLES and len(list(k["snaps"].glob("*.parquet"))) == KCORE_SAMPLES
    assert suspects and tuple(suspects[0]["stack"]) == leak
    assert not [s["label"] for s in suspects if tuple(s["stack"]) in churn]
    from inspector.history.snapshot import load
    metas = [load(str(f)).meta for f in sorted(k["snaps"].glob("*.parquet"))]
    assert {m["target"]["kind"] for m in metas} == {"kcore"} and {m["boot_id"] for m in metas} == {hist["boot_id"]}


def test_pageext_watch_in_a_drgn_session(hist):
    """%pageext_watch in drgn --qemu: the same watch, from the same library code,
    on the session's own live kernel -- its snapshots are this guest's (kind
    live, the boot the CLI's watch sampled), and each holds the leak's stack."""
    d = hist["drgn_watch"]
    assert d["rc"] == 0 and "Traceback" not in d["err"], d["err"][-3000:]
    w = loads(d["out"])
    files = sorted(d["snaps"].glob("*.parquet"))
    assert len(w["samples"]) == DRGN_SAMPLES == len(files), (w["samples"], files)
    from inspector.history.snapshot import load
    snaps = [load(str(f)) for f in files]
    # A drgn --qemu program is live; the boot is the one the CLI's watch sampled.
    assert {s.meta["target"]["kind"] for s in snaps} == {"live"}
    cli_boot = {load(str(f)).meta["boot_id"] for f in sorted(hist["snaps"].glob("*.parquet"))}
    assert len(cli_boot) == 1 and {s.meta["boot_id"] for s in snaps} == cli_boot
    leak = "\n".join(leak_stack(hist))
    for s in snaps:
        stacks = s.table.to_pydict()["stack"]
        assert leak in stacks, "the leak's stack is missing from a sample of %pageext_watch"


def test_owner_parquet_holds_what_csv_prints(hist, tmp_path):
    """``owner --format parquet`` on dump A: the same records, field by field, as ``--format csv``."""
    import csv
    import io

    import pyarrow.parquet as pq
    core, vmlinux = hist["a"]["core"], hist["vmlinux"]
    f = tmp_path / "records.parquet"
    inspect("owner", core, "-s", vmlinux, "--all", "--format", "parquet", "-o", str(f))
    rows = pq.read_table(f).to_pylist()
    text = inspect("owner", core, "-s", vmlinux, "--all", "--format", "csv").stdout
    want = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == len(want) > 5000
    for r, w in zip(rows, want):
        for c, v in w.items():
            got = r[c]
            if c in ("alloc_stack", "free_stack"):
                got = ";".join(got.split("\n")) if got else ""
            elif c == "corrupt":
                got = ";".join(got)
            assert ("" if got is None else str(got)) == v, (c, r["pfn"], got, v)


def test_watch_wants_a_live_kernel(hist):
    """A vmcore never changes: watch says so in one line (exit 2), and --pause
    goes with --qemu only; nothing is written."""
    out = WORK / "never"
    for extra in ((), ("--pause", str(WORK / "vm" / "ctl.sock"))):
        proc = inspect("watch", hist["a"]["core"], "-s", hist["vmlinux"], "--count", "2", "-o", str(out), *extra,
                       check_rc=2)
        assert len(proc.stderr.strip().splitlines()) == 1 and "live kernel" in proc.stderr, proc.stderr
    assert not out.exists() or not list(out.iterdir())
