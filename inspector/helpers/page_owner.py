"""The page_owner helpers: a page's record, and gfp masks as the kernel prints them.

Design.  :func:`get_page_owner` is mm/page_owner.c's get_page_owner() over
the page_ext helpers (:mod:`.page_ext`); the gfp names are the target's own
``gfpflag_names`` table (:mod:`inspector.decode.flags`).  Examples that need
a ``struct page_owner`` are skipped on the fixture (see :mod:`inspector.helpers`).
"""

from __future__ import annotations

import operator

from drgn import IntegerLike, Object, Program, cast
from drgn.helpers.common.prog import takes_program_or_default

from ..decode.flags import format_flags, gfp_flag_names
from .page_ext import lookup_page_ext, page_ext_data


def get_page_owner(page: Object) -> Object:
    """
    Get the page_owner record of a page, like mm/page_owner.c's
    ``get_page_owner()``.

    >>> get_page_owner(pfn_to_page(0x100000)).pid  # doctest: +SKIP
    (pid_t)1

    :param page: ``struct page *``, or its ``struct page_ext *``
    :return: ``struct page_owner *`` (``NULL`` if the page has no page
        extension)
    """
    prog = page.prog_
    name = page.type_.unqualified().type_name()
    if name in ("struct page_ext *", "struct page_ext"):
        page_ext = page if name.endswith("*") else page.address_of_()
    else:
        page_ext = lookup_page_ext(page)
    if not page_ext:
        return Object(prog, "struct page_owner *", 0)
    return cast("struct page_owner *", page_ext_data(page_ext, prog["page_owner_ops"]))


@takes_program_or_default
def decode_gfp_mask(prog: Program, mask: IntegerLike) -> str:
    """
    Get a gfp mask as the kernel's ``%pGg`` prints it.

    >>> decode_gfp_mask(0xcc0)  # doctest: +SKIP
    'GFP_KERNEL'

    :param prog: the target (default: drgn's default program)
    :param mask: ``gfp_t``
    :return: the flag names joined by ``|``, leftover bits in hex
    """
    return format_flags(operator.index(mask), gfp_flag_names(prog))
