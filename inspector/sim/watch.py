"""A synthetic live kernel for ``watch``: snapshots of a page_owner that leaks, without a kernel.

Design.  The long-run questions of a watch (issue 23, 26) -- does a sample
cost the same at the 10,000th as at the 100th, does memory stay flat, does
the disk stay bounded -- need many samples, and a VM gives one every second
or so.  :class:`Kernel` makes them instantly: each :meth:`Kernel.take`
returns a :class:`~inspector.history.snapshot.Snapshot` of the real schema,
as :func:`~inspector.history.snapshot.take` would, of a kernel whose
page_owner holds a few hundred steady stacks (realistic frames, split over
nodes and migratetypes, with a little noise), stacks that churn, a pool of
short-lived stacks that come and go, and one planted leak that grows by
``leak_pages`` per sample and now and then pauses.  Time moves by
``step_s`` per sample on both clocks (the target's and the host's), so a
benchmark of 10,000 samples spans what a watch at that interval would.  The
randomness is seeded: the same arguments give the same samples.
:class:`Session` is the little of a PageExt session that
:class:`~inspector.history.watch.Watcher` touches.
"""

from __future__ import annotations

import random

import pyarrow as pa

from ..history.snapshot import ALLOCATOR_FRAMES, SCHEMA, SNAPSHOT, SCHEMA_VERSION, Snapshot, top_frame
from ..model import Missing

ALLOC = ("post_alloc_hook+0x6f/0xcd", "get_page_from_freelist+0x656/0x7b2", "__alloc_pages_noprof+0xe7/0x199",
         "alloc_pages_mpol_noprof+0x79/0xcc", "folio_alloc_mpol_noprof+0x14/0x1d")
LEAK = ALLOC + ("shmem_get_folio_gfp.constprop.0.isra.0+0x1e7/0x65d", "shmem_fallocate+0x1c2/0x3f0",
                "vfs_fallocate+0x13a/0x1c0", "__x64_sys_fallocate+0x3f/0x70", "do_syscall_64+0x5d/0x170",
                "entry_SYSCALL_64_after_hwframe+0x76/0x7e")
MIGRATETYPES = ("Unmovable", "Movable", "Reclaimable")


def _frames(rng: random.Random, k: int) -> tuple:
    depth = rng.randint(6, 16)
    body = tuple(f"{rng.choice(('ext4', 'xfs', 'net', 'mm', 'fs', 'blk', 'drm', 'kvm'))}_fn_{k}_{d}"
                 f"+0x{rng.randint(16, 4095):x}/0x{rng.randint(4096, 8191):x}" for d in range(depth))
    return ALLOC + body + ("do_syscall_64+0x5d/0x170", "entry_SYSCALL_64_after_hwframe+0x76/0x7e")


class Session:
    """What a watch asks of its session: reset() between samples and what it missed."""

    live = True

    def __init__(self):
        self.missing = Missing()

    def reset(self) -> None:
        self.missing = Missing()


class Kernel:
    """A leaking kernel's page_owner, one :meth:`take` per sample."""

    def __init__(self, *, steady: int = 400, churn: int = 40, transient: int = 200, tasks: int = 120,
                 leak_pages: int = 300, step_s: float = 10.0, seed: int = 1, machine: str = "synthetic",
                 start_ns: int = 1_800_000_000_000_000_000):
        rng = self.rng = random.Random(seed)
        self.leak_pages, self.step_ns, self.machine = leak_pages, int(step_s * 1e9), machine
        self.steady = [(0x10000 + k, _frames(rng, k), rng.randint(1, 5000)) for k in range(steady)]
        self.churn = [(0x20000 + k, _frames(rng, 10000 + k)) for k in range(churn)]
        self.transient = [(0x30000 + k, _frames(rng, 20000 + k)) for k in range(transient)]
        self.tasks = [(100 + k, f"task{k % 37}") for k in range(tasks)]
        self.leak_handle, self.leaked = 0x40000, 0
        self.n, self.start_ns = 0, start_ns

    def stacks(self) -> list[tuple]:
        """(handle, frames, pages) of this sample's stacks."""
        rng = self.rng
        out = [(h, f, max(1, p + rng.randint(-3, 3))) for h, f, p in self.steady]
        out += [(h, f, rng.randint(1, 4000)) for h, f in self.churn if rng.random() < 0.8]
        out += [(h, f, rng.randint(1, 64)) for h, f in self.transient if rng.random() < 0.2]
        if rng.random() >= 0.1:  # now and then the leak pauses
            self.leaked += self.leak_pages
        if self.leaked:
            out.append((self.leak_handle, LEAK, self.leaked))
        return out

    def take(self, session=None) -> Snapshot:
        """The next sample, as :func:`inspector.history.snapshot.take` returns one."""
        rng = self.rng
        t_ns = self.start_ns + self.n * self.step_ns
        clock_ns = 3_600 * 10**9 + self.n * self.step_ns
        self.n += 1
        rows: dict[str, list] = {c: [] for c in SCHEMA.names}

        def add(*values):
            for c, v in zip(SCHEMA.names[:11], values):
                rows[c].append(v)

        total = 0
        stacks = self.stacks()
        for h, frames, pages in stacks:
            text, top = "\n".join(frames), top_frame(frames)
            split = {(0, MIGRATETYPES[h % 3]): pages - pages // 3, (1, MIGRATETYPES[(h + 1) % 3]): pages // 3}
            for (node, mt), p in split.items():
                if p:
                    add("stack", h, text, top, None, None, None, node, mt, p, max(1, p // 2))
            total += pages
        for pid, comm in self.tasks:
            p = rng.randint(1, 2000)
            add("task", None, None, None, pid, pid, comm, pid % 2, "Movable", p, p)
        n = len(rows["kind"])
        rows["time"] = [t_ns // 1000] * n
        rows["machine"], rows["release"], rows["boot_id"] = [self.machine] * n, ["6.12.0-synthetic"] * n, \
            ["5e1f0c4a-0000-4000-8000-000000000001"] * n
        stack_rows = sum(1 for k in rows["kind"] if k == "stack")
        meta = {"format": SNAPSHOT, "schema": SCHEMA_VERSION, "tool_version": "synthetic", "time_ns": t_ns,
                "time": str(t_ns), "target": {"kind": "qemu", "path": "synthetic"}, "release": "6.12.0-synthetic",
                "machine": self.machine, "boot_id": rows["boot_id"][0] if n else None,
                "boot_id_source": "sysctl_bootid", "boot_digest": "0" * 32, "clock_ns": clock_ns,
                "clock_end_ns": clock_ns + 10**6, "page_size": 4096, "observer": None,
                "selection": {"range": None, "node": None}, "allocator_frames": list(ALLOCATOR_FRAMES),
                "totals": {"stack": {"rows": stack_rows, "pages": total, "allocations": 0},
                           "task": {"rows": n - stack_rows, "pages": 0, "allocations": 0}},
                "stacks": len(stacks), "corrupt_records": 0, "missing": Missing().to_json(), "read_seconds": 0.0}
        return Snapshot(pa.Table.from_pydict(rows, schema=SCHEMA), meta)


__all__ = ["Kernel", "LEAK", "Session"]
