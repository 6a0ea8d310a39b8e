#!/usr/bin/env python3
"""Benchmark: does ``watch`` run flat over 10,000 samples (issues 23 and 26)?

Drives the real :class:`inspector.history.watch.Watcher` -- each sample
written to the directory, compacted as a watch compacts, the running trend
updated and asked after each sample as ``run_watch`` asks it -- over a
synthetic leaking kernel (:mod:`inspector.sim.watch`: a few hundred steady
stacks, churn, short-lived stacks, one planted leak; 10 s of the target's
and the host's clock per sample), so 10,000 samples take minutes, not a
VM's hours.  Reports:

* CPU seconds per sample around samples 100, 1,000 and 10,000 (the mean of
  the 100 samples ending there; the synthetic kernel's own cost to make a
  sample is measured apart and left out; CPU time, not wall time, because
  the host it runs on is shared), and the last 1,000 samples against
  samples 100 to 1,100 (issue 26: at most 1.2x);
* the RSS slope in bytes per sample (least squares over the RSS read once an
  hour of samples, at the same moment of the hour's cycle of files -- the
  hour's compaction comes and goes -- from sample 1,000 on; issue 23: under
  1 KB per sample);
* open file descriptors at the start and the end;
* the bytes on disk, per sample in the compacted hours and in the latest
  samples' own files, and for a week at the benchmark's interval;
* the verdict (the planted leak must be the one suspect).

Usage:

    scripts/bench_watch.py [--samples 10000] [--step 10] [--stacks 400] [--keep-dir DIR]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from inspector.history.analysis import RULE, labels  # noqa: E402
from inspector.history.watch import Watcher, verdict  # noqa: E402
from inspector.sim.watch import LEAK, Kernel, Session  # noqa: E402


def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def slope(xs, ys) -> float:
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx else 0.0


def disk_bytes(d: str, w: Watcher) -> dict:
    """Bytes and samples in the compacted hours and in the latest samples' own files."""
    hours = sum(os.path.getsize(p) for p, _, _ in w._compacted)
    own = sum(os.path.getsize(p) for _, p in w._pending)
    return {"hours": hours, "hour_samples": sum(c for _, _, c in w._compacted), "hour_files": len(w._compacted),
            "own": own, "own_samples": len(w._pending), "files": len(os.listdir(d)),
            "all": sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d))}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--samples", type=int, default=10000)
    ap.add_argument("--step", type=float, default=10.0, help="seconds between samples on the synthetic clocks")
    ap.add_argument("--stacks", type=int, default=400, help="steady stacks (plus 40 churning, 200 short-lived)")
    ap.add_argument("--keep-dir", help="write the samples here (else a temporary directory, removed)")
    a = ap.parse_args()
    kernel = Kernel(steady=a.stacks, step_s=a.step, seed=1)
    make_s = [0.0]

    def take(pe):
        t = time.process_time()
        snap = kernel.take(pe)
        make_s[0] += time.process_time() - t
        return snap

    with tempfile.TemporaryDirectory(prefix="bench-watch-") as tmp:
        outdir = a.keep_dir or tmp
        os.makedirs(outdir, exist_ok=True)
        w = Watcher(Session(), interval=0, count=a.samples, outdir=outdir, take=take)
        fds0, rss0 = open_fds(), rss_bytes()
        per, wall, rss, trend = [], [], [], []
        per_hour = max(2, round(3600 / a.step))  # samples an hour: the files are compacted hour by hour
        t0 = time.perf_counter()
        last, made, cpu_last = t0, 0.0, time.process_time()
        for snap in w.samples():
            # What run_watch does after each sample (without a terminal).
            trend = w.trend(RULE)
            top = next((r for r in trend if r["growth"] > 0), None)
            if top is not None:
                labels([top["stack"]])
            del snap
            # CPU seconds of this process per sample: the host is shared (a kernel build
            # beside it), and wall time would measure the neighbours.
            now, cpu = time.perf_counter(), time.process_time()
            per.append(cpu - cpu_last - (make_s[0] - made))
            wall.append(now - last)
            last, made, cpu_last = now, make_s[0], cpu
            n = w.taken
            if n % per_hour == per_hour // 2:  # the same moment of each hour's cycle of files
                rss.append((n, rss_bytes()))
            if n % 1000 == 0:
                print(f"  {n:6d} samples: {sum(per[-100:]) / 100 * 1000:7.2f} ms CPU/sample "
                      f"({sum(wall[-100:]) / 100 * 1000:.0f} ms wall with the sample's making), "
                      f"RSS {rss_bytes() / 2**20:7.1f} MiB, {open_fds()} fds, {time.perf_counter() - t0:6.0f} s",
                      flush=True)
        fds1, rss1 = open_fds(), rss_bytes()
        disk = disk_bytes(outdir, w)
        lines = verdict(w.running, trend, RULE)
        suspects = [r["stack"] for r in trend if r["suspect"]]
    n = len(per)

    def at(k):
        return sum(per[k - 100:k]) / 100 if n >= k else float("nan")

    late = [(x, y) for x, y in rss if x >= min(1000, n // 2)] or rss
    rss_slope = slope([x for x, _ in late], [y for _, y in late]) if len(late) > 1 else float("nan")
    ratio = (sum(per[-1000:]) / 1000) / (sum(per[99:1100]) / len(per[99:1100])) if n >= 2100 else float("nan")
    week = 7 * 24 * 3600 / a.step
    print(f"\nwatch benchmark: {n} samples of a synthetic kernel ({a.stacks} steady stacks + churn, a planted "
          f"leak), {a.step:g} s apart on its clocks; synthetic sample making ({make_s[0]:.0f} s) left out")
    print(f"  CPU s/sample: at 100 {at(100):.4f}, at 1,000 {at(1000):.4f}, at 10,000 {at(10000):.4f}; "
          f"wall {sum(wall) / n:.4f} s/sample on average, with the synthetic making, on a shared host")
    print(f"  last 1,000 samples vs samples 100-1,100: {ratio:.2f}x (issue 26: <= 1.2x)")
    print(f"  RSS: {rss0 / 2**20:.1f} MiB before the first sample, {rss1 / 2**20:.1f} MiB at the end; "
          f"slope from sample {late[0][0] if late else '-'} on: {rss_slope:.1f} bytes/sample (issue 23: < 1024)")
    print(f"  open fds: {fds0} at the start, {fds1} at the end")
    hour_rate = disk["hours"] / max(1, disk["hour_samples"])
    print(f"  disk: {disk['all'] / 2**20:.1f} MiB in {disk['files']} files: {disk['hour_files']} compacted hours "
          f"({disk['hour_samples']} samples, {hour_rate / 1024:.1f} KiB/sample) and the last "
          f"{disk['own_samples']} samples' own files ({disk['own'] / max(1, disk['own_samples']) / 1024:.1f} "
          f"KiB/sample); a week at {a.step:g} s ({week:.0f} samples): "
          f"{(hour_rate * (week - disk['own_samples']) + disk['own']) / 2**30:.2f} GiB")
    print(f"  {lines[0]}")
    ok = suspects == [list(LEAK)]
    print(f"  the planted leak is the one suspect: {'yes' if ok else 'NO: ' + str(len(suspects)) + ' suspects'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
