"""``owner``, ``top`` and ``clients`` subcommands: page_ext client data for users.

Each command runs the shared pipeline (open_target -> discover -> walk) and
then one client decoder, streaming its output: a record is formatted and
written as soon as it is decoded, so memory stays O(unique stacks).  Bad input
(pfn outside memory, no page_ext there, page_owner off) is one line on stderr
and exit 2; invalid stack handles are printed in place as ``<invalid handle
0x...>`` and counted on stderr at the end.
"""

from __future__ import annotations

import csv
import json
import sys
from collections import defaultdict
from typing import Optional

import typer

from ..report import escape
from ..target import TargetError

FORMATS = ("text", "debugfs", "csv")
TOP_KEYS = ("stack", "pid", "tgid", "comm", "gfp", "order", "migratetype")
TOP_FORMATS = ("text", "page_owner_sort", "show_stacks")


def _fail(message: str) -> typer.Exit:
    from ..cli import fail
    return fail(message)


def parse_range(text: str) -> tuple[int, int]:
    """``A-B`` (inclusive, decimal or 0x hex) -> [A, B+1)."""
    try:
        a, b = text.split("-", 1)
        lo, hi = int(a, 0), int(b, 0)
    except ValueError:
        raise TargetError(f"bad --range {text!r}: expected A-B, e.g. 0x1000-0x1fff") from None
    if lo < 0 or hi < lo:
        raise TargetError(f"bad --range {text!r}: empty or negative")
    return lo, hi + 1


PFN = typer.Option(None, "--pfn", help="one page frame number (decimal or 0x hex)")
RANGE = typer.Option(None, "--range", help="pfns A-B inclusive")


def pfn_selection(pfn: Optional[str], prange: Optional[str]) -> tuple[Optional[int], int, int]:
    """--pfn / --range -> (the one pfn or None, lo, hi) with [lo, hi) all pfns if neither."""
    if pfn is not None and prange is not None:
        raise TargetError("give either --pfn or --range, not both")
    if pfn is not None:
        try:
            n = int(pfn, 0)
        except ValueError:
            n = -1
        if n < 0:
            raise TargetError(f"bad --pfn {pfn!r}")
        return n, n, n + 1
    if prange is not None:
        return (None, *parse_range(prange))
    return None, 0, 1 << 64


def _open(target, qemu, vmlinux, arch):
    from ..cli import open_and_walk
    from .page_owner import PageOwner

    tgt, geo, layout = open_and_walk(target, qemu, vmlinux, arch, False)
    return PageOwner(tgt.prog, geo, layout)


def _stack_list(po, handle: Optional[int]) -> Optional[list[str]]:
    if not handle:
        return None
    lines = po.depot.lines(handle)
    if lines is None:
        return [f"<invalid handle {handle:#x}>"]
    return list(lines)


def record_dict(po, r) -> dict:
    """One record as plain data (JSON/CSV); names from the target."""
    alloc_stack, free_stack = _stack_list(po, r.handle), _stack_list(po, r.free_handle)
    if any(s and s[0].startswith("<invalid handle") for s in (alloc_stack, free_stack)):
        po.invalid_records += 1
    return {
        "pfn": r.pfn,
        "state": "allocated" if r.allocated else "freed",
        "order": r.order,
        "gfp_mask": r.gfp_mask,
        "gfp_flags": po.names.gfp(r.gfp_mask),
        "migratetype": po.names.migratetype(po.gfp_migratetype(r.gfp_mask)),
        "pageblock_migratetype": None if r.pageblock_mt is None else po.names.migratetype(r.pageblock_mt),
        "pid": r.pid,
        "tgid": r.tgid,
        "comm": None if r.comm is None else escape(r.comm),
        "ts_nsec": r.ts_nsec,
        "free_ts_nsec": r.free_ts_nsec,
        "free_pid": r.free_pid,
        "free_tgid": r.free_tgid,
        "last_migrate_reason": None if r.last_migrate_reason == -1 else po.names.migrate_reason(r.last_migrate_reason),
        "handle": r.handle,
        "free_handle": r.free_handle,
        "alloc_stack": alloc_stack,
        "free_stack": free_stack,
        "memcg": _memcg_name(po, r),
    }


def _memcg_name(po, r) -> Optional[str]:
    name = po.memcg.name(r.memcg_data) if po.memcg and r.memcg_data else None
    return None if name is None else escape(name)


def _text(po, r) -> str:
    d = record_dict(po, r)
    head = (f"pfn {r.pfn:#x} order {r.order} {d['state']}  gfp {r.gfp_mask:#x}({d['gfp_flags']})  "
            f"migratetype {d['migratetype']}  pageblock {d['pageblock_migratetype']}")
    who = [f"pid {r.pid}"] if r.pid is not None else []
    if r.tgid is not None:
        who.append(f"tgid {r.tgid} ({d['comm']})")
    if r.ts_nsec is not None:
        who.append(f"ts {r.ts_nsec} ns")
    if r.free_ts_nsec is not None:
        who.append(f"free_ts {r.free_ts_nsec} ns")
    if r.free_pid is not None:
        who.append(f"free_pid {r.free_pid} free_tgid {r.free_tgid}")
    lines = [head, "  " + ", ".join(who)] if who else [head]
    if d["memcg"] is not None:
        lines.append(f"  memcg: {d['memcg']}")
    if d["last_migrate_reason"]:
        lines.append(f"  last migrate reason: {d['last_migrate_reason']}")
    for name in ("alloc_stack", "free_stack"):
        if d[name]:
            lines.append(f"  {name.replace('_', ' ')}:")
            lines += [f"    {f}" for f in d[name]]
    return "\n".join(lines) + "\n\n"


CSV_COLUMNS = ("pfn", "state", "order", "gfp_mask", "gfp_flags", "migratetype", "pageblock_migratetype",
               "pid", "tgid", "comm", "ts_nsec", "free_ts_nsec", "free_pid", "free_tgid",
               "last_migrate_reason", "handle", "free_handle", "alloc_stack", "free_stack", "memcg")


def _invalid_note(po) -> None:
    if po.memcg and po.memcg.unreadable:
        typer.echo(f"pageext-inspect: warning: {po.memcg.unreadable} memcg_data word(s) point at unreadable "
                   "memory; their memcg lines are left out", err=True)
    n = len(po.depot.invalid)
    if n or po.invalid_records:
        typer.echo(f"pageext-inspect: {po.invalid_records} record(s) with invalid stack handles "
                   f"({n} distinct handle(s))", err=True)


def register(app: typer.Typer, names: set[str]) -> None:
    from .. import cli as _c
    @app.command("owner", help="Print page_owner records (offline /sys/kernel/debug/page_owner).")
    def owner_cmd(
        target: Optional[str] = _c.TARGET,
        vmlinux: Optional[str] = _c.VMLINUX,
        qemu: Optional[str] = _c.QEMU,
        arch: Optional[str] = _c.ARCH,
        pfn: Optional[str] = PFN,
        prange: Optional[str] = RANGE,
        allocated: bool = typer.Option(False, "--allocated", help="currently allocated pages (default)"),
        freed: bool = typer.Option(False, "--freed", help="freed pages that keep a record"),
        all_: bool = typer.Option(False, "--all", help="allocated and freed"),
        tails: bool = typer.Option(False, "--tails", help="also the tail pages of high-order blocks"),
        fmt: str = typer.Option("text", "--format", help="text | debugfs (byte-identical to the kernel's) | csv"),
        as_json: bool = typer.Option(False, "--json", help="JSON Lines, one record a line"),
    ) -> None:
        from .page_owner import ALL, ALLOCATED, FREED

        if fmt not in FORMATS:
            raise _fail(f"unknown --format {fmt!r} (one of: {', '.join(FORMATS)})")
        if sum((allocated, freed, all_)) > 1:
            raise _fail("give at most one of --allocated, --freed, --all")
        which = FREED if freed else ALL if all_ else ALLOCATED
        if fmt == "debugfs" and which != ALLOCATED:
            raise _fail("--format debugfs prints what the kernel prints: allocated pages only")
        try:
            _, lo, hi = pfn_selection(pfn, prange)
            po = _open(target, qemu, vmlinux, arch)
            if pfn is not None:
                rec = po.record_at(lo)  # a clear error for a pfn without a record
                if fmt == "debugfs":
                    records = iter(list(po.debugfs_records(lo, hi)))
                elif which == ALL or rec.allocated == (which == ALLOCATED):
                    records = iter([rec])
                else:
                    records = iter([])
                    state = "allocated" if rec.allocated else "freed"
                    typer.echo(f"pageext-inspect: pfn {lo:#x} is {state}; --all shows it", err=True)
            else:
                if prange is not None:
                    po.check_range(lo, hi)
                records = po.debugfs_records(lo, hi) if fmt == "debugfs" else \
                    po.records(which, lo, hi, heads_only=not tails)
            out = sys.stdout
            tty = out.isatty()
            writer = None
            if fmt == "csv" and not as_json:
                writer = csv.writer(out, lineterminator="\n")
                writer.writerow(CSV_COLUMNS)
            for r in records:
                if as_json:
                    out.write(json.dumps(record_dict(po, r)) + "\n")
                elif fmt == "debugfs":
                    # The kernel's bytes to a file or pipe; escaped on a terminal.
                    out.buffer.write(po.debugfs_text(r, raw=not tty).encode("latin-1"))
                elif writer is not None:
                    d = record_dict(po, r)
                    for k in ("alloc_stack", "free_stack"):
                        d[k] = ";".join(d[k]) if d[k] else ""
                    writer.writerow([("" if d[c] is None else d[c]) for c in CSV_COLUMNS])
                else:
                    out.write(_text(po, r))
            out.flush()
        except TargetError as e:
            raise _fail(str(e))
        except BrokenPipeError:
            raise typer.Exit(0)
        _invalid_note(po)

    @app.command("top", help="Pages and allocations per stack, pid, tgid, comm, gfp, order or migratetype.")
    def top_cmd(
        target: Optional[str] = _c.TARGET,
        vmlinux: Optional[str] = _c.VMLINUX,
        qemu: Optional[str] = _c.QEMU,
        arch: Optional[str] = _c.ARCH,
        by: str = typer.Option("stack", "--by", help="|".join(TOP_KEYS)),
        threshold: int = typer.Option(0, "--threshold", help="hide keys with fewer pages than this"),
        limit: int = typer.Option(0, "--limit", help="show at most this many keys (0: all)"),
        as_json: bool = typer.Option(False, "--json", help="a JSON list"),
        fmt: str = typer.Option("text", "--format", help="text | page_owner_sort (its --cull output, byte for "
                                "byte; --by stack|pid|tgid|comm) | show_stacks (the kernel's own per-stack "
                                "counts, v6.9+; --by stack)"),
    ) -> None:
        from . import aggregators as agg

        if by not in TOP_KEYS:
            raise _fail(f"unknown --by {by!r} (one of: {', '.join(TOP_KEYS)})")
        if fmt not in TOP_FORMATS:
            raise _fail(f"unknown --format {fmt!r} (one of: {', '.join(TOP_FORMATS)})")
        if fmt != "text" and as_json:
            raise _fail(f"--format {fmt} prints the kernel tool's text; --json goes with --format text")
        if fmt == "page_owner_sort" and by not in agg.CULL:
            raise _fail(f"page_owner_sort culls by {', '.join(agg.CULL)} only, not {by!r}")
        if fmt == "show_stacks" and by != "stack":
            raise _fail("show_stacks counts pages per stack: use --by stack")
        try:
            po = _open(target, qemu, vmlinux, arch)
            if fmt != "text":
                if fmt == "page_owner_sort":
                    rows = agg.page_owner_sort_rows(po, by)
                else:
                    rows = [dict(r, text=r["text"].encode("latin-1")) for r in agg.show_stacks(po, threshold)]
                out = sys.stdout
                tty = out.isatty()
                for r in agg.limit_rows(rows, threshold, limit):
                    if tty:  # the kernel's bytes to a file or pipe; escaped on a terminal
                        out.write("".join(escape(line) + "\n"
                                          for line in r["text"].decode("latin-1").split("\n")[:-1]))
                    else:
                        out.buffer.write(r["text"])
                out.flush()
                _invalid_note(po)
                return
            rows = top(po, by)
        except TargetError as e:
            raise _fail(str(e))
        except BrokenPipeError:
            raise typer.Exit(0)
        rows = [r for r in rows if r["pages"] >= threshold]
        if limit:
            rows = rows[:limit]
        if as_json:
            typer.echo(json.dumps(rows, indent=1))
        else:
            if by != "stack":
                typer.echo(f"{'pages':>10} {'allocs':>10}  {by}")
            for r in rows:
                if by == "stack":
                    typer.echo(f"{r['pages']} pages, {r['allocations']} allocations:")
                    typer.echo("".join(f" {line}\n" for line in r["key"]))
                else:
                    typer.echo(f"{r['pages']:>10} {r['allocations']:>10}  {r['key']}")
        _invalid_note(po)

    @app.command("table-check", help="Summarise page_table_check's per-page anon/file map counts.")
    def table_check_cmd(
        target: Optional[str] = _c.TARGET,
        vmlinux: Optional[str] = _c.VMLINUX,
        qemu: Optional[str] = _c.QEMU,
        arch: Optional[str] = _c.ARCH,
        prange: Optional[str] = RANGE,
        list_: bool = typer.Option(False, "--list", help="CSV of every page with a non-zero count"),
        as_json: bool = typer.Option(False, "--json", help="the summary as JSON"),
    ) -> None:
        from ..cli import open_and_walk
        from .page_table_check import PageTableCheck

        try:
            _, lo, hi = pfn_selection(None, prange)
            tgt, geo, layout = open_and_walk(target, qemu, vmlinux, arch, False)
            ptc = PageTableCheck(tgt.prog, geo, layout)
            if list_:
                w = csv.writer(sys.stdout, lineterminator="\n")
                w.writerow(("pfn", "anon_map_count", "file_map_count", "mapcount"))
                for pfn, anon, file, p in ptc.entries(lo, hi):
                    if anon or file:
                        w.writerow((pfn, anon, file, "" if p is None else p[3] + 1))
                return
            s = ptc.summary(lo, hi)
        except TargetError as e:
            raise _fail(str(e))
        if as_json:
            typer.echo(json.dumps(s.to_json(), indent=1))
        else:
            bad = len(set(s.both + s.negative + s.not_anon + s.anon_file))
            typer.echo(f"pages scanned        {s.pages}")
            typer.echo(f"anon-mapped pages    {s.anon_pages} ({s.anon_mappings} mappings)")
            typer.echo(f"file-mapped pages    {s.file_pages} ({s.file_mappings} mappings)")
            typer.echo(f"inconsistent pages   {bad} (both counts {len(s.both)}, negative {len(s.negative)}, "
                       f"anon count on !PageAnon {len(s.not_anon)}, file count on PageAnon {len(s.anon_file)})")
            typer.echo(f"vs rmap _mapcount    {len(s.mapcount_mismatch)} mismatches in {s.mapcount_checked} "
                       "order-0 pages")
        raise typer.Exit(1 if (s.both or s.negative or s.not_anon or s.anon_file) else 0)

    @app.command("clients", help="Which page_ext clients this kernel has, and whether each is active.")
    def clients_cmd(
        target: Optional[str] = _c.TARGET,
        vmlinux: Optional[str] = _c.VMLINUX,
        qemu: Optional[str] = _c.QEMU,
        arch: Optional[str] = _c.ARCH,
        as_json: bool = typer.Option(False, "--json", help="a JSON list"),
    ) -> None:
        from ..cli import open_and_walk

        try:
            _tgt, geo, _layout = open_and_walk(target, qemu, vmlinux, arch, False)
        except TargetError as e:
            raise _fail(str(e))
        rows = [{"name": c.name, "offset": c.offset, "size": c.size,
                 "state": "active" if c.active else "compiled in, inactive in this boot",
                 "how_to_enable": c.how_to_enable} for c in geo.clients]
        if as_json:
            typer.echo(json.dumps(rows, indent=1))
        else:
            for r in rows:
                hint = "" if r["state"] == "active" else f" ({r['how_to_enable']})"
                typer.echo(f"{escape(r['name']):<20} {r['state']}{hint}")

    names.update({"owner", "top", "table-check", "clients"})
    _register_page_idle(app, names)
    _register_alloc_tags(app, names)


def top_key(po, r, by: str):
    if by == "stack":
        lines = po.depot.lines(r.handle)
        return tuple(lines) if lines is not None else (f"<invalid handle {r.handle:#x}>",)
    if by == "gfp":
        return f"{r.gfp_mask:#x}({po.names.gfp(r.gfp_mask)})"
    if by == "migratetype":
        return po.names.migratetype(po.gfp_migratetype(r.gfp_mask))
    if by == "comm":
        return escape(r.comm or "")
    return getattr(r, by)


def top(po, by: str) -> list[dict]:
    """Aggregate the records debugfs would print (allocated heads) by ``by``."""
    pages: dict = defaultdict(int)
    allocs: dict = defaultdict(int)
    for r in po.debugfs_records():
        k = top_key(po, r, by)
        pages[k] += 1 << r.order
        allocs[k] += 1
    rows = [{"key": list(k) if isinstance(k, tuple) else k, "pages": pages[k], "allocations": allocs[k]}
            for k in pages]
    rows.sort(key=lambda d: (-d["pages"], -d["allocations"], str(d["key"])))
    return rows


def _register_page_idle(app: typer.Typer, names: set[str]) -> None:
    from .. import cli as _c

    @app.command("page-idle", help="Idle page tracking's Young/Idle bits per page (32-bit kernels keep them "
                                   "in page_ext).")
    def page_idle_cmd(
        target: Optional[str] = _c.TARGET,
        vmlinux: Optional[str] = _c.VMLINUX,
        qemu: Optional[str] = _c.QEMU,
        arch: Optional[str] = _c.ARCH,
        pfn: Optional[str] = PFN,
        prange: Optional[str] = RANGE,
        bitmap: Optional[str] = typer.Option(None, "--bitmap", help="also write /sys/kernel/mm/page_idle/bitmap "
                                             "as a read would return it now, to this file"),
        as_json: bool = typer.Option(False, "--json", help="the summary (or the --pfn entry) as JSON"),
    ) -> None:
        from ..cli import open_and_walk
        from .page_idle import PageIdle

        try:
            n, lo, hi = pfn_selection(pfn, prange)
            tgt, geo, layout = open_and_walk(target, qemu, vmlinux, arch, False)
            pi = PageIdle(tgt.prog, geo, layout)
            if n is not None:
                e = pi.entry_at(n)
                if as_json:
                    typer.echo(json.dumps(e.to_json(), indent=1))
                else:
                    head = "" if e.head_pfn in (None, e.pfn) else f"  (tail of {e.head_pfn:#x}, whose bits count)"
                    lru = "unknown" if e.lru is None else ("yes" if e.lru else "no")
                    typer.echo(f"pfn {e.pfn:#x}  flags {e.flags:#x}  young {int(e.young)}  idle {int(e.idle)}  "
                               f"lru {lru}  refcount {e.refcount}{head}")
                return
            s = pi.summary(lo, hi)
            if bitmap:
                data = pi.bitmap()
                with open(bitmap, "wb") as f:
                    f.write(data)
        except TargetError as e:
            raise _fail(str(e))
        except OSError as e:
            raise _fail(f"{bitmap}: {e.strerror}")
        if as_json:
            typer.echo(json.dumps(s.to_json() | {"flags_bytes": pi.word, "young_bit": pi.young_bit,
                                                 "idle_bit": pi.idle_bit}, indent=1))
            return
        typer.echo(f"pages with page_ext   {s.pages}")
        typer.echo(f"young                 {s.young}")
        typer.echo(f"idle                  {s.idle}")
        typer.echo(f"young and idle        {s.young_and_idle}")
        typer.echo(f"LRU pages             {s.lru_pages}  (those the kernel's bitmap can report)")
        typer.echo(f"idle LRU pages        {s.idle_lru_pages}  (bits set in page_idle/bitmap as read now)")

    names.add("page-idle")


def _register_alloc_tags(app: typer.Typer, names: set[str]) -> None:
    from .. import cli as _c

    @app.command("alloc-tags", help="Pages per allocation tag (memory allocation profiling, 6.10+), "
                                    "beside the kernel's /proc/allocinfo counters.")
    def alloc_tags_cmd(
        target: Optional[str] = _c.TARGET,
        vmlinux: Optional[str] = _c.VMLINUX,
        qemu: Optional[str] = _c.QEMU,
        arch: Optional[str] = _c.ARCH,
        pfn: Optional[str] = PFN,
        prange: Optional[str] = RANGE,
        threshold: int = typer.Option(0, "--threshold", help="hide tags with fewer page_ext bytes than this"),
        limit: int = typer.Option(0, "--limit", help="show at most this many tags (0: all)"),
        all_tags: bool = typer.Option(False, "--all", help="also the kernel's tags that tag no page"),
        as_json: bool = typer.Option(False, "--json", help="JSON"),
    ) -> None:
        from ..cli import open_and_walk
        from .alloc_tag import AllocTags

        try:
            n, lo, hi = pfn_selection(pfn, prange)
            tgt, geo, layout = open_and_walk(target, qemu, vmlinux, arch, False)
            at = AllocTags(tgt.prog, geo, layout)
            if n is not None:
                d = at.at(n)
                if as_json:
                    typer.echo(json.dumps(d, indent=1))
                    return
                typer.echo(_alloc_tag_pfn_text(d))
                return
            s = at.scan(lo, hi)
            kernel = at.kernel_counters()
        except TargetError as e:
            raise _fail(str(e))
        rows = alloc_tag_rows(at, s, kernel, all_tags)
        rows = [r for r in rows if r["bytes"] >= threshold]
        if limit:
            rows = rows[:limit]
        summary = {"entries": s.entries, "tagged": s.tagged, "none": s.null, "empty": s.empty,
                   "invalid": sum(s.invalid.values()), "invalid_tags": len(s.invalid),
                   "pages": s.pages, "bytes": s.pages * geo.page_size, "tags": len(s.tags) - len(s.invalid),
                   "order_source": dict(sorted(s.order_source.items())),
                   "kernel": None if not kernel else {
                       "tags": len(kernel), "bytes": sum(b for b, _ in kernel.values()),
                       "calls": sum(c for _, c in kernel.values())},
                   "tag_list": at.catalogue_note or "the kernel's"}
        if as_json:
            typer.echo(json.dumps({"summary": summary, "tags": rows}, indent=1))
        else:
            typer.echo(f"{'bytes':>12} {'pages':>8} {'allocs':>8} {'kernel bytes':>13} {'calls':>8}  tag")
            for r in rows:
                kb = "" if r["kernel_bytes"] is None else r["kernel_bytes"]
                kc = "" if r["kernel_calls"] is None else r["kernel_calls"]
                typer.echo(f"{r['bytes']:>12} {r['pages']:>8} {r['allocations']:>8} {kb:>13} {kc:>8}  "
                           f"{escape(r['tag'])}{'  (inaccurate)' if r.get('inaccurate') else ''}")
            src = ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in summary["order_source"].items()) or "none"
            typer.echo(f"page_ext entries  {s.entries}: {s.tagged} tagged ({summary['tags']} tags), "
                       f"{s.null} without a tag, {s.empty} empty (CODETAG_EMPTY), "
                       f"{summary['invalid']} invalid ({len(s.invalid)} distinct pointers)")
            typer.echo(f"tagged pages      {s.pages} ({s.pages * geo.page_size} bytes); orders from: {src}")
            if kernel:
                k = summary["kernel"]
                typer.echo(f"kernel counters   {k['bytes']} bytes, {k['calls']} calls in {k['tags']} tags "
                           "(page, slab and percpu allocations: /proc/allocinfo)")
        if s.invalid:
            typer.echo(f"pageext-inspect: {summary['invalid']} page_ext entr{'y' if summary['invalid'] == 1 else 'ies'}"
                       f" hold {len(s.invalid)} pointer(s) that are not allocation tags", err=True)

    names.add("alloc-tags")


def alloc_tag_rows(at, s, kernel: dict, all_tags: bool = False) -> list[dict]:
    """One row per tag with page_ext refs (and, with all_tags, every kernel tag),
    by page_ext bytes, then kernel bytes."""
    from .alloc_tag import invalid_text

    page = at.geo.page_size
    index = {a: i for i, a in enumerate(at.catalogue())}  # the line of /proc/allocinfo, from 0
    rows = []
    addrs = list(s.tags)
    if all_tags:
        addrs += [a for a in at.catalogue() if a not in s.tags]
    for addr in addrs:
        tp = s.tags.get(addr)
        tag = at.tag(addr)
        kb, kc = kernel.get(addr, (None, None))
        rows.append({"tag": tag.text() if tag else invalid_text(addr), "address": addr, "index": index.get(addr),
                     "file": tag.filename if tag else None, "line": tag.lineno if tag else None,
                     "function": tag.function if tag else None, "module": tag.modname if tag else None,
                     "inaccurate": tag.inaccurate if tag else None,
                     "allocations": tp.allocations if tp else 0, "pages": tp.pages if tp else 0,
                     "orders_assumed": tp.assumed if tp else 0,
                     "bytes": (tp.pages if tp else 0) * page, "kernel_bytes": kb, "kernel_calls": kc})
    rows.sort(key=lambda r: (-r["bytes"], -(r["kernel_bytes"] or 0), r["tag"]))
    return rows


def _alloc_tag_pfn_text(d: dict) -> str:
    if d["state"] == "none":
        if d["head_pfn"] is not None and d["head_pfn"] != d["pfn"]:
            return (f"pfn {d['pfn']:#x}: no tag of its own; tail page of compound page {d['head_pfn']:#x}"
                    + (f", tagged {escape(d['tag'])}" if d["tag"] else ", which has no tag either"))
        return (f"pfn {d['pfn']:#x}: no tag (free, a later page of a multi-page allocation, or allocated before "
                "page_ext was set up or while profiling was off)")
    if d["state"] == "empty":
        return f"pfn {d['pfn']:#x}: CODETAG_EMPTY (deliberately untagged)"
    from .alloc_tag import ASSUMED, COMPOUND, NEXT_TAGGED, PAGE_OWNER

    why = {COMPOUND: "the compound page's folio order", PAGE_OWNER: "its page_owner record",
           NEXT_TAGGED: "the next page starts another allocation"}
    order = "order unknown (counted as 0)" if d["order_source"] == ASSUMED else \
        f"order {d['order']} ({why.get(d['order_source'], d['order_source'])})"
    return f"pfn {d['pfn']:#x}: {escape(d['tag'])}  {order}, {d['bytes']} bytes"
