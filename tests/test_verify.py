"""The verifier's checks on hand-built layouts: each corruption trips its own check.

(The simulator's synthetic kernels, issue #3, extend this to every variant;
these cases pin the check logic itself without a kernel.)
"""

from __future__ import annotations

import copy

import pytest

from inspector.model import Client, Layout, PfnRanges, SectionInfo, Table
from inspector.report import to_json
from inspector.text import escape
from inspector.verify import Memory, verify

PAGES = 32768
ENTRY = 72


def clean_layout(nr_sections: int = 4) -> Layout:
    lay = Layout(release="6.1.0", memory_model="sparsemem-vmemmap", page_size=4096, section_pages=PAGES,
                 entry_size=ENTRY,
                 clients=[Client("page_owner", 8, 56, True), Client("page_table_check", 64, 8, True)],
                 total_usage=nr_sections * PAGES * ENTRY, sections_per_block=1, nodes=[0])
    base = 0xFFFF888000400000
    for nr in range(nr_sections):
        addr = base + nr * 0x400000
        lay.sections.append(SectionInfo(nr, 0, True, True, True, addr - ENTRY * nr * PAGES, nr))
        lay.tables.append(Table(nr, 0, nr * PAGES, PAGES, addr, PAGES * ENTRY, "online",
                                table_block=0, table_mem="direct", table_pfn=0x400 + nr * 0x400))
    return lay


def memory(unreadable=lambda t: PfnRanges(), allocated=lambda pfn: True, capacity=None) -> Memory:
    return Memory(allocated, [(0x100000000, 0x100200000)], unreadable, capacity)


def statuses(lay: Layout, mem=None) -> dict[str, str]:
    return {c.name: c.status for c in verify(lay, mem if mem is not None else memory())}


def test_clean_layout_passes_every_check():
    st = statuses(clean_layout())
    assert set(st.values()) == {"ok"}, st


def test_wrong_bias_fails_bias():
    lay = clean_layout()
    lay.tables[1].address += ENTRY  # stored pointer off by one pfn
    assert statuses(lay)["bias"] == "fail"


def test_overlap_fails_no_overlap():
    lay = clean_layout()
    lay.tables[2].address = lay.tables[1].address + 4096
    st = statuses(lay)
    assert st["no-overlap"] == "fail"


def test_table_on_the_memmap_fails_no_overlap():
    lay = clean_layout()
    lay.tables[0].table_pfn = 0x100000000 // 4096
    assert statuses(lay)["no-overlap"] == "fail"


def test_missing_table_fails_coverage():
    lay = clean_layout()
    del lay.tables[3]
    lay.total_usage -= PAGES * ENTRY
    st = statuses(lay)
    assert st["coverage"] == "fail" and st["total-usage"] == "ok"


def test_table_on_offline_section_fails_coverage_unless_invalid():
    lay = clean_layout()
    lay.sections[2].online = False
    lay.tables[2].state = "offline"
    assert statuses(lay)["coverage"] == "fail"
    lay.tables[2].state = "invalid"  # PAGE_EXT_INVALID: hot-remove in progress
    assert statuses(lay)["coverage"] == "ok"


def test_table_on_offline_section_is_midway_only_while_hotplug_holds_its_lock():
    """online_pages() allocates the table before it sets the online bit;
    offline_pages() clears the bit before it frees the table: both under
    mem_hotplug_lock held for writing (a 7.2 guest, read from the host while
    blocks came and went, showed the first: tests/test_vm_live.py)."""
    lay = clean_layout()
    lay.sections[2].online = False
    lay.tables[2].state = "offline"
    for busy, expect in ((None, "fail"), (False, "fail"), (True, "ok")):
        lay.hotplug_busy = busy
        checks = {c.name: c for c in verify(lay, memory())}
        assert checks["coverage"].status == expect, (busy, checks["coverage"].detail)
    assert "memory hotplug in progress" in checks["coverage"].detail and "sections 2 " in checks["coverage"].detail
    # Held or not, an online section without a table, or a table on an absent section, stays a failure.
    lay.sections[2].present = False
    assert statuses(lay)["coverage"] == "fail"
    lay = clean_layout()
    lay.hotplug_busy = True
    del lay.tables[3]
    lay.total_usage -= PAGES * ENTRY
    assert statuses(lay)["coverage"] == "fail"


def test_total_usage_mismatch_fails_total():
    lay = clean_layout()
    lay.total_usage += 4096
    assert statuses(lay)["total-usage"] == "fail"
    lay.total_usage = lay.total_bytes + 2 * PAGES * ENTRY  # two tables freed since boot
    assert statuses(lay)["total-usage"] == "ok"


def test_client_past_entry_fails_clients():
    lay = clean_layout()
    lay.clients[1].offset = 68
    assert statuses(lay)["clients"] == "fail"
    lay = clean_layout()
    lay.clients[1].offset = 40  # overlaps page_owner
    assert statuses(lay)["clients"] == "fail"


def test_unreadable_table_page_is_unknown_not_ok():
    lay = clean_layout()
    # One 4 KiB page inside table 1 missing from the dump: its entries are unknown.
    t1 = lay.tables[1]
    hole = PfnRanges([(t1.start_pfn + 4096 // ENTRY, t1.start_pfn + 2 * 4096 // ENTRY + 1)])
    st = statuses(lay, memory(unreadable=lambda t: hole if t is t1 else PfnRanges()))
    assert st["readable"] == "unknown"


def test_unknown_last_page_is_not_a_pass():
    lay = clean_layout()
    last0 = 0x400 + (PAGES * ENTRY - 1) // 4096
    st = statuses(lay, memory(allocated=lambda pfn: None if pfn == last0 else True))
    assert st["extent"] == "unknown"


def test_freed_tables_count_every_hot_remove_also_of_the_same_section():
    # total_usage never decreases: a section hot-added and removed k times
    # counts k tables, so more freed tables than hotplug capacity is fine (a
    # live 6.12 guest under repeated hotplug: 69 freed, 7 tables left); a
    # shortfall of no whole table, or an excess, is not.
    lay = clean_layout()
    lay.total_usage = lay.total_bytes + 2 * PAGES * ENTRY
    checks = {c.name: c for c in verify(lay, memory(capacity=2))}
    assert checks["total-usage"].status == "ok" and "more than once" not in checks["total-usage"].detail
    lay.total_usage = lay.total_bytes + 69 * PAGES * ENTRY
    checks = {c.name: c for c in verify(lay, memory(capacity=24))}
    assert checks["total-usage"].status == "ok" and "69 table(s)" in checks["total-usage"].detail
    assert "hot-added and removed more than once" in checks["total-usage"].detail
    lay.total_usage = lay.total_bytes + 2 * PAGES * ENTRY + 8
    assert statuses(lay, memory(capacity=2))["total-usage"] == "fail"
    lay.total_usage = lay.total_bytes - PAGES * ENTRY
    assert statuses(lay, memory(capacity=2))["total-usage"] == "fail"


def test_wrong_extent_fails_extent():
    lay = clean_layout()
    lay.tables[0].bytes = PAGES * 64
    assert statuses(lay)["extent"] == "fail"
    lay = clean_layout()
    st = statuses(lay, memory(allocated=lambda pfn: pfn != 0x400 + (PAGES * ENTRY - 1) // 4096))
    assert st["extent"] == "fail"


def test_simulated_layout_skips_memory_checks():
    st = {c.name: c.status for c in verify(clean_layout(), None)}
    assert st["readable"] == "skip" and st["bias"] == "ok"


def test_json_is_all_integers_and_schema_keys():
    doc = to_json({"kind": "vmcore", "path": "x"}, clean_layout(), verify(clean_layout(), memory()))
    assert set(doc) >= {"target", "kernel", "page_ext", "tables", "checks", "missing"}
    assert all(isinstance(t["address"], int) for t in doc["tables"])
    assert set(doc["tables"][0]) == {"section", "node", "start_pfn", "nr_pages", "address", "bytes",
                                     "state", "table_block", "table_mem", "table_pfn"}


@pytest.mark.parametrize("raw,shown", [("6.1.0\x1b[31m", "6.1.0\\x1b[31m"), ("a\nb", "a\\nb"),
                                       ("back\\slash", "back\\\\slash"), ("ok", "ok")])
def test_strings_from_dumps_are_escaped(raw, shown):
    assert escape(raw) == shown
