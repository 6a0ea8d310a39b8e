#!/usr/bin/env python3
"""Make the demo core that ships in the package (inspector/demo/), from a real guest.

Design.  ``pageext-inspect demo`` must work with no VM, no root and no
kernel build, so the package carries one small real post-mortem: the 6.1
test kernel (scripts/build-kernel.sh, the README's main kernel) boots with
both page_ext clients on, 2 NUMA nodes and 512 MiB, a few named shells
churn memory, and scripts/leaker.c grows a tmpfs file until the OOM killer
panics the guest (vm.panic_on_oom=1).  The guest's own capture kernel
writes the vmcore with ``makedumpfile -c -d 31`` (kdump-compressed, zero,
cache, user and free pages left out: page_ext, struct pages and the stack
depot stay).  drgn then needs only the debug info of a few dozen
compilation units (scripts/slice_debuginfo.py), xz-compressed.  What the
kernel said about itself goes beside them in demo.json, the oracle of
tests/test_demo.py: the boot line "allocated N bytes of page_ext", the
leaker's pid, the release, and how the files were made.

    scripts/make-demo.py                  # writes inspector/demo/{vmcore,vmlinux.debug.xz,demo.json}
    scripts/make-demo.py -o /tmp/demo     # elsewhere

About 4 minutes on 2 cores (TCG), once the 6.1 kernel is built.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import lzma
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "tests"))
from conftest import CLIENTS_ON  # noqa: E402  (the tests' boot line for both clients)
from slice_debuginfo import slice_debuginfo  # noqa: E402
from testvm import TestVM  # noqa: E402

MAKEDUMPFILE = "-c -d 31"
CHURN = r"""
data=$(head -c 16384 /dev/zero | tr '\0' c)
churn() { printf "$1" > /proc/self/comm; shift; i=0; while :; do eval "$@"; i=$((i + 1)); sleep 0.05; done; }
(churn churn-tmpfs 'echo $data > /tmp/churn.$((i % 64))') > /dev/null 2>&1 &
(churn churn-anon 'x=$data$data$data$data; x=$x$x$x$x; x=') > /dev/null 2>&1 &
"""


def main_kernel() -> Path:
    """The README's main kernel (6.1), built or cached (scripts/build-kernel.sh)."""
    out = subprocess.run([str(ROOT / "scripts" / "build-kernel.sh")], check=True, stdout=subprocess.PIPE,
                         text=True).stdout
    return Path(out.strip().splitlines()[-1])


def make(out: Path, kdir: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        with TestVM(kdir, mem_mb=512, numa=2, cmdline=CLIENTS_ON, crashkernel="160M",
                    workdir=str(Path(tmp) / "vm")) as vm:
            dmesg = vm.dmesg()
            release = vm.run("uname -r").check().out.strip()
            vm.run(CHURN).check()
            core = vm.crash("oom", MAKEDUMPFILE, out / "vmcore", leaker="-m tmpfs -r 16", timeout=1200)
            pid = int((vm.share / "kdump" / "leaker.pid").read_text())
        debug = Path(tmp) / "vmlinux.debug"
        units = slice_debuginfo(kdir / "vmlinux", debug)
        # Raw DWARF compresses far better under xz than zlib sections do.
        subprocess.run(["objcopy", "--decompress-debug-sections", str(debug)], check=True)
        raw = debug.read_bytes()
        (out / "vmlinux.debug.xz").write_bytes(lzma.compress(raw, preset=6))
    line = re.search(r"allocated (\d+) bytes of page_ext", dmesg)
    facts = {
        "release": release,
        "page_ext_bytes_dmesg": int(line.group(1)),
        "page_ext_line": line.group(0),
        "leaker_pid": pid,
        "leaker_comm": "leaker",
        "leak_frame": "shmem_fallocate",
        "vmcore_bytes": core.stat().st_size,
        "vmlinux_debug_sha256": hashlib.sha256(raw).hexdigest(),
        "vmlinux_debug_bytes": len(raw),
        "units": units,
        "made_by": "scripts/make-demo.py: the 6.1 test kernel (scripts/build-kernel.sh), 512 MiB, 2 nodes, "
                   f"{CLIENTS_ON}; scripts/leaker.c -m tmpfs -r 16 until panic_on_oom; the capture "
                   f"kernel's makedumpfile {MAKEDUMPFILE}; debug info by scripts/slice_debuginfo.py",
    }
    (out / "demo.json").write_text(json.dumps(facts, indent=1) + "\n")
    return facts


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-o", "--out", type=Path, default=ROOT / "inspector" / "demo")
    ap.add_argument("-k", "--kernel-dir", type=Path, help="a built kernel (default: the 6.1 main kernel)")
    args = ap.parse_args(argv)
    facts = make(args.out, args.kernel_dir or main_kernel())
    size = sum(p.stat().st_size for p in args.out.iterdir())
    print(f"make-demo: {args.out}: vmcore {facts['vmcore_bytes']} bytes, {size} bytes in all; "
          f"{facts['page_ext_line']}; leaker pid {facts['leaker_pid']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
