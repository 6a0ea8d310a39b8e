"""Recorded scenarios: named simulator inputs with the run they produced.

A scenario file (inspector/sim/recorded/NAME.json, shipped with the package) holds ``name``, ``description``,
``variant``, ``input`` (the machine and its hotplug steps, see
:mod:`inspector.sim.model`) and ``expected`` (events, layout, total_usage,
dmesg, panicked) as last recorded with ``pageext-inspect simulate NAME
--record FILE``.  The built-in inputs below seed those files; once a file exists
its own ``input`` is authoritative.  The tests replay every file and demand
the same output, so any change to the model shows up as a diff to review.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from .model import SimResult, simulate
from ..versions import geometry, get

RECORDED = Path(__file__).resolve().parent / "recorded"

PAGES = 32768  # x86-64: 128 MiB sections of 4 KiB pages
# The two clients of the 6.1 test kernel, sizes as a 64-bit 6.1 build has them
# (struct page_owner is 56 bytes there; page_table_check keeps an 8-byte struct).
CLIENTS_BOTH = [
    {"name": "page_owner", "size": 56, "need": True, "need_shared_flags": True},
    {"name": "page_table_check", "size": 8, "need": True, "need_shared_flags": False},
]
# Two nodes of 512 MiB each, like scripts/testvm.py: sections 0-3 node 0, 4-7 node 1.
TWO_NODES = [{"nr": i, "node": i // 4} for i in range(8)]

BUILTIN: dict[str, dict[str, Any]] = {
    "boot-2-nodes": {
        "description": "Boot with two 512 MiB nodes, both clients on (the test VM's map).",
        "variant": "v6.1",
        "input": {"memory_model": "sparsemem-vmemmap", "page_size": 4096, "section_pages": PAGES,
                  "block_sections": 1, "sections": TWO_NODES, "clients": CLIENTS_BOTH},
    },
    "hot-add-online": {
        "description": "Boot, hot-add a 256 MiB DIMM on node 1 (sections 32-33), online both blocks.",
        "variant": "v6.1",
        "input": {"memory_model": "sparsemem-vmemmap", "page_size": 4096, "section_pages": PAGES,
                  "block_sections": 1, "sections": TWO_NODES, "clients": CLIENTS_BOTH,
                  "steps": [{"op": "hot_add", "sections": [32, 33], "node": 1},
                            {"op": "online", "sections": [32]},
                            {"op": "online", "sections": [33]}]},
    },
    "online-fail-v3.19": {
        "description": "A 4-section memory block whose third table allocation fails: v3.19 rolls back "
                       "by calling __free_page_ext() on every section of the range.",
        "variant": "v3.19",
        "input": {"memory_model": "sparsemem-vmemmap", "page_size": 4096, "section_pages": PAGES,
                  "block_sections": 4, "sections": TWO_NODES,
                  "clients": [{"name": "page_owner", "size": 0, "need": True}],
                  "fail_alloc": [11],
                  "steps": [{"op": "hot_add", "sections": [32, 33, 34, 35], "node": 1},
                            {"op": "online", "sections": [32, 33, 34, 35]}]},
    },
    "online-fail-v6.6": {
        "description": "The same failing online under v6.6: the rollback stops before the failed section.",
        "variant": "v6.6",
        "input": {"memory_model": "sparsemem-vmemmap", "page_size": 4096, "section_pages": PAGES,
                  "block_sections": 4, "sections": TWO_NODES, "clients": CLIENTS_BOTH,
                  "fail_alloc": [11],
                  "steps": [{"op": "hot_add", "sections": [32, 33, 34, 35], "node": 1},
                            {"op": "online", "sections": [32, 33, 34, 35]}]},
    },
    "hot-remove-reader": {
        "description": "Offline a hot-added block while a page_ext_get() reader holds RCU: the table "
                       "stays allocated with PAGE_EXT_INVALID set until synchronize_rcu() returns.",
        "variant": "v6.1",
        "input": {"memory_model": "sparsemem-vmemmap", "page_size": 4096, "section_pages": PAGES,
                  "block_sections": 1, "sections": TWO_NODES, "clients": CLIENTS_BOTH,
                  "steps": [{"op": "hot_add", "sections": [32], "node": 1},
                            {"op": "online", "sections": [32]},
                            {"op": "offline", "sections": [32], "reader": True}]},
    },
    "flatmem-unaligned": {
        "description": "FLATMEM, two nodes whose boundaries are not MAX_ORDER_NR_PAGES aligned: each "
                       "table gets one extra MAX_ORDER block and starts at the rounded-down pfn.",
        "variant": "v6.1",
        "input": {"memory_model": "flatmem", "page_size": 4096, "max_order_nr_pages": 1024,
                  "nodes": [{"nid": 0, "start_pfn": 0x100, "end_pfn": 0x7ff00},
                            {"nid": 1, "start_pfn": 0x7ff00, "end_pfn": 0x100000}],
                  "clients": CLIENTS_BOTH},
    },
    # QEMU's arm64 `virt` machine as scripts/testvm.py boots it: 1 GiB of RAM
    # from 0x40000000, two 512 MiB nodes, 6.12's rules (v6.6).  Client sizes
    # are the arm64 6.12 build's (struct page_owner 64 bytes there).
    "boot-arm64-4k": {
        "description": "The arm64 test guest with 4K pages: 128 MiB sections 8-15, nodes of 4 each.",
        "variant": "v6.6",
        "input": {"memory_model": "sparsemem-vmemmap", "geometry": "arm64-4k", "block_sections": 1,
                  "sections": [{"nr": 8 + i, "node": i // 4} for i in range(8)],
                  "clients": [dict(CLIENTS_BOTH[0], size=64), CLIENTS_BOTH[1]]},
    },
    "boot-arm64-64k": {
        "description": "The arm64 test guest with 64K pages: 512 MiB sections 2 and 3, one a node.",
        "variant": "v6.6",
        "input": {"memory_model": "sparsemem-vmemmap", "geometry": "arm64-64k", "block_sections": 1,
                  "sections": [{"nr": 2, "node": 0}, {"nr": 3, "node": 1}],
                  "clients": [dict(CLIENTS_BOTH[0], size=64), CLIENTS_BOTH[1]]},
    },
    "no-client-needs": {
        "description": "page_ext compiled in, but no client's need() is true: nothing is allocated "
                       "and the kernel prints no 'allocated' line.",
        "variant": "v6.1",
        "input": {"memory_model": "sparsemem-vmemmap", "page_size": 4096, "section_pages": PAGES,
                  "block_sections": 1, "sections": TWO_NODES,
                  "clients": [dict(c, need=False) for c in CLIENTS_BOTH]},
    },
}


def path_of(name: str) -> Path:
    p = Path(name)
    if p.suffix == ".json" or "/" in name:
        return p
    return RECORDED / f"{name}.json"


def names() -> list[str]:
    found = {p.stem for p in RECORDED.glob("*.json")} if RECORDED.is_dir() else set()
    return sorted(found | set(BUILTIN))


MAX_SCENARIO_BYTES = 16 << 20


def load(name: str) -> dict[str, Any]:
    """The scenario file, or the built-in input when it was never recorded."""
    p = path_of(name)
    if p.exists():
        if not p.is_file():
            raise ValueError(f"{p}: not a regular file (a scenario is a JSON file)")
        if p.stat().st_size > MAX_SCENARIO_BYTES:
            raise ValueError(f"{p}: too large for a scenario file")
        try:
            with open(p) as f:
                doc = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{p}: not JSON ({e.msg} at line {e.lineno})") from None
        if not isinstance(doc, dict):
            raise ValueError(f"{p}: not a scenario file (not a JSON object)")
        for key in ("variant", "input"):
            if key not in doc:
                raise ValueError(f"{p}: not a scenario file (no {key!r})")
        return doc
    if name in BUILTIN:
        return {"name": name, **BUILTIN[name]}
    raise ValueError(f"no scenario {name!r} (known: {', '.join(names())})")


def with_geometry(doc: dict[str, Any], name: str) -> dict[str, Any]:
    """The scenario with its page and section size replaced by geometry ``name``
    (inspector.versions.GEOMETRIES); its section numbers stay as they are."""
    geometry(name)  # ValueError naming the known ones
    machine = {k: v for k, v in doc["input"].items() if k not in ("page_size", "section_pages")}
    return {**doc, "input": {**machine, "geometry": name}}


def run(doc: dict[str, Any], variant: Optional[str] = None) -> SimResult:
    return simulate(doc["input"], get(variant or doc["variant"]))


def record(doc: dict[str, Any], result: SimResult, path: str, variant: Optional[str] = None) -> Path:
    """Write the scenario with this run as its recording, to ``path``."""
    out = {"name": doc.get("name"), "description": doc.get("description", ""),
           "variant": variant or doc["variant"], "input": doc["input"], "expected": result.to_json()}
    p = Path(path)
    if p.exists() and not p.is_file():
        raise ValueError(f"{p}: not a regular file")
    with open(p, "w") as f:
        json.dump(out, f, indent=1, sort_keys=False)
        f.write("\n")
    return p
