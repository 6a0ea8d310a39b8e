"""The one vocabulary of a page_ext layout, shared by discovery, the walker and the simulator.

mm/page_ext.c keeps one table of ``entry_size``-byte entries per memory
section (SPARSEMEM) or per node (FLATMEM).  What differs between kernel
versions is captured as :class:`Rules` (the simulator's variants are Rules
too); what one kernel build looks like is a :class:`Geometry` (found by
:mod:`inspector.discover`, or chosen by the simulator); and a
:class:`Layout` is a Geometry plus the tables, sections and nodes a walk (or
a simulation) found.  A prediction and a walk are the same type, so they
compare field by field and serialise to the same JSON (the schema other
tools parse: keep it stable, add keys, never rename).

What could not be read is not a zero: :class:`Missing` collects the pfn
ranges and stack handles a reader could not get, so that every answer can
say what it leaves out.

Everything here is plain data: no drgn objects, so a Layout can be built,
stored as a fixture and compared without a kernel.
"""

from __future__ import annotations

import bisect
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Optional

# Section table states in the JSON schema.
ONLINE = "online"
OFFLINE = "offline"
INVALID = "invalid"  # PAGE_EXT_INVALID set: hot-remove in progress (v6.1+)

# Check statuses.  UNKNOWN: the data the check needs could not be read.
OK, FAIL, SKIP, UNKNOWN = "ok", "fail", "skip", "unknown"

# Entry size rules (invoke_need_callbacks() / get_entry()), oldest first.
ENTRY_STRUCT = "struct"  # v3.19 eefa864b701d: sizeof(struct page_ext)
ENTRY_EXTRA_MEM = "extra_mem"  # v4.9 980ac1672e7e: sizeof(struct page_ext) + extra_mem
ENTRY_PAGE_EXT_SIZE = "page_ext_size"  # v5.4 5556cfe8d994: global page_ext_size
ENTRY_SHARED_FLAGS = "shared_flags"  # v6.3 6189eb82f0ae: page_ext_size starts at 0


@dataclass(frozen=True)
class Rules:
    """The rules of mm/page_ext.c that differ between kernel versions.

    :mod:`inspector.discover` detects them in a kernel from its types and
    symbols; the simulator's :class:`~inspector.versions.Variant` is a
    Rules with a name and further behaviour; the walker and the synthetic
    kernels consume them, so no stage re-checks a release string.
    """

    # How the entry size is made (one of the ENTRY_* names above).
    entry_rule: str = ENTRY_PAGE_EXT_SIZE
    # struct page_ext_operations has offset/size (980ac1672e7e, v4.9).
    ops_has_offset: bool = True
    # ... and need_shared_flags (6189eb82f0ae, v6.3).
    ops_has_shared_flags: bool = False
    # PAGE_EXT_INVALID, the low bit of mem_section.page_ext during hot-remove
    # (b1d5488a252d, v6.1).
    invalid_bit: bool = False
    # FLATMEM alloc_node_page_ext(): the table starts at node_start_pfn rounded
    # down to MAX_ORDER_NR_PAGES, with one MAX_ORDER_NR_PAGES of slack when
    # either end is unaligned.  Absent in v3.19 (index = pfn - node_start_pfn).
    flatmem_max_order_slack: bool = True

    def rules(self) -> "Rules":
        """Just the rules (a Variant's are the fields it shares with Rules)."""
        return Rules(**{f.name: getattr(self, f.name) for f in dataclasses.fields(Rules)})

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self.rules())


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
    start_pfn: int  # first pfn the table covers (the pfn of entry 0)
    nr_pages: int  # entries in the table
    address: int  # the table's base address (stored pointer unbiased)
    bytes: int
    state: str = ONLINE  # online | offline | invalid
    table_block: Optional[int] = None  # memory block holding the table's own memory
    # Where the table's own memory lives: "direct" or "vmalloc" (None: unknown).
    table_mem: Optional[str] = None
    table_pfn: Optional[int] = None  # first pfn of the table's own memory (direct map)
    stored: Optional[int] = None  # raw mem_section.page_ext / node_page_ext value

    @property
    def end_pfn(self) -> int:
        return self.start_pfn + self.nr_pages

    @property
    def key(self) -> tuple[str, int]:
        """("section", nr) or ("node", nid): what a table is called in messages."""
        return ("section", self.section) if self.section is not None else ("node", self.node)

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
    status: str  # ok | fail | skip | unknown
    detail: str
    # The tables a failure is about, as Table.key values (empty: all of them).
    suspects: tuple = ()

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "detail": self.detail}


@dataclass
class Geometry:
    """What one kernel build's page_ext looks like, before any table is walked."""

    release: str
    memory_model: str  # sparsemem-vmemmap | sparsemem | flatmem
    page_size: int
    section_pages: Optional[int]  # PAGES_PER_SECTION; None for FLATMEM
    entry_size: int
    clients: list[Client] = field(default_factory=list)
    # The kernel's own total_usage (bytes ever allocated; never decreases);
    # None when its debug info does not hold it.
    total_usage: Optional[int] = None
    sections_per_block: Optional[int] = None  # drivers/base/memory.c sections_per_block
    max_order_nr_pages: Optional[int] = None  # MAX_ORDER_NR_PAGES (FLATMEM table alignment)
    # SPARSEMEM_EXTREME (mem_section is a pointer to root pointers) or the
    # static two-level array; None for FLATMEM or when not known.
    sparsemem_extreme: Optional[bool] = None
    rules: Rules = field(default_factory=Rules)
    entry_size_source: str = ""  # which rule gave entry_size, in words

    @property
    def sparse(self) -> bool:
        return self.memory_model != "flatmem"

    def client(self, name: str) -> Optional[Client]:
        return next((c for c in self.clients if c.name == name), None)

    def kernel_json(self) -> dict[str, Any]:
        return {
            "release": self.release,
            "memory_model": self.memory_model,
            "page_size": self.page_size,
            "section_pages": self.section_pages,
            "sparsemem_extreme": self.sparsemem_extreme,
            "rules": self.rules.to_json(),
        }


@dataclass
class Layout(Geometry):
    """A Geometry plus every table, section and node a walk or a simulation found."""

    tables: list[Table] = field(default_factory=list)
    sections: list[SectionInfo] = field(default_factory=list)  # SPARSEMEM only
    nodes: list[int] = field(default_factory=list)
    # Sections (or, FLATMEM, nodes) whose state the walk could not read: the
    # tables are then not all known.
    unread_sections: int = 0
    # Whether memory hotplug held mem_hotplug_lock for writing when the walk
    # read the sections (a section may then be mid-way through online_pages()
    # or offline_pages()); None: not known.
    hotplug_busy: Optional[bool] = None

    @classmethod
    def of(cls, geo: Geometry, **kw: Any) -> "Layout":
        """A Layout with ``geo``'s facts (and its own list of clients)."""
        fields = {f.name: getattr(geo, f.name) for f in dataclasses.fields(Geometry)}
        fields["clients"] = list(geo.clients)
        return cls(**fields, **kw)

    @property
    def total_bytes(self) -> int:
        return sum(t.bytes for t in self.tables)

    @property
    def allocated(self) -> bool:
        return bool(self.tables) or bool(self.total_usage)

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

    def online_tables(self) -> list[Table]:
        """The tables whose entries the clients can decode, in pfn order."""
        return sorted((t for t in self.tables if t.state == ONLINE), key=lambda t: t.start_pfn)

    def page_ext_json(self) -> dict[str, Any]:
        return {
            "allocated": self.allocated,
            "entry_size": self.entry_size,
            "total_bytes": self.total_bytes,
            "kernel_total_usage": self.total_usage,
            "clients": [c.to_json() for c in self.clients],
        }


# -- what could not be read -----------------------------------------------------------

class PfnRanges:
    """A set of pfns kept as sorted, merged [start, end) ranges."""

    def __init__(self, ranges: Iterable[tuple[int, int]] = ()):
        self._r: list[tuple[int, int]] = []
        for a, b in ranges:
            self.add(a, b)

    def add(self, start: int, end: int) -> None:
        if end <= start:
            return
        r = self._r
        if not r or start > r[-1][1]:  # the usual case: ranges arrive in pfn order
            r.append((start, end))
            return
        i = bisect.bisect_left(r, (start, start))
        if i and r[i - 1][1] >= start:
            i -= 1
        j = i
        while j < len(r) and r[j][0] <= end:
            start, end = min(start, r[j][0]), max(end, r[j][1])
            j += 1
        r[i:j] = [(start, end)]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter(self._r)

    def __repr__(self) -> str:
        """
        >>> PfnRanges([(0x100, 0x200), (0x180, 0x300), (0x1000, 0x1001)])
        PfnRanges([(0x100, 0x300), (0x1000, 0x1001)])
        """
        return "PfnRanges([" + ", ".join(f"({a:#x}, {b:#x})" for a, b in self._r) + "])"

    def __bool__(self) -> bool:
        return bool(self._r)

    def __len__(self) -> int:
        return len(self._r)

    @property
    def pages(self) -> int:
        return sum(b - a for a, b in self._r)

    def overlaps(self, start: int, end: int) -> bool:
        return any(a < end and start < b for a, b in self._r)

    def to_json(self) -> list[list[int]]:
        """Inclusive [first_pfn, last_pfn] pairs."""
        return [[a, b - 1] for a, b in self._r]

    def text(self, limit: int = 4) -> str:
        shown = ", ".join(f"{a:#x}-{b - 1:#x}" for a, b in self._r[:limit])
        return shown + (f" and {len(self._r) - limit} more" if len(self._r) > limit else "")


@dataclass
class Missing:
    """What a reader could not read, so an answer built without it is partial.

    ``page_ext``: pfns whose entries are unreadable (whatever they hold is
    unknown); ``memmap``: pfns whose ``struct page`` is unreadable;
    ``stack_handles``: stack depot handles whose record is unreadable (as
    opposed to a handle that reads but is not a stack: that is corruption,
    counted by the decoder); ``records_hidden``: records known to exist that
    could not be shown for want of those; ``other``: anything else, in words.
    """

    page_ext: PfnRanges = field(default_factory=PfnRanges)
    memmap: PfnRanges = field(default_factory=PfnRanges)
    stack_handles: set[int] = field(default_factory=set)
    records_hidden: int = 0
    other: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.page_ext or self.memmap or self.stack_handles or self.records_hidden or self.other)

    def note(self, what: str) -> None:
        if what not in self.other:
            self.other.append(what)

    def merge(self, other: "Missing") -> None:
        """Add what ``other`` misses (another read of the same or another kernel)."""
        for a, b in other.page_ext:
            self.page_ext.add(a, b)
        for a, b in other.memmap:
            self.memmap.add(a, b)
        self.stack_handles |= other.stack_handles
        self.records_hidden += other.records_hidden
        for what in other.other:
            self.note(what)

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> "Missing":
        """The inverse of :meth:`to_json` (the ``missing`` a file recorded)."""
        return cls(PfnRanges((a, b + 1) for a, b in doc.get("page_ext", ())),
                   PfnRanges((a, b + 1) for a, b in doc.get("memmap", ())),
                   set(doc.get("stack_handles", ())), int(doc.get("records_hidden", 0)), list(doc.get("other", ())))

    def to_json(self) -> dict[str, Any]:
        return {"page_ext": self.page_ext.to_json(), "memmap": self.memmap.to_json(),
                "stack_handles": sorted(self.stack_handles), "records_hidden": self.records_hidden,
                "other": list(self.other)}

    def lines(self) -> list[str]:
        """One sentence per kind of missing data (for stderr)."""
        out = []
        if self.page_ext:
            out.append(f"page_ext entries of {_pages(self.page_ext.pages)} unreadable "
                       f"(pfns {self.page_ext.text()}); whatever they hold is unknown")
        if self.memmap:
            out.append(f"struct pages of {_pages(self.memmap.pages)} unreadable (pfns {self.memmap.text()})")
        if self.stack_handles:
            hs = sorted(self.stack_handles)
            out.append(f"{len(hs)} stack depot record(s) unreadable (handles "
                       + ", ".join(f"{h:#x}" for h in hs[:4]) + (" ..." if len(hs) > 4 else "") + ")")
        if self.records_hidden:
            out.append(f"{self.records_hidden} record(s) known to exist could not be shown")
        out.extend(self.other)
        return out


def _pages(n: int) -> str:
    return f"{n} page" if n == 1 else f"{n} pages"
