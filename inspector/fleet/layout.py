"""The fleet's directory layout, and the scan that decides which files an engine reads.

Design.  A fleet directory holds snapshot files in hive partitions::

    FLEET/host=web-3/kernel=6.12.118/date=2026-12-06/web-3-20261206T093112.123456Z.parquet

``host`` is the snapshot's machine (utsname nodename), ``kernel`` its
release, ``date`` the UTC day it was taken.  Values are written
percent-encoded outside ``[A-Za-z0-9._+-]`` (as Spark and Hive escape
partition values), so a nodename with "/" or "=" stays one directory level.
The partitions are for pruning only -- ours (:func:`scan`, before a footer
is read) and any other engine's (``spark.read.parquet(FLEET)``,
``read_parquet('FLEET/**/*.parquet', hive_partitioning = true)``) -- the
rows themselves carry ``machine``, ``release`` and ``time``, which is what
the questions use: a file moved to the wrong directory still answers for
its own host.

The schema.  Every file carries its schema version in its key-value
metadata (key ``pageext_inspect``, ``"schema": N``, see
:mod:`inspector.history.snapshot`); :data:`COLUMNS` maps each version this
tool reads onto the fleet view's columns, one SQL expression per column,
the same text for every engine.  The view adds ``schema_version`` (the
file's), so a query can tell the versions apart.  A fleet mixes tool
versions: files of an older known schema are adapted by their mapping; a
file of a newer schema than this tool knows is named and left out (the
answer is partial, exit 3), never guessed at.  ``stack_id`` and ``frames``
(the stack without the ``+0x1e7/0x65d`` offsets, so one function path is
one stack across builds and kernels) are computed by the engine's view
(:mod:`.engines`), whose regular-expression calls differ.
"""

from __future__ import annotations

import datetime as _dt
import os
import re
import urllib.parse
from dataclasses import dataclass, field
from typing import Optional

from ..errors import UsageError

# The fleet view's columns, per schema version of the files: name -> SQL expression.
COLUMNS = {
    1: {"kind": "kind", "host": "machine", "kernel": "release", "boot_id": "boot_id", "time": "time",
        "stack": "stack", "top_frame": "top_frame", "pages": "pages", "allocations": "allocations"},
}
SAFE = "._+-"


def quote(value: str) -> str:
    """A partition value, percent-encoded outside [A-Za-z0-9._+-]."""
    return urllib.parse.quote(value or "unknown", safe=SAFE)


def partition_dir(root: str, meta: dict) -> str:
    """Where a snapshot with metadata ``meta`` goes in the fleet under ``root``."""
    day = _dt.datetime.fromtimestamp(meta["time_ns"] / 1e9, _dt.timezone.utc).strftime("%Y-%m-%d")
    return os.path.join(root, f"host={quote(meta.get('machine'))}", f"kernel={quote(meta.get('release'))}",
                        f"date={day}")


def file_path(root: str, meta: dict) -> str:
    """The snapshot's own path in the fleet: its partition, then HOST-TIME.parquet."""
    stamp = _dt.datetime.fromtimestamp(meta["time_ns"] / 1e9, _dt.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    return os.path.join(partition_dir(root, meta), f"{quote(meta.get('machine'))}-{stamp}.parquet")


def place(root: str, meta: dict) -> str:
    """The snapshot's path in the fleet (:func:`file_path`), its directories made."""
    path = file_path(root, meta)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    return path


def write(root: str, table, meta: dict) -> str:
    """Write one snapshot (its rows and metadata) into the fleet; its path."""
    from ..history.snapshot import write_table
    path = place(root, meta)
    write_table(table, meta, path)
    return path


def partitions(path: str, root: str) -> dict:
    """The hive partitions (key=value directories) of ``path`` below ``root``, decoded."""
    rel = os.path.relpath(os.path.dirname(path), root)
    out = {}
    for part in rel.split(os.sep):
        key, eq, value = part.partition("=")
        if eq:
            out[key] = urllib.parse.unquote(value)
    return out


@dataclass
class Scan:
    """The files an engine is to read, by schema version, and those left out (path, why)."""

    root: str
    groups: dict = field(default_factory=dict)  # schema version -> [paths]
    skipped: list = field(default_factory=list)
    pruned: int = 0  # files the partition filters left out unread

    @property
    def files(self) -> int:
        return sum(len(v) for v in self.groups.values())


def _footer(path: str) -> tuple[Optional[int], Optional[str]]:
    """(schema version, None) of a snapshot file, or (None, why it is left
    out): the checks of :func:`inspector.history.snapshot.read_meta` (magic,
    footer, our metadata, format, a schema not newer than ours), on the
    footer only, plus a schema :data:`COLUMNS` has a mapping for."""
    from ..history.snapshot import _read_doc
    try:
        meta = _read_doc(path)
    except UsageError as e:
        return None, str(e).removeprefix(f"{path}: ")
    if meta["schema"] not in COLUMNS:
        return None, (f"snapshot schema {meta['schema']}; this one reads schema "
                      f"{', '.join(map(str, sorted(COLUMNS)))}")
    return meta["schema"], None


def scan(root: str, host: Optional[str] = None, kernel: Optional[str] = None, since: Optional[str] = None,
         until: Optional[str] = None) -> Scan:
    """Every snapshot file under ``root`` that the filters keep, by schema
    version; the others that look like ours (``*.parquet``) but cannot be
    read are in ``skipped`` with the reason.  ``since``/``until`` are UTC
    days (YYYY-MM-DD, inclusive), compared with the ``date`` partition."""
    if not os.path.isdir(root):
        raise UsageError(f"{root}: not a directory (a fleet is a directory of snapshots, "
                         "host=/kernel=/date= partitions)")
    for name, day in (("--since", since), ("--until", until)):
        if day is not None and not re.fullmatch(r"\d{4}-\d{2}-\d{2}", day):
            raise UsageError(f"bad {name} {day!r}: a UTC day, YYYY-MM-DD")
    out = Scan(root)
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            if not name.endswith(".parquet"):
                continue
            path = os.path.join(dirpath, name)
            p = partitions(path, root)
            if ((host is not None and p.get("host", host) != host)
                    or (kernel is not None and p.get("kernel", kernel) != kernel)
                    or (since is not None and p.get("date", since) < since)
                    or (until is not None and p.get("date", until) > until)):
                out.pruned += 1
                continue
            version, why = _footer(path)
            if why:
                out.skipped.append((path, why))
            else:
                out.groups.setdefault(version, []).append(path)
    if not out.files:
        what = f"{out.root}: no snapshot to read"
        if out.skipped:
            what += f" ({len(out.skipped)} file(s) skipped, first: {out.skipped[0][0]}: {out.skipped[0][1]})"
        elif out.pruned:
            what += f" (the filters left out all {out.pruned})"
        raise UsageError(what)
    return out
