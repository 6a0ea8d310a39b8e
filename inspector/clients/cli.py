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
        pfn: Optional[str] = typer.Option(None, "--pfn", help="one page frame number (decimal or 0x hex)"),
        prange: Optional[str] = typer.Option(None, "--range", help="pfns A-B inclusive"),
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
        if pfn is not None and prange is not None:
            raise _fail("give either --pfn or --range, not both")
        try:
            lo = hi = None
            if pfn is not None:
                try:
                    lo = int(pfn, 0)
                except ValueError:
                    raise TargetError(f"bad --pfn {pfn!r}") from None
                if lo < 0:
                    raise TargetError(f"bad --pfn {pfn!r}")
                hi = lo + 1
            elif prange is not None:
                lo, hi = parse_range(prange)
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
                if lo is not None:
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
    ) -> None:
        if by not in TOP_KEYS:
            raise _fail(f"unknown --by {by!r} (one of: {', '.join(TOP_KEYS)})")
        try:
            po = _open(target, qemu, vmlinux, arch)
            rows = top(po, by)
        except TargetError as e:
            raise _fail(str(e))
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
        prange: Optional[str] = typer.Option(None, "--range", help="pfns A-B inclusive"),
        list_: bool = typer.Option(False, "--list", help="CSV of every page with a non-zero count"),
        as_json: bool = typer.Option(False, "--json", help="the summary as JSON"),
    ) -> None:
        from ..cli import open_and_walk
        from .page_table_check import PageTableCheck

        try:
            lo, hi = parse_range(prange) if prange else (0, 1 << 64)
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
