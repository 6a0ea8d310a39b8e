"""The inspector on a real 6.1 kernel under QEMU, checked against the kernel's own words.

Oracles: the boot line "allocated N bytes of page_ext" (dmesg), the memory
block states and node links in /sys/devices/system/{memory,node}, the DIMM
addresses QEMU reports, and drgn's three ways into the same paused guest.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from conftest import (CLIENTS_ON, MAIN_FRAGMENTS, NO_PAGE_EXT, build_kernel, dmesg_page_ext_bytes, inspect, inspect_json,
                      loads, require_kernel, skip_unless_extra_build)
from testvm import TestVM

pytestmark = pytest.mark.vm


def sections_of_blocks(doc: dict, bb: int, blocks) -> set[int]:
    per_block = bb // (doc["kernel"]["section_pages"] * doc["kernel"]["page_size"])
    return {b * per_block + i for b in blocks for i in range(per_block)}


def assert_all_ok(doc: dict) -> None:
    bad = [c for c in doc["checks"] if c["status"] == "fail"]
    assert not bad, bad


def test_boot_layout_matches_the_kernel(vm, vmlinux):
    doc = inspect_json("--qemu", vm.qmp_path, "-s", vmlinux)
    assert_all_ok(doc)
    printed = dmesg_page_ext_bytes(vm)
    assert printed, "the kernel printed no 'allocated N bytes of page_ext' line"
    pe = doc["page_ext"]
    assert pe["allocated"] is True
    assert pe["total_bytes"] == printed == pe["kernel_total_usage"]

    # Entry size from the kernel's own numbers: bytes printed / pages online.
    bb = vm.block_size()
    states, nodes = vm.memory_blocks(), vm.block_nodes()
    online = [b for b, s in states.items() if s == "online"]
    pages = len(online) * bb // doc["kernel"]["page_size"]
    assert printed % pages == 0
    assert pe["entry_size"] == printed // pages

    # Per node: every online block of the node, in whole tables.
    per_node = {n["node"]: n["bytes"] for n in doc["nodes"]}
    for node in sorted(set(nodes.values())):
        blocks = [b for b in online if nodes[b] == node]
        assert per_node[node] == len(blocks) * bb // doc["kernel"]["page_size"] * pe["entry_size"], node
    # Tables exactly where sections are online, each on its block's node.
    assert {t["section"] for t in doc["tables"]} == sections_of_blocks(doc, bb, online)
    per_block = bb // (doc["kernel"]["section_pages"] * doc["kernel"]["page_size"])
    for t in doc["tables"]:
        assert t["node"] == nodes[t["section"] // per_block]
        assert t["bytes"] == doc["kernel"]["section_pages"] * pe["entry_size"]
        assert t["state"] == "online"


def test_clients_agree_with_the_kernel(vm, vmlinux):
    doc = inspect_json("--qemu", vm.qmp_path, "-s", vmlinux)
    clients = {c["name"]: c for c in doc["page_ext"]["clients"]}
    # The clients the kernel was built with, from its own config (5.10 has no
    # page_table_check: v5.17).
    config = (Path(vmlinux).parent / "config").read_text()
    built = {name for name, opt in (("page_owner", "CONFIG_PAGE_OWNER"), ("page_table_check", "CONFIG_PAGE_TABLE_CHECK"))
             if f"{opt}=y\n" in config}
    assert "page_owner" in built and built <= set(clients)
    assert ("page_table_check" in clients) == ("page_table_check" in built)
    # page_owner is active iff its debugfs file gives records (the kernel says
    # -EINVAL when page_owner is off).
    res = vm.run("head -c 200 /sys/kernel/debug/page_owner")
    assert clients["page_owner"]["active"] == (res.rc == 0 and "Page allocated via order" in res.out)
    if "page_table_check" in built:
        assert clients["page_table_check"]["active"] is True  # booted with page_table_check=on
    active = [c for c in clients.values() if c["active"]]
    # The active clients' data plus the shared flags word make up the entry:
    # v6.1 starts page_ext_size at sizeof(struct page_ext), one long; from
    # v6.3 (6189eb82f0ae) it starts at 0 and gains that long because
    # page_owner sets need_shared_flags.  Both: sizes + 8 on 64-bit.
    assert sum(c["size"] for c in active) + 8 == doc["page_ext"]["entry_size"]


def test_live_elf_and_kdump_agree(vm, vmlinux, tmp_path):
    vm.pause()
    try:
        live = inspect_json("--qemu", vm.qmp_path, "-s", vmlinux)
        elf = vm.dump(str(tmp_path / "core.elf"), "elf")
        kdump = vm.dump(str(tmp_path / "core.kdump"), "kdump-zlib")
        from_elf = inspect_json(elf, "-s", vmlinux)
        from_kdump = inspect_json(kdump, "-s", vmlinux)  # no architecture in QEMU's kdump
    finally:
        vm.resume()
    assert live["target"]["kind"] == "qemu" and from_elf["target"]["kind"] == "vmcore"
    for doc in (live, from_elf, from_kdump):
        doc.pop("target")
    assert from_elf == live
    assert from_kdump == live
    # A truncated core is refused with one line, not a traceback.
    os.truncate(elf, os.path.getsize(elf) // 3)
    proc = inspect(elf, "-s", vmlinux, check_rc=2)
    assert "truncated" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    for path in (elf, kdump):
        os.unlink(path)


def test_hot_add_on_node1_adds_exactly_its_sections(vm, vmlinux):
    before = inspect_json("--qemu", vm.qmp_path, "-s", vmlinux)
    blocks = vm.hot_add("dimm1", 256, node=1)  # returns once the guest shows the blocks
    states = vm.memory_blocks()
    assert all(states[b] == "offline" for b in blocks)
    # Tables come at MEM_GOING_ONLINE, not when the DIMM is plugged.
    plugged = inspect_json("--qemu", vm.qmp_path, "-s", vmlinux)
    assert plugged["tables"] == before["tables"]

    vm.set_blocks(blocks, "online").check()
    assert all(vm.memory_blocks()[b] == "online" for b in blocks)
    after = inspect_json("--qemu", vm.qmp_path, "-s", vmlinux)
    assert_all_ok(after)
    bb = vm.block_size()
    entry = after["page_ext"]["entry_size"]
    new = {t["section"]: t for t in after["tables"]} .keys() - {t["section"] for t in before["tables"]}
    assert new == sections_of_blocks(after, bb, blocks)
    nodes = vm.block_nodes()
    assert all(nodes[b] == 1 for b in blocks)
    assert all(t["node"] == 1 for t in after["tables"] if t["section"] in new)
    grown = after["page_ext"]["total_bytes"] - before["page_ext"]["total_bytes"]
    assert grown == len(blocks) * (bb // after["kernel"]["page_size"]) * entry == 2 * 32768 * entry
    assert after["page_ext"]["kernel_total_usage"] == after["page_ext"]["total_bytes"]
    # Any table of a new section placed in another new block is reported as
    # a hot-remove dependency (on 6.1: section 33's table in block 32).
    section_block = {s: b for b in blocks for s in sections_of_blocks(after, bb, [b])}
    for t in after["tables"]:
        if t["section"] in new and t["table_block"] in blocks and t["table_block"] != section_block[t["section"]]:
            assert {"section": t["section"], "block": section_block[t["section"]],
                    "table_block": t["table_block"]} in after["dependencies"]


def test_hot_remove_frees_the_tables(vm, vmlinux):
    before = inspect_json("--qemu", vm.qmp_path, "-s", vmlinux)
    blocks = vm.hot_add("dimm2", 256, node=1)
    # online_movable: nothing unmovable (page tables, page_ext itself) may
    # land in the DIMM, so the guest can give it back.
    vm.set_blocks(blocks, "online_movable").check()
    bb = vm.block_size()
    added = inspect_json("--qemu", vm.qmp_path, "-s", vmlinux)
    sections = sections_of_blocks(added, bb, blocks)
    assert sections <= {t["section"] for t in added["tables"]}
    # Movable memory cannot hold GFP_KERNEL tables: they live elsewhere.
    assert not [t for t in added["tables"] if t["section"] in sections and t["table_block"] in blocks]

    vm.hot_remove("dimm2")  # ACPI eject: the guest offlines and removes the blocks
    vm.wait_blocks(blocks, present=False)
    after = inspect_json("--qemu", vm.qmp_path, "-s", vmlinux)
    assert_all_ok(after)
    assert not sections & {t["section"] for t in after["tables"]}
    assert after["tables"] == before["tables"]
    assert after["page_ext"]["total_bytes"] == before["page_ext"]["total_bytes"]
    # total_usage never decreases: it still counts the freed tables.
    freed = len(sections) * after["kernel"]["section_pages"] * after["page_ext"]["entry_size"]
    assert after["page_ext"]["kernel_total_usage"] == before["page_ext"]["kernel_total_usage"] + freed
    assert "freed by hot-remove" in {c["name"]: c for c in after["checks"]}["total-usage"]["detail"]


def test_proc_kcore_inside_the_guest(vm, vmlinux):
    """The same tool, run in the guest on /proc/kcore, sees what QMP sees."""
    exe = Path(sys.executable).parent / "pageext-inspect"
    res = vm.run(f"chroot /host {exe} /proc/kcore -s {vmlinux} --json --no-progress", timeout=900)
    assert res.rc == 0, res.err
    import json
    inside = loads(res.out)
    outside = inspect_json("--qemu", vm.qmp_path, "-s", vmlinux)
    assert inside["target"] == {"kind": "kcore", "path": "/proc/kcore"}
    inside.pop("target"); outside.pop("target")
    assert inside == outside


def test_snapshot_on_proc_kcore_leaves_out_its_own_process_also_in_a_pid_namespace(vm, vmlinux):
    """snapshot on /proc/kcore leaves out its own pages by the tgid the kernel
    records -- the initial pid namespace's.  The oracle is the guest kernel's
    /proc: the shell's $$ when run plainly; in a new pid namespace (unshare
    --pid --fork, where the tool is pid 1) the process whose NSpid line is
    "<global> 1", found while it runs."""
    require_kernel(vmlinux, (5, 18), "page_owner's tgid, by which the tool knows its own pages (bf215eab785a)")
    if "CONFIG_PID_NS=y" not in (Path(vmlinux).parent / "config").read_text().splitlines():
        pytest.skip("this build has no CONFIG_PID_NS (fixtures/kernel/pidns.config is in the 5.10 and 6.1 builds "
                    "only): unshare --pid fails with EINVAL")
    import json
    from inspector.history.snapshot import load
    from testvm import CHROOT_SHARE
    exe = Path(sys.executable).parent / "pageext-inspect"
    snap = f"{exe} snapshot /proc/kcore -s {vmlinux} --json --no-progress -o {CHROOT_SHARE}"
    res = vm.run(f"sh -c 'echo $$ > /share/plain.pid; exec chroot /host {snap}/plain.parquet'", timeout=900)
    assert res.rc == 0, res.err
    runs = {"plain": (loads(res.out), int((vm.share / "plain.pid").read_text()))}
    res = vm.run(f"chroot /host unshare --pid --fork --mount-proc {snap}/ns.parquet > /share/ns.json 2> /share/ns.err &\n"
                 "bg=$!; g=\n"
                 "while kill -0 $bg 2>/dev/null; do\n"
                 "  [ -n \"$g\" ] || g=$(grep -l '^NSpid:[[:space:]]*[0-9][0-9]*[[:space:]][[:space:]]*1$' /proc/[0-9]*/status 2>/dev/null"
                 " | head -n 1 | cut -d/ -f3)\n"
                 "  sleep 0.1\n"
                 "done\n"
                 "wait $bg; rc=$?; echo $rc $g", timeout=900)
    rc, *global_pid = res.check().out.split()
    assert rc == "0", (vm.share / "ns.err").read_text()
    assert len(global_pid) == 1, f"pid 1 of the new namespace was never seen in /proc: {res.out!r}"
    global_pid = global_pid[0]
    runs["pid namespace"] = (loads((vm.share / "ns.json").read_text()), int(global_pid))
    for name, (doc, pid) in runs.items():
        obs = doc["observer"]
        print(f"\n[kcore observer] {name}: {obs}, the guest's pid {pid}")
        assert obs["tgid"] == pid and obs["pages"] > 0 and obs["allocations"] > 0, (name, obs, pid)
        assert obs["ns_tgid"] == (pid if name == "plain" else 1)
        tasks = [r for r in load(str(vm.share / Path(doc["file"]).name)).table.to_pylist() if r["kind"] == "task"]
        assert tasks and not [r for r in tasks if r["tgid"] == pid]
        # init (tgid 1) is counted: os.getpid() in the namespace would have left it out.
        assert [r for r in tasks if r["tgid"] == 1]


def test_mismatched_vmlinux_is_refused(vm, kernel_dir):
    proc = inspect("--qemu", vm.qmp_path, "-s", str(kernel_dir / "vmlinux-other"), check_rc=2)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "does not match" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_no_client_means_empty_page_ext(kernel_dir, vmlinux, tmp_path):
    config = (kernel_dir / "config").read_text().splitlines()
    # Allocation profiling on by default (FRAGMENTS_73) needs page_ext at boot
    # (need_page_alloc_tagging(), v6.10) unless sysctl.vm.mem_profiling=never.
    cmdline = "sysctl.vm.mem_profiling=never" if "CONFIG_MEM_ALLOC_PROFILING=y" in config else ""
    # The clients whose boot option the tool should name: those built in.
    hints = [f"{name}=on" for name, option in (("page_owner", "PAGE_OWNER"), ("page_table_check", "PAGE_TABLE_CHECK"))
             if f"CONFIG_{option}=y" in config]
    assert "page_owner=on" in hints
    with TestVM(kernel_dir, cmdline=cmdline, workdir=str(tmp_path / "vm")) as bare:
        assert dmesg_page_ext_bytes(bare) is None  # the kernel allocated nothing
        proc = inspect("--qemu", bare.qmp_path, "-s", vmlinux, check_rc=0)
        assert "but empty" in proc.stdout
        assert all(hint in proc.stdout for hint in hints), (hints, proc.stdout)
        doc = inspect_json("--qemu", bare.qmp_path, "-s", vmlinux)
    assert doc["page_ext"]["allocated"] is False
    assert doc["tables"] == [] and doc["page_ext"]["total_bytes"] == 0
    assert doc["page_ext"]["kernel_total_usage"] == 0
    assert not any(c["active"] for c in doc["page_ext"]["clients"])


def test_kernel_without_page_extension_is_refused(tmp_path):
    skip_unless_extra_build("no-page-ext")
    kdir = build_kernel(*MAIN_FRAGMENTS, NO_PAGE_EXT)  # the main kernel less page_ext: built from its tree
    with TestVM(kdir, cmdline=CLIENTS_ON, workdir=str(tmp_path / "vm")) as bare:
        proc = inspect("--qemu", bare.qmp_path, "-s", str(kdir / "vmlinux"), check_rc=2)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "CONFIG_PAGE_EXTENSION" in lines[0], proc.stderr


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _inspect_at_breakpoint(vm: TestVM, vmlinux: str, port: int, tmp_path: Path, function: str, action) -> dict:
    """Run ``action()`` (a hotplug step) with gdb's hardware breakpoint on
    ``function``: while the guest is stopped there, ``inspect --json`` reads it.
    The document it printed."""
    import subprocess
    exe = Path(sys.executable).parent / "pageext-inspect"
    armed, mid = tmp_path / "armed", tmp_path / "mid.json"
    script = tmp_path / "gdb.cmd"
    script.write_text(f"""set pagination off
set confirm off
target remote 127.0.0.1:{port}
hbreak {function}
shell touch {armed}
continue
shell {exe} --qemu {vm.qmp_path} -s {vmlinux} --json --no-progress > {mid}; echo $? >> {mid}.rc
delete
detach
quit
""")
    gdb = subprocess.Popen(["gdb", "-q", "-nx", "-batch", "-x", str(script), vmlinux],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 60
    while not armed.exists():
        assert gdb.poll() is None and time.time() < deadline, gdb.stdout.read() if gdb.poll() is not None else "gdb not armed"
        time.sleep(0.2)
    action()  # returns once gdb lets the guest go
    out, _ = gdb.communicate(timeout=120)
    assert (tmp_path / "mid.json.rc").read_text().strip() == "0", out
    return loads(mid.read_text())


def test_invalid_bit_seen_mid_hot_remove(kernel_dir, vmlinux, tmp_path):
    """Stop the guest inside offline_page_ext(), between __invalidate_page_ext()
    and __free_page_ext() (v6.1, b1d5488a252d), and look at the table then."""
    require_kernel(vmlinux, (6, 1), "PAGE_EXT_INVALID (b1d5488a252d)")
    port = _free_port()
    with TestVM(kernel_dir, cmdline=CLIENTS_ON, gdb_port=port, workdir=str(tmp_path / "vm")) as vm:
        blocks = vm.hot_add("dimm3", 128, node=0)
        vm.set_blocks(blocks, "online_movable").check()
        bb = vm.block_size()
        before = inspect_json("--qemu", vm.qmp_path, "-s", vmlinux)
        sections = sections_of_blocks(before, bb, blocks)
        assert {t["section"]: t["state"] for t in before["tables"] if t["section"] in sections} == \
            {s: "online" for s in sections}
        during = _inspect_at_breakpoint(vm, vmlinux, port, tmp_path, "__free_page_ext",
                                        lambda: vm.set_blocks(blocks, "offline").check())
        after = inspect_json("--qemu", vm.qmp_path, "-s", vmlinux)
    states = {t["section"]: t["state"] for t in during["tables"] if t["section"] in sections}
    assert states == {s: "invalid" for s in sections}
    raw = {s["section"]: s["page_ext"] for s in during["sections"] if s["section"] in sections}
    assert all(v & 1 for v in raw.values())  # PAGE_EXT_INVALID is the low bit
    coverage = {c["name"]: c for c in during["checks"]}["coverage"]
    assert coverage["status"] == "ok" and "PAGE_EXT_INVALID" in coverage["detail"]
    assert not sections & {t["section"] for t in after["tables"]}


def test_table_before_its_online_bit_mid_hot_add(kernel_dir, vmlinux, tmp_path):
    """Stop the guest at online_mem_sections(): online_pages() has made the
    block's tables (MEM_GOING_ONLINE) but not yet set SECTION_IS_ONLINE, under
    mem_hotplug_lock.  That is the kernel's own state, not a coverage failure
    (a 7.2 guest read from the host during hotplug showed it: test_vm_live)."""
    port = _free_port()
    with TestVM(kernel_dir, cmdline=CLIENTS_ON, gdb_port=port, workdir=str(tmp_path / "vm")) as vm:
        blocks = vm.hot_add("dimm3", 128, node=0)
        bb = vm.block_size()
        during = _inspect_at_breakpoint(vm, vmlinux, port, tmp_path, "online_mem_sections",
                                        lambda: vm.set_blocks(blocks, "online_movable").check())
        after = inspect_json("--qemu", vm.qmp_path, "-s", vmlinux)
    sections = sections_of_blocks(after, bb, blocks)
    # The kernel at the breakpoint: tables made, online bits not yet set, the lock held.
    states = {t["section"]: t["state"] for t in during["tables"] if t["section"] in sections}
    assert states == {s: "offline" for s in sections}, states
    assert not any(s["online"] for s in during["sections"] if s["section"] in sections)
    coverage = {c["name"]: c for c in during["checks"]}["coverage"]
    assert coverage["status"] == "ok", coverage
    assert "memory hotplug in progress" in coverage["detail"], coverage
    # And once online_pages() returned, the same tables, online.
    assert {t["section"]: t["state"] for t in after["tables"] if t["section"] in sections} == \
        {s: "online" for s in sections}
    assert "hotplug in progress" not in {c["name"]: c for c in after["checks"]}["coverage"]["detail"]
