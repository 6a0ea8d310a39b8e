"""Stack depot handles to stack text, each unique handle decoded once.

page_owner stores its stacks in lib/stackdepot.c (since v4.8, f2ca0b557107)
and keeps only a 32-bit handle per page.  A handle is a ``union
handle_parts``: a pool (``slab`` before v6.3, 961c949b012f) index, an offset
in ``1 << DEPOT_STACK_ALIGN`` units and, on some versions, a valid bit and
extra bits; its bitfield widths come from the target's DWARF.  Before
trusting a handle we check it the way the kernel's stack_depot_fetch() does
-- index within the pools allocated so far and below the pool cap, pool
present, offset inside the pool -- and then that the record there names the
same handle and a frame count the depot allows.

The pool table and its cap (:attr:`StackDepot.max_pools`): up to v6.16 an
array ``stack_pools[DEPOT_MAX_POOLS]`` (``stack_slabs`` before v6.3), whose
DWARF length is the cap (at most 8192, DEPOT_POOLS_CAP); from v6.17
(ed4f142f72a9, "stackdepot: make max number of pools boot-time
configurable") a pointer ``void **stack_pools`` to ``stack_max_pools``
entries, set by the ``stack_depot_max_pools=`` boot parameter (1024 up to
``(1 << DEPOT_POOL_INDEX_BITS) - 1``, default min(that, 8192)).  Which one
is read from the debug info: the type of ``stack_pools``.

Two ways to fail are kept apart: a handle whose record *reads* but is not a
stack is corrupt (printed as ``<invalid handle 0x...>`` and counted in
:attr:`StackDepot.invalid`); a handle whose pool or record is *not in the
dump* is missing data (``missing.stack_handles``), never called corrupt.
A valid handle's entries are read where drgn's
:func:`drgn.helpers.linux.stackdepot.stack_depot_fetch` finds them, as one
raw read; text lines are cached by handle, so memory is O(unique stacks).
"""

from __future__ import annotations

from typing import Callable, Optional, Union

import drgn
from drgn.helpers.linux.stackdepot import stack_depot_fetch

from ..kernel import STACKDEPOT_MAX_FRAMES, pointer_size
from ..lazy import np
from ..model import Missing
from ..reader import present

# STACK_ALLOC_ALIGN / DEPOT_STACK_ALIGN: 4 since the depot's introduction
# (cd11016e5f52, v4.6), as drgn's helper also assumes.
DEPOT_STACK_ALIGN = 4
# STACK_ALLOC_SLABS_CAP (v6.1) / DEPOT_POOLS_CAP (v6.3 .. v6.16): at most 8192
# pools in the array; from v6.17 the cap is the variable stack_max_pools.
DEPOT_POOLS_CAP = 8192

INVALID, MISSING = "invalid", "missing"


class StackDepot:
    """The target's stack depot, read lazily."""

    def __init__(self, prog: drgn.Program, symbolize: Callable[[int], str], missing: Optional[Missing] = None,
                 live: bool = False):
        self.prog = prog
        self.live = live  # a running kernel: its depot grows while we read
        self.symbolize = symbolize
        self.missing = missing if missing is not None else Missing()
        self._lines: dict[int, Union[tuple[str, ...], str]] = {}
        self._text: dict[int, Optional[str]] = {}
        self.invalid: set[int] = set()
        parts = prog.type("union handle_parts")
        self._fields = {}
        for m in _flatten(parts):
            if m.name and m.bit_field_size:
                self._fields[m.name] = (m.bit_offset, m.bit_field_size)
        if "pool_index_plus_1" in self._fields:  # a6c1d9cb9a68 (3ee34eabac2a, v6.9-rc1)
            self._index_name, self._plus_one = "pool_index_plus_1", True
        elif "pool_index" in self._fields:  # v6.3 961c949b012f (slab -> pool)
            self._index_name, self._plus_one = "pool_index", False
        else:  # v4.6..v6.2
            self._index_name, self._plus_one = "slabindex", False
        off_bits = self._fields["offset"][1]
        self.pool_size = 1 << (off_bits + DEPOT_STACK_ALIGN)
        try:
            self._pools = prog["stack_pools"]
        except KeyError:
            self._pools = prog["stack_slabs"]
        self.max_pools = self._pool_cap()
        rec = prog.type("struct stack_record")
        self._rec_size_off = drgn.offsetof(rec, "size")
        self._rec_handle_off = drgn.offsetof(rec, "handle")
        self._rec_entries_off = drgn.offsetof(rec, "entries")
        self._word = pointer_size(prog)
        self._pool_addr: dict[int, Optional[int]] = {}
        self._max: Optional[int] = None

    def _pool_cap(self) -> int:
        """How many pools the depot can have: the array's length (v4.6 ..
        v6.16), or ``stack_max_pools`` behind the pointer (v6.17,
        ed4f142f72a9).  A pointer without a readable ``stack_max_pools``
        falls back to the most the handle's index bits can name."""
        t = self._pools.type_.unaliased()
        if t.kind == drgn.TypeKind.ARRAY:
            return min(t.length or DEPOT_POOLS_CAP, DEPOT_POOLS_CAP)
        idx_bits = self._fields[self._index_name][1]
        limit = (1 << idx_bits) - (1 if self._plus_one else 0)
        try:
            o = self.prog.object("stack_max_pools", drgn.FindObjectFlags.VARIABLE, "stackdepot.c")
            v = o.value_()
        except (LookupError, ValueError, drgn.FaultError, drgn.ObjectAbsentError):
            try:
                v = self.prog["stack_max_pools"].value_()
            except (LookupError, ValueError, drgn.FaultError, drgn.ObjectAbsentError):
                v = None
        if v is None or not 0 < v <= limit:
            return limit  # unreadable or damaged: the most a handle can name
        return v

    def _part(self, handle: int, name: str) -> int:
        off, size = self._fields[name]
        return (handle >> off) & ((1 << size) - 1)

    def _max_index(self) -> int:
        """Highest pool index in use (inclusive), bounded by the pool cap."""
        found = None
        for name, inclusive in (("pools_num", False), ("pool_index", True), ("depot_index", True)):
            try:
                o = self.prog.object(name, drgn.FindObjectFlags.VARIABLE, "stackdepot.c")
                v = o.value_()
            except (LookupError, ValueError, drgn.FaultError, drgn.ObjectAbsentError):
                continue
            found = v if inclusive else v - 1
            break
        if found is None:
            found = self.max_pools - 1
        return max(-1, min(found, self.max_pools - 1))

    def locate(self, handle: int) -> Union[tuple[int, int], str]:
        """(record address, frame count), or INVALID (not a stack) or MISSING
        (the pool or record is not in the dump).

        On a live kernel a handle past the pools we saw may be a stack saved
        since (stack_depot_save() opens pools as it goes): the pool count and
        pointers are read again once before the handle is called invalid.

        :param handle: a stack depot handle
        :return: ``(address, count)``, INVALID or MISSING
        """
        where = self._locate(handle)
        if where == INVALID and self.live:
            self._max = None
            self._pool_addr.clear()
            where = self._locate(handle)
        return where

    def _locate(self, handle: int) -> Union[tuple[int, int], str]:
        idx = self._part(handle, self._index_name)
        if self._plus_one:
            if idx == 0:
                return INVALID
            idx -= 1
        if "valid" in self._fields and not self._part(handle, "valid"):
            return INVALID
        if self._max is None:
            self._max = self._max_index()
        if idx > self._max or idx >= self.max_pools:
            return INVALID
        if idx not in self._pool_addr:
            try:
                self._pool_addr[idx] = self._pools[idx].value_()
            except drgn.FaultError:
                self._pool_addr[idx] = None
        base = self._pool_addr[idx]
        if base is None:
            return MISSING
        if not base:
            return INVALID
        offset = self._part(handle, "offset") << DEPOT_STACK_ALIGN
        if offset + self._rec_handle_off + 4 > self.pool_size:
            return INVALID
        try:
            raw = self.prog.read(base + offset, self._rec_handle_off + 4)
        except drgn.FaultError:
            return MISSING
        if not present(self.prog, base + offset, self._rec_handle_off + 4):
            return MISSING  # a page the core does not hold reads as zeros: not a stack, not corrupt
        size = int.from_bytes(raw[self._rec_size_off:self._rec_size_off + 4], "little")
        stored = int.from_bytes(raw[self._rec_handle_off:self._rec_handle_off + 4], "little")
        mask = ~self._extra_mask() & 0xFFFFFFFF
        if stored & mask != handle & mask or size > STACKDEPOT_MAX_FRAMES:
            return INVALID
        return base + offset, size

    def _extra_mask(self) -> int:
        if "extra" not in self._fields:
            return 0
        off, size = self._fields["extra"]
        return ((1 << size) - 1) << off

    def invalid_mask(self, handles):
        """Which of ``handles`` (a numpy column) the depot has found invalid so far.

        :param handles: uint32 column of handles
        :return: bool array
        """
        return np.isin(handles, np.fromiter(self.invalid, dtype=np.uint64, count=len(self.invalid)))

    def lines(self, handle: int) -> Union[tuple[str, ...], str]:
        """``%pS`` of each frame, or INVALID / MISSING (see :meth:`locate`).

        :param handle: a stack depot handle
        :return: tuple of lines, INVALID or MISSING
        """
        got = self._lines.get(handle)
        if got is not None:
            return got
        where = self.locate(handle)
        if isinstance(where, tuple):
            try:
                got = tuple(self.symbolize(pc) for pc in self.pcs_at(*where))
            except drgn.FaultError:
                got = MISSING
        else:
            got = where
        if got == INVALID:
            self.invalid.add(handle)
        elif got == MISSING:
            self.missing.stack_handles.add(handle)
        self._lines[handle] = got
        return got

    def pcs_at(self, record: int, size: int) -> list[int]:
        """The saved entries of the record: the address drgn's stack_depot_fetch()
        computes, read as raw words (its StackTrace also expands inlined frames,
        which the kernel does not print and which costs ~2 ms a stack).

        :param record: the ``struct stack_record`` address
        :param size: its number of entries
        :return: the return addresses
        """
        w = self._word
        raw = self.prog.read(record + self._rec_entries_off, size * w)
        if not present(self.prog, record + self._rec_entries_off, size * w):
            raise drgn.FaultError("stack record not in the dump", record + self._rec_entries_off)
        return [int.from_bytes(raw[i:i + w], "little") for i in range(0, len(raw), w)]

    def fetch_pcs(self, handle: int) -> Optional[list[int]]:
        """pcs of a valid handle through drgn's own helper (non-inline frames).

        :param handle: a stack depot handle
        :return: the return addresses, None where drgn cannot fetch them
        """
        trace = stack_depot_fetch(drgn.Object(self.prog, "depot_stack_handle_t", handle))
        return None if trace is None else [f.pc for f in trace if not f.is_inline]

    def text(self, handle: int) -> Optional[str]:
        """stack_trace_snprint(..., spaces=0): ``" %pS\\n"`` per frame; None
        unless the handle is a readable stack.

        :param handle: a stack depot handle
        :return: the text, or None
        """
        if handle in self._text:
            return self._text[handle]
        lines = self.lines(handle)
        text = self._text[handle] = "".join(f" {line}\n" for line in lines) if isinstance(lines, tuple) else None
        return text


def _flatten(t: drgn.Type):
    for m in t.members:
        if m.name is None and m.type.unqualified().kind in (drgn.TypeKind.STRUCT, drgn.TypeKind.UNION):
            for sub in _flatten(m.type.unqualified()):
                yield _Shifted(sub, m.bit_offset)
        else:
            yield m


class _Shifted:
    def __init__(self, m, base: int):
        self.name, self.bit_field_size, self.bit_offset = m.name, m.bit_field_size, m.bit_offset + base
