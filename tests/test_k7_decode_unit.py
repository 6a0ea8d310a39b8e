"""7.x layouts over small synthetic inputs (issue 18): what the 7.x test
kernels cannot produce (tests/test_vm_7x_decode.py and test_vm_72_stock.py
say why) -- a set PB_migrate_isolate bit, a page_owner record above
MAX_PAGE_ORDER, a first tail page's memcg word under page_owner -- and the
HVO mask in a tail page's compound_info, built here the way the kernel's own
code builds them (include/linux/page-flags.h set_compound_head(),
mm/page_alloc.c get_pfnblock_migratetype(), mm/page_owner.c
print_page_owner_memcg())."""

from __future__ import annotations

import drgn
import numpy as np

from inspector.decode.engine import PageFields, head_pfns, record_dtype
from inspector.decode.memcg import skips_tail_pages
from inspector.decode.owner import block_migratetype, clear_tail_memcg, max_record_order, pageblock_layout

VMEMMAP = 0xFFFFEA0000000000
PAGE = 64  # sizeof(struct page) on x86-64: a power of two


def _pf(mask: bool) -> PageFields:
    return PageFields(record_dtype([], PAGE), PAGE, 1 << 6, 1 << 4, VMEMMAP, mask)


def set_compound_head(tail_pfn: int, head_pfn: int, order: int, mask: bool) -> int:
    """The word set_compound_head() stores in a tail (7.x)."""
    if not mask:
        return VMEMMAP + head_pfn * PAGE | 1
    shift = order + (PAGE.bit_length() - 1)
    return (((1 << 64) - 1) >> shift << shift) | 1  # GENMASK(63, shift) | 1


def test_tail_pages_find_their_head_with_a_pointer_and_with_the_hvo_mask():
    head, order = 0x40000, 9  # a 2 MiB hugetlb folio
    pfns = np.array([head, head + 1, head + 7, head + 511, head + 512], dtype=np.int64)
    for mask in (False, True):
        words = np.array([0] + [set_compound_head(p, head, order, mask) for p in pfns[1:4].tolist()] + [0],
                         dtype=np.uint64)
        got = head_pfns(None, _pf(mask), words, pfns)
        assert got.tolist() == [head, head, head, head, head + 512], mask
    # The mask read as a pointer (the rule before the rework) lands nowhere near the head.
    words = np.array([set_compound_head(head + 1, head, order, True)], dtype=np.uint64)
    assert head_pfns(None, _pf(False), words, pfns[1:2]).tolist() != [head]


def test_pageblock_bits_of_7x_and_the_isolate_bit():
    old = {"PB_migrate": 0, "PB_migrate_end": 2, "PB_migrate_skip": 3, "NR_PAGEBLOCK_BITS": 4}
    new = {"PB_migrate_0": 0, "PB_migrate_1": 1, "PB_migrate_2": 2, "PB_compact_skip": 3,
           "PB_migrate_isolate": 4, "__NR_PAGEBLOCK_BITS": 5}
    no_iso = {k: v for k, v in new.items() if k != "PB_migrate_isolate"} | {"__NR_PAGEBLOCK_BITS": 4}
    assert pageblock_layout(old) == (4, 7, 0)
    assert pageblock_layout(new) == (8, 7, 1 << 4)  # BUILD_BUG_ON(NR_PAGEBLOCK_BITS != 8)
    assert pageblock_layout(no_iso) == (4, 7, 0)
    assert pageblock_layout({"X": 1}) is None
    bits, mt_mask, iso = pageblock_layout(new)
    # Three blocks of one word: MOVABLE (1); RECLAIMABLE (2) isolated; skip bit + UNMOVABLE (0).
    word = 1 | (2 | 1 << 4) << bits | (1 << 3) << 2 * bits
    usemap = np.array([word], dtype=np.uint64)
    isolate = 5  # MIGRATE_ISOLATE's value in this synthetic enum
    got = block_migratetype(usemap, np.array([0, bits, 2 * bits], dtype=np.int64), mt_mask, iso, isolate)
    assert got.tolist() == [1, isolate, 0]


class _Prog:
    """Just enough of a drgn.Program for max_record_order()."""

    def __init__(self, iterator: bool, max_pfn: int):
        self.iterator, self.cache = iterator, {}
        self._p = drgn.Program(drgn.host_platform)
        self._max_pfn = drgn.Object(self._p, self._p.int_type("unsigned long", 8, False), max_pfn)

    def type(self, name: str):
        if name == "struct page_ext_iter" and self.iterator:
            return self._p.int_type("int", 4, True)
        raise LookupError(name)

    def __getitem__(self, name: str):
        if name == "max_pfn":
            return self._max_pfn
        raise KeyError(name)


def test_orders_above_max_page_order_are_records_with_for_each_page_ext():
    nr_orders = 11  # MAX_PAGE_ORDER 10
    assert max_record_order(_Prog(False, 1 << 20), nr_orders) == 10
    # for_each_page_ext(): a 1 GiB folio (order 18) on a 4 GiB machine is a record, order 21 is not.
    assert max_record_order(_Prog(True, 1 << 20), nr_orders) == 20
    assert max_record_order(_Prog(True, 1 << 10), nr_orders) == 10


def _memcg_prog(overlay: bool) -> drgn.Program:
    """struct page and struct folio as 7.x lays them out (``_nr_pages`` in
    the first tail page's memcg_data word), or as 6.12 does (no ``_nr_pages``)."""
    prog = drgn.Program(drgn.host_platform)
    ul, ui = prog.int_type("unsigned long", 8, False), prog.int_type("unsigned int", 4, False)
    page = prog.struct_type("page", 64, [drgn.TypeMember(ul, "flags", 0), drgn.TypeMember(ul, "compound_info", 64),
                                         drgn.TypeMember(ul, "memcg_data", 448)])
    folio_members = [drgn.TypeMember(ul, "flags", 0), drgn.TypeMember(ul, "_flags_1", 512)]
    if overlay:
        folio_members.append(drgn.TypeMember(ui, "_nr_pages", (64 + 56) * 8))
    types = {"page": page, "folio": prog.struct_type("folio", 256, folio_members)}
    prog.register_type_finder("k7", lambda p, kinds, name, fn: types.get(name), enable_index=0)
    return prog


def test_tail_pages_print_no_memcg_where_nr_pages_overlays_memcg_data():
    assert skips_tail_pages(_memcg_prog(True)) and not skips_tail_pages(_memcg_prog(False))
    p = np.zeros(4, dtype=[("compound_head", "<u8"), ("memcg_data", "<u8")])
    p["memcg_data"] = [0xFFFF888001234000, 4, 0xFFFF888001234002, 0]  # head, first tail (_nr_pages), tail, none
    p["compound_head"] = [0, VMEMMAP + 1, VMEMMAP + 1, 0]
    clear_tail_memcg(p)
    assert p["memcg_data"].tolist() == [0xFFFF888001234000, 0, 0, 0]
