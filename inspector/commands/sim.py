"""``pageext-inspect simulate`` and ``validate``: the simulator's commands.

``simulate`` is a command over :mod:`inspector.sim.scenarios`: run a recorded
scenario (or a JSON file) under its variant or another, and print the
predicted layout with the same tables as a walk (:mod:`inspector.report`) and
the event log in the shared event format (:mod:`inspector.events`).
``validate`` prints what :func:`inspector.sim.validate.validate_session`
finds when it compares a kernel's walk with the simulator's prediction.
"""

from __future__ import annotations


from ..jsonout import dumps
from .base import Command, Context, Opt, missing_json
from ..errors import UsageError
from ..events import read_trace
from ..sim.validate import ValidateError, validate_session
from ..versions import get


def run_simulate(ctx: Context) -> int:
    from ..sim import scenarios
    from ..sim.model import SimError

    a = ctx.args
    try:
        doc = scenarios.load(a.scenario)
        if a.variant:
            get(a.variant)
        if a.geometry:
            doc = scenarios.with_geometry(doc, a.geometry)
        result = scenarios.run(doc, a.variant)
    except SimError as e:
        raise UsageError(str(e)) from None
    except (ValueError, OSError, KeyError, TypeError) as e:
        raise UsageError(str(e) if not isinstance(e, KeyError) else f"scenario input lacks {e}") from None
    if a.record:
        try:
            path = scenarios.record(doc, result, a.record, a.variant)
        except (OSError, ValueError) as e:
            raise UsageError(f"cannot record to {a.record}: {getattr(e, 'strerror', None) or e}") from None
        ctx.note(f"recorded {path}")
    if a.as_json:
        ctx.echo(dumps(printed(result) | {"missing": missing_json(ctx)}))
        return 0
    _print_run(ctx, doc, result)
    if not a.variant and not a.geometry and "expected" in doc and doc["expected"] != result.to_json() and not a.record:
        ctx.note("note: this run differs from the recording in the scenario file")
    return 0


def printed(result) -> dict:
    """``simulate --json``: the run as recorded (:meth:`SimResult.to_json`,
    the recordings' format, unchanged) with the keys of the other commands for
    the same facts: a section's number is ``section`` and the raw pointer the
    kernel stores (mem_section.page_ext, node_page_ext) ``page_ext``, as in
    ``inspect``'s ``sections`` (issue 20)."""
    doc = result.to_json()
    lay = doc["layout"]
    lay["tables"] = [{k: v for k, v in t.items() if k != "stored"} | {"page_ext": t["stored"]} for t in lay["tables"]]
    lay["sections"] = [{"section": s["nr"], **{k: v for k, v in s.items() if k not in ("nr", "stored")},
                        "page_ext": s["stored"]} for s in lay["sections"]]
    return doc


def _print_run(ctx: Context, doc: dict, result) -> None:
    """A simulated run as text: the scenario, the layout's figures, its tables and its events."""
    from ..events import describe
    from ..report import sections_table
    a = ctx.args
    lay = result.layout
    ctx.echo(f"scenario      {doc.get('name') or a.scenario}: {doc.get('description', '')}")
    ctx.echo(f"variant       {a.variant or doc['variant']} (release {lay.release}, {lay.memory_model})")
    ctx.echo(f"geometry      {doc['input'].get('geometry') or 'as given'}: {lay.page_size}-byte pages"
             + (f", {lay.section_pages} pages a section" if lay.section_pages else ""))
    ctx.echo(f"entry size    {lay.entry_size} bytes")
    ctx.echo(f"total_usage   {result.total_usage} bytes; tables now {lay.total_bytes} bytes "
             f"in {len(lay.tables)} tables")
    ctx.echo(f"dmesg         {result.dmesg or '(nothing printed: page_ext not allocated)'}"
             + ("  -- then panic: Out of memory" if result.panicked else ""))
    if lay.clients:
        ctx.echo("clients       " + ", ".join(
            f"{c.name} at {c.offset}+{c.size}{'' if c.active else ' (inactive)'}" for c in lay.clients))
    ctx.echo("")
    if lay.tables:
        ctx.echo(sections_table(lay))
        ctx.echo("")
    ctx.echo(f"events ({len(result.events)})")
    for ev in result.events:
        ctx.echo("  " + describe(ev))


# -- validate (the comparison is inspector.sim.validate) ----------------------------------------------

def prepare_validate(args) -> None:
    from ..events import TraceFileError
    args.recorded = (None, None)
    if args.variant:
        try:
            get(args.variant)
        except ValueError as e:
            raise ValidateError(str(e)) from None
    if args.trace:
        try:
            args.recorded = read_trace(args.trace)
        except TraceFileError as e:
            raise ValidateError(str(e)) from None


def run_validate(ctx: Context) -> int:
    from ..text import escape
    a = ctx.args
    header, events = a.recorded
    diffs, notes, summary = validate_session(ctx.session, header, events, a.variant, a.trace or "")
    # The prediction is of the layout; the tables themselves must also be what
    # the kernel relies on, and readable: a failed check is a difference, an
    # unreadable page makes the answer partial (recorded in the session's missing).
    from ..model import FAIL
    diffs += [f"check {c.name} failed: {c.detail}" for c in ctx.session.checks if c.status == FAIL]
    ctx.echo(escape(summary))
    for n in notes:
        ctx.echo(f"note: {escape(n)}")
    if diffs:
        ctx.echo(f"{len(diffs)} difference(s):")
        for d in diffs:
            ctx.echo(f"  {escape(d)}")
        return 1
    if ctx.session.missing:
        ctx.echo("agrees where the target could be read: the layout is what the simulator predicts, but part of "
                 "the tables is missing from the target (see below)")
        return 0
    ctx.echo("agrees: the kernel's page_ext is what the simulator predicts")
    return 0


COMMANDS = [
    Command("simulate", "Run the reference simulator of mm/page_ext.c on a recorded scenario and print the "
            "predicted layout.", run_simulate, (
                Opt(("scenario",), "scenario", "scenario name (see inspector/sim/recorded) or a JSON path",
                    positional=True, required=True, metavar="SCENARIO"),
                Opt(("--variant",), "variant", "kernel variant (default: the scenario's)", metavar="NAME"),
                Opt(("--geometry",), "geometry", "page and section size: x86_64, arm64-4k, arm64-64k (default: "
                    "the scenario's; its section numbers stay, so memory scales with the section size)",
                    metavar="NAME"),
                Opt(("--record",), "record", "write the scenario with this run as its recording to FILE",
                    metavar="FILE"),
                Opt(("--json",), "as_json", "print the run as JSON", bool, False),
            ), description="""\b
Examples:
  pageext-inspect simulate hot-add-online                  # a recorded scenario
  pageext-inspect simulate online-fail-v6.6 --variant v3.19 # the same run under older rules
  pageext-inspect simulate boot-2-nodes --record my.json    # re-record, to a file you name
  pageext-inspect simulate boot-arm64-64k                   # the arm64 test guest, 64K pages""",
            target=False),
    Command("validate", "Compare a kernel's page_ext with the reference simulator's prediction for its own "
            "memory map; exit 1 on any difference.", run_validate, (
                Opt(("--trace",), "trace", "replay this tracer record (JSON Lines)", metavar="FILE"),
                Opt(("--variant",), "variant", "force a variant (default: from the release)", metavar="NAME"),
            ), description="""\b
Examples:
  pageext-inspect validate --qemu SOCKET -s vmlinux
  pageext-inspect validate --qemu SOCKET -s vmlinux --trace trace.jsonl   # replay a bcc recording""",
            drgn="pageext_validate", prepare=prepare_validate),
]
