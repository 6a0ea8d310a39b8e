#!/usr/bin/env python3
"""Benchmark: how long the inspector takes, and how much memory, on the test VM.

Boots the test kernel (1 GiB, 2 nodes), hot-adds DIMMs up to 4 GiB, onlines
them, then times `pageext-inspect --json` three ways -- live over QMP, on an
ELF vmcore and on a kdump-zlib vmcore -- reporting wall time and peak RSS of
each run (best of --repeat).  Usage:

    scripts/bench_walk.py [KERNEL_DIR] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
from testvm import TestVM  # noqa: E402


def timed(cmd: list[str]) -> tuple[float, int]:
    """(wall seconds, peak RSS in KiB) of one child run."""
    t0 = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        fd = os.open(os.devnull, os.O_WRONLY)
        os.dup2(fd, 1); os.dup2(fd, 2)
        os.execv(cmd[0], cmd)
    _, status, usage = os.wait4(pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) not in (0, 1):
        raise SystemExit(f"{' '.join(cmd)} failed")
    return wall, usage.ru_maxrss


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("kernel_dir", nargs="?")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    kdir = args.kernel_dir or subprocess.run([str(ROOT / "scripts" / "build-kernel.sh")], check=True,
                                             capture_output=True, text=True).stdout.strip().splitlines()[-1]
    exe = str(Path(sys.executable).parent / "pageext-inspect")
    tmp = Path(tempfile.mkdtemp(prefix="bench-walk-"))
    with TestVM(kdir, cmdline="page_owner=on page_table_check=on", workdir=str(tmp / "vm")) as vm:
        for i, node in enumerate((0, 1, 0)):
            vm.hot_add(f"d{i}", 1024, node=node)
        vm.online_all()
        nsec = len(vm.memory_blocks())
        vm.pause()
        elf, kdump = vm.dump(str(tmp / "core.elf")), vm.dump(str(tmp / "core.kdump"), "kdump-zlib")
        rows = []
        for name, target in (("qemu (live QMP)", ["--qemu", vm.qmp_path]), ("ELF vmcore", [elf]),
                             ("kdump-zlib vmcore", [kdump])):
            runs = [timed([exe, *target, "-s", f"{kdir}/vmlinux", "--json", "--no-progress"])
                    for _ in range(args.repeat)]
            wall, rss = min(r[0] for r in runs), max(r[1] for r in runs)
            rows.append((name, wall, rss))
    print(f"guest: 4 GiB, {nsec} memory blocks online; best of {args.repeat}")
    print(f"{'target':<20} {'wall s':>8} {'peak RSS MiB':>13}")
    for name, wall, rss in rows:
        print(f"{name:<20} {wall:8.2f} {rss / 1024:13.1f}")
    for f in (elf, kdump):
        os.unlink(f)


if __name__ == "__main__":
    main()
