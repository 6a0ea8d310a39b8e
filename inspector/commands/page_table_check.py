"""``table-check``: page_table_check's per-page anon/file map counts, summed or listed.

Thin over :class:`inspector.clients.page_table_check.PageTableCheck`.
"""

from __future__ import annotations

import csv

from ..lazy import np
from ..jsonout import dumps
from .base import JSON, NODE, RANGE, Command, Context, Opt, missing_json, pfn_selection

def run_table_check(ctx: Context) -> int:
    a = ctx.args
    _, lo, hi = pfn_selection(None, a.prange)
    pe = ctx.session
    if a.prange is not None or a.node is not None:
        pe.check_range(lo, hi, a.node)
    ptc = pe.client("page_table_check")
    if a.list_:
        _list_counts(ctx, ptc, lo, hi)
        return 0
    s = ptc.summary(lo, hi, a.node)
    if a.as_json:
        ctx.echo(dumps(s.to_json() | {"missing": missing_json(ctx)}))
    else:
        bad = len(s.inconsistent)
        ctx.echo(f"pages scanned        {s.pages}")
        ctx.echo(f"anon-mapped pages    {s.anon_pages} ({s.anon_mappings} mappings)")
        ctx.echo(f"file-mapped pages    {s.file_pages} ({s.file_mappings} mappings)")
        ctx.echo(f"inconsistent pages   {bad} (both counts {len(s.both)}, negative {len(s.negative)}, "
                 f"anon count on !PageAnon {len(s.not_anon)}, file count on PageAnon {len(s.anon_file)})")
        ctx.echo(f"vs rmap _mapcount    {len(s.mapcount_mismatch)} mismatches in {s.mapcount_checked} "
                 "order-0 pages" + (f"; {s.unchecked} pages not compared (struct page unreadable)"
                                    if s.unchecked else ""))
    return 1 if s.inconsistent else 0


def _list_counts(ctx: Context, ptc, lo: int, hi: int) -> None:
    """``--list``: CSV of every page with a non-zero count."""
    w = csv.writer(ctx.out, lineterminator="\n")
    w.writerow(("pfn", "anon_map_count", "file_map_count", "mapcount"))
    for pfn, anon, file, p, pknown in ptc.chunks(lo, hi, ctx.args.node):
        hit = np.flatnonzero((anon != 0) | (file != 0))
        mc = p["_mapcount"].astype(np.int64) + 1 if p is not None else None
        for i in hit.tolist():
            w.writerow((int(pfn[i]), int(anon[i]), int(file[i]),
                        "" if mc is None or not pknown[i] else int(mc[i])))


COMMANDS = [
    Command("table-check", "Summarise page_table_check's per-page anon/file map counts.", run_table_check, (
        RANGE, NODE, Opt(("--list",), "list_", "CSV of every page with a non-zero count", bool, False), JSON,
    ), description="""\b
Examples:
  pageext-inspect table-check vmcore -s vmlinux
  pageext-inspect table-check --qemu SOCKET -s vmlinux --list > counts.csv""",
        drgn="page_table_check", force=True),
]
