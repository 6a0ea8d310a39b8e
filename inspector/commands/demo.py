"""``pageext-inspect demo``: the shipped demo core, for a first try with no VM and no root.

The work is :mod:`inspector.demo` (where the files are, unpacked on first
use); this command prints what the demo is and runs three of the tool's own
commands on it, each shown as the line a person would type, so that the
next step is to run them on their own vmcore.  ``--args`` prints only
``CORE -s VMLINUX``, for ``pageext-inspect top $(pageext-inspect demo --args)``.
"""

from __future__ import annotations

import shlex
import subprocess
import sys

from .base import Command, Context, Opt
from ..demo import facts, files


def demo_commands(core: str, vmlinux: str, pid: int) -> list[list[str]]:
    """The commands the demo runs: locate and verify, the top stacks, and
    page_owner_sort's kind of selection (the leaker's pid was first the shell
    that exec'd it: its records under the comm "sh")."""
    target = [core, "-s", vmlinux]
    return [["inspect", *target], ["top", *target, "--limit", "3"],
            ["owner", *target, "--pid", str(pid), "--comm", "sh"]]


def run_demo(ctx: Context) -> int:
    core, vmlinux = (str(p) for p in files())
    if ctx.args.only_args:
        ctx.echo(shlex.join([core, "-s", vmlinux]))
        return 0
    f = facts()
    ctx.echo(f"A real {f['release']} post-mortem: {f['made_by']}.")
    ctx.echo(f"The kernel's own boot line said: \"{f['page_ext_line']}\"; the leaker was pid {f['leaker_pid']}.")
    worst = 0
    for argv in demo_commands(core, vmlinux, f["leaker_pid"]):
        ctx.echo(f"\n$ pageext-inspect {shlex.join(argv)}")
        sys.stdout.flush()
        rc = subprocess.run([sys.executable, "-m", "inspector", *argv, "--no-progress"]).returncode
        worst = max(worst, rc)
    return worst


COMMANDS = [
    Command("demo", "Run inspect, top and owner on the demo core that ships with the package (no VM, no root).",
            run_demo, (
                Opt(("--args",), "only_args", "print only 'CORE -s VMLINUX' (the demo's target, unpacked)", bool,
                    False),
            ), description="""\b
Examples:
  pageext-inspect demo
  pageext-inspect top $(pageext-inspect demo --args) --by comm""", target=False),
]
