#!/usr/bin/env python3
"""Soak: ``watch --qemu`` on the 6.12 test guest for half an hour while a slow leak runs (issue 23).

Boots the 6.12 test kernel (page_owner on, 1 GiB, the memory controller off
as in tests/test_vm_history.py), starts tests/test_vm_kdump.py's churn and
scripts/leaker.c growing a tmpfs file by fallocate() at --leak-rate MiB/s
in --step KiB steps, and runs ``pageext-inspect watch --qemu qmp.sock
--pause ctl.sock --interval S`` for --minutes, its snapshots kept in a
directory.  Every minute it reads the watch process's RSS
(/proc/PID/status), its open file descriptors (/proc/PID/fd) and the
directory's size, and prints them; at the end the RSS slope (bytes per
sample, from the fifth minute on), the fds, the bytes on disk per sample,
the verdict and whether the leak's stack (shmem_fallocate) is the top
suspect.  A script, not a test: it takes as long as it is told.

    scripts/soak.py KERNEL_DIR [--minutes 30] [--interval 10] [--leak-rate 0.05] [--workdir DIR]

KERNEL_DIR is what ``scripts/build-kernel.sh -v 6.12 -f fixtures/kernel/pageext-6.1.config
-f fixtures/kernel/memcg.config -f fixtures/kernel/kdump.config -f fixtures/kernel/alloc-tags.config``
prints.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "tests"))
from testvm import TestVM, helper  # noqa: E402

CLIENTS_ON = "page_owner=on page_table_check=on"  # tests/conftest.py
NO_MEMCG = " cgroup_disable=memory"  # tests/test_vm_owner.py: 6.12's page_owner text oopses on charged pages
LEAK_FRAME = "shmem_fallocate+"


def status(pid: int) -> tuple[int, int]:
    """(RSS bytes, open fds) of a process; (0, 0) once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            rss = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))
        return rss, len(os.listdir(f"/proc/{pid}/fd"))
    except (OSError, StopIteration):
        return 0, 0


def du(d: Path) -> tuple[int, int]:
    files = [f for f in d.iterdir() if f.suffix == ".parquet"] if d.is_dir() else []
    return sum(f.stat().st_size for f in files), len(files)


def slope(points) -> float:
    n = len(points)
    if n < 2:
        return float("nan")
    mx, my = sum(x for x, _ in points) / n, sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / sxx if sxx else float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("kernel_dir")
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--interval", type=float, default=10)
    ap.add_argument("--leak-rate", default="0.05", help="MiB/s (0.05: 768 pages/min)")
    ap.add_argument("--step", default="64", help="KiB per leak step")
    ap.add_argument("--workdir")
    a = ap.parse_args()
    kernel = Path(a.kernel_dir)
    vmlinux = str(kernel / "vmlinux")
    work = Path(a.workdir or tempfile.mkdtemp(prefix="pageext-soak-"))
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    snaps = work / "snaps"
    count = int(a.minutes * 60 / a.interval)
    exe = Path(sys.executable).parent / "pageext-inspect"
    from test_vm_kdump import CHURN
    t0 = time.time()
    with TestVM(kernel, cmdline=CLIENTS_ON + NO_MEMCG, workdir=str(work / "vm")) as vm:
        print(f"soak: guest up in {time.time() - t0:.0f} s; {count} samples every {a.interval:g} s, "
              f"leak {a.leak_rate} MiB/s", flush=True)
        shutil.copy(helper("leaker"), vm.share / "leaker")
        vm.run("mkdir -p /leak && mount -t tmpfs -o size=0 leak /leak && "
               f"(/share/leaker -f /leak/leak -r {a.leak_rate} -s {a.step} > /dev/null 2>&1 &)").check()
        vm.run(CHURN).check()
        out, err = open(work / "watch.json", "w"), open(work / "watch.err", "w")
        with vm.ctl_released() as ctl:
            proc = subprocess.Popen([str(exe), "watch", "--qemu", vm.qmp_path, "-s", vmlinux, "--pause", ctl,
                                     "--interval", str(a.interval), "--count", str(count), "-o", str(snaps),
                                     "--json", "--no-progress"], stdout=out, stderr=err)
            start, seen = time.time(), []
            while proc.poll() is None:
                time.sleep(min(60, max(1, a.minutes * 60 / 30)))
                rss, fds = status(proc.pid)
                size, files = du(snaps)
                if rss:
                    minute = (time.time() - start) / 60
                    seen.append((minute, rss, fds, size))
                    print(f"  {minute:5.1f} min: RSS {rss / 2**20:6.1f} MiB, {fds} fds, {files} files "
                          f"{size / 2**20:6.2f} MiB", flush=True)
            rc = proc.wait()
        out.close()
        err.close()
    wall = time.time() - start
    text = (work / "watch.err").read_text()
    if rc not in (0, 3):
        print(f"soak: watch exited {rc}: {text.strip()[-2000:]}")
        return 1
    doc = json.loads((work / "watch.json").read_text())
    n = len(doc["samples"])
    size, files = du(snaps)
    per_min = n / (wall / 60)
    late = [(m * per_min, rss) for m, rss, _, _ in seen if m >= 5]
    top = next((s for s in doc["stacks"] if s["suspect"]), None)
    leak_top = top is not None and any(f.startswith(LEAK_FRAME) for f in top["stack"])
    reads = [s["read_seconds"] for s in doc["samples"]]
    print(f"\nsoak: {n} samples over {wall / 60:.1f} min ({doc['t_min'][-1]:.1f} min of the {doc['time_axis']}), "
          f"exit {rc}")
    print(f"  RSS of watch: {seen[0][1] / 2**20:.1f} MiB at minute {seen[0][0]:.1f}, "
          f"{seen[-1][1] / 2**20:.1f} MiB at minute {seen[-1][0]:.1f}; slope from minute 5: "
          f"{slope(late):.0f} bytes/sample")
    print(f"  open fds of watch: {sorted({f for _, _, f, _ in seen})}")
    print(f"  disk: {size / 2**20:.2f} MiB in {files} files, {size / max(n, 1) / 1024:.1f} KiB/sample")
    print(f"  read per sample: median {sorted(reads)[len(reads) // 2]:.2f} s, max {max(reads):.2f} s")
    print(f"  {doc['verdict']} {', '.join(doc['suspects'])}")
    print(f"  the leak (shmem_fallocate) is the top suspect: {'yes' if leak_top else 'NO'}")
    return 0 if leak_top else 1


if __name__ == "__main__":
    sys.exit(main())
