"""The page_ext helpers: an entry of a pfn or page, the next entry, a client's data, every table.

Design.  Each helper reads the target afresh and does what the kernel's own
function of the same name does (lookup_page_ext(), page_ext_next(),
page_ext_data()), on SPARSEMEM (with the hot-remove ``PAGE_EXT_INVALID``
bit) and FLATMEM kernels; only facts fixed at boot (the entry size, whether
the invalid bit exists) are kept, in ``prog.cache``.  The examples run on
the recorded fixture described in :mod:`inspector.helpers`.

>>> from inspector.helpers import *
"""

from __future__ import annotations

import operator
from typing import Iterator, NamedTuple

from drgn import IntegerLike, Object, Program
from drgn.helpers.common.prog import takes_program_or_default
from ..discover import detect_rules, discover, entry_size, memory_model
from ..kernel import nr_orders
from ..walk import walk

# include/linux/page_ext.h: the low bit of mem_section.page_ext while the
# section is being hot-removed.  Since Linux kernel commit b1d5488a252d
# ("mm/page_ext: fix the race between offline and lookup") (in v6.1).
PAGE_EXT_INVALID = 0x1


class PageExtTable(NamedTuple):
    """One page_ext table: entries for ``nr_pages`` pfns from ``start_pfn``."""

    start_pfn: int
    nr_pages: int
    page_ext: Object  # ``struct page_ext *`` of start_pfn's entry


@takes_program_or_default
def page_ext_size(prog: Program) -> int:
    """
    Get the size of one page extension entry: the kernel's ``page_ext_size``.

    Before Linux kernel commit 5556cfe8d994 ("mm, page_owner: fix off-by-one
    error in __set_page_owner_handle()") (in v5.4) the size is
    ``sizeof(struct page_ext) + extra_mem``, and before commit 980ac1672e7e
    ("mm/page_ext: support extra space allocation by page_ext user") (in
    v4.9) it is ``sizeof(struct page_ext)``.  When the compiler optimized
    ``page_ext_size`` out (no client uses it), this is its initial value:
    ``sizeof(struct page_ext)``, or 0 since commit 6189eb82f0ae
    ("mm/page_ext: do not allocate space for page_ext->flags if not needed")
    (in v6.3).

    >>> page_ext_size()
    72

    :param prog: the target (default: drgn's default program)
    :return: bytes
    """
    try:
        return prog.cache["pageext_entry_size"]
    except KeyError:
        pass

    size = entry_size(prog, detect_rules(prog, memory_model(prog)))[0]
    prog.cache["pageext_entry_size"] = size
    return size


def _entry(prog: Program, base: int, index: int) -> Object:
    return Object(prog, "struct page_ext *", (base + page_ext_size(prog) * index) & ((1 << 64) - 1))


def _null(prog: Program) -> Object:
    return Object(prog, "struct page_ext *", 0)


@takes_program_or_default
def pfn_to_page_ext(prog: Program, pfn: IntegerLike) -> Object:
    """
    Get the page extension of a page frame number, as the kernel's
    ``lookup_page_ext()`` finds it.

    >>> pfn_to_page_ext(0x8001)
    Object(prog, 'struct page_ext *', value=0xffff888001240048)
    >>> pfn_to_page_ext(1 << 32)  # beyond memory: NULL
    Object(prog, 'struct page_ext *', value=0x0)

    :param prog: the target (default: drgn's default program)

    :param pfn: ``unsigned long``
    :return: ``struct page_ext *``; ``NULL`` if the pfn has none: its section
        has no table, or (since v6.1) its table is being hot-removed
    """

    pfn = operator.index(pfn)
    if memory_model(prog) == "flatmem":
        from drgn.helpers.linux.mmzone import for_each_online_pgdat

        for pgdat in for_each_online_pgdat(prog):
            start = pgdat.node_start_pfn.value_()
            if not start <= pfn < start + pgdat.node_spanned_pages.value_():
                continue
            base = pgdat.node_page_ext.value_()
            if not base:
                return _null(prog)
            # FLATMEM indexes from the node start rounded down to
            # MAX_ORDER_NR_PAGES: round_down(node_start_pfn(nid),
            # MAX_ORDER_NR_PAGES) in lookup_page_ext(), since the merge of
            # page_ext (eefa864b701d, v3.19).
            align = 1 << (nr_orders(prog) - 1)
            return _entry(prog, base, pfn - (start - start % align))
        return _null(prog)
    from ..walk import pfn_to_section  # drgn's needs VMCOREINFO's LENGTH(mem_section)

    section = pfn_to_section(prog, pfn, prog["PAGE_SIZE"].value_())
    if not section:
        return _null(prog)
    stored = section.page_ext.value_()
    if not stored or stored & PAGE_EXT_INVALID and _has_invalid_bit(prog):
        return _null(prog)
    return _entry(prog, stored, pfn)


def _has_invalid_bit(prog: Program) -> bool:
    try:
        return prog.cache["pageext_invalid_bit"]
    except KeyError:
        v = prog.cache["pageext_invalid_bit"] = detect_rules(prog, memory_model(prog)).invalid_bit
        return v


def lookup_page_ext(page: Object) -> Object:
    """
    Get the page extension of a page, like the kernel's ``lookup_page_ext()``.

    >>> from drgn.helpers.linux.mm import pfn_to_page
    >>> lookup_page_ext(pfn_to_page(0x8001))
    Object(prog, 'struct page_ext *', value=0xffff888001240048)

    :param page: ``struct page *``
    :return: ``struct page_ext *`` (``NULL`` if the page has none)
    """
    from drgn.helpers.linux.mm import page_to_pfn

    if page.type_.unaliased_kind().name != "POINTER":
        page = page.address_of_()
    return pfn_to_page_ext(page.prog_, page_to_pfn(page))


def page_ext_next(page_ext: Object) -> Object:
    """
    Get the page extension of the next pfn in the same table, like the
    kernel's ``page_ext_next()`` (entries are ``page_ext_size()`` bytes
    apart, not ``sizeof(struct page_ext)``).

    >>> page_ext_next(pfn_to_page_ext(0x8000))
    Object(prog, 'struct page_ext *', value=0xffff888001240048)

    :param page_ext: ``struct page_ext *``
    :return: ``struct page_ext *``
    """
    return _entry(page_ext.prog_, page_ext.value_(), 1)


def page_ext_data(page_ext: Object, ops: Object) -> Object:
    """
    Get a client's data in a page extension, like the kernel's
    ``page_ext_data()`` (since Linux kernel commit c2bf3afee465 ("mm/page_ext:
    add common function to get client data from page_ext"), in v6.6; before,
    each client added ``ops->offset`` itself).

    >>> page_ext_data(pfn_to_page_ext(0x8000), prog["page_owner_ops"])
    Object(prog, 'void *', value=0xffff888001240008)

    :param page_ext: ``struct page_ext *``
    :param ops: ``struct page_ext_operations`` or a pointer to one (e.g.
        ``prog["page_owner_ops"]``)
    :return: ``void *``
    """
    if ops.type_.unaliased_kind().name == "POINTER":
        ops = ops[0]
    return Object(page_ext.prog_, "void *", page_ext.value_() + ops.offset.value_())


@takes_program_or_default
def for_each_page_ext_table(prog: Program) -> Iterator[PageExtTable]:
    """
    Iterate over every page extension table in use: one per SPARSEMEM
    section that has one (tables being hot-removed are skipped), or one per
    FLATMEM node.

    >>> for start_pfn, nr_pages, page_ext in for_each_page_ext_table():
    ...     print(hex(start_pfn), nr_pages, hex(page_ext.value_()))
    0x0 32768 0xffff888001000000
    0x8000 32768 0xffff888001240000
    0x10000 32768 0xffff888001480000
    0x18000 32768 0xffff8880016c0000
    0x20000 32768 0xffff888021000000
    0x28000 32768 0xffff888021240000
    0x30000 32768 0xffff888021480000
    0x38000 32768 0xffff8880216c0000

    :param prog: the target (default: drgn's default program)
    :return: Iterator of :class:`PageExtTable` (``start_pfn``, ``nr_pages``,
        ``page_ext``: the ``struct page_ext *`` of start_pfn's entry)
    """

    for t in walk(prog, discover(prog)).online_tables():
        yield PageExtTable(t.start_pfn, t.nr_pages, Object(prog, "struct page_ext *", t.address))
