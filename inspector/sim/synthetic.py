"""Synthetic kernels: a real drgn.Program built from a simulated layout.

Design: :func:`build` lays the simulated kernel out in memory the way the
kernel does -- ``mem_section`` (SPARSEMEM_EXTREME: a pointer to root
pointers, each root an array of ``struct mem_section`` whose ``page_ext``
holds the biased pointer), ``pglist_data`` with ``node_page_ext`` for
FLATMEM, ``node_data``/``node_states``, ``init_uts_ns``, ``total_usage``,
``page_ext_size``/``extra_mem`` and one ``struct page_ext_operations``
object per client, with the struct layouts of the variant (ops gain
offset/size in v4.9, need_shared_flags in v6.3).  Types come from drgn's
own constructors through a type finder, globals through an object finder
and ``*_ops`` through a symbol finder; memory through
``add_memory_segment``; and ``set_linux_kernel_custom`` marks the Program
as a Linux kernel so drgn's mm helpers (virt_to_pfn, follow_phys) behave as
on a real one.  The unchanged discover/walk/verify pipeline then runs on it.
:data:`CORRUPTIONS` perturbs the in-memory picture before it is written,
each one aimed at one named check of inspector.verify.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import drgn

from ..model import Layout, PfnRanges
from .model import DIRECT_MAP, MASK64, PAGE_EXT_INVALID, SimResult
from ..versions import Variant
from ..reader import Presence

DATA_BASE = 0xFFFFFFFF82000000  # kernel .data/.bss: every global and the mem_section roots
TEXT_BASE = 0xFFFFFFFF81000000  # function addresses (page_ext_get)
VMEMMAP = 0xFFFFEA0000000000  # x86-64 vmemmap_base without KASLR (never mapped here)
SECTION_SIZE_BITS = 27  # x86-64
MAX_PHYSMEM_BITS = 46
MAX_NUMNODES = 64
NR_FREE_AREAS = 11  # MAX_ORDER 11 before v6.4: MAX_ORDER_NR_PAGES = 1 << 10
MEM_SECTION_SIZE = 32  # section_mem_map, usage, page_ext, pad
# drgn.helpers.linux.mmzone._section_flags defaults (unchanged since v2.6.13/v5.3)
SECTION_MARKED_PRESENT, SECTION_HAS_MEM_MAP, SECTION_IS_ONLINE, SECTION_IS_EARLY = 0x1, 0x2, 0x4, 0x8


@dataclass
class Picture:
    """What will be written into the synthetic kernel's memory (mutable by corruptions)."""

    variant: Variant
    layout: Layout
    spans: dict[int, tuple[int, int]]
    # SPARSEMEM: section nr -> [section_mem_map flags, stored page_ext]
    sections: dict[int, list[int]] = field(default_factory=dict)
    # FLATMEM: nid -> node_page_ext
    node_page_ext: dict[int, int] = field(default_factory=dict)
    # Table memory: (address, size) segments that can be read
    table_segments: list[tuple[int, int]] = field(default_factory=list)
    total_usage: int = 0
    client_offsets: dict[str, int] = field(default_factory=dict)
    # max_pfn when it is not the end of the last node (a corrupt node span)
    max_pfn: Optional[int] = None


def picture(result: SimResult, variant: Variant) -> Picture:
    lay = result.layout
    pic = Picture(variant, lay, dict(result.spans), total_usage=result.total_usage)
    for s in lay.sections:
        flags = 0
        if s.present:
            flags |= SECTION_MARKED_PRESENT | SECTION_HAS_MEM_MAP
        if s.online:
            flags |= SECTION_IS_ONLINE
        if s.early:
            flags |= SECTION_IS_EARLY
        pic.sections[s.nr] = [flags, s.stored]
    for t in lay.tables:
        if t.section is None:
            pic.node_page_ext[t.node] = t.address
        pic.table_segments.append((t.address, t.bytes))
    pic.client_offsets = {c.name: c.offset for c in lay.clients}
    return pic


class _Image:
    """A bump-allocated byte image of the kernel's data, mapped at DATA_BASE."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def alloc(self, size: int, align: int = 8) -> int:
        pad = (-len(self.buf)) % align
        self.buf.extend(bytes(pad + size))
        return DATA_BASE + len(self.buf) - size

    def u64(self, addr: int, value: int) -> None:
        struct.pack_into("<Q", self.buf, addr - DATA_BASE, value & MASK64)

    def u32(self, addr: int, value: int) -> None:
        struct.pack_into("<I", self.buf, addr - DATA_BASE, value & 0xFFFFFFFF)

    def put(self, addr: int, data: bytes) -> None:
        self.buf[addr - DATA_BASE: addr - DATA_BASE + len(data)] = data


def _m(t: drgn.Type, name: str, byte_offset: int) -> drgn.TypeMember:
    return drgn.TypeMember(t, name, byte_offset * 8)


def build(pic: Picture, lose: frozenset[str] = frozenset()) -> drgn.Program:
    """A drgn.Program whose memory, types and symbols are those of ``pic``;
    the objects named in ``lose`` are left out, as a damaged dump's VMCOREINFO
    loses them (e.g. SECTIONS_PER_ROOT, drgn's LENGTH(mem_section))."""
    v, lay = pic.variant, pic.layout
    prog = drgn.Program(drgn.Platform(drgn.Architecture.X86_64,
                                      drgn.PlatformFlags.IS_64_BIT | drgn.PlatformFlags.IS_LITTLE_ENDIAN))
    vmcoreinfo = (f"OSRELEASE={lay.release}\nPAGESIZE={lay.page_size}\nKERNELOFFSET=0\n"
                  "SYMBOL(swapper_pg_dir)=ffffffff82a0a000\nNUMBER(pgtable_l5_enabled)=0\n")
    prog.set_linux_kernel_custom(vmcoreinfo, False)

    ul = prog.type("unsigned long")
    uint = prog.type("unsigned int")
    i32 = prog.type("int")
    boolean = prog.type("_Bool")
    char = prog.type("char")
    size_t = prog.typedef_type("size_t", ul)
    void_p = prog.pointer_type(prog.void_type())
    types: dict[str, drgn.Type] = {}

    # struct page_ext: `unsigned long flags` (v4.9+), plus the v3.19 page_owner
    # fields, modelled as padding up to the machine's struct size.
    pe_size = max(8, lay.entry_size if v.entry_rule == "struct" else 8)
    pe_members = [_m(ul, "flags", 0)]
    if pe_size > 8:
        pe_members.append(_m(prog.array_type(char, length=pe_size - 8), "owner_fields", 8))
    types["page_ext"] = page_ext = prog.struct_type("page_ext", pe_size, pe_members)
    page_ext_p = prog.pointer_type(page_ext)
    fn_bool = prog.pointer_type(prog.function_type(boolean, ()))
    fn_void = prog.pointer_type(prog.function_type(prog.void_type(), ()))
    if v.ops_has_offset:
        ops_members = [_m(size_t, "offset", 0), _m(size_t, "size", 8), _m(fn_bool, "need", 16),
                       _m(fn_void, "init", 24)]
        ops_size = 32
        if v.ops_has_shared_flags:
            ops_members.append(_m(boolean, "need_shared_flags", 32))
            ops_size = 40
    else:  # v3.19: { bool (*need)(void); void (*init)(void); }
        ops_members, ops_size = [_m(fn_bool, "need", 0), _m(fn_void, "init", 8)], 16
    types["page_ext_operations"] = ops_t = prog.struct_type("page_ext_operations", ops_size, ops_members)
    atomic_t = prog.typedef_type("atomic_t", prog.struct_type(None, 4, [_m(i32, "counter", 0)]))
    types["static_key"] = key_t = prog.struct_type("static_key", 8, [_m(atomic_t, "enabled", 0)])
    types["static_key_false"] = keyf_t = prog.struct_type("static_key_false", 8, [_m(key_t, "key", 0)])
    types["static_key_true"] = keyt_t = prog.struct_type("static_key_true", 8, [_m(key_t, "key", 0)])
    types["page"] = page_t = prog.struct_type("page", 64, [_m(ul, "flags", 0), _m(atomic_t, "_refcount", 52)])
    types["mm_struct"] = mm_t = prog.struct_type("mm_struct", 8, [_m(prog.pointer_type(ul), "pgd", 0)])
    utsname = prog.struct_type("new_utsname", 390, [_m(prog.array_type(char, length=65), n, i * 65) for i, n in
                                                    enumerate(("sysname", "nodename", "release", "version",
                                                               "machine", "domainname"))])
    types["new_utsname"] = utsname
    types["uts_namespace"] = uts_t = prog.struct_type("uts_namespace", 390, [_m(utsname, "name", 0)])
    free_area = prog.struct_type("free_area", 8, [_m(ul, "nr_free", 0)])
    types["free_area"] = free_area
    types["zone"] = prog.struct_type("zone", 8 * NR_FREE_AREAS,
                                     [_m(prog.array_type(free_area, length=NR_FREE_AREAS), "free_area", 0)])
    pg_members = [_m(i32, "node_id", 0), _m(ul, "node_start_pfn", 8), _m(ul, "node_spanned_pages", 16)]
    if lay.section_pages is None:
        pg_members.append(_m(page_ext_p, "node_page_ext", 24))
    types["pglist_data"] = pgdat_t = prog.struct_type("pglist_data", 32, pg_members)
    nodemask_t = prog.typedef_type("nodemask_t", prog.struct_type(None, 8, [_m(prog.array_type(ul, length=1), "bits", 0)]))
    if lay.section_pages is not None:
        types["mem_section"] = ms_t = prog.struct_type("mem_section", MEM_SECTION_SIZE, [
            _m(ul, "section_mem_map", 0), _m(void_p, "usage", 8), _m(page_ext_p, "page_ext", 16),
            _m(ul, "pad", 24)])

    def find_type(prog_, kinds, name, filename):
        t = types.get(name)
        if t is not None and t.kind in kinds:
            return t
        if name == "nodemask_t" and drgn.TypeKind.TYPEDEF in kinds:
            return nodemask_t
        return None

    prog.register_type_finder("pageext-synthetic", find_type, enable_index=0)

    img = _Image()
    objects: dict[str, drgn.Object] = {}

    def const(name: str, value: int, t: drgn.Type = ul) -> None:
        objects[name] = drgn.Object(prog, t, value)

    def var(name: str, t: drgn.Type, size: Optional[int] = None) -> int:
        addr = img.alloc(size if size is not None else drgn.sizeof(t))
        objects[name] = drgn.Object(prog, t, address=addr)
        return addr

    const("PAGE_SIZE", lay.page_size)
    const("PAGE_SHIFT", lay.page_size.bit_length() - 1)
    const("page_offset_base", DIRECT_MAP)
    const("MAX_PHYSMEM_BITS", MAX_PHYSMEM_BITS)
    uts = var("init_uts_ns", uts_t)
    img.put(uts + 2 * 65, lay.release.encode()[:64])
    img.put(uts, b"Linux")
    const("total_usage", pic.total_usage)
    if v.entry_rule in ("page_ext_size", "shared_flags"):
        const("page_ext_size", lay.entry_size)  # 5556cfe8d994 (v5.4)
    elif v.entry_rule == "extra_mem":
        const("extra_mem", lay.entry_size - page_ext.size)  # 980ac1672e7e (v4.9)
    if v.invalid_bit:  # page_ext_get()/put() arrive with PAGE_EXT_INVALID, b1d5488a252d
        objects["page_ext_get"] = drgn.Object(prog, prog.function_type(page_ext_p, ()), address=TEXT_BASE)
    if lay.section_pages is not None:  # memory hotplug sets SECTION_IS_ONLINE (2d070eab2e82, v4.13)
        objects["online_mem_sections"] = drgn.Object(prog, prog.function_type(prog.void_type(), ()),
                                                     address=TEXT_BASE + 0x100)
    symbols: list[drgn.Symbol] = []
    for c in lay.clients:
        addr = var(f"{c.name}_ops", ops_t)
        if v.ops_has_offset:
            img.u64(addr, pic.client_offsets.get(c.name, c.offset))
            img.u64(addr + 8, c.size)
            if v.ops_has_shared_flags:
                img.put(addr + 32, bytes([1 if c.need_shared_flags else 0]))
        symbols.append(drgn.Symbol(f"{c.name}_ops", addr, ops_size, drgn.SymbolBinding.LOCAL,
                                   drgn.SymbolKind.OBJECT))
        if v.ops_has_offset and c.name == "page_owner":  # DEFINE_STATIC_KEY_FALSE(page_owner_inited)
            img.u32(var("page_owner_inited", keyf_t), 1 if c.active else 0)
        if v.ops_has_offset and c.name == "page_table_check":  # DEFINE_STATIC_KEY_TRUE(..._disabled), df4e817b7108
            img.u32(var("page_table_check_disabled", keyt_t), 0 if c.active else 1)
    # Nodes: node_states[N_ONLINE], nr_node_ids, node_data[]
    nodes = sorted(set(lay.nodes) | set(pic.spans))
    const("N_POSSIBLE", 0, i32)
    const("N_ONLINE", 1, i32)
    const("nr_node_ids", (max(nodes) + 1) if nodes else 1, uint)
    states = var("node_states", prog.array_type(nodemask_t, length=6))
    mask = sum(1 << n for n in nodes)
    img.u64(states, mask)
    img.u64(states + 8, mask)
    node_data = var("node_data", prog.array_type(prog.pointer_type(pgdat_t), length=MAX_NUMNODES))
    for n in nodes:
        pg = img.alloc(pgdat_t.size)
        img.u64(node_data + 8 * n, pg)
        img.u32(pg, n)
        start, end = pic.spans.get(n, (0, 0))
        img.u64(pg + 8, start)
        img.u64(pg + 16, end - start)
        if lay.section_pages is None:
            img.u64(pg + 24, pic.node_page_ext.get(n, 0))
    const("max_pfn", pic.max_pfn if pic.max_pfn is not None else max((e for _, e in pic.spans.values()), default=0))
    mm = var("init_mm", mm_t)
    img.u64(mm, DIRECT_MAP + 0x1000)  # a pgd nobody mapped: follow_phys() faults, as on a core without it
    if lay.section_pages is not None:
        const("vmemmap", VMEMMAP, prog.pointer_type(page_t))
        const("SECTION_SIZE_BITS", SECTION_SIZE_BITS)
        spr = lay.page_size // MEM_SECTION_SIZE  # SECTIONS_PER_ROOT
        const("SECTIONS_PER_ROOT", spr)
        nr_roots = (1 << (MAX_PHYSMEM_BITS - SECTION_SIZE_BITS)) // spr
        const("NR_SECTION_ROOTS", nr_roots)
        highest = max(pic.sections, default=0)
        const("__highest_present_section_nr", highest)
        ms_ptr = var("mem_section", prog.pointer_type(prog.pointer_type(ms_t)))
        roots = img.alloc(8 * nr_roots)  # SPARSEMEM_EXTREME allocates every root pointer
        img.u64(ms_ptr, roots)
        root_addr: dict[int, int] = {}
        for nr in sorted(pic.sections):
            r = nr // spr
            if r not in root_addr:
                root_addr[r] = img.alloc(MEM_SECTION_SIZE * spr, lay.page_size)
                img.u64(roots + 8 * r, root_addr[r])
            flags, stored = pic.sections[nr]
            a = root_addr[r] + MEM_SECTION_SIZE * (nr % spr)
            img.u64(a, flags)
            img.u64(a + 16, stored)
        if lay.sections_per_block:
            _memory_blocks(prog, img, objects, types, pic)
    # FLATMEM: no mem_section, no vmemmap, no memory blocks; discover() keys on their absence

    def find_object(prog_, name, flags, filename):
        return None if name in lose else objects.get(name)

    prog.register_object_finder("pageext-synthetic", find_object, enable_index=0)

    def find_symbol(prog_, name, address, one):
        out = [s for s in symbols if (name is None or s.name == name)
               and (address is None or s.address <= address < s.address + s.size)]
        return out[:1] if one else out

    prog.register_symbol_finder("pageext-synthetic", find_symbol, enable_index=0)

    data = bytes(img.buf)
    prog.add_memory_segment(DATA_BASE, len(data), lambda a, c, o, p: data[o:o + c])
    for addr, size in pic.table_segments:  # the tables themselves: zeroed pages
        prog.add_memory_segment(addr, size, lambda a, c, o, p: bytes(c))
    # What a core's own page list would say: the tables' direct-map pages.
    held = PfnRanges()
    for addr, size in pic.table_segments:
        if addr >= DIRECT_MAP:
            first = (addr - DIRECT_MAP) // lay.page_size
            held.add(first, first + -(-size // lay.page_size))
    prog.cache["pageext_presence"] = Presence(held, "synthetic segments")
    return prog


# drivers/base/memory.c memory block states (include/linux/memory.h, macros before v6.19)
MEM_ONLINE, MEM_GOING_OFFLINE, MEM_OFFLINE = 1 << 0, 1 << 1, 1 << 2


def _memory_blocks(prog, img: _Image, objects: dict, types: dict, pic: Picture) -> None:
    """memory_subsys and one struct memory_block per present block, reachable the
    way drgn's for_each_memory_block() walks them (bus_kset -> subsys_private ->
    klist_devices -> device_private -> device -> memory_block)."""
    ul = prog.type("unsigned long")
    i32 = prog.type("int")
    lh_holder: list[drgn.Type] = []
    lh = prog.struct_type("list_head", 16, [  # self-referential: lazily typed members
        drgn.TypeMember(lambda: prog.pointer_type(lh_holder[0]), "next", 0),
        drgn.TypeMember(lambda: prog.pointer_type(lh_holder[0]), "prev", 64)])
    lh_holder.append(lh)
    kobject = prog.struct_type("kobject", 16, [_m(lh, "entry", 0)])
    kset = prog.struct_type("kset", 32, [_m(lh, "list", 0), _m(kobject, "kobj", 16)])
    klist = prog.struct_type("klist", 16, [_m(lh, "k_list", 0)])
    klist_node = prog.struct_type("klist_node", 16, [_m(lh, "n_node", 0)])
    bus_type = prog.struct_type("bus_type", 8, [_m(prog.pointer_type(prog.type("char")), "name", 0)])
    sp_t = prog.struct_type("subsys_private", 56, [_m(kset, "subsys", 0), _m(klist, "klist_devices", 32),
                                                  _m(prog.pointer_type(bus_type), "bus", 48)])
    device = prog.struct_type("device", 16, [_m(ul, "id", 0), _m(ul, "pad", 8)])
    dev_prv = prog.struct_type("device_private", 24, [_m(klist_node, "knode_bus", 0),
                                                      _m(prog.pointer_type(device), "device", 16)])
    mem_block = prog.struct_type("memory_block", 40, [_m(ul, "start_section_nr", 0), _m(ul, "state", 8),
                                                      _m(i32, "nid", 16), _m(device, "dev", 24)])
    for t in (lh, kobject, kset, klist, klist_node, bus_type, sp_t, device, dev_prv, mem_block):
        types[t.tag] = t
    spb = pic.layout.sections_per_block
    objects["sections_per_block"] = drgn.Object(prog, ul, spb)
    bus = img.alloc(8)
    objects["memory_subsys"] = drgn.Object(prog, bus_type, address=bus)
    kset_addr = img.alloc(32)
    objects["bus_kset"] = drgn.Object(prog, prog.pointer_type(kset), kset_addr)
    sp = img.alloc(56)
    img.u64(sp + 48, bus)
    # bus_kset->list <-> sp->subsys.kobj.entry (one bus)
    entry = sp + 16
    img.u64(kset_addr, entry); img.u64(kset_addr + 8, entry)
    img.u64(entry, kset_addr); img.u64(entry + 8, kset_addr)
    blocks: dict[int, list] = {}
    nodes = {s.nr: s.node for s in pic.layout.sections}
    for nr, (flags, stored) in sorted(pic.sections.items()):
        if flags & SECTION_MARKED_PRESENT:
            blocks.setdefault(nr // spb, []).append((nr, flags, stored))
    head = sp + 32  # klist_devices.k_list
    prev = head
    for b, secs in sorted(blocks.items()):
        if all(f & SECTION_IS_ONLINE for _, f, _ in secs):
            state = MEM_ONLINE
        elif any(st & PAGE_EXT_INVALID for _, _, st in secs):
            state = MEM_GOING_OFFLINE  # offline_pages() still inside MEM_OFFLINE
        else:
            state = MEM_OFFLINE
        mb = img.alloc(40)
        img.u64(mb, b * spb)
        img.u64(mb + 8, state)
        img.u32(mb + 16, nodes[secs[0][0]])
        dp = img.alloc(24)
        img.u64(dp + 16, mb + 24)
        img.u64(prev, dp)  # prev->next = node
        img.u64(dp + 8, prev)  # node->prev = prev
        prev = dp
    img.u64(prev, head)
    img.u64(head + 8, prev)


# -- the corruption catalogue --------------------------------------------------------------------

def _sparse_tables(pic: Picture) -> list[int]:
    return sorted(nr for nr, (_, stored) in pic.sections.items() if stored and not stored & PAGE_EXT_INVALID)


def wrong_bias(pic: Picture) -> Optional[str]:
    """The stored pointer is off by one entry (biased with pfn+1): the base is no longer page aligned."""
    if pic.layout.section_pages is None:
        n = min(pic.node_page_ext)
        pic.node_page_ext[n] += pic.layout.entry_size
        return "bias"
    nr = _sparse_tables(pic)[-1]
    pic.sections[nr][1] -= pic.layout.entry_size
    return "bias"


def overlapping_tables(pic: Picture) -> Optional[str]:
    """One table's pointer aimed one page into another table."""
    lay = pic.layout
    if lay.section_pages is None:
        if len(pic.node_page_ext) < 2:
            return None
        a, b = sorted(pic.node_page_ext)[:2]
        pic.node_page_ext[b] = pic.node_page_ext[a] + lay.page_size
        return "no-overlap"
    a, b = _sparse_tables(pic)[:2]
    base_a = (pic.sections[a][1] + lay.entry_size * a * lay.section_pages) & MASK64
    pic.sections[b][1] = (base_a + lay.page_size - lay.entry_size * b * lay.section_pages) & MASK64
    return "no-overlap"


def missing_table(pic: Picture) -> Optional[str]:
    """An online section (FLATMEM: a node) whose page_ext pointer is NULL."""
    if pic.layout.section_pages is None:
        pic.node_page_ext[max(pic.node_page_ext)] = 0
        return "coverage"
    online = [nr for nr in _sparse_tables(pic) if pic.sections[nr][0] & SECTION_IS_ONLINE]
    pic.sections[online[-1]][1] = 0
    return "coverage"


def invalid_left_set(pic: Picture) -> Optional[str]:
    """PAGE_EXT_INVALID left on the table of a section that went offline and was removed.

    v6.1+: the bit is legitimate only between __invalidate_page_ext() and
    __free_page_ext(), while the section is still present, so coverage
    flags it.  Before v6.1 the bit does not exist: the same store is a
    pointer off by one byte, which bias catches.  FLATMEM has no such bit
    (PAGE_EXT_INVALID is under CONFIG_SPARSEMEM).
    """
    if pic.layout.section_pages is None:
        return None
    nr = _sparse_tables(pic)[-1]
    pic.sections[nr][0] = 0  # offline, then sparse_remove_section(): not present either
    pic.sections[nr][1] |= PAGE_EXT_INVALID
    return "coverage" if pic.variant.invalid_bit else "bias"


def total_usage_mismatch(pic: Picture) -> Optional[str]:
    """total_usage one page more than the tables: no whole number of freed tables explains it."""
    pic.total_usage += pic.layout.page_size
    return "total-usage"


def client_past_entry(pic: Picture) -> Optional[str]:
    """The last active client's offset pushed past the end of the entry."""
    active = [c for c in pic.layout.clients if c.active]
    if not pic.variant.ops_has_offset or not active:
        return None  # v3.19 ops have no offset/size
    c = max(active, key=lambda c: c.offset)
    pic.client_offsets[c.name] = pic.layout.entry_size - c.size + 8
    return "clients"


def unreadable_table(pic: Picture) -> Optional[str]:
    """One table's memory is missing from the image (a hole in the dump)."""
    if not pic.table_segments:
        return None
    pic.table_segments.pop()
    return "readable"


CORRUPTIONS: dict[str, Callable[[Picture], Optional[str]]] = {
    "wrong-bias": wrong_bias,
    "overlapping-tables": overlapping_tables,
    "missing-table": missing_table,
    "invalid-left-set": invalid_left_set,
    "total-usage-mismatch": total_usage_mismatch,
    "client-past-entry": client_past_entry,
    "unreadable-table": unreadable_table,
}


def inspect_program(prog: drgn.Program) -> tuple[Any, Layout, list]:
    """The core pipeline, exactly as ``pageext-inspect`` runs it on a real kernel."""
    from ..session import PageExt

    pe = PageExt(prog)
    return pe.geometry, pe.layout, pe.checks
