"""Issue 11's damaged dumps, crafted into the bytes of a real core.

One boot of the 6.1 test kernel (512 MiB, 2 nodes, page_owner and
page_table_check on) is paused and dumped as ELF; each test damages a working
copy (tests/coremut.py: at the physical addresses drgn's own page-table walk
gives for the structure) and undoes it afterwards.  "Gone" pages fault when
read; "zeros" pages are file-less segment tails, which drgn reads as zeros --
what makedumpfile's ELF output (-E) does with the pages it excludes.  Of the
kernel memory we read, -d 31 excludes only all-zero pages, so a file-less
tail counts as held (zeros): on a real -E -d 31 capture of a small guest,
25 of 26 segments have such tails, 206,617 pages, among them whole page_ext
tables of never-allocated pages (tests/test_vm_kdump.py decodes that dump in
full).  The missing-data tests below therefore take pages away ("gone"); the
zeros case is test_file_less_tail_over_a_zero_table_page.  Every
expectation is about what the damage took: the pfns whose entries, struct
pages or stack records lay there, from the clean core's layout.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

import drgn
import pytest

import coremut
from conftest import CLIENTS_ON, kernel_for, loads, release_tuple, vmlinux_release
from testvm import TestVM

pytestmark = pytest.mark.vm

WORK = Path(tempfile.gettempdir()) / "pageext-hostile"
EXE = str(Path(sys.executable).parent / "pageext-inspect")
WORKLOAD = ("dd if=/dev/zero of=/tmp/fill bs=1M count=24 2>/dev/null; "
            "i=0; while [ $i -lt 200 ]; do echo $i > /tmp/f.$i; i=$((i+1)); done")


class Core:
    """The clean dump, a working copy, and what lies where in it."""

    def __init__(self, clean: str, vmlinux: str, kernel_dir: Path):
        self.clean, self.vmlinux, self.kernel_dir = clean, vmlinux, kernel_dir
        # page_table_check is v5.17 (df4e817b7108): the table-check cases need it.
        self.ptc = release_tuple(vmlinux_release(vmlinux)) >= (5, 17)
        self.pristine = str(WORK / "pristine.elf")
        coremut.with_spare_phdrs(clean, self.pristine)
        self.path = str(WORK / "work.elf")
        shutil.copyfile(self.pristine, self.path)
        self.elf = coremut.Elf(self.pristine)
        self.records = {d["pfn"]: d for d in self.json("owner", "--json", "--all")[0]}
        handles = {r["handle"] for r in self.records.values()} | \
                  {r["free_handle"] for r in self.records.values() if r["free_handle"]}
        self.marks = coremut.Landmarks(clean, vmlinux, handles)
        self.prog = self.marks.prog
        self.mm = self.prog["init_mm"].address_of_()

    def run(self, *args: str, vmlinux: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([EXE, args[0], self.path, "-s", vmlinux or self.vmlinux, "--no-progress", *args[1:]],
                              capture_output=True, text=True, timeout=600)

    def json(self, *args: str, rc: int = 0) -> tuple[list[dict], dict]:
        """owner --json --trailer: (records, missing)."""
        p = self.run(*args, "--trailer")
        assert p.returncode == rc, (p.returncode, p.stderr)
        docs = [loads(line) for line in p.stdout.splitlines()]
        assert "missing" in docs[-1] and "pfn" not in docs[-1]
        return docs[:-1], docs[-1]["missing"]

    def phys(self, virt: int) -> int:
        from drgn.helpers.linux.mm import follow_phys
        return follow_phys(self.mm, virt).value_()

    def var_phys(self, name: str, file: str | None = None) -> int:
        o = self.prog.object(name, drgn.FindObjectFlags.VARIABLE, file) if file else self.prog[name]
        return self.phys(o.address_)

    @contextmanager
    def damaged(self, patches):
        undo = coremut.apply(self.path, patches, self.pristine)
        try:
            yield self
        finally:
            coremut.revert(self.path, undo, self.pristine)


@pytest.fixture(scope="module")
def core(kernel_dir):
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    with TestVM(kernel_dir, mem_mb=512, numa=2, cmdline=CLIENTS_ON, workdir=str(WORK / "vm")) as vm:
        vm.run(WORKLOAD).check()
        vm.pause()
        clean = vm.dump(str(WORK / "clean.elf"), "elf")
    return Core(clean, str(kernel_dir / "vmlinux"), kernel_dir)


def partial_lines(proc) -> list[str]:
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr
    return [ln for ln in proc.stderr.splitlines() if ln.startswith("pageext-inspect: partial:")]


def one_line(proc, rc: int) -> str:
    assert proc.returncode == rc, (proc.returncode, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


def table_page(core: Core, index: int = 1) -> tuple[int, range]:
    """(physical address, pfns whose entries lie on it) of the 4 KiB page inside a
    table that holds the entry of one of its records (the middle one)."""
    s, e, first = core.marks.tables[index]
    esz = core.marks.entry_size
    inside = sorted(p for p in core.records if first <= p < first + (e - s) // esz)
    pfn = inside[len(inside) // 2]
    a = (s + (pfn - first) * esz) // coremut.PAGE * coremut.PAGE
    lo = (a - s) // esz
    hi = (a + coremut.PAGE - 1 - s) // esz
    return a, range(first + lo, first + hi + 1)


# -- one missing 4 KiB page inside a page_ext table -------------------------------------------------

@pytest.mark.parametrize("zeros", [False], ids=["gone"])
def test_one_missing_table_page(core, zeros):
    a, lost = table_page(core)
    clean_tc = loads(core.run("table-check", "--json").stdout) if core.ptc else None
    with core.damaged(core.elf.hole(a, a + coremut.PAGE, zeros=zeros)):
        # inspect: readable is unknown (never "ok"), the answer partial.
        p = core.run("inspect", "--json")
        assert p.returncode == 3, p.stderr
        doc = loads(p.stdout)
        checks = {c["name"]: c["status"] for c in doc["checks"]}
        assert checks["readable"] == "unknown" and checks["bias"] == checks["extent"] == "ok"
        assert doc["missing"]["page_ext"] == [[lost[0], lost[-1]]]
        assert partial_lines(p)
        # owner: exactly that page's entries are lost, and said so; every other record as before.
        recs, missing = core.json("owner", "--json", "--all", rc=3)
        assert missing["page_ext"] == [[lost[0], lost[-1]]]
        got = {r["pfn"]: r for r in recs}
        assert not set(got) & set(lost)
        assert {p_: r for p_, r in core.records.items() if p_ not in lost} == got
        assert any(p_ in lost for p_ in core.records), "the damaged page held no record: pick another"
        # top and table-check lose only those entries, and say so.
        top = core.run("top", "--by", "stack", "--json")
        assert top.returncode == 3 and loads(top.stdout)["missing"]["page_ext"] == [[lost[0], lost[-1]]]
        if core.ptc:
            tc = core.run("table-check", "--json")
            assert tc.returncode == 3 and partial_lines(tc)
            assert loads(tc.stdout)["pages"] == clean_tc["pages"] - len(lost)
        # validate: the layout agrees, but not silently: partial, and it says where it could read.
        v = core.run("validate")
        assert v.returncode == 3 and partial_lines(v)
        assert "agrees: " not in v.stdout and "agrees where the target could be read" in v.stdout


def test_file_less_tail_over_a_zero_table_page(core):
    """makedumpfile -E's exclusion of an all-zero page of a page_ext table, as
    a file-less segment tail: held, read as the zeros it was, the decode as
    complete as on the clean core (never 'partial' for a real -E -d 31 dump)."""
    prog = core.prog
    esz = core.marks.entry_size
    zero = None
    for s, e, first in core.marks.tables:
        for a in range(-(-s // coremut.PAGE) * coremut.PAGE, e - coremut.PAGE + 1, coremut.PAGE):
            if not any(prog.read(a, coremut.PAGE, True)):
                zero = a
                break
        if zero is not None:
            break
    if zero is None:
        pytest.skip("no all-zero page inside a page_ext table of this boot")
    clean = core.run("inspect", "--json")
    clean_tc = loads(core.run("table-check", "--json").stdout) if core.ptc else None
    with core.damaged(core.elf.hole(zero, zero + coremut.PAGE, zeros=True)):
        p = core.run("inspect", "--json")
        assert p.returncode == clean.returncode == 0, p.stderr
        doc = loads(p.stdout)
        assert doc["checks"] == loads(clean.stdout)["checks"] and not doc["missing"]["page_ext"]
        recs, missing = core.json("owner", "--json", "--all", rc=0)
        assert {r["pfn"]: r for r in recs} == core.records and not missing["page_ext"]
        if core.ptc:
            tc = core.run("table-check", "--json")
            assert tc.returncode == 0 and loads(tc.stdout)["pages"] == clean_tc["pages"]
    assert esz > 0


# -- a missing memmap (makedumpfile -e) -------------------------------------------------------------------

@pytest.mark.parametrize("zeros", [False], ids=["gone"])
def test_missing_memmap(core, zeros):
    s, e, first = core.marks.memmap[0]
    a = s + 5 * coremut.PAGE
    per = coremut.PAGE // core.marks.page_struct
    lost = range(first + 5 * per, first + 6 * per)
    with core.damaged(core.elf.hole(a, a + coremut.PAGE, zeros=zeros)):
        recs, missing = core.json("owner", "--json", "--all", rc=3)
        assert missing["memmap"] == [[lost[0], lost[-1]]] and missing["page_ext"] == []
        # page_owner's own data is all there: every record, its memcg unknown where its page is.
        assert {r["pfn"] for r in recs} == set(core.records)
        deb = core.run("owner", "--format", "debugfs")
        assert deb.returncode == 3 and partial_lines(deb)
        top = core.run("top")
        assert top.returncode == 3 and top.stdout.strip(), "top printed nothing"
        if core.ptc:
            tc = core.run("table-check")
            assert tc.returncode == 3 and f"{len(lost)} pages not compared (struct page unreadable)" in tc.stdout


@pytest.mark.parametrize("zeros", [False], ids=["gone"])
def test_missing_struct_page_of_a_tables_last_page(core, zeros):
    """extent asks whether a table's last page is allocated: unknown, never "ok" (nor "fail" on zeros)."""
    t = core.marks.table_list[0]
    last = core.phys(t.address + t.bytes - 1) // coremut.PAGE
    s, e, first = next(m for m in core.marks.memmap if m[2] <= last < m[2] + (m[1] - m[0]) // core.marks.page_struct)
    a = (s + (last - first) * core.marks.page_struct) // coremut.PAGE * coremut.PAGE
    with core.damaged(core.elf.hole(a, a + coremut.PAGE, zeros=zeros)):
        p = core.run("inspect", "--json")
        doc = loads(p.stdout)
        checks = {c["name"]: c for c in doc["checks"]}
        assert checks["extent"]["status"] == "unknown", checks["extent"]
        assert p.returncode == 3 and partial_lines(p)
        assert any(lo <= last <= hi for lo, hi in doc["missing"]["memmap"])


# -- stack depot ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("zeros", [False], ids=["gone"])
def test_missing_stack_depot_pool_is_missing_not_invalid(core, zeros):
    s, e, index = core.marks.pools[1]
    on_pool = {h for a, b, h in core.marks.depot if s <= a < e}
    assert on_pool
    with core.damaged(core.elf.hole(s, e, zeros=zeros)):
        recs, missing = core.json("owner", "--json", "--all", rc=3)
        assert on_pool <= set(missing["stack_handles"])
        assert set(missing["stack_handles"]) <= on_pool, "handles of other pools reported missing"
        p = core.run("owner", "--json", "--all")
        assert "invalid" not in p.stderr
        for r in recs:
            if r["handle"] in on_pool:
                assert r["alloc_stack"] is None
        top = core.run("top")
        assert top.returncode == 3 and "invalid" not in top.stderr
        assert any("stack depot record(s) unreadable" in ln for ln in partial_lines(top))
        assert any("record(s) known to exist could not be shown" in ln for ln in partial_lines(top))


def test_top_counts_records_with_invalid_handles(core):
    """A corrupt handle: top says how many records carry it -- never "0 record(s) with invalid stack handles"."""
    clean = core.run("top")
    assert clean.returncode == 0 and clean.stderr == ""
    from inspector import PageExt
    allocated = sorted(p_ for p_, r in core.records.items() if r["state"] == "allocated" and r["order"] == 0)
    pfn = allocated[len(allocated) // 2]
    t = next(t for t in core.marks.table_list if t.start_pfn <= pfn < t.end_pfn)
    owner_off = PageExt(core.prog).layout.client("page_owner").offset
    handle_off = drgn.offsetof(core.prog.type("struct page_owner"), "handle")
    virt = t.address + (pfn - t.start_pfn) * core.marks.entry_size + owner_off + handle_off
    with core.damaged(core.elf.flip(core.phys(virt), struct.pack("<I", 0xFFFFFFFF))):
        for args in (("top",), ("top", "--json"), ("owner", "--json"), ("owner",), ("owner", "--format", "csv")):
            p = core.run(*args)
            assert p.returncode == 1, (args, p.stderr)
            assert "0 record(s) with invalid" not in p.stderr
            assert "1 record(s) with invalid stack handles (1 distinct handle(s))" in p.stderr, (args, p.stderr)


# -- garbage as fact: a table aimed at .rodata ----------------------------------------------------------

def test_table_aimed_at_rodata(core):
    ro = core.prog.symbol("__start_rodata").address
    nr, first = 1, core.marks.tables[1][2]
    ms = next(a for a, b, n in core.marks.mem_section if n == nr)
    off = drgn.offsetof(core.prog.type("struct mem_section"), "page_ext")
    stored = (ro - core.marks.entry_size * first) & (2 ** 64 - 1)
    with core.damaged(core.elf.flip(ms + off, struct.pack("<Q", stored))):
        p = core.run("inspect", "--json")
        assert p.returncode == 1
        bias = {c["name"]: c for c in loads(p.stdout)["checks"]}["bias"]
        assert bias["status"] == "fail" and f"section {nr}" in bias["detail"]
        for args in (("owner",), ("owner", "--json"), ("top",)) + ((("table-check",),) if core.ptc else ()):
            line = one_line(core.run(*args), 1)
            assert "check bias failed" in line and "--force" in line, line
        p = core.run("owner", "--json", "--all", "--force")
        assert p.returncode == 1
        warn = [ln for ln in p.stderr.splitlines() if "--force decoded" in ln]
        assert warn and f"section {nr}" in warn[0] and "check bias failed" in warn[0], p.stderr
        recs = [loads(line) for line in p.stdout.splitlines()]  # records only: no --trailer
        span = range(first, first + core.marks.section_pages)
        assert all(r["suspect"] == (r["pfn"] in span) for r in recs)
        assert any(r["suspect"] for r in recs)
        assert {r["pfn"]: dict(r, suspect=False) for r in recs if r["pfn"] not in span} == \
            {p_: dict(r, suspect=False) for p_, r in core.records.items() if p_ not in span}
        text = core.run("owner", "--all", "--force")
        assert "SUSPECT: decoded with --force" in text.stdout and text.returncode == 1


# -- kernel counts and lists gone wrong ------------------------------------------------------------------

def test_highest_present_section_nr_2_to_the_40(core):
    clean = loads(core.run("inspect", "--json").stdout)
    with core.damaged(core.elf.flip(core.var_phys("__highest_present_section_nr"), struct.pack("<Q", 2 ** 40))):
        p = core.run("inspect", "--json")
        doc = loads(p.stdout)
        assert doc["tables"] == clean["tables"]
        assert any("__highest_present_section_nr is 1099511627776" in n for n in doc["missing"]["other"])
        assert p.returncode == 3


@pytest.mark.parametrize("which", ["devices", "buses"])
def test_cycle_in_memory_subsys(core, which):
    from drgn.helpers.linux.list import list_for_each
    prog = core.prog
    clean = loads(core.run("inspect", "--json").stdout)
    if which == "devices":
        from drgn.helpers.linux.device import bus_to_subsys
        sp = bus_to_subsys(prog["memory_subsys"].address_of_())
        nodes = [n.value_() for n in list_for_each(sp.klist_devices.k_list.address_of_())]
        patch = core.elf.flip(core.phys(nodes[-1]), struct.pack("<Q", nodes[1]))
    else:  # the bus before memory's points back at the first: memory_subsys is never reached
        entry = drgn.offsetof(prog.type("struct subsys_private"), "subsys.kobj.entry")
        nodes = [n.value_() for n in list_for_each(prog["bus_kset"].list.address_of_())]
        mem = [i for i, n in enumerate(nodes)
               if drgn.Object(prog, "struct subsys_private *", n - entry).bus.value_()
               == prog["memory_subsys"].address_of_().value_()][0]
        assert mem >= 1
        patch = core.elf.flip(core.phys(nodes[mem - 1]), struct.pack("<Q", nodes[0]))
    with core.damaged(patch):
        p = subprocess.run([EXE, core.path, "-s", core.vmlinux, "--json"], capture_output=True, text=True,
                           timeout=120)
        doc = loads(p.stdout)
        assert p.returncode == 3
        assert any("memory block list is corrupt" in n and "loops" in n for n in doc["missing"]["other"])
        assert [(t["section"], t["address"]) for t in doc["tables"]] == \
            [(t["section"], t["address"]) for t in clean["tables"]]


@pytest.mark.parametrize("extra, status", [(1, "ok"), (10_000, "ok"), (0.5, "fail")])
def test_total_usage_shortfall(core, extra, status):
    """total_usage never decreases: whole freed tables are explained, any
    number of them (a section hot-added and removed again counts each time,
    beyond what hotplug can add at once); half a table is not."""
    usage = core.prog.object("total_usage", drgn.FindObjectFlags.VARIABLE, "page_ext.c")
    per = core.marks.section_pages * core.marks.entry_size
    new = usage.value_() + int(extra * per)
    with core.damaged(core.elf.flip(core.var_phys("total_usage", "page_ext.c"), struct.pack("<Q", new))):
        p = core.run("inspect", "--json")
        c = {c["name"]: c for c in loads(p.stdout)["checks"]}["total-usage"]
        assert c["status"] == status, c
        if status == "fail":
            assert f"total_usage is {new}" in c["detail"] and p.returncode == 1
        else:
            assert "freed by hot-remove" in c["detail"] and p.returncode == 0
            assert ("hot-added and removed more than once" in c["detail"]) is (extra > 1)


# -- which vmlinux -----------------------------------------------------------------------------------------

def test_no_build_id_and_another_vmlinux(core, kernel612):
    off, size = core.elf.vmcoreinfo()
    with open(core.pristine, "rb") as f:
        f.seek(off)
        text = f.read(size)
    i = text.index(b"BUILD-ID=")
    with core.damaged([coremut.Patch(off + i, b"XUILD-ID=")]):
        ok = core.run("inspect")
        assert ok.returncode == 0, ok.stderr  # the right vmlinux still matches
        # Another release's vmlinux: 6.12's, or 6.1's where the core is 6.12's (the matrix).
        ours = vmlinux_release(core.kernel_dir / "vmlinux")
        another = kernel612 if vmlinux_release(kernel612 / "vmlinux") != ours else kernel_for("6.1")
        line = one_line(core.run("inspect", vmlinux=str(another / "vmlinux")), 2)
        assert "build ID differs" not in line, line
        assert f"the kernel is {ours}, the vmlinux is {vmlinux_release(another / 'vmlinux')}" in line, line
        other = one_line(core.run("inspect", vmlinux=str(core.kernel_dir / "vmlinux-other")), 2)
        assert "build ID differs" not in other and "no build ID" in other and "#999" in other, other


# -- what the fuzz corpus found (tests/test_fuzz.py) ------------------------------------------------------

def _vmemmap_hole(core: Core):
    """The page holding vmemmap_base gone: drgn's own 'vmemmap' object faults."""
    a = core.var_phys("vmemmap_base") // coremut.PAGE * coremut.PAGE
    return core.elf.hole(a, a + coremut.PAGE)


def _roots_hole(core: Core):
    """The page of struct mem_section that sections 0.. live in, gone."""
    a = core.marks.mem_section[0][0] // coremut.PAGE * coremut.PAGE
    return core.elf.hole(a, a + coremut.PAGE)


@pytest.mark.parametrize("case", ["mem_section page gone", "vmemmap_base gone", "page_ext_size 2**32-1",
                                  "pageflag_names pointer", "a pfn behind an unreadable mem_section"])
def test_what_the_fuzz_corpus_found(core, case):
    """Each was an unhandled read fault ('error: cannot read the target: ...', the whole
    answer lost) or an internal error before; now a partial answer or one clear line."""
    if case == "mem_section page gone":
        with core.damaged(_roots_hole(core)):
            # Every section of this small guest lies in that page: nothing of the
            # memory model is left, which is one line (exit 2, as for a capture
            # cut short before mem_section, tests/test_vm_kdump.py).
            p = core.run("owner", "--json", "--all")
            assert p.returncode == 2 and not p.stdout, p.stderr
            assert p.stderr.count("\n") == 1 and "cannot read mem_section" in p.stderr, p.stderr
    elif case == "vmemmap_base gone":
        with core.damaged(_vmemmap_hole(core)):
            p = core.run("owner", "--json", "--all")
            assert p.returncode in (2, 3) and "cannot read the target" not in p.stderr, p.stderr
            if p.returncode == 2:
                assert len(p.stderr.strip().splitlines()) == 1
    elif case == "page_ext_size 2**32-1":
        with core.damaged(core.elf.flip(core.var_phys("page_ext_size"), struct.pack("<I", 0xFFFFFFFF))):
            line = one_line(core.run("owner", "--json"), 2)
            assert "entry size" in line and "no kernel has entries larger than a page" in line
    elif case == "pageflag_names pointer":
        names = core.prog["pageflag_names"]
        name_ptr = names[0].name.address_
        with core.damaged(core.elf.flip(core.phys(name_ptr), struct.pack("<Q", 0xFFFF81D558AF0000))):
            p = core.run("owner", "--format", "debugfs")
            assert p.returncode == 3 and any("pageflag_names cannot be read" in ln for ln in partial_lines(p))
    else:
        pfn = core.marks.section_pages + 5  # section 1
        with core.damaged(_roots_hole(core)):
            # As above: no section of this guest is left, so even one pfn's answer
            # is the one line that says the dump lacks mem_section (exit 2).
            p = core.run("owner", "--pfn", hex(pfn))
            line = one_line(p, 2)
            assert "cannot read mem_section" in line and "no section" in line, line
