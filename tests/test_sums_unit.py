"""The group-by under every aggregate (``top``, snapshots, diff, the text
renderers' lookup tables): Sums.of and engine.factorize against plain Python -- a dict of sums over the rows, and numpy's
np.unique -- on columns like the records' (dense pids, sparse handles, comms),
including integer extremes where a presence table could wrap."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest

from inspector.decode.engine import factorize
from inspector.decode.sums import Sums

INT_TYPES = (np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32, np.int64, np.uint64)


@pytest.mark.parametrize("dt", INT_TYPES, ids=lambda t: np.dtype(t).name)
def test_factorize_is_np_unique_at_every_range(dt):
    info = np.iinfo(dt)
    lo_, hi_ = int(info.min), int(info.max)
    rng = np.random.default_rng(7)
    # (first value, span, rows): dense, at each end of the type, wider than the table allows, the whole type.
    for lo, span, n in ((0, 10, 100), (lo_, 50, 1000), (hi_ - 60, 60, 500), (5, 10**6, 1000), (lo_, hi_ - lo_, 64),
                        (lo_, min(255, hi_ - lo_), 64)):
        if lo + span > hi_:
            continue
        col = np.array([lo + int(x) for x in rng.integers(0, min(span, 2**62) + 1, n)], dtype=dt)
        col[0] = lo
        inv, u = factorize(col)
        ref_u, ref_inv = np.unique(col, return_inverse=True)
        assert u.dtype == col.dtype and u.tolist() == ref_u.tolist()
        assert inv.tolist() == ref_inv.reshape(-1).tolist()
        assert u[inv].tolist() == col.tolist()


def test_sums_of_is_the_sum_per_key_combination():
    rng = np.random.default_rng(11)
    n = 20000
    dtype = np.dtype([("handle", np.uint32), ("pid", np.int32), ("comm", "S16"), ("node", np.int64)])
    keys = np.empty(n, dtype)
    keys["handle"] = rng.choice(rng.integers(1, 2**32 - 1, 300, dtype=np.uint64), n).astype(np.uint32)
    keys["pid"] = rng.integers(1, 4000, n)
    keys["comm"] = rng.choice([b"sh", b"kworker/0:1", b"", b"a b", b"x" * 16], n)
    keys["node"] = rng.integers(0, 2, n)
    order = rng.integers(0, 11, n)
    pages = np.int64(1) << order
    allocs = np.ones(n, np.int64)
    ref_pages: dict = defaultdict(int)
    ref_allocs: dict = defaultdict(int)
    for row, p in zip(keys.tolist(), pages.tolist()):
        ref_pages[row] += p
        ref_allocs[row] += 1
    # Whole, and in chunks merged as PageOwner.sums() does.
    for s in (Sums.of(keys, pages, allocs),
              Sums.merge([Sums.of(keys[i:i + 3000], pages[i:i + 3000], allocs[i:i + 3000])
                          for i in range(0, n, 3000)], dtype)):
        got = keys_ = s.keys.tolist()
        assert got == sorted(ref_pages)  # sorted by the key columns, first most significant
        assert dict(zip(keys_, s.pages.tolist())) == ref_pages
        assert dict(zip(keys_, s.allocations.tolist())) == ref_allocs
    # A rollup equals summing the rows by the fewer keys directly.
    r = Sums.of(keys, pages, allocs).rollup(("pid",))
    direct: dict = defaultdict(int)
    for pid, p in zip(keys["pid"].tolist(), pages.tolist()):
        direct[pid] += p
    assert dict(zip(r.keys["pid"].tolist(), r.pages.tolist())) == direct
