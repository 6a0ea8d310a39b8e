"""Kernel variants of mm/page_ext.c: the rules that differ between versions.

A :class:`Variant` is a small bag of named rules; :mod:`inspector.sim.model`
branches on them and nowhere else.  Each rule cites the kernel commit and
function it models, and each was read in the source (the 2014 seed patch in
../shared/seed/page_ext-v2-patch.txt, Debian's 6.1.192 and 6.12.117 trees in
/var/cache/pageext-inspect, and torvalds/linux diffs through the code search)
rather than taken from the reference notes.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from ..kernel import release_version
from ..model import ENTRY_EXTRA_MEM, ENTRY_PAGE_EXT_SIZE, ENTRY_SHARED_FLAGS, ENTRY_STRUCT, Rules


@dataclass(frozen=True)
class Variant(Rules):
    """The rules of one kernel version: the :class:`~inspector.model.Rules`
    discovery detects in a real kernel (entry_rule, ops_has_offset,
    ops_has_shared_flags, invalid_bit, flatmem_max_order_slack -- see there,
    each with its commit) plus the behaviour only a run shows."""

    name: str = ""
    release: str = ""  # the init_uts_ns release a synthetic kernel of this variant reports
    # Seed v2 (21 Nov 2014) page_ext_init_flatmem(): `if (!invoke_need_callbacks)`
    # tests the function's address, never NULL, so FLATMEM always allocates.
    # Fixed in v3 before the merge (eefa864b701d).
    flatmem_need_bug: bool = False
    # online_page_ext(): the seed/v3.19 skip sections with !pfn_present(pfn);
    # the 6.1.192 and 6.12 sources call init_section_page_ext() on every
    # section of the range.
    online_skips_absent: bool = False
    # Rollback after a failed init_section_page_ext() in online_page_ext():
    #   "all"    seed..v6.5: __free_page_ext() on every section of the range
    #   "before" v6.6 (Kemeng Shi, "mm/page_ext: remove rollback for untouched
    #            mem_section in online_page_ext"): end = pfn - PAGES_PER_SECTION,
    #            so only the sections before the failed one (6.12 source)
    rollback: str = "all"
    # c4f20f1479c4 (v6.1) early_param("early_page_ext"): page_ext_init() runs in
    # mm_init(); the layout is the same, only the time differs.
    early_page_ext: bool = False
    # Which node online_page_ext() allocates on:
    #   "status_change_nid" (seed..v6.16): mn->status_change_nid, or
    #                       pfn_to_nid(start_pfn) when it is NUMA_NO_NODE
    #   "pfn_to_nid"        (v6.17, Oscar Salvador 2025-06): always pfn_to_nid(start_pfn)
    # Both give the node of the block being onlined: a hot-added block's
    # memmap carries its zone's node before MEM_GOING_ONLINE.
    online_nid: str = "status_change_nid"
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def version(self) -> tuple[int, int]:
        return release_version(self.release) or (0, 0)


# The FLATMEM rounding and slack (flatmem_max_order_slack) are in
# eefa864b701d itself (folded in before the merge at Joonsoo Kim's request,
# lkml 2014-12-03, "fix the problem on !CONFIG_SPARSEMEM"); the seed as
# posted (v2, and v3 of 24 Nov 2014) indexed from node_start_pfn exactly.
V3_19 = Variant(name="v3.19", release="3.19.0", entry_rule=ENTRY_STRUCT, online_skips_absent=True,
                ops_has_offset=False)
SEED_AS_POSTED = replace(V3_19, name="seed-as-posted", release="3.19.0-seed", flatmem_need_bug=True,
                         flatmem_max_order_slack=False, notes=("page_ext v2 1/7 as posted, 2014-11-21",))
V4_9 = Variant(name="v4.9", release="4.9.0", entry_rule=ENTRY_EXTRA_MEM)
V5_4 = replace(V4_9, name="v5.4", release="5.4.0", entry_rule=ENTRY_PAGE_EXT_SIZE)
V6_1 = replace(V5_4, name="v6.1", release="6.1.0", invalid_bit=True, early_page_ext=True)
V6_3 = replace(V6_1, name="v6.3", release="6.3.0", entry_rule=ENTRY_SHARED_FLAGS, ops_has_shared_flags=True)
V6_6 = replace(V6_3, name="v6.6", release="6.6.0", rollback="before")
V6_17 = replace(V6_6, name="v6.17", release="6.17.0", online_nid="pfn_to_nid")

VARIANTS: dict[str, Variant] = {v.name: v for v in
                                (V3_19, SEED_AS_POSTED, V4_9, V5_4, V6_1, V6_3, V6_6, V6_17)}
# Oldest first, for choosing by release; the seed is never chosen by release.
BY_VERSION = [V3_19, V4_9, V5_4, V6_1, V6_3, V6_6, V6_17]


def variant_for_release(release: str) -> Variant:
    """The newest modelled variant not newer than ``release``."""
    ver = release_version(release)
    if ver is None:
        raise ValueError(f"cannot read a version from release {release!r}")
    if ver < V3_19.version:
        raise ValueError(f"release {release} predates page_ext (v3.19)")
    chosen = V3_19
    for v in BY_VERSION:
        if v.version <= ver:
            chosen = v
    return chosen


def get(name: str) -> Variant:
    try:
        return VARIANTS[name]
    except KeyError:
        raise ValueError(f"unknown variant {name!r} (one of: {', '.join(VARIANTS)})") from None
