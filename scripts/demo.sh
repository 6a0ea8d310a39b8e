#!/usr/bin/env bash
# The main job: build or reuse the test kernel, boot it under QEMU with two
# NUMA nodes and page_owner + page_table_check on, inspect it live over QMP,
# hot-add a 256 MiB DIMM on node 1, online it, and inspect it again.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
kdir=$(scripts/build-kernel.sh | tail -n 1)
exec .venv/bin/python - "$kdir" <<'PY'
import subprocess, sys, tempfile
sys.path.insert(0, "scripts")
from testvm import TestVM

kdir = sys.argv[1]
inspect = [".venv/bin/pageext-inspect", "-s", f"{kdir}/vmlinux"]
with TestVM(kdir, cmdline="page_owner=on page_table_check=on", workdir=tempfile.mkdtemp(prefix="pageext-demo-")) as vm:
    print(f"== booted {kdir}/bzImage in {vm.boot_seconds:.1f} s; the kernel said:")
    print("   " + "\n   ".join(l for l in vm.dmesg().splitlines() if "page_ext" in l))
    print(f"\n== pageext-inspect --qemu {vm.qmp_path} --sections\n", flush=True)
    rc1 = subprocess.call(inspect + ["--qemu", vm.qmp_path, "--sections"])
    vm.hot_add("dimm1", 256, node=1)
    blocks = [b for b, s in vm.memory_blocks().items() if s == "offline"]
    vm.set_blocks(blocks, "online").check()
    print(f"\n== hot-added 256 MiB on node 1, onlined memory blocks {blocks}\n", flush=True)
    rc2 = subprocess.call(inspect + ["--qemu", vm.qmp_path, "--sections"])
sys.exit(rc1 or rc2)
PY
