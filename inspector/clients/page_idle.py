"""page_idle: idle page tracking's Young and Idle bits, decoded per page.

Idle page tracking (v4.3, 33c3fc71c8cf; Documentation/admin-guide/mm/
idle_page_tracking.rst) gives every user page two bits.  Writing 1s to
/sys/kernel/mm/page_idle/bitmap sets Idle on LRU pages (after clearing the
Accessed bit of every pte mapping them); any access clears it again --
folio_mark_accessed() directly, a pte access at the next rmap walk -- and
Young records "I cleared an Accessed bit" so reclaim still sees the
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
what the read returned; :meth:`PageIdle.bitmap_chunks` rebuilds that view
from page_ext and the memmap (without touching any pte: a page accessed
after the last read still shows Idle until the kernel next looks).

Each chunk is a numpy array whose flags word has the target's size (4 bytes
on i386); bit numbers come from the target's ``enum page_ext_flags``.  The
bitmap is produced a chunk at a time, never ``max_pfn / 64`` words at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Optional

import drgn
from ..lazy import np

from .. import kernel as k
from ..errors import ClientError, UsageError
from ..model import Client, Rules
from . import ClientSpec
from ..decode.engine import COMPOUND_WORD, columns, head_pfns, known_mask, member_field, page_fields, record_dtype


def _rebuild(prog: drgn.Program, clients: list[Client], rules: Rules, allocated: bool) -> Optional[Client]:
    """page_idle_ops (32-bit idle page tracking), rebuilt rather than read.

    mm/page_ext.c declares it ``static ... __initdata`` (v4.3, 33c3fc71c8cf,
    to this day), so after boot its bytes are freed init memory, poisoned and
    reused: reading .offset would give garbage.  Its facts are fixed instead:
    need() always returns true, size is 0 (it only uses PAGE_EXT_YOUNG and
    PAGE_EXT_IDLE in page_ext->flags, need_shared_flags from v6.3), and
    invoke_need_callbacks() gives it page_ext_size as it stands after
    page_owner, the only client before it in page_ext_ops[]: sizeof(struct
    page_ext) plus page_owner's size when page_owner is on.
    """
    offset = 0
    if rules.ops_has_offset:
        offset = prog.type("struct page_ext").size
        owner = next((c for c in clients if c.name == "page_owner"), None)
        if owner is not None and owner.active:
            offset += owner.size
    return Client("page_idle", offset, 0, allocated, True if rules.ops_has_shared_flags else None, CLIENT.enable)


CLIENT = ClientSpec("page_idle", "CONFIG_PAGE_IDLE_FLAG (32-bit)",
                    "always on when compiled in (32-bit idle page tracking)",
                    "idle page tracking's Young and Idle bits (32-bit kernels only)",
                    rebuild=_rebuild, decoder="inspector.clients.page_idle:PageIdle", commands=("page-idle",))


@dataclass
class IdleSummary:
    pages: int = 0  # page_ext entries scanned
    young: int = 0
    idle: int = 0
    young_and_idle: int = 0
    lru_pages: int = 0  # pages the bitmap can report: online, PageLRU, refcount > 0
    idle_lru_pages: int = 0  # of those, Idle (the head's bit): set bits of the bitmap view

    def to_json(self) -> dict:
        """The summary as a dict (the ``--json`` keys).

        :return: the counts, JSON-ready
        """
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
        """The entry as a dict (the ``--json`` keys).

        :return: the entry's fields, JSON-ready
        """
        return dict(self.__dict__)


def no_page_idle_reason(prog: drgn.Program) -> str:
    """Why this kernel keeps no page_idle data in page_ext (one line).

    :param prog: the target
    :return: one line for the error message
    """
    is64 = k.pointer_size(prog) == 8
    has_pg_idle = k.constant(prog, "PG_idle") is not None
    if is64 or has_pg_idle:
        state = "on" if has_pg_idle else "off"
        return ("page_idle keeps its Young/Idle bits in page->flags (PG_young, PG_idle) on 64-bit kernels, "
                f"not in page_ext: nothing to decode here (CONFIG_PAGE_IDLE_FLAG is {state} in this kernel)")
    return "this kernel has no page_idle client (CONFIG_IDLE_PAGE_TRACKING / CONFIG_PAGE_IDLE_FLAG is off)"


@dataclass
class IdleChunk:
    pfn: np.ndarray
    young: np.ndarray
    idle: np.ndarray
    flags: np.ndarray
    reportable: np.ndarray  # bool: the bitmap can report it (head on LRU, refcount > 0)
    idle_view: np.ndarray  # bool: the bit a bitmap read returns now
    lru: Optional[np.ndarray]
    refcount: Optional[np.ndarray]
    head: Optional[np.ndarray]


class PageIdle:
    def __init__(self, session):
        self.session = session
        prog = self.prog = session.prog
        lay = session.layout
        client = lay.client("page_idle")
        if client is None:
            raise ClientError(no_page_idle_reason(prog))
        if not client.active:
            raise ClientError("page_idle is compiled in but inactive in this boot "
                              "(page_ext was never allocated: total_usage is 0)")
        self.young_bit = k.constant(prog, "PAGE_EXT_YOUNG")
        self.idle_bit = k.constant(prog, "PAGE_EXT_IDLE")
        if self.young_bit is None or self.idle_bit is None:
            raise ClientError("enum page_ext_flags has no PAGE_EXT_YOUNG/PAGE_EXT_IDLE in this kernel's "
                              "debug info")
        pe = prog.type("struct page_ext")
        self.word = pe.member("flags").type.size
        self.dtype = record_dtype([member_field(pe, "flags")], lay.entry_size)
        self.pf = page_fields(prog, "flags", COMPOUND_WORD, "_refcount")
        self.max_pfn = k.value(prog, "max_pfn")

    def chunks(self, lo: int = 0, hi: int = 1 << 64, node: Optional[int] = None) -> Iterator[IdleChunk]:
        """The Young/Idle bits of the pages read in [lo, hi), a chunk at a time, as columns.

        :param lo: first pfn
        :param hi: end pfn (exclusive)
        :param node: only this NUMA node's tables
        :return: iterator of :class:`IdleChunk`
        """
        ybit, ibit = 1 << self.young_bit, 1 << self.idle_bit
        for ch in self.session.chunks(lo, hi, node=node, label="reading page_idle"):
            e = columns(ch.entries, self.dtype, ch.n)
            keep = np.flatnonzero(known_mask(ch.n, ch.unknown))
            pfn = np.arange(ch.lo, ch.hi, dtype=np.int64)
            flags = e["flags"].astype(np.uint64)
            young, idle = (flags & ybit) != 0, (flags & ibit) != 0
            # FLATMEM tables carry up to MAX_ORDER_NR_PAGES of slack past the
            # node: those entries have no struct page.
            has_page = pfn < self.max_pfn if self.max_pfn is not None else np.ones(ch.n, bool)
            if ch.memmap is not None:
                p = columns(ch.memmap, self.pf.dtype, ch.n)
                has_page &= known_mask(ch.n, ch.memmap_unknown)
                lru = (p["flags"].astype(np.uint64) & np.uint64(self.pf.lru_bit)) != 0
                ref = p["_refcount"].astype(np.int64)
                head = head_pfns(self.prog, self.pf, p["compound_head"].astype(np.uint64), pfn)
                # page_idle_get_page(): PageLRU and get_page_unless_zero() act on the head.
                hidx = head - ch.lo
                inside = (hidx >= 0) & (hidx < ch.n)
                h_lru, h_ref, h_idle = lru.copy(), ref.copy(), idle.copy()
                h_lru[inside] = lru[hidx[inside]]
                h_ref[inside] = ref[hidx[inside]]
                h_idle[inside] = idle[hidx[inside]]
                for i in np.flatnonzero(~inside & has_page).tolist():  # a head in another chunk
                    hh = self.entry_at(int(head[i]))
                    h_lru[i], h_ref[i], h_idle[i] = bool(hh.lru), hh.refcount or 0, hh.idle
                reportable = has_page & h_lru & (h_ref > 0)
                view = reportable & h_idle
            else:
                lru = ref = head = None
                reportable = view = np.zeros(ch.n, bool)
            sel = keep
            yield IdleChunk(pfn[sel], young[sel], idle[sel], flags[sel], reportable[sel], view[sel],
                            None if lru is None else np.where(has_page, lru, False)[sel],
                            None if ref is None else ref[sel], None if head is None else head[sel])

    def entry_at(self, pfn: int) -> IdleEntry:
        """One page's Young/Idle bits (its head's, for a tail page), with its LRU state and refcount.

        :param pfn: a page frame number
        :return: an :class:`IdleEntry`
        """
        flags = int(columns(self.session.entry(pfn), self.dtype, 1)["flags"][0])
        mm, mm_lost = self.session.read_memmap(pfn, pfn + 1) if self.max_pfn is None or pfn < self.max_pfn \
            else (None, [(0, 1)])
        young, idle = bool(flags >> self.young_bit & 1), bool(flags >> self.idle_bit & 1)
        if mm is None or mm_lost:
            return IdleEntry(pfn, flags, young, idle, None, None, None)
        p = columns(mm, self.pf.dtype, 1)
        head = int(head_pfns(self.prog, self.pf, p["compound_head"].astype(np.uint64),
                             np.array([pfn], dtype=np.int64))[0])
        return IdleEntry(pfn, flags, young, idle, bool(int(p["flags"][0]) & self.pf.lru_bit),
                         int(p["_refcount"][0]), head)

    def summary(self, lo: int = 0, hi: int = 1 << 64, node: Optional[int] = None) -> IdleSummary:
        """Young and idle pages counted over [lo, hi), with the LRU pages the kernel's bitmap reports.

        :param lo: first pfn
        :param hi: end pfn (exclusive), None: all
        :param node: only this NUMA node's tables
        :return: an :class:`IdleSummary`
        """
        s = IdleSummary()
        for c in self.chunks(lo, hi, node):
            s.pages += len(c.pfn)
            s.young += int(c.young.sum())
            s.idle += int(c.idle.sum())
            s.young_and_idle += int((c.young & c.idle).sum())
            s.lru_pages += int(c.reportable.sum())
            s.idle_lru_pages += int(c.idle_view.sum())
        return s

    def bitmap_chunks(self, lo: int = 0, hi: Optional[int] = None) -> Iterator[bytes]:
        """/sys/kernel/mm/page_idle/bitmap as a read would return it for [lo, hi), in pieces.

        One bit per pfn in u64 chunks (BITMAP_CHUNK_SIZE, little-endian on
        x86), bit set when the page is on an LRU list with a reference and
        its folio's Idle bit is set.  ``lo`` must be a multiple of 64; ``hi``
        defaults to max_pfn, and like the kernel's read (which only counts a
        chunk once its 64th bit is done) a last partial chunk is left out.
        """
        if hi is None:
            if self.max_pfn is None:
                raise UsageError("max_pfn is unreadable: give the bitmap's end pfn")
            hi = self.max_pfn
            bound = self._pfn_bound()
            if bound is not None and hi > bound:
                self.session.missing.note(f"max_pfn {hi:#x} is beyond what the kernel can address "
                                          f"({bound:#x}): the bitmap ends there")
                hi = bound
        if lo % 64:
            raise UsageError("the bitmap starts at a multiple of 64 pfns")
        end = lo + 64 * ((hi - lo) // 64)
        pos = lo
        for c in self.chunks(lo, end):
            if not len(c.pfn):
                continue
            first = int(c.pfn[0]) - int(c.pfn[0]) % 64
            if first > pos:
                yield from _zeros((first - pos) // 8)
                pos = first
            last = int(c.pfn[-1]) + 1
            span = -(-(last - pos) // 64) * 64
            bits = np.zeros(span, dtype=bool)
            bits[c.pfn[c.idle_view] - pos] = True
            words = np.packbits(bits.reshape(-1, 8), axis=1, bitorder="little").reshape(-1)
            yield words.tobytes()
            pos += span
        if end > pos:
            yield from _zeros((end - pos) // 8)

    def _pfn_bound(self) -> Optional[int]:
        """1 << (MAX_PHYSMEM_BITS - PAGE_SHIFT): no pfn reaches it."""
        bits, shift = k.value(self.prog, "MAX_PHYSMEM_BITS"), k.value(self.prog, "PAGE_SHIFT")
        return None if bits is None or shift is None else 1 << max(0, bits - shift)

    def bitmap(self, lo: int = 0, hi: Optional[int] = None) -> bytes:
        """/sys/kernel/mm/page_idle/bitmap as a read of [lo, hi) would return it now.

        :param lo: first pfn (a multiple of 64)
        :param hi: end pfn, None: max_pfn
        :return: the bitmap's bytes
        """
        return b"".join(self.bitmap_chunks(lo, hi))


def _zeros(n: int, piece: int = 1 << 20) -> Iterator[bytes]:
    """n zero bytes, a MiB at a time."""
    while n > 0:
        yield bytes(min(n, piece))
        n -= piece
