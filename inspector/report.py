"""Report: the readable summary, the per-table list and the JSON document.

The last stage of the data flow.  It takes a Layout and its checks and
prints them; it never touches the kernel.  The JSON schema is the one other
tools parse (``target``, ``kernel``, ``page_ext``, ``tables``, ``checks``)
plus additive keys: ``nodes``, ``dependencies``, ``sections`` (every present
section or one with a page_ext pointer: flags, node, raw pointer), per table
``table_mem`` (direct|vmalloc|unknown|null) and ``table_pfn``, ``kernel.rules`` (the
version rules discovery detected) and ``missing`` (what could not be read).
Every number in it is a JSON integer, addresses included.

Strings that come from the target (the release, symbol names) go through
:func:`~inspector.text.escape`, so a corrupt dump cannot put control
characters on a user's terminal.

The ``inspect`` and ``clients`` commands live here: they print a session's
layout and checks.
"""

from __future__ import annotations

import json
from typing import Any, Optional

from tabulate import tabulate

from .commands import JSON, RETRIES, Command, Context, Opt, consistent, missing_json
from .model import FAIL, UNKNOWN, Check, Layout
from .text import escape
from .verify import dependencies


def to_json(target: Optional[dict], layout: Layout, checks: list[Check],
            missing: Optional[dict] = None, crash: Optional[dict] = None) -> dict[str, Any]:
    per_node_bytes = layout.bytes_per_node()
    per_node_tables = layout.tables_per_node()
    return {
        "target": target,
        "kernel": layout.kernel_json() | {"crash": crash},
        "page_ext": layout.page_ext_json(),
        "tables": [t.to_json() for t in layout.tables],
        "checks": [c.to_json() for c in checks],
        "nodes": [{"node": n, "tables": per_node_tables.get(n, 0), "bytes": per_node_bytes.get(n, 0)}
                  for n in sorted(per_node_bytes)],
        "dependencies": dependencies(layout),
        "sections": [s.to_json() for s in layout.sections],
        "missing": missing if missing is not None else
        {"page_ext": [], "memmap": [], "stack_handles": [], "records_hidden": 0, "other": []},
    }


def dumps(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2, sort_keys=False)


def _yes(b: bool) -> str:
    return "yes" if b else "no"


def summary(target: Optional[dict], layout: Layout, checks: list[Check], crash: Optional[dict] = None) -> str:
    lines = []
    if target:
        lines.append(f"target        {target['kind']} {escape(target['path'])}")
    if crash:
        lines.append(f"crash         {escape(crash['message'])}")
        lines += [f"  log | {escape(line)}" for line in crash["log"][:-1]]
    geom = layout.memory_model
    if layout.sparsemem_extreme is not None:
        geom += " (extreme)" if layout.sparsemem_extreme else " (static)"
    geom += f", {layout.page_size}-byte pages"
    if layout.section_pages:
        geom += f", {layout.section_pages} pages per section"
    lines.append(f"kernel        {escape(layout.release)} ({geom})")
    rule = f" ({layout.entry_size_source})" if layout.entry_size_source else ""
    lines.append(f"entry size    {layout.entry_size} bytes{rule}")
    usage = "unknown (optimized out)" if layout.total_usage is None else f"{layout.total_usage} bytes"
    lines.append(f"page_ext      {layout.total_bytes} bytes in {len(layout.tables)} tables; "
                 f"kernel total_usage {usage}")
    lines.append("")
    if layout.clients:
        rows = [[escape(c.name), c.offset, c.size, _yes(c.active)] for c in layout.clients]
        lines.append(tabulate(rows, headers=["client", "offset", "size", "active"], tablefmt="simple"))
        lines.append("")
    nodes = layout.bytes_per_node()
    tables = layout.tables_per_node()
    if nodes:
        rows = [[n, tables.get(n, 0), nodes[n]] for n in sorted(nodes)]
        lines.append(tabulate(rows, headers=["node", "tables", "bytes"], tablefmt="simple"))
        lines.append("")
    deps = dependencies(layout)
    if deps:
        lines.append("hot-remove order: offline these sections' blocks before the block holding their table")
        for d in deps:
            lines.append(f"  section {d['section']} (block {d['block']}): table in block {d['table_block']}")
        lines.append("")
    lines.append(checks_text(checks))
    return "\n".join(lines)


def checks_text(checks: list[Check]) -> str:
    rows = [[c.status.upper() if c.status in (FAIL, UNKNOWN) else c.status, c.name, c.detail] for c in checks]
    return tabulate(rows, headers=["status", "check", "detail"], tablefmt="simple")


def _table_memory(t) -> str:
    if t.table_mem == "direct" and t.table_pfn is not None:
        return f"pfn {t.table_pfn:#x}" + (f" block {t.table_block}" if t.table_block is not None else "")
    return t.table_mem or "?"


def sections_table(layout: Layout) -> str:
    """Every section (SPARSEMEM) or node (FLATMEM) with its table, if any."""
    headers = ["start_pfn", "end_pfn", "table", "bytes", "state", "table memory"]
    if not layout.sections:  # FLATMEM: one table per node
        rows = [[t.node, f"{t.start_pfn:#x}", f"{t.start_pfn + t.nr_pages:#x}", f"{t.address:#x}",
                 t.bytes, t.state, _table_memory(t)] for t in layout.tables]
        return tabulate(rows, headers=["node"] + headers, tablefmt="simple", disable_numparse=True)
    tables = {t.section: t for t in layout.tables}
    rows = []
    for s in layout.sections:
        flags = "".join(c if on else "-" for c, on in (("P", s.present), ("O", s.online), ("E", s.early)))
        start = s.nr * layout.section_pages
        t = tables.get(s.nr)
        cells = [f"{start:#x}", f"{start + layout.section_pages:#x}"]
        cells += [f"{t.address:#x}", t.bytes, t.state, _table_memory(t)] if t else ["-", 0, "none", "-"]
        rows.append([s.nr, "-" if s.node is None else s.node, flags, f"{s.stored:#x}"] + cells)
    return tabulate(rows, headers=["section", "node", "flags", "page_ext"] + headers, tablefmt="simple",
                    disable_numparse=True) + "\nflags: P present, O online, E early (boot memory)"


def empty_message(layout: Layout) -> str:
    """page_ext compiled in but nothing allocated: say who could have used it."""
    if layout.clients:
        names = "; ".join(f"{escape(c.name)} ({c.how_to_enable or 'see its documentation'})" for c in layout.clients)
        hint = f"clients built into this kernel: {names}"
    else:
        hint = "no client is built into this kernel (e.g. CONFIG_PAGE_OWNER, CONFIG_PAGE_TABLE_CHECK)"
    return ("page_ext is compiled in (CONFIG_PAGE_EXTENSION=y) but empty: no client needed it in this boot, "
            f"so nothing was allocated. {hint}")


# -- commands ------------------------------------------------------------------------------------

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
    from .clients import registry
    layout = ctx.session.layout
    known = registry()
    rows = [{"name": c.name, "offset": c.offset, "size": c.size,
             "state": "active" if c.active else "compiled in, inactive in this boot",
             "how_to_enable": c.how_to_enable,
             "decoded_by": list(known[c.name].commands) if c.name in known else []} for c in layout.clients]
    if ctx.args.as_json:
        ctx.echo(json.dumps({"clients": rows, "allocated": layout.allocated}, indent=1))
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
