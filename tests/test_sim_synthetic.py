"""Synthetic kernels: the unchanged walker and verifier on every simulated variant.

Each simulated run becomes a real drgn.Program (inspector.sim.synthetic);
inspector.discover/walk/verify then run on it exactly as on a vmcore.  The
walk must give back the simulated tables bit for bit, every check must pass
on the clean kernel, and each corruption of the catalogue must be caught by
the check it is aimed at.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from inspector.sim import scenarios
from inspector.sim.synthetic import CORRUPTIONS, build, inspect_program, picture
from inspector.sim.validate import diff_layouts, validate_program
from inspector.versions import VARIANTS, get

ALL = sorted(VARIANTS)
# (scenario, variants it applies to)
CASES = [(s, v) for s in ("boot-2-nodes", "hot-add-online", "flatmem-unaligned", "online-fail-v6.6")
         for v in ALL] + [("hot-remove-reader", v) for v in ALL]

TABLE = ("section", "node", "start_pfn", "nr_pages", "address", "bytes", "state", "stored", "table_mem",
         "table_pfn")
SECTION = ("nr", "node", "present", "online", "early", "stored")


def run(name: str, variant: str):
    res = scenarios.run(scenarios.load(name), variant)
    return res, picture(res, get(variant))


def fields(objs, names):
    return [tuple(getattr(o, n) for n in names) for o in objs]


@pytest.mark.parametrize("name,variant", CASES)
def test_walk_of_synthetic_kernel_is_the_simulated_layout(name, variant):
    res, pic = run(name, variant)
    geo, walked, checks = inspect_program(build(pic))
    sim = res.layout
    assert geo.release == sim.release and geo.memory_model == sim.memory_model
    assert geo.entry_size == sim.entry_size
    assert geo.total_usage == res.total_usage
    assert fields(walked.tables, TABLE) == fields(sim.tables, TABLE)
    assert fields(walked.sections, SECTION) == fields(sim.sections, SECTION)
    assert {(c.name, c.offset, c.size, c.active) for c in walked.clients} == \
        {(c.name, c.offset, c.size, c.active) for c in sim.clients}
    bad = [c for c in checks if c.status == "fail"]
    assert not bad, bad
    if sim.tables:
        assert {c.name: c.status for c in checks}["readable"] == "ok"
        assert {c.name: c.status for c in checks}["bias"] == "ok"


@pytest.mark.parametrize("variant", ALL)
@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
@pytest.mark.parametrize("name", ["hot-add-online", "flatmem-unaligned"])
def test_each_corruption_is_caught_by_its_check(name, variant, corruption):
    res, pic = run(name, variant)
    _, _, clean = inspect_program(build(pic))
    intended = CORRUPTIONS[corruption](pic)
    if intended is None:
        pytest.skip(f"{corruption} does not exist on {name} under {variant}")
    before = {c.name: c.status for c in clean}
    assert before[intended] == "ok", before
    _, _, checks = inspect_program(build(pic))
    after = {c.name: c for c in checks}
    # A hole in the dump is missing data, not a kernel fault: "unknown" (exit 3).
    want = "unknown" if intended == "readable" else "fail"
    assert after[intended].status == want, (intended, after[intended])


def test_corruptions_that_do_not_apply_are_few():
    """Only the documented gaps: no ops offset in v3.19, no INVALID bit on FLATMEM."""
    gaps = set()
    for v in ALL:
        for name in ("hot-add-online", "flatmem-unaligned"):
            for c, fn in CORRUPTIONS.items():
                _, pic = run(name, v)
                if fn(pic) is None:
                    gaps.add((name, v, c))
    assert gaps == {("flatmem-unaligned", v, "invalid-left-set") for v in ALL} | \
        {(n, v, "client-past-entry") for n in ("hot-add-online", "flatmem-unaligned")
         for v in ("v3.19", "seed-as-posted")}


@pytest.mark.parametrize("variant", ALL)
def test_validate_agrees_with_a_synthetic_kernel_and_finds_a_planted_difference(variant):
    res, pic = run("hot-add-online", variant)
    diffs, notes, _ = validate_program(build(pic), None, None, variant)
    assert diffs == [] and notes == []
    res, pic = run("hot-add-online", variant)
    CORRUPTIONS["missing-table"](pic)
    diffs, _, _ = validate_program(build(pic), None, None, variant)
    assert diffs == ["section 33: predicted a table, the kernel has none"]


def test_diff_explains_total_usage_of_freed_tables_only_without_trace():
    res, _ = run("online-fail-v6.6", "v6.6")
    lay = res.layout
    pred = scenarios.run(scenarios.load("boot-2-nodes"), "v6.6").layout
    diffs, notes = diff_layouts(pred, lay, total_exact=False)
    assert diffs == [] and "2 table(s) freed" in notes[0]
    diffs, _ = diff_layouts(pred, lay, total_exact=True)
    assert diffs and diffs[0].startswith("total_usage")


TRACES = Path(__file__).resolve().parent.parent / "fixtures" / "sim" / "traces"
TRACE = TRACES / "dimm-node1-online-offline.jsonl"


def _same_hotplug_as_the_trace():
    doc = scenarios.load("boot-2-nodes")
    machine = dict(doc["input"], steps=[{"op": "hot_add", "sections": [32, 33], "node": 1},
                                        {"op": "online", "sections": [32]},
                                        {"op": "online", "sections": [33]},
                                        {"op": "offline", "sections": [32]}])
    from inspector.sim.model import simulate
    return simulate(machine, get("v6.1"))


def test_trace_replay_on_a_synthetic_kernel():
    from inspector.events import read_trace
    header, events = read_trace(str(TRACE))
    res = _same_hotplug_as_the_trace()
    header = dict(header, release=res.layout.release)
    diffs, notes, summary = validate_program(build(picture(res, get("v6.1"))), header, events)
    assert diffs == [] and notes == []
    # total_usage counts the freed table: 8 boot + 2 hot-added tables of 32768 * 72 bytes.
    assert res.total_usage == 10 * 32768 * 72
    # A trace that misses the offline predicts a table the kernel does not have.
    diffs, _, _ = validate_program(build(picture(res, get("v6.1"))), header, events[:-4])
    assert "section 32: predicted a table, the kernel has none" in diffs
    assert not [d for d in diffs if d.startswith("total_usage")]  # both count 10 allocations


def test_trace_replay_catches_a_diverging_event():
    from inspector.events import read_trace
    header, events = read_trace(str(TRACE))
    res = _same_hotplug_as_the_trace()
    header = dict(header, release=res.layout.release)
    events = [dict(e) for e in events]
    events[-1]["pfn"] += 32768  # the trace says another section was freed
    diffs, _, _ = validate_program(build(picture(res, get("v6.1"))), header, events)
    assert len(diffs) == 1 and diffs[0].startswith("event 10: predicted")


@pytest.mark.parametrize("text,msg", [("", "not a pageext trace"), ("{\"kind\": \"x\"}\n", "not a pageext trace"),
                                      ("{\"kind\": \"pageext-trace\", \"version\": 1}\n{\"event\": \"free\"}\n",
                                       "not an event of the shared schema"), ("nope\n", "not JSON Lines")])
def test_bad_trace_files_are_one_line_errors(tmp_path, text, msg):
    from conftest import inspect
    p = tmp_path / "t.jsonl"
    p.write_text(text)
    proc = inspect("validate", "/proc/kcore", "--trace", str(p), check_rc=2)
    assert msg in proc.stderr and proc.stderr.count("\n") == 1


def test_invalid_bit_on_an_online_section_fails_coverage_but_not_during_hot_remove():
    # During offline_page_ext() (hot-remove-reader) the bit sits on an offline,
    # present section: fine.  On an online section lookup_page_ext() returns
    # NULL for live memory: coverage must say so.
    _, pic = run("hot-remove-reader", "v6.1")
    _, _, checks = inspect_program(build(pic))
    assert {c.name: c.status for c in checks}["coverage"] == "ok"
    _, pic = run("boot-2-nodes", "v6.1")
    pic.sections[3][1] |= 1
    _, walked, checks = inspect_program(build(pic))
    assert [t.state for t in walked.tables if t.section == 3] == ["invalid"]
    cov = {c.name: c for c in checks}["coverage"]
    assert cov.status == "fail" and "3" in cov.detail


def test_recorded_trace_replays_with_invalidations_left_out():
    from inspector.events import read_trace
    header, events = read_trace(str(TRACES / "recorded-6.1-dimm-node1.jsonl"))
    assert header["probes"] == "direct" and not [e for e in events if e["event"] == "invalidate"]
    res = _same_hotplug_as_the_trace()
    header = dict(header, release=res.layout.release)
    diffs, notes, _ = validate_program(build(picture(res, get("v6.1"))), header, events)
    assert diffs == [] and notes == ["the trace has no __invalidate_page_ext calls (not probeable on this "
                                     "kernel); invalidations were not compared"]


def test_prepare_online_and_finish_offline_are_left_out_with_a_note():
    # v6.9 to v6.18 (c5f1e2d18909): memory_block_online() sends MEM_PREPARE_ONLINE
    # before online_pages(), memory_block_offline() MEM_FINISH_OFFLINE after
    # offline_pages(), with a node the kernel never set; page_ext ignores both.
    # Where they fall in a real 6.12.118 trace: PREPARE right before each
    # GOING_ONLINE, FINISH after the OFFLINE and its frees.
    from inspector.events import read_trace
    header, events = read_trace(str(TRACE))
    res = _same_hotplug_as_the_trace()
    header = dict(header, release=res.layout.release)
    block = []
    for e in events:
        if e["event"] == "notifier" and e["action"] == "GOING_ONLINE":
            block.append(dict(e, action="PREPARE_ONLINE", nid=0, ret=0))
        block.append(e)
    last = max(i for i, e in enumerate(block) if e["event"] == "notifier" and e["action"] == "OFFLINE")
    block.append(dict(block[last], action="FINISH_OFFLINE", nid=0, ret=0))
    assert len(block) == len(events) + 3
    diffs, notes, _ = validate_program(build(picture(res, get("v6.1"))), header, block)
    assert diffs == []
    assert notes == ["3 PREPARE_ONLINE/FINISH_OFFLINE notifier call(s) left out (v6.9 to v6.18, c5f1e2d18909: "
                     "memory_block_online()/_offline(); page_ext's callback ignores them)"]
    # Any other action the simulator does not predict is still a difference.
    odd = [dict(events[0], action="CANCEL_OFFLINE")] + events
    assert validate_program(build(picture(res, get("v6.1"))), header, odd)[0]
