"""The walk: find every page_ext table in a kernel and describe it.

SPARSEMEM (mm/page_ext.c, init_section_page_ext()): each ``struct
mem_section`` holds ``page_ext``, a *biased* pointer: the table's base minus
``entry_size * section_start_pfn``, so that ``stored + entry_size * pfn`` is
pfn's entry for any pfn in the section.  From v6.1 (b1d5488a252d) the low
bit, PAGE_EXT_INVALID, marks a table whose section is being hot-removed.
We read the root pointers with one read and each ``mem_section`` root with
one more, and decode the sections in Python, so the walk costs one drgn read
per 128 (or more) sections.

FLATMEM (alloc_node_page_ext()): ``pglist_data.node_page_ext`` points at
the node's table itself; index 0 is the node's first pfn rounded down to
MAX_ORDER_NR_PAGES, and one extra MAX_ORDER_NR_PAGES block of entries is
allocated when either end of the node is unaligned (the rule
``flatmem_max_order_slack``; the seed, v3.19, indexed from node_start_pfn
exactly).

Everything the kernel counts is bounded by what the kernel itself allows:
section numbers by NR_MEM_SECTIONS, memory blocks by the sections they can
hold (and the device list by a cycle guard), nodes by nr_node_ids.  What
cannot be read is recorded in a :class:`~inspector.model.Missing`, never
taken as "no table".

:func:`entry_address` is the one place that maps a pfn to its entry; the
verifier, the helpers and the client decoders use it too.
"""

from __future__ import annotations

import struct
from typing import Callable, Iterator, Optional

import drgn
from drgn.helpers.linux.mm import virt_to_pfn

from . import kernel as k
from .errors import CorruptError, TargetError
from .model import INVALID, OFFLINE, ONLINE, Geometry, Layout, Missing, SectionInfo, Table
from .reader import present, read_or_holes

PAGE_EXT_INVALID = 0x1  # include/linux/page_ext.h, v6.1+ (b1d5488a252d)

Progress = Callable[[int, int], None]  # (done, total)

# The section flag bits, unchanged since they were introduced: PRESENT and
# HAS_MEM_MAP in 29751f6991e8 (v2.6.13), IS_ONLINE in 2d070eab2e82 (v4.13),
# IS_EARLY in 326e1b8f83a4 (v5.3).  From ed7802dd48f7 (v6.0) they are an
# anonymous enum of *_BIT numbers, which we prefer when the DWARF has it.
SECTION_FLAGS = {"SECTION_MARKED_PRESENT": 0x1, "SECTION_HAS_MEM_MAP": 0x2,
                 "SECTION_IS_ONLINE": 0x4, "SECTION_IS_EARLY": 0x8}


def unbias(stored: int, section_start_pfn: int, entry_size: int, invalid_bit: bool) -> int:
    """The base address of a section's table from ``mem_section.page_ext``."""
    if invalid_bit:
        stored &= ~PAGE_EXT_INVALID
    return (stored + entry_size * section_start_pfn) & 0xFFFFFFFFFFFFFFFF


def entry_address(table: Table, pfn: int, entry_size: int) -> int:
    """Address of pfn's ``struct page_ext`` within ``table`` (get_entry()).

    Works for both models because Table.start_pfn is the pfn of index 0."""
    index = pfn - table.start_pfn
    if not 0 <= index < table.nr_pages:
        raise ValueError(f"pfn {pfn:#x} is outside the table starting at pfn {table.start_pfn:#x}")
    return (table.address + entry_size * index) & 0xFFFFFFFFFFFFFFFF


def section_flag_bits(prog: drgn.Program) -> dict[str, int]:
    """SECTION_* flag name -> mask, from the DWARF enum (v6.0+) or the fixed values."""
    out = dict(SECTION_FLAGS)
    for name in SECTION_FLAGS:
        bit = k.constant(prog, name + "_BIT")
        if bit is not None:
            out[name] = 1 << bit
    return out


def nr_mem_sections(prog: drgn.Program) -> int:
    """NR_MEM_SECTIONS = 1 << (MAX_PHYSMEM_BITS - SECTION_SIZE_BITS): the most
    sections this kernel can address."""
    bits = prog["MAX_PHYSMEM_BITS"].value_() - prog["SECTION_SIZE_BITS"].value_()
    return 1 << max(0, bits)


def highest_present_section_nr(prog: drgn.Program) -> tuple[int, Optional[str]]:
    """(highest section number worth visiting, a note if the kernel's own value
    was out of range).  ``__highest_present_section_nr`` exists from
    c4e1be9ec113 (v4.13); before, every section may be present."""
    limit = nr_mem_sections(prog) - 1
    value = k.value(prog, "__highest_present_section_nr")
    if value is None:
        return limit, None
    if not 0 <= value <= limit:
        return limit, (f"__highest_present_section_nr is {value}, beyond NR_MEM_SECTIONS - 1 = {limit}: "
                       "ignored, every section visited")
    return value, None


def sections_per_root(prog: drgn.Program, page_size: int) -> int:
    """SECTIONS_PER_ROOT (include/linux/mmzone.h), as drgn knows it; where it
    does not (it reads VMCOREINFO's LENGTH(mem_section), which a damaged dump
    can lose), from the type of ``mem_section`` by the header's rule:
    PAGE_SIZE / sizeof(struct mem_section) under SPARSEMEM_EXTREME (an array
    of, or a pointer to, root pointers), else the length of a static root."""
    try:
        return prog["SECTIONS_PER_ROOT"].value_()
    except (LookupError, ValueError):
        pass
    t = prog["mem_section"].type_.unaliased()
    inner = t.type.unaliased() if t.kind in (drgn.TypeKind.ARRAY, drgn.TypeKind.POINTER) else None
    if t.kind == drgn.TypeKind.ARRAY and inner is not None and inner.kind == drgn.TypeKind.ARRAY and inner.length:
        return inner.length
    return page_size // drgn.sizeof(prog.type("struct mem_section"))


def nr_to_section(prog: drgn.Program, nr: int, page_size: int) -> drgn.Object:
    """drgn's nr_to_section() (a ``struct mem_section *``, NULL past
    NR_MEM_SECTIONS or in a root never allocated), with
    :func:`sections_per_root`, so a dump without LENGTH(mem_section) still reads."""
    null = drgn.NULL(prog, "struct mem_section *")
    if not 0 <= nr < nr_mem_sections(prog):
        return null
    spr = sections_per_root(prog, page_size)
    ms = prog["mem_section"]
    if ms.type_.unaliased_kind() == drgn.TypeKind.POINTER:  # SPARSEMEM_EXTREME since 83e3c48729d9 (v4.15)
        ms = ms.read_()
        if not ms:
            return null
    root = ms[nr // spr]
    if root.type_.unaliased_kind() == drgn.TypeKind.ARRAY:  # static SPARSEMEM
        return root[nr % spr].address_of_()
    root = root.read_()
    return root + nr % spr if root else null


def pfn_to_section(prog: drgn.Program, pfn: int, page_size: int) -> drgn.Object:
    """The ``struct mem_section *`` of a pfn (the kernel's __pfn_to_section()),
    by :func:`nr_to_section`; NULL if the pfn is beyond every section."""
    shift = prog["SECTION_SIZE_BITS"].value_() - (page_size.bit_length() - 1)
    return nr_to_section(prog, pfn >> shift, page_size)


def _root_addresses(prog: drgn.Program, nr_roots: int, missing: Missing,
                    section_pages: int, spr: int, highest: int) -> Iterator[tuple[int, int]]:
    """(root number, address of its first struct mem_section) of allocated roots;
    an unreadable root pointer loses its sections up to ``highest``."""
    ms = prog["mem_section"]
    t = ms.type_.unaliased()
    if t.kind == drgn.TypeKind.ARRAY and t.type.unaliased_kind() == drgn.TypeKind.ARRAY:
        # Static SPARSEMEM: struct mem_section mem_section[NR_SECTION_ROOTS][SECTIONS_PER_ROOT].
        step = drgn.sizeof(t.type)
        for r in range(min(nr_roots, t.length or nr_roots)):
            yield r, ms.address_ + r * step
        return
    # SPARSEMEM_EXTREME: an array of root pointers, or (v4.15+, 83e3c48729d9)
    # a pointer to a dynamically allocated one.
    if t.kind == drgn.TypeKind.POINTER:
        try:
            base = ms.value_()
        except drgn.FaultError as e:
            raise TargetError(f"cannot read mem_section: {e}") from None
        if not present(prog, ms.address_, k.pointer_size(prog)):
            raise TargetError("cannot read mem_section: the dump does not hold its page")
        if not base:
            return
    else:
        base = ms.address_
        nr_roots = min(nr_roots, t.length or nr_roots)
    ptr = k.pointer_size(prog)
    raw, holes = _read(prog, base, nr_roots * ptr)
    bad = {off // ptr for off, n in holes for off in range(off, off + n, ptr)}
    fmt = "<Q" if ptr == 8 else "<I"
    for r in range(nr_roots):
        if r in bad:
            missing.page_ext.add(r * spr * section_pages, min((r + 1) * spr, highest + 1) * section_pages)
            missing.note(f"mem_section root pointer {r} unreadable")
            continue
        addr, = struct.unpack_from(fmt, raw, r * ptr)
        if addr:
            yield r, addr


def _read(prog: drgn.Program, addr: int, size: int) -> tuple[bytes, list]:
    return read_or_holes(prog, addr, size)


# At most this many buses are registered (drivers/base/bus.c): a guard on the
# walk of bus_kset, not a kernel limit.
MAX_BUSES = 4096


def _list_nodes(prog: drgn.Program, head: int, bound: int) -> Iterator[int]:
    """Addresses of the list_heads after ``head``, each once, at most ``bound``;
    raises CorruptError when the list loops without coming back to its head
    or is longer than ``bound``."""
    lh = prog.type("struct list_head *")
    seen: set[int] = set()
    pos = drgn.Object(prog, lh, head).next.value_()
    while pos != head:
        if pos in seen:
            raise CorruptError(f"the list at {head:#x} loops after {len(seen)} entries")
        if len(seen) >= bound:
            raise CorruptError(f"the list at {head:#x} is longer than {bound} entries")
        seen.add(pos)
        yield pos
        pos = drgn.Object(prog, lh, pos).next.value_()


def _memory_block_objects(prog: drgn.Program, bound: int) -> Iterator[drgn.Object]:
    """drgn's for_each_memory_block() (bus_for_each_dev(&memory_subsys): find
    the bus's subsys_private on bus_kset's list, then walk its klist_devices),
    with every list bounded and guarded against cycles."""
    bus = prog["memory_subsys"].address_of_().value_()
    sp_t = prog.type("struct subsys_private")
    entry = drgn.offsetof(sp_t, "subsys.kobj.entry")
    sp = None
    for node in _list_nodes(prog, prog["bus_kset"].list.address_of_().value_(), MAX_BUSES):
        cand = drgn.Object(prog, prog.pointer_type(sp_t), node - entry)
        if cand.bus.value_() == bus:
            sp = cand
            break
    if sp is None:
        return
    dp_t = prog.type("struct device_private")
    knode = drgn.offsetof(dp_t, "knode_bus.n_node")
    mb_t = prog.type("struct memory_block")
    dev_off = drgn.offsetof(mb_t, "dev")
    for node in _list_nodes(prog, sp.klist_devices.k_list.address_of_().value_(), bound):
        dev = drgn.Object(prog, prog.pointer_type(dp_t), node - knode).device.value_()
        yield drgn.Object(prog, prog.pointer_type(mb_t), dev - dev_off)


def memory_blocks(prog: drgn.Program, bound: int, missing: Optional[Missing] = None) -> dict[int, tuple[int, str]]:
    """memory block number -> (nid, state name), from drivers/base/memory.c.

    At most ``bound`` blocks are visited, each once; a list that loops (the
    device list or the list of buses) ends the walk, noted in ``missing``."""
    from drgn.helpers.linux.mm import decode_memory_block_state


    out: dict[int, tuple[int, str]] = {}
    spb = k.value(prog, "sections_per_block", "memory.c")
    if not spb:
        return out
    seen = 0
    try:
        for mem in _memory_block_objects(prog, bound):
            seen += 1
            nr = mem.start_section_nr.value_()
            out[nr // spb] = (mem.nid.value_(), decode_memory_block_state(mem))
    except CorruptError as e:
        if missing is not None:
            missing.note(f"the memory block list is corrupt ({e}): stopped after {seen} blocks")
    except (LookupError, drgn.FaultError, AttributeError, ValueError, TypeError, OverflowError) as e:
        if missing is not None and seen:
            missing.note(f"memory block list unreadable after {seen} blocks ({e})")
    return out


def hotplug_busy(prog: drgn.Program) -> Optional[bool]:
    """Whether memory hotplug holds ``mem_hotplug_lock`` (mm/memory_hotplug.c,
    a ``struct percpu_rw_semaphore``) for writing: mem_hotplug_begin() takes it
    around online_pages() and offline_pages(), so a section may be between
    its page_ext and its online bit.  None where the lock cannot be read.

    percpu_down_write() sets ``block`` until percpu_up_write() clears it
    (7f26482a872c, v5.8); ``readers_block`` before (80127a39681b, v4.14)."""
    lock = k.obj(prog, "mem_hotplug_lock", "memory_hotplug.c")
    if lock is None:
        return None
    try:
        if k.has_member(lock.type_, "block"):
            return bool(lock.block.counter.value_())
        if k.has_member(lock.type_, "readers_block"):
            return bool(lock.readers_block.value_())
    except (drgn.FaultError, LookupError, AttributeError):
        pass
    return None


def node_spans(prog: drgn.Program, missing: Optional[Missing] = None) -> list[tuple[int, int, int]]:
    """(nid, start_pfn, end_pfn) of each online node."""
    from drgn.helpers.linux.mmzone import for_each_online_pgdat

    spans = []
    try:
        for pgdat in for_each_online_pgdat(prog):
            try:
                start = pgdat.node_start_pfn.value_()
                spans.append((pgdat.node_id.value_(), start, start + pgdat.node_spanned_pages.value_()))
            except drgn.FaultError as e:
                if missing is not None:
                    missing.note(f"a pglist_data is unreadable ({e})")
            if len(spans) > k.MAX_NUMNODES_LIMIT:
                break
    except (drgn.FaultError, LookupError) as e:
        if missing is not None:
            missing.note(f"the online nodes are unreadable ({e})")
    return spans


def _nid_for_pfn(spans: list[tuple[int, int, int]], pfn: int) -> Optional[int]:
    for nid, start, end in spans:
        if start <= pfn < end:
            return nid
    return None


def walk_sparse(prog: drgn.Program, geo: Geometry, missing: Missing,
                progress: Optional[Progress] = None) -> Layout:
    ms_type = prog.type("struct mem_section")
    ms_size = ms_type.size
    off_map = drgn.offsetof(ms_type, "section_mem_map")
    off_ext = drgn.offsetof(ms_type, "page_ext")
    spr = sections_per_root(prog, geo.page_size)
    flags = section_flag_bits(prog)
    present_bit = flags["SECTION_MARKED_PRESENT"]
    # SECTION_IS_ONLINE is set by online_mem_sections() (2d070eab2e82, v4.13);
    # before that a present section is online.
    has_online = k.constant(prog, "SECTION_IS_ONLINE_BIT") is not None or \
        k.obj(prog, "online_mem_sections") is not None
    online_bit = flags["SECTION_IS_ONLINE"] if has_online else 0
    early_bit = flags["SECTION_IS_EARLY"]
    highest, note = highest_present_section_nr(prog)
    if note:
        missing.note(note)
    pps = geo.section_pages
    spb = geo.sections_per_block
    blocks = memory_blocks(prog, nr_mem_sections(prog) // (spb or 1) + 1, missing) if spb else {}
    spans = node_spans(prog, missing)
    layout = Layout.of(geo, nodes=sorted(n for n, _, _ in spans), hotplug_busy=hotplug_busy(prog))
    ptr = k.pointer_size(prog)
    unpack = struct.Struct("<Q" if ptr == 8 else "<I").unpack_from
    invalid_bit = geo.rules.invalid_bit
    roots = list(_root_addresses(prog, highest // spr + 1, missing, pps, spr, highest))
    if missing.page_ext:
        layout.unread_sections += sum(b - a for a, b in missing.page_ext) // pps
    for i, (root_nr, addr) in enumerate(roots):
        raw, holes = _read(prog, addr, ms_size * spr)
        lost = {j for off, n in holes for j in range(off // ms_size, -(-(off + n) // ms_size))}
        for j in range(spr):
            nr = root_nr * spr + j
            if nr > highest:
                break
            if j in lost:
                missing.page_ext.add(nr * pps, (nr + 1) * pps)
                layout.unread_sections += 1
                continue
            mem_map, = unpack(raw, j * ms_size + off_map)
            stored, = unpack(raw, j * ms_size + off_ext)
            present = bool(mem_map & present_bit)
            if not present and not stored:
                continue
            start_pfn = nr * pps
            block = nr // spb if spb else None
            node = blocks.get(block, (None, ""))[0] if block is not None else None
            if node is None:
                node = _nid_for_pfn(spans, start_pfn)
            online = bool(mem_map & online_bit) if online_bit else present
            layout.sections.append(SectionInfo(nr, node, present, online, bool(mem_map & early_bit), stored, block))
            if not stored:
                continue
            invalid = invalid_bit and bool(stored & PAGE_EXT_INVALID)
            base = unbias(stored, start_pfn, geo.entry_size, invalid_bit)
            state = INVALID if invalid else (ONLINE if online else OFFLINE)
            layout.tables.append(Table(nr, node if node is not None else -1, start_pfn, pps, base,
                                       geo.entry_size * pps, state, stored=stored))
        if progress:
            progress(i + 1, len(roots))
    return layout


def flat_table_span(start: int, spanned: int, align: int, slack: bool) -> tuple[int, int]:
    """(first pfn, entries) of a FLATMEM node table (alloc_node_page_ext())."""
    if not slack or align <= 1:
        return start, spanned
    nr = spanned
    if start % align or (start + spanned) % align:
        nr += align
    return start - start % align, nr


def walk_flat(prog: drgn.Program, geo: Geometry, missing: Missing,
              progress: Optional[Progress] = None) -> Layout:
    from drgn.helpers.linux.mmzone import NODE_DATA

    spans = node_spans(prog, missing)
    layout = Layout.of(geo, nodes=sorted(n for n, _, _ in spans))
    found = []
    for i, (nid, start, end) in enumerate(spans):
        try:
            base = NODE_DATA(prog, nid).node_page_ext.value_()
        except drgn.FaultError as e:
            missing.note(f"node {nid}'s node_page_ext is unreadable ({e})")
            missing.page_ext.add(start, end)
            layout.unread_sections += 1
            continue
        if base and end > start:
            found.append((nid, start, end, base))
        if progress:
            progress(i + 1, len(spans))
    slack = geo.rules.flatmem_max_order_slack
    align = geo.max_order_nr_pages or 1
    if geo.total_usage is not None and found:
        # The kernel's own total says which rule made the tables: every merged
        # kernel rounds and pads; the seed as posted indexed from the node start.
        padded = sum(flat_table_span(s, e - s, align, True)[1] for _, s, e, _ in found) * geo.entry_size
        exact = sum(e - s for _, s, e, _ in found) * geo.entry_size
        if geo.total_usage == exact != padded:
            slack = False
        elif geo.total_usage == padded != exact:
            slack = True
    if slack != geo.rules.flatmem_max_order_slack:
        from dataclasses import replace
        layout.rules = replace(geo.rules, flatmem_max_order_slack=slack)
    for nid, start, end, base in found:
        first, nr = flat_table_span(start, end - start, align, slack)
        layout.tables.append(Table(None, nid, first, nr, base, nr * geo.entry_size, ONLINE, stored=base))
    return layout


def locate_tables(prog: drgn.Program, layout: Layout) -> None:
    """Fill in where each table's own memory lives: direct map or vmalloc."""
    present = {s.nr for s in layout.sections if s.present}
    max_pfn = k.value(prog, "max_pfn")
    for t in layout.tables:
        fault = False
        try:
            pfn = direct_map_pfn(prog, t.address)
        except drgn.FaultError:  # the direct map's base (page_offset_base) is not in the dump
            pfn, fault = None, True
        except (ValueError, LookupError, OverflowError):
            pfn = None
        if pfn is not None and layout.sparse and pfn // layout.section_pages in present:
            t.table_mem, t.table_pfn = "direct", pfn
            if layout.sections_per_block:
                t.table_block = pfn // layout.section_pages // layout.sections_per_block
            continue
        if pfn is not None and not layout.sparse and max_pfn is not None and pfn < max_pfn:
            t.table_mem, t.table_pfn = "direct", pfn
            continue
        if _is_vmalloc(prog, t.address):
            t.table_mem = "vmalloc"
        elif fault:
            t.table_mem = "unknown"  # neither can be told: check_bias says unknown, not fail


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


def _is_vmalloc(prog: drgn.Program, addr: int) -> bool:
    try:
        from drgn.helpers.linux.mm import find_vmap_area
        return bool(find_vmap_area(prog, addr))
    except Exception:  # no vmap_area tree in this kernel or dump: unknown counts as no
        return False


def walk(prog: drgn.Program, geo: Geometry, missing: Optional[Missing] = None,
         progress: Optional[Progress] = None) -> Layout:
    """Walk every page_ext table of the kernel ``prog``, described by ``geo``.

    What cannot be read goes to ``missing``.  When the kernel's total_usage is
    unknown (optimized out) and no table exists, page_ext is taken as never
    allocated, and no client as active.
    """
    missing = missing if missing is not None else Missing()
    try:
        layout = walk_sparse(prog, geo, missing, progress) if geo.sparse else \
            walk_flat(prog, geo, missing, progress)
    except drgn.FaultError as e:
        raise TargetError(f"cannot read the memory model's tables: {e} (corrupt dump or wrong vmlinux?)") from None
    locate_tables(prog, layout)
    if layout.total_usage is None and not layout.tables and not missing.page_ext:
        for c in layout.clients:
            c.active = False
    return layout


# A table whose reads fail for this many chunks in a row is not probed further:
# the rest of it is taken as unreadable (a corrupt span costs no more than this).
GIVE_UP_CHUNKS = 16


def readable_end(layout: Layout, t: Table, max_pfn: Optional[int]) -> int:
    """The end pfn of ``t``'s entries worth reading: every entry of a
    section's table; a FLATMEM node's up to max_pfn plus its MAX_ORDER slack
    (a longer span is corrupt, and the extent check fails it)."""
    if layout.section_pages is not None:
        return t.end_pfn
    if max_pfn is None:
        return min(t.end_pfn, t.start_pfn + (1 << 32))
    slack = 2 * (layout.max_order_nr_pages or 1)
    return max(t.start_pfn, min(t.end_pfn, max_pfn + slack))


def table_for(layout: Layout, pfn: int) -> Optional[Table]:
    """The online table holding pfn's entry, or None (no table, or offline/invalid)."""
    for t in layout.tables:
        if t.state == ONLINE and t.start_pfn <= pfn < t.end_pfn:
            return t
    return None


def spans(layout: Layout, lo: int = 0, hi: int = 1 << 64,
          node: Optional[int] = None) -> Iterator[tuple[Table, int, int]]:
    """(table, a, b) for each online table overlapping pfns [lo, hi) (and on
    ``node``), clipped to [a, b), in pfn order."""
    for t in layout.online_tables():
        if node is not None and t.node != node:
            continue
        a, b = max(t.start_pfn, lo), min(t.end_pfn, hi)
        if a < b:
            yield t, a, b
