"""pageblock_order where the kernel's debug info does not hold it (issue 21).

From v6.16 pageblock_order is a #define capped by CONFIG_PAGE_BLOCK_MAX_ORDER;
on the arm64 7.3 64K guest it was 10 where the header's rule without that
config gives 13, so every "Block" number of ``owner --format debugfs`` was
wrong.  The witnesses: the kernel's own .config (CONFIG_IKCONFIG), and the
usemaps, built here as mm/sparse.c sizes them (usemap_size():
BITS_TO_LONGS(SECTION_BLOCKFLAGS_BITS) longs, zeroed) and as
memmap_init_range() fills them (every pageblock MIGRATE_MOVABLE at boot,
set_pfnblock_flags_mask()).  The VM side is tests/test_vm_arm64.py's
``owner --format debugfs`` on 7.3 64K.
"""

from __future__ import annotations

import gzip

import drgn
import pytest

from inspector import kernel as k
from inspector.decode.owner import pageblock_order_bounds, pageblock_order_rule

MIGRATE_UNMOVABLE, MIGRATE_MOVABLE = 0, 1


def usemap_first_long(section_shift: int, order: int, nr_bits: int, types: list[int],
                      long_bits: int = 64) -> tuple[int, int]:
    """(usemap_size() in bytes, its first long) of a section whose blocks have
    the migratetypes ``types`` (cycled over the section's blocks)."""
    blocks = 1 << (section_shift - order)
    size = -(-(blocks * nr_bits) // long_bits) * (long_bits // 8)
    bitmap = 0
    for i in range(blocks):
        bitmap |= types[i % len(types)] << (i * nr_bits)
    return size, bitmap & ((1 << long_bits) - 1)


@pytest.mark.parametrize("true_order", [10, 11, 12, 13])
def test_arm64_64k_7x_usemaps_bound_the_order_the_rule_cannot_see(true_order):
    # 7.x: 8-bit pageblocks (PB_migrate_isolate), 64K pages: 8192 pages a section.
    size, word = usemap_first_long(13, true_order, 8, [MIGRATE_MOVABLE])
    assert size == 8  # one long whatever the order: the stride cannot tell 10 from 13
    # The 7.3 64K guest has one early section per node: no stride, only the content.
    lo, hi = pageblock_order_bounds(13, 8, None, [word])
    assert hi == true_order
    rule = pageblock_order_rule(nr_orders=14, pmd_order=13, hugetlb=False, thp=False)
    assert rule == 13
    assert min(max(rule, lo), hi) == true_order
    # With the stride too (two early sections of a node): pinned.
    assert pageblock_order_bounds(13, 8, size, [word]) == (10, true_order)


def test_unmovable_last_blocks_only_loosen_the_bound():
    # Blocks 4..7 unmovable everywhere: the content proves 4 blocks, not 8.
    _, word = usemap_first_long(13, 10, 8, [1, 1, 1, 1, 0, 0, 0, 0])
    assert pageblock_order_bounds(13, 8, None, [word]) == (0, 11)
    # One section with its last block movable settles it.
    _, other = usemap_first_long(13, 10, 8, [1])
    assert pageblock_order_bounds(13, 8, None, [word, other]) == (0, 10)


def test_arm64_64k_6_12_one_long_usemap_is_not_16_blocks():
    # 6.12: 4-bit blocks, no hugetlb: pageblock_order = MAX_PAGE_ORDER = 13,
    # one block a section, in a usemap of one long.  The stride rule before
    # this change read the 64 bits as 16 blocks: order 9.
    size, word = usemap_first_long(13, 13, 4, [MIGRATE_MOVABLE])
    lo, hi = pageblock_order_bounds(13, 4, size, [word])
    assert (lo, hi) == (9, 13)
    rule = pageblock_order_rule(nr_orders=14, pmd_order=13, hugetlb=False, thp=False)
    assert min(max(rule, lo), hi) == 13


def test_x86_64_usemap_of_four_longs_pins_order_9():
    size, word = usemap_first_long(15, 9, 4, [MIGRATE_MOVABLE, MIGRATE_UNMOVABLE])
    assert size == 32
    assert pageblock_order_bounds(15, 4, size, [word]) == (9, 9)


def test_i386_reads_32_bit_longs():
    # i386 (SECTION_SIZE_BITS 26 without PAE: 16384 pages), order 10: 16 blocks x 4 bits = 2 longs of 32.
    size, word = usemap_first_long(14, 10, 4, [MIGRATE_MOVABLE], long_bits=32)
    assert size == 8
    assert pageblock_order_bounds(14, 4, size, [word], long_bits=32) == (10, 10)


@pytest.mark.parametrize("cfg, pmd, orders, want", [
    ({"CONFIG_HUGETLB_PAGE": "y", "CONFIG_TRANSPARENT_HUGEPAGE": "y"}, 9, 11, 9),  # x86-64, 6.1..7.3
    ({}, 9, 11, 10),                                                  # x86-64 without huge pages: MAX_PAGE_ORDER
    ({"CONFIG_TRANSPARENT_HUGEPAGE": "y"}, 9, 11, 9),                  # THP only, 6.10+
    ({"CONFIG_PAGE_BLOCK_MAX_ORDER": "10"}, 13, 14, 10),              # the arm64 7.3 64K guest
    ({"CONFIG_HUGETLB_PAGE": "y", "CONFIG_PAGE_BLOCK_MAX_ORDER": "5"}, 9, 11, 5),
    ({"CONFIG_HUGETLB_PAGE": "y"}, 13, 14, 13),                        # arm64 64K with hugetlb: 512M blocks
])
def test_header_rule_with_a_config(cfg, pmd, orders, want):
    block_max = cfg.get("CONFIG_PAGE_BLOCK_MAX_ORDER")
    got = pageblock_order_rule(nr_orders=orders, pmd_order=pmd, hugetlb=cfg.get("CONFIG_HUGETLB_PAGE") == "y",
                               thp=cfg.get("CONFIG_TRANSPARENT_HUGEPAGE") == "y",
                               block_max=int(block_max) if block_max else None)
    assert got == want


def _program(symbols: dict[str, int], memory: dict[int, bytes]) -> drgn.Program:
    prog = drgn.Program(drgn.Platform(drgn.Architecture.AARCH64,
                                      drgn.PlatformFlags.IS_64_BIT | drgn.PlatformFlags.IS_LITTLE_ENDIAN))
    syms = [drgn.Symbol(n, a, 0, drgn.SymbolBinding.GLOBAL, drgn.SymbolKind.OBJECT) for n, a in symbols.items()]

    def find(prog_, name, address, one):
        return [s for s in syms if (name is None or s.name == name) and (address is None or s.address == address)]

    prog.register_symbol_finder("test", find, enable_index=0)
    for addr, data in memory.items():
        prog.add_memory_segment(addr, len(data), lambda a, n, off, phys, d=data: d[off:off + n])
    return prog


CONFIG = b"#\n# Linux/arm64 7.3.4 Kernel Configuration\n#\nCONFIG_ARM64_64K_PAGES=y\nCONFIG_PAGE_BLOCK_MAX_ORDER=10\n" \
         b"# CONFIG_HUGETLB_PAGE is not set\n"
BASE = 0xFFFF800080000000


def test_kconfig_reads_the_embedded_config():
    gz = gzip.compress(CONFIG)
    prog = _program({"kernel_config_data": BASE, "kernel_config_data_end": BASE + len(gz)}, {BASE: gz})
    cfg = k.kconfig(prog)
    assert cfg is not None
    assert cfg["CONFIG_PAGE_BLOCK_MAX_ORDER"] == "10" and cfg["CONFIG_ARM64_64K_PAGES"] == "y"
    assert "CONFIG_HUGETLB_PAGE" not in cfg


@pytest.mark.parametrize("case", ["no-symbol", "garbage", "truncated", "unreadable"])
def test_kconfig_absent_or_damaged_is_none(case):
    gz = gzip.compress(CONFIG)
    if case == "no-symbol":
        prog = _program({}, {BASE: gz})
    elif case == "garbage":
        prog = _program({"kernel_config_data": BASE, "kernel_config_data_end": BASE + 64}, {BASE: b"\x5a" * 64})
    elif case == "truncated":
        prog = _program({"kernel_config_data": BASE, "kernel_config_data_end": BASE + len(gz) // 2}, {BASE: gz})
    else:
        prog = _program({"kernel_config_data": BASE, "kernel_config_data_end": BASE + len(gz)}, {})
    assert k.kconfig(prog) is None
