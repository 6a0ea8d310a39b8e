"""Command line: ``pageext-inspect [COMMAND] [TARGET] [OPTIONS]``.

A thin front end over :mod:`inspector.commands`: each command defined there
becomes a typer command here, with the target options (TARGET, -s/--vmlinux,
--qemu, --arch, --force, --progress) added once for all.  This module opens
the session, runs the command, and turns what the library raises into exit
statuses with one line on stderr:

  0  complete, and every check passed (or page_ext is compiled in but empty)
  1  a check failed, or records are corrupt
  2  bad input: missing or corrupt core, wrong vmlinux, no page_ext, a bad option
  3  partial: data the answer needs is missing from the target (listed on stderr)

The default command is ``inspect``: any first argument that is not a
command name is taken as its target.

A live QEMU guest that stops answering ends the run within ``--timeout``
(:mod:`inspector.link`): one line, exit 2.  Ctrl-C ends it with 130 and
SIGTERM with 143 (a handler raises, so every ``with`` unwinds: a guest that
``--pause`` stopped is continued); ``watch`` takes either as the end of its
sampling and gives its verdict.
"""

from __future__ import annotations

import inspect as _inspect
import os
import signal
import sys
import time
from types import SimpleNamespace
from typing import Any, Callable, Optional

import typer

from .commands import (ARCH, EXIT_FAIL, EXIT_PARTIAL, EXIT_USAGE, TIMEOUT, VMLINUX, Command, Context, Opt, all_commands,
                       consistent, finish, timeout_of)
from .text import escape
from .errors import MissingDataError, PageExtError, UsageError, VerificationError
from .versions import unmatched_message

EXIT_TEXT = """\b
Exit status:
  0  complete, and every check passed (or page_ext is compiled in but empty)
  1  a check failed, or records are corrupt
  2  bad input (missing or corrupt core, wrong vmlinux, no page_ext, a bad option)
  3  partial: data the answer needs is missing from the target (listed on stderr)"""

EXAMPLES = """\b
Examples:
  pageext-inspect                                   # the running kernel (/proc/kcore, needs root)
  pageext-inspect vmcore -s vmlinux --sections      # a crash dump, every table listed
  pageext-inspect --qemu /tmp/vm/qmp.sock -s vmlinux --json   # a live QEMU guest
  pageext-inspect top vmcore -s vmlinux --limit 10  # what holds the memory, per stack
  pageext-inspect owner vmcore -s vmlinux --format debugfs > page_owner.txt
  pageext-inspect help owner                        # one command's options and examples"""

# The target options of every command that reads a kernel (one definition).
TARGET_OPTS = (
    Opt(("target",), "target", "vmcore or /proc/kcore (default: the running kernel)", positional=True),
    VMLINUX,
    Opt(("--qemu",), "qemu", "QMP socket of a live QEMU guest", metavar="SOCKET"),
    ARCH,
    TIMEOUT,
)
FORCE = Opt(("--force",), "force", "decode even where a check the decode relies on failed (bias, extent, "
            "clients); suspect tables are marked", bool, False)
PROGRESS = Opt(("--progress/--no-progress",), "progress", "a progress bar on stderr for long reads "
               "(only on a terminal)", bool, True)


def fail(message: str, code: int = EXIT_USAGE) -> typer.Exit:
    typer.echo(f"pageext-inspect: error: {message}", err=True)
    return typer.Exit(code)


class _Progress:
    """Progress bars on stderr (rich), shown only for work that outlasts a moment."""

    def __init__(self) -> None:
        self.bar = None
        self.started = time.monotonic()

    def __call__(self, label: str, total: int) -> Callable[[int], None]:
        state: dict[str, Any] = {"task": None, "done": 0}

        def advance(n: int) -> None:
            state["done"] += n
            if state["task"] is None:
                if time.monotonic() - self.started < 0.5:
                    return
                if self.bar is None:
                    from rich.console import Console
                    from rich.progress import Progress
                    self.bar = Progress(console=Console(stderr=True), transient=True)
                    self.bar.start()
                state["task"] = self.bar.add_task(label, total=total or None)
            self.bar.update(state["task"], completed=state["done"])
        return advance

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def _param(opt: Opt) -> _inspect.Parameter:
    kind = _inspect.Parameter.KEYWORD_ONLY
    if opt.positional:
        default = typer.Argument(... if opt.required else opt.default, help=opt.help,
                                 metavar=(opt.metavar or opt.dest).upper(), show_default=False)
    else:
        extra = {"min": opt.minimum} if opt.type is int and opt.minimum is not None else {}
        default = typer.Option(opt.default, *opt.flags, help=opt.help, metavar=opt.metavar, hidden=opt.hidden,
                               show_default=opt.type is not bool and opt.default not in (None, "", 0), **extra)
    annotation = {bool: bool, int: Optional[int] if opt.default is None else int}.get(
        opt.type, str if opt.required else Optional[str])
    return _inspect.Parameter(opt.dest, kind, default=default, annotation=annotation)


def _register(app: typer.Typer, cmd: Command) -> None:
    opts = list(cmd.all_options())
    if cmd.target:
        opts = list(TARGET_OPTS) + opts + ([FORCE] if cmd.force else []) + [PROGRESS]

    def handler(**kw: Any) -> None:
        try:
            code = run(cmd, kw)
        except KeyboardInterrupt as e:  # typer would make it a silent Exit(130)
            raise Interrupted(isinstance(e, Terminated)) from None
        raise typer.Exit(code)

    handler.__signature__ = _inspect.Signature([_param(o) for o in opts])  # type: ignore[attr-defined]
    handler.__name__ = cmd.name.replace("-", "_")
    text = cmd.summary + ("\n\n" + cmd.description if cmd.description else "") + "\n\n" + EXIT_TEXT
    app.command(cmd.name, help=text, short_help=cmd.summary)(handler)


def defaults(cmd: Command) -> dict[str, Any]:
    """Every option of ``cmd`` (target options included) at its default, by dest."""
    opts = list(cmd.all_options()) + (list(TARGET_OPTS) + [FORCE, PROGRESS] if cmd.target else [])
    return {o.dest: o.default for o in opts}


def run(cmd: Command, kw: dict[str, Any], out=None, err=None, target=None) -> int:
    """Open the target, run ``cmd``, and return its exit status (printing errors).

    ``target``: an already open :class:`~inspector.target.Target` to run on
    instead (a fresh session on it: how a test runs a command many times on
    one live kernel without opening it anew)."""

    args = SimpleNamespace(**kw)
    progress = _Progress() if kw.get("progress") and sys.stderr.isatty() else None
    ctx = Context(cmd, args, None, out, err)

    def no_answer() -> Optional[int]:
        """A live target that stopped answering: whatever the command made of
        the reads that failed, this is the one line (exit 2)."""
        link = getattr(getattr(ctx.session, "target", None), "link", None)
        if link is not None and link.interrupted():
            raise Terminated() if link.interrupted() == signal.SIGTERM else KeyboardInterrupt()
        why = ctx.session.target.failure() if link is not None else None
        if not why:
            return None
        _close(progress)
        ctx.err.write(f"pageext-inspect: error: {why}\n")
        return EXIT_USAGE

    try:
        if cmd.prepare is not None:
            cmd.prepare(args)
        if "timeout" in kw:
            args.timeout_s = timeout_of(args)
        if cmd.target:
            from .session import PageExt
            force = bool(getattr(args, "force", False))
            ctx.session = PageExt(target.prog, target=target, force=force, progress=progress) if target else \
                PageExt.open(args.target, qemu=args.qemu, vmlinux=args.vmlinux, arch=args.arch, force=force,
                             progress=progress, timeout=args.timeout_s)
            ctx.session.layout  # a target that cannot be walked is one line, before anything else
            crash = ctx.session.crash if cmd.name != "inspect" else None
            if crash:  # a crashed kernel's dump: the reason first
                ctx.err.write(f"pageext-inspect: the dump's kernel crashed: {escape(crash['message'])}\n")
        status = consistent(ctx, cmd.run, args.retries) if cmd.rereads else cmd.run(ctx)
        if progress is not None:
            progress.close()
        stalled = no_answer()
        if stalled is not None:
            return stalled
        sys.stdout.flush()
        return finish(ctx, status)
    except VerificationError as e:
        if (stalled := no_answer()) is not None:
            return stalled
        _close(progress)
        ctx.err.write(f"pageext-inspect: error: {e}\n")
        return EXIT_FAIL
    except MissingDataError as e:
        if (stalled := no_answer()) is not None:
            return stalled
        _close(progress)
        ctx.err.write(f"pageext-inspect: partial: {e}\n")
        return EXIT_PARTIAL
    except PageExtError as e:
        if (stalled := no_answer()) is not None:
            return stalled
        _close(progress)
        ctx.err.write(f"pageext-inspect: error: {e}\n")
        return EXIT_USAGE
    except BrokenPipeError:
        _close(progress)
        _quiet_stdout()
        return 0
    except Exception:  # what drgn raises for a read the relay cut off
        if (stalled := no_answer()) is not None:
            return stalled
        raise
    finally:
        if target is None and ctx.session is not None and ctx.session.target is not None:
            ctx.session.target.close()


def _close(progress: Optional[_Progress]) -> None:
    if progress is not None:
        progress.close()


def _quiet_stdout() -> None:
    """After EPIPE (``... | head``) drop what is still buffered, quietly."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def build_app() -> typer.Typer:
    app = typer.Typer(add_completion=False, no_args_is_help=False, rich_markup_mode=None,
                      context_settings={"help_option_names": ["-h", "--help"]},
                      help="pageext-inspect: see and check the Linux kernel's page_ext memory (page_owner, "
                           "page_table_check, allocation tags, ...) in a running kernel, a vmcore or a live "
                           "QEMU guest.\n\nWithout a command, the target is inspected: pageext-inspect VMCORE "
                           "-s VMLINUX.  'pageext-inspect help COMMAND' shows a command's options and "
                           "examples.\n\n" + EXAMPLES + "\n\n" + EXIT_TEXT)
    for cmd in all_commands().values():
        _register(app, cmd)
    return app


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like Ctrl-C: ``with`` blocks and
    ``finally`` clauses run (a paused guest is continued) on the way out."""


class Interrupted(Exception):
    """Ctrl-C or SIGTERM (``term``) on its way out of typer, which would
    swallow a KeyboardInterrupt."""

    def __init__(self, term: bool):
        super().__init__("terminated" if term else "interrupted")
        self.term = term


def _terminate(signum, frame) -> None:
    raise Terminated()


def versions_text() -> str:
    """``--version``: this tool's, drgn's, and the bcc ``trace`` would use (Debian's python3-bpfcc)."""
    from . import __version__
    try:
        import drgn
        drgn_v = drgn.__version__
    except ImportError:
        drgn_v = "not found"
    try:  # the module trace imports; PyPI's project named "bcc" is another thing
        import bcc
        try:
            from importlib.metadata import version as dist_version
            bcc_v = dist_version("bcc")
        except Exception:  # no metadata
            bcc_v = "(version unknown)"
        bcc_v += f" ({os.path.dirname(os.path.dirname(bcc.__file__))})"
    except Exception:
        bcc_v = "not found (trace needs Debian's python3-bpfcc)"
    return f"pageext-inspect {__version__}\ndrgn {drgn_v}\nbcc {bcc_v}"


def _drgn_habits(argv: list[str]) -> list[str]:
    """drgn's target options, as its users type them: ``-c/--core FILE`` is the
    TARGET argument and ``-k`` the running kernel (/proc/kcore).

    >>> _drgn_habits(["owner", "-c", "vmcore", "-s", "vmlinux"])
    ['owner', 'vmcore', '-s', 'vmlinux']
    >>> _drgn_habits(["--core=vmcore"]), _drgn_habits(["top", "-k"])
    (['vmcore'], ['top', '/proc/kcore'])
    """
    out, i = [], 0
    while i < len(argv):
        a = argv[i]
        if a == "--":
            out += argv[i:]
            break
        if a in ("-c", "--core") and i + 1 < len(argv):
            out.append(argv[i + 1])
            i += 2
            continue
        if a.startswith("--core="):
            out.append(a.split("=", 1)[1])
        elif a == "-k":
            out.append("/proc/kcore")
        else:
            out.append(a)
        i += 1
    return out


def _unknown_command(word: str, names: set[str]) -> Optional[str]:
    """The one line for a first word that is neither a command nor a file but
    close to a command's name (``ownr``), else None."""
    import difflib
    if word.startswith("-") or os.path.exists(word) or "/" in word:
        return None
    close = difflib.get_close_matches(word, sorted(names | {"help"}), n=1, cutoff=0.6)
    if not close:
        return None
    return f"no such command {escape(word)!r}; did you mean {close[0]!r}? (try 'pageext-inspect --help')"


def normalize_argv(argv: list[str]) -> list[str]:
    """The command line as typer parses it: drgn's habits translated, ``help
    COMMAND`` as ``COMMAND --help``, and ``inspect`` where no command is named.
    A mistyped command or ``help`` of an unknown one is :class:`UsageError`.

    >>> normalize_argv(["-c", "vmcore", "-s", "vmlinux"])
    ['inspect', 'vmcore', '-s', 'vmlinux']
    >>> normalize_argv(["help", "top"])
    ['top', '--help']
    """
    names = set(all_commands())
    if argv and argv[0] not in names and argv[0] != "help":
        line = _unknown_command(argv[0], names)
        if line:
            raise UsageError(line)
    argv = _drgn_habits(argv)
    if argv and argv[0] == "help":
        if len(argv) > 1 and argv[1] not in names:
            raise UsageError(f"no command {argv[1]!r} (commands: {', '.join(all_commands())}; "
                             "try 'pageext-inspect --help')")
        argv = ([argv[1]] if len(argv) > 1 else []) + ["--help"]
    if not argv:
        argv = ["inspect"]
    elif argv[0] not in names and argv[0] not in ("-h", "--help"):
        argv.insert(0, "inspect")
    return argv


def main(argv: Optional[list[str]] = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    signal.signal(signal.SIGTERM, _terminate)
    names = set(all_commands())
    if argv[:1] in (["--version"], ["-V"]):
        typer.echo(versions_text())
        sys.exit(0)
    try:
        argv = normalize_argv(argv)
    except UsageError as e:
        typer.echo(f"pageext-inspect: error: {e}", err=True)
        sys.exit(EXIT_USAGE)
    try:
        code = build_app()(argv, prog_name="pageext-inspect", standalone_mode=False)
    except typer.TyperException as e:  # a usage error: one line, not the usage block
        ctx = getattr(e, "ctx", None)
        name = ctx.info_name if ctx is not None and ctx.info_name != "pageext-inspect" else \
            argv[0] if argv[0] in names else None
        where = f"pageext-inspect {name} --help" if name else "pageext-inspect --help"
        first = (e.format_message() or str(e)).splitlines()[0] if (e.format_message() or str(e)) else "usage error"
        typer.echo(f"pageext-inspect: error: {first} (try '{where}')", err=True)
        code = EXIT_USAGE
    except (Interrupted, typer.Abort, KeyboardInterrupt) as e:
        term = getattr(e, "term", False) or isinstance(e, Terminated) or isinstance(e.__cause__, Terminated)
        typer.echo("pageext-inspect: terminated" if term else "pageext-inspect: interrupted", err=True)
        code = 143 if term else 130
    except BrokenPipeError:
        _quiet_stdout()
        code = 0
    except Exception as e:  # never a traceback for the user; PAGEEXT_DEBUG=1 shows it
        if os.environ.get("PAGEEXT_DEBUG"):
            raise
        newer = unmatched_message(e)
        if newer:  # a kernel newer than any rule: what it could not match, as a partial answer
            typer.echo(f"pageext-inspect: partial: {newer} (PAGEEXT_DEBUG=1 for details)", err=True)
            code = EXIT_PARTIAL
        else:
            fault = type(e).__name__ == "FaultError" and type(e).__module__.startswith("_drgn")
            what = "cannot read the target" if fault else "internal error"
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            typer.echo(f"pageext-inspect: error: {what}: {first} (PAGEEXT_DEBUG=1 for details)", err=True)
            code = EXIT_USAGE
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _quiet_stdout()
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
