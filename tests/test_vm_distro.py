"""Debian's stock kernel (linux-image-amd64 with its -dbg vmlinux), as most users run it.

It has CONFIG_PAGE_EXTENSION=y and no client (no PAGE_OWNER, no
PAGE_TABLE_CHECK): booted plainly, page_ext is compiled in and nothing is
allocated, and the compiler has dropped variables the tool reads (total_usage
is an "absent" object in its DWARF).  Its 9p, virtio-pci and qemu_fw_cfg are
modules, which the test VM loads from KERNEL_DIR/modules.load
(scripts/debian-kernel.sh fetches and caches all of it; set
PAGEEXT_DEBIAN_KERNEL_DIR to use a fetched directory).

Oracles: the package's own config, the guest's dmesg (no "allocated N bytes
of page_ext" line; "Unknown kernel command line parameters" for page_owner=on),
uname, /sys/devices/system/{memory,node}, and the kernel's own page_ext_size
variable read with drgn directly.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, inspect, inspect_json
from testvm import TestVM

pytestmark = pytest.mark.vm

# Configs whose client would put data in page_ext on a 64-bit 6.1 kernel.
CLIENT_CONFIGS = ("CONFIG_PAGE_OWNER", "CONFIG_PAGE_TABLE_CHECK", "CONFIG_DEBUG_PAGEALLOC",
                  "CONFIG_MEM_ALLOC_PROFILING")


@pytest.fixture(scope="module")
def debian() -> Path:
    """The kernel directory scripts/debian-kernel.sh fills (cached after the first fetch)."""
    if os.environ.get("PAGEEXT_DEBIAN_KERNEL_DIR"):
        return Path(os.environ["PAGEEXT_DEBIAN_KERNEL_DIR"])
    out = subprocess.run([str(ROOT / "scripts" / "debian-kernel.sh")], check=True,
                         stdout=subprocess.PIPE, text=True).stdout
    return Path(out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def config(debian: Path) -> dict[str, str]:
    """The kernel's own build config: {CONFIG_X: value}, "n" for "is not set"."""
    out = {}
    for line in (debian / "config").read_text().splitlines():
        if m := re.match(r"(CONFIG_\w+)=(.*)", line):
            out[m.group(1)] = m.group(2)
        elif m := re.match(r"# (CONFIG_\w+) is not set", line):
            out[m.group(1)] = "n"
    return out


@pytest.fixture(scope="module")
def distro_vm(debian: Path, tmp_path_factory):
    """Booted plainly: 2 NUMA nodes, no page_owner=on."""
    with TestVM(debian, workdir=str(tmp_path_factory.mktemp("distro"))) as machine:
        yield machine


def vmlinux(debian: Path) -> str:
    return str(debian / "vmlinux")


def guest_facts(vm: TestVM) -> dict:
    """What the guest kernel itself says about its memory."""
    release = vm.run("uname -r").check().out.strip()
    page_kb = re.search(r"KernelPageSize:\s+(\d+) kB", vm.run("cat /proc/self/smaps").check().out)
    block = vm.block_size()
    # phys_index is the block's first section: consecutive blocks give sections per block.
    phys = vm.run("cd /sys/devices/system/memory && for m in memory[0-9]*; do "
                  "echo ${m#memory} $(cat $m/phys_index); done").check().out
    first_section = {int(b): int(s, 16) for b, s in (line.split() for line in phys.splitlines())}
    blocks = sorted(first_section)
    per_block = first_section[blocks[1]] - first_section[blocks[0]]
    assert all(first_section[b] == b * per_block for b in blocks)
    page_size = int(page_kb.group(1)) * 1024
    return {"release": release, "page_size": page_size, "block_bytes": block, "sections_per_block": per_block,
            "section_pages": block // per_block // page_size, "states": vm.memory_blocks(),
            "nodes": vm.block_nodes()}


def drgn_print(vm: TestVM, debian: Path, expr: str) -> str:
    """``print(expr)`` by the drgn CLI over the guest's QMP socket: the kernel's memory read
    directly, not through the tool (in a process of its own: QMP serves one client at a time)."""
    drgn_cli = Path(sys.executable).parent / "drgn"
    proc = subprocess.run([str(drgn_cli), "--qemu", vm.qmp_path, "-s", vmlinux(debian), "-e", f"print({expr})"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().splitlines()[-1]


def kernel_page_ext_size(vm: TestVM, debian: Path) -> int:
    """The kernel's own page_ext_size variable."""
    return int(drgn_print(vm, debian, 'prog["page_ext_size"].value_()'))


def test_debian_kernel_is_a_page_ext_kernel_without_clients(debian, config):
    assert (debian / "vmlinuz").is_file() and (debian / "vmlinux").is_file()
    assert config["CONFIG_PAGE_EXTENSION"] == "y"
    assert config["CONFIG_SPARSEMEM_VMEMMAP"] == "y" and config["CONFIG_SPARSEMEM_EXTREME"] == "y"
    assert all(config.get(c, "n") == "n" for c in CLIENT_CONFIGS), {c: config.get(c) for c in CLIENT_CONFIGS}
    # What the test VM needs is a module here: the reason for modules.load.
    assert config["CONFIG_FW_CFG_SYSFS"] == "m" and config["CONFIG_9P_FS"] == "m"


def test_debian_guest_boots_with_its_modules_and_publishes_vmcoreinfo(distro_vm, debian):
    vm = distro_vm
    assert vm.run("uname -r").check().out.strip() == (debian / "release").read_text().strip()
    loaded = {line.split()[0] for line in vm.run("cat /proc/modules").check().out.splitlines()}
    # Built in, where the kernel says so (Debian's 7.2 has virtio_pci built in).
    builtin = {Path(line).name.split(".")[0].replace("-", "_")
               for line in (debian / "modules" / "modules.builtin").read_text().split()}
    assert {"qemu_fw_cfg", "9p", "9pnet_virtio", "virtio_pci"} <= loaded | builtin
    vm.run("test -e /sys/firmware/qemu_fw_cfg/by_name/etc/vmcoreinfo/raw").check()
    (vm.share / "probe").write_text("from the host")  # the 9p share, both ways
    assert vm.run("cat /share/probe; echo from the guest > /share/probe.back").check().out == "from the host"
    assert (vm.share / "probe.back").read_text() == "from the guest\n"
    # drgn finds the kernel over QMP through the VMCOREINFO the guest published.
    release = drgn_print(vm, debian, 'prog["init_uts_ns"].name.release.string_().decode()')
    assert release == (debian / "release").read_text().strip()
    # The kernel says nothing about page_ext when no client needs it.
    assert "page_ext" not in vm.dmesg()


def kernel_shares_flags(vm: TestVM, debian: Path) -> bool:
    """Whether the kernel's struct page_ext_operations has need_shared_flags
    (6189eb82f0ae, v6.3): read with drgn directly."""
    return drgn_print(vm, debian, 'prog.type("struct page_ext_operations").has_member("need_shared_flags")') == "True"


def check_empty_report(doc: dict, facts: dict, entry_size: int, shared_flags: bool) -> None:
    """A --json report of a boot that allocated no page_ext, against the kernel's own numbers."""
    kernel = {k: v for k, v in doc["kernel"].items() if k not in ("rules", "crash")}
    assert kernel == {"release": facts["release"], "memory_model": "sparsemem-vmemmap",
                      "page_size": facts["page_size"], "section_pages": facts["section_pages"],
                      "sparsemem_extreme": True}
    # The rules, from the kernel's types: page_ext_size global (5.4+, 6.1) or
    # shared flags (6.3+, 7.2); PAGE_EXT_INVALID (b1d5488a252d, v6.1; not in 5.10).
    rules = doc["kernel"]["rules"]
    assert rules["entry_rule"] == ("shared_flags" if shared_flags else "page_ext_size")
    from inspector.versions import release_version
    assert rules["invalid_bit"] == (release_version(facts["release"]) >= (6, 1))
    pe = doc["page_ext"]
    assert pe["allocated"] is False
    assert pe["total_bytes"] == 0 and doc["tables"] == []
    # total_usage is optimized out of this kernel's DWARF: unknown, or 0 as nothing was allocated.
    assert pe["kernel_total_usage"] in (None, 0)
    assert pe["entry_size"] == entry_size
    assert pe["clients"] == []  # none compiled in (the config oracle above)
    assert not [c for c in doc["checks"] if c["status"] == "fail"], doc["checks"]
    assert doc["dependencies"] == []
    # Every section of every memory block, online as its block is, on its block's node, without a table.
    spb = facts["sections_per_block"]
    want = {b * spb + i: (facts["nodes"][b], state == "online")
            for b, state in facts["states"].items() for i in range(spb)}
    got = {s["section"]: (s["node"], s["online"]) for s in doc["sections"]}
    assert got == want
    assert all(s["present"] and s["page_ext"] == 0 and s["block"] == s["section"] // spb for s in doc["sections"])
    nodes = {n: sum(1 for b in facts["nodes"].values() if b == n) for n in set(facts["nodes"].values())}
    assert {n["node"]: (n["tables"], n["bytes"]) for n in doc["nodes"]} == {n: (0, 0) for n in nodes}


def check_empty_text(proc: subprocess.CompletedProcess) -> None:
    assert re.search(r"compiled in.*nothing (was )?allocated", proc.stdout, re.S), proc.stdout
    assert "page_ext      0 bytes in 0 tables" in proc.stdout


def test_stock_kernel_reports_compiled_in_nothing_allocated(distro_vm, debian, tmp_path):
    vm = distro_vm
    facts = guest_facts(vm)
    assert all(s == "online" for s in facts["states"].values())
    entry_size = kernel_page_ext_size(vm, debian)  # 6.1: sizeof(struct page_ext) when no client asked
    shared = kernel_shares_flags(vm, debian)
    vm.pause()
    try:
        check_empty_text(inspect("--qemu", vm.qmp_path, "-s", vmlinux(debian), check_rc=0))
        live = inspect_json("--qemu", vm.qmp_path, "-s", vmlinux(debian))
        # No page_owner in this kernel: owner refuses in one line, exit 2.
        owner = inspect("owner", "--qemu", vm.qmp_path, "-s", vmlinux(debian), check_rc=2)
        assert owner.stdout == "" and len(owner.stderr.strip().splitlines()) == 1 and "page_owner" in owner.stderr
        kdump = vm.dump(str(tmp_path / "core.kdump"), "kdump-zlib")
    finally:
        vm.resume()
    check_empty_report(live, facts, entry_size, shared)
    check_empty_text(inspect(kdump, "-s", vmlinux(debian), check_rc=0))
    from_kdump = inspect_json(kdump, "-s", vmlinux(debian))
    assert live.pop("target")["kind"] == "qemu" and from_kdump.pop("target")["kind"] == "vmcore"
    assert from_kdump == live
    os.unlink(kdump)


def test_page_owner_on_is_unknown_to_the_stock_kernel(debian, tmp_path):
    """A user who boots it with page_owner=on gets nothing more: the kernel says so."""
    with TestVM(debian, cmdline="page_owner=on", workdir=str(tmp_path / "vm")) as vm:
        dmesg = vm.dmesg()
        # 5.15+ names unknown parameters (print_unknown_bootoptions(),
        # 86d1919a4fb0); 5.10 passes them silently to init's environment,
        # which it lists under "with environment:".
        assert ('Unknown kernel command line parameters "page_owner=on"' in dmesg
                or re.search(r"with environment:\n(?:.*\n)*?\[[ .\d]+\]\s+page_owner=on\n", dmesg))
        assert not re.search(r"allocated \d+ bytes of page_ext", dmesg)
        facts = guest_facts(vm)
        doc = inspect_json("--qemu", vm.qmp_path, "-s", vmlinux(debian))
        entry_size = kernel_page_ext_size(vm, debian)
        shared = kernel_shares_flags(vm, debian)
    check_empty_report(doc, facts, entry_size, shared)
