"""``pageext-inspect trace`` inside a real 6.1 guest, checked against what the kernel itself says.

Two kernels: the test kernel (CONFIG_KPROBE_EVENTS_ON_NOTRACE=y, so the direct
probes on the notrace ``init_section_page_ext`` attach) and the same kernel with
fixtures/kernel/no-notrace.config (like Debian's stock config: the tracer must
fall back to memory_notify and still report the same table events).

Oracles, none of them the tracer's own output: the kernel's .config (which
probe mode is possible); the boot line "allocated N bytes of page_ext" divided
by the boot pages online in /sys (entry size); SECTION_SIZE_BITS in the kernel
source (section size); QEMU's DIMM addresses (pfns) and the node we plugged
them into (nid); /sys memory block states; and the core inspector reading the
live guest over QMP (which tables exist afterwards).
"""

from __future__ import annotations

import re
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from conftest import (CLIENTS_ON, MAIN_FRAGMENTS, NO_NOTRACE, ROOT, build_kernel, dmesg_page_ext_bytes, inspect,
                      inspect_json, loads, skip_unless_extra_build, vmlinux_release)
from testvm import TestVM
from tracevm import TOOL, GuestTracer

pytestmark = pytest.mark.vm



def kernel_source(version: str = "6.1") -> Path:
    """The extracted kernel source scripts/build-kernel.sh builds from (it extracts it if needed)."""
    out = subprocess.run([str(ROOT / "scripts" / "build-kernel.sh"), "-v", version, "-S"], check=True,
                         stdout=subprocess.PIPE, text=True).stdout
    return Path(out.strip().splitlines()[-1])


def block_actions(kdir: Path) -> tuple[list[str], list[str]]:
    """The notifier actions this kernel's memory_block_online()/_offline() send
    before online_pages() and after offline_pages(): PREPARE_ONLINE and
    FINISH_OFFLINE from v6.9 (c5f1e2d18909) to v6.18, none before or after --
    from the kernel's own drivers/base/memory.c."""
    version = ".".join(vmlinux_release(kdir / "vmlinux").split(".")[:2])
    text = (kernel_source(version) / "drivers/base/memory.c").read_text()
    sends = "memory_notify(MEM_PREPARE_ONLINE" in text
    return (["PREPARE_ONLINE"], ["FINISH_OFFLINE"]) if sends else ([], [])


@pytest.fixture(scope="module", params=["direct", "fallback"])
def traced(request, kernel_dir, tmp_path_factory):
    """(kernel dir, VM) for the test kernel and its no-notrace variant (of 6.1
    only: on another kernel of the matrix, the fallback case is 6.1's)."""
    if request.param == "fallback" and not vmlinux_release(kernel_dir / "vmlinux").startswith("6.1."):
        pytest.skip("the no-notrace variant is built from the 6.1 kernel only (test_trace_hotplug[6.1-fallback])")
    if request.param == "fallback":
        skip_unless_extra_build("no-notrace")
    kdir = kernel_dir if request.param == "direct" else build_kernel(*MAIN_FRAGMENTS, NO_NOTRACE)
    with TestVM(kdir, cmdline=CLIENTS_ON, host_root=True,
                workdir=str(tmp_path_factory.mktemp(f"trace-{request.param}"))) as vm:
        yield kdir, vm


def kernel_config(kdir: Path) -> str:
    return (kdir / "config").read_text()


def section_size_bits(version: str = "6.1") -> int:
    """x86_64 SECTION_SIZE_BITS from the kernel source (arch/x86/include/asm/sparsemem.h)."""
    text = (kernel_source(version) / "arch/x86/include/asm/sparsemem.h").read_text()
    x86_64 = text[text.index("#else /* CONFIG_X86_32 */"):]
    return int(re.search(r"#\s*define SECTION_SIZE_BITS\s+(\d+)", x86_64).group(1))


def test_trace_hotplug(traced):
    kdir, vm = traced
    check_trace_hotplug(kdir, vm)


def check_trace_hotplug(kdir: Path, vm: TestVM, version: str = "6.1", ready_timeout: float = 300.0) -> None:
    """Trace a hot-add of 256 MiB on node 1 and 512 MiB on node 0 and the removal
    of the first, in ``vm`` (booted from ``kdir``, the kernel of source ``version``),
    and check every event against the kernel's own numbers."""
    on_notrace = "CONFIG_KPROBE_EVENTS_ON_NOTRACE=y" in kernel_config(kdir).splitlines()
    page_size = 4096  # x86_64
    bb = vm.block_size()
    boot_online = [b for b, s in vm.memory_blocks().items() if s == "online"]
    printed = dmesg_page_ext_bytes(vm)
    assert printed, "the kernel printed no 'allocated N bytes of page_ext'"
    boot_pages = len(boot_online) * bb // page_size
    assert printed % boot_pages == 0
    entry_size = printed // boot_pages
    section_pages = (1 << section_size_bits(version)) // page_size
    table_bytes = entry_size * section_pages

    # The direct kernel prints text lines, the fallback one JSON Lines (both write the record).
    as_json = not on_notrace
    tracer = GuestTracer(vm, record="t.jsonl", args="--json" if as_json else "", ready_timeout=ready_timeout)
    assert "tracing: ready" in tracer.err

    # 256 MiB on node 1 (online_movable, so it can be removed again), 512 MiB on node 0.
    b1 = vm.hot_add("dimm1", 256, node=1)  # each returns once the guest shows its blocks
    b0 = vm.hot_add("dimm0", 512, node=0)
    vm.set_blocks(b1, "online_movable").check()
    vm.set_blocks(b0, "online").check()
    assert all(vm.memory_blocks()[b] == "online" for b in b1 + b0)

    def sections(dimm: str) -> list[int]:
        addr, size = vm.dimm_address(dimm)
        return [addr // page_size + i * section_pages for i in range(size // page_size // section_pages)]

    expected_init = {(pfn, 1) for pfn in sections("dimm1")} | {(pfn, 0) for pfn in sections("dimm0")}
    events = tracer.wait_for(lambda ev: sum(e["event"] == "init_section" for e in ev) >= len(expected_init),
                             what="init_section events")

    # The tables of the sections that were just onlined: the core inspector, live over QMP.
    doc = inspect_json("--qemu", vm.qmp_path, "-s", str(kdir / "vmlinux"))
    live = {t["start_pfn"] for t in doc["tables"]}
    assert {pfn for pfn, _ in expected_init} <= live

    removed = set(sections("dimm1"))
    vm.hot_remove("dimm1")
    events = tracer.wait_for(lambda ev: {e["pfn"] for e in ev if e["event"] == "free"} >= removed,
                             what="free events")
    assert tracer.stop() == 0
    header, *events = tracer.record_lines()

    # Which probes: what the kernel's config allows.
    assert header["kind"] == "pageext-trace" and header["version"] == 1
    assert header["probes"] == ("direct" if on_notrace else "notifier"), tracer.err
    assert ("probes: direct" if on_notrace else "probes: notifier") in tracer.err
    assert header["entry_size"] == entry_size
    assert header["section_pages"] == section_pages
    assert header["page_size"] == page_size
    assert header["release"] == vm.run("uname -r").check().out.strip()

    # Exactly one init_section per new section, right pfn and node, success.
    inits = [e for e in events if e["event"] == "init_section"]
    assert Counter((e["pfn"], e["nid"]) for e in inits) == Counter(expected_init)
    assert all(e["ret"] == 0 for e in inits)
    # Exactly one free per removed section, none for the rest.
    frees = [e for e in events if e["event"] == "free"]
    assert Counter(e["pfn"] for e in frees) == Counter(removed)
    # Every section went through GOING_ONLINE then ONLINE on its node, and the
    # removed ones through GOING_OFFLINE then OFFLINE (retries allowed); on
    # v6.9 to v6.18 the block's PREPARE_ONLINE before and FINISH_OFFLINE after.
    pre, post = block_actions(kdir)
    notes = [e for e in events if e["event"] == "notifier"]
    for pfn, nid in expected_init:
        actions = [e["action"] for e in notes if e["start_pfn"] == pfn]
        online = pre + ["GOING_ONLINE", "ONLINE"]
        assert actions[:len(online)] == online, (pfn, actions)
        assert all(e["nid"] == nid for e in notes if e["start_pfn"] == pfn and "ONLINE" in e["action"])
        if pfn in removed:
            offline = ["GOING_OFFLINE", "OFFLINE"] + post
            assert actions[-len(offline):] == offline, (pfn, actions)
    # Each init_section comes after its GOING_ONLINE and before its ONLINE.
    for e in inits:
        i = events.index(e)
        before = [x for x in events[:i] if x["event"] == "notifier" and x["start_pfn"] == e["pfn"]]
        assert before and before[-1]["action"] == "GOING_ONLINE"
    for e in events:
        assert {"time_ns", "cpu", "comm", "pid", "event"} <= set(e)

    if as_json:
        # --json: stdout is exactly the record's events; the summary goes to stderr.
        assert [loads(line) for line in tracer.out.splitlines()] == events
        summary = tracer.err
    else:
        # The text lines: bytes = PAGES_PER_SECTION x entry size, per event.
        lines = [line for line in tracer.out.splitlines() if not line.startswith("summary:")]
        init_lines = [line for line in lines if " init_section " in line]
        assert len(init_lines) == len(expected_init)
        assert all(line.split()[-2] == f"+{table_bytes}" for line in init_lines), init_lines
        free_lines = [line for line in lines if " free " in line]
        assert all(line.split()[-2] == f"-{table_bytes}" for line in free_lines), free_lines
        summary = tracer.out
    # The summary: 2 sections gained on node 1 and lost again, 4 gained on node 0.
    assert "sections gained/lost per node: node 0: +4 -0; node 1: +2 -2" in summary
    assert f"net page_ext bytes +{4 * table_bytes}" in summary


def test_replayed_trace_predicts_the_live_guest(traced):
    """The record of test_trace_hotplug, replayed by the simulator, against the core walk over QMP."""
    kdir, vm = traced
    record = vm.share / "t.jsonl"
    assert record.exists(), "test_trace_hotplug did not leave its record"
    proc = inspect("validate", "--qemu", vm.qmp_path, "-s", str(kdir / "vmlinux"), "--trace", str(record),
                   check_rc=None)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "agrees" in proc.stdout
    print(proc.stdout)


def _readable_by_others(path: Path) -> bool:
    import os
    import stat
    p = path.resolve()
    for d in [*reversed(p.parents)]:
        if not os.stat(d).st_mode & stat.S_IXOTH:
            return False
    return bool(os.stat(p).st_mode & stat.S_IROTH)


def test_trace_not_root_is_one_line(traced):
    """In the guest, as nobody: one line on stderr, exit 2, no traceback."""
    _, vm = traced
    # setpriv drops to nobody, who must be able to read the project and its
    # venv; a CI clone in a 0700 directory is not (tests/test_trace_unit.py
    # checks the same answer there with a faked euid).
    if not _readable_by_others(Path(TOOL)):
        pytest.skip(f"{TOOL} is not reachable for uid 65534 (a parent directory is private)")
    res = vm.run("chroot /host /usr/bin/setpriv --reuid=65534 --regid=65534 --clear-groups "
                 f"{TOOL} trace --duration 1")
    assert res.rc == 2, res
    assert res.err == "pageext-inspect: error: trace needs root (it loads BPF programs and kprobes): run it with sudo\n"


# Kernels whose kprobe ftrace trampoline is re-created without its call once a
# kprobe was disarmed and armed again since boot: the next call of the probed
# function jumps to 0x2 (inspector/trace/probes.py broken_kprobe_trampoline;
# reproduced with tracefs kprobe_events alone, scripts/repro-72-kprobe-oops.py).
REARM_BROKEN = ("7.2.",)


def test_count_and_duration_stop_the_tracer(traced, tmp_path_factory):
    """--count N stops after N events, --duration S after S seconds; both print
    the summary.  On 7.2.13 only the first tracer of a boot can run: the
    second refuses in one line instead of arming a broken trampoline, the
    kernel's own check of that trampoline ("ftrace: Expected E8") agrees, and
    the guest still onlines memory (without the refusal the online is killed
    by an oops)."""
    kdir, vm = traced
    if "CONFIG_KPROBE_EVENTS_ON_NOTRACE=y" not in kernel_config(kdir).splitlines():
        pytest.skip("the options do not depend on the probe mode; run once, on the direct kernel")
    if not vmlinux_release(kdir / "vmlinux").startswith(REARM_BROKEN):
        check_count(kdir, vm, "dimm2")
        check_duration(vm)
        assert "ftrace: Expected E8" not in vm.run("dmesg").out
        return
    # This guest has traced already: a fresh one, whose first tracer counts.
    with TestVM(kdir, cmdline=CLIENTS_ON, host_root=True,
                workdir=str(tmp_path_factory.mktemp("trace-rearm"))) as fresh:
        check_count(kdir, fresh, "dimm2")
        res = fresh.run(f"chroot /host {TOOL} trace --duration 2")
        assert res.rc == 2, res
        assert res.err.startswith("pageext-inspect: error: refusing to trace: this kernel's kprobe ftrace "
                                  "trampoline calls nothing (memory_notify:") and res.err.count("\n") == 1, res.err
        assert "ftrace: Expected E8, got e9" in fresh.run("dmesg").out
        fresh.set_blocks(fresh.hot_add("dimm3", 128, node=0), "online").check()
        assert "BUG:" not in fresh.run("dmesg").out


def check_count(kdir: Path, vm: TestVM, dimm: str) -> None:
    """``trace --count 3`` while a 128 MiB DIMM is onlined on node 0."""
    tracer = GuestTracer(vm, record="c.jsonl", args="--json --count 3")
    vm.set_blocks(vm.hot_add(dimm, 128, node=0), "online").check()
    deadline = time.time() + 60
    while not tracer.finished and time.time() < deadline:
        time.sleep(0.2)
    assert tracer.rc == 0, tracer.err
    events = tracer.record_lines()[1:]
    addr, _ = vm.dimm_address(dimm)
    pre, _ = block_actions(kdir)
    want = [("notifier", a) for a in pre] + [("notifier", "GOING_ONLINE"), ("init_section", None),
                                             ("notifier", "ONLINE")]
    assert [(e["event"], e.get("action")) for e in events] == want[:3]
    init = next(e for e in events if e["event"] == "init_section")
    assert init["pfn"] == addr // 4096 and init["nid"] == 0
    assert "summary: stopped by count" in tracer.err


def check_duration(vm: TestVM) -> None:
    started = time.time()
    res = vm.run(f"chroot /host {TOOL} trace --duration 2")
    assert res.rc == 0, res.err
    assert "summary: 0 events (none)" in res.out and "summary: stopped by duration" in res.out
    assert time.time() - started > 2


def test_direct_probes_refused_without_on_notrace(traced):
    """--probes direct where the kernel refuses kprobes on notrace functions: one line, exit 2."""
    kdir, vm = traced
    if "CONFIG_KPROBE_EVENTS_ON_NOTRACE=y" in kernel_config(kdir).splitlines():
        pytest.skip("this kernel accepts the direct probes (test_trace_hotplug[direct] shows it)")
    res = vm.run(f"chroot /host {TOOL} trace --probes direct --duration 1")
    assert res.rc == 2, res
    assert res.err.startswith("pageext-inspect: error: --probes direct: init_section_page_ext: kprobe refused")
    assert res.err.count("\n") == 1 and "notrace" in res.err


def test_trace_without_bcc_is_one_line(traced):
    """bcc not importable (hidden from this Python): one line naming the package, exit 2."""
    _, vm = traced
    res = vm.run(f"chroot /host {ROOT}/.venv/bin/python -c "
                 "\"import sys; sys.modules['bcc'] = None; from inspector.cli import main; main(['trace'])\"")
    assert res.rc == 2, res
    assert res.err.startswith("pageext-inspect: error: bcc is not installed: apt-get install python3-bpfcc")
    assert res.err.count("\n") == 1


def test_trace_bad_probes_option():
    proc = inspect("trace", "--probes", "sideways", check_rc=2)
    assert proc.stderr == "pageext-inspect: error: --probes must be auto, direct or notifier, not 'sideways'\n"
