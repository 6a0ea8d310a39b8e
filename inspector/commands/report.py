"""``inspect`` and ``clients``: a session's layout, checks and clients, printed.

Thin over :mod:`inspector.report`, which renders the summary, the table list
and the JSON document.
"""

from __future__ import annotations

import json

from ..clients import registry
from ..model import FAIL
from ..jsonout import dumps
from ..report import empty_message, sections_table, summary, to_json
from ..text import escape
from .base import JSON, RETRIES, Command, Context, Opt, consistent, missing_json


def run_inspect(ctx: Context) -> int:
    return consistent(ctx, _inspect, ctx.args.retries)


def _inspect(ctx: Context) -> int:
    pe = ctx.session
    target = pe.target.to_json() if pe.target is not None else None
    layout, checks = pe.layout, pe.checks
    if ctx.args.as_json:
        ctx.echo(dumps(to_json(target, layout, checks, missing_json(ctx), pe.crash)))
    else:
        ctx.echo(summary(target, layout, checks, pe.crash))
        if not layout.allocated:
            ctx.echo("")
            ctx.echo(empty_message(layout))
        elif ctx.args.sections:
            ctx.echo("")
            ctx.echo(sections_table(layout))
    return 1 if any(c.status == FAIL for c in checks) else 0


def run_clients(ctx: Context) -> int:
    layout = ctx.session.layout
    known = registry()
    # "active" is inspect's key for the same fact (page_ext.clients[].active);
    # "state" stays, the same fact in words.
    rows = [{"name": c.name, "offset": c.offset, "size": c.size, "active": bool(c.active),
             "state": "active" if c.active else "compiled in, inactive in this boot",
             "how_to_enable": c.how_to_enable,
             "decoded_by": list(known[c.name].commands) if c.name in known else []} for c in layout.clients]
    if ctx.args.as_json:
        ctx.echo(dumps({"clients": rows, "allocated": layout.allocated, "missing": missing_json(ctx)}))
        return 0
    if not rows:
        ctx.echo("no page_ext client is built into this kernel (e.g. CONFIG_PAGE_OWNER, "
                 "CONFIG_PAGE_TABLE_CHECK, CONFIG_MEM_ALLOC_PROFILING): page_ext stays empty")
        return 0
    for r in rows:
        hint = "" if r["state"] == "active" else f" ({r['how_to_enable']})"
        cmds = f"  [pageext-inspect {', '.join(r['decoded_by'])}]" if r["decoded_by"] else ""
        ctx.echo(f"{escape(r['name']):<20} {r['state']}{hint}{cmds}")
    if not layout.allocated:
        ctx.echo("page_ext is empty in this boot: nothing was allocated")
    return 0


COMMANDS = [
    Command("inspect", "Locate and verify every page_ext table of a kernel (the default command).", run_inspect, (
        Opt(("--sections",), "sections", "list every section with its flags, page_ext pointer and table",
            bool, False),
        JSON,
        RETRIES,
    ), description="""The word "inspect" may be left out: pageext-inspect VMCORE is the same command.

\b
Examples:
  pageext-inspect                               # the running kernel (/proc/kcore, needs root)
  pageext-inspect /proc/kcore --sections        # ... with the per-table list
  pageext-inspect vmcore -s vmlinux             # a crash dump (ELF or kdump-compressed)
  pageext-inspect vmcore.kdump -s vmlinux --arch x86_64
  pageext-inspect --qemu /tmp/vm/qmp.sock -s vmlinux --json   # a live QEMU guest over QMP""", drgn="pageext"),
    Command("clients", "Which page_ext clients this kernel has, and whether each is active.", run_clients,
            (JSON,), description="""\b
Examples:
  pageext-inspect clients vmcore -s vmlinux
  pageext-inspect clients --qemu SOCKET -s vmlinux --json""", drgn="pageext_clients"),
]
