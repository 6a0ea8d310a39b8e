"""The vectorised printf equals Python's (and C's) printf, record for record.

inspector.vprintf formats whole columns at once; here every kind of piece --
literals, signed and unsigned decimals at their extremes, hex with and
without 0x, short and long table strings (long ones are joined, not
gathered) -- is checked against ``%`` on random data.
"""

from __future__ import annotations

import numpy as np

from inspector.vprintf import Dec, Hex, Str, render


def test_render_equals_percent_formatting_on_random_columns():
    rng = np.random.default_rng(7)
    n = 5000
    a = rng.integers(-2**63, 2**63 - 1, n, dtype=np.int64)
    a[:5] = [0, -1, 2**63 - 1, -2**63, 9]
    u = rng.integers(0, 2**64 - 1, n, dtype=np.uint64)
    u[:3] = [0, 1, 2**64 - 1]
    short = [bytes(rng.integers(32, 127, int(k)).astype(np.uint8)) for k in rng.integers(0, 40, 9)] + [b""]
    si = rng.integers(0, len(short), n)
    long = [b"L" * 200, b" frame+0x1/0x2\n" * 16, b"M" * 97]
    li = rng.integers(0, len(long), n)
    pieces = [b"order ", Dec(a), b", mask ", Hex(u, True), b"(", Str(si, short), b") pfn 0x", Hex(u), b"\n",
              Str(li, long), b"end ", Dec(u), b"\n"]
    want = b"".join(b"order %d, mask %#x(%s) pfn 0x%x\n%send %d\n"
                    % (int(a[i]), int(u[i]), short[si[i]], int(u[i]), long[li[i]], int(u[i])) for i in range(n))
    assert render(pieces, n) == want


def test_render_of_nothing_and_of_literals_only():
    assert render([b"x", Dec(np.zeros(0, dtype=np.int64))], 0) == b""
    assert render([b"ab", b"c"], 3) == b"abcabcabc"


def test_long_columns_first_last_and_side_by_side():
    """Long table strings at the start, at the end and next to each other:
    no gathered run between them, so none is cut out per record."""
    rng = np.random.default_rng(11)
    n = 700
    long = [b"S" * 120 + b"\n", b" frame+0x1/0x2\n" * 9, b"T" * 96]
    i, j, k = (rng.integers(0, len(long), n) for _ in range(3))
    d = rng.integers(-10**6, 10**6, n, dtype=np.int64)
    pieces = [Str(i, long), Str(j, long), b" pid ", Dec(d), Str(k, long)]
    want = b"".join(long[i[r]] + long[j[r]] + b" pid %d" % int(d[r]) + long[k[r]] for r in range(n))
    assert render(pieces, n) == want
    assert render([Str(i, long)], n) == b"".join(long[x] for x in i.tolist())
