"""``validate`` on the real 6.1 kernel under QEMU: the simulator's prediction for the
guest's own memory map must be what the kernel built, at boot and across hotplug.

Oracles beside the walk itself: the kernel's boot line "allocated N bytes of
page_ext", the memory block states and nodes in /sys, and QEMU's DIMM addresses
(query-memory-devices).  The trace replayed here was written by hand from such a
hotplug (fixtures/sim/traces/README.md); the test repeats the hotplug and checks
QEMU gives the DIMM the address the trace was written for.
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

import pytest

from conftest import dmesg_page_ext_bytes, inspect, loads, release_tuple, vmlinux_release
FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "sim"

pytestmark = pytest.mark.vm

TRACE = FIXTURES / "traces" / "dimm-node1-online-offline.jsonl"


def validate(vm, vmlinux, *extra, rc=0):
    return inspect("validate", "--qemu", vm.qmp_path, "-s", vmlinux, *extra, check_rc=rc)


def figures(out: str) -> dict[str, int]:
    m = re.search(r"predicted (\d+) tables, (\d+) bytes, total_usage (\d+); kernel (\d+) tables, (\d+) bytes, "
                  r"total_usage (\d+)", out)
    assert m, out
    keys = ("pred_tables", "pred_bytes", "pred_usage", "tables", "bytes", "usage")
    return dict(zip(keys, map(int, m.groups())))


def online_blocks(vm) -> list[int]:
    return [b for b, s in vm.memory_blocks().items() if s == "online"]


# The simulator's variant for each kernel of the matrix, from the sources read
# (inspector/versions.py cites the commits): 5.10 is v5.4's algorithm
# (page_ext_size entries, no invalid bit), 6.1 adds the invalid bit (b1d5488a252d),
# 6.12 is v6.6's (shared flags v6.3, rollback v6.6), 7.x v7.0's (node from pfn_to_nid).
VARIANT_OF = {(5, 10): "v5.4", (6, 1): "v6.1", (6, 12): "v6.6", (7, 2): "v7.0", (7, 3): "v7.0"}


def test_validate_agrees_at_boot(vm, vmlinux):
    out = validate(vm, vmlinux).stdout
    assert "agrees" in out and f"variant {VARIANT_OF[release_tuple(vmlinux_release(vmlinux))]}" in out
    f = figures(out)
    printed = dmesg_page_ext_bytes(vm)
    assert f["pred_usage"] == f["usage"] == printed
    # one table per online 128 MiB block (block == section on this VM)
    assert f["pred_tables"] == f["tables"] == len(online_blocks(vm))


RECORDED = FIXTURES / "traces" / "recorded-6.1-dimm-node1.jsonl"
EXE = Path(sys.executable).parent / "pageext-inspect"


def start_tracer(vm) -> None:
    """pageext-inspect trace --record, inside the guest (host Python+bcc via chroot)."""
    vm.run(f"(chroot /host sh -c 'echo $$ > /tmp/tr.pid; exec {EXE} trace --record /tmp/t.jsonl' "
           "> /host/tmp/tr.out 2> /host/tmp/tr.err &)").check()
    deadline = time.time() + 600
    while time.time() < deadline:
        err = vm.run("cat /host/tmp/tr.err 2>/dev/null").out
        if "tracing: ready" in err:
            return
        assert "error" not in err, err
        time.sleep(3)
    raise AssertionError("the tracer never became ready")


def stop_tracer(vm, dest: Path) -> str:
    vm.run("kill -INT $(cat /host/tmp/tr.pid); for i in $(seq 50); do "
           "grep -q 'stopped by' /host/tmp/tr.out && break; sleep 0.2; done").check()
    dest.write_text(vm.run("cat /host/tmp/t.jsonl").check().out)
    return vm.run("cat /host/tmp/tr.err").out


def test_validate_replays_a_trace_of_a_real_hotplug(vm, vmlinux, tmp_path):
    # The hand-written trace and the recorded one are 6.1's (validate refuses a
    # trace of another release); on another kernel the live trace stands alone.
    on_61 = release_tuple(vmlinux_release(vmlinux)) == (6, 1)
    start_tracer(vm)
    vm.hot_add("dimmT", 256, node=1)
    # The trace was written for this exact DIMM address: the first one QEMU hands out.
    assert vm.dimm_address("dimmT") == (0x100000000, 256 << 20)
    blocks = vm.dimm_blocks("dimmT")
    assert blocks == [32, 33]
    for b in blocks:  # one block at a time, as in the trace
        vm.set_blocks([b], "online_movable").check()
    vm.set_blocks([32], "offline").check()
    assert vm.memory_blocks()[32] == "offline" and vm.memory_blocks()[33] == "online"
    assert vm.block_nodes()[33] == 1

    live = tmp_path / "live.jsonl"
    stop_tracer(vm, live)
    header = loads(live.read_text().splitlines()[0])  # this kernel's entry size and section, as traced

    out = validate(vm, vmlinux, "--trace", str(TRACE if on_61 else live)).stdout
    assert "agrees" in out
    # The same hotplug as recorded by the tracer, once when the fixture was made and
    # now live: the simulator predicts every call it saw.
    for rec in (RECORDED, live) if on_61 else ():
        out2 = validate(vm, vmlinux, "--trace", str(rec)).stdout
        assert "agrees" in out2, (rec, out2)
        assert figures(out2) == figures(out)
    f = figures(out)
    # total_usage: boot tables + the two hot-added ones; the kernel never subtracts the freed one.
    table = header["section_pages"] * header["entry_size"]
    assert f["usage"] == f["pred_usage"] == dmesg_page_ext_bytes(vm) + 2 * table
    assert f["tables"] == f["pred_tables"] == len(online_blocks(vm))
    # Without the trace the history is unknown: the freed table is explained, not an error.
    out = validate(vm, vmlinux).stdout
    assert "1 table(s) freed since boot" in out and "agrees" in out
    # A trace that stops before the offline predicts a table the kernel freed.
    short = tmp_path / "short.jsonl"
    lines = (TRACE if on_61 else live).read_text().splitlines()
    # up to the offline: the hand-written trace's last 4 events; the live one's first GOING_OFFLINE on
    cut = -4 if on_61 else next(i for i, line in enumerate(lines) if '"GOING_OFFLINE"' in line)
    short.write_text("\n".join(lines[:cut]) + "\n")
    proc = validate(vm, vmlinux, "--trace", str(short), rc=1)
    assert "section 32: predicted a table, the kernel has none" in proc.stdout
    # Leave the VM clean for the next test: block 33 offline too, DIMM out.
    vm.set_blocks([33], "offline").check()
    vm.hot_remove("dimmT")
    vm.wait_blocks(blocks, present=False)


def test_validate_agrees_after_a_dimm_on_each_node_and_after_offlining_one(vm, vmlinux):
    bb = vm.block_size()
    added = {}
    for node in (0, 1):
        dimm = f"dimmV{node}"
        vm.hot_add(dimm, 256, node=node)
        added[node] = vm.dimm_blocks(dimm)
        vm.wait_blocks(added[node], present=True)
        # online_movable on node 1: that DIMM will be offlined below.
        vm.set_blocks(added[node], "online_movable" if node == 1 else "online").check()
    nodes = vm.block_nodes()
    assert {nodes[b] for b in added[0]} == {0} and {nodes[b] for b in added[1]} == {1}
    out = validate(vm, vmlinux).stdout
    assert "agrees" in out
    f = figures(out)
    assert f["tables"] == f["pred_tables"] == len(online_blocks(vm))
    # entry size from the kernel's own boot line: bytes printed / pages online at boot (8 blocks)
    entry = dmesg_page_ext_bytes(vm) // (8 * bb // 4096)
    assert f["bytes"] == f["pred_bytes"] == len(online_blocks(vm)) * bb // 4096 * entry

    vm.set_blocks(added[1][:1], "offline").check()
    assert vm.memory_blocks()[added[1][0]] == "offline"
    out = validate(vm, vmlinux).stdout
    assert "agrees" in out
    f = figures(out)
    assert f["tables"] == f["pred_tables"] == len(online_blocks(vm))
    # the walk and the prediction both lack the offlined block's table;
    # total_usage still counts it (and the freed tables of the earlier test)
    assert f["usage"] > f["pred_usage"] and "table(s) freed since boot" in out


def test_validate_reports_differences_for_the_wrong_variant(vm, vmlinux):
    # v3.19 entries are sizeof(struct page_ext) only: every table is predicted 9 times smaller.
    proc = validate(vm, vmlinux, "--variant", "v3.19", rc=1)
    # The kernel's entry size from its boot line: bytes printed / pages online at boot (8 blocks).
    entry = dmesg_page_ext_bytes(vm) // (8 * vm.block_size() // 4096)
    assert f"entry size: predicted 8, kernel {entry}" in proc.stdout
    assert "difference(s):" in proc.stdout
