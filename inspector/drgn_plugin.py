"""The drgn plugin: pageext-inspect's commands inside a drgn session.

Installed with the package, drgn loads this module through the
``drgn.plugins`` entry point group (drgn >= 0.0.31); importing it registers
every command of :mod:`inspector.commands` that has a drgn name, with drgn's
public command framework (:func:`drgn.commands.linux.linux_kernel_command`,
drgn >= 0.1.0)::

    $ drgn -c vmcore -s vmlinux
    >>> %pageext --sections
    >>> %page_owner --pfn 0x1234 --format debugfs
    >>> %page_owner_top --by pid --limit 10
    >>> %page_table_check
    >>> %alloc_tags --limit 20

Each prints what ``pageext-inspect NAME`` prints, from the same code: the
target is the session's program, so the command has no target options.  An
error is raised as the library's one-line exception (drgn prints it as
``drgn: error: ...``); partial answers and notes go to stderr as in the CLI.
The helpers for scripts are in :mod:`inspector.helpers`.

drgn's crash-compatible mode (``%crash``) keeps its commands in a namespace
of its own that drgn does not offer to plugins (0.3.0): there, run these
commands as ``%crash py run_command(prog, "pageext")`` or leave crash mode.
"""

from __future__ import annotations

import argparse
from typing import Any

from drgn import Program

from .commands import Command, Context, Opt, all_commands, finish

drgn_priority = 60  # after drgn's own built-in commands


def _argument(opt: Opt):
    from drgn.commands import argument

    kw: dict[str, Any] = {"help": opt.help}
    if opt.positional:
        if not opt.required:
            kw["nargs"] = "?"
            kw["default"] = opt.default
        return argument(opt.dest, **kw)
    kw["dest"] = opt.dest
    if opt.type is bool:
        kw["action"] = "store_true"
    else:
        kw["default"] = opt.default
        kw["type"] = opt.type
        if opt.metavar:
            kw["metavar"] = opt.metavar
    flags = opt.flags[0].split("/")[:1] if "/" in opt.flags[0] else opt.flags
    return argument(*flags, **kw)


FORCE = Opt(("--force",), "force", "decode even where a check the decode relies on failed", bool, False)


def _handler(cmd: Command):
    def run(prog: Program, name: str, args: argparse.Namespace, **kwargs: Any) -> None:
        import sys

        from .errors import UsageError
        from .session import PageExt

        for opt in cmd.options:
            if opt.type is int and opt.minimum is not None and getattr(args, opt.dest, None) is not None \
                    and getattr(args, opt.dest) < opt.minimum:
                raise UsageError(f"{opt.flags[0]} must be at least {opt.minimum}")
        if cmd.prepare is not None:
            cmd.prepare(args)
        ctx = Context(cmd, args, PageExt(prog, force=bool(getattr(args, "force", False))) if cmd.target else None,
                      sys.stdout, sys.stderr, frontend="drgn")
        status = finish(ctx, cmd.run(ctx))
        if status == 1:
            sys.stderr.write(f"{name}: a check failed (see above)\n")
    return run


def register() -> list[str]:
    """Register every command that has a drgn name; their names."""
    from drgn.commands.linux import linux_kernel_command

    names = []
    for cmd in all_commands().values():
        if not cmd.drgn:
            continue
        opts = [o for o in cmd.options if not o.cli_only] + ([FORCE] if cmd.force else [])
        linux_kernel_command(name=cmd.drgn, description=cmd.summary.rstrip("."),
                             long_description=cmd.description.replace("\b\n", "") or None,
                             arguments=[_argument(o) for o in opts])(_handler(cmd))
        names.append(cmd.drgn)
    return names


COMMAND_NAMES = register()


def drgn_prog_set(prog: Program) -> None:
    """drgn's plugin hook: nothing to set up per program (sessions are made per command)."""
