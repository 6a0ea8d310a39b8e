"""page_alloc_tagging: memory allocation profiling's per-page tag, decoded in bulk.

With CONFIG_MEM_ALLOC_PROFILING (v6.10, 22d407b164ff "lib: add allocation
tagging support for memory allocation profiling"; pages tagged from
b951aaff5035 "mm: enable page allocation tagging") every allocation call
site wrapped in ``alloc_hooks()`` owns a static ``struct alloc_tag`` in the
``alloc_tags`` section: a ``struct codetag`` (file, line, function, module)
and a ``__percpu`` pointer to ``struct alloc_tag_counters {bytes, calls}``,
whose per-CPU sum is one line of /proc/allocinfo.  For page allocations the
tag is also remembered per page, in page_ext: lib/alloc_tag.c registers the
client ``page_alloc_tagging_ops`` whose data is one ``union codetag_ref``, a
pointer to the tag's ``ct``.  post_alloc_hook() sets it on the *first page*
of each allocation (``pgalloc_tag_add``: bytes += PAGE_SIZE << order,
calls += 1) and free_pages_prepare() clears it (NULL).  Splitting an
allocation (split_page(), alloc_pages_exact(), THP splits:
``pgalloc_tag_split``) points each new piece's first page at the same tag
and adds one call per piece, leaving the bytes alone.  So a page_ext ref is
one live page allocation: its size is not stored, and we take it from the
folio order of a compound head (``folio->_flags_1 & 0xff``), else from
page_owner's order when page_owner is on and the record is a real one (not
the order-0 ``early_handle`` record init_pages_in_zone() gives pages that
were allocated before page_owner started), else 0 when the next page is
tagged too (it starts another allocation), else order 0, counted as
assumed: the pages of such a tag are then a lower bound.  With
CONFIG_MEM_ALLOC_PROFILING_DEBUG a ref may hold CODETAG_EMPTY, ``(void *)1``
("deliberately untagged": pages freed from memblock, hwpoisoned ones).

The kernel's counters of a tag also count what page_ext cannot see: slab
objects (slabobj_ext) and percpu chunks allocated at the same site, and
vmalloc's page arrays.  So refs <= calls and pages * PAGE_SIZE <= bytes for
every tag, with equality exactly when the site allocated nothing but pages;
pages allocated before page_ext was initialised are in neither.

Tagging happens only while the static key ``mem_alloc_profiling_key`` is on
(boot: ``sysctl.vm.mem_profiling=0|1|never``; later: the vm.mem_profiling
sysctl).  ``never`` also makes need_page_alloc_tagging() false, so the
client gets no page_ext space.  From v6.13 (4835f747d3ed "alloc_tag: support
for page allocation tag compression") ``sysctl.vm.mem_profiling=1,compressed``
keeps a tag *index* in spare page->flags bits instead and again asks page_ext
for nothing; we say so rather than decode page flags.

Each page_ext table is read with one ``prog.read`` (and its memmap with one
more); non-NULL refs are found by byte columns, as in page_owner's scan, and
only they are unpacked.  Each distinct tag address is checked against the
kernel's own list of tags (the codetag type's modules, as /proc/allocinfo
walks them) and decoded once; anything else is an invalid tag, counted and
shown as ``<invalid tag 0x...>``.  The kernel's counters of every tag are
summed over the possible CPUs with one read per CPU and cluster of counters.
"""

from __future__ import annotations

import struct
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterator, Optional

import drgn

from ..discover import Geometry, require_client
from ..model import Layout, Table
from ..target import TargetError
from ..walk import entry_address, online_spans, online_table_for, read_entries
from .page_owner import read_memmap

CLIENT = "page_alloc_tagging"
CONFIG = "CONFIG_MEM_ALLOC_PROFILING"
CODETAG_EMPTY = 1  # include/linux/alloc_tag.h, CONFIG_MEM_ALLOC_PROFILING_DEBUG (v6.10+)
CODETAG_FLAG_INACCURATE = 1  # include/linux/codetag.h (b9e2f58ffb84, 6.17 merge window): "accurate:no"
MAX_LINENO = 10_000_000  # a sanity bound for tags read without the kernel's list

# Where a tagged page's order came from.
COMPOUND, PAGE_OWNER, NEXT_TAGGED, ASSUMED = "compound", "page_owner", "next_page_tagged", "assumed_order_0"


@dataclass(frozen=True)
class Tag:
    """One ``struct alloc_tag`` (its ``ct`` is at ``address``)."""

    address: int
    filename: str
    lineno: int
    function: str
    modname: Optional[str]
    flags: int
    counters: int  # __percpu struct alloc_tag_counters *

    def text(self) -> str:
        """codetag_to_text() (lib/codetag.c, unchanged since v6.10)."""
        if self.modname is not None:
            return f"{self.filename}:{self.lineno} [{self.modname}] func:{self.function}"
        return f"{self.filename}:{self.lineno} func:{self.function}"

    @property
    def inaccurate(self) -> bool:
        return bool(self.flags & CODETAG_FLAG_INACCURATE)


def invalid_text(address: int) -> str:
    return f"<invalid tag {address:#x}>"


@dataclass
class TagPages:
    allocations: int = 0  # page_ext refs to the tag: one per live page allocation (or split piece)
    pages: int = 0  # sum of 1 << order over them
    assumed: int = 0  # refs whose order nothing recorded (taken as 0: pages is then a lower bound)


@dataclass
class Scan:
    """What the page_ext refs of a pfn range say."""

    entries: int = 0  # page_ext entries read
    null: int = 0  # no tag
    empty: int = 0  # CODETAG_EMPTY
    tags: dict[int, TagPages] = field(default_factory=dict)  # ref -> counts (valid and invalid refs)
    invalid: dict[int, int] = field(default_factory=dict)  # invalid ref -> entries
    order_source: Counter = field(default_factory=Counter)

    @property
    def tagged(self) -> int:
        return sum(t.allocations for t in self.tags.values())

    @property
    def pages(self) -> int:
        return sum(t.pages for t in self.tags.values())


def nonzero_indices(buf: bytes, stride: int, offset: int, width: int) -> list[int]:
    """Indices of the ``stride``-byte records in ``buf`` whose ``width`` bytes at
    ``offset`` are not all zero; byte columns OR-ed at C speed, no Python step
    per record."""
    n = len(buf) // stride
    if n == 0:
        return []
    nz = bytes([0]) + bytes([1]) * 255
    acc = 0
    for i in range(width):
        acc |= int.from_bytes(buf[offset + i::stride][:n].translate(nz), "little")
    marked = acc.to_bytes(n, "little")
    out, i = [], marked.find(1)
    while i >= 0:
        out.append(i)
        i = marked.find(1, i + 1)
    return out


def _member_offset(t: drgn.Type, name: str) -> int:
    return drgn.offsetof(t, name)


def require_alloc_tagging(prog: drgn.Program, geo: Geometry):
    """The active page_alloc_tagging client, or TargetError saying why not."""
    if not any(c.name == CLIENT for c in geo.clients):
        raise TargetError(f"this kernel has no {CLIENT} ({CONFIG} is off, or the kernel is older "
                          "than 6.10)")
    # v6.13, 4835f747d3ed: with "sysctl.vm.mem_profiling=1,compressed" the
    # references live in page->flags and page_ext holds none.
    if _key_on(prog, "mem_profiling_compressed"):
        raise TargetError(f"{CLIENT} keeps its tag references in page flags in this boot "
                          "(sysctl.vm.mem_profiling=...,compressed, v6.13+), not in page_ext; "
                          "boot without ',compressed' to use page_ext")
    client = next(c for c in geo.clients if c.name == CLIENT)
    if not client.active and _key_on(prog, "mem_alloc_profiling_key") is False:
        raise TargetError(f"{CLIENT} is compiled in but inactive in this boot: memory allocation "
                          "profiling is off (booted with sysctl.vm.mem_profiling=0 or never, or "
                          "switched off with the vm.mem_profiling sysctl); "
                          f"{client.how_to_enable or 'boot with sysctl.vm.mem_profiling=1'}")
    return require_client(geo, CLIENT, CONFIG)


def _key_on(prog: drgn.Program, name: str) -> Optional[bool]:
    try:
        key = prog[name]
    except KeyError:
        return None
    try:
        return key.key.enabled.counter.value_() > 0
    except (AttributeError, LookupError, drgn.FaultError):
        return None


class AllocTags:
    """The page_alloc_tagging decoder for one target."""

    def __init__(self, prog: drgn.Program, geo: Geometry, layout: Layout):
        self.prog, self.geo, self.layout = prog, geo, layout
        self.client = require_alloc_tagging(prog, geo)
        self.ptr_size = prog.type("union codetag_ref").size
        self.ptr_fmt = "<Q" if self.ptr_size == 8 else "<I"
        self._setup_tag_struct()
        self._setup_page()
        self._setup_owner()
        self._tags: dict[int, Optional[Tag]] = {}
        self._strings: dict[int, Optional[str]] = {}
        self._catalogue: Optional[list[int]] = None
        self._known: Optional[set[int]] = None
        self._raw: dict[int, tuple] = {}  # tag address -> unpacked struct alloc_tag
        self.catalogue_note: Optional[str] = None

    # -- layouts from DWARF -----------------------------------------------------
    def _setup_tag_struct(self) -> None:
        prog = self.prog
        at = prog.type("struct alloc_tag")
        ct = prog.type("struct codetag")
        self.ct_off = _member_offset(at, "ct")  # 0: ref->ct == &tag->ct == tag
        base = self.ct_off
        p = "Q" if self.ptr_size == 8 else "I"
        fields = [("flags", base + _member_offset(ct, "flags"), "I"),
                  ("lineno", base + _member_offset(ct, "lineno"), "I"),
                  ("modname", base + _member_offset(ct, "modname"), p),
                  ("function", base + _member_offset(ct, "function"), p),
                  ("filename", base + _member_offset(ct, "filename"), p),
                  ("counters", _member_offset(at, "counters"), p)]
        fields.sort(key=lambda f: f[1])
        fmt, pos = "<", 0
        for _name, off, ch in fields:
            fmt += f"{off - pos}x" if off > pos else ""
            fmt += ch
            pos = off + struct.calcsize("<" + ch)
        fmt += f"{at.size - pos}x" if at.size > pos else ""
        self.tag_struct = struct.Struct(fmt)
        self.tag_size = at.size
        names = [f[0] for f in fields]
        self._tag_idx = tuple(names.index(n) for n in ("flags", "lineno", "modname", "function",
                                                       "filename", "counters"))
        ctr = prog.type("struct alloc_tag_counters")
        self.ctr_size = ctr.size
        self.ctr_bytes_off = _member_offset(ctr, "bytes")
        self.ctr_calls_off = _member_offset(ctr, "calls")

    def _setup_page(self) -> None:
        prog = self.prog
        pt = prog.type("struct page")
        self.page_struct_size = pt.size
        try:
            self.head_bit = 1 << prog.constant("PG_head").value_()
        except LookupError:
            self.head_bit = 0
        # folio_order(): folio->_flags_1 & 0xff, the first tail page's flags
        # word (v6.6, ebc1baf5c9b4 "mm: free up a word in the first tail
        # page"), every kernel that has alloc tags.
        try:
            self.flags1_off = drgn.offsetof(prog.type("struct folio"), "_flags_1")
        except (LookupError, ValueError):
            self.flags1_off = None

    def _setup_owner(self) -> None:
        """page_owner's order and PAGE_EXT_OWNER_ALLOCATED, from the same entries."""
        self.owner = None
        owner = next((c for c in self.geo.clients if c.name == "page_owner" and c.active), None)
        if owner is None:
            return
        try:
            po = self.prog.type("struct page_owner")
            m = po.member("order")
            h = po.member("handle")
            bit = self.prog.constant("PAGE_EXT_OWNER_ALLOCATED").value_()
            word = drgn.sizeof(self.prog.type("struct page_ext").member("flags").type)
        except LookupError:
            return
        fmts = {1: "<B", 2: "<H", 4: "<I", 8: "<Q"}
        msize, hsize = drgn.sizeof(m.type), drgn.sizeof(h.type)
        if msize not in fmts or hsize not in fmts:
            return
        # init_pages_in_zone() gives every page allocated before page_owner
        # started (but maybe after page_ext, so tagged) a record of order 0
        # with the dummy early_handle: that order says nothing.
        try:
            early = self.prog.object("early_handle", drgn.FindObjectFlags.VARIABLE, "page_owner.c").value_()
        except (LookupError, drgn.FaultError):
            early = None
        self.owner = (struct.Struct("<Q" if word == 8 else "<I"), 1 << bit,
                      owner.offset + m.bit_offset // 8, struct.Struct(fmts[msize]),
                      owner.offset + h.bit_offset // 8, struct.Struct(fmts[hsize]), early)

    # -- the kernel's list of tags ----------------------------------------------
    def catalogue(self) -> list[int]:
        """Every tag address, in /proc/allocinfo's order (codetag_next_ct())."""
        if self._catalogue is None:
            self._catalogue = []
            for start, stop, size in self._ranges():
                try:
                    raw = self.prog.read(start, stop - start)
                except drgn.FaultError:
                    self.catalogue_note = f"cannot read the tags at {start:#x}-{stop:#x}"
                    continue
                for off in range(0, stop - start - size + 1, size):
                    addr = start + off
                    self._raw[addr + self.ct_off] = self.tag_struct.unpack_from(raw, off)
                    self._catalogue.append(addr + self.ct_off)
        return self._catalogue

    def _ranges(self) -> list[tuple[int, int, int]]:
        """(start, stop, tag size) of each module's alloc_tags, vmlinux first."""
        prog = self.prog
        try:
            cttype = prog.object("alloc_tag_cttype", drgn.FindObjectFlags.VARIABLE, "alloc_tag.c")
            cttype = cttype.read_()
            if cttype.value_() and cttype.value_() < (1 << 64) - 4095:  # IS_ERR_OR_NULL
                from drgn.helpers.linux.idr import idr_for_each
                size = cttype.desc.tag_size.value_()
                cmod_t = prog.type("struct codetag_module")
                out = []
                for _id, entry in idr_for_each(cttype.mod_idr.address_of_()):
                    cmod = drgn.Object(prog, prog.pointer_type(cmod_t), entry.value_())
                    start = cmod.range.start.value_() - self.ct_off
                    stop = cmod.range.stop.value_() - self.ct_off
                    if size and start < stop:
                        out.append((start, stop, size))
                return out
            self.catalogue_note = "alloc_tag_cttype is not registered"
        except (LookupError, drgn.FaultError, AttributeError, ValueError) as e:
            self.catalogue_note = f"cannot walk alloc_tag_cttype ({e}); vmlinux tags only"
        # The vmlinux range alone, from the linker's section symbols.
        try:
            start = prog.symbol("__start_alloc_tags").address
            stop = prog.symbol("__stop_alloc_tags").address
            return [(start, stop, self.tag_size)] if start < stop else []
        except LookupError:
            return []

    def _string(self, addr: int) -> Optional[str]:
        s = self._strings.get(addr, False)
        if s is False:
            s = None
            if addr:
                try:
                    s = drgn.Object(self.prog, "char *", addr).string_().decode("latin-1")
                except (drgn.FaultError, ValueError):
                    s = None
            self._strings[addr] = s
        return s

    def known(self) -> set[int]:
        """The kernel's tag addresses (empty when its list cannot be read)."""
        if self._known is None:
            self._known = set(self.catalogue())
        return self._known

    def tag(self, addr: int) -> Optional[Tag]:
        """The tag a ref points at, or None when the ref is not a tag."""
        if addr in self._tags:
            return self._tags[addr]
        known = self.known()
        raw = self._raw.get(addr) if addr in known else None
        if raw is None and not known and addr % 8 == 0:
            # No list of tags to check against: accept a readable, plausible one.
            try:
                raw = self.tag_struct.unpack(self.prog.read(addr - self.ct_off, self.tag_size))
            except drgn.FaultError:
                raw = None
        tag = None
        if raw is not None:
            flags, lineno, modname, function, filename, counters = (raw[i] for i in self._tag_idx)
            fn, fl = self._string(function), self._string(filename)
            mod = self._string(modname) if modname else None
            if fn is not None and fl is not None and (modname == 0 or mod is not None) \
                    and (addr in known or lineno < MAX_LINENO):
                tag = Tag(addr, fl, lineno, fn, mod, flags, counters)
        self._tags[addr] = tag
        return tag

    # -- the kernel's counters --------------------------------------------------
    def kernel_counters(self) -> dict[int, tuple[int, int]]:
        """tag address -> (bytes, calls) summed over the possible CPUs, as
        alloc_tag_read() does (bytes printed signed, calls unsigned)."""
        from drgn.helpers.linux.cpumask import for_each_possible_cpu
        from drgn.helpers.linux.percpu import per_cpu_ptr

        tags = [(a, self._raw[a][self._tag_idx[5]]) for a in self.catalogue()]
        if not tags:
            return {}
        probe = 1 << 12
        offsets = []
        for cpu in for_each_possible_cpu(self.prog):
            p = per_cpu_ptr(drgn.Object(self.prog, "unsigned long *", probe), cpu).value_()
            offsets.append((p - probe) & 0xFFFFFFFFFFFFFFFF)
        # Clusters of nearby counters (kernel tags' are adjacent in
        # .data..percpu), one read per CPU and cluster.
        ptrs = sorted({c for _, c in tags})
        clusters, cur = [], [ptrs[0]]
        for p in ptrs[1:]:
            if p - cur[-1] > 65536:
                clusters.append(cur)
                cur = []
            cur.append(p)
        clusters.append(cur)
        sums: dict[int, list[int]] = {p: [0, 0] for p in ptrs}
        ub, uc = struct.Struct("<Q").unpack_from, struct.Struct("<Q").unpack_from
        for off in offsets:
            for cl in clusters:
                lo, hi = cl[0], cl[-1] + self.ctr_size
                try:
                    buf = self.prog.read((lo + off) & 0xFFFFFFFFFFFFFFFF, hi - lo)
                except drgn.FaultError:
                    continue
                for p in cl:
                    s = sums[p]
                    s[0] += ub(buf, p - lo + self.ctr_bytes_off)[0]
                    s[1] += uc(buf, p - lo + self.ctr_calls_off)[0]
        out = {}
        for addr, c in tags:
            b, n = sums[c]
            b &= 0xFFFFFFFFFFFFFFFF
            out[addr] = (b - (1 << 64) if b >= 1 << 63 else b, n & 0xFFFFFFFFFFFFFFFF)
        return out

    # -- page_ext ------------------------------------------------------------------
    def _order(self, k: int, raw: bytes, memmap: Optional[bytes], pfn: int,
               next_tagged: bool) -> tuple[int, str]:
        """The order of the allocation whose first page is entry k of raw."""
        psz = self.page_struct_size
        if memmap is not None and self.head_bit:
            flags = int.from_bytes(memmap[k * psz: k * psz + 8], "little")
            if flags & self.head_bit and self.flags1_off is not None:
                # _flags_1 lies in the first tail page: past this chunk when
                # the head is its last page (a one-pfn read, or a gigantic page).
                off = k * psz + self.flags1_off
                if off < len(memmap):
                    return memmap[off], COMPOUND
                pair = read_memmap(self.prog, pfn, 2, psz)
                if pair is not None:
                    return pair[self.flags1_off], COMPOUND
        if self.owner is not None:
            word, bit, order_off, order_st, handle_off, handle_st, early = self.owner
            esz = self.geo.entry_size
            if word.unpack_from(raw, k * esz)[0] & bit and \
                    handle_st.unpack_from(raw, k * esz + handle_off)[0] != early:
                order = order_st.unpack_from(raw, k * esz + order_off)[0]
                if order < 64:
                    return order, PAGE_OWNER
        # Only an allocation's first page is tagged: a tagged next page starts
        # another one (or another split piece), so this one is a single page.
        if next_tagged:
            return 0, NEXT_TAGGED
        return 0, ASSUMED

    def chunks(self, lo: int = 0, hi: int = 1 << 64) -> Iterator[tuple[int, int, list[tuple[int, int, int, str]]]]:
        """(first pfn, entries read, [(pfn, ref, order, order source)]) per
        table: every non-NULL ref in [lo, hi), one read of the table and one
        of its memmap."""
        esz = self.geo.entry_size
        off = self.client.offset
        unpack = struct.Struct(self.ptr_fmt).unpack_from
        for t, a, b in online_spans(self.layout, lo, hi):
            raw = read_entries(self.prog, t, a, b, esz)
            hits = nonzero_indices(raw, esz, off, self.ptr_size)
            memmap = read_memmap(self.prog, a, b - a, self.page_struct_size) if hits else None
            out = []
            for i, k in enumerate(hits):
                nxt = i + 1 < len(hits) and hits[i + 1] == k + 1
                if not nxt and k + 1 == b - a and b < t.start_pfn + t.nr_pages:
                    nxt = self._ref_at(t, b) != 0  # the next page is past the range asked for
                order, src = self._order(k, raw, memmap, a + k, nxt)
                out.append((a + k, unpack(raw, k * esz + off)[0], order, src))
            yield a, b - a, out

    def scan(self, lo: int = 0, hi: int = 1 << 64) -> Scan:
        s = Scan()
        tags = s.tags
        for _a, n, hits in self.chunks(lo, hi):
            s.entries += n
            for _pfn, ref, order, src in hits:
                if ref == CODETAG_EMPTY:
                    s.empty += 1
                    continue
                tp = tags.get(ref)
                if tp is None:
                    tp = tags[ref] = TagPages()
                    if self.tag(ref) is None:
                        s.invalid[ref] = 0
                tp.allocations += 1
                tp.pages += 1 << order
                tp.assumed += src == ASSUMED
                s.order_source[src] += 1
                if ref in s.invalid:
                    s.invalid[ref] += 1
        s.null = s.entries - s.empty - s.tagged
        return s

    # -- one page ------------------------------------------------------------------
    def at(self, pfn: int) -> dict:
        """What page_ext says about one pfn (tail pages: their head's tag too)."""
        t = online_table_for(self.layout, pfn)
        if t is None:
            raise TargetError(f"pfn {pfn:#x} has no page_ext (outside memory, or its section is offline)")
        esz = self.geo.entry_size
        raw = read_entries(self.prog, t, pfn, pfn + 1, esz)
        ref = struct.unpack_from(self.ptr_fmt, raw, self.client.offset)[0]
        memmap = read_memmap(self.prog, pfn, 1, self.page_struct_size)
        out = {"pfn": pfn, "ref": ref, "state": None, "tag": None, "order": None, "order_source": None,
               "bytes": None, "head_pfn": None}
        if ref == 0:
            out["state"] = "none"
            head = self._compound_head(memmap)
            if head is not None:
                out["head_pfn"] = head
                if online_table_for(self.layout, head) is not None and head != pfn:
                    h = self.at(head)
                    out["tag"] = h["tag"]
            return out
        if ref == CODETAG_EMPTY:
            out["state"] = "empty"
            return out
        tag = self.tag(ref)
        out["state"] = "tagged" if tag is not None else "invalid"
        out["tag"] = tag.text() if tag is not None else invalid_text(ref)
        nxt = pfn + 1 < t.start_pfn + t.nr_pages and self._ref_at(t, pfn + 1) != 0
        order, src = self._order(0, raw, memmap, pfn, nxt)
        out.update(order=order, order_source=src, bytes=self.geo.page_size << order)
        return out

    def _ref_at(self, t: Table, pfn: int) -> int:
        try:
            raw = self.prog.read(entry_address(t, pfn, self.geo.entry_size) + self.client.offset, self.ptr_size)
        except drgn.FaultError:
            return 0
        return struct.unpack(self.ptr_fmt, raw)[0]

    def _compound_head(self, memmap: Optional[bytes]) -> Optional[int]:
        """The head pfn of a compound tail page (page->compound_head bit 0)."""
        if memmap is None:
            return None
        try:
            off = drgn.offsetof(self.prog.type("struct page"), "compound_head")
        except (LookupError, ValueError):
            return None
        word = int.from_bytes(memmap[off: off + 8], "little")
        if not word & 1:
            return None
        from drgn.helpers.linux.mm import page_to_pfn
        try:
            page = drgn.Object(self.prog, self.prog.pointer_type(self.prog.type("struct page")), word - 1)
            return page_to_pfn(page).value_()
        except (drgn.FaultError, LookupError, ValueError):
            return None
