"""The alloc-tag decoder on a synthetic drgn Program (no VM).

A hand-made kernel image: three tags in an ``alloc_tags`` range (one in a
module), their per-CPU counters on two CPUs, one page_ext table of 64
entries (88-byte entries like 6.12's: flags word, page_owner, the ref,
page_table_check) and its memmap.  The refs cover every case the decoder
distinguishes -- NULL, CODETAG_EMPTY, a compound head (order from the folio),
a non-compound high-order allocation (order from page_owner), order-0 pages,
and garbage pointers -- and every expected number is written down from the
image we built, not from the decoder.
"""

from __future__ import annotations

import struct

import drgn
import pytest

from inspector import ClientError, NoPageExtError, PageExt
from inspector.clients.alloc_tag import ASSUMED, CODETAG_EMPTY, COMPOUND, NEXT_TAGGED, PAGE_OWNER
from inspector.model import Client, Layout, Table

DATA = 0xFFFFFFFF82000000
TABLE = 0xFFFF888010000000
VMEMMAP = 0xFFFFEA0000000000
PCPU = [0xFFFF88807FC00000, 0xFFFF88807FD00000]  # __per_cpu_offset[0..1]
START_PFN, N = 0x8000, 64
ESZ, OWNER_OFF, REF_OFF = 88, 8, 72
PAGE_SIZE = 4096
PG_HEAD = 6
ALLOCATED_BIT = 2  # PAGE_EXT_OWNER_ALLOCATED
EARLY = 0x100001  # page_owner's early_handle


def _m(t, name, off):
    return drgn.TypeMember(t, name, off * 8)


REF_SHIFT, REF_MASK = 40, 0xFF  # a compressed boot's alloc_tag_ref_offs, alloc_tag_ref_mask
GARBAGE_IDX = 0x80  # an index past every tag


def build(*, compressed: bool = False, key_on: bool = True, cycle: bool = False, missing_cpu=None,
          index: bool = False):
    """The hand-made kernel; ``cycle``: pages +30 and +31 are each other's
    compound head (a loop in a damaged memmap); ``missing_cpu``: that CPU's
    per-CPU area is not in the image; ``index`` (with ``compressed``): the
    kernel's compressed-tag variables are there and each ref is an index in
    page->flags (idx_to_ref(): 0 none, 1 empty, 2.. the two vmlinux tags,
    then the module's), not a pointer in page_ext."""
    prog = drgn.Program(drgn.Platform(drgn.Architecture.X86_64,
                                      drgn.PlatformFlags.IS_64_BIT | drgn.PlatformFlags.IS_LITTLE_ENDIAN))
    prog.set_linux_kernel_custom("OSRELEASE=6.12.0\nPAGESIZE=4096\nKERNELOFFSET=0\n"
                                "SYMBOL(swapper_pg_dir)=ffffffff82a0a000\nNUMBER(pgtable_l5_enabled)=0\n", False)
    ul, uint, u16 = prog.type("unsigned long"), prog.type("unsigned int"), prog.type("unsigned short")
    u64 = prog.int_type("u64", 8, False)
    char_p = prog.pointer_type(prog.type("char"))
    i32 = prog.type("int")
    types = {}
    ct = types["codetag"] = prog.struct_type("codetag", 32, [
        _m(uint, "flags", 0), _m(uint, "lineno", 4), _m(char_p, "modname", 8),
        _m(char_p, "function", 16), _m(char_p, "filename", 24)])
    ctr = types["alloc_tag_counters"] = prog.struct_type("alloc_tag_counters", 16, [
        _m(u64, "bytes", 0), _m(u64, "calls", 8)])
    types["alloc_tag"] = prog.struct_type("alloc_tag", 40, [_m(ct, "ct", 0),
                                                            _m(prog.pointer_type(ctr), "counters", 32)])
    types["codetag_ref"] = prog.union_type("codetag_ref", 8, [_m(prog.pointer_type(ct), "ct", 0)])
    page = types["page"] = prog.struct_type("page", 64, [_m(ul, "flags", 0), _m(ul, "compound_head", 8)])
    types["folio"] = prog.struct_type("folio", 128, [_m(ul, "flags", 0), _m(ul, "_flags_1", 64)])
    types["page_ext"] = prog.struct_type("page_ext", 8, [_m(ul, "flags", 0)])
    types["page_owner"] = prog.struct_type("page_owner", 56, [_m(u16, "order", 0), _m(uint, "handle", 4),
                                                              _m(ul, "pad", 8)])
    cpumask = types["cpumask"] = prog.struct_type("cpumask", 8, [_m(prog.array_type(ul, 1), "bits", 0)])
    atomic_t = prog.struct_type(None, 4, [_m(i32, "counter", 0)])
    key = prog.struct_type("static_key", 8, [_m(atomic_t, "enabled", 0)])
    keyf = types["static_key_false"] = prog.struct_type("static_key_false", 8, [_m(key, "key", 0)])
    ext_flags = prog.enum_type("page_ext_flags", uint, [drgn.TypeEnumerator("PAGE_EXT_OWNER", 1),
                                                        drgn.TypeEnumerator("PAGE_EXT_OWNER_ALLOCATED", 2)])
    pageflags = prog.enum_type("pageflags", uint, [drgn.TypeEnumerator("PG_head", PG_HEAD)])

    def find_type(prog_, kinds, name, filename):
        t = types.get(name)
        return t if t is not None and t.kind in kinds else None

    prog.register_type_finder("alloc-tag-test", find_type, enable_index=0)

    img = bytearray(0x4000)
    strings = {}

    def cstr(s: str) -> int:
        if s not in strings:
            strings[s] = DATA + 0x3000 + sum(len(x) + 1 for x in strings)
            off = strings[s] - DATA
            img[off:off + len(s) + 1] = s.encode() + b"\0"
        return strings[s]

    # Three tags at DATA + 0x100 (the "vmlinux" range: the first two; a module's: the third).
    tags = [(0, 1977, None, "__filemap_get_folio", "mm/filemap.c", 0x100),
            (0, 2478, None, "alloc_slab_page", "mm/slub.c", 0x110),
            (1, 42, "mymod", "mod_alloc", "drivers/x/mod.c", 0x120)]
    addrs = []
    for i, (flags, line, mod, fn, fl, ctr_off) in enumerate(tags):
        a = DATA + 0x100 + 40 * i
        addrs.append(a)
        struct.pack_into("<IIQQQQ", img, a - DATA, flags, line, cstr(mod) if mod else 0, cstr(fn), cstr(fl),
                         ctr_off)
    # Per-CPU counters: bytes (u64, may wrap per CPU) and calls.
    percpu = {0: bytearray(0x200), 1: bytearray(0x200)}
    struct.pack_into("<QQ", percpu[0], 0x100, 3 * PAGE_SIZE, 2)
    struct.pack_into("<QQ", percpu[1], 0x100, PAGE_SIZE, 1)
    struct.pack_into("<QQ", percpu[0], 0x110, (-PAGE_SIZE) & (2**64 - 1), 0)  # freed on another CPU
    struct.pack_into("<QQ", percpu[1], 0x110, 9 * PAGE_SIZE, 2)
    objects = {}

    def var(name, t, off):
        objects[name] = drgn.Object(prog, t, address=DATA + off)

    var("__cpu_possible_mask", cpumask, 0x2000)
    struct.pack_into("<Q", img, 0x2000, 0b11)
    objects["nr_cpu_ids"] = drgn.Object(prog, uint, 2)
    var("__per_cpu_offset", prog.array_type(ul, 2), 0x2010)
    struct.pack_into("<QQ", img, 0x2010, *PCPU)
    objects["vmemmap"] = drgn.Object(prog, prog.pointer_type(page), VMEMMAP)
    objects["PG_head"] = drgn.Object(prog, pageflags, PG_HEAD)
    objects["PAGE_EXT_OWNER"] = drgn.Object(prog, ext_flags, 1)
    objects["PAGE_EXT_OWNER_ALLOCATED"] = drgn.Object(prog, ext_flags, 2)
    var("early_handle", uint, 0x2030)
    struct.pack_into("<I", img, 0x2030, EARLY)
    var("mem_alloc_profiling_key", keyf, 0x2020)
    struct.pack_into("<I", img, 0x2020, 1 if key_on else 0)
    if compressed:
        var("mem_profiling_compressed", keyf, 0x2028)
        struct.pack_into("<I", img, 0x2028, 1)
    if index:
        tag_p = prog.pointer_type(types["alloc_tag"])
        types["alloc_tag_kernel_section"] = kts = prog.struct_type("alloc_tag_kernel_section", 16, [
            _m(tag_p, "first_tag", 0), _m(ul, "count", 8)])
        types["alloc_tag_module_section"] = mts = prog.struct_type("alloc_tag_module_section", 24, [
            _m(tag_p, "first_tag", 0), _m(ul, "end_addr", 8), _m(ul, "size", 16)])
        var("alloc_tag_ref_offs", i32, 0x2040)
        struct.pack_into("<i", img, 0x2040, REF_SHIFT)
        var("alloc_tag_ref_mask", ul, 0x2048)
        struct.pack_into("<Q", img, 0x2048, REF_MASK)
        var("kernel_tags", kts, 0x2050)
        struct.pack_into("<QQ", img, 0x2050, DATA + 0x100, 2)
        var("module_tags", mts, 0x2060)
        struct.pack_into("<QQQ", img, 0x2060, DATA + 0x100 + 80, DATA + 0x100 + 120, 40)

    def find_object(prog_, name, flags, filename):
        return objects.get(name)

    prog.register_object_finder("alloc-tag-test", find_object, enable_index=0)
    syms = [drgn.Symbol("__start_alloc_tags", DATA + 0x100, 0, drgn.SymbolBinding.GLOBAL, drgn.SymbolKind.OBJECT),
            drgn.Symbol("__stop_alloc_tags", DATA + 0x100 + 40 * 3, 0, drgn.SymbolBinding.GLOBAL,
                        drgn.SymbolKind.OBJECT)]

    def find_symbol(prog_, name, address, one):
        out = [s for s in syms if name is None or s.name == name]
        return out[:1] if one else out

    prog.register_symbol_finder("alloc-tag-test", find_symbol, enable_index=0)

    # The page_ext table and the memmap.
    table = bytearray(ESZ * N)
    memmap = bytearray(64 * (N + 1))

    def ref(i, value, owner_order=None, handle=0x1234):
        if index:  # ref_to_idx(); what no index can say becomes one past every tag
            idx = {0: 0, CODETAG_EMPTY: 1, addrs[0]: 2, addrs[1]: 3, addrs[2]: 4}.get(value, GARBAGE_IDX)
            old = struct.unpack_from("<Q", memmap, 64 * i)[0]
            struct.pack_into("<Q", memmap, 64 * i, old | idx << REF_SHIFT)
        else:
            struct.pack_into("<Q", table, ESZ * i + REF_OFF, value)
        if owner_order is not None:
            struct.pack_into("<Q", table, ESZ * i, 1 << ALLOCATED_BIT | 1 << 1)
            struct.pack_into("<HHI", table, ESZ * i + OWNER_OFF, owner_order, 0, handle)

    ref(0, addrs[0], 0)  # order-0, page_owner agrees
    ref(1, addrs[0])  # order-0, no page_owner record: assumed
    ref(2, CODETAG_EMPTY)
    struct.pack_into("<Q", memmap, 64 * 4, 1 << PG_HEAD)
    ref(4, addrs[1], 2)  # compound head, order 2 from the folio (page_owner says 2 too)
    # folio->_flags_1 (offset 64 of the folio) is the flags word of page 5: order 2.
    struct.pack_into("<Q", memmap, 64 * 5, 2)
    struct.pack_into("<Q", memmap, 64 * 5 + 8, (VMEMMAP + 64 * (START_PFN + 4)) | 1)  # tail -> head
    ref(8, addrs[1], 3)  # non-compound order 3: only page_owner knows
    ref(16, addrs[2])  # module tag, order 0 assumed
    ref(17, addrs[2], 0, handle=EARLY)  # page_owner's boot-time record: its order 0 means nothing
    ref(20, 0xDEADBEEF00)  # garbage
    ref(21, 0xDEADBEEF00)
    ref(22, addrs[0] + 8)  # inside a tag, not a tag
    ref(N - 1, addrs[0], 0)  # the last entry
    if cycle:
        struct.pack_into("<Q", memmap, 64 * 30 + 8, (VMEMMAP + 64 * (START_PFN + 31)) | 1)
        struct.pack_into("<Q", memmap, 64 * 31 + 8, (VMEMMAP + 64 * (START_PFN + 30)) | 1)

    def reader(base, data):
        return lambda a, c, o, p: bytes(data[o:o + c])

    prog.add_memory_segment(DATA, len(img), reader(DATA, img))
    prog.add_memory_segment(TABLE, len(table), reader(TABLE, table))
    prog.add_memory_segment(VMEMMAP + 64 * START_PFN, len(memmap), reader(0, memmap))
    for cpu, buf in percpu.items():
        if cpu != missing_cpu:
            prog.add_memory_segment(PCPU[cpu], len(buf), reader(0, buf))

    clients = [Client("page_owner", OWNER_OFF, 56, True, True),
               Client("page_alloc_tagging", REF_OFF, 8, key_on and not compressed, False,
                      "boot with sysctl.vm.mem_profiling=1"),
               Client("page_table_check", 80, 8, True, False)]
    layout = Layout(release="6.12.0", memory_model="sparsemem-vmemmap", page_size=PAGE_SIZE, section_pages=N,
                    entry_size=ESZ, clients=clients, total_usage=ESZ * N, sections_per_block=1, nodes=[0],
                    tables=[Table(1, 0, START_PFN, N, TABLE, ESZ * N, table_mem="direct", table_pfn=0x10000)])
    return PageExt(prog, layout=layout), addrs


def tags(**kw):
    """(the decoder, the tag addresses) of :func:`build` (its keywords)."""
    pe, addrs = build(**kw)
    return pe.client("page_alloc_tagging"), addrs


def test_scan_counts_every_case():
    at, addrs = tags()
    s = at.scan()
    assert s.entries == N
    assert s.empty == 1
    assert s.invalid == {0xDEADBEEF00: 2, addrs[0] + 8: 1}
    assert s.tagged == 10  # refs other than NULL and EMPTY
    assert s.null == N - 1 - 10
    assert (s.tags[addrs[0]].allocations, s.tags[addrs[0]].pages, s.tags[addrs[0]].assumed) == (3, 3, 0)
    assert (s.tags[addrs[1]].allocations, s.tags[addrs[1]].pages, s.tags[addrs[1]].assumed) == (2, 4 + 8, 0)
    assert (s.tags[addrs[2]].allocations, s.tags[addrs[2]].pages, s.tags[addrs[2]].assumed) == (2, 2, 1)
    # pfn +1 (next: EMPTY), +16 (next: +17), +20, +21: single pages; +17 and +22: nothing tells.
    assert s.order_source == {COMPOUND: 1, PAGE_OWNER: 3, NEXT_TAGGED: 4, ASSUMED: 2}
    t = at.tag(addrs[2])
    assert t.text() == "drivers/x/mod.c:42 [mymod] func:mod_alloc" and t.inaccurate
    assert at.tag(addrs[0]).text() == "mm/filemap.c:1977 func:__filemap_get_folio"
    assert at.tag(0xDEADBEEF00) is None


def test_kernel_counters_sum_cpus_like_alloc_tag_read():
    at, addrs = tags()
    k = at.kernel_counters()
    assert k[addrs[0]] == (4 * PAGE_SIZE, 3)
    assert k[addrs[1]] == (8 * PAGE_SIZE, 2)  # -1 page on CPU0 wraps, the sum does not
    assert k[addrs[2]] == (0, 0)


def test_one_pfn():
    at, addrs = tags()
    d = at.at(START_PFN + 4)
    assert (d["state"], d["order"], d["order_source"], d["bytes"]) == ("tagged", 2, COMPOUND, 4 * PAGE_SIZE)
    assert d["tag"] == "mm/slub.c:2478 func:alloc_slab_page"
    tail = at.at(START_PFN + 5)
    assert tail["state"] == "none" and tail["head_pfn"] == START_PFN + 4 and tail["tag"] == d["tag"]
    assert at.at(START_PFN + 20)["tag"] == "<invalid tag 0xdeadbeef00>"
    assert at.at(START_PFN + 2)["state"] == "empty"
    with pytest.raises(NoPageExtError, match="outside memory"):
        at.at(START_PFN + N)


def test_inactive_and_compressed_are_refused():
    with pytest.raises(ClientError, match="inactive in this boot: memory allocation profiling is off"):
        tags(key_on=False)
    with pytest.raises(ClientError, match="compressed"):
        tags(compressed=True)


def test_compressed_tags_are_read_from_page_flags():
    """v6.13 (4835f747d3ed) ",compressed": the same allocations as test_scan_counts_every_case,
    each kept as an index in page->flags; the two garbage pointers and the one inside
    a tag become the one index past every tag."""
    at, addrs = tags(compressed=True, index=True)
    assert at.compressed is not None
    s = at.scan()
    assert s.entries == N
    assert s.empty == 1
    garbage = DATA + 0x100 + 80 + (GARBAGE_IDX - 2 - 2) * 40  # module_tags.first_tag[idx - 2 - count]
    assert s.invalid == {garbage: 3}
    assert s.tagged == 10
    assert (s.tags[addrs[0]].allocations, s.tags[addrs[0]].pages, s.tags[addrs[0]].assumed) == (3, 3, 0)
    assert (s.tags[addrs[1]].allocations, s.tags[addrs[1]].pages, s.tags[addrs[1]].assumed) == (2, 4 + 8, 0)
    assert (s.tags[addrs[2]].allocations, s.tags[addrs[2]].pages, s.tags[addrs[2]].assumed) == (2, 2, 1)
    d = at.at(START_PFN + 4)
    assert (d["state"], d["order"], d["order_source"]) == ("tagged", 2, COMPOUND)
    assert at.at(START_PFN + 16)["tag"] == "drivers/x/mod.c:42 [mymod] func:mod_alloc"
    assert at.at(START_PFN + 3)["state"] == "none"


# -- --min-bytes (issue 20: units in the name; --threshold is its hidden old name) --------------------

def test_min_bytes_replaces_threshold(tmp_path):
    from types import SimpleNamespace

    from conftest import inspect
    from inspector.commands.alloc_tag import prepare_alloc_tags
    help_text = inspect("alloc-tags", "--help").stdout
    assert "--min-bytes" in help_text and "--threshold" not in help_text
    a = SimpleNamespace(min_bytes=0, threshold=4096)
    prepare_alloc_tags(a)
    assert a.min_bytes == 4096
    proc = inspect("alloc-tags", str(tmp_path / "core"), "--threshold", "1", "--min-bytes", "2", check_rc=2)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "give --min-bytes only" in lines[0], proc.stderr
