"""A live kernel changes while it is read (issue 11, item 6).

The 6.1 test guest (768 MiB, 2 nodes, host root at /host) hot-adds a
256 MiB DIMM on node 1, onlines its blocks one by one (movable), offlines
them and hot-removes it, over and over, in a thread.  Meanwhile ``inspect``
and ``owner`` run RUNS times each over /proc/kcore inside the guest
(tests/live_driver.py through ``chroot /host``: one open target, a fresh
session per run; owner from node 1's last boot section on, where the DIMMs
come and go: a whole owner takes half a minute under TCG) and RUNS times each
over the unpaused guest's QMP socket from the host (the CLI, a process per
run, owner whole).  Both with their default ``--retries``.

The thread knows every state the kernel's tables pass through: each online
adds its sections' tables and grows total_usage by a table each; each
offline frees them (total_usage never decreases).  A run must either give a
consistent answer -- inspect: its set of tables and total_usage are one of
those states; owner: its records come from the tables of one state, and none
is corrupt -- or say that the target changed while it was read (exit 3).
It never reports a total that no state had.  The counts are printed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from conftest import loads, CLIENTS_ON
from live_driver import summary
from testvm import TestVM

pytestmark = pytest.mark.vm

# Runs of each command, in the guest and from the host: PAGEEXT_LIVE_RUNS
# (scripts/test.sh, and so CI: 20, to keep the cold run within its hour;
# scripts/matrix.sh: 50).
RUNS = int(os.environ.get("PAGEEXT_LIVE_RUNS", "50"))
PAUSE = 3.0  # seconds between hotplug steps
EXE = str(Path(sys.executable).parent / "pageext-inspect")
PYTHON = sys.executable
DRIVER = str(Path(__file__).resolve().parent / "live_driver.py")
CHANGED = "the target changed while it was read"
RETRIED = "this answer is from one state"


class Hotplug(threading.Thread):
    """DIMMs in and out of node 1 until stopped; ``states``: every (tables, total_usage)."""

    def __init__(self, vm: TestVM, tables: frozenset, total: int, table_bytes: int, sections_per_block: int):
        super().__init__(daemon=True)
        self.vm, self.table_bytes, self.spb = vm, table_bytes, sections_per_block
        self.tables, self.total = tables, total
        self.states = {(tables, total)}
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.cycles = 0
        self.log: list[tuple[float, str]] = []

    def _step(self, what: str, tables: frozenset, total: int) -> None:
        self.tables, self.total = tables, total
        self.states.add((tables, total))
        self.log.append((time.time(), what))
        self.stop.wait(PAUSE)  # each state lasts a moment: some runs see one, some a change

    def run(self) -> None:
        vm = self.vm
        try:
            while not self.stop.is_set():
                dimm = f"live{self.cycles}"
                blocks = vm.hot_add(dimm, 256, node=1)
                for b in blocks:
                    vm.set_blocks([b], "online_movable").check()
                    secs = frozenset(range(b * self.spb, (b + 1) * self.spb))
                    self._step(f"online {b}", self.tables | secs, self.total + self.spb * self.table_bytes)
                for b in blocks:
                    for _ in range(10):
                        if vm.set_blocks([b], "offline").rc == 0:
                            break
                        time.sleep(0.5)
                    else:
                        raise AssertionError(f"block {b} would not go offline")
                    secs = frozenset(range(b * self.spb, (b + 1) * self.spb))
                    self._step(f"offline {b}", self.tables - secs, self.total)
                vm.hot_remove(dimm)
                vm.wait_blocks(blocks, present=False)
                self.cycles += 1
        except BaseException as e:  # noqa: BLE001 -- reported by the test
            self.error = e


# Our own directory, not pytest's tmp_path: other pytest sessions on this
# machine prune old basetemps, the guest's share among them.
WORK = Path(tempfile.gettempdir()) / "pageext-live"


@pytest.fixture(scope="module")
def live(kernel_dir):
    vmlinux = str(kernel_dir / "vmlinux")
    shutil.rmtree(WORK, ignore_errors=True)
    with TestVM(kernel_dir, mem_mb=768, numa=2, maxmem_mb=2048, cmdline=CLIENTS_ON, host_root=True,
                workdir=str(WORK / "vm")) as vm:
        vm.pause()
        doc = loads(subprocess.run([EXE, "--qemu", vm.qmp_path, "-s", vmlinux, "--json", "--no-progress"],
                                        capture_output=True, text=True, check=True).stdout)
        vm.resume()
        pps, esz = doc["kernel"]["section_pages"], doc["page_ext"]["entry_size"]
        spb = vm.block_size() // (pps * doc["kernel"]["page_size"])
        hot = Hotplug(vm, frozenset(t["section"] for t in doc["tables"]), doc["page_ext"]["kernel_total_usage"],
                      pps * esz, spb)
        vm.run("mountpoint -q /host/tmp/share || { mkdir -p /host/tmp/share && "
               "mount --bind /share /host/tmp/share; }").check()
        (vm.share / "live.jsonl").unlink(missing_ok=True)
        t0 = time.time()
        hot.start()
        # The guest's runs in the background; the host's over QMP meanwhile.
        first = max(t["start_pfn"] for t in doc["tables"])  # node 1's last boot section, then the DIMMs
        prange = f"{first:#x}-{first + (1 << 24):#x}"
        vm.run(f"(chroot /host {PYTHON} {DRIVER} {vmlinux} /tmp/share/live.jsonl {RUNS} {prange} "
               "> /share/live.out 2> /share/live.err; echo $? > /share/live.rc.tmp; mv /share/live.rc.tmp /share/live.rc) "
               "> /dev/null 2>&1 &").check()  # live.rc appears whole: its presence says the runs ended
        host = []
        for i in range(RUNS):
            for cmd in ("inspect", "owner"):
                t = time.time()
                p = subprocess.run([EXE, cmd, "--qemu", vm.qmp_path, "-s", vmlinux, "--json", "--no-progress"],
                                   capture_output=True, text=True, timeout=900)
                d = summary(cmd, p.returncode, p.stdout, p.stderr, pps)
                d.update(i=i, t0=t, t1=time.time())
                host.append(d)
        deadline = time.time() + 3600
        while not (vm.share / "live.rc").exists():
            assert time.time() < deadline, "the guest's runs did not finish in an hour"
            assert hot.error is None, hot.error
            time.sleep(2)
        hot.stop.set()
        hot.join(600)
        guest = [loads(line) for line in (vm.share / "live.jsonl").read_text().splitlines()]
        yield {"guest": guest, "host": host, "hot": hot, "pps": pps, "seconds": time.time() - t0,
               "driver_rc": (vm.share / "live.rc").read_text().strip(), "driver_err": (vm.share / "live.err").read_text()}


def judge(runs: list[dict], states: set) -> dict:
    """Counts of consistent / retried / changed runs; AssertionError on any other outcome."""
    totals = {total for _, total in states}
    counts = {"consistent": 0, "retried": 0, "changed": 0}
    seen = set()
    for r in runs:
        err = " ".join(r["stderr"])
        assert "Traceback" not in err and "internal error" not in err, r
        assert "unparsable" not in r, r
        if r["rc"] == 3:
            assert CHANGED in err, r
            counts["changed"] += 1
            continue
        assert r["rc"] == 0, json.dumps(r)  # whole: which check failed
        counts["retried" if RETRIED in err else "consistent"] += 1
        if r["cmd"] == "inspect":
            state = (frozenset(r["tables"]), r["total_usage"])
            assert r["total_usage"] in totals, f"a total_usage no state had: {r['total_usage']} not in {sorted(totals)}"
            assert state in states, f"tables {sorted(state[0])} with total_usage {state[1]}: no such state"
            assert r["checks"]["total-usage"] == "ok" and r["checks"]["readable"] == "ok", r["checks"]
            seen.add(state)
        else:
            assert r["corrupt"] == 0, r
            assert any(set(r["sections"]) <= tables for tables, _ in states), \
                f"records from sections {r['sections']}: no state had tables for all of them"
    counts["distinct_states_seen"] = len(seen)
    return counts


def test_inspect_and_owner_during_hotplug(live):
    hot = live["hot"]
    assert hot.error is None, hot.error
    assert live["driver_rc"] == "0", live["driver_err"][-2000:]
    assert hot.cycles >= 2, f"only {hot.cycles} hotplug cycles while the runs went: nothing changed under them"
    for where in ("guest", "host"):
        runs = live[where]
        assert [r["cmd"] for r in runs].count("inspect") == RUNS and [r["cmd"] for r in runs].count("owner") == RUNS
    report = {}
    for where in ("guest", "host"):
        for cmd in ("inspect", "owner"):
            report[f"{where} {cmd}"] = judge([r for r in live[where] if r["cmd"] == cmd], hot.states)
    print(f"\n[live] {hot.cycles} hotplug cycles ({len(hot.states)} table states) in {live['seconds']:.0f} s: "
          + json.dumps(report))
    # The runs did meet a changing target: some answer saw a state other than the first.
    assert sum(c["distinct_states_seen"] for k, c in report.items() if "inspect" in k) >= 2
