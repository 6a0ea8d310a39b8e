"""The memory cgroup a page is charged to, as print_page_owner_memcg() prints it.

From v5.18 (fcf8935832b8, "mm/page_owner: print memcg information") a
/sys/kernel/debug/page_owner record carries up to two extra lines taken
from ``page->memcg_data``: "Slab cache page" when the word holds a slab's
object-cgroup vector (flag ``MEMCG_DATA_OBJCGS``, renamed
``MEMCG_DATA_OBJEXTS`` in v6.10 by 21c690a349ba), and "Charged [(via objcg)
]to [offline ]memcg NAME" naming the cgroup (``cgroup_name()``: the kernfs
node's name, "/" for a hierarchy root, at most 79 bytes).  The word holds a
``struct mem_cgroup *`` for user and page-cache pages, or, with
``MEMCG_DATA_KMEM``, a ``struct obj_cgroup *`` whose ``memcg`` is the cgroup.

Two resolutions exist, and we follow the target's:

* ``page_memcg_check()`` (v5.18 .. v6.11, and mainline again by v6.17):
  after the slab line nothing more for a slab page; a kmem page goes
  through its objcg; any other page's word is the memcg itself.
* 90f095b816e2 (v7.3-rc1, backported to 7.2.4 and 6.12.115; Debian's
  6.12 test kernels from 6.12.115 on have it) prints "Slab cache page" and stops, and
  otherwise treats *every* word as an objcg and prints ``objcg->memcg`` --
  for a user page of 6.12, whose word still holds a mem_cgroup, that reads a
  field of the mem_cgroup itself, not a memcg.  We repeat that read, so our
  text is still the kernel's; the 6.12 VM test shows what it yields.  The
  code carries no type or symbol of its own, so the choice is by version
  (:func:`reads_every_word_as_objcg`).

A tail page prints no memcg line from "mm: let _folio_nr_pages overlay
memcg_data in first tail page" (David Hildenbrand, v3 posted 3 March 2025:
v6.15 by date, the mainline hash unverified; not in the 6.12 sources, in the
7.2 and 7.3 ones): print_page_owner_memcg() tests
``PageTail(page)``, since the first tail page's memcg_data word now holds
``folio->_nr_pages``.  The decoder makes the same test where the debug info
shows that overlay (:func:`skips_tail_pages`): page_owner.py clears a tail
page's word before it is decoded here.

Every pointer comes from the dump and may be garbage: a read that faults
gives no line (the kernel would have oopsed), counted in ``unreadable``.
"""

from __future__ import annotations

from typing import Optional

import drgn

from ..kernel import constant as _enum_value
from ..kernel import release
from ..versions import release_has

CGROUP_NAME_MAX = 80  # char name[80] in print_page_owner_memcg()


def reads_every_word_as_objcg(prog: drgn.Program) -> bool:
    """Whether the target's print_page_owner_memcg() takes every non-slab
    memcg_data word for an obj_cgroup (``objcg = memcg_data & ~OBJEXTS_FLAGS_MASK;
    memcg = obj_cgroup_memcg(objcg)``) instead of calling page_memcg_check().

    That form is 90f095b816e2 ("mm/page_owner: use memcg_data snapshot to avoid
    TOCTOU in print_page_owner_memcg()", CVE-2026-93216), first in v7.3-rc1 and
    backported to 7.2.4 (46761406e143) and to 6.12.115 (Debian's 6.12.115-1
    changelog).  The function is inlined and adds no type, symbol or
    enumerator (OBJEXTS_FLAGS_MASK is a macro; page_memcg_check() stays as an
    inline), so only the version tells: these releases and later ones on the
    same lines (versions.RELEASE_RULES["page_owner_memcg_snapshot"]).  A
    6.18.y backport exists (e15a034d2783) whose first release is not pinned:
    6.18.y is read the old way.

    :param prog: the target
    :return: True for the v7.3-rc1 form
    """
    return release_has(release(prog), "page_owner_memcg_snapshot")


def charges_folios_through_objcg(prog: drgn.Program) -> bool:
    """Whether every charged page's memcg_data holds an obj_cgroup, user and
    page-cache folios too, so that a removed cgroup's pages are reparented
    (their objcg's ``memcg`` becomes the parent, which the kernel prints,
    online) rather than left "offline".

    That is the LRU-folio objcg series ("Eliminate Dying Memory Cgroup",
    Muchun Song and Qi Zheng, posted 2025; mainline hash unverified): in the
    Debian 7.2 and 7.3 sources, not in 6.12.  It gave ``struct obj_cgroup`` an
    ``is_root`` member (the root memcg now has an objcg), which is the test
    here, so a backport is recognised.  folio_memcg_check() then reads every
    non-slab word as an objcg, which is what 90f095b816e2 does on its own
    (:func:`reads_every_word_as_objcg`).

    :param prog: the target
    :return: True where folios are charged through an objcg
    """
    try:
        return prog.type("struct obj_cgroup").has_member("is_root")
    except LookupError:
        return False


def skips_tail_pages(prog: drgn.Program) -> bool:
    """Whether print_page_owner_memcg() skips tail pages: the commit that
    added the ``PageTail()`` test made ``struct folio``'s ``_nr_pages``
    overlay the first tail page's ``memcg_data``, so that overlay in the
    debug info is the test.

    :param prog: the target
    :return: True where tail pages print no memcg line
    """
    try:
        folio, page = prog.type("struct folio"), prog.type("struct page")
        return drgn.offsetof(folio, "_nr_pages") == page.size + drgn.offsetof(page, "memcg_data")
    except (LookupError, ValueError):
        return False


class MemcgNames:
    """page->memcg_data -> the text print_page_owner_memcg() adds."""

    def __init__(self, prog: drgn.Program):
        self.prog = prog
        self.slab_bit = _enum_value(prog, "MEMCG_DATA_OBJEXTS")  # v6.10+
        if self.slab_bit is None:
            self.slab_bit = _enum_value(prog, "MEMCG_DATA_OBJCGS")  # v5.11 .. v6.9
        self.kmem_bit = _enum_value(prog, "MEMCG_DATA_KMEM") or 0
        nr = _enum_value(prog, "__NR_OBJEXTS_FLAGS")  # v6.10+: OBJEXTS_FLAGS_MASK
        if nr is None:
            nr = _enum_value(prog, "__NR_MEMCG_DATA_FLAGS")  # MEMCG_DATA_FLAGS_MASK
        self.flags_mask = (nr or 4) - 1
        self.css_online = _enum_value(prog, "CSS_ONLINE") or 2
        self.objcg_variant = reads_every_word_as_objcg(prog) or charges_folios_through_objcg(prog)
        self.skips_tails = skips_tail_pages(prog)
        self.available = self.slab_bit is not None
        if self.available:
            objcg = prog.type("struct obj_cgroup")
            memcg = prog.type("struct mem_cgroup")
            self.objcg_memcg_off = drgn.offsetof(objcg, "memcg")
            self.css_flags_off = drgn.offsetof(memcg, "css.flags")
            self.css_cgroup_off = drgn.offsetof(memcg, "css.cgroup")
            self.cgroup_kn_off = drgn.offsetof(prog.type("struct cgroup"), "kn")
            kn = prog.type("struct kernfs_node")
            # kn->parent became the RCU pointer __parent in v6.15 (633488947ef6,
            # "kernfs: Use RCU to access kernfs_node::parent.").
            self.kn_parent_off = drgn.offsetof(kn, "parent" if kn.has_member("parent") else "__parent")
            self.kn_name_off = drgn.offsetof(kn, "name")
            self.flags_size = memcg.member("css").type.member("flags").type.size
        self._cache: dict[int, str] = {}
        self.unreadable = 0

    def _u64(self, addr: int) -> int:
        return int.from_bytes(self.prog.read(addr, 8), "little")

    def _cgroup_name(self, memcg: int) -> bytes:
        """cgroup_name(memcg->css.cgroup): kernfs_name_locked(), strscpy to 80."""
        kn = self._u64(self._u64(memcg + self.css_cgroup_off) + self.cgroup_kn_off)
        if not kn:
            return b"(null)"
        if not self._u64(kn + self.kn_parent_off):
            return b"/"
        name = self._u64(kn + self.kn_name_off)
        raw = self.prog.read(name, CGROUP_NAME_MAX)
        return raw.split(b"\0", 1)[0][: CGROUP_NAME_MAX - 1]

    def _charged(self, memcg: int, kmem: bool) -> str:
        flags = int.from_bytes(self.prog.read(memcg + self.css_flags_off, self.flags_size), "little")
        online = bool(flags & self.css_online)
        name = self._cgroup_name(memcg).decode("latin-1")
        return (f"Charged {'(via objcg) ' if kmem else ''}to {'' if online else 'offline '}"
                f"memcg {name}\n")

    def text(self, memcg_data: int) -> str:
        """The lines print_page_owner_memcg() prints for this memcg_data word."""
        if not memcg_data or not self.available:
            return ""
        cached = self._cache.get(memcg_data)
        if cached is not None:
            return cached
        out = ""
        slab = bool(memcg_data & self.slab_bit)
        kmem = bool(memcg_data & self.kmem_bit)
        ptr = memcg_data & ~self.flags_mask
        try:
            if slab:
                out = "Slab cache page\n"
            if self.objcg_variant:
                if not slab:
                    memcg = self._u64(ptr + self.objcg_memcg_off) if ptr else 0
                    if memcg:
                        out += self._charged(memcg, kmem)
            elif not slab:
                memcg = self._u64(ptr + self.objcg_memcg_off) if kmem else ptr
                if memcg:
                    out += self._charged(memcg, kmem)
        except drgn.FaultError:
            self.unreadable += 1
        self._cache[memcg_data] = out
        return out

    def name(self, memcg_data: int) -> Optional[str]:
        """The charged cgroup's name for JSON/CSV, or None."""
        text = self.text(memcg_data)
        for line in text.splitlines():
            if line.startswith("Charged"):
                return line.rsplit("memcg ", 1)[1]
        return None
