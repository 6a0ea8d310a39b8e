"""The fuzz corpus of issue 11: damaged copies of real vmcores, their runs, and the oracle.

:class:`Generator` makes a deterministic list of :class:`Mutation` s (fixed
seeds) of the clean cores of one test-VM boot: flips in mem_section, page_ext
tables, struct page_owner, the memmap, stack depot records and pools, kernel
variables the tool reads, VMCOREINFO, the ELF and kdump headers (and kdump
bitmaps, page descriptors and flattened records), truncation at random
offsets, and holes (an ELF PT_LOAD split or shrunk so pages read as missing,
or as the zeros of a file-less segment tail).  Each mutation carries the
command it goes through (every subcommand gets its share) and what it can
change (:class:`coremut.Touched`, from the clean core's :class:`coremut.Landmarks`).

:class:`Pool` runs jobs on worker processes (tests/fuzz_worker.py), each
with its own working copies of the cores, a fork per run and a hard bound.

:func:`judge` is the oracle: exit status in {0, 1, 2, 3}; no traceback and
no "internal error"; one line on stderr for bad input (2); a partial answer
(3) says so; and every record the mutation did not touch is decoded exactly
as on the clean core -- or its absence is explained (the pfn is listed as
missing, or the command refused as a whole).
"""

from __future__ import annotations

import csv
import io
import json
import os
import random
import re
import select
import struct
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Optional

import coremut
from coremut import Patch, Touched

HERE = os.path.dirname(os.path.abspath(__file__))


# -- commands -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Cmd:
    name: str  # key for results
    argv: tuple  # arguments after the command name... (the target and -s are added)
    parse: str = ""  # owner-json | owner-debugfs | owner-csv | owner-text | table-list | inspect-json | ""
    mode: str = "cli"  # cli | drgn
    weight: int = 1
    cores: tuple = ("elf61", "kdump61", "plain61")


CMDS_61 = [
    Cmd("owner-json-all", ("owner", "--json", "--trailer", "--all"), "owner-json", weight=14),
    Cmd("owner-json", ("owner", "--json", "--trailer"), "owner-json", weight=4),
    Cmd("owner-json-force", ("owner", "--json", "--trailer", "--all", "--force"), "owner-json", weight=2),
    Cmd("owner-debugfs", ("owner", "--format", "debugfs"), "owner-debugfs", weight=6),
    Cmd("owner-csv", ("owner", "--format", "csv", "--all"), "owner-csv", weight=2),
    Cmd("owner-text", ("owner",), "owner-text", weight=2),
    Cmd("owner-pfn", ("owner", "--pfn", "0x{pfn:x}", "--all", "--json", "--trailer"), "owner-json", weight=1),
    Cmd("owner-range", ("owner", "--range", "0x{lo:x}-0x{hi:x}", "--json", "--trailer", "--all"), "owner-json", weight=1),
    Cmd("top-stack", ("top",), weight=2),
    Cmd("top-json", ("top", "--by", "pid", "--json"), weight=2),
    Cmd("top-comm", ("top", "--by", "comm", "--limit", "5"), weight=1),
    Cmd("top-sort", ("top", "--format", "page_owner_sort", "--by", "stack"), weight=2),
    Cmd("top-sort-pid", ("top", "--format", "page_owner_sort", "--by", "pid"), weight=1),
    Cmd("top-show-stacks", ("top", "--format", "show_stacks"), weight=1),
    Cmd("top-handles", ("top", "--format", "handles"), weight=1),
    Cmd("table-check", ("table-check",), weight=2),
    Cmd("table-check-json", ("table-check", "--json"), weight=1),
    Cmd("table-list", ("table-check", "--list"), "table-list", weight=3),
    Cmd("inspect", ("inspect",), weight=3),
    Cmd("inspect-json", ("inspect", "--json", "--sections"), "inspect-json", weight=4),
    Cmd("clients", ("clients",), weight=1),
    Cmd("clients-json", ("clients", "--json"), weight=1),
    Cmd("validate", ("validate",), weight=2),
    Cmd("page-idle", ("page-idle",), weight=1),
    Cmd("drgn-pageext", ("pageext --sections",), mode="drgn", weight=1, cores=("elf61", "plain61")),
    Cmd("drgn-page-owner", ("page_owner --json --trailer --all",), "owner-json", mode="drgn", weight=2,
        cores=("elf61", "plain61")),
    Cmd("drgn-top", ("page_owner_top --by comm",), mode="drgn", weight=1, cores=("elf61", "plain61")),
    Cmd("drgn-table-check", ("page_table_check",), mode="drgn", weight=1, cores=("elf61", "plain61")),
]
CMDS_612 = [
    Cmd("alloc-tags", ("alloc-tags", "--limit", "20"), weight=4, cores=("elf612",)),
    Cmd("alloc-tags-json", ("alloc-tags", "--json", "--all"), weight=4, cores=("elf612",)),
    Cmd("alloc-tags-pfn", ("alloc-tags", "--pfn", "0x{pfn:x}"), weight=2, cores=("elf612",)),
    Cmd("owner-json-612", ("owner", "--json", "--trailer", "--all"), "owner-json", weight=2, cores=("elf612",)),
    Cmd("inspect-612", ("inspect", "--json"), "inspect-json", weight=1, cores=("elf612",)),
    Cmd("drgn-alloc-tags", ("alloc_tags --limit 5",), mode="drgn", weight=1, cores=("elf612",)),
]


# -- mutations ----------------------------------------------------------------------------------

@dataclass
class Mutation:
    id: int
    core: str  # elf61 | kdump61 | plain61 | elf612
    kind: str
    patches: list[Patch]
    touched: Touched
    cmd: Optional[Cmd] = None
    params: dict = field(default_factory=dict)
    what: str = ""

    def describe(self) -> str:
        return f"#{self.id} {self.core} {self.kind} [{self.what}] -> {self.cmd.name if self.cmd else '?'}"


def _value(rng: random.Random, old: bytes) -> bytes:
    """Damage for ``old``: a bit flip, a byte, all ones, zeros, random, or +-1."""
    n = len(old)
    how = rng.randrange(7)
    b = bytearray(old)
    if how == 0:
        i = rng.randrange(n * 8)
        b[i // 8] ^= 1 << (i % 8)
    elif how == 1:
        b[rng.randrange(n)] = rng.randrange(256)
    elif how == 2:
        b = bytearray(b"\xff" * n)
    elif how == 3:
        b = bytearray(n)
    elif how == 4:
        b = bytearray(rng.randbytes(n))
    else:
        v = int.from_bytes(old, "little") + (1 if how == 5 else -1)
        b = bytearray((v % (1 << (8 * n))).to_bytes(n, "little"))
    if bytes(b) == old:
        b[0] ^= 0x80
    return bytes(b)


class Core:
    """A clean core and its working copy."""

    def __init__(self, name: str, clean: str, work: str, vmlinux: str, original: Optional[str] = None):
        """``clean``: the pristine copy (an ELF's with its program headers moved
        to the end, see :func:`coremut.with_spare_phdrs`); ``original``: the
        dump as written, whose program header table the copy still holds."""
        self.name, self.clean, self.work, self.vmlinux = name, clean, work, vmlinux
        # Read from the pristine copy: the working copies are damaged and restored meanwhile.
        self.elf = coremut.Elf(clean) if name.startswith("elf") else None
        self.kdump = coremut.Kdump(clean) if not name.startswith("elf") else None
        self.original = coremut.Elf(original) if self.elf is not None and original else None

    def read_phys(self, phys: int, n: int) -> bytes:
        if self.elf is not None:
            off = self.elf.file_offset(phys)
            with open(self.clean, "rb") as f:
                f.seek(off)
                return f.read(n)
        page = self.kdump.page(phys // coremut.PAGE)
        o = phys % coremut.PAGE
        return page[o:o + n]


class Generator:
    """Deterministic mutations of the clean cores (``random.Random(seed)``)."""

    def __init__(self, cores: dict[str, Core], marks: dict[str, coremut.Landmarks],
                 records: dict[str, dict[int, dict]], variables: dict[str, list[tuple[str, int, int]]], seed: int = 11):
        self.cores, self.marks, self.records, self.variables = cores, marks, records, variables
        self.rng = random.Random(seed)
        self.n = 0

    # -- where ---------------------------------------------------------------------------------
    def _phys_in(self, ranges: list[tuple], rng: random.Random, n: int = 1) -> int:
        s, e, _ = rng.choice(ranges)
        return s + rng.randrange(max(1, e - s - n + 1))

    def _region(self, core: str, rng: random.Random, n: int) -> tuple[str, int]:
        """(region name, physical address) of damage of n bytes."""
        lm = self.marks["elf612" if core == "elf612" else "elf61"]
        recs = self.records["elf612" if core == "elf612" else "elf61"]
        kind = rng.choices(["entries", "owner", "memmap", "mem_section", "depot", "pool", "usemap",
                            "variable", "pagetable", "random"], [5, 6, 4, 2, 3, 1, 1, 4, 1, 3])[0]
        if kind == "entries":
            return kind, self._phys_in(lm.tables, rng, n)
        if kind == "owner":
            pfn = rng.choice(list(recs))
            t = next(t for t in lm.tables if t[2] <= pfn < t[2] + (t[1] - t[0]) // lm.entry_size)
            return kind, t[0] + (pfn - t[2]) * lm.entry_size + rng.randrange(lm.entry_size - n + 1)
        if kind == "memmap":
            return kind, self._phys_in(lm.memmap, rng, n)
        if kind == "mem_section":
            return kind, self._phys_in(lm.mem_section, rng, n)
        if kind == "depot" and lm.depot:
            return kind, self._phys_in(lm.depot, rng, n)
        if kind == "pool":
            return kind, self._phys_in(lm.pools, rng, n)
        if kind == "usemap":
            return kind, self._phys_in(lm.usemap, rng, n)
        if kind == "variable":
            name, phys, size = rng.choice(self.variables[core if core == "elf612" else "elf61"])
            return f"variable:{name}", phys + rng.randrange(max(1, size - n + 1))
        if kind == "pagetable":
            return kind, rng.choice(sorted(lm.page_tables)) * coremut.PAGE + rng.randrange(512) * 8
        return "random", rng.randrange(lm.max_pfn) * coremut.PAGE + rng.randrange(coremut.PAGE - n)

    # -- mutations -------------------------------------------------------------------------------
    def flip(self, core: str, rng: random.Random) -> tuple[str, list[Patch], Touched, str]:
        c = self.cores[core]
        lm = self.marks["elf612" if core == "elf612" else "elf61"]
        n = rng.choice([1, 1, 2, 4, 8, 8, 8, 16])
        region, phys = self._region(core, rng, n)
        old = c.read_phys(phys, n)
        new = _value(rng, old)
        if c.elf is not None:
            patches = c.elf.flip(phys, new)
        else:
            pfn = phys // coremut.PAGE
            page = bytearray(c.kdump.page(pfn))
            o = phys % coremut.PAGE
            page[o:o + n] = new
            patches = c.kdump.rewrite_page(pfn, bytes(page))
        return f"flip:{region}", patches, lm.touch(phys, phys + n), f"{phys:#x}+{n} {old.hex()}->{new.hex()}"

    def hole(self, core: str, rng: random.Random) -> tuple[str, list[Patch], Touched, str]:
        c = self.cores[core]
        lm = self.marks["elf612" if core == "elf612" else "elf61"]
        region, phys = self._region(core, rng, 1)
        pages = rng.choice([1, 1, 1, 2, 4, 16, 64, 512])
        a = phys // coremut.PAGE * coremut.PAGE
        b = a + pages * coremut.PAGE
        zeros = rng.random() < 0.4
        seg = next((s for s in c.elf.loads() if s.paddr <= a < s.paddr + s.filesz), None)
        if seg is None:
            return self.flip(core, rng)
        b = min(b, seg.paddr + seg.filesz)
        t = lm.touch(a, b)
        return (f"hole:{region}:{'zeros' if zeros else 'gone'}", c.elf.hole(a, b, zeros=zeros), t,
                f"{a:#x}-{b:#x}")

    def truncate(self, core: str, rng: random.Random) -> tuple[str, list[Patch], Touched, str]:
        c = self.cores[core]
        lm = self.marks["elf612" if core == "elf612" else "elf61"]
        size = os.path.getsize(c.clean)
        at = rng.choice([rng.randrange(64 << 10), rng.randrange(size), rng.randrange(size),
                         size - rng.randrange(1, 1 << 20)])
        t = Touched(translation=True)
        if c.elf is not None:
            lost = [(max(s.paddr, s.paddr + at - s.offset), s.paddr + s.filesz) for s in c.elf.loads()
                    if s.offset + s.filesz > at]
            first = min((s.offset for s in c.elf.loads()), default=0)
            if at > first:
                t = Touched()
                for a, b in lost:
                    if a < b:
                        t.merge(lm.touch(a, b))
        patches = [Patch(truncate=at)]
        if c.original is not None:  # the program headers back where the dump had them: only data is cut
            patches = [Patch(32, struct.pack("<Q", c.original.phoff)),
                       Patch(56, struct.pack("<H", c.original.phnum))] + patches
        return "truncate", patches, t, f"at {at} of {size}"

    def elf_header(self, core: str, rng: random.Random) -> tuple[str, list[Patch], Touched, str]:
        e = self.cores[core].elf
        with open(self.cores[core].clean, "rb") as f:
            head = f.read(64)
            f.seek(e.phoff)
            ph = f.read(e.phentsize * e.phnum)
        if rng.random() < 0.4:
            field_ = rng.choice([(4, 1), (5, 1), (6, 1), (16, 2), (18, 2), (32, 8), (52, 2), (54, 2), (56, 2)])
            off, n = field_
            return "elf:ehdr", [Patch(off, _value(rng, head[off:off + n]))], Touched(translation=True), \
                f"ehdr+{off}"
        i = rng.randrange(e.phnum)
        off, n = rng.choice([(0, 4), (8, 8), (16, 8), (24, 8), (32, 8), (40, 8)])
        at = i * e.phentsize + off
        return "elf:phdr", [Patch(e.phoff + at, _value(rng, ph[at:at + n]))], Touched(translation=True), \
            f"phdr{i}+{off}"

    def vmcoreinfo(self, core: str, rng: random.Random) -> tuple[str, list[Patch], Touched, str]:
        c = self.cores[core]
        if c.elf is not None:
            off, size = c.elf.vmcoreinfo()
            with open(c.clean, "rb") as f:
                f.seek(off)
                text = f.read(size)

            def patch(i: int, data: bytes) -> list[Patch]:
                return [Patch(off + i, data)]
        else:
            k = c.kdump
            text = k.data[k.offset_vmcoreinfo:k.offset_vmcoreinfo + k.size_vmcoreinfo]

            def patch(i: int, data: bytes) -> list[Patch]:
                return k.patch_logical(k.offset_vmcoreinfo + i, data)
        lines = text.split(b"\n")
        if rng.random() < 0.6:  # a value changed: a digit or hex digit of one line
            j = rng.randrange(len(lines))
            line = lines[j]
            if b"=" in line:
                pos = sum(len(x) + 1 for x in lines[:j]) + line.index(b"=") + 1
                vlen = len(line) - line.index(b"=") - 1
                if vlen:
                    i = pos + rng.randrange(vlen)
                    new = bytes([rng.choice(b"0123456789abcdef=\n\0x-")])
                    return "vmcoreinfo:value", patch(i, new), Touched(translation=True), \
                        line[:line.index(b"=")].decode(errors="replace")
        i = rng.randrange(len(text))
        return "vmcoreinfo:byte", patch(i, _value(rng, text[i:i + 1])), Touched(translation=True), f"+{i}"

    def kdump_meta(self, core: str, rng: random.Random) -> tuple[str, list[Patch], Touched, str]:
        k = self.cores[core].kdump
        where = rng.choice(["header", "header", "subheader", "bitmap", "desc", "desc", "flat", "data"])
        if where == "flat" and not k.flattened:
            where = "desc"
        if where == "header":
            off, n = rng.choice([(0, 8), (8, 4), (424, 4), (428, 4), (432, 4), (436, 4), (440, 4), (444, 4),
                                 (460, 4), (8 + 4 + 4 * 65, 65)])
            return "kdump:header", k.patch_logical(off, _value(rng, k.data[off:off + n])), \
                Touched(translation=True), f"+{off}"
        if where == "subheader":
            off = k.block + rng.randrange(0, 96, 8)
            return "kdump:subheader", k.patch_logical(off, _value(rng, k.data[off:off + 8])), \
                Touched(translation=True), f"+{off - k.block}"
        if where == "bitmap":
            off = k.block * (1 + k.sub_blocks) + rng.randrange(k.block * k.bitmap_blocks)
            return "kdump:bitmap", k.patch_logical(off, _value(rng, k.data[off:off + 1])), \
                Touched(translation=True), f"+{off}"
        if where == "desc":
            i = rng.randrange(k.ndesc)
            off = k.desc + 24 * i + rng.choice([0, 8, 12, 16])
            return "kdump:desc", k.patch_logical(off, _value(rng, k.data[off:off + 4])), \
                Touched(translation=True), f"desc {i}"
        if where == "flat":
            # a record header of makedumpfile's flattened stream
            _lo, fo, _s = rng.choice(k.chunks)
            off = fo - 16 + rng.choice([0, 8])
            with open(self.cores[core].clean, "rb") as f:
                f.seek(off)
                old = f.read(8)
            return "kdump:flattened", [Patch(off, _value(rng, old))], Touched(translation=True), f"@{off}"
        # raw stored (compressed) bytes of a page we read
        lm = self.marks["elf61"]
        region, phys = self._region(core, rng, 1)
        pfn = phys // coremut.PAGE
        d = k.desc_of(pfn)
        if d is None:
            return self.kdump_meta(core, rng)
        shared = sum(1 for p in (pfn - 1, pfn + 1) if (k.desc_of(p) or (0, -1))[1] == d[1])
        t = lm.touch(pfn * coremut.PAGE, (pfn + 1) * coremut.PAGE)
        if shared:
            t.translation = True  # QEMU stores every zero page once: all of them change
        n = rng.choice([1, 4, 8])
        return f"kdump:data:{region}", k.flip_data(pfn, rng.randrange(1 << 16), rng.randbytes(n)), t, \
            f"pfn {pfn:#x}"

    def kdump_truncate(self, core: str, rng: random.Random) -> tuple[str, list[Patch], Touched, str]:
        size = os.path.getsize(self.cores[core].clean)
        at = rng.choice([rng.randrange(8192), rng.randrange(size), size - rng.randrange(1, 1 << 20)])
        return "truncate", [Patch(truncate=max(0, at))], Touched(translation=True), f"at {at} of {size}"

    # -- the corpus -------------------------------------------------------------------------------
    def corpus(self, plan: dict[str, int], cmds: list[Cmd]) -> list[Mutation]:
        out: list[Mutation] = []
        for core, count in plan.items():
            usable = [c for c in cmds if core in c.cores]
            # every command of this core at least once, the rest by weight
            order = list(usable) + self.rng.choices(usable, [c.weight for c in usable], k=max(0, count - len(usable)))
            self.rng.shuffle(order)
            for i in range(count):
                rng = random.Random(f"{core}-{i}-{self.rng.random()}")
                if core.startswith("elf"):
                    kinds = [self.flip] * 8 + [self.hole] * 3 + [self.truncate, self.elf_header, self.vmcoreinfo]
                else:
                    kinds = [self.flip] * 4 + [self.kdump_meta] * 4 + [self.kdump_truncate, self.vmcoreinfo]
                    if self.cores[core].kdump.flattened:
                        kinds = [k for k in kinds if k != self.flip]  # only plain files are rewritten
                kind, patches, touched, what = rng.choice(kinds)(core, rng)
                cmd = order[i % len(order)]
                if cmd.mode == "drgn" and touched.translation:
                    cmd = next(c for c in usable if c.name.startswith("owner-json"))
                m = Mutation(self.n, core, kind, patches, touched, cmd, what=what)
                recs = self.records["elf612" if core == "elf612" else "elf61"]
                pfn = rng.choice(sorted(recs)) if recs else 0x1000
                m.params = {"pfn": pfn, "lo": max(0, pfn - 300), "hi": pfn + 300}
                self.n += 1
                out.append(m)
        return out


def argv_of(m: Mutation, core: Core) -> list[str]:
    args = [a.format(**m.params) for a in m.cmd.argv]
    if m.cmd.mode == "drgn":
        return args
    return [args[0], core.work, "-s", core.vmlinux, "--no-progress", *args[1:]]


# -- running -------------------------------------------------------------------------------------

class Pool:
    """Worker processes (tests/fuzz_worker.py), one job each at a time."""

    def __init__(self, n: int, outdir: str):
        self.outdir = outdir
        self.procs = []
        for i in range(n):
            p = subprocess.Popen([sys.executable, os.path.join(HERE, "fuzz_worker.py"), os.path.join(outdir, f"w{i}")],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
            ready = json.loads(p.stdout.readline())
            assert "ready" in ready, ready
            self.procs.append(p)

    def run(self, jobs: list[dict], per_worker: list[dict[str, str]], on_result) -> None:
        """Run jobs; ``per_worker[i]`` maps a job's core name to worker i's copy."""
        pending = list(jobs)
        busy: dict[int, dict] = {}
        while pending or busy:
            for i, p in enumerate(self.procs):
                if i not in busy and pending:
                    job = dict(pending.pop(0))
                    job["core"], job["clean"] = per_worker[i][job["core_name"]]
                    if job["mode"] == "cli":
                        job["argv"] = [job["core"] if a == "@CORE@" else a for a in job["argv"]]
                    p.stdin.write(json.dumps(job) + "\n")
                    p.stdin.flush()
                    busy[i] = job
            ready, _, _ = select.select([self.procs[i].stdout for i in busy], [], [])
            for i in list(busy):
                if self.procs[i].stdout in ready:
                    line = self.procs[i].stdout.readline()
                    if not line:
                        raise RuntimeError(f"fuzz worker {i} died")
                    res = json.loads(line)
                    job = busy.pop(i)
                    on_result(job, res)

    def close(self) -> None:
        for p in self.procs:
            try:
                p.stdin.close()
                p.wait(30)
            except Exception:
                p.kill()


def job_of(m: Mutation, core: Core, timeout: float) -> dict:
    argv = argv_of(m, core)
    if m.cmd.mode == "cli":
        argv = [("@CORE@" if a == core.work else a) for a in argv]
    return {"id": m.id, "core_name": m.core, "mode": m.cmd.mode, "argv": argv,
            "command": " ".join(argv) if m.cmd.mode == "drgn" else "", "vmlinux": core.vmlinux,
            "patches": [[p.offset, p.data.hex(), p.truncate] for p in m.patches], "timeout": timeout}


# -- parsing ---------------------------------------------------------------------------------------

def parse(kind: str, text: str) -> tuple[dict, Optional[dict]]:
    """(pfn -> record, the "missing" object if the output has one)."""
    from conftest import unhex  # the hex strings of 64-bit quantities as ints (README "JSON")
    recs: dict = {}
    missing = None
    if kind == "owner-json":
        for line in text.splitlines():
            if not line.strip():
                continue
            d = unhex(json.loads(line))
            if "missing" in d and "pfn" not in d:
                missing = d["missing"]
            else:
                recs[d["pfn"]] = d
    elif kind == "owner-debugfs":
        for block in text.split("\n\n"):
            if block.strip():
                p = re.search(r"^PFN (0x[0-9a-f]+|\d+) ", block, re.M)
                recs[int(p.group(1), 0)] = block
    elif kind in ("owner-csv", "table-list"):
        for row in csv.DictReader(io.StringIO(text)):
            recs[int(row["pfn"])] = row
    elif kind == "owner-text":
        for block in text.split("\n\n"):
            m = re.match(r"pfn (0x[0-9a-f]+)", block)
            if m:
                recs[int(m.group(1), 16)] = block
    elif kind == "inspect-json":
        d = unhex(json.loads(text))
        missing = d.get("missing")
        recs = {"tables": d["tables"], "checks": {c["name"]: c["status"] for c in d["checks"]}}
    return recs, missing


RAW = ("pfn", "state", "order", "gfp_mask", "handle", "free_handle", "pid", "tgid", "comm", "ts_nsec",
       "free_ts_nsec", "free_pid", "free_tgid")


def _in_ranges(pfn: int, ranges) -> bool:
    return any(a <= pfn <= b for a, b in ranges or ())


@dataclass
class Verdict:
    ok: bool
    why: str = ""
    compared: int = 0  # untouched records compared


def judge(m: Mutation, rc: int, hung: bool, out: str, err: str, clean: Optional[tuple[dict, Optional[dict]]],
          clean_rc: int, owners: Optional[dict] = None) -> Verdict:
    """The oracle (see the module's docstring).  ``owners``: the clean core's
    page_owner records by pfn (``owner --json --all``), for their handles."""
    if hung:
        return Verdict(False, "hang: killed at the bound")
    if rc not in (0, 1, 2, 3):
        return Verdict(False, f"exit status {rc}")
    if "Traceback" in err or "internal error" in err:
        return Verdict(False, "traceback / internal error: " + err.strip().splitlines()[-1][:300])
    if "error: cannot read the target:" in err:
        # A read fault nobody handled: the whole answer lost for what may be one page.
        return Verdict(False, "unhandled read fault: " + err.strip().splitlines()[-1][:300])
    lines = [ln for ln in err.splitlines() if ln.strip()]
    if m.cmd.mode == "drgn":  # no exit status in drgn: only no traceback, and a refusal is one line
        if rc == 2 and len(lines) != 1:
            return Verdict(False, f"a refused %command with {len(lines)} stderr lines: {err[:400]}")
        rc = 3 if rc == 0 and any(ln.startswith("pageext-inspect: partial:") for ln in lines) else rc
    if m.cmd.mode == "cli":
        if any(not ln.startswith("pageext-inspect: ") for ln in lines):
            return Verdict(False, f"a stderr line not ours: {next(ln for ln in lines if not ln.startswith('pageext-inspect: '))[:200]}")
        if rc == 2 and len(lines) != 1:
            return Verdict(False, f"exit 2 with {len(lines)} stderr lines: {err[:400]}")
        if rc == 3 and not any(ln.startswith("pageext-inspect: partial:") for ln in lines):
            return Verdict(False, "exit 3 without a 'partial:' line")
        if rc == 0 and any(ln.startswith("pageext-inspect: partial:") for ln in lines):
            return Verdict(False, "'partial:' lines but exit 0")
    if not m.cmd.parse or clean is None or rc == 2:
        return Verdict(True)
    try:
        recs, missing = parse(m.cmd.parse, out)
    except Exception as e:  # noqa: BLE001 -- unparsable output is a failure
        return Verdict(False, f"unparsable {m.cmd.parse} output: {type(e).__name__}: {e}")
    if m.cmd.parse == "owner-json" and missing is None and rc in (0, 3):
        return Verdict(False, "owner --json without its final 'missing' line")
    if rc == 3 and missing is not None and not any(missing.get(k) for k in missing):
        return Verdict(False, "exit 3 but 'missing' is empty")
    if missing is not None and any(missing.get(k) for k in missing) and rc == 0:
        return Verdict(False, "'missing' not empty but exit 0")
    t = m.touched
    if t.translation:
        return Verdict(True)
    crecs, _ = clean
    if m.cmd.parse == "inspect-json":
        if t.local and not t.sections and recs["tables"] != crecs["tables"]:
            return Verdict(False, "tables differ from the clean core's")
        return Verdict(True)
    refused = rc == 1 and not recs
    lost_pe = (missing or {}).get("page_ext", [])
    lost_mm = (missing or {}).get("memmap", [])
    lost_st = set((missing or {}).get("stack_handles", []))
    hidden = (missing or {}).get("records_hidden", 0)
    compared = 0
    window = None
    if m.cmd.name == "owner-pfn":
        window = (m.params["pfn"], m.params["pfn"])
    elif m.cmd.name == "owner-range":
        window = (m.params["lo"], m.params["hi"])
    for pfn, c in crecs.items():
        if window and not window[0] <= pfn <= window[1]:
            continue
        if pfn in t.entries:
            continue
        r = recs.get(pfn)
        if r is None:
            if refused or _in_ranges(pfn, lost_pe):
                continue
            if m.cmd.parse in ("owner-debugfs", "table-list") and (t.memmap or _in_ranges(pfn, lost_mm) or hidden):
                continue  # buddy skips follow the memmap; a record without its struct page is not printed
            if m.cmd.parse == "owner-debugfs" and (t.handles or lost_st) and hidden:
                continue
            return Verdict(False, f"record of untouched pfn {pfn:#x} lost silently (exit {rc})", compared)
        compared += 1
        o = (owners or {}).get(pfn) or {}
        if {o.get("handle"), o.get("free_handle")} & t.handles and m.cmd.parse != "owner-json":
            continue  # its stack record was damaged: any frame may read otherwise
        why = _differs(m.cmd.parse, c, r, pfn, t, rc, lost_st, lost_mm)
        if why:
            return Verdict(False, f"untouched pfn {pfn:#x}: {why}", compared)
    for pfn in recs:
        if pfn not in crecs and pfn not in t.entries and (not window or window[0] <= pfn <= window[1]):
            if m.cmd.parse == "owner-debugfs" and t.memmap:
                continue  # a buddy head gone stale uncovers what the kernel would print too
            return Verdict(False, f"record of untouched pfn {pfn:#x} appeared", compared)
    return Verdict(True, compared=compared)


def _differs(kind: str, c, r, pfn: int, t: Touched, rc: int, lost_st: set, lost_mm) -> str:
    if kind == "owner-json":
        corrupt = set(r.get("corrupt") or [])
        for f in RAW:
            if c.get(f) != r.get(f):
                if r.get(f) is None and rc == 1 and corrupt:
                    continue  # shown as corrupt, not as fact
                return f"{f} {c.get(f)!r} -> {r.get(f)!r}"
        if t.global_:
            return ""
        hs = {c.get("handle"), c.get("free_handle")}
        for f in ("alloc_stack", "free_stack"):
            if c.get(f) != r.get(f):
                h = c.get("handle" if f == "alloc_stack" else "free_handle")
                if h in t.handles:
                    continue  # its stack record was damaged: any frame may read otherwise
                if r.get(f) is None and h in lost_st:
                    return f"{f}: handle {h:#x} untouched but reported missing"
                return f"{f} differs"
        if c.get("memcg") != r.get("memcg") and pfn not in t.memmap and not _in_ranges(pfn, lost_mm):
            return f"memcg {c.get('memcg')!r} -> {r.get('memcg')!r}"
        if c.get("pageblock_migratetype") != r.get("pageblock_migratetype") and pfn not in t.pageblock:
            return "pageblock_migratetype differs"
        for f in ("gfp_flags", "migratetype", "last_migrate_reason"):
            if c.get(f) != r.get(f):
                return f"{f} differs"
        if sorted(c.get("corrupt") or []) != sorted(r.get("corrupt") or []) and not (rc == 1 and hs & t.handles):
            return f"corrupt {c.get('corrupt')} -> {r.get('corrupt')}"
        return ""
    if kind == "owner-debugfs":
        if t.global_ or pfn in t.memmap or pfn in t.pageblock:
            return ""
        return "" if c == r else "text differs"
    if kind == "owner-csv":
        for f in RAW:
            if f in c and c[f] != r.get(f):
                if r.get(f) == "" and rc == 1:
                    continue
                return f"{f} {c[f]!r} -> {r.get(f)!r}"
        return ""
    if kind == "owner-text":
        if t.global_ or pfn in t.memmap or pfn in t.pageblock or t.handles:
            return ""
        return "" if c == r else "text differs"
    if kind == "table-list":
        if pfn in t.memmap:
            return ""
        for f in ("anon_map_count", "file_map_count"):
            if c[f] != r[f]:
                return f"{f} {c[f]} -> {r[f]}"
        if c["mapcount"] != r["mapcount"] and not t.global_ and not (r["mapcount"] == "" and _in_ranges(pfn, lost_mm)):
            return f"mapcount {c['mapcount']!r} -> {r['mapcount']!r}"
        return ""
    return ""


def kernel_variables(prog, names: list[str]) -> list[tuple[str, int, int]]:
    """(name, physical address, size) of the kernel variables that exist."""
    import drgn
    from drgn.helpers.linux.mm import follow_phys
    mm = prog["init_mm"].address_of_()
    out = []
    for name in names:
        file = None
        if ":" in name:
            name, file = name.split(":")
        try:
            o = prog.object(name, drgn.FindObjectFlags.VARIABLE, file) if file else prog[name]
            if o.address_ is None:
                continue
            size = min(drgn.sizeof(o.type_), 4096)
            out.append((name, follow_phys(mm, o.address_).value_(), max(1, size)))
        except (LookupError, ValueError, drgn.FaultError, TypeError):
            continue
    return out


VARIABLES = ["page_ext_size", "total_usage:page_ext.c", "__highest_present_section_nr", "max_pfn", "min_low_pfn",
             "max_possible_pfn", "page_owner_ops", "page_table_check_ops", "page_alloc_tagging_ops",
             "page_owner_inited", "page_table_check_disabled", "stack_slabs", "stack_pools", "depot_index",
             "pools_num", "sections_per_block", "vmemmap_base", "page_offset_base", "init_uts_ns", "node_data",
             "node_states", "nr_node_ids", "mem_section", "memory_subsys", "bus_kset", "early_handle",
             "dummy_handle", "failure_handle", "pageflag_names", "gfpflag_names", "migratetype_names",
             "migrate_reason_names", "prb", "__per_cpu_offset", "linux_banner", "nr_cpu_ids", "__cpu_online_mask",
             "__cpu_possible_mask", "mem_alloc_profiling_key", "alloc_tag_cttype", "init_mm", "contig_page_data",
             "root_mem_cgroup", "page_group_by_mobility_disabled", "pageblock_order"]
