"""Layout discovery: what shape page_ext has in this kernel build.

Before walking anything we learn, from the target's own DWARF and memory,
the facts that differ between kernel versions and configurations, and say
them in the simulator's terms (:class:`inspector.model.Rules`):

* the memory model: SPARSEMEM (with or without VMEMMAP) keeps one table per
  ``struct mem_section``; FLATMEM one per ``pglist_data.node_page_ext``;
* page size and PAGES_PER_SECTION;
* the entry rule and entry size: the global ``page_ext_size`` since v5.4
  (5556cfe8d994), starting at 0 from v6.3 (6189eb82f0ae, ops gain
  ``need_shared_flags``); ``sizeof(struct page_ext) + extra_mem`` from v4.9
  (980ac1672e7e, ops gain ``offset``/``size``); plain ``sizeof(struct
  page_ext)`` in v3.19 (eefa864b701d).  The compiler drops ``page_ext_size``
  when nothing uses it (Debian's stock 6.1): then the rule still follows
  from the types, and the size from the rule;
* PAGE_EXT_INVALID (b1d5488a252d, v6.1), seen through the functions that
  came with it (``page_ext_get``, ``__invalidate_page_ext``);
* the clients.  ``page_ext_ops[]`` is ``__initdata``, freed and poisoned
  after boot, so each client is found through its own ``*_ops`` object of
  type ``struct page_ext_operations``, and whether it is active in this boot
  through the probe its :class:`~inspector.clients.ClientSpec` declares.

The result is a :class:`~inspector.model.Geometry`; nothing here walks tables.
"""

from __future__ import annotations

from typing import Optional

import drgn

from . import kernel as k
from .clients import ClientSpec, registry
from .errors import CorruptError, NoPageExtError, TargetError
from .model import (ENTRY_EXTRA_MEM, ENTRY_PAGE_EXT_SIZE, ENTRY_SHARED_FLAGS, ENTRY_STRUCT, Client, Geometry,
                    Rules)


def memory_model(prog: drgn.Program) -> str:
    """sparsemem-vmemmap, sparsemem or flatmem, from which globals exist."""
    if not k.exists(prog, "mem_section"):
        return "flatmem"
    # drgn defines "vmemmap" for SPARSEMEM_VMEMMAP kernels (x86-64: vmemmap_base),
    # read from memory: a dump that lacks that page still has a vmemmap.
    if k.exists(prog, "vmemmap"):
        return "sparsemem-vmemmap"
    return "sparsemem"


def check_page_extension(prog: drgn.Program, model: str) -> None:
    """Raise NoPageExtError unless the kernel was built with CONFIG_PAGE_EXTENSION."""
    if k.type_or_none(prog, "struct page_ext") is None:
        raise NoPageExtError("this kernel was built without CONFIG_PAGE_EXTENSION: it has no page_ext")
    holder = "struct mem_section" if model != "flatmem" else "struct pglist_data"
    member = "page_ext" if model != "flatmem" else "node_page_ext"
    if not k.has_member(k.type_or_none(prog, holder), member):
        raise NoPageExtError(f"{holder} has no {member}: this kernel has no page_ext")


def _ops_members(prog: drgn.Program) -> set[str]:
    t = k.type_or_none(prog, "struct page_ext_operations")
    if t is None:
        return set()
    return {m.name for m in t.unaliased().members or ()}


def detect_rules(prog: drgn.Program, model: str) -> Rules:
    """The version rules of this kernel's mm/page_ext.c, from its types and symbols."""
    members = _ops_members(prog)
    has_offset = "offset" in members  # v4.9, 980ac1672e7e
    has_shared = "need_shared_flags" in members  # v6.3, 6189eb82f0ae
    if has_shared:
        rule = ENTRY_SHARED_FLAGS
    elif k.obj(prog, "page_ext_size") is not None or k.constant(prog, "PAGE_EXT_OWNER_ALLOCATED") is not None \
            or k.constant(prog, "PAGE_EXT_OWNER_ACTIVE") is not None:
        # page_ext_size and PAGE_EXT_OWNER_ACTIVE arrived in the same v5.4 series
        # (5556cfe8d994, 37389167a281); the variable itself may be optimized out.
        rule = ENTRY_PAGE_EXT_SIZE
    elif has_offset:
        rule = ENTRY_EXTRA_MEM
    else:
        rule = ENTRY_STRUCT
    # page_ext_get()/page_ext_put() and __invalidate_page_ext() came with
    # PAGE_EXT_INVALID (b1d5488a252d, v6.1); page_ext_get is never inlined.
    invalid = model != "flatmem" and any(k.obj(prog, n) is not None
                                         for n in ("page_ext_get", "__invalidate_page_ext", "page_ext_lookup"))
    # FLATMEM rounding and slack: in every merged kernel (eefa864b701d had the
    # fix folded in before the merge, lkml 2014-12-03); only the seed patch as
    # posted lacked them, and no kernel ran that.
    return Rules(entry_rule=rule, ops_has_offset=has_offset, ops_has_shared_flags=has_shared,
                 invalid_bit=invalid, flatmem_max_order_slack=True)


def entry_size(prog: drgn.Program, rules: Rules) -> tuple[int, str]:
    """Size of one page_ext entry and the rule that gave it, in words."""
    base = prog.type("struct page_ext").size
    if rules.entry_rule in (ENTRY_PAGE_EXT_SIZE, ENTRY_SHARED_FLAGS):
        size = k.value(prog, "page_ext_size")
        if size is not None:
            return size, "page_ext_size"
        # Optimized out: nothing ever grew it.  It starts at sizeof(struct
        # page_ext) (v5.4) or 0 (v6.3, 6189eb82f0ae).
        if rules.entry_rule == ENTRY_SHARED_FLAGS:
            return 0, "page_ext_size optimized out: its initial 0 (v6.3+)"
        return base, "page_ext_size optimized out: its initial sizeof(struct page_ext)"
    if rules.entry_rule == ENTRY_EXTRA_MEM:
        extra = k.value(prog, "extra_mem", "page_ext.c")
        if extra is not None:
            return base + extra, "sizeof(struct page_ext) + extra_mem"
        return base, "sizeof(struct page_ext) (extra_mem optimized out)"
    return base, "sizeof(struct page_ext)"


def _generic_active(offset: int, size: int, entry: int, rules: Rules) -> bool:
    """invoke_need_callbacks() gives an offset only to clients whose need()
    returned true.  Before v6.3 every such offset is at least sizeof(struct
    page_ext); from v6.3 (6189eb82f0ae) a first client without
    need_shared_flags may legitimately sit at offset 0."""
    if offset:
        return offset + size <= entry
    return rules.ops_has_shared_flags and 0 < size <= entry


def find_clients(prog: drgn.Program, entry: int, allocated: Optional[bool], rules: Rules) -> list[Client]:
    """Every ``struct page_ext_operations`` object in the kernel, as a Client.

    ``allocated`` False means page_ext was never allocated in this boot:
    then no client is active, whatever its probe says."""
    known = registry()
    names = set()
    for sym in prog.symbols():
        if sym.name.endswith("_ops") and sym.kind == drgn.SymbolKind.OBJECT:
            names.add(sym.name)
    clients: list[Client] = []
    rebuilt: list[ClientSpec] = []
    for symname in sorted(names):
        name = symname[: -len("_ops")]
        spec = known.get(name)
        if spec is not None and spec.rebuild is not None:
            rebuilt.append(spec)
            continue
        o = k.obj(prog, symname)
        if o is None or o.absent_ or o.type_.unqualified().type_name() != "struct page_ext_operations":
            continue
        try:
            offset = o.offset.value_() if rules.ops_has_offset else 0
            size = o.size.value_() if rules.ops_has_offset else 0
            shared = bool(o.need_shared_flags.value_()) if rules.ops_has_shared_flags else None
        except drgn.FaultError as e:
            raise TargetError(f"cannot read {symname}: {e}") from None
        active = False
        if allocated is not False:
            state = spec.active(prog) if spec is not None and spec.active is not None else None
            active = state if state is not None else _generic_active(offset, size, entry, rules)
        clients.append(Client(name, offset, size, bool(active), shared, spec.enable if spec else ""))
    for spec in rebuilt:
        if k.obj(prog, spec.ops, "page_ext.c") is not None or k.obj(prog, spec.ops) is not None:
            c = spec.rebuild(prog, clients, rules, allocated is not False)
            if c is not None:
                clients.append(c)
    clients.sort(key=lambda c: (not c.active, c.offset, c.name))
    return clients


def discover(prog: drgn.Program) -> Geometry:
    """Learn the page_ext geometry of the kernel in ``prog``.

    :raises NoPageExtError: the kernel has no page_ext
    :raises TargetError: the kernel's own facts cannot be read
    """
    try:
        release = prog["init_uts_ns"].name.release.string_().decode(errors="replace")
    except (LookupError, drgn.FaultError, drgn.ObjectAbsentError) as e:
        raise TargetError(f"cannot read the kernel release (init_uts_ns): {e}") from None
    model = memory_model(prog)
    check_page_extension(prog, model)
    page_size = prog["PAGE_SIZE"].value_()
    section_pages = None
    if model != "flatmem":
        section_pages = 1 << (prog["SECTION_SIZE_BITS"].value_() - (page_size.bit_length() - 1))
    rules = detect_rules(prog, model)
    entry, source = entry_size(prog, rules)
    if not 0 <= entry <= page_size:
        # invoke_need_callbacks() adds each client's small struct to
        # sizeof(struct page_ext): no kernel's entry comes near a page.
        raise CorruptError(f"the page_ext entry size ({source}) is {entry}: no kernel has entries larger than "
                           f"a page ({page_size} bytes); corrupt dump?")
    total_usage = k.value(prog, "total_usage", "page_ext.c")
    allocated = None if total_usage is None else total_usage > 0
    clients = find_clients(prog, entry, allocated, rules)
    max_order_nr = 1 << (k.nr_orders(prog) - 1)
    spb = k.value(prog, "sections_per_block", "memory.c")
    extreme = None
    if model != "flatmem":
        t = prog["mem_section"].type_.unaliased()
        extreme = t.kind == drgn.TypeKind.POINTER or t.type.unaliased_kind() == drgn.TypeKind.POINTER
    return Geometry(release, model, page_size, section_pages, entry, clients, total_usage,
                    spb or None, max_order_nr, extreme, rules, source)
