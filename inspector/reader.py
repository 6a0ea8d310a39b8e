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
    bytes are zero in the result.  Where the core says which pages it holds
    (a :class:`Presence` in ``prog.cache["pageext_presence"]``), pages it does
    not hold are holes too, though drgn reads them as zeros."""
    try:
        data, holes = prog.read(address, size, physical), []
    except (drgn.FaultError, ValueError, OverflowError):
        if size <= 0:
            return b"", []
        buf = bytearray(size)
        holes = []
        _bisect(prog, address, 0, size, granule, physical, buf, holes)
        data = bytes(buf)
    presence = prog.cache.get("pageext_presence")
    if presence is not None and size > 0:
        absent = presence.absent(prog, address, size, physical)
        if absent:
            buf = bytearray(data)
            for off, n in absent:
                buf[off:off + n] = bytes(n)
            data = bytes(buf)
            holes = sorted(holes + absent)
    merged: list[tuple[int, int]] = []
    for off, n in holes:
        if merged and merged[-1][0] + merged[-1][1] >= off:
            end = max(merged[-1][0] + merged[-1][1], off + n)
            merged[-1] = (merged[-1][0], end - merged[-1][0])
        else:
            merged.append((off, n))
    return data, merged


def present(prog: drgn.Program, address: int, size: int, physical: bool = False) -> bool:
    """False when the core says it does not hold some page of the range
    (drgn would read zeros there); True when it does, or cannot say."""
    presence = prog.cache.get("pageext_presence")
    return presence is None or size <= 0 or not presence.absent(prog, address, size, physical)


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


# Virtual ranges are translated to physical ones in steps of this size (a
# PMD mapping on x86-64: the direct map and the vmemmap), checked for
# contiguity at both ends, else page by page.
_STEP = 2 << 20


class Presence:
    """The physical page frames a core file holds (None-free: absent means absent)."""

    def __init__(self, ranges: PfnRanges, source: str, page_size: int = PAGE):
        self.ranges = ranges
        self.source = source
        self.page_size = page_size

    def absent(self, prog: drgn.Program, address: int, size: int, physical: bool = False) -> list[tuple[int, int]]:
        """(offset, length) pieces of [address, address + size) on pages the
        core does not hold.  Virtual addresses that cannot be translated are
        left to the reads (they fault)."""
        page = self.page_size
        out: list[tuple[int, int]] = []

        def mark(phys: int, vpos: int, n: int) -> None:
            # [phys, phys + n) is at offset vpos - address: the pieces not held.
            for a, b in self.missing(phys // page, -(-(phys + n) // page)):
                lo, hi = max(phys, a * page), min(phys + n, b * page)
                if lo < hi:
                    out.append((vpos - address + lo - phys, hi - lo))

        if physical:
            mark(address, address, size)
            return out
        end = address + size
        pos = address
        while pos < end:
            piece = min(end, (pos // _STEP + 1) * _STEP)
            first, last = _phys(prog, pos), _phys(prog, piece - 1)
            if first is not None and last is not None and last - first == piece - 1 - pos:
                mark(first, pos, piece - pos)
            else:
                p = pos
                while p < piece:
                    q = min(piece, (p // page + 1) * page)
                    ph = _phys(prog, p)
                    if ph is not None:
                        mark(ph, p, q - p)
                    p = q
            pos = piece
        return out

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


def _phys(prog: drgn.Program, addr: int) -> Optional[int]:
    """The physical address behind a kernel virtual address, or None.

    Only asked where a core lists its pages (a core does not change): the
    translation of each page is kept, so the stack depot's many small reads
    into the same pool pages cost one page-table walk a page."""
    from drgn.helpers.linux.mm import follow_phys
    cache = prog.cache.setdefault("pageext_phys", {})
    vpage, off = divmod(addr, PAGE)
    if vpage in cache:
        base = cache[vpage]
        return None if base is None else base + off
    mm = prog.cache.get("pageext_init_mm")
    if mm is None:
        try:
            mm = prog.cache["pageext_init_mm"] = prog["init_mm"].address_of_()
        except (LookupError, drgn.FaultError, ValueError):
            return None
    try:
        phys = follow_phys(mm, addr).value_()
    except (drgn.FaultError, ValueError, NotImplementedError, OverflowError):
        phys = None
    if len(cache) >= 1 << 16:
        cache.clear()
    cache[vpage] = None if phys is None else phys - off
    return phys


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
    return Presence(ranges, "ELF program headers", page_size)
