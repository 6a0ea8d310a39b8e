"""Issue 11's hostile inputs that need no VM: each gets one clear line, the right exit
status, and a bounded run -- never a traceback, a hang or a huge allocation.

The cases that need a real kernel's bytes (a missing table page, a missing
memmap, a missing stack depot pool, .rodata as a table, cycles crafted into a
real core, ...) are in tests/test_vm_hostile.py; the fuzz corpus in
tests/test_fuzz.py.  Here: the files and sockets a user may name, the command
line, and synthetic kernels (inspector.sim.synthetic, and the hand-made
alloc-tag kernel of tests/test_alloc_tag_unit.py) with a corrupt count or a
loop in a list.
"""

from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path

import drgn
import pytest

from conftest import inspect
from inspector import PageExt
from inspector.sim import scenarios
from inspector.sim.synthetic import build, picture
from inspector.versions import get

EXE = str(Path(sys.executable).parent / "pageext-inspect")


def one_line(proc, rc: int = 2) -> str:
    """The single stderr line of a refused run (exit ``rc``, nothing on stdout)."""
    assert proc.returncode == rc, (proc.returncode, proc.stderr, proc.stdout[-500:])
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr
    assert lines[0].startswith("pageext-inspect: error: ")
    return lines[0]


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([EXE, *args], capture_output=True, text=True, timeout=timeout)


# -- files that are not vmcores ---------------------------------------------------------------------

@pytest.fixture
def fifo(tmp_path):
    p = tmp_path / "fifo"
    os.mkfifo(p)
    return str(p)


def test_a_fifo_as_the_core_is_refused_at_once(fifo):
    t = time.monotonic()
    assert "a FIFO, not a vmcore" in one_line(run(fifo, timeout=30))
    assert time.monotonic() - t < 20


def test_simulate_a_fifo_is_refused_at_once(fifo):
    assert "not a regular file" in one_line(run("simulate", fifo, timeout=30))


def test_validate_trace_a_fifo_is_refused_at_once(fifo, tmp_path):
    # The trace is checked before the target is opened: a core that does not
    # exist is never reached.
    line = one_line(run("validate", str(tmp_path / "nocore"), "--trace", fifo, timeout=30))
    assert "not a regular file" in line and "fifo" in line


@pytest.mark.parametrize("what", ["/dev/null", "dir", "fifo"])
def test_vmlinux_that_is_not_a_file(what, tmp_path, fifo):
    core = tmp_path / "core"
    core.write_bytes(b"\x7fELF" + b"\0" * 100)
    path = {"/dev/null": "/dev/null", "dir": str(tmp_path), "fifo": fifo}[what]
    line = one_line(run(str(core), "-s", path, timeout=30))
    assert "no such vmlinux" not in line
    assert {"/dev/null": "a device", "dir": "is a directory", "fifo": "a FIFO"}[what] in line


GREET = 3  # --timeout: the greeting is bounded by it too


def test_a_qmp_socket_that_never_greets(tmp_path):
    """Accepts, then says nothing: one line within the greeting timeout (--timeout)."""
    path = str(tmp_path / "silent.sock")
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(path)
    srv.listen(4)
    held = []
    stop = threading.Event()

    def accept():
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(srv.accept()[0])
            except OSError:
                pass

    th = threading.Thread(target=accept, daemon=True)
    th.start()
    try:
        t = time.monotonic()
        line = one_line(run("--qemu", path, "--timeout", str(GREET), timeout=GREET + 60))
        took = time.monotonic() - t
    finally:
        stop.set()
        th.join()
        srv.close()
    assert f"no QMP greeting within {GREET} s" in line
    assert GREET <= took < GREET + 15, took
    assert held, "the socket was never connected to"


# -- ELF headers --------------------------------------------------------------------------------------

def _elf(phentsize: int, phnum: int, tail: bytes = b"") -> bytes:
    h = bytearray(64)
    h[:4], h[4], h[5], h[6], h[16], h[18] = b"\x7fELF", 2, 1, 1, 4, 62
    struct.pack_into("<Q", h, 32, 64)
    struct.pack_into("<HH", h, 54, phentsize, phnum)
    return bytes(h) + tail


# Runs argv[2:] and writes its peak RSS (KiB) to the file argv[1]: measured from
# a fresh, small parent, since a child forked straight from this test process
# starts from the test process's own high-water mark (Linux keeps it across exec).
_MEASURE = """import resource, subprocess, sys
rc = subprocess.run(sys.argv[2:]).returncode
open(sys.argv[1], "w").write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))
sys.exit(rc)
"""


def _run_measured(args: list[str]) -> tuple[subprocess.CompletedProcess, int]:
    """Run the CLI; (result, its own peak RSS in KiB)."""
    with tempfile.NamedTemporaryFile("r") as rss:
        proc = subprocess.run([sys.executable, "-c", _MEASURE, rss.name, EXE, *args],
                              capture_output=True, text=True, timeout=60)
        return proc, int(rss.read() or 0)


@pytest.mark.parametrize("name, data, words", [
    ("7-byte ELF", b"\x7fELF\x02\x01\x01", "truncated ELF header"),
    ("e_phentsize 0", _elf(0, 1, bytes(56)), "program header size 0"),
    ("e_phentsize 20", _elf(20, 2, bytes(112)), "program header size 20"),
    ("e_phnum = e_phentsize = 65535", _elf(65535, 65535, bytes(4096)), "program header size 65535"),
])
def test_corrupt_elf_headers(tmp_path, name, data, words):
    core = tmp_path / "core"
    core.write_bytes(data)
    proc, rss = _run_measured([str(core)])
    line = one_line(proc)
    assert words in line and "unpack" not in line
    assert rss < 1 << 20, f"{name}: peak RSS {rss} KiB (a 4 GiB read?)"


def test_unknown_arch(tmp_path):
    core = tmp_path / "core"
    core.write_bytes(b"KDUMP   " + bytes(4096))
    line = one_line(run(str(core), "--arch", "unknown"))
    assert "unknown architecture 'unknown'" in line and "x86_64" in line


# -- the command line -----------------------------------------------------------------------------------

@pytest.mark.parametrize("args, words", [
    (["top", "core", "--limit", "abc"], "Invalid value for '--limit'"),
    (["top", "core", "--bogus"], "No such option: --bogus"),
    (["top", "core", "--limit"], "requires an argument"),
    (["top", "core", "--limit", "-1"], "greater than or equal to 0"),
    (["top", "core", "--min-pages", "-5"], "greater than or equal to 0"),
    (["alloc-tags", "core", "--limit", "-1"], "greater than or equal to 0"),
    (["owner", "core", "--node", "-1"], "greater than or equal to 0"),
    (["help", "bogus"], "no command 'bogus'"),
])
def test_usage_errors_are_one_line_with_a_hint(args, words):
    line = one_line(run(*args))
    assert words in line, line
    assert "try 'pageext-inspect" in line and "--help'" in line
    if args[0] == "top":
        assert "try 'pageext-inspect top --help'" in line


def test_help_lists_every_command_and_help_works():
    from inspector.commands import all_commands
    out = inspect("--help").stdout
    listed = out[out.index("Commands:"):]
    for name in all_commands():
        assert f"\n  {name} " in listed, name
    assert inspect("help").stdout == out
    top = inspect("help", "top").stdout
    assert top == inspect("top", "--help").stdout and "--limit" in top and "Exit status" in top


def test_simulate_into_head_exits_0():
    sh = f"{EXE} simulate hot-add-online | head -1; echo \"status ${{PIPESTATUS[0]}}\""
    proc = subprocess.run(["bash", "-c", sh], capture_output=True, text=True, timeout=60)
    assert proc.stdout.splitlines()[-1] == "status 0", proc
    assert proc.stdout.startswith("scenario")
    assert proc.stderr == ""


def test_broken_pipe_exits_0_quietly():
    """A reader that closes before the writer is done (more than a pipe buffer to write)."""
    p = subprocess.Popen([EXE, "simulate", "boot-2-nodes", "--json"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    p.stdout.read(10)
    p.stdout.close()
    err = p.stderr.read().decode()
    assert p.wait(60) == 0 and err == ""


# -- synthetic kernels with corrupt counts and loops ------------------------------------------------------

def _synthetic(scenario: str = "hot-add-online", variant: str = "v6.1"):
    res = scenarios.run(scenarios.load(scenario), variant)
    return picture(res, get(variant))


def _overlay(prog: drgn.Program, address: int, data: bytes) -> None:
    """Bytes over the synthetic image (a later segment takes precedence)."""
    prog.add_memory_segment(address, len(data), lambda a, c, o, p: data[o:o + c])


class Bound:
    """A wall-clock bound on an in-process run (SIGALRM), and its peak Python allocation."""

    def __init__(self, seconds: int):
        self.seconds = seconds

    def __enter__(self):
        def boom(*_):
            raise TimeoutError(f"not done within {self.seconds} s")
        self.old = signal.signal(signal.SIGALRM, boom)
        signal.alarm(self.seconds)
        tracemalloc.start()
        self.t = time.monotonic()
        return self

    def __exit__(self, *exc):
        signal.alarm(0)
        signal.signal(signal.SIGALRM, self.old)
        self.peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        self.took = time.monotonic() - self.t


def test_highest_present_section_nr_beyond_nr_mem_sections():
    prog = build(_synthetic())
    var = prog["__highest_present_section_nr"]
    clean = PageExt(build(_synthetic())).layout
    # The synthetic's objects are values: overlay a variable at a new address.
    addr = 0xFFFFFFFF83F00000
    _overlay(prog, addr, struct.pack("<Q", 2 ** 40))
    prog.register_object_finder("hostile", lambda p, name, flags, fn: drgn.Object(p, var.type_, address=addr)
                                if name == "__highest_present_section_nr" else None, enable_index=0)
    assert prog["__highest_present_section_nr"].value_() == 2 ** 40
    with Bound(60) as b:
        pe = PageExt(prog)
        lay, checks = pe.layout, pe.checks
    assert b.took < 30 and b.peak < 256 << 20, (b.took, b.peak)
    assert [t.to_json() for t in lay.tables] == [t.to_json() for t in clean.tables]
    assert any("__highest_present_section_nr is 1099511627776" in n for n in pe.missing.other)


def _memory_block_lists(prog):
    """(bus list head, [bus nodes]), (device list head, [device nodes]) of a synthetic kernel."""
    from drgn.helpers.linux.list import list_for_each
    bus_head = prog["bus_kset"].list.address_of_()
    buses = [n.value_() for n in list_for_each(bus_head)]
    sp_t = prog.type("struct subsys_private")
    sp = drgn.Object(prog, prog.pointer_type(sp_t), buses[0] - drgn.offsetof(sp_t, "subsys.kobj.entry"))
    dev_head = sp.klist_devices.k_list.address_of_()
    devs = [n.value_() for n in list_for_each(dev_head)]
    return (bus_head.value_(), buses), (dev_head.value_(), devs)


@pytest.mark.parametrize("which", ["devices", "buses"])
def test_a_cycle_in_memory_subsys_lists_ends_the_walk(which):
    prog = build(_synthetic())
    clean = PageExt(build(_synthetic())).layout
    (bh, buses), (dh, devs) = _memory_block_lists(prog)
    assert len(devs) >= 2
    if which == "devices":  # the last device points back at the second: a loop that never reaches the head
        _overlay(prog, devs[-1], struct.pack("<Q", devs[1]))
    else:  # the list of buses leads into a bus that points at itself: memory_subsys is never found
        fake = 0xFFFFFFFF83F00000  # a struct subsys_private of zeros whose kobj.entry.next is itself
        entry = drgn.offsetof(prog.type("struct subsys_private"), "subsys.kobj.entry")
        _overlay(prog, fake, bytes(entry) + struct.pack("<Q", fake + entry) + bytes(64))
        _overlay(prog, bh, struct.pack("<Q", fake + entry))
    with Bound(60) as b:
        pe = PageExt(prog)
        lay = pe.layout
    assert b.took < 30
    assert any("memory block list is corrupt" in n and "loops" in n for n in pe.missing.other), pe.missing.other
    # The tables do not depend on the block list: the same, only their block numbers may be unknown.
    assert [(t.section, t.start_pfn, t.address) for t in lay.tables] == \
        [(t.section, t.start_pfn, t.address) for t in clean.tables]


def test_flatmem_node_spanning_2_to_the_34_pages_is_bounded():
    pic = _synthetic("flatmem-unaligned")
    nid = min(pic.spans)
    start, end = pic.spans[nid]
    pic.max_pfn = max(e for _, e in pic.spans.values())
    pic.spans[nid] = (start, start + 2 ** 34)
    prog = build(pic)
    for presence in (True, False):  # a core that lists its pages, and one whose reads must tell
        if not presence:
            prog.cache.pop("pageext_presence", None)
        with Bound(120) as b:
            pe = PageExt(prog)
            checks = {c.name: c for c in pe.checks}
            chunks = sum(1 for _ in PageExt(prog, force=True).chunks())
        assert b.took < 60 and b.peak < 512 << 20, (presence, b.took, b.peak)
        assert checks["extent"].status == "fail" and "max_pfn" in checks["extent"].detail
        assert chunks < 1000
        with pytest.raises(Exception) as e:  # a decode refuses (exit 1) without --force
            list(pe.chunks())
        assert "check extent failed" in str(e.value)


def test_page_idle_bitmap_zero_runs_are_bounded():
    """The bitmap's zero runs (pfns without page_ext) come in pieces, never max_pfn / 8 bytes at once."""
    from inspector.clients.page_idle import _zeros
    with Bound(30) as b:
        total = 0
        for piece in _zeros(1 << 34):
            assert len(piece) <= 1 << 20
            total += len(piece)
            if total >= 64 << 20:
                break
    assert b.peak < 16 << 20


def test_alloc_tag_range_is_read_in_pieces():
    """A tag range the kernel says is huge is not read at all; a plausible one a MiB at a time."""
    from inspector.clients import alloc_tag
    import test_alloc_tag_unit as unit
    at, addrs = unit.tags()
    at._ranges = lambda: [(unit.DATA, unit.DATA + (1 << 40), at.tag_size)]
    assert at.catalogue() == [] and "implausible" in at.catalogue_note
    assert alloc_tag.TAG_READ <= 1 << 20


def test_alloc_tag_compound_head_cycle_is_not_followed():
    """Two pages that are each other's compound head: one step, no recursion."""
    import test_alloc_tag_unit as unit
    at, _ = unit.tags(cycle=True)
    with Bound(30):
        a, b = at.at(unit.START_PFN + 30), at.at(unit.START_PFN + 31)
    assert (a["state"], a["head_pfn"], a["tag"]) == ("none", unit.START_PFN + 31, None)
    assert (b["state"], b["head_pfn"], b["tag"]) == ("none", unit.START_PFN + 30, None)
    assert at.scan().entries == unit.N


def test_alloc_tag_counters_of_an_unreadable_cpu_are_unknown_and_counted():
    import test_alloc_tag_unit as unit
    at, addrs = unit.tags(missing_cpu=1)
    k = at.kernel_counters()
    # CPU 1's share is not in the dump: no sum is claimed (CPU 0's alone of tag 1
    # is -1 page, which no tag can have) -- the tags are unknown, and counted.
    assert k[addrs[0]] == (None, None) and k[addrs[1]] == (None, None) and k[addrs[2]] == (None, None)
    assert any("per-CPU counters of 3 allocation tag(s) are not all in the dump" in n
               for n in at.session.missing.other), at.session.missing.other
