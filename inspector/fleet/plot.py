"""``fleet plot``: one stack's pages per host over time, as a picture.

Design.  The points are the ``series`` question's table (:mod:`.questions`:
the stack named by ``--stack``, else the one that grew most over the
fleet, on the ``--limit`` hosts that grew it most), so either engine draws
the same lines.  Drawn like ``plot`` (:mod:`inspector.history.plot`):
matplotlib's object API on its Agg canvas, x in days since the first point,
one line per host, the picture written whole; what was drawn is read back
from the figure's own lines and returned.
"""

from __future__ import annotations

import datetime as _dt

from ..errors import UsageError
from ..history.plot import image_format
from ..history.snapshot import whole_file


def draw(table, path: str) -> list[dict]:
    from matplotlib.figure import Figure

    fmt = image_format(path)
    rows = table.dicts()
    if not rows:
        raise UsageError("no stack grew on any host with two snapshots of one boot: nothing to draw")
    t = {r["time"]: _dt.datetime.fromisoformat(r["time"].replace("Z", "+00:00")) for r in rows}
    t0 = min(t.values())
    hosts: dict[str, list] = {}
    for r in rows:
        hosts.setdefault(r["host"], []).append(r)
    fig = Figure(figsize=(11, 6), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    for host, pts in hosts.items():
        ax.plot([(t[p["time"]] - t0).total_seconds() / 86400 for p in pts], [p["pages"] for p in pts],
                marker="o", markersize=3, linewidth=1.4, label=f"{host} ({pts[0]['kernel']})")
    ax.set_xlabel(f"days since {t0:%Y-%m-%d %H:%M} UTC")
    ax.set_ylabel("pages held")
    ax.grid(True, alpha=0.3)
    ax.set_title(f"page_owner: stack {rows[0]['stack_id']} ({rows[0]['top_frame']}) on the {len(hosts)} hosts "
                 "where it grew most", fontsize=10)
    lines = ax.get_lines()
    ax.legend(lines, [line.get_label() for line in lines], fontsize=8, loc="upper left")
    with whole_file(path) as part:
        fig.savefig(part, format=fmt)
    return [{"host": line.get_label(), "x": [float(v) for v in line.get_xdata()],
             "y": [int(v) for v in line.get_ydata()]} for line in lines]
