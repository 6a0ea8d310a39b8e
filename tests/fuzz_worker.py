"""One worker of the fuzz corpus (tests/test_fuzz.py): damage, run, undo, report.

Started as ``python tests/fuzz_worker.py``, it imports everything a run
needs once (drgn, numpy, the CLI and every command module), then reads jobs
as JSON lines on stdin.  A job names a working copy of a clean core, the
patches to apply to it (:mod:`coremut`), and the command; the worker
applies the patches, forks a child that runs the command in-process --
``inspector.cli.main(argv)`` as the ``pageext-inspect`` script does, or a
drgn %command through the plugin -- with stdout and stderr in files, kills
the child when it outlives the job's bound, undoes the patches, and writes
one JSON line back: exit status, seconds, whether it was killed, and the
output files.  A fork per run keeps the imports (half of a short run) and
makes every bound hard: a child stuck in drgn's C code is killed all the same.
"""

from __future__ import annotations

import json
import os
import select
import signal
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import coremut  # noqa: E402

HANG, CRASH = -9, 99  # our own statuses: killed at the bound; an exception escaped


def preload() -> None:
    import drgn  # noqa: F401
    import numpy  # noqa: F401

    import inspector.cli  # noqa: F401
    import inspector.session  # noqa: F401
    from inspector.commands import all_commands
    all_commands()
    import inspector.drgn_plugin  # noqa: F401
    import drgn.helpers.linux.mm  # noqa: F401


def child(job: dict) -> int:
    """In the forked child: run the job's command; its exit status."""
    if job["mode"] == "cli":
        from inspector import cli
        try:
            cli.main(list(job["argv"]))
        except SystemExit as e:
            return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
        return 0
    # A drgn %command, through the plugin, in a drgn session on the core.
    import drgn
    from drgn.commands import run_command

    from inspector.errors import PageExtError
    prog = drgn.Program()
    try:
        prog.set_core_dump(job["core"])
        prog.load_debug_info([job["vmlinux"]], default=False, main=True)
    except Exception as e:  # drgn's own refusal of a damaged core: not ours to judge
        sys.stderr.write(f"drgn: cannot open: {str(e).splitlines()[0] if str(e) else type(e).__name__}\n")
        return 2
    try:
        run_command(prog, job["command"])
    except PageExtError as e:
        sys.stderr.write(f"drgn: error: {e}\n")
        return 2
    return 0


def run(job: dict, out: str, err: str) -> tuple[int, float, bool]:
    t0 = time.monotonic()
    pid = os.fork()
    if pid == 0:
        code = CRASH
        try:
            fo = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            fe = os.open(err, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(fo, 1)
            os.dup2(fe, 2)
            signal.signal(signal.SIGPIPE, signal.SIG_DFL)
            code = child(job)
        except BaseException:
            traceback.print_exc()
            code = CRASH
        finally:
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            except BaseException:
                pass
            os._exit(code if isinstance(code, int) and 0 <= code < 256 else CRASH)
    fd = os.pidfd_open(pid)
    killed = False
    try:
        ready, _, _ = select.select([fd], [], [], job["timeout"])
        if not ready:
            os.kill(pid, signal.SIGKILL)
            killed = True
        _, status = os.waitpid(pid, 0)
    finally:
        os.close(fd)
    secs = time.monotonic() - t0
    if killed:
        return HANG, secs, True
    if os.WIFSIGNALED(status):
        return -os.WTERMSIG(status), secs, False
    return os.WEXITSTATUS(status), secs, False


def main() -> None:
    preload()
    outdir = sys.argv[1]
    os.makedirs(outdir, exist_ok=True)
    sys.stdout.write(json.dumps({"ready": os.getpid()}) + "\n")
    sys.stdout.flush()
    for line in sys.stdin:
        job = json.loads(line)
        patches = [coremut.Patch(p[0], bytes.fromhex(p[1]), p[2]) for p in job["patches"]]
        undo = coremut.apply(job["core"], patches, job["clean"]) if patches else []
        out = os.path.join(outdir, f"{job['id']}.out")
        err = os.path.join(outdir, f"{job['id']}.err")
        try:
            rc, secs, hung = run(job, out, err)
        finally:
            if undo:
                coremut.revert(job["core"], undo, job["clean"])
        sys.stdout.write(json.dumps({"id": job["id"], "rc": rc, "secs": round(secs, 3), "hung": hung,
                                     "out": out, "err": err}) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
