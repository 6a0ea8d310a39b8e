"""``alloc-tags``: pages per allocation tag, beside the kernel's counters.

Thin over :class:`inspector.clients.alloc_tag.AllocTags`: one pfn's tag, or
the scan's rows (:func:`~inspector.clients.alloc_tag.alloc_tag_rows`) and
its summary, as text or JSON.
"""

from __future__ import annotations


from ..clients.alloc_tag import (ASSUMED, CLIENT_NAME, COMPOUND, NEXT_TAGGED, PAGE_OWNER, AllocTags, Scan,
                                alloc_tag_rows)
from ..errors import UsageError
from ..text import escape
from ..jsonout import dumps
from .base import LIMIT, NODE, PFN, RANGE, Command, Context, Opt, missing_json, pfn_selection

def pfn_text(d: dict) -> str:
    if d["state"] == "none":
        if d["head_pfn"] is not None and d["head_pfn"] != d["pfn"]:
            return (f"pfn {d['pfn']:#x}: no tag of its own; tail page of compound page {d['head_pfn']:#x}"
                    + (f", tagged {escape(d['tag'])}" if d["tag"] else ", which has no tag either"))
        return (f"pfn {d['pfn']:#x}: no tag (free, a later page of a multi-page allocation, or allocated before "
                "page_ext was set up or while profiling was off)")
    if d["state"] == "empty":
        return f"pfn {d['pfn']:#x}: CODETAG_EMPTY (deliberately untagged)"
    why = {COMPOUND: "the compound page's folio order", PAGE_OWNER: "its page_owner record",
           NEXT_TAGGED: "the next page starts another allocation"}
    order = "order unknown (counted as 0)" if d["order_source"] == ASSUMED else \
        f"order {d['order']} ({why.get(d['order_source'], d['order_source'])})"
    return f"pfn {d['pfn']:#x}: {escape(d['tag'])}  {order}, {d['bytes']} bytes"


def prepare_alloc_tags(a) -> None:
    """--min-bytes, and --threshold, its old name (bytes here, pages in top's --min-pages: issue 20)."""
    if a.threshold is not None:
        if a.min_bytes:
            raise UsageError("give --min-bytes only (--threshold is its old name)")
        a.min_bytes = a.threshold


def run_alloc_tags(ctx: Context) -> int:
    a = ctx.args
    if a.threshold is not None:
        ctx.note("warning: --threshold is deprecated: use --min-bytes (the same bytes)")
    n, lo, hi = pfn_selection(a.pfn, a.prange)
    pe = ctx.session
    if a.prange is not None or a.node is not None:
        pe.check_range(lo, hi, a.node)
    at = pe.client(CLIENT_NAME)
    if n is not None:
        d = at.at(n)
        ctx.echo(dumps(d | {"missing": missing_json(ctx)}) if a.as_json else pfn_text(d))
        return 0
    s = at.scan(lo, hi, a.node)
    kernel = at.kernel_counters()
    rows = alloc_tag_rows(at, s, kernel, a.all_tags)
    rows = [r for r in rows if r["bytes"] >= a.min_bytes]
    if a.limit:
        rows = rows[:a.limit]
    summary = _summary(at, s, kernel)
    if a.as_json:
        ctx.echo(dumps({"summary": summary, "tags": rows, "missing": missing_json(ctx)}))
    else:
        _print_tags(ctx, at, s, rows, summary)
    if s.invalid:
        ctx.note(f"{summary['invalid']} page_ext entr{'y' if summary['invalid'] == 1 else 'ies'} hold "
                 f"{len(s.invalid)} pointer(s) that are not allocation tags")
        ctx.corrupt += summary["invalid"]
    return 0


def _summary(at: AllocTags, s: Scan, kernel: dict) -> dict:
    """The ``summary`` of ``alloc-tags --json``: the scan's counts beside the kernel's."""
    page = at.layout.page_size
    return {"entries": s.entries, "tagged": s.tagged, "none": s.null, "empty": s.empty,
            "invalid": sum(s.invalid.values()), "invalid_tags": len(s.invalid),
            "pages": s.pages, "bytes": s.pages * page, "tags": len(s.tags) - len(s.invalid),
            "order_source": dict(sorted(s.order_source.items())),
            "kernel": None if not kernel else {
                "tags": sum(1 for b, _ in kernel.values() if b is not None),
                "bytes": sum(b for b, _ in kernel.values() if b is not None),
                "calls": sum(c for _, c in kernel.values() if c is not None),
                "unknown_tags": sum(1 for b, _ in kernel.values() if b is None)},
            "tag_list": at.catalogue_note or "the kernel's",
            "refs_in": "page_flags" if at.compressed else "page_ext"}


def _print_tags(ctx: Context, at: AllocTags, s: Scan, rows: list[dict], summary: dict) -> None:
    """The rows, then the summary, as text."""
    ctx.echo(f"{'bytes':>12} {'pages':>8} {'allocs':>8} {'kernel bytes':>13} {'calls':>8}  tag")
    for r in rows:
        kb = "" if r["kernel_bytes"] is None else r["kernel_bytes"]
        kc = "" if r["kernel_calls"] is None else r["kernel_calls"]
        ctx.echo(f"{r['bytes']:>12} {r['pages']:>8} {r['allocations']:>8} {kb:>13} {kc:>8}  "
                 f"{escape(r['tag'])}{'  (inaccurate)' if r.get('inaccurate') else ''}")
    src = ", ".join(f"{v} {k_.replace('_', ' ')}" for k_, v in summary["order_source"].items()) or "none"
    where = "struct pages (compressed tags)" if at.compressed else "page_ext entries"
    ctx.echo(f"{where:<17} {s.entries}: {s.tagged} tagged ({summary['tags']} tags), "
             f"{s.null} without a tag, {s.empty} empty (CODETAG_EMPTY), "
             f"{summary['invalid']} invalid ({len(s.invalid)} distinct pointers)")
    ctx.echo(f"tagged pages      {s.pages} ({s.pages * at.layout.page_size} bytes); orders from: {src}")
    kk = summary["kernel"]
    if kk:
        ctx.echo(f"kernel counters   {kk['bytes']} bytes, {kk['calls']} calls in {kk['tags']} tags "
                 "(page, slab and percpu allocations: /proc/allocinfo)"
                 + (f"; {kk['unknown_tags']} tags' counters not in the dump" if kk["unknown_tags"] else ""))


COMMANDS = [
    Command("alloc-tags", "Pages per allocation tag (memory allocation profiling, 6.10+), beside the kernel's "
            "/proc/allocinfo counters.", run_alloc_tags, (
                PFN, RANGE, NODE,
                Opt(("--min-bytes",), "min_bytes", "hide tags with fewer page_ext bytes than this", int, 0,
                    metavar="BYTES", minimum=0),
                Opt(("--threshold",), "threshold", "deprecated: --min-bytes", int, None, metavar="BYTES",
                    minimum=0, hidden=True),
                LIMIT,
                Opt(("--all",), "all_tags", "also the kernel's tags that tag no page", bool, False),
                Opt(("--json",), "as_json", "JSON", bool, False),
            ), description="""\b
Examples:
  pageext-inspect alloc-tags vmcore -s vmlinux --limit 20
  pageext-inspect alloc-tags vmcore -s vmlinux --min-bytes 1048576   # tags holding 1 MiB or more
  pageext-inspect alloc-tags vmcore -s vmlinux --pfn 0x1234""", drgn="alloc_tags", force=True,
            prepare=prepare_alloc_tags),
]
