"""Reading kernel memory in bulk without losing track of what is missing.

A dump may lack any page: makedumpfile filters pages out (``-e`` drops the
memmap of free pages), a capture cut short loses its tail, a damaged kernel
points anywhere.  Every bulk read of the library goes through
:func:`read_or_holes`: one ``prog.read`` for the whole range when it
succeeds (the normal case, as fast as a plain read), else a bisection down to
page granularity, so a missing 4 KiB page costs only the bytes it held; the
caller gets the bytes (zeros where unreadable) and the list of holes, and
records them as unknown, never as zero.

Where the dump itself says which physical pages it holds (an ELF core's
PT_LOAD segments; a synthetic kernel's segments) a :class:`Presence` answers
"is this physical range in the dump" without reading it, which makes the
``readable`` check cheap on any size of machine.  A segment's file-less
tail (p_memsz beyond p_filesz) counts as held: drgn reads it as zeros, and
makedumpfile's ELF output (``-E``) puts its excluded pages there -- for the
kernel memory we read, that is ``-d 1``'s all-zero pages, whose zeros are
the truth.
"""

from __future__ import annotations

import struct
from typing import Optional

import drgn

from .model import PfnRanges

PAGE = 4096


def read_or_holes(prog: drgn.Program, address: int, size: int, granule: int = PAGE,
                  physical: bool = False) -> tuple[bytes, list[tuple[int, int]]]:
    """``size`` bytes at ``address`` and the unreadable (offset, length) holes in them.

    Holes are whole ``granule``-aligned pieces (clipped to the range); their
    bytes are zero in the result."""
    try:
        return prog.read(address, size, physical), []
    except (drgn.FaultError, ValueError, OverflowError):
        pass
    if size <= 0:
        return b"", []
    buf = bytearray(size)
    holes: list[tuple[int, int]] = []
    _bisect(prog, address, 0, size, granule, physical, buf, holes)
    merged: list[tuple[int, int]] = []
    for off, n in holes:
        if merged and merged[-1][0] + merged[-1][1] == off:
            merged[-1] = (merged[-1][0], merged[-1][1] + n)
        else:
            merged.append((off, n))
    return bytes(buf), merged


def _bisect(prog, base: int, lo: int, hi: int, granule: int, physical: bool,
            buf: bytearray, holes: list) -> None:
    # Split [lo, hi) at a granule boundary of the address space, read each half.
    first_end = ((base + lo) // granule + 1) * granule - base
    if first_end >= hi:
        holes.append((lo, hi - lo))  # within one granule: unreadable as a whole
        return
    mid_addr = (base + lo + base + hi) // 2
    mid = max(first_end, (mid_addr // granule) * granule - base)
    for a, b in ((lo, mid), (mid, hi)):
        try:
            buf[a:b] = prog.read(base + a, b - a, physical)
        except (drgn.FaultError, ValueError, OverflowError):
            _bisect(prog, base, a, b, granule, physical, buf, holes)


def unknown_items(holes: list[tuple[int, int]], item: int, count: int) -> list[tuple[int, int]]:
    """Holes in bytes -> [start, end) ranges of the ``item``-byte records they touch."""
    out: list[tuple[int, int]] = []
    for off, n in holes:
        a, b = off // item, min(count, -(-(off + n) // item))
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        elif a < b:
            out.append((a, b))
    return out


class Presence:
    """The physical page frames a core file holds (None-free: absent means absent)."""

    def __init__(self, ranges: PfnRanges, source: str):
        self.ranges = ranges
        self.source = source

    def missing(self, first_pfn: int, end_pfn: int) -> PfnRanges:
        """The pfns in [first_pfn, end_pfn) the core does not hold."""
        out = PfnRanges()
        pos = first_pfn
        for a, b in self.ranges:
            if b <= pos:
                continue
            if a >= end_pfn:
                break
            if a > pos:
                out.add(pos, min(a, end_pfn))
            pos = max(pos, b)
            if pos >= end_pfn:
                break
        if pos < end_pfn:
            out.add(pos, end_pfn)
        return out


def elf_presence(path: str, page_size: int = PAGE) -> Optional[Presence]:
    """Physical pages an ELF core holds (PT_LOAD p_paddr, p_memsz).

    None when the file is not a 64-bit little-endian ELF core or its headers
    are unreadable (then reads decide)."""
    try:
        with open(path, "rb") as f:
            head = f.read(64)
            if len(head) < 64 or head[:4] != b"\x7fELF" or head[4] != 2 or head[5] != 1:
                return None
            phoff, = struct.unpack_from("<Q", head, 32)
            phentsize, phnum = struct.unpack_from("<HH", head, 54)
            if phentsize < 56 or phnum == 0:
                return None
            f.seek(phoff)
            raw = f.read(phentsize * phnum)
    except OSError:
        return None
    ranges = PfnRanges()
    for i in range(len(raw) // phentsize):
        p_type, _fl, _off, _va, paddr, _filesz, memsz = struct.unpack_from("<IIQQQQQ", raw, i * phentsize)
        if p_type == 1 and memsz:
            # Only whole pages count as present.
            ranges.add(-(-paddr // page_size), (paddr + memsz) // page_size)
    return Presence(ranges, "ELF program headers")
