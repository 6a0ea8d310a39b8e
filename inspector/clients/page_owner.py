"""page_owner: every page's allocation record, decoded offline in bulk.

mm/page_owner.c keeps a ``struct page_owner`` in each page_ext entry at
``page_owner_ops.offset`` (v4.9+, 980ac1672e7e/9300d8dfd282) and two bits in
the entry's flags word: ``PAGE_EXT_OWNER`` (ever allocated) and, from v5.4,
``PAGE_EXT_OWNER_ACTIVE`` (37389167a281), renamed ``PAGE_EXT_OWNER_ALLOCATED``
before the v5.4 release (currently allocated).  Each chunk of a table and of the memmap is
one numpy structured array (:mod:`inspector.decode.engine`) whose fields -- whichever this
version's ``struct page_owner`` has: pid/ts v5.11, free_ts v5.13, tgid/comm
v5.18, free_pid/free_tgid v6.8 -- come from the target's DWARF; absent
fields are None.

Two selections exist.  Ours (``allocated``, ``freed`` or ``all`` head pages)
and the kernel's own: read_page_owner() of the target version (start at
min_low_pfn, skip buddy pages by their order, need OWNER and ALLOCATED,
skip pages not aligned to their order, skip handle 0), done as whole-array
masks, the buddy skips included.  A selected chunk is a :class:`Batch`;
:meth:`PageOwner.debugfs_bytes` prints print_page_owner()'s text for a whole
batch at once with the format strings taken from the kernel image
(:mod:`inspector.decode.kformat`) through :mod:`inspector.vprintf`, stacks symbolized once
per handle.  Values no kernel can hold -- an order above MAX_ORDER (above
the machine's size once for_each_page_ext() exists, see
:func:`max_record_order`), a pid
above PID_MAX_LIMIT, a time after the dump's own clock -- mark a record
corrupt: it is shown as such, and left out of the kernel's text and of every
sum.  Memory holds one chunk and the unique stacks.

This module is the client, library only: the record pieces that need no
session (:class:`Batch`, :class:`Select`, the corruption bits, the target's
clock) are :mod:`inspector.decode.owner`, the sums :mod:`inspector.decode.sums`,
and the ``owner`` and ``top`` commands :mod:`inspector.commands.page_owner`.
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Iterator, Optional, Sequence

import drgn
from ..lazy import np

from .. import kernel as k
from ..errors import ClientError, MissingDataError, NoPageExtError, TargetError, UsageError
from ..model import Table
from ..text import comm_text, escape, escape_lines
from ..versions import release_has
from ..vprintf import Dec, Hex, Str, render
from . import ClientSpec, static_key_probe
from ..decode.engine import (COMPOUND_WORD, columns, factorize, first_of_each, known_mask, lookup_table, member_field,
                             page_fields, record_dtype)
from ..decode.kformat import KernelNames, KernelStrings, Symbolizer, compile_format, count_conversions, format_pieces
from ..decode.memcg import MemcgNames
from ..decode.owner import (AGG_KEYS, ALL, ALLOCATED, C_ORDER, C_PID, C_REASON, C_TS, CORRUPT_NAMES,  # noqa: F401
                            FREED, OWNER_FIELDS, Batch, Record, Select, block_migratetype, clear_tail_memcg,
                            max_record_order, pageblock_layout, pageblock_order_bounds, pageblock_order_rule,
                            target_clock_ns)
from ..decode.stackdepot import INVALID, MISSING, StackDepot
from ..decode.sums import Sums

# What PageOwner.top() can group by, and (where the two differ) the column
# PageOwner.sums() groups by for each.
TOP_KEYS = ("stack", "pid", "tgid", "comm", "gfp", "order", "migratetype", "node")
TOP_COLUMN = {"stack": "handle", "gfp": "gfp_mask"}

CLIENT = ClientSpec(
    "page_owner", "CONFIG_PAGE_OWNER", "boot with page_owner=on",
    "who allocated each page: order, gfp, pid/tgid/comm, time and stack (and who freed it)",
    # DEFINE_STATIC_KEY_FALSE(page_owner_inited), mm/page_owner.c (v4.4+).
    active=static_key_probe("page_owner_inited"),
    decoder="inspector.clients.page_owner:PageOwner", commands=("owner", "top"))


class PageOwner:
    """The page_owner decoder of one :class:`~inspector.session.PageExt` session."""

    def __init__(self, session):
        self.session = session
        self.prog = prog = session.prog
        self.layout = session.layout
        self.client = session.require_client("page_owner", CLIENT.config, CLIENT.enable)
        self.names = KernelNames(prog, session.missing)
        self.symbolize = Symbolizer(prog)
        self.depot = StackDepot(prog, self.symbolize, session.missing, live=session.live)
        self.strings = KernelStrings(prog)
        self._setup_entry()
        self._setup_page()
        self._setup_pageblock()
        self.memcg = MemcgNames(prog) if "memcg_data" in self.pf.dtype.names else None
        self.pid_max = k.pid_max_limit(prog)
        self._clock: Optional[int] = None
        self._compiled: dict = {}
        self.invalid_records = 0
        self.corrupt_records = 0  # left out of sums()

    # -- layouts from DWARF -----------------------------------------------------------
    def _setup_entry(self) -> None:
        prog = self.prog
        po = k.type_or_none(prog, "struct page_owner")
        if po is None:
            raise ClientError("no struct page_owner in the debug info (the pre-v4.9 layout is not supported)")
        bits = k.enumerators(prog, "PAGE_EXT_OWNER")
        self.bit_owner = 1 << bits["PAGE_EXT_OWNER"]
        # PAGE_EXT_OWNER_ACTIVE (37389167a281, v5.4-rc1), renamed PAGE_EXT_OWNER_ALLOCATED in v5.4-rc4;
        # before v5.4 PAGE_EXT_OWNER itself was cleared on free.
        alloc = bits.get("PAGE_EXT_OWNER_ALLOCATED", bits.get("PAGE_EXT_OWNER_ACTIVE"))
        self.bit_allocated = 1 << alloc if alloc is not None else self.bit_owner
        pe = prog.type("struct page_ext")
        fields = [member_field(pe, "flags")]
        fields[0] = ("ext_flags", fields[0][1], fields[0][2])
        self.owner_fields = []
        for m in po.members:
            if m.name in OWNER_FIELDS:
                fields.append(member_field(po, m.name, self.client.offset))
                self.owner_fields.append(m.name)
        self.dtype = record_dtype(fields, self.layout.entry_size)
        self.has = set(self.dtype.names)
        self.select = Select()  # page_owner_sort's --pid/--tgid/--name (set by the commands)

    def _setup_page(self) -> None:
        # print_page_owner_memcg() (v5.18, fcf8935832b8) adds "Slab cache page"
        # / "Charged ... memcg" lines from page->memcg_data (CONFIG_MEMCG).
        # The compound word, for print_page_owner_memcg()'s tail test (memcg.py).
        self.pf = page_fields(self.prog, "flags", "private", "page_type|_mapcount", "memcg_data", COMPOUND_WORD)
        # PageBuddy(): from v4.18 (6e292b9be7f4, "mm: split page_type out from
        # _mapcount") page_type with PAGE_TYPE_BASE 0xf0000000 and PG_buddy 0x80
        # (a *cleared* bit marks the type; #defines, so not in DWARF); from
        # v6.12 (4ffca5a96678, "mm: support only one page_type per page") the
        # top byte equals PGTY_buddy, an enumerator we read from the DWARF.
        pgty = k.constant(self.prog, "PGTY_buddy")
        if pgty is not None:
            self.is_buddy = lambda t: (t >> np.uint32(24)) == np.uint32(pgty)
        else:
            self.is_buddy = lambda t: (t & np.uint32(0xF0000080)) == np.uint32(0xF0000000)
        self.nr_orders = k.nr_orders(self.prog)  # MAX_ORDER (<6.4) / MAX_PAGE_ORDER + 1
        self.max_record_order = max_record_order(self.prog, self.nr_orders)
        # "Never migrated": -1 until the enumerator MR_NEVER (in the 7.3
        # sources, not in 7.2 or 6.12), which print_page_owner() compares with.
        never = k.constant(self.prog, "MR_NEVER")
        self.mr_never = -1 if never is None else never

    def _setup_pageblock(self) -> None:
        """The pageblock bits get_pfnblock_migratetype() reads, from enum
        pageblock_bits (:func:`pageblock_layout`)."""
        prog = self.prog
        lay = pageblock_layout(k.enumerators(prog, "PB_compact_skip") or k.enumerators(prog, "PB_migrate_skip")
                               or k.enumerators(prog, "NR_PAGEBLOCK_BITS"))
        if lay is None:
            lay = (4, 7, 0)
            self.session.missing.note(
                f"enum pageblock_bits of this kernel ({k.release(prog)}) matches no layout we know "
                "(PB_migrate..PB_migrate_end, or PB_migrate_0..2 and __NR_PAGEBLOCK_BITS): "
                "the pageblock migratetypes (\"Block\") assume 4 bits a block, 3 of them the type")
        self.nr_pageblock_bits, self.mt_mask, self.iso_bit = lay
        iso = k.constant(prog, "MIGRATE_ISOLATE")
        self.isolate_mt = iso if iso is not None else -1
        self.mobility_disabled = bool(k.value(prog, "page_group_by_mobility_disabled"))
        movable = self.names.gfp_bit("__GFP_MOVABLE")
        reclaimable = self.names.gfp_bit("__GFP_RECLAIMABLE")
        if movable is None or reclaimable is None:
            raise TargetError("cannot find __GFP_MOVABLE/__GFP_RECLAIMABLE in the target's gfp names")
        self.gfp_movable_mask = movable | reclaimable
        self.gfp_movable_shift = min(movable, reclaimable).bit_length() - 1
        self.usage_bitmap_off = None
        t = k.type_or_none(prog, "struct mem_section_usage")
        if t is not None and t.has_member("pageblock_flags"):
            self.usage_bitmap_off = drgn.offsetof(t, "pageblock_flags")
        self.pageblock_order = self._pageblock_order()

    def _pageblock_order(self) -> int:
        """pageblock_order, from the best witness this kernel leaves:

        1. the variable (CONFIG_HUGETLB_PAGE_SIZE_VARIABLE);
        2. the kernel's own .config (CONFIG_IKCONFIG) through the header's
           rule (:func:`~inspector.decode.owner.pageblock_order_rule`);
        3. the usemaps (:func:`~inspector.decode.owner.pageblock_order_bounds`)
           when they pin it;
        4. the rule with what the debug info tells (hugetlb, THP), kept within
           the usemaps' bounds.  From v6.16 CONFIG_PAGE_BLOCK_MAX_ORDER can
           lower it and only the .config says by how much: then the answer
           is partial (a note, exit 3) unless the usemaps pin it.
        """
        v = k.value(self.prog, "pageblock_order")
        if v is not None:
            return v
        lay = self.layout
        section_shift = lay.section_pages.bit_length() - 1
        long_bits = 8 * k.pointer_size(self.prog)
        lo, hi = pageblock_order_bounds(section_shift, self.nr_pageblock_bits, *self._usemap_evidence(),
                                        long_bits=long_bits)
        def within(order: int) -> int:
            return min(max(order, lo), hi)

        release = k.release(self.prog)
        pte = k.type_or_none(self.prog, "pte_t")
        # HUGETLB_PAGE_ORDER and HPAGE_PMD_ORDER are PMD_SHIFT - PAGE_SHIFT on
        # x86 and arm64: a page of PTEs maps PAGE_SIZE / sizeof(pte_t) pages.
        pmd_order = (lay.page_size.bit_length() - 1) - ((drgn.sizeof(pte) if pte is not None else 8).bit_length() - 1)
        cfg = k.kconfig(self.prog)
        if cfg is not None:
            block_max = cfg.get("CONFIG_PAGE_BLOCK_MAX_ORDER") or cfg.get("CONFIG_PAGE_BLOCK_ORDER")
            order = pageblock_order_rule(
                nr_orders=self.nr_orders, pmd_order=pmd_order, hugetlb=cfg.get("CONFIG_HUGETLB_PAGE") == "y",
                thp=cfg.get("CONFIG_TRANSPARENT_HUGEPAGE") == "y" and release_has(release, "pageblock_order_thp"),
                block_max=int(block_max) if block_max and block_max.isdigit() else None)
            if lo <= order <= hi:
                return order
            self.session.missing.note(
                f"pageblock_order from the kernel's .config is {order}, but its usemaps say {lo}..{hi}: "
                f"the \"Block\" pageblock numbers use {within(order)} and may be off")
            return within(order)
        if lo == hi:
            return lo
        order = within(pageblock_order_rule(
            nr_orders=self.nr_orders, pmd_order=pmd_order, hugetlb=k.symbol_address(self.prog, "hstates") is not None,
            thp=(k.symbol_address(self.prog, "transparent_hugepage_flags") is not None
                 and release_has(release, "pageblock_order_thp"))))
        if release_has(release, "page_block_max_order"):
            # arm64 7.3 with 64K pages and no IKCONFIG: the rule says 13; the
            # kernel's CONFIG_PAGE_BLOCK_MAX_ORDER=10 made it 10.
            self.session.missing.note(
                f"pageblock_order is a #define from CONFIG_PAGE_BLOCK_MAX_ORDER (v6.16+) and this kernel has no "
                f"CONFIG_IKCONFIG to read it from; its usemaps allow {lo}..{hi}, assumed {order}: "
                "the \"Block\" pageblock numbers may be off")
        return order

    def _usemap_evidence(self, sample: int = 64) -> tuple[Optional[int], list[int]]:
        """(usemap_size() or None, the first long of up to ``sample`` usemaps):
        the size is the stride of consecutive early sections of a node
        (sparse_init_nid() carves their mem_section_usage out of one
        allocation, sizeof + usemap_size() apart)."""
        lay = self.layout
        t = k.type_or_none(self.prog, "struct mem_section_usage")
        if not lay.sparse or self.usage_bitmap_off is None or t is None:
            return None, []
        from ..walk import nr_to_section
        usages, words = [], []
        n = k.pointer_size(self.prog)  # a long
        for s in lay.sections:
            if len(words) >= sample:
                break
            if not s.present:
                continue
            try:
                usage = nr_to_section(self.prog, s.nr, lay.page_size).usage.value_()
                if usage:
                    words.append(int.from_bytes(self.prog.read(usage + self.usage_bitmap_off, n), "little"))
                    if s.early:
                        usages.append((s.node, s.nr, usage))
            except drgn.FaultError:
                pass
        strides = {b[2] - a[2] - self.usage_bitmap_off for a, b in zip(usages, usages[1:])
                   if a[0] == b[0] and b[1] == a[1] + 1}
        strides = {x for x in strides if x > 0}
        return (strides.pop() if len(strides) == 1 else None), words

    # -- reading --------------------------------------------------------------------------------
    def _usemap(self, table: Table) -> Optional[np.ndarray]:
        """The section's pageblock flags bitmap as uint64 words (SPARSEMEM), or None."""
        if table.section is None or self.usage_bitmap_off is None:
            return None  # FLATMEM: zone->pageblock_flags (not read)
        from ..walk import nr_to_section
        try:
            usage = nr_to_section(self.prog, table.section, self.layout.page_size).usage.value_()
            if not usage:
                return None
            blocks = max(1, table.nr_pages >> self.pageblock_order)
            nbytes = (blocks * self.nr_pageblock_bits + 63) // 64 * 8
            return np.frombuffer(self.prog.read(usage + self.usage_bitmap_off, nbytes), dtype="<u8")
        except drgn.FaultError:
            return None

    def _block_mt(self, usemap: Optional[np.ndarray], table: Table, pfn: np.ndarray) -> np.ndarray:
        """get_pfnblock_migratetype(page, pfn), SPARSEMEM."""
        if usemap is None:
            return np.full(len(pfn), -1, dtype=np.int64)
        bitidx = ((pfn - table.start_pfn) >> self.pageblock_order) * self.nr_pageblock_bits
        return block_migratetype(usemap, bitidx, self.mt_mask, self.iso_bit, self.isolate_mt)

    def gfp_migratetype(self, gfp):
        """gfp_migratetype() of a gfp mask (or a column of them).

        :param gfp: a gfp mask, or a numpy column of them
        :return: the migratetype (a column for a column)
        """
        if self.mobility_disabled:
            return gfp * 0  # MIGRATE_UNMOVABLE
        return (gfp & self.gfp_movable_mask) >> self.gfp_movable_shift

    def clock_ns(self) -> Optional[int]:
        """The target's local_clock() now, for the ts bound: the newest of the
        runqueue clocks and the last kernel log record (both local_clock()).

        :return: nanoseconds, None where neither clock can be read
        """
        if self._clock is None:
            self._clock = target_clock_ns(self.prog) or -1
        return self._clock if self._clock >= 0 else None

    def _corrupt(self, e: np.ndarray) -> np.ndarray:
        bad = np.zeros(len(e), dtype=np.uint32)
        bad |= np.where(e["order"] > self.max_record_order, C_ORDER, 0).astype(np.uint32)
        for f in ("pid", "tgid"):
            if f in self.has:
                v = e[f].astype(np.int64)
                bad |= np.where((v < 0) | (v > self.pid_max), C_PID, 0).astype(np.uint32)
        if "ts_nsec" in self.has:
            clock = self.clock_ns()
            if clock is not None:
                # A record may be younger than our clock sample on a live target:
                # allow a minute, and re-read the clock before calling it corrupt.
                late = e["ts_nsec"] > np.uint64(clock + 60 * 10**9)
                if late.any() and self.session.target is not None and self.session.target.kind != "vmcore":
                    self._clock = None
                    clock = self.clock_ns() or clock
                    late = e["ts_nsec"] > np.uint64(clock + 60 * 10**9)
                bad |= np.where(late, C_TS, 0).astype(np.uint32)
        if "last_migrate_reason" in self.has and self.names.migrate_reason_names:
            r = e["last_migrate_reason"].astype(np.int64)
            bad |= np.where((r != -1) & ((r < 0) | (r >= len(self.names.migrate_reason_names))),
                            C_REASON, 0).astype(np.uint32)
        return bad

    def batches(self, which: str = ALLOCATED, lo: int = 0, hi: int = 1 << 64, *, node: Optional[int] = None,
                heads_only: bool = True, debugfs: bool = False, need_page: bool = True) -> Iterator[Batch]:
        """The selected records, a chunk at a time.

        ``debugfs`` selects what read_page_owner() prints (``which`` must be
        ALLOCATED); else ``which`` of the pages with PAGE_EXT_OWNER set,
        head pages only unless ``heads_only`` is off.  A record whose struct
        page is not in the dump cannot be printed as the kernel would (its
        flags, its buddy state): with ``need_page`` it is left out and counted
        hidden; without (for sums), it is kept, with ``Batch.pknown`` false
        and a note that the answer counts it unchecked.

        :param which: ALLOCATED, FREED or ALL (:mod:`inspector.decode.owner`)
        :param lo: first pfn
        :param hi: end pfn (exclusive)
        :param node: only this NUMA node's tables
        :param heads_only: leave out the tail pages of high-order blocks
        :param debugfs: select what read_page_owner() prints instead
        :param need_page: leave out records whose struct page was not read
        :return: iterator of :class:`~inspector.decode.owner.Batch`
        """
        if debugfs:
            lo = max(lo, k.value(self.prog, "min_low_pfn") or 0)
            max_pfn = k.value(self.prog, "max_pfn")
            if max_pfn is not None:
                hi = min(hi, max_pfn)
        owner, both = self.bit_owner, self.bit_owner | self.bit_allocated
        missing = self.session.missing
        unchecked = [0]
        for ch in self.session.chunks(lo, hi, node=node, memmap=True, label="decoding page_owner"):
            e = columns(ch.entries, self.dtype, ch.n)
            known = known_mask(ch.n, ch.unknown)
            flags = e["ext_flags"]
            if which == ALLOCATED or debugfs:
                sel = (flags & both) == both
            elif which == FREED:
                sel = (flags & both) == owner
            else:
                sel = (flags & owner) != 0
            sel &= known
            order = e["order"].astype(np.int64)
            pfn = np.arange(ch.lo, ch.hi, dtype=np.int64)
            if debugfs or heads_only:
                ok = order < 64
                aligned = (pfn & ((np.int64(1) << np.minimum(order, 62)) - 1)) == 0
                sel &= ok & aligned if debugfs else ~ok | aligned
            p = columns(ch.memmap, self.pf.dtype, ch.n) if ch.memmap is not None else None
            pknown = known_mask(ch.n, ch.memmap_unknown) if p is not None else np.zeros(ch.n, bool)
            if debugfs:
                sel &= e["handle"] != 0
                blind = sel & ~pknown
                if blind.any():
                    if need_page:
                        missing.records_hidden += int(blind.sum())
                        sel &= pknown
                    else:
                        unchecked[0] += int(blind.sum())
                if p is not None and sel.any():
                    sel &= ~self._buddy_skips(p, pknown)
            if self.select:
                sel &= self.select.mask(e)
            idx = np.flatnonzero(sel)
            if not len(idx):
                continue
            sub_e = e[idx]
            block_mt = self._block_mt(self._usemap(ch.table), ch.table, pfn[idx])
            if p is None:
                p = np.zeros(ch.n, dtype=self.pf.dtype)
            sub_p = p[idx]  # a copy
            if self.memcg is not None and self.memcg.skips_tails:
                clear_tail_memcg(sub_p)
            yield Batch(ch.table, pfn[idx], sub_e, sub_p, block_mt, self._corrupt(sub_e), ch.suspect,
                        None if pknown[idx].all() else pknown[idx])
        if unchecked[0]:
            missing.note(f"{unchecked[0]} record(s) counted although their struct page is not in the dump "
                         "(whether the kernel's walk would skip them as free pages is unknown)")

    def _buddy_skips(self, p: np.ndarray, pknown: np.ndarray) -> np.ndarray:
        """The pages read_page_owner() jumps over: each free buddy block it
        meets (a PageBuddy head: 1 << order pages, or one page if the order is
        out of range), visited in pfn order."""
        n = len(p)
        heads = np.flatnonzero(self.is_buddy(p["page_type"]) & pknown)
        skip = np.zeros(n, dtype=bool)
        if not len(heads):
            return skip
        order = p["private"][heads].astype(np.int64)
        size = np.where((order >= 0) & (order < self.nr_orders), np.int64(1) << np.clip(order, 0, 62), 1)
        ends = np.minimum(heads + size, n)
        # Buddy blocks are aligned and disjoint in a sane kernel: then every
        # head is visited and the skips are a union of intervals.
        if len(heads) == 1 or (heads[1:] >= ends[:-1]).all():
            delta = np.zeros(n + 1, dtype=np.int64)
            np.add.at(delta, heads, 1)
            np.add.at(delta, ends, -1)
            return np.cumsum(delta[:-1]) > 0
        until = 0  # nested or overlapping heads: the kernel's own sequential walk
        for h, e in zip(heads.tolist(), ends.tolist()):
            if h < until:
                continue
            skip[h:e] = True
            until = e
        return skip

    def free_blocks(self, lo: int = 0, hi: int = 1 << 64) -> Iterator[tuple[int, int]]:
        """(pfn, order) of every free buddy block head (PageBuddy) in the tables.

        :param lo: first pfn
        :param hi: end pfn (exclusive)
        :return: iterator of ``(pfn, order)``
        """
        for ch in self.session.chunks(lo, hi, label="reading the memmap"):
            if ch.memmap is None:
                continue
            p = columns(ch.memmap, self.pf.dtype, ch.n)
            pknown = known_mask(ch.n, ch.memmap_unknown)
            heads = np.flatnonzero(self.is_buddy(p["page_type"]) & pknown)
            orders = p["private"][heads]
            ok = orders < self.nr_orders
            yield from zip((heads[ok] + ch.lo).tolist(), orders[ok].tolist())

    # -- records as Python objects ------------------------------------------------------------
    def records(self, which: str = ALLOCATED, lo: int = 0, hi: int = 1 << 64, *, node: Optional[int] = None,
                heads_only: bool = True, debugfs: bool = False) -> Iterator[Record]:
        """:meth:`batches` one :class:`Record` at a time (for scripts; slower).

        :param which, lo, hi, node, heads_only, debugfs: as :meth:`batches`
        :return: iterator of :class:`~inspector.decode.owner.Record`
        """
        for b in self.batches(which, lo, hi, node=node, heads_only=heads_only, debugfs=debugfs):
            yield from self.batch_records(b)

    def batch_records(self, b: Batch) -> Iterator[Record]:
        """The records of a batch, one :class:`~inspector.decode.owner.Record` each.

        :param b: a :class:`~inspector.decode.owner.Batch`
        :return: iterator of :class:`~inspector.decode.owner.Record`
        """
        cols = {f: b.e[f].tolist() for f in self.owner_fields}
        flags = b.e["ext_flags"].tolist()
        pflags = b.p["flags"].tolist() if b.p is not None else [None] * len(b)
        if b.pknown is not None:
            pflags = [f if k else None for f, k in zip(pflags, b.pknown.tolist())]
        memcg = b.p["memcg_data"].tolist() if b.p is not None and "memcg_data" in b.p.dtype.names else [0] * len(b)
        mt = b.block_mt.tolist()
        bad = b.corrupt.tolist()
        for i, pfn in enumerate(b.pfn.tolist()):
            v = {f: cols[f][i] if f in cols else None for f in OWNER_FIELDS}
            if v["comm"] is not None:
                v["comm"] = v["comm"].split(b"\0", 1)[0].decode("latin-1")
            yield Record(pfn, bool(flags[i] & self.bit_allocated), v["order"], v["gfp_mask"], v["handle"],
                         v["free_handle"], v["last_migrate_reason"], v["ts_nsec"], v["free_ts_nsec"], v["pid"],
                         v["tgid"], v["comm"], v["free_pid"], v["free_tgid"], pflags[i],
                         None if mt[i] < 0 else mt[i], memcg[i] or 0,
                         tuple(n for bit, n in CORRUPT_NAMES.items() if bad[i] & bit), b.suspect)

    def record_at(self, pfn: int) -> Record:
        """The record of one pfn (tail pages included).

        :raises NoPageExtError: the pfn has no page_ext, or no page_owner record

        :param pfn: a page frame number
        :return: its :class:`~inspector.decode.owner.Record`
        """
        self.session.entry_address(pfn)  # the reason, when there is no entry
        for r in self.records(ALL, pfn, pfn + 1, heads_only=False):
            return r
        if self.session.missing.page_ext.overlaps(pfn, pfn + 1):
            raise MissingDataError(f"pfn {pfn:#x}'s page_ext entry is not in the dump")
        raise NoPageExtError(f"pfn {pfn:#x} has no page_owner record (never allocated since page_owner "
                             "was initialised)")

    # -- names -------------------------------------------------------------------------------------
    def migrated_reason(self, r: int) -> Optional[str]:
        """The name of a ``last_migrate_reason`` value, or None for a page never
        migrated (-1, or MR_NEVER where the kernel has it): print_page_owner()'s
        test, for every format that prints the field."""
        return None if r in (-1, self.mr_never) else self.names.migrate_reason(r)

    def stack_lines(self, handle: Optional[int]) -> Optional[list[str]]:
        """%pS lines of a handle; ["<invalid handle 0x..>"] for a corrupt one;
        None for no handle or one whose record is not in the dump.

        :param handle: a stack depot handle (0 or None: none)
        :return: the lines, or None
        """
        if not handle:
            return None
        lines = self.depot.lines(handle)
        if lines == INVALID:
            return [f"<invalid handle {handle:#x}>"]
        if lines == MISSING:
            return None
        return list(lines)

    def memcg_name(self, memcg_data: int) -> Optional[str]:
        """The memcg a ``memcg_data`` word names, as print_page_owner_memcg() prints it.

        :param memcg_data: ``page->memcg_data``
        :return: the memcg's path, or None without a memcg line
        """
        name = self.memcg.name(memcg_data) if self.memcg is not None and memcg_data else None
        return None if name is None else escape(name)

    # -- the kernel's text ---------------------------------------------------------------------------
    def _formats(self) -> tuple[bytes, bytes]:
        if "fmt" not in self._compiled:
            first = self.strings.find(b"Page allocated via order ")
            pfn_line = self.strings.find(b"PFN ", b" Block %lu type %s Flags ")
            if first is None or pfn_line is None:
                raise TargetError("cannot find print_page_owner()'s format strings in the kernel image")
            self._compiled["fmt"] = (first, pfn_line)
        return self._compiled["fmt"]

    def _ext(self, letters: bytes, value) -> str:
        if letters == b"Gg":
            return self.names.gfp(value)
        if letters == b"Gp":
            return self.names.page_flags(value)
        raise TargetError(f"unsupported %p{letters.decode()} in a page_owner format string")

    def _tails(self, b: Batch) -> tuple[np.ndarray, list[bytes], np.ndarray]:
        """(index, table, printable): the stack, migrate-reason and memcg lines
        and the closing blank line of each record, each distinct combination
        built once; records whose stack is not in the dump are not printable."""
        # One integer per (handle, migrate reason, memcg word), factorized in
        # steps: handle and reason share a word, the memcg words are numbered.
        hr = b.e["handle"].astype(np.uint64) << np.uint64(16)
        if "last_migrate_reason" in self.has:
            hr |= (b.e["last_migrate_reason"].astype(np.int64) + 1).astype(np.uint64) & np.uint64(0xFFFF)
        hr_idx, hr_uniq = factorize(hr)
        if b.p is not None and "memcg_data" in b.p.dtype.names:
            m_idx, m_uniq = factorize(b.p["memcg_data"])
        else:
            m_idx, m_uniq = np.zeros(len(b), dtype=np.int64), np.zeros(1, dtype=np.uint64)
        inv, combos = factorize(hr_idx.astype(np.int64) * len(m_uniq) + m_idx)
        hr_list, m_list = hr_uniq.tolist(), m_uniq.tolist()
        table, good = [], []
        for c in combos.tolist():
            key, m = hr_list[c // len(m_list)], m_list[c % len(m_list)]
            h, r = key >> 16, (key & 0xFFFF) - 1 if "last_migrate_reason" in self.has else -1
            if r >= 0x8000 - 1:
                r -= 0x10000
            lines = self.depot.lines(h)
            if lines == MISSING:
                table.append(b"")
                good.append(False)
                continue
            if lines == INVALID:
                stack = f" <invalid handle {h:#x}>\n"
            else:
                stack = self.depot.text(h)
            out = stack
            reason = self.migrated_reason(r)
            if reason is not None:
                out += f"Page has been migrated, last migrate reason: {reason}\n"
            if m and self.memcg is not None:
                out += self.memcg.text(m)
            table.append((out + "\n").encode("latin-1", "replace"))
            good.append(True)
        return inv.reshape(-1), table, np.array(good, dtype=bool)[inv.reshape(-1)]

    def debugfs_bytes(self, b: Batch, raw: bool = True) -> bytes:
        """print_page_owner()'s text of every printable record of a batch, byte
        for byte (escaped for a terminal unless ``raw``).  Corrupt records and
        records whose stack is not in the dump are left out and counted.

        :param b: a batch selected with ``debugfs=True``
        :param raw: the kernel's bytes as they are (False: escaped for a terminal)
        :return: the text, bytes
        """
        keep = b.corrupt == 0
        if b.pknown is not None:  # no struct page: the kernel's flags line cannot be printed
            self.session.missing.records_hidden += int((keep & ~b.pknown).sum())
            keep &= b.pknown
        tail_idx, tails, printable = self._tails(b)
        hidden = keep & ~printable
        if hidden.any():
            self.session.missing.records_hidden += int(hidden.sum())
        keep &= printable
        if self.depot.invalid:
            self.invalid_records += int((self.depot.invalid_mask(b.e["handle"]) & keep).sum())
        if not keep.all():
            idx = np.flatnonzero(keep)
            b = b.take(idx)
            tail_idx = tail_idx[idx]
        if not len(b):
            return b""
        first, pfn_line = self._formats()
        e = b.e
        gfp = e["gfp_mask"].astype(np.int64)
        gfp_idx, gfp_uniq = factorize(gfp)
        gfp_list = gfp_uniq.tolist()
        gfp_names = (gfp_idx, [self.names.gfp(v).encode("latin-1") for v in gfp_list])
        args1: list = [e["order"], gfp, gfp_names]
        if "pid" in self.has:
            args1.append(e["pid"])
        if "tgid" in self.has:
            args1 += [e["tgid"], self._comms(e)]
        if "ts_nsec" in self.has:
            args1.append(e["ts_nsec"])
        if "free_ts_nsec" in self.has:
            args1.append(e["free_ts_nsec"])
        page_mt = (gfp_idx, [self.names.migratetype(int(self.gfp_migratetype(v))).encode("latin-1")
                             for v in gfp_list])
        block_mt = lookup_table(np.maximum(b.block_mt, 0), lambda v: self.names.migratetype(v).encode("latin-1"))
        pflags = b.p["flags"].astype(np.uint64)
        flags_text = lookup_table(pflags, lambda v: self.names.page_flags(v).encode("latin-1"))
        args2 = [b.pfn, page_mt, b.pfn >> self.pageblock_order, block_mt, flags_text, pflags]
        nconv1 = _nconv(first)
        p1 = format_pieces(first, args1[:nconv1])
        # "... Flags %pGp" (one argument, &page->flags) in 6.1; "Flags %#lx(%pGp)"
        # (page->flags twice) in older kernels (v4.6 7cd12b4abfd2).
        args2 = args2[:4] + ([pflags, flags_text] if _nconv(pfn_line) == 6 else [flags_text])
        p2 = format_pieces(pfn_line, args2)
        if p1 is None or p2 is None:
            data = self._debugfs_slow(b, tails, tail_idx)
        else:
            data = render(p1 + p2 + [Str(tail_idx, tails)], len(b))
        return data if raw else escape_lines(data).encode("latin-1", "replace")

    def _comms(self, e) -> tuple:
        """(index, table) of the comm column: by pid when every pid's records
        carry one comm (the usual case, and a sort of integers instead of
        strings), else by the comm bytes themselves."""
        comm = e["comm"]
        if "pid" in self.has:
            pi, pu = factorize(e["pid"])
            firsts = first_of_each(pi, len(pu))
            if (comm == comm[firsts[pi]]).all():
                return pi, [c.split(b"\0", 1)[0] for c in comm[firsts].tolist()]
        return lookup_table(comm, lambda v: v.split(b"\0", 1)[0])

    def _debugfs_slow(self, b: Batch, tails: list[bytes], tail_idx: np.ndarray) -> bytes:
        """The same text record by record (formats vprintf cannot do)."""
        first, pfn_line = self._formats()
        f1 = self._compiled.setdefault("f1", compile_format(first, self._ext, True))
        f2 = self._compiled.setdefault("f2", compile_format(pfn_line, self._ext, True))
        out = []
        for i, r in enumerate(self.batch_records(b)):
            args = [r.order, r.gfp_mask, r.gfp_mask]
            if r.pid is not None:
                args.append(r.pid)
            if r.tgid is not None:
                args += [r.tgid, r.comm]
            if r.ts_nsec is not None:
                args.append(r.ts_nsec)
            if r.free_ts_nsec is not None:
                args.append(r.free_ts_nsec)
            out.append(f1(args[:f1.nconv]))
            mt = self.names.migratetype(int(self.gfp_migratetype(r.gfp_mask)))
            a2 = [r.pfn, mt, r.pfn >> self.pageblock_order, self.names.migratetype(max(r.pageblock_mt or 0, 0))]
            a2 += [r.page_flags] * max(1, f2.nconv - 4)
            out.append(f2(a2))
            out.append(tails[tail_idx[i]].decode("latin-1"))
        return "".join(out).encode("latin-1", "replace")

    # -- JSON Lines, CSV and readable text -----------------------------------------------------------
    def record_dict(self, r: Record) -> dict:
        """One record as plain data (JSON/CSV); names from the target.

        :param r: a :class:`~inspector.decode.owner.Record`
        :return: the ``owner --json`` keys
        """
        return {
            "pfn": r.pfn,
            "state": "allocated" if r.allocated else "freed",
            "order": None if "order" in r.corrupt else r.order,
            "gfp_mask": r.gfp_mask,
            "gfp_flags": self.names.gfp(r.gfp_mask),
            "migratetype": self.names.migratetype(int(self.gfp_migratetype(r.gfp_mask))),
            "pageblock_migratetype": None if r.pageblock_mt is None else self.names.migratetype(r.pageblock_mt),
            "pid": None if "pid" in r.corrupt else r.pid,
            "tgid": None if "pid" in r.corrupt else r.tgid,
            "comm": None if r.comm is None else escape(r.comm),
            "ts_nsec": None if "ts_nsec" in r.corrupt else r.ts_nsec,
            "free_ts_nsec": r.free_ts_nsec,
            "free_pid": r.free_pid,
            "free_tgid": r.free_tgid,
            "last_migrate_reason": None if r.last_migrate_reason is None or "last_migrate_reason" in r.corrupt
            else self.migrated_reason(r.last_migrate_reason),
            "handle": r.handle,
            "free_handle": r.free_handle,
            "alloc_stack": self.stack_lines(r.handle),
            "free_stack": self.stack_lines(r.free_handle),
            "memcg": self.memcg_name(r.memcg_data),
            "corrupt": list(r.corrupt),
            "suspect": r.suspect,
        }

    def json_bytes(self, b: Batch) -> bytes:
        """JSON Lines of a batch: what ``jsonout.dumps_line(record_dict(r))``
        gives for each record (the keys of :data:`~inspector.jsonout.HEX_KEYS`
        as ``"0x..."`` strings), formatted column by column.

        :param b: a :class:`~inspector.decode.owner.Batch`
        :return: one JSON line per record, bytes
        """
        e, n = b.e, len(b)
        null = b"null"

        def lookup(col, fn) -> Str:
            return Str(*lookup_table(col, lambda v: json.dumps(fn(v)).encode()))

        def num(field: str, bad_bit: int = 0):
            if field not in self.has:
                return [null]
            if bad_bit and (b.corrupt & bad_bit).any():
                return [lookup(np.where(b.corrupt & bad_bit, -(1 << 62), e[field].astype(np.int64)),
                               lambda v: None if v == -(1 << 62) else v)]
            return [Dec(e[field])]

        def hexnum(values) -> list:  # a key of HEX_KEYS: "0x..." as jsonout.hex_str() writes it
            return [b'"0x', Hex(values), b'"']

        gfp = e["gfp_mask"].astype(np.int64)
        pieces: list = [b'{"pfn": ', Dec(b.pfn), b', "state": ',
                        lookup((e["ext_flags"] & self.bit_allocated) != 0, lambda v: "allocated" if v else "freed"),
                        b', "order": ', *num("order", C_ORDER), b', "gfp_mask": ', *hexnum(gfp),
                        b', "gfp_flags": ', lookup(gfp, self.names.gfp),
                        b', "migratetype": ', lookup(self.gfp_migratetype(gfp), self.names.migratetype),
                        b', "pageblock_migratetype": ',
                        lookup(b.block_mt, lambda v: None if v < 0 else self.names.migratetype(v)),
                        b', "pid": ', *num("pid", C_PID), b', "tgid": ', *num("tgid", C_PID), b', "comm": ']
        pieces += [lookup(e["comm"], comm_text)] \
            if "comm" in self.has else [null]
        pieces += [b', "ts_nsec": ', *num("ts_nsec", C_TS), b', "free_ts_nsec": ', *num("free_ts_nsec"),
                   b', "free_pid": ', *num("free_pid"), b', "free_tgid": ', *num("free_tgid"),
                   b', "last_migrate_reason": ']
        if "last_migrate_reason" in self.has:
            r = np.where(b.corrupt & C_REASON, -1, e["last_migrate_reason"].astype(np.int64))
            pieces.append(lookup(r, self.migrated_reason))
        else:
            pieces.append(null)
        pieces += [b', "handle": ', *hexnum(e["handle"]), b', "free_handle": ',
                   *(hexnum(e["free_handle"]) if "free_handle" in self.has else [null]),
                   b', "alloc_stack": ', lookup(e["handle"].astype(np.int64), self.stack_lines),
                   b', "free_stack": ']
        pieces.append(lookup(e["free_handle"].astype(np.int64), self.stack_lines) if "free_handle" in self.has
                      else null)
        pieces.append(b', "memcg": ')
        if b.p is not None and "memcg_data" in b.p.dtype.names:
            pieces.append(lookup(b.p["memcg_data"].astype(np.uint64), self.memcg_name))
        else:
            pieces.append(null)
        pieces += [b', "corrupt": ',
                   lookup(b.corrupt, lambda v: [name for bit, name in CORRUPT_NAMES.items() if v & bit]),
                   b', "suspect": true}\n' if b.suspect else b', "suspect": false}\n']
        return render(pieces, n)

    def text(self, r: Record) -> str:
        """A readable block for one record.

        :param r: a :class:`~inspector.decode.owner.Record`
        :return: the lines of ``owner``'s text format
        """
        d = self.record_dict(r)
        order = "CORRUPT" if d["order"] is None else d["order"]
        head = (f"pfn {r.pfn:#x} order {order} {d['state']}  gfp {r.gfp_mask:#x}({d['gfp_flags']})  "
                f"migratetype {d['migratetype']}  pageblock {d['pageblock_migratetype']}")
        who = [f"pid {r.pid}"] if r.pid is not None else []
        if r.tgid is not None:
            who.append(f"tgid {r.tgid} ({d['comm']})")
        if r.ts_nsec is not None:
            who.append(f"ts {r.ts_nsec} ns")
        if r.free_ts_nsec is not None:
            who.append(f"free_ts {r.free_ts_nsec} ns")
        if r.free_pid is not None:
            who.append(f"free_pid {r.free_pid} free_tgid {r.free_tgid}")
        lines = [head, "  " + ", ".join(who)] if who else [head]
        if r.corrupt:
            lines.append("  CORRUPT: " + ", ".join(f"{c} beyond what the kernel can hold" for c in r.corrupt))
        if r.suspect:
            lines.append("  SUSPECT: decoded with --force from a table a failed check points at")
        if d["memcg"] is not None:
            lines.append(f"  memcg: {d['memcg']}")
        if d["last_migrate_reason"]:
            lines.append(f"  last migrate reason: {d['last_migrate_reason']}")
        for name in ("alloc_stack", "free_stack"):
            if d[name]:
                lines.append(f"  {name.replace('_', ' ')}:")
                lines += [f"    {f}" for f in d[name]]
        return "\n".join(lines) + "\n\n"

    # -- aggregation ---------------------------------------------------------------------------------
    def sums(self, keys: Sequence[str], lo: int = 0, hi: int = 1 << 64, node: Optional[int] = None) -> "Sums":
        """Pages (the sum of 1 << order) and allocations (records) per distinct
        combination of the columns ``keys``, over the records debugfs would
        print; corrupt records are left out (and counted by the caller's notes).

        A key is a field of the records (handle, pid, tgid, comm, order,
        gfp_mask), ``migratetype`` (of the gfp mask, as debugfs prints it) or
        ``node`` (the table's).  One pass: each chunk grouped with np.unique and
        np.bincount, then the chunks' groups merged the same way, so memory
        grows with the groups, not the records.

        :raises UsageError: a key this kernel's records do not have

        :param keys: columns of :data:`~inspector.decode.owner.AGG_KEYS`
        :param lo: first pfn
        :param hi: end pfn (exclusive)
        :param node: only this NUMA node's tables
        :return: :class:`~inspector.decode.sums.Sums`
        """
        for key in keys:
            if key not in AGG_KEYS or (key not in ("migratetype", "node") and key not in self.has):
                raise UsageError(f"this kernel's page_owner records have no {key}")
        dtype = np.dtype([(key, self.dtype[key] if key in self.has else np.int64) for key in keys])
        parts = []
        for b in self.batches(ALLOCATED, lo, hi, node=node, debugfs=True, need_page=False):
            good = b.corrupt == 0
            if not good.all():
                self.corrupt_records += int((~good).sum())
                b = b.take(np.flatnonzero(good))
            if not len(b):
                continue
            cols = np.empty(len(b), dtype=dtype)
            for key in keys:
                if key == "migratetype":
                    cols[key] = self.gfp_migratetype(b.e["gfp_mask"].astype(np.int64))
                elif key == "node":
                    cols[key] = b.table.node
                else:
                    cols[key] = b.e[key]
            parts.append(Sums.of(cols, np.int64(1) << b.e["order"].astype(np.int64), np.ones(len(b), np.int64)))
        return Sums.merge(parts, dtype)

    def top(self, by: str, lo: int = 0, hi: int = 1 << 64, node: Optional[int] = None) -> list[dict]:
        """Pages and allocations per ``by`` (one of :data:`TOP_KEYS`) over the
        records debugfs would print; records whose stack is not in the dump
        are counted in ``missing.records_hidden``.

        :param by: one of :data:`TOP_KEYS`
        :param lo: first pfn
        :param hi: end pfn (exclusive)
        :param node: only this NUMA node's tables
        :return: rows ``{"key", "pages", "allocations"}``, most pages first
        """
        col = TOP_COLUMN.get(by, by)
        s = self.sums((col,), lo, hi, node)
        pages: dict = defaultdict(int)
        allocs: dict = defaultdict(int)
        for v, pg, al in zip(s.keys[col].tolist(), s.pages.tolist(), s.allocations.tolist()):
            key = self._key(by, v)
            if key is None:
                self.session.missing.records_hidden += al
                continue
            pages[key] += pg
            allocs[key] += al
        if by == "stack" and self.depot.invalid:
            # The depot learns which handles are invalid as they are resolved (above).
            self.invalid_records += int(s.allocations[self.depot.invalid_mask(s.keys[col])].sum())
        rows = [{"key": list(key) if isinstance(key, tuple) else key, "pages": pages[key],
                 "allocations": allocs[key]} for key in pages]
        rows.sort(key=lambda d: (-d["pages"], -d["allocations"], str(d["key"])))
        return rows

    def _key(self, by: str, v):
        if by == "stack":
            lines = self.stack_lines(v)
            return None if lines is None else tuple(lines)  # None: the stack is not in the dump
        if by == "gfp":
            return f"{v:#x}({self.names.gfp(v)})"
        if by == "migratetype":
            return self.names.migratetype(v)
        if by == "comm":
            return escape(v.split(b"\0", 1)[0].decode("latin-1"))
        return v


def _nconv(fmt: bytes) -> int:
    return count_conversions(fmt)
