"""The kernel printf pieces the page_owner decoder relies on, checked against C semantics.

Expected strings follow lib/vsprintf.c by hand (format_flags(), number() with
SPECIAL|SMALL for %#x, %s); the byte-for-byte check against a real kernel is
tests/test_vm_owner.py.
"""

from __future__ import annotations

import struct

import numpy as np
import pytest

from inspector.decode.engine import record_dtype
from inspector.decode.kformat import count_conversions, format_flags, format_pieces, kprintf
from inspector.commands import parse_range
from inspector.errors import UsageError
from inspector.vprintf import render

# A gfpflag_names-like table: composite masks first, as the kernel lists them.
NAMES = [(0xCC0, "GFP_KERNEL"), (0x400, "__GFP_IO"), (0x800, "__GFP_FS"), (0x40000, "__GFP_COMP"),
         (0x8, "__GFP_MOVABLE")]


def test_format_flags_takes_composites_first_and_prints_leftover_bits_in_hex():
    assert format_flags(0xCC0, NAMES) == "GFP_KERNEL"
    assert format_flags(0xCC0 | 0x40000, NAMES) == "GFP_KERNEL|__GFP_COMP"
    assert format_flags(0x400 | 0x8, NAMES) == "__GFP_IO|__GFP_MOVABLE"
    # Bits no name covers: "|0x..." after the names, or alone.
    assert format_flags(0x40000 | 0x100000, NAMES) == "__GFP_COMP|0x100000"
    assert format_flags(0x100000, NAMES) == "0x100000"
    assert format_flags(0, NAMES) == ""


def ext(letters, value):
    assert letters == b"Gg"
    return format_flags(value, NAMES)


def test_kprintf_follows_the_kernels_conversions():
    fmt = b"Page allocated via order %u, mask %#x(%pGg), pid %d, tgid %d (%s), ts %llu ns\n"
    assert count_conversions(fmt) == 7
    assert kprintf(fmt, [0, 0, 0, 1, 1, "swapper/0", 0], ext) == \
        "Page allocated via order 0, mask 0x0(), pid 1, tgid 1 (swapper/0), ts 0 ns\n"
    assert kprintf(fmt, [3, 0xCC0, 0xCC0, -1, 7, "a", 12], ext) == \
        "Page allocated via order 3, mask 0xcc0(GFP_KERNEL), pid -1, tgid 7 (a), ts 12 ns\n"
    assert kprintf(b"PFN 0x%lx Block %lu %%\n", [255, 0], ext) == "PFN 0xff Block 0 %\n"


def test_kprintf_escapes_strings_unless_raw():
    assert kprintf(b"(%s)", ["ev\x1bil"], ext) == "(ev\\x1bil)"
    assert kprintf(b"(%s)", ["ev\x1bil"], ext, raw=True) == "(ev\x1bil)"


def test_record_dtype_places_fields_by_offset_and_pads_to_the_entry():
    dt = record_dtype([("b", 8, "<u2"), ("a", 0, "<u8"), ("c", 12, "<i4"), ("a_alias", 0, "<u4")], 24)
    assert dt.itemsize == 24 and dt.names == ("a", "b", "c")  # the union member at 0 is left out
    raw = struct.pack("<QHxxi8x", 1, 2, -3) * 2
    rows = np.frombuffer(raw, dtype=dt)
    assert rows["a"].tolist() == [1, 1] and rows["b"].tolist() == [2, 2] and rows["c"].tolist() == [-3, -3]


def test_vectorised_kernel_format_equals_kprintf():
    fmt = b"Page allocated via order %u, mask %#x(%pGg), pid %d, tgid %d (%s), ts %llu ns\n"
    rows = [(0, 0, 1, 1, b"swapper/0", 0), (3, 0xCC0, -1, 7, b"a", 12), (10, 0x40CC8, 4194303, 2, b"kworker/1:2", 1 << 63)]
    order, mask, pid, tgid, comm, ts = (np.array([r[i] for r in rows], dtype=dt) for i, dt in
                                        enumerate((np.uint16, np.uint32, np.int32, np.int32, object, np.uint64)))
    names = [format_flags(m, NAMES).encode() for m in mask.tolist()]
    comms = list(comm)
    pieces = format_pieces(fmt, [order, mask, (np.arange(3), names), pid, tgid, (np.arange(3), comms), ts])
    want = "".join(kprintf(fmt, [int(r[0]), r[1], r[1], r[2], r[3], r[4].decode(), r[5]], ext, raw=True)
                   for r in rows)
    assert render(pieces, 3).decode() == want
    assert format_pieces(b"%5d", [order]) is None  # widths: record by record instead


def test_parse_range():
    assert parse_range("0x10-0x1f") == (16, 32)
    assert parse_range("5-5") == (5, 6)
    for bad in ("9-3", "x", "1-", "-1-2"):
        with pytest.raises(UsageError):
            parse_range(bad)
