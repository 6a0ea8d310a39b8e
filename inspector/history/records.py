"""``owner --format parquet``: every selected page_owner record as one Parquet table.

Design.  For users who want the raw table rather than a snapshot's sums:
one row per record, the fields ``owner --json`` has, typed (integers as
integers, null where the kernel has no such field or the value is corrupt),
written a batch (one table chunk) at a time as one row group each, so
memory holds one chunk.  Text columns -- names from the target (gfp flags,
migratetypes, migrate reasons), stacks, comms, memcgs -- are computed once
per distinct value (:func:`~inspector.decode.engine.lookup_table`) and
spread over the rows by pyarrow's ``take``: no per-record Python objects.
A stack is its frames joined by newlines, as in a snapshot.  The file's
metadata is a snapshot's (:func:`~inspector.history.snapshot.target_meta`)
with the format ``pageext-inspect page_owner records``, so
:func:`~inspector.history.snapshot.read_meta` tells the two apart.
"""

from __future__ import annotations

import json
import os
from typing import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..decode.engine import lookup_table
from ..decode.owner import C_ORDER, C_PID, C_REASON, C_TS, CORRUPT_NAMES
from ..text import comm_text
from .snapshot import META_KEY, RECORDS, target_meta, whole_file

SCHEMA = pa.schema([
    ("pfn", pa.int64()), ("node", pa.int32()), ("state", pa.string()), ("order", pa.int16()),
    ("gfp_mask", pa.uint32()), ("gfp_flags", pa.string()), ("migratetype", pa.string()),
    ("pageblock_migratetype", pa.string()), ("pid", pa.int32()), ("tgid", pa.int32()), ("comm", pa.string()),
    ("ts_nsec", pa.uint64()), ("free_ts_nsec", pa.uint64()), ("free_pid", pa.int32()), ("free_tgid", pa.int32()),
    ("last_migrate_reason", pa.string()), ("handle", pa.uint32()), ("free_handle", pa.uint32()),
    ("alloc_stack", pa.string()), ("free_stack", pa.string()), ("memcg", pa.string()),
    ("corrupt", pa.list_(pa.string())),
    ("suspect", pa.bool_()),  # from a table a failed decode check points at (decoded with --force)
])


def _text(values: np.ndarray, fn) -> pa.Array:
    """fn(v) for each value, computed once per distinct value."""
    idx, table = lookup_table(values, fn)
    return pa.array(table, pa.string()).take(pa.array(idx))


def batch_table(po, b) -> pa.Table:
    """One :class:`~inspector.decode.owner.Batch` as rows of :data:`SCHEMA`."""
    e, n = b.e, len(b)
    cols: dict[str, pa.Array] = {}

    def num(name: str, bad: int = 0) -> pa.Array:
        typ = SCHEMA.field(name).type
        if name not in po.has:
            return pa.nulls(n, typ)
        mask = (b.corrupt & bad) != 0 if bad else None
        return pa.array(e[name].astype(typ.to_pandas_dtype()), typ, mask=mask)

    def stack(h: int):
        lines = po.stack_lines(h)
        return None if lines is None else "\n".join(lines)

    gfp = e["gfp_mask"].astype(np.int64)
    cols["pfn"] = pa.array(b.pfn, pa.int64())
    cols["node"] = pa.array(np.full(n, b.table.node, dtype=np.int32))
    cols["state"] = _text((e["ext_flags"] & po.bit_allocated) != 0, lambda v: "allocated" if v else "freed")
    cols["order"] = num("order", C_ORDER)
    cols["gfp_mask"] = num("gfp_mask")
    cols["gfp_flags"] = _text(gfp, po.names.gfp)
    cols["migratetype"] = _text(po.gfp_migratetype(gfp), po.names.migratetype)
    cols["pageblock_migratetype"] = _text(b.block_mt, lambda v: None if v < 0 else po.names.migratetype(v))
    cols["pid"], cols["tgid"] = num("pid", C_PID), num("tgid", C_PID)
    cols["comm"] = (_text(e["comm"], comm_text)
                    if "comm" in po.has else pa.nulls(n, pa.string()))
    cols["ts_nsec"] = num("ts_nsec", C_TS)
    for name in ("free_ts_nsec", "free_pid", "free_tgid"):
        cols[name] = num(name)
    if "last_migrate_reason" in po.has:
        r = np.where(b.corrupt & C_REASON, -1, e["last_migrate_reason"].astype(np.int64))
        cols["last_migrate_reason"] = _text(r, po.migrated_reason)
    else:
        cols["last_migrate_reason"] = pa.nulls(n, pa.string())
    cols["handle"], cols["free_handle"] = num("handle"), num("free_handle")
    cols["alloc_stack"] = _text(e["handle"].astype(np.int64), stack)
    cols["free_stack"] = (_text(e["free_handle"].astype(np.int64), stack) if "free_handle" in po.has
                          else pa.nulls(n, pa.string()))
    if b.p is not None and "memcg_data" in b.p.dtype.names:
        cols["memcg"] = _text(b.p["memcg_data"].astype(np.uint64), po.memcg_name)
    else:
        cols["memcg"] = pa.nulls(n, pa.string())
    idx, table = lookup_table(b.corrupt, lambda v: [name for bit, name in CORRUPT_NAMES.items() if v & bit])
    cols["corrupt"] = pa.array(table, SCHEMA.field("corrupt").type).take(pa.array(idx))
    cols["suspect"] = pa.array(np.full(n, bool(b.suspect)), pa.bool_())
    return pa.Table.from_arrays([cols[f.name] for f in SCHEMA], schema=SCHEMA)


def write(pe, batches: Iterable, path: str) -> tuple[int, int]:
    """Every record of ``batches`` into ``path`` (written whole, then renamed):
    (records, bytes)."""
    po = pe.client("page_owner")
    meta = target_meta(pe, RECORDS)
    rows = 0
    with whole_file(path) as part, pq.ParquetWriter(part, SCHEMA, compression="zstd") as w:
        for b in batches:
            w.write_table(batch_table(po, b))
            rows += len(b)
        meta["records"] = rows
        meta["missing"] = pe.missing.to_json()
        w.add_key_value_metadata({META_KEY: json.dumps(meta, sort_keys=True).encode()})
    return rows, os.path.getsize(path)
