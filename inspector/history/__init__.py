"""Leak hunting over time: snapshots, diff, watch and plot (issue 13).

Design.  page_owner tells which stack holds every page *now*; a leak is
which stacks keep holding more.  So the unit here is the snapshot
(:mod:`.snapshot`): page_owner's outstanding pages and allocations summed
per stack (and per node and migratetype) and per task, taken in one pass
through the existing decoder (:meth:`PageOwner.sums`), written as a small
Parquet file whose size grows with the unique stacks, not with memory, and
which says where, when and from which boot it came.  Everything that
compares moments is DuckDB SQL over such files, run in-process
(:mod:`.analysis`): ``diff`` of two moments, the trend over many and the
leak-suspect rule.  ``watch`` (:mod:`.watch`) samples a live kernel
repeatedly -- pausing a QEMU guest through a small QMP client
(:mod:`.qmp`) -- and shows the stacks that grow; ``plot`` (:mod:`.plot`)
draws them.  ``owner --format parquet`` (:mod:`.records`) writes the raw
records for those who want every row.

This module holds only the commands, thin over those modules; pyarrow,
duckdb and matplotlib are imported when a command runs, so ``--help`` and
the other commands never load them.
"""

from __future__ import annotations

import json

from ..commands import JSON, NODE, RANGE, Command, Context, Opt, missing_json, pfn_selection
from ..errors import UsageError


def _corrupt(ctx: Context, n: int) -> None:
    from ..clients.page_owner import _corrupt_note
    _corrupt_note(ctx, n)


# -- snapshot ----------------------------------------------------------------------------------------

def prepare_snapshot(a) -> None:
    if not a.output:
        raise UsageError("give the file to write with -o FILE.parquet")
    _, a.lo, a.hi = pfn_selection(None, a.prange)


def run_snapshot(ctx: Context) -> int:
    from .snapshot import take
    a, pe = ctx.args, ctx.session
    if a.prange is not None or a.node is not None:
        pe.check_range(a.lo, a.hi, a.node)
    snap = take(pe, a.lo, a.hi, a.node)
    size = snap.write(a.output)
    _corrupt(ctx, snap.meta["corrupt_records"])
    t = snap.meta["totals"]
    if a.as_json:
        ctx.echo(json.dumps({"file": a.output, "bytes": size, **{k: snap.meta[k] for k in (
            "release", "machine", "boot_id", "boot_id_source", "clock_ns", "time", "read_seconds", "totals",
            "stacks")}, "missing": missing_json(ctx)}, indent=1))
    else:
        ctx.echo(f"{a.output}: {snap.meta['stacks']} stacks, {t['stack']['pages']} pages in "
                 f"{t['stack']['allocations']} allocations ({t['stack']['rows']} stack rows, "
                 f"{t['task']['rows']} task rows), {size} bytes; {snap.meta['release']}, boot "
                 f"{snap.meta['boot_id']}, read in {snap.meta['read_seconds']:.1f} s")
    return 0


COMMANDS = [
    Command("snapshot", "Save page_owner's pages per stack and per task now, as a small Parquet file.", run_snapshot, (
        Opt(("-o", "--output"), "output", "the snapshot to write (Parquet)", metavar="FILE"),
        RANGE, NODE, JSON,
    ), description="""\b
A snapshot holds, per allocation stack and per task, the pages and
allocations page_owner shows outstanding (per node and migratetype), the
stack text and its top frame outside the allocator, and where, when and
from which boot it was taken.  Its size follows the number of unique
stacks, not memory.  DuckDB, Polars or Spark read a directory of them.
\b
Examples:
  pageext-inspect snapshot -o before.parquet                    # the running kernel
  pageext-inspect snapshot vmcore -s vmlinux -o crash.parquet
  pageext-inspect snapshot --qemu SOCKET -s vmlinux -o now.parquet
  pageext-inspect diff before.parquet now.parquet""", drgn="pageext_snapshot", force=True,
            prepare=prepare_snapshot),
]
