#!/usr/bin/env python3
"""Run ``pageext-inspect trace`` inside a test VM and watch memory hotplug live.

The guest boots with the host's root shared read-only at /host (TestVM
host_root=True), so the project's venv and Debian's bcc run in the guest
through ``chroot /host``.  The tracer needs a writable place the host can
read: the guest's /share (the host directory ``vm.share``) is bind-mounted at
/host/tmp/share (/host/tmp is a guest tmpfs), so inside the chroot the record
is /tmp/share/FILE and on the host vm.share/FILE.  The tracer's stdout/stderr
go to vm.share/trace.out and trace.err; "tracing: ready" on stderr means the
probes are attached (compile+load takes 20-35 s under TCG).

Library (the tests use it)::

    t = GuestTracer(vm, record="t.jsonl")   # starts it, returns once ready
    ... hot-plug ...
    t.stop()                                # SIGINT, waits for the summary
    t.out, t.err, t.record_lines()

Shell::

    scripts/tracevm.py KERNEL_DIR [--append ARGS] [--probes auto|direct|notifier] [--demo]

boots the kernel, starts the tracer and prints its output as it comes.  Without
--demo it waits for you: plug memory from another shell with
``scripts/testvm.py hot-add VM_DIR dimm1 256 --node 1`` and online it with
``scripts/testvm.py run VM_DIR 'echo online > /sys/devices/system/memory/memory32/state'``.
With --demo it plugs, onlines and unplugs two DIMMs itself.  Ctrl-C stops
the tracer (its summary is printed) and the VM.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from testvm import TestVM, VMError  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TOOL = ROOT / ".venv" / "bin" / "pageext-inspect"


class GuestTracer:
    """``pageext-inspect trace`` running in the guest, in the background."""

    def __init__(self, vm: TestVM, record: str = "trace.jsonl", args: str = "",
                 ready_timeout: float = 300.0):
        self.vm = vm
        self.record = vm.share / record
        # trace.rc appears whole (written aside, then renamed): its presence says the tracer ended.
        for name in ("trace.out", "trace.err", "trace.rc", "trace.rc.tmp", "trace.pid", record):
            (vm.share / name).unlink(missing_ok=True)
        vm.run("mountpoint -q /host/tmp/share || { mkdir -p /host/tmp/share && "
               "mount --bind /share /host/tmp/share; }").check()
        started = time.time()
        vm.run(f"(chroot /host {TOOL} trace --record /tmp/share/{record} {args} "
               "> /share/trace.out 2> /share/trace.err & echo $! > /share/trace.pid; "
               "wait $!; echo $? > /share/trace.rc.tmp; mv /share/trace.rc.tmp /share/trace.rc) > /dev/null 2>&1 &").check()
        while "tracing: ready" not in self.err:
            if self.finished:
                raise VMError(f"the tracer exited ({self.rc}) before it was ready: {self.err.strip()}")
            if time.time() - started > ready_timeout:
                raise VMError(f"the tracer was not ready in {ready_timeout:.0f} s: {self.err.strip()}")
            time.sleep(0.2)
        self.ready_seconds = time.time() - started

    @property
    def out(self) -> str:
        f = self.vm.share / "trace.out"
        return f.read_text(errors="replace") if f.exists() else ""

    @property
    def err(self) -> str:
        f = self.vm.share / "trace.err"
        return f.read_text(errors="replace") if f.exists() else ""

    @property
    def finished(self) -> bool:
        return (self.vm.share / "trace.rc").exists()

    @property
    def rc(self):
        f = self.vm.share / "trace.rc"
        return int(f.read_text().strip()) if f.exists() else None

    def record_lines(self) -> list[dict]:
        return [json.loads(line) for line in self.record.read_text().splitlines() if line.strip()]

    def wait_for(self, predicate, timeout: float = 120.0, what: str = "events"):
        """Poll the record until predicate(events) is true; return the events."""
        deadline = time.time() + timeout
        while True:
            events = self.record_lines()[1:] if self.record.exists() else []
            if predicate(events):
                return events
            if time.time() > deadline:
                raise VMError(f"no {what} after {timeout:.0f} s; tracer stderr: {self.err.strip()[-500:]}")
            time.sleep(0.2)

    def stop(self, timeout: float = 60.0) -> int:
        if not self.finished:
            pid = (self.vm.share / "trace.pid").read_text().strip()
            self.vm.run(f"kill -INT {pid}")
        deadline = time.time() + timeout
        while not self.finished:
            if time.time() > deadline:
                raise VMError("the tracer did not stop on SIGINT")
            time.sleep(0.2)
        return self.rc


def _main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("kernel_dir")
    ap.add_argument("--append", default="page_owner=on page_table_check=on")
    ap.add_argument("--probes", default="auto", choices=["auto", "direct", "notifier"])
    ap.add_argument("--demo", action="store_true", help="plug, online and unplug two DIMMs")
    ap.add_argument("--workdir")
    a = ap.parse_args()
    try:
        with TestVM(a.kernel_dir, cmdline=a.append, host_root=True, workdir=a.workdir) as vm:
            print(f"booted in {vm.boot_seconds:.1f} s; VM dir {vm.dir}; starting the tracer", flush=True)
            t = GuestTracer(vm, args=f"--probes {a.probes}")
            sys.stdout.write(t.err)
            print(f"(ready after {t.ready_seconds:.1f} s; record: {t.record})", flush=True)
            shown = 0

            def pump():
                nonlocal shown
                text = t.out
                sys.stdout.write(text[shown:])
                sys.stdout.flush()
                shown = len(text)

            try:
                if a.demo:
                    vm.set_blocks(vm.hot_add("dimm1", 256, node=1), "online_movable").check()
                    pump()
                    vm.set_blocks(vm.hot_add("dimm0", 512, node=0), "online").check()
                    pump()
                    vm.hot_remove("dimm1")
                    time.sleep(2)
                else:
                    print(f"plug memory from another shell: scripts/testvm.py hot-add {vm.dir} dimm1 256 --node 1"
                          "  (Ctrl-C to stop)", flush=True)
                    vm._qmp.close()  # ctl.sock takes one client: leave it to scripts/testvm.py
                    vm._qmp = None
                    while not t.finished:
                        pump()
                        time.sleep(0.5)
            except KeyboardInterrupt:
                pass
            t.stop()
            pump()
            sys.stdout.write(t.err.split("tracing: ready\n", 1)[-1])
        return 0
    except VMError as e:
        print(f"tracevm: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(_main())
