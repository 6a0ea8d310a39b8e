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

from .commands import Command, Context, Opt, all_commands, consistent, finish
from .errors import UsageError
from .model import Missing

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
# drgn 0.3.0 makes its parsers with add_help=False: -h/--help is ours, and
# prints the text drgn's own parser formats from the command's definition
# (the same summary, description and option texts as the CLI's --help).
HELP = Opt(("-h", "--help"), "help", "show this help", bool, False)


def _print_help(prog: Program, name: str) -> None:
    import sys

    from drgn.commands import DEFAULT_COMMAND_NAMESPACE
    text = DEFAULT_COMMAND_NAMESPACE.lookup(prog, name).format_help()
    sys.stdout.write(text if text.endswith("\n") else text + "\n")


def session(prog: Program, force: bool = False):
    """The :class:`~inspector.session.PageExt` of a % command on ``prog``.

    A core does not change, so its walk (the layout, and what the walk could
    not read) is made once per program and kept in ``prog.cache``; each
    command gets a session of its own on it, with its own record of what its
    answer lacks.  A live kernel (drgn -k, drgn --qemu) is walked afresh by
    every command: it moves on between them."""
    from .session import PageExt

    kept = prog.cache.get("pageext_walk")
    pe = PageExt(prog, force=force, layout=kept[0] if kept else None)
    if kept:
        pe.missing.merge(kept[1])
    elif not pe.live:
        layout = pe.layout  # the walk, now: what it could not read is all pe.missing holds yet
        walk_missing = Missing()
        walk_missing.merge(pe.missing)
        prog.cache["pageext_walk"] = (layout, walk_missing)
    return pe


def _handler(cmd: Command):
    def run(prog: Program, name: str, args: argparse.Namespace, **kwargs: Any) -> None:
        import sys


        if getattr(args, "help", False):
            _print_help(prog, name)
            return
        for opt in cmd.options:
            if opt.type is int and opt.minimum is not None and getattr(args, opt.dest, None) is not None \
                    and getattr(args, opt.dest) < opt.minimum:
                raise UsageError(f"{opt.flags[0]} must be at least {opt.minimum}")
        if cmd.prepare is not None:
            cmd.prepare(args)
        ctx = Context(cmd, args, session(prog, bool(getattr(args, "force", False))) if cmd.target else None,
                      sys.stdout, sys.stderr, frontend="drgn")
        status = finish(ctx, consistent(ctx, cmd.run, args.retries) if cmd.rereads else cmd.run(ctx))
        if status == 1:
            sys.stderr.write(f"{name}: a check failed (see above)\n")
    return run


# Options that name the target: the drgn session is the target, so drgn's
# help shows the CLI's examples without them.
_TARGET_FLAGS = ("-s", "--vmlinux", "--qemu", "--arch", "-c", "--core")


def _drgn_example(line: str, cmd: Command) -> str:
    """A CLI example line as the drgn command it is (``%name`` and its options);
    the comment goes where it spoke of the target, which drgn already has.

    >>> c = Command("top", "", lambda ctx: 0, drgn="page_owner_top")
    >>> _drgn_example("  pageext-inspect top vmcore -s vmlinux --by pid   # per process", c)
    '  %page_owner_top --by pid   # per process'
    >>> _drgn_example("  pageext-inspect /proc/kcore --sections  # every table", Command("inspect", "", lambda ctx: 0, drgn="pageext"))
    '  %pageext --sections'
    """
    indent = line[:len(line) - len(line.lstrip())]
    code, _, comment = line.strip().partition("#")
    words, out, i, target = code.split(), [], 1, False
    if words[1:2] == [cmd.name]:
        i = 2
    while i < len(words):
        w = words[i]
        if w in _TARGET_FLAGS:
            i += 2
            continue
        if not w.startswith("-") and not target and (not out or not out[-1].startswith("-")):
            target = True  # the TARGET argument
            i += 1
            continue
        out.append(w)
        i += 1
    text = " ".join([f"%{cmd.drgn}"] + out)
    # The inspect examples (no command word) speak of their targets: no comment.
    keep = bool(comment.strip()) and words[1:2] == [cmd.name]
    return indent + (f"{text}   # {comment.strip()}" if keep else text)


def drgn_description(cmd: Command) -> str:
    """The command's description for drgn's help: the CLI's text, its example
    blocks ("\\b" paragraphs, kept as line blocks) rewritten as drgn commands."""
    paragraphs = []
    for para in cmd.description.split("\n\n"):
        if para.startswith("\b\n"):
            lines = para[2:].splitlines()
            lines = [_drgn_example(ln, cmd) if ln.strip().startswith("pageext-inspect") else ln for ln in lines]
            unique = {ln.partition("   #")[0].rstrip(): ln for ln in reversed(lines)}  # the first of each
            para = "\n".join("|" + ln for ln in lines if unique.get(ln.partition("   #")[0].rstrip()) is ln)
        paragraphs.append(para.replace("pageext-inspect VMCORE", f"%{cmd.drgn}"))
    return "\n\n".join(paragraphs)


def register() -> list[str]:
    """Register every command that has a drgn name; their names."""
    from drgn.commands.linux import linux_kernel_command

    names = []
    for cmd in all_commands().values():
        if not cmd.drgn:
            continue
        opts = [o for o in cmd.all_options() if not o.cli_only] + ([FORCE] if cmd.force else []) + [HELP]
        linux_kernel_command(name=cmd.drgn, description=cmd.summary.rstrip("."),
                             long_description=drgn_description(cmd) or None,
                             arguments=[_argument(o) for o in opts])(_handler(cmd))
        names.append(cmd.drgn)
    return names


def _register_help() -> bool:
    """``%help [COMMAND]`` where drgn has none (0.3.0): the commands with their
    one-line descriptions, or one command's help.  Kept out of the way when
    drgn brings its own."""
    from drgn.commands import DEFAULT_COMMAND_NAMESPACE, argument, command

    if "help" in getattr(DEFAULT_COMMAND_NAMESPACE, "_commands", {}):
        return False

    @command(description="list the commands, or show one command's help",
             arguments=(argument("name", nargs="?", help="a command"),))
    def _cmd_help(prog: Program, name: str, args: argparse.Namespace, **kwargs: Any) -> None:
        import sys

        if args.name:
            _print_help(prog, args.name.lstrip("%"))
            return
        rows = sorted(DEFAULT_COMMAND_NAMESPACE.enabled(prog))
        width = max(len(n) for n, _ in rows)
        sys.stdout.write("".join(f"%{n:<{width}}  {c.description()}\n" for n, c in rows))
    return True


COMMAND_NAMES = register()
HELP_REGISTERED = _register_help()


def drgn_prog_set(prog: Program) -> None:
    """drgn's plugin hook: nothing to set up per program (the walk is kept on first use, see :func:`session`)."""
