#!/usr/bin/env python3
"""Record the real snapshots a generated fleet is made from (issue 22).

Design.  A generated fleet (scripts/fleet_gen.py) must start from what real
kernels hold, not from invented stacks: per kernel, this boots the cached
test kernel (6.1 and 6.12, tests/conftest.py's fragments) under QEMU with
page_owner=on, runs test_vm_kdump's churn (shells writing tmpfs, ramfs,
strings and a pipe) and scripts/leaker.c (comm ``leaker``: a tmpfs file
grown by fallocate()), and dumps the guest twice, kdump-zlib, with the
churn stopped and the leak held: ``base`` after the leak's first MiB and
``leak`` after LEAK_MIB more.  ``pageext-inspect snapshot`` of each dump
(the tool's own reader) is the seed; the two dumps are removed.  Between
``base`` and ``leak`` only the leak and the kernel's own book-keeping moved,
so fleet_gen takes the leak's stack as the one that grew most between the
two -- and checks that its frames hold shmem_fallocate, which the kernel
prints for the fallocate() path (the oracle here is the kernel's frames, not
a name we chose).

    scripts/fleet_seed.py [-o fixtures/fleet] [--kernels 6.1,6.12]

About 2-4 minutes per kernel on a 2-core machine (boot, churn, two dumps,
two snapshots).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "scripts"), str(ROOT / "tests")]

from conftest import CLIENTS_ON, kernel_for  # noqa: E402
from testvm import TestVM, helper  # noqa: E402

# test_vm_kdump.CHURN and test_vm_owner.NO_MEMCG, imported so they stay one text.
from test_vm_kdump import CHURN  # noqa: E402
from test_vm_owner import NO_MEMCG  # noqa: E402

HOLD = "/tmp/leak.hold"
LEAK_MIB = 16
STOP = "for p in /proc/[0-9]*; do case $(cat $p/comm 2>/dev/null) in churn-*) kill -{sig} ${{p#/proc/}};; esac; done"


def held(vm: TestVM) -> None:
    vm.run(STOP.format(sig="STOP") + f"; touch {HOLD}; while [ ! -e {HOLD}.held ]; do sleep 0.02; done").check()


def record(version: str, out: Path, work: Path) -> list[Path]:
    kdir = kernel_for(version)
    vmlinux = str(kdir / "vmlinux")
    written = []
    with TestVM(kdir, cmdline=CLIENTS_ON + NO_MEMCG.get(version, ""), workdir=str(work / f"vm-{version}")) as vm:
        shutil.copy(helper("leaker"), vm.share / "leaker")
        vm.run(f"mkdir -p /leak && mount -t tmpfs -o size=0 leak /leak && touch {HOLD}\n"
               f"/share/leaker -f /leak/leak -r 4 -p {HOLD} > /dev/null 2>&1 &\n"
               f"while [ ! -e {HOLD}.held ]; do sleep 0.02; done").check()
        vm.run(CHURN).check()
        vm.run(f"sleep 3; rm {HOLD}; sleep 0.3; touch {HOLD}").check()  # churn runs, the leak's first steps
        for name, grow in (("base", 0), ("leak", LEAK_MIB / 4)):
            if grow:
                vm.run(STOP.format(sig="CONT") + f"; rm {HOLD}; sleep {grow}; touch {HOLD}").check()
            held(vm)
            vm.pause()
            core = vm.dump(str(work / f"{version}-{name}.kdump"), "kdump-zlib")
            vm.resume()
            dst = out / f"seed-{version}-{name}.parquet"
            subprocess.run([sys.executable, "-m", "inspector", "snapshot", core, "-s", vmlinux, "--arch", "x86_64",
                            "-o", str(dst), "--no-progress"], check=True, cwd=ROOT)
            os.unlink(core)
            written.append(dst)
    return written


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-o", "--output", default=str(ROOT / "fixtures" / "fleet"))
    p.add_argument("--kernels", default="6.1,6.12")
    a = p.parse_args()
    out = Path(a.output)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="fleet-seed-") as work:
        for v in a.kernels.split(","):
            t = time.time()
            for f in record(v, out, Path(work)):
                print(f"{f}: {f.stat().st_size} bytes")
            print(f"{v}: {time.time() - t:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
