"""``pageext-inspect simulate`` and ``pageext-inspect validate``.

Design: thin typer commands over :mod:`inspector.sim.scenarios` and
:mod:`inspector.sim.validate`; tables are printed with inspector.report so a
prediction looks exactly like a walk.  Bad input is one line on stderr and
exit 2 (cli.fail); ``validate`` exits 1 when prediction and kernel differ.
"""

from __future__ import annotations

import json
from typing import Optional

import typer


def format_event(ev: dict) -> str:
    kind = ev.get("event")
    if kind == "notifier":
        ret = "-" if ev.get("ret") is None else ev["ret"]
        return (f"notifier {ev['action']:<14} pfn {ev['start_pfn']:#x} +{ev['nr_pages']:#x} "
                f"nid {ev['nid']} ret {ret}")
    if kind == "init_section":
        return f"  init_section_page_ext(pfn {ev['pfn']:#x}, nid {ev['nid']}) = {ev['ret']}"
    if kind == "free":
        return f"  __free_page_ext(pfn {ev['pfn']:#x})"
    if kind == "invalidate":
        return f"  __invalidate_page_ext(pfn {ev['pfn']:#x})"
    if kind == "alloc_node":
        return f"alloc_node_page_ext(nid {ev['nid']}) {ev['nr_pages']} entries = {ev['ret']}"
    return json.dumps(ev)


def register(app: typer.Typer, names: set[str]) -> None:
    from ..cli import fail

    @app.command("simulate", help="Run the reference simulator of mm/page_ext.c on a recorded scenario "
                                  "(fixtures/sim/NAME.json or a path) and print the predicted layout.")
    def simulate_cmd(
        scenario: str = typer.Argument(..., help="scenario name (see fixtures/sim) or JSON path"),
        variant: Optional[str] = typer.Option(None, "--variant", help="kernel variant (default: the scenario's)"),
        record: bool = typer.Option(False, "--record", help="rewrite the scenario file with this run"),
        as_json: bool = typer.Option(False, "--json", help="print the run as JSON"),
    ) -> None:
        from ..report import sections_table
        from . import scenarios
        from .model import SimError
        from .variants import get

        try:
            doc = scenarios.load(scenario)
            if variant:
                get(variant)
            result = scenarios.run(doc, variant)
        except (ValueError, OSError, KeyError, TypeError) as e:
            raise fail(str(e) if not isinstance(e, KeyError) else f"scenario input lacks {e}")
        if record:
            path = scenarios.record(doc, result, variant)
            typer.echo(f"recorded {path}", err=True)
        if as_json:
            typer.echo(json.dumps(result.to_json(), indent=1))
            return
        lay = result.layout
        typer.echo(f"scenario      {doc.get('name') or scenario}: {doc.get('description', '')}")
        typer.echo(f"variant       {variant or doc['variant']} (release {lay.release}, {lay.memory_model})")
        typer.echo(f"entry size    {lay.entry_size} bytes")
        typer.echo(f"total_usage   {result.total_usage} bytes; tables now {lay.total_bytes} bytes "
                   f"in {len(lay.tables)} tables")
        typer.echo(f"dmesg         {result.dmesg or '(nothing printed: page_ext not allocated)'}"
                   + ("  -- then panic: Out of memory" if result.panicked else ""))
        if lay.clients:
            typer.echo("clients       " + ", ".join(
                f"{c.name} at {c.offset}+{c.size}{'' if c.active else ' (inactive)'}" for c in lay.clients))
        typer.echo("")
        if lay.tables:
            typer.echo(sections_table(lay))
            typer.echo("")
        typer.echo(f"events ({len(result.events)})")
        for ev in result.events:
            typer.echo("  " + format_event(ev))
        if not variant and "expected" in doc and doc["expected"] != result.to_json() and not record:
            typer.echo("\nnote: this run differs from the recording in the scenario file", err=True)

    names.add("simulate")

    from .validate import register_validate
    register_validate(app, names)
