"""7.x layouts over small synthetic inputs (issue 18): what the 7.x test
kernels cannot produce (tests/test_vm_7x_decode.py and test_vm_72_stock.py
say why) -- a set PB_migrate_isolate bit, a page_owner record above
MAX_PAGE_ORDER, a first tail page's memcg word under page_owner -- and the
HVO mask in a tail page's compound_info, built here the way the kernel's own
code builds them (include/linux/page-flags.h set_compound_head(),
mm/page_alloc.c get_pfnblock_migratetype(), mm/page_owner.c
print_page_owner_memcg())."""

from __future__ import annotations

import numpy as np

from inspector.clients.page_owner import block_migratetype, pageblock_layout

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
