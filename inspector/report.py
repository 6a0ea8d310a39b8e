"""Report: the readable summary, the per-table list and the JSON document.

The last stage of the data flow.  It takes a Layout and its checks and
prints them; it never touches the kernel.  The JSON schema is the one other
tools parse (``target``, ``kernel``, ``page_ext``, ``tables``, ``checks``)
plus additive keys: ``nodes``, ``dependencies``, ``sections`` (every present
section or one with a page_ext pointer: flags, node, raw pointer), per table
``table_mem`` (direct|vmalloc|unknown|null) and ``table_pfn``, ``kernel.rules`` (the
version rules discovery detected) and ``missing`` (what could not be read).
Every number in it is an integer; the commands print it through
:func:`inspector.jsonout.dumps`, which writes addresses as hex strings.

Strings that come from the target (the release, symbol names) go through
:func:`~inspector.text.escape`, so a corrupt dump cannot put control
characters on a user's terminal.

The ``inspect`` and ``clients`` commands that print these are
:mod:`inspector.commands.report`.
"""

from __future__ import annotations

from typing import Any, Optional

from tabulate import tabulate

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
