"""Issue 23, items 1 and 2 on a real guest: faults in the middle of a command.

One small 6.1 guest (512 MiB, one node, one vCPU) for the module.  drgn
reads it two ways: straight from QEMU's socket (as root drgn reads guest RAM
from the QEMU process, so almost nothing goes over QMP), and through
tests/fakeqmp.py's proxy, which makes drgn read every byte over QMP
(``xp``, 1 KiB an exchange: ``inspect`` is about 11,000 of them) and can
go mute after N of them.  Each fault must end within its bound (the timeout
plus generous slack, measured from the moment of the fault), with one line
on stderr, the right exit status and no traceback, and the guest must be
left running (query-status on the control socket).  What needs no guest
is in tests/test_live_bounds.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from conftest import CLIENTS_ON
from testvm import TestVM

pytestmark = pytest.mark.vm

EXE = str(Path(sys.executable).parent / "pageext-inspect")
FAKE = str(Path(__file__).resolve().parent / "fakeqmp.py")
SLACK = 15.0  # seconds on top of a bound: TCG, two cores shared
MUTE_AFTER = 2000  # xp reads the proxy answers: past the open, well before the end of any command
MIDWAY = 2000  # xp reads answered before a signal mid-run (inspect alone is about 11,000)
WORK = Path(tempfile.gettempdir()) / "pageext-bounds"
EXIT = {signal.SIGINT: (130, "pageext-inspect: interrupted"), signal.SIGTERM: (143, "pageext-inspect: terminated")}


@pytest.fixture(scope="module")
def guest(kernel_dir):
    with TestVM(kernel_dir, mem_mb=512, numa=1, smp=1, cmdline=CLIENTS_ON, workdir=str(WORK / "vm")) as vm:
        yield vm, str(kernel_dir / "vmlinux")


def running(vm) -> bool:
    return vm.qmp("query-status")["running"]


class Proxy:
    """tests/fakeqmp.py proxy in front of the guest's QMP socket."""

    def __init__(self, vm, tmp: Path, mute_after: int | None):
        self.path, self.log = str(tmp / "px.sock"), tmp / "px.log"
        self.log.write_text("")
        args = [sys.executable, FAKE, "proxy", self.path, vm.qmp_path, "--log", str(self.log)]
        self.proc = subprocess.Popen(args + (["--mute-after", str(mute_after)] if mute_after is not None else []))
        for _ in range(100):
            if os.path.exists(self.path):
                break
            time.sleep(0.05)

    def wait_muted(self, proc: subprocess.Popen, limit: float = 300) -> float:
        """The moment the proxy stopped answering (the command still running)."""
        end = time.monotonic() + limit
        while time.monotonic() < end:
            if "muted" in self.log.read_text():
                return time.monotonic()
            assert proc.poll() is None, (proc.returncode, proc.stderr.read())
            time.sleep(0.1)
        raise AssertionError("the proxy was never muted")

    def wait_reads(self, proc: subprocess.Popen, n: int, limit: float = 300) -> None:
        """Until the proxy has answered n memory reads (the command still running)."""
        end, mark = time.monotonic() + limit, f"xp {n}\n"
        while time.monotonic() < end:
            if mark in self.log.read_text():
                return
            assert proc.poll() is None, (proc.returncode, proc.stderr.read())
            time.sleep(0.1)
        raise AssertionError(f"the proxy never answered {n} reads")

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def proxy(guest, tmp_path):
    made = []

    def start(mute_after: int | None = MUTE_AFTER) -> Proxy:
        made.append(Proxy(guest[0], tmp_path, mute_after))
        return made[-1]

    yield start
    for p in made:
        p.close()


def start(*args: str) -> subprocess.Popen:
    return subprocess.Popen([EXE, *args, "--no-progress"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen, since: float, bound: float) -> tuple[int, list[str], float]:
    out, err = proc.communicate(timeout=bound + SLACK + 60)
    took = time.monotonic() - since
    assert "Traceback" not in err, err
    return proc.returncode, err.strip().splitlines(), took


@pytest.mark.parametrize("command", ["inspect", "owner"])
def test_mute_after_n_memory_reads(guest, proxy, command):
    vm, vmlinux = guest
    px = proxy()
    proc = start(command, "--qemu", px.path, "-s", vmlinux, "--timeout", "5")
    muted = px.wait_muted(proc)
    rc, lines, took = finish(proc, muted, 5)
    assert (rc, lines) == (2, [f"pageext-inspect: error: QEMU at {px.path} did not answer within 5 s"])
    assert took < 5 + SLACK, took
    print(f"\n[bounds] {command} muted after {MUTE_AFTER} xp: ended {took:.1f} s after the mute")
    assert running(vm)


@pytest.mark.parametrize("command,sig", [("owner", signal.SIGINT), ("top", signal.SIGTERM),
                                         ("snapshot", signal.SIGINT), ("watch", signal.SIGTERM)])
def test_a_signal_while_waiting_on_a_mute_guest(guest, proxy, tmp_path, command, sig):
    """drgn waits on QEMU (the timeout is 120 s): the signal ends it at once."""
    vm, vmlinux = guest
    px = proxy()
    extra = {"snapshot": ("-o", str(tmp_path / "s.parquet")), "watch": ("--interval", "0", "--count", "3")}
    proc = start(command, "--qemu", px.path, "-s", vmlinux, "--timeout", "120", *extra.get(command, ()))
    px.wait_muted(proc)
    t = time.monotonic()
    proc.send_signal(sig)
    rc, lines, took = finish(proc, t, 0)
    assert (rc, lines) == (EXIT[sig][0], [EXIT[sig][1]])
    assert took < SLACK, took
    print(f"\n[bounds] {command} {sig.name} while waiting on a mute QEMU: ended in {took:.1f} s, exit {rc}")
    assert running(vm)


@pytest.mark.parametrize("command,sig", [("owner", signal.SIGTERM), ("top", signal.SIGINT),
                                         ("snapshot", signal.SIGTERM), ("watch", signal.SIGINT),
                                         ("watch", signal.SIGTERM)])
def test_a_signal_in_the_middle_of_a_command(guest, proxy, tmp_path, command, sig):
    """A signal while the command is reading.

    owner, top and snapshot read through the proxy (which answers every
    read, slowly: every byte over QMP) and get the signal after MIDWAY
    reads, so they are certainly mid-run; straight on QEMU's socket a quiet
    machine finishes them in under a second (CI once saw snapshot end in
    0.7 s, before a fixed 1.5 s sleep).  watch --count 0 never ends on its
    own, so it reads straight from QEMU and stops the guest for each sample
    through ctl.sock.
    """
    vm, vmlinux = guest
    extra = {"snapshot": ("-o", str(tmp_path / "s.parquet")),
             "watch": ("--interval", "0", "--count", "0", "--pause", vm.ctl_path)}
    with vm.ctl_released():
        if command == "watch":
            proc = start(command, "--qemu", vm.qmp_path, "-s", vmlinux, *extra[command])
            time.sleep(8)
        else:
            px = proxy(None)
            proc = start(command, "--qemu", px.path, "-s", vmlinux, *extra.get(command, ()))
            px.wait_reads(proc, MIDWAY)
        assert proc.poll() is None, proc.communicate()
        t = time.monotonic()
        proc.send_signal(sig)
        rc, lines, took = finish(proc, t, 0)
    assert took < SLACK, took
    if command == "watch" and rc in (0, 3):
        # Ctrl-C or SIGTERM after a sample ends the sampling: the verdict, no error.
        assert not [line for line in lines if "error" in line], lines
    else:
        assert (rc, lines) == (EXIT[sig][0], [EXIT[sig][1]])
    print(f"\n[bounds] {command} {sig.name} mid-run: ended in {took:.1f} s, exit {rc}")
    assert running(vm)


def _watch_with_a_mute_control_socket(vm, vmlinux, tmp_path, mute_on: int):
    """watch --pause through a fake control socket whose mute_on-th stop goes unanswered."""
    ctl, log = str(tmp_path / "ctl.sock"), tmp_path / "ctl.log"
    log.write_text("")
    fake = subprocess.Popen([sys.executable, FAKE, "serve", ctl, "--mute-cmd", "stop", "--mute-on", str(mute_on),
                             "--log", str(log)])
    try:
        for _ in range(100):
            if os.path.exists(ctl):
                break
            time.sleep(0.05)
        proc = start("watch", "--qemu", vm.qmp_path, "-s", vmlinux, "--pause", ctl, "--count", "3", "--interval", "0",
                     "--timeout", "3")
        muted = None
        while proc.poll() is None and muted is None:
            if "muted" in log.read_text():
                muted = time.monotonic()
            time.sleep(0.05)
        out, err = proc.communicate(timeout=120)
        took = time.monotonic() - (muted or time.monotonic())
    finally:
        fake.kill()
        fake.wait()
    assert "Traceback" not in err, err
    assert muted is not None, (proc.returncode, err)
    return ctl, proc.returncode, out, err.strip().splitlines(), took


def test_a_mute_control_socket_under_pause(guest, tmp_path):
    """--pause's socket answers query-status, then never answers stop: no sample, exit 2."""
    vm, vmlinux = guest
    ctl, rc, out, lines, took = _watch_with_a_mute_control_socket(vm, vmlinux, tmp_path, 1)
    assert (rc, lines) == (2, [f"pageext-inspect: error: QEMU at {ctl} did not answer within 3 s "
                               "(QMP stop, --pause)"])
    assert took < 3 + SLACK, took
    print(f"\n[bounds] watch --pause, the first stop unanswered: ended {took:.1f} s after it, exit {rc}")
    assert running(vm)


def test_a_mute_control_socket_after_a_sample(guest, tmp_path):
    """The second stop goes unanswered: the first sample's verdict, marked partial (exit 3)."""
    vm, vmlinux = guest
    ctl, rc, out, lines, took = _watch_with_a_mute_control_socket(vm, vmlinux, tmp_path, 2)
    assert (rc, lines) == (3, [f"pageext-inspect: partial: sampling ended after 1 samples: QEMU at {ctl} did not "
                               "answer within 3 s (QMP stop, --pause)"])
    assert out.startswith("sample 1/3: ") and "verdict: too few samples for a verdict (1 samples" in out, out
    assert took < 3 + SLACK, took
    print(f"\n[bounds] watch --pause, the second stop unanswered: ended {took:.1f} s after it, exit {rc}")
    assert running(vm)


def test_a_guest_paused_by_someone_else(guest):
    """watch --pause leaves it paused, says so, and samples it as it is."""
    vm, vmlinux = guest
    vm.pause()
    try:
        with vm.ctl_released():
            proc = start("watch", "--qemu", vm.qmp_path, "-s", vmlinux, "--pause", vm.ctl_path, "--count", "2",
                         "--interval", "0", "--timeout", "10")
            rc, lines, took = finish(proc, time.monotonic(), 60)
        print(f"\n[bounds] watch --pause on a guest paused by someone else: exit {rc}, {lines}")
        assert rc == 0, lines
        assert lines == [f"pageext-inspect: note: the guest behind --pause {vm.ctl_path} was paused already "
                         "(not by pageext-inspect): sampled as it was, and left paused"]
        assert vm.qmp("query-status")["status"] == "paused"
    finally:
        vm.resume()
    assert running(vm)
