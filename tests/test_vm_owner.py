"""page_owner decoded offline, checked against the kernel's own /sys/kernel/debug/page_owner.

Runs on the 6.1 test kernel and on the same fragment built from Debian's
linux-source-6.12 (a newer format: hex PFN, no free_ts, PGTY page types,
pool_index_plus_1 stack handles), each booted with page_owner=on
page_table_check=on.  The guest allocates (64 MiB written to tmpfs, a shell
whose comm holds an escape byte, a process holding 2 MB of private anonymous
memory), notes its clock, and writes its own debugfs text to the host through
the 9p share.  Right after, the guest is paused and dumped.  Our ``owner
--format debugfs`` on the dump must equal the kernel's text record by record
(keyed by pfn and allocation timestamp).  A record on one side only must be
explained by its timestamps (allocated, or freed/reallocated, after the read
began) or, for a stale boot-time record of a page that is free in the dump
(in a buddy block, or _refcount 0 on a per-cpu list), by the free lists
(see ``stale_early``).  The only
other difference allowed is the page's live ``page->flags`` word (e.g. the
referenced bit set by the reading itself), which is not page_owner data and
is counted separately.  The counts are printed (pytest -s) and asserted.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from conftest import CLIENTS_ON, inspect, inspect_pty, kernel_for, loads, require_kernel, snapshot_kernels
from testvm import TestVM
from test_json_conventions import validate

from inspector.decode.memcg import charges_folios_through_objcg
from inspector.target import open_target

pytestmark = pytest.mark.vm

COMM = "ev\x1bil"  # set by the guest shell before it allocates


def parse_debugfs(text: str) -> dict[tuple[int, int], str]:
    """(pfn, ts) -> record text (with its trailing blank line).  A kernel
    before v5.11 (9cc7e96aa846: pid and ts_nsec) prints no ts: 0 then."""
    recs = {}
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        m = re.match(r"Page allocated via order \d+, mask 0x[0-9a-f]+\(.*?\)(?:, .*, ts (\d+) ns)?", block)
        p = re.search(r"^PFN (0x[0-9a-f]+|\d+) ", block, re.M)
        assert m and p, f"unparsable record: {block[:300]!r}"
        key = (int(p.group(1), 0), int(m.group(1) or 0))
        assert key not in recs, key
        recs[key] = block + "\n\n"
    return recs


def has_timestamps(records: dict) -> bool:
    """Whether the kernel's page_owner text carries ts (v5.11, 9cc7e96aa846)."""
    return any(ts for _, ts in records)


def json_lines(text: str) -> list[dict]:
    """``owner --json``: one record a line and nothing else (issue 20: no trailer
    unless --trailer), so every line is a record with a pfn."""
    lines = text.splitlines()
    for line in lines[::max(1, len(lines) // 500)]:  # the shipped JSON Schema, on the printed text
        validate("owner", json.loads(line))
    docs = [loads(line) for line in lines]
    assert docs and all("pfn" in d and "missing" not in d for d in docs)
    return docs


def fields(block: str) -> dict:
    """A record's header fields; pid (v5.11, 9cc7e96aa846), tgid and comm
    (v5.18, bf215eab785a and 865ed6a32786) are None on a kernel without them."""
    first = block.split("\n", 1)[0]
    m = re.match(r"Page allocated via order (\d+), mask (0x[0-9a-f]+)\((.*?)\)"
                 r"(?:, pid (-?\d+)(?:, tgid (-?\d+) \((.*)\))?, ts)?", first, re.S)
    assert m and (m.group(4) is not None or ", pid " not in first), first
    assert m.group(5) is not None or ", tgid " not in first, first
    pfnline = block.split("\n")[1]
    return {"order": int(m.group(1)), "gfp": f"{m.group(2)}({m.group(3)})",
            "pid": None if m.group(4) is None else int(m.group(4)),
            "tgid": None if m.group(5) is None else int(m.group(5)), "comm": m.group(6),
            "migratetype": re.match(r"PFN \S+ type (\S+)", pfnline).group(1),
            "stack": tuple(line[1:] for line in block.split("\n") if line.startswith(" "))}


PAGE_TABLE_CHECK_SINCE = ((5, 17), "page_table_check (df4e817b7108)")
# What each header field needs (test ids and skips name the release).
FIELD_SINCE = {"pid": ((5, 11), "page_owner's pid (9cc7e96aa846)"),
               "tgid": ((5, 18), "page_owner's tgid (bf215eab785a)"),
               "comm": ((5, 18), "page_owner's comm (865ed6a32786)")}


def without_flags(block: str) -> str:
    return re.sub(r"Flags 0x[0-9a-f]+\([^)]*\)", "Flags -", block)


def without_live_state(block: str) -> str:
    """Also without the pageblock's migratetype ("Block N type T"): the
    allocator changes it for a whole pageblock (fallback stealing), most of
    all in a guest running out of memory; like the flags, not page_owner data."""
    return re.sub(r" Block (\d+) type \S+ ", r" Block \1 type - ", without_flags(block))


def local_clock(path: Path) -> int:
    """A lower bound of the guest's local_clock() -- page_owner's timestamps --
    when ``grep exec_start /proc/self/sched`` ran, less a margin.

    /proc/timer_list's "now" is ktime, which drifts from local_clock() by tens
    of ms under TCG (seen both ways); se.exec_start is rq_clock_task(), the
    same sched_clock_cpu() clock, read at or before the grep ran.  local_clock()
    of two CPUs may differ by up to a tick (HZ 250: 4 ms): 10 ms covers it."""
    m = re.search(r"se\.exec_start\s*:\s*(\d+)\.(\d{6})\n", path.read_text())
    assert m, path.read_text()
    return int(m.group(1)) * 1_000_000 + int(m.group(2)) - 10_000_000


MEMCG_PAGES = (
    "mkdir -p /sys/fs/cgroup && mount -t cgroup2 none /sys/fs/cgroup && "
    "echo +memory > /sys/fs/cgroup/cgroup.subtree_control && mkdir /sys/fs/cgroup/pagecg /sys/fs/cgroup/gone && "
    "sh -c 'echo $$ > /sys/fs/cgroup/pagecg/cgroup.procs; dd if=/dev/zero of=/tmp/cg bs=4k count=100 2>/dev/null' && "
    "sh -c 'echo $$ > /share/gone.pid; echo $$ > /sys/fs/cgroup/gone/cgroup.procs; "
    "exec dd if=/dev/zero of=/tmp/gone bs=4k count=50 2>/dev/null' && "
    "rmdir /sys/fs/cgroup/gone")


# 6.12 from 6.12.115 on (the 90f095b816e2 backport, see
# inspector/decode/memcg.py) print_page_owner_memcg() reads objcg->memcg from every
# memcg_data word, also a user page's plain mem_cgroup pointer: the first
# charged user page oopses the reader (in print_page_owner, see
# test_612_memcg_oops_and_we_still_read_the_dump).  Its snapshot boots
# with the memory controller off; slab pages still print "Slab cache page".
NO_MEMCG = {"6.12": " cgroup_disable=memory"}


# Our own directory, not pytest's tmp_path: other pytest sessions on this
# machine prune old basetemps, which would delete a dump under our feet.
# The last run's dumps stay here for inspection (about 25 MB each).
WORK = Path(tempfile.gettempdir()) / "pageext-owner-tests"


@pytest.fixture(scope="module", params=list(snapshot_kernels()))
def snap(request):
    """Boot, allocate, read debugfs in the guest, pause, dump; live output while paused."""
    kernel_dir = kernel_for(request.param)
    vmlinux = str(kernel_dir / "vmlinux")
    work = WORK / getattr(request.module, "SNAP_SUBDIR", "") / request.param
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    with TestVM(kernel_dir, cmdline=CLIENTS_ON + NO_MEMCG.get(request.param, ""), workdir=str(work / "vm")) as vm:
        vm.run("dd if=/dev/zero of=/tmp/fill bs=1M count=64 2>/dev/null").check()
        # A shell with an escape byte in its comm allocates tmpfs pages itself (echo is a builtin).
        vm.run("printf 'ev\\033il' > /proc/$$/comm; i=0; while [ $i -lt 300 ]; do "
               "echo $i > /tmp/evil.$i; i=$((i+1)); done").check()
        # tmpfs pages charged to a memory cgroup, and to one removed since (its
        # pages keep the charge: an offline memcg), for the kernel's "Charged
        # to [offline ]memcg NAME" lines (print_page_owner_memcg, CONFIG_MEMCG).
        if request.param not in NO_MEMCG:
            vm.run(MEMCG_PAGES).check()
        vm.run(HOLDER).check()
        res = vm.run("grep -m1 'now at' /proc/timer_list; grep -m1 exec_start /proc/self/sched > /share/po.clock; "
                     "cat /sys/kernel/debug/page_owner | dd bs=1M iflag=fullblock of=/share/page_owner.txt "
                     "2>/dev/null; grep -m1 'now at' /proc/timer_list").check()
        start, end = (int(x) for x in re.findall(r"now at (\d+) nsecs", res.out))
        # "Allocated or freed after the read began" is judged on page_owner's clock.
        start = min(start, local_clock(vm.share / "po.clock"))
        (work / "clock.txt").write_text(f"{start} {end}\n")
        vm.run(holder_pagemap()).check()
        # A module may read more of the kernel's own output last, right before the
        # pause (tests/test_vm_owner_sort.py: page_owner_stacks/show_stacks).
        before_pause = getattr(request.module, "before_pause", None)
        extra = before_pause(vm) if before_pause else {}
        vm.pause()
        core = vm.dump(str(work / "core.kdump"), "kdump-zlib")
        live = inspect("owner", "--qemu", vm.qmp_path, "-s", vmlinux, "--format", "debugfs").stdout
        kernel_text = (vm.share / "page_owner.txt").read_bytes().decode("latin-1")
        yield {"vm": vm, "vmlinux": vmlinux, "version": request.param, "core": core, "start": start,
               "end": end, "kernel": kernel_text, "live": live, "work": work,
               "pagemap": (vm.share / "holder.pagemap").read_bytes(), **extra}


# A process that holds ~2 MB of private anonymous memory, blocked in a builtin.
HOLDER = ("mkfifo /tmp/hold; sh -c 'x=$(head -c 2000000 /dev/zero | tr \"\\\\0\" a); "
          "echo $$ > /tmp/holder.pid; read y < /tmp/hold' > /dev/null 2>&1 &")


def holder_pagemap(page_size: int = 4096) -> str:
    """The guest command writing the kernel's own view of :data:`HOLDER`'s
    mappings to /share/holder.pagemap: /proc/PID/pagemap (one entry per page)
    of its anonymous regions."""
    return ("while [ ! -s /tmp/holder.pid ]; do sleep 0.1; done; pid=$(cat /tmp/holder.pid); "
            "grep 'rw-p 00000000 00:00 0' /proc/$pid/maps > /share/holder.maps; "
            "while read range rest; do s=${range%-*}; e=${range#*-}; "
            f"dd if=/proc/$pid/pagemap bs=8 skip=$((0x$s/{page_size})) count=$(((0x$e-0x$s)/{page_size})) "
            "2>/dev/null; done < /share/holder.maps > /share/holder.pagemap")


class FreeState:
    """Which pages of the dump are free: inside a buddy block, or with _refcount 0."""

    def __init__(self, snap):
        from inspector import PageExt

        pe = PageExt.open(snap["core"], vmlinux=snap["vmlinux"])
        self.prog = pe.prog
        po = pe.client("page_owner")
        self.in_buddy = {p for pfn, order in po.free_blocks() for p in range(pfn, pfn + (1 << order))}

    def refcount(self, pfn: int) -> int:
        from drgn.helpers.linux.mm import pfn_to_page
        return pfn_to_page(self.prog, pfn)._refcount.counter.value_()


def stale_early(block: str) -> bool:
    """init_page_owner() marked every non-buddy page "allocated" at boot, free
    pages on per-cpu lists included; such a page keeps that record while it
    moves between pcp lists and buddy blocks.  read_page_owner() prints it
    unless a buddy block covers it at that instant, so it can appear on
    either side."""
    return "mask 0x0()" in block and " init_page_owner+" in block


@pytest.fixture(scope="module")
def compared(snap):
    """Our debugfs text vs the kernel's, classified."""
    return compare_with_kernel(snap)


def compare_with_kernel(snap: dict) -> dict:
    """``owner --format debugfs`` of snap["core"] vs the kernel's own text
    snap["kernel"], read from local_clock() snap["start"] on (and snap["end"],
    for the message), record by record: identical, differing only in live page
    flags, explained by timestamps or the free lists, or unexplained.  With
    snap["pfns"] = (first, last) the kernel's text covers only those pfns
    (a read from a file offset), and so does ours."""
    vmlinux = snap["vmlinux"]
    window = ["--range", "%d-%d" % snap["pfns"]] if snap.get("pfns") else []
    ours_text = inspect("owner", snap["core"], "-s", vmlinux, "--format", "debugfs", *window).stdout
    kernel, ours = parse_debugfs(snap["kernel"]), parse_debugfs(ours_text)
    # Every page with a record (tails and freed too), to explain one-sided records.
    rows = csv.DictReader(io.StringIO(inspect("owner", snap["core"], "-s", vmlinux, "--all", "--tails",
                                              "--format", "csv", *window).stdout))
    now = {int(r["pfn"]): r for r in rows}
    free = FreeState(snap)
    start = snap["start"]
    # Without timestamps (before v5.11) a page freed or reallocated while the
    # kernel printed its text cannot be told from a wrong record: those go to
    # "untimed", which the tests bound instead of explaining.
    timed = has_timestamps(kernel)
    out = {"identical": 0, "flags_only": 0, "block_only": 0, "explained": 0, "in_buddy": 0, "unexplained": [],
           "kernel_only": [], "ours_only": [], "untimed": [], "timed": timed}
    unexplained = out["unexplained"] if timed else out["untimed"]
    for key, block in kernel.items():
        if key in ours:
            if ours[key] == block:
                out["identical"] += 1
            elif without_flags(ours[key]) == without_flags(block):
                out["flags_only"] += 1
            elif without_live_state(ours[key]) == without_live_state(block):
                out["block_only"] += 1
            else:
                unexplained.append(("differs", key, block, ours[key]))
            continue
        out["kernel_only"].append(key)
        pfn, ts = key
        r = now.get(pfn)
        # Freed after the read began, or reallocated after it began.
        if timed and r and ((r["state"] == "freed" and int(r["free_ts_nsec"]) >= start) or
                            int(r["ts_nsec"]) >= start):
            out["explained"] += 1
        elif pfn in free.in_buddy and stale_early(block):
            out["in_buddy"] += 1  # the dump has the page inside a free buddy block
        else:
            unexplained.append(("kernel only", key, block, r))
    for key in ours:
        if key not in kernel:
            out["ours_only"].append(key)
            if timed and key[1] >= start:  # allocated after the read began
                out["explained"] += 1
            elif stale_early(ours[key]) and free.refcount(key[0]) == 0:
                out["in_buddy"] += 1  # a free page (pcp list) with its stale boot record
            else:
                unexplained.append(("ours only", key, ours[key], None))
    out["kernel"], out["ours"], out["ours_text"] = kernel, ours, ours_text
    untimed = "" if timed else f", untimed (no ts before v5.11) {len(out['untimed'])}"
    print(f"\n[{snap['version']}] page_owner debugfs vs vmcore: kernel {len(kernel)} records, ours {len(ours)}; "
          f"identical {out['identical']}, differing only in live page flags {out['flags_only']} "
          f"or also in the pageblock's migratetype {out['block_only']}, "
          f"explained by timestamps {out['explained']} ({len(out['kernel_only'])} kernel-only, "
          f"{len(out['ours_only'])} ours-only), stale boot records of free pages {out['in_buddy']}, "
          f"unexplained {len(out['unexplained'])}"
          f"{untimed}"
          f"; read took {(snap['end'] - start) / 1e9:.1f} s")
    return out


def test_debugfs_text_matches_the_kernel(compared):
    assert not compared["unexplained"], compared["unexplained"][:3]
    # A kernel without timestamps (5.10): what changed during the read stays
    # unexplained, mostly the reader's own pages, printed and then freed when
    # it exited (dd's 1 MiB buffer alone is 256 pages): 358 of 21,803 records
    # (1.6%) on 5.10.262, against 17,701 before kformat.kallsyms_from_elf.
    assert len(compared["untimed"]) <= 0.03 * len(compared["kernel"]), compared["untimed"][:3]
    # The comparison must have substance: nearly every record is byte-identical.
    assert compared["identical"] > 20000  # 64 MiB of tmpfs alone is 16384 pages
    assert compared["identical"] >= 0.95 * len(compared["kernel"])
    assert compared["flags_only"] <= 0.01 * len(compared["kernel"])
    assert compared["block_only"] <= 0.01 * len(compared["kernel"])


def test_memcg_lines_are_the_kernels(snap, compared):
    """The "Charged ... memcg" lines: the guest's cgroup, an offline one, the root."""
    require_kernel(snap["vmlinux"], (5, 18), "print_page_owner_memcg() (fcf8935832b8)")
    if snap["version"] in NO_MEMCG:
        slab = [k for k, b in compared["kernel"].items() if "\nSlab cache page\n" in b]
        assert slab and all(without_flags(compared["ours"][k]) == without_flags(compared["kernel"][k])
                            for k in slab if k in compared["ours"])
        pytest.skip(f"{snap['version']}: memory controller off (its page_owner oopses on charged pages); "
                    f"{len(slab)} 'Slab cache page' records checked")
    kernel, ours = compared["kernel"], compared["ours"]
    # The removed cgroup's pages: "offline memcg gone" -- unless the kernel
    # charges folios through an objcg and reparented them at rmdir, when they
    # print the parent, the root (7.2 and 7.3: inspector.decode.memcg.
    # charges_folios_through_objcg, from the debug info, not the version).
    prog = open_target(snap["core"], None, snap["vmlinux"]).prog  # a kdump file's arch, as the tool opens it
    gone_pid = (snap["vm"].share / "gone.pid").read_text().strip()
    gone_line = "Charged to memcg /\n" if charges_folios_through_objcg(prog) else "Charged to offline memcg gone\n"
    # Its dd's records (the shell exec'd dd, so the pid is the one it wrote):
    # the 50 file pages say gone_line; its page tables and stack say "(via
    # objcg)", and what the shell allocated before joining the cgroup says
    # another memcg, so count, not all.
    gone = [k for k, b in kernel.items() if f"pid {gone_pid}, " in b.split("\n", 1)[0]]
    assert sum(gone_line in kernel[k] for k in gone) >= 50, \
        (len(gone), sorted({ln for k in gone for ln in kernel[k].split("\n") if ln.startswith("Charged")}))
    for line, least in (("Charged to memcg pagecg\n", 100), (gone_line, 50)):
        keys = [k for k, b in kernel.items() if line in b]
        assert len(keys) >= least, f"the kernel printed {len(keys)} records with {line!r}"
        assert all(without_flags(ours[k]) == without_flags(kernel[k]) for k in keys if k in ours)
        assert sum(k in ours for k in keys) >= least
    js = json_lines(inspect("owner", snap["core"], "-s", snap["vmlinux"], "--pfn",
                            str(next(k for k, b in kernel.items() if "memcg pagecg" in b)[0]), "--json").stdout)[0]
    assert js["memcg"] == "pagecg"


def test_612_memcg_oops_and_we_still_read_the_dump(tmp_path):
    """With the memory controller on, 6.12's own page_owner file (from
    6.12.115 on: the 90f095b816e2 backport) oopses at the first charged user
    page; the dump still decodes in full."""
    kdir = kernel_for("6.12")
    with TestVM(kdir, cmdline=CLIENTS_ON, workdir=str(tmp_path / "vm")) as vm:
        vm.run(MEMCG_PAGES).check()  # pages charged to cgroups (none are, before any)
        vm.run("cat /sys/kernel/debug/page_owner > /share/page_owner.txt 2>/dev/null; true")
        dmesg = vm.dmesg()
        vm.pause()
        core = vm.dump(str(tmp_path / "core.kdump"), "kdump-zlib")
        partial = (vm.share / "page_owner.txt").read_bytes().decode("latin-1")
    # The fault address is css.refcnt's percpu_count_ptr read as a memcg: 3
    # (NULL pointer dereference at 0x57) for the root, a per-CPU offset otherwise.
    assert "Oops" in dmesg and "RIP: 0010:print_page_owner+" in dmesg
    proc = inspect("owner", core, "-s", str(kdir / "vmlinux"), "--format", "debugfs")
    kernel, ours = parse_debugfs(partial), parse_debugfs(proc.stdout)
    # The kernel got no further than the oops; we print every record, and say
    # that the charged pages' memcg words led to unreadable memory.
    assert len(ours) > len(kernel) and "memcg_data word(s) point at unreadable memory" in proc.stderr
    same = [k for k in kernel if k in ours]
    assert len(same) >= 0.9 * len(kernel)
    assert all(without_flags(ours[k]) == without_flags(kernel[k]) for k in same[:-1])


def test_escaped_comm_is_the_kernels_bytes_in_debugfs_and_escaped_elsewhere(snap, compared):
    require_kernel(snap["vmlinux"], *FIELD_SINCE["comm"])
    vmlinux = snap["vmlinux"]
    evil = [k for k, b in compared["kernel"].items() if f"({COMM})" in b]
    assert len(evil) >= 100, "the guest shell's allocations are missing from the kernel's text"
    both = [k for k in evil if k in compared["ours"]]
    assert both and all(without_flags(compared["ours"][k]) == without_flags(compared["kernel"][k])
                        for k in both)
    assert any(compared["ours"][k] == compared["kernel"][k] for k in both)
    pfn = evil[0][0]
    text = inspect("owner", snap["core"], "-s", vmlinux, "--pfn", str(pfn)).stdout
    assert "\x1b" not in text and "(ev\\x1bil)" in text
    js = json_lines(inspect("owner", snap["core"], "-s", vmlinux, "--pfn", str(pfn), "--json").stdout)[0]
    assert js["comm"] == "ev\\x1bil"


def test_json_lines_are_records_and_the_trailer_is_asked_for(snap):
    """owner --json: every line a record (pandas.read_json(lines=True) and jq
    .pfn take it as it is); --trailer adds the {"missing": ...} line (issue 20)."""
    pfn = min(k[0] for k in parse_debugfs(snap["kernel"]))
    args = ("owner", snap["core"], "-s", snap["vmlinux"], "--pfn", str(pfn), "--json")
    plain = inspect(*args).stdout.splitlines()
    assert len(plain) == 1 and loads(plain[0])["pfn"] == pfn
    trailed = inspect(*args, "--trailer").stdout.splitlines()
    assert trailed[:1] == plain and len(trailed) == 2
    validate("owner", json.loads(trailed[1]))
    assert loads(trailed[1]) == {"missing": loads(trailed[1])["missing"]}
    assert loads(trailed[1])["missing"]["page_ext"] == [] and loads(trailed[1])["missing"]["stack_handles"] == []
    assert inspect("owner", snap["core"], "-s", snap["vmlinux"], "--trailer", check_rc=2).stderr.count("\n") == 1


def test_debugfs_text_is_escaped_on_a_terminal_only(snap, compared):
    """--format debugfs writes the kernel's own bytes to a pipe, and escapes
    them on a terminal (Context.tty; it was always False before issue 19)."""
    require_kernel(snap["vmlinux"], *FIELD_SINCE["comm"])
    evil = next(k for k, b in compared["kernel"].items() if f"({COMM})" in b and k in compared["ours"])
    args = ("owner", snap["core"], "-s", snap["vmlinux"], "--pfn", str(evil[0]), "--format", "debugfs")
    piped = subprocess.run([str(Path(sys.executable).parent / "pageext-inspect"), *args],
                           capture_output=True, timeout=600)
    assert piped.returncode == 0 and b"(ev\x1bil)" in piped.stdout
    rc, screen = inspect_pty(*args)
    assert rc == 0 and b"\x1b" not in screen and b"(ev\\x1bil)" in screen


def test_live_qmp_equals_vmcore_of_the_paused_guest(snap, compared):
    assert snap["live"] == compared["ours_text"]
    assert len(snap["live"]) > 1_000_000


def _aggregate(records: dict, by: str) -> dict:
    pages, allocs = defaultdict(int), defaultdict(int)
    for block in records.values():
        f = fields(block)
        k = f[by]
        pages[k] += 1 << f["order"]
        allocs[k] += 1
    return {k: (pages[k], allocs[k]) for k in pages}


def expected_top(compared: dict, by: str) -> dict:
    """``top --by BY`` as the kernel's text says it: its records, minus those
    explained as gone after the read began, plus those explained as new (the
    records the dump holds), summed."""
    expected_recs = {k: b for k, b in compared["kernel"].items() if k not in set(compared["kernel_only"])}
    expected_recs.update({k: compared["ours"][k] for k in compared["ours_only"]})
    # Untimed records (no ts before v5.11) that changed during the read: as the dump has them.
    expected_recs.update({u[1]: compared["ours"][u[1]] for u in compared["untimed"] if u[0] == "differs"})
    return _aggregate(expected_recs, by)


def top_of(core: str, vmlinux: str, by: str) -> tuple[list, dict]:
    """Our ``top --by BY --json`` rows, and key -> (pages, allocations)."""
    rows = loads(inspect("top", core, "-s", vmlinux, "--by", by, "--json").stdout)["rows"]
    got = {}
    for r in rows:
        k = tuple(r["key"]) if by == "stack" else r["key"]
        if by == "comm":
            k = k.encode().decode("unicode_escape") if "\\" in k else k
        got[k] = (r["pages"], r["allocations"])
    return rows, got


@pytest.mark.parametrize("by", ["stack", "pid", "tgid", "comm", "gfp", "order", "migratetype"])
def test_top_equals_the_aggregate_of_the_kernels_text(snap, compared, by):
    vmlinux = snap["vmlinux"]
    if by in FIELD_SINCE:
        require_kernel(vmlinux, *FIELD_SINCE[by])
    rows, got = top_of(snap["core"], vmlinux, by)
    assert got == expected_top(compared, by)
    # The same sums straight from the kernel's text differ only by the explained records.
    raw = _aggregate(compared["kernel"], by)
    assert sum(p for p, _ in raw.values()) > 20000
    # --min-pages and --limit cut the same sorted list.
    top2 = loads(inspect("top", snap["core"], "-s", vmlinux, "--by", by, "--json", "--limit", "2",
                              "--min-pages", "2").stdout)["rows"]
    assert top2 == [r for r in rows if r["pages"] >= 2][:2]


def test_bad_pfns_get_one_clear_line(snap):
    vmlinux = snap["vmlinux"]
    proc = inspect("owner", snap["core"], "-s", vmlinux, "--pfn", str(1 << 40), check_rc=2)
    assert "outside memory" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    proc = inspect("owner", snap["core"], "-s", vmlinux, "--range", "9-3", check_rc=2)
    assert "bad --range" in proc.stderr


def test_pfn_without_page_ext_on_an_offline_hot_added_block(snap):
    vmlinux = snap["vmlinux"]
    vm = snap["vm"]
    vm.resume()
    vm.hot_add("dimm9", 128, node=1)
    addr, size = vm.dimm_address("dimm9")
    pfn = addr // 4096
    proc = inspect("owner", "--qemu", vm.qmp_path, "-s", vmlinux, "--pfn", hex(pfn), check_rc=2)
    assert "has no page_ext" in proc.stderr and "offline" in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_a_corrupt_handle_prints_invalid_and_the_rest_carry_on(snap):
    """Corrupt one record's handle in our reader's view of the dump."""
    from inspector import PageExt

    pe = PageExt.open(snap["core"], vmlinux=snap["vmlinux"])
    po = pe.client("page_owner")
    batch = next(po.batches(debugfs=True))
    assert len(batch) > 10
    good = po.debugfs_bytes(batch.take(np.array([1])))
    idx_bits = po.depot._fields[po.depot._index_name]
    handle = int(batch.e["handle"][0])
    bad_handles = [handle ^ (1 << (idx_bits[0] + idx_bits[1] - 1)),  # pool index out of range
                   handle ^ (1 << po.depot._fields["offset"][0])]  # record elsewhere in the pool
    for bad in bad_handles:
        one = batch.take(np.array([0]))
        one.e["handle"][0] = bad
        text = po.debugfs_bytes(one).decode("latin-1")
        assert f" <invalid handle {bad:#x}>\n" in text
    assert po.debugfs_bytes(batch.take(np.array([1]))) == good
    assert po.invalid_records == 2 and len(po.depot.invalid) == 2


def test_page_table_check_counts_agree_with_pagemap_and_rmap(snap):
    """Oracles: the holder's pagemap (present, exclusively mapped, anonymous
    pages must have anon_map_count 1 and file_map_count 0) and, page by page,
    the rmap's own _mapcount (checked inside table-check)."""
    require_kernel(snap["vmlinux"], *PAGE_TABLE_CHECK_SINCE)
    table_check_agrees(snap["core"], snap["vmlinux"], snap["pagemap"], snap["version"])


def table_check_agrees(core: str, vmlinux: str, pagemap: bytes, version: str, page_size: int = 4096) -> None:
    """test_page_table_check_counts_agree_with_pagemap_and_rmap's oracles, on
    one dump (tests/test_vm_arm64.py's too): :data:`HOLDER`'s pagemap and the
    rmap's _mapcount."""
    exclusive_anon = set()
    for (entry,) in struct.iter_unpack("<Q", pagemap):
        if entry >> 63 & 1 and entry >> 56 & 1 and not entry >> 61 & 1:
            exclusive_anon.add(entry & ((1 << 55) - 1))
    # The holder's 2 MB string: about 488 pages of 4K (30 of 64K).
    least = int(0.8 * 2_000_000 / page_size)
    assert len(exclusive_anon) >= least, f"holder has only {len(exclusive_anon)} private anonymous pages"
    rows = {int(r["pfn"]): r for r in csv.DictReader(io.StringIO(
        inspect("table-check", core, "-s", vmlinux, "--list").stdout))}
    wrong = [p for p in exclusive_anon
             if p not in rows or (rows[p]["anon_map_count"], rows[p]["file_map_count"]) != ("1", "0")]
    assert not wrong, [(hex(p), rows.get(p)) for p in wrong[:5]]
    text = inspect("table-check", core, "-s", vmlinux, "--json").stdout
    validate("table-check", json.loads(text))
    summary = loads(text)
    assert summary["both"] == summary["negative"] == summary["not_anon"] == summary["anon_file"] == 0
    # The dump is of a running guest, paused at an arbitrary instruction.  In
    # 6.1 the rmap count and page_table_check's count change a few
    # instructions apart (map: page_add_*_rmap() then set_pte_at(); unmap:
    # ptep_get_and_clear() then page_remove_rmap()), so each vCPU can be
    # caught inside one such window: at most one page per vCPU, off by one --
    # or one page off by two when both vCPUs were inside a window on it (two
    # processes unmapping the same shared file page: seen once on 7.3).
    vcpus = 2
    assert summary["mapcount_mismatch"] <= vcpus, summary["mapcount_mismatch_pfns"]
    off = []
    for pfn in summary["mapcount_mismatch_pfns"]:
        if pfn in rows:
            r = rows[pfn]
            counted = int(r["anon_map_count"]) + int(r["file_map_count"])
            off.append(abs(counted - (int(r["mapcount"]) + 1)))
            assert off[-1] >= 1, r
    assert sum(off) <= vcpus, (off, [rows.get(p) for p in summary["mapcount_mismatch_pfns"]])
    assert summary["anon_mappings"] >= len(exclusive_anon)
    assert summary["mapcount_checked"] > 0.9 * summary["pages"]
    print(f"\n[{version}] page_table_check: {summary['anon_pages']} anon pages "
          f"({summary['anon_mappings']} mappings), {summary['file_pages']} file pages "
          f"({summary['file_mappings']} mappings); holder's {len(exclusive_anon)} exclusive anon pages all 1/0; "
          f"{summary['mapcount_checked']} order-0 pages agree with _mapcount")


@pytest.mark.parametrize("boot, off, command", [("page_owner=on", "page_table_check", "table-check"),
                                                 ("page_table_check=on", "page_owner", "owner")])
def test_inactive_client_is_reported_as_such(kernel_dir, tmp_path, boot, off, command):
    vmlinux = str(kernel_dir / "vmlinux")
    require_kernel(vmlinux, *PAGE_TABLE_CHECK_SINCE)  # both cases turn it on or off
    with TestVM(kernel_dir, cmdline=boot, workdir=str(tmp_path / "vm")) as vm:
        rows = loads(inspect("clients", "--qemu", vm.qmp_path, "-s", vmlinux, "--json").stdout)["clients"]
        state = {r["name"]: r["state"] for r in rows}
        on = "page_owner" if off == "page_table_check" else "page_table_check"
        assert state[on] == "active"
        assert state[off].startswith("compiled in, inactive")
        proc = inspect(command, "--qemu", vm.qmp_path, "-s", vmlinux, check_rc=2)
        assert "inactive in this boot" in proc.stderr and f"{off}=on" in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
        if off == "page_owner":
            # The kernel agrees: its debugfs file refuses to read (-EINVAL).
            assert vm.run("cat /sys/kernel/debug/page_owner > /dev/null").rc != 0


def test_a_corrupt_record_in_a_vmcore_is_reported_and_counted(snap):
    """Overwrite one record's stack handle inside an ELF vmcore; the CLI prints
    <invalid handle 0x...> for it, every other record as before, and the count."""
    from drgn.helpers.linux.mm import follow_phys

    from inspector import PageExt

    vm, vmlinux = snap["vm"], snap["vmlinux"]
    vm.pause()
    try:
        elf = vm.dump(str(snap["work"] / "core.elf"), "elf")
    finally:
        vm.resume()
    try:
        pe = PageExt.open(elf, vmlinux=vmlinux)
        po = pe.client("page_owner")
        rec = list(itertools.islice(po.records(debugfs=True), 200))[-1]
        virt = pe.entry_address(rec.pfn) + po.client.offset + drgn_offset(pe.prog, "handle")
        phys = follow_phys(pe.prog["init_mm"].address_of_(), virt).value_()
        lo, hi = rec.pfn - 3, rec.pfn + 3
        before = inspect("owner", elf, "-s", vmlinux, "--format", "debugfs", "--range", f"{lo}-{hi}").stdout
        bad = 0xFFFFFFFF  # pool index far beyond the pools allocated
        with open(elf, "r+b") as f:
            f.seek(elf_offset(f, phys))
            assert struct.unpack("<I", f.read(4))[0] == rec.handle
            f.seek(-4, 1)
            f.write(struct.pack("<I", bad))
        proc = inspect("owner", elf, "-s", vmlinux, "--format", "debugfs", "--range", f"{lo}-{hi}", check_rc=1)
        after = parse_debugfs(proc.stdout)
        assert any(f" <invalid handle {bad:#x}>\n" in b for k, b in after.items() if k[0] == rec.pfn)
        same = {k: b for k, b in parse_debugfs(before).items() if k[0] != rec.pfn}
        assert same and all(after[k] == b for k, b in same.items())
        assert "1 record(s) with invalid stack handles" in proc.stderr
    finally:
        os.unlink(elf)


def drgn_offset(prog, member: str) -> int:
    import drgn
    return drgn.offsetof(prog.type("struct page_owner"), member)


def elf_offset(f, phys: int) -> int:
    """File offset of physical address ``phys`` in an ELF64 vmcore (PT_LOAD p_paddr)."""
    f.seek(0)
    head = f.read(64)
    phoff, = struct.unpack_from("<Q", head, 32)
    phentsize, phnum = struct.unpack_from("<HH", head, 54)
    f.seek(phoff)
    phdrs = f.read(phentsize * phnum)
    for i in range(phnum):
        p_type, _fl, p_offset, _va, p_paddr, p_filesz = struct.unpack_from("<IIQQQQ", phdrs, i * phentsize)
        if p_type == 1 and p_paddr <= phys < p_paddr + p_filesz:
            return p_offset + phys - p_paddr
    raise AssertionError(f"physical address {phys:#x} is not in the vmcore")


def test_stack_reads_agree_with_drgns_stack_depot_fetch(snap):
    """Every handle in the dump: our one-read entries == drgn's helper's non-inline frames."""
    from inspector import PageExt

    po = PageExt.open(snap["core"], vmlinux=snap["vmlinux"]).client("page_owner")
    handles = {r.handle for r in po.records("all")} | {r.free_handle for r in po.records("all") if r.free_handle}
    assert len(handles) > 100
    for h in handles:
        where = po.depot.locate(h)
        assert isinstance(where, tuple), hex(h)
        assert po.depot.pcs_at(*where) == po.depot.fetch_pcs(h), hex(h)
