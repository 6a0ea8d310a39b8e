"""The reference simulator: recordings replay exactly, and each version rule shows.

Expected values here are arithmetic from the kernel source being modelled
(section sizes, entry sizes, the order of calls in online_page_ext()), not
copies of the simulator's output; the fixture replay test is the one place
that compares with a recording, on purpose.
"""

from __future__ import annotations

import json

import pytest

from conftest import inspect
from inspector.sim import scenarios
from inspector.sim.model import SimError, simulate
from inspector.versions import VARIANTS, get, variant_for_release

PAGES = 32768


@pytest.mark.parametrize("path", sorted(scenarios.RECORDED.glob("*.json")), ids=lambda p: p.stem)
def test_every_recording_replays_exactly(path):
    doc = json.loads(path.read_text())
    assert doc["expected"] == scenarios.run(doc).to_json()


def test_all_recorded_scenarios_exist():
    assert {p.stem for p in scenarios.RECORDED.glob("*.json")} >= set(scenarios.BUILTIN)


def flat_machine(need: bool) -> dict:
    return {"memory_model": "flatmem", "page_size": 4096, "max_order_nr_pages": 1024,
            "nodes": [{"nid": 0, "start_pfn": 0x10, "end_pfn": 0x8010}],
            "clients": [{"name": "page_owner", "need": need}]}


def test_seed_as_posted_allocates_on_flatmem_when_nobody_needs_it():
    fixed = simulate(flat_machine(False), get("v3.19"))
    posted = simulate(flat_machine(False), get("seed-as-posted"))
    # v3.19: `if (!invoke_need_callbacks()) return;` -- nothing, not even the pr_info.
    assert fixed.layout.tables == [] and fixed.total_usage == 0 and fixed.dmesg is None
    # As posted: `if (!invoke_need_callbacks)` is never true: one table per node,
    # node_spanned_pages entries of sizeof(struct page_ext) (8 bytes here), no slack in 3.19.
    assert [(t.node, t.start_pfn, t.nr_pages) for t in posted.layout.tables] == [(0, 0x10, 0x8000)]
    assert posted.total_usage == 0x8000 * 8
    assert posted.dmesg == f"allocated {0x8000 * 8} bytes of page_ext"
    # With a client that needs it, both allocate; the merged v3.19 (eefa864b701d,
    # with Joonsoo Kim's !SPARSEMEM fix folded in) starts the table at the node
    # start rounded down to MAX_ORDER_NR_PAGES and adds one MAX_ORDER block of
    # slack for the unaligned ends; the seed as posted indexed from the node start.
    a, b = simulate(flat_machine(True), get("v3.19")), simulate(flat_machine(True), get("seed-as-posted"))
    assert [(t.node, t.start_pfn, t.nr_pages) for t in a.layout.tables] == [(0, 0, 0x8000 + 1024)]
    assert [(t.node, t.start_pfn, t.nr_pages) for t in b.layout.tables] == [(0, 0x10, 0x8000)]


def _free_pfns(events, after_action="GOING_ONLINE"):
    out, inside = [], False
    for ev in events:
        if ev["event"] == "notifier":
            inside = ev["action"] == after_action
        elif inside and ev["event"] == "free":
            out.append(ev["pfn"])
    return out


def test_rollback_v3_19_frees_whole_range_v6_6_only_before_failure():
    old = scenarios.run(scenarios.load("online-fail-v3.19"))
    new = scenarios.run(scenarios.load("online-fail-v6.6"))
    start = 32 * PAGES
    rng = [start + i * PAGES for i in range(4)]
    assert _free_pfns(old.events) == rng  # every section of the block
    assert _free_pfns(new.events) == rng[:2]  # only the two tables made before the failure
    for res in (old, new):
        inits = [e for e in res.events if e["event"] == "init_section" and e["pfn"] >= start]
        assert [e["ret"] for e in inits] == [0, 0, -12]
        assert not [t for t in res.layout.tables if t.section >= 32]
        # total_usage counted the two tables made, and never gives them back.
        boot = 8 * PAGES * res.layout.entry_size
        assert res.total_usage == boot + 2 * PAGES * res.layout.entry_size
        assert res.dmesg == f"allocated {boot} bytes of page_ext"


def test_hot_remove_with_reader_leaves_invalid_tables_v6_1_but_frees_at_once_before():
    doc = scenarios.load("hot-remove-reader")
    new = scenarios.run(doc)
    t = [t for t in new.layout.tables if t.section == 32]
    assert len(t) == 1 and t[0].state == "invalid" and t[0].stored & 1
    assert [e["event"] for e in new.events[-2:]] == ["notifier", "invalidate"]
    assert new.events[-2]["ret"] is None  # MEM_OFFLINE has not returned: synchronize_rcu() waits
    old = scenarios.run(doc, "v5.4")
    assert not [t for t in old.layout.tables if t.section == 32]
    assert old.events[-1] == {"event": "free", "pfn": 32 * PAGES}


def test_entry_size_rules_per_version():
    clients = [{"name": "page_owner", "size": 56, "need": True, "need_shared_flags": True},
               {"name": "page_table_check", "size": 8, "need": True, "need_shared_flags": False}]
    m = {"sections": [{"nr": 0, "node": 0}], "clients": clients}
    assert simulate(m, get("v3.19")).layout.entry_size == 8  # sizeof(struct page_ext)
    for v in ("v4.9", "v5.4", "v6.1", "v6.3", "v6.6", "v6.17"):
        lay = simulate(m, get(v)).layout
        assert lay.entry_size == 8 + 56 + 8
        assert {c.name: c.offset for c in lay.clients} == {"page_owner": 8, "page_table_check": 64}
    # v6.3 (6189eb82f0ae): no needed client wants the flags word -> page_ext_size starts at 0.
    only_ptc = dict(m, clients=[dict(clients[0], need=False), clients[1]])
    lay = simulate(only_ptc, get("v6.3")).layout
    assert lay.entry_size == 8 and {c.name: c.offset for c in lay.clients}["page_table_check"] == 0
    assert simulate(only_ptc, get("v6.1")).layout.entry_size == 16  # flags word always there before 6.3


def test_flatmem_slack_and_rounding():
    res = scenarios.run(scenarios.load("flatmem-unaligned"))
    n0, n1 = res.layout.tables
    assert (n0.start_pfn, n0.nr_pages) == (0, 0x7ff00 - 0x100 + 1024)
    assert (n1.start_pfn, n1.nr_pages) == (0x7fc00, 0x100000 - 0x7ff00 + 1024)
    assert res.total_usage == (n0.nr_pages + n1.nr_pages) * 72


def test_no_client_needs_page_ext():
    res = scenarios.run(scenarios.load("no-client-needs"))
    assert res.layout.tables == [] and res.total_usage == 0 and res.dmesg is None and res.events == []


def test_variant_for_release():
    assert variant_for_release("6.1.0-13-amd64").name == "v6.1"
    assert variant_for_release("6.5.3").name == "v6.3"
    assert variant_for_release("6.12.0").name == "v6.6"
    assert variant_for_release("6.17.1").name == "v6.17"
    assert variant_for_release("7.0.0").name == variant_for_release("7.3.4").name == "v7.0"
    assert variant_for_release("4.19.0").name == "v4.9"
    with pytest.raises(ValueError):
        variant_for_release("3.18.0")
    assert "seed-as-posted" in VARIANTS


def test_simulate_command_prints_table_and_events():
    out = inspect("simulate", "hot-add-online").stdout
    assert "allocated 18874368 bytes of page_ext" in out  # 8 sections * 32768 * 72
    assert "GOING_ONLINE" in out and "0x100000" in out


def test_simulate_bad_input_is_one_line():
    proc = inspect("simulate", "no-such-scenario", check_rc=2)
    assert proc.stderr.count("\n") == 1 and "no scenario" in proc.stderr
    proc = inspect("simulate", "boot-2-nodes", "--variant", "v9.9", check_rc=2)
    assert "unknown variant" in proc.stderr and proc.stderr.count("\n") == 1


@pytest.mark.parametrize("machine,variant,msg", [
    ({"sections": [{"nr": 0, "node": 0}], "clients": [{"name": "page_owner", "need": True}],
      "steps": [{"op": "online", "sections": [5]}]}, "v6.1", "section 5 is not present"),
    ({"memory_model": "flatmem", "nodes": [{"nid": 0, "start_pfn": 0, "end_pfn": 1024}],
      "steps": [{"op": "hot_add", "sections": [5], "node": 0}]}, "v6.1", "FLATMEM has no memory hotplug"),
    ({"sections": [{"nr": 0, "node": 0}], "early_page_ext": True}, "v5.4", "early_page_ext= does not exist"),
    ({"sections": [{"nr": 0, "node": 0}], "steps": [{"op": "offline", "sections": [0]},
                                                    {"op": "offline", "sections": [0]}]}, "v6.1", "not online"),
])
def test_impossible_scenarios_are_refused(machine, variant, msg):
    with pytest.raises(SimError, match=msg):
        simulate(machine, get(variant))


def test_simulate_refuses_a_bad_scenario_file_in_one_line(tmp_path):
    p = tmp_path / "bad.json"
    p.write_text(json.dumps({"variant": "v6.1", "input": {"sections": [{"nr": 0, "node": 0}],
                                                           "steps": [{"op": "explode"}]}}))
    proc = inspect("simulate", str(p), check_rc=2)
    assert "unknown step 'explode'" in proc.stderr and proc.stderr.count("\n") == 1


def test_library_errors_are_pageext_errors():
    """A caller catches every error the library raises on purpose as one type (issue 19)."""
    from inspector.errors import PageExtError
    from inspector.events import TraceFileError
    from inspector.sim.model import SimError
    assert issubclass(SimError, PageExtError) and issubclass(SimError, ValueError)
    assert issubclass(TraceFileError, PageExtError) and issubclass(TraceFileError, ValueError)
