"""Command line: ``pageext-inspect [TARGET]`` and its subcommands.

The default command runs the whole pipeline -- open the target, discover
the layout, walk, verify, report -- and exits 0 when every check passes,
1 when one fails and 2 on bad input (one line on stderr, no traceback).
Subcommands (``simulate``, ``validate``, ...) are added beside it; any first
argument that is not a subcommand name is taken as the target.
"""

from __future__ import annotations

import os
import sys
from typing import Optional

import typer

from .model import FAIL

EXAMPLES = """
The word "inspect" may be left out: pageext-inspect VMCORE is the same command.

\b
Examples:
  pageext-inspect                               # the running kernel (/proc/kcore, needs root)
  pageext-inspect /proc/kcore --sections        # ... with the per-table list
  pageext-inspect vmcore -s vmlinux             # a crash dump (ELF or kdump-compressed)
  pageext-inspect vmcore.kdump -s vmlinux --arch x86_64
  pageext-inspect --qemu /tmp/vm/qmp.sock -s vmlinux --json   # a live QEMU guest over QMP

\b
Exit status:
  0  every check passed (or page_ext is empty)
  1  a check failed
  2  bad input (missing or corrupt core, wrong vmlinux, no page_ext)
"""

app = typer.Typer(add_completion=False, no_args_is_help=False, rich_markup_mode=None,
                  context_settings={"help_option_names": ["-h", "--help"]})

SUBCOMMANDS: set[str] = set()

# The target options every command shares (one definition, reused as defaults).
TARGET = typer.Argument(None, help="vmcore or /proc/kcore (default: the running kernel)")
VMLINUX = typer.Option(None, "-s", "--vmlinux", help="vmlinux with debug info")
QEMU = typer.Option(None, "--qemu", help="QMP socket of a live QEMU guest")
ARCH = typer.Option(None, "--arch", help="architecture of a core that lacks one (x86_64)")


@app.callback()
def _group() -> None:
    """pageext-inspect: see and check the kernel's page_ext memory."""


def fail(message: str, code: int = 2) -> "typer.Exit":
    typer.echo(f"pageext-inspect: error: {message}", err=True)
    return typer.Exit(code)


def open_and_walk(target: Optional[str], qemu: Optional[str], vmlinux: Optional[str],
                  arch: Optional[str], progress: bool):
    """Target -> geometry -> layout; raises TargetError on bad input."""
    from .discover import discover
    from .target import open_target
    from .walk import walk

    tgt = open_target(target, qemu, vmlinux, arch)
    geo = discover(tgt.prog)
    if progress and sys.stderr.isatty():
        from rich.progress import Progress
        with Progress(transient=True) as bar:
            task = bar.add_task("walking mem_section", total=None)
            layout = walk(tgt.prog, geo, lambda done, total: bar.update(task, completed=done, total=total))
    else:
        layout = walk(tgt.prog, geo)
    return tgt, geo, layout


@app.command("inspect", help="Locate and verify every page_ext table of a kernel.\n" + EXAMPLES)
def inspect_cmd(
    target: Optional[str] = TARGET,
    vmlinux: Optional[str] = VMLINUX,
    qemu: Optional[str] = QEMU,
    arch: Optional[str] = ARCH,
    sections: bool = typer.Option(False, "--sections", help="list every section with its flags, page_ext pointer and table"),
    as_json: bool = typer.Option(False, "--json", help="print the JSON document"),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="progress bar on long walks"),
) -> None:
    from .report import dumps, empty_message, sections_table, summary, to_json
    from .target import TargetError
    from .verify import verify
    from .walk import memory_probe

    try:
        tgt, geo, layout = open_and_walk(target, qemu, vmlinux, arch, progress)
        checks = verify(layout, memory_probe(tgt.prog, geo, layout))
    except TargetError as e:
        raise fail(str(e))
    if as_json:
        typer.echo(dumps(to_json(tgt.to_json(), layout, checks)))
    elif not layout.allocated:
        typer.echo(summary(tgt.to_json(), layout, checks, geo.entry_size_source))
        typer.echo("")
        typer.echo(empty_message(layout))
    else:
        typer.echo(summary(tgt.to_json(), layout, checks, geo.entry_size_source))
        if sections:
            typer.echo("")
            typer.echo(sections_table(layout))
    raise typer.Exit(1 if any(c.status == FAIL for c in checks) else 0)


# Subcommands live beside the stage they drive.  Each module below exposes
# ``register(app, names)``, which adds its typer commands to ``app`` and their
# names to ``names``; a module not written yet is simply not offered.
SUBCOMMAND_MODULES = ["inspector.sim.cli", "inspector.trace", "inspector.clients.cli"]


def _register_subcommands() -> None:
    import importlib
    import importlib.util

    for name in SUBCOMMAND_MODULES:
        try:
            found = importlib.util.find_spec(name) is not None
        except ModuleNotFoundError:
            found = False
        if found:
            importlib.import_module(name).register(app, SUBCOMMANDS)


def main(argv: Optional[list[str]] = None) -> None:
    _register_subcommands()
    argv = list(sys.argv[1:] if argv is None else argv)
    # The default command takes a path; anything not a subcommand is a target.
    if not argv or argv[0] not in SUBCOMMANDS | {"inspect"}:
        argv.insert(0, "inspect")
    try:
        app(argv, prog_name="pageext-inspect", standalone_mode=True)
    except SystemExit:
        raise
    except KeyboardInterrupt:
        typer.echo("pageext-inspect: interrupted", err=True)
        sys.exit(130)
    except Exception as e:  # never a traceback for the user; PAGEEXT_DEBUG=1 shows it
        if os.environ.get("PAGEEXT_DEBUG"):
            raise
        fault = type(e).__name__ == "FaultError" and type(e).__module__.startswith("_drgn")
        what = "cannot read the target" if fault else "internal error"
        typer.echo(f"pageext-inspect: error: {what}: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
                   " (PAGEEXT_DEBUG=1 for details)", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
