"""Real crash dumps: a panicking test guest, its kdump capture kernel, Debian's
makedumpfile, and what we read from the vmcores it writes (issue 12).

Two guests, each panicking once (scripts/testvm.py: ``crashkernel=``, the
guest's own kernel loaded with ``kexec -p``, makedumpfile run in the capture
kernel on /proc/vmcore, written to the 9p share):

* ``formats`` -- the 6.1 test kernel under 4-level paging (``-cpu
  max,la57=off``, as on most machines), 64 MiB in tmpfs, the kernel's own
  /sys/kernel/debug/page_owner read last, then ``echo c >
  /proc/sysrq-trigger``.  Its capture kernel runs makedumpfile on the same
  /proc/vmcore once per format -- ``-c -d 31`` (zlib), ``-l -d 31`` (lzo),
  ``-E -d 31`` (ELF), ``-F -c -d 31`` (flattened: what Debian 12's kdump-tools
  saves, gzip'd too when KDUMP_COMPRESSION says so) -- and
  once per exclusion case: ``-e`` (unused vmemmap), ``--exclude-unused-vm``
  and ``-c -d 31`` into a tmpfs of 90% of the first dump's size (a disk that
  fills up).
* ``oom`` -- the 6.12 test kernel (page_owner_stacks/show_stacks), default
  5-level paging: background work churns under distinct names while
  scripts/leaker.c (comm ``leaker``) grows a tmpfs file by fallocate() until
  ``vm.panic_on_oom=1`` panics; the capture kernel writes ``-c -d 31``.  The
  guest samples the kernel's oracles over and over until the panic, each
  sample renamed whole onto the share: show_stacks, and 1 MiB windows of the
  page_owner text from a few pfns (scripts/page_owner_window.c: the whole
  text of a leaking 1 GiB guest is ~200 MB, minutes over 9p under TCG).

Every expectation comes from the kernel (its texts, its console), from
makedumpfile (its messages, the dump's own header, bitmaps and page
descriptors) or from drgn walking the complete dump's page tables -- never
from our tool.  The missing-data rules (exit 3, "pageext-inspect: partial:",
"missing" in JSON) are the interface of issue 12's lead; the exclusion tests
are written against it.  Figures are printed (pytest -s).

PAGEEXT_OOM_KERNELS (default 6.12; on 6.1, which has no show_stacks, the
page_owner windows are the oracle for the leak's stack) and
PAGEEXT_LEAK (leaker -m: tmpfs, the default, or pipe) repeat the scenario on
other kernels and leak paths.
"""

from __future__ import annotations

import bisect
import gzip
import os
import re
import shutil
import struct
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import pytest

from conftest import CLIENTS_ON, inspect, kernel_for, loads, release_tuple, vmlinux_release
from test_vm_owner import NO_MEMCG, compare_with_kernel, fields, local_clock, parse_debugfs
from test_vm_owner_sort import parse_show_stacks
from testvm import Dump, TestVM, helper, newer_makedumpfile

pytestmark = pytest.mark.vm

# Our own directory, as in test_vm_owner.py: the last run's dumps stay for inspection.
WORK = Path(tempfile.gettempdir()) / "pageext-kdump-tests"
CRASHKERNEL = "160M"
FORMATS = {"zlib": "-c -d 31", "lzo": "-l -d 31", "elf": "-E -d 31", "flat": "-F -c -d 31"}
# name: (makedumpfile options, disk size)
EXCLUSIONS = {"unused-vmemmap": ("-c -d 31 -e --work-dir /tmp", None),
              "unused-vm": ("-c -d 31 --exclude-unused-vm", None),
              "full-disk": ("-c -d 31", "90%")}

# The kernel's page_owner text, read in the guest with its clock (see local_clock).
READ_PAGE_OWNER = ("grep -m1 exec_start /proc/self/sched > /share/po.clock; cat /sys/kernel/debug/page_owner | "
                   "dd bs=1M iflag=fullblock of=/share/page_owner.txt 2>/dev/null")


# -- makedumpfile's kdump-compressed format (its diskdump_mod.h) ---------------------------

KDUMP_INCOMPLETE = 0x8  # DUMP_DH_COMPRESSED_INCOMPLETE: the disk filled up
KDUMP_EXCLUDED_VMEMMAP = 0x10  # DUMP_DH_EXCLUDED_VMEMMAP: -e


def read_kdump(path) -> tuple[int, set[int]]:
    """(header status, pfns whose page data the file holds).  The layout:
    disk_dump_header (status at 424, block_size, sub_hdr_size, bitmap_blocks),
    kdump_sub_header, the two bitmaps (the second: pfns dumped), then one
    24-byte page_desc (offset, size, ...) per dumped pfn in pfn order.  A pfn
    is held when its descriptor is in the file and its data ends inside it."""
    data = Path(path).read_bytes()
    assert data[:8] == b"KDUMP   ", f"{path}: not a kdump-compressed file"
    status, block, sub_blocks, bitmap_blocks = struct.unpack_from("<IiiI", data, 424)
    bitmaps = data[block * (1 + sub_blocks):block * (1 + sub_blocks + bitmap_blocks)]
    second = bitmaps[len(bitmaps) // 2:]
    desc = block * (1 + sub_blocks + bitmap_blocks)
    held, k = set(), 0
    for i, byte in enumerate(second):
        for bit in range(8) if byte else ():
            if byte >> bit & 1:
                if desc + 24 * k + 12 <= len(data):
                    offset, size = struct.unpack_from("<qI", data, desc + 24 * k)
                    if size and offset + size <= len(data):
                        held.add(i * 8 + bit)
                k += 1
    return status, held


def where_metadata_lives(core: str, vmlinux: str) -> dict[str, dict[int, set[int]]]:
    """From a complete dump, by drgn's own page-table walk: {kind: {physical
    pfn: what lies on that page}} for "page_ext" and "memmap" (the pfns whose
    page_ext entry or struct page is there), "stack_depot" (pool indexes) and
    "mem_section" (section roots, what every pfn lookup starts from)."""
    import drgn
    from drgn.helpers.linux.mm import follow_phys, pfn_to_page
    from drgn.helpers.linux.mmzone import for_each_present_section, section_nr_to_pfn

    prog = drgn.Program()
    prog.set_core_dump(core)
    prog.load_debug_info([vmlinux])
    mm, page = prog["init_mm"].address_of_(), 4096
    phys_of = {}

    def phys(virt: int) -> int:
        vpage = virt // page
        if vpage not in phys_of:
            phys_of[vpage] = follow_phys(mm, vpage * page).value_() // page
        return phys_of[vpage]

    kinds = ("page_ext", "memmap", "stack_depot", "mem_section")
    out = {kind: defaultdict(set) for kind in kinds}
    per_section = section_nr_to_pfn(prog, 1).value_()
    entry, struct_page = prog["page_ext_size"].value_(), drgn.sizeof(prog.type("struct page"))
    sections = list(for_each_present_section(prog))
    roots = prog["mem_section"]
    if roots.type_.unaliased_kind() == drgn.TypeKind.POINTER:  # SPARSEMEM_EXTREME: the roots' pointers
        n = sections[-1][0] // prog["SECTIONS_PER_ROOT"].value_() + 1
        for a in (roots.value_(), roots.value_() + 8 * n - 1):
            out["mem_section"][phys(a)].update(nr for nr, _ in sections)
    for nr, section in sections:
        for a in (section.value_(), section.value_() + drgn.sizeof(section[0]) - 1):
            out["mem_section"][phys(a)].add(nr)
        first = section_nr_to_pfn(prog, nr).value_()
        biased = section.page_ext.value_()  # table base - entry * pfn (mm/page_ext.c)
        memmap = pfn_to_page(prog, first).value_() - first * struct_page
        for pfn in range(first, first + per_section):
            for kind, base, size in (("page_ext", biased, entry), ("memmap", memmap, struct_page)):
                if kind == "page_ext" and not biased:
                    continue
                a = base + pfn * size
                for p in {phys(a), phys(a + size - 1)}:
                    out[kind][p].add(pfn)
    # The stack depot's pools: 4 pages each (STACK_ALLOC_ORDER / DEPOT_POOL_ORDER 2),
    # stack_slabs[] before v6.3, stack_pools[pools_num] after.
    try:
        pools = [prog["stack_pools"][i] for i in range(prog["pools_num"].value_())]
    except KeyError:
        pools = list(prog["stack_slabs"])
    for index, pool in enumerate(pools):
        if pool.value_():
            for off in range(0, 4 * page, page):
                out["stack_depot"][phys(pool.value_() + off)].add(index)
    return out


def on_pages(where: dict[int, set[int]], pages: set[int]) -> set[int]:
    """What lies on these physical pages."""
    return set().union(*(where[p] for p in pages if p in where))


def overlaps(ranges: list, pfns: set[int]) -> bool:
    """Whether any [first, last] range holds one of the pfns."""
    ordered = sorted(pfns)
    return any(bisect.bisect_left(ordered, a) < bisect.bisect_right(ordered, b) for a, b in ranges)


def partial(proc) -> dict:
    """The missing-data interface: exit 3, a "pageext-inspect: partial:" line,
    and JSON Lines ending in {"missing": {"page_ext": [[first, last], ...],
    "memmap": [...], "stack_handles": [...]}}."""
    assert proc.returncode == 3, f"exit {proc.returncode}, not 3 (partial): {proc.stderr.strip()[-500:]}"
    assert any(ln.startswith("pageext-inspect: partial:") for ln in proc.stderr.splitlines()), proc.stderr
    last = loads(proc.stdout.strip().splitlines()[-1])
    assert set(last) == {"missing"}, last
    return last["missing"]


def makedumpfile_root(kdir: Path):
    """The makedumpfile the capture kernel runs: trixie's 1.7.6 for a kernel of
    6.12 or later, whose page types are the top byte of page_type (PGTY_*,
    exported as PAGE_*_MAPCOUNT_VALUE): bookworm's 1.7.2 takes its slab pages
    for free ones under -d 31 (scripts/kdump-root.sh); else the host's own."""
    return newer_makedumpfile() if release_tuple(vmlinux_release(kdir / "vmlinux")) >= (6, 12) else None


# -- the formats guest ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def formats(kernel_dir):
    """One panic on the 6.1 test kernel; every format and exclusion case from its capture kernel."""
    work = WORK / "formats"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    started = time.time()
    with TestVM(kernel_dir, cmdline=CLIENTS_ON, crashkernel=CRASHKERNEL, cpu="max,la57=off",
                workdir=str(work / "vm")) as vm:
        boot = time.time() - started
        vm.run("dd if=/dev/zero of=/tmp/fill bs=1M count=64 2>/dev/null").check()
        vm.load_capture_kernel()
        vm.run(READ_PAGE_OWNER).check()  # last, right before the panic
        start = local_clock(vm.share / "po.clock")
        kernel_text = (vm.share / "page_owner.txt").read_bytes().decode("latin-1")
        names = list(FORMATS) + list(EXCLUSIONS)
        extra = [Dump(FORMATS[n], work / n) for n in FORMATS if n != "zlib"]
        extra += [Dump(args, work / n, disk) for n, (args, disk) in EXCLUSIONS.items()]
        vm.crash("sysrq", FORMATS["zlib"], work / "zlib", extra=extra, timeout=1200,
                 makedumpfile_root=makedumpfile_root(kernel_dir))
        dumps = dict(zip(names, vm.captured))
        times = vm.crash_times
    print(f"\n[kdump 6.1] boot {boot:.1f} s; sysrq -> capture kernel's /init {times['capture_up']:.1f} s, "
          f"-> QEMU gone {times['exit']:.1f} s; makedumpfile in the capture kernel:")
    for name, d in dumps.items():
        size = d.path.stat().st_size if d.path else 0
        print(f"  {name:15} {d.args:32} {d.disk or '':5} exit {d.rc}  {d.seconds:5.1f} s  {size:>10} bytes")
    return {"dumps": dumps, "vmlinux": str(kernel_dir / "vmlinux"), "kernel": kernel_text, "start": start,
            "end": start, "version": "6.1", "core": str(dumps["zlib"].path), "work": work}


@pytest.fixture(scope="module")
def decoded(formats):
    """Per format: the summary (--json) and ``owner --format debugfs``, and how
    long each took (after one untimed run: vmlinux in the page cache)."""
    inspect(str(formats["dumps"]["zlib"].path), "-s", formats["vmlinux"], check_rc=None)
    out = {}
    for name in FORMATS:
        path, row = str(formats["dumps"][name].path), {}
        for what, args in (("summary", (path, "--json", "--no-progress")),
                           ("owner", ("owner", path, "--format", "debugfs"))):
            t = time.time()
            row[what] = inspect(*args, "-s", formats["vmlinux"], check_rc=None)
            row[f"{what}_s"] = time.time() - t
        out[name] = row
    print("\n[kdump 6.1] format  size         summary  owner --format debugfs")
    for name, row in out.items():
        print(f"  {name:5} {formats['dumps'][name].path.stat().st_size:>12}  {row['summary_s']:6.2f} s  "
              f"{row['owner_s']:6.2f} s  ({len(row['owner'].stdout)} bytes, exit {row['owner'].returncode})")
    return out


def _magic(path: Path, fmt: str) -> bool:
    """The file is what makedumpfile was asked for, by its own header."""
    head = path.read_bytes()[:512]
    if fmt in ("zlib", "lzo"):
        return head[:8] == b"KDUMP   " and struct.unpack_from("<I", head, 424)[0] & {"zlib": 1, "lzo": 2}[fmt]
    return head.startswith({"elf": b"\x7fELF\x02", "flat": b"makedumpfile\0"}[fmt])


@pytest.mark.parametrize("fmt", FORMATS)
def test_capture_kernel_formats_open_and_decode_alike(formats, decoded, fmt):
    d = formats["dumps"][fmt]
    assert d.rc == 0 and d.path, d.log
    assert _magic(d.path, fmt)
    row = decoded[fmt]
    assert row["summary"].returncode == 0, row["summary"].stderr
    summary = loads(row["summary"].stdout)
    assert all(c["status"] in ("ok", "skip") for c in summary["checks"]), summary["checks"]
    missing = summary.get("missing") or {}
    assert not any(missing.values()), missing  # a -d 31 dump lacks nothing we read
    assert row["owner"].returncode == 0 and "partial" not in row["owner"].stderr, row["owner"].stderr
    assert row["owner"].stdout == decoded["zlib"]["owner"].stdout
    assert len(parse_debugfs(row["owner"].stdout)) > 16384  # 64 MiB of tmpfs alone


def test_a_dump_kdump_tools_compressed_gets_one_line(formats, tmp_path):
    """Debian's kdump-tools with KDUMP_COMPRESSION=gzip (or bzip2, xz, lz4)
    pipes makedumpfile's flattened output through the compressor, giving
    dump.STAMP.gz, which drgn cannot open: exit 2 and one line, never a traceback."""
    gz = tmp_path / "dump.gz"
    with open(formats["dumps"]["flat"].path, "rb") as src, gzip.open(gz, "wb", compresslevel=1) as out:
        shutil.copyfileobj(src, out)
    proc = inspect(str(gz), "-s", formats["vmlinux"], check_rc=2)
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr, proc.stderr
    print(f"\n[kdump 6.1] gzip'd flattened dump: {proc.stderr.strip()}")


@pytest.fixture(scope="module")
def where(formats):
    return where_metadata_lives(formats["core"], formats["vmlinux"])


def test_d31_keeps_page_ext_memmap_and_the_stack_depot(formats, where):
    """Every page the tables, the memmap and the depot's pools lie on is in the
    -c -d 31 dump (its bitmap and descriptors), and the decode is the kernel's
    own text, read just before the panic, record for record."""
    status, held = read_kdump(formats["dumps"]["zlib"].path)
    assert not status & KDUMP_INCOMPLETE
    for kind, pages in where.items():
        assert pages, kind
        assert not set(pages) - held, f"{kind}: pages {sorted(set(pages) - held)[:10]} not in the dump"
    res = compare_with_kernel(formats)
    assert not res["unexplained"], res["unexplained"][:3]
    assert res["identical"] > 16384 and res["identical"] >= 0.95 * len(res["kernel"])
    print(f"\n[kdump 6.1] -c -d 31 holds the {len(where['page_ext'])} page_ext, {len(where['memmap'])} memmap "
          f"and {len(where['stack_depot'])} stack depot pages")


def _lost(formats, name: str) -> tuple[int, set[int]]:
    """(header status, physical pages the complete -c -d 31 dump holds and this one not)."""
    _, full = read_kdump(formats["dumps"]["zlib"].path)
    status, held = read_kdump(formats["dumps"][name].path)
    return status, full - held


def test_unused_vmemmap_excluded_is_reported_missing(formats, where):
    """makedumpfile -e drops the memmap pages of the pages -d 31 excluded: those
    pfns' struct pages are unknown, and must be reported, never read as zeros."""
    d = formats["dumps"]["unused-vmemmap"]
    assert d.rc == 0 and d.path, d.log
    status, lost = _lost(formats, "unused-vmemmap")
    assert status & KDUMP_EXCLUDED_VMEMMAP
    said = re.search(r"Excluded (\d+) unused vmemmap pages", d.log)
    assert said and int(said.group(1)) == len(lost) > 0, d.log
    assert lost <= set(where["memmap"]), "makedumpfile -e dropped pages that are not memmap"
    expected = on_pages(where["memmap"], lost)
    assert not on_pages(where["page_ext"], lost) and not on_pages(where["stack_depot"], lost)
    vmlinux, path = formats["vmlinux"], str(d.path)
    text = inspect("owner", path, "-s", vmlinux, "--format", "debugfs", check_rc=None)
    ours = parse_debugfs(text.stdout)
    full = parse_debugfs(inspect("owner", formats["core"], "-s", vmlinux, "--format", "debugfs").stdout)
    print(f"\n[kdump 6.1] -e: {len(lost)} memmap pages excluded (the struct pages of {len(expected)} pfns); "
          f"owner --format debugfs: exit {text.returncode}, {len(ours)} of the {len(full)} records, "
          f"stderr {text.stderr.strip()[-200:]!r}")
    missing = partial(inspect("owner", path, "-s", vmlinux, "--json", "--trailer", check_rc=None))
    assert missing["memmap"] and overlaps(missing["memmap"], expected), (missing["memmap"][:5], len(expected))
    assert all(overlaps([r], expected) for r in missing["memmap"]), "memmap reported missing that -e kept"
    assert missing["page_ext"] == [] and missing["stack_handles"] == []
    # Outside the missing pfns every record is printed, as in the complete dump.
    assert text.returncode == 3
    known = {k: b for k, b in full.items() if not overlaps(missing["memmap"], {k[0]})}
    assert known and all(ours.get(k) == b for k, b in known.items())


def test_exclude_unused_vm_where_makedumpfile_has_it(formats):
    d = formats["dumps"]["unused-vm"]
    if d.rc and "unrecognized option" in d.log:
        pytest.skip(f"this makedumpfile has no --exclude-unused-vm: {d.log.strip().splitlines()[0]}")
    assert d.rc == 0 and d.path, d.log
    proc = inspect("owner", str(d.path), "-s", formats["vmlinux"], "--format", "debugfs", check_rc=None)
    full = inspect("owner", formats["core"], "-s", formats["vmlinux"], "--format", "debugfs").stdout
    assert proc.returncode in (0, 3), proc.stderr
    if proc.returncode == 0:
        assert proc.stdout == full


def test_a_capture_cut_short_by_a_full_disk_is_never_read_as_complete(formats, where):
    """makedumpfile runs out of space: the header says incomplete, the pages
    after the cut have no data.  We must say so: exit 3 with what is missing
    (overlapping what the cut took), or, when the cut took what every read
    needs, exit 2 with one line that says the dump is incomplete."""
    d = formats["dumps"]["full-disk"]
    assert d.rc != 0 and "No space left on device" in d.log and d.path, d.log
    status, lost = _lost(formats, "full-disk")
    assert status & KDUMP_INCOMPLETE and lost
    expected = {kind: on_pages(where[kind], lost) for kind in where}
    proc = inspect("owner", str(d.path), "-s", formats["vmlinux"], "--json", "--trailer", check_rc=None)
    print(f"\n[kdump 6.1] full disk: {len(lost)} pages cut; page_ext of {len(expected['page_ext'])} pfns, "
          f"struct pages of {len(expected['memmap'])}, {len(expected['stack_depot'])} depot pools, "
          f"{len(expected['mem_section'])} mem_section entries; "
          f"we say: exit {proc.returncode}: {proc.stderr.strip()[-300:]}")
    assert proc.returncode in (2, 3), proc.stderr
    if proc.returncode == 2:
        assert len(proc.stderr.strip().splitlines()) == 1 and "incomplete" in proc.stderr, proc.stderr
        return
    missing = partial(proc)
    for kind in ("page_ext", "memmap"):
        if expected[kind]:
            assert overlaps(missing[kind], expected[kind]), kind
    if expected["stack_depot"]:
        assert missing["stack_handles"]


# -- the out-of-memory guest ---------------------------------------------------------------

OOM_KERNELS = os.environ.get("PAGEEXT_OOM_KERNELS", "6.12").split(",")
LEAK = os.environ.get("PAGEEXT_LEAK", "tmpfs")
LEAK_FRAME = {"tmpfs": " shmem_fallocate+", "pipe": " pipe_write+"}[LEAK]
LEAK_RATE = 32  # MiB/s: the guest's ~850 MiB in about half a minute
STACKS = "/sys/kernel/debug/page_owner_stacks/show_stacks"

# Background work while the leak grows: shells that rename themselves and then
# allocate with builtins only, so the pages are theirs: tmpfs writes,
# anonymous memory (a string grown to 1 MiB and dropped), a ramfs file (page
# cache that is not tmpfs) and a pipe drained by cat.
CHURN = r"""
mkdir -p /churn && mount -t ramfs churn /churn
data=$(head -c 16384 /dev/zero | tr '\0' c)
churn() { printf "$1" > /proc/self/comm; shift; i=0; while :; do eval "$@"; i=$((i + 1)); sleep 0.05; done; }
(churn churn-tmpfs 'echo $data > /tmp/churn.$((i % 64))') > /dev/null 2>&1 &
(churn churn-anon 'x=$data$data$data$data; x=$x$x$x$x; x=$x$x$x$x; x=') > /dev/null 2>&1 &
(churn churn-file 'echo $data > /churn/f.$((i % 64))') > /dev/null 2>&1 &
(churn churn-pipe 'echo $data' | cat > /dev/null) > /dev/null 2>&1 &
"""
# The kernel's oracles, sampled until the panic: each sample in a new
# directory, each read with its local_clock() start, then renamed whole.
# show_stacks whole; page_owner as 1 MiB windows of its text from a few pfns
# (scripts/page_owner_window.c).
SAMPLE = r"""
mkdir -p /share/oracle
sample() {  # sample NAME: read() fills $t
    n=0
    while :; do
        n=$((n + 1)); t=/share/oracle/.$1.$n; mkdir -p $t
        if read_$1; then mv $t /share/oracle/$1.$n; rm -rf /share/oracle/$1.$((n - 2)); else rm -rf $t; fi
    done
}
read_show_stacks() {
    grep -m1 exec_start /proc/self/sched > $t/clock
    dd if=STACKS bs=1M iflag=fullblock of=$t/text 2>/dev/null
}
read_page_owner() {
    for w in WINDOWS; do
        grep -m1 exec_start /proc/self/sched > $t/$w.clock
        /share/page_owner_window $w 1048576 > $t/$w.text || return
    done
}
[ -e STACKS ] && (sample show_stacks) > /dev/null 2>&1 &
(sample page_owner) > /dev/null 2>&1 &
true
"""


def last_sample(share: Path, name: str) -> Path | None:
    done = [p for p in (share / "oracle").glob(f"{name}.*") if p.suffix[1:].isdigit()]
    return max(done, key=lambda p: int(p.suffix[1:]), default=None)


@pytest.fixture(scope="module", params=OOM_KERNELS)
def oom(request):
    version = request.param
    kdir = kernel_for(version)
    work = WORK / f"oom-{version}-{LEAK}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    mem_mb = 1024
    # pfns across the guest, short of the crashkernel= reservation at its top
    windows = " ".join(str((mem_mb << 8) * k // 8) for k in (1, 3, 5, 6))
    with TestVM(kdir, cmdline=CLIENTS_ON + NO_MEMCG.get(version, ""), crashkernel=CRASHKERNEL, mem_mb=mem_mb,
                workdir=str(work / "vm")) as vm:
        vm.load_capture_kernel()
        shutil.copy(helper("page_owner_window"), vm.share / "page_owner_window")
        meminfo = vm.run("cat /proc/meminfo").check().out
        vm.run(CHURN).check()
        vm.run(SAMPLE.replace("STACKS", STACKS).replace("WINDOWS", windows)).check()
        t = time.time()
        core = vm.crash("oom", "-c -d 31", work / "vmcore", leaker=f"-m {LEAK} -r {LEAK_RATE}", timeout=1200,
                        makedumpfile_root=makedumpfile_root(kdir))
        cycle = time.time() - t
        console = vm.console.read_text(errors="replace")
        pid = int((vm.share / "kdump" / "leaker.pid").read_text())
        stacks, owner = last_sample(vm.share, "show_stacks"), last_sample(vm.share, "page_owner")
        samples = {"show_stacks": (stacks / "text").read_text(errors="replace") if stacks else None,
                   "windows": {}}
        for clock in sorted(owner.glob("*.clock")) if owner else ():
            text = clock.with_suffix(".text").read_bytes().decode("latin-1")
            if text:
                samples["windows"][int(clock.stem)] = (local_clock(clock), text)
        times, d = vm.crash_times, vm.captured[0]
        # How long before the capture kernel's /init (seconds after the panic) each last sample was whole.
        up = (vm.share / "kdump" / "capture.up").stat().st_mtime
        age = {p.name: round(up - p.stat().st_mtime, 1) for p in (stacks, owner) if p}
    print(f"\n[kdump {version}] leak ({LEAK}, {LEAK_RATE} MiB/s) -> panic -> capture kernel's /init "
          f"{times['capture_up']:.1f} s, -> QEMU gone {times['exit']:.1f} s (crash() {cycle:.1f} s); "
          f"makedumpfile -c -d 31 {d.seconds:.1f} s, {core.stat().st_size} bytes; last samples whole "
          f"this long before the capture kernel's /init: {age}")
    return {"version": version, "vmlinux": str(kdir / "vmlinux"), "core": str(core), "pid": pid,
            "console": console, "samples": samples, "work": work,
            "mem_total_pages": int(re.search(r"MemTotal:\s+(\d+) kB", meminfo).group(1)) // 4}


@pytest.fixture(scope="module")
def leak_stack(oom) -> tuple[str, ...]:
    """The leak's page allocations as the kernel printed them: of the stacks
    through LEAK_FRAME in show_stacks (else in the page_owner windows), the one
    with the most pages (the others allocate what the path needs besides, e.g.
    the tmpfs file's xarray nodes)."""
    pages = defaultdict(int)
    if oom["samples"]["show_stacks"] is not None:
        for stack, n in parse_show_stacks(oom["samples"]["show_stacks"]):
            pages[stack] += n
    else:
        for _, text in oom["samples"]["windows"].values():
            for block in parse_debugfs(text).values():
                pages[fields(block)["stack"]] += 1 << fields(block)["order"]
    return heaviest_through(pages, LEAK_FRAME)


def heaviest_through(pages: dict[tuple[str, ...], int], frame: str) -> tuple[str, ...]:
    """Of the kernel's stacks ({stack: pages}) through ``frame``, the one with the most pages."""
    through = {s: n for s, n in pages.items() if any(f" {f}".startswith(frame) for f in s)}
    assert through, f"no stack through{frame} in the kernel's text"
    return max(through, key=through.get)


def top(oom, by: str) -> list[dict]:
    return loads(inspect("top", oom["core"], "-s", oom["vmlinux"], "--by", by, "--json").stdout)["rows"]


def test_the_guest_panicked_on_panic_on_oom(oom):
    first = oom["console"][:oom["console"].find("testvm: capture kernel")]
    assert "Kernel panic - not syncing: Out of memory: system-wide panic_on_oom is enabled" in first


def test_top_by_stack_ranks_the_leak_first(oom, leak_stack):
    rows = top(oom, "stack")
    assert tuple(rows[0]["key"]) == leak_stack, rows[0]["key"]
    assert rows[0]["pages"] > 10 * rows[1]["pages"]


def test_top_by_pid_and_comm_show_the_leaker(oom):
    """The leaker's pid (the guest's $$ before it exec'd leaker) and its comm
    lead; the kernel's page_owner text agrees on who holds the leak."""
    assert top(oom, "pid")[0]["key"] == oom["pid"]
    assert top(oom, "tgid")[0]["key"] == oom["pid"]
    assert top(oom, "comm")[0]["key"] == "leaker"
    said = {(m.group(1), m.group(2)) for _, text in oom["samples"]["windows"].values()
            for m in re.finditer(r", pid (\d+), tgid \d+ \((leaker)\)", text)}
    assert said == {(str(oom["pid"]), "leaker")}, said


def test_leak_pages_lie_between_the_last_sample_and_all_memory(oom, leak_stack):
    """The leak only grows: the dump holds at least the pages the kernel
    counted for its stack in the last show_stacks sample, and at most the
    guest's memory.  The leak's records in the page_owner windows give a
    second lower bound."""
    pages = next(r["pages"] for r in top(oom, "stack") if tuple(r["key"]) == leak_stack)
    in_windows = sum(1 << fields(b)["order"] for _, text in oom["samples"]["windows"].values()
                     for b in parse_debugfs(text).values() if fields(b)["stack"] == leak_stack)
    counted = (dict(parse_show_stacks(oom["samples"]["show_stacks"]))[leak_stack]
               if oom["samples"]["show_stacks"] is not None else None)
    print(f"\n[kdump {oom['version']}] leak stack: {pages} pages in the vmcore; last show_stacks sample "
          f"{counted}; in the last page_owner windows {in_windows}; MemTotal {oom['mem_total_pages']} pages")
    assert pages <= oom["mem_total_pages"]
    assert pages >= 0.5 * oom["mem_total_pages"]  # the leak is what ran the guest out of memory
    assert pages >= in_windows > 0
    if counted is not None:
        assert pages >= counted > 0


def test_records_in_the_pre_panic_windows_are_the_kernels(oom):
    """Each page_owner window of the last sample vs the dump over the same
    pfns, with test_vm_owner.py's rules: byte-identical but for records that
    their timestamps (or the free lists) explain, and live page flags."""
    windows = oom["samples"]["windows"]
    assert windows, "no page_owner sample completed before the panic"
    identical = both = 0
    for first, (start, text) in sorted(windows.items()):
        recs = parse_debugfs(text)
        snap = {"core": oom["core"], "vmlinux": oom["vmlinux"], "kernel": text, "start": start, "end": start,
                "version": oom["version"], "pfns": (min(p for p, _ in recs), max(p for p, _ in recs))}
        res = compare_with_kernel(snap)
        assert not res["unexplained"], res["unexplained"][:3]
        identical += res["identical"]
        both += res["identical"] + res["flags_only"] + res["block_only"]
    assert identical > 1000 and identical >= 0.5 * both
