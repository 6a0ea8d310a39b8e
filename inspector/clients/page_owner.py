"""page_owner: every page's allocation record, decoded offline in bulk.

mm/page_owner.c keeps a ``struct page_owner`` in each page_ext entry at
``page_owner_ops.offset`` (v4.9+, 980ac1672e7e/9300d8dfd282) and two bits in
the entry's flags word: ``PAGE_EXT_OWNER`` (ever allocated) and, from v5.4,
``PAGE_EXT_OWNER_ACTIVE`` (37389167a281), renamed ``PAGE_EXT_OWNER_ALLOCATED``
in v5.5 (currently allocated).  For each page_ext table the walker found we
read the table and the section's memmap with one ``prog.read`` each and
unpack every entry with one precompiled :class:`struct.Struct` whose field
offsets and C types come from the target's DWARF, so whichever fields this
version's ``struct page_owner`` has (pid/ts v5.11, free_ts v5.13, tgid/comm
v5.18, free_pid/free_tgid v6.8) are decoded and absent ones are None.

Two selections exist.  :meth:`PageOwner.records` applies ours (``allocated``,
``freed`` or ``all`` head pages).  :meth:`PageOwner.debugfs_records` repeats
read_page_owner() of the target version step by step (start at min_low_pfn,
skip invalid MAX_ORDER blocks and buddy pages by their order, need OWNER and
ALLOCATED, skip pages not aligned to their order, skip handle 0), and
:meth:`PageOwner.debugfs_text` prints print_page_owner()'s text with the
format strings taken from the kernel image (:mod:`.kformat`).  Records are
yielded one at a time; only the stack cache grows (O(unique stacks)).
"""

from __future__ import annotations

import operator
import struct
from dataclasses import dataclass
from typing import Iterator, Optional

import drgn

from ..discover import Geometry, release_version, require_client
from ..model import Layout, Table
from ..target import TargetError
from ..walk import online_spans, online_table_for, read_entries
from .kformat import KernelNames, KernelStrings, Symbolizer, _enum_value, compile_format
from .memcg import MemcgNames
from .stackdepot import StackDepot

ALLOCATED, FREED, ALL = "allocated", "freed", "all"

# struct page_owner fields we know, in the order print_page_owner() passes them.
OWNER_FIELDS = ("order", "last_migrate_reason", "gfp_mask", "handle", "free_handle", "ts_nsec",
                "free_ts_nsec", "comm", "pid", "tgid", "free_pid", "free_tgid")


def _fmt_char(t: drgn.Type) -> str:
    t = t.unaliased()
    if t.kind == drgn.TypeKind.ARRAY:
        return f"{t.length}s"
    if t.kind == drgn.TypeKind.ENUM:
        t = t.type
    if t.kind == drgn.TypeKind.BOOL:
        return "?"
    signed = t.is_signed if t.kind == drgn.TypeKind.INT else False
    return {1: "b", 2: "h", 4: "i", 8: "q"}[t.size] if signed else {1: "B", 2: "H", 4: "I", 8: "Q"}[t.size]


def build_struct(fields: list[tuple[str, int, str]], size: int) -> tuple[struct.Struct, list[str]]:
    """A little-endian Struct of ``size`` bytes with each (name, offset, fmt)."""
    fmt, pos, names = "<", 0, []
    for name, off, ch in sorted(fields, key=lambda f: f[1]):
        if off < pos:
            continue  # overlapping union member: keep the first
        if off > pos:
            fmt += f"{off - pos}x"
        fmt += ch
        pos = off + struct.calcsize("<" + ch)
        names.append(name)
    if size > pos:
        fmt += f"{size - pos}x"
    return struct.Struct(fmt), names


def byte_preds(word_offset: int, mask: int, value: int, width: int) -> list[tuple[int, bytes]]:
    """``(word & mask) == value`` for a little-endian word of ``width`` bytes at
    ``word_offset``, as one (byte offset, 256-entry table) per byte it involves."""
    preds = []
    for i in range(width):
        m, v = (mask >> (8 * i)) & 0xFF, (value >> (8 * i)) & 0xFF
        if m:
            preds.append((word_offset + i, bytes(1 if (b & m) == v else 0 for b in range(256))))
    return preds


def scan(buf: bytes, stride: int, preds: list[tuple[int, bytes]]) -> list[int]:
    """Indices of the ``stride``-byte records in ``buf`` matching every predicate.

    Each predicate looks at one byte column (``buf[off::stride]``, a C-level
    slice) through a translate table, so a section's 32768 entries are
    filtered without a Python step per entry; only the hits are unpacked."""
    marked = None
    for off, table in preds:
        col = buf[off::stride].translate(table)
        marked = col if marked is None else \
            (int.from_bytes(marked, "little") & int.from_bytes(col, "little")).to_bytes(len(col), "little")
    if marked is None:
        return list(range(len(buf) // stride))
    out, i = [], marked.find(1)
    while i >= 0:
        out.append(i)
        i = marked.find(1, i + 1)
    return out


# Record's fields from struct page_owner, in Record's order.
RECORD_FIELDS = ("order", "gfp_mask", "handle", "free_handle", "last_migrate_reason", "ts_nsec", "free_ts_nsec",
                 "pid", "tgid", "comm", "free_pid", "free_tgid")
_COMM = RECORD_FIELDS.index("comm")


@dataclass(slots=True)
class Record:
    """One page_owner record (None: the field does not exist in this kernel)."""

    pfn: int
    allocated: bool
    order: int
    gfp_mask: int
    handle: int
    free_handle: Optional[int]
    last_migrate_reason: int
    ts_nsec: Optional[int]
    free_ts_nsec: Optional[int]
    pid: Optional[int]
    tgid: Optional[int]
    comm: Optional[str]
    free_pid: Optional[int]
    free_tgid: Optional[int]
    page_flags: int
    pageblock_mt: Optional[int]
    memcg_data: int = 0


class PageOwner:
    """The page_owner decoder for one target."""

    def __init__(self, prog: drgn.Program, geo: Geometry, layout: Layout):
        self.prog, self.geo, self.layout = prog, geo, layout
        self.client = require_client(geo, "page_owner", "CONFIG_PAGE_OWNER")
        self.names = KernelNames(prog)
        self.symbolize = Symbolizer(prog)
        self.depot = StackDepot(prog, self.symbolize)
        self.strings = KernelStrings(prog)
        self._setup_entry()
        self._setup_page()
        self._setup_pageblock()
        self.memcg = MemcgNames(prog, release_version(geo.release) or (0, 0)) if self.has_memcg else None
        self.invalid_records = 0
        self._compiled_formats: dict = {}
        self._gfp_mt_names: dict[int, str] = {}

    # -- layouts from DWARF ---------------------------------------------------
    def _setup_entry(self) -> None:
        prog = self.prog
        try:
            po = prog.type("struct page_owner")
        except LookupError:
            raise TargetError("no struct page_owner in the debug info (pre-v4.9 layout is not supported)") \
                from None
        flags = prog.constant("PAGE_EXT_OWNER").type_
        bits = dict(flags.enumerators)
        self.bit_owner = 1 << bits["PAGE_EXT_OWNER"]
        # v5.5 PAGE_EXT_OWNER_ALLOCATED; v5.4 PAGE_EXT_OWNER_ACTIVE (37389167a281);
        # before v5.4 PAGE_EXT_OWNER itself was cleared on free.
        alloc = bits.get("PAGE_EXT_OWNER_ALLOCATED", bits.get("PAGE_EXT_OWNER_ACTIVE"))
        self.bit_allocated = 1 << alloc if alloc is not None else self.bit_owner
        word = prog.type("struct page_ext").member("flags").type.size
        base = self.client.offset
        fields = [("ext_flags", 0, "Q" if word == 8 else "I")]
        self.owner_fields = []
        for m in po.members:
            if m.name in OWNER_FIELDS:
                fields.append((m.name, base + m.bit_offset // 8, _fmt_char(m.type)))
                self.owner_fields.append(m.name)
        self.entry_struct, self.entry_names = build_struct(fields, self.geo.entry_size)
        both = self.bit_owner | self.bit_allocated
        self.owner_preds = byte_preds(0, self.bit_owner, self.bit_owner, word)
        self.allocated_preds = byte_preds(0, both, both, word)
        self._idx = {n: i for i, n in enumerate(self.entry_names)}
        # Record's owner fields out of an unpacked entry in one C call; a field
        # this kernel lacks points at the None appended to the tuple.
        absent = len(self.entry_names)
        self._fields_of = operator.itemgetter(*(self._idx.get(n, absent) for n in RECORD_FIELDS))

    def _setup_page(self) -> None:
        pt = self.prog.type("struct page")
        self.page_size_struct = pt.size
        fields = [("flags", 0, "Q")]
        fields.append(("private", drgn.offsetof(pt, "private"), "Q"))
        fields.append(("page_type", drgn.offsetof(pt, "page_type" if pt.has_member("page_type")
                                                   else "_mapcount"), "I"))
        # print_page_owner_memcg() (v5.18, fcf8935832b8) adds "Slab cache page"
        # / "Charged ... memcg" lines from page->memcg_data (CONFIG_MEMCG): .memcg.
        self.has_memcg = pt.has_member("memcg_data")
        if self.has_memcg:
            fields.append(("memcg_data", drgn.offsetof(pt, "memcg_data"), "Q"))
        self.page_struct, pnames = build_struct(fields, pt.size)
        self._pidx = {n: i for i, n in enumerate(pnames)}
        # PageBuddy(): from v4.18 (6e292b9be7f4, "mm: split page_type out from
        # _mapcount") page_type with PAGE_TYPE_BASE 0xf0000000 and PG_buddy 0x80
        # (a *cleared* bit marks the type; #defines, so not in DWARF); from
        # v6.12 (4ffca5a96678, "mm: support only one page_type per page") the
        # top byte equals PGTY_buddy, an enumerator we read from the DWARF.
        pgty = None
        try:
            pgty = self.prog.constant("PGTY_buddy").value_()
        except LookupError:
            pass
        pt_off = drgn.offsetof(pt, "page_type" if pt.has_member("page_type") else "_mapcount")
        if pgty is not None:
            self.is_buddy = lambda t: (t >> 24) == pgty
            self.buddy_preds = byte_preds(pt_off, 0xFF000000, pgty << 24, 4)
        else:
            self.is_buddy = lambda t: (t & 0xF0000080) == 0xF0000000
            self.buddy_preds = byte_preds(pt_off, 0xF0000080, 0xF0000000, 4)
        zone = self.prog.type("struct zone")
        self.nr_orders = zone.member("free_area").type.length  # MAX_ORDER (<6.4) / MAX_PAGE_ORDER+1
        self.max_order_nr_pages = 1 << (self.nr_orders - 1)

    def _setup_pageblock(self) -> None:
        prog = self.prog
        enum = dict(prog.constant("NR_PAGEBLOCK_BITS").type_.enumerators) \
            if _enum_value(prog, "NR_PAGEBLOCK_BITS") is not None else {}
        if "PB_migrate_end" in enum:  # v2.6.24 .. v6.14: PB_migrate..PB_migrate_end
            self.mt_mask = (1 << (enum["PB_migrate_end"] - enum.get("PB_migrate", 0) + 1)) - 1
            self.nr_pageblock_bits = enum["NR_PAGEBLOCK_BITS"]
        else:
            self.mt_mask = 7
            self.nr_pageblock_bits = enum.get("NR_PAGEBLOCK_BITS", 4)
        self.pageblock_order, self.pageblock_order_source = self._pageblock_order()
        try:
            self.mobility_disabled = bool(prog["page_group_by_mobility_disabled"].value_())
        except KeyError:
            self.mobility_disabled = False
        movable = self.names.gfp_bit("__GFP_MOVABLE")
        reclaimable = self.names.gfp_bit("__GFP_RECLAIMABLE")
        if movable is None or reclaimable is None:
            raise TargetError("cannot find __GFP_MOVABLE/__GFP_RECLAIMABLE in the target's gfp names")
        self.gfp_movable_mask = movable | reclaimable
        self.gfp_movable_shift = min(movable, reclaimable).bit_length() - 1
        ms = prog.type("struct mem_section")
        self.ms_usage_off = drgn.offsetof(ms, "usage")
        self.usage_bitmap_off = drgn.offsetof(prog.type("struct mem_section_usage"), "pageblock_flags")

    def _pageblock_order(self) -> tuple[int, str]:
        """pageblock_order: a variable with HUGETLB_PAGE_SIZE_VARIABLE, else a
        macro; then we measure it from the usemap stride of early sections
        (sparse_init_nid() carves them out of one allocation, one
        mem_section_usage_size() apart: sizeof + usemap_size())."""
        try:
            return self.prog["pageblock_order"].value_(), "variable pageblock_order"
        except KeyError:
            pass
        if self.geo.sparse:
            from drgn.helpers.linux.mmzone import nr_to_section
            usages = []
            for s in self.layout.sections:
                if s.present and s.early:
                    try:
                        usages.append((s.node, s.nr, nr_to_section(self.prog, s.nr).usage.value_()))
                    except drgn.FaultError:
                        pass
            strides = {b[2] - a[2] for a, b in zip(usages, usages[1:]) if a[0] == b[0] and b[1] == a[1] + 1}
            hdr = drgn.offsetof(self.prog.type("struct mem_section_usage"), "pageblock_flags")
            strides = {s - hdr for s in strides if s > hdr}
            if len(strides) == 1:
                bits = strides.pop() * 8
                blocks = bits // self.nr_pageblock_bits
                if blocks and blocks & (blocks - 1) == 0:
                    shift = self.geo.section_pages.bit_length() - 1
                    return shift - (blocks.bit_length() - 1), "usemap stride of early sections"
        # Last resort, include/linux/pageblock-flags.h: MAX_ORDER - 1 without
        # CONFIG_HUGETLB_PAGE (hstates absent), else HUGETLB_PAGE_ORDER (x86: PMD).
        hugetlb = _has_symbol(self.prog, "hstates")
        order = min(9, self.nr_orders - 1) if hugetlb else self.nr_orders - 1
        return order, "pageblock-flags.h rule"

    # -- reading ----------------------------------------------------------------
    def _memmap(self, start_pfn: int, n: int) -> Optional[bytes]:
        return read_memmap(self.prog, start_pfn, n, self.page_size_struct)

    def _usemap(self, table: Table) -> Optional[bytes]:
        if table.section is None:
            return None  # FLATMEM: zone->pageblock_flags (not handled)
        from drgn.helpers.linux.mmzone import nr_to_section
        try:
            usage = nr_to_section(self.prog, table.section).usage.value_()
            if not usage:
                return None
            blocks = max(1, table.nr_pages >> self.pageblock_order)
            nbytes = (blocks * self.nr_pageblock_bits + 63) // 64 * 8
            return self.prog.read(usage + self.usage_bitmap_off, nbytes)
        except drgn.FaultError:
            return None

    def _block_mt(self, usemap: Optional[bytes], table: Table, pfn: int) -> Optional[int]:
        """get_pfnblock_flags_mask(page, pfn, MIGRATETYPE_MASK), SPARSEMEM."""
        if usemap is None:
            return None
        bitidx = ((pfn - table.start_pfn) >> self.pageblock_order) * self.nr_pageblock_bits
        word = int.from_bytes(usemap[bitidx // 64 * 8: bitidx // 64 * 8 + 8], "little")
        return (word >> (bitidx % 64)) & self.mt_mask

    def gfp_migratetype(self, gfp: int) -> int:
        if self.mobility_disabled:
            return 0  # MIGRATE_UNMOVABLE
        return (gfp & self.gfp_movable_mask) >> self.gfp_movable_shift

    def _record(self, pfn: int, e: tuple, page_flags: int, block_mt: Optional[int]) -> Record:
        v = list(self._fields_of(e + (None,)))
        comm = v[_COMM]
        if comm is not None:
            v[_COMM] = comm.split(b"\0", 1)[0].decode("latin-1")
        return Record(pfn, bool(e[0] & self.bit_allocated), *v, page_flags, block_mt)

    def _read_table(self, t: Table, lo: int, hi: int):
        """(entries bytes, memmap bytes, usemap) for pfns [lo, hi) of table t."""
        raw = read_entries(self.prog, t, lo, hi, self.geo.entry_size)
        return raw, self._memmap(lo, hi - lo), self._usemap(t)

    def records(self, which: str = ALLOCATED, lo: Optional[int] = None, hi: Optional[int] = None,
                heads_only: bool = True) -> Iterator[Record]:
        """Our selection: pages with PAGE_EXT_OWNER set, filtered by ``which``."""
        esz = self.entry_struct
        psz = self.page_struct
        i_order = self._idx["order"]
        preds = self.allocated_preds if which == ALLOCATED else self.owner_preds
        for t, a, b in online_spans(self.layout, lo or 0, 1 << 64 if hi is None else hi):
            raw, memmap, usemap = self._read_table(t, a, b)
            for k in scan(raw, esz.size, preds):
                e = esz.unpack_from(raw, k * esz.size)
                alloc = bool(e[0] & self.bit_allocated)
                if which == FREED and alloc:
                    continue
                pfn = a + k
                order = e[i_order]
                if heads_only and order < 64 and pfn & ((1 << order) - 1):
                    continue
                p = psz.unpack_from(memmap, k * psz.size) if memmap else None
                rec = self._record(pfn, e, p[0] if p else 0, self._block_mt(usemap, t, pfn))
                if p and self.has_memcg:
                    rec.memcg_data = p[self._pidx["memcg_data"]]
                yield rec

    def debugfs_records(self, lo: Optional[int] = None, hi: Optional[int] = None) -> Iterator[Record]:
        """The records read_page_owner() of the target returns, in its order."""
        try:
            first = self.prog["min_low_pfn"].value_()
            last = self.prog["max_pfn"].value_()
        except KeyError:
            first, last = 0, 1 << 64
        if lo is not None:
            first = max(first, lo)
        if hi is not None:
            last = min(last, hi)
        esz, psz = self.entry_struct, self.page_struct
        i_order, i_handle = self._idx["order"], self._idx["handle"]
        p_private = self._pidx["private"]
        i_memcg = self._pidx.get("memcg_data")
        for t, a, b in online_spans(self.layout, first, last):
            raw, memmap, usemap = self._read_table(t, a, b)
            if memmap is None:
                continue  # pfn_valid() would be false
            # read_page_owner() walks pfn by pfn, skipping each free buddy
            # block it meets (PageBuddy head: 1 << order pages, or one page if
            # the order is out of range), and prints pages with OWNER and
            # ALLOCATED set.  The same, with the per-page tests done by scan().
            skips, until = [], 0
            for k in scan(memmap, psz.size, self.buddy_preds):
                if k < until:
                    continue  # inside a block already skipped: never visited
                order = psz.unpack_from(memmap, k * psz.size)[p_private]
                until = k + (1 << order) if order < self.nr_orders else k + 1
                skips.append((k, until))
            j, nskips = 0, len(skips)
            for k in scan(raw, esz.size, self.allocated_preds):
                while j < nskips and skips[j][1] <= k:
                    j += 1
                if j < nskips and skips[j][0] <= k:
                    continue
                e = esz.unpack_from(raw, k * esz.size)
                pfn = a + k
                order = e[i_order]
                if order >= 64 or pfn & ((1 << order) - 1):
                    continue
                if not e[i_handle]:
                    continue
                p = psz.unpack_from(memmap, k * psz.size)
                rec = self._record(pfn, e, p[0], self._block_mt(usemap, t, pfn))
                if self.has_memcg:
                    rec.memcg_data = p[i_memcg]
                yield rec

    def free_blocks(self, lo: Optional[int] = None, hi: Optional[int] = None) -> Iterator[tuple[int, int]]:
        """(pfn, order) of every free buddy block head (PageBuddy) in the tables."""
        psz = self.page_struct
        p_type, p_private = self._pidx["page_type"], self._pidx["private"]
        for t, a, b in online_spans(self.layout, lo or 0, 1 << 64 if hi is None else hi):
            memmap = self._memmap(a, b - a)
            if memmap is None:
                continue
            k = 0
            while k < b - a:
                p = psz.unpack_from(memmap, k * psz.size)
                if self.is_buddy(p[p_type]) and p[p_private] < self.nr_orders:
                    yield a + k, p[p_private]
                    k += 1 << p[p_private]
                else:
                    k += 1

    def record_at(self, pfn: int) -> Record:
        """The record of one pfn (tail pages included), or TargetError."""
        t = online_table_for(self.layout, pfn)
        if t is None:
            raise TargetError(self._no_page_ext(pfn))
        raw, memmap, usemap = self._read_table(t, pfn, pfn + 1)
        e = self.entry_struct.unpack_from(raw, 0)
        if not e[0] & self.bit_owner:
            raise TargetError(f"pfn {pfn:#x} has no page_owner record (never allocated since page_owner "
                              "was initialised)")
        p = self.page_struct.unpack_from(memmap, 0) if memmap else None
        rec = self._record(pfn, e, p[0] if p else 0, self._block_mt(usemap, t, pfn))
        if p and self.has_memcg:
            rec.memcg_data = p[self._pidx["memcg_data"]]
        return rec

    def _no_page_ext(self, pfn: int) -> str:
        if self.geo.sparse:
            sec = pfn // self.geo.section_pages
            known = {s.nr: s for s in self.layout.sections}
            if sec in known:
                state = "online" if known[sec].online else "offline"
                return f"pfn {pfn:#x} has no page_ext (section {sec} is present but {state}, without a table)"
            return f"pfn {pfn:#x} is outside memory (section {sec} is not present)"
        try:
            max_pfn = self.prog["max_pfn"].value_()
        except KeyError:
            max_pfn = None
        if max_pfn is not None and pfn >= max_pfn:
            return f"pfn {pfn:#x} is outside memory (max_pfn is {max_pfn:#x})"
        return f"pfn {pfn:#x} has no page_ext"

    def check_range(self, lo: int, hi: int) -> None:
        if not any(online_spans(self.layout, lo, hi)):
            raise TargetError(self._no_page_ext(lo) + f"; no page_ext anywhere in {lo:#x}-{hi:#x}")

    # -- the kernel's text ---------------------------------------------------------
    def _formats(self) -> tuple[bytes, bytes]:
        if not hasattr(self, "_fmt"):
            first = self.strings.find(b"Page allocated via order ")
            pfn_line = self.strings.find(b"PFN ", b" Block %lu type %s Flags ")
            if first is None or pfn_line is None:
                raise TargetError("cannot find print_page_owner()'s format strings in the kernel image")
            self._fmt = (first, pfn_line)
        return self._fmt

    def _first_line_args(self, r: Record, nconv: int) -> list:
        # print_page_owner() passes, in every version from v4.6: order, mask,
        # &mask, then pid (v5.11), tgid + comm (v5.18), ts (v5.11), free_ts
        # (v5.13 .. v6.6); a later format simply stops earlier.
        args = [r.order, r.gfp_mask, r.gfp_mask]
        if r.pid is not None:
            args.append(r.pid)
        if r.tgid is not None:
            args += [r.tgid, r.comm]
        if r.ts_nsec is not None:
            args.append(r.ts_nsec)
        if r.free_ts_nsec is not None:
            args.append(r.free_ts_nsec)
        return args[:nconv]

    def _ext(self, letters: bytes, value) -> str:
        if letters == b"Gg":
            return self.names.gfp(value)
        if letters == b"Gp":
            return self.names.page_flags(value)
        raise TargetError(f"unsupported %p{letters.decode()} in a page_owner format string")

    def _compiled(self, raw: bool):
        c = self._compiled_formats.get(raw)
        if c is None:
            first, pfn_line = self._formats()
            c = self._compiled_formats[raw] = (compile_format(first, self._ext, raw),
                                               compile_format(pfn_line, self._ext, raw))
        return c

    def debugfs_text(self, r: Record, raw: bool = True) -> str:
        """print_page_owner()'s text for one record, byte for byte.

        Each character stands for one byte (latin-1).  With ``raw`` the comm is
        the kernel's bytes, as debugfs gives them; otherwise it is escaped
        (for a terminal)."""
        first, pfn_line = self._compiled(raw)
        out = [first(self._first_line_args(r, first.nconv))]
        page_mt = self._gfp_mt_names.get(r.gfp_mask)
        if page_mt is None:
            page_mt = self._gfp_mt_names[r.gfp_mask] = self.names.migratetype(self.gfp_migratetype(r.gfp_mask))
        block_mt = r.pageblock_mt if r.pageblock_mt is not None else 0
        # "... Flags %pGp" (one argument, &page->flags) in 6.1; "Flags
        # %#lx(%pGp)" (page->flags twice) in older kernels (v4.6 7cd12b4abfd2).
        args = [r.pfn, page_mt, r.pfn >> self.pageblock_order, self.names.migratetype(block_mt)]
        args += [r.page_flags] * max(1, pfn_line.nconv - 4)
        out.append(pfn_line(args))
        stack = self.depot.text(r.handle)
        if stack is None:
            self.invalid_records += 1
            stack = f" <invalid handle {r.handle:#x}>\n"
        out.append(stack)
        if r.last_migrate_reason != -1:
            out.append("Page has been migrated, last migrate reason: "
                       f"{self.names.migrate_reason(r.last_migrate_reason)}\n")
        if r.memcg_data:
            out.append(self.memcg.text(r.memcg_data))
        out.append("\n")
        return "".join(out)


def read_memmap(prog: drgn.Program, start_pfn: int, n: int, page_struct_size: int) -> Optional[bytes]:
    """The ``struct page``s of pfns [start_pfn, start_pfn + n) in one read.

    The range lies within one page_ext table, i.e. one section (SPARSEMEM,
    memmap contiguous per section) or one node (FLATMEM)."""
    from drgn.helpers.linux.mm import pfn_to_page
    try:
        return prog.read(pfn_to_page(prog, start_pfn).value_(), n * page_struct_size)
    except (drgn.FaultError, LookupError, ValueError):
        return None


def _has_symbol(prog: drgn.Program, name: str) -> bool:
    try:
        prog.symbol(name)
        return True
    except LookupError:
        return False
