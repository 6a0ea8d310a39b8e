"""Verify: check a Layout against what mm/page_ext.c itself relies on.

Each check is named, returns ok, fail or skip with one detail line, and
reads only the Layout plus, where memory must be touched, a small
:class:`Memory` probe.  The same checks therefore run on a walked kernel,
a synthetic kernel, or (with ``memory=None``) a simulated layout.

The checks and the kernel code they stand for (v6.1 names):

* ``bias``: init_section_page_ext() stores ``base - entry_size * pfn``;
  unbiased, every base must be page aligned (alloc_pages_exact_nid() and
  vzalloc_node() both return whole pages) and point at kernel memory.
* ``extent``: each table is PAGES_PER_SECTION entries (FLATMEM: the node
  span plus MAX_ORDER slack), and its last page is really allocated.
* ``no-overlap``: tables do not overlap one another, nor the memmap.
* ``coverage``: every online section has a table and no offline or absent
  one does, except while PAGE_EXT_INVALID marks a hot-remove (v6.1+) --
  which is only ever on a section that is offline but still present.
* ``clients``: each active client's data fits in the entry, without overlap.
* ``readable``: the first and last entry of every table can be read.
* ``total-usage``: the tables add up to the kernel's ``total_usage``.
  total_usage only ever grows (__free_page_ext() never subtracts), so a
  shortfall of whole tables is explained by sections removed since boot.
* ``hot-remove-deps``: informational; a table living in another memory
  block pins that block until this section is offlined first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

from .model import FAIL, INVALID, OFFLINE, OK, SKIP, Check, Layout, Table


@dataclass
class Memory:
    """What the verifier may ask of a real (or synthetic) kernel's memory."""

    readable: Callable[[int, int], bool]  # (address, size) -> can it be read?
    memmap: list[tuple[int, int]]  # physical ranges backing struct pages
    page_allocated: Callable[[int], Optional[bool]]  # pfn -> refcount > 0?


def _fmt_list(items: list, limit: int = 6) -> str:
    shown = ", ".join(str(i) for i in items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def _where(t: Table) -> str:
    return f"section {t.section}" if t.section is not None else f"node {t.node}"


def check_bias(layout: Layout, memory: Optional[Memory]) -> Check:
    if not layout.tables:
        return Check("bias", SKIP, "no tables")
    bad = [f"{_where(t)} base {t.address:#x}" for t in layout.tables if t.address % layout.page_size]
    if bad:
        return Check("bias", FAIL, f"unbiased base not page aligned: {_fmt_list(bad)}")
    lost = [_where(t) for t in layout.tables if memory is not None and t.table_mem is None]
    if lost:
        return Check("bias", FAIL, f"unbiased base is neither direct-mapped RAM nor vmalloc: {_fmt_list(lost)}")
    return Check("bias", OK, f"{len(layout.tables)} bases page-aligned"
                 + ("" if memory is None else ", each in the direct map or vmalloc"))


def expected_table_pages(layout: Layout, t: Table) -> int:
    if layout.section_pages is not None:
        return layout.section_pages
    return t.nr_pages  # FLATMEM: derived from the node span by the walker


def check_extent(layout: Layout, memory: Optional[Memory]) -> Check:
    if not layout.tables:
        return Check("extent", SKIP, "no tables")
    bad = []
    for t in layout.tables:
        want = expected_table_pages(layout, t) * layout.entry_size
        if t.nr_pages * layout.entry_size != t.bytes or t.bytes != want:
            bad.append(f"{_where(t)}: {t.bytes} bytes, expected {want}")
    if bad:
        return Check("extent", FAIL, _fmt_list(bad))
    unallocated = []
    if memory is not None:
        for t in layout.tables:
            if t.table_mem != "direct" or t.table_pfn is None:
                continue
            last = t.table_pfn + (t.bytes - 1) // layout.page_size
            if memory.page_allocated(last) is False:
                unallocated.append(f"{_where(t)} (pfn {last:#x})")
    if unallocated:
        return Check("extent", FAIL, "table runs into free pages: " + _fmt_list(unallocated))
    sizes = sorted({t.bytes for t in layout.tables})
    return Check("extent", OK, f"{len(layout.tables)} tables of {_fmt_list(sizes)} bytes"
                 + ("" if memory is None else ", last pages allocated"))


def check_overlap(layout: Layout, memory: Optional[Memory]) -> Check:
    if not layout.tables:
        return Check("no-overlap", SKIP, "no tables")
    clashes = []
    ordered = sorted(layout.tables, key=lambda t: t.address)
    for a, b in zip(ordered, ordered[1:]):
        if a.address + a.bytes > b.address:
            clashes.append(f"{_where(a)} and {_where(b)}")
    if memory is not None and memory.memmap:
        for t in layout.tables:
            if t.table_pfn is None:
                continue
            start = t.table_pfn * layout.page_size
            end = start + t.bytes
            for m0, m1 in memory.memmap:
                if start < m1 and m0 < end:
                    clashes.append(f"{_where(t)} and the memmap at {m0:#x}")
                    break
    if clashes:
        return Check("no-overlap", FAIL, "overlapping: " + _fmt_list(clashes))
    what = "neither one another" + (" nor the memmap" if memory is not None and memory.memmap else "")
    return Check("no-overlap", OK, f"{len(layout.tables)} tables overlap {what}")


def check_coverage(layout: Layout, memory: Optional[Memory]) -> Check:
    if layout.section_pages is None:
        missing = [n for n in layout.nodes if layout.allocated and n not in {t.node for t in layout.tables}]
        return Check("coverage", OK if not missing else FAIL,
                     "FLATMEM: one table per node" if not missing else f"nodes without a table: {missing}")
    if not layout.allocated:
        stray = [s.nr for s in layout.sections if s.stored]
        if stray:
            return Check("coverage", FAIL, f"page_ext is not allocated, yet sections have tables: {_fmt_list(stray)}")
        return Check("coverage", SKIP, "page_ext not allocated in this boot")
    tables = {t.section: t for t in layout.tables}
    missing = [s.nr for s in layout.sections if s.present and s.online and s.nr not in tables]
    stray = [t.section for t in layout.tables if t.state == OFFLINE]
    # PAGE_EXT_INVALID is legitimate only inside offline_page_ext() (b1d5488a252d,
    # v6.1), between __invalidate_page_ext() and __free_page_ext(): the section is
    # offline by then (offline_mem_sections() runs before MEM_OFFLINE) and still
    # present (sparse_remove_section() comes after offline_pages() returns).
    sections = {s.nr: s for s in layout.sections}
    stray += [t.section for t in layout.tables if t.state == INVALID and t.section in sections
              and (sections[t.section].online or not sections[t.section].present)]
    if missing or stray:
        parts = []
        if missing:
            parts.append(f"online sections without a table: {_fmt_list(missing)}")
        if stray:
            parts.append(f"offline or absent sections with a table (or PAGE_EXT_INVALID outside a "
                         f"hot-remove): {_fmt_list(stray)}")
        return Check("coverage", FAIL, "; ".join(parts))
    online = sum(1 for s in layout.sections if s.present and s.online)
    invalid = [t.section for t in layout.tables if t.state == INVALID]
    detail = f"{online} online sections, {online} tables"
    if invalid:
        detail += f"; PAGE_EXT_INVALID set (hot-remove in progress) on {_fmt_list(invalid)}"
    return Check("coverage", OK, detail)


def check_clients(layout: Layout, memory: Optional[Memory]) -> Check:
    active = sorted((c for c in layout.clients if c.active), key=lambda c: c.offset)
    if not active:
        return Check("clients", SKIP, "no active client")
    bad = [f"{c.name} {c.offset}+{c.size} > {layout.entry_size}" for c in active
           if c.offset + c.size > layout.entry_size]
    bad += [f"{a.name} and {b.name} overlap" for a, b in zip(active, active[1:])
            if a.offset + a.size > b.offset]
    if bad:
        return Check("clients", FAIL, "; ".join(bad))
    return Check("clients", OK, ", ".join(f"{c.name} at {c.offset}+{c.size}" for c in active)
                 + f" within {layout.entry_size}-byte entries")


def check_readable(layout: Layout, memory: Optional[Memory]) -> Check:
    if memory is None:
        return Check("readable", SKIP, "no memory to read (simulated layout)")
    if not layout.tables:
        return Check("readable", SKIP, "no tables")
    bad = []
    for t in layout.tables:
        last = t.address + t.bytes - layout.entry_size
        for what, addr in (("first", t.address), ("last", last)):
            if not memory.readable(addr, max(layout.entry_size, 1)):
                bad.append(f"{_where(t)} {what} entry at {addr:#x}")
    if bad:
        return Check("readable", FAIL, "unreadable: " + _fmt_list(bad))
    return Check("readable", OK, f"first and last entry of {len(layout.tables)} tables read")


def check_total(layout: Layout, memory: Optional[Memory]) -> Check:
    usage = layout.kernel_total_usage
    if usage is None:
        return Check("total-usage", SKIP, "the kernel's total_usage is not in the debug info")
    total = layout.total_bytes
    if total == usage:
        return Check("total-usage", OK, f"tables sum to {total} bytes = total_usage")
    per_table = (layout.section_pages or 0) * layout.entry_size
    if layout.section_pages and total < usage and per_table and (usage - total) % per_table == 0:
        n = (usage - total) // per_table
        return Check("total-usage", OK,
                     f"tables sum to {total} bytes; total_usage {usage} also counts {n} table(s) "
                     "freed by hot-remove since boot (total_usage never decreases)")
    return Check("total-usage", FAIL, f"tables sum to {total} bytes but total_usage is {usage}")


def dependencies(layout: Layout) -> list[dict]:
    """Sections whose table lives in another memory block (hot-remove order)."""
    blocks = {s.nr: s.block for s in layout.sections}
    early = {s.nr for s in layout.sections if s.early}
    out = []
    for t in layout.tables:
        own = blocks.get(t.section)
        if t.table_block is None or own is None or t.table_block == own or t.table_pfn is None:
            continue
        # Boot memory (early sections) is not hot-removed; only a table placed
        # in hot-added memory pins a block that a user may try to offline.
        if t.table_pfn // layout.section_pages not in early:
            out.append({"section": t.section, "block": own, "table_block": t.table_block})
    return out


def check_dependencies(layout: Layout, memory: Optional[Memory]) -> Check:
    if layout.section_pages is None or memory is None:
        return Check("hot-remove-deps", SKIP, "not applicable")
    deps = dependencies(layout)
    if not deps:
        return Check("hot-remove-deps", OK, "no table lives in another hot-added memory block")
    return Check("hot-remove-deps", OK, "informational: " + _fmt_list(
        [f"section {d['section']} (block {d['block']}) has its table in block {d['table_block']}, "
         f"which cannot be offlined before block {d['block']}" for d in deps], 3))


CHECKS = [check_bias, check_extent, check_overlap, check_coverage, check_clients,
          check_readable, check_total, check_dependencies]


def verify(layout: Layout, memory: Optional[Memory] = None) -> list[Check]:
    """Run every check on ``layout``; ``memory`` None skips the memory checks."""
    return [check(layout, memory) for check in CHECKS]
