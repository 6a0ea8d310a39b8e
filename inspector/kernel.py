"""Small lookups in a kernel's debug info, each answering "the value, or None".

A kernel build may lack any symbol we read (a config option off), and the
compiler may have optimized a variable out of existence while keeping its
DWARF entry (an "absent" object: Debian's stock 6.1 has no ``total_usage``
value, for one).  Every stage asks through these few functions, so "not in
this kernel" and "not readable here" are handled in one place and never
surface as a drgn exception in the middle of a walk.

The bounds the kernel itself enforces (:data:`PID_MAX_LIMIT` and friends)
live here too: a value read from a dump beyond them is corrupt, not a fact.
"""

from __future__ import annotations

import zlib
from typing import Mapping, Optional

import drgn
from .reader import present


# include/linux/threads.h: PID_MAX_LIMIT is 4 * 1024 * 1024 on 64-bit
# (CONFIG_BASE_SMALL=0) and PID_MAX_DEFAULT (32768) on 32-bit.
PID_MAX_LIMIT_64 = 4 * 1024 * 1024
PID_MAX_LIMIT_32 = 0x8000
# lib/stackdepot.c: CONFIG_STACKDEPOT_MAX_FRAMES is at most 256 (v6.8,
# 8151c7a35d8b); page_owner saves PAGE_OWNER_STACK_DEPTH (16) frames.
STACKDEPOT_MAX_FRAMES = 256
# include/linux/numa.h MAX_NUMNODES = 1 << CONFIG_NODES_SHIFT, at most 10 bits.
MAX_NUMNODES_LIMIT = 1 << 10


def obj(prog: drgn.Program, name: str, filename: Optional[str] = None) -> Optional[drgn.Object]:
    """The object ``name`` (a variable, constant or function), or None: not in
    this kernel, or (for the objects drgn computes from memory, such as
    ``vmemmap``) not readable in this target."""
    try:
        if filename:
            return prog.object(name, drgn.FindObjectFlags.ANY, filename)
        return prog[name]
    except (LookupError, ValueError, drgn.FaultError, drgn.ObjectAbsentError):
        return None


def exists(prog: drgn.Program, name: str) -> bool:
    """Whether the kernel has object ``name``, readable here or not."""
    try:
        prog[name]
        return True
    except (LookupError, ValueError):
        return False
    except (drgn.FaultError, drgn.ObjectAbsentError):
        return True


def value(prog: drgn.Program, name: str, filename: Optional[str] = None) -> Optional[int]:
    """The integer value of ``name``, or None when absent, optimized out or
    unreadable -- or on a page the core does not hold (drgn reads zeros there)."""
    o = obj(prog, name, filename)
    if o is None or o.absent_:
        return None
    try:
        v = o.value_()
    except (drgn.FaultError, drgn.ObjectAbsentError, TypeError, ValueError):
        return None
    if o.address_ is not None and "pageext_presence" in prog.cache:
        if not present(prog, o.address_, max(1, drgn.sizeof(o.type_))):
            return None
    return v


def address(prog: drgn.Program, name: str, filename: Optional[str] = None) -> Optional[int]:
    """The address of variable ``name``, or None (no such variable, or a value only)."""
    o = obj(prog, name, filename)
    if o is None or o.absent_:
        return None
    return o.address_


def constant(prog: drgn.Program, name: str) -> Optional[int]:
    """An enumerator's value (``prog.constant``), or None."""
    try:
        return prog.constant(name).value_()
    except (LookupError, ValueError):
        return None


def enumerators(prog: drgn.Program, member: str) -> dict[str, int]:
    """All enumerators of the enum that has enumerator ``member`` ({} if none)."""
    try:
        return dict(prog.constant(member).type_.enumerators or ())
    except (LookupError, ValueError, TypeError):
        return {}


def type_or_none(prog: drgn.Program, name: str) -> Optional[drgn.Type]:
    try:
        return prog.type(name)
    except LookupError:
        return None


def has_member(t: Optional[drgn.Type], member: str) -> bool:
    if t is None:
        return False
    try:
        return t.unaliased().has_member(member)
    except (TypeError, ValueError):
        return False


def symbol_address(prog: drgn.Program, name: str) -> Optional[int]:
    try:
        return prog.symbol(name).address
    except LookupError:
        return None


def pointer_size(prog: drgn.Program) -> int:
    if prog.platform is not None and not prog.platform.flags & drgn.PlatformFlags.IS_64_BIT:
        return 4
    return 8


def pid_max_limit(prog: drgn.Program) -> int:
    return PID_MAX_LIMIT_64 if pointer_size(prog) == 8 else PID_MAX_LIMIT_32


def release(prog: drgn.Program) -> str:
    """The kernel release (``init_uts_ns.name.release``), else VMCOREINFO's OSRELEASE."""
    try:
        return prog["init_uts_ns"].name.release.string_().decode(errors="replace")
    except (LookupError, drgn.FaultError, drgn.ObjectAbsentError):
        pass
    return vmcoreinfo_release(prog) or "(release unknown)"


def vmcoreinfo_release(prog: drgn.Program) -> Optional[str]:
    try:
        for line in prog["VMCOREINFO"].string_().decode(errors="replace").splitlines():
            if line.startswith("OSRELEASE="):
                return line.split("=", 1)[1]
    except (LookupError, drgn.FaultError, ValueError):
        pass
    return None


def kconfig(prog: drgn.Program) -> Optional[Mapping[str, str]]:
    """The kernel's own .config as CONFIG_IKCONFIG embeds it
    (``kernel_config_data``, gzip; drgn's get_kconfig()), or None: not built
    in (most distributions), or not readable in this target.  arm64's
    defconfig and Android's GKI have it."""
    from drgn.helpers.linux.kconfig import get_kconfig
    try:
        return get_kconfig(prog)
    except (LookupError, drgn.FaultError, drgn.ObjectAbsentError, OSError, EOFError, ValueError, zlib.error):
        return None


def nr_orders(prog: drgn.Program) -> int:
    """Number of buddy orders: ``len(zone->free_area)`` (MAX_ORDER before v6.4,
    MAX_ORDER + 1 after 23baf831a32c, NR_PAGE_ORDERS from v6.8).  The macros
    are not in DWARF; the array length is, in every version."""
    zone = prog.type("struct zone")
    return zone.member("free_area").type.length


def static_key_enabled(key: drgn.Object) -> bool:
    """
    Return whether a static key is enabled, like the kernel's
    ``static_key_enabled()``.

    >>> static_key_enabled(prog["page_owner_inited"])
    True

    :param key: ``struct static_key``, ``struct static_key_true``,
        ``struct static_key_false``, or a pointer to one of them
    :return: whether its count is above 0
    """
    if key.type_.unaliased_kind().name == "POINTER":
        key = key[0]
    name = key.type_.unqualified().type_name()
    if name in ("struct static_key_true", "struct static_key_false"):
        key = key.key
    return key.enabled.counter.value_() > 0
