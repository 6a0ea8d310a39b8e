"""The kernel printf pieces the page_owner decoder relies on, checked against C semantics.

Expected strings follow lib/vsprintf.c by hand (format_flags(), number() with
SPECIAL|SMALL for %#x, %s); the byte-for-byte check against a real kernel is
tests/test_vm_owner.py.
"""

from __future__ import annotations

import struct

import pytest

from inspector.clients.cli import parse_range
from inspector.clients.kformat import count_conversions, format_flags, kprintf
from inspector.clients.page_owner import build_struct
from inspector.target import TargetError

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


def test_build_struct_places_fields_by_offset_and_pads_to_the_entry():
    st, names = build_struct([("b", 8, "H"), ("a", 0, "Q"), ("c", 12, "i")], 24)
    assert st.size == 24 and names == ["a", "b", "c"]
    raw = struct.pack("<QHxxi8x", 1, 2, -3)
    assert st.unpack(raw) == (1, 2, -3)


def test_parse_range():
    assert parse_range("0x10-0x1f") == (16, 32)
    assert parse_range("5-5") == (5, 6)
    for bad in ("9-3", "x", "1-", "-1-2"):
        with pytest.raises(TargetError):
            parse_range(bad)
