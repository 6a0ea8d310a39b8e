"""Vectorised printf: one format, many records, formatted at numpy speed.

Decoding millions of page_owner records into the kernel's own text is
dominated by formatting, not by reading: Python's ``%`` costs about 2 µs a
record with a dozen arguments.  Here a format is a list of pieces -- literal
bytes, decimal or hex integers, strings looked up in a small table -- and a
batch of records is formatted column by column with whole-array operations:
the length of every piece of every record is computed, the records laid out
by a cumulative sum, and each column written into one byte buffer.

Strings from a table come in two sizes.  Short ones (flag names, a comm, a
migratetype) are gathered into the buffer too.  Long ones (a stack's text,
hundreds of bytes, the same for thousands of records) are not copied per
byte: the record is cut around them, and the pieces are joined by
``bytes.join`` from memoryviews of the buffer and the table's own bytes
objects, so a stack is copied once per record by memcpy.

:func:`render` returns the bytes of the whole batch; :class:`Str` and the
integer pieces say what each column is.  The result equals what
``fmt % args`` (C's printf for these conversions) gives record by record:
tests/test_vprintf.py checks that on random data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Union

import numpy as np

LONG = 96  # table strings at least this long are joined, not gathered


@dataclass
class Dec:
    """A decimal integer column (``%d``/``%u``/``%lld``...)."""

    values: np.ndarray


@dataclass
class Hex:
    """A hexadecimal integer column (``%x``; ``%#x`` with ``prefix``)."""

    values: np.ndarray
    prefix: bool = False


@dataclass
class Str:
    """A string column: ``index[i]`` selects ``table[index[i]]`` (bytes)."""

    index: np.ndarray
    table: Sequence[bytes]


Piece = Union[bytes, Dec, Hex, Str]


def _positions(lengths: list[np.ndarray], n: int) -> tuple[list[np.ndarray], np.ndarray]:
    """Start of each piece in each record of a record-major layout, and record starts."""
    total = np.zeros(n, dtype=np.int64)
    for ln in lengths:
        total += ln
    starts = np.zeros(n, dtype=np.int64)
    if n:
        np.cumsum(total[:-1], out=starts[1:])
    pos, cur = [], starts.copy()
    for ln in lengths:
        pos.append(cur.copy())
        cur += ln
    return pos, starts


_POW10 = np.array([10 ** k for k in range(20)], dtype=np.uint64)


def _dec_digits(v: np.ndarray) -> np.ndarray:
    nd = np.ones(len(v), dtype=np.int64)
    for k in range(1, 20):
        nd += v >= _POW10[k]
    return nd


def _hex_digits(v: np.ndarray) -> np.ndarray:
    nd = np.ones(len(v), dtype=np.int64)
    for k in range(1, 16):
        nd += v >= np.uint64(1 << (4 * k))
    return nd


def _as_u64(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(magnitude as uint64, negative mask) of a signed or unsigned column."""
    a = np.asarray(values)
    if a.dtype.kind == "i":
        a = a.astype(np.int64)
        neg = a < 0
        # -(a + 1) + 1 cannot overflow, even for INT64_MIN.
        mag = np.where(neg, (-(a + 1)).astype(np.uint64) + np.uint64(1), a.astype(np.uint64))
        return mag, neg
    return a.astype(np.uint64), np.zeros(len(a), dtype=bool)


def _table_arrays(table: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    lens = np.fromiter((len(t) for t in table), dtype=np.int64, count=len(table))
    offs = np.zeros(len(table), dtype=np.int64)
    if len(table):
        np.cumsum(lens[:-1], out=offs[1:])
    pool = np.frombuffer(b"".join(table), dtype=np.uint8) if len(table) else np.zeros(0, np.uint8)
    return pool, offs, lens


def _fill(out: np.ndarray, pos: np.ndarray, piece: Piece, info) -> None:
    if isinstance(piece, bytes):
        if piece:
            lit = np.frombuffer(piece, dtype=np.uint8)
            out[pos[:, None] + np.arange(len(lit))] = lit
        return
    if isinstance(piece, Dec):
        mag, neg, nd = info
        if neg.any():
            out[pos[neg]] = ord("-")
        start = pos + neg
        v = mag.copy()
        for k in range(int(nd.max()) if len(nd) else 0):
            live = nd > k
            digit = (v % np.uint64(10)).astype(np.uint8) + 48
            idx = (start + nd - 1 - k)[live]
            out[idx] = digit[live]
            v //= np.uint64(10)
        return
    if isinstance(piece, Hex):
        v, nd = info
        start = pos
        if piece.prefix:
            out[pos] = ord("0")
            out[pos + 1] = ord("x")
            start = pos + 2
        hexd = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
        w = v.copy()
        for k in range(int(nd.max()) if len(nd) else 0):
            live = nd > k
            out[(start + nd - 1 - k)[live]] = hexd[(w & np.uint64(15)).astype(np.int64)][live]
            w >>= np.uint64(4)
        return
    pool, offs, lens = info
    seg = lens[piece.index]
    total = int(seg.sum())
    if not total:
        return
    rec_start = np.zeros(len(seg), dtype=np.int64)
    np.cumsum(seg[:-1], out=rec_start[1:])
    within = np.arange(total, dtype=np.int64) - np.repeat(rec_start, seg)
    out[np.repeat(pos, seg) + within] = pool[np.repeat(offs[piece.index], seg) + within]


def _lengths(piece: Piece, n: int):
    if isinstance(piece, bytes):
        return np.full(n, len(piece), dtype=np.int64), None
    if isinstance(piece, Dec):
        mag, neg = _as_u64(piece.values)
        nd = _dec_digits(mag)
        return nd + neg, (mag, neg, nd)
    if isinstance(piece, Hex):
        v = np.asarray(piece.values).astype(np.uint64)
        nd = _hex_digits(v)
        return nd + (2 if piece.prefix else 0), (v, nd)
    pool, offs, lens = _table_arrays(piece.table)
    return lens[np.asarray(piece.index, dtype=np.int64)], (pool, offs, lens)


def _render_run(pieces: list[Piece], n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Buffer and per-record [start, end) of a run of gathered pieces."""
    lens, infos = zip(*(_lengths(p, n) for p in pieces)) if pieces else ((), ())
    pos, starts = _positions(list(lens), n)
    total = int(sum(int(ln.sum()) for ln in lens))
    out = np.empty(total, dtype=np.uint8)
    for p, ps, info in zip(pieces, pos, infos):
        _fill(out, ps, p, info)
    ends = starts + (sum(lens) if lens else 0)
    return out, starts, ends


def render(pieces: list[Piece], n: int) -> bytes:
    """The bytes of ``n`` records, each the concatenation of ``pieces``."""
    if n == 0:
        return b""
    # Cut the format at long-string columns: runs of gathered pieces between them.
    runs: list[list[Piece]] = [[]]
    longs: list[Str] = []
    for p in pieces:
        if isinstance(p, Str) and p.table and max(len(t) for t in p.table) >= LONG:
            longs.append(p)
            runs.append([])
        else:
            runs[-1].append(p)
    if not longs:
        return _render_run(runs[0], n)[0].tobytes()
    columns: list[list] = []
    for k, run in enumerate(runs):
        if run:  # none before a leading, between adjacent or after a trailing long column
            buf, starts, ends = _render_run(run, n)
            # Slices of the buffer, one per record, by map() (no bytecode per record).
            columns.append(list(map(memoryview(buf).__getitem__, map(slice, starts.tolist(), ends.tolist()))))
        if k < len(longs):
            columns.append(list(map(longs[k].table.__getitem__, np.asarray(longs[k].index).tolist())))
    seq: list = [None] * (n * len(columns))
    for j, col in enumerate(columns):
        seq[j::len(columns)] = col
    return b"".join(seq)
