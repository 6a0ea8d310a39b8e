"""page_table_check: per-page user mapping counts, decoded and cross-checked.

mm/page_table_check.c (v5.17, df4e817b7108) keeps ``struct
page_table_check { atomic_t anon_map_count; atomic_t file_map_count; }`` at
``page_table_check_ops.offset`` in every page_ext entry and counts how many
user page-table entries map the page, anonymous or file-backed by
PageAnon().  The kernel BUG()s when a page is counted both ways or a count
goes negative, so on a sane kernel neither shows up; we report both.

Like page_owner, each table is read with one ``prog.read`` and unpacked with
one Struct (offsets from the DWARF).  As an independent check we also read
the memmap and compare with what the rmap code keeps in ``struct page``: an
anon count needs PageAnon (``mapping`` bit 0), a file count needs
!PageAnon, and for an order-0, non-compound page with no page type the
kernel's own ``_mapcount + 1`` must equal anon + file -- except the shared
zero page, which user page tables map without rmap.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Optional

import drgn

from ..discover import Geometry, require_client
from ..model import Layout
from ..walk import online_spans, read_entries
from .page_owner import build_struct, read_memmap

PAGE_MAPPING_ANON = 0x1  # include/linux/page-flags.h, unchanged since v2.6


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

    def to_json(self) -> dict:
        return {k: (len(v) if isinstance(v, list) else v) for k, v in self.__dict__.items()} | {
            "inconsistent_pfns": sorted(set(self.both + self.negative + self.not_anon + self.anon_file))[:100],
            "mapcount_mismatch_pfns": self.mapcount_mismatch[:100]}


class PageTableCheck:
    def __init__(self, prog: drgn.Program, geo: Geometry, layout: Layout):
        self.prog, self.geo, self.layout = prog, geo, layout
        client = require_client(geo, "page_table_check", "CONFIG_PAGE_TABLE_CHECK")
        t = prog.type("struct page_table_check")
        off = client.offset
        self.entry, enames = build_struct([("anon", off + drgn.offsetof(t, "anon_map_count"), "i"),
                                      ("file", off + drgn.offsetof(t, "file_map_count"), "i")],
                                     geo.entry_size)
        self._anon_first = enames[0] == "anon"
        pt = prog.type("struct page")
        fields = [("flags", 0, "Q"), ("mapping", drgn.offsetof(pt, "mapping"), "Q"),
                  ("compound_head", drgn.offsetof(pt, "compound_head"), "Q"),
                  ("mapcount", drgn.offsetof(pt, "_mapcount"), "i")]
        self.page, names = build_struct(fields, pt.size)
        self._order = [names.index(n) for n in ("flags", "mapping", "compound_head", "mapcount")]
        try:
            self.head_bit = 1 << prog.constant("PG_head").value_()
        except LookupError:
            self.head_bit = 0
        try:  # empty_zero_page is an assembler symbol (no DWARF) in the kernel image
            from drgn.helpers.linux.mm import follow_phys
            addr = prog.symbol("empty_zero_page").address
            self.zero_pfn = follow_phys(prog["init_mm"].address_of_(), addr).value_() >> geo.page_shift
        except (KeyError, LookupError, drgn.FaultError, ValueError):
            self.zero_pfn = None
        # Page types share _mapcount (v4.18 6e292b9be7f4): a value below
        # PAGE_MAPCOUNT_RESERVE (-128) is a type, not a count.
        self.mapcount_reserve = -128

    def entries(self, lo: int = 0, hi: int = 1 << 64) -> Iterator[tuple[int, int, int, Optional[tuple]]]:
        """(pfn, anon, file, page fields or None) for every page with page_ext."""
        for t, a, b in online_spans(self.layout, lo, hi):
            raw = read_entries(self.prog, t, a, b, self.geo.entry_size)
            memmap = read_memmap(self.prog, a, b - a, self.page.size)
            pages = self.page.iter_unpack(memmap) if memmap else None
            o = self._order
            for k, (x, y) in enumerate(self.entry.iter_unpack(raw)):
                anon, file = (x, y) if self._anon_first else (y, x)
                p = next(pages) if pages is not None else None
                yield a + k, anon, file, (None if p is None else tuple(p[i] for i in o))

    def summary(self, lo: int = 0, hi: int = 1 << 64) -> PtcSummary:
        s = PtcSummary()
        for pfn, anon, file, p in self.entries(lo, hi):
            s.pages += 1
            if anon > 0:
                s.anon_pages += 1
                s.anon_mappings += anon
            if file > 0:
                s.file_pages += 1
                s.file_mappings += file
            if anon < 0 or file < 0:
                s.negative.append(pfn)
            if anon and file:
                s.both.append(pfn)
            if p is None:
                continue
            flags, mapping, chead, mapcount = p
            is_anon = bool(mapping & PAGE_MAPPING_ANON)
            if anon > 0 and not is_anon:
                s.not_anon.append(pfn)
            if file > 0 and is_anon:
                s.anon_file.append(pfn)
            if flags & self.head_bit or chead & 1 or mapcount < self.mapcount_reserve or pfn == self.zero_pfn:
                continue
            s.mapcount_checked += 1
            if mapcount + 1 != anon + file:
                s.mapcount_mismatch.append(pfn)
        return s
