#!/usr/bin/env python3
"""Generate a fleet of snapshots from real ones, with a planted leak (issue 22).

Design.  The seeds are real snapshots of the 6.1 and 6.12 test kernels
(fixtures/fleet/seed-*.parquet, recorded by scripts/fleet_seed.py): per
kernel, ``base`` (churn running, the leaker's first MiB) and ``leak`` (the
same boot after 16 MiB more of scripts/leaker.c's fallocate()).  The leak's
stack is the one that grew most between the two -- its frames hold
shmem_fallocate, as the kernel printed them -- and everything else a host
holds is its kernel's ``base``.

Each of HOSTS hosts runs one of the seeds' kernels (half and half, drawn)
and is snapshotted SNAPSHOTS times, one day apart at its own time of day;
one boot each.  Every stack row of the seed is scaled per host (log-normal,
sigma 0.2: hosts differ) and per snapshot (normal, 5%: moments differ),
and written with the seed's own stack texts, nodes and migratetypes, so a
host-snapshot has the seed's few hundred stacks.  Then:

* the leak: on LEAK_SHARE of all hosts (3% by default, at least one), all
  running LEAK_KERNEL, the leak's stack grows by 3000-6000 pages (drawn per
  host) a snapshot from the host's start snapshot on (the first one from
  snapshot 1, the others from a snapshot drawn in 1 .. SNAPSHOTS-2);
* a decoy: one host of the other kernel on which a busy page-cache stack
  grows by 20000 pages over the window (more than any one leaking host's
  growth, less than the leak's total over its hosts): the outlier question
  must name it, the spread question must not;
* slow growth everywhere: one more stack grows by 20 pages a snapshot on
  every host (many hosts, little each).

Files are written by the fleet writer (:func:`inspector.fleet.layout.write`)
into host=/kernel=/date= partitions; the truth -- the leak's stack text,
kernel, hosts and start, the decoy -- goes to OUT/truth.json, where the
tests and scripts/bench_fleet.py read it.

    scripts/fleet_gen.py OUT --hosts 200 --snapshots 3
    scripts/fleet_gen.py OUT --hosts 2000 --snapshots 5      # 10,000 host-snapshots
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from inspector.fleet.layout import write  # noqa: E402
from inspector.history.snapshot import META_KEY  # noqa: E402

SEEDS = ROOT / "fixtures" / "fleet"
START = _dt.datetime(2026, 11, 1, tzinfo=_dt.timezone.utc)
LEAK_PAGES = (3000, 6000)
DECOY_PAGES = 20000
SLOW_PAGES = 20


def load_seed(version: str) -> dict:
    """A kernel's seed: its base table and metadata, the leak's stack and the decoy/slow stacks."""
    base_path, leak_path = SEEDS / f"seed-{version}-base.parquet", SEEDS / f"seed-{version}-leak.parquet"
    base, leak = pq.read_table(base_path), pq.read_table(leak_path)
    meta = json.loads(pq.read_metadata(base_path).metadata[META_KEY])

    def per_stack(t: pa.Table) -> dict:
        s = t.filter(pc.equal(t["kind"], "stack")).group_by("stack").aggregate([("pages", "sum")])
        return dict(zip(s["stack"].to_pylist(), s["pages_sum"].to_pylist()))

    a, b = per_stack(base), per_stack(leak)
    leak_stack = max(b, key=lambda s: (b[s] - a.get(s, 0), s))
    if "shmem_fallocate" not in leak_stack:
        raise SystemExit(f"{leak_path}: the stack that grew most has no shmem_fallocate frame:\n{leak_stack}")
    # The decoy and the slow stack: the page cache's biggest stacks (not the leak's, not boot-time).
    cache = sorted((s for s in a if s != leak_stack and "register_early_stack" not in s
                    and ("filemap" in s or "shmem" in s)), key=lambda s: (-a[s], s))
    return {"version": version, "release": meta["release"], "table": base, "meta": meta, "leak": leak_stack,
            "decoy": cache[0], "slow": cache[1]}


def generate(out: str, hosts: int, snapshots: int, leak_share: float = 0.03, leak_kernel: str = "6.12",
             seed: int = 1, kernels: tuple = ("6.1", "6.12")) -> dict:
    rng = np.random.default_rng(seed)
    seeds = {v: load_seed(v) for v in kernels}
    if leak_kernel not in seeds:
        raise SystemExit(f"--leak-kernel {leak_kernel}: not one of {', '.join(seeds)}")
    if snapshots < 3:
        raise SystemExit("--snapshots: at least 3 (a leak starts at snapshot 1 and must grow after)")
    names = [f"host{i:05d}" for i in range(hosts)]
    kernel_of = {h: kernels[int(k)] for h, k in zip(names, rng.integers(0, len(kernels), hosts))}
    on_leak_kernel = [h for h in names if kernel_of[h] == leak_kernel]
    n_leak = max(1, round(leak_share * hosts))
    if n_leak > len(on_leak_kernel):
        raise SystemExit(f"{n_leak} leaking hosts wanted, only {len(on_leak_kernel)} run {leak_kernel}")
    leaking = sorted(rng.choice(on_leak_kernel, n_leak, replace=False).tolist())
    start = {h: (1 if i == 0 else int(rng.integers(1, max(2, snapshots - 1)))) for i, h in enumerate(leaking)}
    rate = {h: int(rng.integers(*LEAK_PAGES)) for h in leaking}
    others = [h for h in names if kernel_of[h] != leak_kernel]
    decoy = others[int(rng.integers(0, len(others)))] if others else None
    offset = {h: int(rng.integers(0, 86400)) for h in names}  # each host's time of day, seconds
    truth = {"hosts": hosts, "snapshots": snapshots, "seed": seed,
             "kernels": {seeds[v]["release"]: sum(1 for h in names if kernel_of[h] == v) for v in kernels},
             "leak": {"kernel": seeds[leak_kernel]["release"], "stack": seeds[leak_kernel]["leak"],
                      "hosts": leaking, "start": {}, "start_snapshot": start, "pages_per_snapshot": rate},
             "decoy": {"host": decoy, "kernel": seeds[kernel_of[decoy]]["release"] if decoy else None,
                       "stack": seeds[kernel_of[decoy]]["decoy"] if decoy else None, "pages": DECOY_PAGES},
             "slow": {v: seeds[v]["slow"] for v in kernels}}
    files = 0
    for h in names:
        sd = seeds[kernel_of[h]]
        t = sd["table"]
        stacks = t["stack"].to_pylist()
        is_stack = np.array([k == "stack" for k in t["kind"].to_pylist()])
        pages0 = t["pages"].to_numpy().astype(np.float64)
        allocs0 = t["allocations"].to_numpy().astype(np.float64)
        leak_rows = np.array([s == sd["leak"] for s in stacks])
        decoy_rows = np.array([s == sd["decoy"] for s in stacks])
        slow_rows = np.array([s == sd["slow"] for s in stacks])
        host_scale = rng.lognormal(0.0, 0.2, len(stacks))
        boot = str(uuid.UUID(bytes=rng.bytes(16), version=4))
        for n in range(snapshots):
            when = START + _dt.timedelta(days=n, seconds=offset[h])
            pages = pages0 * host_scale * np.clip(rng.normal(1.0, 0.05, len(stacks)), 0.5, 1.5)
            extra = np.zeros(len(stacks))
            if h in start and n >= start[h]:
                extra += leak_rows * rate[h] * (n - start[h] + 1) / max(1, leak_rows.sum())
                if n == start[h]:
                    truth["leak"]["start"][h] = when.isoformat()
            if h == decoy:
                extra += decoy_rows * DECOY_PAGES * n / (snapshots - 1) / max(1, decoy_rows.sum())
            extra += slow_rows * SLOW_PAGES * n / max(1, slow_rows.sum())
            pages = np.maximum(np.rint(pages + extra * is_stack), 1).astype(np.int64)
            allocs = np.maximum(np.rint(allocs0 * pages / np.maximum(pages0, 1)), 1).astype(np.int64)
            ns = int(when.timestamp()) * 10**9
            table = (t.set_column(t.schema.get_field_index("pages"), "pages", pa.array(pages))
                     .set_column(t.schema.get_field_index("allocations"), "allocations", pa.array(allocs))
                     .set_column(t.schema.get_field_index("time"), "time",
                                 pa.array([ns // 1000] * len(t), t.schema.field("time").type))
                     .set_column(t.schema.get_field_index("machine"), "machine", pa.array([h] * len(t)))
                     .set_column(t.schema.get_field_index("boot_id"), "boot_id", pa.array([boot] * len(t))))
            meta = dict(sd["meta"], machine=h, boot_id=boot, boot_id_source="generated", boot_digest=None,
                        time=when.isoformat(), time_ns=ns, clock_ns=None, clock_end_ns=None,
                        target={"kind": "generated", "path": f"seed-{sd['version']}-base.parquet"},
                        totals={k: {"rows": int((is_stack == (k == "stack")).sum()),
                                    "pages": int(pages[is_stack == (k == "stack")].sum()),
                                    "allocations": int(allocs[is_stack == (k == "stack")].sum())}
                                for k in ("stack", "task")})
            write(out, table, meta)
            files += 1
    leak_starts = truth["leak"]["start"]
    first = min(leak_starts.values())
    truth["leak"]["started"] = first
    truth["leak"]["started_host"] = min(h for h, v in leak_starts.items() if v == first)
    truth["files"] = files
    with open(os.path.join(out, "truth.json"), "w") as f:
        json.dump(truth, f, indent=1)
    return truth


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out")
    p.add_argument("--hosts", type=int, default=200)
    p.add_argument("--snapshots", type=int, default=3)
    p.add_argument("--leak-share", type=float, default=0.03)
    p.add_argument("--leak-kernel", default="6.12")
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args()
    t = time.time()
    truth = generate(a.out, a.hosts, a.snapshots, a.leak_share, a.leak_kernel, a.seed)
    print(f"{a.out}: {truth['files']} host-snapshots of {a.hosts} hosts ({truth['kernels']}); leak on "
          f"{len(truth['leak']['hosts'])} hosts of {truth['leak']['kernel']}; decoy on {truth['decoy']['host']}; "
          f"{time.time() - t:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
