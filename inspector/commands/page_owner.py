"""``owner`` and ``top``: page_owner's records, printed as the kernel and its tools print them.

Thin over :class:`inspector.clients.page_owner.PageOwner`: ``owner`` prints
records (text, the kernel's debugfs text, CSV, JSON Lines, Parquet through
:mod:`inspector.history.records`), ``top`` the pages and allocations per
key (or page_owner_sort's, show_stacks' and show_handles' text, through
:mod:`inspector.clients.aggregators`).
"""

from __future__ import annotations

import csv
from typing import Iterator

from ..clients.page_owner import TOP_KEYS, PageOwner
from ..decode.owner import ALL, ALLOCATED, FREED, Batch, Select
from ..errors import UsageError
from ..text import escape_lines
from ..jsonout import dumps, dumps_line
from .base import (JSON, LIMIT, NODE, PFN, RANGE, RETRIES, THRESHOLD, Command, Context, Opt, consistent, missing_json,
                   pfn_selection)
from ..clients.aggregators import CULL, order_records, parse_cull, parse_sort


FORMATS = ("text", "debugfs", "csv", "parquet")
TOP_FORMATS = ("text", "page_owner_sort", "show_stacks", "handles")
CSV_COLUMNS = ("pfn", "state", "order", "gfp_mask", "gfp_flags", "migratetype", "pageblock_migratetype",
               "pid", "tgid", "comm", "ts_nsec", "free_ts_nsec", "free_pid", "free_tgid",
               "last_migrate_reason", "handle", "free_handle", "alloc_stack", "free_stack", "memcg", "corrupt",
               "suspect")


def _owner_notes(ctx: Context, po: PageOwner) -> None:
    if po.memcg is not None and po.memcg.unreadable:
        ctx.note(f"warning: {po.memcg.unreadable} memcg_data word(s) point at unreadable memory; "
                 "their memcg lines are left out")
    n = len(po.depot.invalid)
    if n:
        if po.invalid_records:
            ctx.note(f"{po.invalid_records} record(s) with invalid stack handles ({n} distinct handle(s))")
        else:  # handles met outside the records (show_stacks' list)
            ctx.note(f"{n} invalid stack handle(s)")
        ctx.corrupt += n


def _count_invalid(po: PageOwner, b: Batch, free: bool = False) -> None:
    """Count the records of a decoded batch whose stack handle (or, with
    ``free``, free stack handle) the depot found invalid."""
    if po.depot.invalid:
        bad = po.depot.invalid_mask(b.e["handle"])
        if free and "free_handle" in po.has:
            bad |= po.depot.invalid_mask(b.e["free_handle"])
        po.invalid_records += int(bad.sum())


def _corrupt_note(ctx: Context, count: int) -> None:
    if count:
        ctx.note(f"{count} corrupt record(s): values beyond what the kernel can hold (order > MAX_ORDER, "
                 "pid > PID_MAX_LIMIT, a time after the dump's own clock); left out of the kernel's text "
                 "and the sums, shown as CORRUPT elsewhere")
        ctx.corrupt += count


# page_owner_sort's select options, with its names and meanings (tools/mm/page_owner_sort.c).
SELECT_OPTS = (
    Opt(("--pid",), "sel_pid", "only records whose pid is in this comma-separated list (page_owner_sort --pid)",
        metavar="LIST"),
    Opt(("--tgid",), "sel_tgid", "only records whose tgid is in the list (page_owner_sort --tgid)",
        metavar="LIST"),
    Opt(("--name", "--comm"), "sel_name", "only records whose task comm is one of the list "
        "(page_owner_sort --name)", metavar="LIST"),
)
# page_owner_sort's --sort: its keys and their short names, "-" for descending.
SORT = Opt(("--sort",), "sort_spec", "page_owner_sort --sort: [+|-]KEY[,...] with KEY pid|p, tgid|tg, name|n, "
           "stacktrace|st, txt|T, alloc_ts|at, allocator|ator (free_ts|ft on 6.1's text), or ours: times, pages "
           "(-times is its -t, -pages its -m); '-' reverses; ties keep the tool's order", metavar="KEYS")


def _selected(a) -> frozenset:
    """The select options given, as the fields page_owner_sort then prints."""
    return frozenset(k for k, v in (("pid", a.sel_pid), ("tgid", a.sel_tgid), ("name", a.sel_name)) if v)


def prepare_owner(a) -> None:
    if a.cull_spec is not None:
        # page_owner_sort's --cull groups records: that output is top's (one
        # implementation), so the option a page_owner_sort user types says where.
        raise UsageError(f"owner prints records one by one; page_owner_sort's --cull is "
                         f"'pageext-inspect top TARGET --cull {a.cull_spec}' (with --sort and --pid/--tgid/--name too)")
    if a.fmt not in FORMATS:
        raise UsageError(f"unknown --format {a.fmt!r} (one of: {', '.join(FORMATS)})")
    if sum((a.allocated, a.freed, a.all_)) > 1:
        raise UsageError("give at most one of --allocated, --freed, --all")
    a.which = FREED if a.freed else ALL if a.all_ else ALLOCATED
    if a.fmt == "debugfs" and a.which != ALLOCATED:
        raise UsageError("--format debugfs prints what the kernel prints: allocated pages only")
    if a.fmt != "text" and a.as_json:
        raise UsageError(f"--json is its own format; leave out --format {a.fmt}")
    if a.trailer and not a.as_json:
        raise UsageError("--trailer goes with --json (the line it adds is JSON)")
    if (a.fmt == "parquet") != (a.output is not None):
        raise UsageError("--format parquet writes a file: give it with -o FILE" if a.fmt == "parquet" else
                         "-o FILE goes with --format parquet (the other formats go to standard output)")
    a.one, a.lo, a.hi = pfn_selection(a.pfn, a.prange)
    a.select = Select.parse(a.sel_pid, a.sel_tgid, a.sel_name)
    a.sort = parse_sort(a.sort_spec)
    if a.sort and (a.fmt != "debugfs" or a.as_json):
        raise UsageError("--sort orders the kernel's text: give --format debugfs (top --sort orders groups)")


def run_owner(ctx: Context) -> int:
    return consistent(ctx, _owner, ctx.args.retries)


def _owner(ctx: Context) -> int:
    a = ctx.args
    pe = ctx.session
    po = pe.client("page_owner")
    po.select = a.select
    if a.one is not None:
        rec = po.record_at(a.one)  # a clear error for a pfn without a record
        if a.fmt != "debugfs" and a.which != ALL and rec.allocated != (a.which == ALLOCATED):
            ctx.note(f"pfn {a.one:#x} is {'allocated' if rec.allocated else 'freed'}; --all shows it")
            return 0
    elif a.prange is not None or a.node is not None:
        pe.check_range(a.lo, a.hi, a.node)
    batches = po.batches(a.which, a.lo, a.hi, node=a.node, heads_only=a.one is None and not a.tails,
                         debugfs=a.fmt == "debugfs")
    if a.fmt == "parquet":
        return _owner_parquet(ctx, po, batches)
    if a.sort:
        return _owner_sorted(ctx, po, batches)
    corrupt = _print_records(ctx, po, batches)
    if a.as_json and a.trailer:  # JSON Lines carry records only, unless asked (issue 20)
        ctx.write_bytes((dumps_line({"missing": missing_json(ctx)}) + "\n").encode())
    _owner_notes(ctx, po)
    _corrupt_note(ctx, corrupt)
    return 0


def _owner_sorted(ctx: Context, po: PageOwner, batches: Iterator[Batch]) -> int:
    """``owner --format debugfs --sort KEYS``: the records in the order
    page_owner_sort --sort KEYS prints their groups (each group's records
    in the kernel's order)."""
    text = b"".join(po.debugfs_bytes(b, raw=not ctx.tty) for b in batches)
    for block in order_records(text, ctx.args.sort):
        ctx.write_bytes(block)
    _owner_notes(ctx, po)
    return 0


def _owner_parquet(ctx: Context, po: PageOwner, batches: Iterator[Batch]) -> int:
    """``owner --format parquet -o FILE``: the records as one Parquet table."""
    from ..history.records import write
    counted = _Counted(batches)
    rows, size = write(ctx.session, counted, ctx.args.output)
    ctx.echo(f"{ctx.args.output}: {rows} records, {size} bytes")
    _owner_notes(ctx, po)
    _corrupt_note(ctx, counted.corrupt)
    return 0


def _print_records(ctx: Context, po: PageOwner, batches: Iterator[Batch]) -> int:
    """Print the records of every batch in ``owner``'s format; the number that are corrupt."""
    a = ctx.args
    fmt = a.fmt
    corrupt = 0
    writer = None
    if not a.as_json and fmt == "csv":
        writer = csv.writer(ctx.out, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
    for b in batches:
        corrupt += int((b.corrupt != 0).sum())
        if a.as_json:
            ctx.write_bytes(po.json_bytes(b))
        elif fmt == "debugfs":
            ctx.write_bytes(po.debugfs_bytes(b, raw=not ctx.tty))  # counts its invalid handles itself
        elif writer is not None:
            for r in po.batch_records(b):
                d = po.record_dict(r)
                for key in ("alloc_stack", "free_stack", "corrupt"):
                    d[key] = ";".join(d[key]) if d[key] else ""
                writer.writerow([("" if d[c] is None else d[c]) for c in CSV_COLUMNS])
        else:
            ctx.write("".join(po.text(r) for r in po.batch_records(b)))
        if a.as_json or fmt != "debugfs":
            _count_invalid(po, b, free=True)
    return corrupt


class _Counted:
    """Batches passed through, their corrupt records counted."""

    def __init__(self, batches: Iterator[Batch]):
        self.batches, self.corrupt = batches, 0

    def __iter__(self) -> Iterator[Batch]:
        for b in self.batches:
            self.corrupt += int((b.corrupt != 0).sum())
            yield b


def prepare_top(a) -> None:
    _prepare_cull(a)
    by, fmt = a.by, a.fmt
    if by not in TOP_KEYS:
        raise UsageError(f"unknown --by {by!r} (one of: {', '.join(TOP_KEYS)})")
    if fmt not in TOP_FORMATS:
        raise UsageError(f"unknown --format {fmt!r} (one of: {', '.join(TOP_FORMATS)})")
    if fmt != "text" and a.as_json:
        raise UsageError(f"--format {fmt} prints the kernel's text; --json goes with --format text")
    if fmt == "page_owner_sort" and by not in CULL:
        raise UsageError(f"page_owner_sort culls by {', '.join(CULL)} only, not {by!r}")
    if fmt in ("show_stacks", "handles") and by != "stack":
        raise UsageError(f"--format {fmt} counts pages per stack: use --by stack")
    if a.stacks and fmt != "handles":
        raise UsageError("--stacks goes with --format handles (show_stacks_handles)")
    _, a.lo, a.hi = pfn_selection(None, a.prange)
    a.select = Select.parse(a.sel_pid, a.sel_tgid, a.sel_name)
    if a.select and fmt in ("show_stacks", "handles"):
        raise UsageError(f"--format {fmt} prints the kernel's own per-stack counts: it takes no --pid/--tgid/--name")
    a.cull, a.sort = parse_cull(a.cull_spec), parse_sort(a.sort_spec)
    a.selected = _selected(a)


def _prepare_cull(a) -> None:
    """top --cull/--sort: page_owner_sort's groups (its text)."""
    if a.cull_spec is None and a.sort_spec is None:
        return
    if a.as_json:
        raise UsageError("--cull and --sort print page_owner_sort's text; --json goes with --format text")
    if a.fmt not in ("text", "page_owner_sort"):
        raise UsageError(f"--cull and --sort group as page_owner_sort does: they go with --format page_owner_sort, "
                         f"not {a.fmt}")
    if a.cull_spec is not None and a.by != "stack":
        raise UsageError("give --by or --cull, not both (--by KEY is --cull of that one key)")
    a.fmt = "page_owner_sort"


def run_top(ctx: Context) -> int:
    return consistent(ctx, _top, ctx.args.retries)


def _top(ctx: Context) -> int:
    a = ctx.args
    pe = ctx.session
    if a.prange is not None or a.node is not None:
        pe.check_range(a.lo, a.hi, a.node)
    po = pe.client("page_owner")
    po.select = a.select
    if a.fmt != "text":
        _top_kernel_text(ctx, po)
    else:
        rows = [r for r in po.top(a.by, a.lo, a.hi, a.node) if r["pages"] >= a.threshold]
        _top_rows(ctx, rows[:a.limit] if a.limit else rows)
    _owner_notes(ctx, po)
    return 0


def _top_kernel_text(ctx: Context, po: PageOwner) -> None:
    """``top --format page_owner_sort|show_stacks|handles``: the text the kernel's tools print."""
    from ..clients import aggregators as agg
    a = ctx.args
    if a.fmt == "page_owner_sort":
        texts = (po.debugfs_bytes(b).decode("latin-1")
                 for b in po.batches(ALLOCATED, a.lo, a.hi, node=a.node, debugfs=True))
        rows = agg.page_owner_sort(texts, None if a.cull else a.by, cull=a.cull, sort=a.sort,
                                   selected=a.selected)
    elif a.fmt == "show_stacks":
        rows = [dict(r, text=r["text"].encode("latin-1")) for r in agg.show_stacks(po, a.threshold)]
    else:
        rows = agg.show_handles(po, a.threshold, with_stacks=a.stacks)
    for r in agg.limit_rows(rows, a.threshold if a.fmt != "handles" or not a.stacks else 0, a.limit):
        if ctx.tty:
            ctx.write(escape_lines(r["text"]))
        else:
            ctx.write_bytes(r["text"])


def _top_rows(ctx: Context, rows: list[dict]) -> None:
    """``top``'s own rows: JSON, or text (a stack's frames under its counts)."""
    by = ctx.args.by
    if ctx.args.as_json:
        ctx.echo(dumps({"by": by, "rows": rows, "missing": missing_json(ctx)}))
        return
    if by != "stack":
        ctx.echo(f"{'pages':>10} {'allocs':>10}  {by}")
    for r in rows:
        if by == "stack":
            ctx.echo(f"{r['pages']} pages, {r['allocations']} allocations:")
            ctx.echo("".join(f" {line}\n" for line in r["key"]))
        else:
            ctx.echo(f"{r['pages']:>10} {r['allocations']:>10}  {r['key']}")


COMMANDS = [
    Command("owner", "Print page_owner records (offline /sys/kernel/debug/page_owner).", run_owner, (
        PFN, RANGE, NODE,
        Opt(("--allocated",), "allocated", "currently allocated pages (default)", bool, False),
        Opt(("--freed",), "freed", "freed pages that keep a record", bool, False),
        Opt(("--all",), "all_", "allocated and freed", bool, False),
        Opt(("--tails",), "tails", "also the tail pages of high-order blocks", bool, False),
        Opt(("--format",), "fmt", "text | debugfs (byte-identical to the kernel's) | csv | parquet (a typed "
            "table, one row per record; with -o)", str, "text", metavar="FORMAT"),
        Opt(("-o", "--output"), "output", "the file --format parquet writes", metavar="FILE"),
        Opt(("--json",), "as_json", "JSON Lines, one record a line and nothing else (what is missing goes to "
            "stderr, as for every format)", bool, False),
        Opt(("--trailer",), "trailer", "with --json: end with one more line, {\"missing\": ...}, what the answer "
            "lacks (as --json of the other commands has it)", bool, False),
        *SELECT_OPTS,
        SORT,
        Opt(("--cull",), "cull_spec", "page_owner_sort --cull: see top --cull", metavar="KEYS", hidden=True),
        RETRIES,
    ), description="""\b
page_owner_sort's --cull (records grouped) is top --cull.
Examples:
  pageext-inspect owner vmcore -s vmlinux                     # page_owner records, readable
  pageext-inspect owner vmcore -s vmlinux --pid 1,42 --format debugfs   # as page_owner_sort --pid 1,42
  pageext-inspect owner vmcore -s vmlinux --format debugfs --sort -pid,at   # as page_owner_sort --sort
  pageext-inspect owner vmcore -s vmlinux --format debugfs    # byte-identical to /sys/kernel/debug/page_owner
  pageext-inspect owner --qemu SOCKET -s vmlinux --pfn 0x1234 --json
  pageext-inspect owner vmcore -s vmlinux --node 1 --json | head
  pageext-inspect owner vmcore -s vmlinux --all --format parquet -o records.parquet""", drgn="page_owner", force=True,
        prepare=prepare_owner),
    Command("top", "Pages and allocations per stack, pid, tgid, comm, gfp, order, migratetype or node.",
            run_top, (
                Opt(("--by",), "by", "|".join(TOP_KEYS), str, "stack", metavar="KEY"),
                THRESHOLD, LIMIT, RANGE, NODE, JSON,
                Opt(("--format",), "fmt", "text | page_owner_sort (its --cull output, byte for byte; --by "
                    "stack|pid|tgid|comm) | show_stacks (the kernel's per-stack counts, v6.9+) | handles "
                    "(page_owner_stacks/show_handles, v6.19)", str, "text", metavar="FORMAT"),
                Opt(("--stacks",), "stacks", "with --format handles: show_stacks_handles (every stack with its "
                    "handle, no threshold)", bool, False),
                *SELECT_OPTS,
                Opt(("--cull",), "cull_spec", "page_owner_sort --cull: one group per value of these keys, "
                    "comma-separated: pid|p, tgid|tg, name|n, stacktrace|st, allocator|ator (free|f on 6.1's "
                    "text); prints its text (implies --format page_owner_sort; --by KEY is one key)",
                    metavar="KEYS"),
                SORT,
                RETRIES,
            ), description="""\b
Examples:
  pageext-inspect top vmcore -s vmlinux --by stack --limit 10
  pageext-inspect top vmcore -s vmlinux --by pid --format page_owner_sort
  pageext-inspect top vmcore -s vmlinux --cull pid,name --sort -pid   # page_owner_sort --cull ... --sort ...
  pageext-inspect top vmcore -s vmlinux --format show_stacks --min-pages 10
  pageext-inspect top vmcore -s vmlinux --format handles      # show_handles (v6.19)
  pageext-inspect top vmcore -s vmlinux --by node
  pageext-inspect top vmcore -s vmlinux --name leaker --by pid   # the pages of the tasks called leaker, per pid""", drgn="page_owner_top", force=True,
            prepare=prepare_top),
]
