"""Layout discovery: what shape page_ext has in this kernel build.

Before walking anything we learn, from the target's own DWARF and memory,
the facts that differ between kernel versions and configurations:

* the memory model: SPARSEMEM (with or without VMEMMAP) keeps one table per
  ``struct mem_section``; FLATMEM one per ``pglist_data.node_page_ext``;
* page size and PAGES_PER_SECTION;
* the entry size: the global ``page_ext_size`` since v5.4 (5556cfe8d994),
  ``sizeof(struct page_ext) + extra_mem`` from v4.9 (980ac1672e7e), and
  plain ``sizeof(struct page_ext)`` in v3.19 (eefa864b701d);
* the clients.  ``page_ext_ops[]`` is ``__initdata``, freed and poisoned
  after boot, so each client is found through its own ``*_ops`` object of
  type ``struct page_ext_operations`` (offset/size exist from v4.9,
  need_shared_flags from v6.3, 6189eb82f0ae), and whether it is active in
  this boot through its own static key where it has one.

The result is a :class:`Geometry`, consumed by the walker; nothing here
walks tables.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Optional

import drgn

from .model import Client
from .target import TargetError

# How each known client is switched on, for the "empty page_ext" message.
HOW_TO_ENABLE = {
    "page_owner": "boot with page_owner=on",
    "page_table_check": "boot with page_table_check=on",
    "page_idle": "always on when compiled in (32-bit idle page tracking)",
    # lib/alloc_tag.c setup_early_mem_profiling() (v6.10): 0|1 (kstrtobool) or
    # never; from v6.13 (4835f747d3ed) "1,compressed" moves the tags out of page_ext.
    "page_alloc_tagging": "boot with sysctl.vm.mem_profiling=1 (not =never, nor ',compressed' on 6.13+)",
    "page_iommu_debug": "boot with iommu.debug_pagealloc=1",
    "debug_guardpage": "boot with debug_pagealloc=on",
    "page_poisoning": "boot with page_poison=on",
    "page_pinner": "boot with page_pinner=on",
}


@dataclass
class Geometry:
    """Version- and config-dependent facts about one kernel's page_ext."""

    release: str
    memory_model: str  # sparsemem-vmemmap | sparsemem | flatmem
    page_size: int
    page_shift: int
    section_pages: Optional[int]
    entry_size: int
    entry_size_source: str  # which rule gave entry_size
    has_invalid_bit: bool  # PAGE_EXT_INVALID exists (v6.1+, b1d5488a252d)
    clients: list[Client] = field(default_factory=list)
    total_usage: Optional[int] = None
    max_order_nr_pages: Optional[int] = None  # FLATMEM alignment
    sections_per_block: Optional[int] = None

    @property
    def sparse(self) -> bool:
        return self.memory_model != "flatmem"


def release_version(release: str) -> Optional[tuple[int, int]]:
    """(major, minor) of a kernel release string such as "6.1.192-2", or None."""
    m = re.match(r"(\d+)\.(\d+)", release)
    return (int(m.group(1)), int(m.group(2))) if m else None


def require_client(geo: "Geometry", name: str, config: str) -> Client:
    """The active client ``name``, or TargetError saying why it cannot be used."""
    client = next((c for c in geo.clients if c.name == name), None)
    if client is None:
        raise TargetError(f"this kernel has no {name} ({config} is off)")
    if not client.active:
        raise TargetError(f"{name} is compiled in but inactive in this boot "
                          f"({client.how_to_enable or f'boot with {name}=on'})")
    return client


def _obj(prog: drgn.Program, name: str, filename: Optional[str] = None) -> Optional[drgn.Object]:
    try:
        if filename:
            return prog.object(name, drgn.FindObjectFlags.ANY, filename)
        return prog[name]
    except (LookupError, ValueError):
        return None


def _value(prog: drgn.Program, name: str, filename: Optional[str] = None) -> Optional[int]:
    obj = _obj(prog, name, filename)
    if obj is None:
        return None
    try:
        return obj.value_()
    except drgn.FaultError:
        return None


def memory_model(prog: drgn.Program) -> str:
    """sparsemem-vmemmap, sparsemem or flatmem, from which globals exist."""
    if _obj(prog, "mem_section") is None:
        return "flatmem"
    # drgn defines "vmemmap" for SPARSEMEM_VMEMMAP kernels (x86-64: vmemmap_base).
    if _obj(prog, "vmemmap") is not None:
        return "sparsemem-vmemmap"
    return "sparsemem"


def check_page_extension(prog: drgn.Program, model: str) -> None:
    """Raise TargetError unless the kernel was built with CONFIG_PAGE_EXTENSION."""
    try:
        prog.type("struct page_ext")
    except LookupError:
        raise TargetError("this kernel was built without CONFIG_PAGE_EXTENSION: it has no page_ext") from None
    holder = "struct mem_section" if model != "flatmem" else "struct pglist_data"
    member = "page_ext" if model != "flatmem" else "node_page_ext"
    try:
        drgn.offsetof(prog.type(holder), member)
    except (LookupError, ValueError):
        raise TargetError(f"{holder} has no {member}: this kernel has no page_ext") from None


def entry_size(prog: drgn.Program) -> tuple[int, str]:
    """Size of one page_ext entry and the rule that gave it."""
    # v5.4+ 5556cfe8d994 ("mm, page_owner: keep owner info when freeing the
    # page"): a global page_ext_size.  The compiler may drop it when no client
    # uses it (Debian's stock 6.1 has no such variable).
    size = _value(prog, "page_ext_size")
    if size is not None:
        return size, "page_ext_size"
    base = prog.type("struct page_ext").size
    # v4.9 980ac1672e7e ("mm/page_ext: support extra space allocation by
    # page_ext user"): sizeof(struct page_ext) + extra_mem, both static.
    extra = _value(prog, "extra_mem", "page_ext.c")
    if extra is not None:
        return base + extra, "sizeof(struct page_ext) + extra_mem"
    # v3.19 eefa864b701d: the entry is the struct itself.
    return base, "sizeof(struct page_ext)"


def _static_key_enabled(prog: drgn.Program, name: str) -> Optional[bool]:
    key = _obj(prog, name)
    if key is None:
        return None
    try:
        return key.key.enabled.counter.value_() > 0
    except (AttributeError, drgn.FaultError):
        return None


def _client_active(prog: drgn.Program, name: str, offset: int, size: int,
                   entry: int, allocated: bool, has_shared_flags: bool) -> bool:
    if not allocated:
        return False
    if name == "page_owner":
        # DEFINE_STATIC_KEY_FALSE(page_owner_inited), mm/page_owner.c (v4.4+).
        state = _static_key_enabled(prog, "page_owner_inited")
        if state is not None:
            return state
    if name == "page_table_check":
        # DEFINE_STATIC_KEY_TRUE(page_table_check_disabled), df4e817b7108 (v5.17).
        state = _static_key_enabled(prog, "page_table_check_disabled")
        if state is not None:
            return not state
    if name == "page_alloc_tagging":
        # lib/alloc_tag.c (v6.10, 22d407b164ff): pages are tagged only while
        # the static key mem_alloc_profiling_key is on (sysctl.vm.mem_profiling
        # at boot or run time).  Off with =0 the client still has its space
        # (need() is mem_profiling_support); =never gives it none.  From v6.13
        # (4835f747d3ed) mem_profiling_compressed keeps the tags in page->flags
        # and need() returns false: nothing in page_ext either way.
        if _static_key_enabled(prog, "mem_profiling_compressed"):
            return False
        if _static_key_enabled(prog, "mem_alloc_profiling_key") is False:
            return False
    # Generic rule: invoke_need_callbacks() assigns an offset only to clients
    # whose need() returned true.  Before v6.3 every offset is at least
    # sizeof(struct page_ext); from v6.3 (6189eb82f0ae) a first client without
    # need_shared_flags may legitimately sit at offset 0.
    if offset:
        return offset + size <= entry
    return has_shared_flags and size > 0 and size <= entry


def find_clients(prog: drgn.Program, entry: int, allocated: bool) -> list[Client]:
    """Every ``struct page_ext_operations`` object in the kernel, as a Client."""
    ops_type = prog.type("struct page_ext_operations")
    members = {m.name for m in ops_type.type.members} if ops_type.kind == drgn.TypeKind.TYPEDEF \
        else {m.name for m in ops_type.members}
    has_offset = "offset" in members  # v4.9+, 980ac1672e7e
    has_shared_flags = "need_shared_flags" in members  # v6.3+, 6189eb82f0ae
    names = set()
    for sym in prog.symbols():
        if sym.name.endswith("_ops") and sym.kind == drgn.SymbolKind.OBJECT:
            names.add(sym.name)
    clients = []
    for symname in sorted(names):
        obj = _obj(prog, symname)
        if obj is None or obj.type_.unqualified().type_name() != "struct page_ext_operations":
            continue
        name = symname[: -len("_ops")]
        if name == "page_idle":
            continue  # __initdata: placed below, after the clients it follows
        try:
            offset = obj.offset.value_() if has_offset else 0
            size = obj.size.value_() if has_offset else 0
            shared = bool(obj.need_shared_flags.value_()) if has_shared_flags else None
        except drgn.FaultError as e:
            raise TargetError(f"cannot read {symname}: {e}") from None
        active = _client_active(prog, name, offset, size, entry, allocated, has_shared_flags)
        clients.append(Client(name, offset, size, active, shared, HOW_TO_ENABLE.get(name, "")))
    idle = _page_idle_client(prog, clients, has_offset, has_shared_flags, allocated)
    if idle is not None:
        clients.append(idle)
    clients.sort(key=lambda c: (not c.active, c.offset, c.name))
    return clients


def _page_idle_client(prog: drgn.Program, clients: list[Client], has_offset: bool,
                      has_shared_flags: bool, allocated: bool) -> Optional[Client]:
    """page_idle_ops (32-bit idle page tracking), rebuilt rather than read.

    mm/page_ext.c declares it ``static ... __initdata`` (v4.3, 33c3fc71c8cf,
    to this day), so after boot its bytes are freed init memory, poisoned and
    reused: reading .offset would give garbage.  Its facts are fixed instead:
    need() always returns true, size is 0 (it only uses PAGE_EXT_YOUNG and
    PAGE_EXT_IDLE in page_ext->flags, need_shared_flags from v6.3), and
    invoke_need_callbacks() gives it page_ext_size as it stands after
    page_owner, the only client before it in page_ext_ops[]: sizeof(struct
    page_ext) plus page_owner's size when page_owner is on.
    """
    if _obj(prog, "page_idle_ops", "page_ext.c") is None:
        return None  # 64-bit, or CONFIG_PAGE_IDLE_FLAG off: no such client
    offset = 0
    if has_offset:
        offset = prog.type("struct page_ext").size
        owner = next((c for c in clients if c.name == "page_owner"), None)
        if owner is not None and owner.active:
            offset += owner.size
    return Client("page_idle", offset, 0, allocated, True if has_shared_flags else None,
                  HOW_TO_ENABLE["page_idle"])


def discover(prog: drgn.Program) -> Geometry:
    """Learn the page_ext geometry of the kernel in ``prog``."""
    try:
        release = prog["init_uts_ns"].name.release.string_().decode(errors="replace")
    except (LookupError, drgn.FaultError) as e:
        raise TargetError(f"cannot read the kernel release (init_uts_ns): {e}") from None
    model = memory_model(prog)
    check_page_extension(prog, model)
    page_size = prog["PAGE_SIZE"].value_()
    page_shift = prog["PAGE_SHIFT"].value_()
    section_pages = None
    if model != "flatmem":
        section_pages = 1 << (prog["SECTION_SIZE_BITS"].value_() - page_shift)
    entry, source = entry_size(prog)
    total_usage = _value(prog, "total_usage", "page_ext.c")
    # PAGE_EXT_INVALID is a #define; its user page_ext_invalid() or
    # __invalidate_page_ext() only exist from v6.1 (b1d5488a252d).  The
    # page_ext_get() API arrived in the same commit and is never inlined.
    has_invalid = any(_obj(prog, n) is not None for n in ("page_ext_get", "__invalidate_page_ext"))
    allocated = bool(total_usage)
    clients = find_clients(prog, entry, allocated or total_usage is None)
    max_order_nr = None
    if model == "flatmem":
        # MAX_ORDER_NR_PAGES is 1 << (MAX_ORDER - 1) until v6.4, where MAX_ORDER
        # became inclusive, and 1 << MAX_PAGE_ORDER after the v6.8 rename: the
        # same number of pages each time, and always 1 << (len(free_area) - 1).
        # The macros are not in DWARF; the free_area array length is.
        zone = prog.type("struct zone")
        nr_orders = zone.member("free_area").type.length
        max_order_nr = 1 << (nr_orders - 1)
    spb = _value(prog, "sections_per_block", "memory.c")
    return Geometry(release, model, page_size, page_shift, section_pages, entry, source,
                    has_invalid, clients, total_usage, max_order_nr, spb or None)
