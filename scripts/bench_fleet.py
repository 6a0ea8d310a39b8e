#!/usr/bin/env python3
"""DuckDB against Spark on generated fleets of 1,000 and 10,000 host-snapshots (issue 22).

Design.  For each size, scripts/fleet_gen.py makes the fleet (hosts x 5
daily snapshots, the leak on 3% of the hosts, all of one kernel; reused
when the directory holds that fleet already).  Then each engine runs in a
child process of its own, as a user's one session would: scan the files,
load them once, ask every question (the tests' parameters), print the
tables as JSON.  This process samples the child's whole process tree
(Spark's JVM included) every 0.1 s from /proc for the peak RSS (the sum
over the tree), and times the child from start to exit.  Then it checks
what the issue's "done" asks: both engines name the planted stack first,
with the planted hosts and kernel, and give identical tables for every
question.  Prints a Markdown table (wall time, load, questions, peak RSS).

    nice -n 10 scripts/bench_fleet.py [--work /var/tmp/fleet-bench] [--sizes 1000,10000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "scripts"), str(ROOT / "tests")]

SNAPSHOTS = 5


def tree_rss(pid: int) -> int:
    """The resident bytes of ``pid`` and all its descendants, now."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(d))
            rss[int(d)] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError, ValueError):
            continue
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        total += rss.get(p, 0)
        todo += children.get(p, [])
    return total


def child(engine: str, root: str) -> None:
    """One session: scan, load, every question; JSON on stdout."""
    from test_fleet import ASKED, params
    from inspector.fleet import engines, layout, questions
    truth = json.load(open(os.path.join(root, "truth.json")))
    truth["leak"]["id"] = __import__("test_fleet").stack_id(truth["leak"]["stack"])
    t0 = time.monotonic()
    found = layout.scan(root)
    t_scan = time.monotonic() - t0
    eng = engines.engine(engine)
    t_start = time.monotonic() - t0 - t_scan
    eng.load(found)
    t_load = time.monotonic() - t0 - t_scan - t_start
    tables, per = {}, {}
    for q, kw in ASKED:
        t = time.monotonic()
        tab = eng.query(questions.sql(q, **params(kw, truth)))
        per[f"{q} {json.dumps(kw)}"] = round(time.monotonic() - t, 2)
        tables[f"{q} {json.dumps(kw)}"] = {"columns": tab.columns, "rows": tab.rows}
    eng.close()
    print(json.dumps({"files": found.files, "scan": t_scan, "start": t_start, "load": t_load,
                      "questions": sum(per.values()), "per": per, "tables": tables}))


def run(engine: str, root: str) -> dict:
    t = time.monotonic()
    proc = subprocess.Popen([sys.executable, __file__, "--child", engine, root], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, tree_rss(proc.pid))
        time.sleep(0.1)
    out = proc.stdout.read()
    if proc.returncode:
        raise SystemExit(f"{engine} on {root}: exit {proc.returncode}")
    doc = json.loads(out)
    doc["wall"], doc["peak_rss"] = time.monotonic() - t, peak
    return doc


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", default="/var/tmp/pageext-fleet-bench")
    p.add_argument("--sizes", default="1000,10000")
    p.add_argument("--engines", default="duckdb,spark")
    p.add_argument("--child", nargs=2, metavar=("ENGINE", "DIR"), help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        child(*a.child)
        return 0
    import fleet_gen
    from test_fleet import stack_id
    rows = []
    print(f"load average before: {os.getloadavg()}", flush=True)
    for size in (int(s) for s in a.sizes.split(",")):
        root = os.path.join(a.work, f"fleet-{size}")
        truth_path = os.path.join(root, "truth.json")
        if not os.path.exists(truth_path) or json.load(open(truth_path))["files"] != size:
            t = time.monotonic()
            fleet_gen.generate(root, size // SNAPSHOTS, SNAPSHOTS)
            print(f"generated {root}: {size} host-snapshots in {time.monotonic() - t:.0f} s", flush=True)
        truth = json.load(open(truth_path))
        leak_id, hosts = stack_id(truth["leak"]["stack"]), len(truth["leak"]["hosts"])
        got = {}
        for engine in a.engines.split(","):
            d = run(engine, root)
            got[engine] = d
            top = dict(zip(d["tables"]['top {}']["columns"], d["tables"]['top {}']["rows"][0]))
            right = (top["stack_id"] == leak_id and top["hosts_grown"] == hosts and top["kernels_grown"] == 1
                     and top["kernel"] == truth["leak"]["kernel"])
            rows.append((size, engine, d["wall"], d["scan"], d["start"], d["load"], d["questions"],
                         d["peak_rss"] / 2**20, right))
            print(f"{size} {engine}: wall {d['wall']:.1f} s (scan {d['scan']:.1f}, engine start {d['start']:.1f}, "
                  f"load {d['load']:.1f}, {len(d['per'])} questions {d['questions']:.1f}), peak RSS "
                  f"{d['peak_rss'] / 2**20:.0f} MiB; leak named first with its {hosts} hosts and kernel: {right}; "
                  f"per question {d['per']}", flush=True)
        if len(got) == 2:
            same = got["duckdb"]["tables"] == got["spark"]["tables"]
            print(f"{size}: the two engines' tables identical for all {len(got['duckdb']['tables'])} questions: "
                  f"{same}", flush=True)
    print(f"load average after: {os.getloadavg()}")
    print("\n| host-snapshots | engine | wall s | scan s | engine start s | load s | 8 questions s | peak RSS MiB "
          "| leak first, hosts, kernel |")
    print("|---|---|---|---|---|---|---|---|---|")
    for size, engine, wall, scan, start, load, qs, rss, right in rows:
        print(f"| {size:,} | {engine} | {wall:.1f} | {scan:.1f} | {start:.1f} | {load:.1f} | {qs:.1f} | {rss:.0f} "
              f"| {'yes' if right else 'NO'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
