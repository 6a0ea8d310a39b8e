#!/usr/bin/env python3
"""Reproduce the 7.2.13 oops of a re-armed ftrace-based kprobe (found by the matrix, 2026-12-06).

On the 7.2.13 test kernel (tests/conftest.py FRAGMENTS_73), a kprobe on an
ftrace site (here memory_notify(), through tracefs kprobe_events: no BPF,
no perf) that is enabled, disabled and enabled again makes the next call of
the function jump to 0x2:

    BUG: kernel NULL pointer dereference, address: 0000000000000002
    RIP: 0010:0x2
     ? memory_notify+0x9/0x1a

Enabled once, it works.  Before the crash, tracefs enabled_functions shows
the site's trampoline without its call target
(``tramp: 0xffffffffa0400000 (kprobe_ftrace_handler+0x0/0x189)``, where a
sound one ends ``->kprobe_ftrace_handler+0x0/0x189``), and reading the file
makes the kernel warn "ftrace: Expected E8, got e9": create_trampoline()'s
copy of ftrace_regs_caller has a jmp where the call to the handler belongs.
7.3.4 (same fragments) re-arms soundly.  Measured 2026-12-07: the same with
bcc kprobes, kretprobes or both, on online_pages() and memory_notify().
``pageext-inspect trace`` checks enabled_functions right after its first
probe and refuses in one line (inspector/trace/probes.py
broken_kprobe_trampoline), so only the first tracer of a 7.2.13 boot runs.

    .venv/bin/python scripts/repro-72-kprobe-oops.py [--arms N] [KERNEL_DIR]   # N=1: the control, no oops
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "tests"))
from conftest import CLIENTS_ON, FRAGMENTS_73, build_args  # noqa: E402
from testvm import TestVM  # noqa: E402

T = "/sys/kernel/tracing"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arms", type=int, default=2, help="times the kprobe is enabled (disabled in between)")
    ap.add_argument("--function", default="memory_notify")
    ap.add_argument("kernel_dir", nargs="?")
    args = ap.parse_args()
    kdir = args.kernel_dir or subprocess.run(
        build_args(FRAGMENTS_73, "7.2"), check=True, stdout=subprocess.PIPE, text=True).stdout.split()[-1]
    arm = f"echo 1 > {T}/events/kprobes/k1/enable"
    steps = [f"grep -q ' {T} ' /proc/mounts || mount -t tracefs nodev {T}",
             f"echo 'p:k1 {args.function}' >> {T}/kprobe_events", arm]
    steps += [f"echo 0 > {T}/events/kprobes/k1/enable", arm] * (args.arms - 1)
    with TestVM(kdir, cmdline=CLIENTS_ON) as vm:
        vm.run("; ".join(steps)).check()
        print(f"{args.function} armed {args.arms} time(s); enabled_functions:")
        print(vm.run(f"cat {T}/enabled_functions").out.rstrip())
        warn = vm.run("dmesg | grep 'ftrace: Expected'").out.strip()
        print(f"kernel's check of the trampoline: {warn or 'no warning'}")
        blocks = vm.hot_add("r0", 128, node=0)
        res = vm.set_blocks(blocks, "online")
        print(f"online {blocks}: exit {res.rc} {res.err.strip()[-200:]}")
        oops = vm.run("dmesg | grep -A25 'BUG: kernel' | grep -E 'BUG|RIP|\\+0x'").out
        print(oops or "no oops")
        return 1 if oops else 0


if __name__ == "__main__":
    sys.exit(main())
