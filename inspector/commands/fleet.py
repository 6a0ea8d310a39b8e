"""The ``fleet`` command: one question over a directory of many machines' snapshots.

Design.  Thin over the library: :func:`.layout.scan` picks the files (and
names those it leaves out), :func:`.engines.engine` loads them into DuckDB
or Spark, :func:`.questions.sql` gives the question's SQL text, and the
table comes back printed (tabulate) or as JSON; ``plot`` draws the
``series`` question (:mod:`.plot`).  Files left out make the answer
partial: each is named on stderr and the exit status is 3.
"""

from __future__ import annotations


from ..jsonout import dumps
from .base import JSON, Command, Context, Opt, missing_json
from ..errors import UsageError

SKIPPED_SHOWN = 20


def prepare(a) -> None:
    from ..fleet.engines import ENGINES
    from ..fleet.questions import QUESTIONS
    asked = [q for q in QUESTIONS if q != "series"] + ["plot"]  # plot draws the series question
    if a.question not in asked:
        raise UsageError(f"unknown question {a.question!r} (one of: {', '.join(asked)})")
    if a.engine not in ENGINES:
        raise UsageError(f"unknown --engine {a.engine!r} (one of: {', '.join(ENGINES)})")
    if a.question == "plot":
        from ..history.plot import image_format
        if not a.output:
            raise UsageError("give the picture to write with -o FILE.png")
        image_format(a.output)


def run(ctx: Context) -> int:
    from tabulate import tabulate

    from ..fleet.engines import engine
    from ..fleet.layout import scan
    from ..fleet.questions import sql
    a = ctx.args
    question = "series" if a.question == "plot" else a.question
    text = sql(question, limit=a.limit, min_growth=a.min_growth, min_hosts=a.min_hosts, host=a.host,
               stack=a.stack)
    found = scan(a.directory, host=a.host, kernel=a.kernel, since=a.since, until=a.until)
    for path, why in found.skipped[:SKIPPED_SHOWN]:
        ctx.missing.note(f"{path}: {why}; left out")
    if len(found.skipped) > SKIPPED_SHOWN:
        ctx.missing.note(f"{len(found.skipped) - SKIPPED_SHOWN} more files left out (--json lists them all)")
    eng = engine(a.engine, a.master)
    try:
        eng.load(found)
        table = eng.query(text)
        frames = eng.frames(sorted({r.get("stack_id") for r in table.dicts()})) if a.stacks else {}
    finally:
        eng.close()
    drawn = None
    if a.question == "plot":
        from ..fleet.plot import draw
        drawn = draw(table, a.output)
    if a.as_json:
        ctx.echo(dumps({"question": a.question, "engine": a.engine, "files": found.files,
                             "schemas": {str(v): len(p) for v, p in sorted(found.groups.items())},
                             "skipped": [{"file": p, "why": w} for p, w in found.skipped],
                             "columns": table.columns, "rows": table.dicts(), "frames": frames, "plot": drawn,
                             "missing": missing_json(ctx)}))
        return 0
    ctx.echo(f"{a.directory}: {found.files} snapshot files ({', '.join(f'schema {v}: {len(p)}' for v, p in sorted(found.groups.items()))})"
             + (f", {len(found.skipped)} left out" if found.skipped else "") + f"; {a.engine}")
    if drawn is not None:
        ctx.echo(f"{a.output}: stack {table.rows[0][0]} on {len(drawn)} hosts")
    ctx.echo(tabulate(table.rows, headers=table.columns, tablefmt="simple", disable_numparse=True)
             if table.rows else "(no rows)")
    for sid, text in frames.items():
        ctx.echo(f"\n{sid}:\n" + "".join(f"  {f}\n" for f in text.split("\n")).rstrip("\n"))
    return 0


COMMANDS = [
    Command("fleet", "Ask a directory of many machines' snapshots which stacks grow where (DuckDB or Spark).", run, (
        Opt(("question",), "question", "top | spread | kernels | first-seen | host | outlier | plot", positional=True,
            required=True),
        Opt(("directory",), "directory", "the fleet: snapshots under host=/kernel=/date= (snapshot --fleet DIR)",
            positional=True, required=True),
        Opt(("--engine",), "engine", "duckdb (in-process) | spark", str, "duckdb", metavar="NAME"),
        Opt(("--master",), "master", "Spark's master URL (default local[*])", metavar="URL"),
        Opt(("--limit",), "limit", "rows (per kernel for kernels; hosts for plot; 0: all)", int, 10, metavar="N",
            minimum=0),
        Opt(("--min-growth",), "min_growth", "pages a host's stack must grow to count as grown", int, 256,
            metavar="PAGES", minimum=1),
        Opt(("--min-hosts",), "min_hosts", "spread: the fewest hosts a stack grew on", int, 2, metavar="N",
            minimum=1),
        Opt(("--host",), "host", "only this host's snapshots (the host question's host)", metavar="NAME"),
        Opt(("--kernel",), "kernel", "only this kernel release's snapshots", metavar="RELEASE"),
        Opt(("--since",), "since", "only snapshots from this UTC day on", metavar="YYYY-MM-DD"),
        Opt(("--until",), "until", "only snapshots up to this UTC day", metavar="YYYY-MM-DD"),
        Opt(("--stack",), "stack", "outlier, plot: one stack, by its id (or a prefix) or its top frame",
            metavar="ID"),
        Opt(("--stacks",), "stacks", "print each stack's frames (read again from the files)", bool, False),
        Opt(("-o", "--output"), "output", "plot: the picture to write (png, svg, pdf)", metavar="FILE"),
        JSON,
    ), description="""\b
A fleet is a directory of snapshots of many machines, laid out in hive
partitions host=/kernel=/date= (pageext-inspect snapshot --fleet DIR
writes there).  A stack is its frames without offsets, named by a 12-digit
id; a host's growth of a stack is its pages at the last snapshot of each
boot minus at the first.  Each question is one SQL text that DuckDB (the
default, in-process) and Spark (--engine spark: local[*], or --master URL)
both run; they give the same table.  A file that is not a snapshot this
version reads (corrupt, foreign, a newer schema) is named and left out:
the answer is then partial (exit 3).
\b
Questions:
  top         the stacks that grew most, summed over all hosts
  spread      the stacks that grew on at least --min-hosts hosts
  kernels     per kernel release, the stacks that grew most there
  first-seen  when each top stack was first seen, and first grew (and where)
  host        one host's (--host) top growing stacks at every snapshot
  outlier     hosts whose growth of a stack (--stack) stands out (z-score)
  plot        a stack's pages per host over time (-o FILE.png)
\b
Examples:
  pageext-inspect snapshot --fleet /srv/fleet                  # on each machine
  pageext-inspect fleet top /srv/fleet --limit 5
  pageext-inspect fleet spread /srv/fleet --min-hosts 10 --kernel 6.12.118
  pageext-inspect fleet outlier /srv/fleet --stack bb0029e79a67
  pageext-inspect fleet top /srv/fleet --engine spark --master spark://head:7077
  pageext-inspect fleet plot /srv/fleet -o leak.png""", target=False, prepare=prepare),
]
