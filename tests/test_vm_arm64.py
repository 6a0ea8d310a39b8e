"""arm64 guests, 4K and 64K pages: the inspector against the kernel's own words (issue 21).

The kernels are Debian's 6.12 (and 7.3) cross-built by ``scripts/build-kernel.sh
6.12 -a arm64 -p 4k|64k`` (fixtures/kernel/arm64.config plus arm64-4k/-64k.config,
KASLR on; 7.3 adds v7.config), named in the test ids by
tests/conftest.py's ARM64_KERNELS: ``4k`` and ``64k`` for 6.12, ``7.3-4k``
and ``7.3-64k``.  CI runs 6.12 4K (built by the background prebuild: this
module runs late and waits for it); the others run when PAGEEXT_KERNELS
names arm64-64k, arm64-7.3-4k, arm64-7.3-64k (or all), and 6.12 64K is
skipped otherwise, saying so.  Each guest is QEMU's ``virt`` machine under TCG (``-cpu max``) booted
from QEMU's device tree, 1 GiB in two NUMA nodes, with page_owner and
page_table_check on (scripts/testvm.py); the hot-add test boots through UEFI
instead (ACPI: hotplug, but one NUMA node -- see scripts/testvm.py).

One boot per page size: the guest allocates (64 MiB written to tmpfs), reads
its own /sys/kernel/debug/page_owner into the 9p share, and is paused; then
it is read three ways -- live over QMP, an ELF dump and a kdump-zlib dump
(QMP dump-guest-memory) -- and the oracles are the kernel's:

* the boot line "allocated N bytes of page_ext" equals the tables' total
  and the kernel's total_usage, on every target;
* the three targets print the same tables;
* the page size and section size are the ones the kernel was built with
  (its .config; SECTION_SIZE_BITS from arch/arm64/include/asm/sparsemem.h,
  through inspector.versions.GEOMETRIES) and the memory block size the
  guest reports;
* ``owner --format debugfs`` equals the guest's page_owner text, record by
  record, allowing only what tests/test_vm_owner.py allows (records made or
  freed after the read began, stale boot records of free pages, live flags);
* ``table-check`` agrees with the guest's pagemap of a process holding 2 MB
  of private anonymous memory and with each page's _mapcount.

A real kdump capture, one guest per page size (device tree, 2 nodes,
crashkernel=192M): the guest loads its own Image and initramfs with ``kexec
-s -p`` (Debian's arm64 kexec-tools and makedumpfile, a small root from
scripts/kdump-root.sh shared at /host), scripts/leaker.c (cross-built static)
grows a tmpfs file until vm.panic_on_oom=1 panics, and the capture kernel
runs ``makedumpfile -c -d 31`` on /proc/vmcore.  Oracles: the first kernel's
console (the panic), its boot line (the tables' total), the last
page_owner_stacks/show_stacks it printed before the panic (the leak's stack,
a lower bound of its pages) and the leaker's pid from the shell that exec'd it.

Hot-remove under UEFI: a DIMM onlined movable, offlined through sysfs, then
ejected; after each step the tables are exactly the sections of the blocks
the kernel says are online (a memory block is one section on arm64).

The numbers are printed (pytest -s).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from conftest import (ARM64_KERNELS, CLIENTS_ON, arm64_build_args, arm64_kernels, dmesg_page_ext_bytes, inspect,
                      inspect_json, skip_unless_extra_build)
from test_vm_kdump import STACKS, heaviest_through, last_sample
from test_vm_owner import (HOLDER, compare_with_kernel, expected_top, holder_pagemap, local_clock,
                           table_check_agrees, top_of)
from test_vm_owner_sort import parse_show_stacks
from testvm import QEMU, UEFI_AARCH64, TestVM

from inspector.versions import GEOMETRIES

pytestmark = pytest.mark.vm

# The kernels' names (conftest.ARM64_KERNELS), the test ids: 6.12's two page
# sizes always (64K skips unless the run names it), 7.3's when the run names them.
KERNELS = tuple(dict.fromkeys(("4k", "64k") + arm64_kernels()))
WORK = Path(tempfile.gettempdir()) / "pageext-arm64-tests"


def page_of(name: str) -> str:
    """The page size ("4k" or "64k") of the arm64 kernel ``name``."""
    return ARM64_KERNELS[name][1]


def label(name: str) -> str:
    """"6.12 4k": the kernel's version and page size, for the printed numbers."""
    return " ".join(ARM64_KERNELS[name])


def arm64_kernel(name: str) -> Path:
    """The directory of the arm64 kernel ``name``: built now, or waited for (the
    background prebuild holds build-kernel.sh's lock while it builds it), or
    from the cache.  CI builds 6.12 4K only; the others run when the run names
    arm64-NAME (scripts/test.sh --kernels 6.1,arm64-64k,arm64-7.3-4k, or all)."""
    if name not in arm64_kernels():
        skip_unless_extra_build(f"arm64-{name}")
    args = arm64_build_args(name)
    proc = subprocess.run(args, stdout=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(args)} failed (exit {proc.returncode})")
    return Path(proc.stdout.strip().splitlines()[-1])


def kernel_or_skip(name: str) -> Path:
    for need, what in ((shutil.which(QEMU["arm64"]), "qemu-system-arm"), (os.path.exists(UEFI_AARCH64), "qemu-efi-aarch64")):
        if not need:
            pytest.skip(f"no arm64 guest without {what} (apt-get install {what})")
    return arm64_kernel(name)


def fresh(work: Path) -> Path:
    """An empty work directory (the last run's files stay there until the next run, for inspection)."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    return work


@pytest.fixture(scope="module", params=KERNELS)
def guest(request):
    name = request.param
    page = page_of(name)
    kdir = kernel_or_skip(name)
    vmlinux = str(kdir / "vmlinux")
    work = fresh(WORK / name)
    with TestVM(kdir, cmdline=CLIENTS_ON, workdir=str(work / "vm")) as vm:
        print(f"\n[arm64 {label(name)}] booted in {vm.boot_seconds:.1f} s")
        vm.run("dd if=/dev/zero of=/tmp/fill bs=1M count=64 2>/dev/null").check()
        vm.run(HOLDER).check()
        res = vm.run("grep -m1 'now at' /proc/timer_list; grep -m1 exec_start /proc/self/sched > /share/po.clock; "
                     "cat /sys/kernel/debug/page_owner | dd bs=1M iflag=fullblock of=/share/page_owner.txt "
                     "2>/dev/null; grep -m1 'now at' /proc/timer_list").check()
        start, end = (int(x) for x in re.findall(r"now at (\d+) nsecs", res.out))
        start = min(start, local_clock(vm.share / "po.clock"))
        vm.run(holder_pagemap(GEOMETRIES[f"arm64-{page}"].page_size)).check()
        dmesg = vm.dmesg()
        block = vm.block_size()
        vm.pause()
        elf = vm.dump(str(work / "core.elf"), "elf")
        kdump = vm.dump(str(work / "core.kdump"), "kdump-zlib")
        targets = {"qmp": ("--qemu", vm.qmp_path), "elf": (elf,), "kdump": (kdump,)}
        yield {"vm": vm, "name": name, "page": page, "kdir": kdir, "vmlinux": vmlinux, "version": f"arm64-{name}",
               "targets": targets, "dmesg": dmesg, "block": block, "start": start, "end": end,
               "kernel": (vm.share / "page_owner.txt").read_bytes().decode("latin-1"), "work": work,
               "pagemap": (vm.share / "holder.pagemap").read_bytes()}


def test_the_kernel_is_the_page_size_asked_for(guest):
    """The kernel's own .config and memory block size against inspector.versions.GEOMETRIES."""
    config = (guest["kdir"] / "config").read_text()
    geo = GEOMETRIES[f"arm64-{guest['page']}"]
    assert f"CONFIG_ARM64_{guest['page'].upper()}_PAGES=y\n" in config
    assert f"CONFIG_PAGE_SHIFT={geo.page_shift}\n" in config
    # arm64's memory block is one section (MIN_MEMORY_BLOCK_SIZE = 1 << SECTION_SIZE_BITS).
    assert guest["block"] == 1 << geo.section_size_bits


def readable(guest: dict, target: str) -> None:
    """Skip a 4K guest's kdump-zlib dump: QEMU 7.2 writes it with 64K blocks (see the test below)."""
    if target == "kdump" and guest["page"] == "4k":
        pytest.skip("QEMU 7.2 writes an arm64 guest's kdump with block_size 65536: unreadable with 4K pages "
                    "(test_qemu_kdump_of_a_4k_guest_is_refused_with_one_line)")


def test_qemu_kdump_of_a_4k_guest_is_refused_with_one_line(guest):
    proc = inspect(guest["targets"]["kdump"][0], "-s", guest["vmlinux"], check_rc=None)
    if guest["page"] == "64k":
        assert proc.returncode == 0
        return
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1 and "kdump header says 65536-byte pages, the kernel's are 4096" in proc.stderr


@pytest.mark.parametrize("target", ["qmp", "elf", "kdump"])
def test_total_is_the_kernels_boot_line_and_total_usage(guest, target):
    readable(guest, target)
    doc = inspect_json(*guest["targets"][target], "-s", guest["vmlinux"])
    printed = dmesg_page_ext_bytes(guest["dmesg"])
    geo = GEOMETRIES[f"arm64-{guest['page']}"]
    pe = doc["page_ext"]
    print(f"\n[arm64 {label(guest['name'])} {target}] dmesg {printed}, total {pe['total_bytes']}, "
          f"total_usage {pe['kernel_total_usage']}, entry {pe['entry_size']}, {len(doc['tables'])} tables")
    assert not [c for c in doc["checks"] if c["status"] == "fail"]
    assert printed and pe["total_bytes"] == printed == pe["kernel_total_usage"]
    assert doc["kernel"]["page_size"] == geo.page_size
    assert doc["kernel"]["section_pages"] == geo.section_pages
    assert all(t["bytes"] == geo.section_pages * pe["entry_size"] for t in doc["tables"])
    assert {t["node"] for t in doc["tables"]} == {0, 1}


def test_qmp_elf_and_kdump_print_the_same_tables(guest):
    outs = {}
    for name, target in guest["targets"].items():
        if name == "kdump" and guest["page"] == "4k":
            continue  # unreadable (test_qemu_kdump_of_a_4k_guest_is_refused_with_one_line)
        text = inspect(*target, "-s", guest["vmlinux"], "--sections", "--no-progress").stdout
        # The first lines name the target; the tables after them must be the same.
        outs[name] = [line for line in text.splitlines() if not line.startswith(("target", "Target"))]
    assert all(v == outs["qmp"] for v in outs.values()), {k: v[:5] for k, v in outs.items()}
    assert any("page_ext" in line for line in outs["qmp"])


def compared_on(guest: dict, target: str) -> dict:
    """tests/test_vm_owner.py's comparison of our debugfs text of a dump with the guest's, once a dump."""
    done = guest.setdefault("compared", {})
    if target not in done:
        snap = {**guest, "core": guest["targets"][target][0], "version": f"arm64-{guest['name']} {target}"}
        done[target] = compare_with_kernel(snap)
    return done[target]


@pytest.mark.parametrize("target", ["elf", "kdump"])
def test_owner_debugfs_is_the_kernels_page_owner(guest, target):
    readable(guest, target)
    compared = compared_on(guest, target)
    assert not compared["unexplained"], compared["unexplained"][:3]
    # 64 MiB of tmpfs is 1024 pages of 64K (16384 of 4K): the comparison has substance either way.
    assert compared["identical"] >= 0.95 * len(compared["kernel"]) and compared["identical"] > 500
    assert compared["flags_only"] + compared["block_only"] <= 0.02 * len(compared["kernel"])


@pytest.mark.parametrize("by", ["stack", "pid", "order"])
def test_top_is_the_sum_of_the_kernels_page_owner(guest, by):
    """``top`` on the ELF dump: the kernel's records summed (arm64 frames: el0_svc, __arm64_sys_*)."""
    _, got = top_of(guest["targets"]["elf"][0], guest["vmlinux"], by)
    assert got == expected_top(compared_on(guest, "elf"), by)
    if by == "stack":
        assert any(frame.strip().startswith("el0_svc+") for k in got for frame in k)


@pytest.mark.parametrize("target", ["elf", "kdump"])
def test_table_check_agrees_with_pagemap_and_rmap(guest, target):
    """page_table_check's counters against the kernel's own pagemap of a
    process holding 2 MB of private anonymous memory (each such page mapped
    once, anonymously) and each page's _mapcount: tests/test_vm_owner.py's
    oracles, with the guest's page size."""
    readable(guest, target)
    table_check_agrees(guest["targets"][target][0], guest["vmlinux"], guest["pagemap"],
                       f"arm64 {label(guest['name'])} {target}", GEOMETRIES[f"arm64-{guest['page']}"].page_size)


def test_owner_live_equals_the_dump(guest):
    live = inspect("owner", *guest["targets"]["qmp"], "-s", guest["vmlinux"], "--format", "debugfs").stdout
    dumped = inspect("owner", guest["targets"]["elf"][0], "-s", guest["vmlinux"], "--format", "debugfs").stdout
    assert live == dumped and len(live) > 100_000


@pytest.mark.parametrize("name", KERNELS)
def test_hot_add_under_uefi_is_exact(name):
    """Through UEFI the guest has ACPI, and QEMU's virt machine its GED device:
    a 512 MiB pc-dimm is added, its blocks onlined through sysfs, and the new
    tables are exactly the onlined sections' (on arm64 a memory block is one
    section), each PAGES_PER_SECTION entries, and total_usage grows by them.
    (Booted from the device tree, QEMU refuses the DIMM: "memory hotplug is
    not enabled: missing acpi-ged device".)"""
    page = page_of(name)
    kdir = kernel_or_skip(name)
    vmlinux = str(kdir / "vmlinux")
    geo = GEOMETRIES[f"arm64-{page}"]
    with TestVM(kdir, cmdline=CLIENTS_ON, uefi=True, workdir=str(WORK / f"uefi-{name}")) as vm:
        print(f"\n[arm64 {label(name)} uefi] booted in {vm.boot_seconds:.1f} s")
        before = inspect_json("--qemu", vm.qmp_path, "-s", vmlinux)
        assert before["page_ext"]["total_bytes"] == dmesg_page_ext_bytes(vm) == before["page_ext"]["kernel_total_usage"]
        blocks = vm.hot_add("dimm1", 512, node=0)
        assert blocks and vm.block_size() == 1 << geo.section_size_bits
        vm.set_blocks(blocks, "online").check()
        assert all(vm.memory_blocks()[b] == "online" for b in blocks)
        after = inspect_json("--qemu", vm.qmp_path, "-s", vmlinux)
    assert not [c for c in after["checks"] if c["status"] == "fail"]
    entry = after["page_ext"]["entry_size"]
    new = {t["section"] for t in after["tables"]} - {t["section"] for t in before["tables"]}
    assert new == set(blocks)
    grown = len(blocks) * geo.section_pages * entry
    assert after["page_ext"]["kernel_total_usage"] == before["page_ext"]["kernel_total_usage"] + grown
    assert after["page_ext"]["total_bytes"] == after["page_ext"]["kernel_total_usage"]
    print(f"[arm64 {label(name)} uefi] hot-added blocks {blocks}: +{grown} bytes of page_ext")


def test_validate_predicts_the_guests_tables(guest):
    """``validate``: the simulator, given this guest's sections, predicts the walked tables;
    the predicted total is the kernel's own boot line."""
    proc = inspect("validate", *guest["targets"]["qmp"], "-s", guest["vmlinux"])
    assert "agrees" in proc.stdout
    assert f"predicted {len(inspect_json(*guest['targets']['qmp'], '-s', guest['vmlinux'])['tables'])} tables, " \
           f"{dmesg_page_ext_bytes(guest['dmesg'])} bytes" in proc.stdout


# -- kdump ---------------------------------------------------------------------------------

CRASHKERNEL = "192M"
LEAK_RATE = 32  # MiB/s: the guest's ~800 MiB in about half a minute of TCG
LEAK_FRAME = " shmem_fallocate+"  # leaker -m tmpfs: fallocate() on a tmpfs
# The kernel's show_stacks, read over and over until the panic, each sample renamed whole.
SAMPLE_STACKS = r"""
mkdir -p /share/oracle
(n=0; while :; do n=$((n + 1)); t=/share/oracle/.show_stacks.$n
  dd if=STACKS bs=1M iflag=fullblock of=$t 2>/dev/null && mv $t /share/oracle/show_stacks.$n
  rm -f /share/oracle/show_stacks.$((n - 2)); sleep 0.2; done) > /dev/null 2>&1 &
""".replace("STACKS", STACKS)


@pytest.fixture(scope="module", params=KERNELS)
def kdump(request):
    """One OOM panic per kernel, captured by the guest's own kdump kernel; QEMU is gone after."""
    name = request.param
    page = page_of(name)
    kdir = kernel_or_skip(name)
    work = fresh(WORK / f"kdump-{name}")
    with TestVM(kdir, cmdline=CLIENTS_ON, crashkernel=CRASHKERNEL, workdir=str(work / "vm")) as vm:
        dmesg = vm.dmesg()
        t = time.time()
        vm.load_capture_kernel()
        loaded = time.time() - t
        vm.run(SAMPLE_STACKS).check()
        t = time.time()
        core = vm.crash("oom", "-c -d 31", work / "vmcore", leaker=f"-m tmpfs -r {LEAK_RATE}", timeout=900)
        cycle = time.time() - t
        times, d = vm.crash_times, vm.captured[0]
        sample = last_sample(vm.share, "show_stacks")
        out = {"name": name, "page": page, "vmlinux": str(kdir / "vmlinux"), "core": str(core), "dmesg": dmesg,
               "console": vm.console.read_text(errors="replace"), "makedumpfile": d,
               "pid": int((vm.share / "kdump" / "leaker.pid").read_text()),
               "show_stacks": sample.read_text() if sample else None}
    print(f"\n[arm64 {label(name)} kdump] kexec -s -p {loaded:.1f} s; leak ({LEAK_RATE} MiB/s) -> panic -> capture "
          f"kernel's /init {times['capture_up']:.1f} s, -> QEMU gone {times['exit']:.1f} s (crash() {cycle:.1f} s); "
          f"makedumpfile -c -d 31 {d.seconds:.1f} s, {core.stat().st_size} bytes")
    return out


def test_kdump_the_guest_panicked_and_its_capture_kernel_wrote_the_dump(kdump):
    console = kdump["console"]
    first = console[:console.find("testvm: capture kernel")]
    assert "Kernel panic - not syncing: Out of memory: system-wide panic_on_oom is enabled" in first
    assert "testvm: capture kernel" in console
    assert kdump["makedumpfile"].rc == 0 and "makedumpfile Completed." in kdump["makedumpfile"].log
    assert Path(kdump["core"]).read_bytes()[:8] == b"KDUMP   "


def test_kdump_total_is_the_kernels_boot_line(kdump):
    doc = inspect_json(kdump["core"], "-s", kdump["vmlinux"])
    geo = GEOMETRIES[f"arm64-{kdump['page']}"]
    printed = dmesg_page_ext_bytes(kdump["dmesg"])
    assert not [c for c in doc["checks"] if c["status"] == "fail"]
    assert printed and doc["page_ext"]["total_bytes"] == printed == doc["page_ext"]["kernel_total_usage"]
    assert doc["kernel"]["page_size"] == geo.page_size and doc["kernel"]["section_pages"] == geo.section_pages
    assert {t["node"] for t in doc["tables"]} == {0, 1}


def kdump_top(kdump: dict, by: str) -> list[dict]:
    return json.loads(inspect("top", kdump["core"], "-s", kdump["vmlinux"], "--by", by, "--json").stdout)["rows"]


def test_kdump_top_names_the_planted_leak_first(kdump):
    """The first row is the stack show_stacks gave the most pages through
    shmem_fallocate before the panic, with at least those pages (the leak only
    grew), ten times the next row; by pid and comm the leaker leads."""
    assert kdump["show_stacks"] is not None, "no show_stacks sample completed before the panic"
    counted = dict(parse_show_stacks(kdump["show_stacks"]))
    leak = heaviest_through(counted, LEAK_FRAME)
    rows = kdump_top(kdump, "stack")
    print(f"\n[arm64 {label(kdump['name'])} kdump] leak: {rows[0]['pages']} pages in the vmcore, "
          f"{counted[leak]} in the last show_stacks; next row {rows[1]['pages']}")
    assert tuple(rows[0]["key"]) == leak
    assert rows[0]["pages"] >= counted[leak] > 0 and rows[0]["pages"] > 10 * rows[1]["pages"]
    assert kdump_top(kdump, "pid")[0]["key"] == kdump["pid"]
    assert kdump_top(kdump, "comm")[0]["key"] == "leaker"


# -- hot-remove ------------------------------------------------------------------------------

def tables_follow_block_states(vm: TestVM, vmlinux: str) -> dict:
    """inspect over QMP; its tables are exactly the online blocks' sections (one section a block on arm64)."""
    doc = inspect_json("--qemu", vm.qmp_path, "-s", vmlinux)
    assert not [c for c in doc["checks"] if c["status"] == "fail"]
    states = vm.memory_blocks()
    online = {b for b, state in states.items() if state == "online"}
    assert {t["section"] for t in doc["tables"]} == online, states
    return doc


@pytest.mark.parametrize("name", KERNELS)
def test_hot_remove_under_uefi_follows_the_block_states(name):
    """A 512 MiB DIMM onlined movable (nothing unmovable lands in it), its
    blocks offlined through sysfs -- their tables go (offline_page_ext at
    MEM_OFFLINE) -- then ejected (device_del: ACPI, DEVICE_DELETED), the blocks
    leave sysfs and the tables are the boot ones again.  total_usage never
    decreases: it still counts the freed tables."""
    page = page_of(name)
    kdir = kernel_or_skip(name)
    vmlinux = str(kdir / "vmlinux")
    geo = GEOMETRIES[f"arm64-{page}"]
    with TestVM(kdir, cmdline=CLIENTS_ON, uefi=True, workdir=str(WORK / f"uefi-remove-{name}")) as vm:
        before = tables_follow_block_states(vm, vmlinux)
        blocks = vm.hot_add("dimm2", 512, node=0)
        vm.set_blocks(blocks, "online_movable").check()
        added = tables_follow_block_states(vm, vmlinux)
        assert set(blocks) <= {t["section"] for t in added["tables"]}
        t = time.time()
        vm.set_blocks(blocks, "offline").check()
        offlined = time.time() - t
        assert all(vm.memory_blocks()[b] == "offline" for b in blocks)
        tables_follow_block_states(vm, vmlinux)
        t = time.time()
        vm.hot_remove("dimm2")
        vm.wait_blocks(blocks, present=False)
        removed = time.time() - t
        after = tables_follow_block_states(vm, vmlinux)
    assert after["tables"] == before["tables"]
    assert after["page_ext"]["total_bytes"] == before["page_ext"]["total_bytes"]
    freed = len(blocks) * geo.section_pages * after["page_ext"]["entry_size"]
    assert after["page_ext"]["kernel_total_usage"] == before["page_ext"]["kernel_total_usage"] + freed
    assert "freed by hot-remove" in {c["name"]: c for c in after["checks"]}["total-usage"]["detail"]
    print(f"\n[arm64 {label(name)} uefi] blocks {blocks}: offline {offlined:.1f} s, eject {removed:.1f} s, "
          f"{freed} bytes of page_ext freed")
