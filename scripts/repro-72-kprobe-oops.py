#!/usr/bin/env python3
"""Reproduce the 7.2 oops in online_pages() under a second tracer (found by the matrix, 2026-12-06).

On the 7.2.13 test kernel (tests/conftest.py FRAGMENTS_73), ``pageext-inspect
trace`` run in the guest a first time, with a DIMM hot-added and onlined under
it, works; run again (same guest, a new DIMM), the shell that writes
"online" to the new block's state dies: "BUG: kernel NULL pointer
dereference, address: 0000000000000002 ... RIP: 0010:0x2", call trace
online_pages+0x9 <- memory_subsys_online <- device_online <- state_store.
online_pages() is where the tracer puts a kprobe and a kretprobe (the node of
the zone, bpf.c hotplug_entry/hotplug_return).  7.3.4 with the same
fragments runs the tracer many times per guest without this
(tests/test_vm_trace.py passes there); 7.2's own test_count_and_duration_
stop_the_tracer[7.2-direct], the third tracer of its guest, fails with it.

    .venv/bin/python scripts/repro-72-kprobe-oops.py [KERNEL_DIR]   # prints each round and the oops
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "tests"))
from conftest import CLIENTS_ON, FRAGMENTS_73, build_args  # noqa: E402
from testvm import TestVM  # noqa: E402
from tracevm import GuestTracer  # noqa: E402


def main() -> int:
    kdir = sys.argv[1] if len(sys.argv) > 1 else subprocess.run(
        build_args(FRAGMENTS_73, "7.2"), check=True, stdout=subprocess.PIPE, text=True).stdout.split()[-1]
    with TestVM(kdir, cmdline=CLIENTS_ON, host_root=True) as vm:
        for i in range(3):
            t = time.time()
            try:
                tracer = GuestTracer(vm, record=f"r{i}.jsonl", args="--json --count 3", ready_timeout=900)
            except Exception as e:  # after the oops the tracer no longer starts
                print(f"round {i}: {e}")
                break
            print(f"round {i}: tracer ready in {time.time() - t:.0f} s")
            blocks = vm.hot_add(f"r{i}", 128, node=0)
            res = vm.set_blocks(blocks, "online")
            print(f"round {i}: online {blocks}: exit {res.rc} {res.err.strip()[-200:]}")
            deadline = time.time() + 120
            while not tracer.finished and time.time() < deadline:
                time.sleep(0.5)
            if res.rc:
                break
        oops = vm.run("dmesg | grep -A25 'BUG: kernel'").out
        print(oops or "no oops")
        return 1 if oops else 0


if __name__ == "__main__":
    sys.exit(main())
