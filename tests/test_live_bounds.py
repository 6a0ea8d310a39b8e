"""Issue 23, items 1 and 2 without a VM: every QMP exchange ends within --timeout.

The QEMUs here are tests/fakeqmp.py in their own process: one that greets
and goes mute, one that answers N memory reads (``xp``) and then goes mute,
one that hangs up in the middle of a read, one whose guest someone else
paused.  The command line must end each within its bound (the timeout plus
generous slack) with one line and exit 2; drgn itself (through
:func:`inspector.link.connect`) must raise, not hang, and after a stall
never take a late answer for another read's.  The same faults against a
real guest, and Ctrl-C/SIGTERM in the middle of the commands, are in
tests/test_vm_bounds.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import drgn
import pytest

from inspector.commands import TIMEOUT
from inspector.history.qmp import paused
from inspector.link import DEFAULT_TIMEOUT, NoAnswerError, connect

FAKE = str(Path(__file__).resolve().parent / "fakeqmp.py")
EXE = str(Path(sys.executable).parent / "pageext-inspect")
SLACK = 10.0  # seconds on top of a bound: start-up, a loaded machine


@pytest.fixture
def fake(tmp_path):
    """Start tests/fakeqmp.py serve with the given options; yields (socket, log)."""
    procs = []

    def start(*opts: str) -> tuple[str, Path]:
        sock, log = str(tmp_path / f"q{len(procs)}.sock"), tmp_path / f"q{len(procs)}.log"
        log.write_text("")
        procs.append(subprocess.Popen([sys.executable, FAKE, "serve", sock, "--log", str(log), *opts]))
        for _ in range(100):
            if os.path.exists(sock):
                break
            time.sleep(0.05)
        return sock, log

    yield start
    for p in procs:
        p.kill()
        p.wait()


def one_line(proc: subprocess.CompletedProcess, rc: int = 2) -> str:
    assert proc.returncode == rc, (proc.returncode, proc.stderr, proc.stdout[-500:])
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


def timed(*args: str, bound: float, log: Path | None = None) -> tuple[subprocess.CompletedProcess, float]:
    """Run the CLI; how long it took -- from the moment the fake went mute
    when ``log`` is given (so a slow start on a loaded machine does not count)."""
    t = time.monotonic()
    p = subprocess.Popen([EXE, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while log is not None and p.poll() is None and "muted" not in log.read_text():
        time.sleep(0.02)
    if log is not None and "muted" in log.read_text():
        t = time.monotonic()
    out, err = p.communicate(timeout=bound + 60)
    return subprocess.CompletedProcess(p.args, p.returncode, out, err), time.monotonic() - t


def test_the_default_timeout_is_one_number():
    assert float(TIMEOUT.default) == DEFAULT_TIMEOUT


@pytest.mark.parametrize("value", ["0", "-1", "soon", "nan"])
def test_a_bad_timeout_is_one_line(value, fake):
    sock, _ = fake()
    proc, _ = timed("--qemu", sock, "--timeout", value, bound=0)
    assert "bad --timeout" in one_line(proc)


@pytest.mark.parametrize("command", ["inspect", "owner", "top", "snapshot"])
def test_greets_then_mute(command, fake, tmp_path):
    """The issue's own case: a greeting, then nothing (qmp_capabilities unanswered)."""
    sock, log = fake("--mute-cmd", "qmp_capabilities")
    extra = ("-o", str(tmp_path / "s.parquet")) if command == "snapshot" else ()
    proc, took = timed(command, "--qemu", sock, "--timeout", "2", *extra, bound=2, log=log)
    assert one_line(proc) == f"pageext-inspect: error: QEMU at {sock} did not answer within 2 s"
    assert 1.5 <= took < 2 + SLACK, took
    assert "muted" in log.read_text()
    print(f"\n[bounds] {command}: greeting then mute, --timeout 2: ended {took:.1f} s after the mute, "
          f"exit {proc.returncode}")


def test_mute_later_in_the_set_up(fake):
    sock, log = fake("--mute-cmd", "query-target")
    proc, took = timed("--qemu", sock, "--timeout", "1.5", bound=1.5, log=log)
    assert one_line(proc) == f"pageext-inspect: error: QEMU at {sock} did not answer within 1.5 s"
    assert 1 <= took < 1.5 + SLACK, took


def test_diff_of_a_mute_socket(fake, tmp_path):
    sock, log = fake("--mute-cmd", "qmp_capabilities")
    proc, took = timed("diff", sock, sock, "--timeout", "2", bound=2, log=log)
    assert one_line(proc) == f"pageext-inspect: error: QEMU at {sock} did not answer within 2 s"
    assert took < 2 + SLACK, took


def test_mute_after_n_memory_reads(fake):
    """drgn raises within the bound, and every read after the stall fails at once:
    no answer that comes late is ever taken for another read's."""
    sock, log = fake("--mute-after", "5")
    prog = drgn.Program()
    link = connect(prog, sock, 2)
    try:
        # drgn reads through xp 1024 bytes at a time: 5 answered, the 6th not.
        want = bytes(i & 0xff for i in range(0x1000, 0x1000 + 5 * 1024))
        assert prog.read(0x1000, 5 * 1024, True) == want
        t = time.monotonic()
        with pytest.raises(Exception) as e:
            prog.read(0x8000, 16, True)
        took = time.monotonic() - t
        assert 2 <= took < 2 + SLACK, took
        print(f"\n[bounds] drgn read after 5 answered, timeout 2: raised after {took:.1f} s: {e.value}")
        assert "closed unexpectedly" in str(e.value)
        assert link.failure() == f"QEMU at {sock} did not answer within 2 s"
        t = time.monotonic()
        with pytest.raises(Exception):
            prog.read(0x1000, 16, True)
        assert time.monotonic() - t < 1
        assert log.read_text().splitlines().count("muted") == 1
    finally:
        link.close()


def test_closes_mid_read(fake):
    sock, log = fake("--close-after", "2")
    prog = drgn.Program()
    link = connect(prog, sock, 20)
    try:
        t = time.monotonic()
        with pytest.raises(Exception):
            prog.read(0, 4 * 1024, True)  # the third xp is hung up on
        took = time.monotonic() - t
        assert took < SLACK, took  # at once, not after the 20 s timeout
        print(f"\n[bounds] QEMU hangs up mid-read: drgn raised after {took:.2f} s")
        assert link.failure() == f"QEMU at {sock} closed the QMP connection while we read"
    finally:
        link.close()
    assert "closed" in log.read_text().splitlines()


def test_closes_in_the_set_up(fake):
    sock, _ = fake("--close-after", "0", "--mute-cmd", "never")
    # No RAM in the fake's memory tree: no VMCOREINFO, so the open ends at the debug info.
    proc, took = timed("--qemu", sock, "--timeout", "5", bound=5)
    assert one_line(proc).startswith("pageext-inspect: error: ")
    assert took < 5 + SLACK


def test_a_signal_while_drgn_waits_ends_the_wait(fake, tmp_path):
    """Ctrl-C while drgn waits on a mute QEMU (drgn retries its read after
    EINTR): the relay sees the signal and cuts the wait, long before the timeout."""
    sock, log = fake("--mute-after", "0")
    # The child's handler only counts (the command line's raises; which of
    # drgn's error and the handler's exception comes first is a race).
    code = ("import drgn, signal, sys\nfrom inspector.link import connect\n"
            "signal.signal(signal.SIGINT, lambda *a: None)\np = drgn.Program()\nl = connect(p, sys.argv[1], 120)\n"
            "print('reading', flush=True)\ntry:\n    p.read(0, 8, True)\nexcept Exception:\n"
            "    print('interrupted', l.interrupted(), flush=True)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, sock], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline().strip() == "reading"
        for _ in range(200):
            if "muted" in log.read_text():
                break
            time.sleep(0.05)
        t = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        assert time.monotonic() - t < SLACK
    finally:
        proc.kill()
    assert out.strip() == f"interrupted {int(signal.SIGINT)}", err


@pytest.mark.parametrize("running", [True, False])
def test_pause_of_a_mute_control_socket(fake, running):
    sock, log = fake("--mute-cmd", "stop", *(() if running else ("--paused",)))
    t = time.monotonic()
    if running:
        with pytest.raises(NoAnswerError, match="did not answer within 1 s"):
            with paused(sock, 1):
                pass
        assert time.monotonic() - t < 1 + SLACK
    else:
        # Paused by someone else: no stop, no cont, and we are told.
        with paused(sock, 1) as ours:
            assert ours is False
        assert [x for x in log.read_text().split() if x in ("stop", "cont")] == []


@pytest.mark.parametrize("cmd,sig", [("stop", signal.SIGTERM), ("stop", signal.SIGINT), ("cont", signal.SIGTERM)])
def test_a_signal_during_stop_or_cont_still_continues_the_guest(fake, cmd, sig):
    """SIGTERM or Ctrl-C while --pause's stop (or cont) is under way: the
    exchange finishes, then the signal raises, and the guest is continued.
    (Ctrl-C as an interactive Python has it: a run started in the background
    by a non-interactive shell inherits SIGINT ignored.)"""
    sock, log = fake("--slow-cmd", cmd, "--slow-s", "2")
    code = ("import signal, sys\nfrom inspector.cli import _terminate\nfrom inspector.history.qmp import paused\n"
            "signal.signal(signal.SIGTERM, _terminate)\nsignal.signal(signal.SIGINT, signal.default_int_handler)\ntry:\n    with paused(sys.argv[1], 10):\n"
            "        print('paused', flush=True)\nexcept KeyboardInterrupt as e:\n    print(type(e).__name__)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, sock], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        # Signal only once the fake holds the command (a loaded host can take seconds to start
        # the interpreter and import the tool; a signal before that tests nothing of this).
        deadline = time.monotonic() + 120
        while f"slow {cmd}" not in log.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, f"the fake never got {cmd}"
            time.sleep(0.02)
        t = time.monotonic()
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
        took = time.monotonic() - t
    finally:
        proc.kill()
    assert "Traceback" not in err, err
    assert out.split()[-1] == ("Terminated" if sig == signal.SIGTERM else "KeyboardInterrupt"), out
    cmds = [x.split()[1] for x in log.read_text().splitlines() if x.startswith("cmd ")]
    assert cmds == ["qmp_capabilities", "query-status", "stop", "cont"], cmds
    assert took < 2 + SLACK, took
