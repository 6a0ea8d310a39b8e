"""``plot``: pages over time for the stacks that grew most, as a picture.

Design.  The series come from :meth:`.analysis.Samples.trend` -- the same
query, rule and stack matching as ``watch`` -- over every snapshot of a
directory (ordered by time) or of a watch in progress.  The N stacks drawn
are the leak suspects (by slope) and then the stacks that grew most
(ties: the most pages at the end).  Each line is labelled with
:func:`.analysis.labels` (the top frame outside the allocator, and callers
where needed to tell two apart); suspects are drawn thick.  matplotlib's
object API with its Agg canvas (no display, no pyplot state); the picture is
written whole (a temporary file renamed).  :func:`draw` returns what it
drew, read back from the figure's own lines, so a caller (``--json``, the
tests) sees exactly the plotted points.
"""

from __future__ import annotations

import os
from typing import Optional

from ..errors import UsageError
from .analysis import Samples, labels
from .snapshot import whole_file

FORMATS = ("png", "svg", "pdf")


def image_format(path: str) -> str:
    ext = os.path.splitext(path)[1].lstrip(".").lower()
    if ext not in FORMATS:
        raise UsageError(f"{path}: the picture's format comes from its name: .{', .'.join(FORMATS)}")
    return ext


def choose(trend: list[dict], limit: int) -> list[dict]:
    """The stacks to draw: suspects by slope, then the most growth, then the most pages."""
    suspects = [r for r in trend if r["suspect"]]
    rest = sorted((r for r in trend if not r["suspect"]), key=lambda r: (-r["growth"], -r["last"]))
    return (suspects + rest)[:limit]


def draw(samples: Samples, path: str, limit: int = 8, rule: Optional[dict] = None) -> list[dict]:
    """Draw the chosen stacks' pages over time into ``path`` (png, svg or pdf);
    the lines drawn: label, stack, suspect, x (minutes) and y (pages)."""
    from matplotlib.figure import Figure

    fmt = image_format(path)
    chosen = choose(samples.trend(rule), limit)
    x = [r["t_min"] for r in samples.query("SELECT t_min FROM samples ORDER BY sample")]
    meta = samples.metas[-1]
    fig = Figure(figsize=(11, 6), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    for r, label in zip(chosen, labels([r["stack"] for r in chosen])):
        ax.plot(x, r["series"], marker="o", markersize=3, linewidth=2.6 if r["suspect"] else 1.2,
                label=label + ("  [leak suspect]" if r["suspect"] else ""), gid=str(r["handle"]))
    page_size = meta.get("page_size") or 4096
    ax.set_xlabel(f"minutes since the first sample ({samples.axis})")
    ax.set_ylabel("pages held")
    ax.secondary_yaxis("right", functions=(lambda p: p * page_size / 2**20, lambda m: m * 2**20 / page_size)) \
        .set_ylabel("MiB")
    ax.grid(True, alpha=0.3)
    machines = sorted({m.get("machine") or "?" for m in samples.metas})
    ax.set_title(f"page_owner: pages per allocation stack -- {', '.join(machines)}, {meta.get('release')}, "
                 f"{len(samples.metas)} samples", fontsize=10)
    lines = ax.get_lines()
    # Given explicitly: matplotlib leaves out of an automatic legend every label
    # that starts with "_", as so many kernel functions do.
    legend = ax.legend(lines, [line.get_label() for line in lines], fontsize=8, loc="upper left") if lines else None
    with whole_file(path) as part:
        fig.savefig(part, format=fmt)
    shown = [t.get_text() for t in legend.get_texts()] if legend is not None else []
    return [{"label": line.get_label(), "legend": text, "x": [float(v) for v in line.get_xdata()],
             "y": [int(v) for v in line.get_ydata()], "suspect": r["suspect"], "stack": r["stack"]}
            for line, text, r in zip(lines, shown, chosen)]
