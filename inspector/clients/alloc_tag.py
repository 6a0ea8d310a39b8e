"""page_alloc_tagging: memory allocation profiling's per-page tag, decoded in bulk.

With CONFIG_MEM_ALLOC_PROFILING (v6.10, 22d407b164ff "lib: add allocation
tagging support for memory allocation profiling"; pages tagged from
b951aaff5035 "mm: enable page allocation tagging") every allocation call
site wrapped in ``alloc_hooks()`` owns a static ``struct alloc_tag`` in the
``alloc_tags`` section: a ``struct codetag`` (file, line, function, module)
and a ``__percpu`` pointer to ``struct alloc_tag_counters {bytes, calls}``,
whose per-CPU sum is one line of /proc/allocinfo.  For page allocations the
tag is also remembered per page, in page_ext: lib/alloc_tag.c registers the
client ``page_alloc_tagging_ops`` whose data is one ``union codetag_ref``, a
pointer to the tag's ``ct``.  post_alloc_hook() sets it on the *first page*
of each allocation (``pgalloc_tag_add``: bytes += PAGE_SIZE << order,
calls += 1) and free_pages_prepare() clears it (NULL).  Splitting an
allocation (split_page(), alloc_pages_exact(), THP splits:
``pgalloc_tag_split``) points each new piece's first page at the same tag
and adds one call per piece, leaving the bytes alone.  So a page_ext ref is
one live page allocation: its size is not stored, and we take it from the
folio order of a compound head (``folio->_flags_1 & 0xff``), else from
page_owner's order when page_owner is on and the record is a real one (not
the order-0 ``early_handle`` record init_pages_in_zone() gives pages that
were allocated before page_owner started), else 0 when the next page is
tagged too (it starts another allocation), else order 0, counted as
assumed: the pages of such a tag are then a lower bound.  With
CONFIG_MEM_ALLOC_PROFILING_DEBUG a ref may hold CODETAG_EMPTY, ``(void *)1``
("deliberately untagged": pages freed from memblock, hwpoisoned ones).

The kernel's counters of a tag also count what page_ext cannot see: slab
objects (slabobj_ext) and percpu chunks allocated at the same site, and
vmalloc's page arrays.  So refs <= calls and pages * PAGE_SIZE <= bytes for
every tag, with equality exactly when the site allocated nothing but pages;
pages allocated before page_ext was initialised are in neither.

Tagging happens only while the static key ``mem_alloc_profiling_key`` is on
(boot: ``sysctl.vm.mem_profiling=0|1|never``; later: the vm.mem_profiling
sysctl).  ``never`` also makes need_page_alloc_tagging() false, so the
client gets no page_ext space.  From v6.13 (4835f747d3ed "alloc_tag: support
for page allocation tag compression") ``sysctl.vm.mem_profiling=1,compressed``
keeps a tag *index* in spare page->flags bits instead and asks page_ext for
nothing (need() is false).  Then each ref comes from the struct page:
``idx = (page->flags >> alloc_tag_ref_offs) & alloc_tag_ref_mask`` (get_page_tag_ref()
in include/linux/pgalloc_tag.h; the word is ``page->flags.f`` from v6.18,
53fbef56e07d "mm: introduce memdesc_flags_t", a struct of one unsigned long:
chosen by whether the debug info's page->flags is that struct),
and idx_to_ref() turns it into the tag: 0 none, 1 CODETAG_EMPTY, else
``kernel_tags.first_tag[idx - 2]`` for the first ``kernel_tags.count`` indices
and ``module_tags.first_tag[idx - 2 - kernel_tags.count]`` past them.  The
shift, mask and both tables are the kernel's variables (set by
alloc_tag_sec_init() only in a compressed boot; a mask of 0 means it found
too many tags for the spare bits and shut profiling down).  Detection is the
static key ``mem_profiling_compressed`` and those variables, not the version.
The struct pages are read through page_ext's tables (the memmap beside each
table), so a compressed boot is decoded where page_ext has tables: another
client (page_owner, page_table_check...) must have asked for page_ext.

Each chunk of a page_ext table and of its memmap is one numpy array (see
:mod:`.engine`); the non-NULL refs are found by one mask and only they are
looked at.  Each distinct tag address is checked against the
kernel's own list of tags (the codetag type's modules, as /proc/allocinfo
walks them) and decoded once; anything else is an invalid tag, counted and
shown as ``<invalid tag 0x...>``.  The kernel's counters of every tag are
summed over the possible CPUs with one read per CPU and cluster of counters;
a CPU's counters that are not in the dump are counted as missing, never as 0.
"""

from __future__ import annotations

import struct
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterator, Optional

import drgn
from ..lazy import np

from .. import kernel as k
from ..errors import ClientError
from ..model import Table
from ..reader import read_or_holes, unknown_items
from . import ClientSpec, static_key_probe
from ..decode.engine import COMPOUND_WORD, columns, head_pfns, known_mask, member_field, page_fields, record_dtype
from ..walk import entry_address

CLIENT_NAME = "page_alloc_tagging"
CONFIG = "CONFIG_MEM_ALLOC_PROFILING"
CODETAG_EMPTY = 1  # include/linux/alloc_tag.h, CONFIG_MEM_ALLOC_PROFILING_DEBUG (v6.10+)
CODETAG_FLAG_INACCURATE = 1  # include/linux/codetag.h (b9e2f58ffb84, 6.17 merge window): "accurate:no"
MAX_LINENO = 10_000_000  # a sanity bound for tags read without the kernel's list
MAX_TAG_BYTES = 64 << 20  # a tag range (or counter cluster) larger than this is not believed
TAG_READ = 1 << 20  # tags are read this many bytes at a time

# Where a tagged page's order came from.
COMPOUND, PAGE_OWNER, NEXT_TAGGED, ASSUMED = "compound", "page_owner", "next_page_tagged", "assumed_order_0"


def _active(prog: drgn.Program) -> Optional[bool]:
    # lib/alloc_tag.c (v6.10, 22d407b164ff): pages are tagged only while the
    # static key mem_alloc_profiling_key is on (sysctl.vm.mem_profiling at boot
    # or run time).  Off with =0 the client still has its space (need() is
    # mem_profiling_support); =never gives it none.  From v6.13 (4835f747d3ed)
    # mem_profiling_compressed keeps the tags in page->flags and need() returns
    # false: nothing in page_ext either way.
    if static_key_probe("mem_profiling_compressed")(prog):
        return False
    if static_key_probe("mem_alloc_profiling_key")(prog) is False:
        return False
    return None  # the generic rule on its offset decides


CLIENT = ClientSpec(
    CLIENT_NAME, CONFIG,
    # lib/alloc_tag.c setup_early_mem_profiling() (v6.10): 0|1 (kstrtobool) or
    # never; from v6.13 (4835f747d3ed) "1,compressed" moves the tags out of page_ext
    # into page->flags (decoded too, see the module's docstring).
    "boot with sysctl.vm.mem_profiling=1 (not =never)",
    "the allocation call site (struct alloc_tag) of each live page allocation",
    active=_active, decoder="inspector.clients.alloc_tag:AllocTags", commands=("alloc-tags",))


@dataclass(frozen=True)
class Tag:
    """One ``struct alloc_tag`` (its ``ct`` is at ``address``)."""

    address: int
    filename: str
    lineno: int
    function: str
    modname: Optional[str]
    flags: int
    counters: int  # __percpu struct alloc_tag_counters *

    def text(self) -> str:
        """codetag_to_text() (lib/codetag.c, unchanged since v6.10)."""
        if self.modname is not None:
            return f"{self.filename}:{self.lineno} [{self.modname}] func:{self.function}"
        return f"{self.filename}:{self.lineno} func:{self.function}"

    @property
    def inaccurate(self) -> bool:
        """Whether the tag carries CODETAG_FLAG_INACCURATE.

        :return: True where the kernel flags its counters inaccurate (``accurate:no`` in /proc/allocinfo)
        """
        return bool(self.flags & CODETAG_FLAG_INACCURATE)


def invalid_text(address: int) -> str:
    """How a pointer that is not an allocation tag is shown.

    :param address: the pointer found in a page_ext entry
    :return: the text shown in place of a tag

    >>> invalid_text(0xdead000)
    '<invalid tag 0xdead000>'
    """
    return f"<invalid tag {address:#x}>"


@dataclass
class TagPages:
    allocations: int = 0  # page_ext refs to the tag: one per live page allocation (or split piece)
    pages: int = 0  # sum of 1 << order over them
    assumed: int = 0  # refs whose order nothing recorded (taken as 0: pages is then a lower bound)


@dataclass
class Scan:
    """What the page_ext refs of a pfn range say."""

    entries: int = 0  # page_ext entries read
    null: int = 0  # no tag
    empty: int = 0  # CODETAG_EMPTY
    tags: dict[int, TagPages] = field(default_factory=dict)  # ref -> counts (valid and invalid refs)
    invalid: dict[int, int] = field(default_factory=dict)  # invalid ref -> entries
    order_source: Counter = field(default_factory=Counter)

    @property
    def tagged(self) -> int:
        """Entries that refer to a tag (valid or not): one per live allocation.

        :return: the number of page_ext refs to tags
        """
        return sum(t.allocations for t in self.tags.values())

    @property
    def pages(self) -> int:
        """Pages the tagged allocations hold (1 << order each).

        :return: the sum over the tags' pages
        """
        return sum(t.pages for t in self.tags.values())


def require_alloc_tagging(session):
    """The active page_alloc_tagging client, or ClientError saying why not.

    :param session: a :class:`~inspector.session.PageExt`
    :return: the client (:class:`~inspector.model.Client`)
    :raises ClientError: the kernel has no allocation profiling, or it is off
    """
    prog, lay = session.prog, session.layout
    if lay.client(CLIENT_NAME) is None:
        raise ClientError(f"this kernel has no {CLIENT_NAME} ({CONFIG} is off, or the kernel is older "
                          "than 6.10)")
    client = lay.client(CLIENT_NAME)
    # v6.13, 4835f747d3ed: with "sysctl.vm.mem_profiling=1,compressed" the
    # references live in page->flags and page_ext holds none (the client is
    # inactive); we read them from the struct pages beside page_ext's tables.
    if static_key_probe("mem_profiling_compressed")(prog):
        if static_key_probe("mem_alloc_profiling_key")(prog) is False:
            raise ClientError(f"{CLIENT_NAME} is compiled in but memory allocation profiling is off in this "
                              "boot (compressed tags; switched off, or alloc_tag_sec_init() found too many "
                              "tags for the spare page flag bits)")
        if not lay.allocated:
            raise ClientError(f"{CLIENT_NAME} keeps its tag indexes in page->flags in this boot "
                              "(sysctl.vm.mem_profiling=...,compressed), and the struct pages are read through "
                              "page_ext's tables, which are empty in this boot: boot with a page_ext client "
                              "too (e.g. page_owner=on)")
        return client
    if not client.active and static_key_probe("mem_alloc_profiling_key")(prog) is False:
        raise ClientError(f"{CLIENT_NAME} is compiled in but inactive in this boot: memory allocation "
                          "profiling is off (booted with sysctl.vm.mem_profiling=0 or never, or "
                          "switched off with the vm.mem_profiling sysctl); "
                          f"{client.how_to_enable or 'boot with sysctl.vm.mem_profiling=1'}")
    return session.require_client(CLIENT_NAME, CONFIG, CLIENT.enable)


class AllocTags:
    """The page_alloc_tagging decoder of one :class:`~inspector.session.PageExt` session."""

    def __init__(self, session):
        self.session = session
        self.prog = prog = session.prog
        self.layout = session.layout
        self.client = require_alloc_tagging(session)
        self.ptr_size = prog.type("union codetag_ref").size
        self.ptr_fmt = "<Q" if self.ptr_size == 8 else "<I"
        self._setup_tag_struct()
        self._setup_page()
        self.compressed: Optional[dict] = None
        if static_key_probe("mem_profiling_compressed")(prog):
            self._setup_compressed()
        self._setup_owner()
        self._tags: dict[int, Optional[Tag]] = {}
        self._strings: dict[int, Optional[str]] = {}
        self._catalogue: Optional[list[int]] = None
        self._known: Optional[set[int]] = None
        self._raw: dict[int, tuple] = {}  # tag address -> unpacked struct alloc_tag
        self.catalogue_note: Optional[str] = None

    # -- layouts from DWARF -----------------------------------------------------
    def _setup_tag_struct(self) -> None:
        prog = self.prog
        at = prog.type("struct alloc_tag")
        ct = prog.type("struct codetag")
        self.ct_off = drgn.offsetof(at, "ct")  # 0: ref->ct == &tag->ct == tag
        base = self.ct_off
        p = "Q" if self.ptr_size == 8 else "I"
        fields = [("flags", base + drgn.offsetof(ct, "flags"), "I"),
                  ("lineno", base + drgn.offsetof(ct, "lineno"), "I"),
                  ("modname", base + drgn.offsetof(ct, "modname"), p),
                  ("function", base + drgn.offsetof(ct, "function"), p),
                  ("filename", base + drgn.offsetof(ct, "filename"), p),
                  ("counters", drgn.offsetof(at, "counters"), p)]
        fields.sort(key=lambda f: f[1])
        fmt, pos = "<", 0
        for _name, off, ch in fields:
            fmt += f"{off - pos}x" if off > pos else ""
            fmt += ch
            pos = off + struct.calcsize("<" + ch)
        fmt += f"{at.size - pos}x" if at.size > pos else ""
        self.tag_struct = struct.Struct(fmt)
        self.tag_size = at.size
        names = [f[0] for f in fields]
        self._tag_idx = tuple(names.index(n) for n in ("flags", "lineno", "modname", "function",
                                                       "filename", "counters"))
        ctr = prog.type("struct alloc_tag_counters")
        self.ctr_size = ctr.size
        self.ctr_bytes_off = drgn.offsetof(ctr, "bytes")
        self.ctr_calls_off = drgn.offsetof(ctr, "calls")

    def _setup_page(self) -> None:
        prog = self.prog
        self.pf = page_fields(prog, "flags", COMPOUND_WORD)
        self.page_struct_size = self.pf.size
        self.head_bit = self.pf.head_bit
        # folio_order(): folio->_flags_1 & 0xff, the first tail page's flags
        # word (v6.6, ebc1baf5c9b4 "mm: free up a word in the first tail
        # page"), every kernel that has alloc tags.
        try:
            self.flags1_off = drgn.offsetof(prog.type("struct folio"), "_flags_1")
        except (LookupError, ValueError):
            self.flags1_off = None

    def _setup_compressed(self) -> None:
        """The kernel's tag index in page->flags (v6.13, 4835f747d3ed): its shift
        and mask, and the two tables idx_to_ref() indexes (include/linux/pgalloc_tag.h)."""
        prog = self.prog
        offs = k.value(prog, "alloc_tag_ref_offs")
        mask = k.value(prog, "alloc_tag_ref_mask")
        kt = k.obj(prog, "kernel_tags")
        if offs is None or mask is None or kt is None or kt.absent_:
            raise ClientError(f"{CLIENT_NAME} keeps compressed tag indexes in page->flags in this boot, but this "
                              "kernel's debug info lacks alloc_tag_ref_offs, alloc_tag_ref_mask or kernel_tags "
                              "(lib/alloc_tag.c, v6.13): the indexes cannot be decoded")
        try:
            first, count = kt.first_tag.value_(), kt.count.value_()
        except (drgn.FaultError, AttributeError, LookupError) as e:
            raise ClientError(f"cannot read kernel_tags: {e}") from None
        if not mask or not first:
            raise ClientError(f"{CLIENT_NAME}: compressed tags are on but the kernel set up no tag index "
                              f"(alloc_tag_ref_mask {mask:#x}, kernel_tags.first_tag {first:#x}): "
                              "alloc_tag_sec_init() shut profiling down")
        module_first = 0
        mt = k.obj(prog, "module_tags")  # CONFIG_MODULES
        if mt is not None and not mt.absent_:
            for member in ("first_tag", "start_addr"):  # a union of both in 6.13+
                try:
                    module_first = mt.member_(member).value_()
                    break
                except (LookupError, drgn.FaultError):
                    continue
        # The word: page->flags, or page->flags.f (memdesc_flags_t, v6.18, 53fbef56e07d).
        flags_t = prog.type("struct page").member("flags").type.unaliased()
        path = "flags.f" if flags_t.kind == drgn.TypeKind.STRUCT and flags_t.has_member("f") else "flags"
        _, off, code = member_field(prog.type("struct page"), path)
        self.compressed = {"offs": offs, "mask": mask, "first": first, "count": count,
                           "module_first": module_first, "flags_dtype": record_dtype(
                               [("word", off, code)], self.page_struct_size)}

    def _refs_from_flags(self, words: np.ndarray) -> np.ndarray:
        """idx_to_ref() over page->flags words: the tag address (as a page_ext ref
        would hold it) of each page; CODETAG_EMPTY for index 1, 0 for none."""
        c = self.compressed
        idx = (words.astype(np.uint64) >> np.uint64(c["offs"])) & np.uint64(c["mask"])
        ref = np.zeros(len(idx), dtype=np.uint64)
        ref[idx == 1] = CODETAG_EMPTY
        i = idx.astype(np.int64) - 2  # CODETAG_ID_FIRST
        kern = (idx >= 2) & (i < c["count"])
        size, ct = np.uint64(self.tag_size), np.uint64(self.ct_off)
        ref[kern] = np.uint64(c["first"]) + i[kern].astype(np.uint64) * size + ct
        mod = (idx >= 2) & (i >= c["count"])
        ref[mod] = np.uint64(c["module_first"]) + (i[mod] - c["count"]).astype(np.uint64) * size + ct
        return ref

    def _setup_owner(self) -> None:
        """page_owner's order and PAGE_EXT_OWNER_ALLOCATED, from the same entries."""
        self.owner = None
        owner = next((c for c in self.layout.clients if c.name == "page_owner" and c.active), None)
        if owner is None:
            return
        try:
            po = self.prog.type("struct page_owner")
            m = po.member("order")
            h = po.member("handle")
            bit = self.prog.constant("PAGE_EXT_OWNER_ALLOCATED").value_()
            word = drgn.sizeof(self.prog.type("struct page_ext").member("flags").type)
        except LookupError:
            return
        fmts = {1: "<B", 2: "<H", 4: "<I", 8: "<Q"}
        msize, hsize = drgn.sizeof(m.type), drgn.sizeof(h.type)
        if msize not in fmts or hsize not in fmts:
            return
        # init_pages_in_zone() gives every page allocated before page_owner
        # started (but maybe after page_ext, so tagged) a record of order 0
        # with the dummy early_handle: that order says nothing.
        try:
            early = self.prog.object("early_handle", drgn.FindObjectFlags.VARIABLE, "page_owner.c").value_()
        except (LookupError, drgn.FaultError):
            early = None
        self.owner = (struct.Struct("<Q" if word == 8 else "<I"), 1 << bit,
                      owner.offset + m.bit_offset // 8, struct.Struct(fmts[msize]),
                      owner.offset + h.bit_offset // 8, struct.Struct(fmts[hsize]), early)

    # -- the kernel's list of tags ----------------------------------------------
    def catalogue(self) -> list[int]:
        """Every tag address, in /proc/allocinfo's order (codetag_next_ct())."""
        if self._catalogue is None:
            self._catalogue = []
            for start, stop, size in self._ranges():
                if stop - start > MAX_TAG_BYTES or size <= 0:
                    self.catalogue_note = f"the tag range {start:#x}-{stop:#x} is implausible; not read"
                    continue
                for piece in range(start, stop, TAG_READ):
                    end = min(stop, piece + TAG_READ)
                    end -= (end - start) % size if end < stop else 0
                    raw, holes = read_or_holes(self.prog, piece, end - piece)
                    lost = unknown_items(holes, size, (end - piece) // size)
                    if lost:
                        self.session.missing.note(f"{sum(b - a for a, b in lost)} allocation tag(s) at "
                                                  f"{piece:#x}-{end:#x} are not in the dump")
                    bad = {i for a, b in lost for i in range(a, b)}
                    for i, off in enumerate(range(0, end - piece - size + 1, size)):
                        if i in bad:
                            continue
                        addr = piece + off
                        self._raw[addr + self.ct_off] = self.tag_struct.unpack_from(raw, off)
                        self._catalogue.append(addr + self.ct_off)
        return self._catalogue

    def _ranges(self) -> list[tuple[int, int, int]]:
        """(start, stop, tag size) of each module's alloc_tags, vmlinux first."""
        prog = self.prog
        try:
            cttype = prog.object("alloc_tag_cttype", drgn.FindObjectFlags.VARIABLE, "alloc_tag.c")
            cttype = cttype.read_()
            if cttype.value_() and cttype.value_() < (1 << 64) - 4095:  # IS_ERR_OR_NULL
                from drgn.helpers.linux.idr import idr_for_each
                size = cttype.desc.tag_size.value_()
                cmod_t = prog.type("struct codetag_module")
                out = []
                for _id, entry in idr_for_each(cttype.mod_idr.address_of_()):
                    cmod = drgn.Object(prog, prog.pointer_type(cmod_t), entry.value_())
                    start = cmod.range.start.value_() - self.ct_off
                    stop = cmod.range.stop.value_() - self.ct_off
                    if size and start < stop:
                        out.append((start, stop, size))
                return out
            self.catalogue_note = "alloc_tag_cttype is not registered"
        except (LookupError, drgn.FaultError, AttributeError, ValueError) as e:
            self.catalogue_note = f"cannot walk alloc_tag_cttype ({e}); vmlinux tags only"
        # The vmlinux range alone, from the linker's section symbols.
        try:
            start = prog.symbol("__start_alloc_tags").address
            stop = prog.symbol("__stop_alloc_tags").address
            return [(start, stop, self.tag_size)] if start < stop else []
        except LookupError:
            return []

    def _string(self, addr: int) -> Optional[str]:
        s = self._strings.get(addr, False)
        if s is False:
            s = None
            if addr:
                try:
                    s = drgn.Object(self.prog, "char *", addr).string_().decode("latin-1")
                except (drgn.FaultError, ValueError):
                    s = None
            self._strings[addr] = s
        return s

    def known(self) -> set[int]:
        """The kernel's tag addresses (empty when its list cannot be read)."""
        if self._known is None:
            self._known = set(self.catalogue())
        return self._known

    def tag(self, addr: int) -> Optional[Tag]:
        """The tag a ref points at, or None when the ref is not a tag."""
        if addr in self._tags:
            return self._tags[addr]
        known = self.known()
        raw = self._raw.get(addr) if addr in known else None
        if raw is None and not known and addr % 8 == 0:
            # No list of tags to check against: accept a readable, plausible one.
            try:
                raw = self.tag_struct.unpack(self.prog.read(addr - self.ct_off, self.tag_size))
            except drgn.FaultError:
                raw = None
        tag = None
        if raw is not None:
            flags, lineno, modname, function, filename, counters = (raw[i] for i in self._tag_idx)
            fn, fl = self._string(function), self._string(filename)
            mod = self._string(modname) if modname else None
            if fn is not None and fl is not None and (modname == 0 or mod is not None) \
                    and (addr in known or lineno < MAX_LINENO):
                tag = Tag(addr, fl, lineno, fn, mod, flags, counters)
        self._tags[addr] = tag
        return tag

    # -- the kernel's counters --------------------------------------------------
    def kernel_counters(self) -> dict[int, tuple[Optional[int], Optional[int]]]:
        """tag address -> (bytes, calls) summed over the possible CPUs, as
        alloc_tag_read() does (bytes printed signed, calls unsigned); (None,
        None) for a tag whose counters are not all in the dump: one CPU's
        share may be negative (freed on another CPU), so a partial sum is
        not even a lower bound."""
        from drgn.helpers.linux.cpumask import for_each_possible_cpu
        from drgn.helpers.linux.percpu import per_cpu_ptr

        tags = [(a, self._raw[a][self._tag_idx[5]]) for a in self.catalogue()]
        if not tags:
            return {}
        probe = 1 << 12
        offsets = []
        for cpu in for_each_possible_cpu(self.prog):
            p = per_cpu_ptr(drgn.Object(self.prog, "unsigned long *", probe), cpu).value_()
            offsets.append((p - probe) & 0xFFFFFFFFFFFFFFFF)
        # Clusters of nearby counters (kernel tags' are adjacent in
        # .data..percpu), one read per CPU and cluster.
        ptrs = sorted({c for _, c in tags})
        clusters, cur = [], [ptrs[0]]
        for p in ptrs[1:]:
            if p - cur[-1] > 65536:
                clusters.append(cur)
                cur = []
            cur.append(p)
        clusters.append(cur)
        sums: dict[int, list[int]] = {p: [0, 0] for p in ptrs}
        ub, uc = struct.Struct("<Q").unpack_from, struct.Struct("<Q").unpack_from
        unread: set[int] = set()  # counter pointers with a CPU's counters not in the dump
        for off in offsets:
            for cl in clusters:
                lo, hi = cl[0], cl[-1] + self.ctr_size
                if hi - lo > MAX_TAG_BYTES:
                    unread.update(cl)
                    continue
                buf, holes = read_or_holes(self.prog, (lo + off) & 0xFFFFFFFFFFFFFFFF, hi - lo)
                for p in cl:
                    a = p - lo
                    if any(h < a + self.ctr_size and a < h + n for h, n in holes):
                        unread.add(p)
                        continue
                    s = sums[p]
                    s[0] += ub(buf, a + self.ctr_bytes_off)[0]
                    s[1] += uc(buf, a + self.ctr_calls_off)[0]
        out: dict[int, tuple[Optional[int], Optional[int]]] = {}
        lost = 0
        for addr, c in tags:
            if c in unread:
                out[addr] = (None, None)
                lost += 1
                continue
            b, n = sums[c]
            b &= 0xFFFFFFFFFFFFFFFF
            out[addr] = (b - (1 << 64) if b >= 1 << 63 else b, n & 0xFFFFFFFFFFFFFFFF)
        if lost:
            self.session.missing.note(f"the per-CPU counters of {lost} allocation tag(s) are not all in the dump: "
                                      "the kernel's bytes and calls of those tags are unknown")
        return out

    # -- page_ext ------------------------------------------------------------------
    def _entry_dtype(self) -> np.dtype:
        fields = [] if self.compressed else [("ref", self.client.offset, f"<u{self.ptr_size}")]
        if self.owner is not None:
            word, bit, order_off, order_st, handle_off, handle_st, _early = self.owner
            fields += [("ext_flags", 0, f"<u{word.size}"), ("order", order_off, f"<u{order_st.size}"),
                       ("handle", handle_off, f"<u{handle_st.size}")]
        return record_dtype(fields, self.layout.entry_size)

    def _orders(self, e: np.ndarray, p: Optional[np.ndarray], memmap: Optional[bytes], pknown: np.ndarray,
                hits: np.ndarray, nxt: np.ndarray, lo: int) -> tuple[np.ndarray, np.ndarray]:
        """(order, source index into SOURCES) of the allocation starting at each hit."""
        n = len(hits)
        order = np.zeros(n, dtype=np.int64)
        src = np.full(n, 3, dtype=np.int64)  # ASSUMED
        done = np.zeros(n, dtype=bool)
        if p is not None and self.head_bit and self.flags1_off is not None:
            head = ((p["flags"][hits].astype(np.uint64) & np.uint64(self.head_bit)) != 0) & pknown[hits]
            psz = self.page_struct_size
            # _flags_1 lies in the first tail page: past this chunk when the head is
            # its last page (a one-pfn read, or a gigantic page).
            off = hits.astype(np.int64) * psz + self.flags1_off
            inside = head & (off < len(memmap))
            buf = np.frombuffer(memmap, dtype=np.uint8)
            order[inside] = buf[off[inside]]
            for i in np.flatnonzero(head & ~inside).tolist():
                pair, lost = self.session.read_memmap(lo + int(hits[i]), lo + int(hits[i]) + 2)
                if pair is not None and not lost:
                    order[i] = pair[self.flags1_off]
                    inside[i] = True
            src[inside] = 0
            done |= inside
        if self.owner is not None:
            _word, bit, *_rest, early = self.owner
            real = ((e["ext_flags"][hits] & bit) != 0) & (e["order"][hits] < 64) & ~done
            if early is not None:
                real &= e["handle"][hits] != early
            order[real] = e["order"][hits][real]
            src[real] = 1
            done |= real
        # Only an allocation's first page is tagged: a tagged next page starts
        # another one (or another split piece), so this one is a single page.
        single = nxt & ~done
        src[single] = 2
        return order, src

    def chunks(self, lo: int = 0, hi: int = 1 << 64, node: Optional[int] = None) \
            -> Iterator[tuple[int, int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
        """(first pfn, entries read, pfns, refs, orders, order sources) per chunk:
        every non-NULL ref in [lo, hi)."""
        dtype = self._entry_dtype()
        for ch in self.session.chunks(lo, hi, node=node, label="reading allocation tags"):
            e = columns(ch.entries, dtype, ch.n)
            if self.compressed:  # the refs are in the struct pages (their flags words)
                if ch.memmap is None:
                    continue
                known = known_mask(ch.n, ch.memmap_unknown)
                ref = self._refs_from_flags(columns(ch.memmap, self.compressed["flags_dtype"], ch.n)["word"])
            else:
                known = known_mask(ch.n, ch.unknown)
                ref = e["ref"].astype(np.uint64)
            hits = np.flatnonzero((ref != 0) & known)
            if not len(hits):
                yield ch.lo, int(known.sum()), hits, ref[hits], hits, hits
                continue
            tagged = (ref != 0) & known
            nxt = np.zeros(len(hits), dtype=bool)
            inner = hits + 1 < ch.n
            nxt[inner] = tagged[hits[inner] + 1]
            last = hits[-1]
            if last + 1 == ch.n and ch.hi < ch.table.end_pfn:
                nxt[-1] = self._ref_at(ch.table, ch.hi) != 0  # the next page is past the chunk
            p = columns(ch.memmap, self.pf.dtype, ch.n) if ch.memmap is not None else None
            pknown = known_mask(ch.n, ch.memmap_unknown) if p is not None else np.zeros(ch.n, bool)
            order, src = self._orders(e, p, ch.memmap, pknown, hits, nxt, ch.lo)
            yield ch.lo, int(known.sum()), hits + ch.lo, ref[hits], order, src

    def scan(self, lo: int = 0, hi: int = 1 << 64, node: Optional[int] = None) -> Scan:
        """Every page_ext entry in [lo, hi) (of ``node``), counted per allocation tag.

        :param lo: first pfn
        :param hi: end pfn (exclusive)
        :param node: only this NUMA node's tables
        :return: a :class:`Scan`: refs per tag, entries, orders and where they came from
        """
        s = Scan()
        for _a, n, pfns, refs, orders, srcs in self.chunks(lo, hi, node):
            s.entries += n
            if not len(pfns):
                continue
            empty = refs == CODETAG_EMPTY
            s.empty += int(empty.sum())
            keep = ~empty
            refs, orders, srcs = refs[keep], orders[keep], srcs[keep]
            for i, name in enumerate(SOURCES):
                c = int((srcs == i).sum())
                if c:
                    s.order_source[name] += c
            uniq, inv = np.unique(refs, return_inverse=True)
            inv = inv.reshape(-1)
            allocs = np.bincount(inv, minlength=len(uniq))
            pages = np.bincount(inv, weights=(np.int64(1) << orders).astype(np.float64), minlength=len(uniq))
            assumed = np.bincount(inv, weights=(srcs == 3).astype(np.float64), minlength=len(uniq))
            for ref, al, pg, asm in zip(uniq.tolist(), allocs.tolist(), pages.tolist(), assumed.tolist()):
                tp = s.tags.get(ref)
                if tp is None:
                    tp = s.tags[ref] = TagPages()
                    if self.tag(ref) is None:
                        s.invalid[ref] = 0
                tp.allocations += al
                tp.pages += int(pg)
                tp.assumed += int(asm)
                if ref in s.invalid:
                    s.invalid[ref] += al
        s.null = s.entries - s.empty - s.tagged
        return s

    # -- one page ------------------------------------------------------------------
    def at(self, pfn: int, _follow: bool = True) -> dict:
        """What page_ext says about one pfn (a tail page: its head's tag too)."""
        raw = self.session.entry(pfn)
        t = self.session.table_for(pfn)
        e = columns(raw, self._entry_dtype(), 1)
        memmap, mm_lost = self.session.read_memmap(pfn, pfn + 1)
        if self.compressed:
            if memmap is None or mm_lost:
                raise ClientError(f"the struct page of pfn {pfn:#x} is not readable: its compressed tag is unknown")
            ref = int(self._refs_from_flags(columns(memmap, self.compressed["flags_dtype"], 1)["word"])[0])
        else:
            ref = int(e["ref"][0])
        p = columns(memmap, self.pf.dtype, 1) if memmap is not None and not mm_lost else None
        out = {"pfn": pfn, "ref": ref, "state": None, "tag": None, "order": None, "order_source": None,
               "bytes": None, "head_pfn": None}
        if ref == 0:
            out["state"] = "none"
            if p is not None and int(p["compound_head"][0]) & 1:
                head = int(head_pfns(self.prog, self.pf, p["compound_head"].astype(np.uint64),
                                     np.array([pfn], dtype=np.int64))[0])
                out["head_pfn"] = head
                # One step only: a head that is itself a tail (a loop in a damaged
                # memmap) is not followed further.
                if _follow and head != pfn and self.session.table_for(head) is not None:
                    out["tag"] = self.at(head, _follow=False)["tag"]
            return out
        if ref == CODETAG_EMPTY:
            out["state"] = "empty"
            return out
        tag = self.tag(ref)
        out["state"] = "tagged" if tag is not None else "invalid"
        out["tag"] = tag.text() if tag is not None else invalid_text(ref)
        nxt = np.array([pfn + 1 < t.end_pfn and self._ref_at(t, pfn + 1) != 0])
        order, src = self._orders(e, p, memmap, np.array([p is not None]), np.array([0]), nxt, pfn)
        o = int(order[0])
        out.update(order=o, order_source=SOURCES[int(src[0])], bytes=self.layout.page_size << o)
        return out

    def _ref_at(self, t: Table, pfn: int) -> int:
        if self.compressed:
            memmap, lost = self.session.read_memmap(pfn, pfn + 1)
            if memmap is None or lost:
                return 0
            return int(self._refs_from_flags(columns(memmap, self.compressed["flags_dtype"], 1)["word"])[0])
        try:
            raw = self.prog.read(entry_address(t, pfn, self.layout.entry_size) + self.client.offset, self.ptr_size)
        except drgn.FaultError:
            return 0
        return struct.unpack(self.ptr_fmt, raw)[0]


SOURCES = (COMPOUND, PAGE_OWNER, NEXT_TAGGED, ASSUMED)


def alloc_tag_rows(at: AllocTags, s: Scan, kernel: dict, all_tags: bool = False) -> list[dict]:
    """One row per tag with page_ext refs (and, with all_tags, every kernel tag),
    by page_ext bytes, then kernel bytes.

    :param at: the :class:`AllocTags` decoder
    :param s: a scan's result (:meth:`AllocTags.scan`)
    :param kernel: tag address -> (bytes, calls) of the kernel's counters
    :param all_tags: also the kernel's tags no page refers to
    :return: one dict per tag
    """
    page = at.layout.page_size
    index = {a: i for i, a in enumerate(at.catalogue())}  # the line of /proc/allocinfo, from 0
    rows = []
    addrs = list(s.tags)
    if all_tags:
        addrs += [a for a in at.catalogue() if a not in s.tags]
    for addr in addrs:
        tp = s.tags.get(addr)
        tag = at.tag(addr)
        kb, kc = kernel.get(addr, (None, None))
        rows.append({"tag": tag.text() if tag else invalid_text(addr), "address": addr, "index": index.get(addr),
                     "file": tag.filename if tag else None, "line": tag.lineno if tag else None,
                     "function": tag.function if tag else None, "module": tag.modname if tag else None,
                     "inaccurate": tag.inaccurate if tag else None,
                     "allocations": tp.allocations if tp else 0, "pages": tp.pages if tp else 0,
                     "orders_assumed": tp.assumed if tp else 0,
                     "bytes": (tp.pages if tp else 0) * page, "kernel_bytes": kb, "kernel_calls": kc})
    rows.sort(key=lambda r: (-r["bytes"], -(r["kernel_bytes"] or 0), r["tag"]))
    return rows
