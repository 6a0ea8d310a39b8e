"""The simulator proper: a deterministic twin of mm/page_ext.c.

Given a machine (memory model, nodes, present sections, clients) and a
:class:`~inspector.versions.Variant`, :func:`simulate` replays boot
(``page_ext_init`` / ``page_ext_init_flatmem``) and then a list of hotplug
steps driven the way mm/memory_hotplug.c drives the memory notifier
(online_pages: GOING_ONLINE, then ONLINE or CANCEL_ONLINE; offline_pages:
GOING_OFFLINE, sections marked offline, OFFLINE).  It records every call the
kernel would make in the shared event schema, and ends with an
:class:`inspector.model.Layout` -- the walker's own type, so a prediction and
a walk compare field by field.  Table addresses are synthetic but
deterministic: each node hands out page-aligned direct-map memory from its
own boot sections, bottom up, never reused.  Everything here is plain
Python: no drgn, no kernel.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Optional

from ..model import (ENTRY_EXTRA_MEM, ENTRY_PAGE_EXT_SIZE, ENTRY_SHARED_FLAGS, ENTRY_STRUCT, INVALID, OFFLINE,
                     ONLINE, Client, Layout, SectionInfo, Table)
from ..errors import PageExtError
from ..versions import Variant, geometry

DIRECT_MAP = 0xFFFF888000000000  # x86-64 page_offset_base without KASLR
PAGE_EXT_INVALID = 0x1  # mm/page_ext.c, b1d5488a252d (v6.1)
ENOMEM = -12
MASK64 = (1 << 64) - 1
# Where a node's first table goes, from the start of its first boot section:
# clear of pfn 0 and of the kernel image, like a real alloc_pages_exact_nid().
ALLOC_START_OFFSET = 16 << 20
# How discovery words each entry rule (inspector.discover.entry_size).
ENTRY_SOURCES = {ENTRY_STRUCT: "sizeof(struct page_ext)", ENTRY_EXTRA_MEM: "sizeof(struct page_ext) + extra_mem",
                 ENTRY_PAGE_EXT_SIZE: "page_ext_size", ENTRY_SHARED_FLAGS: "page_ext_size"}



class SimError(PageExtError, ValueError):
    """The scenario asks for something the kernel would not do."""


@dataclass
class _Section:
    nr: int
    node: int
    present: bool
    online: bool
    early: bool
    base: Optional[int] = None  # table address (None: section->page_ext == NULL)
    invalid: bool = False


@dataclass
class SimResult:
    events: list[dict[str, Any]]
    layout: Layout
    total_usage: int
    dmesg: Optional[str]  # "allocated N bytes of page_ext", or None if never printed
    panicked: bool = False
    # node -> (node_start_pfn, node_end_pfn) at the end of the run (pglist_data
    # spans; what a synthetic kernel puts in node_start_pfn/node_spanned_pages)
    spans: dict[int, tuple[int, int]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"events": self.events, "layout": layout_to_json(self.layout),
                "total_usage": self.total_usage, "dmesg": self.dmesg, "panicked": self.panicked}


def layout_to_json(layout: Layout) -> dict[str, Any]:
    import dataclasses
    out = dataclasses.asdict(layout)
    out.pop("hotplug_busy")  # read from a real kernel's lock by the walk; not part of the simulated algorithm
    return out


class Simulator:
    """State of one simulated kernel; see :func:`simulate`."""

    def __init__(self, machine: dict[str, Any], variant: Variant):
        self.m = machine
        self.v = variant
        self.model = machine.get("memory_model", "sparsemem-vmemmap")
        if self.model not in ("sparsemem-vmemmap", "sparsemem", "flatmem"):
            raise SimError(f"unknown memory model {self.model!r}")
        self.flat = self.model == "flatmem"
        self.page_size = int(machine.get("page_size", 4096))
        self.section_pages = None if self.flat else int(machine.get("section_pages", 32768))
        if machine.get("geometry") is not None:  # a named page/section size (inspector.versions.GEOMETRIES)
            try:
                geo = geometry(str(machine["geometry"]))
            except ValueError as e:
                raise SimError(str(e)) from None
            given = {k: int(machine[k]) for k in ("page_size", "section_pages") if k in machine}
            implied = {"page_size": geo.page_size, "section_pages": geo.section_pages}
            clash = [f"{k} {v} (it has {implied[k]})" for k, v in given.items() if v != implied[k]]
            if clash:
                raise SimError(f"geometry {geo.name} contradicts the scenario's " + ", ".join(clash))
            self.page_size = geo.page_size
            self.section_pages = None if self.flat else geo.section_pages
        self.max_order_nr = int(machine.get("max_order_nr_pages", 1024))
        self.struct_size = int(machine.get("struct_page_ext_size", 8))
        self.block_sections = machine.get("block_sections")
        self.fail_alloc = set(int(n) for n in machine.get("fail_alloc", []))
        self.early_param = bool(machine.get("early_page_ext", False))
        if self.early_param and not variant.early_page_ext:
            raise SimError(f"early_page_ext= does not exist in {variant.name} (c4f20f1479c4, v6.1)")
        self.events: list[dict[str, Any]] = []
        self.total_usage = 0
        self.dmesg: Optional[str] = None
        self.panicked = False
        self.alloc_attempts = 0
        self.entry_size = 0
        self.clients: list[Client] = []
        self.sections: dict[int, _Section] = {}
        self.node_tables: dict[int, Table] = {}  # FLATMEM
        self.spans: dict[int, tuple[int, int]] = {}
        for n in machine.get("nodes", []):
            self.spans[int(n["nid"])] = (int(n["start_pfn"]), int(n["end_pfn"]))
        for s in machine.get("sections", []):
            self.sections[int(s["nr"])] = _Section(int(s["nr"]), int(s["node"]), True, True, True)
        if not self.flat:
            for sec in self.sections.values():  # derive boot spans where not given
                a, b = sec.nr * self.section_pages, (sec.nr + 1) * self.section_pages
                lo, hi = self.spans.get(sec.node, (a, b))
                if sec.node not in {int(n["nid"]) for n in machine.get("nodes", [])}:
                    self.spans[sec.node] = (min(lo, a), max(hi, b))
        elif not self.spans:
            raise SimError("FLATMEM needs nodes with start_pfn/end_pfn")
        # Bump allocators: per node, the next free physical address.
        self.next_phys: dict[int, int] = {}
        for nid in sorted(self.spans):
            start = self._node_first_pfn(nid)
            if start is not None:
                self.next_phys[nid] = start * self.page_size + ALLOC_START_OFFSET

    # -- helpers -------------------------------------------------------------

    def _node_first_pfn(self, nid: int) -> Optional[int]:
        if self.flat:
            return self.spans[nid][0]
        early = sorted(s.nr for s in self.sections.values() if s.node == nid and s.early)
        return early[0] * self.section_pages if early else None

    def _emit(self, ev: dict[str, Any]) -> None:
        self.events.append(ev)

    def _alloc(self, size: int, nid: int) -> Optional[int]:
        """alloc_pages_exact_nid()/memblock_alloc_try_nid(): page-aligned, or None on injected failure."""
        self.alloc_attempts += 1
        if self.alloc_attempts in self.fail_alloc:
            return None
        # A node with no boot memory of its own: the allocation falls back to
        # another node (alloc_pages_exact_nid is not __GFP_THISNODE).
        home = nid if nid in self.next_phys else min(self.next_phys)
        phys = self.next_phys[home]
        pages = -(-size // self.page_size)
        self.next_phys[home] = phys + max(pages, 1) * self.page_size
        return DIRECT_MAP + phys

    # -- invoke_need_callbacks ------------------------------------------------

    def invoke_need_callbacks(self) -> bool:
        v = self.v
        specs = self.m.get("clients", [])
        need_any = False
        if v.entry_rule == ENTRY_SHARED_FLAGS:
            # 6189eb82f0ae (v6.3) invoke_need_callbacks(): first pass sets
            # page_ext_size = sizeof(struct page_ext) if a needed client has
            # need_shared_flags; otherwise it stays 0.
            size = self.struct_size if any(c.get("need") and c.get("need_shared_flags") for c in specs) else 0
        else:
            size = self.struct_size
        out = []
        for c in specs:
            need = bool(c.get("need"))
            csize = int(c.get("size", 0)) if v.ops_has_offset else 0
            offset = 0
            if need:
                need_any = True
                if v.ops_has_offset:
                    # 980ac1672e7e (v4.9): offset = sizeof(struct page_ext) + extra_mem;
                    # 5556cfe8d994 (v5.4): offset = page_ext_size; both running totals.
                    offset = size
                    size += csize
            shared = bool(c.get("need_shared_flags")) if v.ops_has_shared_flags else None
            active = need and (offset > 0 or (v.ops_has_shared_flags and csize > 0)) if v.ops_has_offset else False
            out.append(Client(c["name"], offset, csize, active, shared))
        self.entry_size = size
        self.clients = sorted(out, key=lambda c: (not c.active, c.offset, c.name))
        return need_any

    # -- boot -----------------------------------------------------------------

    def boot(self) -> None:
        need = self.invoke_need_callbacks()
        if self.flat:
            self._boot_flat(need)
        else:
            self._boot_sparse(need)

    def _boot_flat(self, need: bool) -> None:
        # page_ext_init_flatmem(): `if (!invoke_need_callbacks()) return;` --
        # the seed as posted tested the function pointer instead, always true.
        if not need and not self.v.flatmem_need_bug:
            return
        for nid in sorted(self.spans):  # for_each_online_node
            start, end = self.spans[nid]
            nr = end - start  # node_spanned_pages
            if not nr:
                continue
            first = start
            if self.v.flatmem_max_order_slack:
                a = self.max_order_nr
                if start % a or end % a:
                    nr += a
                first = start - start % a
            size = self.entry_size * nr
            base = self._alloc(size, nid)
            self._emit({"event": "alloc_node", "nid": nid, "nr_pages": nr, "ret": 0 if base else ENOMEM})
            if base is None:
                # pr_crit("allocation of page_ext failed.\n"); panic("Out of memory")
                self.panicked = True
                self._emit({"event": "panic", "reason": "Out of memory"})
                return
            self.node_tables[nid] = Table(None, nid, first, nr, base, size, ONLINE, table_mem="direct",
                                          table_pfn=(base - DIRECT_MAP) // self.page_size, stored=base)
            self.total_usage += size
        self.dmesg = f"allocated {self.total_usage} bytes of page_ext"

    def _boot_sparse(self, need: bool) -> None:
        if not need:
            return
        pps = self.section_pages
        # for_each_node_state(nid, N_MEMORY): nodes with boot memory, in order.
        for nid in sorted({s.node for s in self.sections.values() if s.present}):
            start, end = self.spans[nid]
            pfn = start
            while pfn < end:
                sec = self.sections.get(pfn // pps)
                # pfn_valid() and pfn_to_nid(pfn) == nid
                if sec is not None and sec.present and sec.node == nid:
                    if self.init_section_page_ext(pfn, nid):
                        self.panicked = True
                        self._emit({"event": "panic", "reason": "Out of memory"})
                        return
                pfn = (pfn + 1 + pps - 1) // pps * pps  # ALIGN(pfn + 1, PAGES_PER_SECTION)
        # hotplug_memory_notifier(page_ext_callback, ...) then
        self.dmesg = f"allocated {self.total_usage} bytes of page_ext"

    # -- the SPARSEMEM primitives -------------------------------------------------

    def init_section_page_ext(self, pfn: int, nid: int) -> int:
        pps = self.section_pages
        sec = self.sections.get(pfn // pps)
        aligned = pfn - pfn % pps  # pfn &= PAGE_SECTION_MASK
        if sec is not None and sec.base is not None:
            self._emit({"event": "init_section", "pfn": aligned, "nid": nid, "ret": 0})
            return 0  # if (section->page_ext) return 0;
        size = self.entry_size * pps
        base = self._alloc(size, nid)
        if base is None:
            self._emit({"event": "init_section", "pfn": aligned, "nid": nid, "ret": ENOMEM})
            return ENOMEM  # pr_err("page ext allocation failure\n")
        if sec is None:  # a section the range covers but nobody added: the kernel still writes it
            sec = self.sections[pfn // pps] = _Section(pfn // pps, nid, False, False, False)
        sec.base, sec.invalid = base, False
        self.total_usage += size  # total_usage += table_size (never decremented anywhere)
        self._emit({"event": "init_section", "pfn": aligned, "nid": nid, "ret": 0})
        return 0

    def free_page_ext(self, pfn: int) -> None:
        """__free_page_ext(): clears the pointer and frees; total_usage is left alone."""
        self._emit({"event": "free", "pfn": pfn})
        sec = self.sections.get(pfn // self.section_pages)
        if sec is None or sec.base is None:
            return
        sec.base, sec.invalid = None, False

    def invalidate_page_ext(self, pfn: int) -> None:
        """__invalidate_page_ext() (b1d5488a252d, v6.1): ms->page_ext + PAGE_EXT_INVALID."""
        self._emit({"event": "invalidate", "pfn": pfn})
        sec = self.sections.get(pfn // self.section_pages)
        if sec is None or sec.base is None:
            return
        sec.invalid = True

    def _range(self, start_pfn: int, nr_pages: int) -> range:
        pps = self.section_pages
        start = start_pfn - start_pfn % pps  # SECTION_ALIGN_DOWN
        end = -(-(start_pfn + nr_pages) // pps) * pps  # SECTION_ALIGN_UP
        return range(start, end, pps)

    def online_page_ext(self, start_pfn: int, nr_pages: int, nid: int) -> int:
        # nid: status_change_nid or pfn_to_nid(start_pfn) (v6.17); the same node here.
        fail = 0
        pfns = list(self._range(start_pfn, nr_pages))
        failed_at = None
        for pfn in pfns:
            sec = self.sections.get(pfn // self.section_pages)
            if self.v.online_skips_absent and (sec is None or not sec.present):
                continue  # seed/v3.19: if (!pfn_present(pfn)) continue;
            fail = self.init_section_page_ext(pfn, nid)
            if fail:
                failed_at = pfn
                break
        if not fail:
            return 0
        if self.v.rollback == "before":
            # v6.6: end = pfn - PAGES_PER_SECTION (the loop's pfn is one past the failure)
            undo = [p for p in pfns if p < failed_at]
        else:
            undo = pfns  # every section of the range, including ones that had a table before
        for pfn in undo:
            self.free_page_ext(pfn)
        return ENOMEM

    def offline_page_ext(self, start_pfn: int, nr_pages: int, reader: bool = False) -> bool:
        """Returns False when a reader holds RCU, leaving the tables INVALID (v6.1+)."""
        pfns = list(self._range(start_pfn, nr_pages))
        if self.v.invalid_bit:
            for pfn in pfns:
                self.invalidate_page_ext(pfn)
            if reader:
                return False  # synchronize_rcu() waits for the reader: stop here
        for pfn in pfns:
            self.free_page_ext(pfn)
        return True

    # -- the hotplug core (mm/memory_hotplug.c, 6.1) --------------------------------------

    def _block(self, step: dict[str, Any]) -> tuple[list[_Section], int, int, int]:
        nrs = [int(n) for n in step["sections"]]
        if nrs != list(range(nrs[0], nrs[0] + len(nrs))):
            raise SimError(f"step {step['op']}: sections {nrs} are not contiguous")
        secs = []
        for n in nrs:
            if n not in self.sections or not self.sections[n].present:
                raise SimError(f"step {step['op']}: section {n} is not present")
            secs.append(self.sections[n])
        nodes = {s.node for s in secs}
        if len(nodes) != 1:
            raise SimError(f"step {step['op']}: sections {nrs} span nodes {sorted(nodes)}")
        return secs, nrs[0] * self.section_pages, len(nrs) * self.section_pages, nodes.pop()

    def step(self, step: dict[str, Any]) -> None:
        op = step.get("op")
        if self.flat:
            raise SimError("FLATMEM has no memory hotplug")
        if op == "hot_add":
            node = int(step["node"])
            for n in step["sections"]:
                n = int(n)
                if n in self.sections and self.sections[n].present:
                    raise SimError(f"hot_add: section {n} is already present")
                old = self.sections.get(n)
                self.sections[n] = _Section(n, node, True, False, False,
                                            old.base if old else None, old.invalid if old else False)
        elif op == "online":
            secs, start, nr, node = self._block(step)
            if any(s.online for s in secs):
                raise SimError(f"online: sections {step['sections']} are already online")
            # move_pfn_range_to_zone() grows the node span before MEM_GOING_ONLINE
            lo, hi = self.spans.get(node, (start, start + nr))
            self.spans[node] = (min(lo, start), max(hi, start + nr))
            notify = {"event": "notifier", "action": "GOING_ONLINE", "start_pfn": start, "nr_pages": nr,
                      "nid": node, "ret": None}
            self._emit(notify)
            # The nid online_page_ext() allocates on.  Up to v6.16 the notifier passes
            # mn->status_change_nid: the node if it had no memory yet
            # (node_states_check_changes_online), else NUMA_NO_NODE, which
            # online_page_ext() turns into pfn_to_nid(start_pfn).  v6.17 always
            # uses pfn_to_nid(start_pfn).  Either way: the block's node.
            # (move_pfn_range_to_zone() has set the memmap's node before GOING_ONLINE,
            # so pfn_to_nid(start_pfn) is the block's node too; Variant.online_nid
            # records which expression the version uses.)
            ret = self.online_page_ext(start, nr, node) if self.dmesg is not None else 0
            notify["ret"] = ret
            if ret:
                # online_pages() failed_addition: memory_notify(MEM_CANCEL_ONLINE)
                self._emit({"event": "notifier", "action": "CANCEL_ONLINE", "start_pfn": start, "nr_pages": nr,
                            "nid": node, "ret": 0})
                if self.dmesg is not None:
                    self.offline_page_ext(start, nr)
                return
            for s in secs:  # online_pages_range(): online_mem_sections()
                s.online = True
            self._emit({"event": "notifier", "action": "ONLINE", "start_pfn": start, "nr_pages": nr,
                        "nid": node, "ret": 0})
        elif op == "offline":
            secs, start, nr, node = self._block(step)
            if not all(s.online for s in secs):
                raise SimError(f"offline: sections {step['sections']} are not online")
            self._emit({"event": "notifier", "action": "GOING_OFFLINE", "start_pfn": start, "nr_pages": nr,
                        "nid": node, "ret": 0})
            for s in secs:  # __offline_isolated_pages(): offline_mem_sections()
                s.online = False
            reader = bool(step.get("reader"))
            notify = {"event": "notifier", "action": "OFFLINE", "start_pfn": start, "nr_pages": nr,
                      "nid": node, "ret": None}
            self._emit(notify)
            done = self.offline_page_ext(start, nr, reader) if self.dmesg is not None else True
            if done:
                notify["ret"] = 0
                self._shrink_span(node)
        elif op == "hot_remove":
            secs, start, nr, node = self._block(step)
            if any(s.online for s in secs):
                raise SimError(f"hot_remove: sections {step['sections']} are online")
            for s in secs:  # sparse_remove_section(): the mem_section is cleared
                s.present = False
        else:
            raise SimError(f"unknown step {op!r}")

    def _shrink_span(self, nid: int) -> None:
        secs = sorted(s.nr for s in self.sections.values() if s.node == nid and s.online)
        if secs:  # remove_pfn_range_from_zone() -> update_pgdat_span()
            self.spans[nid] = (secs[0] * self.section_pages, (secs[-1] + 1) * self.section_pages)

    # -- result ---------------------------------------------------------------------

    def layout(self) -> Layout:
        v = self.v
        nodes = sorted(self.spans)
        lay = Layout(release=v.release, memory_model=self.model, page_size=self.page_size,
                     section_pages=self.section_pages, entry_size=self.entry_size, clients=list(self.clients),
                     total_usage=self.total_usage, sections_per_block=self.block_sections,
                     max_order_nr_pages=self.max_order_nr, sparsemem_extreme=None if self.flat else True,
                     rules=v.rules(), entry_size_source=ENTRY_SOURCES[v.entry_rule], nodes=nodes)
        if self.flat:
            lay.tables = [self.node_tables[n] for n in sorted(self.node_tables)]
            return lay
        pps = self.section_pages
        for nr in sorted(self.sections):
            s = self.sections[nr]
            stored = 0
            if s.base is not None:
                stored = (s.base - self.entry_size * nr * pps) & MASK64
                if s.invalid:
                    stored |= PAGE_EXT_INVALID
            if not s.present and not stored:
                continue
            block = nr // self.block_sections if self.block_sections else None
            lay.sections.append(SectionInfo(nr, s.node, s.present, s.online and s.present,
                                            s.early and s.present, stored, block))
            if s.base is None:
                continue
            state = INVALID if s.invalid else (ONLINE if s.online and s.present else OFFLINE)
            phys = s.base - DIRECT_MAP
            tpfn = phys // self.page_size
            tblock = (tpfn // pps // self.block_sections) if self.block_sections else None
            lay.tables.append(Table(nr, s.node, nr * pps, pps, s.base, self.entry_size * pps, state,
                                    table_block=tblock, table_mem="direct", table_pfn=tpfn, stored=stored))
        return lay


def simulate(machine: dict[str, Any], variant: Variant, steps: Optional[list[dict]] = None) -> SimResult:
    """Boot ``machine`` under ``variant``, apply ``steps`` (default machine["steps"])."""
    sim = Simulator(copy.deepcopy(machine), variant)
    sim.boot()
    if not sim.panicked:
        for st in (machine.get("steps", []) if steps is None else steps):
            sim.step(st)
    return SimResult(sim.events, sim.layout(), sim.total_usage, sim.dmesg, sim.panicked, dict(sim.spans))
