"""Sums: pages and allocations per key, added up as whole arrays.

Design.  A snapshot, ``top`` and ``watch`` all need the same thing: group
records by some key columns and add up their pages and allocations.
:class:`Sums` does it with numpy -- factorize each key column, combine the
codes into one int64, ``np.unique`` and ``np.bincount`` -- and can merge the
sums of several chunks and roll them up to fewer keys.  Pure functions over
arrays: no kernel, no session.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from ..lazy import np

from .engine import factorize


@dataclass
class Sums:
    """Pages and allocations per group: ``keys`` a structured array of the
    distinct key combinations (sorted), ``pages`` and ``allocations`` int64
    columns beside it."""

    keys: np.ndarray
    pages: np.ndarray
    allocations: np.ndarray

    def __len__(self) -> int:
        return len(self.keys)

    @classmethod
    def of(cls, keys: np.ndarray, pages: np.ndarray, allocations: np.ndarray) -> "Sums":
        """Group rows by their key (np.unique) and add up their pages and allocations (np.bincount).

        Each key column is factorized on its own and the codes combined into
        one int64 (first column most significant, so the order is the
        structured sort's): sorting a structured array is several times
        slower than sorting plain integers.

        :param keys: structured array, one row of key columns per record
        :param pages: pages per record
        :param allocations: allocations per record (1 each, or 0 for a tail)
        :return: the sums per distinct key, keys sorted

        >>> keys = np.array([(7, 0), (3, 1), (7, 0)], dtype=[("pid", "<i4"), ("order", "<u2")])
        >>> s = Sums.of(keys, np.array([1, 2, 1]), np.array([1, 1, 1]))
        >>> s.keys.tolist(), s.pages.tolist(), s.allocations.tolist()
        ([(3, 1), (7, 0)], [2, 2], [1, 2])
        >>> s.rollup(("order",)).keys.tolist()
        [(0,), (1,)]
        """
        names = keys.dtype.names
        factors, codes, stride = [], np.zeros(len(keys), np.int64), 1
        for name in reversed(names):
            inv, u = factorize(keys[name])
            factors.append((name, u, stride))
            codes += inv.reshape(-1).astype(np.int64) * stride
            stride *= max(len(u), 1)
            if stride >= 1 << 62:  # too many combinations for one int64: sort the records themselves
                uniq, inv = np.unique(keys, return_inverse=True)
                return cls._sum(uniq, inv.reshape(-1), pages, allocations)
        if len(names) == 1:
            ucodes, inv = np.arange(stride if len(keys) else 0), codes
        else:
            ucodes, inv = np.unique(codes, return_inverse=True)
        uniq = np.empty(len(ucodes), dtype=keys.dtype)
        for name, u, st in factors:
            if len(ucodes):
                uniq[name] = u[(ucodes // st) % len(u)]
        return cls._sum(uniq, inv.reshape(-1), pages, allocations)

    @classmethod
    def _sum(cls, uniq: np.ndarray, inv: np.ndarray, pages: np.ndarray, allocations: np.ndarray) -> "Sums":
        return cls(uniq, np.bincount(inv, weights=pages, minlength=len(uniq)).astype(np.int64),
                   np.bincount(inv, weights=allocations, minlength=len(uniq)).astype(np.int64))

    @classmethod
    def merge(cls, parts: Sequence["Sums"], dtype: np.dtype) -> "Sums":
        """The sums of several parts added up (keys met in several parts merge).

        :param parts: the sums of several chunks
        :param dtype: the key dtype, for no parts at all
        :return: one :class:`Sums` over all of them
        """
        if not parts:
            return cls(np.empty(0, dtype=dtype), np.empty(0, np.int64), np.empty(0, np.int64))
        if len(parts) == 1:
            return parts[0]
        return cls.of(np.concatenate([p.keys for p in parts]), np.concatenate([p.pages for p in parts]),
                      np.concatenate([p.allocations for p in parts]))

    def rollup(self, keys: Sequence[str]) -> "Sums":
        """The same sums over fewer key columns.

        :param keys: the key columns to keep
        :return: a new :class:`Sums`
        """
        sub = np.empty(len(self.keys), dtype=np.dtype([(k, self.keys.dtype[k]) for k in keys]))
        for k in keys:
            sub[k] = self.keys[k]
        return Sums.of(sub, self.pages, self.allocations)
