#!/usr/bin/env python3
"""Scale benchmark: page_owner on an 8 GiB, two-node guest holding 1.5 million records.

Boots the test kernel under QEMU/TCG (page_owner=on page_table_check=on, two
NUMA nodes), fills it with a realistic mix, and for each size asked for:

* the guest's own ``cat /sys/kernel/debug/page_owner`` (through ``dd bs=1M
  iflag=fullblock`` to the 9p share, or /dev/null), timed on the guest's
  clock; its text is the oracle: records ("Page allocated"), distinct stacks,
  and a record-for-record comparison with our ``owner --format debugfs``;
* the guest paused and dumped as kdump-zlib and ELF;
* on the host, per core, best of --repeat, wall time and peak RSS (wait4):
  ``inspect`` (walk + verify), ``top --by stack``, ``top --by pid``,
  ``owner --format debugfs``, ``owner --json`` (all to /dev/null), the time
  to the first line of ``owner --format debugfs``, and a probe that times the
  start-up (interpreter, debug info, discovery, walk) and the floor: each
  page_ext table and its memmap span read with prog.read, 32768 entries at a
  time, nothing decoded;
* ``top --by stack`` live over QMP (on the largest size).

The mix: ftrace instances and kprobe events; scripts/pagemix.c (built static
on the host) along many kernel paths under three NUMA policies, 20,000 small
files, pipes and unix sockets nobody reads, loopback TCP/UDP; then the bulk,
to the size asked: tmpfs files (dd), anonymous memory in processes named like
a server's (postgres, java, redis-server, ...) and page cache (a sparse host
file read through a second 9p share mounted cache=loose).

Sizes that share a guest size share one boot: the guest is filled to the
smaller record count, measured, then filled further (the stacks stay the
same, so peak RSS can be compared).  The report gives, per core format, the
slope in us per record between the two sizes, the fixed part, and the
extrapolation to 64 million records, then each target of issue 10 with the
measured value.  Also the walk + verify of a simulated 1 TiB layout (the
simulator's synthetic Program, --sim-sections sections on two nodes).

Examples:
  scripts/bench_scale.py                                 # 6.1, 8 GiB: 0.75M and 1.5M records
  scripts/bench_scale.py --run 8192:1.5M --repeat 1      # one size, one run each
  scripts/bench_scale.py --kernel 6.12 --markdown /tmp/scale-612.md
  scripts/bench_scale.py --sim-only                      # just the synthetic 1 TiB walk + verify
  scripts/bench_scale.py --run 2048:200k --guest-cat null --no-qmp --repeat 1   # a quick shake-down
  scripts/bench_scale.py --keep --workdir /var/tmp/scale      # keep the dumps, then, after a change:
  scripts/bench_scale.py --measure /var/tmp/scale/core-8192-1500000.elf --measure /var/tmp/scale/core-8192-1500000.kdump

Dumps (an ELF of an 8 GiB guest is 8.6 GB) go to --workdir (default a new
directory under /var/tmp) and are deleted at the end unless --keep.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT))

PAGE = 4096
TARGET_RECORDS = 64_000_000  # the extrapolation point of issue 10
FRAGMENTS = {"6.1": ("pageext-6.1", "memcg", "kdump"), "6.12": ("pageext-6.1", "memcg", "kdump", "alloc-tags")}
# Processes holding the anonymous memory, named as on a server.
ANON_NAMES = ("postgres", "java", "redis-server", "mysqld", "node", "python3", "memcached", "nginx")


class Bad(Exception):
    """Bad input: one line on stderr, exit 2."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, no usage dump
        raise Bad(message)


def count(text: str) -> int:
    """1500000, 1.5M, 750k."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([kKmM]?)", text.strip())
    if not m:
        raise Bad(f"bad record count {text!r} (e.g. 1500000, 1.5M, 750k)")
    return int(float(m.group(1)) * {"": 1, "k": 1e3, "m": 1e6}[m.group(2).lower()])


@dataclass(frozen=True)
class Size:
    mem_mb: int
    records: int

    @classmethod
    def parse(cls, text: str) -> "Size":
        mem, sep, recs = text.partition(":")
        if not sep or not mem.isdigit():
            raise Bad(f"bad --run {text!r}: MEM_MIB:RECORDS, e.g. 8192:1.5M")
        size = cls(int(mem), count(recs))
        if size.mem_mb < 1024 or size.mem_mb % 256:
            raise Bad(f"bad --run {text!r}: guest memory must be a multiple of 256 MiB, at least 1024")
        # What a guest of that size can hold: the kernel, page_ext (72-80 bytes a
        # page), the memmap (64) and some headroom for the guest's own reading.
        fits = int(size.mem_mb * 256 * 0.78)
        if size.records > fits:
            raise Bad(f"bad --run {text!r}: {size.mem_mb} MiB holds about {fits} records at most")
        return size


# -- child processes ---------------------------------------------------------------------------------

@dataclass
class Timed:
    wall: float
    cpu: float  # user + system seconds of the child (wait4): what other sessions' load does not inflate
    rss_mib: float
    rc: int
    started: float  # time.time() at spawn
    out: bytes = b""


def run_child(argv: list[str], *, capture: bool = False, timeout: Optional[float] = None) -> Timed:
    """Wall time, CPU time and peak RSS (wait4) of a child, its stdout to /dev/null (or captured)."""
    started = time.time()
    t0 = time.perf_counter()
    with open(os.devnull, "wb") as null:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE if capture else null, stderr=subprocess.PIPE,
                                start_new_session=True)
        out = proc.stdout.read() if capture else b""
        deadline = time.monotonic() + (timeout if timeout is not None else 1e9)
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG if timeout is not None else 0)
            if pid:
                break
            if time.monotonic() > deadline:
                os.killpg(proc.pid, signal.SIGKILL)
                _, status, usage = os.wait4(proc.pid, 0)
                return Timed(float("inf"), float("inf"), usage.ru_maxrss / 1024, -9, started)
            time.sleep(0.2)
        wall = time.perf_counter() - t0
        err = proc.stderr.read().decode(errors="replace")
    rc = os.waitstatus_to_exitcode(status)
    if rc not in (0, 1):
        raise RuntimeError(f"{' '.join(argv)} exited {rc}: {err.strip()[-400:]}")
    return Timed(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, rc, started, out)


def best(argv: list[str], repeat: int) -> Timed:
    """The least disturbed of ``repeat`` runs: the shortest wall and CPU times
    (each its own minimum; other sessions share this machine) and the largest
    peak RSS."""
    runs = [run_child(argv) for _ in range(repeat)]
    return Timed(min(r.wall for r in runs), min(r.cpu for r in runs), max(r.rss_mib for r in runs),
                 runs[0].rc, runs[0].started)


def first_line(argv: list[str]) -> float:
    """Seconds from spawn to the first line on stdout (then the child is killed)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True)
    line = proc.stdout.readline()
    dt = time.perf_counter() - t0
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    if not line:
        raise RuntimeError(f"{' '.join(argv)} printed nothing")
    return dt


# -- the probe: start-up and floor, in a child of its own --------------------------------------------

def probe(core: str, vmlinux: str, arch: Optional[str]) -> dict:
    """Start-up phases and the floor (hidden --probe mode; timestamps are time.time())."""
    import drgn

    from inspector.session import CHUNK_PAGES, PageExt
    from inspector.walk import entry_address
    stamps = {"imported": time.time()}
    pe = PageExt.open(core, vmlinux=vmlinux, arch=arch)
    stamps["debug_info"] = time.time()
    geo = pe.geometry
    stamps["discovery"] = time.time()
    lay = pe.layout
    stamps["walk"] = time.time()
    prog, esz = pe.prog, lay.entry_size
    psz = prog.type("struct page").size
    from drgn.helpers.linux.mm import pfn_to_page
    nbytes = pages = 0
    t0, c0 = time.perf_counter(), time.process_time()
    for t in lay.online_tables():
        for lo in range(t.start_pfn, t.end_pfn, CHUNK_PAGES):
            hi = min(t.end_pfn, lo + CHUNK_PAGES)
            nbytes += len(prog.read(entry_address(t, lo, esz), (hi - lo) * esz))
            try:
                nbytes += len(prog.read(pfn_to_page(prog, lo).value_(), (hi - lo) * psz))
            except drgn.FaultError:
                pass
            pages += hi - lo
    floor, floor_cpu = time.perf_counter() - t0, time.process_time() - c0
    stamps["floor"] = time.time()
    return {"stamps": stamps, "floor_s": floor, "floor_cpu": floor_cpu, "floor_bytes": nbytes, "pages": pages,
            "tables": len(lay.tables), "release": geo.release, "entry_size": esz}


# -- the simulated 1 TiB layout -----------------------------------------------------------------------

def sim_walk(sections: int) -> dict:
    """Walk + verify of the simulator's synthetic Program with ``sections``
    present sections split over two nodes (v6.1 rules, both clients)."""
    from inspector.session import PageExt
    from inspector.sim import scenarios
    from inspector.sim.model import simulate
    from inspector.sim.synthetic import build, picture
    from inspector.versions import get
    doc = scenarios.load("boot-2-nodes")
    machine = dict(doc["input"], sections=[{"nr": i, "node": i * 2 // sections} for i in range(sections)])
    variant = get(doc["variant"])
    t0 = time.perf_counter()
    prog = build(picture(simulate(machine, variant), variant))
    t1 = time.perf_counter()
    pe = PageExt(prog)
    pe.geometry
    t2 = time.perf_counter()
    pe.layout
    t3 = time.perf_counter()
    checks = pe.checks
    t4 = time.perf_counter()
    gib = sections * 32768 * PAGE >> 30
    return {"sections": sections, "gib": gib, "tables": len(pe.layout.tables), "build_s": t1 - t0,
            "discovery_s": t2 - t1, "walk_s": t3 - t2, "verify_s": t4 - t3, "walk_verify_s": t4 - t2,
            "failed": [c.name for c in checks if c.status == "fail"]}


# -- the guest ----------------------------------------------------------------------------------------

START = r"""
start() {  # start NAME ARGS...: pagemix in the background, until it says ready
    name=$1; shift
    setsid /share/pagemix "$@" -n "$name" > /tmp/pm-$name.out 2>&1 &
    pid=$!
    while ! grep -q ready /tmp/pm-$name.out 2>/dev/null; do
        kill -0 $pid 2>/dev/null || { echo "pagemix $* -n $name died: $(cat /tmp/pm-$name.out)" >&2; exit 1; }
        sleep 0.2
    done
}
"""

# ftrace instances (ring buffers, event directories) and kprobe events on
# every hundredth traceable function.
TRACING = r"""
T=/sys/kernel/debug/tracing
for i in 1 2 3 4 5 6; do mkdir -p $T/instances/bench$i; done
n=0
for f in $(grep -v '\[' $T/available_filter_functions | awk 'NR % 100 == 1' | head -150); do
    n=$((n+1))
    echo "p:bench/p$n $f" >> $T/kprobe_events 2>/dev/null
    echo "r:bench/r$n $f" >> $T/kprobe_events 2>/dev/null
done
echo 4096 > $T/instances/bench1/buffer_size_kb
"""


class Guest:
    """The test VM and how it was filled."""

    def __init__(self, kdir: Path, mem_mb: int, work: Path):
        from testvm import TestVM, helper
        self.work = work
        self.data = work / "data"
        self.data.mkdir(parents=True, exist_ok=True)
        # The page-cache source: a sparse file as large as the guest (no disk used).
        with open(self.data / "pagecache.bin", "wb") as f:
            f.truncate(mem_mb << 20)
        self.pagecache_mib = 0
        self.anon = 0
        self.bulk = 0
        self.times: dict[str, float] = {}
        t0 = time.time()
        self.vm = TestVM(kdir, cmdline="page_owner=on page_table_check=on", mem_mb=mem_mb,
                         maxmem_mb=mem_mb + 1024, workdir=str(work / "vm"), boot_timeout=900,
                         extra_args=["-virtfs", f"local,path={self.data},mount_tag=data,security_model=none,"
                                     "readonly=on,id=data"])
        self.times["boot_s"] = time.time() - t0
        shutil.copy(helper("pagemix"), self.vm.share / "pagemix")
        self.sh("mount -o remount,size=95% /tmp; mkdir -p /mnt/data /tmp/bulk && "
                "mount -t 9p -o trans=virtio,version=9p2000.L,cache=loose,msize=512000,ro data /mnt/data")

    def sh(self, script: str, timeout: float = 3600) -> str:
        return self.vm.run(script, timeout=timeout).check().out

    def used_pages(self) -> int:
        info = dict(re.findall(r"^(\w+):\s+(\d+) kB", self.sh("cat /proc/meminfo"), re.M))
        return (int(info["MemTotal"]) - int(info["MemFree"])) // 4

    def diversity(self) -> None:
        """The many-paths part of the mix, once per boot."""
        t0 = time.time()
        self.sh(TRACING)
        self.sh(START + "\n".join(f"start mix-{p} paths -p {p}" for p in ("default", "interleave", "preferred-many"))
                + "\nstart rsync files -d /tmp/files -c 20000\nstart logger pipes -m 64\nstart dbus-daemon socks -m 64")
        self.times["diversity_s"] = time.time() - t0

    def records(self, exe: str, vmlinux: str) -> int:
        """Allocated records now, counted by our own tool on a kdump-zlib dump
        (seconds for an 8 GiB guest; the kernel's own count takes minutes)."""
        core = self.work / "count.kdump"
        self.vm.pause()
        try:
            self.vm.dump(str(core), "kdump-zlib")
        finally:
            self.vm.resume()
        t = run_child([exe, "top", str(core), "-s", vmlinux, "--arch", "x86_64", "--no-progress", "--by", "pid",
                       "--json"], capture=True)
        core.unlink()
        return sum(r["allocations"] for r in json.loads(t.out)["rows"])

    def fill(self, records: int, exe: str, vmlinux: str) -> int:
        """Bulk until page_owner holds ``records`` allocated records (1% over):
        45% tmpfs, 40% anonymous memory, 15% page cache, a round at a time,
        each round sized from a fresh count (bulk pages are order 0: one
        record each).  Returns the count."""
        t0 = time.time()
        have = self.records(exe, vmlinux)
        for _ in range(6):
            need_mib = (int(records * 1.01) - have) * PAGE >> 20
            if need_mib <= 0:
                break
            need_mib += 4
            tmpfs, anon = need_mib * 45 // 100, need_mib * 40 // 100
            cache = min(need_mib - tmpfs - anon, (self.data / "pagecache.bin").stat().st_size // (1 << 20)
                        - self.pagecache_mib)
            lines = [START]
            while anon > 0:
                part = min(anon, 512)
                name = ANON_NAMES[self.anon % len(ANON_NAMES)]
                lines.append(f"start {name} anon -m {part}")
                self.anon += 1
                anon -= part
            if tmpfs > 0:
                lines.append(f"dd if=/dev/zero of=/tmp/bulk/{self.bulk} bs=1M count={tmpfs} 2>/dev/null")
                self.bulk += 1
            if cache > 0:
                lines.append(f"dd if=/mnt/data/pagecache.bin of=/dev/null bs=1M skip={self.pagecache_mib} "
                             f"count={cache} 2>/dev/null")
                self.pagecache_mib += cache
            self.sh("\n".join(lines))
            have = self.records(exe, vmlinux)
        self.times["fill_s"] = time.time() - t0
        return have

    def kernel_text(self, out: Optional[Path]) -> dict:
        """The guest's own cat of /sys/kernel/debug/page_owner, to ``out`` (via
        the share) or /dev/null; its time on the guest's clock, and a lower
        bound of local_clock() when it began (for the comparison)."""
        dest = "/share/po.txt" if out else "/dev/null"
        t0 = time.time()
        res = self.sh("grep -m1 exec_start /proc/self/sched; cat /proc/uptime; "
                      f"cat /sys/kernel/debug/page_owner | dd bs=1M iflag=fullblock of={dest} 2>/dev/null; "
                      "cat /proc/uptime", timeout=6 * 3600)
        host = time.time() - t0
        m = re.search(r"se\.exec_start\s*:\s*(\d+)\.(\d{6})", res)
        ups = [float(x.split()[0]) for x in res.splitlines() if re.fullmatch(r"[\d.]+ [\d.]+", x.strip())]
        start_ns = (int(m.group(1)) * 10**6 + int(m.group(2))) - 10**9 if m else 0  # less a second
        info = {"guest_s": ups[-1] - ups[0], "host_s": host, "start_ns": start_ns}
        if out:
            shutil.move(self.vm.share / "po.txt", out)
            info["bytes"] = out.stat().st_size
        return info

    def dump(self, path: Path, fmt: str) -> dict:
        t0 = time.time()
        self.vm.dump(str(path), fmt)
        return {"s": time.time() - t0, "bytes": path.stat().st_size}


# -- the oracle: the kernel's own text ---------------------------------------------------------------

RECORD = re.compile(rb"Page allocated via order \d+, .*?, ts (\d+) ns")
PFN = re.compile(rb"^PFN (0x[0-9a-f]+|\d+) ", re.M)


def records_of(stream) -> Iterator[tuple[int, int, bytes]]:
    """(pfn, ts, block) of each record of a debugfs text, read 1 MiB at a time."""
    buf = b""
    while True:
        chunk = stream.read(1 << 20)
        if chunk:
            buf += chunk
        parts = buf.split(b"\n\n")
        buf = parts.pop() if chunk else b""
        for block in parts:
            if not block.startswith(b"Page allocated"):
                continue
            m, p = RECORD.match(block), PFN.search(block)
            yield (int(p.group(1), 0) if p else -1), (int(m.group(1)) if m else -1), block
        if not chunk:
            return


def stack_of(block: bytes) -> bytes:
    return b"\n".join(line for line in block.split(b"\n")[2:] if line.startswith(b" "))


def kernel_counts(path: Path) -> dict:
    """Records and distinct stacks in the kernel's text (memory: the stack digests)."""
    recs, stacks = 0, set()
    with open(path, "rb") as f:
        for _, _, block in records_of(f):
            recs += 1
            stacks.add(hashlib.blake2b(stack_of(block), digest_size=16).digest())
    return {"records": recs, "stacks": len(stacks)}


def without_flags(block: bytes) -> bytes:
    return re.sub(rb" Flags .*", b"", block)


def compare(kernel: Path, ours_argv: list[str], start_ns: int) -> dict:
    """The kernel's text against ours, merged by pfn (both are in pfn order):
    identical; differing only in the live page flags; explained by timestamps
    (a record allocated after the kernel's read began, on either side);
    on the kernel's side only (the page was freed since); on ours only and
    older than the read; differing otherwise."""
    out = {"identical": 0, "flags_only": 0, "explained": 0, "kernel_only": 0, "ours_only_old": 0, "differs": 0,
           "examples": []}
    proc = subprocess.Popen(ours_argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    with open(kernel, "rb") as kf:
        ks, os_ = records_of(kf), records_of(proc.stdout)
        k, o = next(ks, None), next(os_, None)
        while k is not None or o is not None:
            if o is None or (k is not None and k[0] < o[0]):
                out["kernel_only"] += 1
                k = next(ks, None)
                continue
            if k is None or o[0] < k[0]:
                if o[1] >= start_ns:
                    out["explained"] += 1
                else:
                    out["ours_only_old"] += 1
                    if len(out["examples"]) < 3:
                        out["examples"].append(("ours only", o[2][:400].decode(errors="replace")))
                o = next(os_, None)
                continue
            if k[2] == o[2]:
                out["identical"] += 1
            elif without_flags(k[2]) == without_flags(o[2]):
                out["flags_only"] += 1
            elif max(k[1], o[1]) >= start_ns:
                out["explained"] += 1
            else:
                out["differs"] += 1
                if len(out["examples"]) < 3:
                    out["examples"].append(("differs", k[2][:400].decode(errors="replace"),
                                            o[2][:400].decode(errors="replace")))
            k, o = next(ks, None), next(os_, None)
    proc.wait()
    return out


# -- measurements on one core -------------------------------------------------------------------------

COMMANDS = {  # name: pageext-inspect arguments after the target
    "startup": ["clients"],  # debug info, discovery and the walk, through the whole CLI
    "inspect": [],
    "top_stack": ["top", "--by", "stack"],
    "top_pid": ["top", "--by", "pid"],
    "debugfs": ["owner", "--format", "debugfs"],
    "json": ["owner", "--json"],
}
DECODES = ("top_stack", "top_pid", "debugfs", "json")


def command(exe: str, name: str, target: list[str], vmlinux: str, arch: list[str]) -> list[str]:
    args = COMMANDS[name]
    return [exe, *args[:1], *target, "-s", vmlinux, *arch, "--no-progress", *args[1:]]


def core_kind(path: Path) -> str:
    with open(path, "rb") as f:
        return "elf" if f.read(4) == b"\x7fELF" else "kdump"


def measure(core: Path, vmlinux: str, repeat: int, exe: str) -> dict:
    kind = core_kind(core)
    arch = ["--arch", "x86_64"] if kind == "kdump" else []
    res: dict = {"kind": kind, "core": str(core)}
    probes = []
    for _ in range(repeat):
        t = run_child([sys.executable, __file__, "--probe", str(core), vmlinux, arch[-1] if arch else "-"],
                      capture=True)
        p = json.loads(t.out)
        st = p["stamps"]
        p["phases"] = {"python+imports": st["imported"] - t.started, "debug info": st["debug_info"] - st["imported"],
                       "discovery": st["discovery"] - st["debug_info"], "walk": st["walk"] - st["discovery"]}
        p["rss_mib"] = t.rss_mib
        probes.append(p)
    res["floor"] = {"s": min(p["floor_s"] for p in probes), "cpu": min(p["floor_cpu"] for p in probes),
                    "rss_mib": max(p["rss_mib"] for p in probes)}
    res["phases"] = {k: min(p["phases"][k] for p in probes) for k in probes[0]["phases"]}
    for name in COMMANDS:
        t = best(command(exe, name, [str(core)], vmlinux, arch), repeat)
        res[name] = {"s": t.wall, "cpu": t.cpu, "rss_mib": t.rss_mib}
        print(f"    {kind:<6} {name:<10} {t.wall:8.2f} s wall {t.cpu:8.2f} s CPU {t.rss_mib:7.0f} MiB", flush=True)
    res["ttfl_s"] = min(first_line(command(exe, "debugfs", [str(core)], vmlinux, arch)) for _ in range(repeat))
    js = run_child([exe, "top", str(core), "-s", vmlinux, *arch, "--no-progress", "--by", "stack", "--json"],
                   capture=True)
    rows = json.loads(js.out)["rows"]
    res["records"] = sum(r["allocations"] for r in rows)
    res["stacks"] = len(rows)
    print(f"    {kind:<6} floor {res['floor']['s']:.2f} s, first line {res['ttfl_s']:.2f} s; start-up phases "
          + ", ".join(f"{k} {v:.2f} s" for k, v in res["phases"].items())
          + f"; {res['records']} records, {res['stacks']} stacks", flush=True)
    return res


# -- the report ----------------------------------------------------------------------------------------

def busy(m: dict, name: str, clock: str = "s") -> float:
    """Seconds of a command beyond the CLI's start-up (``clock``: "s" wall, "cpu")."""
    return m[name][clock] - m["startup"][clock]


def rate(m: dict, name: str, clock: str = "s") -> float:
    """Records per second excluding start-up."""
    b = busy(m, name, clock)
    return m["records"] / b if b > 0 else float("inf")


def fit(points: list[tuple[int, float]]) -> Optional[tuple[float, float]]:
    """(fixed seconds, seconds per record) through the smallest and largest point."""
    if len(points) < 2:
        return None
    (r0, t0), (r1, t1) = min(points), max(points)
    if r1 == r0:
        return None
    slope = (t1 - t0) / (r1 - r0)
    return t0 - slope * r0, slope


def num(v) -> str:
    return f"{v:,}" if isinstance(v, int) else "-"


def report(results: list[dict], sim: Optional[dict], kernel: str) -> str:
    lines = []
    cores = [(r, m) for r in results for m in r["cores"]]
    if cores:
        lines += ["Seconds, best of the runs: wall / CPU (user + system).  Start-up is `clients` (debug info, "
                  "discovery, walk through the whole CLI); the floor reads every page_ext table and its memmap "
                  "span with prog.read, nothing decoded.", "",
                  "| kernel | guest | core | records (ours / kernel) | stacks (ours / kernel) | start-up | floor | "
                  "inspect | top --by stack | top --by pid | owner debugfs | owner --json | first line |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r, m in cores:
            kr = r.get("kernel_counts", {})
            t = " | ".join(f"{m[n]['s']:.2f} / {m[n]['cpu']:.2f}" for n in ("startup", "floor", "inspect", *DECODES))
            lines.append(f"| {kernel} | {r['mem_mb'] // 1024 if r.get('mem_mb') else '?'} GiB, 2 nodes | {m['kind']} | "
                         f"{m['records']:,} / {num(kr.get('records'))} | {m['stacks']:,} / {num(kr.get('stacks'))} | "
                         f"{t} | {m['ttfl_s']:.2f} |")
        lines += ["", "Records per second excluding start-up (records / (time - start-up)), wall / CPU; "
                  "x floor = (time - start-up) / floor, CPU; peak RSS in MiB.", "",
                  "| core | records | top --by stack | top --by pid | owner debugfs | owner --json | top x floor | "
                  "RSS floor | RSS inspect | RSS top stack | RSS top pid | RSS debugfs | RSS json |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r, m in cores:
            rates = " | ".join(f"{rate(m, n):,.0f} / {rate(m, n, 'cpu'):,.0f}" for n in DECODES)
            rss = " | ".join(f"{m[n]['rss_mib']:.0f}" for n in ("floor", "inspect", *DECODES))
            lines.append(f"| {m['kind']} | {m['records']:,} | {rates} | "
                         f"{busy(m, 'top_stack', 'cpu') / m['floor']['cpu']:.1f}x | {rss} |")
        guests = [r for r in results if "guest" in r]
        if guests:
            lines += ["", "Guest side (QEMU/TCG, seconds):", "",
                      "| guest | records asked | boot | mix | fill | guest cat (guest clock) | text MB | "
                      "kdump-zlib dump (MB) | ELF dump (MB) | kernel text vs our debugfs | live QMP top (MiB) |",
                      "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in guests:
            g, c = r["guest"], r.get("compare")
            cmp_text = (f"{c['identical']:,} identical, {c['flags_only']:,} live flags only, {c['explained']:,} "
                        f"by timestamps, {c['kernel_only']:,} kernel only (freed since), {c['ours_only_old']:,} "
                        f"ours only and older, {c['differs']:,} differ" if c else "-")
            qmp = r.get("qmp")
            lines.append(
                f"| {r['mem_mb'] // 1024} GiB | {r['target']:,} | {g.get('boot_s', 0):.0f} | "
                f"{g.get('diversity_s', 0):.0f} | {g.get('fill_s', 0):.0f} | {r['cat']['guest_s']:.0f} | "
                f"{r['cat'].get('bytes', 0) / 1e6:.0f} | "
                f"{r['dumps']['kdump']['s']:.0f} ({r['dumps']['kdump']['bytes'] / 1e6:.0f}) | "
                f"{r['dumps']['elf']['s']:.0f} ({r['dumps']['elf']['bytes'] / 1e6:.0f}) | {cmp_text} | "
                + (f"{qmp['s']:.1f} ({qmp['rss_mib']:.0f}), {qmp['records']:,} records" if qmp else "-") + " |")
        by_kind: dict = {}
        for r, m in cores:
            by_kind.setdefault(m["kind"], []).append(m)
        fits = []
        for kind, ms in by_kind.items():
            for name in ("floor", "inspect", *DECODES):
                f = fit([(m["records"], m[name]["cpu"]) for m in ms])
                if f:
                    fixed, slope = f
                    fits.append(f"| {kind} | {name} | {slope * 1e6:.2f} | {fixed:.2f} | "
                                f"{fixed + slope * TARGET_RECORDS:.0f} s |")
        if fits:
            lines += ["", "Per record, CPU seconds between the smallest and largest count on one guest size (the "
                      "fixed part is start-up plus reading every table of the guest: it grows with memory, "
                      "not records; 64M records need a 256 GiB machine at least):", "",
                      "| core | command | us / record | fixed s | at 64M records |", "|---|---|---|---|---|", *fits]
    if sim:
        lines += ["", f"Simulated {sim['gib']} GiB layout ({sim['sections']} sections, 2 nodes, synthetic Program): "
                  f"walk {sim['walk_s']:.2f} s + verify {sim['verify_s']:.2f} s = {sim['walk_verify_s']:.2f} s "
                  f"(discovery {sim['discovery_s']:.2f} s, building the Program {sim['build_s']:.2f} s)."]
    return "\n".join(lines) + "\n"


def targets(results: list[dict], sim: Optional[dict]) -> str:
    """Each target of issue 10 with the measured value (the most records), by
    wall time (best of the runs) and by CPU time."""
    out = ["| target | wall (best run) | CPU | verdict (wall / CPU) |", "|---|---|---|---|"]

    def verdict(ok: bool) -> str:
        return "pass" if ok else "MISS"

    def row(what: str, wall: str, cpu: str, oks: tuple[bool, bool]) -> None:
        out.append(f"| {what} | {wall} | {cpu} | {verdict(oks[0])} / {verdict(oks[1])} |")

    def rate_row(what: str, m: dict, name: str, goal: float) -> None:
        w, c = rate(m, name), rate(m, name, "cpu")
        row(what, f"{w:,.0f}/s ({w / goal:.2f}x)", f"{c:,.0f}/s ({c / goal:.2f}x)", (w >= goal, c >= goal))

    cores = [m for r in results for m in r["cores"]]
    for kind in ("elf", "kdump"):
        ms = [m for m in cores if m["kind"] == kind]
        if not ms:
            continue
        m = max(ms, key=lambda m: m["records"])
        at = f"{kind}, {m['records']:,} records"
        if kind == "elf":
            rate_row(f"`top --by stack` >= 2M records/s ({at})", m, "top_stack", 2e6)
            rate_row(f"`top --by pid` >= 2M records/s ({at})", m, "top_pid", 2e6)
            rate_row(f"`owner --format debugfs` >= 500k records/s ({at})", m, "debugfs", 5e5)
            rate_row(f"`owner --json` >= 300k records/s ({at})", m, "json", 3e5)
        else:
            for name in ("top_stack", "top_pid"):
                w, c = busy(m, name) / m["floor"]["s"], busy(m, name, "cpu") / m["floor"]["cpu"]
                row(f"`{name.replace('_', ' --by ')}` within 2x the floor ({at})",
                    f"{w:.2f}x ({busy(m, name):.2f} s vs {m['floor']['s']:.2f} s)",
                    f"{c:.2f}x ({busy(m, name, 'cpu'):.2f} s vs {m['floor']['cpu']:.2f} s)", (w <= 2, c <= 2))
            rate_row(f"`owner --format debugfs` >= 400k records/s ({at})", m, "debugfs", 4e5)
        row(f"start-up <= 1 s ({kind})", f"{m['startup']['s']:.2f} s", f"{m['startup']['cpu']:.2f} s",
            (m["startup"]["s"] <= 1, m["startup"]["cpu"] <= 1))
        if len(ms) >= 2:
            a, b = min(ms, key=lambda m: m["records"]), m
            worst = max(b[n]["rss_mib"] / a[n]["rss_mib"] for n in ("floor", "inspect", *DECODES))
            ok = worst <= 1.2
            out.append(f"| peak RSS within 20% ({kind}, {a['records']:,} -> {b['records']:,} records, "
                       f"{a['stacks']} -> {b['stacks']} stacks) | worst {worst:.2f}x | | {verdict(ok)} |")
    if sim:
        ok = sim["walk_verify_s"] <= 2
        out.append(f"| walk + verify, simulated {sim['gib']} GiB ({sim['sections']} sections) <= 2 s | "
                   f"{sim['walk_verify_s']:.2f} s | | {verdict(ok)} |")
    return "\n".join(out) + "\n"


# -- main ----------------------------------------------------------------------------------------------

def kernel_dir(version: str, given: Optional[str]) -> Path:
    if given:
        d = Path(given)
        if not (d / "vmlinux").is_file():
            raise Bad(f"{d}: no vmlinux there (a scripts/build-kernel.sh output directory)")
        return d
    args = [str(ROOT / "scripts" / "build-kernel.sh"), "-v", version]
    for frag in FRAGMENTS[version]:
        args += ["-f", str(ROOT / "fixtures" / "kernel" / f"{frag}.config")]
    out = subprocess.run(args, check=True, stdout=subprocess.PIPE, text=True).stdout
    return Path(out.strip().splitlines()[-1])


def bench_boot(kdir: Path, mem_mb: int, sizes: list[Size], args, work: Path, exe: str) -> list[dict]:
    vmlinux = str(kdir / "vmlinux")
    results = []
    guest = Guest(kdir, mem_mb, work / f"guest-{mem_mb}")
    try:
        print(f"booted {mem_mb} MiB in {guest.times['boot_s']:.0f} s", flush=True)
        guest.diversity()
        print(f"mix in {guest.times['diversity_s']:.0f} s", flush=True)
        for size in sizes:
            have = guest.fill(size.records, exe, vmlinux)
            print(f"filled to {have} records ({guest.used_pages()} pages in use) in {guest.times['fill_s']:.0f} s",
                  flush=True)
            r: dict = {"mem_mb": mem_mb, "target": size.records}
            text = work / f"kernel-{mem_mb}-{size.records}.txt" if args.guest_cat == "share" else None
            if args.guest_cat != "none":
                r["cat"] = guest.kernel_text(text)
                print(f"guest cat of page_owner: {r['cat']['guest_s']:.0f} s on the guest's clock", flush=True)
            else:
                r["cat"] = {"guest_s": float("nan"), "host_s": float("nan"), "start_ns": 0}
            guest.vm.pause()
            cores = {"kdump": work / "core.kdump", "elf": work / "core.elf"}
            r["dumps"] = {"kdump": guest.dump(cores["kdump"], "kdump-zlib"), "elf": guest.dump(cores["elf"], "elf")}
            r["guest"] = dict(guest.times)
            r["cores"] = []
            for kind in ("elf", "kdump"):
                print(f"  {kind}: {cores[kind]}", flush=True)
                r["cores"].append(measure(cores[kind], vmlinux, args.repeat, exe))
            if text:
                r["kernel_counts"] = kernel_counts(text)
                r["compare"] = compare(text, command(exe, "debugfs", [str(cores["elf"])], vmlinux, []),
                                       r["cat"]["start_ns"])
                print(f"  kernel text: {r['kernel_counts']}; compared: "
                      f"{ {k: v for k, v in r['compare'].items() if k != 'examples'} }", flush=True)
                if not args.keep:
                    text.unlink()
            if not args.no_qmp and size == sizes[-1]:
                guest.vm.resume()
                t = run_child(command(exe, "top_stack", ["--qemu", guest.vm.qmp_path], vmlinux, []),
                              timeout=args.qmp_timeout)
                js = run_child(command(exe, "top_stack", ["--qemu", guest.vm.qmp_path], vmlinux, []) + ["--json"],
                               capture=True, timeout=args.qmp_timeout)
                recs = sum(x["allocations"] for x in json.loads(js.out)["rows"]) if js.rc >= 0 else 0
                r["qmp"] = {"s": t.wall, "cpu": t.cpu, "rss_mib": t.rss_mib, "records": recs}
                print(f"  live QMP top --by stack: {t.wall:.1f} s, {t.rss_mib:.0f} MiB, {recs} records", flush=True)
                guest.vm.pause()
            if not args.keep:
                for c in cores.values():
                    c.unlink()
            else:
                for kind, c in cores.items():
                    c.rename(work / f"core-{mem_mb}-{size.records}.{kind}")
            guest.vm.resume()
            results.append(r)
            (work / "results.json").write_text(json.dumps(results, indent=1, default=str))
    finally:
        guest.vm.close()
    return results


def main(argv: Optional[list[str]] = None) -> int:
    ap = Parser(prog="bench_scale.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kernel", default="6.1", choices=sorted(FRAGMENTS),
                    help="test kernel to build or reuse (default 6.1)")
    ap.add_argument("--kernel-dir", help="a built kernel directory instead (bzImage and vmlinux)")
    ap.add_argument("--run", action="append", type=Size.parse, metavar="MEM:RECORDS",
                    help="guest MiB and allocated records to fill to (repeatable; default 8192:750k and "
                         "8192:1.5M); runs with the same MEM share one boot")
    ap.add_argument("--repeat", type=int, default=3, help="runs per measurement, the fastest kept (default 3)")
    ap.add_argument("--guest-cat", choices=("share", "null", "none"), default="share",
                    help="the guest's own cat of page_owner: to the 9p share (the oracle: counts and the "
                         "record-for-record comparison), to /dev/null, or not at all")
    ap.add_argument("--no-qmp", action="store_true", help="skip top live over QMP")
    ap.add_argument("--qmp-timeout", type=float, default=1800, help="give up on the live QMP top after this (s)")
    ap.add_argument("--sim-sections", type=int, default=8192,
                    help="sections of the simulated layout (default 8192: 1 TiB of 128 MiB sections)")
    ap.add_argument("--sim-only", action="store_true", help="only the simulated walk + verify")
    ap.add_argument("--workdir", help="where dumps and texts go (default: a new directory in /var/tmp)")
    ap.add_argument("--keep", action="store_true", help="keep the dumps and texts")
    ap.add_argument("--markdown", help="also write the tables to this file")
    ap.add_argument("--measure", action="append", metavar="CORE",
                    help="only the host measurements, on this core (ELF or kdump-zlib, e.g. kept with --keep; "
                         "repeatable): to compare two versions of the tool on the same dumps")
    ap.add_argument("--probe", nargs=3, help=argparse.SUPPRESS)  # CORE VMLINUX ARCH|-: start-up and floor
    try:
        args = ap.parse_args(argv)
        if args.probe:
            core, vmlinux, arch = args.probe
            print(json.dumps(probe(core, vmlinux, None if arch == "-" else arch)))
            return 0
        if args.repeat < 1:
            raise Bad("--repeat must be at least 1")
        if args.sim_sections < 2:
            raise Bad("--sim-sections must be at least 2")
        sizes = sorted(set(args.run or [Size(8192, 750_000), Size(8192, 1_500_000)]),
                       key=lambda s: (s.mem_mb, s.records))
        if args.markdown and not Path(args.markdown).resolve().parent.is_dir():
            raise Bad(f"--markdown {args.markdown}: no such directory")
        work = None
        for core in args.measure or []:
            if not Path(core).is_file():
                raise Bad(f"--measure {core}: no such file")
        if args.measure:
            kdir = kernel_dir(args.kernel, args.kernel_dir)
        elif not args.sim_only:
            if args.workdir:
                work = Path(args.workdir)
                if not work.is_dir():
                    raise Bad(f"--workdir {work}: no such directory")
            need = max(s.mem_mb for s in sizes) * 1.1 * (1 << 20) + 2e9
            free = shutil.disk_usage(work or "/var/tmp").free
            if free < need:
                raise Bad(f"{work or '/var/tmp'}: {free / 1e9:.1f} GB free, the dumps and texts need about "
                          f"{need / 1e9:.1f} GB")
            kdir = kernel_dir(args.kernel, args.kernel_dir)
            if work is None:
                work = Path(tempfile.mkdtemp(prefix="bench-scale-", dir="/var/tmp"))
    except Bad as e:
        print(f"bench_scale.py: error: {e}", file=sys.stderr)
        return 2
    sim = None if args.measure else sim_walk(args.sim_sections)
    if sim:
        print(f"simulated {sim['gib']} GiB: walk + verify {sim['walk_verify_s']:.2f} s", flush=True)
    results: list[dict] = []
    exe = str(Path(sys.executable).parent / "pageext-inspect")
    if args.measure:
        results.append({"cores": [measure(Path(c), str(kdir / "vmlinux"), args.repeat, exe) for c in args.measure]})
    elif not args.sim_only:
        for mem in sorted({s.mem_mb for s in sizes}):
            results += bench_boot(kdir, mem, [s for s in sizes if s.mem_mb == mem], args, work, exe)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    text = report(results, sim, args.kernel if not args.kernel_dir else Path(args.kernel_dir).name)
    text += "\n" + targets(results, sim)
    print("\n" + text)
    if args.markdown:
        Path(args.markdown).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
