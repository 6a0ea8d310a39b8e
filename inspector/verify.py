"""Verify: check a Layout against what mm/page_ext.c itself relies on.

Each check is named and returns ok, fail, skip (with the reason) or unknown
(the data it needs could not be read: never counted as a pass), with one
detail line.  It reads only the Layout plus, where memory must be touched,
a :class:`Memory` probe, so the same checks run on a walked kernel, a
synthetic kernel, or (with ``memory=None``) a simulated layout.

The checks and the kernel code they stand for (v6.1 names):

* ``bias``: init_section_page_ext() stores ``base - entry_size * pfn``;
  unbiased, every base must be page aligned (alloc_pages_exact_nid() and
  vzalloc_node() both return whole pages) and point at kernel memory.
* ``extent``: each table is PAGES_PER_SECTION entries (FLATMEM: the node
  span plus MAX_ORDER slack, within max_pfn), and its last page is really
  allocated.
* ``no-overlap``: tables do not overlap one another, nor the memmap.
* ``coverage``: every online section has a table and no offline or absent
  one does, except while PAGE_EXT_INVALID marks a hot-remove (v6.1+) --
  which is only ever on a section that is offline but still present -- and
  while memory hotplug holds mem_hotplug_lock for writing, when a present
  section may have its table but not yet (or no longer) its online bit.
* ``clients``: each active client's data fits in the entry, without overlap.
* ``readable``: every page of every table is in the target (sampled in
  bulk: the core's own list of pages where it has one, else one read per
  table, bisected only where it fails).
* ``total-usage``: the tables add up to the kernel's ``total_usage``.
  total_usage only ever grows (nothing subtracts from it in the seed patch
  nor in the 5.10, 6.1, 6.12, 7.2 and 7.3 sources), so a shortfall of whole tables is explained by
  sections hot-removed since boot, any number of times each; a shortfall
  that is no whole number of tables, or an excess, fails.
* ``hot-remove-deps``: informational; a table living in another memory
  block pins that block until this section is offlined first.

:func:`memory_probe` builds the Memory of a real (or synthetic) kernel.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable, Optional, Union

import drgn

from .model import FAIL, INVALID, OFFLINE, OK, ONLINE, SKIP, UNKNOWN, Check, Layout, PfnRanges, Table
from .reader import present, read_or_holes, unknown_items
from .walk import GIVE_UP_CHUNKS, readable_end

# The checks a client decoder depends on: without them its entries are garbage.
DECODE_CHECKS = ("bias", "extent", "clients")


@dataclass
class Memory:
    """What the verifier may ask of a real (or synthetic) kernel's memory."""

    # pfn -> is the page allocated (refcount > 0)?  None: its struct page is unreadable.
    page_allocated: Callable[[int], Optional[bool]]
    # Physical ranges backing struct pages, or a function computing them
    # (walking the vmemmap page tables costs; only no-overlap needs it).
    memmap_source: Union[list[tuple[int, int]], Callable[[], list[tuple[int, int]]]]
    # The pfns of a table whose entries cannot be read.
    unreadable: Callable[[Table], PfnRanges]
    # Sections memory hotplug can add at once (non-boot sections up to
    # max_possible_pfn), for the total-usage detail; None: unknown.
    hotplug_capacity: Optional[int] = None

    @functools.cached_property
    def memmap(self) -> list[tuple[int, int]]:
        src = self.memmap_source
        return src() if callable(src) else src


def _fmt_list(items: list, limit: int = 6) -> str:
    shown = ", ".join(str(i) for i in items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def _where(t: Table) -> str:
    return f"section {t.section}" if t.section is not None else f"node {t.node}"


def _keys(tables: list[Table]) -> tuple:
    return tuple(t.key for t in tables)


def check_bias(layout: Layout, memory: Optional[Memory]) -> Check:
    if not layout.tables:
        return Check("bias", SKIP, "no tables")
    bad = [t for t in layout.tables if t.address % layout.page_size]
    if bad:
        return Check("bias", FAIL, "unbiased base not page aligned: "
                     + _fmt_list([f"{_where(t)} base {t.address:#x}" for t in bad]), _keys(bad))
    lost = [t for t in layout.tables if memory is not None and t.table_mem is None]
    if lost:
        return Check("bias", FAIL, "unbiased base is neither direct-mapped RAM nor vmalloc: "
                     + _fmt_list([_where(t) for t in lost]), _keys(lost))
    unsure = [t for t in layout.tables if memory is not None and t.table_mem == "unknown"]
    if unsure:
        return Check("bias", UNKNOWN, "where the unbiased bases lie cannot be told (the direct map's base is "
                     "not in the dump): " + _fmt_list([_where(t) for t in unsure]), _keys(unsure))
    return Check("bias", OK, f"{len(layout.tables)} bases page-aligned"
                 + ("" if memory is None else ", each in the direct map or vmalloc"))


def expected_table_pages(layout: Layout, t: Table) -> int:
    if layout.section_pages is not None:
        return layout.section_pages
    return t.nr_pages  # FLATMEM: derived from the node span by the walker


def check_extent(layout: Layout, memory: Optional[Memory], max_pfn: Optional[int] = None) -> Check:
    if not layout.tables:
        return Check("extent", SKIP, "no tables")
    bad, suspects = [], []
    for t in layout.tables:
        want = expected_table_pages(layout, t) * layout.entry_size
        if t.nr_pages * layout.entry_size != t.bytes or t.bytes != want:
            bad.append(f"{_where(t)}: {t.bytes} bytes, expected {want}")
            suspects.append(t)
    if max_pfn is not None and layout.section_pages is None:
        # FLATMEM: a node spans at most max_pfn, plus one MAX_ORDER block of slack.
        slack = (layout.max_order_nr_pages or 1) * 2
        for t in layout.tables:
            if t.end_pfn > max_pfn + slack:
                bad.append(f"node {t.node}: {t.nr_pages} entries from pfn {t.start_pfn:#x} run past "
                           f"max_pfn {max_pfn:#x}")
                suspects.append(t)
    if bad:
        return Check("extent", FAIL, _fmt_list(bad), _keys(suspects))
    unallocated, unknown = [], []
    if memory is not None:
        for t in layout.tables:
            if t.table_mem != "direct" or t.table_pfn is None:
                continue
            last = t.table_pfn + (t.bytes - 1) // layout.page_size
            state = memory.page_allocated(last)
            if state is False:
                unallocated.append((t, f"{_where(t)} (pfn {last:#x})"))
            elif state is None:
                unknown.append(_where(t))
    if unallocated:
        return Check("extent", FAIL, "table runs into free pages: " + _fmt_list([w for _, w in unallocated]),
                     _keys([t for t, _ in unallocated]))
    sizes = sorted({t.bytes for t in layout.tables})
    detail = f"{len(layout.tables)} tables of {_fmt_list(sizes)} bytes"
    if unknown:
        return Check("extent", UNKNOWN, detail + "; whether the last page is allocated is unknown "
                     f"(struct page unreadable) for {_fmt_list(unknown)}")
    return Check("extent", OK, detail + ("" if memory is None else ", last pages allocated"))


def check_overlap(layout: Layout, memory: Optional[Memory]) -> Check:
    if not layout.tables:
        return Check("no-overlap", SKIP, "no tables")
    clashes = []
    ordered = sorted(layout.tables, key=lambda t: t.address)
    for a, b in zip(ordered, ordered[1:]):
        if a.address + a.bytes > b.address:
            clashes.append(f"{_where(a)} and {_where(b)}")
    if memory is not None and memory.memmap:
        import bisect
        starts = [m0 for m0, _ in memory.memmap]
        for t in layout.tables:
            if t.table_pfn is None:
                continue
            start = t.table_pfn * layout.page_size
            end = start + t.bytes
            i = bisect.bisect_right(starts, end) - 1
            while i >= 0 and memory.memmap[i][1] > start:
                if memory.memmap[i][0] < end:
                    clashes.append(f"{_where(t)} and the memmap at {memory.memmap[i][0]:#x}")
                    break
                i -= 1
    if clashes:
        return Check("no-overlap", FAIL, "overlapping: " + _fmt_list(clashes))
    what = "neither one another" + (" nor the memmap" if memory is not None and memory.memmap else "")
    return Check("no-overlap", OK, f"{len(layout.tables)} tables overlap {what}")


def _unread(layout: Layout, name: str) -> Optional[Check]:
    if layout.unread_sections:
        return Check(name, UNKNOWN, f"the state of {layout.unread_sections} section(s) could not be read: "
                     "which tables exist there is unknown")
    return None


def check_coverage(layout: Layout, memory: Optional[Memory]) -> Check:
    unread = _unread(layout, "coverage")
    if unread:
        return unread
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
    # A section mid-way through memory hotplug, which holds mem_hotplug_lock for
    # writing throughout (Layout.hotplug_busy): online_pages() allocates the tables
    # at MEM_GOING_ONLINE and sets the online bits later (online_pages_range() ->
    # online_mem_sections()); offline_pages() clears them (__offline_isolated_pages())
    # before MEM_OFFLINE frees the tables.  Such a table is on a present section.
    sections = {s.nr: s for s in layout.sections}
    midway = []
    if layout.hotplug_busy:
        midway = [n for n in stray if n in sections and sections[n].present]
        stray = [n for n in stray if n not in midway]
    # PAGE_EXT_INVALID is legitimate only inside offline_page_ext() (b1d5488a252d,
    # v6.1), between __invalidate_page_ext() and __free_page_ext(): the section is
    # offline by then (offline_mem_sections() runs before MEM_OFFLINE) and still
    # present (sparse_remove_section() comes after offline_pages() returns).
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
    if midway:
        detail += (f"; memory hotplug in progress (mem_hotplug_lock held): sections {_fmt_list(midway)} "
                   "have their table but are not online (being onlined or offlined)")
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
    lost = PfnRanges()
    where = []
    for t in layout.tables:
        bad = memory.unreadable(t)
        if bad:
            where.append(_where(t))
            for a, b in bad:
                lost.add(a, b)
    if lost:
        return Check("readable", UNKNOWN, f"entries of {lost.pages} pages unreadable in {_fmt_list(where)} "
                     f"(pfns {lost.text()})")
    return Check("readable", OK, f"every page of {len(layout.tables)} tables is in the target")


def check_total(layout: Layout, memory: Optional[Memory]) -> Check:
    usage = layout.total_usage
    if usage is None:
        return Check("total-usage", SKIP, "the kernel's total_usage is not in the debug info (optimized out)")
    unread = _unread(layout, "total-usage")
    if unread:
        return unread
    total = layout.total_bytes
    if total == usage:
        return Check("total-usage", OK, f"tables sum to {total} bytes = total_usage")
    per_table = (layout.section_pages or 0) * layout.entry_size
    if layout.section_pages and total < usage and per_table and (usage - total) % per_table == 0:
        n = (usage - total) // per_table
        capacity = None if memory is None else memory.hotplug_capacity
        # More freed tables than sections hotplug can add is no contradiction:
        # a section hot-added and removed k times counts k tables (a live
        # 6.12 guest under test_vm_live's repeated hotplug: 69 freed, 7 tables left).
        again = (f", more than the {capacity} sections memory hotplug can add at once: sections were "
                 "hot-added and removed more than once") if capacity is not None and n > capacity else ""
        return Check("total-usage", OK,
                     f"tables sum to {total} bytes; total_usage {usage} also counts {n} table(s) "
                     f"freed by hot-remove since boot{again} (total_usage never decreases)")
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


CHECKS = {"bias": check_bias, "extent": check_extent, "no-overlap": check_overlap, "coverage": check_coverage,
          "clients": check_clients, "readable": check_readable, "total-usage": check_total,
          "hot-remove-deps": check_dependencies}


def verify(layout: Layout, memory: Optional[Memory] = None, only: Optional[tuple[str, ...]] = None,
           max_pfn: Optional[int] = None) -> list[Check]:
    """Run every check (or the ``only`` ones) on ``layout``; ``memory`` None
    skips the memory checks."""
    out = []
    for name, check in CHECKS.items():
        if only is not None and name not in only:
            continue
        out.append(check(layout, memory, max_pfn) if check is check_extent else check(layout, memory))
    return out


def suspect_tables(layout: Layout, checks: list[Check]) -> set[tuple[str, int]]:
    """Keys of the tables a failed decode check (DECODE_CHECKS) is about;
    every table when the failure is not about particular tables."""
    out: set[tuple[str, int]] = set()
    for c in checks:
        if c.status == FAIL and c.name in DECODE_CHECKS:
            out |= set(c.suspects) if c.suspects else {t.key for t in layout.tables}
    return out


# -- the probe of a real (or synthetic) kernel -------------------------------------------------------

def memory_probe(prog: drgn.Program, layout: Layout, presence=None, missing=None) -> Memory:
    """A Memory that reads the target (reads only, never writes).

    ``presence`` (a :class:`inspector.reader.Presence`) answers the
    ``readable`` check from the core's own page list where the core has one.
    A struct page that cannot be read (or that the core does not hold) is
    recorded in ``missing`` (an :class:`inspector.model.Missing`)."""
    from drgn.helpers.linux.mm import pfn_to_page

    from . import kernel as k

    def page_allocated(pfn: int) -> Optional[bool]:
        try:
            ref = pfn_to_page(prog, pfn)._refcount.counter
            if present(prog, ref.address_, drgn.sizeof(ref)):
                return ref.value_() > 0
        except (drgn.FaultError, LookupError, AttributeError, ValueError, OverflowError):
            pass
        if missing is not None:
            missing.memmap.add(pfn, pfn + 1)
        return None

    seen: dict[tuple, PfnRanges] = {}

    def unreadable(t: Table) -> PfnRanges:
        # Asked twice per table (the readable check, then the session's
        # missing ranges); without a page list each answer reads the table.
        key = (t.key, t.address, t.nr_pages)
        if key not in seen:
            seen[key] = _unreadable(t)
        return seen[key]

    def _unreadable(t: Table) -> PfnRanges:
        if presence is not None and t.table_mem == "direct" and t.table_pfn is not None:
            first = t.table_pfn
            end = t.table_pfn + -(-t.bytes // layout.page_size)
            out = PfnRanges()
            for a, b in presence.missing(first, end):
                # table pages [a, b) hold entries [ (a-first)*page/esz, ... )
                lo = (a - first) * layout.page_size // layout.entry_size
                hi = -(-((b - first) * layout.page_size) // layout.entry_size)
                out.add(t.start_pfn + lo, t.start_pfn + min(hi, t.nr_pages))
            return out
        out = PfnRanges()
        chunk = 1 << 15
        end = readable_end(layout, t, max_pfn) - t.start_pfn
        failed = 0
        for i in range(0, end, chunk):
            n = min(chunk, end - i)
            if failed >= GIVE_UP_CHUNKS:
                out.add(t.start_pfn + i, t.start_pfn + end)
                break
            _, holes = read_or_holes(prog, t.address + i * layout.entry_size, n * layout.entry_size)
            lost = unknown_items(holes, layout.entry_size, n)
            failed = failed + 1 if lost == [(0, n)] else 0
            for a, b in lost:
                out.add(t.start_pfn + i + a, t.start_pfn + i + b)
        return out

    max_pfn = k.value(prog, "max_pfn")
    capacity = None
    max_possible = k.value(prog, "max_possible_pfn")
    if layout.section_pages and max_possible is not None:
        early = sum(1 for s in layout.sections if s.early)
        capacity = max(0, -(-max_possible // layout.section_pages) - early)
    return Memory(page_allocated, lambda: memmap_phys_ranges(prog, layout), unreadable, capacity)


def memmap_phys_ranges(prog: drgn.Program, layout: Layout) -> list[tuple[int, int]]:
    """Physical [start, end) ranges backing the memmap of every present section.

    With SPARSEMEM_VMEMMAP the memmap is virtually contiguous but backed by
    pages from anywhere; we translate it through init_mm's page tables in
    2 MiB steps (one PMD mapping each on x86-64), falling back to 4 KiB
    steps where a step is not physically contiguous.
    """
    from drgn.helpers.linux.mm import follow_phys, pfn_to_page

    if not layout.sparse:
        return []
    try:
        mm = prog["init_mm"].address_of_()
        page_struct = prog.type("struct page").size
    except (LookupError, drgn.FaultError):
        return []
    step = 2 << 20
    ranges: list[tuple[int, int]] = []
    for sec in layout.sections:
        if not sec.present:
            continue
        try:
            virt = pfn_to_page(prog, sec.nr * layout.section_pages).value_()
        except (drgn.FaultError, LookupError, ValueError):
            continue
        length = layout.section_pages * page_struct
        pos = virt
        while pos < virt + length:
            n = min(step, virt + length - pos)
            try:
                a = follow_phys(mm, pos).value_()
                b = follow_phys(mm, pos + n - 1).value_()
            except (drgn.FaultError, ValueError):
                pos += n
                continue
            if b - a == n - 1:
                ranges.append((a, a + n))
            else:
                for p in range(pos, pos + n, layout.page_size):
                    try:
                        a = follow_phys(mm, p).value_()
                        ranges.append((a, a + layout.page_size))
                    except (drgn.FaultError, ValueError):
                        pass
            pos += n
    return _merge(ranges)


def _merge(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for a, b in sorted(ranges):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out
