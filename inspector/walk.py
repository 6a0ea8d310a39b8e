"""The walk: find every page_ext table in a kernel and describe it.

SPARSEMEM (mm/page_ext.c, init_section_page_ext()): each ``struct
mem_section`` holds ``page_ext``, a *biased* pointer: the table's base minus
``entry_size * section_start_pfn``, so that ``stored + entry_size * pfn`` is
pfn's entry for any pfn in the section.  From v6.1 (b1d5488a252d) the low
bit, PAGE_EXT_INVALID, marks a table whose section is being hot-removed.
We read each ``mem_section`` root with one read and decode the sections in
Python, so the walk costs one drgn read per 128 (or more) sections.

FLATMEM (alloc_node_page_ext()): ``pglist_data.node_page_ext`` points at
the node's table itself; index 0 is the node's first pfn rounded down to
MAX_ORDER_NR_PAGES, and one extra MAX_ORDER_NR_PAGES block of entries is
allocated when either end of the node is unaligned.  (The seed, v3.19,
indexed from node_start_pfn exactly; the rounding is present by v4.19.)

:func:`entry_address` is the one place that maps a pfn to its entry; the
verifier and the client decoders use it too.
"""

from __future__ import annotations

import struct
from typing import Callable, Iterable, Iterator, Optional

import drgn
from drgn.helpers.linux.mm import for_each_memory_block, pfn_to_page, virt_to_pfn

from .discover import Geometry, release_version
from .model import INVALID, OFFLINE, ONLINE, Layout, SectionInfo, Table
from .target import TargetError

PAGE_EXT_INVALID = 0x1  # include/linux/page_ext.h, v6.1+ (b1d5488a252d)

Progress = Callable[[int, int], None]  # (done, total)


def unbias(stored: int, section_start_pfn: int, entry_size: int, has_invalid_bit: bool) -> int:
    """The base address of a section's table from ``mem_section.page_ext``."""
    if has_invalid_bit:
        stored &= ~PAGE_EXT_INVALID
    return (stored + entry_size * section_start_pfn) & 0xFFFFFFFFFFFFFFFF


def entry_address(table: Table, pfn: int, entry_size: int) -> int:
    """Address of pfn's ``struct page_ext`` within ``table`` (get_entry()).

    Works for both models because Table.start_pfn is the pfn of index 0.
    """
    index = pfn - table.start_pfn
    if not 0 <= index < table.nr_pages:
        raise ValueError(f"pfn {pfn:#x} is outside the table starting at pfn {table.start_pfn:#x}")
    return table.address + entry_size * index


def online_spans(layout: Layout, lo: int = 0, hi: int = 1 << 64) -> Iterator[tuple[Table, int, int]]:
    """(table, a, b) for each online table overlapping pfns [lo, hi), clipped
    to [a, b), in pfn order: the pages whose entries the clients can decode."""
    for t in sorted((t for t in layout.tables if t.state == ONLINE), key=lambda t: t.start_pfn):
        a, b = max(t.start_pfn, lo), min(t.start_pfn + t.nr_pages, hi)
        if a < b:
            yield t, a, b


def online_table_for(layout: Layout, pfn: int) -> Optional[Table]:
    """The online table holding pfn's entry, or None (no table, or offline/invalid)."""
    return next((t for t, _, _ in online_spans(layout, pfn, pfn + 1)), None)


def read_entries(prog: drgn.Program, table: Table, lo: int, hi: int, entry_size: int) -> bytes:
    """The entries of pfns [lo, hi) of ``table`` in one read (TargetError if unreadable)."""
    try:
        return prog.read(entry_address(table, lo, entry_size), (hi - lo) * entry_size)
    except drgn.FaultError as e:
        raise TargetError(f"cannot read the page_ext table of pfns {lo:#x}-{hi:#x}: {e}") from None


def _section_flag_bits(prog: drgn.Program) -> dict[str, int]:
    # drgn knows each version's section flag values (the enum since v5.x,
    # constants before); reuse its table rather than keep a second one.
    try:
        from drgn.helpers.linux.mmzone import _section_flags
        return dict(_section_flags(prog))
    except Exception:
        return {"SECTION_MARKED_PRESENT": 0x1, "SECTION_HAS_MEM_MAP": 0x2,
                "SECTION_IS_ONLINE": 0x4, "SECTION_IS_EARLY": 0x8}


def _memory_blocks(prog: drgn.Program) -> dict[int, tuple[int, str]]:
    """memory block number -> (nid, state name), from drivers/base/memory.c."""
    from drgn.helpers.linux.mm import decode_memory_block_state
    out = {}
    try:
        spb = prog.object("sections_per_block", drgn.FindObjectFlags.ANY, "memory.c").value_()
        for mem in for_each_memory_block(prog):
            out[mem.start_section_nr.value_() // spb] = (mem.nid.value_(), decode_memory_block_state(mem))
    except (LookupError, drgn.FaultError, ZeroDivisionError, AttributeError):
        return {}
    return out


def _node_spans(prog: drgn.Program) -> list[tuple[int, int, int]]:
    from drgn.helpers.linux.mmzone import for_each_online_pgdat
    spans = []
    for pgdat in for_each_online_pgdat(prog):
        start = pgdat.node_start_pfn.value_()
        spans.append((pgdat.node_id.value_(), start, start + pgdat.node_spanned_pages.value_()))
    return spans


def _nid_for_pfn(spans: list[tuple[int, int, int]], pfn: int) -> Optional[int]:
    for nid, start, end in spans:
        if start <= pfn < end:
            return nid
    return None


def _mem_section_roots(prog: drgn.Program, highest_nr: int) -> Iterable[tuple[int, int]]:
    """(root number, address of its first struct mem_section) for allocated roots."""
    spr = prog["SECTIONS_PER_ROOT"].value_()
    mem_section = prog["mem_section"]
    t = mem_section.type_.unaliased()
    if t.kind == drgn.TypeKind.POINTER:  # SPARSEMEM_EXTREME (v4.15+: a pointer to roots)
        mem_section = mem_section.read_()
        if not mem_section:
            return
    root_is_ptr = mem_section.type_.unaliased().type.unaliased_kind() == drgn.TypeKind.POINTER
    for root_nr in range(highest_nr // spr + 1):
        root = mem_section[root_nr]
        if root_is_ptr:
            addr = root.value_()
            if not addr:
                continue
        else:
            addr = root.address_
        yield root_nr, addr


def walk_sparse(prog: drgn.Program, geo: Geometry, progress: Optional[Progress] = None) -> Layout:
    try:
        return _walk_sparse(prog, geo, progress)
    except drgn.FaultError as e:
        raise TargetError(f"cannot read mem_section: {e} (corrupt dump or wrong vmlinux?)") from None


def _walk_sparse(prog: drgn.Program, geo: Geometry, progress: Optional[Progress]) -> Layout:
    from drgn.helpers.linux.mmzone import _highest_present_section_nr

    ms_type = prog.type("struct mem_section")
    ms_size = ms_type.size
    off_map = drgn.offsetof(ms_type, "section_mem_map")
    off_ext = drgn.offsetof(ms_type, "page_ext")
    spr = prog["SECTIONS_PER_ROOT"].value_()
    flags = _section_flag_bits(prog)
    present_bit = flags["SECTION_MARKED_PRESENT"]
    online_bit = flags.get("SECTION_IS_ONLINE", 0)
    early_bit = flags.get("SECTION_IS_EARLY", 0)
    highest = _highest_present_section_nr(prog)
    blocks = _memory_blocks(prog)
    spb = geo.sections_per_block or 1
    spans = _node_spans(prog)
    layout = Layout(geo.release, geo.memory_model, geo.page_size, geo.section_pages,
                    geo.entry_size, list(geo.clients), kernel_total_usage=geo.total_usage,
                    block_sections=geo.sections_per_block, nodes=sorted(n for n, _, _ in spans))
    layout.sparsemem_extreme = (
        prog["mem_section"].type_.unaliased().type.unaliased_kind() == drgn.TypeKind.POINTER
        or prog["mem_section"].type_.unaliased_kind() == drgn.TypeKind.POINTER)
    unpack = struct.Struct("<Q").unpack_from
    roots = list(_mem_section_roots(prog, highest))
    for i, (root_nr, addr) in enumerate(roots):
        raw = prog.read(addr, ms_size * spr)
        for j in range(spr):
            nr = root_nr * spr + j
            if nr > highest:
                break
            mem_map, = unpack(raw, j * ms_size + off_map)
            stored, = unpack(raw, j * ms_size + off_ext)
            present = bool(mem_map & present_bit)
            if not present and not stored:
                continue
            start_pfn = nr * geo.section_pages
            block = nr // spb if geo.sections_per_block else None
            node = blocks.get(block, (None, ""))[0] if block is not None else None
            if node is None:
                node = _nid_for_pfn(spans, start_pfn)
            online = bool(mem_map & online_bit) if online_bit else present
            sec = SectionInfo(nr, node, present, online, bool(mem_map & early_bit), stored, block)
            layout.sections.append(sec)
            if not stored:
                continue
            invalid = geo.has_invalid_bit and bool(stored & PAGE_EXT_INVALID)
            base = unbias(stored, start_pfn, geo.entry_size, geo.has_invalid_bit)
            state = INVALID if invalid else (ONLINE if online else OFFLINE)
            layout.tables.append(Table(nr, node if node is not None else -1, start_pfn,
                                       geo.section_pages, base,
                                       geo.entry_size * geo.section_pages, state, stored=stored))
        if progress:
            progress(i + 1, len(roots))
    _locate_tables(prog, geo, layout)
    return layout


def walk_flat(prog: drgn.Program, geo: Geometry, progress: Optional[Progress] = None) -> Layout:
    from drgn.helpers.linux.mmzone import for_each_online_pgdat

    layout = Layout(geo.release, geo.memory_model, geo.page_size, None, geo.entry_size,
                    list(geo.clients), kernel_total_usage=geo.total_usage)
    version = release_version(geo.release)
    align = geo.max_order_nr_pages or 1
    if version and version <= (3, 19):
        align = 1  # seed (eefa864b701d): indexed from node_start_pfn, no slack
    try:
        for pgdat in for_each_online_pgdat(prog):
            nid = pgdat.node_id.value_()
            layout.nodes.append(nid)
            base = pgdat.node_page_ext.value_()
            start = pgdat.node_start_pfn.value_()
            spanned = pgdat.node_spanned_pages.value_()
            if not base or not spanned:
                continue
            nr = spanned
            if align > 1 and (start % align or (start + spanned) % align):
                nr += align
            layout.tables.append(Table(None, nid, start - start % align, nr, base,
                                       nr * geo.entry_size, ONLINE, stored=base))
    except drgn.FaultError as e:
        raise TargetError(f"cannot read pglist_data: {e} (corrupt dump or wrong vmlinux?)") from None
    _locate_tables(prog, geo, layout)
    return layout


def _locate_tables(prog: drgn.Program, geo: Geometry, layout: Layout) -> None:
    """Fill in where each table's own memory lives: direct map or vmalloc."""
    present = {s.nr for s in layout.sections if s.present}
    for t in layout.tables:
        try:
            pfn = direct_map_pfn(prog, t.address)
        except (drgn.FaultError, ValueError, LookupError):
            pfn = None
        if pfn is not None and geo.sparse and pfn // geo.section_pages in present:
            t.table_mem, t.table_pfn = "direct", pfn
            if geo.sections_per_block:
                t.table_block = pfn // geo.section_pages // geo.sections_per_block
            continue
        if pfn is not None and not geo.sparse and _is_valid_pfn_flat(prog, pfn):
            t.table_mem, t.table_pfn = "direct", pfn
            continue
        if _is_vmalloc(prog, t.address):
            t.table_mem = "vmalloc"


def direct_map_pfn(prog: drgn.Program, addr: int) -> int:
    """The pfn behind a direct-map (lowmem) address, like virt_to_pfn().

    drgn finds the direct map's offset by walking page tables, which it
    cannot do on i386 (NotImplementedError).  There the kernel's own
    ``high_memory = __va(max_low_pfn << PAGE_SHIFT)`` (mm/memory.c,
    arch/x86/mm/init_32.c) gives PAGE_OFFSET; an address outside
    [PAGE_OFFSET, high_memory) is not in the direct map (ValueError).
    """
    try:
        return virt_to_pfn(prog, addr).value_()
    except NotImplementedError:
        pass
    high = prog["high_memory"].value_()
    shift = prog["PAGE_SHIFT"].value_()
    offset = high - (prog["max_low_pfn"].value_() << shift)
    if not offset <= addr < high:
        raise ValueError(f"{addr:#x} is not in the direct map")
    return (addr - offset) >> shift


def _is_valid_pfn_flat(prog: drgn.Program, pfn: int) -> bool:
    try:
        return pfn < prog["max_pfn"].value_()
    except (LookupError, drgn.FaultError):
        return False


def _is_vmalloc(prog: drgn.Program, addr: int) -> bool:
    try:
        from drgn.helpers.linux.mm import find_vmap_area
        return bool(find_vmap_area(prog, addr))
    except Exception:
        return False


def memmap_phys_ranges(prog: drgn.Program, geo: Geometry, layout: Layout) -> list[tuple[int, int]]:
    """Physical [start, end) ranges backing the memmap of every present section.

    With SPARSEMEM_VMEMMAP the memmap is virtually contiguous but backed by
    pages from anywhere; we translate it through init_mm's page tables in
    2 MiB steps (one PMD mapping each on x86-64), falling back to 4 KiB
    steps where a step is not physically contiguous.
    """
    from drgn.helpers.linux.mm import follow_phys

    if not geo.sparse:
        return []
    mm = prog["init_mm"].address_of_()
    page_struct = prog.type("struct page").size
    step = 2 << 20
    ranges: list[tuple[int, int]] = []
    for sec in layout.sections:
        if not sec.present:
            continue
        try:
            virt = pfn_to_page(prog, sec.nr * geo.section_pages).value_()
        except (drgn.FaultError, LookupError):
            continue
        length = geo.section_pages * page_struct
        pos = virt
        while pos < virt + length:
            n = min(step, virt + length - pos)
            try:
                a = follow_phys(mm, pos).value_()
                b = follow_phys(mm, pos + n - 1).value_()
            except drgn.FaultError:
                pos += n
                continue
            if b - a == n - 1:
                ranges.append((a, a + n))
            else:
                for p in range(pos, pos + n, geo.page_size):
                    try:
                        a = follow_phys(mm, p).value_()
                        ranges.append((a, a + geo.page_size))
                    except drgn.FaultError:
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


def walk(prog: drgn.Program, geo: Geometry, progress: Optional[Progress] = None) -> Layout:
    """Walk every page_ext table of the kernel ``prog``."""
    if geo.sparse:
        return walk_sparse(prog, geo, progress)
    return walk_flat(prog, geo, progress)


def memory_probe(prog: drgn.Program, geo: Geometry, layout: Layout):
    """A verify.Memory that reads the target (reads only, never writes)."""
    from .verify import Memory

    def readable(addr: int, size: int) -> bool:
        try:
            prog.read(addr, size)
            return True
        except (drgn.FaultError, ValueError):
            return False

    def page_allocated(pfn: int) -> Optional[bool]:
        try:
            return pfn_to_page(prog, pfn)._refcount.counter.value_() > 0
        except (drgn.FaultError, LookupError, AttributeError):
            return None

    return Memory(readable, memmap_phys_ranges(prog, geo, layout), page_allocated)
