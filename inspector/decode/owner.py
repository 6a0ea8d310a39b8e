"""page_owner's records as columns: selections, corruption, pageblock migratetypes, the target's clock.

Design.  The pieces of page_owner decoding that do not need a session: the
record states (:data:`ALLOCATED`, :data:`FREED`, :data:`ALL`), the corruption
bits (:data:`C_ORDER` ...), page_owner_sort's selection (:class:`Select`),
one chunk's selected records as columns (:class:`Batch`) and one record as
an object (:class:`Record`), and the version rules they follow
(:func:`max_record_order`, :func:`pageblock_layout`).  Functions take numpy
arrays (or a :class:`drgn.Program` for a kernel fact) and return arrays or
plain values; :class:`inspector.clients.page_owner.PageOwner` puts them
together over a session, :mod:`inspector.history` reads the same columns.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import drgn
from ..lazy import np

from .. import kernel as k
from ..errors import UsageError
from ..model import Table


ALLOCATED, FREED, ALL = "allocated", "freed", "all"

# What PageOwner.sums() can group by: record fields, the gfp's migratetype, the table's node.
AGG_KEYS = ("handle", "pid", "tgid", "comm", "order", "gfp_mask", "migratetype", "node")

# struct page_owner fields we know, in the order print_page_owner() passes them.
OWNER_FIELDS = ("order", "last_migrate_reason", "gfp_mask", "handle", "free_handle", "ts_nsec",
                "free_ts_nsec", "comm", "pid", "tgid", "free_pid", "free_tgid")

# Why a record is corrupt (bits of Batch.corrupt).
C_ORDER, C_PID, C_TS, C_REASON = 1, 2, 4, 8
CORRUPT_NAMES = {C_ORDER: "order", C_PID: "pid", C_TS: "ts_nsec", C_REASON: "last_migrate_reason"}


def clear_tail_memcg(p: np.ndarray) -> None:
    """print_page_owner_memcg()'s ``if (!memcg_data || PageTail(page))``
    (see memcg.py): zero the memcg_data word of each tail page among the
    struct pages ``p``, so that it prints no memcg line.

    :param p: structured struct pages (:func:`~inspector.decode.engine.page_fields`), changed in place
    """
    if "memcg_data" in p.dtype.names and "compound_head" in p.dtype.names:
        p["memcg_data"][(p["compound_head"] & 1) != 0] = 0


def max_record_order(prog: drgn.Program, nr_orders: int) -> int:
    """The highest order a page_owner record can hold.

    Before, __set_page_owner() walked 1 << order entries with
    page_ext_next(), which is only right inside one section: an allocation
    above the buddy's MAX_PAGE_ORDER (alloc_contig_pages() with __GFP_COMP:
    gigantic hugetlb pages, CMA) was not safe, so an order >= ``nr_orders``
    marks a corrupt record.  From "mm: page_owner: use new iteration API"
    (Luiz Capitulino, v3 posted 6 March 2025: v6.15 by date, the mainline
    hash unverified; not in the 6.12 sources, in the 7.2 and 7.3 ones) the
    walk is for_each_page_ext(), which crosses sections, and such orders
    are records like any other (up to MAX_FOLIO_ORDER, a macro: PUD order,
    16G, or a section).  Detected by
    ``struct page_ext_iter`` in the debug info; then the bound is the most
    pages the machine has (``max_pfn``), or 2**30 pages without it.

    :param prog: the target
    :param nr_orders: the buddy's orders (MAX_ORDER, or MAX_PAGE_ORDER + 1)
    :return: the highest order a record may hold
    """
    if k.type_or_none(prog, "struct page_ext_iter") is None:
        return nr_orders - 1
    top = k.value(prog, "max_pfn") or (1 << 30)
    return max(nr_orders - 1, top.bit_length() - 1)


def pageblock_layout(enum: dict[str, int]) -> Optional[tuple[int, int, int]]:
    """(bits a pageblock, migratetype mask, isolate bit mask) from the
    enumerators of enum pageblock_bits, or None for a layout we do not know.

    * v2.6.24 .. v6.16: PB_migrate..PB_migrate_end (3 bits), PB_migrate_skip,
      NR_PAGEBLOCK_BITS (4) an enumerator; MIGRATE_ISOLATE is a value of the
      migratetype bits.
    * v6.17 ("mm/page_isolation: make page isolation a standalone bit", Zi
      Yan; v6 posted 30 May 2025, after the v6.16 merge window opened, so
      v6.17 by date -- the mainline hash is unverified; not in the 6.12
      sources, in the 7.2 and 7.3 ones): PB_migrate_0..PB_migrate_2,
      PB_compact_skip, PB_migrate_isolate (CONFIG_MEMORY_ISOLATION),
      __NR_PAGEBLOCK_BITS; NR_PAGEBLOCK_BITS is now a macro,
      roundup_pow_of_two(__NR_PAGEBLOCK_BITS) -- 8 with isolation, 4
      without -- and a set PB_migrate_isolate reads as MIGRATE_ISOLATE.

    :param enum: enumerator name -> value of ``enum pageblock_bits``
    :return: ``(bits per pageblock, migratetype mask, isolate bit mask)`` or None

    >>> pageblock_layout({"PB_migrate": 0, "PB_migrate_end": 2, "PB_migrate_skip": 3, "NR_PAGEBLOCK_BITS": 4})
    (4, 7, 0)
    >>> pageblock_layout({"PB_migrate_0": 0, "PB_migrate_1": 1, "PB_migrate_2": 2, "PB_compact_skip": 3,
    ...                   "PB_migrate_isolate": 4, "__NR_PAGEBLOCK_BITS": 5})
    (8, 7, 16)
    """
    if "PB_migrate_end" in enum and "NR_PAGEBLOCK_BITS" in enum:
        return (enum["NR_PAGEBLOCK_BITS"],
                (1 << (enum["PB_migrate_end"] - enum.get("PB_migrate", 0) + 1)) - 1, 0)
    if "__NR_PAGEBLOCK_BITS" in enum and "PB_migrate_0" in enum:
        n = enum["__NR_PAGEBLOCK_BITS"]
        mt = 0
        for i in range(8):
            if f"PB_migrate_{i}" in enum:
                mt |= 1 << enum[f"PB_migrate_{i}"]
        iso = 1 << enum["PB_migrate_isolate"] if "PB_migrate_isolate" in enum else 0
        return 1 << max(0, n - 1).bit_length(), mt, iso
    return None


def pageblock_order_rule(*, nr_orders: int, pmd_order: int, hugetlb: bool, thp: bool,
                         block_max: Optional[int] = None) -> int:
    """pageblock_order as include/linux/pageblock-flags.h defines it, where it
    is a macro (not CONFIG_HUGETLB_PAGE_SIZE_VARIABLE, where it is a variable).

    * CONFIG_HUGETLB_PAGE: HUGETLB_PAGE_ORDER (HPAGE_SHIFT - PAGE_SHIFT; on
      x86 and arm64 HPAGE_SHIFT is PMD_SHIFT), capped at MAX_PAGE_ORDER (the
      cap is not in Debian's 5.10.262 header and is in its 6.1.192 one; on
      x86 and arm64 it never binds).
    * else CONFIG_TRANSPARENT_HUGEPAGE: HPAGE_PMD_ORDER, capped the same way.
      Not in Debian's 6.1.192, in its 6.12.118
      (:data:`inspector.versions.RELEASE_RULES` ``pageblock_order_thp``).  Before it, THP without hugetlb fell to the
      last branch.
    * else MAX_PAGE_ORDER (MAX_ORDER - 1 before v6.4).
    * From v6.16 ("mm: add CONFIG_PAGE_BLOCK_ORDER to select page block
      order", later CONFIG_PAGE_BLOCK_MAX_ORDER) every branch is capped at
      that config value as well: ``block_max``.

    :param nr_orders: len(zone->free_area) (:func:`inspector.kernel.nr_orders`)
    :param pmd_order: PMD_SHIFT - PAGE_SHIFT
    :param hugetlb: CONFIG_HUGETLB_PAGE
    :param thp: CONFIG_TRANSPARENT_HUGEPAGE, where the kernel has that branch
    :param block_max: CONFIG_PAGE_BLOCK_MAX_ORDER, where the kernel has it
    :return: pageblock_order

    >>> pageblock_order_rule(nr_orders=11, pmd_order=9, hugetlb=True, thp=True)   # x86-64
    9
    >>> pageblock_order_rule(nr_orders=14, pmd_order=13, hugetlb=False, thp=False, block_max=10)  # arm64 64K, 7.3
    10
    """
    cap = nr_orders - 1 if block_max is None else min(block_max, nr_orders - 1)
    return min(pmd_order, cap) if hugetlb or thp else cap


def pageblock_order_bounds(section_shift: int, nr_bits: int, usemap_bytes: Optional[int],
                           first_words: Sequence[int], long_bits: int = 64) -> tuple[int, int]:
    """What a kernel's own usemaps say of its pageblock_order: (lowest,
    highest) possible.

    A section's usemap (mem_section_usage.pageblock_flags) is usemap_size()
    = BITS_TO_LONGS((PAGES_PER_SECTION >> pageblock_order) * NR_PAGEBLOCK_BITS)
    longs.  Its size (``usemap_bytes``, measured as the stride of the early
    sections sparse_init_nid() carves from one allocation), when more than
    one long, pins the order; one long only says every block fits in it
    (with 64K pages and 8-bit blocks, orders 10 to 13 all make one long).
    The first long of each usemap: a block i with any bit set proves at least
    i + 1 blocks a section, since the bits past the last block are padding the
    allocator zeroed (memblock_alloc(), kzalloc()) and nothing writes.

    :param section_shift: log2(PAGES_PER_SECTION)
    :param nr_bits: bits a pageblock (NR_PAGEBLOCK_BITS)
    :param usemap_bytes: usemap_size(), or None where not measured
    :param first_words: the first long of usemaps (any number)
    :param long_bits: bits in a long (32 on i386)
    :return: ``(lowest, highest)`` pageblock_order consistent with them

    >>> pageblock_order_bounds(13, 8, 8, [0x0101010101010101])  # arm64 64K, 7.x: 8 blocks a section
    (10, 10)
    >>> pageblock_order_bounds(13, 8, None, [0x01])              # one block seen: no bound
    (0, 13)
    >>> pageblock_order_bounds(15, 4, 32, [])                   # x86-64: 256 bits, 64 blocks
    (9, 9)
    """
    lo, hi = 0, section_shift
    if usemap_bytes:
        bits = usemap_bytes * 8
        fit = bits // nr_bits  # blocks a usemap can hold
        if fit and fit & (fit - 1) == 0:
            exact = section_shift - (fit.bit_length() - 1)
            if bits > long_bits:
                lo = hi = exact
            else:
                lo = max(lo, exact)
    top = -1
    for w in first_words:
        for i in range(long_bits // nr_bits - 1, top, -1):
            if (w >> (i * nr_bits)) & ((1 << nr_bits) - 1):
                top = i
                break
    if top > 0:
        hi = min(hi, section_shift - (top.bit_length()))  # ceil(log2(top + 1))
    return lo, hi


def block_migratetype(usemap: np.ndarray, bitidx: np.ndarray, mt_mask: int, iso_bit: int,
                      isolate_mt: int) -> np.ndarray:
    """get_pfnblock_migratetype() over a section's pageblock bitmap (uint64
    words) at each block's first bit: the migratetype bits, or MIGRATE_ISOLATE
    where the standalone isolate bit (v6.17) is set.

    :param usemap: the section's pageblock bitmap, uint64 words
    :param bitidx: each page's block's first bit in it
    :param mt_mask: the migratetype bits (:func:`pageblock_layout`)
    :param iso_bit: the standalone isolate bit, 0 before v6.17
    :param isolate_mt: MIGRATE_ISOLATE's value
    :return: int64 migratetype per page

    >>> block_migratetype(np.array([0x21], np.uint64), np.array([0, 4]), 7, 0, 4).tolist()
    [1, 2]
    """
    word = usemap[np.minimum(bitidx // 64, len(usemap) - 1)] >> (bitidx % 64).astype(np.uint64)
    mt = (word & np.uint64(mt_mask)).astype(np.int64)
    if iso_bit:
        mt = np.where((word & np.uint64(iso_bit)) != 0, np.int64(isolate_mt), mt)
    return mt


@dataclass
class Batch:
    """The selected records of one chunk, as columns."""

    table: Table
    pfn: np.ndarray  # int64
    e: np.ndarray  # structured entries (ext_flags + struct page_owner fields)
    p: Optional[np.ndarray]  # structured struct pages, None where the memmap is unread
    block_mt: np.ndarray  # pageblock migratetype, -1 unknown
    corrupt: np.ndarray  # C_* bits
    suspect: bool = False  # a decode check failed on this table (decoded with --force)
    pknown: Optional[np.ndarray] = None  # bool: the struct page was read (None: all were)

    def __len__(self) -> int:
        return len(self.pfn)

    def take(self, idx: np.ndarray) -> "Batch":
        """The records ``idx`` of this batch, as a batch.

        :param idx: indices or a bool mask over the batch
        :return: a new :class:`Batch` of those records
        """
        return Batch(self.table, self.pfn[idx], self.e[idx], None if self.p is None else self.p[idx],
                     self.block_mt[idx], self.corrupt[idx], self.suspect,
                     None if self.pknown is None else self.pknown[idx])


@dataclass(frozen=True)
class Select:
    """page_owner_sort's select options: ``--pid``, ``--tgid``, ``--name``
    (tools/mm/page_owner_sort.c, v5.17+): a record is kept when its pid is
    in ``pids``, its tgid in ``tgids`` and its comm in ``names`` (each that
    is given; the tool compares the comm with strcmp, so a name matches
    whole)."""

    pids: tuple[int, ...] = ()
    tgids: tuple[int, ...] = ()
    names: tuple[bytes, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.pids or self.tgids or self.names)

    def mask(self, e: np.ndarray) -> np.ndarray:
        """Which of the records ``e`` (structured entries) are selected.

        :param e: structured entries with ``pid``, ``tgid`` and ``comm`` (those selected on)
        :return: bool array
        """
        keep = np.ones(len(e), dtype=bool)
        if self.pids:
            keep &= np.isin(e["pid"], self.pids)
        if self.tgids:
            keep &= np.isin(e["tgid"], self.tgids)
        if self.names and len(e):
            # %s prints the comm up to its NUL (strscpy() leaves old bytes after it)
            c = np.ascontiguousarray(e["comm"]).view(np.uint8).reshape(len(e), -1).copy()
            c[np.cumsum(c == 0, axis=1) > 0] = 0
            comm = c.view(e["comm"].dtype).ravel()
            keep &= np.isin(comm, np.array(self.names, dtype=comm.dtype))
        return keep

    @classmethod
    def parse(cls, pid: Optional[str], tgid: Optional[str], name: Optional[str]) -> "Select":
        """The comma-separated lists as page_owner_sort takes them.

        >>> Select.parse("1,2", None, "leaker,sh")
        Select(pids=(1, 2), tgids=(), names=(b'leaker', b'sh'))

        :param pid: ``--pid``'s list, or None
        :param tgid: ``--tgid``'s list, or None
        :param name: ``--name``'s list, or None
        :return: the :class:`Select`
        :raises UsageError: a list that is not numbers
        """
        def ints(text: Optional[str], flag: str) -> tuple[int, ...]:
            if text is None:
                return ()
            try:
                return tuple(int(x, 0) for x in text.split(",") if x.strip())
            except ValueError:
                raise UsageError(f"bad {flag} {text!r}: a comma-separated list of numbers") from None
        names = tuple(n.encode("latin-1", "replace") for n in name.split(",")) if name is not None else ()
        return cls(ints(pid, "--pid"), ints(tgid, "--tgid"), names)


@dataclass
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
    page_flags: Optional[int]
    pageblock_mt: Optional[int]
    memcg_data: int = 0
    corrupt: tuple = ()
    suspect: bool = False  # from a table a failed decode check points at (decoded with --force)


def target_clock_ns(prog: drgn.Program) -> Optional[int]:
    """local_clock() as the target last saw it: the newest runqueue clock
    (update_rq_clock(): sched_clock_cpu()) or kernel log record (printk
    stamps records with local_clock()), whichever is later; None if neither
    can be read.

    :param prog: the target
    :return: nanoseconds since boot, or None
    """
    best = None
    try:
        from drgn.helpers.linux.cpumask import for_each_online_cpu
        from drgn.helpers.linux.sched import cpu_rq
        for cpu in for_each_online_cpu(prog):
            c = cpu_rq(prog, cpu).clock.value_()
            best = c if best is None else max(best, c)
    except (LookupError, drgn.FaultError, AttributeError, ValueError, drgn.ObjectAbsentError):
        pass
    try:
        from drgn.helpers.linux.printk import get_printk_records
        recs = get_printk_records(prog)
        if recs:
            best = max(best or 0, recs[-1].timestamp)
    except (LookupError, drgn.FaultError, ValueError, AttributeError, OverflowError, drgn.ObjectAbsentError):
        pass  # OverflowError: a damaged printk ring (its descriptor count) in the fuzz corpus
    return best
