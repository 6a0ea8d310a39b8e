"""Kernel versions: which kernels the rules were read against, and the simulator's variants.

Design.  page_ext, page_owner and the stack depot changed shape many times
between v3.19 (2014) and 7.3; every such change is a *rule*.  A real kernel
is never matched by its release string: the readers detect each rule from
what the kernel's debug info holds (a type, a member, an enumerator, a
variable), so a distribution backport is read as what it is.  Two things
*are* version facts, and they live here:

* :data:`NEWEST_READ`: the newest kernel whose sources the rules were read
  against (Debian's linux-source-7.3, 7.3.4).  A target newer than that
  may hold a shape no rule knows: :func:`newer_than_read` tells, and the
  command line then calls a failure a partial answer that names the kernel
  (exit 3), not an internal error (:func:`note_target`, :func:`unmatched_message`).
* Fixes that add no type, member or symbol, so only the release tells
  (:data:`RELEASE_RULES`, :func:`release_has`): the first release of each
  stable line that carries the fix.
* The simulator's :class:`Variant` table (:data:`VARIANTS`): the rules of
  mm/page_ext.c for a synthetic kernel of each version, chosen by release
  because a simulation has no debug info to detect them from.  Each rule
  cites the commit it models; each was read in the source (the 2014 seed
  patch in ../shared/seed/page_ext-v2-patch.txt, Debian's 6.1, 6.12 and 7.3
  trees, and torvalds/linux diffs through the code search).

:func:`release_version` is the one parser of release strings.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Optional

from .model import ENTRY_EXTRA_MEM, ENTRY_PAGE_EXT_SIZE, ENTRY_SHARED_FLAGS, ENTRY_STRUCT, Rules

# The newest kernel whose sources the rules were read against: Debian's
# linux-source-7.3 (7.3.4-1~bpo13+1), Dec 2026.
NEWEST_READ = (7, 3)
# The oldest with page_ext at all (eefa864b701d, v3.19).
OLDEST = (3, 19)


def release_version(release: str) -> Optional[tuple[int, int]]:
    """(major, minor) of a kernel release string, or None.

    >>> release_version("6.1.192-2")
    (6, 1)
    >>> release_version("7.2.13+deb14-amd64")
    (7, 2)
    >>> release_version("(release unknown)") is None
    True
    """
    m = re.match(r"(\d+)\.(\d+)", release)
    return (int(m.group(1)), int(m.group(2))) if m else None


def newer_than_read(release: str) -> bool:
    """Whether ``release`` is newer than every kernel the rules were read against.

    >>> newer_than_read("7.3.4"), newer_than_read("7.4.0-rc1"), newer_than_read("8.0")
    (False, True, True)
    """
    ver = release_version(release)
    return ver is not None and ver > NEWEST_READ


def release_triple(release: str) -> Optional[tuple[int, int, int]]:
    """(major, minor, sublevel) of a kernel release string, or None.

    >>> release_triple("6.12.118+deb12-amd64"), release_triple("7.3-rc1"), release_triple("x")
    ((6, 12, 118), (7, 3, 0), None)
    """
    m = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", release)
    return (int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)) if m else None


# Fixes that leave no trace in the debug info: the mainline release that
# brought each, and the first release of every stable line it was backported
# to.  A stable line newer than the mainline release has it; one not listed
# and older does not (a backport whose first release is unknown is read the
# old way, and says so in the rule's comment).
RELEASE_RULES: dict[str, tuple[tuple[int, int, int], ...]] = {
    # 90f095b816e2 ("mm/page_owner: use memcg_data snapshot to avoid TOCTOU in
    # print_page_owner_memcg()"): v7.3-rc1; 7.2.4 (46761406e143); 6.12.115
    # (Debian's 6.12.115-1 changelog).  A 6.18.y backport (e15a034d2783)
    # exists whose first release is not pinned.  Its print_page_owner_memcg()
    # is inline and adds no type, symbol or enumerator.
    "page_owner_memcg_snapshot": ((7, 3, 0), (7, 2, 4), (6, 12, 115)),
    # CONFIG_PAGE_BLOCK_MAX_ORDER (v6.16; first CONFIG_PAGE_BLOCK_ORDER): a
    # config value caps pageblock_order below the huge page or MAX_PAGE_ORDER
    # rule (include/linux/pageblock-flags.h; in the 7.2 and 7.3 sources, not
    # 6.12's).  A #define: nothing in the debug info says it.
    "page_block_max_order": ((6, 16, 0),),
    # pageblock_order with THP and no hugetlb is HPAGE_PMD_ORDER, not
    # MAX_PAGE_ORDER (include/linux/pageblock-flags.h: absent in Debian's
    # 6.1.192, present in its 6.12.118).  The mainline commit is not
    # identified: v6.10 is an estimate between the two sources we read.
    "pageblock_order_thp": ((6, 10, 0),),
}


def release_has(release: str, rule: str) -> bool:
    """Whether a kernel of this release carries the fix named ``rule`` in
    :data:`RELEASE_RULES` (mainline from its first entry, or a stable line's
    backport).

    >>> [release_has(r, "page_owner_memcg_snapshot") for r in ("7.3.4", "7.2.13", "7.2.3", "6.12.118", "6.12.57", "6.18.2", "8.0")]
    [True, True, False, True, False, False, True]
    """
    ver = release_triple(release)
    if ver is None:
        return False
    mainline, *stable = RELEASE_RULES[rule]
    if ver[:2] >= mainline[:2]:
        return True
    return any(ver[:2] == line[:2] and ver[2] >= line[2] for line in stable)


# The release of the kernel the command line is reading, for its last word on
# an unexpected failure (set by the session when a target opens).
_target_release: Optional[str] = None


def note_target(release: Optional[str]) -> None:
    """Remember the release of the kernel being read (see :func:`unmatched_message`)."""
    global _target_release
    _target_release = release


def unmatched_message(error: BaseException) -> Optional[str]:
    """For a failure no rule explains, on a kernel newer than :data:`NEWEST_READ`:
    the one line that says so (the answer is then partial, exit 3); else None.

    >>> note_target("7.4.1")
    >>> print(unmatched_message(AttributeError("no member 'entries'")))
    kernel 7.4.1 is newer than any this version of pageext-inspect was read against (7.3): it could not match its layout here: no member 'entries'
    >>> note_target("6.12.118"); unmatched_message(KeyError("x")) is None
    True
    >>> note_target(None)
    """
    if _target_release is None or not newer_than_read(_target_release):
        return None
    first = str(error).splitlines()[0] if str(error) else type(error).__name__
    return (f"kernel {_target_release} is newer than any this version of pageext-inspect was read against "
            f"({NEWEST_READ[0]}.{NEWEST_READ[1]}): it could not match its layout here: {first}")


# -- the simulator's variants -------------------------------------------------------------------


@dataclass(frozen=True)
class Variant(Rules):
    """The rules of one kernel version for the simulator: the
    :class:`~inspector.model.Rules` discovery detects in a real kernel
    (entry_rule, ops_has_offset, ops_has_shared_flags, invalid_bit,
    flatmem_max_order_slack -- see there, each with its commit) plus the
    behaviour only a run shows."""

    name: str = ""
    release: str = ""  # the init_uts_ns release a synthetic kernel of this variant reports
    # Seed v2 (21 Nov 2014) page_ext_init_flatmem(): `if (!invoke_need_callbacks)`
    # tests the function's address, never NULL, so FLATMEM always allocates.
    # Fixed in v3 before the merge (eefa864b701d).
    flatmem_need_bug: bool = False
    # online_page_ext(): the seed/v3.19 skip sections with !pfn_present(pfn);
    # the 6.1, 6.12 and 7.3 sources call init_section_page_ext() on every
    # section of the range.
    online_skips_absent: bool = False
    # Rollback after a failed init_section_page_ext() in online_page_ext():
    #   "all"    seed..v6.5: __free_page_ext() on every section of the range
    #   "before" v6.6 (Kemeng Shi, "mm/page_ext: remove rollback for untouched
    #            mem_section in online_page_ext"): end = pfn - PAGES_PER_SECTION,
    #            so only the sections before the failed one (6.12 and 7.3 sources)
    rollback: str = "all"
    # c4f20f1479c4 (v6.1) early_param("early_page_ext"): page_ext_init() runs in
    # mm_init(); the layout is the same, only the time differs.
    early_page_ext: bool = False
    # Which node online_page_ext() allocates on:
    #   "status_change_nid" (seed..v6.16): mn->status_change_nid, or
    #                       pfn_to_nid(start_pfn) when it is NUMA_NO_NODE
    #   "pfn_to_nid"        (v6.17, Oscar Salvador 2025-06): always pfn_to_nid(start_pfn);
    #                       7.3's online_page_ext(start_pfn, nr_pages) takes no nid at all
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
# 7.0: the allocation algorithm is 6.17's (read in Debian's 7.3.4: the diff
# from 6.12 is online_page_ext() deriving its node, page_ext_lookup() and
# page_ext_from_phys(), and FLATMEM's pgdat_page_ext_init() gone, which only
# set node_page_ext = NULL).  page_ext_ops[] gains a fifth client,
# page_iommu_debug (d414b83dc5f9, CONFIG_IOMMU_DEBUG_PAGEALLOC), which a
# scenario declares like any other client.
V7_0 = replace(V6_17, name="v7.0", release="7.0.0",
               notes=("online_page_ext(start_pfn, nr_pages): the node from pfn_to_nid() only",))

VARIANTS: dict[str, Variant] = {v.name: v for v in
                                (V3_19, SEED_AS_POSTED, V4_9, V5_4, V6_1, V6_3, V6_6, V6_17, V7_0)}
# Oldest first, for choosing by release; the seed is never chosen by release.
BY_VERSION = [V3_19, V4_9, V5_4, V6_1, V6_3, V6_6, V6_17, V7_0]


# -- the simulator's geometries ------------------------------------------------------------------


@dataclass(frozen=True)
class Geometry:
    """Page and section size of an architecture configuration, for the simulator.

    A real kernel's are read from its vmcoreinfo and debug info (PAGE_SHIFT,
    SECTION_SIZE_BITS: drgn's constants); a simulation has neither, so a
    scenario names one of :data:`GEOMETRIES` (input key ``geometry``, or
    ``simulate --geometry``)."""

    name: str
    page_shift: int
    section_size_bits: int
    source: str = ""

    @property
    def page_size(self) -> int:
        return 1 << self.page_shift

    @property
    def section_pages(self) -> int:
        """PAGES_PER_SECTION = 1 << (SECTION_SIZE_BITS - PAGE_SHIFT)."""
        return 1 << (self.section_size_bits - self.page_shift)


GEOMETRIES: dict[str, Geometry] = {g.name: g for g in (
    # arch/x86/include/asm/sparsemem.h: SECTION_SIZE_BITS 27 on x86-64 (128 MiB).
    Geometry("x86_64", 12, 27, "arch/x86/include/asm/sparsemem.h"),
    # arch/arm64/include/asm/sparsemem.h since v5.12 ("arm64/sparsemem:
    # reduce SECTION_SIZE_BITS"): 27 with 4K or 16K pages, 29 with 64K pages
    # (before: 30 for all).  Read in Debian's 6.12.118.
    Geometry("arm64-4k", 12, 27, "arch/arm64/include/asm/sparsemem.h (v5.12+)"),
    Geometry("arm64-64k", 16, 29, "arch/arm64/include/asm/sparsemem.h (v5.12+)"),
)}


def geometry(name: str) -> Geometry:
    """The geometry called ``name``, or ValueError naming them all."""
    try:
        return GEOMETRIES[name]
    except KeyError:
        raise ValueError(f"unknown geometry {name!r} (one of: {', '.join(GEOMETRIES)})") from None


def variant_for_release(release: str) -> Variant:
    """The newest modelled variant not newer than ``release``.

    >>> variant_for_release("6.12.0").name, variant_for_release("7.3.4").name
    ('v6.6', 'v7.0')
    """
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
    """The variant called ``name`` (a key of :data:`VARIANTS`), or ValueError naming them all."""
    try:
        return VARIANTS[name]
    except KeyError:
        raise ValueError(f"unknown variant {name!r} (one of: {', '.join(VARIANTS)})") from None
