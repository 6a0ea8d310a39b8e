"""
Page Extensions
---------------

The ``inspector.helpers`` module provides helpers for working with the Linux
kernel's page extensions (``struct page_ext``, mm/page_ext.c): the per-page
tables that page_owner, page_table_check, idle page tracking (32-bit) and
memory allocation profiling keep outside ``struct page``.  They work in any
drgn session (``drgn -c vmcore``, ``drgn --qemu``, live ``drgn``) on
SPARSEMEM kernels, with the ``PAGE_EXT_INVALID`` bit of a hot-remove in
progress handled, and on FLATMEM kernels.

>>> from inspector.helpers import *
>>> page_ext = pfn_to_page_ext(0x8000)
>>> page_ext
Object(prog, 'struct page_ext *', value=0xffff888001240000)
>>> page_owner = get_page_owner(page_ext)  # doctest: +SKIP
>>> page_owner.order  # doctest: +SKIP
(unsigned short)0

The examples run (tests/test_doctests.py) on a recorded fixture: the
synthetic kernel (:mod:`inspector.sim.synthetic`) of the recorded scenario
``boot-2-nodes`` under the v6.1 rules -- two nodes, eight 128 MiB sections,
72-byte entries -- as drgn's default program.  Those marked ``+SKIP`` need
what that kernel lacks (``struct page_owner``, the gfp flag names); the VM
tests run the helpers on real kernels (tests/test_vm_drgn.py).

Every helper reads the target afresh: on a live kernel, a table that memory
hot-remove freed is not found.  Only facts fixed at boot (the entry size)
are cached, in ``prog.cache``.

The helpers are :mod:`.page_ext` (entries and tables) and :mod:`.page_owner`
(records and gfp masks), all exported here; :func:`static_key_enabled` lives
with the kernel lookups (:mod:`inspector.kernel`), :func:`format_flags` and
:func:`gfp_flag_names` with the decoders (:mod:`inspector.decode.flags`).
"""

from __future__ import annotations

from ..decode.flags import format_flags, gfp_flag_names  # noqa: F401
from ..kernel import static_key_enabled  # noqa: F401
from .page_ext import (PAGE_EXT_INVALID, PageExtTable, for_each_page_ext_table, lookup_page_ext,  # noqa: F401
                       page_ext_data, page_ext_next, page_ext_size, pfn_to_page_ext)
from .page_owner import decode_gfp_mask, get_page_owner  # noqa: F401

__all__ = (
    "PageExtTable",
    "decode_gfp_mask",
    "for_each_page_ext_table",
    "get_page_owner",
    "gfp_flag_names",
    "lookup_page_ext",
    "page_ext_data",
    "page_ext_next",
    "page_ext_size",
    "pfn_to_page_ext",
    "static_key_enabled",
)
