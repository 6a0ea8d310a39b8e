"""Snapshots: one moment of page_owner, summed per stack and per task, as a Parquet file.

Design.  A snapshot answers "which stacks hold how many pages now" and
nothing per page, so its size grows with the number of unique stacks and
tasks, not with memory.  One pass of :meth:`PageOwner.sums` over the records
debugfs would print groups them by (handle, pid, tgid, comm, node,
migratetype) with numpy; the stack rows and the task rows are roll-ups of
that one grouping, so both come from the same read of a live kernel.  Each
handle is symbolized once.  The rows go into one Parquet file (pyarrow,
zstd), described by a JSON document in the file's key-value metadata: the
schema version, the kernel, the boot, the target's clock, where it was read
from and by which version of the tool.  DuckDB, Polars or Spark read a
directory of snapshots -- from one machine over time or from a fleet -- as
one table; :mod:`inspector.history.analysis` runs diff and trend queries
over them in-process.

File format, schema version 1 (``SCHEMA_VERSION``).  One table, one row per
group, ``kind`` telling which:

* ``kind = 'stack'``: ``handle`` (the stack depot handle), ``stack`` (the
  frames as ``%pS`` prints them, joined by newlines), ``top_frame`` (the
  function of the first frame outside the page allocator, see
  :data:`ALLOCATOR_FRAMES`), ``node``, ``migratetype`` (of the allocation's
  gfp mask, as debugfs prints it), ``pages`` (sum of 1 << order) and
  ``allocations`` (records).  Records whose stack is not in the dump are
  left out of these rows and counted in ``missing.records_hidden``.
* ``kind = 'task'``: ``pid``, ``tgid``, ``comm`` (escaped as in JSON),
  ``node``, ``migratetype``, ``pages``, ``allocations``; every record counts.
  A kernel whose records have no pid (before v5.11) or comm (before v5.18)
  leaves those columns null.

Every row also carries four constant columns, so a directory of snapshots
needs no join to tell them apart: ``time`` (UTC, the host's wall clock when
the read began), ``machine`` (the target's utsname nodename), ``release``
and ``boot_id``.  Constant columns cost a few bytes in Parquet.

The metadata (key ``pageext_inspect``, JSON): ``format``, ``schema``,
``tool_version``, ``time``/``time_ns``, ``read_seconds``, ``target`` (kind,
path), ``release``, ``machine``, ``boot_id``, ``boot_id_source``,
``boot_digest``, ``clock_ns``/``clock_end_ns`` (the target's local_clock()
when the read began and ended: :func:`target_clock_ns`), ``selection``,
``allocator_frames``, ``totals``, ``observer`` (on /proc/kcore: the pages
of the process that took the snapshot, left out of it; else null),
``corrupt_records`` and ``missing`` (the JSON ``missing`` key).  A later version keeps reading schema 1: new columns
are added, none renamed, and :func:`load` refuses only a schema newer than
it knows.

Compacted files (format ``pageext-inspect snapshots``, :func:`compact`): a
long ``watch`` folds each hour's per-sample files into one, the same
columns plus ``part`` (the sample's index in the file), with the metadata
as ``common`` (the keys every sample's metadata shares) and ``samples``
(the rest of each, in order).  :func:`file_metas` reads either kind; a
compacted file's sample N is named ``FILE#N`` where one snapshot is wanted.

The boot identity (:func:`boot_identity`): the kernel's own boot ID,
``sysctl_bootid`` in drivers/char/random.c -- what
/proc/sys/kernel/random/boot_id prints -- when it is set.  The kernel fills
it at the first read of that file (systemd's journald reads it early in
every boot; a minimal system may never), so it can be all zero.  Then the
identity is ``digest:`` and a digest of ``ptr_key`` (lib/vsprintf.c, v4.15+:
128 random bits drawn once per boot, when the RNG is ready, to hash %p
pointers; never changed after), or, without it, of VMCOREINFO's
KERNELOFFSET (the KASLR offset) and the boot's wall-clock second from the
timekeeper (``offs_real - offs_boot``, which moves if the clock is
stepped).  The digest is kept as ``boot_digest`` in every snapshot, so two
snapshots of one boot match even when boot_id was filled in between
(:func:`same_boot`).  ``ptr_key`` enters only a SHA-256, never the file.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fnmatch
import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from typing import Iterator, Optional

import drgn
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .. import __version__
from .. import kernel as k
from ..decode.owner import target_clock_ns
from ..decode.sums import Sums
from ..errors import UsageError
from ..target import own_tgid
from ..text import comm_text, escape

SCHEMA_VERSION = 1
META_KEY = b"pageext_inspect"
SNAPSHOT, RECORDS = "pageext-inspect snapshot", "pageext-inspect page_owner records"
SNAPSHOTS = "pageext-inspect snapshots"  # many, compacted into one file by a long watch (:func:`compact`)
MAGIC = b"PAR1"

# The allocators' own frames, on top of every allocation stack: page_owner,
# the page allocator, and the slab and vmalloc layers that take pages from
# it.  A stack's ``top_frame`` is the function of its first frame that
# matches none of these (fnmatch patterns on the function name, its
# "+offset/size" and " [module]" removed): the code that wanted the memory,
# so a slab page is named after whoever asked for the object.  The boot-time
# stack keeps register_early_stack, its own name.
ALLOCATOR_FRAMES = (
    "__set_page_owner", "set_page_owner",         # page_owner saves the stack here
    "post_alloc_hook", "prep_new_page",           # the page is set up for its owner
    "get_page_from_freelist", "rmqueue*", "__rmqueue*",
    "__alloc_pages*", "alloc_pages*",             # _slowpath, _direct_*, _bulk, alloc_pages_vma/_mpol, ...
    "__alloc_frozen_pages*", "alloc_frozen_pages*",  # v6.15
    "__folio_alloc*", "folio_alloc*", "vma_alloc_folio*",
    "alloc_page_interleave", "__get_free_pages", "get_zeroed_page",
    "alloc_slab_page", "allocate_slab", "new_slab", "*slab_alloc*",  # SLUB: ___slab_alloc, slab_alloc_node, ...
    "kmem_cache_alloc*", "__kmem_cache_alloc*", "kmalloc*", "__kmalloc*", "___kmalloc*",
    "__vmalloc*", "vmalloc*", "vzalloc*", "kvmalloc*", "__kvmalloc*", "vm_area_alloc_pages",
    "*_noprof",                                   # v6.10+: the real bodies behind allocation profiling's macros
)

# The columns of schema 1, in order.
SCHEMA = pa.schema([
    ("kind", pa.string()), ("handle", pa.uint32()), ("stack", pa.string()), ("top_frame", pa.string()),
    ("pid", pa.int32()), ("tgid", pa.int32()), ("comm", pa.string()),
    ("node", pa.int32()), ("migratetype", pa.string()),
    ("pages", pa.int64()), ("allocations", pa.int64()),
    ("time", pa.timestamp("us", tz="UTC")), ("machine", pa.string()), ("release", pa.string()),
    ("boot_id", pa.string()),
])


def function_of(frame: str) -> str:
    """The function name of a ``%pS`` frame ("f+0x1/0x2 [mod]" -> "f")."""
    return frame.split(" ", 1)[0].split("+", 1)[0]


def top_frame(frames) -> Optional[str]:
    """The function of the first frame outside :data:`ALLOCATOR_FRAMES` (the
    last frame's if all are inside)."""
    name = None
    for f in frames:
        name = function_of(f)
        if not any(fnmatch.fnmatchcase(name, p) for p in ALLOCATOR_FRAMES):
            return name
    return name


# -- what the target is ------------------------------------------------------------------------------

def _read(prog: drgn.Program, name: str, filename: Optional[str] = None) -> Optional[bytes]:
    o = k.obj(prog, name, filename)
    if o is None or o.absent_:
        return None
    try:
        return prog.read(o.address_, drgn.sizeof(o))
    except (drgn.FaultError, TypeError, ValueError):
        return None


def boot_identity(prog: drgn.Program) -> tuple[str, str, Optional[str]]:
    """(boot_id, its source, the boot digest) -- see the module's documentation."""
    digest = boot_digest(prog)
    raw = _read(prog, "sysctl_bootid", "random.c")
    # proc_do_uuid() generates it on the first read, testing uuid[8]
    # (generate_random_uuid() sets its variant bits, so it is never 0 after).
    if raw is not None and len(raw) == 16 and raw[8]:
        h = raw.hex()
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}", "sysctl_bootid", digest
    return (f"digest:{digest}" if digest else "unknown"), "digest", digest


def boot_digest(prog: drgn.Program) -> Optional[str]:
    h = hashlib.sha256()
    key = _read(prog, "ptr_key", "vsprintf.c")
    if key is not None and any(key):
        h.update(b"ptr_key:" + key)
    else:
        parts = []
        try:
            info = prog["VMCOREINFO"].string_().decode("latin-1")
            parts += [ln for ln in info.splitlines() if ln.startswith("KERNELOFFSET=")]
        except (LookupError, drgn.FaultError, ValueError):
            pass
        tk = k.obj(prog, "tk_core", "timekeeping.c")
        try:
            t = tk.timekeeper
            parts.append(f"boot_time_s={(t.offs_real.value_() - t.offs_boot.value_()) // 10**9}")
        except (AttributeError, LookupError, drgn.FaultError, drgn.ObjectAbsentError):
            pass
        if not parts:
            return None
        h.update("\n".join(parts).encode())
    return h.hexdigest()[:32]


def same_boot(a: dict, b: dict) -> bool:
    """Whether two snapshots' metadata name the same boot of the same kernel."""
    if a.get("release") != b.get("release") or a.get("machine") != b.get("machine"):
        return False
    if a.get("boot_id") and a.get("boot_id") == b.get("boot_id") and a.get("boot_id") != "unknown":
        return True
    return bool(a.get("boot_digest")) and a.get("boot_digest") == b.get("boot_digest")


def machine_name(prog: drgn.Program) -> Optional[str]:
    try:
        return escape(prog["init_uts_ns"].name.nodename.string_().decode("latin-1"))
    except (LookupError, drgn.FaultError, AttributeError):
        return None


def target_of(pe) -> dict:
    """{"kind", "path"} of a session's kernel: its Target's, or in a drgn
    session (no Target) what the program says: /proc/kcore, a core, or live."""
    if pe.target is not None:
        return pe.target.to_json()
    path = getattr(pe.prog, "core_dump_path", None)
    if path == "/proc/kcore":
        return {"kind": "kcore", "path": path}
    if path:
        return {"kind": "vmcore", "path": path}
    return {"kind": "live" if pe.prog.flags & drgn.ProgramFlags.IS_LIVE else "drgn", "path": None}


def target_meta(pe, fmt: str) -> dict:
    """The metadata every file of ours carries about where its data came from."""
    prog = pe.prog
    boot_id, source, digest = boot_identity(prog)
    target = target_of(pe)
    now = time.time_ns()
    return {"format": fmt, "schema": SCHEMA_VERSION, "tool_version": __version__,
            "time": _dt.datetime.fromtimestamp(now / 1e9, _dt.timezone.utc).isoformat(), "time_ns": now,
            "target": target, "release": pe.release, "machine": machine_name(prog),
            "boot_id": boot_id, "boot_id_source": source, "boot_digest": digest,
            "clock_ns": target_clock_ns(prog), "page_size": pe.geometry.page_size}


# -- taking one --------------------------------------------------------------------------------------

@dataclass
class Snapshot:
    """A snapshot in memory: its rows (a pyarrow Table in :data:`SCHEMA`) and metadata."""

    table: pa.Table
    meta: dict
    path: Optional[str] = None  # the file it was read from or written to
    notes: list = field(default_factory=list)

    @property
    def label(self) -> str:
        return self.path or f"{self.meta['target']['kind']} {self.meta['target']['path'] or ''}".strip()

    def write(self, path: str) -> int:
        """Write it to ``path`` whole (a temporary file renamed over it); its size."""
        write_table(self.table, self.meta, path)
        self.path = path
        return os.path.getsize(path)


def take(pe, lo: int = 0, hi: int = 1 << 64, node: Optional[int] = None) -> Snapshot:
    """Snapshot a session's kernel: page_owner's outstanding allocations per
    stack and per task (see the module's documentation)."""
    start = time.monotonic()
    po = pe.client("page_owner")
    meta = target_meta(pe, SNAPSHOT)
    keys = tuple(c for c in ("handle", "pid", "tgid", "comm") if c in po.has) + ("node", "migratetype")
    corrupt_before = po.corrupt_records
    fine = po.sums(keys, lo, hi, node)
    meta["clock_end_ns"] = target_clock_ns(pe.prog)
    fine, meta["observer"] = _without_observer(pe, po, fine)
    stacks = fine.rollup(("handle", "node", "migratetype"))
    tasks = fine.rollup(tuple(c for c in keys if c != "handle"))
    mt_names: dict[int, str] = {}

    def mt(v: int) -> str:
        if v not in mt_names:
            mt_names[v] = po.names.migratetype(v)
        return mt_names[v]

    lines = {h: po.stack_lines(h) for h in np.unique(stacks.keys["handle"]).tolist()}
    rows: dict[str, list] = {c: [] for c in SCHEMA.names}

    def add(kind, handle, stack, top, pid, tgid, comm, nd, m, pages, allocs):
        for c, v in zip(SCHEMA.names[:11], (kind, handle, stack, top, pid, tgid, comm, nd, m, pages, allocs)):
            rows[c].append(v)

    order = np.lexsort((stacks.keys["handle"], -stacks.pages))
    hidden = 0
    for i in order.tolist():
        h, nd, m = (int(x) for x in stacks.keys[i].tolist())
        frames = lines[h]
        if frames is None:  # the stack is not in the dump
            hidden += int(stacks.allocations[i])
            continue
        add("stack", h, "\n".join(frames), top_frame(frames), None, None, None, nd, mt(m),
            int(stacks.pages[i]), int(stacks.allocations[i]))
    pe.missing.records_hidden += hidden
    tk = tasks.keys
    for i in np.argsort(-tasks.pages, kind="stable").tolist():
        comm = tk["comm"][i] if "comm" in tk.dtype.names else None
        add("task", None, None, None,
            int(tk["pid"][i]) if "pid" in tk.dtype.names else None,
            int(tk["tgid"][i]) if "tgid" in tk.dtype.names else None,
            None if comm is None else comm_text(comm),
            int(tk["node"][i]), mt(int(tk["migratetype"][i])), int(tasks.pages[i]), int(tasks.allocations[i]))
    n = len(rows["kind"])
    rows["time"] = [meta["time_ns"] // 1000] * n
    for c in ("machine", "release", "boot_id"):
        rows[c] = [meta[c]] * n
    table = pa.Table.from_pydict(rows, schema=SCHEMA)
    meta["read_seconds"] = round(time.monotonic() - start, 3)
    meta["selection"] = {"range": None if (lo, hi) == (0, 1 << 64) else [lo, hi - 1], "node": node}
    meta["allocator_frames"] = list(ALLOCATOR_FRAMES)
    meta["totals"] = {kind: {"rows": int(sum(1 for x in rows["kind"] if x == kind)),
                             "pages": int(sum(p for x, p in zip(rows["kind"], rows["pages"]) if x == kind)),
                             "allocations": int(sum(a for x, a in zip(rows["kind"], rows["allocations"])
                                                    if x == kind))}
                      for kind in ("stack", "task")}
    meta["stacks"] = len({h for h, f in lines.items() if f is not None})
    meta["corrupt_records"] = po.corrupt_records - corrupt_before
    meta["missing"] = pe.missing.to_json()
    return Snapshot(table, meta)


def _without_observer(pe, po, fine: Sums) -> tuple[Sums, Optional[dict]]:
    """On the running kernel (/proc/kcore) the process taking the snapshot is
    one of those it counts, and its pages (its memory, the page cache of the
    files it reads, its threads': all records with its tgid) grow and shrink
    with its own work.  They are left out, and their sums kept in the
    metadata as ``observer``.  The tgid is the kernel's number for us
    (:func:`inspector.target.own_tgid`), not ``os.getpid()``, which in a
    container is the pid namespace's.  When no single task of the kernel is
    us, nothing is left out and ``observer`` says why."""
    if target_of(pe)["kind"] != "kcore" or "tgid" not in po.has:
        return fine, None
    own = own_tgid(pe.prog)
    if own is None:
        return fine, {"tgid": None, "ns_tgid": os.getpid(), "pages": 0, "allocations": 0,
                      "why": "no single task of the kernel is this process (pid, comm and start time)"}
    mine = fine.keys["tgid"] == own
    observer = {"tgid": own, "ns_tgid": os.getpid(), "pages": int(fine.pages[mine].sum()),
                "allocations": int(fine.allocations[mine].sum())}
    return Sums(fine.keys[~mine], fine.pages[~mine], fine.allocations[~mine]), observer


# -- files -------------------------------------------------------------------------------------------

@contextlib.contextmanager
def whole_file(path: str) -> Iterator[str]:
    """A temporary name beside ``path`` to write to; renamed over ``path`` when
    the block ends, removed if it fails: ``path`` is whole or untouched."""
    part = f"{path}.part{os.getpid()}"
    try:
        yield part
        os.replace(part, path)
    except BaseException:
        try:
            os.unlink(part)
        except OSError:
            pass
        raise


def write_table(table: pa.Table, meta: dict, path: str) -> None:
    """``table`` with ``meta`` as our key-value metadata, written whole to ``path``."""
    table = table.replace_schema_metadata({META_KEY: json.dumps(meta, sort_keys=True).encode()})
    with whole_file(path) as part:
        pq.write_table(table, part, compression="zstd")


def is_parquet(path: str) -> bool:
    """Whether ``path`` is a regular file that starts with Parquet's magic "PAR1"."""
    try:
        if not os.path.isfile(path):  # never open a FIFO or a device
            return False
        with open(path, "rb") as f:
            return f.read(4) == MAGIC
    except OSError:
        return False


def _read_doc(path: str) -> dict:
    """Our metadata document of a file of snapshots, checked (see :func:`read_meta`)."""
    if not os.path.exists(path):
        raise UsageError(f"{path}: no such file")
    if not is_parquet(path):
        raise UsageError(f"{path}: not a snapshot (not a Parquet file: no PAR1 magic)")
    try:
        md = pq.read_metadata(path)
    except (pa.ArrowException, OSError) as e:
        raise UsageError(f"{path}: a truncated or corrupt Parquet file ({str(e).splitlines()[0]})") from None
    raw = (md.metadata or {}).get(META_KEY)
    if raw is None:
        raise UsageError(f"{path}: a Parquet file, but not a pageext-inspect snapshot (no "
                         f"'{META_KEY.decode()}' metadata)")
    try:
        meta = json.loads(raw)
    except ValueError:
        raise UsageError(f"{path}: its '{META_KEY.decode()}' metadata is not JSON") from None
    if meta.get("format") == RECORDS:
        raise UsageError(f"{path}: a table of page_owner records (owner --format parquet), not a snapshot "
                         "(pageext-inspect snapshot writes those)")
    if meta.get("format") not in (SNAPSHOT, SNAPSHOTS) or not isinstance(meta.get("schema"), int):
        raise UsageError(f"{path}: not a pageext-inspect snapshot (format {meta.get('format')!r})")
    if meta["schema"] > SCHEMA_VERSION:
        raise UsageError(f"{path}: written by a newer pageext-inspect ({meta.get('tool_version')}, snapshot "
                         f"schema {meta['schema']}); this one ({__version__}) reads schema {SCHEMA_VERSION} "
                         "and older")
    if meta["format"] == SNAPSHOTS and not (isinstance(meta.get("samples"), list) and meta["samples"]
                                            and isinstance(meta.get("common"), dict)):
        raise UsageError(f"{path}: compacted snapshots without their list of samples")
    return meta


def file_metas(path: str) -> tuple[list[dict], bool]:
    """The metadata of every snapshot a file holds, in order, and whether the
    file is compacted (:func:`compact`: many snapshots, told apart by ``part``)."""
    doc = _read_doc(path)
    if doc["format"] == SNAPSHOTS:
        return [dict(doc["common"], **m) for m in doc["samples"]], True
    return [doc], False


def read_meta(path: str) -> dict:
    """Our metadata of a snapshot file, checked: a UsageError (one line) for
    anything that is not a snapshot this version can read (a compacted file
    of many: name one of them, ``FILE#N``)."""
    metas, compacted = file_metas(path)
    if compacted:
        raise UsageError(f"{path}: {len(metas)} snapshots of a watch, compacted into one file; name one as "
                         f"{path}#N (N from 1 to {len(metas)})")
    return metas[0]


def compact(paths: list[str], out: str) -> int:
    """Write the snapshot files ``paths`` (in order) whole as one file ``out``
    and remove them; its size.  The rows gain ``part`` (the snapshot's index
    in the file); the metadata is ``common`` (what all the snapshots' metadata
    share) and ``samples`` (the rest of each one's), format
    :data:`SNAPSHOTS`.  One file instead of many: the stack texts, the same
    in every sample, are stored once per column chunk, not once per sample."""
    tables, metas = [], []
    for j, p in enumerate(paths):
        snap = load(p)
        tables.append(snap.table.select(SCHEMA.names).append_column(
            "part", pa.array([j] * snap.table.num_rows, pa.int32())))
        metas.append(snap.meta)
    common = {k: v for k, v in metas[0].items() if all(k in m and m[k] == v for m in metas[1:])}
    doc = {"format": SNAPSHOTS, "schema": SCHEMA_VERSION, "tool_version": __version__, "common": common,
           "samples": [{k: v for k, v in m.items() if k not in common} for m in metas]}
    write_table(pa.concat_tables(tables), doc, out)
    del tables
    for p in paths:
        if os.path.abspath(p) != os.path.abspath(out):
            os.unlink(p)
    pa.default_memory_pool().release_unused()  # else the allocator keeps the hour's tables' pages (~100 MiB)
    return os.path.getsize(out)


def load(path: str) -> Snapshot:
    """A snapshot file, checked (:func:`read_meta`) and read."""
    meta = read_meta(path)
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as e:
        raise UsageError(f"{path}: a truncated or corrupt Parquet file ({str(e).splitlines()[0]})") from None
    return Snapshot(table, meta, path)
