"""``page-idle``: idle page tracking's Young/Idle bits, per page or summed.

Thin over :class:`inspector.clients.page_idle.PageIdle`; ``--bitmap`` writes
what /sys/kernel/mm/page_idle/bitmap would return now.
"""

from __future__ import annotations


from ..errors import UsageError
from ..jsonout import dumps
from .base import JSON, NODE, PFN, RANGE, Command, Context, Opt, missing_json, pfn_selection

def run_page_idle(ctx: Context) -> int:
    a = ctx.args
    n, lo, hi = pfn_selection(a.pfn, a.prange)
    if a.prange is not None or a.node is not None:
        ctx.session.check_range(lo, hi, a.node)
    pi = ctx.session.client("page_idle")
    if n is not None:
        _print_entry(ctx, pi.entry_at(n))
        return 0
    if a.bitmap:
        try:
            with open(a.bitmap, "wb") as f:
                for piece in pi.bitmap_chunks():
                    f.write(piece)
        except OSError as e:
            raise UsageError(f"{a.bitmap}: {e.strerror}") from None
    s = pi.summary(lo, hi, a.node)
    if a.as_json:
        ctx.echo(dumps(s.to_json() | {"flags_bytes": pi.word, "young_bit": pi.young_bit,
                                           "idle_bit": pi.idle_bit, "missing": missing_json(ctx)}))
        return 0
    _print_summary(ctx, s)
    return 0


def _print_entry(ctx: Context, e) -> None:
    """One page's bits (``--pfn``), as JSON or one line."""
    if ctx.args.as_json:
        ctx.echo(dumps(e.to_json() | {"missing": missing_json(ctx)}))
        return
    head = "" if e.head_pfn in (None, e.pfn) else f"  (tail of {e.head_pfn:#x}, whose bits count)"
    lru = "unknown" if e.lru is None else ("yes" if e.lru else "no")
    ctx.echo(f"pfn {e.pfn:#x}  flags {e.flags:#x}  young {int(e.young)}  idle {int(e.idle)}  "
             f"lru {lru}  refcount {e.refcount}{head}")


def _print_summary(ctx: Context, s) -> None:
    """The summary of a range, as text."""
    ctx.echo(f"pages with page_ext   {s.pages}")
    ctx.echo(f"young                 {s.young}")
    ctx.echo(f"idle                  {s.idle}")
    ctx.echo(f"young and idle        {s.young_and_idle}")
    ctx.echo(f"LRU pages             {s.lru_pages}  (those the kernel's bitmap can report)")
    ctx.echo(f"idle LRU pages        {s.idle_lru_pages}  (bits set in page_idle/bitmap as read now)")


COMMANDS = [
    Command("page-idle", "Idle page tracking's Young/Idle bits per page (32-bit kernels keep them in page_ext).",
            run_page_idle, (
                PFN, RANGE, NODE,
                Opt(("--bitmap",), "bitmap", "also write /sys/kernel/mm/page_idle/bitmap as a read would return "
                    "it now, to this file", metavar="FILE", cli_only=True),
                JSON,
            ), description="""\b
Examples:
  pageext-inspect page-idle core.elf -s vmlinux --bitmap bm
  pageext-inspect page-idle core.elf -s vmlinux --pfn 0x1234""", drgn="page_idle", force=True),
]
