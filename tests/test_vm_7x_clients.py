"""7.x clients and the tracer on Debian's 7.3 (the kernel73 fixture), checked against the kernel.

Issue 18, items 4, 7 and 8, in two guests of the 7.3 test kernel (6.12's
fragments, v7.config, and CONFIG_IOMMU_DEBUG_PAGEALLOC=y with virtio-iommu):

* ``off``: ``page_owner=on page_table_check=on``, iommu debug not asked for.
  page_iommu_debug is compiled in but its need() is false, so
  invoke_need_callbacks() never gave it an offset: it must be reported off,
  with no false overlap, and the entry must be exactly the active clients'
  sizes plus the shared flags word.  Then ``trace`` during a hot-add and a
  hot-remove (7.x's struct memory_notify has no status_change_nid): one
  init_section per new section on the node we plugged it into (the same
  checks as tests/test_vm_trace.py on 6.1).
* ``on``: also ``iommu.debug_pagealloc=1`` (and QEMU's virtio-iommu-pci, so the
  sanitizer has a device) and ``sysctl.vm.mem_profiling=1,compressed``:
  page_iommu_debug is on, the last of page_ext_ops[], so its 4 bytes (struct
  iommu_debug_metadata, one atomic_t) end the entry; and allocation tags are
  compressed into page->flags, decoded and checked against the guest's own
  /proc/allocinfo.

Oracles, none of them the tool's output: the kernel's boot lines ("allocated
N bytes of page_ext", "iommu: Debugging page allocations", "Memory allocation
profiling is enabled with compression"), the blocks online in /sys, and
/proc/allocinfo.
"""

from __future__ import annotations


import pytest

from conftest import loads, CLIENTS_ON, dmesg_page_ext_bytes, inspect, inspect_json
from testvm import TestVM

import test_vm_alloc_tags as tags
import test_vm_trace as trace

pytestmark = pytest.mark.vm

PAGE = 4096
SHARED_FLAGS = 8  # struct page_ext { unsigned long flags; } on x86_64: page_owner sets need_shared_flags
IOMMU_DEBUG_SIZE = 4  # struct iommu_debug_metadata { atomic_t ref; } (drivers/iommu/iommu-debug-pagealloc.c)
ON = "iommu.debug_pagealloc=1 sysctl.vm.mem_profiling=1,compressed"


@pytest.fixture(scope="module")
def off(kernel73, tmp_path_factory):
    with TestVM(kernel73, cmdline=CLIENTS_ON, host_root=True,
                workdir=str(tmp_path_factory.mktemp("vm73-off"))) as vm:
        yield kernel73, vm


@pytest.fixture(scope="module")
def on(kernel73, tmp_path_factory):
    with TestVM(kernel73, cmdline=f"{CLIENTS_ON} {ON}", extra_args=["-device", "virtio-iommu-pci"],
                workdir=str(tmp_path_factory.mktemp("vm73-on"))) as vm:
        yield kernel73, vm


def entry_from_the_kernel(vm: TestVM) -> tuple[int, int]:
    """(bytes printed at boot, entry size = those bytes / pages online at boot)."""
    printed = dmesg_page_ext_bytes(vm)
    assert printed, "the kernel printed no 'allocated N bytes of page_ext'"
    online = [b for b, s in vm.memory_blocks().items() if s == "online"]
    pages = len(online) * vm.block_size() // PAGE
    assert printed % pages == 0
    return printed, printed // pages


def clients_of(kdir, vm: TestVM) -> tuple[int, dict]:
    """(entry size, {name: client}) of the live guest, after checking against the
    kernel: no failed check (no overlap), total == the boot line == total_usage,
    the entry == bytes printed / pages online == the active clients' sizes + the flags word."""
    printed, entry = entry_from_the_kernel(vm)
    doc = inspect_json("--qemu", vm.qmp_path, "-s", str(kdir / "vmlinux"))
    bad = [c for c in doc["checks"] if c["status"] == "fail"]
    assert not bad, bad
    pe = doc["page_ext"]
    assert pe["total_bytes"] == printed == pe["kernel_total_usage"]
    assert pe["entry_size"] == entry
    clients = {c["name"]: c for c in pe["clients"]}
    active = [c for c in clients.values() if c["active"]]
    assert sum(c["size"] for c in active) + SHARED_FLAGS == entry, active
    return entry, clients


def test_iommu_debug_off_is_reported_off(off):
    """Item 7: compiled in, not asked for: off, no overlap, the entry adds up."""
    kdir, vm = off
    dmesg = vm.dmesg()
    assert "iommu: Debugging page allocations" not in dmesg
    assert "CONFIG_IOMMU_DEBUG_PAGEALLOC=y" in (kdir / "config").read_text().splitlines()
    _entry, clients = clients_of(kdir, vm)
    assert "page_iommu_debug" in clients  # compiled in: its ops object is there
    assert clients["page_iommu_debug"]["active"] is False


def test_iommu_debug_on_is_reported_with_its_place(on):
    """Item 7: iommu.debug_pagealloc=1: on, its 4 bytes the last of the entry."""
    kdir, vm = on
    assert "iommu: Debugging page allocations" in vm.dmesg()
    entry, clients = clients_of(kdir, vm)
    c = clients["page_iommu_debug"]
    assert c["active"] is True
    assert (c["offset"], c["size"]) == (entry - IOMMU_DEBUG_SIZE, IOMMU_DEBUG_SIZE)


def test_compressed_alloc_tags_against_allocinfo(on):
    """Item 8: tags kept as an index in page->flags, against /proc/allocinfo."""
    kdir, vm = on
    vmlinux = str(kdir / "vmlinux")
    assert "Memory allocation profiling is enabled with compression and is turned on" in vm.dmesg()
    assert "allocation tags cannot be references" not in vm.dmesg()
    vm.run("dd if=/dev/zero of=/tmp/fill bs=1M count=64 2>/dev/null").check()
    vm.run("cat /proc/allocinfo > /share/allocinfo.txt").check()
    vm.pause()
    try:
        proc = inspect("alloc-tags", "--qemu", vm.qmp_path, "-s", vmlinux, "--all", "--json", check_rc=None)
    finally:
        vm.resume()
    assert proc.returncode == 0, proc.stderr
    doc = loads(proc.stdout)
    kernel = tags.parse_allocinfo((vm.share / "allocinfo.txt").read_text())
    flagged = tags.allocinfo_inaccurate((vm.share / "allocinfo.txt").read_text())
    s = doc["summary"]
    rows = sorted((r for r in doc["tags"] if r["index"] is not None), key=lambda r: r["index"])
    # Every tag of the kernel's list, in /proc/allocinfo's order, with its text.
    assert [r["tag"] for r in rows] == [t for t, _b, _c in kernel]
    assert {r["index"] for r in rows if r["inaccurate"]} == flagged  # "accurate:no" (7.2 on)
    assert s["invalid"] == 0 and not any(r["tag"].startswith("<invalid") for r in doc["tags"])
    # The kernel's per-CPU counters read from the paused guest against its /proc/allocinfo,
    # read just before the pause (a few tags may move in between) ...
    same = [r for r in rows if (r["kernel_bytes"], r["kernel_calls"]) == tuple(kernel[r["index"]][1:])]
    assert len(same) >= 0.95 * len(rows), len(same)
    # ... and the refs against those counters of the same instant: one call and
    # PAGE_SIZE << order bytes per live page allocation, never more than the kernel counts.
    tagged = [r for r in rows if r["allocations"]]
    over = [(r["tag"], r["allocations"], r["pages"], r["kernel_bytes"], r["kernel_calls"]) for r in tagged
            if r["allocations"] > r["kernel_calls"] or r["bytes"] > r["kernel_bytes"]]
    print(f"\ncompressed: {s['tagged']} refs, {s['pages']} pages in {len(tagged)} tags; "
          f"orders {s['order_source']}; {len(same)} of {len(rows)} tags' counters equal /proc/allocinfo; "
          f"over the kernel's counters: {over[:5]}")
    assert len(tagged) > 20 and s["tagged"] > 10000
    assert not over
    # The tmpfs fill: >= 16384 pages at shmem's folio allocation, and exactly its bytes.
    shmem = [r for r in tagged if r["file"] == "mm/shmem.c" and r["pages"] >= 16384]
    assert len(shmem) == 1, [(r["tag"], r["pages"]) for r in tagged if r["file"] == "mm/shmem.c"]
    assert shmem[0]["pages"] * PAGE == kernel[shmem[0]["index"]][1]


def test_trace_hotplug_on_7x(off):
    """Item 4: trace works where struct memory_notify has no status_change_nid."""
    kdir, vm = off
    # bcc compiles bpf.c against 7.3's kheaders under TCG: far slower than 6.1's (over 300 s on a
    # loaded 2-core host), so the tracer gets longer to become ready.
    trace.check_trace_hotplug(kdir, vm, version="7.3", ready_timeout=1200)
