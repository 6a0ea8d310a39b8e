"""``snapshot``, ``diff``, ``watch`` and ``plot``: the commands of leak hunting over time.

Thin over :mod:`inspector.history` (snapshots, DuckDB analysis, the watcher,
plots); pyarrow, duckdb and matplotlib are imported when a command runs, so
``--help`` and the other commands never load them.
"""

from __future__ import annotations

import os
import stat
import tempfile
from typing import Optional

from ..jsonout import dumps
from .base import (ARCH, JSON, LIMIT, NODE, RANGE, TIMEOUT, VMLINUX, Command, Context, Opt, missing_json,
                        pfn_selection, timeout_of)
from ..errors import TargetError, UsageError


def _number(text: Optional[str], what: str, minimum: float) -> Optional[float]:
    if text is None:
        return None
    try:
        v = float(text)
    except ValueError:
        raise UsageError(f"bad {what} {text!r}: expected a number") from None
    if not v >= minimum:
        raise UsageError(f"bad {what} {text!r}: must be at least {minimum:g}")
    return v


def _corrupt(ctx: Context, n: int) -> None:
    from .page_owner import _corrupt_note
    _corrupt_note(ctx, n)


# -- snapshot ----------------------------------------------------------------------------------------

def prepare_snapshot(a) -> None:
    if bool(a.output) == bool(a.fleet):
        raise UsageError("give the file to write with -o FILE.parquet, or the fleet directory with --fleet DIR")
    _, a.lo, a.hi = pfn_selection(None, a.prange)


def run_snapshot(ctx: Context) -> int:
    from ..history.snapshot import take
    a, pe = ctx.args, ctx.session
    if a.prange is not None or a.node is not None:
        pe.check_range(a.lo, a.hi, a.node)
    snap = take(pe, a.lo, a.hi, a.node)
    if a.fleet:  # into the fleet's host=/kernel=/date= partitions (inspector/fleet/layout.py)
        from ..fleet.layout import place
        a.output = place(a.fleet, snap.meta)
    size = snap.write(a.output)
    _corrupt(ctx, snap.meta["corrupt_records"])
    t = snap.meta["totals"]
    if a.as_json:
        ctx.echo(dumps({"file": a.output, "bytes": size, **{k: snap.meta[k] for k in (
            "release", "machine", "boot_id", "boot_id_source", "clock_ns", "time", "read_seconds", "totals",
            "stacks", "observer")}, "missing": missing_json(ctx)}))
    else:
        ctx.echo(f"{a.output}: {snap.meta['stacks']} stacks, {t['stack']['pages']} pages in "
                 f"{t['stack']['allocations']} allocations ({t['stack']['rows']} stack rows, "
                 f"{t['task']['rows']} task rows), {size} bytes; {snap.meta['release']}, boot "
                 f"{snap.meta['boot_id']}, read in {snap.meta['read_seconds']:.1f} s"
                 + _observer_text(snap.meta["observer"]))
    return 0


def _observer_text(observer) -> str:
    if not observer:
        return ""
    if observer["tgid"] is None:
        return f"; this process's own pages not left out: {observer['why']}"
    return f"; this process's own {observer['pages']} pages (tgid {observer['tgid']}) left out"


# -- diff ------------------------------------------------------------------------------------------

def _input(ctx: Context, path: str):
    """A diff input: a snapshot file (Parquet magic), a QMP socket, or a core."""
    from ..session import PageExt
    from ..history.snapshot import file_metas, is_parquet, read_meta, take
    a = ctx.args
    if is_parquet(path):
        read_meta(path)  # a clear line for anything but a snapshot
        return path
    base, _, number = path.rpartition("#")
    if base and not os.path.exists(path) and is_parquet(base):  # FILE#N: one of a compacted file's samples
        metas, compacted = file_metas(base)
        if not number.isdigit() or not 1 <= int(number) <= len(metas):
            raise UsageError(f"{path}: {base} holds {len(metas)} snapshot{'s' if len(metas) > 1 else ''}; "
                             f"N goes from 1 to {len(metas)}")
        return (base, int(number) - 1) if compacted else base
    try:
        sock = stat.S_ISSOCK(os.stat(path).st_mode)
    except OSError:
        sock = False
    try:
        pe = PageExt.open(None if sock else path, qemu=path if sock else None, vmlinux=a.vmlinux, arch=a.arch,
                          timeout=timeout_of(a))
    except TargetError as e:
        msg = str(e)
        if os.path.isfile(path) and ("vmcore" in msg or "truncated" in msg) and "vmlinux" not in msg:
            raise UsageError(f"{e}; nor is it a snapshot (no Parquet magic)") from None
        raise
    try:
        snap = take(pe)  # what it missed is in its metadata, merged with the files' by run_diff()
    except Exception:
        _no_answer(pe)
        raise
    finally:
        pe.target.close()
    _no_answer(pe)
    _corrupt(ctx, snap.meta["corrupt_records"])
    return snap


def _no_answer(pe) -> None:
    """A live target that stopped answering: its one line, whatever the reads made of it."""
    from ..link import NoAnswerError
    why = pe.target.failure() if pe.target is not None else None
    if why:
        raise NoAnswerError(why)


def run_diff(ctx: Context) -> int:
    from ..model import Missing
    from ..history.analysis import Samples, labels
    a = ctx.args
    sources = [_input(ctx, a.a), _input(ctx, a.b)]
    samples = Samples(sources)
    ma, mb = samples.metas
    for m in (ma, mb):
        ctx.missing.merge(Missing.from_json(m.get("missing") or {}))
    if ma.get("release") != mb.get("release"):
        ctx.note(f"warning: A is {ma.get('release')} and B is {mb.get('release')}: stacks are matched by their "
                 "text, and code that moved between the builds shows up as new and vanished stacks")
    d = samples.diff(a.by)
    rows = d["rows"][:a.limit] if a.limit else d["rows"]
    if a.by == "stack":
        for r, label in zip(rows, labels([r["stack"] for r in rows])):
            r["label"] = label
            r.pop("key")  # the stack's text or its handle: "stack" and "handle" hold it (one key a fact)
    if a.as_json:
        ctx.echo(dumps({"a": _describe(ma, a.a), "b": _describe(mb, a.b), "by": a.by,
                             "matched_by": samples.stack_key if a.by == "stack" else a.by, "rows": rows,
                             "new": d["new"], "vanished": d["vanished"], "nodes": d["nodes"],
                             "missing": missing_json(ctx)}))
        return 0
    _print_diff(ctx, samples, d, rows)
    return 0


def _print_diff(ctx: Context, samples, d: dict, rows: list) -> None:
    """``diff``'s text: the two inputs, the changed rows, the totals and the nodes."""
    a = ctx.args
    ma, mb = samples.metas
    for name, m, src in (("A", ma, a.a), ("B", mb, a.b)):
        ctx.echo(f"{name}: {src}  ({m.get('target', {}).get('kind')}, {m.get('release')}, {m.get('machine')}, "
                 f"boot {m.get('boot_id')}, {m.get('time')})")
    if a.by == "stack":
        ctx.echo("stacks matched by " + ("handle (the same boot)" if samples.stack_key == "handle" else
                                         "their symbolized text (different boots)"))
    ctx.echo(f"\n{'Δpages':>9} {'Δallocs':>9} {'pages A':>9} {'pages B':>9}  {'status':<8}  {a.by}")
    for r in rows:
        what = r.get("label") if a.by == "stack" else (f"{r['key']} ({r['comm']})" if a.by in ("pid", "tgid") else r["key"])
        ctx.echo(f"{r['delta_pages']:>+9} {r['delta_allocations']:>+9} {r['pages_a']:>9} {r['pages_b']:>9}  "
                 f"{r['status']:<8}  {what}")
        if a.by == "stack" and a.stacks:
            ctx.echo("".join(f"{' ' * 41}{f}\n" for f in r["stack"]))
    shown = f" (of {len(d['rows'])}; --limit 0 shows all)" if a.limit and len(d["rows"]) > a.limit else ""
    ctx.echo(f"\n{len(rows)} changed{shown}; new: {d['new']['count']} ({d['new']['pages']:+d} pages), "
             f"vanished: {d['vanished']['count']} ({d['vanished']['pages']:+d} pages)")
    ctx.echo(f"\n{'node':>6} {'pages A':>10} {'pages B':>10} {'Δpages':>10}")
    for n in d["nodes"]:
        ctx.echo(f"{n['node']:>6} {n['pages_a']:>10} {n['pages_b']:>10} {n['delta_pages']:>+10}")
    ctx.echo(f"{'all':>6} {sum(n['pages_a'] for n in d['nodes']):>10} {sum(n['pages_b'] for n in d['nodes']):>10} "
             f"{sum(n['delta_pages'] for n in d['nodes']):>+10}")


def _describe(meta: dict, source: str) -> dict:
    keys = ("release", "machine", "boot_id", "boot_id_source", "time", "time_ns", "clock_ns", "target",
            "tool_version", "schema")
    return {"source": source, **{k: meta.get(k) for k in keys}}


def prepare_diff(a) -> None:
    from ..history.analysis import BY
    if a.by not in BY:
        raise UsageError(f"unknown --by {a.by!r} (one of: {', '.join(BY)})")


# -- watch -------------------------------------------------------------------------------------------

def prepare_watch(a) -> None:
    a.interval_s = _number(a.interval, "--interval", 0)
    a.rate = _number(a.min_rate, "--min-rate", 0)
    a.growth = _number(a.min_growth, "--min-growth", 0)
    if a.output is not None and os.path.exists(a.output) and not os.path.isdir(a.output):
        raise UsageError(f"-o {a.output}: not a directory")
    if a.plot is not None:
        from ..history.plot import image_format
        image_format(a.plot)


def run_watch(ctx: Context) -> int:
    from ..history.watch import Watcher, verdict
    a, pe = ctx.args, ctx.session
    if not pe.live:
        raise UsageError("watch samples a live kernel (/proc/kcore or --qemu); a vmcore never changes: "
                         "compare two with diff")
    if a.pause and pe.target is not None and pe.target.kind != "qemu":
        raise UsageError("--pause stops a QEMU guest: it goes with --qemu")
    rule = _watch_rule(a)
    with tempfile.TemporaryDirectory(prefix="pageext-watch-") as tmp:
        outdir = a.output or tmp
        os.makedirs(outdir, exist_ok=True)
        w = Watcher(pe, interval=a.interval_s, count=a.count, outdir=outdir, pause=a.pause, exec_cmd=a.exec_cmd,
                    timeout=timeout_of(a))
        if a.plot:
            import matplotlib.figure  # noqa: F401  (loaded before the first sample, see watch.py)
        live, trend = _sample(ctx, w, rule)
        _sampled(ctx, w)
        lines = verdict(w.running, trend, rule)
        doc = _watch_outputs(ctx, w, trend, rule, lines)
    if a.as_json:
        ctx.echo(dumps(doc))
    else:
        _print_verdict(ctx, lines, blank=live is not None)
    return 0


def _print_verdict(ctx: Context, lines: list, blank: bool) -> None:
    """The verdict, and where the snapshots and the plot went (a blank line first under a live table)."""
    if blank:
        ctx.echo()
    for line in lines:
        ctx.echo(line)
    if ctx.args.output:
        ctx.echo(f"snapshots in {ctx.args.output}")
    if ctx.args.plot:
        ctx.echo(f"plot: {ctx.args.plot}")


def _watch_rule(a) -> dict:
    """The leak-suspect rule, with --rate and --growth in place of its defaults."""
    from ..history.analysis import RULE
    rule = dict(RULE)
    if a.rate is not None:
        rule["min_rate"] = a.rate
    if a.growth is not None:
        rule["min_growth"] = a.growth
    return rule


def _sample(ctx: Context, w, rule: dict) -> tuple:
    """Take the samples, showing each (a live table on a terminal, a line
    otherwise); (the live display or None, the last trend)."""
    from ..history.watch import table
    a, pe = ctx.args, ctx.session
    live = None
    if ctx.tty and not a.as_json:
        from rich.console import Console
        from rich.live import Live
        live = Live(console=Console(file=ctx.out), auto_refresh=False)
        live.start()
        pe.progress = lambda label, total: (lambda n: None)  # no progress bars under the live table
    trend = []
    try:
        for snap in w.samples():
            trend = w.trend(rule)
            n, m = w.taken, snap.meta
            head = (f"sample {n}{'/' + str(a.count) if a.count else ''}: {m['totals']['stack']['pages']} pages, "
                    f"{m['stacks']} stacks, read in {m['read_seconds']:.1f} s")
            del snap, m  # nothing keeps a sample in memory (issue 26)
            if live is not None:
                live.update(table(trend, a.limit or 10, head), refresh=True)
            elif not a.as_json:
                top = next((r for r in trend if r["growth"] > 0), None)
                from ..history.analysis import labels
                ctx.echo(head + (f"; grew most: {labels([top['stack']])[0]} ({top['growth']:+d} pages)"
                                 if top and n > 1 else ""))
                ctx.out.flush()
    except KeyboardInterrupt:
        if not w.taken:
            raise
    except Exception as e:
        if not _sampling_ended(pe, w, e):
            raise
    finally:
        if live is not None:
            live.stop()
    return live, trend


def _sampled(ctx: Context, w) -> None:
    """After the sampling: notes, what is missing and corrupt; no sample at all is an error."""
    if w.paused_by_other:
        ctx.note(f"note: the guest behind --pause {ctx.args.pause} was paused already (not by pageext-inspect): "
                 "sampled as it was, and left paused")
    ctx.session.missing = w.missing
    _corrupt(ctx, w.corrupt_records)
    if not w.taken:
        raise UsageError("no sample was taken")


def _sampling_ended(pe, w, e: Exception) -> bool:
    """Whether ``e`` ends the sampling with a verdict rather than an error.

    The target (or --pause's socket) stopped answering: the samples so far
    still make a verdict, marked partial (exit 3) with the reason.  (A signal
    that cut a wait on QEMU ends the sampling like Ctrl-C.)"""
    from ..link import NoAnswerError
    link = getattr(pe.target, "link", None)
    interrupted = link is not None and link.interrupted() and w.taken
    why = pe.target.take_failure() if w.taken and link is not None else None
    if w.taken and not why and isinstance(e, NoAnswerError) and not (link and link.failure()):
        why = str(e)
    if not why and not interrupted:
        return False
    if why:
        w.missing.note(f"sampling ended after {w.taken} samples: {why}")
    return True


def _watch_outputs(ctx: Context, w, trend: list, rule: dict, lines: list) -> Optional[dict]:
    """Draw --plot, and build the --json document (None without --json), from
    the whole history read back from the sample files once."""
    a = ctx.args
    drawn = history = None
    if a.plot or a.as_json:
        history = w.history()
    if a.plot:
        from ..history.plot import draw
        drawn = draw(history, a.plot, a.limit or 8, rule)
    if not a.as_json:
        return None
    from ..history.analysis import labels
    shown = [r for r in trend if r["suspect"]] + [r for r in trend if not r["suspect"]][:a.limit or 10]
    # The full series of the stacks shown (the running trend keeps the last few only).
    keys = [r["handle"] if history.stack_key == "handle" else "\n".join(r["stack"]) for r in shown]
    full = history.series(keys)
    for r, k, label in zip(shown, keys, labels([r["stack"] for r in shown])):
        r["label"], r["series"] = label, full[k]
    doc = {"samples": w.sample_list(), "kept": a.output is not None, "time_axis": w.running.axis,
           "t_min": [r["t_min"] for r in history.query("SELECT t_min FROM samples ORDER BY sample")],
           "rule": rule, "stacks": shown, "suspects": [r["label"] for r in shown if r["suspect"]],
           "verdict": lines[0], "plot": drawn, "missing": missing_json(ctx)}
    history.con.close()
    return doc


# -- plot --------------------------------------------------------------------------------------------

def prepare_plot(a) -> None:
    from ..history.plot import image_format
    if not a.output:
        raise UsageError("give the picture to write with -o FILE.png")
    image_format(a.output)


def run_plot(ctx: Context) -> int:
    from ..history.analysis import Samples
    from ..history.plot import draw
    a = ctx.args
    samples = Samples(_plot_paths(a))
    from ..model import Missing
    for m in samples.metas:
        ctx.missing.merge(Missing.from_json(m.get("missing") or {}))
    drawn = draw(samples, a.output, a.limit or 8)
    if a.as_json:
        ctx.echo(dumps({"file": a.output, "sample_count": samples.n, "time_axis": samples.axis, "lines": drawn,
                             "missing": missing_json(ctx)}))
    else:
        ctx.echo(f"{a.output}: {len(drawn)} stacks over {samples.n} samples ({samples.minutes:.1f} min of the "
                 f"{samples.axis})")
        for line in drawn:
            ctx.echo(f"  {line['label']}: {line['y'][0]} -> {line['y'][-1]} pages")
    return 0


def _plot_paths(a) -> list[str]:
    """The snapshot files of ``plot``'s directory (of one machine), by time."""
    from ..history.snapshot import file_metas
    if not os.path.isdir(a.directory):
        raise UsageError(f"{a.directory}: not a directory of snapshots")
    paths = sorted(os.path.join(a.directory, f) for f in os.listdir(a.directory) if f.endswith(".parquet"))
    if not paths:
        raise UsageError(f"{a.directory}: no snapshots (*.parquet) in it")
    held = {p: file_metas(p)[0] for p in paths}  # a compacted file holds many
    # A sample's own file left beside the compacted file that holds it (a watch
    # stopped between the two) is drawn once.
    compacted = {(m.get("machine"), m["time_ns"]) for p in paths if len(held[p]) > 1 for m in held[p]}
    paths = [p for p in paths if len(held[p]) > 1 or (held[p][0].get("machine"), held[p][0]["time_ns"])
             not in compacted]
    metas = {p: held[p][0] for p in paths}
    machines = sorted({m.get("machine") or "?" for m in metas.values()})
    if a.machine is not None:
        paths = [p for p in paths if (metas[p].get("machine") or "?") == a.machine]
        if not paths:
            raise UsageError(f"{a.directory}: no snapshots of machine {a.machine!r} (machines: {', '.join(machines)})")
    elif len(machines) > 1:
        raise UsageError(f"{a.directory}: snapshots of {len(machines)} machines ({', '.join(machines)}); "
                         "pick one with --machine")
    paths.sort(key=lambda p: metas[p]["time_ns"])
    return paths


COMMANDS = [
    Command("snapshot", "Save page_owner's pages per stack and per task now, as a small Parquet file.", run_snapshot, (
        Opt(("-o", "--output"), "output", "the snapshot to write (Parquet)", metavar="FILE"),
        Opt(("--fleet",), "fleet", "write it into this fleet directory instead, as "
            "host=H/kernel=R/date=D/H-TIME.parquet (pageext-inspect fleet reads it)", metavar="DIR"),
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
  pageext-inspect snapshot --fleet /srv/fleet                    # host=/kernel=/date= partitions
  pageext-inspect diff before.parquet now.parquet""", drgn="pageext_snapshot", force=True,
            prepare=prepare_snapshot),
    Command("diff", "Which stacks (or pids, tgids, comms) hold more pages in B than in A.", run_diff, (
        Opt(("a",), "a", "a snapshot file, a vmcore, /proc/kcore or a QMP socket", positional=True, required=True),
        Opt(("b",), "b", "the same, later", positional=True, required=True),
        VMLINUX, ARCH, TIMEOUT,
        Opt(("--by",), "by", "stack | pid | tgid (a process, its threads together) | comm", str, "stack",
            metavar="KEY"),
        LIMIT, JSON,
        Opt(("--stacks",), "stacks", "print each stack's frames", bool, False),
    ), description="""\b
Each of A and B is a snapshot file (told by Parquet's PAR1 magic), one
sample of a long watch's folded hour (NAME.hour.parquet#N), or a target to
snapshot now: a vmcore, /proc/kcore, or a QEMU QMP socket.
Rows are sorted by growth (Δpages); stacks are matched by their handle
within one boot, by their symbolized text across boots.  Snapshots of
different kernel releases are compared with a warning.
\b
Examples:
  pageext-inspect diff before.parquet after.parquet --limit 10
  pageext-inspect diff vmcore.1 vmcore.2 -s vmlinux --by comm
  pageext-inspect diff before.parquet /proc/kcore --json""", target=False, drgn="pageext_diff",
            prepare=prepare_diff),
    Command("watch", "Sample a live kernel repeatedly; show the stacks that grow and name leak suspects.", run_watch, (
        Opt(("--interval",), "interval", "seconds between samples", str, "10", metavar="S"),
        Opt(("--count",), "count", "samples to take (0: until Ctrl-C)", int, 0, metavar="N", minimum=0),
        Opt(("-o", "--output"), "output", "keep each snapshot in this directory", metavar="DIR"),
        Opt(("--pause",), "pause", "stop the QEMU guest for each sample through this QMP socket (QEMU's "
            "control socket; not the one --qemu reads through)", metavar="SOCKET"),
        Opt(("--exec",), "exec_cmd", "run this shell command before each sample (before --pause stops the "
            "guest); PAGEEXT_SAMPLE is the sample's number, PAGEEXT_DIR the directory", metavar="CMD"),
        Opt(("--plot",), "plot", "at the end, draw the stacks that grew (png, svg, pdf)", metavar="FILE"),
        Opt(("--min-rate",), "min_rate", "the slowest growth a suspect has, pages per minute (default 256)",
            metavar="PAGES"),
        Opt(("--min-growth",), "min_growth", "the least a suspect grows over the window, pages (default 256)",
            metavar="PAGES"),
        LIMIT, JSON,
    ), description="""\b
A stack is a leak suspect when, over at least 3 samples, its least-squares
slope is at least --min-rate pages per minute, it grew by at least
--min-growth pages, the line fits (R^2 >= 0.8), at least 80% of the steps
between samples do not go down, and its drops add up to at most 10% of its
growth.  Time is the target's own clock when the
snapshots have it (it stands still while --pause holds a guest), else the
host's.
\b
A watch can run for days: the rule is kept by running sums per stack, so
each sample costs the same however many came before, and memory follows the
number of stacks, not of samples.  Each sample is a Parquet file in -o DIR
(a temporary directory without it); once the watch is two hours past an
hour, that hour's files are folded into one, NAME.hour.parquet, several
times smaller (the stack texts stored once, not once a sample).  plot and
diff read both; diff names one sample of a folded hour as
NAME.hour.parquet#N (--json lists each sample's file so).
\b
Examples:
  pageext-inspect watch --interval 60 --count 30 -o snaps/      # the running kernel
  pageext-inspect watch --qemu vm/qmp.sock -s vmlinux --pause vm/ctl.sock --interval 5 --count 12 --plot leak.png
  pageext-inspect plot snaps/ -o leak.png""", drgn="pageext_watch", force=True, prepare=prepare_watch, retries=False),
    Command("plot", "Draw pages over time for the stacks that grew most, from a directory of snapshots.", run_plot, (
        Opt(("directory",), "directory", "a directory of snapshots (*.parquet)", positional=True, required=True),
        Opt(("-o", "--output"), "output", "the picture to write (png, svg, pdf)", metavar="FILE"),
        Opt(("--machine",), "machine", "only the snapshots of this machine (its nodename)", metavar="NAME"),
        Opt(("--limit",), "limit", "how many stacks to draw", int, 8, metavar="N", minimum=1),
        JSON,
    ), description="""\b
Examples:
  pageext-inspect plot snaps/ -o leak.png
  pageext-inspect plot fleet/ --machine web-3 -o web-3.svg --limit 5""", target=False, drgn="pageext_plot",
            prepare=prepare_plot),
]
