"""page_table_check: per-page user mapping counts, decoded and cross-checked.

mm/page_table_check.c (v5.17, df4e817b7108) keeps ``struct
page_table_check { atomic_t anon_map_count; atomic_t file_map_count; }`` at
``page_table_check_ops.offset`` in every page_ext entry and counts how many
user page-table entries map the page, anonymous or file-backed by
PageAnon().  The kernel BUG()s when a page is counted both ways or a count
goes negative, so on a sane kernel neither shows up; we report both.

Each chunk of a table and of the memmap is a numpy array (:mod:`.engine`);
every test is a whole-array mask.  As an independent check we compare with
what the rmap code keeps in ``struct page``: an anon count needs PageAnon
(``mapping`` bit 0), a file count needs !PageAnon, and for an order-0,
non-compound page with no page type the kernel's own ``_mapcount + 1`` must
equal anon + file -- except the shared zero page, which user page tables map
without rmap.  Pages whose struct page is unreadable are counted, never
compared.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Optional

import drgn
from ..lazy import np

from . import ClientSpec, static_key_probe
from ..decode.engine import COMPOUND_WORD, columns, known_mask, member_field, page_fields, record_dtype

PAGE_MAPPING_ANON = 0x1  # include/linux/page-flags.h, unchanged since v2.6
# Page types share _mapcount (v4.18 6e292b9be7f4): a value at or below
# PAGE_MAPCOUNT_RESERVE (-128) is a type, not a count.
MAPCOUNT_RESERVE = -128


def _active(prog: drgn.Program) -> Optional[bool]:
    # DEFINE_STATIC_KEY_TRUE(page_table_check_disabled), df4e817b7108 (v5.17).
    disabled = static_key_probe("page_table_check_disabled")(prog)
    return None if disabled is None else not disabled


CLIENT = ClientSpec("page_table_check", "CONFIG_PAGE_TABLE_CHECK", "boot with page_table_check=on",
                    "how many user page tables map each page, anonymous and file-backed",
                    active=_active, decoder="inspector.clients.page_table_check:PageTableCheck",
                    commands=("table-check",))


@dataclass
class PtcSummary:
    pages: int = 0  # entries scanned
    anon_pages: int = 0  # pages with anon_map_count > 0
    file_pages: int = 0
    anon_mappings: int = 0  # sum of anon_map_count
    file_mappings: int = 0
    both: list[int] = field(default_factory=list)  # pfns counted both ways
    negative: list[int] = field(default_factory=list)
    not_anon: list[int] = field(default_factory=list)  # anon count but !PageAnon
    anon_file: list[int] = field(default_factory=list)  # file count but PageAnon
    mapcount_checked: int = 0
    mapcount_mismatch: list[int] = field(default_factory=list)
    unchecked: int = 0  # pages whose struct page could not be read

    @property
    def inconsistent(self) -> list[int]:
        """Every page whose counts break page_table_check's rules: counted both ways, negative, or the wrong kind.

        :return: sorted pfns
        """
        return sorted(set(self.both + self.negative + self.not_anon + self.anon_file))

    def to_json(self) -> dict:
        """The summary as a dict (the ``--json`` keys).

        :return: the counts (lists as their lengths), JSON-ready
        """
        return {key: (len(v) if isinstance(v, list) else v) for key, v in self.__dict__.items()} | {
            "inconsistent_pfns": self.inconsistent[:100], "mapcount_mismatch_pfns": self.mapcount_mismatch[:100]}


class PageTableCheck:
    def __init__(self, session):
        self.session = session
        prog = self.prog = session.prog
        client = session.require_client("page_table_check", CLIENT.config, CLIENT.enable)
        t = prog.type("struct page_table_check")
        self.dtype = record_dtype([member_field(t, "anon_map_count", client.offset),
                                   member_field(t, "file_map_count", client.offset)], session.layout.entry_size)
        self.pf = page_fields(prog, "flags", "mapping", COMPOUND_WORD, "_mapcount")
        self.zero_pfn = None
        try:  # empty_zero_page is an assembler symbol (no DWARF) in the kernel image
            from drgn.helpers.linux.mm import follow_phys
            addr = prog.symbol("empty_zero_page").address
            self.zero_pfn = follow_phys(prog["init_mm"].address_of_(), addr).value_() // session.layout.page_size
        except (KeyError, LookupError, drgn.FaultError, ValueError):
            pass

    def chunks(self, lo: int = 0, hi: int = 1 << 64, node: Optional[int] = None) \
            -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, Optional[np.ndarray], np.ndarray]]:
        """(pfns, anon, file, struct pages or None, struct page known) per chunk,
        the entries that were read only."""
        for ch in self.session.chunks(lo, hi, node=node, label="reading page_table_check"):
            e = columns(ch.entries, self.dtype, ch.n)
            keep = known_mask(ch.n, ch.unknown)
            p = columns(ch.memmap, self.pf.dtype, ch.n) if ch.memmap is not None else None
            pknown = known_mask(ch.n, ch.memmap_unknown) if p is not None else np.zeros(ch.n, bool)
            idx = np.flatnonzero(keep)
            pfn = np.arange(ch.lo, ch.hi, dtype=np.int64)[idx]
            yield (pfn, e["anon_map_count"][idx].astype(np.int64), e["file_map_count"][idx].astype(np.int64),
                   None if p is None else p[idx], pknown[idx])

    def summary(self, lo: int = 0, hi: int = 1 << 64, node: Optional[int] = None) -> PtcSummary:
        """The per-page anon/file map counts over [lo, hi), summed and checked against each other and _mapcount.

        :param lo: first pfn
        :param hi: end pfn (exclusive)
        :param node: only this NUMA node's tables
        :return: a :class:`PtcSummary`
        """
        s = PtcSummary()
        for pfn, anon, file, p, pknown in self.chunks(lo, hi, node):
            s.pages += len(pfn)
            s.anon_pages += int((anon > 0).sum())
            s.file_pages += int((file > 0).sum())
            s.anon_mappings += int(anon[anon > 0].sum())
            s.file_mappings += int(file[file > 0].sum())
            s.negative += pfn[(anon < 0) | (file < 0)].tolist()
            s.both += pfn[(anon != 0) & (file != 0)].tolist()
            s.unchecked += int((~pknown).sum())
            if p is None:
                continue
            is_anon = (p["mapping"] & PAGE_MAPPING_ANON).astype(bool)
            s.not_anon += pfn[pknown & (anon > 0) & ~is_anon].tolist()
            s.anon_file += pfn[pknown & (file > 0) & is_anon].tolist()
            mapcount = p["_mapcount"].astype(np.int64)
            skip = ((p["flags"] & np.uint64(self.pf.head_bit)) != 0) | ((p["compound_head"] & 1) != 0) \
                | (mapcount <= MAPCOUNT_RESERVE) | ~pknown
            if self.zero_pfn is not None:
                skip |= pfn == self.zero_pfn
            checked = ~skip
            s.mapcount_checked += int(checked.sum())
            s.mapcount_mismatch += pfn[checked & (mapcount + 1 != anon + file)].tolist()
        return s
