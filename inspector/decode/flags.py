"""Flag names as the kernel prints them: ``%pGg``, ``%pGp``, ``%pGv``.

Design.  lib/vsprintf.c prints a flags word through a ``struct
trace_print_flags[]`` table (``gfpflag_names``, ``pageflag_names``,
``vmaflag_names`` in mm/debug.c): each mask whose bits are all set is named,
joined by ``|``, and the leftover bits follow in hex.  :func:`flag_table`
reads such a table from the target, :func:`format_flags` applies it.  The
drgn-facing :func:`gfp_flag_names` is re-exported by :mod:`inspector.helpers`.
"""

from __future__ import annotations

from typing import List, Tuple

from drgn import Program
from drgn.helpers.common.prog import takes_program_or_default


def flag_table(prog: Program, name: str) -> List[Tuple[int, str]]:
    """A ``struct trace_print_flags[]`` up to its {0, NULL} terminator.

    :param prog: the target
    :param name: the array's symbol, e.g. ``"pageflag_names"``
    :return: list of (mask, name), empty when the symbol is missing
    """
    out: List[Tuple[int, str]] = []
    try:
        arr = prog[name]
    except KeyError:
        return out
    for i in range(arr.type_.length or 0):
        e = arr[i]
        if not e.name.value_():
            break
        out.append((e.mask.value_(), e.name.string_().decode("latin-1")))
    return out


@takes_program_or_default
def gfp_flag_names(prog: Program) -> List[Tuple[int, str]]:
    """
    Get the gfp flag names the kernel's ``%pGg`` prints, in its order: the
    ``gfpflag_names`` table (mm/debug.c), or, in a kernel without it, each
    ``___GFP_*_BIT`` as a single flag (since Linux kernel commit 772dd0342727
    ("mm: enumerate all gfp flags"), in v6.10).

    >>> gfp_flag_names()[:2]  # doctest: +SKIP
    [(3264, 'GFP_TRANSHUGE'), (2752, 'GFP_TRANSHUGE_LIGHT')]

    :return: list of (mask, name)

    :param prog: the target (default: drgn's default program)
    """
    try:
        return prog.cache["pageext_gfp_names"]
    except KeyError:
        pass
    names = flag_table(prog, "gfpflag_names")
    if not names:
        try:
            enum = prog.constant("___GFP_MOVABLE_BIT").type_
            for name, value in enum.enumerators or ():
                if name.startswith("___GFP_") and name.endswith("_BIT") and name != "___GFP_LAST_BIT":
                    names.append((1 << value, "__GFP_" + name[len("___GFP_"):-len("_BIT")]))
        except LookupError:
            pass
    prog.cache["pageext_gfp_names"] = names
    return names


def format_flags(flags: int, names: List[Tuple[int, str]]) -> str:
    """lib/vsprintf.c format_flags(): names joined by '|', leftover bits in hex.

    :param flags: the flags word
    :param names: ``(mask, name)`` in the table's order (:func:`flag_table`)
    :return: the text ``%pGg``/``%pGp`` prints

    >>> format_flags(0xcc0 | 0x1, [(0xcc0, "GFP_KERNEL"), (0x400, "__GFP_DIRECT_RECLAIM")])
    'GFP_KERNEL|0x1'
    """
    out = []
    for mask, name in names:
        if not flags:
            break
        if flags & mask != mask:
            continue
        out.append(name)
        flags &= ~mask
    text = "|".join(out)
    if flags:
        text += ("|" if out else "") + hex(flags)
    return text
