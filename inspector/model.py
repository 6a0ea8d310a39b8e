"""The one data model of a page_ext layout, shared by the walker and the simulator.

mm/page_ext.c keeps one table of ``entry_size``-byte entries per memory
section (SPARSEMEM) or per node (FLATMEM).  Whatever produces a picture of
those tables -- the drgn walker reading a real kernel, or the reference
simulator predicting one -- produces a :class:`Layout`, so the two can be
compared field by field and serialised to the same JSON (the schema in
issue #2, which other tools parse: keep it stable, add keys, never rename).

Everything here is plain data: no drgn objects, so a Layout can be built,
stored as a fixture and compared without a kernel.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Optional

# Section table states in the JSON schema.
ONLINE = "online"
OFFLINE = "offline"
INVALID = "invalid"  # PAGE_EXT_INVALID set: hot-remove in progress (v6.1+)

OK, FAIL, SKIP = "ok", "fail", "skip"


@dataclass
class Client:
    """One page_ext client (a ``struct page_ext_operations``)."""

    name: str  # the ops symbol minus "_ops", e.g. "page_owner"
    offset: int
    size: int
    active: bool
    need_shared_flags: Optional[bool] = None  # v6.3+ (6189eb82f0ae), else None
    how_to_enable: str = ""  # e.g. "boot with page_owner=on"

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "offset": self.offset, "size": self.size, "active": self.active}


@dataclass
class Table:
    """One page_ext table: a section's (SPARSEMEM) or a node's (FLATMEM)."""

    section: Optional[int]  # None for FLATMEM
    node: int
    start_pfn: int  # first pfn the table covers
    nr_pages: int  # entries in the table
    address: int  # the table's base address (stored pointer unbiased)
    bytes: int
    state: str = ONLINE  # online | offline | invalid
    table_block: Optional[int] = None  # memory block holding the table's own memory
    # Where the table's own memory lives: "direct" or "vmalloc" (None: unknown).
    table_mem: Optional[str] = None
    table_pfn: Optional[int] = None  # first pfn of the table's own memory (direct map)
    stored: Optional[int] = None  # raw mem_section.page_ext / node_page_ext value

    def to_json(self) -> dict[str, Any]:
        return {
            "section": self.section,
            "node": self.node,
            "start_pfn": self.start_pfn,
            "nr_pages": self.nr_pages,
            "address": self.address,
            "bytes": self.bytes,
            "state": self.state,
            "table_block": self.table_block,
            "table_mem": self.table_mem,
            "table_pfn": self.table_pfn,
        }


@dataclass
class SectionInfo:
    """A SPARSEMEM section as the kernel's flags describe it."""

    nr: int
    node: Optional[int]
    present: bool
    online: bool
    early: bool
    stored: int  # raw mem_section.page_ext, INVALID bit included
    block: Optional[int] = None  # memory block (drivers/base/memory.c) it belongs to

    def to_json(self) -> dict[str, Any]:
        return {"section": self.nr, "node": self.node, "present": self.present, "online": self.online,
                "early": self.early, "page_ext": self.stored, "block": self.block}


@dataclass
class Check:
    name: str
    status: str  # ok | fail | skip
    detail: str

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class Layout:
    """Everything known about one kernel's page_ext, walked or simulated."""

    release: str
    memory_model: str  # sparsemem-vmemmap | sparsemem | flatmem
    page_size: int
    section_pages: Optional[int]  # PAGES_PER_SECTION; None for FLATMEM
    entry_size: int
    clients: list[Client] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    kernel_total_usage: Optional[int] = None
    sections: list[SectionInfo] = field(default_factory=list)  # not in JSON "tables"
    block_sections: Optional[int] = None  # sections per memory block
    nodes: list[int] = field(default_factory=list)
    # SPARSEMEM_EXTREME (mem_section is a pointer to root pointers) or the
    # static two-level array; None for FLATMEM or when not known.
    sparsemem_extreme: Optional[bool] = None

    @property
    def total_bytes(self) -> int:
        return sum(t.bytes for t in self.tables)

    @property
    def allocated(self) -> bool:
        return bool(self.tables) or bool(self.kernel_total_usage)

    def bytes_per_node(self) -> dict[int, int]:
        out: dict[int, int] = {n: 0 for n in self.nodes}
        for t in self.tables:
            out[t.node] = out.get(t.node, 0) + t.bytes
        return out

    def tables_per_node(self) -> dict[int, int]:
        out: dict[int, int] = {n: 0 for n in self.nodes}
        for t in self.tables:
            out[t.node] = out.get(t.node, 0) + 1
        return out

    def kernel_json(self) -> dict[str, Any]:
        return {
            "release": self.release,
            "memory_model": self.memory_model,
            "page_size": self.page_size,
            "section_pages": self.section_pages,
            "sparsemem_extreme": self.sparsemem_extreme,
        }

    def page_ext_json(self) -> dict[str, Any]:
        return {
            "allocated": self.allocated,
            "entry_size": self.entry_size,
            "total_bytes": self.total_bytes,
            "kernel_total_usage": self.kernel_total_usage,
            "clients": [c.to_json() for c in self.clients],
        }
