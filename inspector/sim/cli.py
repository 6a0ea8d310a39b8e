"""``pageext-inspect simulate`` (and, from :mod:`.validate`, ``validate``).

A command over :mod:`inspector.sim.scenarios`: run a recorded scenario
(or a JSON file) under its variant or another, and print the predicted
layout with the same tables as a walk (:mod:`inspector.report`) and the
event log in the shared event format (:mod:`inspector.events`).
"""

from __future__ import annotations

import json

from ..commands import Command, Context, Opt
from ..errors import UsageError
from .validate import COMMANDS as VALIDATE_COMMANDS


def run_simulate(ctx: Context) -> int:
    from ..events import describe
    from ..report import sections_table
    from . import scenarios
    from .model import SimError
    from ..versions import get

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
        ctx.echo(json.dumps(result.to_json(), indent=1))
        return 0
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
    if not a.variant and not a.geometry and "expected" in doc and doc["expected"] != result.to_json() and not a.record:
        ctx.note("note: this run differs from the recording in the scenario file")
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
    *VALIDATE_COMMANDS,
]
