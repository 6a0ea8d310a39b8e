#!/usr/bin/env python3
"""Benchmark: page_owner decode from a vmcore vs a naive drgn loop vs the kernel's own debugfs.

For each run ``MEM[:FILL]`` (default 1024, 3072 and 3072:2048: 1 GiB and
3 GiB idle, and 3 GiB with 2 GiB of it in use) this boots the test kernel
with page_owner=on, writes FILL MiB (default 64) to tmpfs, times ``cat
/sys/kernel/debug/page_owner > /dev/null`` inside the guest (guest monotonic
clock), pauses the guest and dumps it (kdump-zlib).  Then, on the host:

* full decode: ``pageext-inspect owner VMCORE --format debugfs > /dev/null``
  as a child process: wall time and peak RSS (wait4), startup included;
* naive: one drgn Object per page over the same tables -- ``struct
  page_ext`` flags, then ``struct page_owner`` fields, stack_depot_fetch()
  and symbol lookup per record, no caching -- the obvious drgn script;
  ``--naive-pages N`` times the first N pages and extrapolates by pages: only
  a rough figure, the low pages being denser in records (default: all pages).

The kernel's cost grows with its records (about 80 us each under TCG) and
ours has a fixed part (start-up, debug info, reading every table) plus a few
us per record, so the ratio is printed per run and per record.

Usage: scripts/bench_owner.py [KERNEL_DIR] [--run 1024 --run 3072:2048] [--naive-pages N]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT))

from testvm import TestVM  # noqa: E402


def run_child(argv: list[str]) -> tuple[float, int, int]:
    """(wall seconds, peak RSS KiB, exit status) of a child writing to /dev/null."""
    t0 = time.perf_counter()
    with open(os.devnull, "wb") as null:
        proc = subprocess.Popen(argv, stdout=null, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    return wall, usage.ru_maxrss, os.waitstatus_to_exitcode(status)


def naive(core: str, vmlinux: str, limit: int | None) -> tuple[float, int, int]:
    """Per-page drgn Objects over the page_ext tables: (seconds, pages, records)."""
    import drgn
    from drgn.helpers.linux.stackdepot import stack_depot_fetch

    from inspector import PageExt

    pe = PageExt.open(core, vmlinux=vmlinux)
    prog, geo, layout = pe.prog, pe.layout, pe.layout
    off = next(c.offset for c in geo.clients if c.name == "page_owner")
    owner_bit = 1 << prog.constant("PAGE_EXT_OWNER").value_()
    alloc_bit = 1 << prog.constant("PAGE_EXT_OWNER_ALLOCATED").value_()
    ext_type = prog.type("struct page_ext")
    po_type = prog.type("struct page_owner")
    pages = records = 0
    t0 = time.perf_counter()
    for t in layout.tables:
        for i in range(t.nr_pages):
            if limit is not None and pages >= limit:
                break
            pages += 1
            addr = t.address + i * geo.entry_size
            ext = drgn.Object(prog, ext_type, address=addr)
            flags = ext.flags.value_()
            if not flags & owner_bit or not flags & alloc_bit:
                continue
            po = drgn.Object(prog, po_type, address=addr + off)
            order = po.order.value_()
            if (t.start_pfn + i) & ((1 << order) - 1):
                continue
            fields = (po.gfp_mask.value_(), po.pid.value_(), po.tgid.value_(), po.comm.string_(),
                      po.ts_nsec.value_(), po.free_ts_nsec.value_(), po.last_migrate_reason.value_())
            trace = stack_depot_fetch(po.handle)
            lines = []
            if trace is not None:
                for frame in trace:
                    try:
                        sym = prog.symbol(frame.pc)
                        lines.append(f"{sym.name}+{frame.pc - sym.address:#x}/{sym.size:#x}")
                    except LookupError:
                        lines.append(hex(frame.pc))
            records += 1
            del fields, lines
    return time.perf_counter() - t0, pages, records


def guest_debugfs_seconds(vm: TestVM) -> tuple[float, int]:
    out = vm.run("grep -m1 'now at' /proc/timer_list; cat /sys/kernel/debug/page_owner > /dev/null; "
                 "grep -m1 'now at' /proc/timer_list; grep -c '^Page allocated' /sys/kernel/debug/page_owner",
                 timeout=1800).check().out
    a, b = (int(x) for x in re.findall(r"now at (\d+) nsecs", out))
    return (b - a) / 1e9, int(out.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("kernel_dir", nargs="?", default=os.environ.get("PAGEEXT_KERNEL_DIR"))
    ap.add_argument("--run", action="append", metavar="MEM[:FILL]",
                    help="guest MiB and MiB written to tmpfs (repeatable; default 1024, 3072, 3072:2048)")
    ap.add_argument("--naive-pages", type=int, default=None, help="time the naive loop on N pages only")
    ap.add_argument("--naive-all", action="store_true",
                    help="run the naive loop on every guest size (default: the first only; it takes minutes)")
    args = ap.parse_args()
    kdir = args.kernel_dir or subprocess.run([str(ROOT / "scripts" / "build-kernel.sh")], check=True,
                                             stdout=subprocess.PIPE, text=True).stdout.strip().splitlines()[-1]
    vmlinux = str(Path(kdir) / "vmlinux")
    exe = str(Path(sys.executable).parent / "pageext-inspect")
    rows = []
    for run in args.run or ["1024", "3072", "3072:2048"]:
        mem, _, fill = run.partition(":")
        mem, fill = int(mem), int(fill or 64)
        with tempfile.TemporaryDirectory(prefix="bench-owner-") as work:
            with TestVM(kdir, cmdline="page_owner=on page_table_check=on", mem_mb=mem,
                        workdir=os.path.join(work, "vm")) as vm:
                vm.run(f"mount -o remount,size=90% /tmp; dd if=/dev/zero of=/tmp/fill bs=1M count={fill} "
                       "2>/dev/null").check()
                kernel_s, nrec = guest_debugfs_seconds(vm)
                vm.pause()
                core = vm.dump(os.path.join(work, "core.kdump"), "kdump-zlib")
            full_s, rss_kib, rc = run_child([exe, "owner", core, "-s", vmlinux, "--format", "debugfs"])
            assert rc == 0, f"owner exited {rc}"
            top_s, top_rss, rc = run_child([exe, "top", core, "-s", vmlinux, "--by", "stack"])
            total_pages = mem * 256
            if rows and not args.naive_all:
                naive_s, npages, nrecs, naive_full = float("nan"), 0, 0, float("nan")
            else:
                naive_s, npages, nrecs = naive(core, vmlinux, args.naive_pages)
                naive_full = naive_s * (total_pages / npages) if npages < total_pages else naive_s
            rows.append((f"{mem}:{fill}", nrec, kernel_s, full_s, rss_kib, top_s, top_rss, naive_s, npages,
                         naive_full))
            print(f"guest {mem} MiB, {fill} MiB in tmpfs: debugfs records {nrec}; guest cat {kernel_s:.2f} s; "
                  f"owner --format debugfs {full_s:.2f} s (peak RSS {rss_kib / 1024:.0f} MiB); "
                  f"top --by stack {top_s:.2f} s (peak RSS {top_rss / 1024:.0f} MiB); naive drgn loop "
                  f"{naive_s:.1f} s for {npages} pages ({nrecs} records) -> {naive_full:.1f} s for all "
                  f"{total_pages} pages", flush=True)
    print()
    print(f"{'MEM:FILL':>10} {'records':>8} {'guest cat':>10} {'owner':>8} {'x vs cat':>9} {'us/rec cat':>10} "
          f"{'naive':>9} {'x vs naive':>10} {'peak RSS':>9}")
    for run, nrec, kernel_s, full_s, rss, top_s, top_rss, naive_s, npages, naive_full in rows:
        print(f"{run:>10} {nrec:>8} {kernel_s:>9.2f}s {full_s:>7.2f}s {kernel_s / full_s:>8.1f}x "
              f"{kernel_s / nrec * 1e6:>10.1f} {naive_full:>8.1f}s {naive_full / full_s:>9.1f}x "
              f"{rss / 1024:>7.0f}MiB")
    if len(rows) >= 2:
        # Marginal cost per record between the smallest and largest run.
        a, b = min(rows, key=lambda r: r[1]), max(rows, key=lambda r: r[1])
        if b[1] > a[1]:
            per_cat = (b[2] - a[2]) / (b[1] - a[1]) * 1e6
            per_ours = (b[3] - a[3]) / (b[1] - a[1]) * 1e6
            print(f"\nper extra record: guest cat {per_cat:.1f} us, owner {per_ours:.1f} us "
                  f"({per_cat / per_ours:.1f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
