"""Vectorised printf: one format, many records, formatted at numpy speed.

Decoding millions of page_owner records into the kernel's own text is
dominated by formatting, not by reading: Python's ``%`` costs about 2 µs a
record with a dozen arguments.  Here a format is a list of pieces -- literal
bytes, decimal or hex integers, strings looked up in a small table -- and a
batch of records is formatted column by column with whole-array operations.

Short pieces are laid out in a padded grid, one row per record and a fixed
band of columns per piece (a literal broadcast into its band, a number's
digits right-aligned in its band, a table string's bytes left-aligned), with
a mask of the bytes that count; one boolean compaction of the grid gives the
records back to back, each closed by a NUL, and one ``bytes.split`` gives
each record's bytes.  Long table strings (a stack's text: hundreds of bytes,
the same for thousands of records) are not copied into the grid: the record
is cut around them and the pieces are joined by ``bytes.join``, so a stack
is copied once per record by memcpy.

:func:`render` returns the bytes of the whole batch; :class:`Dec`,
:class:`Hex` and :class:`Str` say what each column is.  The result equals
what ``fmt % args`` (C's printf for these conversions) gives record by
record: tests/test_vprintf.py checks that on random data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Union

from .lazy import np

LONG = 96  # table strings at least this long are joined, not laid out in the grid
SLICE = 8192  # records formatted at a time: bounds the grid's memory


@dataclass
class Dec:
    """A decimal integer column (``%d``/``%u``/``%lld``...)."""

    values: "np.ndarray"


@dataclass
class Hex:
    """A hexadecimal integer column (``%x``; ``%#x`` with ``prefix``)."""

    values: "np.ndarray"
    prefix: bool = False


@dataclass
class Str:
    """A string column: ``index[i]`` selects ``table[index[i]]`` (bytes)."""

    index: "np.ndarray"
    table: Sequence[bytes]


Piece = Union[bytes, Dec, Hex, Str]


def _as_u64(values) -> tuple:
    """(magnitude as uint64, negative mask or None) of a signed or unsigned column."""
    a = np.asarray(values)
    if a.dtype.kind == "i":
        a = a.astype(np.int64)
        neg = a < 0
        if not neg.any():
            return a.astype(np.uint64), None
        # -(a + 1) + 1 cannot overflow, even for INT64_MIN.
        return np.where(neg, (-(a + 1)).astype(np.uint64) + np.uint64(1), a.astype(np.uint64)), neg
    return a.astype(np.uint64), None


_POWERS: dict = {}


def _digit_count(v, base: int):
    """Digits of each uint64 in ``v``: 1 + how many powers of ``base`` are <= it
    (a binary search per value, not a pass over the column per power)."""
    powers = _POWERS.get(base)
    if powers is None:
        powers = np.array([base ** k for k in range(1, 20) if base ** k < 1 << 64], dtype=np.uint64)
        _POWERS[base] = powers
    return np.searchsorted(powers, v, side="right").astype(np.int64) + 1


_HEXDIGITS = b"0123456789abcdef"
_TABLES: dict = {}


def _quads(base: int):
    """(base**4 rows of the 4-digit text of each value, zero-padded) as uint8."""
    t = _TABLES.get(base)
    if t is None:
        v = np.arange(base ** 4, dtype=np.int64)
        digits = np.frombuffer(_HEXDIGITS, dtype=np.uint8)
        t = np.stack([digits[(v // base ** (3 - j)) % base] for j in range(4)], axis=1)
        _TABLES[base] = t
    return t


class _Band:
    """One short piece's band of columns in the grid: its width, then
    ``fill(grid_slice, mask_slice)`` writes its bytes (and where a record's
    text is shorter than the band, clears the mask)."""

    def __init__(self, piece: Piece, n: int):
        self.piece, self.n = piece, n
        if isinstance(piece, bytes):
            self.width = len(piece)
        elif isinstance(piece, (Dec, Hex)):
            if isinstance(piece, Dec):
                self.mag, self.neg = _as_u64(piece.values)
                self.base, self.prefix = 10, b""
            else:
                self.mag, self.neg = np.asarray(piece.values).astype(np.uint64), None
                self.base, self.prefix = 16, b"0x" if piece.prefix else b""
            self.nd = _digit_count(self.mag, self.base)
            self.digits = int(self.nd.max()) if n else 1
            self.width = (1 if self.neg is not None else 0) + len(self.prefix) + self.digits
        else:
            table = list(piece.table)
            self.lens = np.fromiter((len(t) for t in table), dtype=np.int64, count=len(table))
            self.width = int(self.lens.max()) if table else 0
            self.padded = np.zeros((max(len(table), 1), max(self.width, 1)), dtype=np.uint8)
            for i, t in enumerate(table):
                if t:
                    self.padded[i, :len(t)] = np.frombuffer(t, dtype=np.uint8)

    def fill(self, grid, mask) -> None:
        piece, n, w = self.piece, self.n, self.width
        if isinstance(piece, bytes):
            grid[:] = np.frombuffer(piece, dtype=np.uint8)
            return
        if isinstance(piece, Str):
            idx = np.asarray(piece.index, dtype=np.int64)
            grid[:] = self.padded[idx, :w]
            lens = self.lens[idx]
            if (lens != w).any():
                mask[:] = np.arange(w)[None, :] < lens[:, None]
            return
        # Right-aligned digits, four at a time from a table of every 4-digit text.
        digits, base = self.digits, self.base
        quads = -(-digits // 4)
        table, step = _quads(base), np.uint64(base ** 4)
        v = self.mag.copy()
        out = np.empty((n, 4 * quads), dtype=np.uint8)
        for q in range(quads):
            out[:, 4 * (quads - 1 - q):4 * (quads - q)] = table[(v % step).astype(np.int64)]
            v //= step
        grid[:, w - digits:] = out[:, 4 * quads - digits:]
        neg = self.neg
        total = self.nd + len(self.prefix) + (neg.astype(np.int64) if neg is not None else 0)
        if (total != w).any():
            mask[:] = np.arange(w)[None, :] >= (w - total)[:, None]
        start = w - total
        if self.prefix:
            at = start + (neg.astype(np.int64) if neg is not None else 0)
            rows = np.arange(n)
            grid[rows, at] = ord("0")
            grid[rows, at + 1] = ord("x")
        if neg is not None:
            rows = np.flatnonzero(neg)
            grid[rows, start[rows]] = ord("-")


def _render_run(pieces: list[Piece], n: int) -> list[bytes]:
    """Each record's bytes for a run of short pieces (a list of n bytes)."""
    bands = [_Band(p, n) for p in pieces]
    width = sum(b.width for b in bands) + 1
    grid = np.empty((n, width), dtype=np.uint8)
    mask = np.ones((n, width), dtype=bool)
    col = 0
    for b in bands:
        if b.width:
            b.fill(grid[:, col:col + b.width], mask[:, col:col + b.width])
        col += b.width
    grid[:, -1] = 0  # each record closed by a NUL, for the split below
    if mask.all():
        return grid.tobytes().split(b"\0")[:n]
    return grid[mask].tobytes().split(b"\0")[:n]


def _slice(p: Piece, a: int, b: int) -> Piece:
    if isinstance(p, Dec):
        return Dec(np.asarray(p.values)[a:b])
    if isinstance(p, Hex):
        return Hex(np.asarray(p.values)[a:b], p.prefix)
    if isinstance(p, Str):
        return Str(np.asarray(p.index)[a:b], p.table)
    return p


def _nul_free(pieces: list[Piece]) -> bool:
    for p in pieces:
        if isinstance(p, bytes) and b"\0" in p:
            return False
        if isinstance(p, Str) and any(b"\0" in t for t in p.table):
            return False
    return True


def render(pieces: list[Piece], n: int) -> bytes:
    """The bytes of ``n`` records, each the concatenation of ``pieces``.

    (Strings may not hold NUL bytes: the kernel's %s stops at the first.)"""
    if n > SLICE:
        return b"".join(render([_slice(p, a, a + SLICE) for p in pieces], min(SLICE, n - a))
                        for a in range(0, n, SLICE))
    if n == 0:
        return b""
    runs: list[list[Piece]] = [[]]
    longs: list[Str] = []
    for p in pieces:
        if isinstance(p, Str) and p.table and max(len(t) for t in p.table) >= LONG:
            longs.append(p)
            runs.append([])
        else:
            runs[-1].append(p)
    if not _nul_free(pieces):
        raise ValueError("vprintf: a string holds a NUL byte")
    columns: list[list[bytes]] = []
    for k, run in enumerate(runs):
        columns.append(_render_run(run, n) if run else [b""] * n)
        if k < len(longs):
            table = np.empty(len(longs[k].table), dtype=object)
            table[:] = list(longs[k].table)
            columns.append(table[np.asarray(longs[k].index, dtype=np.int64)].tolist())
    if len(columns) == 1:
        return b"".join(columns[0])
    seq: list = [None] * (n * len(columns))
    for j, col in enumerate(columns):
        seq[j::len(columns)] = col
    return b"".join(seq)
