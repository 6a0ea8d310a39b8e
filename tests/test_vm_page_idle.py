"""page_idle on a real 32-bit kernel, checked against the kernel's own bitmap.

Only without CONFIG_64BIT does idle page tracking keep its Young/Idle bits in
page_ext (PAGE_EXT_YOUNG/PAGE_EXT_IDLE), so this boots Debian's 6.1 built for
i386 (fixtures/kernel/page-idle-i386.config, FLATMEM) under qemu-system-i386
with Debian's i386 busybox.

In the guest we mark every LRU page idle through /sys/kernel/mm/page_idle/bitmap,
read half of a tmpfs file (folio_mark_accessed() clears Idle), then read the
bitmap back.  That read clears Idle on every page a pte referenced, so right
after it each LRU page's Idle bit in page_ext is exactly what it returned.  The
guest then waits in a shell builtin (no fork, no new pages) while we pause it
and dump it, and our bitmap rebuilt from the dump must equal the kernel's bit
for bit.  drgn cannot walk i386 page tables, so the dump is an ELF with
virtual addresses (dump-guest-memory paging=true).
"""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path

import pytest

from test_json_conventions import validate
from conftest import loads, I386_FRAGMENT, build_kernel, inspect, inspect_json, skip_unless_extra_build
from testvm import TestVM

pytestmark = pytest.mark.vm

BITMAP = "/sys/kernel/mm/page_idle/bitmap"
DATA_PAGES = 512  # tmpfs file; the first half is read after marking, the rest stays idle


@pytest.fixture(scope="module")
def kernel_i386() -> Path:
    skip_unless_extra_build("i386")
    return build_kernel(I386_FRAGMENT, arch="i386")


@pytest.fixture(scope="module")
def vm32(kernel_i386: Path, tmp_path_factory):
    with TestVM(kernel_i386, arch="i386", mem_mb=512, numa=1, smp=1,
                workdir=str(tmp_path_factory.mktemp("vm32"))) as machine:
        yield machine


def popcount(data: bytes) -> int:
    return sum(bin(b).count("1") for b in data)


def set_pfns(data: bytes) -> set[int]:
    return {i * 8 + b for i, byte in enumerate(data) for b in range(8) if byte >> b & 1}


@pytest.fixture(scope="module")
def idle_dump(vm32: TestVM, kernel_i386: Path, tmp_path_factory) -> dict:
    """Mark, touch, read the kernel's bitmap, then dump the guest frozen right after."""
    d = tmp_path_factory.mktemp("idle")
    vm32.run(f"""set -e
dd if=/dev/zero of=/tmp/data bs=4096 count={DATA_PAGES} 2>/dev/null
n=$(dd if={BITMAP} bs=4096 2>/dev/null | wc -c)
dd if=/dev/zero bs=$n count=1 2>/dev/null | tr '\\000' '\\377' > /tmp/ones
dd if=/tmp/ones of={BITMAP} bs=4096 2>/dev/null
dd if=/tmp/data of=/dev/null bs=4096 count={DATA_PAGES // 2} 2>/dev/null
mkfifo /tmp/hold
echo $n""").check()
    flag = vm32.share / "bitmap-done"
    flag.unlink(missing_ok=True)
    # The read, then a builtin `read` on a fifo opened O_RDWR: the guest sits
    # still (no fork, no page allocation) until we have dumped it.
    #
    # The read runs in a subshell that first lets a child exit: exit_mmap()
    # drains the CPU's lru_add batch.  Forking gives the parent shell fresh
    # copy-on-write anon pages, which wait in that batch (not PageLRU, so the
    # read skips them); busybox runs dd in the forked child without execve,
    # so without the drain they reach the LRU only when dd exits, after the
    # read -- carrying a stale PAGE_EXT_IDLE from the page's previous life
    # (page_ext flags are not reset on free on 32-bit), they then show idle
    # in the dump but not in the kernel's bitmap (1-2 pfns in 4 of 6 runs).
    script = (f"(dd if=/dev/zero of=/dev/null count=0 2>/dev/null; "
              f"dd if={BITMAP} of=/share/kernel-bitmap bs=4096 2>/dev/null)\n"
              "echo done > /share/bitmap-done\n"
              "read -t 10 x <> /tmp/hold || true")
    result = {}
    t = threading.Thread(target=lambda: result.update(r=vm32.run(script, timeout=300)))
    t.start()
    deadline = time.time() + 120
    while not flag.exists():
        assert time.time() < deadline, "the guest never finished reading its bitmap"
        time.sleep(0.02)
    vm32.pause()
    core, kdump = d / "core.elf", d / "core.kdump"
    try:
        vm32.dump(str(core), "elf", paging=True)
        vm32.dump(str(kdump), "kdump-zlib")  # libkdumpfile translates i386 addresses itself
    finally:
        vm32.resume()
    t.join()
    assert result["r"].rc == 0, result["r"].err
    kernel_bitmap = (vm32.share / "kernel-bitmap").read_bytes()
    return {"core": str(core), "kdump": str(kdump), "vmlinux": str(kernel_i386 / "vmlinux"), "kernel_bitmap": kernel_bitmap,
            "dir": d}


def test_bitmap_equals_the_kernels(idle_dump):
    ours_path = idle_dump["dir"] / "ours.bin"
    text = inspect("page-idle", idle_dump["core"], "-s", idle_dump["vmlinux"], "--bitmap", str(ours_path),
                   "--json").stdout
    validate("page-idle", json.loads(text))  # the shipped JSON Schema, on the printed text
    summary = loads(text)
    kernel, ours = idle_dump["kernel_bitmap"], ours_path.read_bytes()
    assert len(ours) == len(kernel), (len(ours), len(kernel))
    only_kernel, only_ours = set_pfns(kernel) - set_pfns(ours), set_pfns(ours) - set_pfns(kernel)
    assert not only_kernel and not only_ours, (
        f"{len(only_kernel)} pfns idle only for the kernel ({sorted(only_kernel)[:10]}), "
        f"{len(only_ours)} only for us ({sorted(only_ours)[:10]})")
    # Not a vacuous match: the untouched half of the file is idle, the pages
    # we read are not, so the kernel reported some of each.
    assert popcount(kernel) >= DATA_PAGES // 2
    assert summary["idle_lru_pages"] == popcount(kernel)
    assert summary["lru_pages"] > popcount(kernel) + DATA_PAGES // 2 - 1
    assert summary["flags_bytes"] == 4
    print(f"kernel bitmap: {popcount(kernel)} idle pfns of {8 * len(kernel)}; ours: {popcount(ours)}, "
          f"identical; summary {summary}")


def test_core_inspector_on_i386(idle_dump, vm32):
    """The whole inspector on the 32-bit FLATMEM kernel, against its dmesg."""
    out = inspect_json(idle_dump["core"], "-s", idle_dump["vmlinux"], check_rc=None)
    assert out["kernel"]["memory_model"] == "flatmem"
    pe = out["page_ext"]
    m = re.search(r"allocated (\d+) bytes of page_ext", vm32.dmesg())
    assert m, "no page_ext line in dmesg"
    assert pe["total_bytes"] == int(m.group(1)) == pe["kernel_total_usage"]
    assert pe["entry_size"] == 4  # sizeof(struct page_ext): one unsigned long of flags
    assert [c["name"] for c in pe["clients"] if c["active"]] == ["page_idle"]
    failed = [c for c in out["checks"] if c["status"] == "fail"]
    assert not failed, failed
    print(f"i386 FLATMEM: {pe['total_bytes']} bytes of page_ext in {len(out['tables'])} table(s) "
          f"= dmesg {m.group(1)}; tables {out['tables']}")


def test_pfn_entry(idle_dump):
    kernel = idle_dump["kernel_bitmap"]
    pfn = min(set_pfns(kernel))
    text = inspect("page-idle", idle_dump["core"], "-s", idle_dump["vmlinux"], "--pfn", str(pfn), "--json").stdout
    validate("page-idle", json.loads(text))
    e = loads(text)
    assert e["pfn"] == pfn and e["idle"] and e["lru"] and e["refcount"] > 0


def test_kdump_of_the_same_moment(idle_dump):
    """A kdump file (architecture from its header's utsname.machine) gives the same bitmap."""
    ours = idle_dump["dir"] / "ours-kdump.bin"
    inspect("page-idle", idle_dump["kdump"], "-s", idle_dump["vmlinux"], "--bitmap", str(ours))
    assert ours.read_bytes() == idle_dump["kernel_bitmap"]


def test_live_qmp_is_refused_clearly(vm32, kernel_i386):
    """drgn has no i386 page-table walker: over QMP only physical memory is readable."""
    proc = inspect("page-idle", "--qemu", vm32.qmp_path, "-s", str(kernel_i386 / "vmlinux"), check_rc=2)
    assert "i386" in proc.stderr and "paging=true" in proc.stderr and proc.stderr.count("\n") == 1
