"""page_idle: idle page tracking's Young and Idle bits, decoded per page.

Idle page tracking (v4.3, 33c3fc71c8cf; Documentation/admin-guide/mm/
idle_page_tracking.rst) gives every user page two bits.  Writing 1s to
/sys/kernel/mm/page_idle/bitmap sets Idle on LRU pages (after clearing the
Accessed bit of every pte mapping them); any access clears it again --
folio_mark_accessed() directly, a pte access at the next rmap walk --
and Young records "I cleared an Accessed bit" so reclaim still sees the
reference.  Where the bits live depends on the word size:

* 64-bit: PG_young and PG_idle in ``page->flags`` -- page_ext is not used;
* 32-bit (``CONFIG_PAGE_IDLE_FLAG && !CONFIG_64BIT``, include/linux/
  page_idle.h): no room in page->flags, so they are bits PAGE_EXT_YOUNG and
  PAGE_EXT_IDLE of ``page_ext->flags``, and mm/page_ext.c has a client
  ``page_idle_ops`` whose need() is always true: page_ext is always
  allocated on such a kernel, and the client is active whenever it is.

The kernel reads the bits of the folio's head page (``page_folio()``), so a
tail page reads as its head.  A bitmap read (page_idle_bitmap_read())
reports a pfn idle only if the page is online, on an LRU list, has a
reference count above zero and is Idle *after* its ptes' Accessed bits were
cleared -- which clears Idle (and sets Young) on a referenced page.  Right
after such a read, therefore, an LRU page's Idle bit in page_ext is exactly
what the read returned; :meth:`PageIdle.bitmap` rebuilds that view from
page_ext and the memmap (without touching any pte: a page accessed after
the last read still shows Idle until the kernel next looks).

Each table is read with one ``prog.read`` and unpacked with one Struct whose
flags word has the target's size (4 bytes on i386); bit numbers come from
the target's ``enum page_ext_flags``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Iterator, Optional

import drgn

from ..discover import Geometry
from ..model import Layout
from ..target import TargetError
from ..walk import online_spans, read_entries
from .page_owner import build_struct, read_memmap


@dataclass
class IdleSummary:
    pages: int = 0  # page_ext entries scanned
    young: int = 0
    idle: int = 0
    young_and_idle: int = 0
    lru_pages: int = 0  # pages the bitmap can report: online, PageLRU, refcount > 0
    idle_lru_pages: int = 0  # of those, Idle (the head's bit): set bits of the bitmap view

    def to_json(self) -> dict:
        return dict(self.__dict__)


@dataclass
class IdleEntry:
    pfn: int
    flags: int  # the whole page_ext->flags word
    young: bool
    idle: bool
    lru: Optional[bool]  # None: no struct page read for this pfn
    refcount: Optional[int]
    head_pfn: Optional[int]  # the folio head (itself unless a tail page)

    def to_json(self) -> dict:
        return dict(self.__dict__)


def no_page_idle_reason(prog: drgn.Program) -> str:
    """Why this kernel keeps no page_idle data in page_ext (one line)."""
    is64 = bool(prog.platform.flags & drgn.PlatformFlags.IS_64_BIT) if prog.platform else True
    try:
        prog.constant("PG_idle")
        has_pg_idle = True
    except LookupError:
        has_pg_idle = False
    if is64 or has_pg_idle:
        state = "on" if has_pg_idle else "off"
        return ("page_idle keeps its Young/Idle bits in page->flags (PG_young, PG_idle) on 64-bit kernels, "
                f"not in page_ext: nothing to decode here (CONFIG_PAGE_IDLE_FLAG is {state} in this kernel)")
    return "this kernel has no page_idle client (CONFIG_IDLE_PAGE_TRACKING / CONFIG_PAGE_IDLE_FLAG is off)"


class PageIdle:
    def __init__(self, prog: drgn.Program, geo: Geometry, layout: Layout):
        self.prog, self.geo, self.layout = prog, geo, layout
        client = next((c for c in geo.clients if c.name == "page_idle"), None)
        if client is None:
            raise TargetError(no_page_idle_reason(prog))
        if not client.active:
            raise TargetError("page_idle is compiled in but inactive in this boot "
                              "(page_ext was never allocated: total_usage is 0)")
        try:
            self.young_bit = prog.constant("PAGE_EXT_YOUNG").value_()
            self.idle_bit = prog.constant("PAGE_EXT_IDLE").value_()
        except LookupError:
            raise TargetError("enum page_ext_flags has no PAGE_EXT_YOUNG/PAGE_EXT_IDLE in this kernel's "
                              "debug info") from None
        pe = prog.type("struct page_ext")
        flags_member = pe.member("flags")
        self.word = flags_member.type.size
        ch = {4: "I", 8: "Q"}[self.word]
        self.entry, _ = build_struct([("flags", drgn.offsetof(pe, "flags"), ch)], geo.entry_size)
        pt = prog.type("struct page")
        fields = [("flags", drgn.offsetof(pt, "flags"), ch),
                  ("compound_head", drgn.offsetof(pt, "compound_head"), ch),
                  ("refcount", drgn.offsetof(pt, "_refcount"), "i")]
        self.page, names = build_struct(fields, pt.size)
        self._order = [names.index(n) for n in ("flags", "compound_head", "refcount")]
        self.lru_bit = 1 << prog.constant("PG_lru").value_()
        self.page_struct_size = pt.size
        try:
            self.max_pfn = prog["max_pfn"].value_()
        except (LookupError, drgn.FaultError):
            self.max_pfn = None

    def _head_pfn(self, compound_head: int, pfn: int) -> int:
        """pfn of the head page a tail's ``compound_head`` (bit 0 set) points to."""
        if not compound_head & 1:
            return pfn
        from drgn.helpers.linux.mm import page_to_pfn
        head = drgn.Object(self.prog, "struct page *", value=compound_head - 1)
        return page_to_pfn(head).value_()

    def entries(self, lo: int = 0, hi: int = 1 << 64) -> Iterator[IdleEntry]:
        """Every page with page_ext in [lo, hi), with its struct page's LRU state."""
        ybit, ibit = 1 << self.young_bit, 1 << self.idle_bit
        for t, a, b in online_spans(self.layout, lo, hi):
            raw = read_entries(self.prog, t, a, b, self.geo.entry_size)
            # FLATMEM tables carry up to MAX_ORDER_NR_PAGES of slack past the
            # node: those entries have no struct page.
            mb = min(b, self.max_pfn) if self.max_pfn is not None else b
            memmap = read_memmap(self.prog, a, mb - a, self.page.size) if mb > a else None
            pages = list(self.page.iter_unpack(memmap)) if memmap else []
            o = self._order
            for k, (flags,) in enumerate(self.entry.iter_unpack(raw)):
                pfn = a + k
                if k < len(pages):
                    p = pages[k]
                    pflags, chead, ref = (p[i] for i in o)
                    yield IdleEntry(pfn, flags, bool(flags & ybit), bool(flags & ibit),
                                    bool(pflags & self.lru_bit), ref, self._head_pfn(chead, pfn))
                else:
                    yield IdleEntry(pfn, flags, bool(flags & ybit), bool(flags & ibit), None, None, None)

    def entry_at(self, pfn: int) -> IdleEntry:
        for e in self.entries(pfn, pfn + 1):
            return e
        raise TargetError(f"pfn {pfn:#x} has no page_ext entry (outside every table)")

    def _folio_view(self, lo: int, hi: int) -> Iterator[tuple[IdleEntry, bool, bool]]:
        """(entry, reportable, idle as the kernel reads it) -- see bitmap()."""
        # Heads' bits (and LRU flags / refcounts) for tails; tails follow
        # their head within a table, but look a head up when they do not.
        heads: dict[int, IdleEntry] = {}
        for e in self.entries(lo, hi):
            if e.lru is None:
                yield e, False, False
                continue
            if e.head_pfn == e.pfn:
                heads = {e.pfn: e}
                head = e
            else:
                head = heads.get(e.head_pfn) or self.entry_at(e.head_pfn)
                heads[e.head_pfn] = head
            # page_idle_get_page(): PageLRU and get_page_unless_zero() act on
            # the head (PF_HEAD / folio refcount).
            reportable = bool(head.lru) and (head.refcount or 0) > 0
            yield e, reportable, reportable and head.idle

    def summary(self, lo: int = 0, hi: int = 1 << 64) -> IdleSummary:
        s = IdleSummary()
        for e, reportable, idle in self._folio_view(lo, hi):
            s.pages += 1
            s.young += e.young
            s.idle += e.idle
            s.young_and_idle += e.young and e.idle
            s.lru_pages += reportable
            s.idle_lru_pages += idle
        return s

    def bitmap(self, lo: int = 0, hi: Optional[int] = None) -> bytes:
        """/sys/kernel/mm/page_idle/bitmap as a read would return it for [lo, hi).

        One bit per pfn in u64 chunks (BITMAP_CHUNK_SIZE, little-endian on
        x86), bit set when the page is on an LRU list with a reference and
        its folio's Idle bit is set.  ``lo`` must be a multiple of 64; ``hi``
        defaults to max_pfn, and like the kernel's read (which only counts a
        chunk once its 64th bit is done) a last partial chunk is left out.
        """
        if hi is None:
            if self.max_pfn is None:
                raise TargetError("max_pfn is unreadable: give the bitmap's end pfn")
            hi = self.max_pfn
        if lo % 64:
            raise TargetError("the bitmap starts at a multiple of 64 pfns")
        nwords = (hi - lo) // 64
        words = [0] * nwords
        for e, _reportable, idle in self._folio_view(lo, lo + 64 * nwords):
            if idle:
                words[(e.pfn - lo) // 64] |= 1 << ((e.pfn - lo) % 64)
        return struct.pack(f"<{nwords}Q", *words)
