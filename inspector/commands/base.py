"""Commands, defined once for every front end.

A :class:`Command` is a name, a one-line summary, its options (:class:`Opt`)
and a ``run(ctx)`` function that does the work through a
:class:`~inspector.session.PageExt` session and prints through its
:class:`Context`.  Two front ends turn the same definitions into commands:
:mod:`inspector.cli` (``pageext-inspect NAME ...``, with the target options
and exit statuses) and :mod:`inspector.drgn_plugin` (``%NAME`` in a drgn
session, where the target is the session's program).  So a command prints
the same thing in both, from the same code, and an option is spelled once.

Exit statuses (the CLI's; in drgn the same conditions are messages):
0 complete and verified; 1 a check failed (or records are corrupt);
2 bad input; 3 the answer is partial because data is missing.

Commands are collected from the modules of :mod:`inspector.commands`, one a
command group (:data:`MODULES`, and one per decoded client of
:func:`inspector.clients.registry`): each sets ``COMMANDS = [...]``.
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Callable, Optional, TextIO
from ..errors import PageExtError, UsageError
from ..model import FAIL, Missing

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_PARTIAL = 0, 1, 2, 3

# The modules of this package that define commands, in the order --help lists
# them: report's, then one per decoded client (inspector.commands.<its decoder
# module>, in the registry's order), then these.
MODULES = ("inspector.commands.trace", "inspector.commands.history", "inspector.commands.fleet",
           "inspector.commands.sim", "inspector.commands.demo")


@dataclass(frozen=True)
class Opt:
    """One option (or, with ``positional``, argument) of a command."""

    flags: tuple[str, ...]
    dest: str
    help: str
    type: type = str  # str, int, or bool for a flag
    default: Any = None
    metavar: Optional[str] = None
    minimum: Optional[int] = None  # ints: smallest accepted value
    positional: bool = False
    required: bool = False  # a positional argument that must be given
    cli_only: bool = False  # not offered as a drgn command option
    hidden: bool = False  # accepted, left out of --help (a deprecated spelling)


@dataclass
class Command:
    name: str
    summary: str
    run: Callable[["Context"], int]
    options: tuple[Opt, ...] = ()
    description: str = ""  # more text and examples for --help
    target: bool = True  # needs a kernel (a session)
    drgn: Optional[str] = None  # its name as a drgn command, None: CLI only
    force: bool = False  # decodes client data: offers --force
    # Checks the arguments before the target is opened (bad options fail
    # fast); may add parsed values to args.
    prepare: Optional[Callable[[SimpleNamespace], None]] = None
    # A live target that changes while read is read again (--retries, see
    # consistent()): every command that reads a kernel, but one that samples
    # a changing kernel on purpose (watch).
    retries: bool = True

    @property
    def rereads(self) -> bool:
        """Whether the command takes --retries and runs under consistent()."""
        return self.target and self.retries

    def all_options(self) -> tuple["Opt", ...]:
        """Its own options, plus --retries where it rereads a changing target
        (one definition for every command, issue 20)."""
        if self.rereads and not any(o.dest == "retries" for o in self.options):
            return self.options + (RETRIES,)
        return self.options


def parse_int(text: str, what: str, minimum: Optional[int] = None) -> int:
    try:
        n = int(str(text), 0)
    except ValueError:
        raise UsageError(f"bad {what} {text!r}: expected an integer (decimal or 0x hex)") from None
    if minimum is not None and n < minimum:
        raise UsageError(f"bad {what} {text!r}: must be at least {minimum}")
    return n


# -- options several commands share ----------------------------------------------------------------
JSON = Opt(("--json",), "as_json", "JSON output", bool, False)
PFN = Opt(("--pfn",), "pfn", "one page frame number (decimal or 0x hex)", metavar="PFN")
RANGE = Opt(("--range",), "prange", "pfns A-B inclusive (decimal or 0x hex)", metavar="A-B")
NODE = Opt(("--node",), "node", "only the pages of this NUMA node", int, None, metavar="N", minimum=0)
LIMIT = Opt(("--limit",), "limit", "show at most this many rows (0: all)", int, 0, metavar="N", minimum=0)
VMLINUX = Opt(("-s", "--vmlinux"), "vmlinux", "vmlinux with debug info", metavar="VMLINUX")
ARCH = Opt(("--arch",), "arch", "architecture of a core that lacks one (x86_64)", metavar="ARCH")
THRESHOLD = Opt(("--min-pages",), "threshold", "hide rows with fewer pages than this", int, 0, metavar="N",
                minimum=0)
TIMEOUT = Opt(("--timeout",), "timeout", "a live QEMU guest (--qemu, --pause) must answer each exchange within this "
              "many seconds; past it the run ends (exit 2)", default="30", metavar="SECONDS")
RETRIES = Opt(("--retries",), "retries", "on a live target, read again up to N times when memory hotplug changes "
              "it meanwhile (the output is held back until a read is consistent)", int, 2, metavar="N", minimum=0)


def parse_timeout(text) -> float:
    """--timeout SECONDS: a positive number."""
    try:
        t = float(text)
    except (TypeError, ValueError):
        raise UsageError(f"bad --timeout {text!r}: expected seconds, e.g. 30 or 2.5") from None
    if not 0 < t < 1e6:
        raise UsageError(f"bad --timeout {text!r}: must be more than 0 s (and less than 1e6)")
    return t


def timeout_of(args) -> float:
    """The --timeout of a command's arguments, in seconds (its default where
    the command was not given one: a drgn command, a library call)."""
    t = getattr(args, "timeout_s", None)
    return t if t is not None else parse_timeout(getattr(args, "timeout", None) or TIMEOUT.default)


def pfn_selection(pfn: Optional[str], prange: Optional[str]) -> tuple[Optional[int], int, int]:
    """--pfn / --range -> (the one pfn or None, lo, hi) with [lo, hi) all pfns if neither."""
    if pfn is not None and prange is not None:
        raise UsageError("give either --pfn or --range, not both")
    if pfn is not None:
        n = parse_int(pfn, "--pfn", 0)
        return n, n, n + 1
    if prange is not None:
        return (None, *parse_range(prange))
    return None, 0, 1 << 64


def parse_range(text: str) -> tuple[int, int]:
    """``A-B`` (inclusive, decimal or 0x hex) -> [A, B+1)."""
    try:
        a, b = text.split("-", 1)
        lo, hi = int(a, 0), int(b, 0)
    except ValueError:
        raise UsageError(f"bad --range {text!r}: expected A-B, e.g. 0x1000-0x1fff") from None
    if lo < 0 or hi < lo:
        raise UsageError(f"bad --range {text!r}: empty or negative")
    return lo, hi + 1


class Context:
    """What a command's run() works with: its arguments, the session, and output."""

    def __init__(self, command: Command, args: SimpleNamespace, session=None,
                 out: Optional[TextIO] = None, err: Optional[TextIO] = None, frontend: str = "cli"):
        self.command = command
        self.args = args
        self.session = session
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.frontend = frontend  # "cli" | "drgn"
        self.notes: list[str] = []  # stderr lines printed after the output
        self.corrupt = 0  # records found corrupt (exit 1)
        self._missing = None
        self.terminal: Optional[TextIO] = None  # where held-back output goes in the end (see consistent())

    @property
    def missing(self):
        """What the answer lacks (:class:`~inspector.model.Missing`): the
        session's, or for a command without a target (it reads files) its own."""
        if self.session is not None:
            return self.session.missing
        if self._missing is None:
            self._missing = Missing()
        return self._missing

    @property
    def tty(self) -> bool:
        try:
            return (self.terminal or self.out).isatty()
        except (AttributeError, ValueError):
            return False

    def echo(self, text: str = "") -> None:
        self.out.write(text + "\n")

    def write(self, text: str) -> None:
        self.out.write(text)

    def write_bytes(self, data: bytes) -> None:
        """The kernel's bytes: raw to a file or pipe (latin-1 text where the
        stream has no binary side, as under drgn's redirections)."""
        buf = getattr(self.out, "buffer", None)
        if buf is not None:
            self.out.flush()
            buf.write(data)
        else:
            self.out.write(data.decode("latin-1"))

    def note(self, line: str) -> None:
        """A line for stderr once the output is done."""
        if line not in self.notes:
            self.notes.append(line)


def finish(ctx: Context, status: int) -> int:
    """Print the notes and what is missing; the final exit status."""
    for line in ctx.notes:
        ctx.err.write(f"pageext-inspect: {line}\n")
    forced = sorted(getattr(ctx.session, "forced", ()) or (), key=str)
    if forced:
        where = ", ".join(f"{kind} {n}" for kind, n in forced[:6]) + (" ..." if len(forced) > 6 else "")
        why = "; ".join(f"check {c.name} failed" for c in ctx.session.checks
                        if c.status == FAIL and c.name in ("bias", "extent", "clients"))
        ctx.err.write(f"pageext-inspect: warning: --force decoded {len(forced)} suspect table(s) ({where}; {why}): "
                      "what they hold may be garbage\n")
        if status == EXIT_OK:
            status = EXIT_FAIL
    missing = ctx.missing
    if missing:
        for line in missing.lines():
            ctx.err.write(f"pageext-inspect: partial: {line}\n")
    if status == EXIT_OK and ctx.corrupt:
        status = EXIT_FAIL
    if status == EXIT_OK and missing:
        status = EXIT_PARTIAL
    return status


CHANGED = ("the target changed while it was read (memory hotplug?): this answer may mix the states before and "
           "after; --retries N reads it again")


def consistent(ctx: Context, body: Callable[[Context], int], retries: int) -> int:
    """``body(ctx)``, with an answer that comes from one state of a live target.

    On a running kernel or guest, memory hotplug may add or free tables while
    they are read.  After the body has read, the session's layout is compared
    with the kernel's as it is now; when they differ the body runs again on a
    fresh walk, up to ``retries`` more times, its output held back until an
    attempt is consistent (then printed) or none is (the last printed, and the
    answer marked partial: exit 3).  On a core the body just runs."""
    pe = ctx.session
    if pe is None or not pe.live or getattr(ctx, "_rereading", False):
        return body(ctx)  # a core, or already inside consistent() (the front ends wrap every command)
    ctx._rereading = True
    try:
        return _consistent(ctx, body, retries, pe)
    finally:
        ctx._rereading = False


def _consistent(ctx: Context, body: Callable[[Context], int], retries: int, pe) -> int:
    real = ctx.out
    ctx.terminal = real
    for attempt in range(retries + 1):
        spool = _Spool() if retries else None
        if spool is not None:
            ctx.out = spool.text
        ctx.notes, ctx.corrupt = [], 0
        failure: Optional[PageExtError] = None
        try:
            status = body(ctx)
        except PageExtError as e:  # a check that failed, a table gone: perhaps only because it changed
            failure, status = e, EXIT_USAGE
        finally:
            ctx.out = real
        same = pe.unchanged()
        if same or attempt == retries:
            if same and failure is not None:
                raise failure
            if not same:
                # What was read mixes states: a failed check or a refusal may be the
                # change's doing.  The answer is partial, never a verdict.
                pe.missing.note(CHANGED)
                if failure is not None:
                    pe.missing.note(f"on the way: {failure}")
                status = EXIT_PARTIAL
            elif attempt:
                ctx.note(f"note: the target changed while it was read (memory hotplug?): read {attempt + 1} "
                         "times; this answer is from one state")
            if spool is not None:
                spool.copy_to(real)
            return status
        pe.reset()
    return status


class _Spool:
    """Output held back (in memory, then a temporary file) until it is known good."""

    def __init__(self) -> None:
        import io
        import tempfile
        self.raw = tempfile.SpooledTemporaryFile(max_size=64 << 20)
        self.text = io.TextIOWrapper(self.raw, encoding=getattr(sys.stdout, "encoding", None) or "utf-8",
                                     errors="surrogateescape", newline="", write_through=True)

    def copy_to(self, out: TextIO) -> None:
        self.text.flush()
        self.raw.seek(0)
        buf = getattr(out, "buffer", None)
        if buf is not None:
            out.flush()
            while chunk := self.raw.read(1 << 20):
                buf.write(chunk)
        else:
            data = self.raw.read()
            out.write(data.decode(self.text.encoding, "surrogateescape"))
        self.text.detach()
        self.raw.close()


_commands: Optional[dict[str, Command]] = None


def all_commands() -> dict[str, Command]:
    """name -> Command, in the order they are listed in --help."""
    global _commands
    if _commands is None:
        found: dict[str, Command] = {}
        from ..clients import registry
        mods = ["inspector.commands.report"]
        for spec in registry().values():
            if spec.decoder:
                mods.append(__package__ + "." + spec.decoder.partition(":")[0].rpartition(".")[2])
        mods += list(MODULES)
        for name in mods:
            try:
                module = importlib.import_module(name)
            except ModuleNotFoundError as e:
                if e.name != name:
                    raise
                continue
            for cmd in getattr(module, "COMMANDS", ()):
                found.setdefault(cmd.name, cmd)
        _commands = found
    return _commands


def missing_json(ctx: Context) -> dict:
    """The fixed "missing" key of every JSON document."""
    return ctx.missing.to_json()
