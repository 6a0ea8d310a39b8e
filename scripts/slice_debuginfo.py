#!/usr/bin/env python3
"""Cut a vmlinux's debug info down to what pageext-inspect needs (the demo core).

Design.  drgn reads a kernel's types and global variables from DWARF, and a
test kernel's DWARF is 68 MB of .debug_info in 1,240 compilation units, each
unit self-contained (GCC refers to DIEs only inside their own unit).  Every
unit that includes <linux/mm_types.h> describes ``struct page``, so a dozen
units -- the ones that *define* the variables the tool reads (mem_section in
mm/sparse.c, page_ext_size in mm/page_ext.c, stack_pools in lib/stackdepot.c,
...) -- give drgn every type and object it asks for.  This script keeps
those units (:data:`UNITS`), whole and unchanged, and drops the rest:

1. ``objcopy --only-keep-debug`` (text and data become NOBITS; .symtab,
   .strtab and the build-id note stay, so stack frames still symbolize and
   the vmcore's build id still matches);
2. the kept units' bytes, concatenated, replace .debug_info
   (``objcopy --update-section``); the unit offsets come from
   ``readelf --debug-dump=info --dwarf-depth=1``;
3. the sections that index units by offset or describe code
   (.debug_aranges, .debug_loclists, .debug_rnglists, .debug_frame) go, and
   the rest is zlib-compressed (``--compress-debug-sections``), which
   elfutils (and so drgn) reads transparently.

    scripts/slice_debuginfo.py VMLINUX OUT        # about 3 MB from 115 MB
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

# Source files (suffixes of DW_AT_name) whose units are kept: each defines
# objects the tool or drgn's helpers read, and between them they declare
# every type those objects reach.
UNITS = (
    "mm/page_ext.c", "mm/page_owner.c", "mm/page_table_check.c", "mm/sparse.c", "mm/page_alloc.c",
    "mm/memcontrol.c", "mm/memory_hotplug.c", "mm/memblock.c", "mm/vmstat.c", "mm/slub.c",
    "mm/debug.c", "lib/stackdepot.c", "arch/x86/mm/numa.c", "arch/x86/kernel/head64.c", "arch/x86/mm/init_64.c",
    "arch/x86/kernel/setup.c", "init/init_task.c",
    "init/version.c", "init/main.c", "kernel/pid.c", "kernel/fork.c", "kernel/cgroup/cgroup.c", "kernel/crash_core.c",
    "kernel/printk/printk.c", "kernel/time/timekeeping.c", "kernel/sched/clock.c", "kernel/sched/core.c",
    "drivers/base/memory.c", "drivers/base/bus.c", "mm/memory.c", "mm/init-mm.c", "lib/vsprintf.c",
    "mm/page_idle.c", "lib/alloc_tag.c",
)

REMOVE = (".debug_aranges", ".debug_loclists", ".debug_rnglists", ".debug_frame")


def units(vmlinux: Path) -> list[tuple[int, int, str]]:
    """(offset, total length, DW_AT_name) of every unit in .debug_info."""
    text = subprocess.run(["readelf", "--debug-dump=info", "--dwarf-depth=1", str(vmlinux)],
                          capture_output=True, text=True, check=True).stdout
    out = []
    for block in text.split("Compilation Unit @ offset ")[1:]:
        off = int(block.split(":", 1)[0], 16)
        m = re.search(r"Length:\s+(0x[0-9a-f]+) \((32|64)-bit\)", block)
        length = int(m.group(1), 16) + (4 if m.group(2) == "32" else 12)
        name = re.search(r"DW_AT_name\s+:.*?: (\S+)\n", block)
        out.append((off, length, name.group(1) if name else ""))
    return out


def slice_debuginfo(vmlinux: Path, out: Path, keep: tuple[str, ...] = UNITS) -> list[str]:
    """Write ``out``: ``vmlinux``'s debug info with only the units of ``keep``.

    :return: the kept units' names (a file of ``keep`` this kernel did not
        build -- no page_idle, no alloc_tag -- is simply not there).
    """
    with tempfile.TemporaryDirectory() as tmp:
        dbg, info, new = Path(tmp) / "dbg", Path(tmp) / "info", Path(tmp) / "info.new"
        subprocess.run(["objcopy", "--only-keep-debug", str(vmlinux), str(dbg)], check=True)
        subprocess.run(["objcopy", f"--dump-section=.debug_info={info}", str(dbg)], check=True)
        data = info.read_bytes()
        kept, chunks = [], []
        for off, length, name in units(vmlinux):
            if name.endswith(keep):
                kept.append(name)
                chunks.append(data[off:off + length])
        new.write_bytes(b"".join(chunks))
        # Two steps: binutils 2.40 writes a bad compression header when one
        # run both updates and compresses a section.
        args = ["objcopy", f"--update-section=.debug_info={new}"] + [f"--remove-section={s}" for s in REMOVE]
        subprocess.run(args + [str(dbg), str(info)], check=True)
        subprocess.run(["objcopy", "--compress-debug-sections=zlib", str(info), str(out)], check=True)
    return kept


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("vmlinux", type=Path)
    ap.add_argument("out", type=Path)
    args = ap.parse_args(argv)
    kept = slice_debuginfo(args.vmlinux, args.out)
    print(f"{args.out}: {len(kept)} units, {args.out.stat().st_size} bytes", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
